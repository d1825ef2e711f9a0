//! A hostile, but not Byzantine, input source: well-formed and malformed Raft messages
//! with random terms and indexes (extremes included) from ids outside the configuration.
//! The simulator mixes them into its network; the decoder fuzz test encodes, mangles and
//! decodes them.

use quorate::core::{
    AppendEntries, AppendEntriesResponse, Entry, InstallSnapshot, InstallSnapshotResponse, LogIndex, Membership,
    Message, MessageKind, Payload, RequestVote, SnapshotMeta, Term,
};

use super::sim::{Rng, Sim};

/// Chance per unit of virtual time that the hostile source sends one message.
pub const INJECT_CHANCE: f64 = 0.05;

/// Sends one hostile message to a random live server that is in its own configuration. A
/// server with none (a `join()` server being added) must take a leader's word from
/// anyone, by design: the cluster secret, not the core, keeps forgers from it. (One that
/// has left its configuration by the time the message arrives is fair game: it hears only
/// the leaders it knows.)
pub fn inject(sim: &mut Sim) {
    let targets: Vec<u64> = sim
        .live_ids()
        .into_iter()
        .filter(|&id| sim.nodes[&id].raft().is_some_and(|r| r.membership().contains(id)))
        .collect();
    let Some(to) = sim.rng.pick(&targets) else { return };
    let raft = sim.nodes[&to].raft().expect("live");
    let (near_term, near_index) = (raft.current_term().0, raft.log().last_index().0);
    let from = sim.rng.between(*HOSTILE_IDS.start(), *HOSTILE_IDS.end());
    let msg = message(&mut sim.rng, near_term, near_index);
    sim.inject(from, to, msg);
}

/// Ids the hostile source speaks as: never a member of any simulated configuration.
pub const HOSTILE_IDS: std::ops::RangeInclusive<u64> = 1000..=1007;

/// A number from the wire: small, near a power of two, or at the edge of `u64`.
pub fn wild(rng: &mut Rng) -> u64 {
    match rng.between(0, 5) {
        0 => rng.between(0, 8),
        1 => rng.between(0, 1000),
        2 => 1u64 << rng.between(0, 63),
        3 => u64::MAX - rng.between(0, 2),
        4 => u64::MAX / 2 + rng.between(0, 2) - 1,
        _ => rng.next_u64(),
    }
}

/// A term somewhat above `near` (plausible) or wild.
pub fn term(rng: &mut Rng, near: u64) -> Term {
    Term(if rng.chance(0.5) { near.saturating_add(rng.between(0, 3)) } else { wild(rng) })
}

fn index(rng: &mut Rng, near: u64) -> LogIndex {
    LogIndex(if rng.chance(0.5) { near.saturating_add(rng.between(0, 3)).saturating_sub(1) } else { wild(rng) })
}

/// A random message whose numbers are near `(term, index)` or wild.
pub fn message(rng: &mut Rng, near_term: u64, near_index: u64) -> Message {
    let t = term(rng, near_term);
    let kind = match rng.between(0, 8) {
        0 => MessageKind::RequestVote(RequestVote {
            last_log_index: index(rng, near_index),
            last_log_term: Term(t.0.saturating_sub(rng.between(0, 1))),
            pre_vote: rng.chance(0.5),
            force: rng.chance(0.5),
            // No draw of its own, so the seeds replay the histories they did before the
            // field existed (a non-member's vote request is dropped at the door anyway).
            transfer: false,
        }),
        1 => MessageKind::RequestVoteResponse { granted: rng.chance(0.8), pre_vote: rng.chance(0.5) },
        2 => {
            let prev = index(rng, near_index);
            let count = rng.between(0, 3);
            let entries = (1..=count)
                .map(|k| Entry {
                    term: t,
                    index: LogIndex(prev.0.wrapping_add(k)),
                    payload: Payload::Command(rng.next_u64().to_le_bytes().to_vec().into()),
                })
                .collect();
            MessageKind::AppendEntries(AppendEntries {
                prev_log_index: prev,
                prev_log_term: Term(t.0.saturating_sub(rng.between(0, 1))),
                entries,
                leader_commit: index(rng, near_index),
            })
        }
        3 => MessageKind::AppendEntriesResponse(AppendEntriesResponse {
            success: rng.chance(0.5),
            index: index(rng, near_index),
            conflict_term: rng.chance(0.5).then(|| term(rng, near_term)),
            conflict_index: index(rng, near_index),
        }),
        4 => MessageKind::Heartbeat { commit: index(rng, near_index), read_seq: wild(rng) },
        5 => MessageKind::HeartbeatResponse { read_seq: wild(rng) },
        6 => {
            let voters: Vec<_> = (0..rng.between(0, 2)).map(|_| (wild(rng), "x".to_string())).collect();
            let meta = SnapshotMeta {
                index: index(rng, near_index),
                term: Term(t.0.saturating_sub(rng.between(0, 1))),
                membership: Membership::with_voters(voters),
            };
            let data = vec![rng.next_u64() as u8; rng.between(0, 16) as usize];
            let (size, offset) = (wild(rng), if rng.chance(0.5) { 0 } else { wild(rng) });
            MessageKind::InstallSnapshot(InstallSnapshot { meta, size, offset, attempt: wild(rng) as u32, data })
        }
        7 => MessageKind::InstallSnapshotResponse(InstallSnapshotResponse {
            index: index(rng, near_index),
            success: rng.chance(0.5),
            next_offset: wild(rng),
            done: rng.chance(0.5),
            attempt: wild(rng) as u32,
        }),
        _ => MessageKind::TimeoutNow,
    };
    Message { term: t, kind }
}

/// Mangles `bytes` a little: flips, truncates, extends or splices.
pub fn mangle(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.between(1, 4) {
        match rng.between(0, 4) {
            0 if !bytes.is_empty() => {
                let k = rng.between(0, bytes.len() as u64 - 1) as usize;
                bytes[k] ^= 1 << rng.between(0, 7);
            }
            1 if !bytes.is_empty() => {
                let k = rng.between(0, bytes.len() as u64 - 1) as usize;
                bytes.truncate(k);
            }
            2 => bytes.push(rng.next_u64() as u8),
            3 if !bytes.is_empty() => {
                let k = rng.between(0, bytes.len() as u64 - 1) as usize;
                bytes[k] = [0x00, 0x7f, 0x80, 0xc0, 0xcc, 0xcf, 0xdc, 0xdd, 0xff][rng.between(0, 8) as usize];
            }
            _ => {}
        }
    }
}
