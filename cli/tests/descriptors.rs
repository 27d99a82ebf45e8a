#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A low open-file limit: `ferry get -j 150` of 150 URLs under `ulimit -n
//! 64` runs as many at once as the limit holds, says so, and every
//! download lands (it used to fail most of them with "Too many open
//! files").

use std::process::{Command, Stdio};

use testkit::{Origin, Resource};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_file_limit_clamps_parallel_transfers_and_loses_none() {
    let origin = Origin::start().await.unwrap();
    let urls: Vec<String> = (0..150)
        .map(|i| {
            let path = format!("/f/{i}.bin");
            origin.resource(&path, Resource::seeded(i, 20_000 + i));
            origin.http_url(&path)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    // Hard and soft limit both 64: ferry cannot raise it.
    let run = Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -Sn 64 && ulimit -Hn 64 && exec "$0" "$@""#)
        .arg(FERRY)
        .args(["get", "-j", "150", "--output-dir", out.to_str().unwrap()])
        .args(&urls)
        .env("FERRY_HOME", &home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("-j 150 is more than the open-file limit (64) allows; running 5 at once"),
        "{err}"
    );
    for i in 0..150u64 {
        let got = std::fs::read(out.join(format!("{i}.bin"))).unwrap();
        assert_eq!(got, testkit::body::bytes(i, 0, 0..20_000 + i), "{i}.bin");
    }
}
