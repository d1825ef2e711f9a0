//! The safety properties of Raft (Figure 3), checked after every simulator step.

use std::collections::{HashMap, HashSet};

use quorate::core::{Entry, LogIndex, NodeId, Payload, Raft, Role, Term};

use super::clients::{Outcome, Refusal};

/// A short fingerprint of an entry's payload, so the checker need not keep payloads.
pub fn fingerprint(payload: &Payload) -> u64 {
    let mut h = Fnv::default();
    match payload {
        Payload::Noop => h.write(&[0]),
        Payload::Command(bytes) => {
            h.write(&[1]);
            h.write(bytes);
        }
        Payload::Config(m) => {
            h.write(&[2]);
            for (id, addr) in m.voters.iter().chain(m.learners.iter()) {
                h.write(&id.to_le_bytes());
                h.write(addr.as_bytes());
            }
            h.write(&(m.voters.len() as u64).to_le_bytes());
        }
    }
    h.0
}

/// FNV-1a, enough for fingerprints.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// What was committed at one index, as first observed.
#[derive(Clone, Copy, Debug)]
struct Committed {
    term: Term,
    fingerprint: u64,
    /// The lowest current term of any server seen holding it committed: the committing
    /// leader sees it first, so this is the term in which it became committed, or later.
    commit_term: Term,
}

/// Cluster-wide memory of what every server has done, to check the properties against.
#[derive(Default)]
pub struct Checker {
    /// Election safety: the leader of each term.
    leaders: HashMap<Term, NodeId>,
    /// Log matching: (index, term) -> (fingerprint, term of the previous entry).
    entries: HashMap<(LogIndex, Term), (u64, Term)>,
    /// Committed entries, by index (position 0 is index 1).
    committed: Vec<Committed>,
    /// The committed commands in log order, each with the state's hash after it: the one
    /// state sequence every server's machine must follow (§5.4.3).
    chain: Vec<(u64, u64)>,
    /// Where each committed command sits: (its position in `chain`, 1-based; its index).
    placed: HashMap<u64, (u64, LogIndex)>,
    /// Commands whose writer was told, for certain, that they were not applied.
    refused: HashSet<u64>,
    /// The most commands any acknowledged write had seen applied: a read issued after that
    /// acknowledgement must see at least as many (linearizability).
    pub acked_floor: u64,
    /// The most commands a finished read saw: a read issued after it must see as many.
    pub read_floor: u64,
    /// Writes issued and not yet answered (each must be answered exactly once).
    pub writes_outstanding: HashSet<u64>,
    /// Reads issued and not yet answered.
    pub reads_outstanding: HashSet<u64>,
    /// Session registrations and session write attempts issued and not yet answered.
    pub registrations_outstanding: HashSet<u64>,
    pub attempts_outstanding: HashSet<u64>,
    /// (session, sequence) of every tagged command committed: a later entry with the same
    /// tag is a retry, which the session table answers without applying (§6.3).
    tags_applied: HashSet<(u64, u64)>,
    /// Committed entries that were retries of an applied command, and so not applied.
    pub duplicates_skipped: u64,
    /// Writes answered `Ok`.
    acked: HashSet<u64>,
    /// Reads served.
    served: HashSet<u64>,
    /// Answers checked.
    pub writes_acked: u64,
    pub writes_refused: u64,
    pub writes_indeterminate: u64,
    pub reads_checked: u64,
    pub reads_failed: u64,
}

/// Per-server memory the checker needs between steps.
#[derive(Clone, Debug, Default)]
pub struct NodeCheck {
    /// Commit index at the previous check (this lifetime).
    pub commit_index: LogIndex,
    /// The term in which this server was last checked as a new leader.
    pub leader_term: Option<Term>,
}

impl Checker {
    /// Checks one server after a step. `log_changed_from` comes from its last `Ready`.
    pub fn check_node(&mut self, raft: &Raft, seen: &mut NodeCheck, log_changed_from: Option<LogIndex>) {
        raft.check_invariants();
        let id = raft.id();
        assert_eq!(raft.anomalies(), 0, "node {id} was asked to overwrite a committed entry");
        let term = raft.current_term();
        if let Some(from) = log_changed_from {
            assert!(
                from > seen.commit_index,
                "node {id}: log changed at {from} at or below its commit {}",
                seen.commit_index
            );
            self.check_log_matching(raft, from);
        }
        assert!(raft.commit_index() >= seen.commit_index, "node {id}: commit index went back");
        self.check_commits(raft, seen);
        if raft.role() == Role::Leader {
            let leader = *self.leaders.entry(term).or_insert(id);
            assert_eq!(leader, id, "election safety: two leaders in {term}");
            if seen.leader_term != Some(term) {
                seen.leader_term = Some(term);
                self.check_leader_completeness(raft);
            }
        }
    }

    /// Log matching (§5.3): the same index and term imply the same entry and the same
    /// previous term, which by induction gives identical prefixes.
    fn check_log_matching(&mut self, raft: &Raft, from: LogIndex) {
        let log = raft.log();
        let mut index = from;
        while let Some(entry) = log.get(index) {
            let prev_term = log.term_at(index.prev()).expect("contiguous log");
            let fp = fingerprint(&entry.payload);
            let known = *self.entries.entry((index, entry.term)).or_insert((fp, prev_term));
            assert_eq!(known, (fp, prev_term), "log matching: node {} differs at {index} {}", raft.id(), entry.term);
            index = index.next();
        }
    }

    fn check_commits(&mut self, raft: &Raft, seen: &mut NodeCheck) {
        let term = raft.current_term();
        let mut index = seen.commit_index.next();
        let point = raft.log().snapshot_index();
        if index <= point {
            // Committed by installing a snapshot: its point must be the committed entry.
            let c = self.committed.get(point.0 as usize - 1).expect("a snapshot of what some server committed");
            assert_eq!(Some(c.term), raft.log().term_at(point), "node {}: snapshot at {point} differs", raft.id());
            index = point.next();
        }
        while index <= raft.commit_index() {
            let entry = raft.log().get(index).expect("committed entries are in the log");
            self.record_commit(raft.id(), entry, term);
            index = index.next();
        }
        seen.commit_index = raft.commit_index();
    }

    fn record_commit(&mut self, id: NodeId, entry: &Entry, observer_term: Term) {
        let fp = fingerprint(&entry.payload);
        let pos = (entry.index.0 - 1) as usize;
        if let Some(c) = self.committed.get_mut(pos) {
            assert_eq!((c.term, c.fingerprint), (entry.term, fp), "node {id}: committed {} differs", entry.index);
            c.commit_term = c.commit_term.min(observer_term);
            return;
        }
        assert_eq!(pos, self.committed.len(), "node {id}: commit gap before {}", entry.index);
        self.committed.push(Committed { term: entry.term, fingerprint: fp, commit_term: observer_term });
        if let Payload::Command(bytes) = &entry.payload
            && let Some(body) = quorate::replica::command_body(bytes)
        {
            if let Some(tag) = quorate::replica::command_tag(bytes)
                && !self.tags_applied.insert((tag.session, tag.seq))
            {
                self.duplicates_skipped += 1;
                return;
            }
            let cmd: u64 = rmp_serde::from_slice(body).expect("simulated commands are u64s");
            assert!(!self.refused.contains(&cmd), "command {cmd} committed at {} after a certain refusal", entry.index);
            let mut h = Fnv(self.chain.last().map_or(Fnv::default().0, |&(_, h)| h));
            h.write(&cmd.to_le_bytes());
            self.chain.push((cmd, h.0));
            let previous = self.placed.insert(cmd, (self.chain.len() as u64, entry.index));
            assert!(previous.is_none(), "command {cmd} committed twice");
        }
    }

    /// Leader completeness (§5.4): a new leader holds every entry committed in an earlier term.
    fn check_leader_completeness(&self, raft: &Raft) {
        for (pos, c) in self.committed.iter().enumerate() {
            if c.commit_term >= raft.current_term() {
                continue;
            }
            let index = LogIndex(pos as u64 + 1);
            if index <= raft.log().snapshot_index() {
                continue; // compacted into a snapshot, whose point was checked on commit
            }
            let held = raft.log().get(index).map(|e| (e.term, fingerprint(&e.payload)));
            assert_eq!(
                held,
                Some((c.term, c.fingerprint)),
                "leader completeness: leader {} of {} lacks committed {index}",
                raft.id(),
                raft.current_term()
            );
        }
    }

    /// State machine safety (§5.4.3): a server's machine is in the state the committed
    /// commands lead to, after exactly `count` of them.
    pub fn check_machine(&self, id: NodeId, count: u64, hash: u64) {
        assert!(
            self.is_state(count, hash),
            "state machine safety: node {id} is in no committed state ({count} commands)"
        );
    }

    fn is_state(&self, count: u64, hash: u64) -> bool {
        match count {
            0 => hash == Fnv::default().0,
            k => self.chain.get(k as usize - 1).is_some_and(|&(_, h)| h == hash),
        }
    }

    /// Checks one client answer against what the cluster committed.
    pub fn check_outcome(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Write { cmd, .. } => {
                assert!(self.writes_outstanding.remove(cmd), "write of {cmd} answered twice, or never issued");
            }
            Outcome::Read { id, .. } | Outcome::ReadFailed { id, .. } => {
                assert!(self.reads_outstanding.remove(id), "read {id} answered twice, or never issued");
            }
            Outcome::Registered { id, .. } => {
                assert!(self.registrations_outstanding.remove(id), "registration {id} answered twice, or never issued");
            }
            Outcome::SessionWrite { attempt, .. } => {
                assert!(self.attempts_outstanding.remove(attempt), "attempt {attempt} answered twice, or never issued");
            }
        }
        match outcome {
            Outcome::Write { cmd, result: Ok((answered, count, hash)) }
            | Outcome::SessionWrite { cmd, result: Ok((answered, count, hash)), .. } => {
                // An Ok names the entry that produced it: our command, applied exactly
                // where the committed log has it.
                assert_eq!(answered, cmd, "the write of {cmd} was answered with the response to {answered}");
                let placed = self.placed.get(cmd).copied();
                let Some((position, _)) = placed else { panic!("write of {cmd} acknowledged but not committed") };
                assert_eq!(
                    position, *count,
                    "write of {cmd}: answered after {count} commands, committed as {position}"
                );
                assert!(self.is_state(*count, *hash), "write of {cmd}: its response is from no committed state");
                self.acked_floor = self.acked_floor.max(*count);
                self.acked.insert(*cmd);
                self.writes_acked += 1;
            }
            Outcome::Write { cmd, result: Err(Refusal::Certain(why)) } => {
                let placed = self.placed.get(cmd);
                assert!(placed.is_none(), "write of {cmd} refused for certain ({why}) but committed at {placed:?}");
                self.refused.insert(*cmd);
                self.writes_refused += 1;
            }
            Outcome::Write { result: Err(Refusal::Indeterminate(_)), .. } => self.writes_indeterminate += 1,
            Outcome::Read { id, node, floor, count, hash } => {
                assert!(
                    count >= floor,
                    "stale read on node {node}: saw {count} commands, {floor} were acknowledged or read"
                );
                assert!(self.is_state(*count, *hash), "read on node {node} saw no committed state");
                self.read_floor = self.read_floor.max(*count);
                self.served.insert(*id);
                self.reads_checked += 1;
            }
            Outcome::ReadFailed { .. } => self.reads_failed += 1,
            Outcome::Registered { .. } => {}
            // One attempt's refusal says nothing of the others'; but no session expires
            // in these runs, so a refusal for expiry means the table lost a session.
            Outcome::SessionWrite { cmd, result: Err(why), .. } => {
                let why = format!("{why:?}");
                assert!(!why.contains("session expired"), "session write of {cmd}: {why}");
                self.writes_indeterminate += 1;
            }
        }
    }

    /// The floor a read issued now must reach: every acknowledged write, and every state a
    /// finished read has seen (linearizability orders reads after reads too).
    pub fn read_floor_now(&self) -> u64 {
        self.acked_floor.max(self.read_floor)
    }

    /// Whether the write of `cmd` was answered `Ok`.
    pub fn is_acked(&self, cmd: u64) -> bool {
        self.acked.contains(&cmd)
    }

    /// Whether read `id` was served.
    pub fn is_served(&self, id: u64) -> bool {
        self.served.contains(&id)
    }

    /// Panics if any request was never answered.
    pub fn check_all_answered(&self) {
        assert!(self.writes_outstanding.is_empty(), "writes never answered: {:?}", self.writes_outstanding);
        assert!(self.reads_outstanding.is_empty(), "reads never answered: {:?}", self.reads_outstanding);
        assert!(self.registrations_outstanding.is_empty(), "registrations never answered");
        assert!(self.attempts_outstanding.is_empty(), "session writes never answered: {:?}", self.attempts_outstanding);
    }

    /// Whether the writer of `cmd` was told, for certain, that it was not applied.
    pub fn is_refused(&self, cmd: u64) -> bool {
        self.refused.contains(&cmd)
    }

    /// The index of committed command `cmd`, if it is committed.
    pub fn index_of(&self, cmd: u64) -> Option<LogIndex> {
        self.placed.get(&cmd).map(|&(_, index)| index)
    }

    /// Highest index known committed anywhere.
    pub fn max_committed(&self) -> LogIndex {
        LogIndex(self.committed.len() as u64)
    }
}
