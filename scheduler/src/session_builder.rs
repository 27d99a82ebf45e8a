//! Building a session ([`SessionBuilder`]): the parts it is made of, then
//! attaching to its state and starting its engine.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use transfer_core::{
    ConditionSource, Conditions, Delegate, NoDelegate, PayloadStore, SessionId, TaskStore,
    Transport,
};

use crate::engine::{self, Core, Deliverer, Driver, Parts, SharedIo};
use crate::runners::Handles;
use crate::session::Inner;
use crate::throttle::Bucket;
use crate::{Clock, Session, SessionConfig, SessionError};

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
    /// A builder for the session `id`, with the defaults.
    pub(crate) fn new(id: &str) -> Result<SessionBuilder, SessionError> {
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
        let inbox = crate::command::Inbox(tx.clone());
        let (deliver_tx, deliver_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        let (gone_tx, gone) = watch::channel(false);
        let (idle_tx, idle) = watch::channel(engine::IdleLevel::default());
        let config = Arc::new(self.config);
        let clock = self.clock.unwrap_or_default();
        let follows = self.delegate.follows_tasks();
        let ttl = self.shared.as_ref().map(|(claims, _)| claims.ttl());
        let mut core = Core::new(
            config.clone(),
            self.conditions.current(),
            follows,
            clock.now(),
            ttl,
            transfer_core::random_u64(),
        );
        core.attach(snapshot.records);
        let mut follower = None;
        let mut shared = None;
        match self.shared {
            None => core.redeliver(snapshot.outbox),
            Some((claims, every)) => {
                // Completions in the outbox may be another process's to
                // deliver: whoever claims their task delivers them (this
                // process, if their own died). Tried now, so that an idle
                // session has tried them.
                let every = every
                    .unwrap_or_else(|| (claims.ttl() / 4).min(Duration::from_secs(5)))
                    .max(Duration::from_millis(10));
                core.claim_outbox(&snapshot.outbox);
                let io = SharedIo::new(claims);
                follower = Some(engine::follow(
                    every,
                    self.id.clone(),
                    store.clone(),
                    io.commits.clone(),
                    inbox.clone(),
                ));
                shared = Some(io);
            }
        }
        let handles = Handles {
            session: self.id.clone(),
            payloads,
            clock,
            inbox: inbox.clone(),
            session_bucket: Arc::new(Bucket::new(config.policy.rate_limit)),
            delegate: self.delegate.clone(),
            follows,
        };
        let driver = Driver::new(Parts {
            core,
            session: self.id.clone(),
            store: store.clone(),
            transports: self.transports,
            handles,
            deliver: deliver_tx,
            idle: idle_tx.clone(),
            shared,
        });
        let deliverer = Deliverer {
            delegate: self.delegate,
            store,
            session: self.id.clone(),
            events: events.clone(),
            gone: gone_tx,
            idle: idle_tx,
            engine: inbox,
        };
        tokio::spawn(deliverer.run(deliver_rx));
        let follower = follower.map(tokio::spawn);
        let conditions = self.conditions;
        tokio::spawn(async move {
            driver.run(rx, conditions).await;
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

impl Session {
    /// Starts building the session `id` (e.g. `"com.example.sync"`).
    pub fn builder(id: &str) -> Result<SessionBuilder, SessionError> {
        SessionBuilder::new(id)
    }
}
