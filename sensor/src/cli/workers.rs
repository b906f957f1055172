//! Rule workers: one Rhai evaluator per thread (a shared engine does not scale),
//! events sharded by flow so one connection's events stay in order, results
//! to the single writer thread. The running rule set is swapped on reload.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::alerts::{Alert, SensorIdentity};
use crate::events::{Event, EventKind};
use crate::rules::{Evaluator, RuleSet, RuleState};

/// One evaluated event: its JSON line and the alerts it raised.
pub struct Evaluated {
    pub kind: EventKind,
    pub line: Option<String>,
    pub alerts: Vec<Alert>,
}

/// What a worker hands the writer.
pub enum Output {
    /// A batch of events, in the order the worker took them.
    Events(Vec<Evaluated>),
    /// The rule set changed (for the audit trail).
    RulesetChange(serde_json::Value),
}

/// How the sensor's background threads (rule workers, writer) yield the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadPriority {
    /// 1..=19: a lower share of the CPU; 20: SCHED_IDLE, only CPU time nothing
    /// else wants; 0: an equal share.
    pub nice: i32,
    /// SCHED_BATCH: a waking sensor thread never preempts the gateway's
    /// threads; it waits for their slice to end (ignored with nice 20).
    pub batch: bool,
}

/// Lowers the calling thread's priority (Linux: per thread). Lowering needs no
/// privilege; a failure is logged and the thread runs on as it is.
pub fn lower_thread_priority(p: ThreadPriority) {
    // SAFETY: plain syscalls on the calling thread; `param` outlives the calls.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t };
    let param = libc::sched_param { sched_priority: 0 };
    let policy = if p.nice >= 20 {
        Some(libc::SCHED_IDLE)
    } else if p.batch {
        Some(libc::SCHED_BATCH)
    } else {
        None
    };
    if let Some(policy) = policy {
        // SAFETY: as above.
        if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
            warn_priority(p);
        }
    }
    if (1..20).contains(&p.nice) {
        // SAFETY: as above.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, p.nice) } != 0 {
            warn_priority(p);
        }
    }
}

fn warn_priority(p: ThreadPriority) {
    tracing::warn!(
        "could not lower the priority of a sensor thread ({p:?}): {}",
        std::io::Error::last_os_error()
    );
}

/// The running rule set, replaced whole on reload; workers notice the generation.
#[derive(Clone)]
pub struct CurrentRules {
    set: Arc<RwLock<Arc<RuleSet>>>,
    generation: Arc<AtomicU64>,
}

impl CurrentRules {
    pub fn new(set: RuleSet) -> Self {
        CurrentRules {
            set: Arc::new(RwLock::new(Arc::new(set))),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn get(&self) -> Arc<RuleSet> {
        match self.set.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, set: RuleSet) {
        match self.set.write() {
            Ok(mut g) => *g = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Events are handed to workers in batches of up to this many: one channel
/// operation and at most one wake-up per batch, not per event.
pub const BATCH: usize = 64;

pub struct Workers {
    senders: Vec<Sender<Vec<Event>>>,
    handles: Vec<JoinHandle<()>>,
}

fn shard(ev: &Event, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // Both directions of a connection land on the same worker.
    let mut ends = [ev.src.as_ref(), ev.dst.as_ref()];
    ends.sort_by_key(|e| e.map(|e| (e.ip, e.port)));
    for e in ends.into_iter().flatten() {
        e.ip.hash(&mut h);
        e.port.hash(&mut h);
    }
    (h.finish() as usize) % n
}

impl Workers {
    pub fn spawn(
        n: usize,
        rules: CurrentRules,
        state: Arc<RuleState>,
        identity: SensorIdentity,
        queue_per_worker: usize,
        priority: ThreadPriority,
        out: Sender<Output>,
    ) -> Result<Workers> {
        let n = n.max(1);
        let mut senders = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            // The queue bound counts events, as configured; it holds batches.
            let (tx, rx): (Sender<Vec<Event>>, Receiver<Vec<Event>>) =
                bounded(queue_per_worker.div_ceil(BATCH).max(1));
            let rules = rules.clone();
            let state = Arc::clone(&state);
            let identity = identity.clone();
            let out = out.clone();
            let handle = std::thread::Builder::new()
                .name(format!("gw-rules-{i}"))
                .spawn(move || {
                    lower_thread_priority(priority);
                    let mut seen = rules.generation();
                    let mut eval = Evaluator::new(rules.get(), state, identity);
                    for batch in rx {
                        let now = rules.generation();
                        if now != seen {
                            eval.set_ruleset(rules.get());
                            seen = now;
                        }
                        let done: Vec<Evaluated> = batch
                            .iter()
                            .map(|ev| Evaluated {
                                kind: ev.kind,
                                alerts: eval.evaluate(ev),
                                line: serde_json::to_string(ev).ok(),
                            })
                            .collect();
                        if out.send(Output::Events(done)).is_err() {
                            break;
                        }
                    }
                })
                .context("starting rule worker")?;
            senders.push(tx);
            handles.push(handle);
        }
        Ok(Workers { senders, handles })
    }

    /// A handle that queues events for the workers in batches (the ring
    /// buffer callback and the main loop share it, on one thread).
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher {
            senders: self.senders.clone(),
            pending: self.senders.iter().map(|_| Vec::new()).collect(),
        }
    }

    /// Close the queues and wait for the workers to drain them (flush every
    /// dispatcher first).
    pub fn join(self) {
        drop(self.senders);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

pub struct Dispatcher {
    senders: Vec<Sender<Vec<Event>>>,
    pending: Vec<Vec<Event>>,
}

impl Dispatcher {
    /// Queue an event for its worker; a full batch is sent at once (blocking
    /// while that worker's queue is full). False when the workers are gone.
    pub fn dispatch(&mut self, ev: Event) -> bool {
        let i = shard(&ev, self.senders.len());
        self.pending[i].push(ev);
        if self.pending[i].len() >= BATCH {
            return self.send(i);
        }
        true
    }

    /// Send every partial batch: at the end of each ring-buffer drain, so an
    /// event never waits for others to arrive.
    pub fn flush(&mut self) -> bool {
        let mut ok = true;
        for i in 0..self.pending.len() {
            if !self.pending[i].is_empty() {
                ok &= self.send(i);
            }
        }
        ok
    }

    fn send(&mut self, i: usize) -> bool {
        let batch = std::mem::replace(&mut self.pending[i], Vec::with_capacity(BATCH));
        self.senders[i].send(batch).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_and_nice_after(p: ThreadPriority) -> (i32, i32) {
        std::thread::spawn(move || {
            lower_thread_priority(p);
            // SAFETY: queries on the calling thread only.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
                (
                    libc::sched_getscheduler(tid),
                    libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t),
                )
            }
        })
        .join()
        .expect("priority thread")
    }

    #[test]
    fn sensor_threads_yield_to_the_gateway_as_configured() {
        assert_eq!(
            policy_and_nice_after(ThreadPriority {
                nice: 10,
                batch: true
            }),
            (libc::SCHED_BATCH, 10)
        );
        assert_eq!(
            policy_and_nice_after(ThreadPriority {
                nice: 10,
                batch: false
            }),
            (libc::SCHED_OTHER, 10)
        );
        // nice 20 means SCHED_IDLE, whatever `batch` says
        assert_eq!(
            policy_and_nice_after(ThreadPriority {
                nice: 20,
                batch: true
            })
            .0,
            libc::SCHED_IDLE
        );
    }
}
