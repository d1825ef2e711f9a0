//! The core's tunables, in ticks and counts: the core knows no wall-clock time.

use super::types::NodeId;

/// Settings of one Raft core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This server's id.
    pub id: NodeId,
    /// Minimum election timeout in ticks; each timeout is drawn from
    /// `[election_ticks, 2 * election_ticks)` (§5.2). Also the check-quorum period and
    /// the leader lease followers honour (dissertation §4.2.3, §6.2).
    pub election_ticks: u32,
    /// Ticks between heartbeats; must be well below `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Most entries one AppendEntries carries.
    pub max_append_entries: usize,
    /// Byte budget of one AppendEntries (at least one entry is always sent).
    pub max_append_bytes: usize,
    /// Most AppendEntries in flight to one follower while pipelining.
    pub max_inflight: usize,
    /// Bytes of snapshot per InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Most InstallSnapshot chunks in flight to one follower.
    pub max_snapshot_inflight: usize,
    /// Seed for the election-timeout randomization.
    pub seed: u64,
    /// Leader-lease reads (dissertation §6.4.1), off by default. See [`LeaseReads`] for the
    /// clock assumption they rest on.
    pub lease_reads: Option<LeaseReads>,
}

impl CoreConfig {
    /// The defaults for server `id`, the same as [`crate::Config`]'s (whose 10 ms tick makes
    /// them a 300 ms election timeout and 50 ms heartbeats).
    pub fn new(id: NodeId) -> CoreConfig {
        CoreConfig {
            id,
            election_ticks: 30,
            heartbeat_ticks: 5,
            max_append_entries: 4096,
            max_append_bytes: 1 << 20,
            max_inflight: 32,
            snapshot_chunk_bytes: 1 << 20,
            max_snapshot_inflight: 4,
            seed: id,
            lease_reads: None,
        }
    }

    /// Says what is wrong with these settings, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("node id 0 is reserved".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks < 2 * self.heartbeat_ticks {
            return Err(format!(
                "heartbeat ({} ticks) must be at most half the election timeout ({} ticks)",
                self.heartbeat_ticks, self.election_ticks
            ));
        }
        if self.max_append_entries == 0
            || self.max_append_bytes == 0
            || self.max_inflight == 0
            || self.snapshot_chunk_bytes == 0
            || self.max_snapshot_inflight == 0
        {
            return Err("batch sizes and the in-flight bound must be non-zero".into());
        }
        if let Some(lease) = self.lease_reads {
            lease.validate()?;
            if lease.lease_ticks(self.election_ticks) == 0 {
                return Err(format!(
                    "an election timeout of {} ticks leaves no lease with a clock drift of {}: lengthen it",
                    self.election_ticks, lease.max_clock_drift
                ));
            }
        }
        Ok(())
    }
}

/// Leader-lease reads (Raft dissertation §6.4.1; etcd's `ReadOnlyLeaseBased`): a leader
/// that a majority has heard from recently answers a linearizable read without a round
/// trip, because until their election timeouts run out those servers vote for nobody else.
///
/// **The assumption they rest on.** Every node of the cluster enables them, with the same
/// `max_clock_drift`; and the tick clocks of any two nodes run at rates within that bound:
/// over any interval, one node's ticks are at most `1 + max_clock_drift` times as long as
/// another's. A node whose clock stops while its process goes on believing it runs (a VM
/// paused and resumed, a thread stalled for longer than a tick between reading the clock
/// and answering a read) breaks the assumption, and a lease read may then be stale. The
/// mio runtime notices the stalls it can (ticks it had to skip) and ends the lease then.
/// Without lease reads, `read` (ReadIndex) assumes nothing about clocks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeaseReads {
    /// How much faster one node's tick clock may run than another's, as a fraction: 0.05
    /// means a tick of the slowest node lasts at most 1.05 ticks of the fastest. In
    /// `[0, LeaseReads::DRIFT_MAX)`.
    pub max_clock_drift: f64,
}

impl LeaseReads {
    /// The drift bound must stay below this: beyond it the lease would be short, and the
    /// assumption implausible.
    pub const DRIFT_MAX: f64 = 0.5;

    /// Says what is wrong with the drift bound, if anything.
    pub fn validate(&self) -> Result<(), String> {
        let drift = self.max_clock_drift;
        // `contains` is false for NaN too.
        if !(0.0..Self::DRIFT_MAX).contains(&drift) {
            return Err(format!("max_clock_drift must be in [0, {}), got {drift}", Self::DRIFT_MAX));
        }
        Ok(())
    }

    /// The lease, in the leader's ticks from the tick it sent a heartbeat round a majority
    /// acknowledged: `floor((election_ticks - 1) / (1 + max_clock_drift)) - 1`. The
    /// argument is in `lease.rs`; in short, a follower that acknowledged the round grants
    /// no vote for `election_ticks` of its own ticks from when it received it, which is at
    /// least `election_ticks - 1` of its tick lengths (one lost to granularity); a leader
    /// tick is at most `1 + max_clock_drift` of those; and one more leader tick goes to the
    /// runtime, whose tick count may lag its clock by up to a tick when it judges a read.
    pub fn lease_ticks(&self, election_ticks: u32) -> u32 {
        let follower_ticks = f64::from(election_ticks.saturating_sub(1));
        let scale = 1.0 + self.max_clock_drift;
        let mut ticks = (follower_ticks / scale).floor() as u32;
        // Floating-point division may round up to an integer the exact quotient is just
        // below: check the product, which is what the argument needs.
        while ticks > 0 && f64::from(ticks) * scale > follower_ticks {
            ticks -= 1;
        }
        ticks.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_the_election_timeout_shrunk_for_drift_and_granularity() {
        let lease = |drift: f64, election: u32| LeaseReads { max_clock_drift: drift }.lease_ticks(election);
        for (drift, election, ticks) in [
            (0.0, 30, 28),  // 29 follower ticks, one leader tick of margin
            (0.05, 30, 26), // 29 / 1.05 = 27.6
            (0.1, 23, 19),  // 22 / 1.1 = 20 exactly: the bound may be met with equality
            (0.45, 30, 19), // 29 / 1.45 = 20 exactly
            (0.2, 6, 3),    // the simulator's shortest election timeout
            (0.0, 2, 0),    // no lease left
        ] {
            assert_eq!(lease(drift, election), ticks, "drift {drift}, election {election}");
            assert!(f64::from(ticks + 1) * (1.0 + drift) <= f64::from(election - 1));
        }
    }

    #[test]
    fn drift_outside_its_range_is_refused() {
        let mut c = CoreConfig::new(1);
        for drift in [-0.01, 0.5, 1.0, f64::NAN, f64::INFINITY] {
            c.lease_reads = Some(LeaseReads { max_clock_drift: drift });
            assert!(c.validate().is_err(), "drift {drift} accepted");
        }
        c.lease_reads = Some(LeaseReads { max_clock_drift: 0.0 });
        assert!(c.validate().is_ok());
        c.election_ticks = 2;
        c.heartbeat_ticks = 1;
        assert!(c.validate().is_err(), "no lease left");
    }
}
