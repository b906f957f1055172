//! gatewatch: eBPF sensor for HTTP API, AI-gateway and MCP traffic.
//!
//! One module per stage of the data path (see DESIGN.md): capture → events →
//! rules → alerts → sinks, with audit and metrics beside them.

pub mod audit;
pub mod events;
pub mod metrics;
