//! MCP (Model Context Protocol) awareness in userspace: the session tracker
//! that follows sessions, clients and request/response pairs across events,
//! and the `[mcp]` configuration it and the MCP rules read.
//!
//! The kernel reads the JSON-RPC method and the MCP headers; session ids reach
//! userspace only as a keyed hash (`HttpInfo::mcp_session`), so the tracker keys
//! on that hash and never holds an id.

pub mod config;
mod names;
pub mod tracker;

pub use config::McpConfig;
pub use names::decode_header_value;
pub use tracker::{Tracker, TrackerCounters};
