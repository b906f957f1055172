//! State behind the stateful rule helpers (`count_in_window`, `distinct_in_window`,
//! `first_seen`) and the alert throttle. One `RuleState` is shared by every worker;
//! keys are namespaced per rule, kept in sharded LRUs with one global bound, and
//! evictions are counted. Time is the event's time in nanoseconds.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::alerts::throttle::Throttle;
use crate::rules::RulesConfig;

const SHARDS: usize = 16;
/// Sub-buckets per sliding window (the window's precision is 1/64 of its length).
const BUCKETS: i64 = 64;
/// Distinct values remembered per key; past this the oldest is forgotten.
pub const MAX_DISTINCT_PER_KEY: usize = 1024;
/// Keys and values longer than this are stored as a hash.
const MAX_KEY_BYTES: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Count,
    Distinct,
    Seen,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    rule: Arc<str>,
    kind: Kind,
    key: String,
}

enum Entry {
    Count {
        width: i64,
        buckets: VecDeque<(i64, u64)>,
    },
    Distinct(HashMap<String, i64>),
    Seen,
}

/// Shared state of the stateful helpers plus the alert throttle.
pub struct RuleState {
    shards: Vec<Mutex<LruCache<Key, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
    evictions: AtomicU64,
    pub(crate) throttle: Throttle,
}

impl RuleState {
    pub fn new(cfg: &RulesConfig) -> RuleState {
        let per = NonZeroUsize::new(cfg.state_max_keys.div_ceil(SHARDS).max(1))
            .unwrap_or(NonZeroUsize::MIN);
        RuleState {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per)))
                .collect(),
            hasher: Default::default(),
            evictions: AtomicU64::new(0),
            throttle: Throttle::new(cfg.throttle_max_keys),
        }
    }

    /// Keys forgotten to stay within `state_max_keys`.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
    /// (rule, key) pairs the throttle forgot to stay within `throttle_max_keys`.
    pub fn throttle_evictions(&self) -> u64 {
        self.throttle.evictions()
    }
    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with_entry<R>(
        &self,
        rule: &Arc<str>,
        kind: Kind,
        key: &str,
        make: impl FnOnce() -> Entry,
        f: impl FnOnce(&mut Entry, bool) -> R,
    ) -> R {
        let key = Key {
            rule: rule.clone(),
            kind,
            key: bounded(key),
        };
        let mut shard = lock(&self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS]);
        if let Some(e) = shard.get_mut(&key) {
            return f(e, false);
        }
        let mut e = make();
        let r = f(&mut e, true);
        // The key was absent, so whatever `push` hands back was evicted.
        if shard.push(key, e).is_some() {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Adds one to `key` and returns how many were added in the last `window_ns`.
    pub fn count_in_window(&self, rule: &Arc<str>, key: &str, window_ns: i64, now: i64) -> i64 {
        let window = window_ns.max(1);
        let width = (window / BUCKETS).max(1);
        self.with_entry(
            rule,
            Kind::Count,
            key,
            || Entry::Count {
                width,
                buckets: VecDeque::new(),
            },
            |e, _| {
                let Entry::Count { width, buckets } = e else {
                    return 0;
                };
                let start = now - now.rem_euclid(*width);
                match buckets.back_mut() {
                    Some((b, n)) if *b >= start => *n += 1,
                    _ => buckets.push_back((start, 1)),
                }
                let horizon = now - window;
                while buckets.front().is_some_and(|(b, _)| *b + *width <= horizon) {
                    buckets.pop_front();
                }
                while buckets.len() > (BUCKETS as usize) * 2 {
                    buckets.pop_front();
                }
                buckets.iter().map(|(_, n)| *n as i64).sum()
            },
        )
    }

    /// Records `value` under `key` and returns how many distinct values `key`
    /// had in the last `window_ns` (at most [`MAX_DISTINCT_PER_KEY`]).
    pub fn distinct_in_window(
        &self,
        rule: &Arc<str>,
        key: &str,
        value: &str,
        window_ns: i64,
        now: i64,
    ) -> i64 {
        let horizon = now - window_ns.max(1);
        self.with_entry(
            rule,
            Kind::Distinct,
            key,
            || Entry::Distinct(HashMap::new()),
            |e, _| {
                let Entry::Distinct(values) = e else {
                    return 0;
                };
                values.retain(|_, seen| *seen >= horizon);
                let v = bounded(value);
                if !values.contains_key(&v) && values.len() >= MAX_DISTINCT_PER_KEY {
                    if let Some(oldest) = values
                        .iter()
                        .min_by_key(|(_, t)| **t)
                        .map(|(k, _)| k.clone())
                    {
                        values.remove(&oldest);
                    }
                }
                let t = values.entry(v).or_insert(now);
                *t = (*t).max(now);
                values.len() as i64
            },
        )
    }

    /// True the first time `key` is seen (while it stays remembered).
    pub fn first_seen(&self, rule: &Arc<str>, key: &str) -> bool {
        self.with_entry(rule, Kind::Seen, key, || Entry::Seen, |_, new| new)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Long keys become a fixed-size digest so that state memory stays bounded.
fn bounded(s: &str) -> String {
    if s.len() <= MAX_KEY_BYTES {
        return s.to_string();
    }
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(s.as_bytes());
    let mut out = String::from("sha256:");
    for b in d.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn state(max: usize) -> RuleState {
        RuleState::new(&RulesConfig {
            state_max_keys: max,
            ..Default::default()
        })
    }

    #[test]
    fn sliding_count() {
        let st = state(1000);
        let r: Arc<str> = "R".into();
        let t0 = 1_700_000_000 * S;
        for i in 0..5 {
            assert_eq!(st.count_in_window(&r, "k", 60 * S, t0 + i * S), i + 1);
        }
        // Other rule, same key: separate.
        let r2: Arc<str> = "R2".into();
        assert_eq!(st.count_in_window(&r2, "k", 60 * S, t0), 1);
        // 70 s later the first five fell out.
        assert_eq!(st.count_in_window(&r, "k", 60 * S, t0 + 70 * S), 1);
    }

    #[test]
    fn distinct_and_first_seen() {
        let st = state(1000);
        let r: Arc<str> = "R".into();
        let t0 = 1_700_000_000 * S;
        assert_eq!(st.distinct_in_window(&r, "h", "a", 60 * S, t0), 1);
        assert_eq!(st.distinct_in_window(&r, "h", "a", 60 * S, t0 + S), 1);
        assert_eq!(st.distinct_in_window(&r, "h", "b", 60 * S, t0 + 2 * S), 2);
        assert_eq!(st.distinct_in_window(&r, "h", "c", 60 * S, t0 + 62 * S), 2);
        for i in 0..5000 {
            st.distinct_in_window(&r, "big", &i.to_string(), 60 * S, t0);
        }
        assert_eq!(
            st.distinct_in_window(&r, "big", "x", 60 * S, t0),
            MAX_DISTINCT_PER_KEY as i64
        );
        assert!(st.first_seen(&r, "x"));
        assert!(!st.first_seen(&r, "x"));
    }

    #[test]
    fn bounded_with_counted_evictions() {
        let st = state(64);
        let r: Arc<str> = "R".into();
        for i in 0..10_000 {
            st.first_seen(&r, &format!("k{i}"));
        }
        assert!(st.len() <= 64);
        assert!(st.evictions() >= 10_000 - 64);
        let long = "x".repeat(100_000);
        assert!(st.first_seen(&r, &long));
        assert!(!st.first_seen(&r, &long));
    }
}
