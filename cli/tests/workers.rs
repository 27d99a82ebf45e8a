#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! Three `ferry run --store s3://…` processes share one session in moto (an
//! S3-protocol server from PyPI): 200 downloads of mixed sizes into the
//! bucket, added by `ferry add`, and one worker SIGKILLed midway. Every
//! task completes exactly once: one object each, byte-identical; one
//! completion each; and no task is ever fetched by two workers at once (the
//! origin's log shows no overlapping requests for one path).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use testkit::{Fault, Origin, Resource, Script, body};
use transfer_core::{Phase, SessionId, TaskStore};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const TASKS: u64 = 200;

fn size(i: u64) -> u64 {
    match i % 10 {
        0 => 9 << 20, // two parts
        1..=3 => 2 << 20,
        4..=6 => 512 << 10,
        _ => 64 << 10,
    }
}

struct Env {
    endpoint: String,
    home: PathBuf,
}

impl Env {
    fn ferry(&self, args: &[&str]) -> Command {
        let mut c = Command::new(FERRY);
        c.args(args)
            .args([
                "--store",
                "s3://ferry-work/state",
                "--endpoint",
                &self.endpoint,
            ])
            .env("FERRY_HOME", &self.home)
            .env("AWS_ACCESS_KEY_ID", "ferry")
            .env("AWS_SECRET_ACCESS_KEY", "ferry")
            .env("FERRY_SYSFS_ROOT", self.home.join("no-sysfs"));
        c
    }

    /// Runs `ferry ARGS` to its end, which must be a success; its standard
    /// output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ferry(args).output().unwrap();
        assert!(
            out.status.success(),
            "ferry {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn worker(&self, log: &Path) -> Child {
        self.worker_with(log, &["--until-idle"])
    }

    fn worker_with(&self, log: &Path, more: &[&str]) -> Child {
        self.ferry(&["run", "--lease-ttl", "3s"])
            .args(more)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }
}

/// moto with the bucket `ferry-work`, an origin, a directory, and how to
/// run `ferry` on them.
async fn setup() -> (testkit::Moto, Origin, tempfile::TempDir, Env) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let moto = testkit::Moto::start(&["ferry-work"]).unwrap();
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        endpoint: moto.endpoint(),
        home: dir.path().join("home"),
    };
    (moto, origin, dir, env)
}

/// The "NAME: done, SIZE (event E)" lines a worker printed: (name, event).
fn done_lines(log: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(": done")?;
            let event = rest.rsplit_once("(event ")?.1.trim_end_matches(')');
            Some((name.to_owned(), event.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_a_session_and_one_dies() {
    let (_moto, origin, dir, env) = setup().await;
    let mut list = String::new();
    for i in 0..TASKS {
        let path = format!("/w/{i}.bin");
        origin.resource(&path, Resource::seeded(i, size(i)));
        // Slow enough that the workers have tasks in flight when one dies.
        origin.script(&path, Script::new().always(Fault::RateLimit(4 << 20)));
        list.push_str(&origin.http_url(&path));
        list.push('\n');
    }
    let list_file = dir.path().join("list");
    std::fs::write(&list_file, list).unwrap();
    let added = env.ok(&[
        "add",
        "-i",
        list_file.to_str().unwrap(),
        "--to",
        "s3://ferry-work/out/",
    ]);
    assert_eq!(added.lines().count() as u64, TASKS);

    let logs: Vec<PathBuf> = (0..3)
        .map(|w| dir.path().join(format!("worker-{w}.log")))
        .collect();
    let mut workers: Vec<Child> = logs.iter().map(|l| env.worker(l)).collect();

    // Midway (a third of the tasks done everywhere), the first worker dies
    // with whatever it holds.
    let start = Instant::now();
    loop {
        let done: usize = logs.iter().map(|l| done_lines(l).len()).sum();
        if done as u64 >= TASKS / 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress: {done} done"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers[0].kill().unwrap(); // SIGKILL
    workers[0].wait().unwrap();
    let killed_at = Instant::now();
    let killed_done = done_lines(&logs[0]);
    eprintln!(
        "killed worker 0 after {:?}, it had finished {}",
        start.elapsed(),
        killed_done.len()
    );
    for w in &mut workers[1..] {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Some(status) = w.try_wait().unwrap() {
                assert!(status.success(), "a worker exits with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "the workers finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "the other two finished {:?} after the kill",
        killed_at.elapsed()
    );

    // One object per task, byte-identical.
    let s3 = store_s3::s3_builder("ferry-work", Some(&env.endpoint))
        .with_access_key_id("ferry")
        .with_secret_access_key("ferry")
        .build()
        .unwrap();
    let objects: Vec<_> = s3
        .list(Some(&object_store::path::Path::from("out")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(objects.len() as u64, TASKS, "one object per task");
    for i in 0..TASKS {
        let got = s3
            .get(&object_store::path::Path::from(format!("out/{i}.bin")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            Sha256::digest(&got).as_slice(),
            body::sha256(i, 0, size(i)),
            "out/{i}.bin"
        );
    }

    // Every task completed, and its completion delivered and acknowledged.
    let store = store_s3::S3TaskStore::new(std::sync::Arc::new(s3), "state");
    let snap = store
        .load(&SessionId::new("default").unwrap())
        .await
        .unwrap();
    assert_eq!(snap.records.len() as u64, TASKS);
    let unfinished: Vec<_> = snap
        .records
        .iter()
        .filter(|r| r.state.phase != Phase::Completed)
        .map(|r| (r.spec.label.clone(), r.state.phase.clone()))
        .collect();
    assert!(
        unfinished.is_empty(),
        "every task completed: {unfinished:?}"
    );
    assert!(snap.outbox.is_empty(), "every completion acknowledged");

    // One completion each: one event per task. A completion that the
    // killed worker delivered and had not yet acknowledged is delivered
    // again, as the same event, by the worker that takes its task over
    // (delivery is at least once, as across any kill); only those repeat.
    let mut heard: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (w, log) in logs.iter().enumerate() {
        for (name, event) in done_lines(log) {
            heard.entry(name).or_default().push((w, event));
        }
    }
    assert_eq!(heard.len() as u64, TASKS, "a completion for every task");
    for (name, got) in &heard {
        assert!(
            got.iter().all(|(_, e)| *e == got[0].1),
            "{name}: one completion event, heard {got:?}"
        );
        assert!(
            got.len() == 1 || (got.len() == 2 && got.iter().any(|(w, _)| *w == 0)),
            "{name}: heard again only after the kill: {got:?}"
        );
    }
    let repeats = heard.values().filter(|got| got.len() > 1).count();
    eprintln!("{repeats} completion(s) heard again after the kill");
    assert!(
        logs[1..].iter().all(|l| !done_lines(l).is_empty()),
        "every worker took work"
    );

    // `ls` reads the shared state; `get` is one more process sharing it.
    let rows: Vec<serde_json::Value> = env
        .ok(&["ls", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len() as u64, TASKS);
    assert!(rows.iter().all(|r| r["state"] == "completed"), "{rows:?}");
    origin.resource("/extra.bin", Resource::seeded(999, 3 << 20));
    let extra = origin.http_url("/extra.bin");
    env.ok(&["get", &extra, "--to", "s3://ferry-work/extra.bin"]);

    // Never two workers on one task at once.
    let log = origin.log();
    let mut spans: HashMap<&str, Vec<(Instant, Instant)>> = HashMap::new();
    for e in &log {
        spans
            .entry(e.path.as_str())
            .or_default()
            .push((e.at, e.ended.expect("every answer has ended")));
    }
    assert_eq!(spans.len() as u64, TASKS + 1);
    let mut again = 0;
    for (path, mut s) in spans {
        s.sort();
        for w in s.windows(2) {
            assert!(
                w[1].0 >= w[0].1,
                "{path}: a request began before the previous one ended"
            );
        }
        again += s.len() - 1;
    }
    eprintln!(
        "{} requests for {TASKS} tasks ({again} again, after the kill)",
        log.len()
    );
}

/// `ferry pause`, `resume` and `cancel` with `--store` go through the task's
/// claim: a change to a task the worker holds is left as a request on its
/// record, which the worker carries out on its next read of the bucket (a
/// pause stops the transfer, a cancel stops it for good and the worker
/// tells it); a resume of a paused task, which no one holds, is made under
/// the claim and a worker continues it from its last part, with a Range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_cancel_reach_the_worker_through_the_bucket() {
    let (_moto, origin, dir, env) = setup().await;
    let len = 64u64 << 20;
    origin.resource("/slow.bin", Resource::seeded(7, len));
    origin.script("/slow.bin", Script::new().always(Fault::RateLimit(4 << 20)));
    let url = origin.http_url("/slow.bin");
    let id = env
        .ok(&["add", &url, "--to", "s3://ferry-work/slow.bin"])
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let log = dir.path().join("worker.log");
    // Not --until-idle: a paused task leaves it nothing to do for a while.
    let mut worker = env.worker_with(&log, &[]);
    let user = |op: &str| env.ok(&[op, &id]);
    let sent = || origin.log().iter().map(|e| e.bytes_sent).sum::<u64>();
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Past the first 8 MiB part, then paused: the transfer stops.
    wait_for("the download starts", &|| sent() > (12 << 20));
    // The worker holds the task: the pause is asked of it, on the record.
    let said = user("pause");
    assert!(
        said.contains("to be paused by the process running it"),
        "{said}"
    );
    wait_for("the transfer stops", &|| {
        origin.log().iter().all(|e| e.ended.is_some())
    });
    let paused_at = sent();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sent(), paused_at, "nothing is fetched while paused");
    // Resumed (no one holds a paused task: made under its claim here), and
    // continued from the last stored part.
    let said = user("resume");
    assert!(said.contains(": resumed"), "{said}");
    wait_for("the transfer continues", &|| origin.log().len() >= 2);
    let second = origin.log()[1].range.clone();
    assert!(
        second
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-")),
        "resumed with a Range: {second:?}"
    );
    // Cancelled: the transfer stops, and the worker delivers the completion.
    let said = user("cancel");
    assert!(
        said.contains("to be cancelled by the process running it"),
        "{said}"
    );
    wait_for("the worker hears of the cancel", &|| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("slow.bin: cancelled")
    });
    wait_for("the transfer stops", &|| {
        origin.log().iter().all(|e| e.ended.is_some())
    });
    assert!(sent() < len, "never fetched whole");
    worker.kill().unwrap();
    worker.wait().unwrap();
    let ls = env.ok(&["ls", "--json"]);
    let row: serde_json::Value = serde_json::from_str(ls.lines().next().unwrap()).unwrap();
    assert_eq!(row["state"], "cancelled");
}
