#![allow(clippy::unwrap_used, clippy::expect_used)]
//! HTTP/3 over a lossy, slower path: a UDP relay in front of the origin
//! drops 2% of the datagrams each way and holds each for 5 ms. The
//! download still arrives whole, on one request.

use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use testkit::{Origin, Resource, UdpRelay, UdpRelayConfig, body};
use transfer_core::{Protocol, RequestBody, Transport, TransportRequest};
use transport_http::{HttpConfig, Roots};
use transport_quic::{QuicConfig, QuicTransport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_over_a_lossy_path_arrives_whole() {
    let origin = Origin::start().await.unwrap();
    let len = 4u64 << 20;
    origin.resource("/lossy.bin", Resource::seeded(61, len));
    let relay = UdpRelay::start(
        origin.https_addr(),
        UdpRelayConfig {
            loss: 0.02,
            delay: std::time::Duration::from_millis(5),
            seed: 7,
        },
    )
    .await
    .unwrap();
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_root(origin.root_cert_der());
    let quic = QuicTransport::new(QuicConfig::default().http(http)).unwrap();
    let url = format!("https://localhost:{}/lossy.bin", relay.addr().port());
    let request = http::Request::get(url).body(RequestBody::empty()).unwrap();
    let r = quic.send(TransportRequest::new(request)).await.unwrap();
    assert_eq!(r.metrics.protocol, Protocol::Http3);
    let got = r.response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len() as u64, len);
    assert_eq!(
        <[u8; 32]>::from(Sha256::digest(&got)),
        body::sha256(61, 0, len)
    );
    let (forwarded, dropped) = relay.counts();
    assert!(
        dropped > forwarded / 100,
        "the path lost datagrams: {dropped} of {}",
        forwarded + dropped
    );
    assert_eq!(origin.log().len(), 1, "one request");
}
