//! Audit trail: writer, rotation, resume, and the verifier's verdict on tampering.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use gatewatch::audit::{
    self, cli, AnchorSpec, AuditConfig, AuditError, AuditKind, AuditWriter, BreakKind, FsyncPolicy,
    VerifyError,
};
use serde_json::json;

fn cfg(dir: &Path) -> AuditConfig {
    AuditConfig {
        path: dir.join("audit.jsonl"),
        fsync: FsyncPolicy::Never,
        rotate_bytes: 0,
        rotate_secs: 0,
        ..AuditConfig::default()
    }
}

fn alert(i: u64) -> serde_json::Value {
    json!({"rule": "r1", "severity": "high", "n": i, "msg": format!("alert number {i}")})
}

fn write_n(c: &AuditConfig, n: u64) {
    let mut w = AuditWriter::open(c).unwrap();
    for i in 0..n {
        w.append(AuditKind::Alert, &alert(i)).unwrap();
    }
}

fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put_lines(p: &Path, l: &[String]) {
    let mut s = l.join("\n");
    s.push('\n');
    fs::write(p, s).unwrap();
}

fn expect_break(
    paths: &[PathBuf],
    anchor: Option<AnchorSpec>,
    kind: BreakKind,
    file: &Path,
    line: u64,
) -> String {
    match audit::verify(paths, anchor) {
        Err(VerifyError::Broken(b)) => {
            assert_eq!(
                (b.kind, b.file.as_path(), b.line),
                (kind, file, line),
                "{b}"
            );
            b.to_string()
        }
        other => panic!(
            "expected {kind} at {}:{line}, got {other:?}",
            file.display()
        ),
    }
}

#[test]
fn intact_chain_of_100k_records_verifies() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    let t = Instant::now();
    write_n(&c, 100_000);
    let wrote = t.elapsed();
    let t = Instant::now();
    let r = audit::verify(std::slice::from_ref(&c.path), None).unwrap();
    let took = t.elapsed();
    let size = fs::metadata(&c.path).unwrap().len();
    println!("100k records ({size} bytes): write {wrote:?}, verify {took:?} (debug build; see `cargo bench --bench audit_append` for release numbers)");
    assert_eq!((r.records, r.first_seq, r.last_seq), (100_000, 1, 100_000));
    assert!(r.starts_at_genesis);
}

#[test]
fn record_shape_and_genesis() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 2);
    let l = lines(&c.path);
    let first: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
    let second: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["kind"], "alert");
    assert_eq!(first["prev_hash"], audit::GENESIS_HASH);
    assert_eq!(first["payload"]["n"], 0);
    assert_eq!(second["prev_hash"], first["hash"]);
    let t = first["time"].as_str().unwrap();
    assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    assert!(l[0].starts_with("{\"hash\":\""));
}

#[test]
fn one_edited_byte_is_found_with_its_line() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 50);
    let mut l = lines(&c.path);
    l[19] = l[19].replace("alert number 19", "alert number 18");
    put_lines(&c.path, &l);
    let msg = expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Edited,
        &c.path,
        20,
    );
    assert!(msg.contains("seq 20"), "{msg}");
}

#[test]
fn editing_the_seq_or_hash_field_is_edited_too() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 10);
    let orig = lines(&c.path);
    let mut l = orig.clone();
    l[4] = l[4].replace("\"seq\":5,", "\"seq\":6,");
    put_lines(&c.path, &l);
    expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Edited,
        &c.path,
        5,
    );
    let mut l = orig;
    let h = l[6][9..73].to_owned();
    let first = if h.starts_with('0') { "1" } else { "0" };
    let flipped = format!("{first}{}", &h[1..]);
    l[6] = l[6].replacen(&h, &flipped, 1);
    put_lines(&c.path, &l);
    expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Edited,
        &c.path,
        7,
    );
}

#[test]
fn edited_and_rehashed_record_breaks_the_next_link() {
    // Recompute a forged record's own hash: the next record's prev_hash exposes it.
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 10);
    let mut l = lines(&c.path);
    let mut v: serde_json::Value = serde_json::from_str(&l[3]).unwrap();
    v["payload"]["severity"] = json!("low");
    v.as_object_mut().unwrap().remove("hash");
    let body = audit::canonical::canonical(&v);
    let hash = audit::canonical::sha256_hex(&body);
    l[3] = format!(
        "{{\"hash\":\"{hash}\",{}",
        std::str::from_utf8(&body[1..]).unwrap()
    );
    put_lines(&c.path, &l);
    expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Edited,
        &c.path,
        5,
    );
}

#[test]
fn deleted_record_is_found() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 50);
    let mut l = lines(&c.path);
    l.remove(29); // seq 30
    put_lines(&c.path, &l);
    let msg = expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Deleted,
        &c.path,
        30,
    );
    assert!(
        msg.contains("1 record(s) missing between seq 29 and seq 31"),
        "{msg}"
    );
}

#[test]
fn deleting_the_first_record_is_found() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 5);
    let mut l = lines(&c.path);
    l.remove(0);
    put_lines(&c.path, &l);
    expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Deleted,
        &c.path,
        1,
    );
}

#[test]
fn swapped_records_are_reordered() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 50);
    let mut l = lines(&c.path);
    l.swap(9, 10);
    put_lines(&c.path, &l);
    expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Reordered,
        &c.path,
        10,
    );

    let mut l = lines(&c.path);
    l.swap(9, 10); // restore
    l.swap(0, 1); // first two
    put_lines(&c.path, &l);
    expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Reordered,
        &c.path,
        1,
    );
}

#[test]
fn duplicated_record_is_reordered() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 10);
    let mut l = lines(&c.path);
    let dup = l[4].clone();
    l.insert(5, dup);
    put_lines(&c.path, &l);
    expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Reordered,
        &c.path,
        6,
    );
}

#[test]
fn cut_tail_is_found_against_an_anchor_only() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 40);
    let anchor = {
        let w = AuditWriter::open(&c).unwrap();
        let h = w.head().unwrap();
        AnchorSpec {
            seq: h.seq,
            hash: h.hash,
        }
    };
    let mut l = lines(&c.path);
    l.truncate(35);
    put_lines(&c.path, &l);
    // Without an anchor a clean cut is indistinguishable from a shorter chain.
    assert_eq!(
        audit::verify(std::slice::from_ref(&c.path), None)
            .unwrap()
            .records,
        35
    );
    let msg = expect_break(
        std::slice::from_ref(&c.path),
        Some(anchor),
        BreakKind::Truncated,
        &c.path,
        36,
    );
    assert!(
        msg.contains("ends at seq 35") && msg.contains("seq 40"),
        "{msg}"
    );
}

#[test]
fn rewritten_chain_is_found_by_anchor_hash() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 10);
    let h = AuditWriter::open(&c).unwrap().head().unwrap();
    // Attacker truncates to 5 records and writes 5 new ones: chain self-consistent.
    let mut l = lines(&c.path);
    l.truncate(5);
    put_lines(&c.path, &l);
    let mut w = AuditWriter::open(&c).unwrap();
    for i in 0..5 {
        w.append(AuditKind::Alert, &json!({"forged": i})).unwrap();
    }
    drop(w);
    assert!(audit::verify(std::slice::from_ref(&c.path), None).is_ok());
    let anchor: AnchorSpec = format!("{}:{}", h.seq, h.hash).parse().unwrap();
    expect_break(
        std::slice::from_ref(&c.path),
        Some(anchor),
        BreakKind::Truncated,
        &c.path,
        10,
    );
}

#[test]
fn malformed_lines_are_found() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 10);
    let mut l = lines(&c.path);
    l[6] = "this is not json".into();
    put_lines(&c.path, &l);
    expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Malformed,
        &c.path,
        7,
    );
    let mut l = lines(&c.path);
    l[6] = r#"{"seq":7,"kind":"alert"}"#.into();
    put_lines(&c.path, &l);
    let msg = expect_break(
        std::slice::from_ref(&c.path),
        None,
        BreakKind::Malformed,
        &c.path,
        7,
    );
    assert!(msg.contains("missing field"), "{msg}");
}

#[test]
fn writer_resumes_the_chain_after_reopen() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 10);
    let mut w = AuditWriter::open(&c).unwrap();
    assert_eq!(w.head().unwrap().seq, 10);
    let h = w.append(AuditKind::Alert, &alert(10)).unwrap();
    assert_eq!(h.seq, 11);
    drop(w);
    write_n(&c, 9);
    let r = audit::verify(std::slice::from_ref(&c.path), None).unwrap();
    assert_eq!((r.records, r.last_seq), (20, 20));
}

#[test]
fn resume_refuses_an_incomplete_or_corrupt_tail() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    write_n(&c, 3);
    let good = fs::read(&c.path).unwrap();

    let mut partial = good.clone();
    partial.extend_from_slice(b"{\"hash\":\"ab");
    fs::write(&c.path, &partial).unwrap();
    let e = AuditWriter::open(&c).err().unwrap();
    assert!(matches!(e, AuditError::IncompleteTail { .. }), "{e}");
    assert!(
        e.to_string().contains("incomplete record")
            && e.to_string().contains(&good.len().to_string()),
        "{e}"
    );

    let mut l = lines(&c.path);
    l.truncate(3);
    l[2] = l[2].replace("alert number 2", "alert number X");
    put_lines(&c.path, &l);
    let e = AuditWriter::open(&c).err().unwrap();
    assert!(matches!(e, AuditError::CorruptTail { .. }), "{e}");
    assert!(e.to_string().contains("edited"), "{e}");

    fs::write(&c.path, b"garbage\n").unwrap();
    let e = AuditWriter::open(&c).err().unwrap();
    assert!(matches!(e, AuditError::CorruptTail { .. }), "{e}");
}

fn rotated_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("audit-")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn size_rotation_keeps_one_chain_across_files() {
    let d = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        rotate_bytes: 4000,
        ..cfg(d.path())
    };
    write_n(&c, 100);
    let rotated = rotated_files(d.path());
    assert!(rotated.len() >= 3, "{rotated:?}");
    for p in &rotated {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            n.len() == "audit-00000000000000000001-20260101T000000Z.jsonl".len(),
            "{n}"
        );
    }
    // Every continued file starts with a rotation record naming its predecessor.
    let first_of_active: serde_json::Value = serde_json::from_str(&lines(&c.path)[0]).unwrap();
    assert_eq!(first_of_active["kind"], "rotation");
    assert_eq!(first_of_active["payload"]["reason"], "size");
    let last_rot = rotated
        .last()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        first_of_active["payload"]["previous_file"],
        last_rot.as_str()
    );

    // All files, in scrambled argument order, verify as one chain.
    let mut all = rotated.clone();
    all.push(c.path.clone());
    all.reverse();
    all.swap(0, 1);
    let r = audit::verify(&all, None).unwrap();
    assert_eq!(r.files.len(), rotated.len() + 1);
    assert_eq!(r.records, 100 + rotated.len() as u64);
    assert!(r.starts_at_genesis);

    // A missing middle file is a deletion at the first line of the next file.
    let mut missing = all.clone();
    let middle = rotated[1].clone();
    missing.retain(|p| *p != middle);
    let msg = expect_break(&missing, None, BreakKind::Deleted, &rotated[2], 1);
    assert!(
        msg.contains(&*middle.file_name().unwrap().to_string_lossy()),
        "{msg}"
    );

    // Without the oldest file(s), the rest still verifies, and says so.
    let tail: Vec<PathBuf> = all.iter().filter(|p| **p != rotated[0]).cloned().collect();
    let r = audit::verify(&tail, None).unwrap();
    assert!(!r.starts_at_genesis);
}

#[test]
fn rotation_then_restart_continues_from_the_rotated_file() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    let mut w = AuditWriter::open(&c).unwrap();
    for i in 0..5 {
        w.append(AuditKind::Alert, &alert(i)).unwrap();
    }
    w.rotate("size").unwrap();
    drop(w); // new active file is still empty
    let mut w = AuditWriter::open(&c).unwrap();
    assert_eq!(w.head().unwrap().seq, 5);
    w.append(AuditKind::Alert, &alert(5)).unwrap();
    drop(w);
    // Even if the empty active file disappears, the chain continues from the rotated one.
    let mut all = rotated_files(d.path());
    all.push(c.path.clone());
    let r = audit::verify(&all, None).unwrap();
    assert_eq!((r.records, r.last_seq), (7, 7));
    // If the active file vanishes, the writer continues from the newest rotated
    // file (it never silently restarts at genesis while older files exist).
    fs::remove_file(&c.path).unwrap();
    let w = AuditWriter::open(&c).unwrap();
    assert_eq!(w.head().unwrap().seq, 5);
}

#[test]
fn age_rotation() {
    let d = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        rotate_secs: 1,
        ..cfg(d.path())
    };
    let mut w = AuditWriter::open(&c).unwrap();
    w.append(AuditKind::Alert, &alert(0)).unwrap();
    w.append(AuditKind::Alert, &alert(1)).unwrap();
    assert!(rotated_files(d.path()).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    w.append(AuditKind::Alert, &alert(2)).unwrap();
    drop(w);
    let rotated = rotated_files(d.path());
    assert_eq!(rotated.len(), 1);
    let first: serde_json::Value = serde_json::from_str(&lines(&c.path)[0]).unwrap();
    assert_eq!(first["payload"]["reason"], "age");
    let r = audit::verify(&[c.path.clone(), rotated[0].clone()], None).unwrap();
    assert_eq!(r.records, 4);
}

#[test]
fn fsync_policies_and_kind_filter() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::IntervalMs(0),
        FsyncPolicy::IntervalMs(100),
        FsyncPolicy::Never,
    ] {
        let d = tempfile::tempdir().unwrap();
        let c = AuditConfig {
            fsync,
            ..cfg(d.path())
        };
        let mut w = AuditWriter::open(&c).unwrap();
        assert!(w.record(AuditKind::Alert, &alert(0)).unwrap().is_some());
        assert!(w
            .record(AuditKind::McpSession, &json!({"s": 1}))
            .unwrap()
            .is_none());
        assert!(w
            .record(AuditKind::RulesetChange, &json!({"r": 1}))
            .unwrap()
            .is_none());
        w.append(AuditKind::RulesetChange, &json!({"r": 2}))
            .unwrap();
        w.sync().unwrap();
        drop(w);
        assert_eq!(
            audit::verify(std::slice::from_ref(&c.path), None)
                .unwrap()
                .records,
            2
        );
    }
    let d = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        record_mcp_sessions: true,
        ..cfg(d.path())
    };
    let mut w = AuditWriter::open(&c).unwrap();
    assert_eq!(
        w.record(AuditKind::McpSession, &json!({"s": 1}))
            .unwrap()
            .unwrap()
            .seq,
        1
    );
}

#[test]
fn anchors_file_and_cli() {
    let d = tempfile::tempdir().unwrap();
    let anchors = d.path().join("anchors.jsonl");
    let c = AuditConfig {
        anchors_path: Some(anchors.clone()),
        anchor_interval_secs: 3600,
        ..cfg(d.path())
    };
    let mut w = AuditWriter::open(&c).unwrap();
    assert_eq!(w.maybe_anchor().unwrap(), None, "empty chain has no head");
    // The first record is anchored at the next tick, not an interval later.
    w.append(AuditKind::Alert, &alert(0)).unwrap();
    let first = w
        .maybe_anchor()
        .unwrap()
        .expect("first record anchored at once");
    assert_eq!(first.seq, 1);
    for i in 1..5 {
        w.append(AuditKind::Alert, &alert(i)).unwrap();
    }
    let a1 = w.anchor_now().unwrap().unwrap();
    assert_eq!(a1.seq, 5);
    assert_eq!(w.maybe_anchor().unwrap(), None, "interval not passed");
    for i in 0..5 {
        w.append(AuditKind::Alert, &alert(i)).unwrap();
    }
    w.anchor_now().unwrap();
    drop(w);
    assert_eq!(lines(&anchors).len(), 3);
    let spec = AnchorSpec::from_arg(anchors.to_str().unwrap()).unwrap();
    assert_eq!(spec.seq, 10);

    let paths = vec![c.path.clone()];
    let mut out = Vec::new();
    assert!(cli::verify_to(&mut out, &paths, Some(anchors.to_str().unwrap())).unwrap());
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("OK: 10 record(s) intact") && text.contains("anchor seq 10"),
        "{text}"
    );

    let inline = format!("{}:{}", a1.seq, a1.hash);
    assert!(cli::verify_to(&mut Vec::new(), &paths, Some(&inline)).unwrap());

    let mut l = lines(&c.path);
    l.truncate(8);
    put_lines(&c.path, &l);
    let mut out = Vec::new();
    assert!(!cli::verify_to(&mut out, &paths, Some(anchors.to_str().unwrap())).unwrap());
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("BROKEN: ") && text.contains(":9: truncated:"),
        "{text}"
    );

    assert!(cli::verify_to(&mut Vec::new(), &paths, Some("12:nothex")).is_err());
    assert!(cli::verify_to(&mut Vec::new(), &[d.path().join("nope.jsonl")], None).is_err());
    let anchor_before = format!("0:{}", audit::GENESIS_HASH);
    // seq 0 is before the first record: cannot be checked with these files.
    assert!(cli::verify_to(&mut Vec::new(), &paths, Some(&anchor_before)).is_err());
}

#[test]
fn python_reimplementation_of_the_documented_hash_agrees() {
    // The doc comment of `audit::canonical` promises an auditor can re-implement the
    // hash in a few lines of Python; run exactly that if python3 is installed.
    let Ok(out) = std::process::Command::new("python3")
        .arg("--version")
        .output()
    else {
        eprintln!("python3 not found; skipping");
        return;
    };
    if !out.status.success() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let c = cfg(d.path());
    let mut w = AuditWriter::open(&c).unwrap();
    w.append(
        AuditKind::Alert,
        &json!({"ünï": "c\u{1}d\"e\\f/g\n", "z": [1, -2, 3.25, null, true], "a": {"y": 1, "b": 2}}),
    )
    .unwrap();
    w.append(
        AuditKind::McpSession,
        &json!({"emoji": "😀", "big": u64::MAX}),
    )
    .unwrap();
    drop(w);
    let script = r#"
import hashlib, json, sys
prev = "0" * 64
for raw in open(sys.argv[1], "rb"):
    line = raw.rstrip(b"\n")
    rec = json.loads(line)
    claimed = rec.pop("hash")
    assert hashlib.sha256(b"{" + line[75:]).hexdigest() == claimed
    c = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(c.encode()).hexdigest() == claimed, c
    assert rec["prev_hash"] == prev
    prev = claimed
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&c.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn garbage_files_give_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    };
    let cases: Vec<Vec<u8>> = vec![
        b"\n".to_vec(),
        b"\n\n\n".to_vec(),
        b"{\"hash\":\"".to_vec(),
        b"{\"hash\":\"zz\"}\n".to_vec(),
        rnd(10),
        rnd(5000),
        [rnd(300), b"\n".to_vec(), rnd(300), b"\n".to_vec()].concat(),
        format!("{{\"hash\":\"{}\",\"kind\":1}}\n", "a".repeat(64)).into_bytes(),
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let p = d.path().join(format!("g{i}.jsonl"));
        fs::write(&p, bytes).unwrap();
        match audit::verify(std::slice::from_ref(&p), None) {
            Err(VerifyError::Broken(b)) => {
                assert_eq!(b.kind, BreakKind::Malformed, "case {i}: {b}")
            }
            other => panic!("case {i}: {other:?}"),
        }
        let c = AuditConfig {
            path: p.clone(),
            ..cfg(d.path())
        };
        assert!(
            AuditWriter::open(&c).is_err(),
            "case {i}: writer must refuse a corrupt file"
        );
        let mut out = Vec::new();
        assert!(!cli::verify_to(&mut out, std::slice::from_ref(&p), None).unwrap());
    }
    // Empty files are ignored; an empty set verifies as zero records.
    let empty = d.path().join("empty.jsonl");
    fs::write(&empty, b"").unwrap();
    assert_eq!(
        audit::verify(std::slice::from_ref(&empty), None)
            .unwrap()
            .records,
        0
    );
    assert!(matches!(
        audit::verify(&[], None),
        Err(VerifyError::NoFiles)
    ));
}
