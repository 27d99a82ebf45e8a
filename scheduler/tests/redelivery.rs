#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Completion delivery across process deaths: a delegate that dies before
//! returning from `completed` gets the completion again after a restart;
//! once a delegate has returned, the completion is never delivered again.
//! The processes are this test binary running the ignored `worker`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use scheduler::{Session, SessionConfig};
use store_fs::{FsPayloadStore, FsTaskStore};
use testkit::{Origin, Resource};
use transfer_core::{Completion, Delegate, Outcome};
use transport_http::{HttpConfig, HttpTransport, Roots};

const DIR: &str = "FERRY_REDELIVERY_DIR";
const PHASE: &str = "FERRY_REDELIVERY_PHASE";
const URL: &str = "FERRY_REDELIVERY_URL";

/// Dies (exit status 3) inside `completed`, before it can return.
struct Dies;

#[async_trait]
impl Delegate for Dies {
    async fn completed(&self, _c: &Completion) {
        std::process::exit(3);
    }
}

/// Appends each completion delivered to a file.
struct Records(PathBuf);

#[async_trait]
impl Delegate for Records {
    async fn completed(&self, c: &Completion) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0)
            .unwrap();
        let ok = matches!(c.outcome, Outcome::Completed { .. });
        writeln!(f, "{} {} {ok}", c.event, c.task).unwrap();
        f.sync_all().unwrap();
    }
}

async fn session(dir: &Path, delegate: Arc<dyn Delegate>) -> Session {
    Session::builder("test.redelivery")
        .unwrap()
        .store(Arc::new(FsTaskStore::open(dir.join("state")).unwrap()))
        .payloads(Arc::new(FsPayloadStore::new(dir.join("out")).unwrap()))
        .transport(Arc::new(
            HttpTransport::new(HttpConfig::default().roots(Roots::Webpki)).unwrap(),
        ))
        .delegate(delegate)
        .config(SessionConfig::default())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "run as a child process by completions_are_redelivered_until_acknowledged"]
async fn worker() {
    let dir = PathBuf::from(std::env::var(DIR).expect("run by the redelivery test"));
    let phase = std::env::var(PHASE).unwrap();
    let record = dir.join("delivered");
    match phase.as_str() {
        "crash" => {
            std::fs::create_dir_all(dir.join("out")).unwrap();
            let s = session(&dir, Arc::new(Dies)).await;
            let url = std::env::var(URL).unwrap();
            s.download(&url)
                .unwrap()
                .to("f.bin")
                .enqueue()
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            panic!("the delegate should have ended the process");
        }
        _ => {
            let s = session(&dir, Arc::new(Records(record))).await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            s.shutdown().await;
        }
    }
}

fn run(dir: &Path, phase: &str, url: &str) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "worker", "--test-threads=1"])
        .env(DIR, dir)
        .env(PHASE, phase)
        .env(URL, url)
        .status()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_redelivered_until_acknowledged() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/f", Resource::seeded(1, 200_000));
    let dir = tempfile::tempdir().unwrap();
    let url = origin.http_url("/f");
    let dir_path = dir.path().to_owned();

    let status = tokio::task::spawn_blocking({
        let (d, u) = (dir_path.clone(), url.clone());
        move || run(&d, "crash", &u)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(3), "the delegate died in `completed`");
    assert!(
        dir.path().join("out/f.bin").exists(),
        "the file was committed first"
    );
    assert!(!dir.path().join("delivered").exists());

    for phase in ["after-crash", "after-ack"] {
        let status = tokio::task::spawn_blocking({
            let (d, u) = (dir_path.clone(), url.clone());
            move || run(&d, phase, &u)
        })
        .await
        .unwrap();
        assert!(status.success(), "{phase}: {status}");
        let delivered = std::fs::read_to_string(dir.path().join("delivered")).unwrap();
        let lines: Vec<&str> = delivered.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{phase}: delivered exactly once in all: {lines:?}"
        );
        assert!(lines[0].ends_with(" true"), "a successful completion");
    }
    assert_eq!(origin.log().len(), 1, "the download itself ran once");
}
