//! How the entries of an AppendEntries travel: as one MessagePack `bin`, written and read
//! by a loop over its bytes rather than through serde (`#[serde(with = "entry_batch")]`).
//!
//! The entries are the part of the wire whose size grows with the load, and serde's
//! derived encoding of them cost the most. Through rmp-serde every entry was
//! `[term, index, {"Command": bytes}]`: a sequence visited through several layers of
//! generic code, holding an enum whose variant was matched by its name (a UTF-8 check and
//! string comparisons per entry). Encoding, decoding and dropping an entry of a 30-byte
//! command took about 1,400 instructions that way (callgrind, batches of 200 entries), and
//! take about 770 here, of which some 350 are the allocation and release of the command's
//! bytes on the receiving side, which both pay.
//!
//! Inside the `bin` there is the number of entries, then each entry's term, index and
//! payload tag (`0` noop, `1` command, `2` configuration) as MessagePack unsigned integers,
//! and then its body: nothing for a noop, a `bin` of the command, or a `bin` holding the
//! membership's own MessagePack. So the bytes are MessagePack values back to back, and any
//! MessagePack tool can read them.
//!
//! Decoding refuses, with an error and never a panic, anything but exactly that: a
//! missing or truncated field, a value of another type, an unknown tag, bytes after the
//! last entry. A count that the bytes cannot hold fails when the bytes run out, and until
//! then it reserves room for at most [`PREALLOCATED_ENTRIES_MAX`] entries. A change to
//! this format means bumping `transport::PROTOCOL_VERSION`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{self, Serializer};

use super::membership::Membership;
use super::shared_bytes::SharedBytes;
use super::types::{Entry, LogIndex, Payload, Term};

const NOOP: u64 = 0;
const COMMAND: u64 = 1;
const CONFIG: u64 = 2;

/// The most entries to reserve room for before any has been decoded. The count is only a
/// claim until the entries are read (serde's own `Vec` decoding has a similar cap, 1 MiB).
const PREALLOCATED_ENTRIES_MAX: usize = 1024 * 1024 / std::mem::size_of::<Entry>();

/// Serializes `entries` as one `bin`. Serde takes bytes as one slice, so they are written
/// to a buffer of their own first (one allocation and copy per message, not per entry).
pub(crate) fn serialize<S: Serializer>(entries: &[Entry], s: S) -> Result<S::Ok, S::Error> {
    // `size_bytes` bounds an entry's encoded size, so this needs one allocation.
    let bound = 9 + entries.iter().map(|e| e.payload.size_bytes()).sum::<usize>();
    let mut buf = Vec::with_capacity(bound);
    write_entries(&mut buf, entries).map_err(ser::Error::custom)?;
    s.serialize_bytes(&buf)
}

/// Deserializes what [`serialize`] wrote.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Entry>, D::Error> {
    d.deserialize_bytes(EntriesVisitor)
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<Entry>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("log entries as one byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<Entry>, E> {
        read_entries(v).map_err(|why| E::custom(format_args!("bad log entries: {why}")))
    }

    /// A sequence of numbers, which is how formats without a bytes type write bytes.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<Entry>, A::Error> {
        let bytes = super::types::as_bytes::BytesVisitor.visit_seq(seq)?;
        self.visit_bytes(&bytes)
    }
}

// ----- writing -----

/// Appends `entries` to `buf` in this module's format.
fn write_entries(buf: &mut Vec<u8>, entries: &[Entry]) -> Result<(), &'static str> {
    put_uint(buf, entries.len() as u64);
    for entry in entries {
        put_uint(buf, entry.term.0);
        put_uint(buf, entry.index.0);
        match &entry.payload {
            Payload::Noop => put_uint(buf, NOOP),
            Payload::Command(bytes) => {
                put_uint(buf, COMMAND);
                put_bin(buf, bytes)?;
            }
            Payload::Config(membership) => {
                put_uint(buf, CONFIG);
                let body = rmp_serde::to_vec(membership).map_err(|_| "a membership that does not encode")?;
                put_bin(buf, &body)?;
            }
        }
    }
    Ok(())
}

/// Appends `v` as a MessagePack unsigned integer in its shortest form.
fn put_uint(buf: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        buf.push(v as u8); // positive fixint
    } else if let Ok(v) = u8::try_from(v) {
        buf.extend_from_slice(&[0xCC, v]);
    } else if let Ok(v) = u16::try_from(v) {
        buf.push(0xCD);
        buf.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        buf.push(0xCE);
        buf.extend_from_slice(&v.to_be_bytes());
    } else {
        buf.push(0xCF);
        buf.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends `bytes` as a MessagePack `bin`.
fn put_bin(buf: &mut Vec<u8>, bytes: &[u8]) -> Result<(), &'static str> {
    let len = bytes.len();
    if let Ok(len) = u8::try_from(len) {
        buf.extend_from_slice(&[0xC4, len]);
    } else if let Ok(len) = u16::try_from(len) {
        buf.push(0xC5);
        buf.extend_from_slice(&len.to_be_bytes());
    } else if let Ok(len) = u32::try_from(len) {
        buf.push(0xC6);
        buf.extend_from_slice(&len.to_be_bytes());
    } else {
        return Err("a payload of 4 GiB or more");
    }
    buf.extend_from_slice(bytes);
    Ok(())
}

// ----- reading -----

/// The entries in `bytes`, which must hold exactly what [`write_entries`] writes.
fn read_entries(mut bytes: &[u8]) -> Result<Vec<Entry>, &'static str> {
    let rd = &mut bytes;
    let count = usize::try_from(get_uint(rd)?).map_err(|_| "an entry count beyond memory")?;
    let mut entries = Vec::with_capacity(count.min(PREALLOCATED_ENTRIES_MAX));
    for _ in 0..count {
        entries.push(read_entry(rd)?);
    }
    if !rd.is_empty() {
        return Err("bytes after the last entry");
    }
    Ok(entries)
}

fn read_entry(rd: &mut &[u8]) -> Result<Entry, &'static str> {
    let term = Term(get_uint(rd)?);
    let index = LogIndex(get_uint(rd)?);
    let payload = match get_uint(rd)? {
        NOOP => Payload::Noop,
        COMMAND => Payload::Command(SharedBytes::from(get_bin(rd)?)),
        CONFIG => Payload::Config(read_membership(get_bin(rd)?)?),
        _ => return Err("an unknown payload tag"),
    };
    Ok(Entry { term, index, payload })
}

/// Takes the next `n` bytes off the front of `rd`.
fn take<'a>(rd: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    let (head, rest) = rd.split_at_checked(n).ok_or("the bytes end inside an entry")?;
    *rd = rest;
    Ok(head)
}

/// Takes an `n`-byte big-endian number off the front of `rd` (`n` is at most 8).
fn take_be(rd: &mut &[u8], n: usize) -> Result<u64, &'static str> {
    debug_assert!(n <= 8);
    Ok(take(rd, n)?.iter().fold(0, |v, &b| (v << 8) | u64::from(b)))
}

/// A MessagePack unsigned integer, in any of its widths.
fn get_uint(rd: &mut &[u8]) -> Result<u64, &'static str> {
    let marker = take(rd, 1)?[0];
    match marker {
        0x00..=0x7F => Ok(u64::from(marker)),
        0xCC => take_be(rd, 1),
        0xCD => take_be(rd, 2),
        0xCE => take_be(rd, 4),
        0xCF => take_be(rd, 8),
        _ => Err("a value that is not an unsigned integer where one belongs"),
    }
}

/// A MessagePack `bin`, borrowed from `rd`.
fn get_bin<'a>(rd: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let len = match take(rd, 1)?[0] {
        0xC4 => take_be(rd, 1)?,
        0xC5 => take_be(rd, 2)?,
        0xC6 => take_be(rd, 4)?,
        _ => return Err("a value that is not a byte string where one belongs"),
    };
    take(rd, usize::try_from(len).map_err(|_| "a byte string beyond memory")?)
}

/// The one membership that `bytes` hold, with nothing after it.
fn read_membership(mut bytes: &[u8]) -> Result<Membership, &'static str> {
    let rd = &mut bytes;
    let membership =
        Membership::deserialize(&mut rmp_serde::Deserializer::new(&mut *rd)).map_err(|_| "a malformed membership")?;
    if !rd.is_empty() {
        return Err("bytes after a membership");
    }
    Ok(membership)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(entries: &[Entry]) -> Vec<u8> {
        let mut buf = Vec::new();
        write_entries(&mut buf, entries).unwrap();
        buf
    }

    fn entry(term: u64, index: u64, payload: Payload) -> Entry {
        Entry { term: Term(term), index: LogIndex(index), payload }
    }

    /// Every payload kind, and every width of integer and byte string.
    fn samples() -> Vec<Entry> {
        let membership = Membership::with_voters([(1, "a:1".to_string()), (u64::MAX, "b:2".to_string())]);
        vec![
            entry(0, 0, Payload::Noop),
            entry(1, 0x7F, Payload::Command(SharedBytes::default())),
            entry(0x80, 0xFF, Payload::Command(vec![1; 0xFF].into())),
            entry(0x100, 0xFFFF, Payload::Command(vec![2; 0x100].into())),
            entry(0x1_0000, 0xFFFF_FFFF, Payload::Command(vec![3; 0x1_0000].into())),
            entry(0x1_0000_0000, u64::MAX, Payload::Config(membership)),
        ]
    }

    #[test]
    fn batches_round_trip() {
        for n in 0..=samples().len() {
            let entries = &samples()[..n];
            assert_eq!(read_entries(&encode(entries)).unwrap(), entries, "{n} entries");
        }
    }

    #[test]
    fn the_batch_is_messagepack_values_back_to_back() {
        let entries = [entry(3, 9, Payload::Command(vec![0xAB; 2].into())), entry(3, 300, Payload::Noop)];
        let want = [2, 3, 9, 1, 0xC4, 2, 0xAB, 0xAB, 3, 0xCD, 0x01, 0x2C, 0];
        assert_eq!(encode(&entries), want);
    }

    #[test]
    fn through_serde_the_batch_is_one_bin() {
        let ae = crate::core::AppendEntries {
            prev_log_index: LogIndex(4),
            prev_log_term: Term(2),
            entries: samples(),
            leader_commit: LogIndex(3),
        };
        let encoded = rmp_serde::to_vec(&ae).unwrap();
        let blob = encode(&ae.entries);
        assert_eq!(&encoded[..4], [0x94, 4, 2, 0xC6], "an array of four fields, the third a bin32");
        assert!(encoded.windows(blob.len()).any(|w| w == blob.as_slice()));
        assert_eq!(rmp_serde::from_slice::<crate::core::AppendEntries>(&encoded).unwrap(), ae);
    }

    /// Every way a batch can be malformed is an error: never a panic, never a default.
    #[test]
    fn malformed_batches_are_refused() {
        let one = [1, 3, 9, 1, 0xC4, 2, 0xAB, 0xAB];
        let mut trailing = one.to_vec();
        trailing.push(0);
        let bad_membership = [1, 3, 9, 2, 0xC4, 1, 0xC1];
        let mut membership = rmp_serde::to_vec(&Membership::with_voters([(1, String::new())])).unwrap();
        membership.push(0xC0);
        let membership_then_more = [&[1, 3, 9, 2, 0xC4, membership.len() as u8][..], &membership].concat();
        let cases: &[(&str, &[u8])] = &[
            ("empty", &[]),
            ("fewer entries than counted", &[2, 3, 9, 0]),
            ("a huge count", &[0xCF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 3, 9, 0]),
            ("bytes after the last entry", &trailing),
            ("unknown payload tag", &[1, 3, 9, 3]),
            ("a tag that is not an integer", &[1, 3, 9, 0xC0]),
            ("a negative term", &[1, 0xFF, 9, 0]),
            ("a signed index", &[1, 3, 0xD0, 9, 0]),
            ("a truncated u16", &[1, 0xCD, 0x01]),
            ("a truncated u64", &[1, 3, 0xCF, 0, 0, 0]),
            ("a command body that is a string", &[1, 3, 9, 1, 0xA2, b'h', b'i']),
            ("a command body cut short", &one[..7]),
            ("a command longer than the bytes", &[1, 3, 9, 1, 0xC6, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
            ("a command body missing", &[1, 3, 9, 1]),
            ("a malformed membership", &bad_membership),
            ("bytes after a membership", &membership_then_more),
        ];
        for (why, bytes) in cases {
            assert!(read_entries(bytes).is_err(), "{why}: decoded");
        }
        assert_eq!(read_entries(&one).unwrap().len(), 1, "the unmangled batch decodes");
    }

    #[test]
    fn a_batch_that_is_not_bytes_is_refused_by_serde() {
        let ae = (LogIndex(4), Term(2), "entries", LogIndex(3));
        let encoded = rmp_serde::to_vec(&ae).unwrap();
        assert!(rmp_serde::from_slice::<crate::core::AppendEntries>(&encoded).is_err());
    }
}
