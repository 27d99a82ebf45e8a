#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Connection migration: a download whose client socket is rebound three
//! times mid-transfer (a new local port each time, as after a network
//! change) continues on the same connection and the same request.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use testkit::{Fault, Origin, Resource, Script, body};
use transfer_core::{RequestBody, Transport, TransportRequest};
use transport_http::{HttpConfig, Roots};
use transport_quic::{QuicConfig, QuicTransport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_survives_three_rebinds_on_one_request() {
    let origin = Origin::start().await.unwrap();
    let len = 256u64 << 20;
    origin.resource("/move.bin", Resource::seeded(41, len));
    // About 4 s at this pace: long enough to move three times.
    origin.script(
        "/move.bin",
        Script::new().always(Fault::RateLimit(64 << 20)),
    );
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_root(origin.root_cert_der());
    let quic = Arc::new(QuicTransport::new(QuicConfig::default().http(http)).unwrap());
    let request = http::Request::get(origin.https_url("/move.bin"))
        .body(RequestBody::empty())
        .unwrap();
    let r = quic.send(TransportRequest::new(request)).await.unwrap();
    let received = r.received.clone();
    let reader = tokio::spawn(async move {
        let mut body = r.response.into_body();
        let mut hash = Sha256::new();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap_or_else(|e| panic!("after {n} bytes: {e}"));
            if let Some(d) = frame.data_ref() {
                hash.update(d);
                n += d.len() as u64;
            }
        }
        (n, <[u8; 32]>::from(hash.finalize()))
    });
    let mut ports = vec![quic.local_addrs()[0].port()];
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let before = received.get();
        quic.rebind().unwrap();
        ports.push(quic.local_addrs()[0].port());
        assert!(before < len, "the transfer was still going at the rebind");
    }
    let (n, digest) = reader.await.unwrap();
    assert_eq!(n, len);
    assert_eq!(digest, body::sha256(41, 0, len), "the right bytes");
    ports.dedup();
    assert_eq!(ports.len(), 4, "a new local port each time: {ports:?}");
    let log = origin.log();
    assert_eq!(log.len(), 1, "one request: {log:?}");
    assert!(log[0].finished && log[0].bytes_sent == len);
}
