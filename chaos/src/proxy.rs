//! A TCP proxy the suite controls, for the faults a server cannot inject on itself.
//!
//! Why: a failover needs the clients to find "the current primary" at one address (in
//! production a Sentinel or a virtual IP does that; here the proxy is retargeted), the replica
//! must be able to fall behind its primary on demand (asynchronous replication lagging is what
//! makes a failover lose writes; on loopback it never lags by itself), and ZooKeeper has no
//! command to kill client connections. The proxy does all three: [`Proxy::retarget`],
//! [`Proxy::freeze`] and [`Proxy::cut_all`]. Plain std threads, two per connection: the proxy
//! must keep working while the suite's own code sleeps or signals processes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// A loopback TCP proxy to `127.0.0.1:<target>`, stopped on drop.
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    target: AtomicU16,
    frozen: AtomicBool,
    closed: AtomicBool,
    /// Both ends of every open connection, to cut them.
    streams: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn streams(&self) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(target: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        shared.target.store(target, Ordering::SeqCst);
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                if accepting.closed.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(down) = down else { continue };
                let target = accepting.target.load(Ordering::SeqCst);
                let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (Ok(down2), Ok(up2), Ok(down3), Ok(up3)) = (
                    down.try_clone(),
                    up.try_clone(),
                    down.try_clone(),
                    up.try_clone(),
                ) else {
                    continue;
                };
                accepting.streams().extend([down3, up3]);
                for (from, to) in [(down, up2), (up, down2)] {
                    let shared = accepting.clone();
                    std::thread::spawn(move || pump(from, to, &shared));
                }
            }
        });
        Ok(Proxy { port, shared })
    }

    /// New connections go to `target` from now on (open ones are left alone: [`cut_all`]
    /// them).
    ///
    /// [`cut_all`]: Proxy::cut_all
    pub fn retarget(&self, target: u16) {
        self.shared.target.store(target, Ordering::SeqCst);
    }

    /// From now on every byte through the proxy, in both directions and on every connection, is
    /// swallowed while the connections stay open: the far side sees silence, as behind a
    /// network partition. There is no thaw: the suite kills what was behind a frozen proxy.
    pub fn freeze(&self) {
        self.shared.frozen.store(true, Ordering::SeqCst);
    }

    /// Closes every open connection (both ends); returns how many there were.
    pub fn cut_all(&self) -> usize {
        let streams = std::mem::take(&mut *self.shared.streams());
        for s in &streams {
            let _ = s.shutdown(Shutdown::Both);
        }
        streams.len() / 2
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if shared.frozen.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.cut_all();
        // Wake the accept loop so it sees `closed` and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An echo server on a free port.
    fn echo() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    fn round_trip(port: u16) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn forwards_cuts_retargets_and_freezes() {
        let proxy = Proxy::start(echo()).expect("proxy");
        assert_eq!(round_trip(proxy.port).expect("echo"), b"ping");
        let mut open = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
        open.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        open.write_all(b"x").expect("write");
        let mut one = [0u8; 1];
        open.read_exact(&mut one).expect("echo");
        assert!(proxy.cut_all() >= 1);
        assert!(
            matches!(open.read(&mut one), Ok(0) | Err(_)),
            "a cut connection is closed"
        );
        proxy.retarget(echo());
        assert_eq!(round_trip(proxy.port).expect("echo"), b"ping");
        proxy.freeze();
        assert!(round_trip(proxy.port).is_err(), "a frozen proxy is silent");
    }
}
