#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The protocol flags as curl's: `--http1.1` and `--http2` stay on TCP with
//! that version, `--http3` tries QUIC and takes a plain http:// URL over
//! TCP, `--http3-only` speaks nothing but HTTP/3.

mod common;

use common::{ferry, stderr};
use testkit::{Origin, Protocol, Resource};

async fn protocol_of(origin: &Origin, url: &str, flag: &str) -> Protocol {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, origin.root_cert_pem()).unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let before = origin.log().len();
    let (home2, url2, flag2) = (home.clone(), url.to_owned(), flag.to_owned());
    let got = tokio::task::spawn_blocking(move || {
        ferry(
            &home2,
            &[
                "get",
                &flag2,
                "--cacert",
                root.to_str().unwrap(),
                "--output-dir",
                out.to_str().unwrap(),
                &url2,
            ],
        )
    })
    .await
    .unwrap();
    assert!(got.status.success(), "{flag} {url}: {}", stderr(&got));
    let log = origin.log();
    let mine = &log[before..];
    assert_eq!(mine.len(), 1, "{flag} {url}: {mine:?}");
    mine[0].protocol
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_flag_gets_its_protocol() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/p.bin", Resource::seeded(31, 64 << 10));
    let tls = origin.https_url("/p.bin");
    let plain = origin.http_url("/p.bin");
    assert_eq!(
        protocol_of(&origin, &tls, "--http1.1").await,
        Protocol::Http1
    );
    assert_eq!(protocol_of(&origin, &tls, "--http2").await, Protocol::Http2);
    assert_eq!(protocol_of(&origin, &tls, "--http3").await, Protocol::Http3);
    assert_eq!(
        protocol_of(&origin, &tls, "--http3-only").await,
        Protocol::Http3
    );
    // --http3 falls back: a plain URL goes over TCP.
    assert_eq!(
        protocol_of(&origin, &plain, "--http3").await,
        Protocol::Http1
    );
    assert_eq!(
        protocol_of(&origin, &plain, "--http2-prior-knowledge").await,
        Protocol::Http2
    );
}
