#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Resumable uploads (IETF draft, interop version 9) to the testkit
//! origin's server under `/resumable/`, which keeps what it received before
//! a cut and hashes the upload as it grows.

mod common;

use std::sync::Arc;

use common::{Events, Fixture, Proto, ended, failed_with, source, start};
use scheduler::{Session, SessionConfig};
use store_fs::FsPayloadStore;
use testkit::{Fault, Script, body};
use transfer_core::{Completion, ErrorKind, Outcome, PartialLocation};

/// A session whose appends are at most `chunk` bytes.
async fn session(f: &Fixture, chunk: u64) -> Session {
    let config = SessionConfig {
        upload_chunk_bytes: chunk,
        ..Fixture::config()
    };
    let payloads = Arc::new(FsPayloadStore::new(&f.out).unwrap());
    f.session_with(true, payloads, config).await
}

/// Body bytes the server took in for requests under `prefix`.
fn received(f: &Fixture, prefix: &str) -> u64 {
    f.origin
        .log()
        .iter()
        .filter(|e| e.path.starts_with(prefix))
        .map(|e| e.bytes_received)
        .sum()
}

fn sha_of(c: &Completion) -> String {
    c.response.as_ref().unwrap().headers["x-received-sha256"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Cut at five random points of a 24 MiB upload (over HTTP/1.1 and TLS
/// HTTP/2): each attempt asks the server for its offset and continues from
/// there; the server's SHA-256 matches, and what was sent again after each
/// cut is at most one append (1 MiB here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_five_times_it_continues_from_the_servers_offset() {
    for proto in [Proto::H1, Proto::H2] {
        let f = Fixture::new(proto).await;
        let len = 24u64 << 20;
        let chunk = 1u64 << 20;
        let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
        let mut cuts = Vec::new();
        for _ in 0..5 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            cuts.push(1 + seed % (len - 1));
        }
        let mut script = Script::new();
        for &p in &cuts {
            script = script.always(Fault::CutUploadAt(p));
        }
        f.origin.script("/resumable/cut", script);
        let s = session(&f, chunk).await;
        let file = source(&f.out, "cut.bin", 90, len);
        let (events, task) = start(
            &s,
            s.upload(&file)
                .to(&f.url("/resumable/cut"))
                .resumable()
                .content_type("application/x-test"),
        )
        .await;
        let c = ended(events, &task).await;
        assert_eq!(
            c.outcome,
            Outcome::Completed { bytes: len },
            "{proto:?} {cuts:?}"
        );
        assert_eq!(
            sha_of(&c),
            hex::encode(body::sha256(90, 0, len)),
            "{proto:?}"
        );
        let again = received(&f, "/resumable/cut") - len;
        assert!(
            again <= cuts.len() as u64 * chunk,
            "{proto:?}: {again} bytes sent again for {} cuts",
            cuts.len()
        );
        let log = f.origin.log();
        let heads = log
            .iter()
            .filter(|e| e.method == http::Method::HEAD)
            .count();
        assert!(
            heads >= cuts.len(),
            "{proto:?}: an offset asked after each cut: {heads}"
        );
        for e in log.iter().filter(|e| e.method == http::Method::PATCH) {
            assert_eq!(e.headers["content-type"], "application/partial-upload");
            assert_eq!(e.headers["upload-draft-interop-version"], "9");
        }
        s.shutdown().await;
    }
}

/// 0 B, 1 B and 100 MiB arrive intact in appends of 32 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_from_0_to_100_mib_arrive_intact() {
    let f = Fixture::new(Proto::H1).await;
    let s = session(&f, 32 << 20).await;
    for (i, len) in [0u64, 1, 100 << 20].into_iter().enumerate() {
        let file = source(&f.out, &format!("r{i}"), 91 + i as u64, len);
        let (events, task) = start(
            &s,
            s.upload(&file)
                .to(&f.url(&format!("/resumable/size{i}")))
                .resumable(),
        )
        .await;
        let c = ended(events, &task).await;
        assert_eq!(c.outcome, Outcome::Completed { bytes: len });
        assert_eq!(sha_of(&c), hex::encode(body::sha256(91 + i as u64, 0, len)));
        assert_eq!(received(&f, &format!("/resumable/size{i}")), len);
    }
    s.shutdown().await;
}

/// A server that does not offer resumable uploads (the plain sink) gets
/// the file as a plain upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_servers_offer_it_is_a_plain_upload() {
    let f = Fixture::new(Proto::H1).await;
    let s = session(&f, 1 << 20).await;
    let len = 3u64 << 20;
    let file = source(&f.out, "plain.bin", 95, len);
    let (events, task) = start(&s, s.upload(&file).to(&f.url("/upload/plain")).resumable()).await;
    let c = ended(events, &task).await;
    assert_eq!(c.outcome, Outcome::Completed { bytes: len });
    assert_eq!(sha_of(&c), hex::encode(body::sha256(95, 0, len)));
    let methods: Vec<_> = f.origin.log().iter().map(|e| e.method.clone()).collect();
    assert_eq!(
        methods,
        [http::Method::OPTIONS, http::Method::POST],
        "one probe, then the whole file"
    );
    s.shutdown().await;
}

/// Cancelling an upload in progress deletes its resource on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_deletes_the_upload_resource() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.script(
        "/resumable/slow",
        Script::new().always(Fault::RateLimit(2 << 20)),
    );
    let s = session(&f, 1 << 20).await;
    let file = source(&f.out, "slow.bin", 96, 32 << 20);
    let (_events, task) = start(
        &s,
        s.upload(&file).to(&f.url("/resumable/slow")).resumable(),
    )
    .await;
    let start = std::time::Instant::now();
    let url = loop {
        let r = task.snapshot().await.unwrap().unwrap();
        if let Some(PartialLocation::UploadResource { url, .. }) = &r.state.resume.partial
            && r.state.resume.durable_offset > 0
        {
            break url.clone();
        }
        assert!(start.elapsed().as_secs() < 30, "no append confirmed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(url.contains("/resumable/slow?upload="), "{url}");
    task.cancel().await.unwrap();
    let start = std::time::Instant::now();
    while !f
        .origin
        .log()
        .iter()
        .any(|e| e.method == http::Method::DELETE && url.ends_with(&e.path))
    {
        assert!(start.elapsed().as_secs() < 10, "no DELETE of {url}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    s.shutdown().await;
}

/// A restarted session continues the upload from the server's offset: the
/// resource's URL and the confirmed offset were saved in the task record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_continues_where_the_server_is() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.script(
        "/resumable/restart",
        Script::new().always(Fault::RateLimit(4 << 20)),
    );
    let len = 16u64 << 20;
    let file = source(&f.out, "restart.bin", 97, len);
    let s = session(&f, 1 << 20).await;
    let (_events, task) = start(
        &s,
        s.upload(&file).to(&f.url("/resumable/restart")).resumable(),
    )
    .await;
    let start = std::time::Instant::now();
    let durable = loop {
        let r = task.snapshot().await.unwrap().unwrap();
        if r.state.resume.durable_offset >= 3 << 20 {
            break r.state.resume.durable_offset;
        }
        assert!(start.elapsed().as_secs() < 30, "no progress");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    s.shutdown().await;

    let s = session(&f, 1 << 20).await;
    let (events, task) = (Box::pin(s.events()) as Events, s.task(task.id()));
    let c = ended(events, &task).await;
    assert_eq!(c.outcome, Outcome::Completed { bytes: len });
    assert_eq!(sha_of(&c), hex::encode(body::sha256(97, 0, len)));
    // After the new session's offset question, the next append starts at
    // or past what the first session had confirmed.
    let log = f.origin.log();
    let head = log
        .iter()
        .rposition(|e| e.method == http::Method::HEAD)
        .expect("the new session asked the server for its offset");
    let next = log[head..]
        .iter()
        .find(|e| e.method == http::Method::PATCH)
        .expect("an append after it");
    let from: u64 = next.headers["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        from >= durable,
        "continued from {from}, {durable} was confirmed"
    );
    assert!(received(&f, "/resumable/restart") - len <= 1 << 20);
    s.shutdown().await;
}

/// An https upload whose server names its resource at an http URL, or at
/// one that is not http at all, fails for good with the place named, as a
/// redirect there would, and no byte of the file goes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resource_off_https_is_refused_for_good() {
    let f = Fixture::new(Proto::H2).await;
    let s = session(&f, 1 << 20).await;
    let file = source(&f.out, "down.bin", 96, 100_000);
    let plain = f.origin.http_url("/resumable/down?upload=x");
    for (path, location) in [
        ("/resumable/down", plain.as_str()),
        ("/resumable/ftp", "ftp://127.0.0.1/x"),
    ] {
        f.origin.script(
            path,
            Script::new().always(Fault::UploadLocation(location.to_owned())),
        );
        let (events, task) = start(&s, s.upload(&file).to(&f.url(path)).resumable()).await;
        let c = ended(events, &task).await;
        assert_eq!(
            failed_with(&c.outcome),
            ErrorKind::RedirectRefused,
            "{location}"
        );
        let Outcome::Failed { error, .. } = &c.outcome else {
            unreachable!()
        };
        let said = error.to_string();
        assert!(said.contains(&location[..10]), "{location}: {said}");
    }
    let methods: Vec<_> = f.origin.log().iter().map(|e| e.method.clone()).collect();
    assert_eq!(
        methods,
        [
            http::Method::OPTIONS,
            http::Method::POST,
            http::Method::OPTIONS,
            http::Method::POST
        ],
        "each created once, never appended to"
    );
    s.shutdown().await;
}
