//! One record of the log: a length, a checksum of that length, a checksum of the body,
//! then the body (MessagePack). The length has its own checksum so a flipped bit in it is
//! found as corruption instead of read as a record running past the end of the file.
//!
//! ```text
//! | body_len: u32 LE | crc32c(body_len bytes): u32 LE | crc32c(body): u32 LE | body |
//! ```

use serde::{Deserialize, Serialize};

use super::crc::crc32c;
use crate::core::{Entry, HardState, LogIndex};

/// Bytes before a record's body.
pub(crate) const HEADER_BYTES: usize = 12;
/// Largest body a record may have: a bound on what recovery allocates for one record, far
/// above any real record (a chunk of one batch, see [`CHUNK_BYTES_TARGET`]).
pub(crate) const BODY_BYTES_MAX: usize = 256 << 20;
/// A batch's entries are split into records of about this many payload bytes, so no record
/// is huge and recovery never needs one giant allocation.
pub(crate) const CHUNK_BYTES_TARGET: usize = 1 << 20;

/// What one record says, replayed in order at recovery: set the hard state, drop the
/// entries at and after `from`, append `entries`.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Record {
    pub hard_state: Option<HardState>,
    pub from: Option<LogIndex>,
    pub entries: Vec<Entry>,
}

/// The same fields as [`Record`], borrowed, for writing without copying entries.
#[derive(Serialize)]
struct RecordRef<'a> {
    hard_state: Option<HardState>,
    from: Option<LogIndex>,
    entries: &'a [Entry],
}

/// Appends one framed record to `out`.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    hard_state: Option<HardState>,
    from: Option<LogIndex>,
    entries: &[Entry],
) -> std::io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    rmp_serde::encode::write(out, &RecordRef { hard_state, from, entries }).map_err(std::io::Error::other)?;
    let body_len = out.len() - start - HEADER_BYTES;
    if body_len > BODY_BYTES_MAX {
        out.truncate(start);
        return Err(std::io::Error::other(format!("a log record of {body_len} bytes exceeds {BODY_BYTES_MAX}")));
    }
    let len = (body_len as u32).to_le_bytes();
    let body_crc = crc32c(&out[start + HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc32c(&len).to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&body_crc.to_le_bytes());
    Ok(())
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// The file ends inside the header or the body: what a crash mid-write leaves.
    Truncated,
    /// A checksum does not match (or the length is impossible).
    Checksum,
}

/// The record framed at `bytes[pos..]`: its body and the offset after it.
pub(crate) fn frame_at(bytes: &[u8], pos: usize) -> Result<(&[u8], usize), Bad> {
    let header = bytes.get(pos..pos + HEADER_BYTES).ok_or(Bad::Truncated)?;
    let word = |k: usize| u32::from_le_bytes(header[k..k + 4].try_into().expect("4 bytes"));
    if crc32c(&header[0..4]) != word(4) {
        return Err(Bad::Checksum);
    }
    let body_len = word(0) as usize;
    if body_len == 0 || body_len > BODY_BYTES_MAX {
        return Err(Bad::Checksum);
    }
    let start = pos + HEADER_BYTES;
    let body = bytes.get(start..start + body_len).ok_or(Bad::Truncated)?;
    if crc32c(body) != word(8) {
        return Err(Bad::Checksum);
    }
    Ok((body, start + body_len))
}

/// Decodes a body whose checksum matched.
pub(crate) fn decode(body: &[u8]) -> Result<Record, String> {
    rmp_serde::from_slice(body).map_err(|e| e.to_string())
}

/// Splits `entries` into runs of about [`CHUNK_BYTES_TARGET`] payload bytes (at least one
/// entry each).
pub(crate) fn chunks(entries: &[Entry]) -> impl Iterator<Item = &[Entry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        for e in rest {
            bytes += e.payload.size_bytes();
            if n > 0 && bytes > CHUNK_BYTES_TARGET {
                break;
            }
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Payload, Term};

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry { term: Term(1), index: LogIndex(index), payload: Payload::Command(vec![7; bytes].into()) }
    }

    #[test]
    fn a_record_round_trips_and_every_flipped_bit_is_caught() {
        let mut out = Vec::new();
        let hs = HardState { current_term: Term(3), voted_for: Some(2) };
        encode(&mut out, Some(hs), Some(LogIndex(1)), &[entry(1, 10), entry(2, 0)]).unwrap();
        let (body, end) = frame_at(&out, 0).unwrap();
        assert_eq!(end, out.len());
        let record = decode(body).unwrap();
        assert_eq!(record.hard_state, Some(hs));
        assert_eq!(record.entries.len(), 2);
        for bit in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(frame_at(&bad, 0).is_err(), "flipped bit {bit} went unnoticed");
        }
        for len in 0..out.len() {
            assert_eq!(frame_at(&out[..len], 0).unwrap_err(), Bad::Truncated, "cut at {len}");
        }
    }

    #[test]
    fn chunks_cover_every_entry_once() {
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, CHUNK_BYTES_TARGET / 3)).collect();
        let split: Vec<&[Entry]> = chunks(&entries).collect();
        assert!(split.len() > 1);
        assert_eq!(split.iter().map(|c| c.len()).sum::<usize>(), 10);
        let huge = [entry(1, 2 * CHUNK_BYTES_TARGET)];
        assert_eq!(chunks(&huge).count(), 1);
    }
}
