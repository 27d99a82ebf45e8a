#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The choice of protocol against the testkit origin, which serves HTTP/2
//! over TLS and HTTP/3 on the same port number and can advertise the latter
//! (`Alt-Svc`) and drop every datagram (UDP blocked).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use testkit::{Origin, Resource, body};
use transfer_core::{Protocol, ProtocolPreference, RequestBody, Transport, TransportRequest};
use transport_http::{HttpConfig, HttpTransport, Roots};
use transport_quic::{ProtocolChoice, QuicConfig, QuicTransport};

fn choice(origin: &Origin) -> ProtocolChoice {
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_root(origin.root_cert_der());
    let tcp = Arc::new(HttpTransport::new(http.clone()).unwrap());
    let quic = QuicTransport::new(QuicConfig::default().http(http)).unwrap();
    ProtocolChoice::new(tcp, quic).fallback(Duration::from_millis(500), Duration::from_secs(60))
}

/// GETs `url` with `preference`, checks the body, and says which protocol
/// carried it.
async fn get(t: &dyn Transport, url: &str, preference: ProtocolPreference) -> Protocol {
    let request = http::Request::get(url).body(RequestBody::empty()).unwrap();
    let mut request = TransportRequest::new(request);
    request.options.protocol = preference;
    let r = t.send(request).await.unwrap();
    let protocol = r.metrics.protocol;
    let got = r.response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&got[..], &body::bytes(31, 0, 0..(1 << 20))[..]);
    protocol
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_svc_moves_the_next_request_to_http3_and_is_remembered() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/f", Resource::seeded(31, 1 << 20));
    origin.advertise_h3(Some(3600));
    let url = origin.https_url("/f");
    let dir = tempfile::tempdir().unwrap();
    let memory = dir.path().join("alt-svc.json");
    let t = choice(&origin).remember_in(&memory);
    assert_eq!(
        get(&t, &url, ProtocolPreference::Auto).await,
        Protocol::Http2
    );
    assert_eq!(
        get(&t, &url, ProtocolPreference::Auto).await,
        Protocol::Http3
    );
    let seen: Vec<_> = origin.log().iter().map(|e| e.protocol).collect();
    assert_eq!(seen, [testkit::Protocol::Http2, testkit::Protocol::Http3]);
    // Another process with the same memory goes straight to HTTP/3.
    let again = choice(&origin).remember_in(&memory);
    assert!(again.advertised(&url.parse().unwrap()).is_some());
    assert_eq!(
        get(&again, &url, ProtocolPreference::Auto).await,
        Protocol::Http3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_udp_falls_back_to_http2_and_stays_there() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/f", Resource::seeded(31, 1 << 20));
    origin.advertise_h3(Some(3600));
    let url = origin.https_url("/f");
    let t = choice(&origin);
    assert_eq!(
        get(&t, &url, ProtocolPreference::Auto).await,
        Protocol::Http2
    );
    origin.block_udp(true);
    // Advertised, but the handshake goes unanswered: the request completes
    // over HTTP/2 after the short handshake deadline...
    assert_eq!(
        get(&t, &url, ProtocolPreference::Auto).await,
        Protocol::Http2
    );
    let tried = origin.udp_dropped();
    assert!(tried > 0, "the handshake was tried");
    // ...and the origin is not tried over QUIC again for a while.
    assert_eq!(
        get(&t, &url, ProtocolPreference::PreferHttp3).await,
        Protocol::Http2
    );
    assert_eq!(origin.udp_dropped(), tried, "no second handshake attempt");
    let seen: Vec<_> = origin.log().iter().map(|e| e.protocol).collect();
    assert!(
        seen.iter().all(|p| *p == testkit::Protocol::Http2),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_http3_uses_it_without_an_advertisement() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/f", Resource::seeded(31, 1 << 20));
    let url = origin.https_url("/f");
    let t = choice(&origin);
    assert_eq!(
        get(&t, &url, ProtocolPreference::RequireHttp3).await,
        Protocol::Http3
    );
    assert_eq!(
        get(&t, &url, ProtocolPreference::PreferHttp3).await,
        Protocol::Http3
    );
    assert_eq!(
        get(&t, &url, ProtocolPreference::Auto).await,
        Protocol::Http2
    );
}

/// A name that resolves to ::1 first and 127.0.0.1 second reaches a
/// server that listens only on 127.0.0.1: the handshakes race, and the one
/// that gets an answer wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_both_families_reaches_an_ipv4_only_server() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/f", Resource::seeded(31, 1 << 20));
    let port = origin.https_addr().port();
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_root(origin.root_cert_der())
        .resolve("localhost", (std::net::Ipv6Addr::LOCALHOST, port).into())
        .resolve("localhost", (std::net::Ipv4Addr::LOCALHOST, port).into());
    let quic = QuicTransport::new(QuicConfig::default().http(http)).unwrap();
    let url = origin.https_url("/f");
    assert_eq!(
        get(&quic, &url, ProtocolPreference::RequireHttp3).await,
        Protocol::Http3
    );
}

/// `Alt-Svc` speaks for the origin that sent it (RFC 7838): when the
/// answer at the end of a redirect chain advertises HTTP/3, the origin that
/// answered is recorded, never the one the request started at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_svc_after_a_redirect_is_recorded_for_the_origin_that_sent_it() {
    let first = Origin::start().await.unwrap();
    let last = Origin::start().await.unwrap();
    last.resource("/f", Resource::seeded(31, 1 << 20));
    last.advertise_h3(Some(3600));
    first.redirect("/go", 302, &last.https_url("/f"));
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_root(first.root_cert_der())
        .add_root(last.root_cert_der());
    let tcp = Arc::new(HttpTransport::new(http.clone()).unwrap());
    let quic = QuicTransport::new(QuicConfig::default().http(http)).unwrap();
    let t = ProtocolChoice::new(tcp, quic);
    let start = first.https_url("/go");
    assert_eq!(
        get(&t, &start, ProtocolPreference::Auto).await,
        Protocol::Http2
    );
    assert_eq!(
        t.advertised(&start.parse().unwrap()),
        None,
        "the first origin advertised nothing"
    );
    assert_eq!(
        t.advertised(&last.https_url("/f").parse().unwrap()),
        Some(last.https_addr().port()),
        "the origin that answered advertised HTTP/3"
    );
    // The next request to the first origin stays on TCP.
    assert_eq!(
        get(&t, &start, ProtocolPreference::Auto).await,
        Protocol::Http2
    );
    assert!(
        first
            .log()
            .iter()
            .all(|e| e.protocol == testkit::Protocol::Http2)
    );
}
