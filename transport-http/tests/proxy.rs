#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Requests through real proxies no one here wrote, started on loopback:
//! squid (plain requests in absolute form, HTTPS through `CONNECT`, basic
//! proxy auth) and dante (SOCKS5, names resolved by it or here, with and
//! without a login). The origin's certificate is checked end to end, the
//! proxy's credentials never reach the origin, and a refusal says what it is.

use http_body_util::BodyExt;
use testkit::{Dante, Origin, Resource, Squid, body};
use transfer_core::{
    ErrorKind, Protocol, RequestBody, RequestMetrics, TlsFailure, TransferError, Transport,
    TransportRequest, TransportResponse,
};
use transport_http::{HttpConfig, HttpTransport, Proxies, Roots};

fn transport(origin: &Origin, proxies: Proxies) -> HttpTransport {
    let config = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_root(origin.root_cert_der())
        .proxies(proxies);
    HttpTransport::new(config).unwrap()
}

fn via(url: &str) -> Proxies {
    Proxies::new().all(url).unwrap()
}

async fn get(t: &HttpTransport, url: &str) -> Result<TransportResponse, TransferError> {
    let request = http::Request::get(url).body(RequestBody::empty()).unwrap();
    t.send(TransportRequest::new(request)).await
}

/// A whole GET: its metrics and its body.
async fn fetch(t: &HttpTransport, url: &str) -> (RequestMetrics, Vec<u8>) {
    let r = get(t, url).await.unwrap();
    assert_eq!(r.response.status(), 200, "{url}");
    let bytes = r.response.into_body().collect().await.unwrap().to_bytes();
    (r.metrics, bytes.to_vec())
}

/// The origin with `/p.bin` (1 MiB of seeded bytes).
async fn origin() -> Origin {
    let origin = Origin::start().await.unwrap();
    origin.resource("/p.bin", Resource::seeded(3, 1 << 20));
    origin
}

fn no_proxy_header_reached(origin: &Origin) {
    for e in origin.log() {
        assert!(
            !e.headers.contains_key("proxy-authorization"),
            "the proxy's credentials reached the origin: {:?}",
            e.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_carries_plain_and_tunnelled_requests() {
    let origin = origin().await;
    let squid = Squid::start(None).unwrap();
    let t = transport(&origin, via(&squid.url()));
    let whole = body::bytes(3, 0, 0..1 << 20);

    // Plain http: one request in absolute form to squid.
    let (r, got) = fetch(&t, &origin.http_url("/p.bin")).await;
    assert!(got == whole, "the plain body through squid is intact");
    assert_eq!(r.proxy.as_deref(), Some(squid.bare_url().as_str()));
    assert_eq!(r.remote_addr.unwrap().port(), squid.port());

    // https: a CONNECT tunnel, HTTP/2 with the origin inside it.
    let (r, got) = fetch(&t, &origin.https_url("/p.bin")).await;
    assert!(got == whole, "the tunnelled body through squid is intact");
    assert_eq!(r.protocol, Protocol::Http2);
    assert_eq!(r.proxy.as_deref(), Some(squid.bare_url().as_str()));

    // squid logs a tunnel when it closes.
    drop(t);
    let plain = format!("GET {}", origin.http_url("/p.bin"));
    let tunnel = format!("CONNECT localhost:{}", origin.https_addr().port());
    let mut log = String::new();
    for _ in 0..50 {
        log = squid.access_log();
        if log.contains(&tunnel) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(log.contains(&plain), "squid carried {plain:?}: {log}");
    assert!(log.contains(&tunnel), "squid carried {tunnel:?}: {log}");
}

/// Through the tunnel, the origin's certificate is verified as without a
/// proxy: an untrusted root and an expired certificate are refused, each
/// for its own reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_certificate_is_checked_through_the_tunnel() {
    let origin = origin().await;
    let squid = Squid::start(None).unwrap();
    let untrusted = HttpTransport::new(
        HttpConfig::default()
            .roots(Roots::Webpki)
            .proxies(via(&squid.url())),
    )
    .unwrap();
    let e = get(&untrusted, &origin.https_url("/p.bin"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls(TlsFailure::UnknownIssuer), "{e}");

    let t = transport(&origin, via(&squid.url()));
    let e = get(&t, &origin.expired_https_url("/p.bin"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls(TlsFailure::Expired), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squids_basic_auth_gets_the_credentials_and_the_origin_never_does() {
    let origin = origin().await;
    let squid = Squid::start(Some(("alice", "pa55:w@rd"))).unwrap();
    let with = format!("http://alice:pa55%3Aw%40rd@127.0.0.1:{}", squid.port());
    let t = transport(&origin, via(&with));
    for url in [origin.http_url("/p.bin"), origin.https_url("/p.bin")] {
        let (r, got) = fetch(&t, &url).await;
        assert_eq!(got.len(), 1 << 20, "{url}");
        let shown = r.proxy.unwrap();
        assert!(!shown.contains("pa55"), "{shown}");
    }
    no_proxy_header_reached(&origin);

    // No credentials, or the wrong ones: a permanent error naming the proxy,
    // both for a tunnel and for a plain request.
    let bare = transport(&origin, via(&squid.bare_url()));
    let wrong = transport(
        &origin,
        via(&format!("http://alice:nope@127.0.0.1:{}", squid.port())),
    );
    for url in [origin.http_url("/p.bin"), origin.https_url("/p.bin")] {
        let e = get(&bare, &url).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProxyRefused, "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&squid.bare_url()) && text.contains("asks for credentials"),
            "{text}"
        );
        let e = get(&wrong, &url).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProxyRefused, "{e}");
        let text = e.to_string();
        assert!(text.contains("refused the credentials"), "{text}");
        assert!(!text.contains("nope"), "the password is not shown: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dante_carries_socks5_with_names_resolved_there_or_here() {
    let origin = origin().await;
    let dante = Dante::start(false).unwrap();
    let whole = body::bytes(3, 0, 0..1 << 20);
    for scheme in ["socks5h", "socks5"] {
        let t = transport(&origin, via(&dante.url_as(scheme)));
        for url in [origin.http_url("/p.bin"), origin.https_url("/p.bin")] {
            let (r, got) = fetch(&t, &url).await;
            assert!(got == whole, "{scheme} {url}");
            assert_eq!(r.remote_addr.unwrap().port(), dante.port());
            assert_eq!(
                r.proxy.as_deref(),
                Some(format!("{scheme}://127.0.0.1:{}", dante.port()).as_str())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dantes_login_takes_the_password_and_refuses_others() {
    let origin = origin().await;
    let dante = Dante::start(true).unwrap();
    let t = transport(&origin, via(&dante.url()));
    let (_, got) = fetch(&t, &origin.https_url("/p.bin")).await;
    assert_eq!(got.len(), 1 << 20);

    let wrong = transport(
        &origin,
        via(&format!(
            "socks5h://{}:nope@127.0.0.1:{}",
            testkit::DANTE_USER,
            dante.port()
        )),
    );
    let e = get(&wrong, &origin.https_url("/p.bin")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProxyRefused, "{e}");
    assert!(e.to_string().contains("refused the credentials"), "{e}");

    let bare = transport(
        &origin,
        via(&format!("socks5h://127.0.0.1:{}", dante.port())),
    );
    let e = get(&bare, &origin.https_url("/p.bin")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProxyRefused, "{e}");
    assert!(e.to_string().contains("asks for credentials"), "{e}");
}

/// `NO_PROXY` holds: an excluded host goes direct, the others through the
/// proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_in_no_proxy_go_direct() {
    let origin = origin().await;
    let squid = Squid::start(None).unwrap();
    let t = transport(&origin, via(&squid.url()).no_proxy("localhost"));
    let (r, _) = fetch(&t, &origin.https_url("/p.bin")).await;
    assert_eq!(r.proxy, None, "localhost is excluded");
    assert_eq!(r.remote_addr.unwrap(), origin.https_addr());
    let (r, _) = fetch(&t, &origin.http_url("/p.bin")).await;
    assert_eq!(r.proxy.as_deref(), Some(squid.bare_url().as_str()));
    assert!(!squid.access_log().contains("CONNECT"));
}

/// A proxy that is not there is a transient connect failure naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_is_down_is_a_transient_failure_naming_it() {
    let origin = origin().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = transport(&origin, via(&format!("http://127.0.0.1:{port}")));
    let e = get(&t, &origin.https_url("/p.bin")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectFailed, "{e}");
    assert!(e.is_retryable());
    assert!(
        e.to_string()
            .contains(&format!("proxy http://127.0.0.1:{port}")),
        "{e}"
    );
}

/// TLS in front of squid, on its own port: an `https://` proxy (what squid
/// built with GnuTLS, as Debian's is, does not offer itself). Every
/// connection's TLS ends here and its bytes go on to squid.
async fn tls_front(squid: &Squid) -> (u16, String) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = testkit::pem_certificates().unwrap();
    let chain = vec![CertificateDer::from_pem_slice(certs.leaf.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(certs.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = squid.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut up = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (port, certs.root)
}

/// An `https://` proxy: TLS to the proxy (its certificate checked for its
/// name), then a tunnel, then TLS with the origin inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_proxy_is_spoken_to_over_tls() {
    let origin = origin().await;
    let squid = Squid::start(Some(("alice", "s3cret"))).unwrap();
    let (port, proxy_root) = tls_front(&squid).await;
    let proxy = format!("https://alice:s3cret@localhost:{port}");
    let config = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_root(origin.root_cert_der())
        .add_roots_pem(proxy_root.as_bytes())
        .unwrap()
        .proxies(via(&proxy));
    let t = HttpTransport::new(config).unwrap();
    let whole = body::bytes(3, 0, 0..1 << 20);
    for url in [origin.https_url("/p.bin"), origin.http_url("/p.bin")] {
        let (r, got) = fetch(&t, &url).await;
        assert!(got == whole, "{url}");
        assert_eq!(
            r.proxy.as_deref(),
            Some(format!("https://localhost:{port}").as_str())
        );
    }
    no_proxy_header_reached(&origin);

    // A proxy whose certificate is not trusted is refused for that reason.
    let untrusting = HttpTransport::new(
        HttpConfig::default()
            .roots(Roots::Webpki)
            .add_root(origin.root_cert_der())
            .proxies(via(&proxy)),
    )
    .unwrap();
    let e = get(&untrusting, &origin.https_url("/p.bin"))
        .await
        .unwrap_err();
    // (The test roots share one name, so the verifier reports the
    // signature, not the issuer.)
    assert!(
        matches!(
            e.kind(),
            ErrorKind::Tls(TlsFailure::UnknownIssuer | TlsFailure::BadCertificate)
        ),
        "{e}"
    );
    assert!(e.to_string().contains("proxy https://localhost"), "{e}");
}
