//! The core's door: which messages it acts on at all.
//!
//! The transport authenticates a *cluster* (everyone holding the secret), not a sender
//! id, and a cluster without a secret authenticates nobody. So the core trusts no sender
//! id and no number from the wire: before [`Raft::step`] dispatches, [`Raft::screen`]
//! drops (and counts) messages from servers outside the configuration, forced elections
//! that do not come from this term's leader, and values that could only overflow or
//! wrap our arithmetic. Each refusal is counted in [`Refused`] and logged (a warning at
//! the 1st, 2nd, 4th... refusal, so a flood cannot flood the log); the protocol never sees
//! the message.

use super::Raft;
use super::message::{Message, MessageKind};
use super::types::{NodeId, Term};

/// Terms at or above this are refused outright. Terms grow by one per election, so no
/// honest cluster gets near it, and every `Term::next` on an accepted term has room.
pub const TERM_MAX: u64 = u64::MAX / 2;

/// Most a message's term may lie above ours. Pre-vote (dissertation §9.6) means a term
/// only grows when a majority thought an election could win; 2^32 of those is more than
/// a century of elections at one every second, while a forged `u64::MAX`-ish term (which
/// would otherwise wedge the cluster at a term it can never leave) is refused.
pub const TERM_JUMP_MAX: u64 = 1 << 32;

/// How many messages the core dropped at its door, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// From an id outside the latest configuration, where the protocol needs no exception.
    pub non_member: u64,
    /// A term beyond [`TERM_MAX`] or more than [`TERM_JUMP_MAX`] above ours.
    pub absurd_term: u64,
    /// A TimeoutNow that is not this term's leader handing over (§3.10).
    pub forced_election: u64,
    /// Numbers that answer nothing we sent, or a message of a shape the protocol rules out.
    pub malformed: u64,
}

impl Refused {
    /// All refusals together.
    pub fn total(&self) -> u64 {
        self.non_member + self.absurd_term + self.forced_election + self.malformed
    }
}

/// Most servers outside our configuration we keep a voter's vouch for.
const VOUCHED_MAX: usize = 8;

/// Why [`Raft::screen`] dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    NonMember,
    AbsurdTerm,
    ForcedElection,
    Malformed(&'static str),
}

impl Raft {
    /// Checks `msg` from `from` before the protocol acts on it; `Err` means drop it.
    pub(super) fn screen(&self, from: NodeId, msg: &Message) -> Result<(), Refusal> {
        msg.check_well_formed().map_err(Refusal::Malformed)?;
        let ours = self.hard.current_term;
        if msg.term.0 >= TERM_MAX || msg.term.0 > ours.0.saturating_add(TERM_JUMP_MAX) {
            return Err(Refusal::AbsurdTerm);
        }
        let from_leader = self.leader_id == Some(from) && msg.term == ours;
        if !self.membership.contains(from) && !self.needs_non_member(from, from_leader, msg) {
            return Err(Refusal::NonMember);
        }
        match msg.kind {
            // A forced election skips leases; only this term's leader may ask for one.
            MessageKind::TimeoutNow if !from_leader => Err(Refusal::ForcedElection),
            // A round we never started cannot be acknowledged (it would confirm reads early).
            MessageKind::HeartbeatResponse { read_seq } if read_seq > self.read_seq => {
                Err(Refusal::Malformed("acknowledges a read round never sent"))
            }
            _ => Ok(()),
        }
    }

    /// Where the protocol must hear a server outside our configuration; always a leader's
    /// AppendEntries, InstallSnapshot, Heartbeat or TimeoutNow (responses need no exception: a leader's
    /// progress map holds members only, learners included):
    ///
    /// - to a server never yet in a configuration: a `join()` server being added learns
    ///   the configuration from the leader's log (§4.1), whose early entries predate it;
    /// - from the leader accepted in this term, which may since have removed itself
    ///   (§4.2.2: it tells followers the commit index and hands over before it leaves);
    /// - from a leader a voter we know vouched for in its [`MessageKind::LeaderHint`]: our
    ///   configuration may be behind, and the leader be one added since (the simulator's
    ///   membership churn finds this: without it such a member never catches up). A
    ///   non-member cannot vouch, so a forger cannot lead, fork or depose anyone this way;
    ///   keeping forgers out of the cluster altogether is the cluster secret's job.
    fn needs_non_member(&self, from: NodeId, from_leader: bool, msg: &Message) -> bool {
        let from_a_leader = matches!(
            msg.kind,
            MessageKind::AppendEntries(_)
                | MessageKind::InstallSnapshot(_)
                | MessageKind::Heartbeat { .. }
                | MessageKind::TimeoutNow
        );
        // A vouch establishes that `from` is a member of the cluster leading at or after the
        // vouched term (a leader's later terms are its own to start).
        let vouched = self.vouched.iter().any(|&(id, term)| id == from && msg.term >= term);
        // Only a server never yet in a configuration (a `join()` server whose log has not
        // reached its own addition) takes any leader's word: one removed since hears the
        // leaders it knows like any member (the simulator's hostile input found a leader
        // that had just removed itself committing on a forged heartbeat).
        (from_a_leader && (from_leader || vouched || !self.was_member)) || self.in_membership_before(from)
    }

    /// Whether `from` is a member of the configuration before our latest one, while the
    /// latest is not known to be committed: it may still campaign (see
    /// [`Raft::is_promotable`]), and its messages are those of a member until then. The
    /// simulator's lease runs found two servers each refusing the other this way: one held
    /// a change removing the second, uncommitted, while the second had the best log and
    /// needed the first's vote; and the third refused the first as a non-member of its
    /// own, older configuration. No election could be won again.
    fn in_membership_before(&self, from: NodeId) -> bool {
        self.membership_index > self.commit_index && self.membership_before.contains(from)
    }

    /// Answers a pre-vote ignored in a lease, or a LeaderQuery, with the leader of our
    /// term; knowing none, with the voters of our latest configuration. A member whose
    /// configuration is behind may know no voter that is still in the cluster, except
    /// through us: the simulator's churn from one voter found learners that knew only a
    /// voter since removed, which itself knew only the server that leads now.
    pub(super) fn send_leader_hint(&mut self, to: NodeId) {
        let me = self.cfg.id;
        let hints: Vec<NodeId> = match self.leader_id {
            Some(leader) => vec![leader],
            None => self.membership.voters.keys().copied().filter(|&v| v != me).take(VOUCHED_MAX).collect(),
        };
        for leader in hints.into_iter().filter(|&l| l != to) {
            self.send(to, MessageKind::LeaderHint { leader });
        }
    }

    /// Asks the voters we know who leads (a learner's substitute for a pre-vote round).
    pub(super) fn ask_for_leader(&mut self) {
        let me = self.cfg.id;
        let voters: Vec<NodeId> = self.membership.voters.keys().copied().filter(|&id| id != me).collect();
        for id in voters {
            self.send(id, MessageKind::LeaderQuery);
        }
    }

    /// Remembers a server outside our configuration that a voter we know vouches for (a
    /// few of them: a voter knowing no leader names every voter it knows).
    pub(super) fn on_leader_hint(&mut self, from: NodeId, term: Term, leader: NodeId) {
        if self.membership.is_voter(from) && !self.membership.contains(leader) && leader != self.cfg.id {
            ::log::debug!("node {}: node {from} vouches for node {leader} from {term}", self.cfg.id);
            self.vouched.retain(|&(id, _)| id != leader);
            if self.vouched.len() == VOUCHED_MAX {
                self.vouched.remove(0);
            }
            self.vouched.push((leader, term));
        }
    }

    /// Counts and logs a dropped message.
    pub(super) fn on_refused(&mut self, from: NodeId, term: Term, why: Refusal) {
        let counter = match why {
            Refusal::NonMember => &mut self.refused.non_member,
            Refusal::AbsurdTerm => &mut self.refused.absurd_term,
            Refusal::ForcedElection => &mut self.refused.forced_election,
            Refusal::Malformed(_) => &mut self.refused.malformed,
        };
        *counter += 1;
        let total = self.refused.total();
        // Loud, but not once per message of a flood: at the 1st, 2nd, 4th, 8th... refusal.
        if total.is_power_of_two() {
            ::log::warn!(
                "node {}: dropped a message from {from} at {term}: {why:?} ({total} dropped so far: {:?})",
                self.cfg.id,
                self.refused
            );
        } else {
            ::log::debug!("node {}: dropped a message from {from} at {term}: {why:?}", self.cfg.id);
        }
    }

    /// How many messages this server dropped before acting on them, by reason.
    pub fn refused(&self) -> Refused {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::{AppendEntries, RequestVote};
    use crate::core::types::{Entry, LogIndex, Payload, Role};
    use crate::core::{CoreConfig, Membership};

    fn voters(n: u64) -> Membership {
        Membership::with_voters((1..=n).map(|id| (id, format!("n{id}"))))
    }

    fn cfg(id: NodeId) -> CoreConfig {
        let mut c = CoreConfig::new(id);
        c.election_ticks = 10;
        c.heartbeat_ticks = 2;
        c
    }

    fn heartbeat(term: u64) -> Message {
        Message { term: Term(term), kind: MessageKind::Heartbeat { commit: LogIndex(0), read_seq: 0 } }
    }

    fn forced_vote(term: u64) -> Message {
        let rv = RequestVote {
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            pre_vote: false,
            force: true,
            transfer: true,
        };
        Message { term: Term(term), kind: MessageKind::RequestVote(rv) }
    }

    fn append(term: u64, commit: u64, entries: &[u64]) -> Message {
        let entries = entries
            .iter()
            .map(|&i| Entry { term: Term(term), index: LogIndex(i), payload: Payload::Command(vec![1].into()) })
            .collect();
        let ae = AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries,
            leader_commit: LogIndex(commit),
        };
        Message { term: Term(term), kind: MessageKind::AppendEntries(ae) }
    }

    /// Issue 8, attack 1: a term of `u64::MAX` wedged every node at a term it could never
    /// leave (`Term::next` wrapped). It is refused, whoever sends it.
    #[test]
    fn absurd_terms_are_refused() {
        let mut r = Raft::new(cfg(1), voters(3));
        for term in [u64::MAX, TERM_MAX, TERM_JUMP_MAX + 1] {
            r.step(2, heartbeat(term));
            assert_eq!(r.current_term(), Term(0), "term {term} adopted");
        }
        assert_eq!(r.refused().absurd_term, 3);
        r.step(2, heartbeat(TERM_JUMP_MAX));
        assert_eq!(r.current_term(), Term(TERM_JUMP_MAX), "a reachable term is adopted");
    }

    /// Issue 8, attacks 2 and 3: a made-up id cannot lead, vote or depose.
    #[test]
    fn non_members_are_dropped() {
        let mut r = Raft::new(cfg(1), voters(3));
        r.step(2, heartbeat(1));
        r.take_ready();
        r.step(99, append(5, 2, &[1, 2]));
        r.step(99, forced_vote(6));
        r.step(99, heartbeat(7));
        r.step(99, Message { term: Term(1), kind: MessageKind::TimeoutNow });
        assert_eq!((r.current_term(), r.log().last_index(), r.leader_id()), (Term(1), LogIndex(0), Some(2)));
        assert_eq!(r.refused().non_member, 4);
        assert!(r.take_ready().messages.is_empty(), "nothing is answered to a non-member");
    }

    /// A member whose configuration is behind hears a leader it does not know once a voter
    /// it knows vouches for it, from the vouched term on; a non-member cannot vouch.
    #[test]
    fn a_member_behind_hears_a_vouched_leader() {
        let mut r = Raft::new(cfg(1), voters(3));
        for _ in 0..30 {
            r.tick();
        }
        assert_eq!(r.role(), Role::PreCandidate);
        r.step(5, append(2, 1, &[1]));
        r.step(6, Message { term: Term(2), kind: MessageKind::LeaderHint { leader: 5 } });
        r.step(5, append(2, 1, &[1]));
        assert_eq!((r.leader_id(), r.log().last_index()), (None, LogIndex(0)), "not vouched by a member");
        r.step(2, Message { term: Term(2), kind: MessageKind::LeaderHint { leader: 5 } });
        r.step(5, append(1, 1, &[1]));
        assert_eq!(r.leader_id(), None, "vouched from term 2, not for term 1");
        r.step(5, append(3, 1, &[1]));
        assert_eq!((r.leader_id(), r.commit_index()), (Some(5), LogIndex(1)), "a later term of the vouched member");
    }

    /// A voter's vouch holds even when it comes from a term older than ours, and our answer
    /// to the vouched leader's next message tells it of our term. (Found by the lease
    /// simulator: a voter whose configuration lacked the leader, and whose term a failed
    /// campaign had taken past the leader's, dropped every hint and never heard the leader
    /// again.)
    #[test]
    fn a_vouch_from_an_older_term_still_lets_its_leader_in() {
        let hard = crate::core::HardState { current_term: Term(5), voted_for: None };
        let mut r = Raft::recover(cfg(1), hard, crate::core::Log::default(), voters(3), None);
        r.step(4, heartbeat(4));
        assert_eq!(r.refused().non_member, 1);
        r.step(2, Message { term: Term(4), kind: MessageKind::LeaderHint { leader: 4 } });
        r.take_ready();
        r.step(4, heartbeat(4));
        assert_eq!(r.refused().non_member, 1, "vouched for");
        let sent = r.take_ready().persisted_messages;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!((sent[0].to, sent[0].message.term), (4, Term(5)), "told of the newer term");
    }

    /// While a configuration that removes a server is uncommitted, that server may still
    /// campaign (`is_promotable`), and is heard like a member until the change commits.
    /// (Found by the lease simulator: two servers on different uncommitted configurations
    /// each refused a voter the other needed, and no election could be won again.)
    #[test]
    fn a_member_of_the_configuration_before_an_uncommitted_one_is_heard() {
        let without_3 = Membership::with_voters([(1, "n1".to_string()), (2, "n2".to_string())]);
        let config = Entry { term: Term(1), index: LogIndex(1), payload: Payload::Config(without_3) };
        let log = crate::core::Log::new(LogIndex(0), Term(0), vec![config]);
        let hard = crate::core::HardState { current_term: Term(1), voted_for: None };
        let mut r = Raft::recover(cfg(1), hard, log, voters(3), None);
        let pre_vote = || {
            let rv = RequestVote {
                last_log_index: LogIndex(1),
                last_log_term: Term(1),
                pre_vote: true,
                force: false,
                transfer: false,
            };
            Message { term: Term(2), kind: MessageKind::RequestVote(rv) }
        };
        r.step(3, pre_vote());
        let sent = r.take_ready().persisted_messages;
        let granted = MessageKind::RequestVoteResponse { granted: true, pre_vote: true };
        assert_eq!(sent.iter().map(|e| (e.to, &e.message.kind)).collect::<Vec<_>>(), [(3, &granted)]);
        r.step(2, append(1, 1, &[1]));
        assert_eq!(r.commit_index(), LogIndex(1), "the removal commits");
        r.take_ready();
        r.step(3, pre_vote());
        assert_eq!(r.refused().non_member, 1, "a stranger now");
    }

    /// A follower in a lease answers a pre-vote with the leader it follows.
    #[test]
    fn a_follower_in_lease_names_its_leader() {
        let mut r = Raft::new(cfg(1), voters(3));
        r.step(2, heartbeat(1));
        r.take_ready();
        let rv = RequestVote {
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            pre_vote: true,
            force: false,
            transfer: false,
        };
        r.step(3, Message { term: Term(2), kind: MessageKind::RequestVote(rv) });
        // A follower's words leave after its sync.
        let sent = r.take_ready().persisted_messages;
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].message, Message { term: Term(1), kind: MessageKind::LeaderHint { leader: 2 } });
    }

    /// A server that knows no leader answers a LeaderQuery with the voters of its latest
    /// configuration (but itself and the asker), removed from it or not.
    #[test]
    fn a_server_knowing_no_leader_names_the_voters_it_knows() {
        let hints = |r: &mut Raft| -> Vec<(NodeId, NodeId)> {
            let sent = r.take_ready().persisted_messages;
            sent.iter()
                .filter_map(|e| match e.message.kind {
                    MessageKind::LeaderHint { leader } => Some((e.to, leader)),
                    _ => None,
                })
                .collect()
        };
        let without_1 = Membership::with_voters([(2, "n2".to_string()), (3, "n3".to_string())]);
        let mut removed = Raft::new(cfg(1), without_1);
        removed.step(2, Message { term: Term(0), kind: MessageKind::LeaderQuery });
        assert_eq!(hints(&mut removed), vec![(2, 3)]);
        let mut member = Raft::new(cfg(1), voters(3));
        member.step(2, Message { term: Term(0), kind: MessageKind::LeaderQuery });
        assert_eq!(hints(&mut member), vec![(2, 3)]);
        member.step(2, heartbeat(1));
        member.take_ready();
        member.step(3, Message { term: Term(1), kind: MessageKind::LeaderQuery });
        assert_eq!(hints(&mut member), vec![(3, 2)], "knowing the leader, it names the leader only");
    }

    /// A leader deposed by a heartbeat from a fake id at its own term (attack 3).
    #[test]
    fn a_leader_ignores_a_non_member_at_its_term() {
        let mut r = Raft::new(cfg(1), voters(1));
        r.trigger_election().unwrap();
        r.on_hard_state_persisted(r.hard_state()); // a lone voter leads once its vote is durable
        assert_eq!(r.role(), Role::Leader);
        let term = r.current_term().0;
        r.step(99, heartbeat(term));
        r.step(99, heartbeat(term + 1));
        assert_eq!(r.role(), Role::Leader);
    }

    /// A server outside its own configuration (a `join()` server) must hear the leader.
    #[test]
    fn a_server_being_added_hears_a_leader_it_does_not_know() {
        let mut r = Raft::new(cfg(4), Membership::default());
        r.step(1, append(3, 1, &[1]));
        assert_eq!((r.leader_id(), r.commit_index()), (Some(1), LogIndex(1)));
        // Its log now holds a configuration from before its addition: still not a member,
        // it still hears a leader it does not know (another term's, here).
        let config = Entry { term: Term(3), index: LogIndex(2), payload: Payload::Config(voters(3)) };
        r.step(
            1,
            Message {
                term: Term(3),
                kind: MessageKind::AppendEntries(AppendEntries {
                    prev_log_index: LogIndex(1),
                    prev_log_term: Term(3),
                    entries: vec![config],
                    leader_commit: LogIndex(2),
                }),
            },
        );
        assert_eq!(r.membership(), &voters(3));
        let entry = Entry { term: Term(4), index: LogIndex(3), payload: Payload::Command(vec![1].into()) };
        let ae = AppendEntries {
            prev_log_index: LogIndex(2),
            prev_log_term: Term(3),
            entries: vec![entry],
            leader_commit: LogIndex(2),
        };
        r.step(7, Message { term: Term(4), kind: MessageKind::AppendEntries(ae) });
        assert_eq!((r.leader_id(), r.log().last_index()), (Some(7), LogIndex(3)));
    }

    /// A server removed from its configuration hears only the leaders it knows: a forged
    /// heartbeat cannot make it commit (the soak's seed 509661: a leader that had just
    /// removed itself committed its own uncommitted removal on one).
    #[test]
    fn a_removed_server_does_not_take_a_strangers_word() {
        let only = |id: NodeId| Membership::with_voters([(id, format!("n{id}"))]);
        let log = crate::core::Log::new(
            LogIndex(0),
            Term(0),
            vec![
                Entry { term: Term(1), index: LogIndex(1), payload: Payload::Config(only(1)) },
                Entry { term: Term(1), index: LogIndex(2), payload: Payload::Config(only(2)) }, // 1 removed, uncommitted
            ],
        );
        let hard = crate::core::HardState { current_term: Term(1), voted_for: Some(1) };
        let mut r = Raft::recover(cfg(1), hard, log, Membership::default(), None);
        assert!(!r.membership().contains(1));
        r.step(99, Message { term: Term(5), kind: MessageKind::Heartbeat { commit: LogIndex(1000), read_seq: 0 } });
        assert_eq!(r.commit_index(), LogIndex(0), "a stranger's heartbeat moved the commit");
        assert_eq!(r.refused().non_member, 1);
    }

    /// A forced election is honoured only from this term's leader (§3.10).
    #[test]
    fn timeout_now_only_from_the_current_leader() {
        let mut r = Raft::new(cfg(1), voters(3));
        r.step(2, Message { term: Term(3), kind: MessageKind::TimeoutNow });
        r.step(3, heartbeat(3));
        r.step(2, Message { term: Term(3), kind: MessageKind::TimeoutNow });
        assert_eq!((r.role(), r.current_term()), (Role::Follower, Term(3)));
        assert_eq!(r.refused().forced_election, 2);
        r.step(3, Message { term: Term(3), kind: MessageKind::TimeoutNow });
        assert_eq!((r.role(), r.current_term()), (Role::Candidate, Term(4)));
    }

    /// A heartbeat answer for a round never sent would confirm reads early.
    #[test]
    fn unsent_read_rounds_are_refused() {
        let mut r = Raft::new(cfg(1), voters(3));
        r.step(2, Message { term: Term(0), kind: MessageKind::HeartbeatResponse { read_seq: u64::MAX } });
        assert_eq!(r.refused().malformed, 1);
    }

    /// A malformed message is refused in every build, not only checked by a debug assertion.
    #[test]
    fn malformed_messages_are_refused_not_asserted() {
        let mut r = Raft::new(cfg(1), voters(3));
        r.step(2, append(1, 0, &[2]));
        assert_eq!((r.refused().malformed, r.log().last_index()), (1, LogIndex(0)));
    }
}
