//! Group commit: the changes a batch of events made, written in one commit,
//! and what waits for that commit (starts, completions, replies).
//!
//! Nothing a batch covers is acted on before its commit is done, except
//! starts, which are deferrable (a crash before their record is written
//! only means the task starts again): a task whose only effects are starts
//! starts while the batch commits, so a slot freed by a completion is filled
//! without waiting for that completion's sync.

use transfer_core::{Batch, Completion, Effect, StoreError, TaskId, TaskRecord};

use super::core::{Action, Core, IdMap, IdSet};
use super::pending::{Backoff, InFlight};
use crate::SessionError;

/// Records whose deferrable changes may wait for the next durable commit
/// before they are written (deferrably) anyway.
const DEFER_LIMIT: usize = 4096;

pub(crate) fn clone_error(e: &SessionError) -> SessionError {
    match e {
        SessionError::Store(s) => SessionError::Store(StoreError::new(s.kind(), s.to_string())),
        other => SessionError::Internal(other.to_string()),
    }
}

impl<W> Core<W> {
    /// Takes what is pending into a commit. Returns the batch to write, or
    /// `None` when nothing need be written now: then what waited has been
    /// handed out already (as [`Core::poll_action`]s), unless a failed
    /// commit is backing off, when everything stays pending.
    ///
    /// Changes nobody waits on and that record no checkpoint or ending (a
    /// start, a wait, a retry's backoff) are not written at once but with
    /// the next durable commit (or deferrably, once [`DEFER_LIMIT`] have
    /// gathered): a crash may lose them, and the task then does again what
    /// they recorded.
    pub(crate) fn begin_commit(&mut self) -> Option<Batch> {
        debug_assert!(self.in_flight.is_none(), "one commit at a time");
        self.start_early();
        if self.backoff.until.is_some_and(|t| t > self.now) {
            // The last commit failed: nothing it covers is acted on until
            // the retry has made it durable.
            return None;
        }
        let mut pending = std::mem::take(&mut self.pending);
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
            || !pending.completions.is_empty()
            || !self.deferred.is_empty()
        {
            let mut dirty = std::mem::take(&mut self.deferred);
            dirty.append(&mut pending.dirty);
            // Sized once: a record is most of a kilobyte.
            let mut save = Vec::with_capacity(dirty.len());
            // Nothing is written of a task whose claim was lost but a
            // request (another process holds it now).
            let lost = self.shared.as_ref().map(|s| &s.lost);
            save.extend(
                dirty
                    .iter()
                    .filter_map(|id| self.records.get(id))
                    .filter(|r| r.request.is_some() || !lost.is_some_and(|l| l.contains(&r.id)))
                    .map(|r| TaskRecord::clone(r)),
            );
            let removed = std::mem::take(&mut pending.removed);
            let batch = Batch {
                save,
                remove: removed.clone(),
                complete: pending.completions.clone(),
                deferrable,
                ..Batch::default()
            };
            let mut held_effects: IdSet = pending.effects.iter().map(|(id, _)| *id).collect();
            held_effects.extend(pending.created.iter().copied());
            // A discard needs the record even if the task is replaced (same
            // key) while the commit is under way.
            let discarded = pending
                .effects
                .iter()
                .filter(|(_, e)| *e == Effect::DiscardPartial)
                .filter_map(|(id, _)| Some((*id, TaskRecord::clone(self.records.get(id)?))))
                .collect();
            let wrote = batch.save.iter().map(|r| r.id).collect();
            self.in_flight = Some(InFlight {
                committing: batch.complete.iter().map(|c| c.task).collect(),
                held_effects,
                after_committing: Vec::new(),
                dirty,
                removed,
                wrote,
                discarded,
                pending,
            });
            return Some(batch);
        }
        self.carry_out(pending.effects, pending.completions, IdMap::default());
        for (_, w) in pending.after {
            self.actions.push_back(Action::Reply(w, Ok(())));
        }
        self.release_claims();
        None
    }

    /// The commit [`Core::begin_commit`] handed out is done, with `result`:
    /// what waited for it is handed out. After a failure nothing it covers
    /// is acted on: the tasks it created are forgotten (their callers are
    /// told why), and the rest stays pending, tried again after a backoff.
    pub(crate) fn end_commit(&mut self, result: Result<(), StoreError>) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        if let Err(e) = result {
            self.commit_failed(f, e);
            return;
        }
        self.backoff = Backoff::default();
        let InFlight {
            after_committing,
            wrote,
            discarded,
            pending,
            ..
        } = f;
        if let Some(sh) = &mut self.shared {
            sh.committed(wrote);
        }
        for w in after_committing {
            self.actions.push_back(Action::Reply(w, Ok(())));
        }
        self.carry_out(pending.effects, pending.completions, discarded);
        for (_, w) in pending.after {
            self.actions.push_back(Action::Reply(w, Ok(())));
        }
        self.release_claims();
    }

    /// A commit failed: see [`Core::end_commit`].
    fn commit_failed(&mut self, f: InFlight<W>, e: StoreError) {
        tracing::error!(error = %e, "could not persist task records");
        let InFlight {
            after_committing,
            mut dirty,
            mut removed,
            mut pending,
            ..
        } = f;
        // Tasks this batch created never existed durably: forgotten, as if
        // never enqueued (nothing of them has started), and their callers
        // told why.
        let created = std::mem::take(&mut pending.created);
        for &id in &created {
            self.release(id);
            self.forget(id);
            self.outcomes.remove(&id);
            self.delayed.remove(&id);
            self.responses.remove(&id);
        }
        dirty.retain(|id| !created.contains(id));
        pending.effects.retain(|(id, _)| !created.contains(id));
        pending.completions.retain(|c| !created.contains(&c.task));
        let error = SessionError::Store(StoreError::new(e.kind(), e.to_string()));
        let mut after = Vec::with_capacity(pending.after.len());
        for (creates, w) in std::mem::take(&mut pending.after) {
            match creates {
                Some(id) if created.contains(&id) => {
                    self.actions
                        .push_back(Action::Reply(w, Err(clone_error(&error))));
                }
                _ => after.push((creates, w)),
            }
        }
        after.extend(after_committing.into_iter().map(|w| (None, w)));
        // The rest waits for the retry, before what came since.
        let mut later = std::mem::take(&mut self.pending);
        pending.durable = true;
        pending.dirty = dirty;
        pending.dirty.append(&mut later.dirty);
        removed.append(&mut later.removed);
        pending.removed = removed;
        pending.completions.append(&mut later.completions);
        pending.effects.append(&mut later.effects);
        after.append(&mut later.after);
        pending.after = after;
        pending.created = later.created;
        self.pending = pending;
        self.backoff.failures += 1;
        let wait = Backoff::delay(self.backoff.failures);
        self.backoff.until = Some(self.now.saturating_add(wait));
        self.deliver(super::core::Delivery::Event(
            crate::SessionEvent::StoreFailed {
                kind: e.kind(),
                message: e.to_string(),
                retry_in: wait,
            },
            None,
        ));
    }

    /// Carries out a committed batch's effects, then hands on its
    /// completions.
    fn carry_out(
        &mut self,
        effects: Vec<(TaskId, Effect)>,
        completions: Vec<Completion>,
        mut discarded: IdMap<TaskRecord>,
    ) {
        for (id, effect) in effects {
            if effect == Effect::DiscardPartial {
                // Before any later start: a new attempt must not open the
                // partial that this discard would then delete under it.
                let record = discarded
                    .remove(&id)
                    .or_else(|| self.records.get(&id).map(|r| TaskRecord::clone(r)));
                if let Some(record) = record {
                    self.actions.push_back(Action::Discard(Box::new(record)));
                }
                continue;
            }
            self.effect(id, effect);
        }
        for c in completions {
            self.deliver(super::core::Delivery::Completion(Box::new(c)));
        }
    }

    /// Carries out now the starts of pending tasks whose only effects are
    /// starts (taking them out of the pending effects), unless effects of
    /// the batch being committed still wait to be carried out for the task
    /// (a discard, an abort: those go first), or the task is created by the
    /// pending batch or by the one being committed (its record must exist
    /// first).
    pub(crate) fn start_early(&mut self) {
        let mut early = only_starts(&self.pending.effects);
        let held = self.in_flight.as_ref().map(|f| &f.held_effects);
        early.retain(|id| {
            !held.is_some_and(|h| h.contains(id)) && !self.pending.created.contains(id)
        });
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
