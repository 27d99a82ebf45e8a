#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Name resolution in words: a name that does not exist fails for good, a
//! name from `/etc/hosts` resolves, a port that does not fit in 16 bits is
//! refused, and `--resolve` overrides apply to their host and port only.

use std::time::{Duration, Instant};

use testkit::{Origin, Resource};
use transfer_core::{ErrorKind, RequestBody, Transport, TransportRequest};
use transport_http::{HttpConfig, HttpTransport};

fn get(url: &str) -> TransportRequest {
    TransportRequest::new(http::Request::get(url).body(RequestBody::empty()).unwrap())
}

/// `.invalid` never resolves (RFC 6761): the resolver answers that the
/// name does not exist, which is permanent and says so.
#[tokio::test]
async fn a_name_that_does_not_exist_is_a_permanent_dns_error() {
    let transport = HttpTransport::new(HttpConfig::default()).unwrap();
    let error = transport
        .send(get("http://nonexistent.invalid/x"))
        .await
        .expect_err("the name does not exist");
    assert_eq!(error.kind(), ErrorKind::NoSuchHost, "{error}");
    assert!(error.is_dns() && !error.is_retryable(), "{error}");
    assert!(
        error
            .detail()
            .starts_with("cannot resolve nonexistent.invalid"),
        "{error}"
    );
}

/// `localhost` comes from `/etc/hosts` through the system resolver.
#[tokio::test]
async fn a_name_from_the_hosts_file_resolves() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/x", Resource::seeded(5, 10));
    let transport = HttpTransport::new(HttpConfig::default()).unwrap();
    let url = format!("http://localhost:{}/x", origin.http_addr().port());
    let response = transport.send(get(&url)).await.unwrap();
    assert_eq!(response.response.status(), 200);
    assert!(response.metrics.dns.is_some(), "localhost was looked up");
}

/// `http://host:99999/` is refused in words, not sent to port 80.
#[tokio::test]
async fn a_port_beyond_16_bits_is_refused() {
    let transport = HttpTransport::new(HttpConfig::default()).unwrap();
    let error = transport
        .send(get("http://127.0.0.1:99999/x"))
        .await
        .expect_err("no such port");
    assert_eq!(error.kind(), ErrorKind::InvalidRequest, "{error}");
    assert_eq!(error.detail(), "port 99999 is out of range");
}

/// An override for `origin.test` on the origin's port takes requests to
/// that port there, whatever the override's host resolves to otherwise;
/// the same host on another port is resolved as usual (and `.invalid`
/// names do not resolve).
#[tokio::test]
async fn an_override_applies_to_its_host_and_port_only() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/x", Resource::seeded(6, 10));
    let port = origin.http_addr().port();
    let config = HttpConfig::default().resolve("origin.invalid", origin.http_addr());
    let transport = HttpTransport::new(config).unwrap();
    let started = Instant::now();
    let response = transport
        .send(get(&format!("http://origin.invalid:{port}/x")))
        .await
        .unwrap();
    assert_eq!(response.response.status(), 200);
    let other_port = if port == u16::MAX { port - 1 } else { port + 1 };
    let error = transport
        .send(get(&format!("http://origin.invalid:{other_port}/x")))
        .await
        .expect_err("no override for this port");
    assert_eq!(error.kind(), ErrorKind::NoSuchHost, "{error}");
    assert!(started.elapsed() < Duration::from_secs(15));
}
