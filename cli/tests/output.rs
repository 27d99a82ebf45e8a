#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What `ferry get` says, as its output flags ask: `-q` only the errors,
//! `-v` and `RUST_LOG` the library's events (a line per response), `--json`
//! one parsable event per line, `--no-progress` the line per file; and no
//! credential, of the URL or of a proxy, in any of it.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{FERRY, stderr, stdout};
use serde_json::Value;
use testkit::{Origin, Resource};

/// Runs `ferry ARGS` with `home` as its state directory, `env` set and
/// `RUST_LOG` unset unless `env` sets it.
fn ferry_with(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(FERRY);
    cmd.args(args)
        .env("FERRY_HOME", home)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// An origin with `/f.bin` (5000 bytes), a state directory and an output
/// directory.
async fn setup() -> (Origin, tempfile::TempDir) {
    let origin = Origin::start().await.unwrap();
    origin.resource("/f.bin", Resource::seeded(7, 5000));
    (origin, tempfile::tempdir().unwrap())
}

/// The output directory under `dir`, as an argument.
fn out_dir(dir: &tempfile::TempDir) -> String {
    dir.path().join("out").to_string_lossy().into_owned()
}

/// Each line of standard output parsed as JSON.
fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// The `event` field of each line.
fn events(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["event"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_says_nothing_on_success_and_only_the_error_on_failure() {
    let (origin, dir) = setup().await;
    let home = dir.path().join("home");
    let out = out_dir(&dir);
    let ok = ferry_with(
        &home,
        &[
            "get",
            "-q",
            "--output-dir",
            &out,
            &origin.http_url("/f.bin"),
        ],
        &[],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(stderr(&ok), "");
    assert_eq!(stdout(&ok), "");
    assert_eq!(
        std::fs::metadata(dir.path().join("out/f.bin"))
            .unwrap()
            .len(),
        5000
    );

    let missing = origin.http_url("/missing.bin");
    let failed = ferry_with(&home, &["get", "-q", "--output-dir", &out, &missing], &[]);
    assert_eq!(failed.status.code(), Some(22), "{}", stderr(&failed));
    let said = stderr(&failed);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 1, "{said}");
    assert!(lines[0].starts_with("ferry: missing.bin: "), "{said}");
    assert!(lines[0].contains("404"), "{said}");
    assert_eq!(stdout(&failed), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_shows_each_response_with_its_status() {
    let (origin, dir) = setup().await;
    let run = ferry_with(
        &dir.path().join("home"),
        &[
            "get",
            "-v",
            "--output-dir",
            &out_dir(&dir),
            &origin.http_url("/f.bin"),
        ],
        &[],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let said = stderr(&run);
    let response = said
        .lines()
        .find(|l| l.contains(" response ") || l.ends_with(" response"))
        .unwrap_or_else(|| panic!("no response line in {said}"));
    assert!(response.contains("status=200"), "{response}");
    assert!(response.contains("protocol=HTTP/1.1"), "{response}");
    assert!(response.contains("method=GET"), "{response}");
    assert!(said.contains("starting"), "{said}");
    // The lines for people stay.
    assert!(said.contains("f.bin: done, 4.9 KiB"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_chooses_what_is_logged() {
    let (origin, dir) = setup().await;
    let home = dir.path().join("home");
    let get = |name: &str, rust_log: &str, extra: &[&str]| {
        let url = origin.http_url("/f.bin");
        let out = dir.path().join(name).to_string_lossy().into_owned();
        let mut args = vec!["get", "--output-dir", out.as_str(), url.as_str()];
        args.extend_from_slice(extra);
        let run = ferry_with(&home, &args, &[("RUST_LOG", rust_log)]);
        assert!(run.status.success(), "{}", stderr(&run));
        stderr(&run)
    };
    let http = get("a", "transport_http=info", &[]);
    assert!(http.contains("status=200"), "{http}");
    assert!(!http.contains("starting"), "{http}");
    let scheduler = get("b", "scheduler=info", &[]);
    assert!(scheduler.contains("starting"), "{scheduler}");
    assert!(!scheduler.contains("status=200"), "{scheduler}");
    // RUST_LOG wins over -v.
    let chosen = get("c", "scheduler=info", &["-v"]);
    assert!(!chosen.contains("status=200"), "{chosen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_tell_a_download_from_queued_to_completed() {
    let (origin, dir) = setup().await;
    let url = origin.http_url("/f.bin");
    let run = ferry_with(
        &dir.path().join("home"),
        &["get", "--json", "--output-dir", &out_dir(&dir), &url],
        &[],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let lines = json_lines(&run);
    let seen = events(&lines);
    assert_eq!(seen.first(), Some(&"queued"), "{seen:?}");
    assert_eq!(seen.last(), Some(&"completed"), "{seen:?}");
    assert_eq!(seen.iter().filter(|e| **e == "completed").count(), 1);
    if let Some(started) = seen.iter().position(|e| *e == "started") {
        assert!(seen[..started].iter().all(|e| *e == "queued"), "{seen:?}");
    }
    let id = lines[0]["id"].as_str().unwrap();
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    for line in &lines {
        assert_eq!(line["id"], id, "{line}");
        assert_eq!(line["url"], url.as_str(), "{line}");
        let time = line["time"].as_str().unwrap();
        humantime_like(time);
    }
    assert_eq!(lines[0]["name"], "f.bin");
    assert_eq!(lines.last().unwrap()["bytes"], 5000);
    // The id is the one `ferry ls` prints.
    let ls = ferry_with(&dir.path().join("home"), &["ls", "--json"], &[]);
    assert!(stdout(&ls).contains(id), "{}", stdout(&ls));
    // Nothing for people on standard output, nor a line per file on
    // standard error.
    assert!(!stderr(&run).contains("done"), "{}", stderr(&run));
}

/// `time` is RFC 3339 in UTC, as `2026-12-08T01:17:18.123Z`.
fn humantime_like(time: &str) {
    let b = time.as_bytes();
    assert!(
        time.len() == 24 && b[4] == b'-' && b[10] == b'T' && time.ends_with('Z'),
        "{time:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_tell_a_failure_in_words() {
    let (origin, dir) = setup().await;
    let url = origin.http_url("/missing.bin");
    let run = ferry_with(
        &dir.path().join("home"),
        &["get", "--json", "--output-dir", &out_dir(&dir), &url],
        &[],
    );
    assert_eq!(run.status.code(), Some(22), "{}", stderr(&run));
    let lines = json_lines(&run);
    assert_eq!(events(&lines), ["queued", "failed"], "{lines:?}");
    let error = lines[1]["error"].as_str().unwrap();
    assert!(error.contains("404"), "{error}");
    assert!(!error.contains("Kind") && !error.contains('{'), "{error}");
    assert_eq!(lines[1]["url"], url.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_progress_keeps_the_line_per_file_and_the_summary() {
    let (origin, dir) = setup().await;
    let run = ferry_with(
        &dir.path().join("home"),
        &[
            "get",
            "--no-progress",
            "--output-dir",
            &out_dir(&dir),
            &origin.http_url("/f.bin"),
        ],
        &[],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let said = stderr(&run);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 2, "{said}");
    assert_eq!(lines[0], "f.bin: done, 4.9 KiB");
    assert!(lines[1].starts_with("1 file, 4.9 KiB in "), "{said}");
    assert!(lines[1].ends_with("/s)"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_appears_in_verbose_or_json_output() {
    let (origin, dir) = setup().await;
    let home = dir.path().join("home");
    // Credentials in the URL, and a proxy with its own that the origin's
    // host goes around (the proxy's port is closed).
    let url = origin
        .http_url("/f.bin")
        .replacen("http://", "http://user:urlsecret@", 1);
    let proxy = "http://puser:proxysecret@127.0.0.1:9";
    let stripped = origin.http_url("/f.bin");
    for (n, flag) in ["-vvv", "--json"].into_iter().enumerate() {
        let out = dir.path().join(format!("out{n}"));
        let run = ferry_with(
            &home,
            &[
                "get",
                flag,
                "-x",
                proxy,
                "--noproxy",
                "127.0.0.1",
                "--output-dir",
                &out.to_string_lossy(),
                &url,
            ],
            &[],
        );
        let (said, printed) = (stderr(&run), stdout(&run));
        assert!(run.status.success(), "{said}");
        for secret in ["urlsecret", "proxysecret", "dXNlcjp1cmxzZWNyZXQ"] {
            assert!(!said.contains(secret), "{flag}: {secret} in {said}");
            assert!(!printed.contains(secret), "{flag}: {secret} in {printed}");
        }
        if flag == "--json" {
            for line in json_lines(&run) {
                assert_eq!(line["url"], stripped.as_str(), "{line}");
            }
        } else {
            assert!(said.contains("status=200"), "{said}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_json_gives_the_answer_as_a_line() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.csv");
    std::fs::write(&file, vec![b'x'; 3000]).unwrap();
    let url = origin.http_url("/upload/report");
    let run = ferry_with(
        &dir.path().join("home"),
        &["put", "--json", file.to_str().unwrap(), &url],
        &[],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let lines = json_lines(&run);
    let seen = events(&lines);
    assert_eq!(seen.first(), Some(&"queued"), "{seen:?}");
    assert_eq!(
        &seen[seen.len() - 2..],
        ["completed", "response"],
        "{seen:?}"
    );
    let answer = lines.last().unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "received 3000 bytes\n", "{answer}");
    assert_eq!(answer["url"], url.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_takes_the_same_flags() {
    let (origin, dir) = setup().await;
    let home = dir.path().join("home");
    let out = out_dir(&dir);
    let url = origin.http_url("/f.bin");
    let add = ferry_with(&home, &["add", "--output-dir", &out, &url], &[]);
    assert!(add.status.success(), "{}", stderr(&add));
    let run = ferry_with(&home, &["run", "--until-idle", "--json"], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let lines = json_lines(&run);
    let seen = events(&lines);
    assert_eq!(seen.first(), Some(&"queued"), "{seen:?}");
    assert_eq!(seen.last(), Some(&"completed"), "{seen:?}");
    assert!(lines.iter().all(|l| l["url"] == url.as_str()), "{lines:?}");
    assert_eq!(stderr(&run), "");

    origin.resource("/g.bin", Resource::seeded(8, 100));
    let add = ferry_with(
        &home,
        &["add", "--output-dir", &out, &origin.http_url("/g.bin")],
        &[],
    );
    assert!(add.status.success(), "{}", stderr(&add));
    let quiet = ferry_with(&home, &["run", "--until-idle", "-q"], &[]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert_eq!(stderr(&quiet), "");
    assert_eq!(
        std::fs::metadata(dir.path().join("out/g.bin"))
            .unwrap()
            .len(),
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_told_with_its_error_and_delay() {
    let (origin, dir) = setup().await;
    let home = dir.path().join("home");
    let mut runs = Vec::new();
    for (n, flag) in ["-v", "--json", "--no-progress"].into_iter().enumerate() {
        let path = format!("/busy{n}.bin");
        origin.resource(&path, Resource::seeded(9, 2000));
        origin.script(&path, testkit::Script::new().statuses(&[(503, Some("1"))]));
        let out = dir.path().join(format!("out{n}"));
        let run = ferry_with(
            &home,
            &[
                "get",
                flag,
                "--output-dir",
                &out.to_string_lossy(),
                &origin.http_url(&path),
            ],
            &[],
        );
        assert!(run.status.success(), "{}", stderr(&run));
        runs.push(run);
    }
    let verbose = stderr(&runs[0]);
    let retry = verbose
        .lines()
        .find(|l| l.contains("retrying after a failed attempt"))
        .unwrap_or_else(|| panic!("no retry line in {verbose}"));
    assert!(retry.contains("503"), "{retry}");
    assert!(retry.contains("delay="), "{retry}");
    assert!(verbose.contains("status=503"), "{verbose}");

    let lines = json_lines(&runs[1]);
    let retry = lines
        .iter()
        .find(|l| l["event"] == "retry")
        .unwrap_or_else(|| panic!("no retry event in {lines:?}"));
    assert!(retry["error"].as_str().unwrap().contains("503"), "{retry}");
    let delay = retry["delay_ms"].as_u64().unwrap();
    assert!((1..=60_000).contains(&delay), "{retry}");
    assert_eq!(events(&lines).last(), Some(&"completed"));

    // For people: one phrase, a duration instead of a date.
    let said = stderr(&runs[2]);
    let line = said
        .lines()
        .find(|l| l.starts_with("busy2.bin: retrying in "))
        .unwrap_or_else(|| panic!("no retry line in {said}"));
    assert!(line.contains(" after: server answered 503 "), "{line}");
    assert!(!line.contains("GMT"), "{line}");
}
