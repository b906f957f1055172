//! TLS plaintext capture: loads `bpf/tls.bpf.c` beside the packet program and
//! attaches uprobes to `SSL_read`, `SSL_read_ex`, `SSL_write` and `SSL_write_ex`
//! of each OpenSSL `libssl` shared library found (or configured).
//!
//! The TLS object reuses the packet object's hash key, header table, counters,
//! CPU-budget threshold and ring buffer, so a credential hashes the same over
//! TLS and plaintext, one budget covers both paths, and every event arrives
//! through the one ring buffer `gatewatch run` already reads.
//! A uprobe on a library file covers every process that maps that file, including
//! processes started later. Programs that link OpenSSL or BoringSSL statically
//! (Go, rustls, Envoy, Node's bundled OpenSSL, ...) are not covered.

use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, OpenObject, UprobeOpts};
use serde::Deserialize;

use super::Probe;

mod skel {
    #![allow(
        clippy::all,
        clippy::pedantic,
        unused,
        non_camel_case_types,
        non_snake_case
    )]
    include!(concat!(env!("OUT_DIR"), "/tls.skel.rs"));
}

use self::skel::{TlsSkel, TlsSkelBuilder};

/// Where distributions put the system's OpenSSL 3 (and 1.1) libssl.
const SYSTEM_LIBSSL: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/aarch64-linux-gnu/libssl.so.3",
    "/usr/lib64/libssl.so.3",
    "/usr/lib/libssl.so.3",
    "/lib/x86_64-linux-gnu/libssl.so.3",
    "/lib64/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
    "/usr/lib/aarch64-linux-gnu/libssl.so.1.1",
    "/usr/lib64/libssl.so.1.1",
];

/// The functions probed: (symbol, entry program, return program) by index into
/// the skeleton's programs (see `TlsProbe::attach_library`).
const FUNCTIONS: [&str; 4] = ["SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"];

/// `[tls]` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Capture HTTP/1.x inside TLS through uprobes on libssl.
    pub enabled: bool,
    /// libssl files to probe. Empty: discover them (every libssl.so* that a
    /// running process maps, plus the system's libssl.so.3).
    pub libraries: Vec<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: true,
            libraries: Vec::new(),
        }
    }
}

/// A libssl file to attach to, identified by its inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

/// The loaded TLS programs and their attachments. Dropping it detaches them.
pub struct TlsProbe {
    links: Vec<Link>,
    /// Libraries with at least one probed function.
    pub libraries: Vec<PathBuf>,
    /// Whether connection endpoints are known (raw tracepoints sock_send_length and
    /// sock_recv_length attached).
    pub endpoints: bool,
    pub skel: TlsSkel<'static>,
}

impl TlsProbe {
    /// What `gatewatch run` calls: load and attach when `[tls] enabled`, and on
    /// any failure say so in the log and carry on with packet capture alone.
    pub fn start(probe: &Probe, cfg: &TlsConfig) -> Option<TlsProbe> {
        if !cfg.enabled {
            tracing::info!("TLS capture disabled (tls.enabled = false)");
            return None;
        }
        match TlsProbe::load(probe, cfg) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!("TLS capture unavailable, continuing without it: {e:#}");
                None
            }
        }
    }

    /// Load `tls.bpf.c` sharing `probe`'s maps, then attach to each library.
    /// A missing library or one without the OpenSSL symbols is logged and skipped.
    pub fn load(probe: &Probe, cfg: &TlsConfig) -> Result<TlsProbe> {
        tracing::info!(
            "TLS capture: uprobes on dynamically linked OpenSSL libssl; programs with \
             statically linked OpenSSL/BoringSSL (Go, rustls, Envoy, Node.js, ...) are not covered"
        );
        let (skel, with_sock_tps) = load_with_fallback(probe)?;
        let mut t = TlsProbe {
            links: Vec::new(),
            libraries: Vec::new(),
            endpoints: false,
            skel,
        };
        if with_sock_tps {
            match (
                t.skel.progs.gw_tls_sock_send.attach(),
                t.skel.progs.gw_tls_sock_recv.attach(),
            ) {
                (Ok(a), Ok(b)) => {
                    tracing::info!("TLS capture: connection endpoints from socket tracepoints");
                    t.links.push(a);
                    t.links.push(b);
                    t.endpoints = true;
                }
                (a, b) => {
                    let e = a
                        .err()
                        .or(b.err())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    tracing::warn!(
                        "TLS capture: attaching raw tracepoints sock_send_length/sock_recv_length \
                         (Linux >= 6.3): {e}; TLS events will have no addresses"
                    );
                }
            }
        }

        let libs = if cfg.libraries.is_empty() {
            discover()
        } else {
            configured(&cfg.libraries)
        };
        if libs.is_empty() {
            tracing::warn!(
                "TLS capture: no libssl found (no running process maps one and no system \
                 libssl.so.3); set tls.libraries to the files to probe"
            );
        }
        for lib in &libs {
            match t.attach_library(&lib.path) {
                Ok(funcs) => {
                    tracing::info!(library = %lib.path.display(), functions = ?funcs, "TLS capture: attached");
                    t.libraries.push(lib.path.clone());
                }
                Err(e) => {
                    tracing::warn!(library = %lib.path.display(), "TLS capture: not attached: {e:#}")
                }
            }
        }
        Ok(t)
    }

    /// Entry and return probes on each function the library has. Returns the
    /// functions probed; an error when it has none of them.
    fn attach_library(&mut self, path: &Path) -> Result<Vec<&'static str>> {
        let p = &self.skel.progs;
        let progs = [
            (&p.gw_ssl_read, &p.gw_ssl_read_ret),
            (&p.gw_ssl_read_ex, &p.gw_ssl_read_ex_ret),
            (&p.gw_ssl_write, &p.gw_ssl_write_ret),
            (&p.gw_ssl_write_ex, &p.gw_ssl_write_ex_ret),
        ];
        let mut done = Vec::new();
        let mut errors = Vec::new();
        for (func, (entry, ret)) in FUNCTIONS.iter().zip(progs) {
            let opts = |retprobe| UprobeOpts {
                func_name: Some((*func).to_string()),
                retprobe,
                ..Default::default()
            };
            // Return probe first: an entry without its return would leave
            // in-flight entries that never complete.
            let r = match ret.attach_uprobe_with_opts(-1, path, 0, opts(true)) {
                Ok(l) => l,
                Err(e) => {
                    errors.push(format!("{func}: {e}"));
                    continue;
                }
            };
            match entry.attach_uprobe_with_opts(-1, path, 0, opts(false)) {
                Ok(l) => {
                    self.links.push(r);
                    self.links.push(l);
                    done.push(*func);
                }
                Err(e) => errors.push(format!("{func}: {e}")),
            }
        }
        if done.is_empty() {
            return Err(anyhow!(
                "none of {FUNCTIONS:?} could be probed: {}",
                errors.join("; ")
            ));
        }
        if !errors.is_empty() {
            tracing::warn!(library = %path.display(), "TLS capture: some functions not probed: {}", errors.join("; "));
        }
        Ok(done)
    }
}

/// Load with the socket tracepoint programs, or without them when it is they
/// the kernel refuses (TLS events then carry no addresses). A refusal of the
/// uprobe programs themselves is returned as it is.
fn load_with_fallback(probe: &Probe) -> Result<(TlsSkel<'static>, bool)> {
    match open_and_load(probe, true) {
        Ok(s) => Ok((s, true)),
        Err(e) => {
            let sock_prog = e
                .downcast_ref::<super::verifier::LoadFailure>()
                .is_some_and(|f| {
                    f.program
                        .as_deref()
                        .is_some_and(|p| p.starts_with("gw_tls_sock"))
                });
            if !sock_prog {
                return Err(e);
            }
            tracing::warn!(
                "TLS capture: socket tracepoint programs not loadable ({e:#}); \
                 TLS events will have no addresses"
            );
            Ok((open_and_load(probe, false)?, false))
        }
    }
}

/// `gatewatch doctor`: load the TLS programs beside `probe` without attaching
/// anything; their reports, and whether the socket tracepoint programs loaded.
pub fn verify_only(probe: &Probe) -> Result<(Vec<super::verifier::ProgramReport>, bool)> {
    use libbpf_rs::skel::Skel;
    let (skel, with_sock_tps) = load_with_fallback(probe)?;
    // Loading is not attaching: before 6.3 the programs verify, but the
    // tracepoints they would attach to do not exist.
    let tracepoints = super::verifier::kernel_btf_has(&[
        "btf_trace_sock_send_length",
        "btf_trace_sock_recv_length",
    ]);
    let with_sock_tps = with_sock_tps && tracepoints.iter().all(|&t| t);
    Ok((
        super::verifier::program_reports("tls.bpf.c", skel.object()),
        with_sock_tps,
    ))
}

fn open_and_load(probe: &Probe, with_sock_tps: bool) -> Result<TlsSkel<'static>> {
    // Same lifetime choice as Probe::load: loaded once per process.
    let object: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = TlsSkelBuilder::default()
        .open(object)
        .context("opening TLS BPF object")?;
    if let (Some(ro), Some(net_ro)) = (
        open.maps.rodata_data.as_deref_mut(),
        probe.skel.maps.rodata_data,
    ) {
        ro.gw_parse_window = net_ro.gw_parse_window;
        ro.gw_body_scan_window = net_ro.gw_body_scan_window;
        ro.gw_body_wait_ns = net_ro.gw_body_wait_ns;
        ro.gw_byte_path_only = net_ro.gw_byte_path_only;
        ro.gw_hdr_seed = net_ro.gw_hdr_seed;
        ro.gw_budget_on = net_ro.gw_budget_on;
        ro.gw_nquery_clear = net_ro.gw_nquery_clear;
        ro.gw_qclear_len = net_ro.gw_qclear_len;
        ro.gw_qclear_w0 = net_ro.gw_qclear_w0;
        ro.gw_qclear_w1 = net_ro.gw_qclear_w1;
    }
    let net = &probe.skel.maps;
    // As many messages under way as the packet path (capture.flow_table_mb).
    let conns = net.gw_flows.max_entries();
    open.maps
        .gw_tls_conns
        .set_max_entries(conns)
        .context("sizing the TLS message table")?;
    open.maps
        .gw_tls_secrets
        .set_max_entries(conns)
        .context("sizing the TLS message table's secret stash")?;
    open.maps
        .gw_hash_key
        .reuse_fd(net.gw_hash_key.as_fd())
        .context("sharing the hash key map")?;
    open.maps
        .gw_hdr_table
        .reuse_fd(net.gw_hdr_table.as_fd())
        .context("sharing the header table")?;
    open.maps
        .gw_counters
        .reuse_fd(net.gw_counters.as_fd())
        .context("sharing the counters")?;
    open.maps
        .gw_events
        .reuse_fd(net.gw_events.as_fd())
        .context("sharing the ring buffer")?;
    open.maps
        .gw_admit
        .reuse_fd(net.gw_admit.as_fd())
        .context("sharing the CPU budget's admission threshold")?;
    if !with_sock_tps {
        open.progs.gw_tls_sock_send.set_autoload(false);
        open.progs.gw_tls_sock_recv.set_autoload(false);
    }
    if super::fault_injected("tls") {
        let log = super::injected_rejection("gw_ssl_read_ret");
        return Err(super::verifier::LoadFailure::from_log("tls.bpf.c", "injected", &log).into());
    }
    super::verifier::load_reported("tls.bpf.c", || open.load())
}

/// Whether a path names a libssl shared object (not NSS's libssl3.so).
fn is_libssl(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with("libssl.so"))
}

fn identify(path: &Path) -> Option<Library> {
    let m = std::fs::metadata(path).ok()?;
    m.is_file().then(|| Library {
        path: path.to_path_buf(),
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Configured files, deduplicated by inode; a missing one is logged.
fn configured(paths: &[PathBuf]) -> Vec<Library> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in paths {
        match identify(p) {
            Some(lib) => {
                if seen.insert((lib.dev, lib.ino)) {
                    out.push(lib);
                }
            }
            None => tracing::error!(
                library = %p.display(),
                "TLS capture: tls.libraries entry does not exist or is not a file; skipped"
            ),
        }
    }
    out
}

/// The libssl files running processes map, then the system's, deduplicated by inode.
pub fn discover() -> Vec<Library> {
    discover_in(Path::new("/proc"), SYSTEM_LIBSSL)
}

fn discover_in(proc_root: &Path, system: &[&str]) -> Vec<Library> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut push = |lib: Library, out: &mut Vec<Library>| {
        if seen.insert((lib.dev, lib.ino)) {
            out.push(lib);
        }
    };
    let mut unreadable = 0usize;
    for entry in std::fs::read_dir(proc_root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // Processes come and go while we scan: any error means "skip this one".
        let maps = match std::fs::read_to_string(entry.path().join("maps")) {
            Ok(m) => m,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        for lib in libssl_in_maps(&maps) {
            let host = Path::new(&lib.path);
            // The path is in the process's mount namespace: prefer the same path
            // here when it is the same file, else go through /proc/PID/root.
            let cand = identify(host).filter(|l| l.ino == lib.ino).or_else(|| {
                identify(
                    &proc_root
                        .join(pid)
                        .join("root")
                        .join(lib.path.trim_start_matches('/')),
                )
            });
            if let Some(l) = cand {
                push(l, &mut out);
            }
        }
    }
    if unreadable > 0 {
        tracing::debug!(
            unreadable,
            "TLS capture: some /proc/PID/maps not readable (exited, or no CAP_SYS_PTRACE)"
        );
    }
    for p in system {
        if let Some(l) = identify(Path::new(p)) {
            push(l, &mut out);
        }
    }
    out
}

/// A libssl mapping in /proc/PID/maps: its path and inode.
#[derive(Debug, PartialEq, Eq)]
struct Mapped {
    path: String,
    ino: u64,
}

/// `addr perms offset dev inode path`: libssl paths, once each, deleted files skipped.
fn libssl_in_maps(maps: &str) -> Vec<Mapped> {
    let mut out: Vec<Mapped> = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(_), Some(_), Some(_), Some(_), Some(ino)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = f.collect::<Vec<_>>().join(" ");
        if !path.starts_with('/') || path.ends_with("(deleted)") || !is_libssl(&path) {
            continue;
        }
        let Ok(ino) = ino.parse::<u64>() else {
            continue;
        };
        if !out.iter().any(|m| m.path == path) {
            out.push(Mapped { path, ino });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: TlsConfig = toml::from_str("").unwrap();
        assert!(c.enabled);
        assert!(c.libraries.is_empty());
        let c: TlsConfig =
            toml::from_str("enabled = false\nlibraries = [\"/x/libssl.so.3\"]").unwrap();
        assert!(!c.enabled);
        assert_eq!(c.libraries, vec![PathBuf::from("/x/libssl.so.3")]);
        assert!(toml::from_str::<TlsConfig>("libary = []").is_err());
    }

    #[test]
    fn maps_lines_are_parsed_and_filtered() {
        let maps = "\
7f00-7f01 r--p 00000000 fe:01 326798                     /usr/lib/x86_64-linux-gnu/libssl.so.3
7f01-7f02 r-xp 00020000 fe:01 326798                     /usr/lib/x86_64-linux-gnu/libssl.so.3
7f02-7f03 r--p 00000000 fe:01 1111                       /usr/lib/x86_64-linux-gnu/libssl3.so
7f03-7f04 r--p 00000000 fe:01 2222                       /opt/app dir/libssl.so.1.1
7f04-7f05 r--p 00000000 fe:01 3333                       /tmp/libssl.so.3 (deleted)
7f05-7f06 rw-p 00000000 00:00 0                          [heap]
garbage
";
        assert_eq!(
            libssl_in_maps(maps),
            vec![
                Mapped {
                    path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                    ino: 326798
                },
                Mapped {
                    path: "/opt/app dir/libssl.so.1.1".into(),
                    ino: 2222
                },
            ]
        );
    }

    #[test]
    fn missing_configured_paths_are_skipped_and_duplicates_merged() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("libssl.so.3");
        std::fs::write(&a, b"x").unwrap();
        let b = dir.path().join("libssl.so");
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let libs = configured(&[dir.path().join("nope.so"), a.clone(), b]);
        assert_eq!(libs.len(), 1);
        assert_eq!(libs[0].path, a);
    }

    #[test]
    fn discovery_reads_a_fake_proc_and_dedupes_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libssl.so.3");
        std::fs::write(&lib, b"x").unwrap();
        let ino = std::fs::metadata(&lib).unwrap().ino();
        let proc_root = dir.path().join("proc");
        for pid in ["10", "11"] {
            std::fs::create_dir_all(proc_root.join(pid)).unwrap();
            std::fs::write(
                proc_root.join(pid).join("maps"),
                format!("7f00-7f01 r-xp 00000000 fe:01 {ino} {}\n", lib.display()),
            )
            .unwrap();
        }
        std::fs::create_dir_all(proc_root.join("self")).unwrap();
        std::fs::create_dir_all(proc_root.join("12")).unwrap(); // no maps: exited
        let sys = lib.display().to_string();
        let found = discover_in(&proc_root, &[sys.as_str(), "/nonexistent/libssl.so.3"]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, lib);
    }
}
