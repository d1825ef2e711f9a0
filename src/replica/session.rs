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

use super::responses::Responses;
use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core::SharedBytes;
use crate::error::Error;

/// A command's session tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTag {
    /// The session's id: the index of its registration entry.
    pub session: u64,
    /// The secret the session was registered with: a command whose secret does not match
    /// is refused, so nobody can answer, acknowledge or block another client's commands
    /// by guessing its (predictable) id.
    pub secret: u64,
    /// The command's sequence number in the session (from 1).
    pub seq: u64,
    /// The lowest sequence the client still waits for: responses below it may be
    /// forgotten.
    pub acked: u64,
}

/// How many sessions a replica remembers and for how long.
///
/// The limits in force are replicated state: each session registration entry carries the
/// limits of the node that proposed it, and every replica adopts them when it applies that
/// entry (and keeps them in snapshots). So nodes configured differently (mid rolling
/// restart, say) never disagree about what the table holds; the latest registration's
/// limits win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    /// Most live sessions; registering one more evicts the least recently used.
    pub max_sessions: usize,
    /// A session untouched for this many log entries expires.
    pub expiry_entries: u64,
    /// Most responses kept per session; beyond it the oldest are forgotten (a retry of a
    /// forgotten one is refused, not applied).
    pub max_responses: usize,
    /// Most bytes of responses kept by all sessions together; beyond it the least recently
    /// used sessions are evicted (their later commands are refused, not applied).
    pub max_bytes: u64,
}

impl Default for SessionLimits {
    /// 65,536 sessions, each expiring after 10 million entries untouched, keeping up to
    /// 16,384 responses each and 256 MiB of responses in all.
    fn default() -> SessionLimits {
        SessionLimits { max_sessions: 65_536, expiry_entries: 10_000_000, max_responses: 16_384, max_bytes: 256 << 20 }
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
    /// A session's registration (no command): its secret, and the limits the table
    /// adopts from now on.
    Register { secret: u64, limits: SessionLimits },
}

/// Encodes `command` as a log entry's payload, tagged with `tag` if it has a session.
pub fn encode_command<C: Serialize>(tag: Option<SessionTag>, command: &C) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(32);
    match tag {
        None => out.push(PLAIN),
        Some(t) => put_tag(&mut out, t),
    }
    rmp_serde::encode::write(&mut out, command).map_err(|e| Error::Codec(e.to_string()))?;
    Ok(out)
}

/// [`encode_command`] into the shared buffer a log entry holds, encoded through a buffer
/// kept by the calling thread: one allocation per command, not two.
pub fn encode_shared<C: Serialize>(tag: Option<SessionTag>, command: &C) -> Result<SharedBytes, Error> {
    /// Largest scratch buffer a thread keeps between commands.
    const KEPT_MAX: usize = 64 << 10;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // Without the scratch if this thread's is gone (a client called from a thread-local's
    // destructor) or in use (re-entered from the command's `Serialize`).
    let unscratched = || encode_command(tag, command).map(SharedBytes::from);
    SCRATCH
        .try_with(|scratch| {
            let Ok(mut out) = scratch.try_borrow_mut() else { return unscratched() };
            out.clear();
            match tag {
                None => out.push(PLAIN),
                Some(t) => put_tag(&mut out, t),
            }
            let encoded = rmp_serde::encode::write(&mut *out, command).map_err(|e| Error::Codec(e.to_string()));
            let shared = encoded.map(|()| SharedBytes::from(out.as_slice()));
            if out.capacity() > KEPT_MAX {
                *out = Vec::new();
            }
            shared
        })
        .unwrap_or_else(|_| unscratched())
}

/// Checks that `body`, a command's MessagePack, decodes as a `C`: every server must be able
/// to apply what is proposed, so a command that would not decode (a `Serialize` and
/// `Deserialize` that disagree, bytes from a remote client) is refused before it reaches
/// the log instead of stopping every server at its index.
pub fn check_command<C: DeserializeOwned>(body: &[u8]) -> Result<(), Error> {
    rmp_serde::from_slice::<C>(body)
        .map(drop)
        .map_err(|e| Error::Codec(format!("the command does not decode as it would be applied: {e}")))
}

/// Puts `tag` in front of `body`, a command already encoded with MessagePack (the same
/// bytes [`encode_command`] makes).
pub fn tag_encoded(tag: SessionTag, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + TAG_BYTES_MAX);
    put_tag(&mut out, tag);
    out.extend_from_slice(body);
    out
}

/// [`tag_encoded`] as the command an entry holds: tag and body copied once, into one
/// shared buffer of the exact size.
pub fn tag_shared(tag: SessionTag, body: &[u8]) -> SharedBytes {
    let (bytes, len) = tag_bytes(tag);
    bytes[..len].iter().copied().chain(body.iter().copied()).collect()
}

/// The longest tag: a header byte, three varints of at most 10 bytes, the 8-byte secret.
const TAG_BYTES_MAX: usize = 1 + 3 * 10 + 8;

fn put_tag(out: &mut Vec<u8>, t: SessionTag) {
    let (bytes, len) = tag_bytes(t);
    out.extend_from_slice(&bytes[..len]);
}

/// A tag's bytes, on the stack.
fn tag_bytes(t: SessionTag) -> ([u8; TAG_BYTES_MAX], usize) {
    let mut out = [0; TAG_BYTES_MAX];
    out[0] = TAGGED;
    let mut len = 1;
    len = put_varint(&mut out, len, t.session);
    out[len..len + 8].copy_from_slice(&t.secret.to_le_bytes());
    len += 8;
    len = put_varint(&mut out, len, t.seq);
    len = put_varint(&mut out, len, t.acked);
    (out, len)
}

/// The payload of a session registration with `secret`, carrying the proposer's `limits`.
pub fn encode_register(secret: u64, limits: &SessionLimits) -> Vec<u8> {
    let mut out = vec![REGISTER];
    out.extend_from_slice(&secret.to_le_bytes());
    for v in [limits.max_sessions as u64, limits.expiry_entries, limits.max_responses as u64, limits.max_bytes] {
        let mut varint = [0; 10];
        let len = put_varint(&mut varint, 0, v);
        out.extend_from_slice(&varint[..len]);
    }
    out
}

/// Splits a command entry's payload into its header and the user's command bytes.
pub(crate) fn decode(payload: &[u8]) -> Result<(Header, &[u8]), String> {
    let (&kind, mut rest) = payload.split_first().ok_or("an empty command entry")?;
    let header = match kind {
        PLAIN => Header::Plain,
        REGISTER => {
            let secret = take_u64(&mut rest).ok_or("a truncated registration")?;
            let mut v = [0u64; 4];
            for x in &mut v {
                *x = take_varint(&mut rest).ok_or("a truncated or malformed registration")?;
            }
            let size = |n: u64| usize::try_from(n).map_err(|_| "a registration's limit is out of range");
            let limits = SessionLimits {
                max_sessions: size(v[0])?,
                expiry_entries: v[1],
                max_responses: size(v[2])?,
                max_bytes: v[3],
            };
            if !rest.is_empty() {
                return Err("a registration with trailing bytes".into());
            }
            Header::Register { secret, limits }
        }
        TAGGED => {
            let session = take_varint(&mut rest).ok_or("a truncated or malformed session tag")?;
            let secret = take_u64(&mut rest).ok_or("a truncated session tag")?;
            let seq = take_varint(&mut rest).ok_or("a truncated or malformed session tag")?;
            let acked = take_varint(&mut rest).ok_or("a truncated or malformed session tag")?;
            Header::Tagged(SessionTag { session, secret, seq, acked })
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

/// Writes `v` as a LEB128 varint at `out[at..]`; returns the index after it.
fn put_varint(out: &mut [u8], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        out[at] = (v as u8) | 0x80;
        at += 1;
        v >>= 7;
    }
    out[at] = v as u8;
    at + 1
}

/// Reads a LEB128 varint, accepting only the shortest encoding of a value that fits in 64
/// bits: every replica must read the same bytes the same way, and a command entry has one
/// spelling.
fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        let bits = u64::from(b & 0x7f);
        if shift == 63 && bits > 1 {
            return None; // bits beyond the 64th
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            // A last group of 0 after others is a longer spelling of a shorter value.
            return (shift == 0 || bits != 0).then_some(v);
        }
    }
    None
}

fn take_u64(bytes: &mut &[u8]) -> Option<u64> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    *bytes = rest;
    Some(u64::from_le_bytes(*head))
}

// ----- the table -----

/// What a replica does with a tagged command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Apply it: the session has no response for it yet.
    Fresh,
    /// Applied before: answer with this stored response.
    Duplicate(Stored),
    /// The session is gone, forgot this sequence, or is not the tag's (wrong secret):
    /// refuse.
    Expired,
}

pub(crate) use super::responses::Stored;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The secret it was registered with.
    secret: u64,
    /// Index of the last entry of this session applied.
    last_active: u64,
    /// Sequences below this were acknowledged by the client: their responses are gone.
    floor: u64,
    /// Responses of the sequences not yet acknowledged.
    responses: Responses,
    /// Bytes of `responses` (recomputed when read from a snapshot).
    #[serde(skip)]
    bytes: u64,
    /// Its key in [`Sessions::by_activity`]: `last_active` as of the last time the order
    /// was brought up to date, never later than `last_active` (see there).
    #[serde(skip)]
    activity_key: u64,
}

impl Session {
    fn insert(&mut self, seq: u64, response: Stored) {
        self.bytes += response.len() as u64;
        if let Some(old) = self.responses.insert(seq, response) {
            self.bytes -= old.len() as u64;
        }
    }

    /// Forgets the oldest response; the floor moves past it.
    fn forget_oldest(&mut self) -> Option<u64> {
        let (seq, r) = self.responses.pop_first()?;
        self.bytes -= r.len() as u64;
        self.floor = self.floor.max(seq.saturating_add(1));
        Some(seq)
    }
}

/// Every live session, as of the last applied entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sessions {
    live: BTreeMap<u64, Session>,
    /// `(activity_key, id)` of every live session. Brought up to date lazily: a write only
    /// moves its session's `last_active`, and a key found stale at the front is re-keyed
    /// before the front is trusted. Since a key is never later than the real activity,
    /// the first up-to-date key is the least recently used session, exactly as if every
    /// write had re-keyed (at two tree operations per write per replica, which this saves).
    by_activity: BTreeSet<(u64, u64)>,
    /// The limits of the latest registration applied (replicated, see [`SessionLimits`]).
    limits: SessionLimits,
    /// Bytes of all stored responses. Invariant: the sum of every session's responses.
    bytes: u64,
}

impl Sessions {
    /// Registers a session at `index` (its id) with `secret`, adopting the registration's
    /// `limits`, and evicting the least recently used sessions if the table is full.
    pub fn register(&mut self, index: u64, secret: u64, limits: SessionLimits) -> u64 {
        self.limits = limits;
        self.expire(index);
        while self.live.len() >= self.limits.max_sessions.max(1) {
            let Some(oldest) = self.least_recently_used() else { break };
            self.remove(oldest);
        }
        debug_assert!(!self.live.contains_key(&index), "session ids are entry indexes, never reused");
        let session = Session { secret, last_active: index, activity_key: index, floor: 1, ..Session::default() };
        self.live.insert(index, session);
        self.by_activity.insert((index, index));
        self.enforce_bytes(index);
        self.check();
        index
    }

    /// Decides what applying the command tagged `tag` at `index` does. Changes nothing
    /// but expiry; [`Sessions::record`] follows for anything admitted.
    pub fn admit(&mut self, index: u64, tag: SessionTag) -> Admit {
        self.expire(index);
        let Some(session) = self.live.get(&tag.session).filter(|s| s.secret == tag.secret) else {
            return Admit::Expired;
        };
        if let Some(response) = session.responses.get(tag.seq) {
            return Admit::Duplicate(response.clone());
        }
        // Below the floor: acknowledged (so applied) and forgotten, or never valid.
        if tag.seq < session.floor { Admit::Expired } else { Admit::Fresh }
    }

    /// Records that the command tagged `tag` (admitted) was handled at `index`: its
    /// `response` (if it was applied now), the client's acknowledgement, the session's
    /// activity.
    pub fn record(&mut self, index: u64, tag: SessionTag, response: Option<Stored>) {
        let Some(session) = self.live.get_mut(&tag.session) else { return };
        debug_assert_eq!(session.secret, tag.secret, "only admitted commands are recorded");
        session.last_active = index; // `by_activity` catches up lazily
        let before = session.bytes;
        if let Some(response) = response {
            session.insert(tag.seq, response);
        }
        // The client still waits for `tag.seq` itself, so never forget past it.
        let acked = tag.acked.min(tag.seq);
        while session.responses.first_seq().is_some_and(|seq| seq < acked) {
            session.forget_oldest();
        }
        session.floor = session.floor.max(acked);
        while session.responses.len() > self.limits.max_responses.max(1) {
            session.forget_oldest();
        }
        self.bytes = self.bytes - before + session.bytes;
        self.enforce_bytes(tag.session);
        self.check();
    }

    /// Keeps the stored responses within `max_bytes`: evicts the least recently used
    /// sessions other than `current`, then forgets `current`'s oldest responses.
    fn enforce_bytes(&mut self, current: u64) {
        let max = self.limits.max_bytes;
        if self.bytes <= max {
            return;
        }
        // `current` is out of the order while the others are evicted, least recently used
        // first (re-keying only the stale keys met at the front, as expiry does).
        let current_key = self.live.get(&current).map(|s| s.activity_key);
        if let Some(key) = current_key {
            self.by_activity.remove(&(key, current));
        }
        while self.bytes > max {
            let Some(id) = self.least_recently_used() else { break };
            self.remove(id);
        }
        if let Some(key) = current_key {
            self.by_activity.insert((key, current));
        }
        if let Some(session) = self.live.get_mut(&current) {
            while self.bytes > max {
                let before = session.bytes;
                if session.forget_oldest().is_none() {
                    break;
                }
                self.bytes -= before - session.bytes;
            }
        }
    }

    /// The stored response of `tag`'s command, or why there is none (a replica that
    /// jumped past the command's entry by installing a snapshot asks this).
    pub fn lookup(&self, tag: SessionTag) -> Option<Result<Stored, Error>> {
        let Some(session) = self.live.get(&tag.session).filter(|s| s.secret == tag.secret) else {
            return Some(Err(Error::SessionExpired));
        };
        match session.responses.get(tag.seq) {
            Some(r) => Some(Ok(r.clone())),
            None if tag.seq < session.floor => Some(Err(Error::SessionExpired)),
            None => None,
        }
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    fn expire(&mut self, index: u64) {
        // A stale key is earlier than its session's activity: if even it is recent
        // enough, every session is.
        while let Some(&(key, _)) = self.by_activity.first() {
            if key.saturating_add(self.limits.expiry_entries) >= index {
                break;
            }
            let Some(id) = self.least_recently_used() else { break };
            if self.live[&id].last_active.saturating_add(self.limits.expiry_entries) >= index {
                break;
            }
            self.remove(id);
        }
    }

    /// The least recently used session: re-keys stale keys at the front until the first
    /// key is up to date.
    fn least_recently_used(&mut self) -> Option<u64> {
        loop {
            let &(key, id) = self.by_activity.first()?;
            let session = self.live.get_mut(&id).expect("every key names a live session");
            if session.activity_key == session.last_active {
                return Some(id);
            }
            debug_assert_eq!(key, session.activity_key);
            self.by_activity.remove(&(key, id));
            session.activity_key = session.last_active;
            self.by_activity.insert((session.last_active, id));
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(s) = self.live.remove(&id) {
            self.by_activity.remove(&(s.activity_key, id));
            self.bytes -= s.bytes;
        }
    }

    fn check(&self) {
        debug_assert_eq!(self.live.len(), self.by_activity.len(), "every live session is in the activity order");
        debug_assert!(
            self.live
                .iter()
                .all(|(id, s)| s.activity_key <= s.last_active && self.by_activity.contains(&(s.activity_key, *id))),
            "activity keys are never ahead of the activity they stand for"
        );
        debug_assert_eq!(
            self.bytes,
            self.live.values().map(|s| s.responses.values().map(|r| r.len() as u64).sum::<u64>()).sum::<u64>(),
            "the byte count adds up"
        );
    }

    // ----- in snapshots -----

    /// Writes the table (and the limits in force) ahead of the state machine's bytes in a
    /// snapshot.
    pub fn write_to(&self, to: &mut dyn Write) -> io::Result<()> {
        let list: Vec<(&u64, &Session)> = self.live.iter().collect();
        let bytes = rmp_serde::to_vec(&(&self.limits, list)).map_err(io::Error::other)?;
        to.write_all(SNAPSHOT_MAGIC)?;
        to.write_all(&(bytes.len() as u64).to_le_bytes())?;
        to.write_all(&bytes)
    }

    /// Reads a table [`Sessions::write_to`] wrote, leaving `from` at the state machine's
    /// bytes.
    pub fn read_from(from: &mut dyn Read) -> io::Result<Sessions> {
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
        let mut head = [0u8; 16];
        from.read_exact(&mut head)?;
        if &head[..8] != SNAPSHOT_MAGIC {
            return Err(invalid("the snapshot has no session table of this version"));
        }
        let len = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
        let mut bytes = Vec::new();
        from.take(len).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the snapshot's session table is truncated"));
        }
        let (limits, list): (SessionLimits, Vec<(u64, Session)>) =
            rmp_serde::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut sessions = Sessions { limits, ..Sessions::default() };
        for (id, mut s) in list {
            s.bytes = s.responses.values().map(|r| r.len() as u64).sum();
            sessions.bytes += s.bytes;
            s.activity_key = s.last_active;
            sessions.by_activity.insert((s.last_active, id));
            sessions.live.insert(id, s);
        }
        if sessions.by_activity.len() != sessions.live.len() {
            return Err(invalid("the snapshot's session table repeats a session"));
        }
        Ok(sessions)
    }
}

/// Opens a snapshot's session table (and names its format version: 2 added secrets,
/// replicated limits and byte budgets).
const SNAPSHOT_MAGIC: &[u8; 8] = b"QSESS\x00\x00\x02";

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: u64 = 0x5ec2e7;

    fn tag(session: u64, seq: u64, acked: u64) -> SessionTag {
        SessionTag { session, secret: SECRET, seq, acked }
    }

    fn limits(max_sessions: usize, expiry_entries: u64, max_responses: usize, max_bytes: u64) -> SessionLimits {
        SessionLimits { max_sessions, expiry_entries, max_responses, max_bytes }
    }

    fn table(at: u64, l: SessionLimits) -> (Sessions, u64) {
        let mut s = Sessions::default();
        let id = s.register(at, SECRET, l);
        (s, id)
    }

    #[test]
    fn entry_format_round_trips() {
        for t in
            [None, Some(tag(1, 1, 1)), Some(SessionTag { session: u64::MAX, secret: u64::MAX, seq: 300, acked: 299 })]
        {
            let bytes = encode_command(t, &"hello").unwrap();
            let (header, body) = decode(&bytes).unwrap();
            assert_eq!(header, t.map_or(Header::Plain, Header::Tagged));
            assert_eq!(rmp_serde::from_slice::<String>(body).unwrap(), "hello");
        }
        let body = rmp_serde::to_vec(&"hello").unwrap();
        assert_eq!(tag_encoded(tag(3, 4, 2), &body), encode_command(Some(tag(3, 4, 2)), &"hello").unwrap());
        let l = limits(7, 8, 9, 10);
        assert_eq!(
            decode(&encode_register(SECRET, &l)).unwrap(),
            (Header::Register { secret: SECRET, limits: l }, &[][..])
        );
        assert!(decode(&[]).is_err());
        assert!(decode(&[9]).is_err());
        assert!(decode(&[REGISTER]).is_err(), "a registration without its secret and limits");
        let mut long = encode_register(SECRET, &l);
        long.push(0);
        assert!(decode(&long).is_err(), "a registration with trailing bytes");
        assert!(decode(&[TAGGED, 0x80]).is_err(), "truncated varint");
        assert!(decode(&[TAGGED, 1, 0, 0, 0]).is_err(), "truncated secret");
        assert!(decode(&[TAGGED, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn a_shared_tagged_command_is_the_tagged_bytes() {
        let body = rmp_serde::to_vec(&"hello").unwrap();
        for t in [tag(1, 1, 1), SessionTag { session: u64::MAX, secret: u64::MAX, seq: u64::MAX, acked: u64::MAX }] {
            let shared = tag_shared(t, &body);
            assert_eq!(*shared, *tag_encoded(t, &body));
            assert_eq!(*shared, *encode_command(Some(t), &"hello").unwrap());
            assert_eq!(*encode_shared(Some(t), &"hello").unwrap(), *shared);
        }
        assert_eq!(*encode_shared(None, &"hello").unwrap(), *encode_command(None, &"hello").unwrap());
        let big = vec![1u8; 100 << 10];
        assert_eq!(*encode_shared(None, &big).unwrap(), *encode_command(None, &big).unwrap());
        assert_eq!(*encode_shared(None, &"again").unwrap(), *encode_command(None, &"again").unwrap());
    }

    #[test]
    fn varints_have_one_spelling() {
        let read = |b: &[u8]| take_varint(&mut &b[..]);
        assert_eq!(read(&[0]), Some(0));
        assert_eq!(read(&[0x7f]), Some(127));
        assert_eq!(read(&[0x80, 0x01]), Some(128));
        assert_eq!(read(&[0x81, 0x00]), None, "1 spelled in two bytes");
        assert_eq!(read(&[0x80, 0x80, 0x00]), None, "0 spelled in three bytes");
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(read(&max), Some(u64::MAX));
        *max.last_mut().unwrap() = 0x02;
        assert_eq!(read(&max), None, "a 65th bit");
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let mut out = [0; 10];
            let len = put_varint(&mut out, 0, v);
            assert_eq!(read(&out[..len]), Some(v));
        }
    }

    #[test]
    fn a_retry_is_answered_from_the_table() {
        let (mut s, id) = table(5, SessionLimits::default());
        assert_eq!(s.admit(6, tag(id, 1, 1)), Admit::Fresh);
        s.record(6, tag(id, 1, 1), Some(vec![42].into()));
        assert_eq!(s.admit(7, tag(id, 1, 1)), Admit::Duplicate(vec![42].into()));
        // Acknowledging 1 (the client now waits for 2 and up) forgets its response.
        assert_eq!(s.admit(8, tag(id, 2, 2)), Admit::Fresh);
        s.record(8, tag(id, 2, 2), Some(vec![43].into()));
        assert_eq!(s.admit(9, tag(id, 1, 1)), Admit::Expired, "acknowledged, forgotten, refused");
        assert_eq!(s.admit(9, tag(99, 1, 1)), Admit::Expired, "unknown session");
    }

    #[test]
    fn a_tag_with_the_wrong_secret_is_refused_and_changes_nothing() {
        let (mut s, id) = table(1, SessionLimits::default());
        s.record(2, tag(id, 1, 1), Some(vec![1].into()));
        let forged = SessionTag { secret: SECRET + 1, ..tag(id, 2, u64::MAX) };
        assert_eq!(s.admit(3, forged), Admit::Expired, "a guessed id without the secret");
        assert!(matches!(s.lookup(SessionTag { secret: 0, ..tag(id, 1, 1) }), Some(Err(Error::SessionExpired))));
        assert_eq!(s.admit(4, tag(id, 1, 1)), Admit::Duplicate(vec![1].into()), "the owner's response is still there");
        assert_eq!(s.admit(4, tag(id, 2, 1)), Admit::Fresh, "the owner's next command still applies");
    }

    #[test]
    fn sessions_expire_by_log_position_and_by_count() {
        let (mut s, a) = table(1, limits(2, 10, 2, u64::MAX));
        let b = s.register(2, SECRET, limits(2, 10, 2, u64::MAX));
        s.record(3, tag(a, 1, 1), Some(vec![1].into()));
        let c = s.register(4, SECRET, limits(2, 10, 2, u64::MAX)); // evicts b, the least recently used
        assert_eq!(s.admit(5, tag(b, 1, 1)), Admit::Expired);
        assert_eq!(s.admit(5, tag(a, 1, 1)), Admit::Duplicate(vec![1].into()));
        assert_eq!(s.admit(14, tag(c, 1, 1)), Admit::Fresh, "untouched for exactly 10 entries");
        assert_eq!(s.admit(15, tag(c, 1, 1)), Admit::Expired, "untouched for 11");
        assert_eq!(s.len(), 0, "a (last active at 3) expired before c");
    }

    #[test]
    fn the_latest_registration_sets_the_limits() {
        let (mut s, a) = table(1, limits(8, 1_000, 8, u64::MAX));
        s.record(2, tag(a, 1, 1), Some(vec![1].into()));
        // A registration proposed by a node configured with a shorter expiry: every
        // replica applies it, so every replica now expires `a` at the same index.
        let b = s.register(3, SECRET, limits(8, 5, 8, u64::MAX));
        assert_eq!(s.admit(7, tag(a, 1, 1)), Admit::Duplicate(vec![1].into()), "untouched for 5");
        assert_eq!(s.admit(8, tag(a, 1, 1)), Admit::Expired, "untouched for 6, under the new limits");
        assert_eq!(s.admit(8, tag(b, 1, 1)), Admit::Fresh);
    }

    #[test]
    fn responses_per_session_are_bounded() {
        let (mut s, id) = table(1, limits(8, 100, 2, u64::MAX));
        for seq in 1..=3 {
            s.record(1 + seq, tag(id, seq, 1), Some(vec![seq as u8].into()));
        }
        assert_eq!(s.admit(5, tag(id, 1, 1)), Admit::Expired, "the oldest was forgotten");
        assert_eq!(s.admit(5, tag(id, 3, 1)), Admit::Duplicate(vec![3].into()));
    }

    #[test]
    fn response_bytes_are_bounded_across_sessions() {
        let l = limits(8, 100, 100, 10);
        let (mut s, a) = table(1, l);
        let b = s.register(2, SECRET, l);
        s.record(3, tag(a, 1, 1), Some(vec![0; 6].into()));
        s.record(4, tag(b, 1, 1), Some(vec![0; 6].into())); // 12 > 10: a, least recently used, goes
        assert_eq!(s.admit(5, tag(a, 2, 1)), Admit::Expired, "evicted for its bytes");
        assert_eq!(s.admit(5, tag(b, 1, 1)), Admit::Duplicate(vec![0; 6].into()));
        s.record(6, tag(b, 2, 1), Some(vec![0; 6].into())); // alone over the budget: its oldest goes
        assert_eq!(s.admit(7, tag(b, 1, 1)), Admit::Expired);
        assert_eq!(s.admit(7, tag(b, 2, 1)), Admit::Duplicate(vec![0; 6].into()));
        assert_eq!(s.bytes, 6);
    }

    /// Over the byte budget, a write evicts the least recently used sessions by walking
    /// the activity order from its front, not by re-keying every session first (which
    /// made every write at the budget rebuild the whole order, 65,536 sessions by
    /// default, on every replica).
    #[test]
    fn the_byte_budget_walks_only_the_front_of_the_order() {
        let l = limits(1_000, 1_000, 100, 1_000);
        let (mut s, a) = table(1, l);
        let ids: Vec<u64> = (2..=100).map(|i| s.register(i, SECRET, l)).collect();
        for (k, &id) in ids.iter().enumerate() {
            s.record(101 + k as u64, tag(id, 1, 1), Some(vec![0; 9].into()));
        }
        s.record(300, tag(a, 1, 1), Some(vec![0; 200].into())); // 1,091 > 1,000: 11 sessions go
        assert_eq!(s.len(), 89);
        assert_eq!(s.admit(301, tag(ids[10], 1, 1)), Admit::Expired, "the 11th least recently used is gone");
        let last = *ids.last().unwrap();
        s.record(301, tag(last, 2, 2), Some(vec![0; 9].into())); // its key is stale now
        s.record(302, tag(a, 2, 1), Some(vec![0; 20].into())); // 1,012 > 1,000: 2 more go
        assert_eq!(s.len(), 87);
        assert_eq!(s.admit(303, tag(ids[12], 1, 1)), Admit::Expired);
        assert_eq!(s.admit(303, tag(ids[13], 1, 1)), Admit::Duplicate(vec![0; 9].into()));
        let behind = &s.live[&last];
        assert!(behind.activity_key < behind.last_active, "a stale key behind the victims was re-keyed");
    }

    #[test]
    fn eviction_follows_activity_not_registration_order() {
        let l = limits(3, 100, 100, 10);
        let (mut s, a) = table(1, l);
        let b = s.register(2, SECRET, l);
        let c = s.register(3, SECRET, l);
        s.record(4, tag(b, 1, 1), Some(vec![0; 2].into()));
        s.record(5, tag(a, 1, 1), Some(vec![0; 2].into()));
        s.record(6, tag(c, 1, 1), Some(vec![0; 8].into())); // 12 > 10: b, used least recently, goes
        assert_eq!(s.admit(7, tag(b, 2, 1)), Admit::Expired);
        assert_eq!(s.admit(7, tag(a, 1, 1)), Admit::Duplicate(vec![0; 2].into()));
        let d = s.register(8, SECRET, l);
        let e = s.register(9, SECRET, l); // full (3): of a (5), c (6) and d (8), a goes
        assert_eq!(s.admit(10, tag(a, 2, 1)), Admit::Expired);
        assert_eq!(s.admit(10, tag(c, 1, 1)), Admit::Duplicate(vec![0; 8].into()));
        assert_eq!(s.admit(10, tag(d, 1, 1)), Admit::Fresh);
        assert_eq!(s.admit(10, tag(e, 1, 1)), Admit::Fresh);
    }

    #[test]
    fn the_table_survives_a_snapshot_and_rejects_corruption() {
        let l = limits(3, 4, 5, 6);
        let (mut s, id) = table(1, l);
        s.record(2, tag(id, 1, 1), Some(vec![7].into()));
        let mut bytes = Vec::new();
        s.write_to(&mut bytes).unwrap();
        bytes.extend_from_slice(b"machine");
        let mut reader = &bytes[..];
        let mut back = Sessions::read_from(&mut reader).unwrap();
        assert_eq!(reader, b"machine", "leaves the reader at the machine's bytes");
        assert_eq!((back.limits, back.bytes), (l, 1), "the limits in force and the byte count come back");
        assert_eq!(back.admit(3, tag(id, 1, 1)), Admit::Duplicate(vec![7].into()));
        let table = bytes.len() - b"machine".len();
        for cut in [0, 5, 16, table - 1] {
            assert!(Sessions::read_from(&mut &bytes[..cut]).is_err(), "a table cut at {cut} of {table} bytes");
        }
        bytes[0] ^= 1;
        assert!(Sessions::read_from(&mut &bytes[..]).is_err());
    }
}
