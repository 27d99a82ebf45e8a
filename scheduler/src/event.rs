//! What a session tells, in order ([`SessionEvent`]).

use std::time::Duration;

use transfer_core::{Completion, Progress, RestartReason, StoreErrorKind, TaskId, WaitReason};

/// What happens in a session, in order, for [`Session::events`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SessionEvent {
    /// Bytes moved.
    Progress {
        /// The task.
        task: TaskId,
        /// How far it is.
        progress: Progress,
    },
    /// A task waits, for a reason.
    Waiting {
        /// The task.
        task: TaskId,
        /// Why.
        reason: WaitReason,
    },
    /// A task discarded its partial and starts from zero.
    Restarted {
        /// The task.
        task: TaskId,
        /// Why.
        reason: RestartReason,
    },
    /// A task ended (recorded in the outbox before this is sent).
    Completed(Box<Completion>),
    /// Nothing runs or waits to run, and every event has been delivered.
    Idle,
    /// The task store could not record a batch of changes (a full disk,
    /// an unreachable bucket): nothing the batch covers is acted on (no
    /// start, no completion), and it is tried again in `retry_in`. Tasks
    /// enqueued in it were not recorded: their `enqueue` failed with the
    /// same error.
    StoreFailed {
        /// What kind of failure.
        kind: StoreErrorKind,
        /// The store's error, in words.
        message: String,
        /// When the batch is tried again.
        retry_in: Duration,
    },
}
