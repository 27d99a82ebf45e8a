#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! Dialling over real loopback sockets: Happy Eyeballs (RFC 8305) gets past
//! an address that never answers or refuses, and says what each address
//! did when none connects.
//!
//! A silent address needs no privileges: a listener with a backlog of 0
//! that never accepts, once one connection fills its accept queue, makes
//! Linux drop further SYNs, so connecting to it hangs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use testkit::{Origin, Resource};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use transfer_core::{ErrorKind, RequestBody, Transport, TransportRequest};
use transport_http::{HttpConfig, HttpTransport};

/// The connect budget a request has (the default).
const BUDGET: Duration = Duration::from_secs(15);

/// An address whose connection attempts hang, on `ip` and `port`.
struct Silent {
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl Silent {
    async fn at(addr: SocketAddr) -> Silent {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(addr).unwrap();
        let listener = socket.listen(0).unwrap();
        // The queue holds one connection (or two, with the kernel's
        // rounding): fill it until an attempt hangs.
        let mut queued = Vec::new();
        for _ in 0..4 {
            match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => queued.push(s),
                Ok(Err(e)) => panic!("connecting to the silent address {addr} failed: {e}"),
                Err(_) => {
                    return Silent {
                        _listener: listener,
                        _queued: queued,
                    };
                }
            }
        }
        panic!(
            "connections to {addr} never hang (its accept queue did not fill): \
             this kernel does not drop SYNs to a full listener, so the test cannot make a silent address"
        );
    }
}

fn get(url: &str) -> TransportRequest {
    TransportRequest::new(http::Request::get(url).body(RequestBody::empty()).unwrap())
}

/// A free port on both 127.0.0.1 and 127.0.0.2 is the origin's; this is
/// the second loopback address the tests put other listeners on.
fn other_loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port)
}

/// `origin.test` on the origin's port, resolved to `first` and then the
/// origin itself.
fn config(first: SocketAddr, origin: &Origin) -> HttpConfig {
    HttpConfig::default()
        .resolve("origin.test", first)
        .resolve("origin.test", origin.http_addr())
}

/// The first address never answers: the second is tried 250 ms later and
/// the request succeeds well inside the 15 s connect budget (before
/// Happy Eyeballs, it spent the whole budget on the first and failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_first_address_costs_a_fraction_of_the_connect_budget() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/x", Resource::seeded(3, 1000));
    let port = origin.http_addr().port();
    let silent = other_loopback(port);
    let _hole = Silent::at(silent).await;
    let transport = HttpTransport::new(config(silent, &origin)).unwrap();
    let started = Instant::now();
    let response = transport
        .send(get(&format!("http://origin.test:{port}/x")))
        .await
        .expect("the second address answers");
    let elapsed = started.elapsed();
    assert_eq!(response.response.status(), 200);
    assert_eq!(response.metrics.remote_addr, Some(origin.http_addr()));
    let body = response.response.into_body().collect().await.unwrap();
    assert_eq!(body.to_bytes().len(), 1000);
    assert!(
        elapsed < BUDGET / 3,
        "took {elapsed:?} of the {BUDGET:?} connect budget"
    );
    eprintln!(
        "time to first byte behind a silent first address: {:?} (request to response head {:?})",
        elapsed, response.metrics.first_byte
    );
}

/// The first address refuses: the next is tried at once, without waiting
/// out the attempt delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_first_address_falls_to_the_next_at_once() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/x", Resource::seeded(4, 10));
    let port = origin.http_addr().port();
    let refusing = other_loopback(port);
    // Bound then closed: nothing listens there, connecting is refused.
    drop(std::net::TcpListener::bind(refusing).unwrap());
    // A delay far beyond what a refusal takes shows whether it was waited.
    let config = config(refusing, &origin).connection_attempt_delay(Duration::from_secs(10));
    let transport = HttpTransport::new(config).unwrap();
    let started = Instant::now();
    let response = transport
        .send(get(&format!("http://origin.test:{port}/x")))
        .await
        .expect("the second address answers");
    assert_eq!(response.response.status(), 200);
    assert_eq!(response.metrics.remote_addr, Some(origin.http_addr()));
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "waited the 10 s attempt delay after a refusal: {elapsed:?}"
    );
}

/// When no address connects, the error names each with what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_address_fails_the_error_names_each() {
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap().port();
    let second = std::net::TcpListener::bind(other_loopback(port)).unwrap();
    let addrs = [first.local_addr().unwrap(), second.local_addr().unwrap()];
    drop((first, second));
    let config = HttpConfig::default()
        .resolve("origin.test", addrs[0])
        .resolve("origin.test", addrs[1]);
    let transport = HttpTransport::new(config).unwrap();
    let error = transport
        .send(get(&format!("http://origin.test:{port}/x")))
        .await
        .expect_err("nothing listens");
    assert_eq!(error.kind(), ErrorKind::ConnectFailed, "{error}");
    let detail = error.detail();
    assert!(
        detail.starts_with(&format!("could not connect to origin.test:{port}: ")),
        "{detail}"
    );
    for addr in addrs {
        assert!(
            detail.contains(&format!("{addr}: Connection refused")),
            "{addr} not named in: {detail}"
        );
    }
}

/// When the connect deadline passes with every address silent, the error
/// is a connect timeout that names the addresses tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_with_only_silent_addresses_is_a_connect_timeout_naming_them() {
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap().port();
    drop(first);
    let addrs = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        other_loopback(port),
    ];
    let _holes = (Silent::at(addrs[0]).await, Silent::at(addrs[1]).await);
    let config = HttpConfig::default()
        .resolve("origin.test", addrs[0])
        .resolve("origin.test", addrs[1])
        .connection_attempt_delay(Duration::from_millis(50));
    let transport = HttpTransport::new(config).unwrap();
    let mut request = get(&format!("http://origin.test:{port}/x"));
    request.options.timeouts.connect = Duration::from_secs(1);
    let error = transport.send(request).await.expect_err("nothing answers");
    assert_eq!(
        error.kind(),
        ErrorKind::Timeout(transfer_core::TimeoutKind::Connect),
        "{error}"
    );
    for addr in addrs {
        assert!(
            error.detail().contains(&format!("{addr}: timed out")),
            "{addr} not named in: {error}"
        );
    }
}

/// The address families alternate (RFC 8305 §4): with a silent IPv4
/// address first, then another IPv4 address, then an IPv6 one, the second
/// attempt goes to the IPv6 address, not to the next IPv4 one. The second
/// IPv4 address accepts but never answers: had it been tried second, it
/// would have won the race and the request would hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_alternate_so_the_ipv6_address_is_tried_second() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let v6 = TcpListener::bind("[::1]:0")
        .await
        .expect("an IPv6 loopback address for this test");
    let port = v6.local_addr().unwrap().port();
    let silent = other_loopback(port);
    let _hole = Silent::at(silent).await;
    let mute = TcpListener::bind(SocketAddr::from(([127, 0, 0, 3], port)))
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = v6.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended early");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nv6")
            .await
            .unwrap();
        s
    });
    let config = HttpConfig::default()
        .resolve("origin.test", silent)
        .resolve("origin.test", mute.local_addr().unwrap())
        .resolve(
            "origin.test",
            SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
        );
    let transport = HttpTransport::new(config).unwrap();
    let response = tokio::time::timeout(
        BUDGET,
        transport.send(get(&format!("http://origin.test:{port}/x"))),
    )
    .await
    .expect("the request did not hang on the mute address")
    .unwrap();
    assert_eq!(response.response.status(), 200);
    assert!(
        response.metrics.remote_addr.is_some_and(|a| a.is_ipv6()),
        "{:?}",
        response.metrics.remote_addr
    );
    let body = response.response.into_body().collect().await.unwrap();
    assert_eq!(&body.to_bytes()[..], b"v6");
    drop(server.await.unwrap());
    let tried_mute = tokio::time::timeout(Duration::from_millis(1), mute.accept()).await;
    assert!(tried_mute.is_err(), "the second IPv4 address was tried");
}
