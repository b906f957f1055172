//! Metrics endpoint: scrape over TCP, strict text-format check, /healthz flips,
//! garbage and oversized requests, shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewatch::metrics::{Health, Metrics, MetricsConfig, MetricsServer};

fn start(health: Health) -> (MetricsServer, Arc<Metrics>, Arc<Health>) {
    let cfg = MetricsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MetricsConfig::default()
    };
    let m = Arc::new(Metrics::new());
    let h = Arc::new(health);
    let s = MetricsServer::start(&cfg, Arc::clone(&m), Arc::clone(&h)).unwrap();
    (s, m, h)
}

/// Sends raw bytes, returns (status code, headers, body); None if the server closed
/// without a response.
fn raw(addr: SocketAddr, req: &[u8]) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(req);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8(out).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, head.to_owned(), body.to_owned()))
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .expect("a response")
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// Parses `{a="x",b="y"}` starting at `rest` (which begins with `{`); returns labels and the remainder.
fn parse_labels(rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut chars = rest[1..].char_indices().peekable();
    let base = 1;
    loop {
        // label name
        let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
        if rest[base + start..].starts_with('}') {
            return Ok((labels, &rest[base + start + 1..]));
        }
        let mut end = start;
        for (i, c) in chars.by_ref() {
            if c == '=' {
                end = i;
                break;
            }
        }
        let name = &rest[base + start..base + end];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("label value must be quoted".into());
        }
        let mut value = String::new();
        loop {
            match chars.next().ok_or("unterminated label value")?.1 {
                '\\' => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                '"' => break,
                '\n' => return Err("raw newline in label value".into()),
                c => value.push(c),
            }
        }
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        match chars.next().ok_or("unterminated labels")? {
            (_, ',') => {}
            (i, '}') => return Ok((labels, &rest[base + i + 1..])),
            (_, c) => return Err(format!("unexpected {c:?} after label")),
        }
    }
}

/// Strict parser for what we emit: HELP and TYPE before samples, one each per
/// family, every sample belongs to a declared family, values are floats.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("does not end with a newline".into());
    }
    let mut helps = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let ctx = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() || line.ends_with(' ') {
            return Err(ctx("empty line or trailing space".into()));
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _help) = rest
                .split_once(' ')
                .ok_or_else(|| ctx("HELP without text".into()))?;
            if !is_metric_name(name) || !helps.insert(name.to_owned()) || types.contains_key(name) {
                return Err(ctx("bad or repeated HELP (must precede TYPE)".into()));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest
                .split_once(' ')
                .ok_or_else(|| ctx("TYPE without type".into()))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                return Err(ctx(format!("unknown type {ty}")));
            }
            if !is_metric_name(name) || types.insert(name.to_owned(), ty.to_owned()).is_some() {
                return Err(ctx("bad or repeated TYPE".into()));
            }
            if samples.iter().any(|s: &Sample| s.name == name) {
                return Err(ctx("TYPE after samples".into()));
            }
        } else if line.starts_with('#') {
            return Err(ctx("unexpected comment".into()));
        } else {
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| ctx("no value".into()))?;
            let name = &line[..name_end];
            if !is_metric_name(name) {
                return Err(ctx("bad metric name".into()));
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end..]).map_err(ctx)?
            } else {
                (BTreeMap::new(), &line[name_end..])
            };
            let value = rest
                .strip_prefix(' ')
                .ok_or_else(|| ctx("missing space before value".into()))?;
            let ty = types
                .get(name)
                .ok_or_else(|| ctx("sample without TYPE".into()))?;
            let value = parse_value(value).map_err(ctx)?;
            if ty == "counter" && (value.is_nan() || value < 0.0) {
                return Err(ctx("negative counter".into()));
            }
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
    }
    if helps.len() != types.len() {
        return Err("HELP and TYPE counts differ".into());
    }
    Ok(samples)
}

fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn scrape_parses_strictly_and_carries_the_counts() {
    let (server, m, _h) = start(Health::new(
        Duration::from_secs(60),
        Duration::from_secs(30),
    ));
    m.packets_seen.set_total(1234);
    m.event("http_request");
    m.event("http_request");
    m.event("l4_summary");
    m.ringbuf_drops.add(2);
    m.parse_truncations.inc();
    m.rule_evaluated("mcp-origin", Duration::from_micros(250), true);
    m.rule_evaluated("mcp-origin", Duration::from_micros(750), false);
    m.alert("mcp-origin", "high");
    m.alert("weird \"rule\"\\\nid", "low");
    m.alerts_suppressed("mcp-origin", 4);
    m.sink_result("stdout", true);
    m.sink_result("kafka", false);
    m.kafka_sent.add(10);
    m.kafka_acked.add(9);
    m.kafka_spooled.inc();
    m.session_tracker_size.set(17);
    m.mcp_sessions_issued.set_total(4);
    m.mcp_tracker_evictions.inc();
    m.bpf_map_pressure.with(&["flows"]).set(0.5);

    let (code, head, body) = get(server.local_addr(), "/metrics");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert!(samples.iter().all(|s| s.name.starts_with("gatewatch_")));
    let v = |n, l: &[(&str, &str)]| {
        value_of(&samples, n, l).unwrap_or_else(|| panic!("{n} {l:?} missing\n{body}"))
    };
    assert_eq!(v("gatewatch_packets_seen_total", &[]), 1234.0);
    assert_eq!(
        v("gatewatch_events_total", &[("kind", "http_request")]),
        2.0
    );
    assert_eq!(v("gatewatch_events_total", &[("kind", "l4_summary")]), 1.0);
    assert_eq!(v("gatewatch_ringbuf_drops_total", &[]), 2.0);
    assert_eq!(v("gatewatch_parse_truncations_total", &[]), 1.0);
    assert_eq!(
        v(
            "gatewatch_rule_evaluations_total",
            &[("rule", "mcp-origin")]
        ),
        2.0
    );
    assert_eq!(
        v("gatewatch_rule_errors_total", &[("rule", "mcp-origin")]),
        1.0
    );
    assert!(
        (v(
            "gatewatch_rule_eval_seconds_total",
            &[("rule", "mcp-origin")]
        ) - 0.001)
            .abs()
            < 1e-12
    );
    assert_eq!(
        v(
            "gatewatch_alerts_total",
            &[("rule", "mcp-origin"), ("severity", "high")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "gatewatch_alerts_total",
            &[("rule", "weird \"rule\"\\\nid"), ("severity", "low")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "gatewatch_alerts_suppressed_total",
            &[("rule", "mcp-origin")]
        ),
        4.0
    );
    assert_eq!(v("gatewatch_sink_sent_total", &[("sink", "stdout")]), 1.0);
    assert_eq!(v("gatewatch_sink_errors_total", &[("sink", "kafka")]), 1.0);
    assert_eq!(v("gatewatch_kafka_sent_total", &[]), 10.0);
    assert_eq!(v("gatewatch_kafka_acked_total", &[]), 9.0);
    assert_eq!(v("gatewatch_kafka_spooled_total", &[]), 1.0);
    assert_eq!(v("gatewatch_kafka_dropped_total", &[]), 0.0);
    assert_eq!(v("gatewatch_session_tracker_size", &[]), 17.0);
    assert_eq!(v("gatewatch_mcp_sessions_issued_total", &[]), 4.0);
    assert_eq!(v("gatewatch_mcp_tracker_evictions_total", &[]), 1.0);
    assert_eq!(v("gatewatch_bpf_map_pressure", &[("map", "flows")]), 0.5);
    assert_eq!(v("gatewatch_healthy", &[]), 1.0);

    // Counters move between scrapes.
    m.packets_seen.set_total(2000);
    let (_, _, body) = get(server.local_addr(), "/metrics");
    let samples = parse_exposition(&body).unwrap();
    assert_eq!(
        value_of(&samples, "gatewatch_packets_seen_total", &[]),
        Some(2000.0)
    );
    server.stop();
}

#[test]
fn strict_parser_rejects_bad_text() {
    for bad in [
        "gatewatch_x 1\n",                                                     // no TYPE
        "# TYPE gatewatch_x counter\ngatewatch_x{a=\"b} 1\n",                  // unterminated
        "# HELP gatewatch_x h\n# TYPE gatewatch_x counter\ngatewatch_x one\n", // bad value
        "# HELP gatewatch_x h\n# TYPE gatewatch_x counter\ngatewatch_x{a=\"\\t\"} 1\n",
        "# HELP gatewatch_x h\n# TYPE gatewatch_x counter\ngatewatch_x 1",
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn healthz_flips_on_drops_and_recovers_after_the_window() {
    let (server, _m, h) = start(Health::new(
        Duration::from_millis(400),
        Duration::from_millis(200),
    ));
    let addr = server.local_addr();
    assert_eq!(
        get(addr, "/healthz"),
        (200, get(addr, "/healthz").1, "ok\n".into())
    );

    h.note_ringbuf_drops(0);
    assert_eq!(get(addr, "/healthz").0, 200);
    h.note_ringbuf_drops(5);
    let (code, _, body) = get(addr, "/healthz");
    assert_eq!(code, 503);
    assert!(body.contains("ring buffer dropped 5"), "{body}");
    let (_, _, metrics) = get(addr, "/metrics");
    assert!(metrics.contains("\ngatewatch_healthy 0\n"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(addr, "/healthz").0, 200);

    h.sink_failed("kafka");
    assert_eq!(get(addr, "/healthz").0, 200, "within the grace time");
    std::thread::sleep(Duration::from_millis(250));
    let (code, _, body) = get(addr, "/healthz");
    assert_eq!(code, 503);
    assert!(body.contains("sink kafka has been failing"), "{body}");
    h.sink_ok("kafka");
    assert_eq!(get(addr, "/healthz").0, 200);
}

#[test]
fn garbage_and_oversized_requests_do_not_hurt_it() {
    let (server, _m, _h) = start(Health::new(
        Duration::from_secs(60),
        Duration::from_secs(30),
    ));
    let addr = server.local_addr();

    // Pseudo-random bytes (xorshift), several sizes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for size in [1usize, 7, 100, 4096, 9000, 70_000] {
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        if let Some((code, _, _)) = raw(addr, &bytes) {
            assert!([400, 431].contains(&code), "{code}");
        }
    }
    // Random bytes that do end a head.
    let mut junk = b"\x00\xff\x13garbage\x7f".to_vec();
    junk.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw(addr, &junk).map(|r| r.0), Some(400));

    // A 1 MB header: rejected without reading it all (the client may see a reset).
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    big.resize(1024 * 1024, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    if let Some((code, _, _)) = raw(addr, &big) {
        assert_eq!(code, 431);
    }

    // Other methods, paths, HEAD, bare LF, half a request then close.
    assert_eq!(
        raw(addr, b"POST /metrics HTTP/1.1\r\n\r\n").map(|r| r.0),
        Some(405)
    );
    assert_eq!(get(addr, "/nope").0, 404);
    assert_eq!(get(addr, "/metrics?name=x").0, 200);
    let (code, head, body) = raw(addr, b"HEAD /healthz HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!((code, body.as_str()), (200, ""), "{head}");
    assert_eq!(
        raw(addr, b"GET /healthz HTTP/1.1\n\n").map(|r| r.0),
        Some(200)
    );
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metr").unwrap();
    }
    {
        let _silent = TcpStream::connect(addr).unwrap();
    }

    // A crowd of idle connections: over the limit they are closed, and once they go
    // away the server serves again.
    let idle: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((200, _, body)) = raw(addr, b"GET /healthz HTTP/1.1\r\n\r\n") {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(Instant::now() < deadline, "server did not recover");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(addr, "/metrics").0, 200);
}

#[test]
fn stops_cleanly_and_releases_the_port() {
    let (server, _m, _h) = start(Health::new(
        Duration::from_secs(60),
        Duration::from_secs(30),
    ));
    let addr = server.local_addr();
    assert_eq!(get(addr, "/healthz").0, 200);
    let handle = server.stop_handle();
    let t = Instant::now();
    handle.stop();
    server.stop();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener still open after stop"
    );

    // Bind failure is a clear error naming the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = MetricsConfig {
        listen: taken.local_addr().unwrap(),
        ..MetricsConfig::default()
    };
    let err = MetricsServer::start(
        &cfg,
        Arc::new(Metrics::new()),
        Arc::new(Health::from_config(&cfg)),
    )
    .unwrap_err();
    assert!(err.to_string().contains(&cfg.listen.to_string()), "{err}");
}
