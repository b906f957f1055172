//! gatewatch: eBPF sensor for HTTP API, AI-gateway and MCP traffic.
//!
//! One module per stage of the data path (see DESIGN.md): capture → events →
//! rules → alerts → sinks, with audit and metrics beside them.

pub mod alerts;
pub mod audit;
pub mod capture;
pub mod cli;
pub mod config;
pub mod events;
pub mod mcp;
pub mod metrics;
pub mod rules;
pub mod sinks;
