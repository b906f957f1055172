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

/// What a worker hands the writer.
pub enum Output {
    Event {
        kind: EventKind,
        line: Option<String>,
        alerts: Vec<Alert>,
    },
    /// The rule set changed (for the audit trail).
    RulesetChange(serde_json::Value),
}

/// Lowers the calling thread's priority (Linux: per thread). `nice` 1..=19 is a
/// lower share of the CPU; 20 is SCHED_IDLE: the thread runs only on CPU time
/// nothing else wants. Lowering needs no privilege; a failure is logged and the
/// thread runs on as it is.
pub fn lower_thread_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: plain syscalls on the calling thread; `param` outlives the call.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        if nice >= 20 {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param)
        } else {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        }
    };
    if rc != 0 {
        tracing::warn!(
            "could not lower the priority of a sensor thread (nice {nice}): {}",
            std::io::Error::last_os_error()
        );
    }
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

pub struct Workers {
    senders: Vec<Sender<Event>>,
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
        nice: i32,
        out: Sender<Output>,
    ) -> Result<Workers> {
        let n = n.max(1);
        let mut senders = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx): (Sender<Event>, Receiver<Event>) = bounded(queue_per_worker.max(1));
            let rules = rules.clone();
            let state = Arc::clone(&state);
            let identity = identity.clone();
            let out = out.clone();
            let handle = std::thread::Builder::new()
                .name(format!("gw-rules-{i}"))
                .spawn(move || {
                    lower_thread_priority(nice);
                    let mut seen = rules.generation();
                    let mut eval = Evaluator::new(rules.get(), state, identity);
                    for ev in rx {
                        let now = rules.generation();
                        if now != seen {
                            eval.set_ruleset(rules.get());
                            seen = now;
                        }
                        let alerts = eval.evaluate(&ev);
                        let line = serde_json::to_string(&ev).ok();
                        if out
                            .send(Output::Event {
                                kind: ev.kind,
                                line,
                                alerts,
                            })
                            .is_err()
                        {
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

    /// Queue an event for its worker; blocks while that worker's queue is full.
    pub fn dispatch(&self, ev: Event) -> bool {
        let i = shard(&ev, self.senders.len());
        self.senders[i].send(ev).is_ok()
    }

    /// A handle that can dispatch from another thread (the ring-buffer callback).
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher {
            senders: self.senders.clone(),
        }
    }

    /// Close the queues and wait for the workers to drain them.
    pub fn join(self) {
        drop(self.senders);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    senders: Vec<Sender<Event>>,
}

impl Dispatcher {
    pub fn dispatch(&self, ev: Event) -> bool {
        let i = shard(&ev, self.senders.len());
        self.senders[i].send(ev).is_ok()
    }
}
