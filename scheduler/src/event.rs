//! What a session tells, in order ([`SessionEvent`]).

use transfer_core::{Completion, Progress, RestartReason, TaskId, WaitReason};

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
}
