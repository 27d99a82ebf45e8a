//! What the end-to-end benches share: a runtime, and a session with its
//! state and output in `dir` downloading over loopback from a testkit
//! origin in the same process.

use std::path::Path;
use std::sync::Arc;

use scheduler::{Session, SessionConfig};
use store_fs::{FsPayloadStore, FsTaskStore};
use testkit::{Origin, Resource};
use transport_http::{HttpConfig, HttpTransport, Roots};

/// A two-worker runtime, like the machine the figures are taken on.
#[allow(dead_code)] // not every bench downloads
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Session `id` with its state in `dir/state` and its downloads in
/// `dir/out`, over HTTP/1.1 and HTTP/2.
pub(crate) async fn session(dir: &Path, id: &str) -> Session {
    Session::builder(id)
        .unwrap()
        .store(Arc::new(FsTaskStore::open(dir.join("state")).unwrap()))
        .payloads(Arc::new(FsPayloadStore::new(dir.join("out")).unwrap()))
        .transport(Arc::new(
            HttpTransport::new(HttpConfig::default().roots(Roots::Webpki)).unwrap(),
        ))
        .config(SessionConfig::default())
        .build()
        .await
        .unwrap()
}

/// An origin serving `resource` at `path`, and [`session`] `id`.
#[allow(dead_code)] // not every bench downloads
pub(crate) fn origin_and_session(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    id: &str,
    path: &str,
    resource: Resource,
) -> (Origin, Session) {
    rt.block_on(async {
        let origin = Origin::start().await.unwrap();
        origin.resource(path, resource);
        (origin, session(dir, id).await)
    })
}
