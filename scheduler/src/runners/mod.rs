//! Runners: one attempt of one task each, started by the engine and
//! reporting back to it. Downloads are in `download.rs`, plain and
//! multipart uploads in `upload.rs`, resumable uploads in `resumable.rs`.
//!
//! A runner never touches the task record itself: it reports runner events
//! ([`Report`]) and the engine decides.

use std::sync::Arc;

use http::{Request, StatusCode, Uri};
use tokio::sync::{oneshot, watch};
use transfer_core::{
    Delegate, ErrorKind, Event, PayloadStore, RedirectDecision, RedirectHook, RequestBody,
    ResumeData, SessionId, TaskId, TaskRecord, TaskSpec, Throttle, TransferError, Transport,
    TransportRequest,
};

use crate::command::{Inbox, Report};
use crate::throttle::Bucket;
use crate::{Clock, SessionConfig};

mod download;
pub(crate) mod resumable;
mod upload;

/// Asks the session's delegate about each redirect of the task.
struct DelegateRedirects {
    record: Arc<TaskRecord>,
    delegate: Arc<dyn Delegate>,
}

#[async_trait::async_trait]
impl RedirectHook for DelegateRedirects {
    async fn redirect(&self, from: &Uri, to: &Uri, _status: StatusCode) -> RedirectDecision {
        self.delegate.redirect(&self.record, from, to).await
    }
}

/// What every runner of a session shares, made once per session.
pub(crate) struct Handles {
    pub(crate) session: SessionId,
    pub(crate) payloads: Arc<dyn PayloadStore>,
    pub(crate) clock: Clock,
    /// Where reports go.
    pub(crate) inbox: Inbox,
    /// The session's own rate, shared by all its transfers.
    pub(crate) session_bucket: Arc<Bucket>,
    pub(crate) delegate: Arc<dyn Delegate>,
    /// The delegate follows tasks ([`Delegate::follows_tasks`], asked once
    /// by the engine): it wants metrics.
    pub(crate) follows: bool,
}

/// One attempt: the session's handles, and what is this attempt's own.
pub(crate) struct Attempt {
    pub(crate) handles: Arc<Handles>,
    /// The session's settings when the attempt started.
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) task: TaskId,
    pub(crate) attempt: u32,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) throttle: watch::Receiver<Throttle>,
    /// The task as it was when the attempt started: its spec and resume
    /// data, and what delegate calls are given.
    pub(crate) record: Arc<TaskRecord>,
    /// The task waited before this attempt (earliest begin, conditions,
    /// backoff, a pause): the delegate's `will_begin` hears of it first.
    pub(crate) delayed: bool,
    /// In a shared session, the claim the attempt runs under: nothing is
    /// put in place (a multipart upload completed, a file moved) once it
    /// may have lapsed.
    pub(crate) fence: Option<Arc<crate::command::Fence>>,
}

impl Attempt {
    /// What the task asks for.
    pub(crate) fn spec(&self) -> &TaskSpec {
        &self.record.spec
    }

    /// Fails when the attempt's claim may have lapsed (see [`Attempt::fence`]).
    pub(crate) fn check_claim(&self) -> Result<(), TransferError> {
        match &self.fence {
            Some(f) if !f.fresh() => Err(TransferError::new(
                ErrorKind::StorageUnavailable,
                "the claim on the task may have lapsed: the payload is not put in place",
            )),
            _ => Ok(()),
        }
    }

    /// Where the attempt starts from.
    pub(crate) fn resume(&self) -> &ResumeData {
        &self.record.state.resume
    }

    pub(crate) fn send(&self, event: Event) {
        self.handles.inbox.report(Report::Event {
            task: self.task,
            event,
            ack: None,
        });
    }

    /// Sends an event and waits until the engine has made its effects
    /// durable (a restart must be recorded before new bytes are written).
    pub(crate) async fn send_durably(&self, event: Event) -> Result<(), TransferError> {
        let (tx, rx) = oneshot::channel();
        self.handles.inbox.report(Report::Event {
            task: self.task,
            event,
            ack: Some(tx),
        });
        rx.await
            .map_err(|_| TransferError::new(ErrorKind::Storage, "session stopped"))
    }

    /// Runs the attempt to its end and reports how it ended.
    pub(crate) async fn run(mut self) {
        let outcome = match self.begin().await {
            Ok(Some(request)) if self.spec().kind.is_download() => self.download(&request).await,
            Ok(Some(request)) => self.upload(&request).await,
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        // The ending first: when the runner is done, the engine already
        // knows how the attempt ended (a shared session releases the task's
        // claim only then).
        match outcome {
            Ok(Some(bytes)) => self.send(Event::Finished {
                attempt: self.attempt,
                bytes,
            }),
            Ok(None) => {} // stopped on request, after a checkpoint
            Err(error) => {
                tracing::debug!(task = %self.task, attempt = self.attempt, %error, "attempt failed");
                self.send(Event::AttemptFailed {
                    attempt: self.attempt,
                    error,
                });
            }
        }
        self.handles.inbox.report(Report::Done {
            task: self.task,
            attempt: self.attempt,
        });
    }

    /// `request` with the session's timeouts and redirect rules, and the
    /// delegate asked about each redirect.
    pub(crate) fn with_options(&self, request: Request<RequestBody>) -> TransportRequest {
        let mut request = TransportRequest::new(request);
        request.options.timeouts = self.config.timeouts;
        request.options.redirects = self.config.redirects;
        request.options.protocol = crate::protocol_for(self.spec(), &self.config);
        request.redirect_hook = Some(Arc::new(DelegateRedirects {
            record: self.record.clone(),
            delegate: self.handles.delegate.clone(),
        }));
        request
    }

    /// Paces a request body at the task's and the session's rates.
    pub(crate) fn pacer(&self) -> Arc<dyn transfer_core::Pacer> {
        Arc::new(self.body_pacer())
    }

    /// A body's pacer: a fresh bucket for the task, the session's shared.
    fn body_pacer(&self) -> crate::throttle::BodyPacer {
        crate::throttle::BodyPacer::new(self.handles.session_bucket.clone(), self.throttle.clone())
    }

    /// Tells the engine which proxy, if any, `response` came through.
    pub(crate) fn report_proxy(&self, response: &transfer_core::TransportResponse) {
        self.handles.inbox.report(Report::Proxy {
            task: self.task,
            attempt: self.attempt,
            proxy: response.metrics.proxy.clone(),
        });
    }

    /// Hands a finished request's metrics to the delegate (in order, after
    /// the task's earlier events), unless it follows no task.
    pub(crate) fn report_metrics(&self, metrics: transfer_core::RequestMetrics) {
        if !self.handles.follows {
            return;
        }
        self.handles.inbox.report(Report::Metrics {
            task: self.task,
            metrics: Box::new(metrics),
        });
    }
}
