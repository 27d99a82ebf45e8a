#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Several `ferry` processes on one state directory: the runner (`ferry
//! get`) owns the store; `ls`, `pause`, `resume`, `add` and a second `get`
//! talk to it over the control socket; a second runner is refused; with no
//! runner the same commands change the state on disk, and `run` finishes it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{Fault, Origin, Resource, Script, body};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn ferry(home: &Path, args: &[&str]) -> Output {
    Command::new(FERRY)
        .args(args)
        .env("FERRY_HOME", home)
        .output()
        .unwrap()
}

fn ls(home: &Path) -> Vec<Value> {
    let out = ferry(home, &["ls", "--json"]);
    assert!(
        out.status.success(),
        "ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_for(home: &Path, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let rows = ls(home);
        if ok(&rows) {
            return rows;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waiting for {what}: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn state_of<'a>(rows: &'a [Value], name: &str) -> &'a str {
    rows.iter()
        .find(|r| r["destination"].as_str().unwrap_or("").ends_with(name))
        .and_then(|r| r["state"].as_str())
        .unwrap_or("absent")
}

fn id_of(rows: &[Value], name: &str) -> String {
    rows.iter()
        .find(|r| r["destination"].as_str().unwrap_or("").ends_with(name))
        .and_then(|r| r["id"].as_str())
        .unwrap()
        .to_owned()
}

struct Urls {
    big: String,
    small: String,
    later: String,
    extra: String,
}

fn choreography(home: PathBuf, out: PathBuf, urls: Urls) {
    let out_s = out.to_str().unwrap();
    let mut runner = Command::new(FERRY)
        .args(["get", &urls.big, "--output-dir", out_s])
        .env("FERRY_HOME", &home)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&home, "the runner to start", |r| {
        state_of(r, "big.bin") == "running"
    });

    let second_runner = ferry(&home, &["run", "--until-idle"]);
    assert!(
        !second_runner.status.success(),
        "a second runner is refused"
    );
    let why = String::from_utf8_lossy(&second_runner.stderr);
    assert!(why.contains("another ferry process"), "{why}");

    let id = id_of(&ls(&home), "big.bin");
    assert!(ferry(&home, &["pause", &id]).status.success());
    let rows = wait_for(&home, "the pause", |r| state_of(r, "big.bin") == "waiting");
    assert!(
        rows[0]["detail"].as_str().unwrap().contains("paused"),
        "{rows:?}"
    );
    assert!(ferry(&home, &["resume", &id]).status.success());

    // A second `get` hands its task to the runner and follows it to the end.
    let handed = ferry(&home, &["get", &urls.small, "--output-dir", out_s]);
    assert!(
        handed.status.success(),
        "{}",
        String::from_utf8_lossy(&handed.stderr)
    );
    assert_eq!(
        std::fs::read(out.join("small.bin")).unwrap(),
        body::bytes(2, 0, 0..100_000)
    );

    let status = runner.wait().unwrap();
    assert!(status.success(), "the runner's get: {status}");
    assert_eq!(
        std::fs::read(out.join("big.bin")).unwrap(),
        body::bytes(1, 0, 0..(32 << 20))
    );

    // No runner now: the state on disk is changed directly.
    let added = ferry(&home, &["add", &urls.later, "--output-dir", out_s]);
    assert!(added.status.success());
    let rows = ls(&home);
    assert_eq!(state_of(&rows, "later.bin"), "queued");
    let run = ferry(&home, &["run", "--until-idle"]);
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{said}");
    assert!(said.contains("later.bin: done, 48.8 KiB"), "{said}");
    assert_eq!(state_of(&ls(&home), "later.bin"), "completed");

    // Nothing left to do: `run --until-idle` ends at once, every time (its
    // idle comes while the session starts, before it could listen for it).
    for _ in 0..5 {
        let mut idle = Command::new(FERRY)
            .args(["run", "--until-idle"])
            .env("FERRY_HOME", &home)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = idle.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = idle.kill();
                panic!("`ferry run --until-idle` on a finished session did not end");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status}");
    }

    // A reader that stops early is not an error (`ferry ls | head -1`).
    let mut early = Command::new(FERRY)
        .args(["ls"])
        .env("FERRY_HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(early.stdout.take());
    let early = early.wait_with_output().unwrap();
    assert!(
        early.status.success(),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );
    assert_eq!(
        std::fs::read(out.join("later.bin")).unwrap(),
        body::bytes(3, 0, 0..50_000)
    );

    // Finished, and the file is there: adding it again changes nothing.
    let before = id_of(&ls(&home), "later.bin");
    let again = ferry(&home, &["add", &urls.later, "--output-dir", out_s]);
    let again = String::from_utf8(again.stdout).unwrap();
    assert!(again.starts_with(&before), "{again}");
    assert_eq!(ls(&home).len(), 3);

    let added = ferry(&home, &["add", &urls.extra, "--output-dir", out_s]);
    let id = String::from_utf8(added.stdout).unwrap();
    let id = id.split_whitespace().next().unwrap().to_owned();
    assert!(ferry(&home, &["cancel", &id]).status.success());
    assert_eq!(state_of(&ls(&home), "extra.bin"), "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_talk_to_the_running_ferry_and_to_the_state_on_disk() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/big.bin", Resource::seeded(1, 32 << 20));
    origin.script("/big.bin", Script::new().always(Fault::RateLimit(4 << 20)));
    origin.resource("/small.bin", Resource::seeded(2, 100_000));
    origin.resource("/later.bin", Resource::seeded(3, 50_000));
    origin.resource("/extra.bin", Resource::seeded(4, 50_000));
    let dir = tempfile::tempdir().unwrap();
    let urls = Urls {
        big: origin.http_url("/big.bin"),
        small: origin.http_url("/small.bin"),
        later: origin.http_url("/later.bin"),
        extra: origin.http_url("/extra.bin"),
    };
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    tokio::task::spawn_blocking(move || choreography(home, out, urls))
        .await
        .unwrap();
}

/// Kills the runner when the test ends, passed or not.
struct Runner(std::process::Child);

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `bytes` on a new connection to the runner's control socket and
/// reads back its first line and whether the connection then ended.
fn exchange(home: &Path, bytes: &[u8]) -> (Value, bool) {
    use std::io::{BufRead, BufReader, Read, Write};
    let stream = std::os::unix::net::UnixStream::connect(home.join("control.sock")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (&stream).write_all(bytes).unwrap();
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("a reply line");
    let mut rest = [0u8; 1];
    // Closed: the end of the stream, or a reset for bytes left unread.
    let closed = match reader.read(&mut rest) {
        Ok(n) => n == 0,
        Err(e) => {
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut
        }
    };
    (serde_json::from_str(&line).unwrap(), closed)
}

#[test]
fn the_control_socket_answers_a_bad_request_with_an_error_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let _runner = Runner(
        Command::new(FERRY)
            .args(["run"])
            .env("FERRY_HOME", &home)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !home.join("control.sock").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no control socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    for (bad, said) in [
        (&b"not json\n"[..], "unknown request"),
        (&b"{\"op\":\"launch\"}\n"[..], "unknown request"),
    ] {
        let (reply, closed) = exchange(&home, bad);
        assert_eq!(reply["reply"], "error", "{reply}");
        assert!(reply["error"].as_str().unwrap().contains(said), "{reply}");
        assert!(closed);
    }

    // A line past 1 MiB is refused without waiting for its end.
    let (reply, closed) = exchange(&home, &vec![b'x'; (1 << 20) + 1]);
    assert_eq!(reply["reply"], "error", "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("longer than"),
        "{reply}"
    );
    assert!(closed);

    // The runner still answers a good request.
    let (reply, _) = exchange(&home, b"{\"op\":\"ls\"}\n");
    assert_eq!(reply["reply"], "tasks", "{reply}");
}
