//! A moto server (PyPI `moto[server]` 5.2.1), an S3-protocol server no one
//! here wrote, on 127.0.0.1, and object_store's `AmazonS3` client for it.
//! The server is found at `$FERRY_MOTO_SERVER`, else
//! `~/.cache/ferry/moto/bin/moto_server` (where `.ci/run` installs it), else
//! `moto_server` on PATH.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};

pub struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server() -> String {
    if let Ok(p) = std::env::var("FERRY_MOTO_SERVER") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = format!("{home}/.cache/ferry/moto/bin/moto_server");
    if std::path::Path::new(&cached).exists() {
        return cached;
    }
    "moto_server".to_owned()
}

/// Sends one bodiless HTTP/1.1 request and returns the status line.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

impl Moto {
    /// Starts moto with `bucket` created.
    pub fn start(bucket: &str) -> Moto {
        start_moto(bucket)
    }

    /// A client for `bucket`.
    pub fn bucket(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id("ferry")
            .with_secret_access_key("ferry")
            .build()
            .unwrap()
    }
}

fn start_moto(bucket: &str) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(moto_server())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server (pip install 'moto[server]==5.2.1'; .ci/run installs it)");
    let moto = Moto { child, port };
    for _ in 0..200 {
        if let Ok(status) = http(port, "PUT", &format!("/{bucket}")) {
            assert!(status.contains(" 200"), "creating the bucket: {status}");
            return moto;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto did not start on port {port}");
}

/// rustls is built with two providers in this workspace (object_store's
/// client brings aws-lc-rs): name one for the process.
pub fn one_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
