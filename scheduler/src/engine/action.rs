//! What the core hands out to its driver ([`Action`]), and what goes on to
//! the delivery task ([`Delivery`]).

use std::sync::Arc;

use transfer_core::{Completion, RequestMetrics, TaskId, TaskRecord, Throttle};

use crate::{SessionConfig, SessionError, SessionEvent};

/// What the delivery side hands on, in order.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// An event for the stream, with the record when the delegate hears of
    /// it too.
    Event(SessionEvent, Option<Box<TaskRecord>>),
    /// A request's metrics, for the delegate.
    Metrics(Box<TaskRecord>, Box<RequestMetrics>),
    /// A durable completion, for the delegate and then the stream.
    Completion(Box<Completion>),
    /// The session became idle, as change number `.0`.
    Idle(u64),
    /// A task another process ran has ended: for the event stream only.
    Elsewhere(Box<Completion>),
}

/// Whether the session is idle, as of change `gen`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdleLevel {
    pub(crate) generation: u64,
    pub(crate) idle: bool,
}

/// An attempt to start: what its runner needs of the task.
#[derive(Debug)]
pub(crate) struct Start {
    pub(crate) record: Arc<TaskRecord>,
    pub(crate) attempt: u32,
    pub(crate) throttle: Throttle,
    /// The task waited before this attempt: the delegate's `will_begin`
    /// hears of it first.
    pub(crate) delayed: bool,
    pub(crate) config: Arc<SessionConfig>,
}

/// What the core asks its driver to do, in order.
pub(crate) enum Action<W> {
    /// Start a runner for this attempt.
    Start(Start),
    /// Stop the task's running attempt at its next chunk, whichever it is.
    Stop(TaskId),
    /// Stop that attempt only (a later one may run).
    Abort { task: TaskId, attempt: u32 },
    /// Change the running attempt's rates.
    Throttle { task: TaskId, throttle: Throttle },
    /// The task's attempt no longer holds a slot: stop it if it still runs,
    /// and let go of it.
    Release(TaskId),
    /// Delete the task's partial payload (its record as it was).
    Discard(Box<TaskRecord>),
    /// Hand on to the delegate and the event stream.
    Deliver(Delivery),
    /// Answer a caller, with the result of the commit it waited for.
    Reply(W, Result<(), SessionError>),
    /// The session's idle level changed.
    Idle(IdleLevel),
    /// The session's bandwidth is now this (`None`: unlimited).
    Bandwidth(Option<u64>),
    /// The network path changed: connections may move.
    NetworkChanged,
    /// Try to claim the task (shared sessions).
    Claim(TaskId),
    /// Let go of the task's claim (shared sessions).
    ReleaseClaim(TaskId),
}

impl<W> std::fmt::Debug for Action<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Start(s) => write!(f, "Start({}, {})", s.record.id, s.attempt),
            Action::Stop(t) => write!(f, "Stop({t})"),
            Action::Abort { task, attempt } => write!(f, "Abort({task}, {attempt})"),
            Action::Throttle { task, .. } => write!(f, "Throttle({task})"),
            Action::Release(t) => write!(f, "Release({t})"),
            Action::Discard(r) => write!(f, "Discard({})", r.id),
            Action::Deliver(d) => write!(f, "Deliver({d:?})"),
            Action::Reply(_, r) => write!(f, "Reply({})", r.is_ok()),
            Action::Idle(l) => write!(f, "Idle({l:?})"),
            Action::Bandwidth(b) => write!(f, "Bandwidth({b:?})"),
            Action::NetworkChanged => write!(f, "NetworkChanged"),
            Action::Claim(t) => write!(f, "Claim({t})"),
            Action::ReleaseClaim(t) => write!(f, "ReleaseClaim({t})"),
        }
    }
}
