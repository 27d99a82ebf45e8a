//! store-fs runs the shared store conformance suites, plus what is its own:
//! confinement to the root, owner-only files, refusing foreign databases.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use store_fs::{FsPayloadStore, FsTaskStore};
use transfer_core::{Destination, PayloadStore, ResumeData, SessionId, StoreErrorKind, TaskId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    testkit::conformance::task_store(|| {
        let path = path.clone();
        async move { FsTaskStore::open(&path).unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsPayloadStore::new(dir.path()).unwrap();
    testkit::conformance::payload_store(&store, store.root()).await;
}

/// The same on tmpfs, where small commits are done without a blocking
/// thread (`/dev/shm` is tmpfs on Linux).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_store_conformance_in_memory() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let store = FsPayloadStore::new(dir.path()).unwrap();
    testkit::conformance::payload_store(&store, store.root()).await;
}

/// Commits onto taken destinations, on disk and on tmpfs (where small
/// commits are done without a blocking thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_commits_never_replace() {
    for dir in [tempfile::tempdir(), tempfile::tempdir_in("/dev/shm")] {
        let dir = dir.unwrap();
        let store = FsPayloadStore::new(dir.path()).unwrap();
        let root = store.root().to_owned();
        testkit::conformance::payload_commits_never_replace(
            &store,
            |name| Destination::Path(root.join(name)),
            async |d, bytes| {
                let Destination::Path(p) = d else {
                    panic!("{d:?}")
                };
                std::fs::write(p, bytes).unwrap();
            },
            async |d| {
                let Destination::Path(p) = d else {
                    panic!("{d:?}")
                };
                std::fs::read(p).ok()
            },
        )
        .await;
    }
}

#[tokio::test]
async fn destinations_stay_inside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = FsPayloadStore::new(&root).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("escape")).unwrap();
    let s = SessionId::new("x").unwrap();
    for bad in [
        "../out.bin",
        "a/../../out.bin",
        "/etc/passwd",
        "escape/out.bin",
    ] {
        let dest = Destination::Path(bad.into());
        let err = store
            .open(&s, TaskId::from_u64(1), &dest, &ResumeData::default())
            .await
            .err();
        assert_eq!(
            err.map(|e| e.kind()),
            Some(StoreErrorKind::OutsideRoot),
            "{bad}"
        );
    }
    let key = Destination::ObjectKey("k".into());
    let err = store
        .open(&s, TaskId::from_u64(1), &key, &ResumeData::default())
        .await
        .err();
    assert_eq!(err.map(|e| e.kind()), Some(StoreErrorKind::Unsupported));
    assert!(!dir.path().join("out.bin").exists());
}

/// The store keeps the directories it wrote into open; what their paths
/// lead to later still decides: a directory removed is made again (nothing
/// is written into the removed one), and one replaced by a symlink out of
/// the root is refused.
#[tokio::test]
async fn directories_written_before_are_checked_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = FsPayloadStore::new(&root).unwrap();
    let s = SessionId::new("x").unwrap();
    let download = async |name: &str| {
        let dest = Destination::Path(format!("sub/{name}").into());
        let mut p = store
            .open(&s, TaskId::from_u64(7), &dest, &ResumeData::default())
            .await?;
        p.write(bytes::Bytes::from_static(b"abc")).await?;
        p.commit(false).await
    };
    download("one").await.unwrap();
    assert_eq!(std::fs::read(root.join("sub/one")).unwrap(), b"abc");

    std::fs::remove_dir_all(root.join("sub")).unwrap();
    download("two").await.unwrap();
    assert_eq!(std::fs::read(root.join("sub/two")).unwrap(), b"abc");

    std::fs::remove_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("sub")).unwrap();
    let err = download("three").await.err();
    assert_eq!(err.map(|e| e.kind()), Some(StoreErrorKind::OutsideRoot));
    assert_eq!(
        std::fs::read_dir(dir.path().join("elsewhere"))
            .unwrap()
            .count(),
        0,
        "nothing written outside the root"
    );
}

#[tokio::test]
async fn partials_are_owner_only_and_beside_their_destination() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsPayloadStore::new(dir.path()).unwrap();
    let s = SessionId::new("x").unwrap();
    let dest = Destination::Path("sub/file.bin".into());
    let mut p = store
        .open(&s, TaskId::from_u64(0xab), &dest, &ResumeData::default())
        .await
        .unwrap();
    p.write(bytes::Bytes::from_static(b"abc")).await.unwrap();
    let (_, loc) = p.sync().await.unwrap();
    let transfer_core::PartialLocation::File(path) = loc else {
        panic!("{loc:?}")
    };
    assert_eq!(path.parent(), Some(store.root().join("sub").as_path()));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Finished, the file takes the mode new files of this process get.
    p.commit(false).await.unwrap();
    let umask = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("sub/file.bin"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o666 & !umask
    );
    let state = dir.path().join("state");
    FsTaskStore::open(&state).unwrap();
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn a_foreign_database_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(store_fs::DATABASE_FILE), vec![0x42; 8192]).unwrap();
    let err = FsTaskStore::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("ferry.redb"), "{err}");
}
