#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Downloads end to end through a session: the testkit origin over real
//! sockets, store-fs on real files, transport-http.

use std::sync::Arc;
use std::time::Duration;

use scheduler::{Session, SessionConfig};
use store_fs::{FsPayloadStore, FsTaskStore};
use testkit::{Fault, Origin, Resource, Script, body};
use transfer_core::{ErrorKind, Outcome, RetryPolicy};
use transport_http::{HttpConfig, HttpTransport, Roots};

struct Setup {
    _dir: tempfile::TempDir,
    state: std::path::PathBuf,
    out: std::path::PathBuf,
    origin: Origin,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    Setup {
        state,
        out,
        origin: Origin::start().await.unwrap(),
        _dir: dir,
    }
}

fn config() -> SessionConfig {
    SessionConfig {
        checkpoint_interval: Duration::from_millis(50),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            retry_limit: 3,
            ..RetryPolicy::default()
        },
        ..SessionConfig::default()
    }
}

async fn session(s: &Setup) -> Session {
    let transport = HttpTransport::new(
        HttpConfig::default()
            .roots(Roots::None)
            .add_root(s.origin.root_cert_der()),
    )
    .unwrap();
    Session::builder("test.downloads")
        .unwrap()
        .store(Arc::new(FsTaskStore::open(&s.state).unwrap()))
        .payloads(Arc::new(FsPayloadStore::new(&s.out).unwrap()))
        .transport(Arc::new(transport))
        .config(config())
        .build()
        .await
        .unwrap()
}

async fn wait(task: &scheduler::TaskHandle) -> Outcome {
    tokio::time::timeout(Duration::from_secs(60), task.wait())
        .await
        .expect("task ends")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_lands_intact() {
    let s = setup().await;
    let len = 3 << 20;
    s.origin.resource("/f", Resource::seeded(1, len));
    let session = session(&s).await;
    let task = session
        .download(&s.origin.https_url("/f"))
        .unwrap()
        .to("f.bin")
        .sha256(hex(&body::sha256(1, 0, len)))
        .enqueue()
        .await
        .unwrap();
    assert_eq!(wait(&task).await, Outcome::Completed { bytes: len });
    let got = std::fs::read(s.out.join("f.bin")).unwrap();
    assert_eq!(got, body::bytes(1, 0, 0..len));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_body_resumes_from_the_durable_offset() {
    let s = setup().await;
    let len = 8u64 << 20;
    s.origin.resource("/cut", Resource::seeded(2, len));
    // Slow enough for checkpoints before the cut.
    s.origin.script(
        "/cut",
        Script::new()
            .nth(1, Fault::CutAfter(5 << 20))
            .always(Fault::RateLimit(32 << 20)),
    );
    let session = session(&s).await;
    let task = session
        .download(&s.origin.http_url("/cut"))
        .unwrap()
        .to("cut.bin")
        .enqueue()
        .await
        .unwrap();
    assert_eq!(wait(&task).await, Outcome::Completed { bytes: len });
    assert_eq!(
        std::fs::read(s.out.join("cut.bin")).unwrap(),
        body::bytes(2, 0, 0..len)
    );
    let log = s.origin.log();
    assert_eq!(log.len(), 2, "one cut request, one resumed: {log:?}");
    let range = log[1]
        .range
        .clone()
        .expect("the second request asks for a range");
    let from: u64 = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 5 << 20, "resumed from {from}");
    assert_eq!(
        log[1].if_range,
        s.origin.etag("/cut"),
        "If-Range carries the ETag"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_representation_restarts_from_zero() {
    let s = setup().await;
    let len = 4u64 << 20;
    s.origin.resource("/chg", Resource::seeded(3, len));
    s.origin.script(
        "/chg",
        Script::new()
            .nth(1, Fault::CutAfter(3 << 20))
            .nth(2, Fault::ChangeRepresentation)
            .always(Fault::RateLimit(32 << 20)),
    );
    let session = session(&s).await;
    let task = session
        .download(&s.origin.http_url("/chg"))
        .unwrap()
        .to("chg.bin")
        .enqueue()
        .await
        .unwrap();
    assert_eq!(wait(&task).await, Outcome::Completed { bytes: len });
    // Version 1 from its first byte: never a splice of two versions.
    assert_eq!(
        std::fs::read(s.out.join("chg.bin")).unwrap(),
        body::bytes(3, 1, 0..len)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_fails_and_leaves_no_file() {
    let s = setup().await;
    s.origin.resource("/sum", Resource::seeded(4, 100_000));
    let session = session(&s).await;
    let task = session
        .download(&s.origin.http_url("/sum"))
        .unwrap()
        .to("sum.bin")
        .sha256("00".repeat(32))
        .enqueue()
        .await
        .unwrap();
    match wait(&task).await {
        Outcome::Failed { error, .. } => assert_eq!(error.kind(), ErrorKind::ChecksumMismatch),
        other => panic!("expected a checksum failure, got {other:?}"),
    }
    assert!(!s.out.join("sum.bin").exists());
    assert_eq!(s.origin.log().len(), 2, "one retry from zero, then Failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_attaches_and_continues_with_a_range() {
    let s = setup().await;
    let len = 16u64 << 20;
    s.origin.resource("/att", Resource::seeded(5, len));
    s.origin
        .script("/att", Script::new().always(Fault::RateLimit(8 << 20)));
    let first = session(&s).await;
    let task = first
        .download(&s.origin.http_url("/att"))
        .unwrap()
        .to("att.bin")
        .key("att")
        .enqueue()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.shutdown().await;
    let durable = task_durable(&s).await;
    assert!(durable > 0, "a checkpoint was recorded before shutdown");

    let second = session(&s).await;
    let again = second
        .download(&s.origin.http_url("/att"))
        .unwrap()
        .to("att.bin")
        .key("att")
        .enqueue()
        .await
        .unwrap();
    assert_eq!(
        again.id(),
        task.id(),
        "the same key finds the unfinished task"
    );
    assert_eq!(wait(&again).await, Outcome::Completed { bytes: len });
    assert_eq!(
        std::fs::read(s.out.join("att.bin")).unwrap(),
        body::bytes(5, 0, 0..len)
    );
    let log = s.origin.log();
    let last = log.last().unwrap();
    assert_eq!(
        last.range.as_deref(),
        Some(format!("bytes={durable}-").as_str())
    );
}

async fn task_durable(s: &Setup) -> u64 {
    use transfer_core::TaskStore;
    let store = FsTaskStore::open(&s.state).unwrap();
    let snap = store
        .load(&transfer_core::SessionId::new("test.downloads").unwrap())
        .await
        .unwrap();
    snap.records[0].state.resume.durable_offset
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
