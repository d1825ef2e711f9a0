//! The node handle: starts the node's thread and stops it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use mio::{Poll, Waker};

use crate::client::Client;
use crate::config::Config;
use crate::core::NodeId;
use crate::error::{Error, Result};
use crate::runtime::{NodeLoop, Shared};
use crate::state_machine::StateMachine;

/// One running quorate node: a thread that owns the Raft state, the state machine and
/// the node's connections. Dropping it stops it, like [`Node::stop`].
pub struct Node<M: StateMachine> {
    id: NodeId,
    local_addr: SocketAddr,
    client: Client<M>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl<M: StateMachine> Node<M> {
    /// Binds `config`'s listen address and starts the node's thread.
    pub fn start(config: Config, machine: M) -> Result<Node<M>> {
        config.validate()?;
        let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
            let why = format!("cannot listen on {}: {e}", config.listen);
            log::error!("node {}: {why}", config.id);
            crate::Error::Io(std::io::Error::new(e.kind(), why))
        })?;
        Node::start_with_listener(config, listener, machine)
    }

    /// Starts the node on an already bound listener, so tests can bind port 0 first and
    /// learn every node's address before configuring any.
    pub fn start_with_listener(mut config: Config, listener: std::net::TcpListener, machine: M) -> Result<Node<M>> {
        let local_addr = listener.local_addr()?;
        config.listen = local_addr;
        if config.advertise.is_none() && local_addr.ip().is_unspecified() && !config.join {
            log::warn!(
                "node {}: listening on {local_addr} without Config::advertise: peers will record an address they cannot dial",
                config.id
            );
        }
        config.validate()?;
        listener.set_nonblocking(true)?;
        let listener = mio::net::TcpListener::from_std(listener);
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), crate::runtime::WAKER)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            waker,
            sleeping: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            storage_failure: OnceLock::new(),
            watchers: parking_lot::Mutex::default(),
            new_watcher: AtomicBool::new(false),
        });
        let (tx, rx) = crossbeam_channel::bounded(config.client_queue);
        let forward = crate::remote::forwarding_options(
            &config.cluster_id,
            config.cluster_key,
            config.peers.values().copied(),
            config.max_frame_bytes,
        );
        let client =
            Client::new(tx, rx.clone(), shared.clone(), config.request_timeout, config.max_append_bytes, forward);
        let id = config.id;
        if !config.cluster_key.is_secret() {
            log::warn!(
                "node {id}: no cluster secret configured (Config::cluster_secret): peers are unauthenticated, and anyone who can reach {local_addr} can take part in the cluster"
            );
        }
        let node_loop = NodeLoop::new(&config, listener, poll, machine, rx, shared.clone())?;
        let thread = std::thread::Builder::new()
            .name(format!("quorate-node-{id}"))
            .spawn(move || node_loop.run())
            .map_err(Error::Io)?;
        Ok(Node { id, local_addr, client, shared, thread: Some(thread) })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address this node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A client handle for this node (`Clone + Send + Sync`).
    pub fn client(&self) -> Client<M> {
        self.client.clone()
    }

    /// Whether the node's thread is still running (it stops by itself if the state
    /// machine panics).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the node gracefully: pending requests fail (with `Stopped`, or
    /// `LeadershipLost` for writes already proposed), the thread exits and its sockets close.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.shared.waker.wake();
        if thread.join().is_err() {
            log::error!("node {}: its thread panicked", self.id);
        }
    }
}

impl<M: StateMachine> Drop for Node<M> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
