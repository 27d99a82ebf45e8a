//! What waits for a commit: the changes of the next batch ([`Pending`])
//! and the batch being committed ([`InFlight`]).

use std::collections::BTreeSet;

use transfer_core::{Completion, Effect, TaskId, TaskRecord};

use super::ids::{IdMap, IdSet};

/// Changes waiting for the next commit, and what waits for it.
pub(crate) struct Pending<W> {
    /// Something in this batch must be durable before it is acted on (a
    /// checkpoint's offset); replies, completions and removals are too.
    pub(crate) durable: bool,
    pub(crate) dirty: BTreeSet<TaskId>,
    pub(crate) removed: Vec<TaskId>,
    pub(crate) completions: Vec<Completion>,
    pub(crate) effects: Vec<(TaskId, Effect)>,
    /// Callers waiting for the commit, each with the task it creates if
    /// it enqueued one (that task is forgotten if the commit fails).
    pub(crate) after: Vec<(Option<TaskId>, W)>,
    /// Tasks this batch creates: none starts before its record exists.
    pub(crate) created: IdSet,
}

impl<W> Default for Pending<W> {
    fn default() -> Self {
        Pending {
            durable: false,
            dirty: BTreeSet::new(),
            removed: Vec::new(),
            completions: Vec::new(),
            effects: Vec::new(),
            after: Vec::new(),
            created: IdSet::default(),
        }
    }
}

/// A commit under way, and what waits for it.
pub(crate) struct InFlight<W> {
    /// The tasks whose completions it records.
    pub(crate) committing: IdSet,
    /// The tasks with effects that wait for it, and the tasks it creates.
    pub(crate) held_effects: IdSet,
    /// Replies that wait for it, beside the batch's own.
    pub(crate) after_committing: Vec<W>,
    /// The records it writes (written again after a failure).
    pub(crate) dirty: BTreeSet<TaskId>,
    /// The records it removes (removed again after a failure).
    pub(crate) removed: Vec<TaskId>,
    /// The tasks whose record it saves.
    pub(crate) wrote: Vec<TaskId>,
    /// The records of tasks whose partial its effects discard, as they were
    /// (the task may be replaced by its key meanwhile).
    pub(crate) discarded: IdMap<TaskRecord>,
    /// The batch's own changes and waiters.
    pub(crate) pending: Pending<W>,
}

/// A commit that failed, and when it is tried again.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Backoff {
    /// Failures in a row.
    pub(crate) failures: u32,
    /// No commit before then.
    pub(crate) until: Option<transfer_core::Timestamp>,
}

impl Backoff {
    /// The wait after the `failures`th failure in a row: 100 ms, doubled
    /// each time, at most 30 s.
    pub(crate) fn delay(failures: u32) -> std::time::Duration {
        let ms = 100u64.saturating_mul(1 << failures.saturating_sub(1).min(9));
        std::time::Duration::from_millis(ms.min(30_000))
    }
}
