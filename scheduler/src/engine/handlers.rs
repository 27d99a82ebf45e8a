//! What the core is told: requests from the API, runners' reports, news
//! of conditions and acknowledgements, and the time. Each handler changes
//! the core's state; what must be done comes out as actions.

use std::sync::Arc;

use transfer_core::{
    Conditions, Event, Outcome, Phase, RequestMetrics, ResponseSummary, TaskId, TaskSpec,
};

use super::core::{Action, Core, Delivery, ended_elsewhere, keeps_busy, new_record, queue_key};
use crate::SessionError;

/// When [`Core::ended`]'s answer may be given.
pub(crate) enum EndedWait {
    /// Now.
    Now,
    /// Once the commit under way is done (it records the ending).
    InFlight,
    /// Once the next commit is done (the ending is pending).
    Pending,
}

impl<W> Core<W> {
    /// Adds a task (or, by its key, finds the unfinished one it repeats),
    /// recorded with the next commit; no attempt starts before that.
    pub(crate) fn handle_enqueue(
        &mut self,
        spec: TaskSpec,
        start: bool,
    ) -> Result<TaskId, SessionError> {
        let holder = spec.key.as_ref().and_then(|k| self.keys.get(k).copied());
        match crate::keys::rule(
            holder
                .and_then(|id| self.record(id))
                .map(crate::keys::holder),
        ) {
            crate::keys::KeyRule::Return(old) => {
                if start
                    && self
                        .record(old)
                        .is_some_and(|r| r.state.phase == Phase::Suspended)
                {
                    self.event(old, Event::Resume);
                }
                return Ok(old);
            }
            crate::keys::KeyRule::Replace(old) => {
                self.refuse_taken(&spec, Some(old))?;
                if let Some(r) = self.records.remove(&old) {
                    self.busy_records -= usize::from(keeps_busy(&r.state.phase));
                    self.queue_remove(&queue_key(&r));
                }
                self.hosts.remove(&old);
                self.pending.dirty.remove(&old);
                self.pending.removed.push(old);
            }
            crate::keys::KeyRule::Fresh => {
                self.refuse_taken(&spec, None)?;
            }
        }
        let id = TaskId::from_u64(self.fresh_id());
        let seq = self.next_seq;
        self.next_seq += 1;
        let seed = transfer_core::RandomSource::next_u64(&mut self.jitter);
        let record = new_record(id, seq, spec, &self.config, seed, start, self.now)?;
        if let Some(d) = record.state.deadline() {
            self.set_timer(id, d);
        }
        self.insert_record(record);
        self.pending.dirty.insert(id);
        self.pending.created.insert(id);
        self.was_idle = false;
        Ok(id)
    }

    /// A user's resume, suspend or cancel; `false` for a task this session
    /// does not have.
    pub(crate) fn handle_user(&mut self, task: TaskId, event: Event) -> bool {
        if !self.records.contains_key(&task) {
            return false;
        }
        if let Some(sh) = &mut self.shared
            && !sh.held.contains(&task)
        {
            // Written under the task's claim, like every other change: the
            // claim is asked for first (see `Core::handle_claimed`).
            sh.wanted.entry(task).or_default().push(event);
            if !sh.claiming.contains(&task) {
                self.claim(task);
            }
            return true;
        }
        self.event(task, event);
        true
    }

    /// A runner's event about its attempt.
    pub(crate) fn handle_report(&mut self, task: TaskId, event: Event) {
        // A checkpoint's offset is what a restart resumes from.
        self.pending.durable |= matches!(event, Event::Checkpoint { .. });
        // Whether a failure is retried can depend on the session's policy.
        let event = match event {
            Event::AttemptFailed { attempt, error } => Event::AttemptFailed {
                attempt,
                error: self.config.policy.judge_failure(error),
            },
            other => other,
        };
        if let Event::AttemptFailed { error, .. } = &event
            && error.kind() == transfer_core::ErrorKind::TooManyOpenFiles
        {
            self.squeeze_descriptors();
        }
        self.event(task, event);
    }

    /// A runner has stopped: its slot is free if it still held one.
    pub(crate) fn handle_runner_done(&mut self, task: TaskId, attempt: u32) {
        if let Some(sh) = &mut self.shared {
            sh.runner_done(task);
        }
        if self
            .running
            .get(&task)
            .is_some_and(|r| r.attempt == attempt)
        {
            self.release(task);
        }
    }

    /// The session's rate limit changes.
    pub(crate) fn handle_session_rate(&mut self, rate: Option<u64>) {
        let mut config = (*self.config).clone();
        config.policy.rate_limit = rate;
        self.config = Arc::new(config);
        self.handle_conditions(self.conditions);
    }

    /// Network and power conditions are now `c`: running tasks are judged
    /// again (waiting ones by the next [`Core::pump`]).
    pub(crate) fn handle_conditions(&mut self, c: Conditions) {
        if c.network != self.conditions.network && c.network.is_connected() {
            // A new path: QUIC connections move to it at once.
            self.actions.push_back(Action::NetworkChanged);
        }
        self.conditions = c;
        self.judge_bandwidth();
        let running: Vec<TaskId> = self.running.keys().copied().collect();
        for id in running {
            if let Some(v) = self.verdict(id, true) {
                self.event(id, Event::Admission(v));
            }
        }
    }

    /// The server's answer to an upload attempt, kept for its completion.
    pub(crate) fn handle_response(
        &mut self,
        task: TaskId,
        attempt: u32,
        response: Box<ResponseSummary>,
    ) {
        if self
            .running
            .get(&task)
            .is_some_and(|r| r.attempt == attempt)
        {
            self.responses.insert(task, response);
        }
    }

    /// The proxy the running attempt's response came through: the record
    /// keeps it when it changes.
    pub(crate) fn handle_proxy(&mut self, task: TaskId, attempt: u32, proxy: Option<String>) {
        if self
            .running
            .get(&task)
            .is_some_and(|r| r.attempt == attempt)
            && let Some(r) = self.records.get_mut(&task)
            && r.state.proxy != proxy
        {
            r.state.proxy = proxy;
            self.pending.dirty.insert(task);
        }
    }

    /// A request's metrics, handed on with the record (sent only when the
    /// delegate follows tasks).
    pub(crate) fn handle_metrics(&mut self, task: TaskId, metrics: Box<RequestMetrics>) {
        if let Some(r) = self.records.get(&task) {
            let d = Delivery::Metrics(r.clone(), metrics);
            self.deliver(d);
        }
    }

    /// These tasks' completions were acknowledged.
    pub(crate) fn handle_acknowledged(&mut self, tasks: Vec<TaskId>) {
        if let Some(sh) = &mut self.shared {
            for t in tasks {
                sh.unacked.remove(&t);
            }
        }
    }

    /// How `task` ended (if it has), and when that may be said: an ending
    /// is told only once it is durable.
    pub(crate) fn ended(&self, task: TaskId) -> (Result<Option<Outcome>, SessionError>, EndedWait) {
        let Some(r) = self.records.get(&task) else {
            return (Err(SessionError::UnknownTask(task)), EndedWait::Now);
        };
        if self.shared.as_ref().is_some_and(|s| s.lost.contains(&task)) {
            // Taken over: its record here may say an ending that was never
            // written. Not ended, as far as this process may know, until
            // the store says how it is.
            return (Ok(None), EndedWait::Now);
        }
        let outcome = self.outcomes.get(&task).cloned().or_else(|| {
            // Ended before this process (its completion was acknowledged):
            // what the record says.
            r.state.is_terminal().then(|| ended_elsewhere(r).outcome)
        });
        let wait = if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.committing.contains(&task))
        {
            EndedWait::InFlight
        } else if self.pending.completions.iter().any(|c| c.task == task) {
            if self.backoff.until.is_some() {
                // Its ending could not be recorded yet (the store fails):
                // not ended, as far as anyone may know; its completion
                // event comes once a retry has recorded it.
                return (Ok(None), EndedWait::Now);
            }
            EndedWait::Pending
        } else {
            EndedWait::Now
        };
        (Ok(outcome), wait)
    }

    /// Keeps `w` until the next commit is done, then hands it back with
    /// that commit's result.
    pub(crate) fn after_commit(&mut self, w: W) {
        self.pending.after.push((None, w));
    }

    /// Keeps `w`, the caller that enqueued `task`, until the next commit is
    /// done: told the commit's error if it fails (the task is then
    /// forgotten).
    pub(crate) fn after_enqueue(&mut self, task: TaskId, w: W) {
        self.pending.after.push((Some(task), w));
    }

    /// Keeps `w` until the commit under way is done (at once without one).
    pub(crate) fn after_in_flight(&mut self, w: W) {
        match &mut self.in_flight {
            Some(f) => f.after_committing.push(w),
            None => self.actions.push_back(Action::Reply(w, Ok(()))),
        }
    }

    /// Sends `Event::Timer` to every task whose time has come, judges the
    /// running tasks again when the timetable has changed, and lets the
    /// claims due be tried again.
    pub(crate) fn handle_timers(&mut self) {
        let now = self.now;
        if let Some(sh) = &mut self.shared {
            // The claims due are tried by the pass of the queue that follows.
            sh.retries_due(now);
        }
        if self.bandwidth_change.is_some_and(|t| t <= now) {
            self.handle_conditions(self.conditions);
        }
        while let Some(&(at, task)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.event(task, Event::Timer);
        }
    }
}
