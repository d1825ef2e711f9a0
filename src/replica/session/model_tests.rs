//! The session table against a reference model: the eager table it replaced (activity
//! order re-keyed on every write, responses in a `BTreeMap<u64, Vec<u8>>`). Every replica
//! must decide exactly what the reference decides, and write exactly its snapshot bytes,
//! whatever the operations, limits and snapshot round trips.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::*;
use crate::core::SplitMix64;

#[derive(Clone, Debug, Default, Serialize)]
struct RefSession {
    secret: u64,
    last_active: u64,
    floor: u64,
    responses: BTreeMap<u64, Vec<u8>>,
    #[serde(skip)]
    bytes: u64,
}

impl RefSession {
    fn forget_oldest(&mut self) -> Option<u64> {
        let (seq, r) = self.responses.pop_first()?;
        self.bytes -= r.len() as u64;
        self.floor = self.floor.max(seq.saturating_add(1));
        Some(seq)
    }
}

/// The table as it was before the lazy activity order (ede5207).
#[derive(Default)]
struct Reference {
    live: BTreeMap<u64, RefSession>,
    by_activity: BTreeSet<(u64, u64)>,
    limits: SessionLimits,
    bytes: u64,
}

#[derive(Debug, PartialEq)]
enum RefAdmit {
    Fresh,
    Duplicate(Vec<u8>),
    Expired,
}

impl Reference {
    fn register(&mut self, index: u64, secret: u64, limits: SessionLimits) {
        self.limits = limits;
        self.expire(index);
        while self.live.len() >= self.limits.max_sessions.max(1) {
            let Some(&(_, oldest)) = self.by_activity.first() else { break };
            self.remove(oldest);
        }
        self.live.insert(index, RefSession { secret, last_active: index, floor: 1, ..RefSession::default() });
        self.by_activity.insert((index, index));
        self.enforce_bytes(index);
    }

    fn admit(&mut self, index: u64, tag: SessionTag) -> RefAdmit {
        self.expire(index);
        let Some(session) = self.live.get(&tag.session).filter(|s| s.secret == tag.secret) else {
            return RefAdmit::Expired;
        };
        if let Some(response) = session.responses.get(&tag.seq) {
            return RefAdmit::Duplicate(response.clone());
        }
        if tag.seq < session.floor { RefAdmit::Expired } else { RefAdmit::Fresh }
    }

    fn record(&mut self, index: u64, tag: SessionTag, response: Option<Vec<u8>>) {
        let Some(session) = self.live.get_mut(&tag.session) else { return };
        self.by_activity.remove(&(session.last_active, tag.session));
        session.last_active = index;
        self.by_activity.insert((index, tag.session));
        let before = session.bytes;
        if let Some(response) = response {
            session.bytes += response.len() as u64;
            if let Some(old) = session.responses.insert(tag.seq, response) {
                session.bytes -= old.len() as u64;
            }
        }
        let acked = tag.acked.min(tag.seq);
        while session.responses.first_key_value().is_some_and(|(&seq, _)| seq < acked) {
            session.forget_oldest();
        }
        session.floor = session.floor.max(acked);
        while session.responses.len() > self.limits.max_responses.max(1) {
            session.forget_oldest();
        }
        self.bytes = self.bytes - before + session.bytes;
        self.enforce_bytes(tag.session);
    }

    fn enforce_bytes(&mut self, current: u64) {
        let max = self.limits.max_bytes;
        let mut order = self.by_activity.iter().map(|&(_, id)| id).filter(|&id| id != current);
        let mut victims = Vec::new();
        let mut bytes = self.bytes;
        while bytes > max {
            let Some(id) = order.next() else { break };
            bytes -= self.live[&id].bytes;
            victims.push(id);
        }
        for id in victims {
            self.remove(id);
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

    fn lookup(&self, tag: SessionTag) -> Option<Result<Vec<u8>, ()>> {
        let Some(session) = self.live.get(&tag.session).filter(|s| s.secret == tag.secret) else {
            return Some(Err(()));
        };
        match session.responses.get(&tag.seq) {
            Some(r) => Some(Ok(r.clone())),
            None if tag.seq < session.floor => Some(Err(())),
            None => None,
        }
    }

    fn expire(&mut self, index: u64) {
        while let Some(&(last, id)) = self.by_activity.first() {
            if last.saturating_add(self.limits.expiry_entries) >= index {
                break;
            }
            self.remove(id);
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(s) = self.live.remove(&id) {
            self.by_activity.remove(&(s.last_active, id));
            self.bytes -= s.bytes;
        }
    }

    /// The snapshot bytes the eager table wrote.
    fn write_to(&self) -> Vec<u8> {
        let list: Vec<(&u64, &RefSession)> = self.live.iter().collect();
        let bytes = rmp_serde::to_vec(&(&self.limits, list)).unwrap();
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
        out
    }
}

fn snapshot(s: &Sessions) -> Vec<u8> {
    let mut bytes = Vec::new();
    s.write_to(&mut bytes).unwrap();
    bytes
}

/// One seeded run of random registrations, commands (fresh, retried, acknowledging,
/// forged), lookups and snapshot round trips, under small random limits so that expiry,
/// eviction by count and by bytes, and forgetting all happen often.
fn run(seed: u64, steps: usize) {
    let mut rng = SplitMix64::new(seed);
    let mut r = |n: u64| rng.next_u64() % n;
    let mut s = Sessions::default();
    let mut reference = Reference::default();
    let mut ids: Vec<u64> = Vec::new();
    let mut next_seq: BTreeMap<u64, u64> = BTreeMap::new();
    let mut index = 0u64;
    for step in 0..steps {
        let why = format!("seed={seed} step={step} index={index}");
        index += 1 + r(3);
        match r(100) {
            0..=9 => {
                let l = SessionLimits {
                    max_sessions: 1 + r(6) as usize,
                    expiry_entries: 1 + r(60),
                    max_responses: 1 + r(6) as usize,
                    max_bytes: r(250),
                };
                let secret = r(3);
                s.register(index, secret, l);
                reference.register(index, secret, l);
                ids.push(index);
                next_seq.insert(index, 1);
            }
            10..=84 if !ids.is_empty() => {
                let id = ids[r(ids.len() as u64) as usize];
                let next = next_seq[&id];
                // Mostly the next command; sometimes a retry, a skip or a stale acknowledgement.
                let seq = match r(10) {
                    0..=5 => next,
                    6 | 7 => next.saturating_sub(r(4)).max(1),
                    8 => next + r(3),
                    _ => 1 + r(next + 2),
                };
                let acked = match r(4) {
                    0 => seq,
                    1 => seq.saturating_sub(r(5)).max(1),
                    2 => 1 + r(seq + 3),
                    _ => u64::MAX,
                };
                let secret = if r(20) == 0 { 7 } else { r(3) };
                let t = SessionTag { session: id, secret, seq, acked };
                let (got, want) = (s.admit(index, t), reference.admit(index, t));
                let same = match (&got, &want) {
                    (Admit::Fresh, RefAdmit::Fresh) | (Admit::Expired, RefAdmit::Expired) => true,
                    (Admit::Duplicate(a), RefAdmit::Duplicate(b)) => **a == **b,
                    _ => false,
                };
                assert!(same, "{why}: admit {t:?}: {got:?}, the reference says {want:?}");
                match got {
                    Admit::Fresh => {
                        let len = [0, 1, 5, 22, 23, 40][r(6) as usize];
                        let response: Vec<u8> = (0..len).map(|k| (k as u64 ^ index) as u8).collect();
                        s.record(index, t, Some(Stored::new(&response)));
                        reference.record(index, t, Some(response));
                        next_seq.insert(id, next.max(seq + 1));
                    }
                    Admit::Duplicate(_) => {
                        s.record(index, t, None);
                        reference.record(index, t, None);
                    }
                    Admit::Expired => {}
                }
            }
            85..=89 if !ids.is_empty() => {
                let id = ids[r(ids.len() as u64) as usize];
                let t = SessionTag { session: id, secret: r(3), seq: 1 + r(next_seq[&id] + 1), acked: 1 };
                let got = s.lookup(t).map(|x| x.map(|b| b.to_vec()).map_err(drop));
                assert_eq!(got, reference.lookup(t), "{why}: lookup {t:?}");
            }
            _ => {
                // A snapshot round trip: install what this replica would send.
                let bytes = snapshot(&s);
                s = Sessions::read_from(&mut &bytes[..]).unwrap();
            }
        }
        assert_eq!(s.len(), reference.live.len(), "{why}: live sessions");
        assert_eq!(s.bytes, reference.bytes, "{why}: bytes");
        assert_eq!(snapshot(&s), reference.write_to(), "{why}: snapshot bytes");
        s.check();
    }
}

#[test]
fn the_table_decides_and_encodes_as_the_eager_reference_does() {
    for seed in 0..300 {
        run(seed, 400);
    }
}

/// Snapshot maps the table did not write (repeats, disorder, huge claimed lengths) decode
/// as the `BTreeMap<u64, Vec<u8>>` they replaced decodes them, or fail as it fails.
#[test]
fn responses_decode_odd_maps_as_a_btreemap_does() {
    use crate::replica::responses::Responses;
    let cases: Vec<Vec<u8>> = vec![
        vec![0x82, 5, 0x91, 1, 5, 0x91, 2],          // a repeated key: the last wins
        vec![0x82, 9, 0x91, 1, 3, 0x92, 2, 2],       // keys out of order
        vec![0x80],                                  // empty
        vec![0xDF, 0xFF, 0xFF, 0xFF, 0xFF],          // a map claiming 4 billion pairs
        vec![0x81, 1, 0xDD, 0xFF, 0xFF, 0xFF, 0xFF], // a response claiming 4 billion bytes
        vec![0x81, 1, 0xC4, 2, 7, 8],                // a response as `bin`
        vec![0x81, 0xFF, 0x90],                      // a negative key
        vec![0x81, 1, 0x91, 0xCD, 1, 0],             // a response byte above 255
        vec![0x92, 1, 2],                            // not a map
    ];
    for bytes in cases {
        let got = rmp_serde::from_slice::<Responses>(&bytes);
        let want = rmp_serde::from_slice::<BTreeMap<u64, Vec<u8>>>(&bytes);
        match (got, want) {
            (Ok(got), Ok(want)) => {
                let (got, want) = (rmp_serde::to_vec(&got).unwrap(), rmp_serde::to_vec(&want).unwrap());
                assert_eq!(got, want, "{bytes:x?}: decoded to another map");
            }
            (Err(_), Err(_)) => {}
            (got, want) => panic!("{bytes:x?}: {got:?}, a BTreeMap gives {want:?}"),
        }
    }
}
