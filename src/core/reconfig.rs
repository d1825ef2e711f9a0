//! Membership changes one server at a time (dissertation §4.1), learners that catch up
//! before they vote (§4.2.1), removing the leader (§4.2.2) and leadership transfer (§3.10).

use super::membership::MembershipChange;
use super::types::{LogIndex, NodeId, Payload, Role};
use super::{ProposeError, Raft, Transfer};

impl Raft {
    /// Adds `id` (reachable at `addr`) as a learner; the leader promotes it to voter once
    /// it has caught up. Called again for an existing learner, it resumes that promotion.
    /// The change is done when a committed configuration lists `id` as a voter.
    pub fn add_server(&mut self, id: NodeId, addr: String) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        if self.membership.learners.contains_key(&id) {
            self.pending_promotion = Some(id);
            return Ok(self.membership_index);
        }
        let index = self.propose_membership(MembershipChange::AddLearner(id, addr))?;
        self.pending_promotion = Some(id);
        Ok(index)
    }

    /// Removes voter or learner `id`; done when the configuration without it commits.
    pub fn remove_server(&mut self, id: NodeId) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        let index = self.propose_membership(MembershipChange::Remove(id))?;
        if self.pending_promotion == Some(id) {
            self.pending_promotion = None;
        }
        Ok(index)
    }

    /// Appends one configuration change, if the single-change rules allow it now.
    fn propose_membership(&mut self, change: MembershipChange) -> Result<LogIndex, ProposeError> {
        // Whether the change makes sense at all comes first: it does not change with time.
        let next = self.membership.apply(&change).map_err(ProposeError::InvalidChange)?;
        if !self.committed_in_term() {
            return Err(ProposeError::NotCommittedInTerm);
        }
        if self.membership_index > self.commit_index {
            return Err(ProposeError::ChangeInProgress);
        }
        log::info!("node {}: proposing {change:?}", self.cfg.id);
        Ok(self.append_entry(Payload::Config(next)))
    }

    /// Promotes the pending learner once its log is within one batch of ours.
    pub(super) fn maybe_promote(&mut self, id: NodeId) {
        if self.pending_promotion != Some(id) || !self.membership.learners.contains_key(&id) {
            return;
        }
        let Some(pr) = self.progress.get(&id) else { return };
        let caught_up = pr.match_index.0 + self.cfg.max_append_entries as u64 >= self.log.last_index().0
            && pr.match_index >= self.commit_index;
        if !caught_up || self.transfer.is_some() {
            return;
        }
        if self.propose_membership(MembershipChange::Promote(id)).is_ok() {
            self.pending_promotion = None;
        }
    }

    /// Work that follows a new commit index on the leader.
    pub(super) fn on_commit_advanced(&mut self) {
        debug_assert_eq!(self.role, Role::Leader);
        // A leader removed from the configuration leads until that configuration commits,
        // then steps down (§4.2.2), handing over to the most up-to-date voter.
        let me = self.cfg.id;
        if self.membership_index <= self.commit_index && !self.membership.is_voter(me) {
            let last = self.log.last_index();
            let successor = self
                .progress
                .iter()
                .filter(|(id, p)| self.membership.is_voter(**id) && p.match_index == last)
                .map(|(id, _)| *id)
                .next();
            // Followers learn the new commit index before the leader goes away.
            self.flush_leader();
            self.broadcast_heartbeat();
            if let Some(to) = successor {
                self.send_timeout_now(to);
            }
            log::info!("node {me}: removed from the cluster, stepping down");
            let term = self.hard.current_term;
            self.become_follower(term, None);
            return;
        }
        if let Some(id) = self.pending_promotion {
            self.maybe_promote(id);
        }
    }

    /// Hands leadership to voter `to` (§3.10): stop accepting entries, bring `to` up to
    /// date, then tell it to campaign at once. Aborted after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader(self.leader_id));
        }
        if to == self.cfg.id {
            return Ok(());
        }
        if !self.membership.is_voter(to) {
            return Err(ProposeError::NotAVoter);
        }
        log::info!("node {}: transferring leadership to {to}", self.cfg.id);
        self.transfer = Some(Transfer { to, elapsed_ticks: 0 });
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    /// Sends TimeoutNow to the transfer target once its log matches ours.
    pub(super) fn maybe_send_timeout_now(&mut self, id: NodeId) {
        let target = self.transfer.map(|t| t.to);
        if target != Some(id) {
            return;
        }
        if self.progress.get(&id).is_some_and(|p| p.match_index == self.log.last_index()) {
            self.send_timeout_now(id);
        }
    }
}
