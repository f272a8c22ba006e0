//! The faults a campaign injects into a city while the harness plays it. All of them stay on
//! this machine and end by themselves or when dropped:
//! - a TCP proxy between one node and a peer (Redis), which can add latency or stall every
//!   byte;
//! - signals to a process (SIGSTOP past a lease, SIGCONT, kill -9);
//! - Redis's own faults (`CLIENT KILL TYPE pubsub` cuts every node's pub/sub connection);
//! - a node's wall clock skewed by libfaketime, its monotonic clock left alone.
//!
//! A campaign (the suite's short form, or `loadtest/campaign.sh`) runs them on a schedule,
//! then lets the city go quiet and holds the history against the end state (`check.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to the bytes it carries now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Link {
    /// Passes them on at once.
    #[default]
    Clear,
    /// Holds each chunk this long before passing it on (both ways).
    Delay(Duration),
    /// Passes nothing until the link changes again (connections stay open).
    Stalled,
    /// Cut: each connection is closed as its next bytes arrive (what they carried is lost),
    /// and new ones are closed at once, as a network partition answers.
    Down,
}

/// A TCP proxy on loopback in front of one address; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `to`.
    pub async fn start(to: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (link, watching) = watch::channel(Link::Clear);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watching.borrow() == Link::Down {
                    continue;
                }
                let watching = watching.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(to).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        carry(client, server, watching).await;
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            link,
            accepting,
        })
    }

    /// The address clients connect to instead of the peer's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what the link does from now on, for every connection.
    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Carries one connection both ways until either side closes it.
async fn carry(client: TcpStream, server: TcpStream, link: watch::Receiver<Link>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let link = Arc::new(link);
    tokio::select! {
        _ = pipe(client_read, server_write, Arc::clone(&link)) => {}
        _ = pipe(server_read, client_write, link) => {}
    }
}

/// Copies `from` into `to`, each chunk under the link as it stands when the chunk arrives.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<watch::Receiver<Link>>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut link = (*link).clone();
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        loop {
            let now = *link.borrow_and_update();
            match now {
                Link::Clear => break,
                Link::Down => return,
                Link::Delay(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                // Until the link changes (a dropped proxy ends the wait too).
                Link::Stalled => {
                    if link.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Sends `signal` (`-STOP`, `-CONT`, `-KILL`, ...) to process `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
    Ok(())
}

/// `CLIENT KILL TYPE pubsub` on the Redis at `url`: every subscribed connection is cut (and
/// whatever was on its way over it lost); answers how many.
pub async fn kill_pubsub(url: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut connection)
        .await?;
    Ok(killed)
}

/// Where Debian's libfaketime lives.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The environment that starts a process with its wall clock `seconds` off (either way) and
/// its monotonic clock true, so its leases still run on real time while every instant it
/// stamps or compares is skewed. Fails with one line when libfaketime is missing.
pub fn skewed_clock(seconds: i64) -> anyhow::Result<Vec<(&'static str, String)>> {
    anyhow::ensure!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "a skewed clock needs libfaketime (apt-get install faketime)"
    );
    Ok(vec![
        ("LD_PRELOAD", LIBFAKETIME.to_owned()),
        ("FAKETIME", format!("{seconds:+}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on loopback: what it reads, it writes back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(socket: &mut TcpStream) -> Duration {
        let started = Instant::now();
        socket.write_all(b"ping").await.expect("write");
        let mut back = [0u8; 4];
        socket.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"ping");
        started.elapsed()
    }

    #[tokio::test]
    async fn the_proxy_carries_delays_and_stalls_then_clears() {
        let proxy = Proxy::start(echo().await).await.expect("proxy");
        let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut socket).await < Duration::from_millis(200));
        proxy.set(Link::Delay(Duration::from_millis(150)));
        // Held once each way.
        assert!(round_trip(&mut socket).await >= Duration::from_millis(300));
        proxy.set(Link::Stalled);
        let stalled = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut socket));
        assert!(stalled.await.is_err(), "nothing passes a stalled link");
        // The chunk held back goes on once the link clears.
        proxy.set(Link::Clear);
        let mut back = [0u8; 4];
        socket.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"ping");
        assert!(round_trip(&mut socket).await < Duration::from_millis(200));
        // Cut: what is sent is lost and the connection closed; new ones are refused.
        proxy.set(Link::Down);
        socket.write_all(b"lost").await.expect("write");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut rest));
        assert!(closed.await.expect("closed in time").is_ok());
        assert!(rest.is_empty(), "nothing came back: {rest:?}");
        let mut late = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut nothing = Vec::new();
        let refused = tokio::time::timeout(Duration::from_secs(2), late.read_to_end(&mut nothing));
        assert!(refused.await.expect("closed in time").is_ok() && nothing.is_empty());
    }

    #[test]
    fn a_skewed_clock_is_an_offset_either_way() {
        if std::path::Path::new(LIBFAKETIME).exists() {
            let env = skewed_clock(-90).expect("env");
            assert!(env.contains(&("FAKETIME", "-90".to_owned())));
            assert!(env.contains(&("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned())));
        } else {
            assert!(skewed_clock(35).is_err());
        }
    }
}
