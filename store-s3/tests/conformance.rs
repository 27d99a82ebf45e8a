#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The TaskStore conformance suite over object_store's in-memory store and
//! its local filesystem (both honour conditional creates), with a small
//! compaction interval so checkpoints are written and read back.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use store_s3::S3TaskStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory() {
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    testkit::conformance::task_store(|| {
        let objects = objects.clone();
        async move { S3TaskStore::new(objects, "ferry").compact_every(4) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    testkit::conformance::task_store(|| {
        let objects = objects.clone();
        async move { S3TaskStore::new(objects, "ferry").compact_every(4) }
    })
    .await;
}
