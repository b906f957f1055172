//! Per-packet cost of the TC program, measured in the kernel with
//! BPF_PROG_TEST_RUN's repeat (needs root). Prints ns per packet.
//!
//!     cargo bench --bench tc_parse

#[path = "../tests/common/mod.rs"]
mod common;

use gatewatch::capture::replay::time_frame;
use gatewatch::capture::{CaptureConfig, Probe};

fn main() {
    if !common::is_root() {
        eprintln!("tc_parse: needs root to load BPF programs; skipped");
        return;
    }
    let probe = match Probe::load(&CaptureConfig::default()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tc_parse: {e:#}");
            std::process::exit(1);
        }
    };
    let flow = common::FLOW;
    let mut get12 = String::from("GET /api/v1/orders/12345?expand=items HTTP/1.1\r\n");
    for h in [
        "Host: api.example.com",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "Accept: application/json",
        "Accept-Encoding: gzip, deflate, br",
        "Accept-Language: en-US,en;q=0.9",
        "Connection: keep-alive",
        "X-Request-Id: 7b0c9c8e-5f7e-4a7b-9a37-2f1f0c1d2e3f",
        "X-Forwarded-For: 203.0.113.7",
        "Origin: https://app.example.com",
        "Referer: https://app.example.com/orders",
        "Cache-Control: no-cache",
        "Content-Type: application/json",
    ] {
        get12.push_str(h);
        get12.push_str("\r\n");
    }
    get12.push_str("\r\n");
    let auth = get12.replace(
        "Cache-Control: no-cache\r\n",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c\r\n",
    );
    let syn = common::v4_ctl(&flow, 0x02);
    // An MCP tools/call: the kernel scans the JSON body up to params.name.
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#;
    let mcp = format!(
        "POST /mcp HTTP/1.1\r\nHost: mcp.example\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: 0f3c9e1a77b24d0e9a513c1f2e7d8b90\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\n\r\n{call}",
        call.len()
    );
    // What the load bench's nginx sends back: a 200 with a ~600-byte JSON
    // body. Content-Type JSON, so the kernel scans up to gw_body_scan_window.
    let mut items = Vec::new();
    for i in 1..=10 {
        items.push(format!(
            r#"{{"id":{i},"name":"item-{i:03}","price":{}.99,"tags":["a","b"]}}"#,
            i * 3
        ));
    }
    let json = format!(
        r#"{{"status":"ok","count":10,"items":[{}]}}"#,
        items.join(",")
    );
    let nginx = format!(
        "HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Tue, 01 Dec 2026 13:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{json}",
        json.len()
    );
    let cases: [(&str, Vec<u8>); 7] = [
        ("ACK (no payload)", common::v4_ctl(&flow, 0x10)),
        ("SYN (L4 counters)", syn),
        (
            "non-HTTP TCP (TLS record)",
            common::v4(
                &flow,
                1,
                &[0x17, 0x03, 0x03, 0x00, 0x40, 0xaa, 0xbb, 0xcc, 0xdd, 0xee],
            ),
        ),
        (
            "GET with 12 headers",
            common::v4(&flow, 1, get12.as_bytes()),
        ),
        (
            "GET with Authorization (JWT)",
            common::v4(&flow, 1, auth.as_bytes()),
        ),
        (
            "MCP tools/call (JSON body)",
            common::v4(&flow, 1, mcp.as_bytes()),
        ),
        (
            "nginx 200 JSON response",
            common::v4(&flow, 1, nginx.as_bytes()),
        ),
    ];
    let repeat = 200_000;
    // What the verifier spent on each program, read before the budget probe
    // below loads. Programs come in id order, so the last one of each name is
    // the newest load: ours.
    let mut newest = std::collections::BTreeMap::new();
    for info in libbpf_rs::query::ProgInfoIter::default() {
        let name = info.name.to_string_lossy().into_owned();
        if name.starts_with("gw_tc_") {
            newest.insert(name, info.verified_insns);
        }
    }
    let best_of = |probe: &Probe, frame: &[u8]| {
        // Best of 5 runs: the VM's noise only ever adds time.
        (0..5)
            .filter_map(|_| time_frame(probe, frame, repeat).ok())
            .min()
            .unwrap_or(0)
    };
    println!("{:<32} {:>8} {:>12}", "packet", "bytes", "ns/packet");
    for (name, frame) in &cases {
        println!(
            "{name:<32} {:>8} {:>12}",
            frame.len(),
            best_of(&probe, frame)
        );
    }
    // A payload packet of a connection the CPU budget sheds (nothing
    // admitted): a hash and a counter, no parsing.
    let shed = Probe::load(&CaptureConfig {
        cpu_budget_percent: 10.0,
        ..CaptureConfig::default()
    })
    .and_then(|p| p.set_admit(0).map(|()| p));
    match shed {
        Ok(sp) => {
            let frame = common::v4(&flow, 1, get12.as_bytes());
            let name = "GET12 shed by the CPU budget";
            println!("{name:<32} {:>8} {:>12}", frame.len(), best_of(&sp, &frame));
        }
        Err(e) => eprintln!("tc_parse: budget probe: {e:#}"),
    }
    let c = probe.counters().unwrap_or_default();
    println!(
        "ring buffer drops during the bench: {}",
        c.get("ringbuf_drops")
    );
    for (name, insns) in newest {
        println!("verifier: {name}: {insns} instructions processed");
    }
}
