//! Dialling a host: Happy Eyeballs v2 (RFC 8305) over its resolved
//! addresses, so one address that does not answer costs a fraction of a
//! second instead of the whole connect budget.
//!
//! The addresses are tried in the order RFC 8305 §4 gives (the first
//! address's family first, then alternating IPv6 and IPv4); each attempt
//! starts a [Connection Attempt Delay](crate::HttpConfig::connection_attempt_delay)
//! after the one before, or at once when the one before has failed, while
//! the earlier attempts keep running. The first connection made wins and
//! the other attempts are dropped, which closes their sockets.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};
use transfer_core::{ErrorKind, TimeoutKind, TransferError};

/// One connection attempt under way.
type Attempt = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// What happened next while dialling.
enum Step {
    /// The attempt at `order[index]`, at `slot` among those running, ended.
    Ended {
        slot: usize,
        index: usize,
        result: io::Result<TcpStream>,
    },
    /// Time to start the next attempt.
    Next,
    /// The connect deadline passed.
    Deadline,
}

/// A TCP connection to `host:port` over the first of `addrs` that connects,
/// trying them as RFC 8305 says with `delay` between attempts, by
/// `deadline`.
///
/// Fails with [`ErrorKind::ConnectFailed`] once every address has failed,
/// naming each with its error; with `Timeout(Connect)` when `deadline`
/// passes first, naming each address tried; and with
/// [`ErrorKind::TooManyOpenFiles`] at once when this process is out of
/// file descriptors (another address would fail the same way).
pub(crate) async fn connect(
    host: &str,
    port: u16,
    addrs: &[SocketAddr],
    deadline: Instant,
    delay: Duration,
) -> Result<TcpStream, TransferError> {
    let order = interleave(addrs);
    if order.is_empty() {
        return Err(TransferError::new(
            ErrorKind::ConnectFailed,
            format!("could not connect to {host}:{port}: no address"),
        ));
    }
    // Each started attempt's error, by its place in `order`.
    let mut errors: Vec<Option<String>> = Vec::with_capacity(order.len());
    let mut running: Vec<(usize, Attempt)> = Vec::new();
    let mut next_at = Instant::now();
    loop {
        let more = errors.len() < order.len();
        let step = tokio::select! {
            biased;
            (slot, index, result) = ended(&mut running), if !running.is_empty() => {
                Step::Ended { slot, index, result }
            }
            () = sleep_until(deadline) => Step::Deadline,
            () = sleep_until(next_at), if more => Step::Next,
        };
        match step {
            Step::Next => {
                let index = errors.len();
                errors.push(None);
                running.push((index, Box::pin(TcpStream::connect(order[index]))));
                next_at = Instant::now() + delay;
            }
            Step::Ended {
                result: Ok(stream), ..
            } => return Ok(stream),
            Step::Ended {
                slot,
                index,
                result: Err(e),
            } => {
                drop(running.swap_remove(slot));
                if transfer_core::is_out_of_descriptors(&e) {
                    // This process's shortage, not the server's.
                    return Err(TransferError::new(
                        ErrorKind::TooManyOpenFiles,
                        format!("connecting to {}: {e}", order[index]),
                    ));
                }
                errors[index] = Some(e.to_string());
                // The next address need not wait for a failed one.
                next_at = Instant::now();
                if running.is_empty() && errors.len() == order.len() {
                    return Err(TransferError::new(
                        ErrorKind::ConnectFailed,
                        format!(
                            "could not connect to {host}:{port}: {}",
                            tried(&order, &errors)
                        ),
                    ));
                }
            }
            Step::Deadline => {
                let tried = if errors.is_empty() {
                    "no address tried".to_owned()
                } else {
                    tried(&order, &errors)
                };
                return Err(TransferError::new(
                    ErrorKind::Timeout(TimeoutKind::Connect),
                    format!("could not connect to {host}:{port} in time: {tried}"),
                ));
            }
        }
    }
}

/// The first of the `running` attempts to end: its slot in `running`, its
/// place in the dialling order and its result.
async fn ended(running: &mut [(usize, Attempt)]) -> (usize, usize, io::Result<TcpStream>) {
    std::future::poll_fn(|cx| {
        for (slot, (index, attempt)) in running.iter_mut().enumerate() {
            if let Poll::Ready(result) = attempt.as_mut().poll(cx) {
                return Poll::Ready((slot, *index, result));
            }
        }
        Poll::Pending
    })
    .await
}

/// "A: error; B: timed out", for each address tried, in the order tried.
fn tried(order: &[SocketAddr], errors: &[Option<String>]) -> String {
    order
        .iter()
        .zip(errors)
        .map(|(addr, e)| format!("{addr}: {}", e.as_deref().unwrap_or("timed out")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `addrs` in the order RFC 8305 §4 tries them: the family of the first
/// address first, then alternating families, each family in its given
/// order.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut same, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv6() == first.is_ipv6());
    same.reverse();
    other.reverse();
    let mut order = Vec::with_capacity(addrs.len());
    loop {
        match (same.pop(), other.pop()) {
            (None, None) => return order,
            (a, b) => order.extend(a.into_iter().chain(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn families_alternate_starting_with_the_first_address() {
        let given = addrs(&[
            "[2001:db8::1]:443",
            "[2001:db8::2]:443",
            "[2001:db8::3]:443",
            "192.0.2.1:443",
            "192.0.2.2:443",
        ]);
        assert_eq!(
            interleave(&given),
            addrs(&[
                "[2001:db8::1]:443",
                "192.0.2.1:443",
                "[2001:db8::2]:443",
                "192.0.2.2:443",
                "[2001:db8::3]:443",
            ])
        );
        let v4_first = addrs(&["192.0.2.1:443", "192.0.2.2:443", "[2001:db8::1]:443"]);
        assert_eq!(
            interleave(&v4_first),
            addrs(&["192.0.2.1:443", "[2001:db8::1]:443", "192.0.2.2:443"])
        );
        let one_family = addrs(&["192.0.2.2:443", "192.0.2.1:443"]);
        assert_eq!(interleave(&one_family), one_family);
        assert!(interleave(&[]).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn no_address_fails_at_once_and_a_passed_deadline_tries_none() {
        let far = Instant::now() + Duration::from_secs(3600);
        let e = connect("a.test", 80, &[], far, Duration::from_millis(250))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectFailed);
        assert_eq!(e.detail(), "could not connect to a.test:80: no address");
        assert_eq!(
            Instant::now() + Duration::from_secs(3600),
            far,
            "no waiting"
        );
        let passed = Instant::now();
        let e = connect(
            "a.test",
            80,
            &addrs(&["127.0.0.1:9"]),
            passed,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout(TimeoutKind::Connect));
        assert_eq!(
            e.detail(),
            "could not connect to a.test:80 in time: no address tried"
        );
    }
}
