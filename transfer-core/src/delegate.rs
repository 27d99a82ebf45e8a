//! The [`Delegate`]: how the application hears about its tasks, as
//! URLSession's delegate does. Every method has a default that does nothing
//! (or allows), so a delegate implements only what it needs; one that needs
//! none of the calls about a task's course (progress, waiting, metrics)
//! says so with [`Delegate::follows_tasks`], and is spared their cost.

use async_trait::async_trait;
use http::Uri;

use crate::admission::WaitReason;
use crate::record::{Completion, TaskRecord};
use crate::transport::{RedirectDecision, RequestMetrics};

/// Which way bytes flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes received and written to the payload store.
    Download,
    /// Bytes sent from the source file.
    Upload,
}

/// A progress report, coalesced by the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Download or upload.
    pub direction: Direction,
    /// Bytes moved since the previous report.
    pub delta: u64,
    /// Bytes written (downloads) or sent (uploads) in total.
    pub total: u64,
    /// Bytes expected in total, when known.
    pub expected: Option<u64>,
}

/// What to do with a task about to begin after a delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeginDecision {
    /// Go ahead with the (possibly rewritten) request.
    Continue,
    /// Cancel the task instead.
    Cancel,
}

/// Receives a session's task events. Calls for one task arrive in order.
#[async_trait]
pub trait Delegate: Send + Sync {
    /// Bytes moved. Not called when [`follows_tasks`](Self::follows_tasks)
    /// is `false`.
    async fn progress(&self, _task: &TaskRecord, _progress: Progress) {}

    /// The task waits, for `reason` (called when the reason changes). Not
    /// called when [`follows_tasks`](Self::follows_tasks) is `false`.
    async fn waiting(&self, _task: &TaskRecord, _reason: &WaitReason) {}

    /// A task that waited (earliest begin, policy, backoff) is about to begin;
    /// the request may be rewritten (e.g. a fresh token) or the task cancelled.
    async fn will_begin(
        &self,
        _task: &TaskRecord,
        _request: &mut http::request::Parts,
    ) -> BeginDecision {
        BeginDecision::Continue
    }

    /// A redirect allowed by the session's policy is about to be followed.
    async fn redirect(&self, _task: &TaskRecord, _from: &Uri, _to: &Uri) -> RedirectDecision {
        RedirectDecision::Follow
    }

    /// Metrics of a finished request. Not called when
    /// [`follows_tasks`](Self::follows_tasks) is `false`.
    async fn metrics(&self, _task: &TaskRecord, _metrics: &RequestMetrics) {}

    /// The task ended. The completion is acknowledged when this returns, and
    /// delivered again after a restart if the process died before that.
    async fn completed(&self, _completion: &Completion) {}

    /// No task is running or queued and every pending event was delivered.
    async fn session_idle(&self) {}

    /// Whether this delegate wants [`progress`](Self::progress),
    /// [`waiting`](Self::waiting) and [`metrics`](Self::metrics). Each of
    /// those calls carries a copy of the task's record as it was when the
    /// event happened; a delegate that implements none of them returns
    /// `false`, and the session neither makes the copies nor calls them.
    /// Asked once, when the session starts.
    fn follows_tasks(&self) -> bool {
        true
    }
}

/// A delegate that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDelegate;

#[async_trait]
impl Delegate for NoDelegate {
    fn follows_tasks(&self) -> bool {
        false
    }
}
