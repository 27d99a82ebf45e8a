//! A UDP relay with loss and delay, for QUIC over a worse network than
//! loopback (the kernel here has no netem): datagrams from each client go
//! to the upstream from a socket of their own, answers go back, and each
//! datagram either way is dropped with a probability and delayed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::server::lock;

/// What a [`UdpRelay`] does to datagrams, both ways.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpRelayConfig {
    /// The share of datagrams dropped, 0.0–1.0.
    pub loss: f64,
    /// How long each datagram is held before it is sent on.
    pub delay: Duration,
    /// The seed of the drop decisions (runs are repeatable).
    pub seed: u64,
}

/// A UDP relay on 127.0.0.1 to an upstream address; see the module docs.
/// Dropping it stops it.
#[derive(Debug)]
pub struct UdpRelay {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Stats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    /// The xorshift state of the drop decisions.
    dice: AtomicU64,
}

impl Stats {
    /// Whether the next datagram is lost.
    fn lose(&self, loss: f64) -> bool {
        if loss <= 0.0 {
            return false;
        }
        let mut x = self.dice.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.dice.store(x, Ordering::Relaxed);
        let lost = (x >> 11) as f64 / (1u64 << 53) as f64 <= loss;
        let counter = if lost { &self.dropped } else { &self.forwarded };
        counter.fetch_add(1, Ordering::Relaxed);
        lost
    }
}

/// Sends `data` to `to` from `socket` after `delay`, unless it is lost.
fn pass_on(
    socket: &Arc<UdpSocket>,
    data: &[u8],
    to: SocketAddr,
    config: &UdpRelayConfig,
    stats: &Stats,
) {
    if stats.lose(config.loss) {
        return;
    }
    let (socket, data, delay) = (socket.clone(), data.to_vec(), config.delay);
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let _ = socket.send_to(&data, to).await;
    });
}

impl UdpRelay {
    /// Starts relaying to `upstream`.
    pub async fn start(upstream: SocketAddr, config: UdpRelayConfig) -> std::io::Result<UdpRelay> {
        let front = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
        let addr = front.local_addr()?;
        let stats = Arc::new(Stats {
            dice: AtomicU64::new(config.seed | 1),
            ..Stats::default()
        });
        let inner = stats.clone();
        let task = tokio::spawn(async move {
            let stats = inner;
            let peers: std::sync::Mutex<HashMap<SocketAddr, Arc<UdpSocket>>> =
                std::sync::Mutex::new(HashMap::new());
            let mut buf = vec![0u8; 65_536];
            let mut answers = tokio::task::JoinSet::new();
            while let Ok((n, client)) = front.recv_from(&mut buf).await {
                let known = lock(&peers).get(&client).cloned();
                let back = match known {
                    Some(s) => s,
                    None => {
                        let Ok(s) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await else {
                            continue;
                        };
                        let s = Arc::new(s);
                        lock(&peers).insert(client, s.clone());
                        // Answers from upstream to this client.
                        let (s2, front2, stats2) = (s.clone(), front.clone(), stats.clone());
                        answers.spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok((n, _)) = s2.recv_from(&mut buf).await {
                                pass_on(&front2, &buf[..n], client, &config, &stats2);
                            }
                        });
                        s
                    }
                };
                pass_on(&back, &buf[..n], upstream, &config, &stats);
            }
        });
        Ok(UdpRelay { addr, stats, task })
    }

    /// The address clients send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams passed on and dropped so far, both ways.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.stats.forwarded.load(Ordering::Relaxed),
            self.stats.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
