//! Audit trail throughput: append records/s for each fsync policy with ~1.5 KB
//! alert payloads, and verify time for 100k records. A plain main that prints
//! numbers: `cargo bench --bench audit_append` (set GATEWATCH_BENCH_DIR to measure
//! on a particular file system; default: the system temp dir).

use std::path::Path;
use std::time::{Duration, Instant};

use gatewatch::audit::{self, AuditConfig, AuditKind, AuditWriter, FsyncPolicy};
use serde_json::{json, Value};

/// An alert shaped like the OCSF Detection Finding the sensor emits (~1.5 KB).
fn alert(i: u64) -> Value {
    json!({
        "class_uid": 2004, "class_name": "Detection Finding", "category_uid": 2,
        "activity_id": 1, "severity_id": 4, "severity": "High", "time": 1_767_225_600_000u64 + i,
        "metadata": {"product": {"name": "gatewatch", "vendor_name": "gatewatch", "version": "0.1.0"},
                      "version": "1.3.0", "uid": format!("alert-{i:016x}")},
        "finding_info": {
            "uid": format!("f-{i}"), "title": "MCP session initialised from an unexpected Origin",
            "desc": "MCP initialize with an Origin outside the allowed list (DNS rebinding?)",
            "types": ["mcp", "dns-rebinding"],
            "attacks": [{"tactic": {"uid": "TA0001", "name": "Initial Access"},
                          "technique": {"uid": "T1190", "name": "Exploit Public-Facing Application"}}]
        },
        "rule": {"uid": "mcp-unexpected-origin", "name": "MCP unexpected origin", "version": "3"},
        "device": {"hostname": "sensor-01.example.internal", "uid": "b1946ac92492d2347c6235b4d2611184"},
        "evidences": [{
            "src_endpoint": {"ip": "10.1.2.3", "port": 51544}, "dst_endpoint": {"ip": "10.9.8.7", "port": 8080},
            "http_request": {
                "http_method": "POST", "url": {"path": "/mcp", "hostname": "mcp.internal:8080"},
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
                "http_headers": [
                    {"name": "Origin", "value": "http://attacker.example"},
                    {"name": "Mcp-Session-Id", "value": "9b1d3c6e-58e4-4a7b-9a55-3d9f0c1e2a77"},
                    {"name": "MCP-Protocol-Version", "value": "2025-06-18"},
                    {"name": "Content-Type", "value": "application/json"}
                ],
                "authorization": {"present": true, "scheme": "Bearer", "length": 212, "hash": "5f0c3a9d2e7b1c48"}
            },
            "mcp": {"method": "initialize", "id": i, "client": "claude-desktop", "transport": "streamable_http"},
            "process": {"pid": 4242, "name": "node", "cgroup_id": 123_456}
        }],
        "suppressed_count": 0
    })
}

fn bench_append(dir: &Path, name: &str, fsync: FsyncPolicy, max_records: u64, max_time: Duration) {
    let cfg = AuditConfig {
        path: dir.join(format!("{name}.jsonl")),
        fsync,
        rotate_bytes: 0,
        rotate_secs: 0,
        ..AuditConfig::default()
    };
    let payloads: Vec<Value> = (0..1000).map(alert).collect();
    let mut w = match AuditWriter::open(&cfg) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{name}: {e}");
            return;
        }
    };
    let start = Instant::now();
    let mut n = 0u64;
    while n < max_records && start.elapsed() < max_time {
        if let Err(e) = w.append(AuditKind::Alert, &payloads[(n % 1000) as usize]) {
            eprintln!("{name}: {e}");
            return;
        }
        n += 1;
    }
    let _ = w.sync();
    let took = start.elapsed();
    let bytes = std::fs::metadata(&cfg.path).map(|m| m.len()).unwrap_or(0);
    println!(
        "append fsync={name:<16} {n:>7} records in {:>8.3} s = {:>9.0} records/s, {:>7.1} MB/s, avg record {} bytes",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        bytes as f64 / took.as_secs_f64() / 1e6,
        bytes / n.max(1)
    );
}

fn bench_verify(dir: &Path, n: u64) {
    let cfg = AuditConfig {
        path: dir.join("verify.jsonl"),
        fsync: FsyncPolicy::Never,
        rotate_bytes: 50 * 1024 * 1024,
        rotate_secs: 0,
        ..AuditConfig::default()
    };
    let payloads: Vec<Value> = (0..1000).map(alert).collect();
    {
        let Ok(mut w) = AuditWriter::open(&cfg) else {
            return;
        };
        for i in 0..n {
            if w.append(AuditKind::Alert, &payloads[(i % 1000) as usize])
                .is_err()
            {
                return;
            }
        }
    }
    let files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("verify"))
        })
        .collect();
    let bytes: u64 = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let start = Instant::now();
    match audit::verify(&files, None) {
        Ok(r) => {
            let took = start.elapsed();
            println!(
                "verify {} records ({:.1} MB, {} files) in {:.3} s = {:.0} records/s, {:.1} MB/s",
                r.records,
                bytes as f64 / 1e6,
                r.files.len(),
                took.as_secs_f64(),
                r.records as f64 / took.as_secs_f64(),
                bytes as f64 / took.as_secs_f64() / 1e6
            );
        }
        Err(e) => eprintln!("verify failed: {e}"),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us too: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let base = std::env::var_os("GATEWATCH_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = match tempfile::tempdir_in(&base) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create a temp dir in {}: {e}", base.display());
            return;
        }
    };
    println!(
        "audit bench in {} (payload ~1.5 KB alert JSON)",
        dir.path().display()
    );
    let (big, secs) = if quick { (2_000, 1) } else { (200_000, 10) };
    bench_append(
        dir.path(),
        "never",
        FsyncPolicy::Never,
        big,
        Duration::from_secs(secs),
    );
    bench_append(
        dir.path(),
        "interval_ms=100",
        FsyncPolicy::IntervalMs(100),
        big,
        Duration::from_secs(secs),
    );
    bench_append(
        dir.path(),
        "always",
        FsyncPolicy::Always,
        big,
        Duration::from_secs(secs.min(5)),
    );
    bench_verify(dir.path(), if quick { 2_000 } else { 100_000 });
}
