//! CPU budget for capture (`capture.cpu_budget_percent`): keeps what gatewatch
//! costs the host (its kernel parsing plus the sensor process) within a share
//! of one CPU by inspecting fewer connections when traffic outgrows it.
//!
//! The kernel decides per connection (a keyed hash of both endpoints against
//! an admission threshold out of [`ADMIT_ALL`], bpf/include/gw_budget.h); this
//! controller moves the threshold. It cuts at once in proportion to the
//! overrun and gives back gradually, so a burst sheds quickly and a quiet
//! spell restores full inspection within seconds. It never goes below
//! [`ADMIT_MIN`]: some traffic is always inspected, and the sensor says how
//! much (`sensor_stats.inspected_percent`, GW-SENSOR-002, metrics). While it
//! samples, [`KeySchedule`] draws a new key every [`ROTATE`].

use std::time::{Duration, Instant};

/// Threshold that admits every connection.
pub const ADMIT_ALL: u32 = 65536;
/// Floor: 1 connection in 1024 is always inspected.
pub const ADMIT_MIN: u32 = 64;
/// How often the controller looks.
pub const TICK: Duration = Duration::from_millis(250);
/// Largest step back up per tick (×1.5): from the floor to full in about 4 s.
const RAISE_MAX: f64 = 1.5;
/// Aim a little under the budget so noise does not flap around it.
const AIM: f64 = 0.9;

#[derive(Debug, Clone)]
pub struct Governor {
    /// Budget in CPU-nanoseconds per wall-clock nanosecond (0.05 = 5% of a CPU).
    budget: f64,
    admit: u32,
    /// What the sensor process costs with no traffic at all (timers, stats),
    /// learnt from quiet ticks: inspecting fewer connections cannot lower it,
    /// so it is not charged to the budget.
    idle: f64,
}

impl Governor {
    pub fn new(budget_percent: f64) -> Governor {
        Governor {
            budget: budget_percent / 100.0,
            admit: ADMIT_ALL,
            idle: 0.0,
        }
    }

    pub fn admit(&self) -> u32 {
        self.admit
    }

    /// Share of connections inspected, 0..=100.
    pub fn admitted_percent(&self) -> f64 {
        percent(self.admit)
    }

    /// One observation: CPU spent by the kernel's parsing and by the sensor
    /// process over `wall`, and whether any TCP payload came by in it.
    /// Returns the new threshold when it changes.
    pub fn observe(
        &mut self,
        kernel_ns: u64,
        process_ns: u64,
        wall: Duration,
        traffic: bool,
    ) -> Option<u32> {
        let wall_ns = wall.as_nanos() as f64;
        if wall_ns <= 0.0 || self.budget <= 0.0 {
            return None;
        }
        let process = process_ns as f64 / wall_ns;
        let used = if traffic {
            kernel_ns as f64 / wall_ns + (process - self.idle).max(0.0)
        } else {
            // Nothing to inspect: whatever the process spent is its idle cost.
            self.idle = 0.8 * self.idle + 0.2 * process;
            0.0
        };
        let target = self.budget * AIM;
        // Cost scales with the share admitted, so the share that would have
        // fit is admit × target / used; raise no faster than RAISE_MAX.
        let factor = if used > 0.0 {
            (target / used).min(RAISE_MAX)
        } else {
            RAISE_MAX
        };
        if (0.95..=1.05).contains(&factor) {
            return None; // close enough: hold still
        }
        let next = (f64::from(self.admit) * factor).round() as u64;
        let next = next.clamp(u64::from(ADMIT_MIN), u64::from(ADMIT_ALL)) as u32;
        if next == self.admit {
            return None;
        }
        self.admit = next;
        Some(next)
    }
}

/// While sampling, a new sampling key this often: with few long-lived
/// connections (a gateway behind a load balancer) each is inspected in turn
/// instead of the same ones forever.
pub const ROTATE: Duration = Duration::from_secs(10);

/// What the kernel should do now: the threshold, whether to draw a new key,
/// and whether messages under way on skipped connections are still finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub admit: u32,
    pub new_key: bool,
    pub grace: bool,
}

/// When to draw a new sampling key, and how long the grace after one lasts.
#[derive(Debug, Clone)]
pub struct KeySchedule {
    grace: Duration,
    rotated_at: Instant,
    grace_until: Option<Instant>,
}

impl KeySchedule {
    /// `grace`: how long a message may wait for its next bytes
    /// (`capture.body_wait_ms`); one under way is finished within it.
    pub fn new(grace: Duration, now: Instant) -> KeySchedule {
        KeySchedule {
            grace,
            rotated_at: now,
            grace_until: None,
        }
    }

    /// Whether to draw a new key now, and whether the grace flag changes
    /// (`Some(on)`). A sampling spell keeps its first key for [`ROTATE`].
    pub fn step(&mut self, now: Instant, sampling: bool) -> (bool, Option<bool>) {
        if !sampling {
            self.rotated_at = now;
        }
        if sampling && now.duration_since(self.rotated_at) >= ROTATE {
            self.rotated_at = now;
            self.grace_until = Some(now + self.grace);
            return (true, Some(true));
        }
        if self.grace_until.is_some_and(|t| now >= t) {
            self.grace_until = None;
            return (false, Some(false));
        }
        (false, None)
    }

    pub fn in_grace(&self) -> bool {
        self.grace_until.is_some()
    }
}

/// The controller fed from the sensor's main loop: call [`Budget::poll`] as
/// often as convenient with the kernel's counters; it looks once per [`TICK`]
/// and returns a [`Step`] for `Probe::set_admission` when one is due.
#[derive(Debug)]
pub struct Budget {
    pub governor: Governor,
    keys: KeySchedule,
    at: Instant,
    parse_ns: u64,
    cpu_ns: u64,
    payload: u64,
}

impl Budget {
    pub fn new(
        budget_percent: f64,
        grace: Duration,
        parse_ns_total: u64,
        payload_total: u64,
    ) -> Budget {
        Budget {
            governor: Governor::new(budget_percent),
            keys: KeySchedule::new(grace, Instant::now()),
            at: Instant::now(),
            parse_ns: parse_ns_total,
            cpu_ns: process_cpu_ns(),
            payload: payload_total,
        }
    }

    /// `payload_total`: the kernel's `tcp_payload_packets` counter.
    pub fn poll(&mut self, parse_ns_total: u64, payload_total: u64) -> Option<Step> {
        let wall = self.at.elapsed();
        if wall < TICK {
            return None;
        }
        let cpu = process_cpu_ns();
        let change = self.governor.observe(
            parse_ns_total.saturating_sub(self.parse_ns),
            cpu.saturating_sub(self.cpu_ns),
            wall,
            payload_total != self.payload,
        );
        let now = Instant::now();
        (self.at, self.parse_ns, self.cpu_ns, self.payload) =
            (now, parse_ns_total, cpu, payload_total);
        let (new_key, grace) = self.keys.step(now, self.governor.admit() < ADMIT_ALL);
        (change.is_some() || new_key || grace.is_some()).then_some(Step {
            admit: self.governor.admit(),
            new_key,
            grace: self.keys.in_grace(),
        })
    }
}

/// A threshold as the share of connections it inspects, 0..=100.
pub fn percent(admit: u32) -> f64 {
    f64::from(admit) * 100.0 / f64::from(ADMIT_ALL)
}

/// CPU time of this whole process (every thread), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid start.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage; RUSAGE_SELF cannot fail.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(250);
    const MS: u64 = 1_000_000;

    #[test]
    fn over_budget_cuts_in_proportion_at_once() {
        let mut g = Governor::new(10.0);
        // 50% of a CPU against a 10% budget: keep 10% × 0.9 / 50% = 18%.
        let a = g.observe(100 * MS, 25 * MS, T, true).expect("cut");
        assert!((a as f64 / ADMIT_ALL as f64 - 0.18).abs() < 0.001, "{a}");
        assert!((g.admitted_percent() - 18.0).abs() < 0.1);
    }

    #[test]
    fn within_budget_changes_nothing_at_full_admission() {
        let mut g = Governor::new(10.0);
        assert_eq!(g.observe(5 * MS, 5 * MS, T, true), None);
        assert_eq!(g.observe(0, 0, T, false), None);
        assert_eq!(g.admit(), ADMIT_ALL);
    }

    #[test]
    fn recovers_gradually_to_full_when_load_falls() {
        let mut g = Governor::new(10.0);
        for _ in 0..20 {
            g.observe(250 * MS, 0, T, true); // a whole CPU: down to the floor
        }
        assert_eq!(g.admit(), ADMIT_MIN, "never below the floor");
        let mut ticks = 0;
        while g.admit() < ADMIT_ALL {
            let before = g.admit();
            g.observe(MS, 0, T, true); // light traffic
            assert!(g.admit() as f64 <= before as f64 * RAISE_MAX + 1.0);
            ticks += 1;
            assert!(ticks < 40, "stuck at {}", g.admit());
        }
        assert!(ticks >= 10, "raised too fast: {ticks} ticks");
    }

    #[test]
    fn holds_near_the_target_instead_of_flapping() {
        let mut g = Governor::new(20.0);
        // A steady load costing 60% of a CPU at full admission.
        let full_cost = 0.60;
        let mut seen = Vec::new();
        for _ in 0..40 {
            let share = g.admit() as f64 / ADMIT_ALL as f64;
            let used_ns = (full_cost * share * T.as_nanos() as f64) as u64;
            g.observe(used_ns, 0, T, true);
            seen.push(g.admit());
        }
        let last = &seen[30..];
        assert!(last.iter().all(|a| *a == last[0]), "{last:?}");
        let used = full_cost * last[0] as f64 / ADMIT_ALL as f64;
        assert!(used <= 0.20 && used > 0.15, "settled at {used}");
    }

    #[test]
    fn idle_cost_is_learnt_and_never_keeps_sampling_on() {
        // A budget below what the process costs with no traffic at all.
        let mut g = Governor::new(1.0);
        g.observe(100 * MS, 100 * MS, T, true);
        assert!(g.admit() < ADMIT_ALL / 10);
        // Load gone; the process still burns 2% of a CPU on its timers.
        for _ in 0..30 {
            g.observe(0, 5 * MS, T, false);
        }
        assert_eq!(
            g.admit(),
            ADMIT_ALL,
            "quiet ticks must restore full inspection"
        );
        // Light traffic again: only what it adds above idle is charged.
        assert_eq!(g.observe(MS / 10, 5 * MS, T, true), None);
        assert_eq!(g.admit(), ADMIT_ALL);
    }

    #[test]
    fn keys_rotate_while_sampling_with_a_grace_that_ends() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(1);
        let mut k = KeySchedule::new(grace, t0);
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        // Not sampling: never a new key, however long.
        assert_eq!(k.step(at(30.0), false), (false, None));
        // Sampling starts at 30 s: its first key lasts ROTATE.
        assert_eq!(k.step(at(31.0), true), (false, None));
        assert_eq!(k.step(at(39.9), true), (false, None));
        assert_eq!(k.step(at(40.0), true), (true, Some(true)));
        assert!(k.in_grace());
        assert_eq!(k.step(at(40.5), true), (false, None));
        assert_eq!(k.step(at(41.0), true), (false, Some(false)));
        assert!(!k.in_grace());
        assert_eq!(k.step(at(50.0), true), (true, Some(true)));
        // Sampling ends during a grace: the grace still ends on time.
        assert_eq!(k.step(at(50.5), false), (false, None));
        assert_eq!(k.step(at(51.0), false), (false, Some(false)));
    }

    #[test]
    fn no_budget_never_sheds() {
        let mut g = Governor::new(0.0);
        assert_eq!(g.observe(u64::MAX / 4, u64::MAX / 4, T, true), None);
        assert_eq!(g.admit(), ADMIT_ALL);
    }
}
