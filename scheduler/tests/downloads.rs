#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Downloads end to end through a session: a clean download with its
//! checksum, a checksum mismatch, and attaching to a session's state.

mod common;

use std::time::Duration;

use common::{Fixture, Proto, failed_with, wait};
use store_fs::FsTaskStore;
use testkit::{Fault, Resource, Script, body};
use transfer_core::{ErrorKind, Outcome, SessionId, TaskStore};

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_lands_intact() {
    let f = Fixture::new(Proto::H2).await;
    let len = 3 << 20;
    f.origin.resource("/f", Resource::seeded(1, len));
    let s = f.session().await;
    let task = s
        .download(&f.url("/f"))
        .unwrap()
        .to("f.bin")
        .sha256(hex(&body::sha256(1, 0, len)))
        .enqueue()
        .await
        .unwrap();
    assert_eq!(wait(&task).await, Outcome::Completed { bytes: len });
    assert_eq!(f.file("f.bin").unwrap(), body::bytes(1, 0, 0..len));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_fails_and_leaves_no_file() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.resource("/sum", Resource::seeded(4, 100_000));
    let s = f.session().await;
    let task = s
        .download(&f.url("/sum"))
        .unwrap()
        .to("sum.bin")
        .sha256("00".repeat(32))
        .enqueue()
        .await
        .unwrap();
    assert_eq!(failed_with(&wait(&task).await), ErrorKind::ChecksumMismatch);
    assert!(f.file("sum.bin").is_none());
    assert_eq!(f.origin.log().len(), 2, "one retry from zero, then Failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_attaches_and_continues_with_a_range() {
    let f = Fixture::new(Proto::H1).await;
    let len = 16u64 << 20;
    f.origin.resource("/att", Resource::seeded(5, len));
    f.origin
        .script("/att", Script::new().always(Fault::RateLimit(8 << 20)));
    let first = f.session().await;
    let enqueue = |s: &scheduler::Session| {
        s.download(&f.url("/att"))
            .unwrap()
            .to("att.bin")
            .key("att")
            .enqueue()
    };
    let task = enqueue(&first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.shutdown().await;
    let store = FsTaskStore::open(&f.state).unwrap();
    let snap = store
        .load(&SessionId::new("test.faults").unwrap())
        .await
        .unwrap();
    drop(store);
    let durable = snap.records[0].state.resume.durable_offset;
    assert!(durable > 0, "a checkpoint was recorded before shutdown");

    let second = f.session().await;
    let again = enqueue(&second).await.unwrap();
    assert_eq!(
        again.id(),
        task.id(),
        "the same key finds the unfinished task"
    );
    assert_eq!(wait(&again).await, Outcome::Completed { bytes: len });
    assert_eq!(f.file("att.bin").unwrap(), body::bytes(5, 0, 0..len));
    let last = f.origin.log().last().unwrap().clone();
    assert_eq!(
        last.range.as_deref(),
        Some(format!("bytes={durable}-").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checksum_covers_bytes_from_every_attempt() {
    let f = Fixture::new(Proto::H1).await;
    let len = 6u64 << 20;
    f.origin.resource("/resumed", Resource::seeded(6, len));
    f.origin.script(
        "/resumed",
        Script::new()
            .nth(1, Fault::CutAfter(4 << 20))
            .always(Fault::RateLimit(32 << 20)),
    );
    let s = f.session().await;
    let task = s
        .download(&f.url("/resumed"))
        .unwrap()
        .to("resumed.bin")
        .sha256(hex(&body::sha256(6, 0, len)))
        .enqueue()
        .await
        .unwrap();
    assert_eq!(wait(&task).await, Outcome::Completed { bytes: len });
    let log = f.origin.log();
    assert_eq!(log.len(), 2, "resumed once, and the checksum held");
    assert!(log[1].range.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repr_digest_from_the_server_is_checked() {
    let f = Fixture::new(Proto::H2).await;
    let len = 2u64 << 20;
    f.origin.resource("/good", Resource::seeded(7, len));
    f.origin.script(
        "/good",
        Script::new()
            .nth(1, Fault::CutAfter(1 << 20))
            .always(Fault::ReprDigest(true)),
    );
    f.origin.resource("/bad", Resource::seeded(8, len));
    f.origin
        .script("/bad", Script::new().always(Fault::ReprDigest(false)));
    let s = f.session().await;
    let good = s
        .download(&f.url("/good"))
        .unwrap()
        .to("good")
        .enqueue()
        .await
        .unwrap();
    let bad = s
        .download(&f.url("/bad"))
        .unwrap()
        .to("bad")
        .enqueue()
        .await
        .unwrap();
    // Resumed with a 206: Repr-Digest covers the whole representation.
    assert_eq!(wait(&good).await, Outcome::Completed { bytes: len });
    assert_eq!(failed_with(&wait(&bad).await), ErrorKind::ChecksumMismatch);
    assert!(f.file("bad").is_none());
}

mod delegate_hooks {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use http::Uri;
    use store_fs::FsPayloadStore;
    use transfer_core::{Delegate, Protocol, RedirectDecision, RequestMetrics, TaskRecord};

    use super::common::{Fixture, Proto, failed_with, wait};
    use testkit::Resource;
    use transfer_core::{ErrorKind, Outcome};

    #[derive(Default)]
    struct Watch {
        metrics: Mutex<Vec<RequestMetrics>>,
        redirects: Mutex<Vec<(String, String)>>,
    }

    #[async_trait]
    impl Delegate for Watch {
        async fn metrics(&self, _task: &TaskRecord, m: &RequestMetrics) {
            self.metrics.lock().unwrap().push(m.clone());
        }

        async fn redirect(&self, _task: &TaskRecord, from: &Uri, to: &Uri) -> RedirectDecision {
            self.redirects
                .lock()
                .unwrap()
                .push((from.path().to_owned(), to.path().to_owned()));
            if to.path().starts_with("/blocked") {
                RedirectDecision::Refuse
            } else {
                RedirectDecision::Follow
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_delegate_gets_metrics_and_decides_redirects() {
        let f = Fixture::new(Proto::H2).await;
        f.origin.resource("/m", Resource::seeded(9, 100_000));
        f.origin.redirect("/go", 302, "/m");
        f.origin.redirect("/no", 302, "/blocked/x");
        let watch = Arc::new(Watch::default());
        let payloads = Arc::new(FsPayloadStore::new(&f.out).unwrap());
        let s = f
            .session_full(true, payloads, Fixture::config(), watch.clone())
            .await;
        let ok = f.get(&s, &f.url("/go"), "m").await;
        assert_eq!(wait(&ok).await, Outcome::Completed { bytes: 100_000 });
        let no = f.get(&s, &f.url("/no"), "no").await;
        assert_eq!(failed_with(&wait(&no).await), ErrorKind::RedirectRefused);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let metrics = watch.metrics.lock().unwrap().clone();
        assert_eq!(metrics.len(), 1, "one finished request: {metrics:?}");
        assert_eq!(metrics[0].protocol, Protocol::Http2);
        assert_eq!(metrics[0].redirects, 1);
        let redirects = watch.redirects.lock().unwrap().clone();
        assert!(redirects.contains(&("/go".into(), "/m".into())));
        assert!(redirects.contains(&("/no".into(), "/blocked/x".into())));
    }
}

mod delegate_progress {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use store_fs::FsPayloadStore;
    use testkit::{Fault, Resource, Script};
    use tokio::sync::Notify;
    use transfer_core::{Delegate, Outcome, Progress, TaskRecord};

    use scheduler::Session;

    use super::common::{Fixture, Proto, wait};

    #[derive(Default)]
    struct Count {
        progress: Mutex<Vec<Progress>>,
        idle: Notify,
    }

    #[async_trait]
    impl Delegate for Count {
        async fn progress(&self, _task: &TaskRecord, p: Progress) {
            self.progress.lock().unwrap().push(p);
        }

        async fn session_idle(&self) {
            self.idle.notify_one();
        }
    }

    /// Progress reaches the delegate coalesced: a two-second download at the
    /// default 250 ms interval (checkpoints every second) gives a handful of
    /// reports, not one per chunk; then the session says it is idle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn progress_is_coalesced_and_idle_follows_the_last_event() {
        let f = Fixture::new(Proto::H1).await;
        let len = 16u64 << 20;
        f.origin.resource("/p", Resource::seeded(10, len));
        f.origin
            .script("/p", Script::new().always(Fault::RateLimit(8 << 20)));
        let count = Arc::new(Count::default());
        let mut config = Fixture::config();
        config.checkpoint_interval = Duration::from_secs(1);
        config.progress_interval = Duration::from_millis(250);
        let payloads = Arc::new(FsPayloadStore::new(&f.out).unwrap());
        let s = f.session_full(true, payloads, config, count.clone()).await;
        let t = f.get(&s, &f.url("/p"), "p").await;
        assert_eq!(wait(&t).await, Outcome::Completed { bytes: len });
        tokio::time::timeout(Duration::from_secs(10), count.idle.notified())
            .await
            .expect("session_idle after the download");
        let reports = count.progress.lock().unwrap().clone();
        // 16 MiB arrives in hundreds of chunks over about 2 s: at most one
        // report per interval, plus one per checkpoint.
        assert!(
            (3..=20).contains(&reports.len()),
            "{} progress reports",
            reports.len()
        );
        assert!(reports.windows(2).all(|w| w[0].total <= w[1].total));
        assert!(reports.iter().all(|p| p.total <= len));
    }

    /// Implements the calls about a task's course and its ending, but
    /// says it follows no task.
    #[derive(Default)]
    struct CompletionsOnly {
        progress: Mutex<u32>,
        waiting: Mutex<u32>,
        metrics: Mutex<u32>,
        completed: Mutex<u32>,
    }

    #[async_trait]
    impl Delegate for CompletionsOnly {
        async fn progress(&self, _task: &TaskRecord, _p: Progress) {
            *self.progress.lock().unwrap() += 1;
        }

        async fn waiting(&self, _task: &TaskRecord, _r: &transfer_core::WaitReason) {
            *self.waiting.lock().unwrap() += 1;
        }

        async fn metrics(&self, _task: &TaskRecord, _m: &transfer_core::RequestMetrics) {
            *self.metrics.lock().unwrap() += 1;
        }

        async fn completed(&self, _c: &transfer_core::Completion) {
            *self.completed.lock().unwrap() += 1;
        }

        fn follows_tasks(&self) -> bool {
            false
        }
    }

    /// A delegate that follows no task gets no progress or metrics calls
    /// (the session makes no copies of records for them), still gets its
    /// completion, and the session's event stream still carries progress.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delegate_that_follows_no_task_hears_only_of_endings() {
        use futures::StreamExt;
        let f = Fixture::new(Proto::H1).await;
        let len = 4u64 << 20;
        f.origin.resource("/c", Resource::seeded(12, len));
        f.origin
            .script("/c", Script::new().always(Fault::RateLimit(8 << 20)));
        let only = Arc::new(CompletionsOnly::default());
        let mut config = Fixture::config();
        config.progress_interval = Duration::from_millis(50);
        let payloads = Arc::new(FsPayloadStore::new(&f.out).unwrap());
        let s = f.session_full(true, payloads, config, only.clone()).await;
        let mut events = Box::pin(s.events());
        let t = f.get(&s, &f.url("/c"), "c").await;
        assert_eq!(wait(&t).await, Outcome::Completed { bytes: len });
        let mut progress_events = 0;
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
            match e {
                scheduler::SessionEvent::Progress { .. } => progress_events += 1,
                scheduler::SessionEvent::Completed(_) => break,
                _ => {}
            }
        }
        assert!(progress_events > 0, "progress events for subscribers");
        assert_eq!(*only.completed.lock().unwrap(), 1);
        assert_eq!(*only.progress.lock().unwrap(), 0);
        assert_eq!(*only.waiting.lock().unwrap(), 0);
        assert_eq!(*only.metrics.lock().unwrap(), 0);
    }

    /// Idle is a level, not only an edge: after the download, and in a new
    /// session over the finished state (whose one idle event goes out while
    /// it is built, before anyone can subscribe), `wait_idle` returns; while
    /// a download runs, it waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_idle_sees_an_idle_that_came_before_the_call() {
        let f = Fixture::new(Proto::H1).await;
        let len = 2u64 << 20;
        f.origin.resource("/i", Resource::seeded(11, len));
        f.origin
            .script("/i", Script::new().always(Fault::RateLimit(4 << 20)));
        let s = f.session().await;
        let t = f.get(&s, &f.url("/i"), "i").await;
        // 2 MiB at 4 MiB/s: still running a moment from now.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), s.wait_idle())
                .await
                .is_err(),
            "idle while a download runs"
        );
        assert_eq!(wait(&t).await, Outcome::Completed { bytes: len });
        let within = |s: Session| async move {
            tokio::time::timeout(Duration::from_secs(10), s.wait_idle())
                .await
                .expect("wait_idle returns on an idle session")
                .unwrap();
        };
        within(s.clone()).await;
        s.shutdown().await;
        for _ in 0..5 {
            let s = f.session().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            within(s.clone()).await;
            s.shutdown().await;
        }
    }
}
