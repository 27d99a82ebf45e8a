//! The claims a shared session's process holds, tries and waits for, as
//! the core keeps count of them (the claims themselves are `leases.rs`'s).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use transfer_core::{TaskId, Timestamp};

/// The core's part of a shared session.
pub(crate) struct SharedState {
    /// The claims' time to live.
    pub(crate) ttl: Duration,
    /// Claims held, by task.
    pub(crate) held: HashSet<TaskId>,
    /// Claims being tried.
    pub(crate) claiming: HashSet<TaskId>,
    /// Tasks another process holds: not tried again before then.
    pub(crate) not_before: HashMap<TaskId, Timestamp>,
    /// When those tries come due (some may be moot by then): the engine
    /// wakes to make them.
    retries: BTreeSet<Timestamp>,
    /// Tasks whose claim was lost while running: their record is not
    /// written here until the store says how they are now.
    pub(crate) lost: HashSet<TaskId>,
    /// Runners per task that have not said they are done.
    pub(crate) runners: HashMap<TaskId, usize>,
    /// Tasks whose completion waits for its acknowledgement.
    pub(crate) unacked: HashSet<TaskId>,
    /// Users' resumes, suspends and cancels of tasks this process did not
    /// hold, waiting for the claim: applied under it once it is got, else
    /// written as a request for the holder.
    pub(crate) wanted: HashMap<TaskId, Vec<transfer_core::Event>>,
    /// Commits made so far.
    pub(crate) commits: u64,
    /// The commit after which each record was last written here.
    written: HashMap<TaskId, u64>,
}

impl SharedState {
    pub(crate) fn new(ttl: Duration) -> SharedState {
        SharedState {
            ttl,
            held: HashSet::new(),
            claiming: HashSet::new(),
            not_before: HashMap::new(),
            retries: BTreeSet::new(),
            lost: HashSet::new(),
            runners: HashMap::new(),
            unacked: HashSet::new(),
            wanted: HashMap::new(),
            commits: 0,
            written: HashMap::new(),
        }
    }

    /// Whether this process has the task in hand (claimed, claiming, or
    /// still running an attempt).
    pub(crate) fn mine(&self, task: TaskId) -> bool {
        self.held.contains(&task)
            || self.claiming.contains(&task)
            || self.runners.contains_key(&task)
    }

    /// Whether the task may be claimed at `now`.
    pub(crate) fn may_claim(&self, task: TaskId, now: Timestamp) -> bool {
        !self.mine(task) && self.not_before.get(&task).is_none_or(|t| *t <= now)
    }

    /// Notes that `task` is held elsewhere: tried again at `at`.
    pub(crate) fn retry_at(&mut self, task: TaskId, at: Timestamp) {
        self.not_before.insert(task, at);
        self.retries.insert(at);
    }

    /// When the engine must next wake to try a claim again.
    pub(crate) fn next_retry(&self) -> Option<Timestamp> {
        self.retries.first().copied()
    }

    /// Forgets the retries that have come due.
    pub(crate) fn retries_due(&mut self, now: Timestamp) {
        while self.retries.first().is_some_and(|t| *t <= now) {
            self.retries.pop_first();
        }
    }

    /// Whether a record this process wrote after commit `generation` is
    /// newer than what a load begun then can show.
    pub(crate) fn newer_here(&self, task: TaskId, generation: u64) -> bool {
        self.written.get(&task).is_some_and(|g| *g > generation)
    }

    /// Notes a commit that wrote `tasks`.
    pub(crate) fn committed(&mut self, tasks: impl IntoIterator<Item = TaskId>) {
        self.commits += 1;
        for t in tasks {
            self.written.insert(t, self.commits);
        }
    }

    /// A runner of `task` has stopped.
    pub(crate) fn runner_done(&mut self, task: TaskId) {
        if let Some(n) = self.runners.get_mut(&task) {
            *n -= 1;
            if *n == 0 {
                self.runners.remove(&task);
            }
        }
    }
}
