//! What reaches a session's engine, split by who sends it: requests from
//! the API ([`Request`]), reports from the runners of attempts ([`Report`]),
//! and news of the world outside (conditions, other processes, the
//! delivery of completions: [`News`]).
//!
//! Runners and the background tasks of shared sessions import this module,
//! not the engine: they only send.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use transfer_core::{
    Completion, Conditions, Event, Outcome, RequestMetrics, ResponseSummary, Snapshot, TaskId,
    TaskRecord, TaskSpec,
};

use crate::SessionError;

/// Everything the engine's channel carries.
pub(crate) enum Command {
    /// From the API.
    Request(Request),
    /// From a runner.
    Report(Report),
    /// From outside the engine.
    News(News),
}

/// What the session's API asks of the engine; each carries its reply.
pub(crate) enum Request {
    /// Add a task (or return the unfinished one with its key).
    Enqueue {
        spec: Box<TaskSpec>,
        start: bool,
        reply: oneshot::Sender<Result<TaskId, SessionError>>,
    },
    /// A user's resume, suspend or cancel.
    User {
        task: TaskId,
        event: Event,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// Every record, in enqueue order.
    Tasks(oneshot::Sender<Vec<TaskRecord>>),
    /// One task's record as it is now.
    Snapshot {
        task: TaskId,
        reply: oneshot::Sender<Option<TaskRecord>>,
    },
    /// How a task ended, if it has.
    Ended {
        task: TaskId,
        reply: oneshot::Sender<Result<Option<Outcome>, SessionError>>,
    },
    /// The session's own rate limit changes.
    SessionRate(Option<u64>),
    /// Stop every runner at a checkpoint, then the engine.
    Shutdown(oneshot::Sender<()>),
}

/// What a runner tells the engine about its attempt.
pub(crate) enum Report {
    /// A runner event (progress, checkpoint, restart, ending); `ack` is
    /// answered once its effects are durable.
    Event {
        task: TaskId,
        event: Event,
        ack: Option<oneshot::Sender<()>>,
    },
    /// The runner has stopped (after its last event).
    Done { task: TaskId, attempt: u32 },
    /// The server's answer to an upload attempt, kept for its completion.
    Response {
        task: TaskId,
        attempt: u32,
        response: Box<ResponseSummary>,
    },
    /// Which proxy, if any, an attempt's response came through (kept in
    /// the record, for `ls` and the delegate).
    Proxy {
        task: TaskId,
        attempt: u32,
        proxy: Option<String>,
    },
    /// A request of the task finished: its metrics, for the delegate.
    Metrics {
        task: TaskId,
        metrics: Box<RequestMetrics>,
    },
}

/// What changed outside the engine.
pub(crate) enum News {
    /// Network and power conditions.
    Conditions(Conditions),
    /// A claim attempt's answer (shared sessions).
    Claimed(Box<Claimed>),
    /// Another process took the task's claim (shared sessions).
    ClaimLost(TaskId),
    /// The session as the store has it now (shared sessions).
    Followed(Box<Follow>),
    /// These tasks' completions were acknowledged.
    Acknowledged(Vec<TaskId>),
}

/// The engine's inbox, as those who only send to it hold it.
#[derive(Clone)]
pub(crate) struct Inbox(pub(crate) mpsc::UnboundedSender<Command>);

impl Inbox {
    /// Sends a report; `false` when the engine is gone.
    pub(crate) fn report(&self, report: Report) -> bool {
        self.0.send(Command::Report(report)).is_ok()
    }

    /// Sends news; `false` when the engine is gone.
    pub(crate) fn news(&self, news: News) -> bool {
        self.0.send(Command::News(news)).is_ok()
    }
}

/// What a claim attempt found.
pub(crate) struct Claimed {
    pub(crate) task: TaskId,
    /// The claim, when this process got it.
    pub(crate) claim: Option<Held>,
    /// The task's record as the store has it after the claim, and its
    /// unacknowledged completion; `None` when the store could not be read.
    pub(crate) fresh: Option<(Option<TaskRecord>, Option<Completion>)>,
    /// The commit count before the store was read (see [`Follow`]).
    pub(crate) generation: u64,
}

/// A claim held: renewed in the background until dropped (then released).
pub(crate) struct Held {
    pub(crate) _release: oneshot::Sender<()>,
    /// How fresh the claim is, and its epoch.
    pub(crate) fence: Arc<Fence>,
}

/// What the holder of a claim knows of it: its epoch, and when it was
/// last renewed (time since boot, suspended time included). Nothing is
/// written under the claim once two thirds of its time to live have
/// passed since: others may take it over when the whole time has passed,
/// measured on their clocks.
#[derive(Debug)]
pub(crate) struct Fence {
    /// The claim's fencing epoch, stamped on every record written under it.
    pub(crate) epoch: u64,
    ttl: std::time::Duration,
    /// Milliseconds since boot when the last renewal that succeeded began.
    renewed_ms: std::sync::atomic::AtomicU64,
}

impl Fence {
    /// A claim of `epoch` living `ttl`, asked for at `asked` (time since
    /// boot).
    pub(crate) fn new(epoch: u64, ttl: std::time::Duration, asked: std::time::Duration) -> Fence {
        Fence {
            epoch,
            ttl,
            renewed_ms: std::sync::atomic::AtomicU64::new(millis(asked)),
        }
    }

    /// A renewal asked for at `asked` succeeded.
    pub(crate) fn renewed(&self, asked: std::time::Duration) {
        self.renewed_ms
            .fetch_max(millis(asked), std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether writing under the claim is still safe: its last renewal
    /// began less than two thirds of its time to live ago.
    pub(crate) fn fresh(&self) -> bool {
        let renewed = self.renewed_ms.load(std::sync::atomic::Ordering::Acquire);
        let age = millis(transfer_core::since_boot()).saturating_sub(renewed);
        u128::from(age) < self.ttl.as_millis() * 2 / 3
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The session's state as the store had it, and the commit count read
/// before the load began: records this process wrote in a later commit may
/// be missing or older in it.
pub(crate) struct Follow {
    pub(crate) generation: u64,
    pub(crate) snapshot: Snapshot,
    /// Records other processes saved since the last follow, in order.
    pub(crate) foreign: Vec<TaskRecord>,
}
