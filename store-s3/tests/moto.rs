#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The TaskStore conformance suite against a real S3-protocol server no one
//! here wrote: moto (PyPI `moto[server]` 5.2.1) on 127.0.0.1, through
//! object_store's `AmazonS3` client. Two stores on one session (two
//! processes, as far as the store can tell) write at once and lose nothing.
//!
//! The server is found at `$FERRY_MOTO_SERVER`, else
//! `~/.cache/ferry/moto/bin/moto_server` (where `.ci/run` installs it), else
//! `moto_server` on PATH.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use store_s3::S3TaskStore;
use transfer_core::{SessionId, TaskStore};

struct Moto {
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

fn s3(moto: &Moto, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", moto.port))
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id("ferry")
            .with_secret_access_key("ferry")
            .build()
            .unwrap(),
    )
}

/// rustls is built with two providers in this workspace (object_store's
/// client brings aws-lc-rs): name one for the process.
fn one_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_moto() {
    one_provider();
    let moto = start_moto("ferry-conformance");
    let objects = s3(&moto, "ferry-conformance");
    testkit::conformance::task_store(|| {
        let objects = objects.clone();
        async move { S3TaskStore::new(objects, "ferry").compact_every(8) }
    })
    .await;
}

/// Two stores on one session commit 40 batches each, interleaved: every
/// batch lands, and both read the same records afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_session_lose_nothing() {
    one_provider();
    let moto = start_moto("ferry-writers");
    let objects = s3(&moto, "ferry-writers");
    let session = SessionId::new("shared").unwrap();
    let a = Arc::new(S3TaskStore::new(objects.clone(), "ferry").compact_every(16));
    let b = Arc::new(S3TaskStore::new(objects, "ferry").compact_every(16));
    let writer = |store: Arc<S3TaskStore>, base: u64| {
        let session = session.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let r = testkit::conformance::record(base + i, "shared");
                store.save(&session, vec![r]).await.unwrap();
            }
        })
    };
    let (x, y) = (writer(a.clone(), 0), writer(b.clone(), 1000));
    x.await.unwrap();
    y.await.unwrap();
    let ids = |store: Arc<S3TaskStore>| {
        let session = session.clone();
        async move {
            let mut ids: Vec<u64> = store
                .load(&session)
                .await
                .unwrap()
                .records
                .iter()
                .map(|r| r.id.as_u64())
                .collect();
            ids.sort_unstable();
            ids
        }
    };
    let (seen_a, seen_b) = (ids(a).await, ids(b).await);
    assert_eq!(seen_a.len(), 80, "every batch of both writers landed");
    assert_eq!(seen_a, seen_b, "both see the same session");
}
