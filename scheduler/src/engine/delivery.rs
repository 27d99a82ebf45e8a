//! Delivery of what the engine decided to tell: progress and waits to the
//! delegate and the event stream, completions once they are durable (and
//! their acknowledgement once the delegate returns), the session's idle.
//!
//! It runs in a task of its own, in order, so a slow delegate never stalls
//! scheduling.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use transfer_core::{Batch, Delegate, EventId, SessionId, TaskId, TaskStore};

use super::core::{Delivery, IdleLevel};
use crate::SessionEvent;
use crate::command::{Held, Inbox, News};

/// What the delivery task is handed.
pub(crate) enum Message {
    /// Something to tell.
    Deliver(Delivery),
    /// Claims to keep until the completions before them are acknowledged.
    Hold(Vec<Held>),
}

/// How long a delivered completion may wait for its acknowledgement to be
/// written, so that one write acknowledges many: a crash meanwhile delivers
/// it again (as a crash before the acknowledgement always could; this
/// write does not sync anyway, the next durable commit makes it durable).
const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// The delivery task; see the module docs.
pub(crate) struct Deliverer {
    pub(crate) delegate: Arc<dyn Delegate>,
    pub(crate) store: Arc<dyn TaskStore>,
    pub(crate) session: SessionId,
    pub(crate) events: broadcast::Sender<SessionEvent>,
    /// Set once the engine has stopped and the store is released.
    pub(crate) gone: watch::Sender<bool>,
    pub(crate) idle: watch::Sender<IdleLevel>,
    /// Told which tasks' completions were acknowledged.
    pub(crate) engine: Inbox,
}

/// Completions delivered and not yet acknowledged.
#[derive(Default)]
struct Acks {
    events: Vec<EventId>,
    tasks: Vec<TaskId>,
    /// When the first of them was delivered.
    since: Option<tokio::time::Instant>,
}

impl Deliverer {
    /// Delivers what comes from `rx`, in order, until the engine is gone.
    pub(crate) async fn run(self, mut rx: mpsc::UnboundedReceiver<Message>) {
        let mut acks = Acks::default();
        let mut kept = Vec::new();
        loop {
            let next = match acks.since {
                None => rx.recv().await,
                Some(since) => tokio::select! {
                    d = rx.recv() => d,
                    () = tokio::time::sleep_until(since + ACK_DELAY) => {
                        self.acknowledge(&mut acks, true).await;
                        continue;
                    }
                },
            };
            let Some(m) = next else {
                break;
            };
            match m {
                Message::Hold(claims) => kept.extend(claims),
                Message::Deliver(d) => self.deliver(d, &mut acks).await,
            }
            // Acknowledged together, at most [`ACK_DELAY`] after the first.
            if acks.events.len() >= 1024 {
                self.acknowledge(&mut acks, true).await;
            }
        }
        self.acknowledge(&mut acks, false).await;
        drop(kept); // the claims of the completions just acknowledged
        // The engine has stopped: release the store before saying so.
        let Deliverer {
            store,
            delegate,
            gone,
            ..
        } = self;
        drop(store);
        drop(delegate);
        let _ = gone.send(true);
    }

    async fn deliver(&self, d: Delivery, acks: &mut Acks) {
        match d {
            Delivery::Event(event, record) => {
                if let Some(record) = &record {
                    match &event {
                        SessionEvent::Progress { progress, .. } => {
                            self.delegate.progress(record, *progress).await;
                        }
                        SessionEvent::Waiting { reason, .. } => {
                            self.delegate.waiting(record, reason).await;
                        }
                        _ => {}
                    }
                }
                let _ = self.events.send(event);
            }
            Delivery::Metrics(record, metrics) => {
                self.delegate.metrics(&record, &metrics).await;
            }
            Delivery::Completion(c) => {
                self.delegate.completed(&c).await;
                // Subscribers hear of it before the acknowledgement, so a
                // kill in between makes them hear it twice, never not at all.
                acks.events.push(c.event);
                acks.tasks.push(c.task);
                acks.since.get_or_insert_with(tokio::time::Instant::now);
                let _ = self.events.send(SessionEvent::Completed(c));
            }
            Delivery::Elsewhere(c) => {
                let _ = self.events.send(SessionEvent::Completed(c));
            }
            Delivery::Idle(generation) => {
                self.acknowledge(acks, true).await;
                self.delegate.session_idle().await;
                let _ = self.events.send(SessionEvent::Idle);
                // Unless work arrived since (a later change).
                self.idle.send_if_modified(|level| {
                    let newer = level.generation < generation;
                    if newer {
                        *level = IdleLevel {
                            generation,
                            idle: true,
                        };
                    }
                    newer
                });
            }
        }
    }

    /// Removes delivered completions from the outbox; `deferrable` unless
    /// this is the last chance before the store is released.
    async fn acknowledge(&self, acks: &mut Acks, deferrable: bool) {
        if acks.events.is_empty() {
            return;
        }
        let batch = Batch {
            acknowledge: acks.events.clone(),
            deferrable,
            ..Batch::default()
        };
        match self.store.commit(&self.session, batch).await {
            Ok(()) => {
                acks.events.clear();
                acks.since = None;
                let tasks = std::mem::take(&mut acks.tasks);
                self.engine.news(News::Acknowledged(tasks));
            }
            // Kept, and tried again after another delay: until then a shared
            // session keeps the tasks' claims, so no one delivers them again.
            Err(e) => {
                acks.since = Some(tokio::time::Instant::now());
                tracing::error!(error = %e, "could not acknowledge completions");
            }
        }
    }
}
