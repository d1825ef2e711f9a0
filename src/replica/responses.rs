//! One session's stored responses, by sequence number.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A session's stored responses, sorted by sequence.
///
/// A client numbers its commands in order and acknowledges them in order, so responses
/// join at the back and leave from the front: a deque, not a tree (every replica does
/// this for every write). Writers sharing a session may reach the leader slightly out of
/// order; those responses are inserted in place. Encoded as a map from sequence to
/// response, as a `BTreeMap` would be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Responses {
    queue: VecDeque<(u64, Stored)>,
}

impl Responses {
    /// Stores `response` for `seq`; returns the one it replaces, if any.
    pub fn insert(&mut self, seq: u64, response: Stored) -> Option<Stored> {
        if self.queue.back().is_none_or(|&(last, _)| last < seq) {
            self.queue.push_back((seq, response));
            return None;
        }
        let at = self.queue.partition_point(|&(s, _)| s < seq);
        if self.queue[at].0 == seq {
            return Some(std::mem::replace(&mut self.queue[at].1, response));
        }
        self.queue.insert(at, (seq, response));
        None
    }

    /// The response stored for `seq`.
    pub fn get(&self, seq: u64) -> Option<&Stored> {
        // A new command's sequence is beyond every stored one: the common case, no search.
        if self.queue.back().is_none_or(|&(last, _)| last < seq) {
            return None;
        }
        let at = self.queue.partition_point(|&(s, _)| s < seq);
        self.queue.get(at).filter(|(s, _)| *s == seq).map(|(_, r)| r)
    }

    /// The lowest sequence stored.
    pub fn first_seq(&self) -> Option<u64> {
        self.queue.front().map(|&(s, _)| s)
    }

    /// Removes the response of the lowest sequence.
    pub fn pop_first(&mut self) -> Option<(u64, Stored)> {
        self.queue.pop_front()
    }

    /// How many responses are stored.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// The stored responses, lowest sequence first.
    pub fn values(&self) -> impl Iterator<Item = &Stored> {
        self.queue.iter().map(|(_, r)| r)
    }

    fn check(&self) {
        debug_assert!(self.queue.iter().zip(self.queue.iter().skip(1)).all(|(a, b)| a.0 < b.0), "sorted, no repeats");
    }
}

impl Serialize for Responses {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.queue.iter().map(|(seq, r)| (seq, r)))
    }
}

impl<'de> Deserialize<'de> for Responses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Responses, D::Error> {
        // A map decodes sorted and without repeats, whatever order the bytes had.
        let map = BTreeMap::<u64, Stored>::deserialize(d)?;
        let responses = Responses { queue: map.into_iter().collect() };
        responses.check();
        Ok(responses)
    }
}

/// Bytes of a response kept inline, without a heap allocation.
const INLINE: usize = 22;

/// A response as the table keeps it: MessagePack, or empty if the response could not be
/// encoded (no MessagePack value is empty, so the two never mix). Recording the failure,
/// rather than stopping, keeps every replica going: the encoding fails alike on all.
///
/// Up to [`INLINE`] bytes are kept inline (a number, a flag, a short value: most
/// responses), so every replica records a write's response without allocating; the type
/// is no bigger than a `Vec`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Stored {
    pub fn new(bytes: &[u8]) -> Stored {
        if bytes.len() <= INLINE {
            let mut inline = [0; INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            Stored::Inline { len: bytes.len() as u8, bytes: inline }
        } else {
            Stored::Heap(bytes.into())
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Stored::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Stored::Heap(bytes) => bytes,
        }
    }
}

impl std::ops::Deref for Stored {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl From<Vec<u8>> for Stored {
    fn from(bytes: Vec<u8>) -> Stored {
        Stored::new(&bytes)
    }
}

/// Encoded as a `Vec<u8>` is (a sequence of numbers), so snapshots keep their bytes.
impl Serialize for Stored {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stored, D::Error> {
        Vec::<u8>::deserialize(d).map(Stored::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_responses_are_inline_and_the_type_is_no_bigger_than_a_vec() {
        assert_eq!(std::mem::size_of::<Stored>(), std::mem::size_of::<Vec<u8>>());
        assert!(matches!(Stored::new(&[7; INLINE]), Stored::Inline { .. }));
        assert!(matches!(Stored::new(&[7; INLINE + 1]), Stored::Heap(_)));
        assert_eq!(&*Stored::new(&[7; INLINE + 1]), &[7; INLINE + 1]);
        assert_eq!(&*Stored::new(&[]), &[] as &[u8]);
    }

    #[test]
    fn responses_stay_sorted_and_encode_as_a_map() {
        let mut r = Responses::default();
        let s = |b: &[u8]| Stored::new(b);
        assert!(r.insert(2, s(&[2])).is_none());
        assert!(r.insert(4, s(&[4; 30])).is_none());
        assert!(r.insert(3, s(&[3])).is_none());
        assert!(r.insert(1, s(&[1])).is_none());
        assert_eq!(r.insert(3, s(&[33])), Some(s(&[3])));
        assert_eq!(r.get(3), Some(&s(&[33])));
        assert_eq!(r.get(5), None);
        assert_eq!(r.first_seq(), Some(1));
        assert_eq!(r.pop_first(), Some((1, s(&[1]))));
        assert_eq!(r.len(), 3);
        let tree: BTreeMap<u64, Vec<u8>> = [(2, vec![2]), (3, vec![33]), (4, vec![4; 30])].into();
        let bytes = rmp_serde::to_vec(&r).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec(&tree).unwrap(), "the same bytes a BTreeMap makes");
        assert_eq!(rmp_serde::from_slice::<Responses>(&bytes).unwrap(), r);
    }
}
