#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Interop with caddy (quic-go), a server no one here wrote, from Debian's
//! `caddy` package: HTTP/3 downloads, a resume with Range after a cut, and
//! caddy's `Alt-Svc` followed from HTTP/2 to HTTP/3. `.ci/run` installs
//! caddy; where it is missing the test says so and fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use transfer_core::{
    Protocol, ProtocolPreference, RequestBody, Transport, TransportRequest, TransportResponse,
};
use transport_http::{HttpConfig, HttpTransport, Roots};
use transport_quic::{ProtocolChoice, QuicConfig, QuicTransport};

const LEN: usize = 64 << 20;

/// caddy serving `www/` over h1, h2 and h3 on one port of 127.0.0.1 with a
/// certificate from a root made for the run. Killed on drop.
struct Caddy {
    child: Child,
    port: u16,
    root_pem: String,
    www: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn start_caddy() -> Caddy {
    let dir = tempfile::tempdir().unwrap();
    let certs = testkit::pem_certificates().unwrap();
    let write = |name: &str, text: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let leaf = write("leaf.pem", &certs.leaf);
    let key = write("key.pem", &certs.key);
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(
        www.join("f.bin"),
        testkit::body::bytes(51, 0, 0..LEN as u64),
    )
    .unwrap();
    let port = free_port();
    let caddyfile = write(
        "Caddyfile",
        &format!(
            "{{\n  admin off\n  auto_https off\n  servers {{\n    protocols h1 h2 h3\n  }}\n}}\n\
             https://localhost:{port} {{\n  bind 127.0.0.1\n  tls {} {}\n  root * {}\n  file_server\n}}\n",
            leaf.display(),
            key.display(),
            www.display()
        ),
    );
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("caddy (Debian package `caddy`; .ci/run installs it)");
    let caddy = Caddy {
        child,
        port,
        root_pem: certs.root,
        www,
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return caddy;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("caddy did not start on port {port}");
}

fn http_config(caddy: &Caddy) -> HttpConfig {
    HttpConfig::default()
        .roots(Roots::Webpki)
        .add_roots_pem(caddy.root_pem.as_bytes())
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
    let caddy = start_caddy();
    let want = std::fs::read(caddy.www.join("f.bin")).unwrap();
    let url = format!("https://localhost:{}/f.bin", caddy.port);

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
