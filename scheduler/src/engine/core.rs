//! The engine's decisions, without a runtime: which task runs next, which
//! slots are taken, what a batch of changes must commit, when the session
//! is idle, when the next timer is due.
//!
//! [`Core`] is a plain struct in the shape of `quinn_proto::Connection`:
//! `handle_*` methods take what happened (a request, a runner's report, a
//! commit's result, the time) and [`Core::poll_action`] hands out what must
//! be done (start an attempt, stop one, deliver an event, answer a caller).
//! Commits go through [`Core::begin_commit`] and [`Core::end_commit`]
//! (`commit.rs`); shared sessions' claims through `follow.rs`. It never
//! waits and never does IO: the async driver (`driver.rs`) does both, and
//! tests drive it step by step with a time they choose.
//!
//! Replies that wait for a commit are the driver's own values (`W`): the
//! core only keeps them in order and hands them back with the commit's
//! result.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use transfer_core::{
    Completion, Conditions, Demand, Destination, Effect, Event, EventId, Load, Outcome, Phase,
    ResponseSummary, TaskId, TaskKind, TaskRecord, TaskSpec, TaskState, Timestamp, Verdict,
    WaitReason, apply,
};

pub(crate) use super::action::{Action, Delivery, IdleLevel, Start};
use super::claims::SharedState;
pub(crate) use super::ids::{IdMap, IdSet};
use super::pending::{Backoff, InFlight, Pending};
pub(crate) use super::record::{ended_elsewhere, new_record};
use crate::{SessionConfig, SessionError};

/// Queue order: priority (high first), earliest begin, enqueue order.
pub(crate) type QueueKey = (Reverse<u32>, u64, u64, TaskId);

pub(crate) fn queue_key(r: &TaskRecord) -> QueueKey {
    let p = (r.spec.priority.get() * 1_000_000.0) as u32;
    let begin = r.spec.earliest_begin.map_or(0, |t| t.as_millis());
    (Reverse(p), begin, r.seq, r.id)
}

/// Whether a task in `phase` keeps the session from being idle: it runs,
/// waits to run, or waits for a time (a backoff, a start date); not one
/// that only waits for conditions to change, nor one that ended or is
/// suspended.
pub(crate) fn keeps_busy(phase: &Phase) -> bool {
    match phase {
        Phase::Queued | Phase::Running { .. } => true,
        Phase::Waiting(w) => !w.is_policy() || w.wake_at().is_some(),
        _ => false,
    }
}

/// Applies `change` to a record's state, keeping `count` (of records that
/// keep the session busy) right.
pub(crate) fn change_state(
    count: &mut usize,
    state: &mut TaskState,
    change: impl FnOnce(&mut TaskState),
) {
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

/// An attempt holding a slot.
pub(crate) struct Slot {
    pub(crate) attempt: u32,
    pub(crate) host: Arc<str>,
}

/// Where new task and event ids come from.
enum Ids {
    /// Counted up (one process owns the session).
    Counted(u64),
    /// Drawn at random (other processes draw ids too).
    Random(transfer_core::SplitMix64),
}

/// The engine's decisions; see the module docs.
pub(crate) struct Core<W> {
    pub(crate) config: Arc<SessionConfig>,
    /// The delegate wants progress, waiting and metrics calls (each with a
    /// copy of the record).
    pub(crate) follows: bool,
    /// The time, as the driver last said.
    pub(crate) now: Timestamp,
    pub(crate) records: IdMap<Box<TaskRecord>>,
    /// Records in a phase that keeps the session busy (see
    /// [`keeps_busy`]): counted as phases change, so the idle check after
    /// each batch does not walk every record.
    pub(crate) busy_records: usize,
    pub(crate) queue: BTreeSet<QueueKey>,
    /// Queue entries per origin, so a pass can stop once every origin with
    /// queued work is at its limit instead of walking the whole queue.
    queued_per_host: HashMap<Arc<str>, usize>,
    pub(crate) running: IdMap<Slot>,
    /// Each task's origin, computed once (scheduling asks for it often).
    pub(crate) hosts: IdMap<Arc<str>>,
    /// The task holding each idempotency key (one at a time: a new task
    /// with a finished task's key replaces it).
    pub(crate) keys: HashMap<String, TaskId>,
    /// The unfinished download that owns each destination: one at a time.
    pub(crate) owners: HashMap<Destination, TaskId>,
    /// When tasks want `Event::Timer`.
    pub(crate) timers: BTreeSet<(Timestamp, TaskId)>,
    /// Admitted, not started yet (the start waits for the commit): host.
    pub(crate) reserved: IdMap<Arc<str>>,
    /// How tasks ended, as their completions said (this process, and the
    /// outbox at attach).
    pub(crate) outcomes: IdMap<Outcome>,
    pub(crate) per_host: HashMap<Arc<str>, u32>,
    pub(crate) conditions: Conditions,
    /// When the session's bandwidth changes next by the timetable alone.
    pub(crate) bandwidth_change: Option<Timestamp>,
    /// The server's answer to each upload's latest attempt, until the
    /// task's completion takes it.
    pub(crate) responses: IdMap<Box<ResponseSummary>>,
    ids: Ids,
    pub(crate) next_seq: u64,
    pub(crate) jitter: transfer_core::SplitMix64,
    pub(crate) was_idle: bool,
    /// Records changed by deferrable batches and not yet written.
    pub(crate) deferred: BTreeSet<TaskId>,
    /// Tasks that waited (not for a slot) since they last ran: their next
    /// attempt asks the delegate's `will_begin` first.
    pub(crate) delayed: IdSet,
    /// Counts idle and busy changes, so a late idle never hides a busy.
    idle_gen: u64,
    /// The last change counted was to idle.
    idle_sent: bool,
    pub(crate) pending: Pending<W>,
    /// The last commits failed: the next waits until then.
    pub(crate) backoff: Backoff,
    /// File descriptors ran short: fewer transfers at once for a while.
    pub(crate) squeeze: Option<super::squeeze::Squeeze>,
    /// The commit under way, if any.
    pub(crate) in_flight: Option<InFlight<W>>,
    /// Set when other processes share the session.
    pub(crate) shared: Option<SharedState>,
    pub(crate) actions: VecDeque<Action<W>>,
}

impl<W> Core<W> {
    /// A core for a session with `config`, under `conditions` at `now`.
    /// `shared` gives the claims' time to live when other processes share
    /// the session; its ids are then drawn from `seed`.
    pub(crate) fn new(
        config: Arc<SessionConfig>,
        conditions: Conditions,
        follows: bool,
        now: Timestamp,
        shared: Option<Duration>,
        seed: u64,
    ) -> Core<W> {
        let ms = now.as_millis();
        Core {
            config,
            follows,
            now,
            records: IdMap::default(),
            busy_records: 0,
            queue: BTreeSet::new(),
            queued_per_host: HashMap::new(),
            running: IdMap::default(),
            hosts: IdMap::default(),
            keys: HashMap::new(),
            owners: HashMap::new(),
            timers: BTreeSet::new(),
            reserved: IdMap::default(),
            outcomes: IdMap::default(),
            per_host: HashMap::new(),
            conditions,
            bandwidth_change: None,
            responses: IdMap::default(),
            ids: match shared {
                Some(_) => Ids::Random(transfer_core::SplitMix64::new(seed)),
                None => Ids::Counted(ms << 12),
            },
            next_seq: 0,
            jitter: transfer_core::SplitMix64::new(ms),
            was_idle: false,
            deferred: BTreeSet::new(),
            delayed: IdSet::default(),
            idle_gen: 0,
            idle_sent: false,
            pending: Pending::default(),
            in_flight: None,
            backoff: Backoff::default(),
            squeeze: None,
            shared: shared.map(SharedState::new),
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, in order.
    pub(crate) fn poll_action(&mut self) -> Option<Action<W>> {
        self.actions.pop_front()
    }

    /// When the core next wants [`Core::handle_timers`]: a task's timer, a
    /// timetable change, or a claim to try again.
    pub(crate) fn poll_timeout(&self) -> Option<Timestamp> {
        let task = self.timers.first().map(|&(at, _)| at);
        let retry = self.shared.as_ref().and_then(SharedState::next_retry);
        let squeeze = self.squeeze.map(|s| s.until);
        [
            task,
            self.bandwidth_change,
            retry,
            self.backoff.until,
            squeeze,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The time is now `now` (it only moves forward for the core).
    pub(crate) fn handle_time(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
    }

    /// A task's record as it is now.
    pub(crate) fn record(&self, task: TaskId) -> Option<&TaskRecord> {
        self.records.get(&task).map(|r| &**r)
    }

    /// Every record, in enqueue order.
    pub(crate) fn tasks(&self) -> Vec<TaskRecord> {
        // Sorted by reference: a record is most of a kilobyte.
        let mut all: Vec<&TaskRecord> = self.records.values().map(|r| &**r).collect();
        all.sort_unstable_by_key(|r| (r.seq, r.id));
        all.into_iter().cloned().collect()
    }

    /// Takes the records found at attach: interrupted attempts go back to
    /// the queue with their resume data; timers are set again.
    pub(crate) fn attach(&mut self, records: Vec<TaskRecord>) {
        // Grown once, not by doubling: a record is most of a kilobyte.
        self.records.reserve(records.len());
        self.hosts.reserve(records.len());
        for r in records {
            if let Ids::Counted(next) = &mut self.ids {
                *next = (*next).max(r.id.as_u64() + 1);
            }
            self.next_seq = self.next_seq.max(r.seq + 1);
            // A failed task leaves nothing behind: its partial was deleted
            // after its failure was committed, unless the process died in
            // between. Deleting it again is harmless.
            if matches!(r.state.phase, Phase::Failed(_))
                && (matches!(r.spec.kind, TaskKind::Download { .. })
                    || r.state.resume.partial.is_some())
            {
                self.actions.push_back(Action::Discard(Box::new(r.clone())));
            }
            self.adopt(r);
        }
    }

    /// Completions found in the outbox at attach: remembered, and delivered
    /// again.
    pub(crate) fn redeliver(&mut self, outbox: Vec<Completion>) {
        for c in outbox {
            self.outcomes.insert(c.task, c.outcome.clone());
            self.deliver(Delivery::Completion(Box::new(c)));
        }
    }

    pub(crate) fn deliver(&mut self, d: Delivery) {
        self.actions.push_back(Action::Deliver(d));
    }

    /// Takes a record as the store has it: an attempt under way there (a
    /// process died in it, or another process runs it) is queued here with
    /// its resume data; its timers are set.
    pub(crate) fn adopt(&mut self, mut r: TaskRecord) {
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
    pub(crate) fn forget(&mut self, id: TaskId) -> Option<TaskRecord> {
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
        self.disown(&old);
        self.timers.retain(|(_, t)| *t != id);
        self.hosts.remove(&id);
        if let Some(sh) = &mut self.shared {
            sh.not_before.remove(&id);
            sh.lost.remove(&id);
        }
        Some(*old)
    }

    /// Gives up the destination `r` owned, if it did.
    pub(crate) fn disown(&mut self, r: &TaskRecord) {
        if let TaskKind::Download { destination } = &r.spec.kind
            && self.owners.get(destination) == Some(&r.id)
        {
            self.owners.remove(destination);
        }
    }

    /// Refuses `spec` when an unfinished task other than `except` owns the
    /// destination it downloads to.
    pub(crate) fn refuse_taken(
        &self,
        spec: &TaskSpec,
        except: Option<TaskId>,
    ) -> Result<(), SessionError> {
        let TaskKind::Download { destination } = &spec.kind else {
            return Ok(());
        };
        if let Some(&task) = self.owners.get(destination)
            && Some(task) != except
        {
            return Err(SessionError::destination_taken(destination, task));
        }
        if self.shared.is_some() {
            // In a shared session an ending not yet written may never be
            // (the claim may lapse first): its destination is still taken.
            let unwritten = self
                .pending
                .completions
                .iter()
                .chain(self.in_flight.iter().flat_map(|f| &f.pending.completions))
                .map(|c| c.task)
                .filter(|t| Some(*t) != except)
                .find(|t| {
                    self.records.get(t).is_some_and(|r| {
                        matches!(&r.spec.kind, TaskKind::Download { destination: d } if d == destination)
                    })
                });
            if let Some(task) = unwritten {
                return Err(SessionError::destination_taken(destination, task));
            }
        }
        Ok(())
    }

    /// A new task or event id.
    pub(crate) fn fresh_id(&mut self) -> u64 {
        match &mut self.ids {
            Ids::Random(r) => transfer_core::RandomSource::next_u64(r),
            Ids::Counted(next) => {
                let id = *next;
                *next += 1;
                id
            }
        }
    }

    /// Adds a record with its queue entry, origin and key.
    pub(crate) fn insert_record(&mut self, r: TaskRecord) {
        self.hosts.insert(r.id, Arc::from(r.spec.url().origin()));
        if admissible(&r.state.phase) {
            self.queue_insert(queue_key(&r));
        }
        if let Some(key) = &r.spec.key {
            self.keys.insert(key.clone(), r.id);
        }
        if let TaskKind::Download { destination } = &r.spec.kind
            && !r.state.is_terminal()
        {
            self.owners.entry(destination.clone()).or_insert(r.id);
        }
        self.busy_records += usize::from(keeps_busy(&r.state.phase));
        if let Some(old) = self.records.insert(r.id, Box::new(r)) {
            self.busy_records -= usize::from(keeps_busy(&old.state.phase));
        }
    }

    /// Frees a task's slot (running, or reserved at admission).
    pub(crate) fn release(&mut self, task: TaskId) {
        let host = match self.running.remove(&task) {
            Some(r) => {
                self.actions.push_back(Action::Release(task));
                Some(r.host)
            }
            None => self.reserved.remove(&task),
        };
        if let Some(host) = host
            && let Some(n) = self.per_host.get_mut(&host)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Slots taken: running attempts and those admitted but not yet started.
    pub(crate) fn busy_slots(&self) -> usize {
        self.running.len()
            + self.reserved.len()
            + self.shared.as_ref().map_or(0, |s| s.claiming.len())
    }

    /// Admission's verdict for a task, given the others running.
    pub(crate) fn verdict(&self, id: TaskId, is_running: bool) -> Option<Verdict> {
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
        Some(
            self.config
                .policy
                .admit(&Demand::from(&r.spec), &self.conditions, load, self.now),
        )
    }

    pub(crate) fn queue_insert(&mut self, key: QueueKey) {
        if self.queue.insert(key)
            && let Some(host) = self.hosts.get(&key.3)
        {
            *self.queued_per_host.entry(host.clone()).or_default() += 1;
        }
    }

    pub(crate) fn queue_remove(&mut self, key: &QueueKey) {
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
    pub(crate) fn pump(&mut self) {
        let max = self.slot_limit();
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
            if self.shared.is_some() {
                self.pump_shared(id, verdict);
                continue;
            }
            self.event(id, Event::Admission(verdict));
        }
    }

    /// Whether anything runs or waits to run.
    pub(crate) fn busy(&self) -> bool {
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
    pub(crate) fn check_busy(&mut self, busy: bool) {
        if self.idle_sent && busy {
            self.idle_sent = false;
            self.idle_gen += 1;
            self.actions.push_back(Action::Idle(IdleLevel {
                generation: self.idle_gen,
                idle: false,
            }));
        }
    }

    /// Sends the idle event (once per change) when nothing is left to do.
    pub(crate) fn check_idle(&mut self, busy: bool) {
        if !busy && !self.was_idle {
            self.was_idle = true;
            self.idle_gen += 1;
            self.idle_sent = true;
            self.deliver(Delivery::Idle(self.idle_gen));
        } else if busy {
            self.was_idle = false;
        }
    }

    /// Work began (and may have ended) while a commit was under way: the
    /// idle level and the next idle event see it.
    pub(crate) fn note_overlap(&mut self) {
        if self.busy_slots() > 0 {
            self.check_busy(true);
            self.was_idle = false;
        }
    }

    pub(crate) fn set_timer(&mut self, task: TaskId, at: Timestamp) {
        self.timers.insert((at, task));
    }

    /// Sets the session's bandwidth to what the policy gives now, and
    /// notes when the timetable changes it next.
    pub(crate) fn judge_bandwidth(&mut self) {
        let policy = &self.config.policy;
        let rate = match policy.session_bandwidth(&self.conditions, self.now) {
            transfer_core::Bandwidth::Unlimited => None,
            transfer_core::Bandwidth::Paused => Some(0),
            transfer_core::Bandwidth::Limited(n) => Some(n),
        };
        self.bandwidth_change = policy.timetable.as_ref().map(|t| t.at(self.now).1);
        self.actions.push_back(Action::Bandwidth(rate));
    }

    /// Claims `task` in the background: the answer comes back through
    /// [`Core::handle_claimed`].
    pub(crate) fn claim(&mut self, task: TaskId) {
        if let Some(sh) = &mut self.shared {
            sh.claiming.insert(task);
            self.actions.push_back(Action::Claim(task));
        }
    }

    /// The queue's pass reached `id` with `verdict`, in a shared session.
    pub(crate) fn pump_shared(&mut self, id: TaskId, verdict: Verdict) {
        let now = self.now;
        let Some(sh) = &self.shared else {
            return;
        };
        if sh.held.contains(&id) {
            self.event(id, Event::Admission(verdict));
            return;
        }
        // Only the holder of a task's claim writes its record.
        match verdict {
            Verdict::Run(_) if sh.may_claim(id, now) => self.claim(id),
            // Waiting for conditions, here alone (nothing written), so that
            // a session with nothing it may run is idle.
            Verdict::Wait(reason) if reason.is_policy() && reason.wake_at().is_none() => {
                if let Some(r) = self.records.get_mut(&id) {
                    change_state(&mut self.busy_records, &mut r.state, |s| {
                        s.phase = Phase::Waiting(reason);
                    });
                }
            }
            _ => {}
        }
    }

    /// Whether `event` for `id` is not this process's to apply (another
    /// holds the task): only a timer that makes it a candidate again is
    /// taken, here alone.
    pub(crate) fn not_ours(&mut self, id: TaskId, event: &Event) -> bool {
        let Some(sh) = &self.shared else {
            return false;
        };
        let lost = sh.lost.contains(&id);
        // A user's change of a task not held here is a request (see
        // `Core::handle_user`): it never reaches here.
        if lost || !sh.held.contains(&id) {
            if matches!(event, Event::Timer) && !lost {
                self.wake_here(id);
            }
            return true;
        }
        false
    }

    /// A task another process may hold, woken by its timer: queued here if
    /// that is where the timer takes it, and nothing written.
    fn wake_here(&mut self, id: TaskId) {
        let Some(record) = self.records.get(&id) else {
            return;
        };
        if let Ok((state, _)) = apply(&record.state, Event::Timer, self.now)
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

    /// Applies one event; its record is saved and its effects carried out
    /// at the next commit.
    pub(crate) fn event(&mut self, id: TaskId, event: Event) {
        let now = self.now;
        if self.not_ours(id, &event) {
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
            if let TaskKind::Download { destination } = &record.spec.kind
                && self.owners.get(destination) == Some(&id)
            {
                self.owners.remove(destination);
            }
        }
        let label = record.spec.label.clone();
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
            self.release(id);
        }
        for effect in effects {
            match effect {
                Effect::Persist => {
                    self.pending.dirty.insert(id);
                }
                Effect::Complete(outcome) => {
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
}
