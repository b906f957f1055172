//! The Kafka sink's on-disk spool: a write-ahead log of alerts that a record
//! leaves only once the broker acknowledged it (or the spool, when full,
//! drops it — oldest first, counted).
//!
//! One file per topic, `<topic>.spool`, of framed records:
//! `[u32 LE body length][u32 LE CRC-32 of body][body]`, body =
//! `[u8 version][i64 LE event time ms][u16 LE key len][key][u16 LE id len][id][JSON]`.
//! Beside it `<topic>.head` holds the file offset of the first record not yet
//! acknowledged (written by rename, so it is old or new, never torn). After a
//! crash the sensor resends from the last written head: at least once.
//!
//! Offsets are logical (they grow for ever); `base` maps them to the file,
//! so compaction can rewrite the file while records are in flight.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

const FRAME_HEADER: u64 = 8;
const BODY_VERSION: u8 = 1;
/// A body longer than this is corruption, not an alert.
const MAX_BODY: u32 = 16 << 20;
/// Rewrite the file once this many acknowledged bytes sit in front of the head.
const COMPACT_AFTER: u64 = 4 << 20;

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("spool {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("spool {path}: record at offset {offset} is corrupt ({why})")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: &'static str,
    },
    #[error("spool: offset {0} is not a record start")]
    NoRecord(u64),
}

/// One record read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub offset: u64,
    pub time_ms: i64,
    pub key: String,
    pub id: String,
    pub payload: Vec<u8>,
}

/// What opening found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// Unacknowledged records carried over from the last run.
    pub records: usize,
    /// Bytes of a corrupt or torn tail that were cut off.
    pub corrupt_bytes: u64,
}

pub struct Spool {
    path: PathBuf,
    head_path: PathBuf,
    file: File,
    /// Logical offset of file byte 0.
    base: u64,
    /// Logical offset one past the last record.
    end: u64,
    /// Logical offset of the first record still held.
    head: u64,
    /// Logical start offsets of the records in `[head, end)`, in order.
    records: VecDeque<u64>,
    max_bytes: u64,
    head_written: Option<u64>,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn encode(time_ms: i64, key: &str, id: &str, payload: &[u8]) -> Vec<u8> {
    // Keys and ids longer than u16 are cut: they are IPs and 32-digit ids.
    let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    let id = &id.as_bytes()[..id.len().min(u16::MAX as usize)];
    let body_len = 1 + 8 + 2 + key.len() + 2 + id.len() + payload.len();
    let mut body = Vec::with_capacity(FRAME_HEADER as usize + body_len);
    body.extend_from_slice(&(body_len as u32).to_le_bytes());
    body.extend_from_slice(&[0; 4]);
    body.push(BODY_VERSION);
    body.extend_from_slice(&time_ms.to_le_bytes());
    body.extend_from_slice(&(key.len() as u16).to_le_bytes());
    body.extend_from_slice(key);
    body.extend_from_slice(&(id.len() as u16).to_le_bytes());
    body.extend_from_slice(id);
    body.extend_from_slice(payload);
    let crc = crc32fast::hash(&body[FRAME_HEADER as usize..]);
    body[4..8].copy_from_slice(&crc.to_le_bytes());
    body
}

fn decode(offset: u64, body: &[u8]) -> Option<SpoolRecord> {
    let (&version, rest) = body.split_first()?;
    if version != BODY_VERSION || rest.len() < 10 {
        return None;
    }
    let time_ms = i64::from_le_bytes(rest[..8].try_into().ok()?);
    let klen = u16::from_le_bytes(rest[8..10].try_into().ok()?) as usize;
    let rest = &rest[10..];
    let key = std::str::from_utf8(rest.get(..klen)?).ok()?.to_string();
    let rest = &rest[klen..];
    let ilen = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let id = std::str::from_utf8(rest.get(2..2 + ilen)?)
        .ok()?
        .to_string();
    let payload = rest.get(2 + ilen..)?.to_vec();
    Some(SpoolRecord {
        offset,
        time_ms,
        key,
        id,
        payload,
    })
}

impl Spool {
    /// Opens (or creates) the spool `name` in `dir`, checks every held record
    /// and cuts a corrupt tail off (counted in the report, never a crash).
    pub fn open(dir: &Path, name: &str, max_bytes: u64) -> Result<(Spool, OpenReport), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "creating directory"))?;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{safe}.spool"));
        let head_path = dir.join(format!("{safe}.head"));
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "opening"))?;
        let len = file.metadata().map_err(io_err(&path, "stat"))?.len();
        let head = match std::fs::read_to_string(&head_path) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0).min(len),
            Err(_) => 0,
        };
        let mut spool = Spool {
            path,
            head_path,
            file,
            base: 0,
            end: len,
            head,
            records: VecDeque::new(),
            max_bytes: max_bytes.max(64 * 1024),
            head_written: Some(head),
        };
        let mut report = OpenReport::default();
        let valid_end = spool.scan(head, len);
        if valid_end < len {
            report.corrupt_bytes = len - valid_end;
            spool
                .file
                .set_len(valid_end)
                .map_err(io_err(&spool.path, "cutting a corrupt tail"))?;
            spool.end = valid_end;
        }
        report.records = spool.records.len();
        spool.compact_when(true)?;
        Ok((spool, report))
    }

    /// Indexes records from `from` to `len`; returns where the valid part ends.
    fn scan(&mut self, from: u64, len: u64) -> u64 {
        let mut at = from;
        let mut header = [0u8; FRAME_HEADER as usize];
        while at + FRAME_HEADER <= len {
            if self.file.read_exact_at(&mut header, at).is_err() {
                break;
            }
            let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let next = at + FRAME_HEADER + body_len as u64;
            if body_len > MAX_BODY || next > len {
                break;
            }
            let mut body = vec![0u8; body_len as usize];
            if self
                .file
                .read_exact_at(&mut body, at + FRAME_HEADER)
                .is_err()
                || crc32fast::hash(&body) != crc
                || decode(at, &body).is_none()
            {
                break;
            }
            self.records.push_back(at);
            at = next;
        }
        at
    }

    /// Appends one record. When it does not fit, the oldest records are dropped
    /// first; returns its offset and how many were dropped to make room (a
    /// record larger than the whole spool is itself dropped: offset None).
    pub fn append(
        &mut self,
        time_ms: i64,
        key: &str,
        id: &str,
        payload: &[u8],
    ) -> Result<(Option<u64>, u64), SpoolError> {
        let frame = encode(time_ms, key, id, payload);
        let size = frame.len() as u64;
        if size > self.max_bytes {
            return Ok((None, 1));
        }
        let mut dropped = 0;
        while self.end - self.head + size > self.max_bytes {
            self.records.pop_front();
            self.head = self.records.front().copied().unwrap_or(self.end);
            dropped += 1;
        }
        self.file
            .write_all(&frame)
            .map_err(io_err(&self.path, "appending"))?;
        let offset = self.end;
        self.records.push_back(offset);
        self.end += size;
        Ok((Some(offset), dropped))
    }

    /// Reads the record that starts at `offset`.
    pub fn read_at(&self, offset: u64) -> Result<SpoolRecord, SpoolError> {
        if offset < self.head || offset >= self.end || offset < self.base {
            return Err(SpoolError::NoRecord(offset));
        }
        let corrupt = |why| SpoolError::Corrupt {
            path: self.path.clone(),
            offset,
            why,
        };
        let at = offset - self.base;
        let mut header = [0u8; FRAME_HEADER as usize];
        self.file
            .read_exact_at(&mut header, at)
            .map_err(io_err(&self.path, "reading"))?;
        let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if body_len > MAX_BODY || offset + FRAME_HEADER + body_len as u64 > self.end {
            return Err(corrupt("bad length"));
        }
        let mut body = vec![0u8; body_len as usize];
        self.file
            .read_exact_at(&mut body, at + FRAME_HEADER)
            .map_err(io_err(&self.path, "reading"))?;
        if crc32fast::hash(&body)
            != u32::from_le_bytes([header[4], header[5], header[6], header[7]])
        {
            return Err(corrupt("checksum mismatch"));
        }
        decode(offset, &body).ok_or_else(|| corrupt("bad body"))
    }

    /// The offset of the record after the one at `offset` (or `end`).
    pub fn next_offset(&self, offset: u64) -> u64 {
        match self.records.binary_search(&offset) {
            Ok(i) => self.records.get(i + 1).copied().unwrap_or(self.end),
            Err(i) => self.records.get(i).copied().unwrap_or(self.end),
        }
    }

    /// Everything before `offset` was acknowledged: let it go.
    pub fn release_before(&mut self, offset: u64) {
        while self.records.front().is_some_and(|&r| r < offset) {
            self.records.pop_front();
        }
        self.head = self.records.front().copied().unwrap_or(self.end);
    }

    /// Drops the one record at `offset` from the index (a corrupt record).
    pub fn forget(&mut self, offset: u64) {
        if let Ok(i) = self.records.binary_search(&offset) {
            self.records.remove(i);
        }
        if self.head == offset {
            self.head = self.records.front().copied().unwrap_or(self.end);
        }
    }

    pub fn head(&self) -> u64 {
        self.head
    }
    pub fn end(&self) -> u64 {
        self.end
    }
    /// Records held (sent or not, not yet acknowledged).
    pub fn depth(&self) -> usize {
        self.records.len()
    }
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.end - self.head
    }
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the head down if it moved, so a restart resends only what is unacknowledged.
    pub fn persist_head(&mut self) -> Result<(), SpoolError> {
        let file_head = self.head - self.base;
        if self.head_written == Some(file_head) {
            return Ok(());
        }
        let tmp = self.head_path.with_extension("head.tmp");
        std::fs::write(&tmp, format!("{file_head}\n")).map_err(io_err(&tmp, "writing"))?;
        std::fs::rename(&tmp, &self.head_path).map_err(io_err(&self.head_path, "renaming"))?;
        self.head_written = Some(file_head);
        Ok(())
    }

    /// Gives back the disk space of acknowledged records: truncates when all
    /// are acknowledged, rewrites the file when enough dead bytes pile up.
    pub fn compact(&mut self) -> Result<(), SpoolError> {
        self.compact_when(false)
    }

    fn compact_when(&mut self, always: bool) -> Result<(), SpoolError> {
        let dead = self.head - self.base;
        if dead == 0 {
            return Ok(());
        }
        if self.head == self.end {
            self.file
                .set_len(0)
                .map_err(io_err(&self.path, "truncating"))?;
        } else if dead >= COMPACT_AFTER || always {
            let tmp = self.path.with_extension("spool.tmp");
            let mut live = vec![0u8; (self.end - self.head) as usize];
            self.file
                .read_exact_at(&mut live, dead)
                .map_err(io_err(&self.path, "reading for compaction"))?;
            let mut out = File::create(&tmp).map_err(io_err(&tmp, "creating"))?;
            out.write_all(&live).map_err(io_err(&tmp, "writing"))?;
            out.sync_data().map_err(io_err(&tmp, "syncing"))?;
            std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path, "renaming"))?;
            self.file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&self.path)
                .map_err(io_err(&self.path, "reopening"))?;
        } else {
            return Ok(());
        }
        self.base = self.head;
        self.head_written = None;
        self.persist_head()
    }

    /// Forces written records to disk (power-loss safety, once per tick).
    pub fn sync(&self) -> Result<(), SpoolError> {
        self.file.sync_data().map_err(io_err(&self.path, "syncing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &Spool, off: u64) -> SpoolRecord {
        s.read_at(off).unwrap()
    }

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, r) = Spool::open(dir.path(), "alerts", 1 << 20).unwrap();
        assert_eq!(r, OpenReport::default());
        let (a, _) = s.append(5, "10.0.0.1", "id-a", b"{\"a\":1}").unwrap();
        let (b, _) = s.append(6, "10.0.0.2", "id-b", b"{\"b\":2}").unwrap();
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(rec(&s, a).id, "id-a");
        assert_eq!(s.next_offset(a), b);
        s.release_before(b);
        s.persist_head().unwrap();
        drop(s);
        let (s, r) = Spool::open(dir.path(), "alerts", 1 << 20).unwrap();
        assert_eq!(r.records, 1);
        let got = rec(&s, s.head());
        assert_eq!((got.key.as_str(), got.id.as_str()), ("10.0.0.2", "id-b"));
        assert_eq!(got.payload, b"{\"b\":2}");
        assert_eq!(got.time_ms, 6);
    }

    #[test]
    fn corrupt_tail_is_cut_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), "t", 1 << 20).unwrap();
        s.append(1, "k", "one", b"{}").unwrap();
        s.append(2, "k", "two", b"{}").unwrap();
        let path = s.path().to_path_buf();
        drop(s);
        // Flip a byte in the second record and add a torn frame.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        bytes.extend_from_slice(&[9, 0, 0]);
        std::fs::write(&path, &bytes).unwrap();
        let (s, r) = Spool::open(dir.path(), "t", 1 << 20).unwrap();
        assert_eq!(r.records, 1);
        assert!(r.corrupt_bytes > 3);
        assert_eq!(rec(&s, s.head()).id, "one");
    }

    #[test]
    fn full_spool_drops_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), "t", 64 * 1024).unwrap();
        let payload = vec![b'x'; 1000];
        let mut dropped = 0;
        for i in 0..200 {
            dropped += s.append(i, "k", &format!("id-{i}"), &payload).unwrap().1;
        }
        assert!(dropped > 0);
        assert!(s.bytes() <= 64 * 1024);
        assert_eq!(s.depth() as u64 + dropped, 200);
        // The newest are kept, the oldest went.
        assert_eq!(rec(&s, s.head()).id, format!("id-{dropped}"));
    }

    #[test]
    fn compaction_keeps_logical_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), "t", 64 << 20).unwrap();
        let payload = vec![b'y'; 4096];
        let mut offs = Vec::new();
        for i in 0..1100 {
            offs.push(
                s.append(i, "k", &format!("id-{i}"), &payload)
                    .unwrap()
                    .0
                    .unwrap(),
            );
        }
        s.release_before(offs[1050]);
        s.compact().unwrap();
        assert_eq!(rec(&s, offs[1060]).id, "id-1060");
        assert_eq!(s.depth(), 50);
        s.release_before(s.end());
        s.compact().unwrap();
        assert_eq!(std::fs::metadata(s.path()).unwrap().len(), 0);
        let (o, _) = s.append(7, "k", "after", b"{}").unwrap();
        assert_eq!(rec(&s, o.unwrap()).id, "after");
    }
}
