//! Prometheus metrics and health: a registry of atomic counters and gauges
//! ([`Metrics`]), health state fed by the pipeline ([`Health`]), and a tiny HTTP
//! endpoint ([`MetricsServer`]) serving `GET /metrics` (text exposition format
//! 0.0.4, every name prefixed `gatewatch_`) and `GET /healthz` (200 `ok`, or 503
//! with the reasons).

mod config;
mod health;
mod registry;
mod server;

pub use config::MetricsConfig;
pub use health::{Health, HealthStatus};
pub use registry::{
    escape_label_value, Counter, Family, FloatGauge, Gauge, Metrics, Sample, SecondsCounter,
    MAX_SERIES_PER_FAMILY, PREFIX,
};
pub use server::{MetricsServer, ServerError, StopHandle, MAX_CONNECTIONS, MAX_REQUEST_BYTES};
