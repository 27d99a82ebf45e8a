#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! `ferry get URL --to s3://BUCKET/KEY` into moto (an S3-protocol server
//! from PyPI): a 300 MiB download into a bucket, SIGKILLed at three random
//! moments and run again, lands whole as one object; after each kill only
//! the part in flight is fetched and uploaded again (parts of 8 MiB, a
//! checkpoint at each).

use std::process::{Command, Stdio};
use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::path::Path;
use testkit::{Fault, Origin, Resource, Script, body};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const PART: u64 = 8 << 20;

fn range_start(range: &Option<String>) -> u64 {
    range
        .as_deref()
        .and_then(|r| {
            r.trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_into_a_bucket_survives_three_kills() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let moto = testkit::Moto::start(&["ferry-dl"]).unwrap();
    let origin = Origin::start().await.unwrap();
    let len = 300u64 << 20;
    origin.resource("/big.bin", Resource::seeded(91, len));
    origin.script("/big.bin", Script::new().always(Fault::RateLimit(48 << 20)));
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let url = origin.http_url("/big.bin");
    let endpoint = moto.endpoint();
    let args: Vec<String> = [
        "get",
        &url,
        "--to",
        "s3://ferry-dl/downloads/big.bin",
        "--endpoint",
        &endpoint,
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let ferry = move || {
        let mut c = Command::new(FERRY);
        c.args(&args)
            .env("FERRY_HOME", &home)
            .env("AWS_ACCESS_KEY_ID", "ferry")
            .env("AWS_SECRET_ACCESS_KEY", "ferry")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    for kill in 0..3 {
        let mut child = ferry().spawn().unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = Duration::from_millis(800 + seed % 1200);
        tokio::time::sleep(after).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("kill {kill} after {after:?}");
    }
    let status = tokio::task::spawn_blocking(move || ferry().status().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "the last run exits with {status}");

    let s3 = store_s3::s3_builder("ferry-dl", Some(&endpoint))
        .with_access_key_id("ferry")
        .with_secret_access_key("ferry")
        .build()
        .unwrap();
    let got = s3
        .get(&Path::from("downloads/big.bin"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len() as u64, len);
    assert!(
        got == body::bytes(91, 0, 0..len),
        "the object is byte-identical"
    );

    // Each run after a kill asks from a part boundary, at most the part in
    // flight (plus what sat in socket buffers) before where the killed run
    // had got to.
    let log = origin.log();
    assert!(log.len() >= 2, "the download was interrupted: {log:?}");
    let slack = PART + (4 << 20);
    for pair in log.windows(2) {
        let reached = range_start(&pair[0].range) + pair[0].bytes_sent;
        let next = range_start(&pair[1].range);
        assert_eq!(next % PART, 0, "resumed at a part boundary: {next}");
        assert!(
            next + slack >= reached,
            "asked again from {next} after reaching {reached}: more than the part in flight"
        );
    }
    assert!(
        log.iter().skip(1).any(|e| range_start(&e.range) > 0),
        "later runs resumed with a Range"
    );
}
