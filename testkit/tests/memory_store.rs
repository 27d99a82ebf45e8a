#![allow(clippy::unwrap_used, clippy::expect_used)]
//! transfer-core's in-memory `TaskStore` passes the same conformance suite
//! as the durable stores ("reopening" it hands back the same store).

use std::sync::Arc;

use transfer_core::MemoryTaskStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_task_store_conforms() {
    let store = Arc::new(MemoryTaskStore::new());
    testkit::conformance::task_store(|| {
        let store = store.clone();
        async move { store }
    })
    .await;
}
