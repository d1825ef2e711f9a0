//! The quorum arithmetic, written once: every majority decision of the protocol (the
//! commit index, an election, check-quorum, a read's confirmation) asks this module.
//!
//! A *majority* is `voters / 2 + 1` of the voters of one configuration (§5.2; single-server
//! changes keep any two consecutive majorities overlapping, dissertation §4.1). Learners
//! never count (§4.2.1).

use super::membership::Membership;
use super::types::NodeId;

/// The highest value that a majority of `membership`'s voters has reached, where `value`
/// gives each voter's (for example its match index, or the last read round it
/// acknowledged). `None` when there are no voters.
///
/// Used for the commit index (§5.3: an entry is committed once a majority stores it) and
/// for ReadIndex confirmation (dissertation §6.4).
///
/// Called for every proposal and every acknowledgement, so it allocates nothing for
/// configurations of up to [`VOTERS_INLINE`] voters.
pub fn majority_value<T: Ord + Copy>(membership: &Membership, value: impl Fn(NodeId) -> T) -> Option<T> {
    let n = membership.voters.len();
    if n == 0 {
        return None;
    }
    let mut inline = [None; VOTERS_INLINE];
    let mut heap = Vec::new();
    let values: &mut [Option<T>] = if n <= VOTERS_INLINE {
        &mut inline[..n]
    } else {
        heap.resize(n, None);
        &mut heap
    };
    for (slot, &id) in values.iter_mut().zip(membership.voters.keys()) {
        *slot = Some(value(id));
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    // The value at position quorum-1 of the descending list is held by at least `quorum`
    // voters (all those before it), and no higher value is.
    values[membership.quorum() - 1]
}

/// Configurations up to this many voters count a majority without allocating.
pub const VOTERS_INLINE: usize = 16;

/// Whether a majority of `membership`'s voters satisfies `yes` (check-quorum,
/// dissertation §6.2).
pub fn has_majority(membership: &Membership, yes: impl Fn(NodeId) -> bool) -> bool {
    membership.voters.keys().filter(|&&id| yes(id)).count() >= membership.quorum()
}

/// Where an election (or a pre-vote round) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted: the candidate wins (§5.2).
    Won,
    /// A majority refused: the round cannot be won.
    Lost,
    /// Neither yet.
    Pending,
}

/// Tallies the `votes` cast so far (voter -> granted). Votes from servers that are not
/// voters of `membership` do not count.
pub fn tally(membership: &Membership, votes: impl Iterator<Item = (NodeId, bool)>) -> VoteResult {
    let (mut granted, mut refused) = (0, 0);
    for (id, g) in votes {
        if membership.is_voter(id) {
            if g {
                granted += 1;
            } else {
                refused += 1;
            }
        }
    }
    let quorum = membership.quorum();
    if granted >= quorum {
        VoteResult::Won
    } else if refused >= quorum {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[u64]) -> Membership {
        Membership::with_voters(ids.iter().map(|&id| (id, format!("n{id}"))))
    }

    #[test]
    fn majority_value_is_the_highest_a_majority_reached() {
        let m = voters(&[1, 2, 3, 4, 5]);
        let matched = [0u64, 9, 7, 3, 5, 1];
        assert_eq!(majority_value(&m, |id| matched[id as usize]), Some(5));
        assert_eq!(majority_value(&voters(&[1]), |_| 4u64), Some(4));
        assert_eq!(majority_value(&voters(&[1, 2]), |id| id), Some(1), "two voters need both");
        assert_eq!(majority_value(&Membership::default(), |id| id), None);
    }

    #[test]
    fn tallies_count_only_voters() {
        let m = voters(&[1, 2, 3]);
        assert_eq!(tally(&m, [(1, true)].into_iter()), VoteResult::Pending);
        assert_eq!(tally(&m, [(1, true), (9, true), (8, true)].into_iter()), VoteResult::Pending);
        assert_eq!(tally(&m, [(1, true), (2, true)].into_iter()), VoteResult::Won);
        assert_eq!(tally(&m, [(1, true), (2, false), (3, false)].into_iter()), VoteResult::Lost);
    }

    #[test]
    fn majorities_of_even_and_odd_clusters() {
        for (n, need) in [(1u64, 1usize), (2, 2), (3, 2), (4, 3), (5, 3)] {
            let ids: Vec<u64> = (1..=n).collect();
            let m = voters(&ids);
            for yes in 0..=n as usize {
                assert_eq!(has_majority(&m, |id| id as usize <= yes), yes >= need, "n={n} yes={yes}");
            }
        }
    }
}
