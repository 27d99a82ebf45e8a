#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Connection pool behaviour specific to transport-http: the per-host cap,
//! and the pin helper agreeing with the origin's own key.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use testkit::{Fault, Origin, Resource, Script};
use transfer_core::{RequestBody, Transport, TransportRequest};
use transport_http::{HttpConfig, HttpTransport, Roots, spki_sha256};

fn get(url: &str) -> TransportRequest {
    TransportRequest::new(http::Request::get(url).body(RequestBody::empty()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_cap_holds_and_waiting_requests_reuse_connections() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/slow", Resource::seeded(1, 256 << 10));
    // Slow bodies keep every connection busy long enough to overlap.
    origin.script("/slow", Script::new().always(Fault::RateLimit(1 << 20)));
    let t = Arc::new(
        HttpTransport::new(
            HttpConfig::default()
                .roots(Roots::Webpki)
                .max_connections_per_host(2),
        )
        .unwrap(),
    );
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let t = t.clone();
        let url = origin.http_url("/slow");
        tasks.push(tokio::spawn(async move {
            let r = t.send(get(&url)).await.unwrap();
            let body = r.response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), 256 << 10);
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("all requests finish")
            .unwrap();
    }
    let log = origin.log();
    assert_eq!(log.len(), 6);
    let connections: HashSet<u64> = log.iter().map(|e| e.connection).collect();
    assert_eq!(
        connections.len(),
        2,
        "six requests over exactly the two connections the cap allows"
    );
}

#[tokio::test]
async fn spki_pin_matches_the_origin_key() {
    let origin = Origin::start().await.unwrap();
    let pin = spki_sha256(&origin.leaf_cert_der()).unwrap();
    assert_eq!(pin, origin.leaf_spki_sha256());
}

#[test]
fn pem_roots_are_parsed_and_empty_bundles_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = rt.block_on(Origin::start()).unwrap();
    let config = HttpConfig::default()
        .roots(Roots::None)
        .add_roots_pem(origin.root_cert_pem().as_bytes())
        .unwrap();
    assert!(HttpTransport::new(config).is_ok());
    assert!(
        HttpConfig::default()
            .add_roots_pem(b"not a certificate")
            .is_err()
    );
    assert!(matches!(
        HttpTransport::new(HttpConfig::default().roots(Roots::None)),
        Err(transport_http::ConfigError::NoRoots)
    ));
}

/// The default trust (the platform's roots and the compiled-in ones): the
/// platform's are read in the background and the verifier built at the
/// first certificate to check. It then verifies as any: the origin with its
/// root added is trusted, pinned keys still count, and an origin no trusted
/// root vouches for is refused as an unknown issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_roots_read_in_the_background_verify_as_any() {
    use transfer_core::{ErrorKind, TlsFailure};
    let origin = Origin::start().await.unwrap();
    let trusting = HttpTransport::new(
        HttpConfig::default()
            .add_roots_pem(origin.root_cert_pem().as_bytes())
            .unwrap(),
    )
    .unwrap();
    let r = trusting
        .send(get(&origin.https_url("/gen/1024")))
        .await
        .unwrap();
    let body = r.response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 1024);

    let wrong_pin = HttpTransport::new(
        HttpConfig::default()
            .add_roots_pem(origin.root_cert_pem().as_bytes())
            .unwrap()
            .pin("localhost", [7; 32]),
    )
    .unwrap();
    let e = wrong_pin
        .send(get(&origin.https_url("/gen/10")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls(TlsFailure::PinMismatch), "{e}");

    let untrusting = HttpTransport::new(HttpConfig::default()).unwrap();
    let e = untrusting
        .send(get(&origin.https_url("/gen/10")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls(TlsFailure::UnknownIssuer), "{e}");
}
