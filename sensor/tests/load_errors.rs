//! What the binary says when the kernel refuses a program or the process lacks
//! privileges, and that it runs with what loaded (as root). Rejections are
//! injected with GATEWATCH_TEST_REJECT (the kernel here accepts everything);
//! the parsing of real verifier logs is unit-tested in capture/verifier.rs.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gatewatch");

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

/// A config in `dir`: its own state dir, no metrics port, no audit trail,
/// sensor_stats every second, lo attached.
fn config(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let path = dir.join("gatewatch.toml");
    std::fs::write(
        &path,
        format!(
            "[sensor]\nstate_dir = {state:?}\ninterfaces = [\"lo\"]\nstats_interval_secs = 1\n\
             [metrics]\nenabled = false\n[audit]\nenabled = false\n\
             [[output]]\nspec = \"stdout\"\nevents = true\nalerts = true\n"
        ),
    )
    .unwrap();
    path
}

fn gatewatch(reject: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("GATEWATCH_TEST_REJECT", reject);
    c
}

fn run_for(mut child: Child, secs: u64) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill with a valid pid of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait_with_output().unwrap()
}

fn stats_degraded(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "sensor_stats")
        .map(|v| {
            v["stats"]["degraded"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// `run` for six seconds with `reject` injected; exits 0 on SIGTERM.
/// Returns stdout, stderr and every sensor_stats `degraded` list seen; checks
/// that some were seen and that GW-SENSOR-003 fired.
fn degraded_run(reject: &str, cfg: &Path) -> (String, String, Vec<Vec<String>>) {
    let child = gatewatch(reject, &["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = run_for(child, 6);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let degraded = stats_degraded(&stdout);
    assert!(!degraded.is_empty(), "no sensor_stats: {stdout}");
    assert!(
        stdout.contains("GW-SENSOR-003"),
        "no GW-SENSOR-003 alert: {stdout}"
    );
    (stdout, err, degraded)
}

#[test]
fn a_verifier_rejection_names_program_kernel_and_log_and_gives_no_capability_advice() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = gatewatch("net,tls", &["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "no capture can run on this kernel: the kernel's verifier rejected BPF program gw_tc_ingress of net.bpf.c on Linux {}",
        release()
    );
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains("verifier: injected by GATEWATCH_TEST_REJECT"),
        "{err}"
    );
    assert!(
        !err.contains("CAP_BPF"),
        "capability advice for a rejection: {err}"
    );
    // The whole log went to the state directory, named in the message.
    let log = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("full log: "))
        .expect("the message names the log file");
    assert!(
        log.starts_with(dir.path().join("state").to_str().unwrap()),
        "{log}"
    );
    assert!(std::fs::read_to_string(log)
        .unwrap()
        .contains("BEGIN PROG LOAD LOG"));
    // doctor: nothing can capture, exit 1
    let doc = gatewatch("net,tls", &["doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(doc.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
    assert_eq!(v["packet_capture"], false);
    assert_eq!(v["tls_capture"], false);
}

#[test]
fn with_the_tls_programs_refused_packet_capture_runs_and_says_so() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (_, err, degraded) = degraded_run("tls", &cfg);
    assert!(err.contains("TLS capture unavailable"), "{err}");
    assert!(
        err.contains("running with part of the capture missing"),
        "{err}"
    );
    assert!(err.contains("attached"), "packet capture attached: {err}");
    assert!(
        degraded.iter().all(|d| d == &["tls".to_string()]),
        "{degraded:?}"
    );
    // doctor and --check-config say the same, doctor with exit 3 (degraded)
    let doc = gatewatch("tls", &["doctor"]).output().unwrap();
    assert_eq!(doc.status.code(), Some(3));
    let check = gatewatch(
        "tls",
        &["run", "--config", cfg.to_str().unwrap(), "--check-config"],
    )
    .output()
    .unwrap();
    assert_eq!(check.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&check.stdout).contains("capture degraded: tls"));
}

#[test]
fn with_the_packet_programs_refused_tls_capture_runs_alone_and_says_so() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (_, err, degraded) = degraded_run("net", &cfg);
    assert!(err.contains("packet capture unavailable"), "{err}");
    assert!(!err.contains("ifindex"), "nothing attached to lo: {err}");
    assert!(
        degraded.iter().all(|d| d.contains(&"packet".to_string())),
        "{degraded:?}"
    );
}

#[test]
fn without_privileges_the_advice_is_about_capabilities() {
    require_root!();
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED: setpriv (util-linux) not found");
        return;
    }
    // A copy of the binary and a config the unprivileged user can read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("gatewatch");
    std::fs::copy(BIN, &bin).unwrap();
    let cfg = config(dir.path());
    std::fs::set_permissions(
        dir.path().join("state"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .args(args)
        .stdin(Stdio::null());
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        (status.code(), err)
    };
    let (code, err) = as_nobody(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(
        err.contains(
            "needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or root); this process has none of them"
        ),
        "{err}"
    );
    assert!(!err.contains("verifier rejected"), "{err}");
    let (code, _) = as_nobody(&["doctor"]);
    assert_eq!(code, Some(1));
}
