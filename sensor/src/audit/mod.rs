//! Tamper-evident audit trail: append-only JSONL, each record chained to the
//! previous one by SHA-256, rotated by size or age without breaking the chain,
//! with external anchors and an offline verifier.
//!
//! A record is one line:
//!
//! ```text
//! {"hash":"<hex>","kind":"alert","payload":{…},"prev_hash":"<hex>","seq":42,"time":"2026-05-01T12:00:00.123456789Z"}
//! ```
//!
//! * `seq` counts from 1 and keeps counting across rotations and restarts;
//! * `prev_hash` is the previous record's `hash` (64 zeros for the first record);
//! * `hash` is SHA-256 over the canonical form of the record without `hash`; see
//!   [`canonical`] for the exact definition and a Python re-implementation.
//!
//! The writer is [`AuditWriter`], the verifier [`verify()`] (and [`cli::verify`]
//! for `gatewatch audit verify`). What the chain proves: any edit, deletion or
//! reordering of records inside the supplied files is found; cutting records off
//! the end, or rewriting the whole chain, is found only against an anchor (the head
//! `{seq, hash}` logged or shipped elsewhere; see [`AuditWriter::maybe_anchor`]).

pub mod canonical;
pub mod cli;
mod config;
mod record;
mod verify;
mod writer;

pub use canonical::GENESIS_HASH;
pub use config::{AuditConfig, AuditKind, FsyncPolicy};
pub use verify::{
    verify, AnchorError, AnchorSpec, Break, BreakKind, FileSummary, VerifyError, VerifyReport,
};
pub use writer::{AuditError, AuditHead, AuditWriter};
