//! The final move of a download into place: it never replaces what is at
//! the destination unless the task may overwrite, whoever put it there (the
//! user, another task, another process), and a symlink or a directory
//! planted there is neither followed nor replaced by a file.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bytes::Bytes;
use store_fs::FsPayloadStore;
use transfer_core::{
    Destination, PartialLocation, PayloadStore, ResumeData, SessionId, StoreErrorKind, TaskId,
};

fn session() -> SessionId {
    SessionId::new("final-move").unwrap()
}

/// Opens task `task`'s partial for `name`, writes `body` and syncs it;
/// gives the partial and the resume data a checkpoint would record.
async fn written(
    store: &FsPayloadStore,
    task: u64,
    name: &str,
    body: &'static [u8],
) -> (Box<dyn transfer_core::Partial>, ResumeData) {
    let dest = Destination::Path(name.into());
    let mut p = store
        .open(
            &session(),
            TaskId::from_u64(task),
            &dest,
            &ResumeData::default(),
        )
        .await
        .unwrap();
    p.write(Bytes::from_static(body)).await.unwrap();
    let (durable, location) = p.sync().await.unwrap();
    let resume = ResumeData {
        durable_offset: durable,
        partial: Some(location),
        ..ResumeData::default()
    };
    (p, resume)
}

fn partial_path(resume: &ResumeData) -> &Path {
    match &resume.partial {
        Some(PartialLocation::File(p)) => p,
        other => panic!("{other:?}"),
    }
}

/// The user's file stays; the error names it; the download's bytes stay in
/// the partial, owner-only, and a retry allowed to overwrite resumes from
/// them and replaces the file.
async fn an_existing_file_is_not_replaced_in(dir: &Path) {
    let store = FsPayloadStore::new(dir).unwrap();
    let dest_path = store.root().join("report.pdf");
    std::fs::write(&dest_path, b"the user's own file").unwrap();
    let (p, resume) = written(&store, 1, "report.pdf", b"downloaded").await;
    let err = p.commit(false).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Exists, "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("{} exists; not replaced", dest_path.display())),
        "{err}"
    );
    assert_eq!(std::fs::read(&dest_path).unwrap(), b"the user's own file");
    let partial = partial_path(&resume);
    assert_eq!(
        std::fs::read(partial).unwrap(),
        b"downloaded",
        "the bytes are kept"
    );
    assert_eq!(
        std::fs::metadata(partial).unwrap().permissions().mode() & 0o777,
        0o600,
        "the kept partial is owner-only"
    );

    let dest = Destination::Path("report.pdf".into());
    let p = store
        .open(&session(), TaskId::from_u64(1), &dest, &resume)
        .await
        .unwrap();
    assert_eq!(p.offset(), 10, "the retry resumes from the kept bytes");
    p.commit(true).await.unwrap();
    assert_eq!(std::fs::read(&dest_path).unwrap(), b"downloaded");
    assert!(!partial.exists());
}

#[tokio::test]
async fn an_existing_file_is_not_replaced() {
    an_existing_file_is_not_replaced_in(tempfile::tempdir().unwrap().path()).await;
}

/// On tmpfs, where small commits are done without a blocking thread.
#[tokio::test]
async fn an_existing_file_is_not_replaced_in_memory() {
    an_existing_file_is_not_replaced_in(tempfile::tempdir_in("/dev/shm").unwrap().path()).await;
}

/// A symlink planted at the destination after the download started is not
/// followed: refused without overwrite, and with it the link itself is
/// replaced while what it points at stays as it was.
#[tokio::test]
async fn a_symlink_planted_at_the_destination_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsPayloadStore::new(dir.path().join("root")).unwrap();
    let target = dir.path().join("elsewhere.txt");
    std::fs::write(&target, b"not Ferry's").unwrap();
    let link = store.root().join("out.bin");
    for (task, overwrite) in [(1, false), (2, true)] {
        let (p, _) = written(&store, task, "out.bin", b"payload").await;
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let result = p.commit(overwrite).await;
        assert_eq!(std::fs::read(&target).unwrap(), b"not Ferry's");
        if overwrite {
            result.unwrap();
            assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
            assert_eq!(std::fs::read(&link).unwrap(), b"payload");
        } else {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), StoreErrorKind::Exists, "{err}");
            assert!(err.to_string().contains("a symbolic link"), "{err}");
            std::fs::remove_file(&link).unwrap();
        }
    }
}

/// A directory at the destination is never replaced, overwrite or not.
#[tokio::test]
async fn a_directory_at_the_destination_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsPayloadStore::new(dir.path()).unwrap();
    std::fs::create_dir(dir.path().join("photos")).unwrap();
    std::fs::write(dir.path().join("photos/kept.jpg"), b"jpeg").unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    for (task, name, overwrite) in [
        (1, "photos", false),
        (2, "photos", true),
        (3, "empty", true),
    ] {
        let (p, _) = written(&store, task, name, b"payload").await;
        let err = p.commit(overwrite).await.unwrap_err();
        assert_eq!(
            err.kind(),
            StoreErrorKind::Exists,
            "{name}, {overwrite}: {err}"
        );
        assert!(err.to_string().contains("a directory"), "{err}");
        assert!(dir.path().join(name).is_dir());
    }
    assert_eq!(
        std::fs::read(dir.path().join("photos/kept.jpg")).unwrap(),
        b"jpeg"
    );
}

/// Two stores over one directory, as two processes would be: of two tasks
/// that finish the same name, the first lands and the second is refused;
/// the file holds the first one's bytes.
#[tokio::test]
async fn a_second_store_does_not_replace_the_firsts_file() {
    let dir = tempfile::tempdir().unwrap();
    let one = FsPayloadStore::new(dir.path()).unwrap();
    let two = FsPayloadStore::new(dir.path()).unwrap();
    let (first, _) = written(&one, 1, "same.bin", b"from A").await;
    let (second, _) = written(&two, 2, "same.bin", b"from B").await;
    first.commit(false).await.unwrap();
    let err = second.commit(false).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Exists, "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("same.bin")).unwrap(),
        b"from A"
    );
}

/// A committed file is known as its task's until it is replaced; a file
/// that is not there, or another's, is not.
#[tokio::test]
async fn a_file_is_known_as_the_one_its_task_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsPayloadStore::new(dir.path()).unwrap();
    let dest = Destination::Path("done.bin".into());
    let by = |task| {
        store
            .written_by(&session(), TaskId::from_u64(task), &dest)
            .unwrap()
    };
    assert_eq!(by(1), Some(false), "nothing there yet");
    let (p, _) = written(&store, 1, "done.bin", b"payload").await;
    p.commit(false).await.unwrap();
    if by(1).is_none() {
        return; // this filesystem keeps no marks
    }
    assert_eq!(by(1), Some(true));
    assert_eq!(by(2), Some(false), "another task's");
    // Replaced by a copy of itself: not the file the task wrote any more.
    let path = dir.path().join("done.bin");
    std::fs::write(dir.path().join("copy"), std::fs::read(&path).unwrap()).unwrap();
    std::fs::rename(dir.path().join("copy"), &path).unwrap();
    assert_eq!(by(1), Some(false));
}

/// A commit by hard link (where the filesystem lacks RENAME_NOREPLACE)
/// that stopped between the link and the unlink leaves the partial's name
/// on the finished file. The rerun's partial must not be that file: the
/// finished file stays whole while the rerun downloads, and its commit
/// then takes the name back.
#[tokio::test]
async fn a_partial_that_is_also_the_finished_file_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsPayloadStore::new(dir.path()).unwrap();
    let (p, resume) = written(&store, 1, "linked.bin", b"finished").await;
    let partial = partial_path(&resume).to_owned();
    drop(p);
    let finished = dir.path().join("linked.bin");
    std::fs::hard_link(&partial, &finished).unwrap();
    let tag = format!("{}/{}", session(), TaskId::from_u64(1));
    let marked = rustix::fs::setxattr(
        &finished,
        "user.ferry.task",
        tag.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    );

    for durable in [0, 8] {
        let resume = ResumeData {
            durable_offset: durable,
            ..resume.clone()
        };
        let dest = Destination::Path("linked.bin".into());
        let p = store
            .open(&session(), TaskId::from_u64(1), &dest, &resume)
            .await
            .unwrap();
        assert_eq!(p.offset(), 0, "a fresh partial");
        assert_eq!(std::fs::read(&finished).unwrap(), b"finished", "untouched");
        drop(p);
    }
    if marked.is_err() {
        return; // no marks here: the rerun's commit would be refused
    }
    let (p, _) = written(&store, 1, "linked.bin", b"finished").await;
    p.commit(false).await.unwrap();
    assert_eq!(std::fs::read(&finished).unwrap(), b"finished");
    assert!(!partial.exists());
}
