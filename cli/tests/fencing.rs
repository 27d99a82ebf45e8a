#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! A worker of a shared session paused past its lease (SIGSTOP, as a
//! suspended laptop or a stalled VM would be) while it holds a task: a
//! second worker takes the task over and completes it. When the first
//! wakes up (SIGCONT) with the rest of the body in hand, it writes nothing
//! that counts: one completion for the task, one file, byte-exact.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use testkit::{Fault, Origin, Resource, Script, body};
use transfer_core::{Phase, SessionId, TaskStore};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn ferry(endpoint: &str, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(FERRY);
    c.args(args)
        .args(["--store", "s3://ferry-work/state", "--endpoint", endpoint])
        .env("FERRY_HOME", home)
        .env("AWS_ACCESS_KEY_ID", "ferry")
        .env("AWS_SECRET_ACCESS_KEY", "ferry")
        .env("FERRY_SYSFS_ROOT", home.join("no-sysfs"));
    c
}

fn worker(endpoint: &str, home: &Path, log: &Path) -> Child {
    ferry(
        endpoint,
        home,
        &["run", "--until-idle", "--lease-ttl", "2s"],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).unwrap())
    .spawn()
    .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

fn done_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(": done"))
        .map(str::to_owned)
        .collect()
}

fn wait_until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_writes_nothing_that_counts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let moto = testkit::Moto::start(&["ferry-work"]).unwrap();
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home: PathBuf = dir.path().join("home");
    let endpoint = moto.endpoint();
    let len = 1u64 << 20;
    origin.resource("/p.bin", Resource::seeded(5, len));
    // The first answer holds back its last byte for 3 s: the first worker
    // is stopped meanwhile, and finds the whole body in hand on waking.
    origin.script(
        "/p.bin",
        Script::new().nth(
            1,
            Fault::Stall {
                after: len - 1,
                duration: Duration::from_secs(3),
            },
        ),
    );
    let url = origin.http_url("/p.bin");
    let out = dir.path().join("out");
    let added = ferry(
        &endpoint,
        &home,
        &["add", &url, "--output-dir", out.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = worker(&endpoint, &home, &log_a);
    wait_until("the first worker fetches", Duration::from_secs(30), || {
        origin.log().iter().any(|e| e.bytes_sent >= len - 1)
    });
    signal(&a, "-STOP");
    let stopped = Instant::now();
    // The second worker takes the task over once the lease has lapsed,
    // completes it, and exits.
    let mut b = worker(&endpoint, &home, &log_b);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = b.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the second worker finishes");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log_b).unwrap()
    );
    // Past the stall: the first worker's last byte is waiting for it.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(stopped.elapsed()));
    signal(&a, "-CONT");
    let mut a = a;
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = a.kill();
    let _ = a.wait();

    let (heard_a, heard_b) = (done_lines(&log_a), done_lines(&log_b));
    eprintln!("first worker: {heard_a:?}\nsecond worker: {heard_b:?}");
    assert_eq!(heard_b.len(), 1, "the second worker completed the task");
    assert!(
        heard_a.is_empty(),
        "the paused worker reported a completion too: {heard_a:?}\n{}",
        std::fs::read_to_string(&log_a).unwrap()
    );
    // The file is whole and of one version; the record says completed,
    // and its one completion was acknowledged.
    let got = std::fs::read(out.join("p.bin")).unwrap();
    assert_eq!(Sha256::digest(&got).as_slice(), body::sha256(5, 0, len));
    let s3 = store_s3::s3_builder("ferry-work", Some(&endpoint))
        .with_access_key_id("ferry")
        .with_secret_access_key("ferry")
        .build()
        .unwrap();
    let store = store_s3::S3TaskStore::new(std::sync::Arc::new(s3), "state");
    let snap = store
        .load(&SessionId::new("default").unwrap())
        .await
        .unwrap();
    assert_eq!(snap.records.len(), 1);
    assert_eq!(snap.records[0].state.phase, Phase::Completed);
    assert!(snap.records[0].epoch >= 2, "taken over under a newer epoch");
    assert!(snap.outbox.is_empty());
}
