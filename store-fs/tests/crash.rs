//! Crash safety with real processes: a worker saves records from concurrent
//! savers and writes a partial with checkpoints; it is SIGKILLed at random
//! moments. After each kill the store opens, every save the worker saw return
//! is there, and the partial holds exactly the right bytes up to its recorded
//! durable offset.
//!
//! The worker is this test binary run again with `FERRY_CRASH_DIR` set, through
//! the ignored test `crash_worker`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store_fs::{FsPayloadStore, FsTaskStore};
use transfer_core::{
    Destination, PartialLocation, PayloadStore, RandomSource, ResumeData, SessionId, SplitMix64,
    TaskId, TaskStore,
};

const DIR_ENV: &str = "FERRY_CRASH_DIR";
const RUN_ENV: &str = "FERRY_CRASH_RUN";
const PAYLOAD_TASK: u64 = u64::MAX;
const PAYLOAD_SEED: u64 = 99;
const CHUNK: u64 = 64 * 1024;
/// The payload stops growing here; the savers go on.
const PAYLOAD_MAX: u64 = 16 << 20;

fn session() -> SessionId {
    SessionId::new("crash").unwrap()
}

fn payload_dest() -> Destination {
    Destination::Path("payload.bin".into())
}

fn stores(dir: &Path) -> (FsTaskStore, FsPayloadStore) {
    (
        FsTaskStore::open(dir.join("state")).unwrap(),
        FsPayloadStore::new(dir.join("files")).unwrap(),
    )
}

/// The worker: runs until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker process of crash_kills_lose_nothing_that_was_acknowledged"]
async fn crash_worker() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("run by the crash test"));
    let run: u64 = std::env::var(RUN_ENV).unwrap().parse().unwrap();
    let (tasks, payloads) = stores(&dir);
    let tasks = Arc::new(tasks);
    for saver in 0..8u64 {
        let tasks = tasks.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let id = (run << 32) | (saver << 24) | i;
                tasks
                    .save(&session(), vec![testkit::conformance::record(id, "crash")])
                    .await
                    .unwrap();
                println!("saved {id}");
            }
        });
    }
    // The payload: resume from the recorded durable offset, checkpoint every 4 chunks.
    let snapshot = tasks.load(&session()).await.unwrap();
    let mut record = snapshot
        .records
        .into_iter()
        .find(|r| r.id.as_u64() == PAYLOAD_TASK)
        .unwrap_or_else(|| testkit::conformance::record(PAYLOAD_TASK, "payload"));
    let mut partial = payloads
        .open(
            &session(),
            TaskId::from_u64(PAYLOAD_TASK),
            &payload_dest(),
            &record.state.resume,
        )
        .await
        .unwrap();
    let mut offset = partial.offset();
    while offset < PAYLOAD_MAX {
        for _ in 0..4 {
            let bytes = testkit::body::bytes(PAYLOAD_SEED, 0, offset..offset + CHUNK);
            partial.write(bytes.into()).await.unwrap();
            offset += CHUNK;
        }
        let (durable, location) = partial.sync().await.unwrap();
        record.state.resume.durable_offset = durable;
        record.state.resume.partial = Some(location);
        record.state.bytes_received = durable;
        tasks.save(&session(), vec![record.clone()]).await.unwrap();
        println!("durable {durable}");
    }
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kills_lose_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("crash test seed {seed}");
    let mut random = SplitMix64::new(seed);
    let mut acknowledged = BTreeSet::new();
    let mut last_durable = 0;
    for run in 1..=20u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_worker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(RUN_ENV, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        std::thread::sleep(Duration::from_millis(150 + random.next_u64() % 400));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let lines = std::mem::take(&mut *lines.lock().unwrap());
        for line in &lines {
            if let Some(id) = line.strip_prefix("saved ") {
                acknowledged.insert(id.parse::<u64>().unwrap());
            } else if let Some(d) = line.strip_prefix("durable ") {
                last_durable = last_durable.max(d.parse::<u64>().unwrap());
            }
        }
        verify(dir.path(), &acknowledged, last_durable, seed).await;
    }
    assert!(
        acknowledged.len() > 100,
        "the workers got to save something ({} saves)",
        acknowledged.len()
    );
    assert!(last_durable > 0, "the payload got checkpointed");
    println!(
        "{} acknowledged saves, payload durable to {last_durable} bytes, all intact",
        acknowledged.len()
    );
}

async fn verify(dir: &Path, acknowledged: &BTreeSet<u64>, last_durable: u64, seed: u64) {
    let (tasks, payloads) = stores(dir);
    let snapshot = tasks.load(&session()).await.unwrap();
    let present: BTreeSet<u64> = snapshot.records.iter().map(|r| r.id.as_u64()).collect();
    let lost: Vec<_> = acknowledged.difference(&present).take(5).collect();
    assert!(
        lost.is_empty(),
        "acknowledged saves lost after SIGKILL (seed {seed}): {lost:?}"
    );
    let Some(payload) = snapshot
        .records
        .iter()
        .find(|r| r.id.as_u64() == PAYLOAD_TASK)
    else {
        assert_eq!(
            last_durable, 0,
            "a printed checkpoint has no record (seed {seed})"
        );
        return;
    };
    let resume: &ResumeData = &payload.state.resume;
    assert!(
        resume.durable_offset >= last_durable,
        "the recorded offset went back (seed {seed})"
    );
    let Some(PartialLocation::File(path)) = &resume.partial else {
        panic!("no partial location")
    };
    let on_disk = std::fs::read(path).unwrap();
    assert!(
        on_disk.len() as u64 >= resume.durable_offset,
        "the partial is shorter than its durable offset (seed {seed})"
    );
    let durable = resume.durable_offset as usize;
    assert!(
        on_disk[..durable] == testkit::body::bytes(PAYLOAD_SEED, 0, 0..resume.durable_offset)[..],
        "the partial's durable bytes are wrong (seed {seed})"
    );
    // Resuming at the durable offset cuts away whatever was written past
    // it (once the file is used: here by a read).
    let mut p = payloads
        .open(
            &session(),
            TaskId::from_u64(PAYLOAD_TASK),
            &payload_dest(),
            resume,
        )
        .await
        .unwrap();
    assert_eq!(p.offset(), resume.durable_offset);
    let mut first = [0u8; 1];
    p.read_at(0, &mut first).await.unwrap();
    drop(p);
    assert_eq!(
        std::fs::metadata(path).unwrap().len(),
        resume.durable_offset
    );
}
