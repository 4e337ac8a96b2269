//! A TCP proxy on loopback that a test controls, to inject network faults between a client and
//! a real server (nats-server, an OPC-UA server, an HTTP server).
//!
//! Three modes:
//! - [`Mode::Pass`]: bytes flow both ways;
//! - [`Mode::Blackhole`]: connections stay open but every byte is silently dropped, in both
//!   directions, and new connections are accepted and then starved — what a dead route, a
//!   pulled cable or a hung peer looks like to the client (no RST, no FIN);
//! - [`Mode::Refuse`]: every open connection is reset and new ones are closed at once — what a
//!   stopped server looks like.
//!
//! The proxy runs on its own thread with its own tokio runtime, so it keeps working whatever the
//! test does with its own runtime (paused time, blocking calls).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Pass,
    /// Keep connections open, drop every byte.
    Blackhole,
    /// Reset every connection, refuse new ones.
    Refuse,
}

/// A running proxy. Dropping it stops it and closes every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    connections: Arc<AtomicU64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`, in [`Mode::Pass`].
    ///
    /// # Panics
    /// When no loopback port can be bound (the test cannot run at all).
    pub fn start(upstream: SocketAddr) -> Self {
        let (mode_tx, mode_rx) = watch::channel(Mode::Pass);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let connections = Arc::new(AtomicU64::new(0));
        let counter = connections.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind loopback");
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    tokio::select! {
                        _ = accept_loop(listener, upstream, mode_rx, counter) => {}
                        _ = shutdown_rx => {}
                    }
                });
            })
            .expect("spawn proxy thread");
        let addr = addr_rx.recv().expect("proxy thread started");
        Self {
            addr,
            mode: mode_tx,
            connections,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches mode; takes effect for open connections at once.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// How many client connections the proxy has accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    counter: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        counter.fetch_add(1, Ordering::SeqCst);
        if *mode.borrow() == Mode::Refuse {
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let mode = mode.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                // Upstream down: behave like it (close the client).
                let _ = client.set_zero_linger();
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::select! {
                _ = pump(cr, sw, mode.clone()) => {}
                _ = pump(sr, cw, mode) => {}
            }
        });
    }
}

/// Copies `from` to `to` while the mode allows; drops bytes in blackhole mode; returns (closing
/// both halves) on EOF, an error, or refuse mode.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = from.read(&mut buf) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                match *mode.borrow() {
                    Mode::Pass => {}
                    Mode::Blackhole => continue,
                    Mode::Refuse => return,
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Refuse {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn passes_blackholes_and_refuses() {
        let proxy = FaultProxy::start(echo_server());
        let mut c = std::net::TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");

        proxy.set_mode(Mode::Blackhole);
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c.write_all(b"lost").unwrap();
        let err = c.read(&mut buf).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "a blackhole neither answers nor closes: {err:?}"
        );

        proxy.set_mode(Mode::Pass);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"back").unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(
            &buf, b"back",
            "bytes sent during the blackhole were dropped, not delayed"
        );

        proxy.set_mode(Mode::Refuse);
        let n = c.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "refuse mode closes open connections");
        assert!(proxy.connections_accepted() >= 1);
    }
}
