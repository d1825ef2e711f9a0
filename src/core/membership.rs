//! Cluster membership as data in the log (dissertation §4).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::types::NodeId;

/// A cluster configuration: who votes, who only listens, and where each can be reached.
///
/// Addresses are opaque strings to the core; the runtime parses them.
/// Invariant: a node is never both a voter and a learner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Members whose votes and acknowledgements count towards a majority.
    pub voters: BTreeMap<NodeId, String>,
    /// Members that receive the log but neither vote nor count (dissertation §4.2.1).
    pub learners: BTreeMap<NodeId, String>,
}

/// Why a change is not a valid single-server step from a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// Adding a server that is already a voter or a learner.
    AlreadyMember(NodeId),
    /// Promoting a server that is not a learner.
    NotALearner(NodeId),
    /// Removing a server that is not a member.
    NotAMember(NodeId),
    /// Removing the last voter: nobody could commit anything again.
    LastVoter,
}

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipError::AlreadyMember(id) => write!(f, "node {id} is already a member"),
            MembershipError::NotALearner(id) => write!(f, "node {id} is not a learner"),
            MembershipError::NotAMember(id) => write!(f, "node {id} is not a member"),
            MembershipError::LastVoter => write!(f, "the change would leave no voter"),
        }
    }
}

/// One single-server step from one configuration to the next (dissertation §4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a non-voting member that receives the log.
    AddLearner(NodeId, String),
    /// Turn a learner into a voter.
    Promote(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
}

impl Membership {
    /// A configuration whose voters are `voters`.
    pub fn with_voters(voters: impl IntoIterator<Item = (NodeId, String)>) -> Membership {
        Membership { voters: voters.into_iter().collect(), learners: BTreeMap::new() }
    }

    /// Whether `id` votes in this configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id) || self.learners.contains_key(&id)
    }

    /// The address of member `id`, if it is one.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.voters.get(&id).or_else(|| self.learners.get(&id)).map(String::as_str)
    }

    /// All members, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.keys().chain(self.learners.keys()).copied()
    }

    /// How many votes make a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Applies one single-server change, or says why it is not one.
    pub fn apply(&self, change: &MembershipChange) -> Result<Membership, MembershipError> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner(id, addr) => {
                if self.contains(*id) {
                    return Err(MembershipError::AlreadyMember(*id));
                }
                next.learners.insert(*id, addr.clone());
            }
            MembershipChange::Promote(id) => {
                let addr = next.learners.remove(id).ok_or(MembershipError::NotALearner(*id))?;
                next.voters.insert(*id, addr);
            }
            MembershipChange::Remove(id) => {
                if next.voters.remove(id).is_none() && next.learners.remove(id).is_none() {
                    return Err(MembershipError::NotAMember(*id));
                }
                if next.voters.is_empty() {
                    return Err(MembershipError::LastVoter);
                }
            }
        }
        debug_assert!(next.voters.keys().all(|id| !next.learners.contains_key(id)));
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(voters: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: voters.iter().map(|&i| (i, format!("n{i}"))).collect(),
            learners: learners.iter().map(|&i| (i, format!("n{i}"))).collect(),
        }
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        for (n, q) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)] {
            let voters: Vec<u64> = (1..=n).collect();
            assert_eq!(m(&voters, &[]).quorum(), q as usize, "n={n}");
        }
    }

    #[test]
    fn single_server_changes() {
        let base = m(&[1, 2], &[]);
        let added = base.apply(&MembershipChange::AddLearner(3, "n3".into())).unwrap();
        assert_eq!(added, m(&[1, 2], &[3]));
        assert_eq!(added.apply(&MembershipChange::Promote(3)).unwrap(), m(&[1, 2, 3], &[]));
        assert_eq!(base.apply(&MembershipChange::AddLearner(2, "x".into())), Err(MembershipError::AlreadyMember(2)));
        assert_eq!(base.apply(&MembershipChange::Promote(2)), Err(MembershipError::NotALearner(2)));
        assert_eq!(base.apply(&MembershipChange::Remove(9)), Err(MembershipError::NotAMember(9)));
        assert_eq!(m(&[1], &[]).apply(&MembershipChange::Remove(1)), Err(MembershipError::LastVoter));
        assert_eq!(added.apply(&MembershipChange::Remove(3)).unwrap(), base);
    }
}
