//! Basic vocabulary of the protocol: terms, log indexes, entries.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::membership::Membership;
use super::shared_bytes::SharedBytes;

/// Identifies one server of the cluster. Never 0 in a valid configuration.
pub type NodeId = u64;

/// A Raft term (§5.1): a logical clock that only moves forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Term(pub u64);

/// A position in the replicated log; the first entry has index 1, and 0 means "before the log".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogIndex(pub u64);

impl Term {
    /// The term after this one.
    ///
    /// # Panics
    /// At `u64::MAX`. The core refuses terms from the wire at or above `guard::TERM_MAX`,
    /// so only a broken invariant gets here; wrapping to 0 would silently wedge the node.
    pub fn next(self) -> Term {
        Term(self.0.checked_add(1).expect("terms stay below guard::TERM_MAX"))
    }
}

impl LogIndex {
    /// The index after this one.
    ///
    /// # Panics
    /// At `u64::MAX`: indexes from the wire are only compared with ours, never advanced
    /// (`Message::check_well_formed` refuses entries that would need it).
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.checked_add(1).expect("log indexes stay far below u64::MAX"))
    }

    /// The index before this one (saturating at 0).
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Appended by every new leader so it can commit an entry of its own term (§5.4.2, §8).
    Noop,
    /// An opaque command for the user's state machine, shared (not copied) by every
    /// message that carries its entry.
    Command(SharedBytes),
    /// A new cluster configuration; it takes effect as soon as it is appended (dissertation §4.1).
    Config(Membership),
}

impl Payload {
    /// An upper bound on the encoded size of an entry carrying this payload (term, index
    /// and MessagePack headers included), used for batch budgets.
    pub fn size_bytes(&self) -> usize {
        const ENTRY_OVERHEAD_BYTES: usize = 32;
        ENTRY_OVERHEAD_BYTES
            + match self {
                Payload::Noop => 1,
                Payload::Command(bytes) => bytes.len() + 5,
                Payload::Config(m) => m.members().map(|id| m.address(id).map_or(0, str::len) + 16).sum::<usize>() + 8,
            }
    }
}

/// One log entry (Figure 2: "each entry contains command for state machine, and term when
/// entry was received by leader").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created this entry.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
    /// What it carries.
    pub payload: Payload,
}

/// The state a server must keep on stable storage before answering any RPC (Figure 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this server has seen.
    pub current_term: Term,
    /// Candidate that received this server's vote in `current_term`, if any.
    pub voted_for: Option<NodeId>,
}

/// The role a server plays (§5.1), plus the pre-vote phase (dissertation §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Answers leaders and candidates; redirects clients.
    Follower,
    /// Asking whether an election could succeed, without bumping its term.
    PreCandidate,
    /// Campaigning in `current_term`.
    Candidate,
    /// Replicating its log to the others.
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Encodes byte vectors as one binary blob rather than a sequence of integers (which
/// MessagePack would spend up to two bytes per byte on).
pub(crate) mod as_bytes {
    use serde::Serializer;
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use std::fmt;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    pub(crate) struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_travel_as_compact_binary() {
        let payload = Payload::Command(vec![0xFF; 1000].into());
        let encoded = rmp_serde::to_vec_named(&payload).unwrap();
        assert!(encoded.len() < 1020, "encoded {} bytes for 1000 bytes of payload", encoded.len());
        let decoded: Payload = rmp_serde::from_slice(&encoded).unwrap();
        assert_eq!(decoded, payload);
    }
}
