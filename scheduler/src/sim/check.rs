//! The invariants, checked as the simulation goes and at its end.

use std::collections::HashMap;

use transfer_core::{
    Completion, Destination, Outcome, Phase, TaskId, TaskKind, TaskRecord, WaitReason,
};

use super::Violation;
use super::world::World;

impl World {
    /// A completion reached the current process's delegate.
    pub(super) fn delivered(&mut self, c: &Completion) -> Result<(), Violation> {
        self.report.completions += 1;
        self.note(format!("completed {} {:?}", c.task, c.event));
        if self.acked.contains(&c.event) {
            return Err(self.violation(format!(
                "{} delivered again after its acknowledgement was durable",
                c.task
            )));
        }
        if !self.disk.outbox.contains_key(&c.event) {
            return Err(self.violation(format!(
                "{}'s completion delivered before it was durable",
                c.task
            )));
        }
        let durable_end = self
            .disk
            .records
            .get(&c.task)
            .is_some_and(|r| r.state.is_terminal());
        if !durable_end {
            return Err(self.violation(format!(
                "{}'s completion delivered while its record says it has not ended",
                c.task
            )));
        }
        if let Some(first) = self.endings.insert(c.task, c.event)
            && first != c.event
        {
            return Err(self.violation(format!(
                "{} ended twice: completions {first:?} and {:?}",
                c.task, c.event
            )));
        }
        if let Outcome::Completed { bytes } = &c.outcome {
            let written = self.files.get(&c.task).cloned().unwrap_or_default();
            let mut versions: Vec<u32> = written.iter().map(|w| w.2).collect();
            versions.dedup();
            let contiguous = written.windows(2).all(|p| p[0].1 == p[1].0)
                && written.first().is_none_or(|w| w.0 == 0)
                && written.last().map_or(0, |w| w.1) == *bytes;
            if versions.len() > 1 || !contiguous {
                return Err(self.violation(format!(
                    "{} completed as a splice of versions {versions:?} ({written:?})",
                    c.task
                )));
            }
        }
        // The delegate returns: the acknowledgement is written (durably,
        // at the latest with the next commit).
        self.disk.outbox.remove(&c.event);
        self.acked.insert(c.event);
        self.core().handle_acknowledged(vec![c.task]);
        Ok(())
    }

    /// No two unfinished tasks own one destination: in the session's one
    /// process, or in the store of a shared session (a process's view of
    /// the others' tasks may lag behind it).
    pub(super) fn check_owners(&self) -> Result<(), Violation> {
        let mut seen: HashMap<&Destination, TaskId> = HashMap::new();
        let records: Vec<&TaskRecord> = if self.shared() {
            self.disk.records.values().collect()
        } else {
            self.workers[self.w]
                .core
                .records
                .values()
                .map(|r| &**r)
                .collect()
        };
        for r in records {
            if r.state.is_terminal() {
                continue;
            }
            if let TaskKind::Download { destination } = &r.spec.kind
                && let Some(other) = seen.insert(destination, r.id)
            {
                return Err(
                    self.violation(format!("{other} and {} both own {destination:?}", r.id))
                );
            }
        }
        Ok(())
    }

    /// No partial remains of a task that ended (the simulated users cancel
    /// without keeping resume data).
    fn check_leftovers(&self) -> Result<(), Violation> {
        let ended: Vec<(TaskId, Phase)> = if self.shared() {
            self.disk
                .records
                .values()
                .filter(|r| r.state.is_terminal())
                .map(|r| (r.id, r.state.phase.clone()))
                .collect()
        } else {
            self.workers[0]
                .core
                .records
                .values()
                .filter(|r| r.state.is_terminal())
                .map(|r| (r.id, r.state.phase.clone()))
                .collect()
        };
        for (id, phase) in ended {
            if self.partials.get(&id).is_some_and(|w| !w.is_empty()) {
                return Err(
                    self.violation(format!("{id} ended {phase:?} and left its partial behind"))
                );
            }
        }
        Ok(())
    }

    /// Whether anything is left to do: a task that has not ended (and does
    /// not wait for its user), a commit backing off, endings not yet
    /// carried out, claims not yet answered.
    fn open(&self) -> bool {
        let waits = |phase: &Phase| {
            matches!(
                phase,
                Phase::Suspended | Phase::Waiting(WaitReason::SuspendedByUser)
            )
        };
        let stored = self.shared()
            && self
                .disk
                .records
                .values()
                .any(|r| !r.state.is_terminal() && !waits(&r.state.phase));
        stored
            || self.workers.iter().any(|w| {
                w.core
                    .records
                    .values()
                    .any(|r| !r.state.is_terminal() && !waits(&r.state.phase))
                    || !w.core.pending.dirty.is_empty()
                    || !w.core.pending.effects.is_empty()
                    || !w.core.pending.completions.is_empty()
                    || !w.claiming.is_empty()
            })
    }

    /// Faults stop: every process goes on, and every task ends (or waits
    /// for its user).
    pub(super) fn check_all_end(&mut self) -> Result<(), Violation> {
        for w in 0..self.workers.len() {
            self.workers[w].fail_commits = 0;
            if self.workers[w].paused_until.is_some() {
                self.w = w;
                self.wake();
            }
        }
        for _ in 0..20_000 {
            if !self.open() {
                // The last endings' commits and discards carried out first.
                self.settle_all()?;
                return self.check_leftovers();
            }
            let mut ran = false;
            for w in 0..self.workers.len() {
                self.w = w;
                if self.shared() {
                    self.answer_claims(false);
                    self.follow();
                }
                let runs = !self.workers[w].runners.is_empty();
                if runs {
                    ran = true;
                    self.run_some(false)?;
                }
                if runs || self.shared() {
                    self.settle()?;
                }
            }
            if !ran {
                self.advance(2_000);
                self.settle_all()?;
            }
        }
        let open: Vec<String> = self
            .workers
            .iter()
            .flat_map(|w| w.core.records.values())
            .filter(|r| !r.state.is_terminal())
            .map(|r| format!("{} {:?}", r.id, r.state.phase))
            .collect();
        Err(self.violation(format!("tasks never ended: {open:?}")))
    }
}
