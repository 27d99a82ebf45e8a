#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! `ferry get` as a user runs it: a real process against the testkit origin,
//! SIGKILLed at random moments and started again; the file ends up
//! byte-identical and each restart asks again for at most about two
//! checkpoints' worth of bytes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{Fault, Origin, Resource, Script, body};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn ferry_get(home: &Path, out: &Path, url: &str, extra: &[&str]) -> Child {
    Command::new(FERRY)
        .args(["get", url, "--output-dir"])
        .arg(out)
        .args(extra)
        .env("FERRY_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn range_start(range: &Option<String>) -> u64 {
    range
        .as_deref()
        .map(|r| {
            r.trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .unwrap()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_downloads_resume_and_land_intact() {
    let origin = Origin::start().await.unwrap();
    let url = origin.http_url("/big.bin");
    killed_and_resumed(&origin, &url, &[]).await;
}

/// The same over HTTP/3 (`--http3-only`): every request of every run went over
/// QUIC, and the restarts resumed with a Range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_http3_downloads_resume_and_land_intact() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, origin.root_cert_pem()).unwrap();
    let url = origin.https_url("/big.bin");
    let extra = ["--http3-only", "--cacert", root.to_str().unwrap()];
    killed_and_resumed(&origin, &url, &extra).await;
    let log = origin.log();
    assert!(
        log.iter().all(|e| e.protocol == testkit::Protocol::Http3),
        "{log:?}"
    );
}

/// Starts `ferry get URL EXTRA` five times, SIGKILLing it at random moments,
/// then lets a sixth run finish, and checks the file and what was fetched
/// again.
async fn killed_and_resumed(origin: &Origin, url: &str, extra: &[&str]) {
    let len = 256u64 << 20;
    let rate = 48u64 << 20;
    origin.resource("/big.bin", Resource::seeded(9, len));
    origin.script("/big.bin", Script::new().always(Fault::RateLimit(rate)));
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));

    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    for kill in 0..5 {
        let mut child = ferry_get(&home, &out, url, extra);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = Duration::from_millis(400 + seed % 1200);
        tokio::time::sleep(after).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("kill {kill} after {after:?}");
    }
    let mut child = ferry_get(&home, &out, url, extra);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "ferry get did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "ferry get exited with {status}");

    let got = std::fs::read(out.join("big.bin")).unwrap();
    assert_eq!(got.len() as u64, len);
    assert!(
        got == body::bytes(9, 0, 0..len),
        "the file is byte-identical"
    );

    // Each request after a kill starts at most two checkpoints (32 MiB
    // each: at full speed one is being flushed while the next arrives),
    // plus what sat in socket buffers, before where the killed request had
    // got to.
    let log = origin.log();
    assert!(log.len() >= 2, "the downloads were interrupted: {log:?}");
    let slack = 2 * (32 << 20) + (8 << 20);
    for pair in log.windows(2) {
        let reached = range_start(&pair[0].range) + pair[0].bytes_sent;
        let next = range_start(&pair[1].range);
        assert!(
            next + slack >= reached,
            "asked again from {next} after reaching {reached}: more than a checkpoint redone"
        );
    }
    assert!(
        log.iter().skip(1).any(|e| range_start(&e.range) > 0),
        "later runs resumed with a Range"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_and_the_next_run_continues_from_there() {
    let origin = Origin::start().await.unwrap();
    let len = 64u64 << 20;
    origin.resource("/t.bin", Resource::seeded(4, len));
    origin.script("/t.bin", Script::new().always(Fault::RateLimit(16 << 20)));
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    let url = origin.http_url("/t.bin");

    let mut child = ferry_get(&home, &out, &url, &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "a clean stop says it was interrupted"
    );

    let ls = Command::new(FERRY)
        .args(["ls", "--json"])
        .env("FERRY_HOME", &home)
        .output()
        .unwrap();
    let row: serde_json::Value = serde_json::from_str(
        String::from_utf8(ls.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let durable = row["durable"].as_u64().unwrap();
    let sent = origin.log()[0].bytes_sent;
    assert!(durable > 0, "the stop recorded a checkpoint");
    assert!(
        durable + (4 << 20) >= sent,
        "the checkpoint at the stop is close to what had arrived: {durable} of {sent}"
    );

    let mut child = ferry_get(&home, &out, &url, &[]);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    assert!(std::fs::read(out.join("t.bin")).unwrap() == body::bytes(4, 0, 0..len));
    let log = origin.log();
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[1].range.as_deref(),
        Some(format!("bytes={durable}-").as_str())
    );
}
