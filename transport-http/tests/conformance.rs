#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Transport conformance suite (testkit) over every way transport-http
//! speaks: HTTP/1.1 plain and over TLS, HTTP/2 over TLS (ALPN) and HTTP/2
//! with prior knowledge on plain http.

use std::sync::Arc;

use testkit::Origin;
use testkit::conformance::transport::{self, Harness, Setup};
use transfer_core::{Protocol, Transport};
use transport_http::{HttpConfig, HttpTransport, Roots};

fn maker(
    origin: &Origin,
    base: fn() -> HttpConfig,
) -> impl Fn(&Setup) -> Arc<dyn Transport> + Send + Sync + use<> {
    let root = origin.root_cert_der();
    move |setup: &Setup| {
        // Only the origin's root (or none): the suite must not depend on the
        // machine's store.
        let mut config = base().roots(Roots::Webpki);
        if setup.trust_origin {
            config = config.add_root(root.clone());
        }
        for (host, pin) in &setup.pins {
            config = config.pin(host, *pin);
        }
        for (host, addr) in &setup.resolve {
            config = config.resolve(host, *addr);
        }
        Arc::new(HttpTransport::new(config).expect("transport")) as Arc<dyn Transport>
    }
}

async fn run(secure: bool, protocol: Protocol, base: fn() -> HttpConfig) {
    let origin = Origin::start().await.expect("origin");
    let make = maker(&origin, base);
    let h = Harness {
        origin: &origin,
        make: &make,
        secure,
        protocol,
    };
    transport::all(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_plain() {
    run(false, Protocol::Http1, HttpConfig::default).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls() {
    run(true, Protocol::Http1, || HttpConfig::default().http1_only()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls() {
    run(true, Protocol::Http2, HttpConfig::default).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge() {
    run(false, Protocol::Http2, || {
        HttpConfig::default().http2_prior_knowledge()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_lying_lengths() {
    let origin = Origin::start().await.expect("origin");
    let t = HttpTransport::new(HttpConfig::default().roots(Roots::Webpki)).unwrap();
    transport::lying_lengths(&t, &origin).await;
}
