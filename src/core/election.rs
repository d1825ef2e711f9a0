//! Leader election (§5.2, §5.4.1), pre-vote (dissertation §9.6), check-quorum and the
//! leader lease that keeps disruptive servers out (dissertation §4.2.3, §6.2).

use super::message::{Message, MessageKind, RequestVote};
use super::progress::Progress;
use super::quorum::{self, VoteResult};
use super::types::{NodeId, Payload, Role, Term};
use super::{ProposeError, Raft};

/// Why a server campaigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Campaign {
    /// Its election timer ran out: a pre-vote round first (§9.6).
    PreVote,
    /// Its pre-vote round won: the real election.
    Election,
    /// `trigger_election`: at once, skipping pre-vote (and leases, unless lease reads are on).
    Forced,
    /// The leader's TimeoutNow (§3.10): at once, past every lease.
    Transfer,
}

impl Raft {
    /// Applies the term rules every message obeys (Figure 2, "All Servers"); returns
    /// whether the message should be handled further.
    pub(super) fn on_term(&mut self, from: NodeId, msg: &Message) -> bool {
        let term = msg.term;
        let ours = self.hard.current_term;
        if term > ours {
            match &msg.kind {
                MessageKind::RequestVote(rv) if self.ignores_vote_request(rv) => {
                    log::debug!("node {}: ignoring vote request from {from} in lease", self.cfg.id);
                    if rv.pre_vote {
                        self.send_leader_hint(from);
                    }
                    return false;
                }
                // A hint names the leader of a term; only that leader's messages move us to it.
                MessageKind::LeaderHint { .. } | MessageKind::LeaderQuery => {}
                // A pre-vote asks about a *future* term: nobody adopts it (§9.6).
                MessageKind::RequestVote(rv) if rv.pre_vote => {}
                MessageKind::RequestVoteResponse { pre_vote: true, granted: true } => {}
                MessageKind::AppendEntries(_) | MessageKind::Heartbeat { .. } | MessageKind::TimeoutNow => {
                    self.become_follower(term, Some(from));
                }
                _ => self.become_follower(term, None),
            }
            return true;
        }
        if term < ours {
            match &msg.kind {
                // Tell a stale leader or pre-candidate about the newer term so it steps down.
                MessageKind::AppendEntries(_) | MessageKind::Heartbeat { .. } => {
                    self.send(from, MessageKind::HeartbeatResponse { read_seq: 0 });
                }
                MessageKind::RequestVote(rv) if rv.pre_vote => {
                    self.send(from, MessageKind::RequestVoteResponse { granted: false, pre_vote: true });
                }
                // A learner that lags behind asks at its own (older) term.
                MessageKind::LeaderQuery => self.send_leader_hint(from),
                // A vouch names the leader of the voter's (older) term: it still lets that
                // leader's messages in, and our answer tells it of our term. Without it a
                // voter whose configuration lacks the leader, and whose term passed the
                // leader's (a failed campaign among removed servers), heard nothing from
                // it ever again (found by the lease simulator).
                MessageKind::LeaderHint { leader } => self.on_leader_hint(from, term, *leader),
                _ => {}
            }
            return false;
        }
        true
    }

    /// Starts an election: a pre-vote round first unless forced (§9.6), then a real one.
    pub(super) fn campaign(&mut self, kind: Campaign) {
        debug_assert!(self.is_promotable());
        // Its vote for itself would break a lease it promised (see `lease.rs`); only the
        // leader it promised may release it, by a transfer. A timed-out campaign comes
        // `election_ticks` at least after the leader's last word (the election timer never
        // outruns `since_leader_contact`), and `trigger_election` checks.
        debug_assert!(kind == Campaign::Transfer || !self.lease_promised(), "campaigning inside a promised lease");
        let pre_vote = kind == Campaign::PreVote;
        self.votes.clear();
        let term = if pre_vote {
            self.become_pre_candidate();
            self.hard.current_term.next()
        } else {
            self.become_candidate();
            self.hard.current_term
        };
        // A pre-vote changes nothing, so it counts at once; a real vote counts once durable
        // (see `on_hard_state_persisted`), which a fresh term never is yet. Other voters'
        // answers need our RequestVote, which leaves only after that sync too; so this
        // matters for a lone voter, which would otherwise lead (and send its entries to
        // learners) in a term a crash could make it forget and lead again differently.
        if pre_vote || self.durable_hard == self.hard {
            self.votes.insert(self.cfg.id, true);
        }
        if self.poll_votes(pre_vote) {
            return;
        }
        let rv = RequestVote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
            force: matches!(kind, Campaign::Forced | Campaign::Transfer),
            transfer: kind == Campaign::Transfer,
        };
        let voters: Vec<NodeId> = self.membership.voters.keys().copied().filter(|&id| id != self.cfg.id).collect();
        for id in voters {
            self.send_with_term(id, term, MessageKind::RequestVote(rv.clone()));
        }
    }

    /// Answers RequestVote (§5.2, §5.4.1) or a pre-vote (§9.6).
    pub(super) fn on_request_vote(&mut self, from: NodeId, term: Term, rv: RequestVote) {
        let up_to_date = self.log.is_up_to_date(rv.last_log_index, rv.last_log_term);
        if rv.pre_vote {
            // Would we vote in `term`? Only if it is newer than ours, or it is ours and we
            // could still vote in it, and only for an up-to-date log.
            let can_vote = term > self.hard.current_term
                || (self.hard.voted_for.is_none_or(|v| v == from) && self.leader_id.is_none());
            let granted = can_vote && up_to_date;
            let reply_term = if granted { term } else { self.hard.current_term };
            self.send_with_term(from, reply_term, MessageKind::RequestVoteResponse { granted, pre_vote: true });
            return;
        }
        debug_assert_eq!(term, self.hard.current_term);
        // One vote per term (§5.2), and only for a log at least as up-to-date (§5.4.1).
        let can_vote = self.hard.voted_for == Some(from) || (self.hard.voted_for.is_none() && self.leader_id.is_none());
        let granted = can_vote && up_to_date && !self.vote_promised_away(&rv);
        if granted {
            self.set_hard_state(term, Some(from));
            self.reset_election_timer();
        }
        self.send(from, MessageKind::RequestVoteResponse { granted, pre_vote: false });
    }

    /// Counts a vote; wins or loses the (pre-)election when a majority has spoken.
    pub(super) fn on_request_vote_response(&mut self, from: NodeId, term: Term, granted: bool, pre_vote: bool) {
        let expected = match (self.role, pre_vote) {
            (Role::PreCandidate, true) => self.hard.current_term.next(),
            (Role::Candidate, false) => self.hard.current_term,
            _ => return,
        };
        if term != expected && granted {
            return;
        }
        if self.membership.is_voter(from) {
            self.votes.insert(from, granted);
            self.poll_votes(pre_vote);
        }
    }

    /// Acts on the votes so far; returns whether the round is decided.
    pub(super) fn poll_votes(&mut self, pre_vote: bool) -> bool {
        match quorum::tally(&self.membership, self.votes.iter().map(|(&id, &g)| (id, g))) {
            VoteResult::Won if pre_vote => self.campaign(Campaign::Election),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => {
                let term = self.hard.current_term;
                self.become_follower(term, None);
            }
            VoteResult::Pending => return false,
        }
        true
    }

    /// Leadership transfer's last step (§3.10): campaign at once, past leases.
    pub(super) fn on_timeout_now(&mut self, from: NodeId) {
        if self.is_promotable() && self.role != Role::Leader {
            log::info!("node {}: TimeoutNow from {from}, campaigning", self.cfg.id);
            self.campaign(Campaign::Transfer);
        }
    }

    /// Campaigns now, skipping pre-vote and leases (ExRaft's `trigger_election`).
    /// A no-op on a leader; an error on a server that has no vote.
    ///
    /// With lease reads on, it skips no lease: voters that promised a leader their vote
    /// ignore it, and a server that promised one itself refuses with
    /// [`ProposeError::LeaseHeld`] (its own vote would break the promise; see `lease.rs`).
    /// A live leader is moved with [`Raft::transfer_leadership`] instead.
    pub fn trigger_election(&mut self) -> Result<(), ProposeError> {
        if self.role == Role::Leader {
            return Ok(());
        }
        if !self.is_promotable() {
            return Err(ProposeError::NotAVoter);
        }
        if self.lease_promised() {
            return Err(ProposeError::LeaseHeld);
        }
        self.campaign(Campaign::Forced);
        Ok(())
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let voted_for = if term > self.hard.current_term { None } else { self.hard.voted_for };
        self.set_hard_state(term, voted_for);
        if self.role == Role::Leader {
            self.step_down_leader();
        }
        if self.role != Role::Follower || self.leader_id != leader {
            self.ready.soft_state_changed = true;
        }
        self.role = Role::Follower;
        self.leader_id = leader;
        self.votes.clear();
        self.reset_election_timer();
    }

    fn become_pre_candidate(&mut self) {
        // Neither the term nor the vote changes (§9.6); only the role.
        if self.role == Role::Leader {
            self.step_down_leader();
        }
        self.role = Role::PreCandidate;
        self.leader_id = None;
        self.ready.soft_state_changed = true;
        self.reset_election_timer();
    }

    fn become_candidate(&mut self) {
        debug_assert_ne!(self.role, Role::Leader);
        let term = self.hard.current_term.next();
        self.set_hard_state(term, Some(self.cfg.id));
        self.role = Role::Candidate;
        self.leader_id = None;
        self.ready.soft_state_changed = true;
        self.elections.started += 1;
        self.reset_election_timer();
        log::debug!("node {}: campaigning in {term}", self.cfg.id);
    }

    fn become_leader(&mut self) {
        debug_assert_eq!(self.role, Role::Candidate);
        log::info!("node {}: leader in {}", self.cfg.id, self.hard.current_term);
        self.role = Role::Leader;
        self.leader_id = Some(self.cfg.id);
        self.ready.soft_state_changed = true;
        self.elections.won += 1;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.progress.clear();
        self.reset_lease();
        self.sync_progress_with_membership();
        // A no-op of the new term lets the leader commit, and so learn the commit index
        // and serve reads (§5.4.2, §8).
        self.term_start_index = self.append_entry(Payload::Noop);
    }

    /// Leader-only state goes away with leadership.
    fn step_down_leader(&mut self) {
        self.progress.clear();
        // A lease is this leadership's alone: a later one starts with no round acknowledged.
        self.reset_lease();
        self.transfer = None;
        self.pending_promotion = None;
        self.read_round_wanted = false;
        for read in self.pending_reads.drain(..) {
            self.ready.dropped_reads.push(read.ctx);
        }
    }

    /// Gives every member but this one a progress entry, and drops those of non-members.
    pub(super) fn sync_progress_with_membership(&mut self) {
        let next = self.log.last_index().next();
        let members: Vec<NodeId> = self.membership.members().filter(|&id| id != self.cfg.id).collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            self.progress.entry(id).or_insert_with(|| Progress::new(next));
        }
    }

    /// Leader's tick: check-quorum every election timeout, heartbeats, transfer timeout.
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if let Some(t) = &mut self.transfer {
            t.elapsed_ticks += 1;
            if t.elapsed_ticks >= self.cfg.election_ticks {
                log::info!("node {}: transfer to {} timed out", self.cfg.id, t.to);
                self.transfer = None;
            }
        }
        if self.election_elapsed >= self.cfg.election_ticks {
            self.election_elapsed = 0;
            if !self.check_quorum() {
                return;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// A leader that has not heard from a majority in an election timeout steps down
    /// (dissertation §6.2), so a partitioned leader stops believing it leads.
    fn check_quorum(&mut self) -> bool {
        let me = self.cfg.id;
        let active = quorum::has_majority(&self.membership, |id| {
            id == me || self.progress.get(&id).is_some_and(|p| p.recent_active)
        });
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        if !active {
            log::info!("node {me}: lost contact with a majority, stepping down");
            let term = self.hard.current_term;
            self.become_follower(term, None);
            return false;
        }
        true
    }
}
