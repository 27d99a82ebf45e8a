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
    pub(crate) after: Vec<W>,
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
    /// The records it writes (written again after a failure in a shared
    /// session).
    pub(crate) dirty: BTreeSet<TaskId>,
    /// The tasks whose record it saves.
    pub(crate) wrote: Vec<TaskId>,
    /// The records of tasks whose partial its effects discard, as they were
    /// (the task may be replaced by its key meanwhile).
    pub(crate) discarded: IdMap<TaskRecord>,
    /// The batch's own changes and waiters.
    pub(crate) pending: Pending<()>,
    pub(crate) after: Vec<W>,
}
