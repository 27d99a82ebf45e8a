//! The origin does what its scripts say, seen by a real hyper client over
//! real sockets (plain, TLS with ALPN, h2c, and the raw listener).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use testkit::{Fault, Listener, Origin, Protocol, Resource, Script, body};
use tokio::net::TcpStream;

#[derive(Clone, Copy)]
enum Via {
    Plain,
    H2c,
    Raw,
    Tls(&'static [&'static [u8]]),
}

struct Got {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Result<Vec<u8>, String>,
}

/// One request on a fresh connection.
async fn fetch(
    origin: &Origin,
    via: Via,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let (addr, authority) = match via {
        Via::Plain | Via::H2c => (origin.http_addr(), origin.http_addr().to_string()),
        Via::Raw => (origin.raw_addr(), origin.raw_addr().to_string()),
        Via::Tls(_) => (
            origin.https_addr(),
            format!("localhost:{}", origin.https_addr().port()),
        ),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let scheme = if matches!(via, Via::Tls(_)) {
        "https"
    } else {
        "http"
    };
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{scheme}://{authority}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    let resp = match via {
        Via::Plain | Via::Raw => send_h1(tcp, req, &authority).await,
        Via::H2c => send_h2(tcp, req).await,
        Via::Tls(alpn) => {
            let config = Arc::new(origin.client_config(alpn).unwrap());
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                send_h2(tls, req).await
            } else {
                send_h1(tls, req, &authority).await
            }
        }
    };
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .map_err(|e| e.to_string());
    Got {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

async fn send_h1<S>(
    io: S,
    mut req: Request<Empty<Bytes>>,
    authority: &str,
) -> http::Response<hyper::body::Incoming>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    *req.uri_mut() = req
        .uri()
        .path_and_query()
        .unwrap()
        .as_str()
        .parse()
        .unwrap();
    req.headers_mut()
        .insert(http::header::HOST, authority.parse().unwrap());
    sender.send_request(req).await.unwrap()
}

async fn send_h2<S>(io: S, req: Request<Empty<Bytes>>) -> http::Response<hyper::body::Incoming>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

fn header<'a>(g: &'a Got, name: &str) -> &'a str {
    g.headers.get(name).map_or("", |v| v.to_str().unwrap())
}

const BOTH: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[tokio::test]
async fn serves_whole_bodies_and_heads_that_match_the_seed() {
    let origin = Origin::start().await.unwrap();
    let g = fetch(&origin, Via::Plain, Method::GET, "/gen/1000003?seed=3", &[]).await;
    assert_eq!(g.status, StatusCode::OK);
    let b = g.body.as_deref().unwrap();
    assert_eq!(b, body::bytes(3, 0, 0..1_000_003));
    use sha2::Digest;
    assert_eq!(
        <[u8; 32]>::from(sha2::Sha256::digest(b)),
        body::sha256(3, 0, 1_000_003)
    );
    assert_eq!(header(&g, "etag"), "\"s3-l1000003-v0\"");
    assert!(httpdate::parse_http_date(header(&g, "last-modified")).is_ok());
    let h = fetch(
        &origin,
        Via::Plain,
        Method::HEAD,
        "/gen/1000003?seed=3",
        &[],
    )
    .await;
    assert_eq!(header(&h, "content-length"), "1000003");
    assert!(h.body.unwrap().is_empty());
    let missing = fetch(&origin, Via::Plain, Method::GET, "/nothing", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn answers_ranges_with_206_and_exact_bytes_or_416() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/r", Resource::seeded(9, 1000));
    let whole = body::bytes(9, 0, 0..1000);
    for (ask, first, last) in [
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=500-5000", 500, 999),
    ] {
        for via in [Via::Plain, Via::Tls(&BOTH)] {
            let g = fetch(&origin, via, Method::GET, "/r", &[("range", ask)]).await;
            assert_eq!(g.status, StatusCode::PARTIAL_CONTENT, "{ask}");
            assert_eq!(
                header(&g, "content-range"),
                format!("bytes {first}-{last}/1000")
            );
            assert_eq!(g.body.unwrap(), whole[first..=last]);
        }
    }
    let g = fetch(
        &origin,
        Via::Plain,
        Method::GET,
        "/r",
        &[("range", "bytes=1000-")],
    )
    .await;
    assert_eq!(g.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&g, "content-range"), "bytes */1000");
    let g = fetch(
        &origin,
        Via::Plain,
        Method::GET,
        "/r",
        &[("range", "bytes=0-1,5-6")],
    )
    .await;
    assert_eq!(
        g.status,
        StatusCode::OK,
        "several ranges get the whole body"
    );
}

#[tokio::test]
async fn if_range_honours_matching_validators_only() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/r", Resource::seeded(1, 100));
    let etag = origin.etag("/r").unwrap();
    let lm = header(
        &fetch(&origin, Via::Plain, Method::HEAD, "/r", &[]).await,
        "last-modified",
    )
    .to_owned();
    for (validator, expected) in [
        (etag.as_str(), StatusCode::PARTIAL_CONTENT),
        (lm.as_str(), StatusCode::PARTIAL_CONTENT),
        ("\"other\"", StatusCode::OK),
    ] {
        let asked = [("range", "bytes=50-"), ("if-range", validator)];
        let g = fetch(&origin, Via::Plain, Method::GET, "/r", &asked).await;
        assert_eq!(g.status, expected, "If-Range {validator}");
        let len = if expected == StatusCode::OK { 100 } else { 50 };
        assert_eq!(g.body.unwrap().len(), len);
    }
}

#[tokio::test]
async fn negotiates_h2_by_alpn_http1_without_it_and_h2c_by_prior_knowledge() {
    let origin = Origin::start().await.unwrap();
    let h2 = fetch(&origin, Via::Tls(&BOTH), Method::GET, "/gen/10", &[]).await;
    assert_eq!(h2.version, Version::HTTP_2);
    let h1 = fetch(&origin, Via::Tls(&[]), Method::GET, "/gen/10", &[]).await;
    assert_eq!(h1.version, Version::HTTP_11);
    let h2c = fetch(&origin, Via::H2c, Method::GET, "/gen/10", &[]).await;
    assert_eq!(h2c.version, Version::HTTP_2);
    let log = origin.log();
    let seen: Vec<_> = log.iter().map(|e| (e.protocol, e.listener)).collect();
    assert_eq!(
        seen,
        [
            (Protocol::Http2, Listener::Tls),
            (Protocol::Http1, Listener::Tls),
            (Protocol::Http2, Listener::Plain)
        ]
    );
    assert!(log.iter().all(|e| e.finished && e.bytes_sent == 10));
}

#[tokio::test]
async fn cuts_the_body_after_k_bytes_on_h1_and_h2() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/cut", Resource::seeded(2, 1 << 20));
    origin.script("/cut", Script::new().always(Fault::CutAfter(100_000)));
    for via in [Via::Plain, Via::Tls(&BOTH)] {
        origin.clear_log();
        let g = fetch(&origin, via, Method::GET, "/cut", &[]).await;
        assert_eq!(g.status, StatusCode::OK);
        assert!(g.body.is_err(), "a cut body is an error, not a clean end");
        let e = &origin.log()[0];
        assert_eq!((e.bytes_sent, e.finished), (100_000, false));
    }
}

#[tokio::test]
async fn stalls_then_continues() {
    let origin = Origin::start().await.unwrap();
    origin.script(
        "/gen/5000",
        Script::new().nth(
            1,
            Fault::Stall {
                after: 1000,
                duration: Duration::from_millis(300),
            },
        ),
    );
    let t = Instant::now();
    let g = fetch(&origin, Via::Plain, Method::GET, "/gen/5000", &[]).await;
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(g.body.unwrap(), body::bytes(0, 0, 0..5000));
}

#[tokio::test]
async fn plays_status_sequences_in_order() {
    let origin = Origin::start().await.unwrap();
    origin.script(
        "/gen/10",
        Script::new().statuses(&[
            (503, Some("2")),
            (429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            (500, None),
        ]),
    );
    let mut seen = vec![];
    for _ in 0..4 {
        let g = fetch(&origin, Via::Plain, Method::GET, "/gen/10", &[]).await;
        seen.push((g.status.as_u16(), header(&g, "retry-after").to_owned()));
    }
    assert_eq!(
        seen,
        [
            (503, "2".into()),
            (429, "Wed, 21 Oct 2015 07:28:00 GMT".into()),
            (500, String::new()),
            (200, String::new())
        ]
    );
}

#[tokio::test]
async fn changes_the_representation_when_scripted() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/doc", Resource::seeded(5, 4096));
    origin.script("/doc", Script::new().nth(2, Fault::ChangeRepresentation));
    let first = fetch(&origin, Via::Plain, Method::GET, "/doc", &[]).await;
    let second = fetch(&origin, Via::Plain, Method::GET, "/doc", &[]).await;
    let third = fetch(&origin, Via::Plain, Method::GET, "/doc", &[]).await;
    assert_ne!(header(&first, "etag"), header(&second, "etag"));
    assert_ne!(
        header(&first, "last-modified"),
        header(&second, "last-modified")
    );
    assert_eq!(
        header(&second, "etag"),
        header(&third, "etag"),
        "the change lasts"
    );
    assert_eq!(first.body.unwrap(), body::bytes(5, 0, 0..4096));
    assert_eq!(second.body.unwrap(), body::bytes(5, 1, 0..4096));
    assert_eq!(origin.version("/doc"), 1);
    // A resume against the old validator now gets the whole new body.
    let old = "\"s5-l4096-v0\"";
    let g = fetch(
        &origin,
        Via::Plain,
        Method::GET,
        "/doc",
        &[("range", "bytes=100-"), ("if-range", old)],
    )
    .await;
    assert_eq!(g.status, StatusCode::OK);
}

#[tokio::test]
async fn sends_no_validators_when_scripted_and_changes_silently() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/bare", Resource::seeded(6, 4096));
    origin.script(
        "/bare",
        Script::new()
            .always(Fault::NoValidators)
            .nth(2, Fault::ChangeRepresentation),
    );
    let first = fetch(&origin, Via::Plain, Method::GET, "/bare", &[]).await;
    assert!(!first.headers.contains_key("etag"));
    assert!(!first.headers.contains_key("last-modified"));
    assert_eq!(first.body.unwrap(), body::bytes(6, 0, 0..4096));
    // A bare range is served from the new version, and nothing says so.
    let second = fetch(
        &origin,
        Via::Plain,
        Method::GET,
        "/bare",
        &[("range", "bytes=100-")],
    )
    .await;
    assert_eq!(second.status, StatusCode::PARTIAL_CONTENT);
    assert!(!second.headers.contains_key("etag"));
    assert!(!second.headers.contains_key("last-modified"));
    assert_eq!(second.body.unwrap(), body::bytes(6, 1, 100..4096));
    let raw = fetch(&origin, Via::Raw, Method::GET, "/bare", &[]).await;
    assert!(!raw.headers.contains_key("etag"));
    assert!(!raw.headers.contains_key("last-modified"));
    assert_eq!(raw.body.unwrap(), body::bytes(6, 1, 0..4096));
}

#[tokio::test]
async fn ignores_ranges_when_scripted() {
    let origin = Origin::start().await.unwrap();
    origin.script("/gen/300", Script::new().always(Fault::IgnoreRange));
    let g = fetch(
        &origin,
        Via::Tls(&BOTH),
        Method::GET,
        "/gen/300",
        &[("range", "bytes=100-")],
    )
    .await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body.unwrap().len(), 300);
    assert_eq!(origin.log()[0].range.as_deref(), Some("bytes=100-"));
}

#[tokio::test]
async fn the_raw_listener_lies_about_lengths() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/long", Resource::seeded(4, 10_000));
    origin.script(
        "/long",
        Script::new().always(Fault::LieLength {
            declared_extra: 1000,
        }),
    );
    let g = fetch(&origin, Via::Raw, Method::GET, "/long", &[]).await;
    assert_eq!(header(&g, "content-length"), "11000");
    assert!(g.body.is_err(), "fewer bytes than declared, then close");
    origin.resource("/short", Resource::seeded(4, 10_000));
    origin.script(
        "/short",
        Script::new().always(Fault::LieLength {
            declared_extra: -1000,
        }),
    );
    let g = fetch(&origin, Via::Raw, Method::GET, "/short", &[]).await;
    assert_eq!(header(&g, "content-length"), "9000");
    assert_eq!(
        g.body.unwrap(),
        body::bytes(4, 0, 0..9000),
        "the client stops at the declared length"
    );
    let sent: Vec<_> = origin
        .log()
        .iter()
        .map(|e| (e.listener, e.bytes_sent))
        .collect();
    assert_eq!(sent, [(Listener::Raw, 10_000), (Listener::Raw, 10_000)]);
    let honest = fetch(&origin, Via::Raw, Method::GET, "/gen/77", &[]).await;
    assert_eq!(honest.body.unwrap(), body::bytes(0, 0, 0..77));
}

#[tokio::test]
async fn redirects_chain_loop_and_downgrade() {
    let origin = Origin::start().await.unwrap();
    origin.redirect("/a", 301, "/b");
    origin.redirect("/b", 307, "/gen/5");
    origin.redirect("/l1", 302, "/l2");
    origin.redirect("/l2", 302, "/l1");
    origin.redirect("/down", 302, &origin.http_url("/gen/5"));
    let mut path = "/a".to_owned();
    let mut hops = vec![];
    for _ in 0..5 {
        let g = fetch(&origin, Via::Plain, Method::GET, &path, &[]).await;
        hops.push(g.status.as_u16());
        if !g.status.is_redirection() {
            break;
        }
        path = header(&g, "location").to_owned();
    }
    assert_eq!(hops, [301, 307, 200]);
    let l1 = fetch(&origin, Via::Plain, Method::GET, "/l1", &[]).await;
    let l2 = fetch(
        &origin,
        Via::Plain,
        Method::GET,
        header(&l1, "location"),
        &[],
    )
    .await;
    assert_eq!(header(&l2, "location"), "/l1");
    let down = fetch(&origin, Via::Tls(&BOTH), Method::GET, "/down", &[]).await;
    assert_eq!(down.status, StatusCode::FOUND);
    assert!(header(&down, "location").starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn paces_bodies_at_the_rate_limit() {
    let origin = Origin::start().await.unwrap();
    origin.script(
        "/gen/262144",
        Script::new().always(Fault::RateLimit(512 * 1024)),
    );
    let t = Instant::now();
    let g = fetch(&origin, Via::Plain, Method::GET, "/gen/262144", &[]).await;
    assert_eq!(g.body.unwrap().len(), 262_144);
    // 256 KiB at 512 KiB/s: half a second; only a lower bound is reliable here.
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn sends_oversized_headers() {
    let origin = Origin::start().await.unwrap();
    origin.script(
        "/gen/1",
        Script::new().always(Fault::OversizedHeaders(64 * 1024)),
    );
    let g = fetch(&origin, Via::Plain, Method::GET, "/gen/1", &[]).await;
    let filler: usize = g
        .headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-filler-"))
        .map(|(_, v)| v.len())
        .sum();
    assert_eq!(filler, 64 * 1024);
}

#[tokio::test]
async fn logs_what_each_request_asked_and_on_which_connection() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/f", Resource::seeded(1, 100));
    fetch(
        &origin,
        Via::Plain,
        Method::GET,
        "/f?x=1",
        &[
            ("range", "bytes=10-"),
            ("if-range", "\"zz\""),
            ("x-test", "yes"),
        ],
    )
    .await;
    fetch(&origin, Via::Tls(&BOTH), Method::HEAD, "/f", &[]).await;
    let log = origin.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, Method::GET);
    assert_eq!(log[0].path, "/f?x=1");
    assert_eq!(log[0].range.as_deref(), Some("bytes=10-"));
    assert_eq!(log[0].if_range.as_deref(), Some("\"zz\""));
    assert_eq!(
        log[0].status,
        StatusCode::OK,
        "If-Range mismatch: whole body"
    );
    assert_eq!(log[0].bytes_sent, 100);
    assert_eq!(log[0].headers["x-test"], "yes");
    assert_eq!(
        (log[1].method.clone(), log[1].bytes_sent, log[1].protocol),
        (Method::HEAD, 0, Protocol::Http2)
    );
    assert_ne!(log[0].connection, log[1].connection);
}

#[tokio::test]
async fn shutdown_closes_the_listeners() {
    let origin = Origin::start().await.unwrap();
    let addr = origin.http_addr();
    origin.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}
