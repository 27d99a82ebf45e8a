//! The fixture the session tests share: an origin, a state directory and
//! an output directory, and a session over store-fs and transport-http.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use scheduler::{Session, SessionConfig, TaskHandle};
use store_fs::{FsPayloadStore, FsTaskStore};
use testkit::Origin;
use transfer_core::{
    Delegate, ErrorKind, NoDelegate, Outcome, PayloadStore, RetryPolicy, Timeouts,
};
use transport_http::{HttpConfig, HttpTransport, Roots};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    H1,
    H2,
    /// HTTP/3 to the TLS listener's UDP twin, through transport-quic.
    H3,
}

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub out: PathBuf,
    pub state: PathBuf,
    pub origin: Origin,
    pub proto: Proto,
}

impl Fixture {
    pub async fn new(proto: Proto) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        Fixture {
            state: dir.path().join("state"),
            out,
            origin: Origin::start().await.unwrap(),
            proto,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        match self.proto {
            Proto::H1 => self.origin.http_url(path),
            Proto::H2 | Proto::H3 => self.origin.https_url(path),
        }
    }

    pub fn config() -> SessionConfig {
        SessionConfig {
            checkpoint_interval: Duration::from_millis(50),
            retry: RetryPolicy {
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(200),
                retry_limit: 3,
                ..RetryPolicy::default()
            },
            timeouts: Timeouts {
                idle: Duration::from_millis(500),
                ..Timeouts::default()
            },
            ..SessionConfig::default()
        }
    }

    pub async fn session_with(
        &self,
        trust: bool,
        payloads: Arc<dyn PayloadStore>,
        config: SessionConfig,
    ) -> Session {
        self.session_full(trust, payloads, config, Arc::new(NoDelegate))
            .await
    }

    pub async fn session_full(
        &self,
        trust: bool,
        payloads: Arc<dyn PayloadStore>,
        config: SessionConfig,
        delegate: Arc<dyn Delegate>,
    ) -> Session {
        let mut http = HttpConfig::default().roots(Roots::Webpki);
        if trust {
            http = http.add_root(self.origin.root_cert_der());
        }
        Session::builder("test.faults")
            .unwrap()
            .store(Arc::new(FsTaskStore::open(&self.state).unwrap()))
            .payloads(payloads)
            .transport(self.transport(http))
            .config(config)
            .delegate(delegate)
            .build()
            .await
            .unwrap()
    }

    /// The transport of the fixture's protocol.
    pub fn transport(&self, http: HttpConfig) -> Arc<dyn transfer_core::Transport> {
        match self.proto {
            Proto::H3 => Arc::new(
                transport_quic::QuicTransport::new(
                    transport_quic::QuicConfig::default().http(http),
                )
                .unwrap(),
            ),
            _ => Arc::new(HttpTransport::new(http).unwrap()),
        }
    }

    pub async fn session(&self) -> Session {
        let payloads = Arc::new(FsPayloadStore::new(&self.out).unwrap());
        self.session_with(true, payloads, Self::config()).await
    }

    pub async fn get(&self, session: &Session, url: &str, name: &str) -> TaskHandle {
        session
            .download(url)
            .unwrap()
            .to(name)
            .enqueue()
            .await
            .unwrap()
    }

    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.out.join(name)).ok()
    }

    pub fn ranges(&self, path: &str) -> Vec<u64> {
        self.origin
            .log()
            .iter()
            .filter(|e| e.path == path)
            .map(|e| {
                e.range.as_deref().map_or(0, |r| {
                    r.trim_start_matches("bytes=")
                        .trim_end_matches('-')
                        .parse()
                        .unwrap()
                })
            })
            .collect()
    }
}

pub async fn wait(task: &TaskHandle) -> Outcome {
    tokio::time::timeout(Duration::from_secs(60), task.wait())
        .await
        .expect("the task ends")
        .unwrap()
}

/// What `probe` finds, asked every 10 ms until it finds something; fails
/// the test naming `what` after `limit`.
pub async fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    tokio::time::timeout(limit, async {
        loop {
            if let Some(found) = probe() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

pub fn failed_with(outcome: &Outcome) -> ErrorKind {
    match outcome {
        Outcome::Failed { error, .. } => error.kind(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Writes `len` seeded bytes to `dir/name` (an upload's source).
pub fn source(dir: &std::path::Path, name: &str, seed: u64, len: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, testkit::body::bytes(seed, 0, 0..len)).unwrap();
    path
}

/// A session's events, boxed.
pub type Events = std::pin::Pin<Box<dyn futures::Stream<Item = scheduler::SessionEvent> + Send>>;

/// Enqueues the upload, listening to the session's events from before.
pub async fn start(s: &Session, upload: scheduler::UploadBuilder) -> (Events, TaskHandle) {
    let events: Events = Box::pin(s.events());
    (events, upload.enqueue().await.unwrap())
}

/// The task's completion (with the server's answer), from `events`.
pub async fn ended(mut events: Events, task: &TaskHandle) -> transfer_core::Completion {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(e) = events.next().await {
            if let scheduler::SessionEvent::Completed(c) = e
                && c.task == task.id()
            {
                return *c;
            }
        }
        panic!("no completion event");
    })
    .await
    .unwrap()
}
