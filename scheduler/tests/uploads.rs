#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Uploads through a session to the testkit origin's sink, which answers
//! with the SHA-256 of what it received (a form: of each part). The answer
//! comes back in the task's completion.

mod common;

use common::{Fixture, Proto, ended, source, start};
use futures::StreamExt;
use scheduler::{Session, SessionError, SessionEvent, UploadBuilder};
use testkit::{Fault, Script, body};
use transfer_core::{Completion, Direction, ErrorKind, Outcome};

/// Enqueues the upload, runs it to its end and returns its completion
/// (with the server's answer).
async fn run(s: &Session, upload: UploadBuilder) -> Completion {
    let (events, task) = start(s, upload).await;
    ended(events, &task).await
}

fn json(c: &Completion) -> serde_json::Value {
    serde_json::from_slice(&c.response.as_ref().unwrap().body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_uploads_of_0_1_and_100_mib_arrive_intact() {
    for proto in [Proto::H1, Proto::H2] {
        let f = Fixture::new(proto).await;
        let s = f.session().await;
        for (i, len) in [0u64, 1, 100 << 20].into_iter().enumerate() {
            let seed = 40 + i as u64;
            let file = source(&f.out, &format!("up{i}"), seed, len);
            let mut events = Box::pin(s.events());
            let task = s
                .upload(&file)
                .to(&f.url(&format!("/upload/raw{i}")))
                .content_type("application/x-test")
                .enqueue()
                .await
                .unwrap();
            let outcome = common::wait(&task).await;
            assert_eq!(
                outcome,
                Outcome::Completed { bytes: len },
                "{proto:?} {len}"
            );
            let mut done = None;
            let mut sent = Vec::new();
            while let Some(e) = events.next().await {
                match e {
                    SessionEvent::Progress { task: t, progress } if t == task.id() => {
                        assert_eq!(progress.direction, Direction::Upload);
                        assert_eq!(progress.expected, Some(len));
                        sent.push(progress.total);
                    }
                    SessionEvent::Completed(c) if c.task == task.id() => {
                        done = Some(c);
                        break;
                    }
                    _ => {}
                }
            }
            let c = done.unwrap();
            let answer = c.response.as_ref().expect("the server's answer");
            assert_eq!(answer.status, 200);
            assert_eq!(
                answer.headers["x-received-sha256"].to_str().unwrap(),
                hex::encode(body::sha256(seed, 0, len)),
                "{proto:?} {len}: the server got the file"
            );
            assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
            if len > 0 {
                assert_eq!(sent.last(), Some(&len), "progress reaches the size");
            }
            let logged = f.origin.log();
            let entry = logged.last().unwrap();
            assert_eq!(entry.method, http::Method::PUT);
            assert_eq!(entry.headers["content-type"], "application/x-test");
        }
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_of_0_1_and_100_mib_arrive_intact() {
    let f = Fixture::new(Proto::H2).await;
    let s = f.session().await;
    for (i, len) in [0u64, 1, 100 << 20].into_iter().enumerate() {
        let seed = 50 + i as u64;
        let file = source(&f.out, &format!("photo{i}.jpg"), seed, len);
        let upload = s
            .upload(&file)
            .to(&f.url(&format!("/upload/form{i}")))
            .form("photo", format!("photo{i}.jpg"))
            .content_type("image/jpeg")
            .field("album \"main\"", "Holidays \"2026\"")
            .field("note", "line one\r\nline two");
        let c = run(&s, upload).await;
        assert!(matches!(c.outcome, Outcome::Completed { .. }), "{c:?}");
        let parts = json(&c)["parts"].as_array().unwrap().clone();
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert_eq!(
            parts[0]["name"], "album %22main%22",
            "names quoted as browsers do"
        );
        assert_eq!(parts[0]["value"], "Holidays \"2026\"");
        assert_eq!(parts[1]["name"], "note");
        assert_eq!(parts[1]["value"], "line one\r\nline two");
        assert_eq!(parts[2]["name"], "photo");
        assert_eq!(parts[2]["file_name"], format!("photo{i}.jpg"));
        assert_eq!(parts[2]["content_type"], "image/jpeg");
        assert_eq!(parts[2]["length"], len);
        assert_eq!(parts[2]["sha256"], hex::encode(body::sha256(seed, 0, len)));
        assert_eq!(f.origin.log().last().unwrap().method, http::Method::POST);
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unreadable_source_fails_at_enqueue() {
    let f = Fixture::new(Proto::H1).await;
    let s = f.session().await;
    for path in [f.out.join("nothing-here"), f.out.clone()] {
        let e = s
            .upload(&path)
            .to(&f.url("/upload/x"))
            .enqueue()
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SessionError::Source { path: p, .. } if *p == path),
            "{e}"
        );
    }
    assert!(s.tasks().await.unwrap().is_empty(), "nothing was queued");
    assert!(f.origin.log().is_empty(), "nothing was sent");
    s.shutdown().await;
}

/// The file grows while the server reads it slowly: the attempt fails with
/// `SourceChanged` before the last bytes go out, so the server never sees
/// a whole body; the task fails for good (sending again would send the
/// new version under the old task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_modified_mid_upload_fails_clearly() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.script(
        "/upload/torn",
        Script::new().always(Fault::RateLimit(16 << 20)),
    );
    let s = f.session().await;
    // Bigger than what the socket buffers hold, so the end of the file is
    // read after the change.
    let file = source(&f.out, "torn", 60, 32 << 20);
    let (events, task) = start(&s, s.upload(&file).to(&f.url("/upload/torn"))).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut w = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    std::io::Write::write_all(&mut w, b"appended").unwrap();
    drop(w);
    let c = ended(events, &task).await;
    let Outcome::Failed { error, .. } = &c.outcome else {
        panic!("{c:?}")
    };
    assert_eq!(error.kind(), ErrorKind::SourceChanged, "{error}");
    assert!(
        error.to_string().contains("changed since it was enqueued"),
        "{error}"
    );
    for e in f.origin.log() {
        assert!(e.status != 200, "the server never got a whole body: {e:?}");
    }
    s.shutdown().await;
}

/// The connection drops after 1 MiB of the body: the attempt is retried
/// and the second one sends the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_upload_is_sent_again() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.script(
        "/upload/cut",
        Script::new().nth(1, Fault::CutAfter(1 << 20)),
    );
    let s = f.session().await;
    let len = 3u64 << 20;
    let file = source(&f.out, "cut", 61, len);
    let upload = s.upload(&file).to(&f.url("/upload/cut"));
    let c = run(&s, upload).await;
    assert_eq!(c.outcome, Outcome::Completed { bytes: len });
    assert_eq!(
        c.response.unwrap().headers["x-received-sha256"],
        hex::encode(body::sha256(61, 0, len)).as_str()
    );
    let log = f.origin.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(!log[0].finished && log[0].bytes_received >= 1 << 20);
    s.shutdown().await;
}

/// A 4xx answer fails the task for good and its body comes back in the
/// completion, as BITS upload-reply jobs do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_fails_with_the_servers_answer() {
    let f = Fixture::new(Proto::H1).await;
    let s = f.session().await;
    let file = source(&f.out, "refused", 62, 1000);
    let upload = s.upload(&file).to(&f.url("/not-an-upload-path"));
    let c = run(&s, upload).await;
    let Outcome::Failed { error, .. } = &c.outcome else {
        panic!("{c:?}")
    };
    assert_eq!(error.kind(), ErrorKind::Status(404), "{error}");
    let answer = c.response.unwrap();
    assert_eq!(answer.status, 404);
    assert!(
        String::from_utf8_lossy(&answer.body).contains("no resource"),
        "{answer:?}"
    );
    s.shutdown().await;
}

/// Uploads keep to the same limits as downloads: under a session limit of
/// 256 KiB/s a 4 MiB body has sent no more than the limit allows after
/// 1.5 s (and is still going); once the limit is lifted it finishes at
/// once, whole. A task's own limit paces a resumable upload's chunks too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_keep_to_the_session_and_task_limits() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let f = Fixture::new(Proto::H1).await;
    let s = f.session().await;
    let len = 4u64 << 20;
    let rate = 256u64 << 10;
    for (i, resumable) in [false, true].into_iter().enumerate() {
        let seed = 70 + i as u64;
        let file = source(&f.out, &format!("slow{i}"), seed, len);
        let mut upload = if resumable {
            s.upload(&file)
                .to(&f.url(&format!("/resumable/slow{i}")))
                .resumable()
                .max_rate(rate)
        } else {
            s.set_rate_limit(Some(rate)).unwrap();
            s.upload(&file).to(&f.url(&format!("/upload/slow{i}")))
        };
        upload = upload.label("slow");
        let (mut events, task) = start(&s, upload).await;
        let started = std::time::Instant::now();
        let sent = Arc::new(AtomicU64::new(0));
        let seen = sent.clone();
        let id = task.id();
        let watcher = tokio::spawn(async move {
            while let Some(e) = events.next().await {
                match e {
                    SessionEvent::Progress { task, progress } if task == id => {
                        seen.fetch_max(progress.total, Ordering::Relaxed);
                    }
                    SessionEvent::Completed(c) if c.task == id => return *c,
                    _ => {}
                }
            }
            panic!("no completion");
        });
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let moved = sent.load(Ordering::Relaxed);
        let allowed = (rate as f64 * started.elapsed().as_secs_f64()) as u64 + (512 << 10);
        assert!(!watcher.is_finished(), "resumable {resumable}: still going");
        assert!(moved > 0, "resumable {resumable}: bytes move under a limit");
        assert!(
            moved <= allowed,
            "resumable {resumable}: {moved} bytes sent, the limit allows {allowed}"
        );
        if resumable {
            // The rest would take 14 s at the task's own limit: cancelling
            // ends the check (and deletes the upload resource).
            task.cancel().await.unwrap();
            let c = watcher.await.unwrap();
            assert!(matches!(c.outcome, Outcome::Cancelled { .. }), "{c:?}");
        } else {
            s.set_rate_limit(None).unwrap();
            let c = watcher.await.unwrap();
            assert_eq!(c.outcome, Outcome::Completed { bytes: len });
            assert_eq!(
                c.response.unwrap().headers["x-received-sha256"],
                hex::encode(body::sha256(seed, 0, len)).as_str()
            );
        }
    }
    s.shutdown().await;
}

/// The server's answer is kept up to the session's `upload_response_limit`
/// and the rest is dropped: with a limit of 8 bytes the completion holds
/// the first 8 bytes of "received 1048576 bytes\n" (23 bytes), and the
/// upload still counts as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_is_kept_up_to_the_limit() {
    let f = Fixture::new(Proto::H1).await;
    let payloads = std::sync::Arc::new(store_fs::FsPayloadStore::new(&f.out).unwrap());
    let config = scheduler::SessionConfig {
        upload_response_limit: 8,
        ..Fixture::config()
    };
    let s = f.session_with(true, payloads, config).await;
    for i in 0..2u64 {
        let file = source(&f.out, &format!("answered{i}"), 80 + i, 1 << 20);
        let c = run(&s, s.upload(&file).to(&f.url("/upload/answered"))).await;
        assert_eq!(c.outcome, Outcome::Completed { bytes: 1 << 20 });
        let answer = c.response.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], b"received", "the answer, cut at 8 bytes");
        assert_eq!(
            answer.headers["content-length"], "23",
            "the headers are whole"
        );
    }
    s.shutdown().await;
}
