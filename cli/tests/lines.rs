#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What `ferry get` prints when standard error is not a terminal: one
//! "NAME: done, SIZE" line for every download of the list, including
//! those that end while the rest of the list is still being queued and
//! those that end just before the command does.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use testkit::{Origin, Resource};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// The "done" lines of a run's standard error, counted per line.
fn done_lines(stderr: &[u8]) -> HashMap<String, usize> {
    let mut lines = HashMap::new();
    for l in String::from_utf8_lossy(stderr).lines() {
        if l.contains(": done, ") {
            *lines.entry(l.to_owned()).or_default() += 1;
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_download_of_a_list_says_done_once() {
    let origin = Origin::start().await.unwrap();
    let files = 300;
    let list: String = (0..files)
        .map(|i| {
            let path = format!("/f{i:03}.bin");
            origin.resource(&path, Resource::seeded(i, 1000 + i));
            format!("{}\n", origin.http_url(&path))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    let list_file = dir.path().join("list.txt");
    std::fs::write(&list_file, list).unwrap();
    let get = || {
        let run = Command::new(FERRY)
            .args(["get", "-i"])
            .arg(&list_file)
            .arg("--output-dir")
            .arg(&out)
            .env("FERRY_HOME", &home)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        done_lines(&run.stderr)
    };
    let expected: HashMap<String, usize> = (0..files)
        .map(|i| {
            let size = transfer_core::format_size(1000 + i);
            (format!("f{i:03}.bin: done, {size}"), 1)
        })
        .collect();
    assert_eq!(get(), expected, "one done line per download");
    // Again: every file is there already, and each says so once.
    assert_eq!(get(), expected, "one done line per file already there");
}
