//! TLS capture through uprobes on the system's libssl.so.3: a CPython TLS
//! server and client (SSL_read_ex / SSL_write_ex) exchange requests while the
//! real programs are attached (root only; skipped otherwise, or when python3,
//! openssl or libssl.so.3 are missing).

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use gatewatch::capture::decode::Decoder;
use gatewatch::capture::replay::run_frames;
use gatewatch::capture::tls::{TlsConfig, TlsProbe};
use gatewatch::capture::{CaptureConfig, Probe};
use gatewatch::events::{CaptureSource, Direction, Event, EventKind};
use libbpf_rs::RingBufferBuilder;

use common::{v4, FLOW};

const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

fn tools_present() -> bool {
    let ok = |c: &str, arg: &str| {
        Command::new(c)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    Path::new(LIBSSL).exists() && ok("python3", "--version") && ok("openssl", "version")
}

macro_rules! require_tls_env {
    () => {
        require_root!();
        if !tools_present() {
            eprintln!("SKIPPED: needs python3, openssl and {LIBSSL}");
            return;
        }
    };
}

fn pair_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration-tests/tls_pair.py")
}

struct Certs {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(st.status.success(), "openssl req: {st:?}");
    Certs {
        _dir: dir,
        cert,
        key,
    }
}

/// Runs the python pair to completion; returns its pid.
fn run_pair(c: &Certs, extra: &[&str]) -> u32 {
    let child = Command::new("python3")
        .arg(pair_script())
        .arg("pair")
        .arg("--cert")
        .arg(&c.cert)
        .arg("--key")
        .arg(&c.key)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.starts_with(b"ok"),
        "tls_pair.py: {out:?}"
    );
    pid
}

struct Collector {
    ring: libbpf_rs::RingBuffer<'static>,
    events: Rc<RefCell<Vec<Event>>>,
}

impl Collector {
    fn new(p: &'static Probe) -> Collector {
        let events: Rc<RefCell<Vec<Event>>> = Rc::default();
        let sink = Rc::clone(&events);
        let mut decoder = Decoder::new(p.table.slot_names.clone(), CaptureSource::Net);
        let mut b = RingBufferBuilder::new();
        b.add(&p.skel.maps.gw_events, move |data: &[u8]| {
            if let Ok(ev) = decoder.decode(data, None) {
                sink.borrow_mut().push(ev);
            }
            0
        })
        .unwrap();
        Collector {
            ring: b.build().unwrap(),
            events,
        }
    }

    /// Events of process `pid` once `want` of them are there (bounded wait).
    fn of_pid(&self, pid: u32, want: usize) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.ring.poll(Duration::from_millis(50)).unwrap();
            let got: Vec<Event> = self
                .events
                .borrow()
                .iter()
                .filter(|e| e.process.as_ref().and_then(|p| p.pid) == Some(pid))
                .cloned()
                .collect();
            if got.len() >= want || Instant::now() > deadline {
                return got;
            }
        }
    }
}

fn setup(libraries: Vec<PathBuf>) -> (&'static Probe, TlsProbe) {
    setup_with(&CaptureConfig::default(), libraries)
}

fn setup_with(cfg: &CaptureConfig, libraries: Vec<PathBuf>) -> (&'static Probe, TlsProbe) {
    let p: &'static Probe = Box::leak(Box::new(Probe::load(cfg).expect("loading net.bpf.c")));
    let t = TlsProbe::load(
        p,
        &TlsConfig {
            enabled: true,
            libraries,
        },
    )
    .expect("loading tls.bpf.c");
    (p, t)
}

fn token() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn find(evs: &[Event], kind: EventKind, dir: Direction) -> Vec<&Event> {
    evs.iter()
        .filter(|e| e.kind == kind && e.direction == dir)
        .collect()
}

#[test]
fn python_ssl_pair_gives_tls_events_with_process_endpoints_and_shared_hash() {
    require_tls_env!();
    let (p, t) = setup(vec![LIBSSL.into()]);
    assert_eq!(t.libraries, vec![PathBuf::from(LIBSSL)]);
    let col = Collector::new(p);
    let c = certs();
    let tok = token();
    let pid = run_pair(
        &c,
        &[
            "--path",
            "/tls/one",
            "--token",
            &tok,
            "--header",
            "X-Request-Id: rid-tls-1",
            "--split",
            "17",
        ],
    );
    let evs = col.of_pid(pid, 4);
    let json = serde_json::to_string(&evs).unwrap();
    assert!(!json.contains(&tok), "raw token leaked: {json}");

    // Server side: SSL_read_ex of the request (ingress); client side: the
    // request written in 17-byte SSL_write_ex calls (egress), joined.
    let rin = find(&evs, EventKind::HttpRequest, Direction::Ingress);
    let rout = find(&evs, EventKind::HttpRequest, Direction::Egress);
    assert_eq!(rin.len(), 1, "{json}");
    assert_eq!(rout.len(), 1, "{json}");
    for e in [rin[0], rout[0]] {
        assert_eq!(e.source, CaptureSource::Tls);
        let h = e.http.as_ref().unwrap();
        assert_eq!(h.method.as_deref(), Some("GET"));
        assert_eq!(h.path.as_deref(), Some("/tls/one"));
        assert_eq!(h.headers["host"], "tls.example");
        assert_eq!(h.headers["x-request-id"], "rid-tls-1");
        assert_eq!(h.credentials["authorization"].scheme, "bearer");
        assert_eq!(
            h.credentials["authorization"].length as usize,
            "Bearer ".len() + tok.len()
        );
        assert!(h.anomalies.is_empty(), "{:?}", h.anomalies);
        let proc_ = e.process.as_ref().unwrap();
        assert!(proc_.comm.as_deref().unwrap_or("").starts_with("python"));
        assert!(proc_.cgroup_id.is_some());
        // Endpoints from the socket: client -> server on loopback, both ways
        // round. Kernels without the sock_send_length/sock_recv_length
        // tracepoints (before 6.3) give none, and the probe says so.
        if !t.endpoints {
            assert!(e.src.is_none() && e.dst.is_none(), "{json}");
            continue;
        }
        let (src, dst) = (e.src.as_ref().unwrap(), e.dst.as_ref().unwrap());
        assert_eq!(src.ip.to_string(), "127.0.0.1");
        assert_eq!(dst.ip.to_string(), "127.0.0.1");
    }
    assert!(rout[0].http.as_ref().unwrap().segments > 1);
    assert_eq!(rin[0].src, rout[0].src);
    assert_eq!(rin[0].dst, rout[0].dst);
    let h_in = &rin[0].http.as_ref().unwrap().credentials["authorization"].hash;
    let h_out = &rout[0].http.as_ref().unwrap().credentials["authorization"].hash;
    assert_eq!(h_in, h_out);

    // Responses: written by the server (egress), read by the client (ingress).
    let sout = find(&evs, EventKind::HttpResponse, Direction::Egress);
    let sin = find(&evs, EventKind::HttpResponse, Direction::Ingress);
    assert_eq!((sout.len(), sin.len()), (1, 1), "{json}");
    assert_eq!(sin[0].http.as_ref().unwrap().status, Some(200));
    assert_eq!(sin[0].http.as_ref().unwrap().content_length, Some(11));
    assert_eq!(sin[0].src, rin[0].dst, "response comes from the server");

    // The same token in plaintext through the packet program: same hash.
    drop(col);
    let req = format!("GET /plain HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {tok}\r\n\r\n");
    let plain: Vec<Event> = run_frames(p, &[v4(&FLOW, 1, req.as_bytes())])
        .unwrap()
        .into_iter()
        .filter(|e| e.source == CaptureSource::Replay)
        .collect();
    assert_eq!(plain.len(), 1);
    assert_eq!(
        &plain[0].http.as_ref().unwrap().credentials["authorization"].hash,
        h_in
    );
}

#[test]
fn keep_alive_requests_and_bodies_are_followed_per_connection() {
    require_tls_env!();
    let (p, _t) = setup(vec![LIBSSL.into()]);
    let col = Collector::new(p);
    let c = certs();
    let pid = run_pair(&c, &["--path", "/ka", "--count", "3"]);
    let evs = col.of_pid(pid, 12);
    let paths: Vec<_> = find(&evs, EventKind::HttpRequest, Direction::Ingress)
        .iter()
        .map(|e| e.http.as_ref().unwrap().path.clone().unwrap())
        .collect();
    assert_eq!(paths, vec!["/ka/0", "/ka/1", "/ka/2"]);
    assert_eq!(
        find(&evs, EventKind::HttpResponse, Direction::Ingress).len(),
        3
    );
    assert_eq!(evs.len(), 12, "{}", serde_json::to_string(&evs).unwrap());
}

#[test]
fn under_a_cpu_budget_tls_calls_are_skipped_and_counted_or_parsed_and_timed() {
    require_tls_env!();
    let cfg = CaptureConfig {
        cpu_budget_percent: 10.0,
        ..CaptureConfig::default()
    };
    let (p, _t) = setup_with(&cfg, vec![LIBSSL.into()]);
    let col = Collector::new(p);
    let c = certs();
    let counters = || p.counters().unwrap();

    // Nothing admitted: the calls are counted, not parsed.
    p.set_admit(0).unwrap();
    let shed0 = counters().get("shed_packets");
    let pid = run_pair(&c, &["--path", "/shed", "--count", "3"]);
    assert!(
        col.of_pid(pid, 1).is_empty(),
        "a skipped connection gave events"
    );
    let shed = counters().get("shed_packets") - shed0;
    assert!(
        shed >= 12,
        "3 exchanges are at least 12 SSL calls, {shed} counted"
    );

    // Everything admitted: the same exchange is seen whole, and its parsing timed.
    p.set_admit(gatewatch::capture::governor::ADMIT_ALL)
        .unwrap();
    let ns0 = counters().get("parse_ns");
    let pid = run_pair(&c, &["--path", "/kept", "--count", "3"]);
    assert_eq!(col.of_pid(pid, 12).len(), 12);
    assert!(
        counters().get("parse_ns") > ns0,
        "TLS parsing is charged to the budget"
    );
}

#[test]
fn dropping_the_probe_detaches_and_missing_paths_are_skipped() {
    require_tls_env!();
    let (p, t) = setup(vec![
        "/nonexistent/libssl.so.3".into(),
        LIBSSL.into(),
        // same inode through another path: attached once
        "/lib/x86_64-linux-gnu/libssl.so.3".into(),
    ]);
    assert_eq!(t.libraries.len(), 1, "{:?}", t.libraries);
    drop(t);
    let col = Collector::new(p);
    let c = certs();
    let pid = run_pair(&c, &["--path", "/after-drop"]);
    std::thread::sleep(Duration::from_millis(200));
    let evs = col.of_pid(pid, 1);
    assert!(evs.is_empty(), "events after detach: {evs:?}");

    // Nothing at all to attach to: loads, attaches nothing, no error.
    let t = TlsProbe::load(
        p,
        &TlsConfig {
            enabled: true,
            libraries: vec!["/nonexistent/libssl.so.3".into()],
        },
    )
    .unwrap();
    assert!(t.libraries.is_empty());
}

#[test]
fn mcp_body_in_a_later_ssl_write_is_scanned_and_the_session_id_hashed() {
    require_tls_env!();
    let (p, _t) = setup(vec![LIBSSL.into()]);
    let col = Collector::new(p);
    let c = certs();
    let sid = token();
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"TLS-SECRET-ARG"}}}"#;
    let pid = run_pair(
        &c,
        &[
            "--path",
            "/mcp",
            "--header",
            &format!("Mcp-Session-Id: {sid}"),
            "--split",
            "40",
            "--body",
            call,
        ],
    );
    let evs = col.of_pid(pid, 4);
    let json = serde_json::to_string(&evs).unwrap();
    assert!(!json.contains(&sid), "session id leaked: {json}");
    assert!(!json.contains("TLS-SECRET-ARG"), "body leaked: {json}");
    // Client: header block in 40-byte SSL_writes, then the body in its own
    // SSL_write (egress); server: SSL_read of the same (ingress).
    let reqs: Vec<_> = evs
        .iter()
        .filter(|e| e.kind == EventKind::HttpRequest)
        .collect();
    assert_eq!(reqs.len(), 2, "{json}");
    let mut hashes = Vec::new();
    for e in reqs {
        let h = e.http.as_ref().unwrap();
        assert_eq!(h.method.as_deref(), Some("POST"));
        let m = h.mcp.as_ref().expect("mcp block");
        assert_eq!(m.method.as_deref(), Some("tools/call"), "{json}");
        assert_eq!(m.params_name.as_deref(), Some("echo"));
        assert!(m.jsonrpc && m.has_id);
        assert_eq!(m.body_scan, "complete");
        let s = h.mcp_session.as_ref().expect("session shape");
        assert_eq!(s.length as usize, sid.len());
        hashes.push(s.hash.clone());
    }
    assert_eq!(hashes[0], hashes[1]);
    // The same id through the packet program: the same hash.
    drop(col);
    let req = format!("GET /plain HTTP/1.1\r\nHost: h\r\nMcp-Session-Id: {sid}\r\n\r\n");
    let plain: Vec<Event> = run_frames(p, &[v4(&FLOW, 1, req.as_bytes())])
        .unwrap()
        .into_iter()
        .filter(|e| e.source == CaptureSource::Replay)
        .collect();
    assert_eq!(
        plain[0]
            .http
            .as_ref()
            .unwrap()
            .mcp_session
            .as_ref()
            .unwrap()
            .hash,
        hashes[0]
    );
}
