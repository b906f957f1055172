//! Health state behind `/healthz`, fed by the pipeline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::MetricsConfig;

/// What `/healthz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// Why the sensor is unhealthy; empty when healthy.
    pub reasons: Vec<String>,
}

impl HealthStatus {
    /// True when nothing is wrong.
    pub fn is_healthy(&self) -> bool {
        self.reasons.is_empty()
    }
}

#[derive(Debug, Default)]
struct State {
    drops_total: u64,
    /// When the drop total last grew, and by how much over the window.
    last_drop_increase: Option<Instant>,
    drops_in_window: u64,
    sink_failing_since: BTreeMap<String, Instant>,
}

/// Health of the sensor: unhealthy while ring-buffer drops grew within the drop
/// window, or while some sink has been failing for longer than the sink grace.
/// Shared as `Arc<Health>`; every method takes `&self`.
#[derive(Debug)]
pub struct Health {
    drop_window: Duration,
    sink_grace: Duration,
    state: Mutex<State>,
}

impl Health {
    /// Health with explicit windows.
    pub fn new(drop_window: Duration, sink_grace: Duration) -> Self {
        Health {
            drop_window,
            sink_grace,
            state: Mutex::new(State::default()),
        }
    }

    /// Health with the windows of the `[metrics]` config.
    pub fn from_config(cfg: &MetricsConfig) -> Self {
        Health::new(
            Duration::from_secs(cfg.health_drop_window_secs),
            Duration::from_secs(cfg.health_sink_failure_secs),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports the current total of ring-buffer drops (the kernel counter as read
    /// by userspace). A growth makes the sensor unhealthy for the drop window. A
    /// smaller total (counter reset, new maps) is taken as the new baseline.
    pub fn note_ringbuf_drops(&self, total: u64) {
        let mut s = self.lock();
        if total > s.drops_total {
            let now = Instant::now();
            if s.last_drop_increase
                .is_none_or(|t| now.duration_since(t) >= self.drop_window)
            {
                s.drops_in_window = 0;
            }
            s.drops_in_window += total - s.drops_total;
            s.last_drop_increase = Some(now);
        }
        s.drops_total = total;
    }

    /// The sink called `name` delivered successfully: it is no longer failing.
    pub fn sink_ok(&self, name: &str) {
        let mut s = self.lock();
        if s.sink_failing_since.contains_key(name) {
            s.sink_failing_since.remove(name);
        }
    }

    /// The sink called `name` failed. It makes the sensor unhealthy once it has
    /// been failing, without a success in between, for the sink grace time.
    pub fn sink_failed(&self, name: &str) {
        let mut s = self.lock();
        if !s.sink_failing_since.contains_key(name) {
            s.sink_failing_since.insert(name.to_owned(), Instant::now());
        }
    }

    /// Current status.
    pub fn status(&self) -> HealthStatus {
        self.status_at(Instant::now())
    }

    /// Status as of `now` (for tests with a fixed clock).
    pub fn status_at(&self, now: Instant) -> HealthStatus {
        let s = self.lock();
        let mut reasons = Vec::new();
        if let Some(t) = s.last_drop_increase {
            let ago = now.saturating_duration_since(t);
            if ago < self.drop_window {
                reasons.push(format!(
                    "ring buffer dropped {} event(s) within the last {}s (last drop {}s ago): events are being lost",
                    s.drops_in_window,
                    self.drop_window.as_secs(),
                    ago.as_secs()
                ));
            }
        }
        for (name, since) in &s.sink_failing_since {
            let failing = now.saturating_duration_since(*since);
            if failing >= self.sink_grace {
                reasons.push(format!(
                    "sink {name} has been failing for {}s",
                    failing.as_secs()
                ));
            }
        }
        HealthStatus { reasons }
    }

    /// `gatewatch_healthy` gauge (1 or 0) in text format.
    pub(crate) fn render(&self, out: &mut String) {
        super::registry::header(
            out,
            "healthy",
            "1 if /healthz answers 200, else 0.",
            "gauge",
        );
        let v = u8::from(self.status().is_healthy());
        let _ = writeln!(out, "{}healthy {v}", super::registry::PREFIX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_flip_health_for_the_window() {
        let h = Health::new(Duration::from_secs(10), Duration::from_secs(5));
        assert!(h.status().is_healthy());
        h.note_ringbuf_drops(0);
        assert!(h.status().is_healthy());
        h.note_ringbuf_drops(7);
        let st = h.status();
        assert!(
            !st.is_healthy() && st.reasons[0].contains("dropped 7"),
            "{st:?}"
        );
        h.note_ringbuf_drops(7);
        let later = Instant::now() + Duration::from_secs(11);
        assert!(h.status_at(later).is_healthy());
        // Reset to a smaller total is a new baseline, not a drop.
        h.note_ringbuf_drops(0);
        assert!(h.status_at(later).is_healthy());
    }

    #[test]
    fn sink_failure_needs_the_grace_time_and_clears_on_success() {
        let h = Health::new(Duration::from_secs(10), Duration::from_secs(5));
        h.sink_failed("kafka");
        assert!(h.status().is_healthy());
        let later = Instant::now() + Duration::from_secs(6);
        let st = h.status_at(later);
        assert!(
            st.reasons.iter().any(|r| r.contains("sink kafka")),
            "{st:?}"
        );
        h.sink_failed("kafka"); // does not restart the clock
        assert!(!h.status_at(later).is_healthy());
        h.sink_ok("kafka");
        assert!(h.status_at(later).is_healthy());
    }
}
