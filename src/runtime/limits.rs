//! Bounds on what a connection may hold, and for how long (issue 8): an idle or stalled
//! peer must not keep a file descriptor or memory forever, and a node that ran out of file
//! descriptors must recover once they are free.

use std::io;
use std::time::{Duration, Instant};

use crate::core::NodeId;

/// An inbound connection is closed after this many heartbeat intervals without a whole
/// frame. Dialers send a keepalive after [`KEEPALIVE_FRACTION`] of it, so a quiet but
/// healthy peer is never closed.
pub(crate) const IDLE_TIMEOUT_HEARTBEATS: u32 = 20;
/// The idle timeout is never shorter than this, so a stalled (not dead) peer on a loaded
/// machine is not dropped and redialled over and over.
pub(crate) const IDLE_TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// A dialer sends a keepalive once it has sent nothing for the idle timeout divided by this.
pub(crate) const KEEPALIVE_FRACTION: u32 = 4;
/// A frame whose first bytes arrived must be complete within this: a peer that trickles
/// a frame (slowloris) or stops half-way is closed, and its partial frame freed. At the
/// default 16 MiB frame limit this is still 3 MiB/s.
pub(crate) const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// Partial frames of all connections together may hold this many times the frame limit;
/// past it the connection with the largest partial frame is closed.
pub(crate) const PARTIAL_FRAMES_PER_NODE_MAX: usize = 2;
/// Only a connection holding a partial frame above this can tip the node's total over its
/// budget in one read (a read adds at most 64 KiB), so smaller ones skip the sum.
pub(crate) const PARTIAL_FRAME_CHECK_BYTES: usize = 64 * 1024;
/// A connection we dialed must complete its handshake (both proofs) within this, or it is
/// closed and redialled with backoff: a peer that accepted at the TCP level but never
/// answers (out of file descriptors, say) must not hold our link to it forever.
pub(crate) const OUTBOUND_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most introduced inbound connections from ids outside the configuration (a server
/// removed, a `join()` server's leader it cannot place yet, or an impostor); past it the
/// oldest is closed. Members get one each, on top of this.
pub(crate) const NON_MEMBER_INBOUND_MAX: usize = 16;
/// After `accept` fails for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM), it is
/// retried this often. The listener is edge-triggered: connections already waiting in
/// its backlog raise no new event, so waiting for one could wait forever.
pub(crate) const ACCEPT_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// The time limits of peer connections, from the node's heartbeat interval.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    pub idle: Duration,
    pub keepalive: Duration,
    pub frame: Duration,
    pub outbound_handshake: Duration,
}

impl Deadlines {
    pub fn new(heartbeat_interval: Duration) -> Deadlines {
        let idle = heartbeat_interval.saturating_mul(IDLE_TIMEOUT_HEARTBEATS).max(IDLE_TIMEOUT_MIN);
        Deadlines {
            idle,
            keepalive: idle / KEEPALIVE_FRACTION,
            frame: FRAME_DEADLINE,
            outbound_handshake: OUTBOUND_HANDSHAKE_TIMEOUT,
        }
    }
}

/// What a connection has done lately, for its deadlines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Activity {
    /// The last whole frame received (or when the connection opened).
    pub last_frame_at: Instant,
    /// When the partial frame now buffered began arriving, if one is.
    pub partial_since: Option<Instant>,
    /// The last time we queued a frame on it.
    pub last_sent_at: Instant,
}

impl Activity {
    pub fn new(now: Instant) -> Activity {
        Activity { last_frame_at: now, partial_since: None, last_sent_at: now }
    }

    /// Records a read that completed `frames` frames and left `partial_bytes` buffered.
    pub fn on_read(&mut self, now: Instant, frames: usize, partial_bytes: usize) {
        if frames > 0 {
            self.last_frame_at = now;
            // The partial frame left over, if any, began in this read.
            self.partial_since = None;
        }
        self.partial_since = if partial_bytes > 0 { Some(self.partial_since.unwrap_or(now)) } else { None };
    }

    /// Why an introduced inbound connection must be closed now, if it must.
    pub fn expired(&self, now: Instant, d: &Deadlines) -> Option<&'static str> {
        if self.partial_since.is_some_and(|at| now.duration_since(at) > d.frame) {
            return Some("a frame was not completed in time");
        }
        if now.duration_since(self.last_frame_at) > d.idle {
            return Some("idle for too long");
        }
        None
    }
}

/// Retries `accept` after a failure for lack of resources, on the timer rather than on a
/// readiness edge that will not come.
#[derive(Debug, Default)]
pub(crate) struct AcceptRetry {
    retry_at: Option<Instant>,
}

impl AcceptRetry {
    /// Records a failed `accept`; warns once per episode.
    pub fn on_failure(&mut self, id: NodeId, now: Instant, e: &io::Error) {
        if self.retry_at.is_none() {
            log::warn!("node {id}: accept failed: {e}; retrying every {ACCEPT_RETRY_INTERVAL:?} until it works");
        }
        self.retry_at = Some(now + ACCEPT_RETRY_INTERVAL);
    }

    /// The backlog was drained: the episode is over.
    pub fn on_drained(&mut self, id: NodeId) {
        if self.retry_at.take().is_some() {
            log::info!("node {id}: accepting connections again");
        }
    }

    /// Whether to call `accept` now although no event asked for it.
    pub fn due(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| now >= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_scale_with_the_heartbeat_but_not_below_the_floor() {
        assert_eq!(Deadlines::new(Duration::from_millis(50)).idle, IDLE_TIMEOUT_MIN);
        let d = Deadlines::new(Duration::from_millis(500));
        assert_eq!((d.idle, d.keepalive), (Duration::from_secs(10), Duration::from_millis(2500)));
        assert!(Deadlines::new(Duration::MAX).idle >= IDLE_TIMEOUT_MIN, "no overflow");
    }

    #[test]
    fn activity_expires_when_idle_or_a_frame_stalls() {
        let d = Deadlines::new(Duration::from_millis(50));
        let t0 = Instant::now();
        let mut a = Activity::new(t0);
        assert_eq!(a.expired(t0 + d.idle / 2, &d), None);
        assert!(a.expired(t0 + d.idle * 2, &d).is_some(), "idle");
        a.on_read(t0 + d.idle / 2, 1, 10);
        a.on_read(t0 + d.idle, 0, 20);
        assert_eq!(a.partial_since, Some(t0 + d.idle / 2), "the partial frame began with the first read");
        a.last_frame_at = t0 + FRAME_DEADLINE * 2; // keep it from being idle
        assert!(a.expired(t0 + FRAME_DEADLINE * 2, &d).is_some(), "stalled frame");
    }

    #[test]
    fn accept_is_retried_on_the_timer() {
        let mut r = AcceptRetry::default();
        let t0 = Instant::now();
        assert!(!r.due(t0));
        r.on_failure(1, t0, &io::Error::other("EMFILE"));
        assert!(!r.due(t0) && r.due(t0 + ACCEPT_RETRY_INTERVAL));
        r.on_drained(1);
        assert!(!r.due(t0 + ACCEPT_RETRY_INTERVAL * 2));
    }
}
