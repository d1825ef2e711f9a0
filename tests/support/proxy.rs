//! A TCP proxy for one directed link between two nodes, that a test can cut, black-hole,
//! slow down and heal.
//!
//! A node dials each peer at the address in its own `Config`, so giving node `i` the
//! address of a proxy in front of node `j` routes everything `i` sends to `j` through
//! it (a node sends only on connections it dialed, so the proxy is the link `i -> j`).
//! See [`LinkMode`] for what the link can do.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a link does with the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Forwards every byte (after the link's delay, if any).
    Pass,
    /// A black hole: connections stay open and bytes are read and discarded, so the sender
    /// sees no error and learns of the loss only by silence. A connection that lost bytes
    /// is closed when the link passes bytes again, as TCP would end it, rather than deliver
    /// a stream with a hole in it.
    Drop,
    /// Closes every connection and refuses new ones (accepted, then closed at once).
    Cut,
}

impl LinkMode {
    fn from_u8(v: u8) -> LinkMode {
        match v {
            0 => LinkMode::Pass,
            1 => LinkMode::Drop,
            _ => LinkMode::Cut,
        }
    }
}

struct Inner {
    target: SocketAddr,
    /// A [`LinkMode`] as `u8`.
    mode: AtomicU8,
    /// Latency added to every chunk read, in microseconds.
    delay_us: AtomicU64,
    stop: AtomicBool,
    /// Both sockets of every forwarded connection still open, by connection number, so
    /// `cut` can close them; a connection's pumps remove it when they end.
    conns: Mutex<HashMap<usize, [TcpStream; 2]>>,
    /// Connections forwarded so far, and forwarding directions that ended.
    forwarded: AtomicUsize,
    ended: AtomicUsize,
    /// Bytes forwarded from the dialer to the target.
    bytes: AtomicUsize,
}

/// Forwards bytes both ways between whoever connects to [`Proxy::addr`] and `target`.
pub struct Proxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            target,
            mode: AtomicU8::new(LinkMode::Pass as u8),
            delay_us: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            forwarded: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        });
        let acceptor = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{}", addr.port()))
                .spawn(move || accept_loop(listener, inner))
                .expect("spawn proxy thread")
        };
        Proxy { addr, inner, acceptor: Some(acceptor) }
    }

    /// Where to dial to reach the target through this proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.set_mode(LinkMode::Cut);
    }

    /// Switches the link to `mode` (see [`LinkMode`]); `Cut` closes every connection now.
    pub fn set_mode(&self, mode: LinkMode) {
        self.inner.mode.store(mode as u8, Ordering::SeqCst);
        if mode == LinkMode::Cut {
            close_all(&self.inner);
        }
    }

    pub fn mode(&self) -> LinkMode {
        self.inner.mode()
    }

    /// Holds every chunk this long before forwarding it (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.inner.delay_us.store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// How many connections it has forwarded, and how many of them ended (either way).
    pub fn connections(&self) -> (usize, usize) {
        let ended = self.inner.ended.load(Ordering::SeqCst);
        (self.inner.forwarded.load(Ordering::SeqCst), ended.div_ceil(2))
    }

    /// Bytes forwarded so far from whoever dialed to the target.
    pub fn bytes_forwarded(&self) -> usize {
        self.inner.bytes.load(Ordering::SeqCst)
    }

    /// Forwards every byte again, at once, on new connections and on those still open.
    pub fn heal(&self) {
        self.set_delay(Duration::ZERO);
        self.set_mode(LinkMode::Pass);
    }
}

impl Inner {
    fn mode(&self) -> LinkMode {
        LinkMode::from_u8(self.mode.load(Ordering::SeqCst))
    }

    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::SeqCst))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        close_all(&self.inner);
        // Wake the blocking accept so the thread sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn close_all(inner: &Inner) {
    for s in inner.conns.lock().unwrap().drain().flat_map(|(_, pair)| pair) {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    for stream in listener.incoming() {
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = stream else { continue };
        if inner.mode() == LinkMode::Cut {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&inner.target, Duration::from_secs(1)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) =
            (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone())
        else {
            continue;
        };
        let number = {
            // `cut` sets the flag before taking the lock: either it sees these sockets or
            // we see the flag.
            let mut conns = inner.conns.lock().unwrap();
            if inner.mode() == LinkMode::Cut || inner.stop.load(Ordering::SeqCst) {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                continue;
            }
            let number = inner.forwarded.fetch_add(1, Ordering::SeqCst);
            conns.insert(number, [c3, s3]);
            number
        };
        let (i1, i2) = (inner.clone(), inner.clone());
        std::thread::spawn(move || {
            pump(client, s2, &i1, true);
            i1.conns.lock().unwrap().remove(&number);
            i1.ended.fetch_add(1, Ordering::SeqCst);
        });
        std::thread::spawn(move || {
            pump(server, c2, &i2, false);
            i2.conns.lock().unwrap().remove(&number);
            i2.ended.fetch_add(1, Ordering::SeqCst);
        });
    }
}

/// Copies `from` to `to` as the link's mode says, until either side fails or closes or
/// the link is cut, then closes both. `forward`: the direction from the dialer to the
/// target, whose bytes are counted.
fn pump(mut from: TcpStream, mut to: TcpStream, inner: &Inner, forward: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes of this stream were discarded: it must not carry any more.
    let mut lost_bytes = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = inner.delay();
        if !delay.is_zero() {
            // The latency is the fault being injected, not a wait for anything.
            std::thread::sleep(delay);
        }
        match inner.mode() {
            LinkMode::Cut => break,
            LinkMode::Drop => lost_bytes = true,
            LinkMode::Pass if lost_bytes => break,
            LinkMode::Pass => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if forward {
                    inner.bytes.fetch_add(n, Ordering::SeqCst);
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
