//! Changing a session's state while nothing runs it: add tasks, suspend,
//! resume or cancel them, list them. The same state machine decides; the
//! changes are committed to the store, and the next [`Session`](crate::Session)
//! built on it carries on from there.

use std::collections::HashMap;
use std::sync::Arc;

use transfer_core::{
    Batch, Claims, Completion, Destination, Effect, Event, EventId, PayloadStore, Request,
    SessionId, TaskId, TaskKind, TaskRecord, TaskSpec, TaskStore, Timestamp, apply,
};

use crate::engine::new_record;
use crate::keys::KeyRule;
use crate::{SessionConfig, SessionError};

/// A session's state, changed without running it. Only one process may hold
/// a store at a time: use this when no [`Session`](crate::Session) is running
/// on the same store.
pub struct Offline {
    session: SessionId,
    store: Arc<dyn TaskStore>,
    payloads: Arc<dyn PayloadStore>,
    config: SessionConfig,
    /// Set for a session other processes run (see [`Offline::shared`]).
    claims: Option<Arc<dyn Claims>>,
}

/// What [`Offline::user`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserChange {
    /// The change is made and recorded.
    Made,
    /// Another process holds the task: the change is left on its record as
    /// a request, which that process carries out when it next reads the
    /// session (and tells the ending, for a cancel).
    Requested,
}

impl std::fmt::Debug for Offline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offline")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

impl Offline {
    /// The session `id` in `store`, with `payloads` for discarding partials.
    pub fn new(
        id: &str,
        store: Arc<dyn TaskStore>,
        payloads: Arc<dyn PayloadStore>,
        config: SessionConfig,
    ) -> Result<Offline, SessionError> {
        Ok(Offline {
            session: SessionId::new(id)?,
            store,
            payloads,
            config,
            claims: None,
        })
    }

    /// For a session that other processes run with `claims`: a change is
    /// made under the task's claim, like every change they make, or left
    /// as a request for the process that holds it.
    pub fn shared(mut self, claims: Arc<dyn Claims>) -> Offline {
        self.claims = Some(claims);
        self
    }

    /// Every task, in enqueue order.
    pub async fn tasks(&self) -> Result<Vec<TaskRecord>, SessionError> {
        let snap = self
            .store
            .load(&self.session)
            .await
            .map_err(SessionError::Store)?;
        let mut records = snap.records;
        records.sort_by_key(|r| (r.seq, r.id));
        Ok(records)
    }

    /// Records a task, queued to run when a session next runs (or returns
    /// the unfinished task with the same key).
    pub async fn enqueue(&self, spec: TaskSpec) -> Result<TaskId, SessionError> {
        let ids = self.enqueue_many(vec![spec]).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| SessionError::Internal("no task recorded".into()))
    }

    /// Records many tasks in one commit (each returns the unfinished task
    /// with its key, if there is one).
    pub async fn enqueue_many(
        &self,
        mut specs: Vec<TaskSpec>,
    ) -> Result<Vec<TaskId>, SessionError> {
        for spec in &mut specs {
            crate::stamp_source(spec).await?;
        }
        let records = self.tasks().await?;
        let t = now();
        let mut seq = records.iter().map(|r| r.seq + 1).max().unwrap_or(0);
        // Each key names one task at a time: (its id, whether it has ended).
        let mut keys: HashMap<String, (TaskId, bool)> = records
            .iter()
            .filter_map(|r| Some((r.spec.key.clone()?, crate::keys::holder(r))))
            .collect();
        // Each destination is owned by one unfinished download at a time.
        let mut owners: HashMap<Destination, TaskId> = records
            .iter()
            .filter(|r| !r.state.is_terminal())
            .filter_map(|r| match &r.spec.kind {
                TaskKind::Download { destination } => Some((destination.clone(), r.id)),
                _ => None,
            })
            .collect();
        let mut batch = Batch::default();
        let mut ids = Vec::with_capacity(specs.len());
        for spec in specs {
            match crate::keys::rule(spec.key.as_ref().and_then(|k| keys.get(k).copied())) {
                KeyRule::Return(old) => {
                    ids.push(old);
                    continue;
                }
                KeyRule::Replace(old) => batch.remove.push(old),
                KeyRule::Fresh => {}
            }
            // Random: a running session, or other processes sharing the
            // store, draw ids too.
            let id = TaskId::from_u64(transfer_core::random_u64());
            if let TaskKind::Download { destination } = &spec.kind {
                if let Some(&task) = owners.get(destination) {
                    return Err(SessionError::destination_taken(destination, task));
                }
                owners.insert(destination.clone(), id);
            }
            if let Some(key) = &spec.key {
                keys.insert(key.clone(), (id, false));
            }
            let record = new_record(id, seq, spec, &self.config, id.as_u64(), true, t)?;
            batch.save.push(record);
            seq += 1;
            ids.push(id);
        }
        self.store
            .commit(&self.session, batch)
            .await
            .map_err(SessionError::Store)?;
        Ok(ids)
    }

    /// Applies a user event (resume, suspend, cancel) and commits its
    /// effects: the record, a completion in the outbox, a discarded partial.
    /// In a shared session (see [`Offline::shared`]) the task's claim is
    /// taken first; when another process holds it, the change is left as a
    /// request on its record instead.
    pub async fn user(&self, task: TaskId, event: Event) -> Result<UserChange, SessionError> {
        let claim = match &self.claims {
            Some(claims) => match claims
                .try_claim(&self.session, task)
                .await
                .map_err(SessionError::Store)?
            {
                Some(claim) => Some(claim),
                None => return self.request(task, &event).await,
            },
            None => None,
        };
        let made = self
            .make(task, event, claim.as_ref().map_or(0, |c| c.epoch()))
            .await;
        if let Some(claim) = claim
            && let Err(e) = claim.release().await
        {
            tracing::debug!(%task, error = %e, "could not release the claim");
        }
        made.map(|()| UserChange::Made)
    }

    /// Leaves `event` as a request on the task's record, for the process
    /// that holds it.
    async fn request(&self, task: TaskId, event: &Event) -> Result<UserChange, SessionError> {
        let request = Request::from_event(event)
            .ok_or_else(|| SessionError::Internal(format!("{event:?} is not a user's change")))?;
        let mut record = self
            .tasks()
            .await?
            .into_iter()
            .find(|r| r.id == task)
            .ok_or(SessionError::UnknownTask(task))?;
        record.request = Some(request);
        let batch = Batch {
            save: vec![record],
            ..Batch::default()
        };
        self.store
            .commit(&self.session, batch)
            .await
            .map_err(SessionError::Store)?;
        Ok(UserChange::Requested)
    }

    /// Makes the change, written under `epoch` (the claim's, or 0).
    async fn make(&self, task: TaskId, event: Event, epoch: u64) -> Result<(), SessionError> {
        let records = self.tasks().await?;
        let record = records
            .into_iter()
            .find(|r| r.id == task)
            .ok_or(SessionError::UnknownTask(task))?;
        let t = now();
        let (state, effects) =
            apply(&record.state, event, t).map_err(|e| SessionError::Internal(e.to_string()))?;
        let mut record = record;
        record.state = state;
        record.epoch = record.epoch.max(epoch);
        record.request = None;
        let mut batch = Batch {
            save: vec![record.clone()],
            ..Batch::default()
        };
        let mut discard = false;
        for e in effects {
            match e {
                Effect::Complete(outcome) => batch.complete.push(Completion {
                    event: EventId::from_u64(t.as_millis() << 12 | (task.as_u64() & 0xfff)),
                    task,
                    label: record.spec.label.clone(),
                    at: t,
                    outcome,
                    response: None,
                }),
                Effect::DiscardPartial => discard = true,
                _ => {}
            }
        }
        self.store
            .commit(&self.session, batch)
            .await
            .map_err(SessionError::Store)?;
        if discard && let TaskKind::Download { destination } = &record.spec.kind {
            let destination: &Destination = destination;
            if let Err(e) = self
                .payloads
                .discard(
                    &self.session,
                    task,
                    destination,
                    record.state.resume.partial.as_ref(),
                )
                .await
            {
                tracing::warn!(%task, error = %e, "could not discard the partial");
            }
        }
        Ok(())
    }
}
