//! The replicated state: a map of binary keys to binary values, its write commands (each
//! one Raft log entry, decided entirely inside `apply`), and the reads served from it.

use std::collections::BTreeMap;

use quorate::StateMachine;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::resp::{self, ARG_BYTES_MAX};

/// The largest value APPEND may build (Redis refuses strings past `proto-max-bulk-len`);
/// the same as the largest argument, so every stored value can be sent back in one bulk
/// string that this server's own parser would accept.
pub const VALUE_BYTES_MAX: usize = ARG_BYTES_MAX;

/// The replicated map. Keys and values are byte strings, serialized as MessagePack binary
/// (not as arrays of integers) in snapshots.
#[derive(Clone, Default, Debug, Serialize, Deserialize)]
pub struct Store {
    #[serde(with = "bytes_map")]
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// When a SET takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetWhen {
    Always,
    /// `NX`: only if the key is absent.
    Absent,
    /// `XX`: only if the key is present.
    Present,
}

/// A write: one log entry. Everything it does is decided in [`Store::apply`], from the
/// state and the command alone, so every node computes the same state and answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Write {
    /// `SET key value [NX|XX] [GET]`.
    Set { key: ByteBuf, value: ByteBuf, when: SetWhen, get: bool },
    /// `DEL key...`: answers how many existed.
    Del(Vec<ByteBuf>),
    /// `INCR`, `INCRBY`, `DECR`, `DECRBY`: the key's decimal integer plus `by`.
    IncrBy { key: ByteBuf, by: i64 },
    /// `MSET key value...`.
    MSet(Vec<(ByteBuf, ByteBuf)>),
    /// `APPEND key value`: answers the new length.
    Append { key: ByteBuf, value: ByteBuf },
    /// `CAS key expected new`: sets `new` only if the key holds exactly `expected`.
    Cas { key: ByteBuf, expected: ByteBuf, new: ByteBuf },
    /// `FLUSHALL`, `FLUSHDB`.
    FlushAll,
}

/// A write's answer, turned into a RESP reply by [`Answer::encode`].
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Ok,
    Nil,
    Int(i64),
    Bulk(ByteBuf),
    /// An error reply's text (with its code), e.g. `ERR value is not an integer or out of
    /// range`: the command was applied and changed nothing.
    Error(String),
}

impl Answer {
    /// Appends this answer as a RESP reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Answer::Ok => out.extend_from_slice(resp::OK),
            Answer::Nil => out.extend_from_slice(resp::NIL),
            Answer::Int(n) => resp::int(out, *n),
            Answer::Bulk(value) => resp::bulk(out, Some(value)),
            Answer::Error(text) => resp::error(out, text),
        }
    }
}

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

impl StateMachine for Store {
    type Command = Write;
    type Response = Answer;

    fn apply(&mut self, command: Write) -> Answer {
        match command {
            Write::Set { key, value, when, get } => self.set(key.into_vec(), value.into_vec(), when, get),
            Write::Del(keys) => {
                Answer::Int(keys.iter().filter(|k| self.map.remove(k.as_slice()).is_some()).count() as i64)
            }
            Write::IncrBy { key, by } => self.incr_by(key.into_vec(), by),
            Write::MSet(pairs) => {
                for (key, value) in pairs {
                    self.map.insert(key.into_vec(), value.into_vec());
                }
                Answer::Ok
            }
            Write::Append { key, value } => {
                let current = self.map.get(key.as_slice()).map_or(0, Vec::len);
                if current + value.len() > VALUE_BYTES_MAX {
                    return Answer::Error(format!("ERR string exceeds maximum allowed size ({VALUE_BYTES_MAX} bytes)"));
                }
                let stored = self.map.entry(key.into_vec()).or_default();
                stored.extend_from_slice(&value);
                Answer::Int(stored.len() as i64)
            }
            Write::Cas { key, expected, new } => match self.map.get_mut(key.as_slice()) {
                Some(value) if *value == *expected => {
                    *value = new.into_vec();
                    Answer::Int(1)
                }
                _ => Answer::Int(0),
            },
            Write::FlushAll => {
                self.map.clear();
                Answer::Ok
            }
        }
    }

    quorate::serde_snapshots!();
}

impl Store {
    fn set(&mut self, key: Vec<u8>, value: Vec<u8>, when: SetWhen, get: bool) -> Answer {
        let old = self.map.get(&key);
        let applies = match when {
            SetWhen::Always => true,
            SetWhen::Absent => old.is_none(),
            SetWhen::Present => old.is_some(),
        };
        let answer = match (get, old) {
            (true, Some(old)) => Answer::Bulk(ByteBuf::from(old.clone())),
            (true, None) => Answer::Nil,
            (false, _) if applies => Answer::Ok,
            (false, _) => Answer::Nil,
        };
        if applies {
            self.map.insert(key, value);
        }
        answer
    }

    fn incr_by(&mut self, key: Vec<u8>, by: i64) -> Answer {
        let current = match self.map.get(&key) {
            None => 0,
            Some(value) => match resp::parse_i64(value) {
                Some(n) => n,
                None => return Answer::Error(NOT_AN_INTEGER.into()),
            },
        };
        match current.checked_add(by) {
            Some(n) => {
                self.map.insert(key, n.to_string().into_bytes());
                Answer::Int(n)
            }
            None => Answer::Error("ERR increment or decrement would overflow".into()),
        }
    }
}

/// A read: served from a node's state by `client.read` (linearizable, on the leader) or
/// `client.read_local`, never through the log.
#[derive(Debug)]
pub enum Read {
    Get(Vec<u8>),
    MGet(Vec<Vec<u8>>),
    Exists(Vec<Vec<u8>>),
    Strlen(Vec<u8>),
    DbSize,
}

impl Read {
    /// Appends this read's reply, computed from `store`.
    pub fn answer(&self, store: &Store, out: &mut Vec<u8>) {
        match self {
            Read::Get(key) => resp::bulk(out, store.map.get(key).map(Vec::as_slice)),
            Read::MGet(keys) => {
                resp::array(out, keys.len());
                for key in keys {
                    resp::bulk(out, store.map.get(key).map(Vec::as_slice));
                }
            }
            Read::Exists(keys) => resp::int(out, keys.iter().filter(|k| store.map.contains_key(*k)).count() as i64),
            Read::Strlen(key) => resp::int(out, store.map.get(key).map_or(0, Vec::len) as i64),
            Read::DbSize => resp::int(out, store.map.len() as i64),
        }
    }
}

/// Serializes the map's keys and values as MessagePack binary strings.
mod bytes_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(map: &BTreeMap<Vec<u8>, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (Bytes::new(k), Bytes::new(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, D::Error> {
        let map = BTreeMap::<ByteBuf, ByteBuf>::deserialize(d)?;
        Ok(map.into_iter().map(|(k, v)| (k.into_vec(), v.into_vec())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> ByteBuf {
        ByteBuf::from(s.as_bytes().to_vec())
    }

    #[test]
    fn writes_answer_like_redis() {
        let mut s = Store::default();
        let set = |key, value, when, get| Write::Set { key: b(key), value: b(value), when, get };
        assert_eq!(s.apply(set("k", "1", SetWhen::Present, false)), Answer::Nil);
        assert_eq!(s.apply(set("k", "1", SetWhen::Absent, false)), Answer::Ok);
        assert_eq!(s.apply(set("k", "2", SetWhen::Absent, true)), Answer::Bulk(b("1")));
        assert_eq!(s.apply(set("k", "3", SetWhen::Always, true)), Answer::Bulk(b("1")));
        assert_eq!(s.apply(Write::IncrBy { key: b("k"), by: 4 }), Answer::Int(7));
        assert_eq!(
            s.apply(Write::IncrBy { key: b("k"), by: i64::MAX }),
            Answer::Error("ERR increment or decrement would overflow".into())
        );
        assert_eq!(s.apply(Write::Append { key: b("k"), value: b("x") }), Answer::Int(2));
        assert_eq!(s.apply(Write::IncrBy { key: b("k"), by: 1 }), Answer::Error(NOT_AN_INTEGER.into()));
        assert_eq!(s.apply(Write::Cas { key: b("k"), expected: b("7"), new: b("8") }), Answer::Int(0));
        assert_eq!(s.apply(Write::Cas { key: b("k"), expected: b("7x"), new: b("8") }), Answer::Int(1));
        assert_eq!(s.apply(Write::Del(vec![b("k"), b("k"), b("nope")])), Answer::Int(1));
        assert_eq!(s.apply(Write::MSet(vec![(b("a"), b("1")), (b("b"), b("2"))])), Answer::Ok);
        assert_eq!(s.map.len(), 2);
        assert_eq!(s.apply(Write::FlushAll), Answer::Ok);
        assert!(s.map.is_empty());
    }

    #[test]
    fn snapshots_round_trip_binary_keys_and_values() {
        let mut s = Store::default();
        s.map.insert(vec![0, 255, b'\r', b'\n'], vec![1, 2, 3]);
        let snapshot = s.snapshot().expect("snapshots");
        let mut bytes = Vec::new();
        snapshot.write_to(&mut bytes).unwrap();
        let mut restored = Store::default();
        restored.restore(&mut &bytes[..]).unwrap();
        assert_eq!(restored.map, s.map);
    }
}
