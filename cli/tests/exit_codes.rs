#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! `ferry get`'s exit codes are curl's for the failures curl knows, as the
//! README's table says: 6 cannot resolve, 7 cannot connect, 22 HTTP error,
//! 28 timeout, 60 certificate not trusted, 63 larger than --max-filesize.

mod common;

use common::{ferry_blocking, stderr};
use testkit::{BlackHole, Origin, Resource};

async fn code(args: &[&str]) -> i32 {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let mut all = vec!["get", "--retry", "0", "--output-dir", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let got = ferry_blocking(&home, &all).await;
    assert!(!got.status.success(), "{args:?} succeeded");
    eprintln!("{args:?}: {}", stderr(&got));
    got.status.code().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_with_curls_codes() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/big.bin", Resource::seeded(71, 1 << 20));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hole = BlackHole::start().await.unwrap();
    assert_eq!(code(&["http://nonexistent.invalid/x"]).await, 6);
    assert_eq!(code(&[&format!("http://127.0.0.1:{closed}/x")]).await, 7);
    assert_eq!(code(&[&origin.http_url("/missing")]).await, 22);
    assert_eq!(
        code(&["--connect-timeout", "300ms", &hole.url("/x")]).await,
        28
    );
    assert_eq!(code(&[&origin.https_url("/big.bin")]).await, 60);
    assert_eq!(
        code(&["--max-filesize", "1k", &origin.http_url("/big.bin")]).await,
        63
    );
}
