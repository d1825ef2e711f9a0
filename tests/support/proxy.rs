//! A TCP proxy for one directed link between two nodes, that a test can cut and heal.
//!
//! A node dials each peer at the address in its own `Config`, so giving node `i` the
//! address of a proxy in front of node `j` routes everything `i` sends to `j` through
//! it. Cutting the proxy closes every connection it carries and refuses new ones (they
//! are accepted and closed at once) until it is healed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

struct Inner {
    target: SocketAddr,
    cut: AtomicBool,
    stop: AtomicBool,
    /// Both sockets of every forwarded connection, so `cut` can close them.
    conns: Mutex<Vec<TcpStream>>,
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
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
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
        self.inner.cut.store(true, Ordering::SeqCst);
        close_all(&self.inner);
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

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.inner.cut.store(false, Ordering::SeqCst);
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
    for s in inner.conns.lock().unwrap().drain(..) {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    for stream in listener.incoming() {
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = stream else { continue };
        if inner.cut.load(Ordering::SeqCst) {
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
        {
            // `cut` sets the flag before taking the lock: either it sees these sockets or
            // we see the flag.
            let mut conns = inner.conns.lock().unwrap();
            if inner.cut.load(Ordering::SeqCst) || inner.stop.load(Ordering::SeqCst) {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                continue;
            }
            conns.push(c3);
            conns.push(s3);
        }
        inner.forwarded.fetch_add(1, Ordering::SeqCst);
        let (i1, i2) = (inner.clone(), inner.clone());
        std::thread::spawn(move || {
            pump(client, s2, Some(&i1.bytes));
            i1.ended.fetch_add(1, Ordering::SeqCst);
        });
        std::thread::spawn(move || {
            pump(server, c2, None);
            i2.ended.fetch_add(1, Ordering::SeqCst);
        });
    }
}

/// Copies `from` to `to` until either side fails or closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicUsize>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if let Some(count) = count {
                    count.fetch_add(n, Ordering::SeqCst);
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
