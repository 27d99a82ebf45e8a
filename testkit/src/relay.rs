//! A TCP relay to put in front of a server this crate does not control
//! (a real tus server, caddy): it forwards both ways, counts the bytes the
//! clients send, can pace them, and drops the connection when the count
//! reaches a cut point — a network failure in the middle of a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::server::lock;

/// How a [`Relay`] treats the bytes clients send.
#[derive(Clone, Debug, Default)]
pub struct RelayConfig {
    /// Drop the connection when the bytes sent by all clients together
    /// reach each of these counts (each once).
    pub cuts: Vec<u64>,
    /// Forward client bytes at most this fast (bytes per second).
    pub rate: Option<u64>,
}

/// A relay on 127.0.0.1 to an upstream address; see the module docs.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    sent: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    sent: Arc<AtomicU64>,
    cuts: std::sync::Mutex<Vec<u64>>,
    rate: Option<u64>,
}

impl Relay {
    /// Starts relaying from an ephemeral port to `upstream`.
    pub async fn start(upstream: SocketAddr, config: RelayConfig) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sent = Arc::new(AtomicU64::new(0));
        let mut cuts = config.cuts;
        cuts.sort_unstable();
        let shared = Arc::new(Shared {
            upstream,
            sent: sent.clone(),
            cuts: std::sync::Mutex::new(cuts),
            rate: config.rate,
        });
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(shared.upstream).await {
                        relay(client, server, shared).await;
                    }
                });
            }
        });
        Ok(Relay { addr, sent, accept })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes the clients have sent through the relay so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut buf = vec![0u8; 16 << 10];
    let began = tokio::time::Instant::now();
    let mut mine = 0u64;
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let before = shared.sent.load(Ordering::Acquire);
        // A cut point within these bytes: forward up to it, then drop.
        let cut = {
            let mut cuts = lock(&shared.cuts);
            let hit = cuts
                .iter()
                .position(|&p| p > before && p <= before + n as u64);
            hit.map(|i| cuts.remove(i))
        };
        let take = cut.map_or(n, |p| (p - before) as usize);
        if let Some(rate) = shared.rate {
            mine += take as u64;
            let due = Duration::from_secs_f64(mine as f64 / rate.max(1) as f64);
            tokio::time::sleep_until(began + due).await;
        }
        if server_write.write_all(&buf[..take]).await.is_err() {
            break;
        }
        shared.sent.fetch_add(take as u64, Ordering::AcqRel);
        if cut.is_some() {
            // Both directions go at once: the connection is lost.
            down.abort();
            return;
        }
    }
    let _ = server_write.shutdown().await;
    let _ = down.await;
}
