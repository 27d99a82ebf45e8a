#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! curl's retry and time limits on `ferry get`: `--retry N`,
//! `--retry-max-time`, `--connect-timeout` and `--max-time` (the whole task,
//! across attempts), each failing in words when it is spent.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ferry_blocking, stderr};
use http::StatusCode;
use testkit::{BlackHole, Fault, Origin, Resource, Script};

/// `ferry get URL -o DIR EXTRA`, timed.
async fn get(home: &Path, url: &str, extra: &[&str]) -> (std::process::Output, Duration) {
    let out = home.with_file_name("out");
    let mut args = vec!["get", url, "--output-dir", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(60), ferry_blocking(home, &args))
        .await
        .expect("ferry get ends");
    (got, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_zero_fails_on_the_first_transient_error_and_the_default_retries() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/r.bin", Resource::seeded(41, 4096));
    origin.script("/r.bin", Script::new().statuses(&[(503, None)]));
    let dir = tempfile::tempdir().unwrap();
    let (got, _) = get(
        &dir.path().join("a"),
        &origin.http_url("/r.bin"),
        &["--retry", "0"],
    )
    .await;
    assert!(!got.status.success());
    assert!(stderr(&got).contains("503"), "{}", stderr(&got));
    assert_eq!(origin.log().len(), 1, "asked once");

    origin.resource("/r2.bin", Resource::seeded(41, 4096));
    origin.script("/r2.bin", Script::new().statuses(&[(503, None)]));
    let (got, _) = get(&dir.path().join("b"), &origin.http_url("/r2.bin"), &[]).await;
    assert!(got.status.success(), "{}", stderr(&got));
    let asked = origin.log().iter().filter(|e| e.path == "/r2.bin").count();
    assert_eq!(asked, 2, "asked again after the 503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_time_ends_a_slow_download_in_words() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/slow.bin", Resource::seeded(42, 4 << 20));
    origin.script(
        "/slow.bin",
        Script::new().always(Fault::RateLimit(256 << 10)),
    );
    let dir = tempfile::tempdir().unwrap();
    let (got, took) = get(
        &dir.path().join("h"),
        &origin.http_url("/slow.bin"),
        &["--max-time", "2"],
    )
    .await;
    eprintln!("--max-time 2 ended after {took:?}");
    assert!(!got.status.success());
    let said = stderr(&got);
    assert!(
        said.contains("not finished within its time limit of 2 s"),
        "{said}"
    );
    assert!(
        took < Duration::from_secs(10),
        "{took:?}: well before the 16 s it needs"
    );
    assert!(
        !dir.path().join("out/slow.bin").exists(),
        "a failed download leaves no file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_a_connection_that_never_opens() {
    let hole = BlackHole::start().await.unwrap();
    let url = hole.url("/x");
    let dir = tempfile::tempdir().unwrap();
    let (got, took) = get(
        &dir.path().join("h"),
        &url,
        &["--connect-timeout", "500ms", "--retry", "0"],
    )
    .await;
    eprintln!("--connect-timeout 500ms ended after {took:?}");
    assert!(!got.status.success());
    let said = stderr(&got);
    assert!(said.contains("connect timeout"), "{said}");
    assert!(
        took < Duration::from_secs(10),
        "{took:?}: not the 15 s default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_starts_after_retry_max_time() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/busy.bin", Resource::seeded(43, 4096));
    origin.script(
        "/busy.bin",
        Script::new().always(Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let (got, took) = get(
        &dir.path().join("h"),
        &origin.http_url("/busy.bin"),
        &["--retry-max-time", "3"],
    )
    .await;
    eprintln!("--retry-max-time 3 ended after {took:?}");
    assert!(!got.status.success());
    assert!(stderr(&got).contains("503"), "{}", stderr(&got));
    assert!(took < Duration::from_secs(15), "{took:?}");
    let asked = origin.log().len();
    assert!(
        (2..=5).contains(&asked),
        "{asked} requests in 3 s of backoff"
    );
}
