//! A partial's file is opened when its first byte is written, not when the
//! attempt opens the partial: an attempt waiting for its response holds no
//! descriptor and makes no file, one that fails before the first byte
//! leaves nothing behind, and a resume still cuts the file back to the
//! durable offset.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use store_fs::FsPayloadStore;
use transfer_core::{Destination, PayloadStore, ResumeData, SessionId, TaskId};

fn session() -> SessionId {
    SessionId::new("partial-open").unwrap()
}

/// Descriptors this process holds on partials in `dir` (other tests run in
/// the process at the same time: only this test's files are counted).
fn partials_open(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir) && target.to_string_lossy().contains(".partial"))
        .count()
}

fn partials(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn opening_a_partial_makes_no_file_and_holds_no_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsPayloadStore::new(dir.path()).unwrap();
    let dest = Destination::Path("a.bin".into());
    let mut waiting = Vec::new();
    for task in 1..50 {
        waiting.push(
            store
                .open(
                    &session(),
                    TaskId::from_u64(task),
                    &dest,
                    &ResumeData::default(),
                )
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        partials_open(store.root()),
        0,
        "descriptors on waiting partials"
    );
    assert_eq!(partials(dir.path()), Vec::<String>::new());
    // Ones that fail before their first byte: nothing to clean up.
    for p in waiting {
        p.discard().await.unwrap();
    }
    assert_eq!(partials(dir.path()), Vec::<String>::new());
    // The count sees a partial that is open.
    let mut p = store
        .open(
            &session(),
            TaskId::from_u64(99),
            &dest,
            &ResumeData::default(),
        )
        .await
        .unwrap();
    p.write(bytes::Bytes::from_static(b"x")).await.unwrap();
    p.sync().await.unwrap();
    assert_eq!(partials_open(store.root()), 1);
}

/// Task `task`'s partial for `dest` with ten bytes checkpointed, and
/// `extra` written past them: the partial and what a resume asks for.
async fn checkpointed(
    store: &FsPayloadStore,
    task: TaskId,
    dest: &Destination,
    extra: &'static [u8],
) -> ResumeData {
    let mut p = store
        .open(&session(), task, dest, &ResumeData::default())
        .await
        .unwrap();
    p.write(Bytes::from_static(b"0123456789")).await.unwrap();
    let (durable, location) = p.sync().await.unwrap();
    assert_eq!(durable, 10);
    p.write(Bytes::from_static(extra)).await.unwrap();
    let _ = p.sync_behind().await.unwrap();
    drop(p);
    ResumeData {
        durable_offset: durable,
        partial: Some(location),
        ..ResumeData::default()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_first_byte_creates_it_owner_only_and_a_resume_cuts_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsPayloadStore::new(dir.path()).unwrap();
    let dest = Destination::Path("b.bin".into());
    let task = TaskId::from_u64(7);
    // Bytes past the checkpoint, then a crash.
    let resume = checkpointed(&store, task, &dest, b"not durable").await;
    let names = partials(dir.path());
    assert_eq!(names.len(), 1);
    let path = dir.path().join(&names[0]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut again = store.open(&session(), task, &dest, &resume).await.unwrap();
    assert_eq!(again.offset(), 10);
    again.write(Bytes::from_static(b"ABC")).await.unwrap();
    again.commit(false).await.unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("b.bin")).unwrap(),
        b"0123456789ABC"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_partial_cut_shorter_meanwhile_fails_the_attempt_rather_than_leave_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsPayloadStore::new(dir.path()).unwrap();
    let dest = Destination::Path("c.bin".into());
    let task = TaskId::from_u64(9);
    let resume = checkpointed(&store, task, &dest, b"").await;
    let mut again = store.open(&session(), task, &dest, &resume).await.unwrap();
    assert_eq!(again.offset(), 10);
    // Cut by someone else before the response came.
    let path = dir.path().join(&partials(dir.path())[0]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4)
        .unwrap();
    again.write(Bytes::from_static(b"ABC")).await.unwrap();
    let err = again.sync().await.unwrap_err();
    assert!(err.to_string().contains("holds 4 bytes"), "{err}");
}
