//! `gatewatch audit verify FILE… [--anchor SEQ:HASH|ANCHORS_FILE]`: the human face
//! of [`verify`](super::verify()).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::verify::{verify as verify_chain, AnchorSpec, VerifyError};

/// Verifies `paths` as one chain (optionally against `anchor`, given as `SEQ:HASH`
/// or the path of an anchors file whose last line is used) and prints the result
/// to stdout. `Ok(true)`: intact (exit 0). `Ok(false)`: broken, the first break was
/// printed (exit 1). `Err`: could not verify at all (unreadable file, bad anchor).
pub fn verify(paths: &[PathBuf], anchor: Option<&str>) -> anyhow::Result<bool> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    verify_to(&mut out, paths, anchor)
}

/// [`verify`] printing to `out` instead of stdout.
pub fn verify_to(
    out: &mut dyn Write,
    paths: &[PathBuf],
    anchor: Option<&str>,
) -> anyhow::Result<bool> {
    let anchor = anchor
        .map(|a| AnchorSpec::from_arg(a).with_context(|| format!("reading anchor `{a}`")))
        .transpose()?;
    match verify_chain(paths, anchor) {
        Ok(r) => {
            writeln!(
                out,
                "OK: {} record(s) intact, seq {}..{} across {} file(s); head hash {}",
                r.records,
                r.first_seq,
                r.last_seq,
                r.files.len(),
                r.head_hash
            )?;
            for f in &r.files {
                writeln!(
                    out,
                    "  {}: seq {}..{} ({} records)",
                    f.path.display(),
                    f.first_seq,
                    f.last_seq,
                    f.records
                )?;
            }
            for f in &r.empty_files {
                writeln!(out, "  {}: empty, ignored", f.display())?;
            }
            if let Some(a) = &r.anchor {
                writeln!(out, "anchor seq {} hash {} matches", a.seq, a.hash)?;
            } else {
                writeln!(
                    out,
                    "note: no anchor given; records cut off the end cannot be detected without one (--anchor)"
                )?;
            }
            if !r.starts_at_genesis {
                writeln!(
                    out,
                    "note: the set starts at seq {} after a rotation; older files were not supplied and are not checked",
                    r.first_seq
                )?;
            }
            Ok(true)
        }
        Err(VerifyError::Broken(b)) => {
            writeln!(out, "BROKEN: {b}")?;
            writeln!(
                out,
                "  kind: {}, {} record(s) verified before it",
                b.kind, b.verified_before
            )?;
            Ok(false)
        }
        Err(e) => Err(e).context("verifying audit trail"),
    }
}
