#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Interop with caddy (quic-go), a server no one here wrote, from Debian's
//! `caddy` package: HTTP/3 downloads, a resume with Range after a cut, and
//! caddy's `Alt-Svc` followed from HTTP/2 to HTTP/3. `.ci/run` installs
//! caddy; where it is missing the test says so and fails.

use std::sync::Arc;

use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use testkit::Caddy;
use transfer_core::{
    Protocol, ProtocolPreference, RequestBody, Transport, TransportRequest, TransportResponse,
};
use transport_http::{HttpConfig, HttpTransport, Roots};
use transport_quic::{ProtocolChoice, QuicConfig, QuicTransport};

const LEN: usize = 64 << 20;

/// caddy serving a 64 MiB file, and that file.
fn start_caddy() -> (Caddy, Vec<u8>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let want = testkit::body::bytes(51, 0, 0..LEN as u64);
    std::fs::write(www.join("f.bin"), &want).unwrap();
    let caddy = Caddy::start(&www).expect("caddy (Debian package `caddy`; .ci/run installs it)");
    (caddy, want, dir)
}

fn http_config(caddy: &Caddy) -> HttpConfig {
    HttpConfig::default()
        .roots(Roots::Webpki)
        .add_roots_pem(caddy.root_pem().as_bytes())
        .unwrap()
}

async fn get(
    t: &dyn Transport,
    url: &str,
    preference: ProtocolPreference,
    range: Option<u64>,
) -> TransportResponse {
    let mut b = http::Request::get(url);
    if let Some(from) = range {
        b = b.header("range", format!("bytes={from}-"));
    }
    let mut request = TransportRequest::new(b.body(RequestBody::empty()).unwrap());
    request.options.protocol = preference;
    t.send(request).await.unwrap()
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_over_http3_resumes_after_a_cut_and_its_alt_svc_is_followed() {
    let (caddy, want, _dir) = start_caddy();
    let url = caddy.url("/f.bin");

    // A whole download over HTTP/3.
    let quic = QuicTransport::new(QuicConfig::default().http(http_config(&caddy))).unwrap();
    let r = get(&quic, &url, ProtocolPreference::RequireHttp3, None).await;
    assert_eq!(r.response.status(), 200);
    assert_eq!(r.metrics.protocol, Protocol::Http3);
    let got = r.response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(sha(&got), sha(&want), "whole body over HTTP/3");

    // Cut after 8 MiB, then resume with a Range over HTTP/3.
    let r = get(&quic, &url, ProtocolPreference::RequireHttp3, None).await;
    let mut body = r.response.into_body();
    let mut first = Vec::new();
    while first.len() < 8 << 20 {
        let frame = body.frame().await.unwrap().unwrap();
        if let Some(d) = frame.data_ref() {
            first.extend_from_slice(d);
        }
    }
    drop(body);
    let from = first.len() as u64;
    let r = get(&quic, &url, ProtocolPreference::RequireHttp3, Some(from)).await;
    assert_eq!(r.response.status(), 206, "caddy honours Range over HTTP/3");
    assert_eq!(r.metrics.protocol, Protocol::Http3);
    let rest = r.response.into_body().collect().await.unwrap().to_bytes();
    first.extend_from_slice(&rest);
    assert_eq!(sha(&first), sha(&want), "cut and resumed, byte-identical");

    // HTTP/2 first; caddy's Alt-Svc moves the next request to HTTP/3.
    let http = http_config(&caddy);
    let tcp = Arc::new(HttpTransport::new(http.clone()).unwrap());
    let quic = QuicTransport::new(QuicConfig::default().http(http)).unwrap();
    let choice = ProtocolChoice::new(tcp, quic);
    let tail_from = Some((LEN - 1000) as u64);
    let r = get(&choice, &url, ProtocolPreference::Auto, tail_from).await;
    assert_eq!(r.metrics.protocol, Protocol::Http2);
    let alt = r.response.headers().get("alt-svc").cloned();
    assert!(alt.is_some(), "caddy advertises HTTP/3");
    let _ = r.response.into_body().collect().await.unwrap();
    let r = get(&choice, &url, ProtocolPreference::Auto, tail_from).await;
    assert_eq!(r.metrics.protocol, Protocol::Http3, "after {alt:?}");
    let tail = r.response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&tail[..], &want[LEN - 1000..]);
}
