//! Kernel timestamps (CLOCK_BOOTTIME, what bpf_ktime_get_boot_ns returns) to wall-clock time.

#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    /// realtime - boottime, in ns, measured once at start.
    offset_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; both clocks exist on Linux.
    unsafe { libc::clock_gettime(id, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_BOOTTIME now, in ns (what the kernel stamps events with).
pub fn boot_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
}

impl BootClock {
    pub fn now() -> Self {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        BootClock {
            offset_ns: real - boot,
        }
    }

    pub fn to_unix_ns(&self, boot_ns: u64) -> i128 {
        i128::from(boot_ns) + self.offset_ns
    }

    pub fn now_unix_ns() -> i128 {
        clock_ns(libc::CLOCK_REALTIME)
    }
}
