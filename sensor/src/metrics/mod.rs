//! Prometheus metrics and health endpoint (work in progress).
