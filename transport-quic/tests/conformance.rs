#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Transport conformance suite (testkit) over HTTP/3: the origin serves
//! QUIC on its TLS listener's port number, so every URL of the suite works
//! as it does for HTTP/2.

use std::sync::Arc;

use testkit::Origin;
use testkit::conformance::transport::{self, Harness, Setup};
use transfer_core::{Protocol, Transport};
use transport_http::{HttpConfig, Roots};
use transport_quic::{QuicConfig, QuicTransport};

fn maker(origin: &Origin) -> impl Fn(&Setup) -> Arc<dyn Transport> + Send + Sync + use<> {
    let root = origin.root_cert_der();
    move |setup: &Setup| {
        // Only the origin's root (or none): the suite must not depend on the
        // machine's store.
        let mut config = HttpConfig::default().roots(Roots::Webpki);
        if setup.trust_origin {
            config = config.add_root(root.clone());
        }
        for (host, pin) in &setup.pins {
            config = config.pin(host, *pin);
        }
        for (host, addr) in &setup.resolve {
            config = config.resolve(host, *addr);
        }
        let quic = QuicTransport::new(QuicConfig::default().http(config)).expect("transport");
        Arc::new(quic) as Arc<dyn Transport>
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3() {
    let origin = Origin::start().await.expect("origin");
    let make = maker(&origin);
    let h = Harness {
        origin: &origin,
        make: &make,
        secure: true,
        protocol: Protocol::Http3,
    };
    transport::all(&h).await;
}
