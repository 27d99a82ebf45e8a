#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Interop with ngtcp2's example server (`gtlsserver`, GnuTLS), a server no
//! one here wrote, from Debian's `ngtcp2-server` package: a download over
//! HTTP/3. (It serves whole files and ignores Range.) `.ci/run` installs
//! it; where it is missing the test says so and fails.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use transfer_core::{Protocol, ProtocolPreference, RequestBody, Transport, TransportRequest};
use transport_http::{HttpConfig, Roots};
use transport_quic::{QuicConfig, QuicTransport};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_from_gtlsserver_over_http3() {
    let dir = tempfile::tempdir().unwrap();
    let certs = testkit::pem_certificates().unwrap();
    let (key, leaf) = (dir.path().join("key.pem"), dir.path().join("leaf.pem"));
    std::fs::write(&key, &certs.key).unwrap();
    std::fs::write(&leaf, &certs.leaf).unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let len = 16u64 << 20;
    let want = testkit::body::bytes(52, 0, 0..len);
    std::fs::write(www.join("f.bin"), &want).unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Killed(
        Command::new(if std::path::Path::new("/usr/sbin/gtlsserver").exists() {
            "/usr/sbin/gtlsserver"
        } else {
            "gtlsserver"
        })
        .args(["-q", "-d"])
        .arg(&www)
        .args(["127.0.0.1", &port.to_string()])
        .arg(&key)
        .arg(&leaf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gtlsserver (Debian package `ngtcp2-server`; .ci/run installs it)"),
    );
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_roots_pem(certs.root.as_bytes())
        .unwrap();
    let quic = QuicTransport::new(QuicConfig::default().http(http)).unwrap();
    let url = format!("https://localhost:{port}/f.bin");
    // It takes a moment to bind: ask again until it answers.
    let mut last = None;
    for _ in 0..20 {
        let request = http::Request::get(&url).body(RequestBody::empty()).unwrap();
        let mut request = TransportRequest::new(request);
        request.options.protocol = ProtocolPreference::RequireHttp3;
        request.options.timeouts.connect = Duration::from_millis(500);
        match quic.send(request).await {
            Ok(r) => {
                assert_eq!(r.response.status(), 200);
                assert_eq!(r.metrics.protocol, Protocol::Http3);
                let got = r.response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(got.len() as u64, len);
                assert_eq!(Sha256::digest(&got), Sha256::digest(&want));
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    panic!("gtlsserver never answered: {last:?}");
}
