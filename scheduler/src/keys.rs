//! The idempotency-key rule, written once for every place that enqueues:
//! a task enqueued with a key that an unfinished task holds is that task;
//! a key held by a finished task is taken over by the new one, which
//! replaces it.

use transfer_core::{TaskId, TaskRecord};

/// What enqueueing a task with a key does, given the task that holds the
/// key now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRule {
    /// The unfinished task with this key: nothing new is enqueued.
    Return(TaskId),
    /// A finished task holds the key: it is removed and a new task takes
    /// its place.
    Replace(TaskId),
    /// Nobody holds the key (or there is none): a new task.
    Fresh,
}

/// The rule for a task whose key is held now by `holder`: the holder's id
/// and whether it has ended (`None`: nobody holds the key, or there is
/// none).
pub fn rule(holder: Option<(TaskId, bool)>) -> KeyRule {
    match holder {
        None => KeyRule::Fresh,
        Some((id, true)) => KeyRule::Replace(id),
        Some((id, false)) => KeyRule::Return(id),
    }
}

/// A record as a key's holder, for [`rule`].
pub fn holder(r: &TaskRecord) -> (TaskId, bool) {
    (r.id, r.state.is_terminal())
}
