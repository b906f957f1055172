//! The verifier: re-computes every hash and link of a set of audit files.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use super::canonical::{is_hash_hex, GENESIS_HASH};
use super::record::{check_line, parse_meta, LineError, RecordMeta};

/// An external anchor: the chain must contain a record with this seq and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorSpec {
    /// Sequence number the anchor pins.
    pub seq: u64,
    /// Hash the record with that seq must have.
    pub hash: String,
}

/// A bad `--anchor` argument or anchors file.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// `SEQ:HASH` text that does not parse.
    #[error("anchor `{0}` is not SEQ:HASH (a decimal seq and 64 lower-case hex digits)")]
    BadSpec(String),
    /// The anchors file could not be read.
    #[error("reading anchors file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The anchors file has no usable last line.
    #[error("anchors file {}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
}

impl FromStr for AnchorSpec {
    type Err = AnchorError;

    /// Parses `SEQ:HASH`.
    fn from_str(s: &str) -> Result<Self, AnchorError> {
        let bad = || AnchorError::BadSpec(s.to_owned());
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        let hash = hash.to_ascii_lowercase();
        if !is_hash_hex(&hash) {
            return Err(bad());
        }
        Ok(AnchorSpec { seq, hash })
    }
}

impl AnchorSpec {
    /// What `--anchor ARG` means: `SEQ:HASH` if it has that shape, otherwise the
    /// path of an anchors file (its last record is used).
    pub fn from_arg(arg: &str) -> Result<AnchorSpec, AnchorError> {
        let looks_like_spec = arg
            .split_once(':')
            .is_some_and(|(a, _)| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()));
        if looks_like_spec && !Path::new(arg).exists() {
            return arg.parse();
        }
        AnchorSpec::from_anchors_file(Path::new(arg))
    }

    /// The last anchor in an anchors file (`{"seq":…,"hash":"…",…}` per line, as
    /// the writer's `anchor_now` writes).
    pub fn from_anchors_file(path: &Path) -> Result<AnchorSpec, AnchorError> {
        let text = std::fs::read_to_string(path).map_err(|source| AnchorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| AnchorError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| bad("no anchor in it".into()))?;
        let v: serde_json::Value =
            serde_json::from_str(last).map_err(|e| bad(format!("last line is not JSON: {e}")))?;
        let seq = v
            .get("seq")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| bad("last line has no numeric `seq`".into()))?;
        let hash = v
            .get("hash")
            .and_then(|h| h.as_str())
            .filter(|h| is_hash_hex(h))
            .ok_or_else(|| bad("last line has no 64-hex `hash`".into()))?;
        Ok(AnchorSpec {
            seq,
            hash: hash.to_owned(),
        })
    }
}

/// How the chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// A record's content does not match its hash, or (seq consecutive, link broken)
    /// the previous record was altered and re-hashed.
    Edited,
    /// Records are missing: seq jumps and `prev_hash` names a record that is nowhere.
    Deleted,
    /// Records are out of order: seq goes backwards or repeats, or the record a
    /// `prev_hash` names is elsewhere in the files.
    Reordered,
    /// Against an anchor: the chain ends before the anchor's seq, or the record at
    /// that seq has another hash.
    Truncated,
    /// A line is not JSON or not an audit record.
    Malformed,
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakKind::Edited => "edited",
            BreakKind::Deleted => "deleted",
            BreakKind::Reordered => "reordered",
            BreakKind::Truncated => "truncated",
            BreakKind::Malformed => "malformed",
        })
    }
}

/// The first broken place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// What kind of break.
    pub kind: BreakKind,
    /// File the broken record is in.
    pub file: PathBuf,
    /// 1-based line number in that file (for `truncated` at the end: one past the last line).
    pub line: u64,
    /// The record's seq, when it could be read.
    pub seq: Option<u64>,
    /// Human explanation.
    pub detail: String,
    /// Records that verified before this one.
    pub verified_before: u64,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.kind,
            self.detail
        )
    }
}

/// Errors of [`verify`]: a break, or a reason the files could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The chain is broken (tampering, loss, or corruption).
    #[error("audit chain broken at {0}")]
    Broken(Box<Break>),
    /// No file given.
    #[error("no audit file given")]
    NoFiles,
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The anchor pins a seq before the first record supplied.
    #[error("anchor seq {anchor_seq} is before the first supplied record (seq {first_seq}); supply the older rotated files too")]
    AnchorNotCovered { anchor_seq: u64, first_seq: u64 },
}

impl VerifyError {
    /// The break, if this error is one.
    pub fn as_break(&self) -> Option<&Break> {
        match self {
            VerifyError::Broken(b) => Some(b),
            _ => None,
        }
    }
}

/// One file of the verified set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    pub path: PathBuf,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
}

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records verified.
    pub records: u64,
    /// Non-empty files in chain order.
    pub files: Vec<FileSummary>,
    /// Files that were empty (ignored).
    pub empty_files: Vec<PathBuf>,
    /// Seq of the first and last record (0 when there is none).
    pub first_seq: u64,
    pub last_seq: u64,
    /// Hash of the last record (the genesis value when there is none).
    pub head_hash: String,
    /// True if the first record starts a fresh chain; false if the set starts with
    /// a `rotation` record, i.e. older rotated files were not supplied.
    pub starts_at_genesis: bool,
    /// The anchor that was checked, if any.
    pub anchor: Option<AnchorSpec>,
}

struct Input {
    path: PathBuf,
    first_seq: u64,
}

/// Where a record sits in the ordered set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    file: usize,
    line: u64,
}

struct Prev {
    meta: RecordMeta,
    pos: Pos,
}

/// Verifies a set of audit files (a rotated set in any argument order: they are
/// ordered by their first record's seq) as one chain, optionally against an
/// external anchor. Returns the report of an intact chain, or the FIRST break.
///
/// A set may start with a `rotation` record (older files were removed or not
/// supplied); the report says so in `starts_at_genesis`. Any other non-genesis
/// start counts as `deleted`.
pub fn verify(paths: &[PathBuf], anchor: Option<AnchorSpec>) -> Result<VerifyReport, VerifyError> {
    if paths.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let mut inputs = Vec::new();
    let mut empty_files = Vec::new();
    for path in paths {
        let mut reader = open(path)?;
        let mut line = Vec::new();
        let n = read_line(&mut reader, &mut line, path)?;
        if n == 0 {
            empty_files.push(path.clone());
            continue;
        }
        match parse_meta(&line) {
            Ok(meta) => inputs.push(Input {
                path: path.clone(),
                first_seq: meta.seq,
            }),
            Err(LineError::Malformed(m)) => {
                return Err(broken(BreakKind::Malformed, path, 1, None, m, 0))
            }
            Err(LineError::HashMismatch { meta, .. }) => inputs.push(Input {
                path: path.clone(),
                first_seq: meta.seq,
            }),
        }
    }
    inputs.sort_by_key(|i| i.first_seq);

    let mut prev: Option<Prev> = None;
    let mut records: u64 = 0;
    let mut files = Vec::new();
    let mut starts_at_genesis = true;
    let mut anchor_seen = false;
    let mut last_pos = Pos { file: 0, line: 0 };
    let mut buf = Vec::with_capacity(4096);

    for (fi, input) in inputs.iter().enumerate() {
        let path = &input.path;
        let mut reader = open(path)?;
        let mut line_no: u64 = 0;
        let mut summary = FileSummary {
            path: path.clone(),
            first_seq: 0,
            last_seq: 0,
            records: 0,
        };
        loop {
            let n = read_line(&mut reader, &mut buf, path)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let pos = Pos {
                file: fi,
                line: line_no,
            };
            let meta = match check_line(&buf) {
                Ok(m) => m,
                Err(LineError::Malformed(m)) => {
                    return Err(broken(
                        BreakKind::Malformed,
                        path,
                        line_no,
                        None,
                        m,
                        records,
                    ));
                }
                Err(LineError::HashMismatch { meta, computed }) => {
                    let d = format!(
                        "record seq {} claims hash {} but its content hashes to {computed}: the record was changed after it was written",
                        meta.seq, meta.hash
                    );
                    return Err(broken(
                        BreakKind::Edited,
                        path,
                        line_no,
                        Some(meta.seq),
                        d,
                        records,
                    ));
                }
            };
            check_link(
                &inputs,
                prev.as_ref(),
                &meta,
                pos,
                records,
                &mut starts_at_genesis,
            )?;
            if let Some(a) = &anchor {
                if meta.seq == a.seq {
                    anchor_seen = true;
                    if meta.hash != a.hash {
                        let d = format!(
                            "the anchor says seq {} has hash {}, the file has {}: the chain was rewritten from here on",
                            a.seq, a.hash, meta.hash
                        );
                        return Err(broken(
                            BreakKind::Truncated,
                            path,
                            line_no,
                            Some(meta.seq),
                            d,
                            records,
                        ));
                    }
                }
            }
            if summary.records == 0 {
                summary.first_seq = meta.seq;
            }
            summary.last_seq = meta.seq;
            summary.records += 1;
            records += 1;
            last_pos = pos;
            prev = Some(Prev { meta, pos });
        }
        files.push(summary);
    }

    let first_seq = files.first().map_or(0, |f| f.first_seq);
    let last_seq = prev.as_ref().map_or(0, |p| p.meta.seq);
    if let Some(a) = &anchor {
        if !anchor_seen {
            if records > 0 && a.seq < first_seq {
                return Err(VerifyError::AnchorNotCovered {
                    anchor_seq: a.seq,
                    first_seq,
                });
            }
            let (file, line) = match inputs.get(last_pos.file) {
                Some(i) if records > 0 => (i.path.clone(), last_pos.line + 1),
                _ => (paths[0].clone(), 1),
            };
            let d = format!(
                "the chain ends at seq {last_seq} but the anchor says seq {} existed: records at the end were removed",
                a.seq
            );
            return Err(broken(BreakKind::Truncated, &file, line, None, d, records));
        }
    }
    Ok(VerifyReport {
        records,
        files,
        empty_files,
        first_seq,
        last_seq,
        head_hash: prev.map_or_else(|| GENESIS_HASH.to_owned(), |p| p.meta.hash),
        starts_at_genesis: records == 0 || starts_at_genesis,
        anchor,
    })
}

fn check_link(
    inputs: &[Input],
    prev: Option<&Prev>,
    meta: &RecordMeta,
    pos: Pos,
    records: u64,
    starts_at_genesis: &mut bool,
) -> Result<(), VerifyError> {
    let path = &inputs[pos.file].path;
    let fail = |kind, detail: String| {
        Err(broken(
            kind,
            path,
            pos.line,
            Some(meta.seq),
            detail,
            records,
        ))
    };
    let Some(prev) = prev else {
        if meta.prev_hash == GENESIS_HASH {
            if meta.seq != 1 {
                return fail(
                    BreakKind::Edited,
                    format!(
                        "the first record of a fresh chain must have seq 1, this one has seq {}",
                        meta.seq
                    ),
                );
            }
            return Ok(());
        }
        if meta.kind == "rotation" {
            *starts_at_genesis = false;
            return Ok(());
        }
        let (kind, detail) = classify(inputs, pos, meta, None);
        return fail(kind, detail);
    };
    if meta.prev_hash == prev.meta.hash && meta.seq == prev.meta.seq + 1 {
        return Ok(());
    }
    let prev_where = format!("{}:{}", inputs[prev.pos.file].path.display(), prev.pos.line);
    if meta.seq <= prev.meta.seq {
        return fail(
            BreakKind::Reordered,
            format!(
                "seq {} comes after seq {} ({prev_where}): records were moved or duplicated",
                meta.seq, prev.meta.seq
            ),
        );
    }
    if meta.prev_hash == prev.meta.hash {
        // Linked correctly but the seq jumps: the seq was changed and re-hashed.
        return fail(
            BreakKind::Edited,
            format!(
                "links to seq {} ({prev_where}) but has seq {} instead of {}: the record was altered and re-hashed",
                prev.meta.seq,
                meta.seq,
                prev.meta.seq + 1
            ),
        );
    }
    let (kind, detail) = classify(inputs, pos, meta, Some(prev));
    fail(kind, detail)
}

/// Decides between `reordered`, `deleted` and `edited` for a broken link, by looking
/// for the record that `prev_hash` names and for the missing seqs elsewhere in the set.
fn classify(
    inputs: &[Input],
    at: Pos,
    meta: &RecordMeta,
    prev: Option<&Prev>,
) -> (BreakKind, String) {
    let lo = prev.map_or(1, |p| p.meta.seq + 1);
    let hi = meta.seq; // missing seqs are lo..hi (exclusive)
    let mut named: Option<(Pos, u64)> = None;
    let mut missing_elsewhere: Option<(Pos, u64)> = None;
    let mut rotation_prev_file: Option<String> = None;
    let mut buf = Vec::new();
    for (fi, input) in inputs.iter().enumerate() {
        let Ok(mut reader) = open(&input.path) else {
            continue;
        };
        let mut line_no = 0;
        while let Ok(n) = read_line(&mut reader, &mut buf, &input.path) {
            if n == 0 {
                break;
            }
            line_no += 1;
            let pos = Pos {
                file: fi,
                line: line_no,
            };
            if pos == at {
                if meta.kind == "rotation" {
                    rotation_prev_file = serde_json::from_slice::<serde_json::Value>(&buf)
                        .ok()
                        .and_then(|v| {
                            v.pointer("/payload/previous_file")
                                .and_then(|f| f.as_str())
                                .map(str::to_owned)
                        });
                }
                continue;
            }
            let Ok(m) = parse_meta(&buf) else { continue };
            if named.is_none() && m.hash == meta.prev_hash {
                named = Some((pos, m.seq));
            }
            if missing_elsewhere.is_none() && pos > at && m.seq >= lo && m.seq < hi {
                missing_elsewhere = Some((pos, m.seq));
            }
        }
    }
    let where_ = |p: Pos| format!("{}:{}", inputs[p.file].path.display(), p.line);
    if let Some((p, seq)) = named {
        return (
            BreakKind::Reordered,
            format!(
                "seq {} follows its predecessor seq {seq} only at {}: records are out of order",
                meta.seq,
                where_(p)
            ),
        );
    }
    if let Some((p, seq)) = missing_elsewhere {
        return (
            BreakKind::Reordered,
            format!(
                "seq {} comes before seq {seq} (at {}): records are out of order",
                meta.seq,
                where_(p)
            ),
        );
    }
    if hi > lo {
        let count = hi - lo;
        let mut d = match prev {
            Some(p) => format!(
                "{count} record(s) missing between seq {} and seq {}: prev_hash names a record that is not in the files",
                p.meta.seq, meta.seq
            ),
            None => format!(
                "the set starts at seq {} without a genesis or rotation record: {count} earlier record(s) are missing",
                meta.seq
            ),
        };
        if let Some(f) = rotation_prev_file {
            d.push_str(&format!(
                " (this file continues `{f}`: is that file missing?)"
            ));
        }
        return (BreakKind::Deleted, d);
    }
    (
        BreakKind::Edited,
        format!(
            "prev_hash {} does not match the previous record{}: a record was altered and re-hashed",
            meta.prev_hash,
            prev.map(|p| format!(" (seq {}, {})", p.meta.seq, where_(p.pos)))
                .unwrap_or_default()
        ),
    )
}

fn broken(
    kind: BreakKind,
    path: &Path,
    line: u64,
    seq: Option<u64>,
    detail: String,
    verified_before: u64,
) -> VerifyError {
    VerifyError::Broken(Box::new(Break {
        kind,
        file: path.to_path_buf(),
        line,
        seq,
        detail,
        verified_before,
    }))
}

fn open(path: &Path) -> Result<BufReader<File>, VerifyError> {
    File::open(path)
        .map(|f| BufReader::with_capacity(256 * 1024, f))
        .map_err(|source| VerifyError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads one line into `buf` without its newline; returns bytes consumed (0 at EOF).
fn read_line(
    reader: &mut BufReader<File>,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<usize, VerifyError> {
    buf.clear();
    let n = reader
        .read_until(b'\n', buf)
        .map_err(|source| VerifyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(n)
}
