//! Why a kernel program did not load, told truthfully: libbpf's log (the
//! verifier's included) is captured while an object loads, so that a refusal
//! names the program, the kernel release, the verifier's last lines and the
//! file the whole log went to, and capability advice is given only when the
//! kernel said "permission denied" without verifying anything.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libbpf_rs::PrintLevel;

/// Captured log bytes per load at most: a verifier log of a large program runs
/// to megabytes, its end is what matters.
const CAPTURE_MAX: usize = 32 << 20;
/// Verifier lines quoted in the error message (the rest is in the log file).
const TAIL_LINES: usize = 12;

thread_local! {
    /// Set while this thread loads an object: libbpf prints on the loading thread.
    static CAPTURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Where full verifier logs are written; the state directory once `run` or
/// `doctor` knows it, the temporary directory before.
static LOG_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

pub fn set_log_dir(dir: &Path) {
    if let Ok(mut d) = LOG_DIR.lock() {
        *d = Some(dir.to_path_buf());
    }
}

/// Full logs go to `state_dir` when it exists (else the temporary directory).
pub fn use_state_dir(state_dir: &Path) {
    if state_dir.is_dir() {
        set_log_dir(state_dir);
    }
}

fn log_dir() -> PathBuf {
    LOG_DIR
        .lock()
        .ok()
        .and_then(|d| d.clone())
        .unwrap_or_else(std::env::temp_dir)
}

fn libbpf_print(level: PrintLevel, msg: String) {
    let captured = CAPTURE.with(|c| {
        let mut c = c.borrow_mut();
        match c.as_mut() {
            Some(buf) => {
                if buf.len() + msg.len() <= CAPTURE_MAX {
                    buf.push_str(&msg);
                }
                true
            }
            None => false,
        }
    });
    if captured {
        return;
    }
    // Outside a load (attach, map updates): libbpf's words go to our log;
    // every failure they explain is also returned as an error with context.
    let msg = msg.trim_end();
    match level {
        PrintLevel::Warn => tracing::debug!(target: "libbpf", "{msg}"),
        _ => tracing::trace!(target: "libbpf", "{msg}"),
    }
}

/// Route libbpf's messages through [`libbpf_print`] (idempotent).
pub fn install() {
    libbpf_rs::set_print(Some((PrintLevel::Info, libbpf_print)));
}

/// Run `load` with libbpf's log captured; on failure, turn the log into a
/// [`LoadFailure`] for `object` (e.g. "net.bpf.c"), the error's source for
/// `downcast_ref`.
pub fn load_reported<T>(
    object: &'static str,
    load: impl FnOnce() -> libbpf_rs::Result<T>,
) -> anyhow::Result<T> {
    install();
    CAPTURE.with(|c| *c.borrow_mut() = Some(String::new()));
    let result = load();
    let log = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    result.map_err(|e| LoadFailure::from_log(object, &e.to_string(), &log).into())
}

/// What stopped a kernel object from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The verifier refused a program: a gatewatch bug on this kernel.
    Rejected,
    /// EPERM/EACCES before anything was verified: missing privileges.
    Permission,
    /// Anything else (missing kernel feature, map creation, BTF).
    Other,
}

#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub object: &'static str,
    /// The program the kernel refused, when libbpf named one.
    pub program: Option<String>,
    /// The errno libbpf reported (e.g. "EFAULT"), or the error's own words.
    pub errno: String,
    pub kernel: String,
    pub kind: FailureKind,
    /// The verifier's last lines for `program`.
    pub tail: Vec<String>,
    /// Where the whole captured log was written.
    pub log_path: Option<PathBuf>,
    /// Capabilities this process has, of those loading needs.
    pub capabilities: Vec<&'static str>,
}

impl std::error::Error for LoadFailure {}

impl LoadFailure {
    pub fn from_log(object: &'static str, error: &str, log: &str) -> LoadFailure {
        let mut program = None;
        let mut errno = None;
        for line in log.lines() {
            // libbpf: prog 'gw_tc_ingress': BPF program load failed: -EFAULT
            if let Some(rest) = line.split("prog '").nth(1) {
                if let Some((name, tail)) = rest.split_once("': ") {
                    if tail.contains("load failed") {
                        program = Some(name.to_string());
                        errno = tail.rsplit(": -").next().map(|s| s.trim().to_string());
                    }
                }
            }
        }
        let verifier = verifier_lines(log, program.as_deref());
        let errno = errno.unwrap_or_else(|| error.to_string());
        let kind = if !verifier.is_empty() {
            FailureKind::Rejected
        } else if errno.contains("EPERM")
            || errno.contains("EACCES")
            || error.contains("Operation not permitted")
            || error.contains("Permission denied")
        {
            FailureKind::Permission
        } else {
            FailureKind::Other
        };
        let lines: Vec<&String> = verifier.iter().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..]
            .iter()
            .map(|l| (*l).clone())
            .collect();
        let log_path = (!log.is_empty())
            .then(|| write_log(object, program.as_deref(), log))
            .flatten();
        LoadFailure {
            object,
            program,
            errno,
            kernel: kernel_release(),
            kind,
            tail,
            log_path,
            capabilities: capabilities(),
        }
    }
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prog = self.program.as_deref().unwrap_or("(none named)");
        let of_prog = self
            .program
            .as_deref()
            .map(|p| format!(" (program {p})"))
            .unwrap_or_default();
        match self.kind {
            FailureKind::Rejected => {
                write!(
                    f,
                    "the kernel's verifier rejected BPF program {prog} of {} on Linux {} ({})",
                    self.object, self.kernel, self.errno
                )?;
                for l in &self.tail {
                    write!(f, "\n    verifier: {l}")?;
                }
                if let Some(p) = &self.log_path {
                    write!(f, "\n  full log: {}", p.display())?;
                }
                write!(
                    f,
                    "\n  This kernel's verifier refuses this build of gatewatch: not a \
                     configuration or privilege problem. `gatewatch doctor` shows what \
                     loads here; please report the kernel release and the log above."
                )
            }
            FailureKind::Permission => {
                let have = if self.capabilities.is_empty() {
                    "none of them".to_string()
                } else {
                    self.capabilities.join(", ")
                };
                write!(
                    f,
                    "loading {}{of_prog} on Linux {}: permission denied ({}). gatewatch \
                     needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or root); this process has {have}",
                    self.object, self.kernel, self.errno
                )
            }
            FailureKind::Other => {
                write!(
                    f,
                    "loading {}{of_prog} on Linux {}: {}",
                    self.object, self.kernel, self.errno
                )?;
                if let Some(p) = &self.log_path {
                    write!(f, "\n  libbpf log: {}", p.display())?;
                }
                Ok(())
            }
        }
    }
}

/// The lines between libbpf's BEGIN/END PROG LOAD LOG markers for `program`
/// (the first such block when libbpf named no program).
fn verifier_lines(log: &str, program: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in log.lines() {
        if line.contains("-- BEGIN PROG LOAD LOG --") {
            let ours = program.is_none_or(|p| line.contains(&format!("prog '{p}'")));
            if ours && out.is_empty() {
                inside = true;
            }
            continue;
        }
        if line.contains("-- END PROG LOAD LOG --") {
            if inside {
                break;
            }
            continue;
        }
        if inside {
            out.push(line.to_string());
        }
    }
    out
}

fn write_log(object: &str, program: Option<&str>, log: &str) -> Option<PathBuf> {
    // One file per failed load: a process can fail more than one (a retry).
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stem = object.trim_end_matches(".bpf.c");
    let name = format!(
        "gatewatch-load-{stem}-{}-{}-{seq}.log",
        program.unwrap_or("object"),
        std::process::id()
    );
    let path = log_dir().join(name);
    match std::fs::write(&path, log) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(path = %path.display(), "could not write the verifier log: {e}");
            None
        }
    }
}

/// Whether the running kernel's BTF names `type_name` (a NUL-terminated string
/// of its string section): `BPF_TCX_INGRESS` for tcx, `btf_trace_X` for the
/// raw tracepoint X. False without BTF.
pub fn kernel_btf_has(names: &[&str]) -> Vec<bool> {
    let Ok(btf) = std::fs::read("/sys/kernel/btf/vmlinux") else {
        return vec![false; names.len()];
    };
    names
        .iter()
        .map(|n| {
            let needle = n.as_bytes();
            btf.windows(needle.len() + 2)
                .any(|w| w[0] == 0 && &w[1..=needle.len()] == needle && w[needle.len() + 1] == 0)
        })
        .collect()
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(unknown release)".to_string())
}

/// Which of the capabilities loading and attaching need this process has
/// (CapEff in /proc/self/status).
pub fn capabilities() -> Vec<&'static str> {
    const NEEDED: [(u32, &str); 4] = [
        (21, "CAP_SYS_ADMIN"),
        (12, "CAP_NET_ADMIN"),
        (38, "CAP_PERFMON"),
        (39, "CAP_BPF"),
    ];
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    NEEDED
        .iter()
        .filter(|(bit, _)| eff & (1u64 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// One program of a loaded object: whether the kernel has it, and how many
/// instructions its verifier processed (kernel 5.16+; 0 where it does not say).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramReport {
    pub object: &'static str,
    pub name: String,
    pub loaded: bool,
    pub verified_insns: u32,
}

/// The verifier's instruction limit per program (BPF_COMPLEXITY_LIMIT_INSNS).
pub const INSN_LIMIT: u32 = 1_000_000;

/// Every program of a loaded object, loaded or left out (autoload off).
pub fn program_reports(object: &'static str, obj: &libbpf_rs::Object) -> Vec<ProgramReport> {
    use libbpf_rs::AsRawLibbpf;
    obj.progs()
        .map(|prog| {
            // SAFETY: a program of a live object; -1 when it was not loaded
            // (the raw fd, since a BorrowedFd of -1 is not allowed).
            let fd = unsafe { libbpf_sys::bpf_program__fd(prog.as_libbpf_object().as_ptr()) };
            let mut insns = 0;
            if fd >= 0 {
                let mut info = libbpf_sys::bpf_prog_info::default();
                let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
                // SAFETY: a valid program fd, and an info struct of the size passed.
                if unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) } == 0 {
                    insns = info.verified_insns;
                }
            }
            ProgramReport {
                object,
                name: prog.name().to_string_lossy().into_owned(),
                loaded: fd >= 0,
                verified_insns: insns,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REJECTED: &str = "libbpf: prog 'gw_tc_ingress': BPF program load failed: -EFAULT
libbpf: prog 'gw_tc_ingress': -- BEGIN PROG LOAD LOG --
0: R1=ctx() R10=fp0
2718: (85) call bpf_loop#181
verifier bug: backtracking call unexpected regs 2c4
processed 37553 insns (limit 1000000) max_states_per_insn 24
-- END PROG LOAD LOG --
libbpf: prog 'gw_tc_ingress': failed to load: -EFAULT
libbpf: failed to load object 'net_bpf'
";

    #[test]
    fn a_verifier_rejection_names_program_errno_and_last_lines() {
        let f = LoadFailure::from_log("net.bpf.c", "Bad address (os error 14)", REJECTED);
        assert_eq!(f.kind, FailureKind::Rejected);
        assert_eq!(f.program.as_deref(), Some("gw_tc_ingress"));
        assert_eq!(f.errno, "EFAULT");
        assert_eq!(f.tail.len(), 4);
        let msg = f.to_string();
        assert!(msg.contains("verifier rejected BPF program gw_tc_ingress of net.bpf.c"));
        assert!(msg.contains("verifier: verifier bug: backtracking call unexpected regs 2c4"));
        assert!(!msg.contains("CAP_BPF"), "{msg}");
        if let Some(p) = &f.log_path {
            assert_eq!(std::fs::read_to_string(p).unwrap(), REJECTED);
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn permission_denied_without_a_verifier_log_gives_capability_advice() {
        let log = "libbpf: map 'gw_events': failed to create: -EPERM\nlibbpf: failed to load object 'net_bpf'\n";
        let f = LoadFailure::from_log("net.bpf.c", "Operation not permitted (os error 1)", log);
        assert_eq!(f.kind, FailureKind::Permission);
        assert!(f
            .to_string()
            .contains("needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"));
        if let Some(p) = &f.log_path {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn a_stack_limit_refusal_with_eacces_is_a_rejection_not_a_privilege_problem() {
        let log = "libbpf: prog 'gw_tc_ingress': BPF program load failed: -EACCES
libbpf: prog 'gw_tc_ingress': -- BEGIN PROG LOAD LOG --
combined stack size of 7 calls is 544. Too large
-- END PROG LOAD LOG --
";
        let f = LoadFailure::from_log("net.bpf.c", "Permission denied (os error 13)", log);
        assert_eq!(f.kind, FailureKind::Rejected);
        assert_eq!(f.errno, "EACCES");
        assert!(f.to_string().contains("combined stack size"));
        if let Some(p) = &f.log_path {
            std::fs::remove_file(p).unwrap();
        }
    }
}
