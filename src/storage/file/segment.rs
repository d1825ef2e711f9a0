//! Segment files: the log is a sequence of files `<seq>.log` (seq zero-padded, so names
//! sort in order), each a magic header and then records. Only the last one is ever
//! written to; a segment is synced before the next one is created.
//!
//! Recovery rules (a crash can only tear what was being written, the end of the last
//! segment):
//! - a bad record in the **last** segment with no valid record after it is a torn tail:
//!   it and everything after it are dropped (the caller truncates the file and warns);
//! - any other bad record is corruption of data that was once durable: an error naming
//!   the file and offset, never skipped.

use std::io;
use std::path::{Path, PathBuf};

use super::record::{self, Bad, HEADER_BYTES, Record};

/// First bytes of every segment: format name and version.
pub(crate) const MAGIC: &[u8; 8] = b"QRTLOG\x00\x01";
/// Segment file names end with this.
const SUFFIX: &str = ".log";

/// The file name of segment `seq`.
pub(crate) fn name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

/// The segments in `dir`, in order.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(seq) = file_name.to_str().and_then(|n| n.strip_suffix(SUFFIX)).and_then(|n| n.parse().ok()) else {
            continue;
        };
        segments.push((seq, entry.path()));
    }
    segments.sort_unstable();
    Ok(segments)
}

/// What one segment held.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// Its records, each with its offset in the file.
    pub records: Vec<(u64, Record)>,
    /// Where the valid data ends (the file's length unless a torn tail was found).
    pub valid_len: u64,
    /// Why the tail was dropped, if it was.
    pub torn: Option<String>,
}

/// A clear error about `path` at `offset`.
pub(crate) fn corrupt(path: &Path, offset: u64, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: corrupt log at offset {offset}: {why}", path.display()))
}

/// Reads one segment's records by the rules above.
pub(crate) fn scan(path: &Path, bytes: &[u8], is_last: bool) -> io::Result<Scanned> {
    if bytes.len() < MAGIC.len() && is_last && MAGIC.starts_with(bytes) {
        // Created, then a crash before its header was complete: nothing in it yet.
        let torn = Some(format!("{}: incomplete segment header ({} bytes)", path.display(), bytes.len()));
        return Ok(Scanned { records: Vec::new(), valid_len: 0, torn });
    }
    if !bytes.starts_with(MAGIC) {
        return Err(corrupt(path, 0, "not a quorate log segment (bad magic)"));
    }
    let mut records = Vec::new();
    let mut pos = MAGIC.len();
    while pos < bytes.len() {
        match record::frame_at(bytes, pos) {
            Ok((body, next)) => {
                let record = record::decode(body)
                    .map_err(|e| corrupt(path, pos as u64, &format!("checksum matches but cannot decode: {e}")))?;
                records.push((pos as u64, record));
                pos = next;
            }
            Err(bad) => {
                let why = match bad {
                    Bad::Truncated => "record cut short",
                    Bad::Checksum => "checksum mismatch",
                };
                if !is_last {
                    return Err(corrupt(path, pos as u64, &format!("{why} in a segment that was complete")));
                }
                if let Some(later) = valid_record_after(bytes, pos) {
                    return Err(corrupt(
                        path,
                        pos as u64,
                        &format!("{why}, but a valid record follows at offset {later}: this is not a torn tail"),
                    ));
                }
                let torn = Some(format!(
                    "{}: torn tail at offset {pos} ({why}); dropping {} bytes",
                    path.display(),
                    bytes.len() - pos
                ));
                return Ok(Scanned { records, valid_len: pos as u64, torn });
            }
        }
    }
    Ok(Scanned { records, valid_len: bytes.len() as u64, torn: None })
}

/// The offset of the first intact record starting after `pos`, if any. A crash tears only
/// the end of what was being written, so anything intact after a bad record means the bad
/// one was damaged after it was durable.
fn valid_record_after(bytes: &[u8], pos: usize) -> Option<usize> {
    (pos + 1..bytes.len().saturating_sub(HEADER_BYTES) + 1).find(|&q| record::frame_at(bytes, q).is_ok())
}
