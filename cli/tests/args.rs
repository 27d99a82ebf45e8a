#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Arguments a user types: URL lists from a file or standard input (blank
//! lines and `#` comments skipped), and clear refusals of a bad timetable or
//! checkpoint size before anything is queued.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn ferry(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(FERRY)
        .args(args)
        .env("FERRY_HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn queued(home: &Path) -> Vec<String> {
    queued_to(home).into_iter().map(|(url, _)| url).collect()
}

#[test]
fn url_lists_come_from_a_file_or_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        "# photos\nhttp://127.0.0.1:9/a.jpg\n\n   \nhttp://127.0.0.1:9/b.jpg\n  # done\n",
    )
    .unwrap();
    let added = ferry(
        &home,
        &[
            "add",
            "--output-dir",
            out.to_str().unwrap(),
            "-i",
            list.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let piped = ferry(
        &home,
        &[
            "add",
            "--output-dir",
            out.to_str().unwrap(),
            "-i",
            "-",
            "http://127.0.0.1:9/c.jpg",
        ],
        Some("http://127.0.0.1:9/d.jpg\n"),
    );
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let mut urls = queued(&home);
    urls.sort();
    assert_eq!(
        urls,
        ["a.jpg", "b.jpg", "c.jpg", "d.jpg"].map(|n| format!("http://127.0.0.1:9/{n}"))
    );

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# nothing\n\n").unwrap();
    let refused = ferry(&home, &["add", "-i", empty.to_str().unwrap()], None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("lists no URLs"));
}

/// Each queued task as (URL, destination).
fn queued_to(home: &Path) -> Vec<(String, String)> {
    let out = ferry(home, &["ls", "--json"], None);
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            (s("url"), s("destination"))
        })
        .collect()
}

#[test]
fn a_long_list_is_queued_whole_with_one_name_per_url_and_once_only() {
    long_list_queued(false);
}

#[test]
fn a_long_list_sent_to_a_runner_is_queued_whole_in_batches() {
    long_list_queued(true);
}

/// 100 URLs that all end in one file name: every URL gets a name of its own,
/// and a second run of the same list finds them all instead of adding more.
/// With a runner, the list reaches its session in batches (16, then 64,
/// then the rest); its downloads fail and wait to be tried again meanwhile
/// (nothing listens on port 9).
fn long_list_queued(runner: bool) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let running = runner.then(|| run(&home));
    // One name taken on disk already.
    std::fs::write(out.join("same.bin"), b"keep").unwrap();
    let list: String = (0..100)
        .map(|i| format!("http://127.0.0.1:9/d{i}/same.bin\n"))
        .collect();
    let add = |list: &str| {
        let added = ferry(
            &home,
            &["add", "--output-dir", out.to_str().unwrap(), "-i", "-"],
            Some(list),
        );
        assert!(
            added.status.success(),
            "{}",
            String::from_utf8_lossy(&added.stderr)
        );
    };
    add(&list);
    let first = queued_to(&home);
    assert_eq!(first.len(), 100);
    let urls: std::collections::HashSet<_> = first.iter().map(|(u, _)| u.clone()).collect();
    assert_eq!(urls.len(), 100);
    let names: std::collections::HashSet<_> = first.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(names.len(), 100, "two URLs share a destination");
    let file = |d: &String| {
        Path::new(d)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        !names.iter().any(|d| file(d) == "same.bin"),
        "the file on disk is not taken"
    );
    assert!(names.iter().any(|d| file(d) == "same-100.bin"));
    assert_eq!(std::fs::read(out.join("same.bin")).unwrap(), b"keep");

    add(&list);
    let mut again = queued_to(&home);
    let mut first = first;
    again.sort();
    first.sort();
    assert_eq!(again, first, "the same list again adds nothing");
    drop(running);
}

#[test]
fn a_bad_url_late_in_a_long_list_queues_nothing() {
    // The list goes to a running session, which takes long lists in
    // batches: the bad URL is found before the first batch is queued.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let _running = run(&home);
    let mut list: String = (0..100)
        .map(|i| format!("http://127.0.0.1:9/f{i}.bin\n"))
        .collect();
    list.push_str("ftp://127.0.0.1:9/late.bin\n");
    let refused = ferry(
        &home,
        &["add", "--output-dir", out.to_str().unwrap(), "-i", "-"],
        Some(&list),
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("ftp://127.0.0.1:9/late.bin"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(queued(&home), Vec::<String>::new(), "nothing was queued");
}

/// `ferry run` on `home`, once it listens on its control socket.
fn run(home: &Path) -> KillOnDrop {
    let child = Command::new(FERRY)
        .args(["run"])
        .env("FERRY_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !home.join("control.sock").exists() {
        assert!(start.elapsed().as_secs() < 20, "the runner did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    KillOnDrop(child)
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_bad_runner_option_is_refused_and_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    for (flag, value) in [
        ("--schedule", "25:00,1M"),
        ("--checkpoint", "lots"),
        ("--resolve", "example.com:443"),
        ("--resolve", "example.com:https:127.0.0.1"),
        ("--resolve", "example.com:443:localhost"),
        ("--parallel", "0"),
    ] {
        let got = ferry(
            &home,
            &[
                "get",
                "--output-dir",
                out.to_str().unwrap(),
                flag,
                value,
                "http://127.0.0.1:9/x",
            ],
            None,
        );
        assert!(!got.status.success(), "{flag} {value} accepted");
        let said = String::from_utf8_lossy(&got.stderr);
        assert!(said.contains(flag) && said.contains(value), "{said}");
    }
    assert!(queued(&home).is_empty());
}

/// The protocol flags are curl's, and exclude each other.
#[test]
fn the_protocol_flags_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    for both in [
        ["--http3", "--http2"],
        ["--http3-only", "--http1.1"],
        ["--http2", "--http1.1"],
        ["--prefer-http3", "--http3-only"],
    ] {
        let mut args = vec!["get", "--output-dir", out];
        args.extend(both);
        args.push("https://127.0.0.1:9/a");
        let got = ferry(&home, &args, None);
        assert_eq!(got.status.code(), Some(2), "{args:?}");
        let said = String::from_utf8_lossy(&got.stderr);
        assert!(said.contains("cannot be used with"), "{said}");
    }
}

#[test]
fn a_bad_upload_rate_is_refused_and_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    for value in ["fast", "0", "1x"] {
        let got = ferry(
            &home,
            &[
                "put",
                file.to_str().unwrap(),
                "http://127.0.0.1:9/up",
                "--limit-rate",
                value,
            ],
            None,
        );
        assert!(!got.status.success(), "--limit-rate {value} accepted");
        let said = String::from_utf8_lossy(&got.stderr);
        assert!(said.contains("--limit-rate"), "{said}");
    }
    assert!(queued(&home).is_empty());
}

#[test]
fn http3_only_with_a_plain_http_url_is_refused_in_words_and_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let out = out.to_str().unwrap();
    let get = [
        "get",
        "--http3-only",
        "--output-dir",
        out,
        "https://127.0.0.1:9/a",
        "http://127.0.0.1:9/b",
    ];
    let put = [
        "put",
        "--http3-only",
        file.to_str().unwrap(),
        "http://127.0.0.1:9/up",
    ];
    for (args, url) in [
        (&get[..], "http://127.0.0.1:9/b"),
        (&put[..], "http://127.0.0.1:9/up"),
    ] {
        let got = ferry(&home, args, None);
        assert!(!got.status.success(), "{args:?} accepted");
        let said = String::from_utf8_lossy(&got.stderr);
        assert!(
            said.contains("--http3-only needs https:// URLs") && said.contains(url),
            "{said}"
        );
    }
    assert!(queued(&home).is_empty());
}
