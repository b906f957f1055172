//! The appending side of the audit trail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::canonical::GENESIS_HASH;
use super::config::{AuditConfig, AuditKind, FsyncPolicy};
use super::record::{build_line, check_line, parse_meta, LineError, RecordMeta};

/// Longest line the writer is willing to read back when resuming.
const MAX_LINE: u64 = 64 * 1024 * 1024;

/// The newest record of the chain: what an external anchor pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Sequence number of the newest record (the first record of a chain is 1).
    pub seq: u64,
    /// Its hash (64 lower-case hex).
    pub hash: String,
    /// Its `time` (RFC 3339, UTC).
    pub time: String,
}

/// Errors of the audit writer.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The active file does not end with a newline: a write was interrupted.
    #[error(
        "audit file {} ends with an incomplete record ({partial} bytes after the last newline, \
         probably an interrupted write); refusing to continue the chain. Run \
         `gatewatch audit verify` on it, then either cut the partial line off \
         (truncate to {keep} bytes) or move the file aside to start a new chain",
        path.display()
    )]
    IncompleteTail {
        path: PathBuf,
        partial: u64,
        keep: u64,
    },
    /// The last record of the file is not a valid record: the chain cannot be continued.
    #[error(
        "audit file {} (byte offset {offset}): the last record is corrupt: {reason}; refusing \
         to continue the chain. Run `gatewatch audit verify` on it and move the file aside \
         to start a new chain",
        path.display()
    )]
    CorruptTail {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The configured path has no file name.
    #[error("audit path {} has no file name", path.display())]
    BadPath { path: PathBuf },
}

type Result<T> = std::result::Result<T, AuditError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AuditError + 'a {
    move |source| AuditError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Appends hash-chained records to the audit file, rotating and syncing as configured.
///
/// Not `Sync`-shared by itself: the pipeline owns it in its audit sink (or wraps it
/// in a `Mutex`). Dropping it syncs the file (best effort).
pub struct AuditWriter {
    cfg: AuditConfig,
    path: PathBuf,
    file: File,
    file_len: u64,
    /// First seq in the active file, `None` while it is empty.
    file_first_seq: Option<u64>,
    /// When the active file's first record was written (for age rotation).
    file_started: OffsetDateTime,
    head: Option<AuditHead>,
    /// Set when the next record starts a file that continues an earlier one:
    /// (previous file name, reason); a `rotation` record is written first.
    pending_rotation: Option<(String, &'static str)>,
    unsynced: bool,
    last_sync: Instant,
    last_anchor: Option<Instant>,
    anchors: Option<File>,
    body: Vec<u8>,
    line: Vec<u8>,
}

impl AuditWriter {
    /// Opens (creating directories and file as needed, mode 0700 / 0600) the audit
    /// file at `cfg.path` and resumes its chain: the next record continues from the
    /// last record's hash and seq. If the active file is empty or absent but rotated
    /// files sit next to it, the chain continues from the newest of them. A corrupt
    /// or incomplete last record is an error, never a silent restart.
    ///
    /// `cfg.enabled` is not looked at: the caller decides whether to open at all.
    pub fn open(cfg: &AuditConfig) -> Result<AuditWriter> {
        let path = cfg.path.clone();
        if path.file_name().is_none() {
            return Err(AuditError::BadPath { path });
        }
        if let Some(dir) = parent_dir(&path) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("creating directory", dir))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("opening audit file", &path))?;
        let file_len = file
            .metadata()
            .map_err(io_err("reading metadata of", &path))?
            .len();

        let now = OffsetDateTime::now_utc();
        let mut w = AuditWriter {
            cfg: cfg.clone(),
            path: path.clone(),
            file: file
                .try_clone()
                .map_err(io_err("duplicating handle of", &path))?,
            file_len,
            file_first_seq: None,
            file_started: now,
            head: None,
            pending_rotation: None,
            unsynced: false,
            last_sync: Instant::now(),
            last_anchor: None,
            anchors: None,
            body: Vec::with_capacity(2048),
            line: Vec::with_capacity(2048),
        };

        if file_len > 0 {
            let last = read_tail_record(&mut file, &path, file_len)?;
            let first_line = read_first_line(&mut file, &path)?;
            // The first record only gives the age and first seq; it is the verifier's
            // job to judge it, so a bad one is tolerated here.
            match parse_meta(&first_line) {
                Ok(first) => {
                    w.file_first_seq = Some(first.seq);
                    w.file_started = OffsetDateTime::parse(&first.time, &Rfc3339).unwrap_or(now);
                }
                Err(_) => w.file_first_seq = Some(last.seq),
            }
            w.head = Some(AuditHead {
                seq: last.seq,
                hash: last.hash,
                time: last.time,
            });
        } else if let Some((prev_path, last)) = newest_rotated(&path)? {
            w.head = Some(AuditHead {
                seq: last.seq,
                hash: last.hash,
                time: last.time,
            });
            let name = prev_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            w.pending_rotation = Some((name.unwrap_or_default(), "resume"));
        }
        Ok(w)
    }

    /// The newest record, `None` for a chain with no record yet. This is what the
    /// caller logs (and ships) as an external anchor.
    pub fn head(&self) -> Option<AuditHead> {
        self.head.clone()
    }

    /// The path of the active file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The config the writer was opened with.
    pub fn config(&self) -> &AuditConfig {
        &self.cfg
    }

    /// Appends a record of `kind` if the config records that kind
    /// (`record_alerts`, …); `Ok(None)` when it does not. This is what the
    /// pipeline calls.
    pub fn record(&mut self, kind: AuditKind, payload: &Value) -> Result<Option<AuditHead>> {
        if !self.cfg.records(kind) {
            return Ok(None);
        }
        self.append(kind, payload).map(Some)
    }

    /// Appends one record unconditionally and returns the new head. Rotates first
    /// if the active file is due, and syncs according to the fsync policy. If the
    /// write fails, the file is cut back to its previous length so that no partial
    /// record stays behind.
    pub fn append(&mut self, kind: AuditKind, payload: &Value) -> Result<AuditHead> {
        self.rotate_if_due()?;
        if let Some((previous_file, reason)) = self.pending_rotation.take() {
            let p = serde_json::json!({ "previous_file": previous_file, "reason": reason });
            if let Err(e) = self.write_record(AuditKind::Rotation.as_str(), &p) {
                self.pending_rotation = Some((previous_file, reason));
                return Err(e);
            }
        }
        self.write_record(kind.as_str(), payload)
    }

    fn write_record(&mut self, kind: &str, payload: &Value) -> Result<AuditHead> {
        let (seq, prev_hash) = match &self.head {
            Some(h) => (h.seq + 1, h.hash.as_str()),
            None => (1, GENESIS_HASH),
        };
        let now = OffsetDateTime::now_utc();
        let time = now
            .format(&Rfc3339)
            .unwrap_or_else(|_| now.unix_timestamp().to_string());
        let hash = build_line(
            kind,
            payload,
            prev_hash,
            seq,
            &time,
            &mut self.body,
            &mut self.line,
        );
        if let Err(e) = self.file.write_all(&self.line) {
            // Leave no partial record behind (best effort: if this fails too, the
            // next open reports the incomplete tail).
            let _ = self.file.set_len(self.file_len);
            return Err(AuditError::Io {
                op: "writing audit record to",
                path: self.path.clone(),
                source: e,
            });
        }
        self.file_len += self.line.len() as u64;
        if self.file_first_seq.is_none() {
            self.file_first_seq = Some(seq);
            self.file_started = now;
        }
        let head = AuditHead { seq, hash, time };
        self.head = Some(head.clone());
        self.unsynced = true;
        match self.cfg.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::IntervalMs(ms) => {
                if self.last_sync.elapsed() >= Duration::from_millis(ms) {
                    self.sync()?;
                }
            }
            FsyncPolicy::Never => {}
        }
        Ok(head)
    }

    /// Syncs the active file to disk now if anything was written since the last sync.
    /// With `fsync = { interval_ms }` the daemon may call this from a timer so that
    /// a quiet period does not leave the last records unsynced.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(io_err("syncing", &self.path))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn rotate_if_due(&mut self) -> Result<()> {
        if self.file_len == 0 {
            return Ok(());
        }
        let reason = if self.cfg.rotate_bytes > 0 && self.file_len >= self.cfg.rotate_bytes {
            "size"
        } else if self.cfg.rotate_secs > 0
            && (OffsetDateTime::now_utc() - self.file_started).whole_seconds()
                >= i64::try_from(self.cfg.rotate_secs).unwrap_or(i64::MAX)
        {
            "age"
        } else {
            return Ok(());
        };
        self.rotate(reason)
    }

    /// Rotates now: the active file is synced and renamed to
    /// `<stem>-<first seq:020>-<YYYYMMDDTHHMMSSZ>.<ext>`, and a new active file is
    /// started whose first record (kind `rotation`, payload
    /// `{"previous_file": …, "reason": …}`) continues the chain. Does nothing while
    /// the active file is empty.
    pub fn rotate(&mut self, reason: &'static str) -> Result<()> {
        let Some(first_seq) = self.file_first_seq else {
            return Ok(());
        };
        self.unsynced = true;
        self.sync()?;
        let rotated = rotated_path(&self.path, first_seq, OffsetDateTime::now_utc())?;
        fs::rename(&self.path, &rotated).map_err(io_err("renaming audit file to", &rotated))?;
        if let Some(dir) = parent_dir(&self.path) {
            // Make the rename durable; not fatal where directories cannot be synced.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io_err("opening new audit file", &self.path))?;
        self.file_len = 0;
        self.file_first_seq = None;
        self.file_started = OffsetDateTime::now_utc();
        let name = rotated
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.pending_rotation = Some((name, reason));
        Ok(())
    }

    /// If `anchor_interval_secs` has passed since the last anchor (or none was taken
    /// yet) and the chain has a head, takes an anchor as [`anchor_now`](Self::anchor_now)
    /// does and returns it; otherwise `Ok(None)`. Call it from a timer and log what it
    /// returns.
    pub fn maybe_anchor(&mut self) -> Result<Option<AuditHead>> {
        let Some(interval) = self.cfg.anchor_interval() else {
            return Ok(None);
        };
        if self.last_anchor.is_some_and(|t| t.elapsed() < interval) {
            return Ok(None);
        }
        self.anchor_now()
    }

    /// Returns the current head and, if `anchors_path` is configured, appends it to
    /// that file as `{"seq":…,"hash":"…","time":"…","anchored_at":"…"}` (synced).
    /// The audit file itself is synced first so that the anchor never points past
    /// what is on disk.
    pub fn anchor_now(&mut self) -> Result<Option<AuditHead>> {
        // No head yet: no anchor, and the clock does not start, so the first
        // record is anchored at the next call, not an interval later.
        let Some(head) = self.head.clone() else {
            return Ok(None);
        };
        self.last_anchor = Some(Instant::now());
        self.sync()?;
        if let Some(path) = self.cfg.anchors_path.clone() {
            if self.anchors.is_none() {
                if let Some(dir) = parent_dir(&path) {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(io_err("creating directory", dir))?;
                }
                let f = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err("opening anchors file", &path))?;
                self.anchors = Some(f);
            }
            let now = OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default();
            let mut line = serde_json::json!({
                "seq": head.seq, "hash": head.hash, "time": head.time, "anchored_at": now,
            })
            .to_string();
            line.push('\n');
            if let Some(f) = self.anchors.as_mut() {
                f.write_all(line.as_bytes())
                    .map_err(io_err("writing anchor to", &path))?;
                f.sync_data().map_err(io_err("syncing", &path))?;
            }
        }
        Ok(Some(head))
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

fn parent_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

/// `(stem, ext)` of the active file, e.g. `("audit", "jsonl")`.
fn stem_ext(path: &Path) -> Result<(String, String)> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .ok_or_else(|| AuditError::BadPath {
            path: path.to_path_buf(),
        })?;
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((stem, ext))
}

fn rotated_path(path: &Path, first_seq: u64, now: OffsetDateTime) -> Result<PathBuf> {
    let (stem, ext) = stem_ext(path)?;
    let ts = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let name = if ext.is_empty() {
        format!("{stem}-{first_seq:020}-{ts}")
    } else {
        format!("{stem}-{first_seq:020}-{ts}.{ext}")
    };
    Ok(path.with_file_name(name))
}

/// The rotated file with the highest first seq next to `path`, with its last record.
fn newest_rotated(path: &Path) -> Result<Option<(PathBuf, RecordMeta)>> {
    let (stem, ext) = stem_ext(path)?;
    let dir = parent_dir(path).unwrap_or(Path::new("."));
    let prefix = format!("{stem}-");
    let suffix = if ext.is_empty() {
        String::new()
    } else {
        format!(".{ext}")
    };
    let entries = fs::read_dir(dir).map_err(io_err("listing", dir))?;
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(suffix.as_str()))
        else {
            continue;
        };
        let Some(seq) = rest
            .get(..20)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            continue;
        };
        if best.as_ref().is_none_or(|(s, _)| seq > *s) {
            best = Some((seq, entry.path()));
        }
    }
    let Some((_, p)) = best else { return Ok(None) };
    let mut f = File::open(&p).map_err(io_err("opening rotated audit file", &p))?;
    let len = f
        .metadata()
        .map_err(io_err("reading metadata of", &p))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    let last = read_tail_record(&mut f, &p, len)?;
    Ok(Some((p, last)))
}

/// Reads and checks the last record of a non-empty file.
fn read_tail_record(file: &mut File, path: &Path, len: u64) -> Result<RecordMeta> {
    let (offset, line) = read_last_line(file, path, len)?;
    check_line(&line).map_err(|e| AuditError::CorruptTail {
        path: path.to_path_buf(),
        offset,
        reason: match e {
            LineError::Malformed(m) => m,
            LineError::HashMismatch { meta, computed } => format!(
                "record seq {} claims hash {} but its content hashes to {computed} (edited?)",
                meta.seq, meta.hash
            ),
        },
    })
}

/// Returns `(offset, bytes)` of the last line of a non-empty file, without its newline.
fn read_last_line(file: &mut File, path: &Path, len: u64) -> Result<(u64, Vec<u8>)> {
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))
        .map_err(io_err("seeking in", path))?;
    file.read_exact(&mut last)
        .map_err(io_err("reading", path))?;
    let end = len - 1; // position of the final newline, if it is one
    const CHUNK: u64 = 64 * 1024;
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = if last[0] == b'\n' { end } else { len };
    loop {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; usize::try_from(pos - start).unwrap_or(0)];
        file.seek(SeekFrom::Start(start))
            .map_err(io_err("seeking in", path))?;
        file.read_exact(&mut chunk)
            .map_err(io_err("reading", path))?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        if let Some(i) = tail[..usize::try_from(pos - start).unwrap_or(0)]
            .iter()
            .rposition(|&b| b == b'\n')
        {
            let line_start = start + i as u64 + 1;
            let line = tail[i + 1..].to_vec();
            if last[0] != b'\n' {
                return Err(AuditError::IncompleteTail {
                    path: path.to_path_buf(),
                    partial: line.len() as u64,
                    keep: line_start,
                });
            }
            return Ok((line_start, line));
        }
        if start == 0 {
            if last[0] != b'\n' {
                return Err(AuditError::IncompleteTail {
                    path: path.to_path_buf(),
                    partial: len,
                    keep: 0,
                });
            }
            return Ok((0, tail));
        }
        if (len - start) > MAX_LINE {
            return Err(AuditError::CorruptTail {
                path: path.to_path_buf(),
                offset: start,
                reason: format!("last line is longer than {MAX_LINE} bytes"),
            });
        }
        pos = start;
    }
}

fn read_first_line(file: &mut File, path: &Path) -> Result<Vec<u8>> {
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("seeking in", path))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = file.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            return Ok(out);
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&buf[..i]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() as u64 > MAX_LINE {
            return Ok(out);
        }
    }
}
