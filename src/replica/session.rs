//! Client sessions (dissertation §6.3): what lets a client retry a command that may already
//! have been applied without applying it twice.
//!
//! A client registers a session through the log (its id is the registration entry's
//! index, so ids are never reused), then tags every command with the session, a sequence
//! number, and the lowest sequence it still waits for. Applying a tagged command, every
//! replica consults the same table: a sequence it has a response for is answered from
//! the table instead of applied again. The table is replicated state: it changes only by
//! applying entries, in log order, and it is part of every snapshot.
//!
//! Expiry is by log position, never by a clock: a session untouched for
//! [`SessionLimits::expiry_entries`] entries is gone, and registering beyond
//! [`SessionLimits::max_sessions`] evicts the least recently used one. A command of a gone
//! session is refused (`SessionExpired`), never applied: its earlier attempts may have
//! been, and the table that would tell is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A command's session tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTag {
    /// The session's id: the index of its registration entry.
    pub session: u64,
    /// The command's sequence number in the session (from 1).
    pub seq: u64,
    /// The lowest sequence the client still waits for: responses below it may be
    /// forgotten.
    pub acked: u64,
}

/// How many sessions a replica remembers and for how long. Every server of a cluster must
/// use the same limits: they decide, in log order, what every replica's table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Most live sessions; registering one more evicts the least recently used.
    pub max_sessions: usize,
    /// A session untouched for this many log entries expires.
    pub expiry_entries: u64,
    /// Most responses kept per session; beyond it the oldest are forgotten (a retry of a
    /// forgotten one is refused, not applied).
    pub max_responses: usize,
}

impl Default for SessionLimits {
    /// 65,536 sessions, each expiring after 10 million entries untouched, keeping up to
    /// 16,384 responses each.
    fn default() -> SessionLimits {
        SessionLimits { max_sessions: 65_536, expiry_entries: 10_000_000, max_responses: 16_384 }
    }
}

// ----- the entry format -----

/// First byte of a command entry's payload: what precedes the user's MessagePack command.
const PLAIN: u8 = 0;
const TAGGED: u8 = 1;
const REGISTER: u8 = 2;

/// What a command entry carries besides the user's command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A command outside any session.
    Plain,
    /// A command of a session.
    Tagged(SessionTag),
    /// A session's registration (no command).
    Register,
}

/// Encodes `command` as a log entry's payload, tagged with `tag` if it has a session.
pub fn encode_command<C: Serialize>(tag: Option<SessionTag>, command: &C) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(32);
    match tag {
        None => out.push(PLAIN),
        Some(t) => {
            out.push(TAGGED);
            for v in [t.session, t.seq, t.acked] {
                put_varint(&mut out, v);
            }
        }
    }
    rmp_serde::encode::write(&mut out, command).map_err(|e| Error::Codec(e.to_string()))?;
    Ok(out)
}

/// Puts `tag` in front of `body`, a command already encoded with MessagePack (the same
/// bytes [`encode_command`] makes).
pub fn tag_encoded(tag: SessionTag, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    out.push(TAGGED);
    for v in [tag.session, tag.seq, tag.acked] {
        put_varint(&mut out, v);
    }
    out.extend_from_slice(body);
    out
}

/// The payload of a session registration.
pub fn encode_register() -> Vec<u8> {
    vec![REGISTER]
}

/// Splits a command entry's payload into its header and the user's command bytes.
pub(crate) fn decode(payload: &[u8]) -> Result<(Header, &[u8]), String> {
    let (&kind, mut rest) = payload.split_first().ok_or("an empty command entry")?;
    let header = match kind {
        PLAIN => Header::Plain,
        REGISTER => Header::Register,
        TAGGED => {
            let mut v = [0u64; 3];
            for x in &mut v {
                *x = take_varint(&mut rest).ok_or("a truncated session tag")?;
            }
            Header::Tagged(SessionTag { session: v[0], seq: v[1], acked: v[2] })
        }
        other => return Err(format!("an unknown command entry kind {other}")),
    };
    Ok((header, rest))
}

/// The session tag of an encoded command, if it has one (for tests and tools).
pub fn command_tag(payload: &[u8]) -> Option<SessionTag> {
    match decode(payload) {
        Ok((Header::Tagged(tag), _)) => Some(tag),
        _ => None,
    }
}

/// The user's command bytes of an encoded command entry (for tests and tools).
pub fn command_body(payload: &[u8]) -> Option<&[u8]> {
    match decode(payload) {
        Ok((Header::Plain | Header::Tagged(_), body)) => Some(body),
        _ => None,
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

// ----- the table -----

/// What a replica does with a tagged command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Apply it: the session has no response for it yet.
    Fresh,
    /// Applied before: answer with this (MessagePack) response.
    Duplicate(Vec<u8>),
    /// The session is gone, or forgot this sequence: refuse.
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// Index of the last entry of this session applied.
    last_active: u64,
    /// Sequences below this were acknowledged by the client: their responses are gone.
    floor: u64,
    /// Responses (MessagePack) of the sequences not yet acknowledged.
    responses: BTreeMap<u64, Vec<u8>>,
}

/// Every live session, as of the last applied entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sessions {
    live: BTreeMap<u64, Session>,
    /// `(last_active, id)` of every live session, least recently used first.
    by_activity: BTreeSet<(u64, u64)>,
}

impl Sessions {
    /// Registers a session at `index` (its id), evicting the least recently used one if
    /// the table is full.
    pub fn register(&mut self, index: u64, limits: &SessionLimits) -> u64 {
        self.expire(index, limits);
        while self.live.len() >= limits.max_sessions.max(1) {
            let Some(&(_, oldest)) = self.by_activity.first() else { break };
            self.remove(oldest);
        }
        debug_assert!(!self.live.contains_key(&index), "session ids are entry indexes, never reused");
        self.live.insert(index, Session { last_active: index, floor: 1, responses: BTreeMap::new() });
        self.by_activity.insert((index, index));
        self.check();
        index
    }

    /// Decides what applying the command tagged `tag` at `index` does. Changes nothing
    /// but expiry; [`Sessions::record`] follows for anything admitted.
    pub fn admit(&mut self, index: u64, tag: SessionTag, limits: &SessionLimits) -> Admit {
        self.expire(index, limits);
        let Some(session) = self.live.get(&tag.session) else { return Admit::Expired };
        if let Some(response) = session.responses.get(&tag.seq) {
            return Admit::Duplicate(response.clone());
        }
        // Below the floor: acknowledged (so applied) and forgotten, or never valid.
        if tag.seq < session.floor { Admit::Expired } else { Admit::Fresh }
    }

    /// Records that the command tagged `tag` was handled at `index`: its `response` (if it
    /// was applied now), the client's acknowledgement, the session's activity.
    pub fn record(&mut self, index: u64, tag: SessionTag, response: Option<Vec<u8>>, limits: &SessionLimits) {
        let Some(session) = self.live.get_mut(&tag.session) else { return };
        self.by_activity.remove(&(session.last_active, tag.session));
        session.last_active = index;
        self.by_activity.insert((index, tag.session));
        if let Some(response) = response {
            session.responses.insert(tag.seq, response);
        }
        // The client still waits for `tag.seq` itself, so never forget past it.
        let acked = tag.acked.min(tag.seq);
        if acked > session.floor {
            session.floor = acked;
            while session.responses.first_key_value().is_some_and(|(&seq, _)| seq < acked) {
                session.responses.pop_first();
            }
        }
        while session.responses.len() > limits.max_responses.max(1) {
            let (oldest, _) = session.responses.pop_first().expect("not empty");
            session.floor = session.floor.max(oldest + 1);
        }
        self.check();
    }

    /// The cached response of `tag`'s command, or why there is none (a replica that
    /// jumped past the command's entry by installing a snapshot asks this).
    pub fn lookup(&self, tag: SessionTag) -> Option<Result<Vec<u8>, Error>> {
        let Some(session) = self.live.get(&tag.session) else { return Some(Err(Error::SessionExpired)) };
        match session.responses.get(&tag.seq) {
            Some(r) => Some(Ok(r.clone())),
            None if tag.seq < session.floor => Some(Err(Error::SessionExpired)),
            None => None,
        }
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    fn expire(&mut self, index: u64, limits: &SessionLimits) {
        while let Some(&(last, id)) = self.by_activity.first() {
            if last.saturating_add(limits.expiry_entries) >= index {
                break;
            }
            self.remove(id);
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(s) = self.live.remove(&id) {
            self.by_activity.remove(&(s.last_active, id));
        }
    }

    fn check(&self) {
        debug_assert_eq!(self.live.len(), self.by_activity.len(), "every live session is in the activity order");
    }

    // ----- in snapshots -----

    /// Writes the table ahead of the state machine's bytes in a snapshot.
    pub fn write_to(&self, to: &mut dyn Write) -> io::Result<()> {
        let list: Vec<(&u64, &Session)> = self.live.iter().collect();
        let bytes = rmp_serde::to_vec(&list).map_err(io::Error::other)?;
        to.write_all(SNAPSHOT_MAGIC)?;
        to.write_all(&(bytes.len() as u64).to_le_bytes())?;
        to.write_all(&bytes)
    }

    /// Reads a table [`Sessions::write_to`] wrote, leaving `from` at the state machine's
    /// bytes.
    pub fn read_from(from: &mut dyn Read) -> io::Result<Sessions> {
        let mut head = [0u8; 16];
        from.read_exact(&mut head)?;
        if &head[..8] != SNAPSHOT_MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the snapshot has no session table"));
        }
        let len = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
        let mut bytes = Vec::new();
        from.take(len).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the snapshot's session table is truncated"));
        }
        let list: Vec<(u64, Session)> =
            rmp_serde::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut sessions = Sessions::default();
        for (id, s) in list {
            sessions.by_activity.insert((s.last_active, id));
            sessions.live.insert(id, s);
        }
        if sessions.by_activity.len() != sessions.live.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the snapshot's session table repeats a session"));
        }
        Ok(sessions)
    }
}

/// Opens a snapshot's session table (and names its format version).
const SNAPSHOT_MAGIC: &[u8; 8] = b"QSESS\x00\x00\x01";

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(session: u64, seq: u64, acked: u64) -> SessionTag {
        SessionTag { session, seq, acked }
    }

    #[test]
    fn entry_format_round_trips() {
        for t in [None, Some(tag(1, 1, 1)), Some(tag(u64::MAX, 300, 299))] {
            let bytes = encode_command(t, &"hello").unwrap();
            let (header, body) = decode(&bytes).unwrap();
            assert_eq!(header, t.map_or(Header::Plain, Header::Tagged));
            assert_eq!(rmp_serde::from_slice::<String>(body).unwrap(), "hello");
        }
        let body = rmp_serde::to_vec(&"hello").unwrap();
        assert_eq!(tag_encoded(tag(3, 4, 2), &body), encode_command(Some(tag(3, 4, 2)), &"hello").unwrap());
        assert_eq!(decode(&encode_register()).unwrap().0, Header::Register);
        assert!(decode(&[]).is_err());
        assert!(decode(&[9]).is_err());
        assert!(decode(&[TAGGED, 0x80]).is_err(), "truncated varint");
        assert!(decode(&[TAGGED, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn a_retry_is_answered_from_the_table() {
        let limits = SessionLimits::default();
        let mut s = Sessions::default();
        let id = s.register(5, &limits);
        assert_eq!(s.admit(6, tag(id, 1, 1), &limits), Admit::Fresh);
        s.record(6, tag(id, 1, 1), Some(vec![42]), &limits);
        assert_eq!(s.admit(7, tag(id, 1, 1), &limits), Admit::Duplicate(vec![42]));
        // Acknowledging 1 (the client now waits for 2 and up) forgets its response.
        assert_eq!(s.admit(8, tag(id, 2, 2), &limits), Admit::Fresh);
        s.record(8, tag(id, 2, 2), Some(vec![43]), &limits);
        assert_eq!(s.admit(9, tag(id, 1, 1), &limits), Admit::Expired, "acknowledged, forgotten, refused");
        assert_eq!(s.admit(9, tag(99, 1, 1), &limits), Admit::Expired, "unknown session");
    }

    #[test]
    fn sessions_expire_by_log_position_and_by_count() {
        let limits = SessionLimits { max_sessions: 2, expiry_entries: 10, max_responses: 2 };
        let mut s = Sessions::default();
        let a = s.register(1, &limits);
        let b = s.register(2, &limits);
        s.record(3, tag(a, 1, 1), Some(vec![1]), &limits);
        let c = s.register(4, &limits); // evicts b, the least recently used
        assert_eq!(s.admit(5, tag(b, 1, 1), &limits), Admit::Expired);
        assert_eq!(s.admit(5, tag(a, 1, 1), &limits), Admit::Duplicate(vec![1]));
        assert_eq!(s.admit(14, tag(c, 1, 1), &limits), Admit::Fresh, "untouched for exactly 10 entries");
        assert_eq!(s.admit(15, tag(c, 1, 1), &limits), Admit::Expired, "untouched for 11");
        assert_eq!(s.len(), 0, "a (last active at 3) expired before c");
    }

    #[test]
    fn responses_per_session_are_bounded() {
        let limits = SessionLimits { max_sessions: 8, expiry_entries: 100, max_responses: 2 };
        let mut s = Sessions::default();
        let id = s.register(1, &limits);
        for seq in 1..=3 {
            s.record(1 + seq, tag(id, seq, 1), Some(vec![seq as u8]), &limits);
        }
        assert_eq!(s.admit(5, tag(id, 1, 1), &limits), Admit::Expired, "the oldest was forgotten");
        assert_eq!(s.admit(5, tag(id, 3, 1), &limits), Admit::Duplicate(vec![3]));
    }

    #[test]
    fn the_table_survives_a_snapshot_and_rejects_corruption() {
        let limits = SessionLimits::default();
        let mut s = Sessions::default();
        let id = s.register(1, &limits);
        s.record(2, tag(id, 1, 1), Some(vec![7]), &limits);
        let mut bytes = Vec::new();
        s.write_to(&mut bytes).unwrap();
        bytes.extend_from_slice(b"machine");
        let mut reader = &bytes[..];
        let mut back = Sessions::read_from(&mut reader).unwrap();
        assert_eq!(reader, b"machine", "leaves the reader at the machine's bytes");
        assert_eq!(back.admit(3, tag(id, 1, 1), &limits), Admit::Duplicate(vec![7]));
        let table = bytes.len() - b"machine".len();
        for cut in [0, 5, 16, table - 1] {
            assert!(Sessions::read_from(&mut &bytes[..cut]).is_err(), "a table cut at {cut} of {table} bytes");
        }
        bytes[0] ^= 1;
        assert!(Sessions::read_from(&mut &bytes[..]).is_err());
    }
}
