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
        Ok(())
    }
}
