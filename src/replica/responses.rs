//! One session's stored responses, by sequence number.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::session::Stored;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_stay_sorted_and_encode_as_a_map() {
        let mut r = Responses::default();
        assert!(r.insert(2, vec![2]).is_none());
        assert!(r.insert(4, vec![4]).is_none());
        assert!(r.insert(3, vec![3]).is_none());
        assert!(r.insert(1, vec![1]).is_none());
        assert_eq!(r.insert(3, vec![33]), Some(vec![3]));
        assert_eq!(r.get(3), Some(&vec![33]));
        assert_eq!(r.get(5), None);
        assert_eq!(r.first_seq(), Some(1));
        assert_eq!(r.pop_first(), Some((1, vec![1])));
        assert_eq!(r.len(), 3);
        let tree: BTreeMap<u64, Stored> = [(2, vec![2]), (3, vec![33]), (4, vec![4])].into();
        let bytes = rmp_serde::to_vec(&r).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec(&tree).unwrap(), "the same bytes a BTreeMap makes");
        assert_eq!(rmp_serde::from_slice::<Responses>(&bytes).unwrap(), r);
    }
}
