#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! `ferry get` as a user runs it: a real process against the testkit origin,
//! SIGKILLed at random moments and started again; the file ends up
//! byte-identical and each restart asks again for at most about one
//! checkpoint interval's worth of bytes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{Fault, Origin, Resource, Script, body};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn ferry_get(home: &Path, out: &Path, url: &str) -> Child {
    Command::new(FERRY)
        .args(["get", url, "-o"])
        .arg(out)
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
    let len = 256u64 << 20;
    let rate = 48u64 << 20;
    origin.resource("/big.bin", Resource::seeded(9, len));
    origin.script("/big.bin", Script::new().always(Fault::RateLimit(rate)));
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    let url = origin.http_url("/big.bin");

    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    for kill in 0..5 {
        let mut child = ferry_get(&home, &out, &url);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = Duration::from_millis(400 + seed % 1200);
        tokio::time::sleep(after).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("kill {kill} after {after:?}");
    }
    let mut child = ferry_get(&home, &out, &url);
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

    // Each request after a kill starts at most one checkpoint interval
    // (1 s at the origin's pace), plus what sat in socket buffers, before
    // where the killed request had got to.
    let log = origin.log();
    assert!(log.len() >= 2, "the downloads were interrupted: {log:?}");
    let slack = rate + (8 << 20);
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
