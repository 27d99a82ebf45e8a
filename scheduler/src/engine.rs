//! The scheduling loop: one task owns every record, applies events through
//! `transfer_core::apply`, and carries out the effects in order (persist
//! first, then start, abort, notify, timers). Deliveries to the delegate run
//! in a second task, in order, so a slow delegate never stalls scheduling.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use transfer_core::{
    Batch, Completion, ConditionSource, Conditions, Delegate, Demand, Direction, Effect, Event,
    EventId, Load, Notification, Outcome, PayloadStore, Phase, Progress, SessionId, StoreError,
    TaskId, TaskKind, TaskRecord, TaskSpec, TaskState, TaskStore, Throttle, Timestamp, Transport,
    Verdict, WaitReason, apply,
};

use crate::runner::Attempt;
use crate::throttle::Bucket;
use crate::{Clock, SessionConfig, SessionError, SessionEvent};

/// A map keyed by task id. Ids are the engine's own (counted, or random in
/// a shared session), never chosen by a peer, so they need no
/// flood-resistant hash: Fx costs a multiply where SipHash runs rounds, on
/// every event of every task.
type IdMap<V> = HashMap<TaskId, V, rustc_hash::FxBuildHasher>;
/// A set of task ids; see [`IdMap`].
type IdSet = HashSet<TaskId, rustc_hash::FxBuildHasher>;

pub(crate) enum Command {
    Enqueue {
        spec: Box<TaskSpec>,
        start: bool,
        reply: oneshot::Sender<Result<TaskId, SessionError>>,
    },
    User {
        task: TaskId,
        event: Event,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Runner {
        task: TaskId,
        event: Event,
        ack: Option<oneshot::Sender<()>>,
    },
    RunnerDone {
        task: TaskId,
        attempt: u32,
    },
    Conditions(Conditions),
    /// The session's own rate limit changes.
    SessionRate(Option<u64>),
    /// The server's answer to an upload attempt, kept for its completion.
    Response {
        task: TaskId,
        attempt: u32,
        response: Box<transfer_core::ResponseSummary>,
    },
    /// A request of the task finished: its metrics, for the delegate.
    Metrics {
        task: TaskId,
        metrics: Box<transfer_core::RequestMetrics>,
    },
    Tasks(oneshot::Sender<Vec<TaskRecord>>),
    /// One task's record as it is now.
    Snapshot {
        task: TaskId,
        reply: oneshot::Sender<Option<TaskRecord>>,
    },
    /// How a task ended, if it has.
    Ended {
        task: TaskId,
        reply: oneshot::Sender<Result<Option<Outcome>, SessionError>>,
    },
    Shutdown(oneshot::Sender<()>),
    /// A claim attempt's answer (shared sessions).
    Claimed(Box<crate::shared::Claimed>),
    /// Another process took the task's claim (shared sessions).
    ClaimLost(TaskId),
    /// The session as the store has it now (shared sessions).
    Followed(Box<crate::shared::Follow>),
    /// These tasks' completions were acknowledged.
    Acknowledged(Vec<TaskId>),
}

struct Running {
    attempt: u32,
    stop: watch::Sender<bool>,
    throttle: watch::Sender<Throttle>,
    host: Arc<str>,
}

/// Queue order: priority (high first), earliest begin, enqueue order.
type QueueKey = (Reverse<u32>, u64, u64, TaskId);

fn queue_key(r: &TaskRecord) -> QueueKey {
    let p = (r.spec.priority.get() * 1_000_000.0) as u32;
    let begin = r.spec.earliest_begin.map_or(0, |t| t.as_millis());
    (Reverse(p), begin, r.seq, r.id)
}

/// Whether a task in `phase` keeps the session from being idle: it runs,
/// waits to run, or waits for a time (a backoff, a start date); not one
/// that only waits for conditions to change, nor one that ended or is
/// suspended.
fn keeps_busy(phase: &Phase) -> bool {
    match phase {
        Phase::Queued | Phase::Running { .. } => true,
        Phase::Waiting(w) => !w.is_policy() || w.wake_at().is_some(),
        _ => false,
    }
}

/// Applies `change` to a record's state, keeping `count` (of records that
/// keep the session busy) right.
fn change_state(count: &mut usize, state: &mut TaskState, change: impl FnOnce(&mut TaskState)) {
    let before = keeps_busy(&state.phase);
    change(state);
    *count = *count + usize::from(keeps_busy(&state.phase)) - usize::from(before);
}

fn admissible(phase: &Phase) -> bool {
    match phase {
        Phase::Queued => true,
        Phase::Waiting(r) => r.is_policy() && r.wake_at().is_none(),
        _ => false,
    }
}

pub(crate) enum Delivery {
    Event(SessionEvent, Option<Box<TaskRecord>>),
    Metrics(Box<TaskRecord>, Box<transfer_core::RequestMetrics>),
    Completion(Box<Completion>),
    /// The session became idle, as change number `.0`.
    Idle(u64),
    /// A task another process ran has ended: for the event stream only.
    Elsewhere(Box<Completion>),
    /// Claims to keep until the completions before them are acknowledged.
    Hold(Vec<crate::shared::Held>),
}

pub(crate) struct Engine {
    pub(crate) session: SessionId,
    pub(crate) store: Arc<dyn TaskStore>,
    pub(crate) payloads: Arc<dyn PayloadStore>,
    pub(crate) transports: Vec<Arc<dyn Transport>>,
    pub(crate) delegate: Arc<dyn Delegate>,
    /// The delegate wants progress, waiting and metrics calls (each with a
    /// copy of the record).
    follows: bool,
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) clock: Clock,
    pub(crate) tx: mpsc::UnboundedSender<Command>,
    pub(crate) deliver: mpsc::UnboundedSender<Delivery>,
    pub(crate) records: IdMap<Box<TaskRecord>>,
    /// Records in a phase that keeps the session busy (see
    /// [`keeps_busy`]): counted as phases change, so the idle check after
    /// each batch does not walk every record.
    busy_records: usize,
    pub(crate) queue: BTreeSet<QueueKey>,
    /// Queue entries per origin, so a pass can stop once every origin with
    /// queued work is at its limit instead of walking the whole queue.
    queued_per_host: HashMap<Arc<str>, usize>,
    running: IdMap<Running>,
    /// Each task's origin, computed once (scheduling asks for it often).
    hosts: IdMap<Arc<str>>,
    /// The task holding each idempotency key (one at a time: a new task
    /// with a finished task's key replaces it).
    keys: HashMap<String, TaskId>,
    /// When tasks want `Event::Timer`: one sleep for the earliest.
    timers: BTreeSet<(Timestamp, TaskId)>,
    /// Admitted, not started yet (the start waits for the commit): host.
    reserved: IdMap<Arc<str>>,
    /// How tasks ended, as their completions said (this process, and the
    /// outbox at attach).
    outcomes: IdMap<Outcome>,
    per_host: HashMap<Arc<str>, u32>,
    conditions: Conditions,
    session_bucket: Arc<Bucket>,
    /// When the session's bandwidth changes next by the timetable alone.
    bandwidth_change: Option<Timestamp>,
    /// The server's answer to each upload's latest attempt, until the
    /// task's completion takes it.
    responses: IdMap<Box<transfer_core::ResponseSummary>>,
    next_id: u64,
    next_seq: u64,
    jitter: transfer_core::SplitMix64,
    was_idle: bool,
    /// Records changed by deferrable batches and not yet written.
    deferred: BTreeSet<TaskId>,
    /// Tasks that waited (not for a slot) since they last ran: their next
    /// attempt asks the delegate's `will_begin` first.
    delayed: IdSet,
    /// Counts idle and busy changes, so a late idle never hides a busy.
    idle_gen: u64,
    /// The last change counted was to idle.
    idle_sent: bool,
    /// The session's idle level, for [`crate::Session::wait_idle`]: cleared
    /// here as soon as work arrives, set by the delivery task once the idle
    /// event has gone out.
    idle: watch::Sender<IdleLevel>,
    pending: Pending,
    /// What happened to the command channel while the last commit was
    /// under way.
    overlap: Option<Overlap>,
    /// The tasks whose completions the commit under way records.
    committing: IdSet,
    /// The tasks with effects that wait for the commit under way, and the
    /// tasks it creates.
    held_effects: IdSet,
    /// Replies that wait for the commit under way, with its result.
    after_committing: Vec<Reply>,
    /// Set when other processes share the session.
    pub(crate) shared: Option<crate::shared::Shared>,
}

/// What the run loop takes up after a commit during which commands were
/// read ([`Engine::while_committing`]).
enum Overlap {
    /// Commands were handled: their changes wait for a commit.
    Handled,
    /// A shutdown, to handle first (commands handled before it, if any,
    /// are in the pending changes).
    HeldBack(Command),
    /// The channel closed.
    Closed,
}

/// Whether the session is idle, as of change `gen`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdleLevel {
    pub(crate) generation: u64,
    pub(crate) idle: bool,
}

/// Records whose deferrable changes may wait for the next durable commit
/// before they are written (deferrably) anyway.
const DEFER_LIMIT: usize = 4096;

/// Most commands handled before one commit.
const MAX_BATCH: usize = 1024;

type Reply = Box<dyn FnOnce(Result<(), SessionError>) + Send + Sync>;

/// Changes waiting for the next commit, and what waits for it.
#[derive(Default)]
struct Pending {
    /// Something in this batch must be durable before it is acted on (a
    /// checkpoint's offset); replies, completions and removals are too.
    durable: bool,
    dirty: BTreeSet<TaskId>,
    removed: Vec<TaskId>,
    completions: Vec<Completion>,
    effects: Vec<(TaskId, Effect)>,
    after: Vec<Reply>,
    /// Tasks this batch creates: none starts before its record exists.
    created: IdSet,
}

fn clone_error(e: &SessionError) -> SessionError {
    match e {
        SessionError::Store(s) => SessionError::Store(StoreError::new(s.kind(), s.to_string())),
        other => SessionError::Internal(other.to_string()),
    }
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        session: SessionId,
        store: Arc<dyn TaskStore>,
        payloads: Arc<dyn PayloadStore>,
        transports: Vec<Arc<dyn Transport>>,
        delegate: Arc<dyn Delegate>,
        config: Arc<SessionConfig>,
        clock: Clock,
        conditions: &dyn ConditionSource,
        tx: mpsc::UnboundedSender<Command>,
        deliver: mpsc::UnboundedSender<Delivery>,
        idle: watch::Sender<IdleLevel>,
    ) -> Engine {
        let now = clock.now().as_millis();
        Engine {
            session,
            store,
            payloads,
            transports,
            follows: delegate.follows_tasks(),
            delegate,
            session_bucket: Arc::new(Bucket::new(config.policy.rate_limit)),
            config,
            clock,
            tx,
            deliver,
            records: IdMap::default(),
            busy_records: 0,
            queue: BTreeSet::new(),
            queued_per_host: HashMap::new(),
            running: IdMap::default(),
            hosts: IdMap::default(),
            keys: HashMap::new(),
            timers: BTreeSet::new(),
            reserved: IdMap::default(),
            outcomes: IdMap::default(),
            per_host: HashMap::new(),
            conditions: conditions.current(),
            bandwidth_change: None,
            responses: IdMap::default(),
            next_id: now << 12,
            next_seq: 0,
            jitter: transfer_core::SplitMix64::new(now),
            was_idle: false,
            deferred: BTreeSet::new(),
            delayed: IdSet::default(),
            idle_gen: 0,
            idle_sent: false,
            idle,
            pending: Pending::default(),
            overlap: None,
            committing: IdSet::default(),
            held_effects: IdSet::default(),
            after_committing: Vec::new(),
            shared: None,
        }
    }

    /// Takes the records found at attach: interrupted attempts go back to
    /// the queue with their resume data; timers are set again.
    pub(crate) fn attach(&mut self, records: Vec<TaskRecord>) {
        // Grown once, not by doubling: a record is most of a kilobyte.
        self.records.reserve(records.len());
        self.hosts.reserve(records.len());
        for r in records {
            self.next_id = self.next_id.max(r.id.as_u64() + 1);
            self.next_seq = self.next_seq.max(r.seq + 1);
            self.adopt(r);
        }
    }

    /// Takes a record as the store has it: an attempt under way there (a
    /// process died in it, or another process runs it) is queued here with
    /// its resume data; its timers are set.
    fn adopt(&mut self, mut r: TaskRecord) {
        if let Phase::Running { .. } = r.state.phase {
            // The process died mid-attempt: what is durable is in the
            // resume data; the next attempt starts from there.
            r.state.phase = Phase::Queued;
        }
        if let Phase::Waiting(reason) = &r.state.phase
            && let Some(t) = reason.wake_at()
        {
            self.set_timer(r.id, t);
        }
        if let Some(d) = r.state.deadline()
            && !r.state.is_terminal()
        {
            self.set_timer(r.id, d);
        }
        self.insert_record(r);
    }

    /// Forgets a record with its queue entry, timers and key.
    fn forget(&mut self, id: TaskId) -> Option<TaskRecord> {
        let old = self.records.get(&id)?;
        let key = queue_key(old);
        self.queue_remove(&key);
        let old = self.records.remove(&id)?;
        self.busy_records -= usize::from(keeps_busy(&old.state.phase));
        if let Some(k) = &old.spec.key
            && self.keys.get(k) == Some(&id)
        {
            self.keys.remove(k);
        }
        self.timers.retain(|(_, t)| *t != id);
        self.hosts.remove(&id);
        if let Some(sh) = &mut self.shared {
            sh.not_before.remove(&id);
            sh.lost.remove(&id);
        }
        Some(*old)
    }

    /// A new task or event id: random when other processes share the
    /// session (they draw ids too), else the next in this process.
    fn fresh_id(&mut self) -> u64 {
        if self.shared.is_some() {
            transfer_core::random_u64()
        } else {
            let id = self.next_id;
            self.next_id += 1;
            id
        }
    }

    /// Adds a record with its queue entry, origin and key.
    fn insert_record(&mut self, r: TaskRecord) {
        self.hosts.insert(r.id, Arc::from(r.spec.url().origin()));
        if admissible(&r.state.phase) {
            self.queue_insert(queue_key(&r));
        }
        if let Some(key) = &r.spec.key {
            self.keys.insert(key.clone(), r.id);
        }
        self.busy_records += usize::from(keeps_busy(&r.state.phase));
        if let Some(old) = self.records.insert(r.id, Box::new(r)) {
            self.busy_records -= usize::from(keeps_busy(&old.state.phase));
        }
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        conditions: Arc<dyn ConditionSource>,
    ) {
        let tx = self.tx.clone();
        let seen = self.conditions;
        let watcher = tokio::spawn(async move {
            let mut seen = seen;
            loop {
                seen = conditions.changed(seen).await;
                if tx.send(Command::Conditions(seen)).is_err() {
                    return;
                }
            }
        });
        let mut jumps = self.clock.jumps();
        self.judge_bandwidth();
        self.pump();
        let busy = self.busy();
        self.check_busy(busy);
        self.flush(None).await;
        self.check_idle(busy);
        loop {
            let at = self.next_timer();
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
                    () = sleep_until(at) => None,
                    // The clock jumped: timers and the timetable are judged
                    // again below.
                    Ok(()) = jumps.changed() => None,
                },
            };
            self.fire_timers();
            // Everything that is waiting is handled, then made durable in
            // one commit, then acted on: many events, one sync.
            if let Some(first) = first.or_else(|| rx.try_recv().ok())
                && let Some(Command::Shutdown(done)) = self.handle_burst(first, &mut rx, &mut 0)
            {
                self.pending.durable = true;
                self.flush(None).await;
                self.shutdown(&mut rx).await;
                watcher.abort();
                let _ = done.send(());
                return;
            }
            self.pump();
            // One answer serves both checks: carrying out the batch starts
            // and notifies, it changes no task's phase.
            let busy = self.busy();
            // Before the replies go out: whoever enqueued and then waits
            // for idle must not see the idle from before.
            self.check_busy(busy);
            self.flush(Some(&mut rx)).await;
            if self.overlap.is_none() {
                // Otherwise not yet: what was handled meanwhile may end
                // tasks whose completions go out first.
                self.check_idle(busy);
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
            if let Command::Shutdown(_) = cmd {
                return Some(cmd);
            }
            self.handle(cmd);
            *handled += 1;
            if *handled < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        None
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Enqueue { spec, start, reply } => match self.enqueue(*spec, start) {
                Ok(id) => self.pending.after.push(Box::new(move |r| {
                    let _ = reply.send(r.map(|()| id));
                })),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::User { task, event, reply } => {
                if self.records.contains_key(&task) {
                    self.event(task, event);
                    self.pending.after.push(Box::new(move |r| {
                        let _ = reply.send(r);
                    }));
                } else {
                    let _ = reply.send(Err(SessionError::UnknownTask(task)));
                }
            }
            Command::Runner { task, event, ack } => {
                // A checkpoint's offset is what a restart resumes from.
                self.pending.durable |= matches!(event, Event::Checkpoint { .. });
                self.event(task, event);
                if let Some(ack) = ack {
                    self.pending.after.push(Box::new(move |_| {
                        let _ = ack.send(());
                    }));
                }
            }
            Command::RunnerDone { task, attempt } => {
                if let Some(sh) = &mut self.shared
                    && let Some(n) = sh.runners.get_mut(&task)
                {
                    *n -= 1;
                    if *n == 0 {
                        sh.runners.remove(&task);
                    }
                }
                if self
                    .running
                    .get(&task)
                    .is_some_and(|r| r.attempt == attempt)
                {
                    self.release(task);
                }
            }
            Command::SessionRate(rate) => {
                let mut config = (*self.config).clone();
                config.policy.rate_limit = rate;
                self.config = Arc::new(config);
                self.handle(Command::Conditions(self.conditions));
            }
            Command::Conditions(c) => {
                if c.network != self.conditions.network && c.network.is_connected() {
                    // A new path: QUIC connections move to it at once.
                    for t in &self.transports {
                        t.network_changed();
                    }
                }
                self.conditions = c;
                self.judge_bandwidth();
                // Running tasks are judged again; waiting ones by the pump.
                let running: Vec<TaskId> = self.running.keys().copied().collect();
                for id in running {
                    if let Some(v) = self.verdict(id, true) {
                        self.event(id, Event::Admission(v));
                    }
                }
            }
            Command::Response {
                task,
                attempt,
                response,
            } => {
                if self
                    .running
                    .get(&task)
                    .is_some_and(|r| r.attempt == attempt)
                {
                    self.responses.insert(task, response);
                }
            }
            Command::Metrics { task, metrics } => {
                // Sent only when the delegate follows tasks.
                if let Some(r) = self.records.get(&task) {
                    let _ = self.deliver.send(Delivery::Metrics(r.clone(), metrics));
                }
            }
            Command::Snapshot { task, reply } => {
                let _ = reply.send(self.records.get(&task).map(|r| TaskRecord::clone(r)));
            }
            Command::Tasks(reply) => {
                // Sorted by reference: a record is most of a kilobyte.
                let mut all: Vec<&TaskRecord> = self.records.values().map(|r| &**r).collect();
                all.sort_unstable_by_key(|r| (r.seq, r.id));
                let _ = reply.send(all.into_iter().cloned().collect());
            }
            Command::Ended { task, reply } => {
                let r = match self.records.get(&task) {
                    None => Err(SessionError::UnknownTask(task)),
                    Some(r) => Ok(self.outcomes.get(&task).cloned().or_else(|| {
                        // Ended before this process (its completion was
                        // acknowledged): what the record says.
                        r.state.is_terminal().then(|| ended_elsewhere(r).outcome)
                    })),
                };
                let reply: Reply = Box::new(move |committed| {
                    let _ = reply.send(committed.and(r));
                });
                if self.committing.contains(&task) {
                    // Ended in the batch being committed: said once that
                    // commit is done, with its result.
                    self.after_committing.push(reply);
                } else if self.pending.completions.iter().any(|c| c.task == task) {
                    // Ended in this batch: say so once the ending is durable.
                    self.pending.after.push(reply);
                } else {
                    reply(Ok(()));
                }
            }
            Command::Shutdown(_) => {}
            Command::Claimed(c) => self.claimed(*c),
            Command::ClaimLost(task) => self.claim_lost(task),
            Command::Followed(f) => self.followed(*f),
            Command::Acknowledged(tasks) => {
                if let Some(sh) = &mut self.shared {
                    for t in tasks {
                        sh.unacked.remove(&t);
                    }
                }
            }
        }
    }

    /// Makes the pending changes durable in one commit, then carries out
    /// what had to wait for that: starts, notifications, completions,
    /// replies. Changes nobody waits on and that record no checkpoint or
    /// ending (a start, a wait, a retry's backoff) are not written at once
    /// but with the next durable commit (or deferrably, once
    /// [`DEFER_LIMIT`] have gathered): a crash may lose them, and the task
    /// then does again what they recorded.
    ///
    /// With `rx`, the commands that come while the commit is under way are
    /// handled meanwhile into the next batch (at most one batch's worth; a
    /// shutdown waits for the commit) and slots they free are filled at once
    /// (see [`Engine::while_committing`]).
    async fn flush(&mut self, rx: Option<&mut mpsc::UnboundedReceiver<Command>>) {
        // A start is itself deferrable (a crash before its record is
        // written only means the task starts again), so a task whose only
        // effects in this batch are starts starts now, while the batch
        // commits: a slot freed by a completion is filled without waiting
        // for that completion's sync. Any other effect of the same task
        // (an abort of the attempt before, a discard) keeps the order, and
        // a task this batch creates waits for its record to exist.
        self.start_early();
        let mut pending = std::mem::take(&mut self.pending);
        let mut result: Result<(), SessionError> = Ok(());
        let mut discarded: IdMap<TaskRecord> = IdMap::default();
        let deferrable = self.shared.is_none()
            && !pending.durable
            && pending.after.is_empty()
            && pending.completions.is_empty()
            && pending.removed.is_empty();
        if deferrable && self.deferred.len() + pending.dirty.len() < DEFER_LIMIT {
            // Nothing waits on these: they go with the next durable commit.
            self.deferred.append(&mut pending.dirty);
        } else if !pending.dirty.is_empty()
            || !pending.removed.is_empty()
            || !self.deferred.is_empty()
        {
            let mut dirty = std::mem::take(&mut self.deferred);
            dirty.append(&mut pending.dirty);
            // Sized once: a record is most of a kilobyte.
            let mut save = Vec::with_capacity(dirty.len());
            save.extend(
                dirty
                    .iter()
                    .filter_map(|id| self.records.get(id).map(|r| TaskRecord::clone(r))),
            );
            let batch = Batch {
                save,
                remove: pending.removed,
                complete: pending.completions.clone(),
                deferrable,
                ..Batch::default()
            };
            let wrote: Vec<TaskId> = batch.save.iter().map(|r| r.id).collect();
            self.committing = batch.complete.iter().map(|c| c.task).collect();
            self.held_effects = pending.effects.iter().map(|(id, _)| *id).collect();
            self.held_effects.extend(pending.created.iter().copied());
            // A discard needs the record even if the task is replaced (same
            // key) while the commit is under way.
            discarded = pending
                .effects
                .iter()
                .filter(|(_, e)| *e == Effect::DiscardPartial)
                .filter_map(|(id, _)| Some((*id, TaskRecord::clone(self.records.get(id)?))))
                .collect();
            let (store, session) = (self.store.clone(), self.session.clone());
            let commit = async move { store.commit(&session, batch).await };
            let committed = match rx {
                // Shared sessions keep the plain order: claims and follows
                // reason about what is committed.
                Some(rx) if self.shared.is_none() => self.while_committing(commit, rx).await,
                _ => commit.await,
            };
            self.committing.clear();
            if let Err(e) = committed {
                tracing::error!(error = %e, "could not persist task records");
                result = Err(SessionError::Store(StoreError::new(
                    e.kind(),
                    e.to_string(),
                )));
            } else if let Some(sh) = &mut self.shared {
                sh.committed(wrote);
            }
            for reply in std::mem::take(&mut self.after_committing) {
                reply(result.as_ref().map(|_| ()).map_err(clone_error));
            }
            if result.is_err() && self.shared.is_some() {
                // Not in the store: written again with the next commit, the
                // claims kept and the completions held until then (others
                // would otherwise run the tasks again).
                self.pending.dirty.extend(dirty);
                self.pending.completions.append(&mut pending.completions);
            }
        }
        self.held_effects.clear();
        for (id, effect) in pending.effects {
            if effect == Effect::DiscardPartial {
                // Before any later start: a new attempt must not open the
                // partial that this discard would then delete under it.
                let record = discarded
                    .remove(&id)
                    .or_else(|| self.records.get(&id).map(|r| TaskRecord::clone(r)));
                if let Some(record) = record {
                    self.discard_partial(&record).await;
                }
                continue;
            }
            self.effect(id, effect);
        }
        for c in pending.completions {
            let _ = self.deliver.send(Delivery::Completion(Box::new(c)));
        }
        for reply in pending.after {
            reply(result.as_ref().map(|_| ()).map_err(clone_error));
        }
        self.release_claims();
    }

    /// Carries out now the starts of pending tasks whose only effects are
    /// starts (taking them out of the pending effects), unless effects of
    /// the batch being committed still wait to be carried out for the task
    /// (a discard, an abort: those go first), or the task is created by the
    /// pending batch or by the one being committed (its record must exist
    /// first).
    fn start_early(&mut self) {
        let mut early = only_starts(&self.pending.effects);
        early.retain(|id| !self.held_effects.contains(id) && !self.pending.created.contains(id));
        if early.is_empty() {
            return;
        }
        let (now, later) = std::mem::take(&mut self.pending.effects)
            .into_iter()
            .partition(|(id, _)| early.contains(id));
        self.pending.effects = later;
        for (id, effect) in now {
            self.effect(id, effect);
        }
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
                        self.pump();
                        self.start_early();
                        // Work may have begun and ended within this commit:
                        // the idle level and the next idle event see it.
                        if self.busy_slots() > 0 {
                            self.check_busy(true);
                            self.was_idle = false;
                        }
                        if self.overlap.is_none() {
                            self.overlap = Some(Overlap::Handled);
                        }
                    }
                    None => self.overlap = Some(Overlap::Closed),
                },
            }
        }
    }

    /// Frees a task's slot (running, or reserved at admission).
    fn release(&mut self, task: TaskId) {
        let host = match self.running.remove(&task) {
            Some(r) => Some(r.host),
            None => self.reserved.remove(&task),
        };
        if let Some(host) = host
            && let Some(n) = self.per_host.get_mut(&host)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Slots taken: running attempts and those admitted but not yet started.
    fn busy_slots(&self) -> usize {
        self.running.len()
            + self.reserved.len()
            + self.shared.as_ref().map_or(0, |s| s.claiming.len())
    }

    fn enqueue(&mut self, spec: TaskSpec, start: bool) -> Result<TaskId, SessionError> {
        if let Some(old) = spec.key.as_ref().and_then(|k| self.keys.get(k).copied()) {
            if let Some(r) = self.records.get(&old)
                && !r.state.is_terminal()
            {
                if start && r.state.phase == Phase::Suspended {
                    self.event(old, Event::Resume);
                }
                return Ok(old);
            }
            // A finished task with the same key is replaced.
            if let Some(r) = self.records.remove(&old) {
                self.busy_records -= usize::from(keeps_busy(&r.state.phase));
                self.queue_remove(&queue_key(&r));
            }
            self.hosts.remove(&old);
            self.pending.dirty.remove(&old);
            self.pending.removed.push(old);
        }
        let id = TaskId::from_u64(self.fresh_id());
        let seq = self.next_seq;
        self.next_seq += 1;
        let seed = transfer_core::RandomSource::next_u64(&mut self.jitter);
        let record = new_record(id, seq, spec, &self.config, seed, start, self.clock.now())?;
        if let Some(d) = record.state.deadline() {
            self.set_timer(id, d);
        }
        self.insert_record(record);
        self.pending.dirty.insert(id);
        self.pending.created.insert(id);
        self.was_idle = false;
        Ok(id)
    }

    /// Admission's verdict for a task, given the others running.
    fn verdict(&self, id: TaskId, is_running: bool) -> Option<Verdict> {
        let r = self.records.get(&id)?;
        let on_host = self.hosts.get(&id).and_then(|h| self.per_host.get(h));
        let mut load = Load {
            running: self.busy_slots() as u32,
            running_on_host: on_host.copied().unwrap_or(0),
        };
        if is_running {
            load.running = load.running.saturating_sub(1);
            load.running_on_host = load.running_on_host.saturating_sub(1);
        }
        Some(self.config.policy.admit(
            &Demand::from(&r.spec),
            &self.conditions,
            load,
            self.clock.now(),
        ))
    }

    fn queue_insert(&mut self, key: QueueKey) {
        if self.queue.insert(key)
            && let Some(host) = self.hosts.get(&key.3)
        {
            *self.queued_per_host.entry(host.clone()).or_default() += 1;
        }
    }

    fn queue_remove(&mut self, key: &QueueKey) {
        if self.queue.remove(key)
            && let Some(host) = self.hosts.get(&key.3)
            && let Some(n) = self.queued_per_host.get_mut(host)
        {
            *n -= 1;
            if *n == 0 {
                self.queued_per_host.remove(host);
            }
        }
    }

    /// Offers free slots to queued tasks in order.
    fn pump(&mut self) {
        let max = self.config.policy.max_concurrent as usize;
        let mut skip_hosts: Vec<Arc<str>> = Vec::new();
        // Walked in order one key at a time (admitting a task changes the
        // queue), and only as far as needed: not copied whole on each pass.
        let mut last: Option<QueueKey> = None;
        loop {
            if self.busy_slots() >= max {
                break;
            }
            let next = match &last {
                None => self.queue.first(),
                Some(k) => self
                    .queue
                    .range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
                    .next(),
            };
            let Some(key) = next.copied() else {
                break;
            };
            last = Some(key);
            let id = key.3;
            if !skip_hosts.is_empty() && skip_hosts.len() >= self.queued_per_host.len() {
                break; // every origin with queued work is at its limit
            }
            let (Some(r), Some(host)) = (self.records.get(&id), self.hosts.get(&id)) else {
                self.queue_remove(&key);
                continue;
            };
            if skip_hosts.contains(host) {
                continue;
            }
            let Some(verdict) = self.verdict(id, false) else {
                continue;
            };
            if let Verdict::Wait(reason) = &verdict {
                if *reason == WaitReason::HostLimit {
                    skip_hosts.push(host.clone());
                }
                if matches!(&r.state.phase, Phase::Waiting(w) if w == reason) {
                    continue; // already waiting for that
                }
            }
            if let Some(sh) = &mut self.shared
                && !sh.held.contains_key(&id)
            {
                // Only the holder of a task's claim writes its record.
                match verdict {
                    Verdict::Run(_) if sh.may_claim(id) => {
                        sh.claim(
                            id,
                            self.session.clone(),
                            self.store.clone(),
                            self.tx.clone(),
                        );
                    }
                    // Waiting for conditions, here alone (nothing written),
                    // so that a session with nothing it may run is idle.
                    Verdict::Wait(reason) if reason.is_policy() && reason.wake_at().is_none() => {
                        if let Some(r) = self.records.get_mut(&id) {
                            change_state(&mut self.busy_records, &mut r.state, |s| {
                                s.phase = Phase::Waiting(reason);
                            });
                        }
                    }
                    _ => {}
                }
                continue;
            }
            self.event(id, Event::Admission(verdict));
        }
    }

    /// Whether anything runs or waits to run.
    fn busy(&self) -> bool {
        debug_assert_eq!(
            self.busy_records,
            self.records
                .values()
                .filter(|r| keeps_busy(&r.state.phase))
                .count(),
            "records that keep the session busy, miscounted"
        );
        self.busy_slots() > 0 || self.busy_records > 0
    }

    /// Clears the idle level when work has arrived.
    fn check_busy(&mut self, busy: bool) {
        if self.idle_sent && busy {
            self.idle_sent = false;
            self.idle_gen += 1;
            self.idle.send_replace(IdleLevel {
                generation: self.idle_gen,
                idle: false,
            });
        }
    }

    /// Sends the idle event (once per change) when nothing is left to do.
    fn check_idle(&mut self, busy: bool) {
        if !busy && !self.was_idle {
            self.was_idle = true;
            self.idle_gen += 1;
            self.idle_sent = true;
            let _ = self.deliver.send(Delivery::Idle(self.idle_gen));
        } else if busy {
            self.was_idle = false;
        }
    }

    fn set_timer(&mut self, task: TaskId, at: Timestamp) {
        self.timers.insert((at, task));
    }

    /// Sets the session's bucket to the bandwidth that the policy gives
    /// now, and notes when the timetable changes it next.
    fn judge_bandwidth(&mut self) {
        let now = self.clock.now();
        let policy = &self.config.policy;
        self.session_bucket
            .set_rate(match policy.session_bandwidth(&self.conditions, now) {
                transfer_core::Bandwidth::Unlimited => None,
                transfer_core::Bandwidth::Paused => Some(0),
                transfer_core::Bandwidth::Limited(n) => Some(n),
            });
        self.bandwidth_change = policy.timetable.as_ref().map(|t| t.at(now).1);
    }

    /// When the earliest timer (timetable change, or claim to try again)
    /// is due, on tokio's clock.
    fn next_timer(&self) -> Option<tokio::time::Instant> {
        let on_tokio = |at| tokio::time::Instant::now() + self.clock.until(at);
        let task = self.timers.first().map(|&(at, _)| on_tokio(at));
        let timetable = self.bandwidth_change.map(on_tokio);
        let retry = self.shared.as_ref().and_then(|s| s.next_retry());
        [task, timetable, retry].into_iter().flatten().min()
    }

    /// Sends `Event::Timer` to every task whose time has come, judges the
    /// running tasks again when the timetable has changed, and lets the
    /// claims due be tried again.
    fn fire_timers(&mut self) {
        if let Some(sh) = &mut self.shared {
            // The claims due are tried by the pass of the queue that follows.
            sh.retries_due();
        }
        let now = self.clock.now();
        if self.bandwidth_change.is_some_and(|t| t <= now) {
            self.handle(Command::Conditions(self.conditions));
        }
        while let Some(&(at, task)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.event(task, Event::Timer);
        }
    }

    /// Applies one event; its record is saved and its effects carried out
    /// at the next [`flush`](Self::flush).
    fn event(&mut self, id: TaskId, event: Event) {
        let now = self.clock.now();
        if let Some(sh) = &self.shared
            && (sh.lost.contains(&id)
                || (!sh.held.contains_key(&id)
                    && !matches!(event, Event::Resume | Event::Suspend | Event::Cancel { .. })))
        {
            // Not this process's to write: only a timer that makes it a
            // candidate again is taken, here alone.
            if matches!(event, Event::Timer) && !sh.lost.contains(&id) {
                self.wake_here(id, now);
            }
            return;
        }
        let Some(record) = self.records.get(&id) else {
            return;
        };
        let old_key = queue_key(record);
        let (state, effects) = match apply(&record.state, event, now) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(task = %id, error = %e, "event ignored");
                return;
            }
        };
        let Some(record) = self.records.get_mut(&id) else {
            return;
        };
        change_state(&mut self.busy_records, &mut record.state, |s| *s = state);
        let phase = record.state.phase.clone();
        if let Phase::Waiting(reason) = &phase
            && !matches!(reason, WaitReason::HostLimit | WaitReason::SessionLimit)
        {
            self.delayed.insert(id);
        } else if record.state.is_terminal() {
            self.delayed.remove(&id);
        }
        let label = record.spec.label.clone();
        let failed_with_nothing = record.state.resume.durable_offset == 0;
        let key = admissible(&phase).then(|| queue_key(record));
        self.queue_remove(&old_key);
        if let Some(key) = key {
            self.queue_insert(key);
        }
        let slotted = self.running.contains_key(&id) || self.reserved.contains_key(&id);
        if matches!(phase, Phase::Running { .. }) {
            if !slotted {
                // Admitted: the slot is taken now, before the runner starts
                // after the commit, so the rest of this pass sees it.
                if let Some(host) = self.hosts.get(&id).cloned() {
                    *self.per_host.entry(host.clone()).or_default() += 1;
                    self.reserved.insert(id, host);
                }
            }
        } else if slotted {
            // The attempt is stopping (abort, failure, completion): the
            // slot is free for scheduling now.
            if let Some(r) = self.running.get(&id) {
                let _ = r.stop.send(true);
            }
            self.release(id);
        }
        for effect in effects {
            match effect {
                Effect::Persist => {
                    self.pending.dirty.insert(id);
                }
                Effect::Complete(outcome) => {
                    if matches!(outcome, Outcome::Failed { .. }) && failed_with_nothing {
                        // Nothing worth resuming: no empty partial left behind.
                        self.pending.effects.push((id, Effect::DiscardPartial));
                    }
                    let event = EventId::from_u64(self.fresh_id());
                    if let Some(sh) = &mut self.shared {
                        sh.unacked.insert(id);
                    }
                    self.pending.dirty.insert(id);
                    self.outcomes.insert(id, outcome.clone());
                    self.pending.completions.push(Completion {
                        event,
                        task: id,
                        label: label.clone(),
                        at: now,
                        outcome,
                        response: self.responses.remove(&id).map(|r| *r),
                    });
                }
                other => self.pending.effects.push((id, other)),
            }
        }
    }

    /// A task another process may hold, woken by its timer: queued here if
    /// that is where the timer takes it, and nothing written.
    fn wake_here(&mut self, id: TaskId, now: Timestamp) {
        let Some(record) = self.records.get(&id) else {
            return;
        };
        if let Ok((state, _)) = apply(&record.state, Event::Timer, now)
            && state.phase == Phase::Queued
        {
            let old = queue_key(record);
            self.queue_remove(&old);
            if let Some(r) = self.records.get_mut(&id) {
                change_state(&mut self.busy_records, &mut r.state, |s| *s = state);
                let key = queue_key(r);
                self.queue_insert(key);
            }
        }
    }

    /// Carries out one effect after the record is durable.
    fn effect(&mut self, id: TaskId, effect: Effect) {
        // The record is copied only by the effects that hand it on.
        let Some(record) = self.records.get(&id) else {
            return;
        };
        match effect {
            Effect::Persist | Effect::Complete(_) => {}
            Effect::Start {
                attempt, throttle, ..
            } => {
                // Only if the task is still in that attempt (a later event in
                // the same batch may have moved it on).
                if record.state.phase == (Phase::Running { attempt }) {
                    let record = Arc::new(TaskRecord::clone(record));
                    // An earlier attempt's answer is not this one's.
                    self.responses.remove(&id);
                    self.start(record, attempt, throttle);
                }
            }
            Effect::Throttle(t) => {
                if let Some(r) = self.running.get(&id) {
                    let _ = r.throttle.send(t);
                }
            }
            Effect::Abort { attempt } => {
                // That attempt only: a later one may have started since.
                if let Some(r) = self.running.get(&id)
                    && r.attempt == attempt
                {
                    let _ = r.stop.send(true);
                }
            }
            Effect::DiscardPartial => {} // done in `flush`, in order
            Effect::Notify(n) => {
                let event = match n {
                    Notification::Waiting(reason) => SessionEvent::Waiting { task: id, reason },
                    Notification::Progress { received, total } => SessionEvent::Progress {
                        task: id,
                        progress: Progress {
                            direction: if record.spec.kind.is_download() {
                                Direction::Download
                            } else {
                                Direction::Upload
                            },
                            delta: 0,
                            total: received,
                            expected: total.or(record.spec.expected_size),
                        },
                    },
                    Notification::Restarted(reason) => SessionEvent::Restarted { task: id, reason },
                };
                // The delegate hears of progress and waiting, with the record.
                let heard = matches!(
                    event,
                    SessionEvent::Progress { .. } | SessionEvent::Waiting { .. }
                );
                let record = (self.follows && heard).then(|| record.clone());
                let _ = self.deliver.send(Delivery::Event(event, record));
            }
            Effect::SetTimer(t) => self.set_timer(id, t),
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
                tokio::spawn(async move { crate::resumable::cancel(&*t, &url, protocol).await });
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

    fn start(&mut self, record: Arc<TaskRecord>, attempt: u32, throttle: Throttle) {
        let transport = self
            .transports
            .iter()
            .find(|t| {
                t.handles(
                    record.spec.url().as_uri(),
                    crate::protocol_for(&record.spec, &self.config),
                )
            })
            .cloned();
        let Some(transport) = transport else {
            let tx = self.tx.clone();
            let id = record.id;
            let error = transfer_core::TransferError::new(
                transfer_core::ErrorKind::InvalidRequest,
                format!("no transport handles {}", record.spec.url()),
            );
            let _ = tx.send(Command::Runner {
                task: id,
                event: Event::AttemptFailed { attempt, error },
                ack: None,
            });
            return;
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (throttle_tx, throttle_rx) = watch::channel(throttle);
        let host = self
            .hosts
            .get(&record.id)
            .cloned()
            .unwrap_or_else(|| Arc::from(record.spec.url().origin()));
        if self.reserved.remove(&record.id).is_none() {
            *self.per_host.entry(host.clone()).or_default() += 1;
        }
        self.running.insert(
            record.id,
            Running {
                attempt,
                stop: stop_tx,
                throttle: throttle_tx,
                host,
            },
        );
        if let Some(sh) = &mut self.shared {
            *sh.runners.entry(record.id).or_default() += 1;
        }
        let a = Attempt {
            session: self.session.clone(),
            task: record.id,
            attempt,
            transport,
            payloads: self.payloads.clone(),
            config: self.config.clone(),
            clock: self.clock.clone(),
            engine: self.tx.clone(),
            stop: stop_rx,
            throttle: throttle_rx,
            session_bucket: self.session_bucket.clone(),
            delegate: self.delegate.clone(),
            follows: self.follows,
            delayed: self.delayed.remove(&record.id),
            record,
        };
        tokio::spawn(a.run());
    }

    /// Stops every runner at a checkpoint and records it before returning.
    async fn shutdown(&mut self, rx: &mut mpsc::UnboundedReceiver<Command>) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.running.is_empty() {
            let cmd = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(c)) => c,
                _ => break,
            };
            match cmd {
                // Checkpoints are recorded while the phase is still Running.
                Command::Runner {
                    task,
                    event: event @ (Event::Checkpoint { .. } | Event::Progress { .. }),
                    ack,
                } => {
                    self.event(task, event);
                    self.pending.durable = true;
                    self.flush(None).await;
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
                Command::RunnerDone { task, .. } => self.release(task),
                Command::Enqueue { reply, .. } => {
                    let _ = reply.send(Err(SessionError::Closed));
                }
                Command::User { reply, .. } => {
                    let _ = reply.send(Err(SessionError::Closed));
                }
                Command::Tasks(reply) => {
                    let _ = reply.send(
                        self.records
                            .values()
                            .map(|r| TaskRecord::clone(r))
                            .collect(),
                    );
                }
                _ => {}
            }
        }
        // Whatever was committed deferrably becomes durable now.
        let last = Batch::default();
        if let Err(e) = self.store.commit(&self.session, last).await {
            tracing::error!(error = %e, "could not make the last changes durable");
        }
        if let Some(sh) = &mut self.shared {
            // The claims of completions still to be delivered and
            // acknowledged go with them: released once the delivery task
            // has acknowledged them, so no other process delivers them again.
            let waiting: Vec<crate::shared::Held> = sh
                .held
                .extract_if(|t, _| sh.unacked.contains(t))
                .map(|(_, h)| h)
                .collect();
            if !waiting.is_empty() {
                let _ = self.deliver.send(Delivery::Hold(waiting));
            }
        }
    }
}

/// Shared sessions: claims, and following the other processes.
impl Engine {
    /// Releases the claims of tasks this process no longer has in hand: no
    /// attempt runs or waits to start, the record is durable (this runs
    /// after a commit), and any completion has been acknowledged.
    fn release_claims(&mut self) {
        let Some(sh) = &mut self.shared else {
            return;
        };
        let done: Vec<TaskId> = sh
            .held
            .keys()
            .copied()
            .filter(|t| {
                !self.running.contains_key(t)
                    && !self.reserved.contains_key(t)
                    && !self
                        .records
                        .get(t)
                        .is_some_and(|r| matches!(r.state.phase, Phase::Running { .. }))
                    && !sh.runners.contains_key(t)
                    && !sh.unacked.contains(t)
                    && !self.pending.dirty.contains(t)
            })
            .collect();
        for t in done {
            sh.held.remove(&t); // released in the background
        }
    }

    /// A claim attempt's answer: the task is started by the next pump when
    /// the store still has it to do, and its completion delivered when one
    /// was left unacknowledged.
    fn claimed(&mut self, c: crate::shared::Claimed) {
        let Some(sh) = &mut self.shared else {
            return;
        };
        sh.claiming.remove(&c.task);
        let ttl = sh.claims.ttl();
        let (Some(held), Some((fresh, completion))) = (c.claim, c.fresh) else {
            // Held elsewhere (or the store did not answer): later.
            sh.retry_at(c.task, tokio::time::Instant::now() + ttl / 2);
            return;
        };
        sh.not_before.remove(&c.task);
        sh.lost.remove(&c.task);
        let newer_here = sh.newer_here(c.task, c.generation);
        sh.held.insert(c.task, held);
        if !newer_here {
            match fresh {
                // A task that ended never starts again: a record saying
                // otherwise is a stale write.
                Some(r) if !ended_here(self.records.get(&c.task).map(|b| &**b), &r) => {
                    if self.records.get(&c.task).map(|b| &**b) != Some(&r)
                        && let Some(ended) = self.take_theirs(r, None)
                        && completion.is_none()
                    {
                        // Ended elsewhere since this process last read the
                        // store, its completion already acknowledged there.
                        let _ = self.deliver.send(Delivery::Elsewhere(Box::new(ended)));
                    }
                }
                // Written again from here, under the claim.
                Some(_) => {
                    self.pending.dirty.insert(c.task);
                }
                None => {
                    self.forget(c.task);
                }
            }
        }
        if let Some(done) = completion
            && let Some(sh) = &mut self.shared
            && sh.unacked.insert(done.task)
        {
            // Its process ended before the delegate heard of it.
            self.outcomes.insert(done.task, done.outcome.clone());
            let _ = self.deliver.send(Delivery::Completion(Box::new(done)));
        }
    }

    /// Another process took over a task this process was running: the
    /// attempt stops, and nothing more of it is written here.
    fn claim_lost(&mut self, task: TaskId) {
        let Some(sh) = &mut self.shared else {
            return;
        };
        sh.held.remove(&task);
        sh.lost.insert(task);
        if let Some(r) = self.running.get(&task) {
            let _ = r.stop.send(true);
        }
        self.pending.dirty.remove(&task);
        self.deferred.remove(&task);
        self.release(task);
        if let Some(old) = self.records.get(&task) {
            let key = queue_key(old);
            self.queue_remove(&key);
        }
    }

    /// Takes the store's record of a task in place of this process's.
    /// When it says the task ended and this process did not know, the
    /// outcome is kept for its waiters and the completion returned: `done`
    /// (the one in the outbox), else what the record says.
    fn take_theirs(&mut self, r: TaskRecord, done: Option<&Completion>) -> Option<Completion> {
        let was_terminal = self.forget(r.id).is_some_and(|o| o.state.is_terminal());
        let ended = (!was_terminal && r.state.is_terminal())
            .then(|| done.cloned().unwrap_or_else(|| ended_elsewhere(&r)));
        self.next_seq = self.next_seq.max(r.seq + 1);
        self.adopt(r);
        if let Some(c) = &ended {
            self.outcomes.insert(c.task, c.outcome.clone());
        }
        ended
    }

    /// Takes the other processes' changes from the store: records added,
    /// changed or removed there, completions they left undelivered, and
    /// cancellations or suspensions of tasks this process runs.
    fn followed(&mut self, f: crate::shared::Follow) {
        let Some(sh) = &self.shared else {
            return;
        };
        let generation = f.generation;
        let mut seen = HashSet::with_capacity(f.snapshot.records.len());
        let mut user = Vec::new();
        let mut cancelled: Vec<TaskRecord> = Vec::new();
        let mut adopt = Vec::new();
        // What others wrote to tasks this process runs: a user's cancel or
        // suspend (a save here since may have replaced it in the store).
        // The last each task got: a pause then a resume is a resume.
        let mut last: IdMap<TaskRecord> = IdMap::default();
        for r in f.foreign {
            last.insert(r.id, r);
        }
        for r in last.into_values() {
            let running_here = sh.mine(r.id) && !sh.lost.contains(&r.id);
            let Some(ours) = self.records.get(&r.id).filter(|_| running_here) else {
                continue;
            };
            if ours.state.is_terminal() || cancelled.iter().any(|c| c.id == r.id) {
                continue;
            }
            match r.state.phase {
                // Cancelled there, with its completion: stopped here, and
                // that completion delivered from here.
                Phase::Cancelled => cancelled.push(r),
                Phase::Suspended | Phase::Waiting(WaitReason::SuspendedByUser) => {
                    user.push((r.id, Event::Suspend));
                }
                _ => {}
            }
        }
        for r in f.snapshot.records {
            seen.insert(r.id);
            let ours = self.records.get(&r.id).map(|b| &**b);
            if sh.mine(r.id) && !sh.lost.contains(&r.id) {
                continue; // this process's to write
            }
            if sh.newer_here(r.id, generation) || self.pending.dirty.contains(&r.id) {
                continue;
            }
            // As `adopt` would keep it: another process's attempt is queued here.
            let same = match (ours, &r.state.phase) {
                (Some(o), Phase::Running { .. }) => {
                    o.state.phase == Phase::Queued && {
                        let mut local = r.clone();
                        local.state.phase = Phase::Queued;
                        *o == local
                    }
                }
                (ours, _) => ours == Some(&r),
            };
            if same || ended_here(ours, &r) {
                continue;
            }
            adopt.push(r);
        }
        let gone: Vec<TaskId> = self
            .records
            .keys()
            .copied()
            .filter(|id| {
                !seen.contains(id)
                    && !sh.mine(*id)
                    && !sh.newer_here(*id, generation)
                    && !self.pending.dirty.contains(id)
            })
            .collect();
        let mut undelivered = Vec::new();
        for c in &f.snapshot.outbox {
            if !sh.mine(c.task) && !sh.unacked.contains(&c.task) && sh.may_claim(c.task) {
                undelivered.push(c.task);
            }
        }
        for id in gone {
            self.forget(id);
        }
        for r in adopt {
            let done = f.snapshot.outbox.iter().find(|c| c.task == r.id);
            if let Some(c) = self.take_theirs(r, done) {
                // Others' completions reach this process's event stream
                // (not its delegate: the process that ran the task has it).
                let _ = self.deliver.send(Delivery::Elsewhere(Box::new(c)));
            }
        }
        for (id, event) in user {
            self.event(id, event);
        }
        for r in cancelled {
            let id = r.id;
            if let Some(run) = self.running.get(&id) {
                let _ = run.stop.send(true);
            }
            self.release(id);
            self.forget(id);
            self.adopt(r);
            // Saved again from here: the store has it last as cancelled.
            self.pending.dirty.insert(id);
            if let Some(c) = f.snapshot.outbox.iter().find(|c| c.task == id)
                && let Some(sh) = &mut self.shared
                && sh.unacked.insert(id)
            {
                self.outcomes.insert(id, c.outcome.clone());
                let _ = self.deliver.send(Delivery::Completion(Box::new(c.clone())));
            }
        }
        if let Some(sh) = &mut self.shared {
            for task in undelivered {
                sh.claim(
                    task,
                    self.session.clone(),
                    self.store.clone(),
                    self.tx.clone(),
                );
            }
        }
    }
}

/// The tasks whose only effects in `effects` are starts (beside
/// notifications and timers, which may go with them).
fn only_starts(effects: &[(TaskId, Effect)]) -> IdSet {
    let mut starts = IdSet::default();
    let mut others = IdSet::default();
    for (id, effect) in effects {
        match effect {
            Effect::Start { .. } => {
                starts.insert(*id);
            }
            // Told to the delegate, or a timer: no order with a start.
            Effect::Notify(_) | Effect::SetTimer(_) => {}
            _ => {
                others.insert(*id);
            }
        }
    }
    starts.retain(|id| !others.contains(id));
    starts
}

/// Whether this process knows the task ended and `theirs` says it has not:
/// a stale write (the same task never starts again once ended).
fn ended_here(ours: Option<&TaskRecord>, theirs: &TaskRecord) -> bool {
    ours.is_some_and(|o| o.state.is_terminal()) && !theirs.state.is_terminal()
}

/// How a task that another process ran ended, from its record (when its
/// completion has already left the outbox).
fn ended_elsewhere(r: &TaskRecord) -> Completion {
    let outcome = match &r.state.phase {
        Phase::Completed => Outcome::Completed {
            bytes: r.state.bytes_received,
        },
        Phase::Failed(error) => Outcome::Failed {
            error: error.clone(),
            resume: Some(r.state.resume.clone()),
        },
        _ => Outcome::Cancelled { resume: None },
    };
    Completion {
        event: EventId::from_u64(0),
        task: r.id,
        label: r.spec.label.clone(),
        at: r.created_at,
        outcome,
        response: None,
    }
}

/// Delivers events in order: progress and waits to the delegate and the
/// event stream; completions after they are durable, acknowledged once the
/// delegate returns.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn deliver(
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    delegate: Arc<dyn Delegate>,
    store: Arc<dyn TaskStore>,
    session: SessionId,
    events: broadcast::Sender<SessionEvent>,
    gone: watch::Sender<bool>,
    idle: watch::Sender<IdleLevel>,
    engine: mpsc::UnboundedSender<Command>,
) {
    let mut acks = Acks {
        events: Vec::new(),
        tasks: Vec::new(),
        since: None,
        engine,
    };
    let mut kept = Vec::new();
    loop {
        let next = match acks.since {
            None => rx.recv().await,
            Some(since) => tokio::select! {
                d = rx.recv() => d,
                () = tokio::time::sleep_until(since + ACK_DELAY) => {
                    acknowledge(&*store, &session, &mut acks, true).await;
                    continue;
                }
            },
        };
        let Some(d) = next else {
            break;
        };
        match d {
            Delivery::Event(event, record) => {
                if let Some(record) = &record {
                    match &event {
                        SessionEvent::Progress { progress, .. } => {
                            delegate.progress(record, *progress).await;
                        }
                        SessionEvent::Waiting { reason, .. } => {
                            delegate.waiting(record, reason).await;
                        }
                        _ => {}
                    }
                }
                let _ = events.send(event);
            }
            Delivery::Metrics(record, metrics) => {
                delegate.metrics(&record, &metrics).await;
            }
            Delivery::Completion(c) => {
                delegate.completed(&c).await;
                // Subscribers hear of it before the acknowledgement, so a
                // kill in between makes them hear it twice, never not at all.
                acks.events.push(c.event);
                acks.tasks.push(c.task);
                acks.since.get_or_insert_with(tokio::time::Instant::now);
                let _ = events.send(SessionEvent::Completed(c));
            }
            Delivery::Elsewhere(c) => {
                let _ = events.send(SessionEvent::Completed(c));
            }
            Delivery::Hold(claims) => kept.extend(claims),
            Delivery::Idle(generation) => {
                acknowledge(&*store, &session, &mut acks, true).await;
                delegate.session_idle().await;
                let _ = events.send(SessionEvent::Idle);
                // Unless work arrived since (a later change).
                idle.send_if_modified(|level| {
                    let newer = level.generation < generation;
                    if newer {
                        *level = IdleLevel {
                            generation,
                            idle: true,
                        };
                    }
                    newer
                });
            }
        }
        // Acknowledged together, at most [`ACK_DELAY`] after the first.
        if acks.events.len() >= 1024 {
            acknowledge(&*store, &session, &mut acks, true).await;
        }
    }
    acknowledge(&*store, &session, &mut acks, false).await;
    drop(kept); // the claims of the completions just acknowledged
    // The engine has stopped: release the store before saying so.
    drop(store);
    drop(delegate);
    let _ = gone.send(true);
}

/// How long a delivered completion may wait for its acknowledgement to be
/// written, so that one write acknowledges many: a crash meanwhile delivers
/// it again (as a crash before the acknowledgement always could; this
/// write does not sync anyway, the next durable commit makes it durable).
const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Completions delivered and not yet acknowledged.
struct Acks {
    events: Vec<EventId>,
    tasks: Vec<TaskId>,
    /// When the first of them was delivered.
    since: Option<tokio::time::Instant>,
    /// Told which tasks' completions were acknowledged.
    engine: mpsc::UnboundedSender<Command>,
}

/// Removes delivered completions from the outbox; `deferrable` unless this
/// is the last chance before the store is released.
async fn acknowledge(
    store: &dyn TaskStore,
    session: &SessionId,
    acks: &mut Acks,
    deferrable: bool,
) {
    if acks.events.is_empty() {
        return;
    }
    let batch = Batch {
        acknowledge: acks.events.clone(),
        deferrable,
        ..Batch::default()
    };
    match store.commit(session, batch).await {
        Ok(()) => {
            acks.events.clear();
            acks.since = None;
            let tasks = std::mem::take(&mut acks.tasks);
            let _ = acks.engine.send(Command::Acknowledged(tasks));
        }
        // Kept, and tried again after another delay: until then a shared
        // session keeps the tasks' claims, so no one delivers them again.
        Err(e) => {
            acks.since = Some(tokio::time::Instant::now());
            tracing::error!(error = %e, "could not acknowledge completions");
        }
    }
}

impl Engine {
    /// Completions found in the outbox at attach: remembered, and delivered
    /// again.
    pub(crate) fn redeliver(&mut self, outbox: Vec<Completion>) {
        for c in outbox {
            self.outcomes.insert(c.task, c.outcome.clone());
            let _ = self.deliver.send(Delivery::Completion(Box::new(c)));
        }
    }
}

/// A new task's record: suspended, or queued when `start`.
pub(crate) fn new_record(
    id: TaskId,
    seq: u64,
    spec: TaskSpec,
    config: &SessionConfig,
    jitter_seed: u64,
    start: bool,
    now: Timestamp,
) -> Result<TaskRecord, SessionError> {
    let mut state = TaskState::new(config.retry, jitter_seed);
    if start {
        state = apply(&state, Event::Resume, now)
            .map_err(|e| SessionError::Internal(e.to_string()))?
            .0;
    }
    Ok(TaskRecord {
        id,
        seq,
        created_at: now,
        spec,
        state,
    })
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
