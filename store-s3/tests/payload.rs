#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Downloads into an object store: multipart parts as checkpoints, a
//! partial reopened from its record after a "kill" keeps its parts, and a
//! whole session (tasks and payloads both in S3, on moto) resumes a cut
//! download from the last stored part.

mod common;

use common::{bucket, one_provider};
use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use store_s3::{S3PayloadStore, S3TaskStore};
use testkit::{Fault, Origin, Resource, Script, body};
use transfer_core::{
    Destination, Outcome, PartialLocation, PayloadStore, ResumeData, SessionId, TaskId, TaskSpec,
};

const MIB: usize = 1 << 20;

/// The object at `key`, whole.
async fn object(store: &dyn ObjectStore, key: &str) -> object_store::Result<Bytes> {
    store.get(&Path::from(key)).await?.bytes().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_the_checkpoints_and_survive_a_kill() {
    let memory = Arc::new(InMemory::new());
    let store = S3PayloadStore::new(memory.clone()).part_size(5 * MIB);
    let (session, task) = (SessionId::new("s").unwrap(), TaskId::from_u64(1));
    let dest = Destination::ObjectKey("dl/a.bin".into());
    let data = body::bytes(71, 0, 0..(23 * MIB) as u64);

    let mut p = store
        .open(&session, task, &dest, &ResumeData::default())
        .await
        .unwrap();
    for chunk in data[..12 * MIB].chunks(MIB) {
        p.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let (durable, location) = p.sync().await.unwrap();
    assert_eq!(durable, (10 * MIB) as u64, "two whole parts are durable");
    assert_eq!(p.offset(), (12 * MIB) as u64);
    let PartialLocation::Multipart { parts, .. } = &location else {
        panic!("{location:?}")
    };
    assert_eq!(parts.len(), 2);
    drop(p); // killed: the 2 MiB being filled are lost

    let resume = ResumeData {
        durable_offset: durable,
        partial: Some(location),
        ..ResumeData::default()
    };
    let mut p = store.open(&session, task, &dest, &resume).await.unwrap();
    assert_eq!(p.offset(), durable, "continues after the stored parts");
    for chunk in data[durable as usize..].chunks(MIB) {
        p.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert!(
        object(&*memory, "dl/a.bin").await.is_err(),
        "nothing is visible before the commit"
    );
    p.commit(false).await.unwrap();
    let got = object(&*memory, "dl/a.bin").await.unwrap();
    assert!(got == data, "the object is whole and right");

    // A small payload is one plain put; a cancelled one leaves nothing.
    let small = Destination::ObjectKey("dl/small.bin".into());
    let mut p = store
        .open(&session, task, &small, &ResumeData::default())
        .await
        .unwrap();
    p.write(Bytes::from_static(b"tiny")).await.unwrap();
    p.commit(false).await.unwrap();
    let got = object(&*memory, "dl/small.bin").await.unwrap();
    assert_eq!(&got[..], b"tiny");
    let gone = Destination::ObjectKey("dl/gone.bin".into());
    let mut p = store
        .open(&session, task, &gone, &ResumeData::default())
        .await
        .unwrap();
    p.write(Bytes::from(vec![0u8; 6 * MIB])).await.unwrap();
    let (_, location) = p.sync().await.unwrap();
    let PartialLocation::Multipart { upload_id, .. } = location else {
        panic!("{location:?}")
    };
    p.discard().await.unwrap();
    assert!(object(&*memory, "dl/gone.bin").await.is_err());
    // The upload itself was aborted: no part can be added to it any more.
    let late = object_store::multipart::MultipartStore::put_part(
        &*memory,
        &Path::from("dl/gone.bin"),
        &upload_id,
        1,
        Bytes::from_static(b"late").into(),
    )
    .await;
    assert!(late.is_err(), "the multipart upload is aborted");
}

/// A session whose tasks and payloads are both in S3 (moto): a 24 MiB
/// download cut after 13 MiB continues from the last stored part (10 MiB
/// with 5 MiB parts), and the object lands whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_s3_resumes_a_cut_download_from_the_last_part() {
    one_provider();
    let moto = testkit::Moto::start(&["ferry-payloads"]).unwrap();
    let s3 = Arc::new(bucket(&moto, "ferry-payloads"));
    let objects: Arc<dyn ObjectStore> = s3.clone();
    let origin = Origin::start().await.unwrap();
    let len = 24u64 << 20;
    origin.resource("/f.bin", Resource::seeded(72, len));
    origin.script(
        "/f.bin",
        Script::new()
            .nth(1, Fault::CutAfter(13 << 20))
            .always(Fault::RateLimit(64 << 20)),
    );
    let session = scheduler::Session::builder("s3.session")
        .unwrap()
        .store(Arc::new(S3TaskStore::new(objects.clone(), "ferry")))
        .payloads(Arc::new(S3PayloadStore::new(s3).part_size(5 * MIB)))
        .transport(Arc::new(
            transport_http::HttpTransport::new(transport_http::HttpConfig::default()).unwrap(),
        ))
        .build()
        .await
        .unwrap();
    let spec = TaskSpec::download(
        &origin.http_url("/f.bin"),
        Destination::ObjectKey("downloads/f.bin".into()),
    )
    .build()
    .unwrap();
    let task = session.enqueue(spec, true).await.unwrap();
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(60), task.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Outcome::Completed { bytes: len });
    let got = object(&*objects, "downloads/f.bin").await.unwrap();
    assert!(
        got == body::bytes(72, 0, 0..len),
        "the object is whole and right"
    );
    let log = origin.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        log[1].range.as_deref(),
        Some("bytes=10485760-"),
        "resumed from the end of the second part"
    );
    session.shutdown().await;
}

/// A process completes the upload and dies before recording it: the record
/// still names the upload. Opening it finds the finished object by its tag
/// and hands it back whole (readable, for the checks), on InMemory and on
/// moto; an object at that key from elsewhere is not taken for it.
async fn completed_then_killed(objects: Arc<dyn ObjectStore>, payloads: S3PayloadStore) {
    let (session, task) = (SessionId::new("s").unwrap(), TaskId::from_u64(2));
    let dest = Destination::ObjectKey("dl/done.bin".into());
    let data = body::bytes(72, 0, 0..(13 * MIB) as u64);
    let mut p = payloads
        .open(&session, task, &dest, &ResumeData::default())
        .await
        .unwrap();
    for chunk in data.chunks(MIB) {
        p.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let (durable, location) = p.sync().await.unwrap();
    assert_eq!(durable, (8 * MIB) as u64);
    p.commit(false).await.unwrap(); // … and the process dies here
    let resume = ResumeData {
        durable_offset: durable,
        total_length: Some(data.len() as u64),
        partial: Some(location.clone()),
        ..ResumeData::default()
    };
    let mut p = payloads.open(&session, task, &dest, &resume).await.unwrap();
    assert_eq!(p.offset(), data.len() as u64, "found finished");
    let mut back = vec![0u8; 3 * MIB];
    let n = p.read_at((9 * MIB) as u64, &mut back).await.unwrap();
    assert_eq!(&back[..n], &data[9 * MIB..12 * MIB]);
    p.commit(false).await.unwrap();
    assert!(object(&*objects, "dl/done.bin").await.unwrap() == data);

    // Someone else's object at the key: the upload is continued instead.
    objects
        .put(
            &Path::from("dl/done.bin"),
            Bytes::from_static(b"other").into(),
        )
        .await
        .unwrap();
    let p = payloads.open(&session, task, &dest, &resume).await.unwrap();
    assert_eq!(p.offset(), durable, "not taken for the finished upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_completed_by_a_process_that_died_is_found_finished_in_memory() {
    let memory = Arc::new(InMemory::new());
    let payloads = S3PayloadStore::new(memory.clone());
    completed_then_killed(memory, payloads).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_completed_by_a_process_that_died_is_found_finished_on_moto() {
    one_provider();
    let moto = testkit::Moto::start(&["done"]).unwrap();
    let s3 = Arc::new(bucket(&moto, "done"));
    let payloads = S3PayloadStore::new(s3.clone());
    completed_then_killed(s3, payloads).await;
}

/// Commits onto taken keys, on object_store's InMemory and on moto.
async fn commits_never_replace(objects: Arc<dyn ObjectStore>, payloads: S3PayloadStore) {
    testkit::conformance::payload_commits_never_replace(
        &payloads,
        |name| Destination::ObjectKey(format!("taken/{name}")),
        async |d, bytes| {
            let Destination::ObjectKey(k) = d else {
                panic!("{d:?}")
            };
            objects
                .put(
                    &Path::from(k.as_str()),
                    Bytes::copy_from_slice(bytes).into(),
                )
                .await
                .unwrap();
        },
        async |d| {
            let Destination::ObjectKey(k) = d else {
                panic!("{d:?}")
            };
            object(&*objects, k).await.ok().map(|b| b.to_vec())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_never_replace_in_memory() {
    let memory = Arc::new(InMemory::new());
    commits_never_replace(memory.clone(), S3PayloadStore::new(memory)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_never_replace_on_moto() {
    one_provider();
    let moto = testkit::Moto::start(&["taken"]).unwrap();
    let s3 = Arc::new(bucket(&moto, "taken"));
    commits_never_replace(s3.clone(), S3PayloadStore::new(s3)).await;
}

/// A multipart upload (more than one part) is not completed over an
/// object it did not make; with overwrite it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_is_not_completed_over_another_object() {
    let memory = Arc::new(InMemory::new());
    let store = S3PayloadStore::new(memory.clone()).part_size(5 * MIB);
    let session = SessionId::new("s").unwrap();
    let dest = Destination::ObjectKey("dl/big.bin".into());
    memory
        .put(
            &Path::from("dl/big.bin"),
            Bytes::from_static(b"theirs").into(),
        )
        .await
        .unwrap();
    let data = body::bytes(73, 0, 0..(11 * MIB) as u64);
    for (task, overwrite) in [(1, false), (2, true)] {
        let mut p = store
            .open(
                &session,
                TaskId::from_u64(task),
                &dest,
                &ResumeData::default(),
            )
            .await
            .unwrap();
        for chunk in data.chunks(MIB) {
            p.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let result = p.commit(overwrite).await;
        if overwrite {
            result.unwrap();
            assert!(object(&*memory, "dl/big.bin").await.unwrap() == data);
        } else {
            let e = result.unwrap_err();
            assert!(e.is_exists(), "{e}");
            assert!(
                e.to_string().contains("dl/big.bin exists; not replaced"),
                "{e}"
            );
            assert_eq!(
                &object(&*memory, "dl/big.bin").await.unwrap()[..],
                b"theirs"
            );
        }
    }
}
