//! Shared sessions in the simulation: claims with a time to live and a
//! fencing epoch, renewed while their process runs and taken over once it
//! falls silent; follows of the others' changes; processes paused and
//! woken.

use std::time::Duration;

use transfer_core::{Batch, Snapshot, TaskId, TaskRecord, Timestamp};

use super::Violation;
use super::world::{TTL, World};

/// A claim as the store has it.
pub(crate) struct Lease {
    /// The process holding it.
    holder: u64,
    /// One more with each new holder.
    epoch: u64,
    /// When its holder last renewed it.
    renewed: Timestamp,
    released: bool,
}

/// A claim as its process holds it.
#[derive(Clone, Copy)]
pub(crate) struct Held {
    pub(super) epoch: u64,
    /// When the last renewal that succeeded began.
    renewed: Timestamp,
}

fn since(now: Timestamp, then: Timestamp) -> Duration {
    Duration::from_millis(now.as_millis().saturating_sub(then.as_millis()))
}

/// Whether writing under `h` is still safe at `now`: renewed less than two
/// thirds of the time to live ago (the driver's `Fence::fresh`).
fn fresh(h: &Held, now: Timestamp) -> bool {
    since(now, h.renewed) < TTL * 2 / 3
}

impl World {
    /// One random step of one of the processes, then every process settles.
    pub(super) fn shared_step(&mut self, faults: bool) -> Result<(), Violation> {
        self.w = self.roll(self.workers.len() as u64) as usize;
        if let Some(until) = self.workers[self.w].paused_until {
            if until > self.now {
                // Still stopped: time passes for the others.
                let ms = 1 + self.roll(500);
                self.advance(ms);
                return self.settle_all();
            }
            self.wake();
        }
        match self.roll(100) {
            0..=11 => self.enqueue(),
            12..=43 => self.run_some(faults)?,
            44..=47 if faults => self.change_source(),
            48..=52 => self.user(),
            53..=56 if faults => self.fail_some_commits(),
            57..=58 if faults => self.crash(),
            59..=68 => self.answer_claims(faults),
            69..=78 => self.follow(),
            79..=80 if faults => self.pause(),
            _ => {
                let ms = 1 + self.roll(500);
                self.advance(ms);
            }
        }
        self.settle_all()
    }

    /// Every process that is not paused settles.
    pub(super) fn settle_all(&mut self) -> Result<(), Violation> {
        let current = self.w;
        for w in 0..self.workers.len() {
            self.w = w;
            self.settle()?;
        }
        self.w = current;
        Ok(())
    }

    /// The current process stops for up to three times the time to live.
    fn pause(&mut self) {
        let ms = 1 + self.roll(3 * TTL.as_millis() as u64);
        let until = self.now.saturating_add(Duration::from_millis(ms));
        self.workers[self.w].paused_until = Some(until);
        self.report.faults += 1;
        self.note(format!("paused for {ms} ms"));
    }

    /// The current process goes on: its clock jumps, and its renewals may
    /// run before or after its next commit and its runners' next writes.
    pub(super) fn wake(&mut self) {
        let w = self.w;
        self.workers[w].paused_until = None;
        self.note("wakes".to_owned());
        let now = self.now;
        self.workers[w].core.handle_time(now);
        self.workers[w].core.handle_timers();
        if self.roll(2) == 0 {
            self.renew(w);
        }
    }

    /// Process `w`'s claims that are due are renewed; those whose deadline
    /// passed, or that another process took, are lost.
    pub(super) fn renew(&mut self, w: usize) {
        let now = self.now;
        let identity = self.workers[w].identity;
        let mut due: Vec<(TaskId, Held)> = self.workers[w]
            .held
            .iter()
            .filter(|(_, h)| since(now, h.renewed) >= TTL / 3)
            .map(|(t, h)| (*t, *h))
            .collect();
        due.sort_unstable_by_key(|(t, _)| *t);
        for (task, held) in due {
            let renewed = fresh(&held, now)
                && self
                    .leases
                    .as_mut()
                    .and_then(|l| l.get_mut(&task))
                    .filter(|l| l.holder == identity && l.epoch == held.epoch && !l.released)
                    .map(|l| l.renewed = now)
                    .is_some();
            if renewed {
                if let Some(h) = self.workers[w].held.get_mut(&task) {
                    h.renewed = now;
                }
                continue;
            }
            self.workers[w].held.remove(&task);
            let current = self.w;
            self.w = w;
            self.note(format!("{task}: claim lost"));
            self.w = current;
            self.workers[w].core.handle_claim_lost(task);
        }
    }

    /// Whether the current process may write for `task` now (a runner
    /// checks before it writes or puts a file in place).
    pub(super) fn claim_fresh(&self, task: TaskId) -> bool {
        if !self.shared() {
            return true;
        }
        self.workers[self.w]
            .held
            .get(&task)
            .is_some_and(|h| fresh(h, self.now))
    }

    /// No task runs in two places at once: the runner of `task` about to
    /// write runs under the newest claim.
    pub(super) fn check_one_runner(&self, task: TaskId) -> Result<(), Violation> {
        let Some(leases) = &self.leases else {
            return Ok(());
        };
        let worker = &self.workers[self.w];
        let mine = worker.runners.get(&task).and_then(|r| r.epoch);
        if let Some(l) = leases.get(&task)
            && mine.is_none_or(|e| e < l.epoch)
            && l.holder != worker.identity
        {
            return Err(self.violation(format!(
                "{task} runs in two places: w{} writes under epoch {mine:?} while another process holds epoch {}",
                self.w, l.epoch
            )));
        }
        Ok(())
    }

    /// As the driver before a commit: each record written under a claim is
    /// stamped with its epoch, and those whose claim may have lapsed are
    /// taken out, with their completions. Returns those tasks.
    pub(super) fn fence(&self, batch: &mut Batch) -> Vec<TaskId> {
        if !self.shared() {
            return Vec::new();
        }
        let held = &self.workers[self.w].held;
        let mut lapsed = Vec::new();
        batch.save.retain_mut(|r| match held.get(&r.id) {
            Some(h) if fresh(h, self.now) => {
                r.epoch = h.epoch;
                true
            }
            Some(_) => {
                lapsed.push(r.id);
                false
            }
            None => true,
        });
        batch.complete.retain(|c| !lapsed.contains(&c.task));
        lapsed
    }

    /// Lets go of a claim (a conditional write: only if it is still this
    /// process's).
    pub(super) fn release_claim(&mut self, task: TaskId) {
        let worker = &mut self.workers[self.w];
        let Some(held) = worker.held.remove(&task) else {
            return;
        };
        if let Some(l) = self.leases.as_mut().and_then(|l| l.get_mut(&task))
            && l.holder == worker.identity
            && l.epoch == held.epoch
        {
            l.released = true;
        }
    }

    /// Tries the lease of `task` for the current process: free, released,
    /// or silent for a whole time to live (a takeover). Its epoch if taken.
    fn try_lease(&mut self, task: TaskId) -> Option<u64> {
        let identity = self.workers[self.w].identity;
        let now = self.now;
        let leases = self.leases.as_mut()?;
        let (epoch, takeover) = match leases.get(&task) {
            None => (1, false),
            Some(l) if l.released => (l.epoch + 1, false),
            Some(l) if since(now, l.renewed) >= TTL => (l.epoch + 1, true),
            Some(_) => return None,
        };
        leases.insert(
            task,
            Lease {
                holder: identity,
                epoch,
                renewed: now,
                released: false,
            },
        );
        if takeover {
            self.report.takeovers += 1;
            self.note(format!("{task}: taken over under epoch {epoch}"));
        }
        Some(epoch)
    }

    /// The current process's claim attempts are answered: the lease tried,
    /// then the task read again from the store (which may not answer).
    pub(super) fn answer_claims(&mut self, faults: bool) {
        let asks = std::mem::take(&mut self.workers[self.w].claiming);
        for task in asks {
            let got = self.try_lease(task);
            // The commits counted before the store is read.
            let generation = self.workers[self.w]
                .core
                .shared
                .as_ref()
                .map_or(0, |s| s.commits);
            let fresh = if faults && self.roll(10) == 0 {
                None
            } else {
                Some((
                    self.disk.records.get(&task).cloned(),
                    self.disk.outbox.values().find(|c| c.task == task).cloned(),
                ))
            };
            self.note(format!("claim {task}: {got:?}"));
            let now = self.now;
            let worker = &mut self.workers[self.w];
            worker
                .core
                .handle_claimed(task, got.is_some(), fresh, generation);
            if let Some(epoch) = got {
                worker.held.insert(
                    task,
                    Held {
                        epoch,
                        renewed: now,
                    },
                );
                worker.core.handle_epoch(task, epoch);
            }
        }
    }

    /// The current process reads the session back: the others' changes.
    pub(super) fn follow(&mut self) {
        let worker = &self.workers[self.w];
        let generation = worker.core.shared.as_ref().map_or(0, |s| s.commits);
        let snapshot = Snapshot {
            records: self.disk.records.values().cloned().collect(),
            outbox: self.disk.outbox.values().cloned().collect(),
        };
        let foreign: Vec<TaskRecord> = self.disk.log[worker.cursor..]
            .iter()
            .filter(|(who, _)| *who != worker.identity)
            .flat_map(|(_, saved)| saved.iter().cloned())
            .collect();
        let worker = &mut self.workers[self.w];
        worker.cursor = self.disk.log.len();
        worker.core.handle_followed(generation, snapshot, foreign);
    }
}
