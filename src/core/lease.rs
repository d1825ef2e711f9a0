//! Leader-lease reads (dissertation §6.4.1), opt-in with [`super::LeaseReads`].
//!
//! ReadIndex (`reads.rs`) confirms leadership with a heartbeat round per batch of reads.
//! A lease skips that round: each heartbeat round the leader sends is stamped with its tick
//! count, and once a majority of voters (the leader included) has acknowledged a round
//! sent at tick `t`, the leader answers reads at once, at its commit index, until its tick
//! count reaches `t + lease_ticks`.
//!
//! # Why no other leader can commit before the lease ends
//!
//! A server that hears from a leader (a heartbeat, AppendEntries or a snapshot chunk)
//! *promises* (`lease_promised`) to grant no vote for `E = election_ticks` of its own ticks
//! from then, whatever term a request carries, and not to campaign either (its vote for
//! itself would count too), unless the leader itself starts a transfer (see the rules
//! below). Take the first leader elected, in real time, in a term after ours. The voters
//! that elected it overlap the majority that acknowledged our round (see membership
//! below). If the server in both is this leader, it left its term to vote and serves no
//! more reads. Otherwise it voted either after its promise ran out (a restart renews it),
//! which the bound below puts after the lease, or for a transfer, whose TimeoutNow only
//! the leader of the candidate's term sends: this leader, since no other was elected yet,
//! and it has served no lease read since. Later leaders come later still. So while the
//! lease holds, nothing is committed without this leader.
//!
//! **The bound.** Let `T_X` be the real length of node `X`'s tick, with `T_L <= (1 + ρ) T_F`
//! for any two nodes (`ρ` = `max_clock_drift`), and let `s` be the real time the leader
//! stamped round `r` with its tick count `t`.
//! - Follower `F` receives the round at `a_F >= s`. Its tick deadlines are `T_F` apart and no
//!   tick runs before its deadline (the runtime catches up late ones, never early), and
//!   no tick due before `a_F` runs after `F` steps the round (the runtime runs the ticks
//!   due by the time it read its sockets before it steps what it read), but the first may
//!   come right after `a_F`: its `E`-th tick comes no earlier than `a_F + (E - 1) T_F`.
//!   So `F` grants no vote before `s + (E - 1) T_F`. (`E` and the tick length are the
//!   leader's as well: every node must use the same election timeout and tick.)
//! - The leader judges a read at real time `j` against its count `c(j)`, and serves it only
//!   if `c(j) < t + lease_ticks`. Its count runs every deadline up to `j - δ`, where `δ` is
//!   how stale its last look at the clock is (the runtime looks right before it judges
//!   each read, so `δ` is at most one leader tick unless the thread stalls), and the
//!   stamp `t` counts no deadline after `s`. So `(j - δ - s) / T_L < lease_ticks`, i.e.
//!   `j - s < lease_ticks · T_L + δ <= (lease_ticks + 1) · T_L`.
//! - Safe when `(lease_ticks + 1) · T_L <= (E - 1) · T_F`, which holds for
//!   `lease_ticks = floor((E - 1) / (1 + ρ)) - 1` ([`super::LeaseReads::lease_ticks`]).
//!
//! A lease read is linearizable because it is judged at `j`, while no other leader can
//! have committed anything, and it returns a state at least as new as the commit index
//! then (§6.4: the index is valid only once this leader's no-op is committed, so the
//! commit index is current).
//!
//! # What ends a lease (each is a safety rule)
//!
//! - **Stepping down, any term change**: lease state is leader state, dropped with it; a
//!   new leadership starts with no round acknowledged.
//! - **Leadership transfer**: once the leader has sent TimeoutNow in a term, it serves no
//!   lease read for the rest of that term. The target campaigns with
//!   [`super::RequestVote::transfer`] set, which voters grant inside their promise, and a
//!   TimeoutNow may be delayed in the network and arrive at any time, even after the
//!   transfer was abandoned.
//! - **Forced elections that are not transfers**: with lease reads on, `trigger_election`
//!   overrides no lease: its RequestVote has `transfer` unset, so promised voters ignore it,
//!   and a node refuses to campaign that way while its own promise holds
//!   ([`super::ProposeError::LeaseHeld`]): its vote for itself would break it too.
//! - **A skipped clock**: a driver that drops ticks (the runtime, after a stall) calls
//!   [`Raft::on_clock_skipped`]; the leader's tick count then lags real time, so every
//!   round stamped before is forgotten and only rounds sent afterwards give a lease.
//! - **Restarts**: a promise is volatile state, so a server promises again when it starts,
//!   for one election timeout (`since_leader_contact` starts at 0): it cannot know whom it
//!   promised before it crashed.
//! - **Membership changes** need no rule of their own, beyond counting acknowledgements
//!   against the latest configuration, recomputed whenever it or an acknowledgement
//!   changes. Let `L'` be that first leader of a later term. It holds every committed entry
//!   (§5.4) and no entry of a term after ours (it is the first), so its configuration `C'`
//!   is in this leader's log: the latest at `L'`'s election or, if that one was not yet
//!   committed, the one before it (one change at a time, §4.1). After `L'`'s election this
//!   leader commits no further change (that takes acknowledgements from a majority that
//!   overlaps `L'`'s voters, who have left our term), so the configuration it counts in
//!   is `C'` or one step from it, and majorities of configurations one single-server step
//!   apart overlap (§4.1).

use std::collections::VecDeque;

use super::message::RequestVote;
use super::quorum;
use super::types::Role;
use super::{Raft, ReadState};

/// A leader's lease: the heartbeat rounds it sent recently, and how long the acknowledged
/// ones let it serve reads alone.
#[derive(Debug, Default)]
pub(super) struct LeaderLease {
    /// `(first round sent in that tick, tick)`, oldest first: one entry per tick that sent a
    /// round, and only those that could still give a lease (younger than `lease_ticks`).
    /// Invariant: both components strictly increase.
    rounds: VecDeque<(u64, u64)>,
    /// The lease runs while the tick count is below this.
    until: Option<u64>,
    /// This leader sent TimeoutNow in its term: no more lease reads (see the module doc).
    handed_over: bool,
}

/// How this server's linearizable reads were served (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// Served under the leader's lease, with no round trip.
    pub lease: u64,
    /// Confirmed by a ReadIndex heartbeat round (or by a lone voter at once).
    pub read_index: u64,
}

impl Raft {
    /// Whether this server is in lease mode, and its lease in ticks.
    fn lease_ticks(&self) -> Option<u64> {
        self.cfg.lease_reads.map(|l| u64::from(l.lease_ticks(self.cfg.election_ticks)))
    }

    /// With lease reads on: this server heard from a leader (or started) less than an
    /// election timeout ago, and so grants no vote but a transfer's (see the module doc).
    pub(super) fn lease_promised(&self) -> bool {
        self.cfg.lease_reads.is_some() && self.since_leader_contact < self.cfg.election_ticks
    }

    /// Whether a vote request from a higher term is ignored (its term not adopted) because
    /// of a lease. Without lease reads, the lease only keeps disruptive servers out
    /// (dissertation §4.2.3), and any forced election overrides it; with them, the lease is
    /// also a promise a leader serves reads on, and only a transfer that leader started
    /// overrides it.
    pub(super) fn ignores_vote_request(&self, rv: &RequestVote) -> bool {
        if self.cfg.lease_reads.is_some() {
            (self.in_lease() || self.lease_promised()) && !rv.transfer
        } else {
            self.in_lease() && !rv.force
        }
    }

    /// Whether a real vote must be refused to keep this server's promise: it may have
    /// adopted the candidate's term from some other message (a late answer to an old
    /// pre-vote, say) and forgotten its leader, but not its promise.
    pub(super) fn vote_promised_away(&self, rv: &RequestVote) -> bool {
        self.lease_promised() && !rv.transfer
    }

    /// Leader: stamps the heartbeat round just started (`read_seq`) with the tick count.
    pub(super) fn on_round_sent(&mut self) {
        let Some(lease_ticks) = self.lease_ticks() else { return };
        let (seq, now) = (self.read_seq, self.ticks);
        debug_assert_eq!(self.role, Role::Leader);
        let rounds = &mut self.lease.rounds;
        debug_assert!(rounds.back().is_none_or(|&(last, tick)| last < seq && tick <= now), "rounds in send order");
        // Only the first round of a tick matters: a later one of the same tick gives the
        // same lease, and any acknowledgement of it acknowledges a round at least that late.
        if rounds.back().is_none_or(|&(_, tick)| tick < now) {
            rounds.push_back((seq, now));
        }
        while rounds.front().is_some_and(|&(_, tick)| tick + lease_ticks <= now) {
            rounds.pop_front();
        }
        debug_assert!(rounds.len() as u64 <= lease_ticks + 1, "one round per tick of the lease");
    }

    /// Leader: recomputes the lease from the rounds a majority of the latest configuration
    /// acknowledged (after an acknowledgement, or a configuration change: see the module
    /// doc on membership).
    pub(super) fn refresh_lease(&mut self) {
        let Some(lease_ticks) = self.lease_ticks() else { return };
        let me = self.cfg.id;
        let confirmed = quorum::majority_value(&self.membership, |id| {
            if id == me { u64::MAX } else { self.progress.get(&id).map_or(0, |p| p.read_seq_acked) }
        })
        .unwrap_or(0);
        // The latest round at or before the confirmed one: a voter that acknowledged round
        // `c` received a heartbeat sent no earlier than the round `c` was stamped with.
        let rounds = &self.lease.rounds;
        let k = rounds.partition_point(|&(seq, _)| seq <= confirmed);
        self.lease.until = k.checked_sub(1).map(|k| rounds[k].1 + lease_ticks);
    }

    /// Whether a read arriving now may be served under the lease: this server leads, has
    /// committed its term's no-op (before that the commit index may lag, §6.4 step 1), has
    /// not handed leadership over this term, and a majority acknowledged a round recent
    /// enough.
    pub fn lease_holds(&self) -> bool {
        self.role == Role::Leader
            && self.commit_index >= self.term_start_index
            && !self.lease.handed_over
            && self.lease.until.is_some_and(|until| self.ticks < until)
    }

    /// Serves read `ctx` at once at the commit index if the lease holds; returns whether it did.
    pub(super) fn maybe_read_by_lease(&mut self, ctx: u64) -> bool {
        if !self.lease_holds() {
            return false;
        }
        self.ready.reads.push(ReadState { ctx, index: self.commit_index });
        self.read_counts.lease += 1;
        true
    }

    /// The driver's report that its clock skipped ticks (it fell behind and dropped them
    /// instead of catching up): the tick count now lags real time, so a lease measured in
    /// ticks from an earlier round could outlast the followers' promises. Ends the lease;
    /// only rounds sent from now on give a new one.
    pub fn on_clock_skipped(&mut self) {
        if self.lease.until.is_some() || !self.lease.rounds.is_empty() {
            log::info!("node {}: the clock skipped ticks; the read lease ends", self.cfg.id);
        }
        self.lease.rounds.clear();
        self.lease.until = None;
    }

    /// Leader: TimeoutNow is on its way to `to` (§3.10), and so no more lease reads in this
    /// term.
    pub(super) fn send_timeout_now(&mut self, to: super::NodeId) {
        self.lease.handed_over = true;
        self.send(to, super::MessageKind::TimeoutNow);
    }

    /// Leader state for a new leadership, or none after one.
    pub(super) fn reset_lease(&mut self) {
        self.lease = LeaderLease::default();
    }

    /// How this server's linearizable reads were served since it started.
    pub fn read_counts(&self) -> ReadCounts {
        self.read_counts
    }
}
