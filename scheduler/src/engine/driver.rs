//! The engine's async driver: it owns the channels, feeds the core what
//! happened (requests, runners' reports, news, the time), writes the
//! core's commits to the store, and carries out the core's actions
//! (spawning runners, stopping them, discarding partials, delivering,
//! answering callers).
//!
//! It decides nothing itself: every choice is the core's (`core.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, watch};
use transfer_core::{
    Batch, Claims, ConditionSource, PayloadStore, SessionId, StoreError, TaskId, TaskKind,
    TaskRecord, TaskStore, Throttle, Transport,
};

use super::core::{Action, Core, IdMap, IdleLevel, Start};
use super::delivery::Message;
use super::handlers::EndedWait;
use super::leases;
use crate::command::{Command, Held, Inbox, News, Report, Request};
use crate::runners::{Attempt, Handles};
use crate::{Clock, SessionError};

/// A reply that waits for a commit.
pub(crate) type Reply = Box<dyn FnOnce(Result<(), SessionError>) + Send + Sync>;

/// Most commands handled before one commit.
const MAX_BATCH: usize = 1024;

/// A running attempt's controls.
struct Runner {
    attempt: u32,
    stop: watch::Sender<bool>,
    throttle: watch::Sender<Throttle>,
}

/// What the run loop takes up after a commit during which commands were
/// read ([`Driver::while_committing`]).
enum Overlap {
    /// Commands were handled: their changes wait for a commit.
    Handled,
    /// A shutdown, to handle first (commands handled before it, if any,
    /// are in the pending changes).
    HeldBack(Command),
    /// The channel closed.
    Closed,
}

/// The shared session's handles (the core keeps the decisions).
pub(crate) struct SharedIo {
    pub(crate) claims: Arc<dyn Claims>,
    /// Claims held, by task: dropping one releases it.
    held: HashMap<TaskId, Held>,
    /// Commits made so far, as claim attempts and the follower read them.
    pub(crate) commits: Arc<AtomicU64>,
}

impl SharedIo {
    pub(crate) fn new(claims: Arc<dyn Claims>) -> SharedIo {
        SharedIo {
            claims,
            held: HashMap::new(),
            commits: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// The async engine; see the module docs.
pub(crate) struct Driver {
    pub(crate) core: Core<Reply>,
    session: SessionId,
    store: Arc<dyn TaskStore>,
    payloads: Arc<dyn PayloadStore>,
    transports: Vec<Arc<dyn Transport>>,
    clock: Clock,
    inbox: Inbox,
    deliver: mpsc::UnboundedSender<Message>,
    idle: watch::Sender<IdleLevel>,
    /// What every runner is given.
    handles: Arc<Handles>,
    runners: IdMap<Runner>,
    overlap: Option<Overlap>,
    pub(crate) shared: Option<SharedIo>,
}

/// What [`Driver::new`] takes.
pub(crate) struct Parts {
    pub(crate) core: Core<Reply>,
    pub(crate) session: SessionId,
    pub(crate) store: Arc<dyn TaskStore>,
    pub(crate) transports: Vec<Arc<dyn Transport>>,
    pub(crate) handles: Handles,
    pub(crate) deliver: mpsc::UnboundedSender<Message>,
    pub(crate) idle: watch::Sender<IdleLevel>,
    pub(crate) shared: Option<SharedIo>,
}

impl Driver {
    pub(crate) fn new(p: Parts) -> Driver {
        Driver {
            core: p.core,
            session: p.session,
            store: p.store,
            payloads: p.handles.payloads.clone(),
            transports: p.transports,
            clock: p.handles.clock.clone(),
            inbox: p.handles.inbox.clone(),
            deliver: p.deliver,
            idle: p.idle,
            handles: Arc::new(p.handles),
            runners: IdMap::default(),
            overlap: None,
            shared: p.shared,
        }
    }

    /// Runs the engine until shutdown (or until every sender is gone).
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        conditions: Arc<dyn ConditionSource>,
    ) {
        let inbox = self.inbox.clone();
        // From what the core was built with: a change since is news.
        let mut seen = self.core.conditions;
        let watcher = tokio::spawn(async move {
            loop {
                seen = conditions.changed(seen).await;
                if !inbox.news(News::Conditions(seen)) {
                    return;
                }
            }
        });
        let mut jumps = self.clock.jumps();
        self.core.handle_time(self.clock.now());
        self.core.judge_bandwidth();
        self.core.pump();
        let busy = self.core.busy();
        self.core.check_busy(busy);
        self.flush(None).await;
        self.core.check_idle(busy);
        self.drain().await;
        loop {
            let at = self.core.poll_timeout();
            let first = match self.overlap.take() {
                // Runners reported while the last batch committed: their
                // changes are handled, still to be committed and acted on.
                Some(Overlap::Handled) => None,
                Some(Overlap::HeldBack(cmd)) => Some(cmd),
                Some(Overlap::Closed) => {
                    self.flush(None).await;
                    break;
                }
                None => tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(c) => Some(c),
                        None => break,
                    },
                    () = sleep_until(at.map(|t| tokio::time::Instant::now() + self.clock.until(t))) => None,
                    // The clock jumped: timers and the timetable are judged
                    // again below.
                    Ok(()) = jumps.changed() => None,
                },
            };
            self.core.handle_time(self.clock.now());
            self.core.handle_timers();
            // Everything that is waiting is handled, then made durable in
            // one commit, then acted on: many events, one sync.
            if let Some(first) = first.or_else(|| rx.try_recv().ok())
                && let Some(Command::Request(Request::Shutdown(done))) =
                    self.handle_burst(first, &mut rx, &mut 0)
            {
                self.core.pending.durable = true;
                self.flush(None).await;
                self.shutdown(&mut rx).await;
                watcher.abort();
                let _ = done.send(());
                return;
            }
            self.core.pump();
            // One answer serves both checks: carrying out the batch starts
            // and notifies, it changes no task's phase.
            let busy = self.core.busy();
            // Before the replies go out: whoever enqueued and then waits
            // for idle must not see the idle from before.
            self.core.check_busy(busy);
            self.flush(Some(&mut rx)).await;
            if self.overlap.is_none() {
                // Otherwise not yet: what was handled meanwhile may end
                // tasks whose completions go out first.
                self.core.check_idle(busy);
                self.drain().await;
            }
        }
        watcher.abort();
    }

    /// Handles `first` and the commands already waiting behind it, up to a
    /// batch's worth in all (`handled` counts them, across calls). A
    /// shutdown ends the burst and is returned, not handled.
    fn handle_burst(
        &mut self,
        first: Command,
        rx: &mut mpsc::UnboundedReceiver<Command>,
        handled: &mut usize,
    ) -> Option<Command> {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            if let Command::Request(Request::Shutdown(_)) = cmd {
                return Some(cmd);
            }
            self.core.handle_time(self.clock.now());
            self.handle(cmd);
            *handled += 1;
            if *handled < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        None
    }

    /// Hands one command to the core.
    fn handle(&mut self, cmd: Command) {
        let core = &mut self.core;
        match cmd {
            Command::Request(r) => match r {
                Request::Enqueue { spec, start, reply } => {
                    match core.handle_enqueue(*spec, start) {
                        Ok(id) => core.after_enqueue(
                            id,
                            Box::new(move |r| {
                                let _ = reply.send(r.map(|()| id));
                            }),
                        ),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Request::User { task, event, reply } => {
                    if core.handle_user(task, event) {
                        core.after_commit(Box::new(move |r| {
                            let _ = reply.send(r);
                        }));
                    } else {
                        let _ = reply.send(Err(SessionError::UnknownTask(task)));
                    }
                }
                Request::Tasks(reply) => {
                    let _ = reply.send(core.tasks());
                }
                Request::Snapshot { task, reply } => {
                    let _ = reply.send(core.record(task).cloned());
                }
                Request::Ended { task, reply } => {
                    let (r, wait) = core.ended(task);
                    let reply: Reply = Box::new(move |committed| {
                        let _ = reply.send(committed.and(r));
                    });
                    match wait {
                        EndedWait::Now => reply(Ok(())),
                        EndedWait::InFlight => core.after_in_flight(reply),
                        EndedWait::Pending => core.after_commit(reply),
                    }
                }
                Request::SessionRate(rate) => core.handle_session_rate(rate),
                Request::Shutdown(_) => {}
            },
            Command::Report(r) => match r {
                Report::Event { task, event, ack } => {
                    core.handle_report(task, event);
                    if let Some(ack) = ack {
                        core.after_commit(Box::new(move |_| {
                            let _ = ack.send(());
                        }));
                    }
                }
                Report::Done { task, attempt } => core.handle_runner_done(task, attempt),
                Report::Response {
                    task,
                    attempt,
                    response,
                } => core.handle_response(task, attempt, response),
                Report::Proxy {
                    task,
                    attempt,
                    proxy,
                } => core.handle_proxy(task, attempt, proxy),
                Report::Metrics { task, metrics } => core.handle_metrics(task, metrics),
            },
            Command::News(n) => match n {
                News::Conditions(c) => core.handle_conditions(c),
                News::Claimed(c) => {
                    let got = c.claim.is_some();
                    let epoch = c.claim.as_ref().map(|h| h.fence.epoch);
                    if let (Some(held), Some(sh)) = (c.claim, &mut self.shared) {
                        sh.held.insert(c.task, held);
                    }
                    core.handle_claimed(c.task, got, c.fresh, c.generation);
                    if let Some(epoch) = epoch {
                        core.handle_epoch(c.task, epoch);
                    }
                }
                News::ClaimLost(task) => core.handle_claim_lost(task),
                News::Followed(f) => core.handle_followed(f.generation, f.snapshot, f.foreign),
                News::Acknowledged(tasks) => core.handle_acknowledged(tasks),
            },
        }
        self.act_now();
    }

    /// Makes the pending changes durable in one commit, then carries out
    /// what had to wait for that: starts, notifications, completions,
    /// replies.
    ///
    /// With `rx`, the commands that come while the commit is under way are
    /// handled meanwhile into the next batch (at most one batch's worth; a
    /// shutdown waits for the commit) and slots they free are filled at once
    /// (see [`Driver::while_committing`]).
    async fn flush(&mut self, rx: Option<&mut mpsc::UnboundedReceiver<Command>>) {
        if let Some(mut batch) = self.core.begin_commit() {
            let mut lapsed = self.fence(&mut batch);
            // The tasks whose records go out under a claim: checked again
            // once the write is done.
            let fenced: Vec<TaskId> = match &self.shared {
                Some(io) => batch
                    .save
                    .iter()
                    .map(|r| r.id)
                    .filter(|id| io.held.contains_key(id))
                    .collect(),
                None => Vec::new(),
            };
            // The starts that need not wait for it go now.
            self.act_now();
            let (store, session) = (self.store.clone(), self.session.clone());
            let commit = async move { store.commit(&session, batch).await };
            let committed = match rx {
                // Shared sessions keep the plain order: claims and follows
                // reason about what is committed.
                Some(rx) if self.shared.is_none() => self.while_committing(commit, rx).await,
                _ => commit.await,
            };
            // A holder stopped (or cut off) while its entry was written may
            // have written it after another process took the task over, when
            // every reader ignores it: what the entry records is not told.
            if let Some(io) = &self.shared {
                lapsed.extend(
                    fenced
                        .into_iter()
                        .filter(|t| io.held.get(t).is_some_and(|h| !h.fence.fresh())),
                );
            }
            for task in lapsed {
                if let Some(io) = &mut self.shared {
                    io.held.remove(&task);
                }
                self.core.handle_lapsed(task);
            }
            self.core.end_commit(committed);
            if let (Some(io), Some(sh)) = (&self.shared, &self.core.shared) {
                io.commits.store(sh.commits, Ordering::Release);
            }
        }
        self.drain().await;
    }

    /// In a shared session, stamps each record this process writes under a
    /// claim with the claim's epoch, and takes out of the batch the records
    /// and completions of tasks whose claim may have lapsed (not renewed
    /// for two thirds of its time to live: paused, suspended, cut off):
    /// another process may hold them now. Returns those tasks.
    fn fence(&self, batch: &mut transfer_core::Batch) -> Vec<TaskId> {
        let Some(io) = &self.shared else {
            return Vec::new();
        };
        let mut lapsed = Vec::new();
        batch.save.retain_mut(|r| match io.held.get(&r.id) {
            Some(held) if held.fence.fresh() => {
                r.epoch = held.fence.epoch;
                true
            }
            Some(_) => {
                tracing::warn!(task = %r.id, "the claim may have lapsed: its record is not written");
                lapsed.push(r.id);
                false
            }
            None => true,
        });
        batch.complete.retain(|c| !lapsed.contains(&c.task));
        lapsed
    }

    /// Waits for `commit`, handling meanwhile the commands that come into the
    /// next batch (what they change is committed, and what waits on that is
    /// done, after the next commit) and starting at once the tasks that
    /// freed slots admit. A shutdown (or the channel's end) stops that until
    /// the commit is done: it is kept for the run loop.
    async fn while_committing(
        &mut self,
        commit: impl std::future::Future<Output = Result<(), StoreError>>,
        rx: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), StoreError> {
        tokio::pin!(commit);
        // As many as one batch holds: the next commit stays as small as
        // the run loop would make it.
        let mut handled = 0;
        loop {
            let taking = handled < MAX_BATCH
                && !matches!(self.overlap, Some(Overlap::HeldBack(_) | Overlap::Closed));
            tokio::select! {
                biased;
                r = &mut commit => return r,
                cmd = rx.recv(), if taking => match cmd {
                    Some(first) => {
                        // The burst (up to a shutdown), then one pass of the
                        // queue.
                        if let Some(shutdown) = self.handle_burst(first, rx, &mut handled) {
                            self.overlap = Some(Overlap::HeldBack(shutdown));
                        }
                        self.core.pump();
                        self.core.start_early();
                        self.core.note_overlap();
                        self.act_now();
                        if self.overlap.is_none() {
                            self.overlap = Some(Overlap::Handled);
                        }
                    }
                    None => self.overlap = Some(Overlap::Closed),
                },
            }
        }
    }

    /// Carries out the core's actions that need no waiting (all but
    /// discards, which only come after a commit).
    fn act_now(&mut self) {
        while let Some(a) = self.core.poll_action() {
            if let Action::Discard(record) = a {
                // Not expected outside a commit's end; kept in order there.
                self.core.actions.push_front(Action::Discard(record));
                return;
            }
            self.act(a);
        }
    }

    /// Carries out every action the core has handed out, in order.
    async fn drain(&mut self) {
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::Discard(record) => self.discard_partial(&record).await,
                other => self.act(other),
            }
        }
    }

    /// Carries out one action (a discard is awaited by [`Driver::drain`]).
    fn act(&mut self, a: Action<Reply>) {
        match a {
            Action::Start(s) => self.start(s),
            Action::Stop(task) => {
                if let Some(r) = self.runners.get(&task) {
                    let _ = r.stop.send(true);
                }
            }
            Action::Abort { task, attempt } => {
                if let Some(r) = self.runners.get(&task)
                    && r.attempt == attempt
                {
                    let _ = r.stop.send(true);
                }
            }
            Action::Throttle { task, throttle } => {
                if let Some(r) = self.runners.get(&task) {
                    let _ = r.throttle.send(throttle);
                }
            }
            Action::Release(task) => {
                if let Some(r) = self.runners.remove(&task) {
                    let _ = r.stop.send(true);
                }
            }
            Action::Discard(_) => {}
            Action::Deliver(d) => {
                let _ = self.deliver.send(Message::Deliver(d));
            }
            Action::Reply(w, r) => w(r),
            Action::Idle(level) => {
                self.idle.send_replace(level);
            }
            Action::Bandwidth(rate) => self.handles.session_bucket.set_rate(rate),
            Action::NetworkChanged => {
                for t in &self.transports {
                    t.network_changed();
                }
            }
            Action::Claim(task) => {
                if let Some(sh) = &self.shared {
                    leases::claim(
                        sh.claims.clone(),
                        task,
                        self.session.clone(),
                        self.store.clone(),
                        sh.commits.clone(),
                        self.inbox.clone(),
                    );
                }
            }
            Action::ReleaseClaim(task) => {
                if let Some(sh) = &mut self.shared {
                    sh.held.remove(&task); // released in the background
                }
            }
        }
    }

    async fn discard_partial(&self, record: &TaskRecord) {
        let partial = record.state.resume.partial.as_ref();
        if let Some(transfer_core::PartialLocation::UploadResource { url, protocol }) = partial {
            // The server's copy: cancelled in the background, best effort.
            let uri: Option<http::Uri> = url.parse().ok();
            let transport = uri.and_then(|u| {
                self.transports
                    .iter()
                    .find(|t| t.handles(&u, transfer_core::ProtocolPreference::Auto))
                    .cloned()
            });
            if let Some(t) = transport {
                let (url, protocol) = (url.clone(), *protocol);
                tokio::spawn(async move {
                    crate::runners::resumable::cancel(&*t, &url, protocol).await
                });
            }
        }
        if let TaskKind::Download { destination } = &record.spec.kind
            && let Err(e) = self
                .payloads
                .discard(&self.session, record.id, destination, partial)
                .await
        {
            tracing::warn!(task = %record.id, error = %e, "could not discard the partial");
        }
    }

    /// Spawns the runner of an attempt the core started.
    fn start(&mut self, s: Start) {
        let Start {
            record,
            attempt,
            throttle,
            delayed,
            config,
        } = s;
        let id = record.id;
        let transport = self
            .transports
            .iter()
            .find(|t| {
                t.handles(
                    record.spec.url().as_uri(),
                    crate::protocol_for(&record.spec, &config),
                )
            })
            .cloned();
        let Some(transport) = transport else {
            let error = transfer_core::TransferError::new(
                transfer_core::ErrorKind::InvalidRequest,
                format!("no transport handles {}", record.spec.url()),
            );
            self.inbox.report(Report::Event {
                task: id,
                event: transfer_core::Event::AttemptFailed { attempt, error },
                ack: None,
            });
            self.inbox.report(Report::Done { task: id, attempt });
            return;
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (throttle_tx, throttle_rx) = watch::channel(throttle);
        self.runners.insert(
            id,
            Runner {
                attempt,
                stop: stop_tx,
                throttle: throttle_tx,
            },
        );
        let a = Attempt {
            handles: self.handles.clone(),
            config,
            task: id,
            attempt,
            transport,
            stop: stop_rx,
            throttle: throttle_rx,
            delayed,
            record,
            fence: self
                .shared
                .as_ref()
                .and_then(|io| io.held.get(&id))
                .map(|h| h.fence.clone()),
        };
        tokio::spawn(a.run());
    }

    /// Stops every runner at a checkpoint and records it before returning.
    async fn shutdown(&mut self, rx: &mut mpsc::UnboundedReceiver<Command>) {
        self.core.stop_all();
        self.drain().await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.core.running.is_empty() {
            let cmd = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(c)) => c,
                _ => break,
            };
            self.core.handle_time(self.clock.now());
            match cmd {
                // Checkpoints are recorded while the phase is still Running.
                Command::Report(Report::Event {
                    task,
                    event:
                        event @ (transfer_core::Event::Checkpoint { .. }
                        | transfer_core::Event::Progress { .. }),
                    ack,
                }) => {
                    self.core.event(task, event);
                    self.core.pending.durable = true;
                    self.flush(None).await;
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
                Command::Report(Report::Done { task, .. }) => {
                    self.core.release(task);
                    self.drain().await;
                }
                Command::Request(Request::Enqueue { reply, .. }) => {
                    let _ = reply.send(Err(SessionError::Closed));
                }
                Command::Request(Request::User { reply, .. }) => {
                    let _ = reply.send(Err(SessionError::Closed));
                }
                Command::Request(Request::Tasks(reply)) => {
                    let _ = reply.send(self.core.tasks());
                }
                _ => {}
            }
        }
        // Whatever was committed deferrably becomes durable now.
        if let Err(e) = self.store.commit(&self.session, Batch::default()).await {
            tracing::error!(error = %e, "could not make the last changes durable");
        }
        // The claims of completions still to be delivered and acknowledged
        // go with them: released once the delivery task has acknowledged
        // them, so no other process delivers them again.
        let unacked = self.core.take_unacked_claims();
        if let Some(sh) = &mut self.shared {
            let waiting: Vec<Held> = unacked.iter().filter_map(|t| sh.held.remove(t)).collect();
            if !waiting.is_empty() {
                let _ = self.deliver.send(Message::Hold(waiting));
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
