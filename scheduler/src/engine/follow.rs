//! Sessions shared by several processes, as the core decides them: which
//! tasks this process may claim, write and run, and how the other
//! processes' changes found in the store are taken in.
//!
//! A process runs a task, and writes its record, only while it holds the
//! task's claim (the claims themselves are renewed and released by
//! `leases.rs`). Times are the session clock's, like every other timer.

use std::collections::HashSet;

use transfer_core::{Completion, Event, Phase, Snapshot, TaskId, TaskKind, TaskRecord, WaitReason};

use super::core::{Action, Core, Delivery, IdMap, change_state, ended_elsewhere, queue_key};

/// Whether this process knows the task ended and `theirs` says it has not:
/// a stale write (the same task never starts again once ended).
fn ended_here(ours: Option<&TaskRecord>, theirs: &TaskRecord) -> bool {
    ours.is_some_and(|o| o.state.is_terminal()) && !theirs.state.is_terminal()
}

impl<W> Core<W> {
    /// Completions left undelivered in the outbox at attach: whoever claims
    /// their task delivers them (this process, if their own died).
    pub(crate) fn claim_outbox(&mut self, outbox: &[Completion]) {
        let now = self.now;
        for c in outbox {
            if self
                .shared
                .as_ref()
                .is_some_and(|s| s.may_claim(c.task, now))
            {
                self.claim(c.task);
            }
        }
    }

    /// Releases the claims of tasks this process no longer has in hand: no
    /// attempt runs or waits to start, the record is durable (this runs
    /// after a commit), and any completion has been acknowledged.
    pub(crate) fn release_claims(&mut self) {
        let Some(sh) = &mut self.shared else {
            return;
        };
        let mut done: Vec<TaskId> = sh
            .held
            .iter()
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
        done.sort_unstable();
        for t in done {
            sh.held.remove(&t);
            self.actions.push_back(Action::ReleaseClaim(t));
        }
    }

    /// The claims of completions still to be acknowledged, taken out of
    /// the held ones (the session shuts down: they go with the delivery).
    pub(crate) fn take_unacked_claims(&mut self) -> Vec<TaskId> {
        let Some(sh) = &mut self.shared else {
            return Vec::new();
        };
        let unacked = &sh.unacked;
        let mut taken: Vec<TaskId> = sh.held.extract_if(|t| unacked.contains(t)).collect();
        taken.sort_unstable();
        taken
    }

    /// A claim attempt's answer: `got` says whether this process holds the
    /// claim now, `fresh` what the store said of the task after it (`None`
    /// when it could not be read). The task is started by the next pump
    /// when the store still has it to do, and its completion delivered when
    /// one was left unacknowledged.
    pub(crate) fn handle_claimed(
        &mut self,
        task: TaskId,
        got: bool,
        fresh: Option<(Option<TaskRecord>, Option<Completion>)>,
        generation: u64,
    ) {
        let now = self.now;
        let Some(sh) = &mut self.shared else {
            return;
        };
        sh.claiming.remove(&task);
        let ttl = sh.ttl;
        let mut wanted = sh.wanted.remove(&task).unwrap_or_default();
        let (true, Some((fresh, completion))) = (got, fresh) else {
            // Held elsewhere (or the store did not answer): later.
            if got {
                self.actions.push_back(Action::ReleaseClaim(task));
            }
            sh.retry_at(task, now.saturating_add(ttl / 2));
            for event in wanted {
                self.request(task, event);
            }
            return;
        };
        sh.not_before.remove(&task);
        sh.lost.remove(&task);
        let newer_here = sh.newer_here(task, generation);
        sh.held.insert(task);
        // A request another process left on the record: carried out under
        // this claim, before this process's own.
        if let Some(Some(request)) = fresh.as_ref().map(|r| r.request) {
            wanted.insert(0, request.event());
        }
        if !newer_here {
            match fresh {
                // A task that ended never starts again: a record saying
                // otherwise is a stale write.
                Some(r) if !ended_here(self.record(task), &r) => {
                    // Taken even when the same: an attempt it records as
                    // running (here, before the claim was lost) runs no more.
                    if (self.record(task) != Some(&r)
                        || matches!(r.state.phase, Phase::Running { .. }))
                        && let Some(ended) = self.take_theirs(r, None)
                        && completion.is_none()
                    {
                        // Ended elsewhere since this process last read the
                        // store, its completion already acknowledged there.
                        self.deliver(Delivery::Elsewhere(Box::new(ended)));
                    }
                }
                // Written again from here, under the claim.
                Some(_) => {
                    self.pending.dirty.insert(task);
                }
                None => {
                    self.forget(task);
                }
            }
        }
        // A wait that ended while no process held the task (its holder
        // died backing off) ends now, under this claim: its timer would
        // come after the claim is let go again.
        let due = self.record(task).is_some_and(|r| {
            matches!(&r.state.phase, Phase::Waiting(w) if w.wake_at().is_some_and(|t| t <= now))
        });
        if due {
            self.event(task, Event::Timer);
        }
        if let Some(r) = self.records.get_mut(&task)
            && r.request.take().is_some()
        {
            // Written again without it: it is carried out.
            self.pending.dirty.insert(task);
        }
        for event in wanted {
            self.event(task, event);
        }
        if let Some(done) = completion
            && let Some(sh) = &mut self.shared
            && sh.unacked.insert(done.task)
        {
            // Its process ended before the delegate heard of it.
            self.outcomes.insert(done.task, done.outcome.clone());
            self.deliver(Delivery::Completion(Box::new(done)));
        }
    }

    /// A user's resume, suspend or cancel of a task another process holds:
    /// written as a request on its record for that process, which carries
    /// it out when it reads it (see [`Core::handle_followed`]), or for the
    /// next to claim the task. The record goes out under the epoch last
    /// read here: if the task was taken over since, readers ignore it and
    /// the request is lost; nothing ends on its account here.
    fn request(&mut self, task: TaskId, event: Event) {
        let Some(request) = transfer_core::Request::from_event(&event) else {
            return;
        };
        let Some(r) = self.records.get_mut(&task) else {
            return;
        };
        if r.state.is_terminal() {
            return;
        }
        r.request = Some(request);
        self.pending.dirty.insert(task);
    }

    /// This process holds `task`'s claim under `epoch`: its record here says
    /// so, as the records it writes will (the store's copy and this one
    /// stay equal, so a follow tells a change by another process apart).
    pub(crate) fn handle_epoch(&mut self, task: TaskId, epoch: u64) {
        if !self.shared.as_ref().is_some_and(|s| s.held.contains(&task)) {
            // Let go at once (the store did not answer): nothing is
            // written under it.
            return;
        }
        if let Some(r) = self.records.get_mut(&task) {
            r.epoch = epoch;
        }
    }

    /// The claim on `task` may have lapsed before the commit under way was
    /// written, and its record and completion were taken out of it: what
    /// that commit would have carried out for the task (its completion,
    /// its effects) is dropped, and the task is handled as taken over.
    pub(crate) fn handle_lapsed(&mut self, task: TaskId) {
        let mut unwritten = false;
        if let Some(f) = &mut self.in_flight {
            unwritten = f.pending.completions.iter().any(|c| c.task == task);
            f.pending.completions.retain(|c| c.task != task);
            f.pending.effects.retain(|(id, _)| *id != task);
            f.committing.remove(&task);
            f.wrote.retain(|id| *id != task);
            // Not written again if the commit fails either.
            f.dirty.remove(&task);
            f.discarded.remove(&task);
        }
        self.lose(task, unwritten);
    }

    /// Another process took over a task this process was running: the
    /// attempt stops, and nothing more of it is written here.
    pub(crate) fn handle_claim_lost(&mut self, task: TaskId) {
        self.lose(task, false);
    }

    /// The claim on `task` is lost; `unwritten`: an ending of it was taken
    /// out of the commit under way.
    fn lose(&mut self, task: TaskId, mut unwritten: bool) {
        unwritten |= self.pending.completions.iter().any(|c| c.task == task);
        let Some(sh) = &mut self.shared else {
            return;
        };
        if sh.held.remove(&task) {
            self.actions.push_back(Action::ReleaseClaim(task));
        }
        sh.lost.insert(task);
        // An ending not yet written is not this process's to tell: the
        // holder runs the task again and tells its own.
        sh.unacked.remove(&task);
        self.outcomes.remove(&task);
        if self.running.contains_key(&task) {
            self.actions.push_back(Action::Stop(task));
        }
        self.pending.dirty.remove(&task);
        self.pending.completions.retain(|c| c.task != task);
        self.pending.effects.retain(|(id, _)| *id != task);
        self.deferred.remove(&task);
        self.release(task);
        if let Some(old) = self.records.get(&task) {
            let key = queue_key(old);
            // An ending here that was never written: as far as the session
            // knows the task goes on, and its destination stays its own.
            let ended = old.state.is_terminal();
            if let TaskKind::Download { destination } = &old.spec.kind
                && ended
            {
                self.owners.entry(destination.clone()).or_insert(task);
            }
            self.queue_remove(&key);
            if ended
                && unwritten
                && let Some(r) = self.records.get_mut(&task)
            {
                // Not ended as far as the store knows: taken for queued
                // until it says otherwise (so its record from the store is
                // not mistaken for a stale write).
                change_state(&mut self.busy_records, &mut r.state, |s| {
                    s.phase = Phase::Queued;
                });
            }
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

    /// Takes the other processes' changes from the store (`snapshot`, as
    /// loaded after commit `generation`, and `foreign`, the records they
    /// saved since the last follow, in order): records added, changed or
    /// removed there, completions they left undelivered, and cancellations
    /// or suspensions of tasks this process runs.
    pub(crate) fn handle_followed(
        &mut self,
        generation: u64,
        snapshot: Snapshot,
        foreign: Vec<TaskRecord>,
    ) {
        let now = self.now;
        let Some(sh) = &self.shared else {
            return;
        };
        let mut seen = HashSet::with_capacity(snapshot.records.len());
        let mut user = Vec::new();
        let mut cancelled: Vec<TaskRecord> = Vec::new();
        let mut adopt = Vec::new();
        // What others wrote to tasks this process runs: a user's cancel or
        // suspend (a save here since may have replaced it in the store).
        // The last each task got: a pause then a resume is a resume.
        let mut last: IdMap<TaskRecord> = IdMap::default();
        for r in foreign {
            last.insert(r.id, r);
        }
        let mut last: Vec<TaskRecord> = last.into_values().collect();
        last.sort_unstable_by_key(|r| r.id);
        for r in last {
            // Carried out only under the claim (a claim being tried reads
            // the record again when it is got).
            let running_here = sh.held.contains(&r.id) && !sh.lost.contains(&r.id);
            let Some(ours) = self.records.get(&r.id).filter(|_| running_here) else {
                continue;
            };
            if ours.state.is_terminal() || cancelled.iter().any(|c| c.id == r.id) {
                continue;
            }
            // A user's request from another process: carried out here.
            if let Some(request) = r.request {
                user.push((r.id, request.event()));
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
        for r in snapshot.records {
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
        let mut gone: Vec<TaskId> = self
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
        gone.sort_unstable();
        let mut undelivered = Vec::new();
        for c in &snapshot.outbox {
            if !sh.mine(c.task) && !sh.unacked.contains(&c.task) && sh.may_claim(c.task, now) {
                undelivered.push(c.task);
            }
        }
        for id in gone {
            self.forget(id);
        }
        for r in adopt {
            let done = snapshot.outbox.iter().find(|c| c.task == r.id);
            if let Some(c) = self.take_theirs(r, done) {
                // Others' completions reach this process's event stream
                // (not its delegate: the process that ran the task has it).
                self.deliver(Delivery::Elsewhere(Box::new(c)));
            }
        }
        for (id, event) in user {
            self.event(id, event);
        }
        for r in cancelled {
            let id = r.id;
            if self.running.contains_key(&id) {
                self.actions.push_back(Action::Stop(id));
            }
            self.release(id);
            self.forget(id);
            self.adopt(r);
            // Saved again from here: the store has it last as cancelled.
            self.pending.dirty.insert(id);
            if let Some(c) = snapshot.outbox.iter().find(|c| c.task == id)
                && let Some(sh) = &mut self.shared
                && sh.unacked.insert(id)
            {
                self.outcomes.insert(id, c.outcome.clone());
                self.deliver(Delivery::Completion(Box::new(c.clone())));
            }
        }
        for task in undelivered {
            self.claim(task);
        }
    }
}
