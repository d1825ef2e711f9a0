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
    /// Seed for the election-timeout randomization.
    pub seed: u64,
}

impl CoreConfig {
    /// Sensible defaults for server `id`: 10-tick elections, 2-tick heartbeats.
    pub fn new(id: NodeId) -> CoreConfig {
        CoreConfig {
            id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_append_entries: 512,
            max_append_bytes: 1 << 20,
            max_inflight: 64,
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
        if self.max_append_entries == 0 || self.max_append_bytes == 0 || self.max_inflight == 0 {
            return Err("batch sizes and the in-flight bound must be non-zero".into());
        }
        Ok(())
    }
}

/// A tiny deterministic PRNG (SplitMix64): the core's only source of randomness.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[lo, hi)`.
    pub(crate) fn range(&mut self, lo: u32, hi: u32) -> u32 {
        debug_assert!(lo < hi);
        lo + (self.next_u64() % u64::from(hi - lo)) as u32
    }
}
