#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The scheduler's time comes from tokio's clock, so a test on a paused
//! clock sees an hour of backoff pass at once. The transport answers from
//! memory and the task store is transfer-core's in-memory one: a paused
//! clock jumps ahead whenever the runtime waits on something that is not a
//! tokio task (a socket, the redb writer thread), which would fire timeouts
//! and deadlines early.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use scheduler::{Session, SessionConfig};
use store_fs::FsPayloadStore;
use transfer_core::{
    ByteCount, MemoryTaskStore, Outcome, Protocol, ProtocolPreference, RequestMetrics,
    TransferError, Transport, TransportRequest, TransportResponse,
};

/// 503 with `Retry-After: 3600` for the first `busy` requests, then the body.
struct Busy {
    calls: AtomicU32,
    busy: u32,
}

#[async_trait]
impl Transport for Busy {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn handles(&self, _url: &Uri, _p: ProtocolPreference) -> bool {
        true
    }

    async fn send(&self, request: TransportRequest) -> Result<TransportResponse, TransferError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let (status, body) = if n < self.busy {
            (StatusCode::SERVICE_UNAVAILABLE, Bytes::from_static(b"busy"))
        } else {
            (StatusCode::OK, Bytes::from_static(b"the payload"))
        };
        let mut response = Response::new(
            Full::new(body.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert("content-length", body.len().into());
        if n < self.busy {
            h.insert("retry-after", "3600".parse().unwrap());
        }
        Ok(TransportResponse {
            response,
            url: request.request.uri().clone(),
            metrics: RequestMetrics {
                protocol: Protocol::Http1,
                reused_connection: false,
                dns: None,
                connect: None,
                tls: None,
                first_byte: Duration::ZERO,
                bytes_sent: 0,
                redirects: 0,
                remote_addr: None,
                proxy: None,
            },
            received: ByteCount::new(),
        })
    }
}

/// A session on `transport` with an in-memory store, writing into `dir/out`.
async fn session(dir: &std::path::Path, transport: Arc<Busy>, config: SessionConfig) -> Session {
    std::fs::create_dir_all(dir.join("out")).unwrap();
    Session::builder("test.clock")
        .unwrap()
        .store(Arc::new(MemoryTaskStore::new()))
        .payloads(Arc::new(FsPayloadStore::new(dir.join("out")).unwrap()))
        .transport(transport)
        .config(config)
        .build()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_hour_of_retry_after_passes_on_a_paused_clock() {
    let dir = tempfile::tempdir().unwrap();
    let transport = Arc::new(Busy {
        calls: AtomicU32::new(0),
        busy: 1,
    });
    let s = session(dir.path(), transport.clone(), SessionConfig::default()).await;
    let wall = std::time::Instant::now();
    let start = tokio::time::Instant::now();
    let t = s
        .download("https://example.com/f")
        .unwrap()
        .to("f")
        .enqueue()
        .await
        .unwrap();
    assert_eq!(t.wait().await.unwrap(), Outcome::Completed { bytes: 11 });
    assert!(
        start.elapsed() >= Duration::from_secs(3600),
        "{:?}",
        start.elapsed()
    );
    assert!(
        wall.elapsed() < Duration::from_secs(60),
        "no real hour passed"
    );
    assert_eq!(transport.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        std::fs::read(dir.path().join("out/f")).unwrap(),
        b"the payload"
    );
}

#[tokio::test(start_paused = true)]
async fn the_resource_deadline_ends_retries() {
    let dir = tempfile::tempdir().unwrap();
    let transport = Arc::new(Busy {
        calls: AtomicU32::new(0),
        busy: u32::MAX,
    });
    let mut config = SessionConfig::default();
    config.retry.retry_limit = 1000;
    config.retry.resource_timeout = Duration::from_secs(3 * 3600 + 60);
    let s = session(dir.path(), transport.clone(), config).await;
    let start = tokio::time::Instant::now();
    let t = s
        .download("https://example.com/f")
        .unwrap()
        .to("f")
        .enqueue()
        .await
        .unwrap();
    // Tried at 0, 1 h, 2 h and 3 h; the next try (4 h) would come after
    // the deadline, so the task fails then with the error that kept it out.
    match t.wait().await.unwrap() {
        Outcome::Failed { error, .. } => {
            assert_eq!(error.kind(), transfer_core::ErrorKind::Status(503))
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(3 * 3600), "{took:?}");
    assert!(took < Duration::from_secs(3 * 3600 + 60), "{took:?}");
    assert_eq!(transport.calls.load(Ordering::SeqCst), 4);
}
