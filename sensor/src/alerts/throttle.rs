//! Per-(rule, key) alert throttle on governor's GCRA. Time is the event's own
//! time (so replays and fixtures behave the same as live traffic), kept
//! non-decreasing per shard. The key memory is a bounded LRU; a throttled alert
//! is counted and the count rides on the next alert of that (rule, key) that passes.

use std::hash::BuildHasher;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use lru::LruCache;

const SHARDS: usize = 16;

/// How many alerts one (rule, key) may raise per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSpec {
    pub alerts: NonZeroU32,
    pub per: Duration,
}

impl ThrottleSpec {
    /// `None` when `alerts` is 0 (throttling off) or the period is zero.
    pub fn new(alerts: u32, per_secs: u64) -> Option<ThrottleSpec> {
        let alerts = NonZeroU32::new(alerts)?;
        if per_secs == 0 {
            return None;
        }
        Some(ThrottleSpec {
            alerts,
            per: Duration::from_secs(per_secs),
        })
    }

    fn quota(&self) -> Option<Quota> {
        Quota::with_period(self.per / self.alerts.get()).map(|q| q.allow_burst(self.alerts))
    }
}

/// The throttle's verdict for one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it; `suppressed` alerts of this (rule, key) were held back since the last one sent.
    Pass { suppressed: u64 },
    /// Hold it back (counted).
    Suppress,
}

/// Event-time clock shared by the limiters of one shard.
#[derive(Debug, Clone, Default)]
struct EventClock(Arc<AtomicU64>);

impl Clock for EventClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(self.0.load(Ordering::Relaxed))
    }
}

struct Slot {
    spec: ThrottleSpec,
    limiter: RateLimiter<NotKeyed, InMemoryState, EventClock, NoOpMiddleware<Nanos>>,
    suppressed: u64,
}

struct Shard {
    clock: EventClock,
    slots: LruCache<(Arc<str>, String), Slot>,
}

/// Shared by all workers.
pub struct Throttle {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    evictions: AtomicU64,
}

impl Throttle {
    pub fn new(max_keys: usize) -> Throttle {
        let per = NonZeroUsize::new(max_keys.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        Throttle {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        clock: EventClock::default(),
                        slots: LruCache::new(per),
                    })
                })
                .collect(),
            hasher: Default::default(),
            evictions: AtomicU64::new(0),
        }
    }

    /// Decide for one alert of `rule` with throttle `key` at event time `now_ns`.
    pub fn check(&self, rule: &Arc<str>, key: &str, spec: ThrottleSpec, now_ns: u64) -> Verdict {
        let shard = &self.shards[(self.hasher.hash_one((rule, key)) as usize) % SHARDS];
        let mut shard = match shard.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Keep the shard's clock monotonic even when events arrive out of order.
        let clock = shard.clock.clone();
        clock.0.fetch_max(now_ns, Ordering::Relaxed);
        let Some(quota) = spec.quota() else {
            return Verdict::Pass { suppressed: 0 };
        };
        let lookup = (rule.clone(), key.to_string());
        let fresh = |clock: &EventClock| Slot {
            spec,
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            suppressed: 0,
        };
        if shard.slots.peek(&lookup).is_none_or(|s| s.spec != spec) {
            let slot = fresh(&clock);
            if let Some((old, _)) = shard.slots.push(lookup.clone(), slot) {
                if old != lookup {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let Some(slot) = shard.slots.get_mut(&lookup) else {
            return Verdict::Pass { suppressed: 0 };
        };
        if slot.limiter.check().is_ok() {
            Verdict::Pass {
                suppressed: std::mem::take(&mut slot.suppressed),
            }
        } else {
            slot.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// (rule, key) pairs forgotten to stay within the bound (their suppressed counts are lost).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn storm_becomes_one_alert_then_a_count() {
        let t = Throttle::new(100);
        let rule: Arc<str> = "R".into();
        let spec = ThrottleSpec::new(1, 60).unwrap();
        let base = 1_700_000_000 * S;
        assert_eq!(
            t.check(&rule, "k", spec, base),
            Verdict::Pass { suppressed: 0 }
        );
        for i in 1..=9 {
            assert_eq!(t.check(&rule, "k", spec, base + i * S), Verdict::Suppress);
        }
        // Another key is independent.
        assert_eq!(
            t.check(&rule, "other", spec, base + 10 * S),
            Verdict::Pass { suppressed: 0 }
        );
        // After the period the next one passes carrying the count.
        assert_eq!(
            t.check(&rule, "k", spec, base + 61 * S),
            Verdict::Pass { suppressed: 9 }
        );
        assert_eq!(t.check(&rule, "k", spec, base + 62 * S), Verdict::Suppress);
    }

    #[test]
    fn key_memory_is_bounded() {
        let t = Throttle::new(32);
        let rule: Arc<str> = "R".into();
        let spec = ThrottleSpec::new(1, 60).unwrap();
        for i in 0..1000u64 {
            t.check(&rule, &i.to_string(), spec, i);
        }
        let kept: usize = t.shards.iter().map(|s| s.lock().unwrap().slots.len()).sum();
        assert!(kept <= 32, "{kept}");
        assert!(t.evictions() >= 1000 - 32);
    }
}
