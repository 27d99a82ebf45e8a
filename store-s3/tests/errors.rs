#![allow(clippy::unwrap_used, clippy::expect_used)]
//! How object-store failures are classified: a server that does not answer
//! (or answers with a server error) is worth retrying; a refusal is not.

mod common;

use std::sync::Arc;

use object_store::RetryConfig;
use store_s3::S3TaskStore;
use transfer_core::{ErrorClass, SessionId, StoreErrorKind, TaskStore, TransferError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_answer_is_a_transient_error() {
    common::one_provider();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s3 = store_s3::s3_builder("nowhere", Some(&format!("http://127.0.0.1:{port}")))
        .with_access_key_id("ferry")
        .with_secret_access_key("ferry")
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        })
        .build()
        .unwrap();
    let store = S3TaskStore::new(Arc::new(s3), "ferry");
    let e = store
        .load(&SessionId::new("s").unwrap())
        .await
        .expect_err("nothing answers");
    assert_eq!(e.kind(), StoreErrorKind::Transient, "{e}");
    let t = TransferError::from(e);
    assert_eq!(t.kind().class(), ErrorClass::Transient, "{t}");
}
