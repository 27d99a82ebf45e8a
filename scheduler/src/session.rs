//! A running session ([`Session`]) and its tasks ([`TaskHandle`]): enqueue,
//! list, listen, resume, suspend, cancel, wait, shut down.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::{broadcast, oneshot, watch};
use transfer_core::{Event, Outcome, ResumeData, SessionId, TaskId, TaskRecord, TaskSpec};

use crate::command::{Command, Request};
use crate::engine::IdleLevel;
use crate::{SessionError, SessionEvent};

pub(crate) struct Inner {
    pub(crate) id: SessionId,
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<Command>,
    pub(crate) events: broadcast::Sender<SessionEvent>,
    pub(crate) gone: watch::Receiver<bool>,
    pub(crate) idle: watch::Receiver<IdleLevel>,
}

/// A running session. Clone it freely; it stops when
/// [`shutdown`](Self::shutdown) is called or the process ends.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The session's identifier.
    pub fn id(&self) -> &SessionId {
        &self.inner.id
    }

    /// Enqueues a task from a full specification.
    pub async fn enqueue(&self, spec: TaskSpec, start: bool) -> Result<TaskHandle, SessionError> {
        self.enqueue_many(vec![spec], start)
            .await?
            .pop()
            .ok_or(SessionError::Closed)
    }

    /// Enqueues many tasks at once: they are recorded in as few commits as
    /// the store allows (one per batch of up to 1,024), not one each.
    pub async fn enqueue_many(
        &self,
        specs: Vec<TaskSpec>,
        start: bool,
    ) -> Result<Vec<TaskHandle>, SessionError> {
        let mut replies = Vec::with_capacity(specs.len());
        for mut spec in specs {
            crate::stamp_source(&mut spec).await?;
            let (reply, rx) = oneshot::channel();
            self.send(Request::Enqueue {
                spec: Box::new(spec),
                start,
                reply,
            })?;
            replies.push(rx);
        }
        let mut handles = Vec::with_capacity(replies.len());
        for rx in replies {
            let id = rx.await.map_err(|_| SessionError::Closed)??;
            handles.push(self.task(id));
        }
        Ok(handles)
    }

    /// A handle for a task known to this session.
    pub fn task(&self, id: TaskId) -> TaskHandle {
        TaskHandle {
            id,
            session: self.clone(),
        }
    }

    /// Every task of the session, in enqueue order.
    pub async fn tasks(&self) -> Result<Vec<TaskRecord>, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Tasks(reply))?;
        rx.await.map_err(|_| SessionError::Closed)
    }

    /// The session's events from now on (progress, waits, restarts,
    /// completions, idle). A subscriber that falls more than 4,096 events
    /// behind skips the oldest.
    pub fn events(&self) -> impl Stream<Item = SessionEvent> + Send + 'static {
        let rx = self.inner.events.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "event subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Changes the session's rate limit (bytes per second for all its
    /// transfers together; `None`: unlimited, `Some(0)`: paused). Running
    /// transfers pace at the new rate from their next chunk.
    pub fn set_rate_limit(&self, rate: Option<u64>) -> Result<(), SessionError> {
        self.send(Request::SessionRate(rate))
    }

    /// Waits until the session is idle: nothing runs or waits to run, and
    /// every event up to then has been delivered. Unlike
    /// [`SessionEvent::Idle`], sent once each time the session becomes idle,
    /// this returns at once when the session is idle already, so it cannot
    /// miss an idle that happened before the call. Fails with
    /// [`SessionError::Closed`] when the session stops first.
    pub async fn wait_idle(&self) -> Result<(), SessionError> {
        let mut idle = self.inner.idle.clone();
        let mut gone = self.inner.gone.clone();
        tokio::select! {
            r = idle.wait_for(|level| level.idle) => r.map(|_| ()).map_err(|_| SessionError::Closed),
            _ = gone.wait_for(|g| *g) => Err(SessionError::Closed),
        }
    }

    /// Stops every running attempt at a checkpoint, records it, and stops
    /// the session. Tasks continue from there when the session is built again.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.send(Request::Shutdown(done)).is_ok() {
            let _ = rx.await;
        }
        // Wait for the delivery task too: then the store is released and a
        // new session can open it.
        let mut gone = self.inner.gone.clone();
        let _ = gone.wait_for(|g| *g).await;
    }

    pub(crate) fn send(&self, r: Request) -> Result<(), SessionError> {
        self.inner
            .tx
            .send(Command::Request(r))
            .map_err(|_| SessionError::Closed)
    }

    pub(crate) async fn user(&self, task: TaskId, event: Event) -> Result<(), SessionError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::User { task, event, reply })?;
        rx.await.map_err(|_| SessionError::Closed)?
    }
}

/// A task of a session.
#[derive(Clone, Debug)]
pub struct TaskHandle {
    pub(crate) id: TaskId,
    pub(crate) session: Session,
}

impl TaskHandle {
    /// The task's identifier.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Starts or continues the task.
    pub async fn resume(&self) -> Result<(), SessionError> {
        self.session.user(self.id, Event::Resume).await
    }

    /// Stops the task (at a checkpoint) until resumed.
    pub async fn suspend(&self) -> Result<(), SessionError> {
        self.session.user(self.id, Event::Suspend).await
    }

    /// Cancels the task and deletes its partial.
    pub async fn cancel(&self) -> Result<(), SessionError> {
        self.session
            .user(
                self.id,
                Event::Cancel {
                    keep_resume_data: false,
                },
            )
            .await
    }

    /// Cancels the task, keeps its partial, and returns its resume data.
    pub async fn cancel_producing_resume_data(&self) -> Result<Option<ResumeData>, SessionError> {
        self.session
            .user(
                self.id,
                Event::Cancel {
                    keep_resume_data: true,
                },
            )
            .await?;
        Ok(self.snapshot().await?.map(|r| r.state.resume))
    }

    /// The task's record as it is now.
    pub async fn snapshot(&self) -> Result<Option<TaskRecord>, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.session.send(Request::Snapshot {
            task: self.id,
            reply,
        })?;
        rx.await.map_err(|_| SessionError::Closed)
    }

    /// Waits until the task ends and returns how.
    pub async fn wait(&self) -> Result<Outcome, SessionError> {
        use futures::StreamExt;
        let mut events = Box::pin(self.session.events());
        if let Some(outcome) = self.outcome().await? {
            return Ok(outcome);
        }
        while let Some(e) = events.next().await {
            if let SessionEvent::Completed(c) = e
                && c.task == self.id
            {
                return Ok(c.outcome.clone());
            }
        }
        Err(SessionError::Closed)
    }

    /// How the task ended, or `None` while it has not.
    pub async fn outcome(&self) -> Result<Option<Outcome>, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.session.send(Request::Ended {
            task: self.id,
            reply,
        })?;
        rx.await.map_err(|_| SessionError::Closed)?
    }
}
