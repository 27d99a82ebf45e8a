//! # scheduler
//!
//! Ferry's session runtime. A [`Session`] has a stable identifier, one task
//! store, one payload store, transports, a condition source and a delegate.
//! Building it **attaches** to what the store holds: attempts interrupted by a
//! crash are queued again with their resume data, and completions never
//! acknowledged are delivered again.
//!
//! One scheduling loop owns every task. It applies events with
//! [`transfer_core::apply`] and carries out the effects: persist, start a
//! runner, abort at the next chunk, notify, set a timer, record a completion.
//! A runner asks from the durable offset (`Range` + `If-Range`), judges the
//! answer (206 or 200, `Content-Range`, validator), streams through the
//! throttle into the payload store, and checkpoints — data made durable,
//! then the offset recorded — every second or 32 MiB. At the end it checks
//! the length and the SHA-256 (expected, or RFC 9530 `Repr-Digest` /
//! `Content-Digest`), commits atomically, and the completion is recorded in
//! the outbox before the delegate hears of it.
//!
//! Several processes, on one machine or many, can run one session together
//! ([`SessionBuilder::shared`], with a store they all reach, such as
//! store-s3's, and its `S3Claims`): each follows the others' changes in the
//! store, and runs a task only while it holds the task's claim, which the
//! others take over once it has gone unrenewed for its time to live.
//!
//! ```no_run
//! use std::sync::Arc;
//! use scheduler::{Session, SessionConfig};
//! use store_fs::{FsPayloadStore, FsTaskStore};
//! use transport_http::{HttpConfig, HttpTransport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::builder("com.example.sync")?
//!     .store(Arc::new(FsTaskStore::open("state")?))
//!     .payloads(Arc::new(FsPayloadStore::new("downloads")?))
//!     .transport(Arc::new(HttpTransport::new(HttpConfig::default())?))
//!     .config(SessionConfig::default())
//!     .build()
//!     .await?;
//! let task = session
//!     .download("https://example.com/big.iso")?
//!     .to("big.iso")
//!     .enqueue()
//!     .await?;
//! let outcome = task.wait().await?;
//! println!("{outcome:?}");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod builder;
mod clock;
pub mod conditions;
mod engine;
mod offline;
mod resumable;
mod runner;
mod shared;
pub mod throttle;
mod upload;

pub use builder::{DownloadBuilder, FromFile, TaskBuilder, ToPath, UploadBuilder};
pub use clock::Clock;
pub use conditions::{LinuxConditions, LinuxConditionsConfig, ScriptedConditions};
pub use offline::Offline;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use transfer_core::{
    Completion, ConditionSource, Conditions, Delegate, Event, NoDelegate, Outcome, PayloadStore,
    Policy, Progress, RedirectPolicy, RestartReason, ResumeData, RetryPolicy, SessionId, SpecError,
    StoreError, TaskId, TaskRecord, TaskSpec, TaskStore, Timeouts, Transport, WaitReason,
};

use engine::{Command, Engine};

/// A session's settings. Every default is here.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Admission policy: networks, power, limits, bandwidth.
    pub policy: Policy,
    /// Retries, backoff and the resource deadline (default 7 days).
    pub retry: RetryPolicy,
    /// Per-request time limits; `idle` is the session's idle timeout (60 s).
    pub timeouts: Timeouts,
    /// Redirect rules.
    pub redirects: RedirectPolicy,
    /// Checkpoint at least this often while data flows (default 1 s).
    pub checkpoint_interval: Duration,
    /// …and at least every this many bytes (default 32 MiB).
    pub checkpoint_bytes: u64,
    /// Progress reports at most this often (default 250 ms).
    pub progress_interval: Duration,
    /// Accept weak ETags as validators for resuming (default false).
    pub allow_weak_etags: bool,
    /// Largest body any task may download (default none).
    pub max_body: Option<u64>,
    /// How much of the server's answer to an upload is kept with its
    /// completion (default 1 MiB; the rest is read and dropped).
    pub upload_response_limit: usize,
    /// Largest append of a resumable upload (default 64 MiB): a server that
    /// keeps only whole appends loses at most this much to an interruption.
    pub upload_chunk_bytes: u64,
    /// Which HTTP version to ask for when a task does not say (default:
    /// whatever the transport and the server agree on).
    pub protocol: transfer_core::ProtocolPreference,
}

/// The HTTP version a task asks for: its own choice, else the session's.
pub(crate) fn protocol_for(
    spec: &transfer_core::TaskSpec,
    config: &SessionConfig,
) -> transfer_core::ProtocolPreference {
    match spec.protocol {
        transfer_core::ProtocolPreference::Auto => config.protocol,
        asked => asked,
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            policy: Policy::default(),
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            redirects: RedirectPolicy::default(),
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_bytes: 32 << 20,
            progress_interval: Duration::from_millis(250),
            allow_weak_etags: false,
            max_body: None,
            upload_response_limit: 1 << 20,
            upload_chunk_bytes: 64 << 20,
            protocol: transfer_core::ProtocolPreference::Auto,
        }
    }
}

/// Why a session call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The task specification was refused (bad URL, bad checksum, …).
    #[error("invalid task: {0}")]
    Spec(#[from] SpecError),
    /// The task store failed.
    #[error("task store: {0}")]
    Store(#[source] StoreError),
    /// An upload's source file is missing, unreadable or not a file.
    #[error("upload source {}: {error}", path.display())]
    Source {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        error: std::io::Error,
    },
    /// A builder was given choices that do not go together.
    #[error("{0}")]
    Conflict(&'static str),
    /// A builder was missing a part.
    #[error("the session needs {0}")]
    Missing(&'static str),
    /// No such task in this session.
    #[error("no task {0} in this session")]
    UnknownTask(TaskId),
    /// The session has shut down.
    #[error("the session has shut down")]
    Closed,
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What happens in a session, in order, for [`Session::events`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SessionEvent {
    /// Bytes moved.
    Progress {
        /// The task.
        task: TaskId,
        /// How far it is.
        progress: Progress,
    },
    /// A task waits, for a reason.
    Waiting {
        /// The task.
        task: TaskId,
        /// Why.
        reason: WaitReason,
    },
    /// A task discarded its partial and starts from zero.
    Restarted {
        /// The task.
        task: TaskId,
        /// Why.
        reason: RestartReason,
    },
    /// A task ended (recorded in the outbox before this is sent).
    Completed(Box<Completion>),
    /// Nothing runs or waits to run, and every event has been delivered.
    Idle,
}

/// Conditions that never change: Ethernet on mains power.
#[derive(Debug, Default)]
struct Steady;

#[async_trait::async_trait]
impl ConditionSource for Steady {
    fn current(&self) -> Conditions {
        Conditions::default()
    }

    async fn changed(&self, _seen: Conditions) -> Conditions {
        futures::future::pending().await
    }
}

/// Builds a [`Session`]; see [`Session::builder`].
pub struct SessionBuilder {
    id: SessionId,
    store: Option<Arc<dyn TaskStore>>,
    payloads: Option<Arc<dyn PayloadStore>>,
    transports: Vec<Arc<dyn Transport>>,
    conditions: Arc<dyn ConditionSource>,
    delegate: Arc<dyn Delegate>,
    config: SessionConfig,
    clock: Option<Clock>,
    shared: Option<(Arc<dyn transfer_core::Claims>, Option<Duration>)>,
}

impl SessionBuilder {
    /// Shares the session with other processes (on other machines, each
    /// with its own store over the same storage, such as store-s3): each
    /// task is run by one process at a time, the one holding its claim, and
    /// a process that dies loses its tasks to the others once its claims
    /// expire. Each process follows the others' changes by reading the
    /// store every `follow_every` (default: a quarter of the claims' time to
    /// live, at most 5 s). Task and event ids are drawn at random.
    pub fn shared(
        mut self,
        claims: Arc<dyn transfer_core::Claims>,
        follow_every: Option<Duration>,
    ) -> Self {
        self.shared = Some((claims, follow_every));
        self
    }

    /// Where task records and the completion outbox live.
    pub fn store(mut self, store: Arc<dyn TaskStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Where partial and finished payloads go.
    pub fn payloads(mut self, payloads: Arc<dyn PayloadStore>) -> Self {
        self.payloads = Some(payloads);
        self
    }

    /// Adds a transport; the first that handles a URL carries it.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transports.push(transport);
        self
    }

    /// Where network and power conditions come from (default: Ethernet on
    /// mains, never changing).
    pub fn conditions(mut self, conditions: Arc<dyn ConditionSource>) -> Self {
        self.conditions = conditions;
        self
    }

    /// Who hears about progress and completions (default: nobody).
    pub fn delegate(mut self, delegate: Arc<dyn Delegate>) -> Self {
        self.delegate = delegate;
        self
    }

    /// The session's settings.
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// The wall clock that timetables, earliest begins, backoff and
    /// deadlines are read from (default: the system's time, advancing with
    /// tokio's clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Attaches to the session's state and starts its scheduling loop.
    pub async fn build(self) -> Result<Session, SessionError> {
        let store = self.store.ok_or(SessionError::Missing("a task store"))?;
        let payloads = self
            .payloads
            .ok_or(SessionError::Missing("a payload store"))?;
        if self.transports.is_empty() {
            return Err(SessionError::Missing("a transport"));
        }
        let snapshot = store.load(&self.id).await.map_err(SessionError::Store)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (deliver_tx, deliver_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        let (gone_tx, gone) = watch::channel(false);
        let (idle_tx, idle) = watch::channel(engine::IdleLevel::default());
        let config = Arc::new(self.config);
        let mut engine = Engine::new(
            self.id.clone(),
            store.clone(),
            payloads,
            self.transports,
            self.delegate.clone(),
            config,
            self.clock.unwrap_or_default(),
            &*self.conditions,
            tx.clone(),
            deliver_tx.clone(),
            idle_tx.clone(),
        );
        engine.attach(snapshot.records);
        let mut follower = None;
        match self.shared {
            None => engine.redeliver(snapshot.outbox),
            Some((claims, every)) => {
                // Completions in the outbox may be another process's to
                // deliver: whoever claims their task delivers them.
                let every = every
                    .unwrap_or_else(|| (claims.ttl() / 4).min(Duration::from_secs(5)))
                    .max(Duration::from_millis(10));
                let mut shared = shared::Shared::new(claims);
                // Completions left undelivered: whoever claims their task
                // delivers them (this process, if their own died). Tried
                // now, so that an idle session has tried them.
                for c in &snapshot.outbox {
                    if shared.may_claim(c.task) {
                        shared.claim(c.task, self.id.clone(), store.clone(), tx.clone());
                    }
                }
                follower = Some(shared::follow(
                    every,
                    self.id.clone(),
                    store.clone(),
                    shared.commits.clone(),
                    tx.clone(),
                ));
                engine.shared = Some(shared);
            }
        }
        tokio::spawn(engine::deliver(
            deliver_rx,
            self.delegate,
            store,
            self.id.clone(),
            events.clone(),
            gone_tx,
            idle_tx,
            tx.clone(),
        ));
        let follower = follower.map(tokio::spawn);
        tokio::spawn(async move {
            engine.run(rx, self.conditions).await;
            if let Some(f) = follower {
                f.abort();
            }
        });
        Ok(Session {
            inner: Arc::new(Inner {
                id: self.id,
                tx,
                events,
                gone,
                idle,
            }),
        })
    }
}

struct Inner {
    id: SessionId,
    tx: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<SessionEvent>,
    gone: watch::Receiver<bool>,
    idle: watch::Receiver<engine::IdleLevel>,
}

/// A running session. Clone it freely; it stops when
/// [`shutdown`](Self::shutdown) is called or the process ends.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts building the session `id` (e.g. `"com.example.sync"`).
    pub fn builder(id: &str) -> Result<SessionBuilder, SessionError> {
        Ok(SessionBuilder {
            id: SessionId::new(id)?,
            store: None,
            payloads: None,
            transports: Vec::new(),
            conditions: Arc::new(Steady),
            delegate: Arc::new(NoDelegate),
            config: SessionConfig::default(),
            clock: None,
            shared: None,
        })
    }

    /// The session's identifier.
    pub fn id(&self) -> &SessionId {
        &self.inner.id
    }

    /// Starts describing a download of `url`; finish with
    /// [`DownloadBuilder::to`] and [`DownloadBuilder::enqueue`].
    pub fn download(&self, url: &str) -> Result<DownloadBuilder, SessionError> {
        transfer_core::Url::parse(url)?;
        Ok(TaskBuilder::new(self.clone(), builder::ToPath::new(url)))
    }

    /// Starts describing an upload of the file at `source`; finish with
    /// [`UploadBuilder::to`] and [`UploadBuilder::enqueue`]. The file is
    /// checked at enqueue (it must exist and be readable) and its size and
    /// modification time recorded: an attempt that finds it changed fails.
    pub fn upload(&self, source: impl Into<PathBuf>) -> UploadBuilder {
        TaskBuilder::new(self.clone(), builder::FromFile::new(source.into()))
    }

    /// Enqueues a task from a full specification.
    pub async fn enqueue(&self, spec: TaskSpec, start: bool) -> Result<TaskHandle, SessionError> {
        self.enqueue_many(vec![spec], start)
            .await?
            .pop()
            .ok_or(SessionError::Closed)
    }

    /// Enqueues many tasks at once: they are recorded in as few commits as
    /// the store allows (one per batch of up to 1,024), not one each.
    pub async fn enqueue_many(
        &self,
        specs: Vec<TaskSpec>,
        start: bool,
    ) -> Result<Vec<TaskHandle>, SessionError> {
        let mut replies = Vec::with_capacity(specs.len());
        for mut spec in specs {
            stamp_source(&mut spec).await?;
            let (reply, rx) = oneshot::channel();
            self.send(Command::Enqueue {
                spec: Box::new(spec),
                start,
                reply,
            })?;
            replies.push(rx);
        }
        let mut handles = Vec::with_capacity(replies.len());
        for rx in replies {
            let id = rx.await.map_err(|_| SessionError::Closed)??;
            handles.push(self.task(id));
        }
        Ok(handles)
    }

    /// A handle for a task known to this session.
    pub fn task(&self, id: TaskId) -> TaskHandle {
        TaskHandle {
            id,
            session: self.clone(),
        }
    }

    /// Every task of the session, in enqueue order.
    pub async fn tasks(&self) -> Result<Vec<TaskRecord>, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Tasks(reply))?;
        rx.await.map_err(|_| SessionError::Closed)
    }

    /// The session's events from now on (progress, waits, restarts,
    /// completions, idle). A subscriber that falls more than 4,096 events
    /// behind skips the oldest.
    pub fn events(&self) -> impl Stream<Item = SessionEvent> + Send + 'static {
        let rx = self.inner.events.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "event subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Changes the session's rate limit (bytes per second for all its
    /// transfers together; `None`: unlimited, `Some(0)`: paused). Running
    /// transfers pace at the new rate from their next chunk.
    pub fn set_rate_limit(&self, rate: Option<u64>) -> Result<(), SessionError> {
        self.send(Command::SessionRate(rate))
    }

    /// Waits until the session is idle: nothing runs or waits to run, and
    /// every event up to then has been delivered. Unlike
    /// [`SessionEvent::Idle`], sent once each time the session becomes idle,
    /// this returns at once when the session is idle already, so it cannot
    /// miss an idle that happened before the call. Fails with
    /// [`SessionError::Closed`] when the session stops first.
    pub async fn wait_idle(&self) -> Result<(), SessionError> {
        let mut idle = self.inner.idle.clone();
        let mut gone = self.inner.gone.clone();
        tokio::select! {
            r = idle.wait_for(|level| level.idle) => r.map(|_| ()).map_err(|_| SessionError::Closed),
            _ = gone.wait_for(|g| *g) => Err(SessionError::Closed),
        }
    }

    /// Stops every running attempt at a checkpoint, records it, and stops
    /// the session. Tasks continue from there when the session is built again.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.send(Command::Shutdown(done)).is_ok() {
            let _ = rx.await;
        }
        // Wait for the delivery task too: then the store is released and a
        // new session can open it.
        let mut gone = self.inner.gone.clone();
        let _ = gone.wait_for(|g| *g).await;
    }

    fn send(&self, cmd: Command) -> Result<(), SessionError> {
        self.inner.tx.send(cmd).map_err(|_| SessionError::Closed)
    }

    async fn user(&self, task: TaskId, event: Event) -> Result<(), SessionError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::User { task, event, reply })?;
        rx.await.map_err(|_| SessionError::Closed)?
    }
}

/// Records what an upload's source file looks like now (size, modification
/// time), after checking that it can be read. Downloads are left alone.
pub async fn stamp_source(spec: &mut TaskSpec) -> Result<(), SessionError> {
    let transfer_core::TaskKind::Upload { source, stamp, .. } = &mut spec.kind else {
        return Ok(());
    };
    let failed = |error: std::io::Error| SessionError::Source {
        path: source.clone(),
        error,
    };
    let file = tokio::fs::File::open(&*source).await.map_err(failed)?;
    let meta = file.metadata().await.map_err(failed)?;
    if !meta.is_file() {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let now = transfer_core::FileStamp::of(&meta);
    if let Some(before) = stamp
        && let Some(how) = before.changed(&now)
    {
        return Err(failed(std::io::Error::other(format!(
            "changed since the task was described: {how}"
        ))));
    }
    *stamp = Some(now);
    Ok(())
}

/// A task of a session.
#[derive(Clone, Debug)]
pub struct TaskHandle {
    id: TaskId,
    session: Session,
}

impl TaskHandle {
    /// The task's identifier.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Starts or continues the task.
    pub async fn resume(&self) -> Result<(), SessionError> {
        self.session.user(self.id, Event::Resume).await
    }

    /// Stops the task (at a checkpoint) until resumed.
    pub async fn suspend(&self) -> Result<(), SessionError> {
        self.session.user(self.id, Event::Suspend).await
    }

    /// Cancels the task and deletes its partial.
    pub async fn cancel(&self) -> Result<(), SessionError> {
        self.session
            .user(
                self.id,
                Event::Cancel {
                    keep_resume_data: false,
                },
            )
            .await
    }

    /// Cancels the task, keeps its partial, and returns its resume data.
    pub async fn cancel_producing_resume_data(&self) -> Result<Option<ResumeData>, SessionError> {
        self.session
            .user(
                self.id,
                Event::Cancel {
                    keep_resume_data: true,
                },
            )
            .await?;
        Ok(self.snapshot().await?.map(|r| r.state.resume))
    }

    /// The task's record as it is now.
    pub async fn snapshot(&self) -> Result<Option<TaskRecord>, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.session.send(Command::Snapshot {
            task: self.id,
            reply,
        })?;
        rx.await.map_err(|_| SessionError::Closed)
    }

    /// Waits until the task ends and returns how.
    pub async fn wait(&self) -> Result<Outcome, SessionError> {
        use futures::StreamExt;
        let mut events = Box::pin(self.session.events());
        if let Some(outcome) = self.outcome().await? {
            return Ok(outcome);
        }
        while let Some(e) = events.next().await {
            if let SessionEvent::Completed(c) = e
                && c.task == self.id
            {
                return Ok(c.outcome.clone());
            }
        }
        Err(SessionError::Closed)
    }

    /// How the task ended, or `None` while it has not.
    pub async fn outcome(&self) -> Result<Option<Outcome>, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.session.send(Command::Ended {
            task: self.id,
            reply,
        })?;
        rx.await.map_err(|_| SessionError::Closed)?
    }
}
