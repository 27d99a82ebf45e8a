#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `ferry put` as a user runs it against the testkit origin's upload sink:
//! the answer is printed, a form carries its fields, a SIGKILLed upload is
//! sent again by the next run, and an upload already done is not.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use testkit::{Fault, Origin, Script, body};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn put(home: &Path, args: &[&str]) -> Output {
    Command::new(FERRY)
        .arg("put")
        .args(args)
        .env("FERRY_HOME", home)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn sink_entries(origin: &Origin, path: &str) -> Vec<testkit::LogEntry> {
    origin
        .log()
        .into_iter()
        .filter(|e| e.path == path)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_sends_a_file_and_prints_the_answer() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let file = dir.path().join("report.csv");
    let len = 3u64 << 20;
    std::fs::write(&file, body::bytes(81, 0, 0..len)).unwrap();
    let url = origin.http_url("/upload/report");
    let file_arg = file.to_str().unwrap();

    let got = put(&home, &[file_arg, &url, "--content-type", "text/csv"]);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        format!("received {len} bytes\n"),
        "the server's answer on stdout"
    );
    let sent = sink_entries(&origin, "/upload/report");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, http::Method::PUT);
    assert_eq!(sent[0].headers["content-type"], "text/csv");
    assert_eq!(sent[0].bytes_received, len);

    // The same command again: already uploaded, the file unchanged.
    let again = put(&home, &[file_arg, &url]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        sink_entries(&origin, "/upload/report").len(),
        1,
        "not sent twice"
    );

    // A form, with fields.
    let form_url = origin.http_url("/upload/form");
    let got = put(
        &home,
        &[file_arg, &form_url, "-F", "owner=ana", "-F", "kind=weekly"],
    );
    assert!(got.status.success(), "{got:?}");
    let answer: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    let parts = answer["parts"].as_array().unwrap();
    assert_eq!(parts[0]["name"], "owner");
    assert_eq!(parts[0]["value"], "ana");
    assert_eq!(parts[1]["value"], "weekly");
    assert_eq!(parts[2]["name"], "file");
    assert_eq!(parts[2]["file_name"], "report.csv");
    assert_eq!(parts[2]["sha256"], hex::encode(body::sha256(81, 0, len)));
    assert_eq!(
        sink_entries(&origin, "/upload/form")[0].method,
        http::Method::POST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_fails_clearly_on_a_missing_file_or_a_refusal() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let missing = dir.path().join("missing.bin");
    let got = put(
        &home,
        &[missing.to_str().unwrap(), &origin.http_url("/upload/x")],
    );
    assert_eq!(got.status.code(), Some(2), "{got:?}");
    assert!(
        String::from_utf8_lossy(&got.stderr).contains("missing.bin"),
        "{got:?}"
    );
    assert!(origin.log().is_empty());

    let file = dir.path().join("a.bin");
    std::fs::write(&file, b"hello").unwrap();
    let got = put(&home, &[file.to_str().unwrap(), &origin.http_url("/nope")]);
    assert_eq!(
        got.status.code(),
        Some(22),
        "an HTTP error is curl's 22: {got:?}"
    );
    assert!(
        String::from_utf8_lossy(&got.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
}

/// SIGKILL mid-upload, then the same command: the task is found again by
/// its key and the whole file is sent again (a plain upload has no offset
/// to resume from); the server gets it whole once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_put_is_sent_again_by_the_next_run() {
    let origin = Origin::start().await.unwrap();
    origin.script(
        "/upload/big",
        Script::new().nth(1, Fault::RateLimit(4 << 20)),
    );
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let file = dir.path().join("big.bin");
    let len = 64u64 << 20;
    std::fs::write(&file, body::bytes(82, 0, 0..len)).unwrap();
    let url = origin.http_url("/upload/big");
    let mut child = Command::new(FERRY)
        .args(["put", file.to_str().unwrap(), &url])
        .env("FERRY_HOME", &home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until `ferry ls` shows bytes sent (the sink logs a request when its
    // body ends).
    let start = std::time::Instant::now();
    loop {
        let ls = Command::new(FERRY)
            .args(["ls", "--json"])
            .env("FERRY_HOME", &home)
            .output()
            .unwrap();
        let sent = String::from_utf8_lossy(&ls.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|row| row["bytes"].as_u64())
            .unwrap_or(0);
        if sent > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no upload began");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let got = put(&home, &[file.to_str().unwrap(), &url]);
    assert!(got.status.success(), "{got:?}");
    let sent = sink_entries(&origin, "/upload/big");
    // The killed request never finished, so the sink never logged it; the
    // one logged is the whole file, sent again.
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].bytes_received, len);
    assert_eq!(sent[0].status, 200);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        format!("received {len} bytes\n")
    );
}

/// `ferry put --resumable` SIGKILLed at three random moments, then run to
/// the end: every run continues from the offset the server reports, the
/// server's SHA-256 matches, and each kill costs at most one append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_put_killed_three_times_continues_from_the_servers_offset() {
    let origin = Origin::start().await.unwrap();
    origin.script(
        "/resumable/big",
        Script::new().always(Fault::RateLimit(16 << 20)),
    );
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let file = dir.path().join("big.bin");
    let len = 96u64 << 20;
    let chunk = 4u64 << 20;
    std::fs::write(&file, body::bytes(83, 0, 0..len)).unwrap();
    let url = origin.http_url("/resumable/big");
    let args = [
        "put",
        file.to_str().unwrap(),
        &url,
        "--resumable",
        "--upload-chunk",
        "4M",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    for _ in 0..3 {
        let mut child = Command::new(FERRY)
            .args(args)
            .env("FERRY_HOME", &home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(300 + seed % 900)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let got = Command::new(FERRY)
        .args(args)
        .env("FERRY_HOME", &home)
        .output()
        .unwrap();
    assert!(got.status.success(), "{got:?}");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        format!(
            "received {len} bytes, sha256 {}\n",
            hex::encode(body::sha256(83, 0, len))
        )
    );
    let log = origin.log();
    let took: u64 = log.iter().map(|e| e.bytes_received).sum();
    assert!(
        took - len <= 3 * chunk,
        "{} bytes sent again for 3 kills",
        took - len
    );
    let heads = log
        .iter()
        .filter(|e| e.method == http::Method::HEAD)
        .count();
    assert!(heads >= 1, "a later run asked the server for its offset");
}
