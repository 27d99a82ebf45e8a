#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Two downloads queued by separate commands under one file name: each
//! lands byte-exact under a name of its own; neither overwrites the other.

use std::process::{Command, Stdio};

use testkit::{Origin, Resource};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_adds_of_one_name_keep_both_files() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/a/same.bin", Resource::seeded(1, 50_000));
    origin.resource("/b/same.bin", Resource::seeded(2, 60_000));
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    let ferry = |args: &[&str]| {
        let run = Command::new(FERRY)
            .args(args)
            .env("FERRY_HOME", &home)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "ferry {args:?}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    };
    let out_arg = out.to_str().unwrap();
    ferry(&["add", "-o", out_arg, &origin.http_url("/a/same.bin")]);
    ferry(&["add", "-o", out_arg, &origin.http_url("/b/same.bin")]);
    ferry(&["run", "--until-idle"]);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["same-1.bin", "same.bin"], "one file lost");
    let a = std::fs::read(out.join("same.bin")).unwrap();
    let b = std::fs::read(out.join("same-1.bin")).unwrap();
    assert_eq!(a, testkit::body::bytes(1, 0, 0..50_000));
    assert_eq!(b, testkit::body::bytes(2, 0, 0..60_000));
}
