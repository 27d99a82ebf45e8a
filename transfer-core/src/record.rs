//! What a store keeps: a task's record (spec plus state) and completion
//! events in the session's outbox. Both encode to versioned JSON here, so every
//! backend stores the same bytes.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::id::{EventId, TaskId};
use crate::machine::{Event, Outcome, TaskState};
use crate::resume::{DecodeError, decode_versioned, encode_versioned};
use crate::serde_http;
use crate::spec::TaskSpec;
use crate::time::Timestamp;

/// A task as persisted: identity, order, spec and state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's identifier.
    pub id: TaskId,
    /// Enqueue order within the session (ties in priority run in this order).
    pub seq: u64,
    /// When the task was enqueued.
    pub created_at: Timestamp,
    /// What the task does.
    pub spec: TaskSpec,
    /// Where it is.
    pub state: TaskState,
    /// In a shared session, the epoch of the claim its writer held (see
    /// [`Claim::epoch`](crate::Claim::epoch)): a store keeps no record
    /// written under an older epoch than the one it has, so a process whose
    /// claim was taken over writes nothing that counts. 0 elsewhere.
    #[serde(default)]
    pub epoch: u64,
    /// In a shared session, a user's change asked of the task by a process
    /// that did not hold it: the holder (or the next to claim it) applies
    /// it under its claim and tells the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
}

/// What a store that several processes write keeps when `saved` is
/// committed over `stored` (`None`: nothing changes):
/// - a record carrying a [`Request`] changes only the request of the
///   stored record, and nothing once the task has ended (its writer's copy
///   of the rest may be stale);
/// - a record saved under an older claim epoch than the stored one is not
///   kept: its writer's claim was taken over (fencing).
pub fn merge_saved(stored: Option<&TaskRecord>, saved: TaskRecord) -> Option<TaskRecord> {
    if let Some(request) = saved.request {
        let mut merged = stored.filter(|o| !o.state.is_terminal())?.clone();
        merged.request = Some(request);
        return Some(merged);
    }
    if stored.is_some_and(|o| o.epoch > saved.epoch) {
        return None;
    }
    Some(saved)
}

/// A user's change asked of a task held by another process (see
/// [`TaskRecord::request`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Pause it.
    Suspend,
    /// Let it run again.
    Resume,
    /// End it; with `keep_resume_data` its partial is kept.
    Cancel {
        /// Keep the partial and hand its resume data to the completion.
        keep_resume_data: bool,
    },
}

impl Request {
    /// The request a user's event makes, if it is one of these.
    pub fn from_event(event: &Event) -> Option<Request> {
        match event {
            Event::Suspend => Some(Request::Suspend),
            Event::Resume => Some(Request::Resume),
            Event::Cancel { keep_resume_data } => Some(Request::Cancel {
                keep_resume_data: *keep_resume_data,
            }),
            _ => None,
        }
    }

    /// The event that carries it out.
    pub fn event(self) -> Event {
        match self {
            Request::Suspend => Event::Suspend,
            Request::Resume => Event::Resume,
            Request::Cancel { keep_resume_data } => Event::Cancel { keep_resume_data },
        }
    }
}

impl TaskRecord {
    /// The format version [`encode`](Self::encode) writes.
    pub const VERSION: u32 = 1;

    /// Serializes the record (versioned JSON).
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(Self::VERSION, self)
    }

    /// Reads what [`encode`](Self::encode) wrote.
    pub fn decode(bytes: &[u8]) -> Result<TaskRecord, DecodeError> {
        decode_versioned(bytes, Self::VERSION)
    }
}

/// The server's answer to an upload, kept with its completion (bounded body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseSummary {
    /// The final status.
    #[serde(with = "serde_http::status")]
    pub status: StatusCode,
    /// The response headers.
    #[serde(with = "serde_http::headers")]
    pub headers: HeaderMap,
    /// The start of the body, up to the session's limit.
    pub body: Bytes,
}

/// A task's completion, as recorded in the outbox before it is delivered, and
/// delivered again after a restart until the delegate has acknowledged it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The event's identifier in the outbox.
    pub event: EventId,
    /// The task.
    pub task: TaskId,
    /// The task's label.
    pub label: Option<String>,
    /// When the task ended.
    pub at: Timestamp,
    /// How it ended.
    pub outcome: Outcome,
    /// For uploads: the server's answer.
    pub response: Option<ResponseSummary>,
}

impl Completion {
    /// The format version [`encode`](Self::encode) writes.
    pub const VERSION: u32 = 1;

    /// Serializes the completion (versioned JSON).
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(Self::VERSION, self)
    }

    /// Reads what [`encode`](Self::encode) wrote.
    pub fn decode(bytes: &[u8]) -> Result<Completion, DecodeError> {
        decode_versioned(bytes, Self::VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Destination, Phase, RetryPolicy, TaskId};

    fn record(epoch: u64, phase: Phase) -> TaskRecord {
        let spec = TaskSpec::download("https://example.com/a", Destination::Path("a".into()))
            .build()
            .unwrap();
        let mut state = TaskState::new(RetryPolicy::default(), 1);
        state.phase = phase;
        TaskRecord {
            id: TaskId::from_u64(1),
            seq: 0,
            created_at: Timestamp::from_millis(0),
            spec,
            state,
            epoch,
            request: None,
        }
    }

    #[test]
    fn a_request_changes_only_the_request_and_nothing_once_ended() {
        let stored = record(3, Phase::Running { attempt: 2 });
        // The requester's copy is stale (older epoch, older phase).
        let mut asked = record(1, Phase::Queued);
        asked.request = Some(Request::Cancel {
            keep_resume_data: false,
        });
        let merged = merge_saved(Some(&stored), asked.clone()).unwrap();
        assert_eq!(merged.state.phase, Phase::Running { attempt: 2 });
        assert_eq!(merged.epoch, 3);
        assert_eq!(merged.request, asked.request);
        let ended = record(3, Phase::Completed);
        assert_eq!(merge_saved(Some(&ended), asked.clone()), None);
        assert_eq!(merge_saved(None, asked), None);
    }

    #[test]
    fn a_save_from_an_older_epoch_is_not_kept() {
        let stored = record(3, Phase::Running { attempt: 2 });
        assert_eq!(
            merge_saved(Some(&stored), record(2, Phase::Completed)),
            None
        );
        let newer = record(4, Phase::Completed);
        assert_eq!(merge_saved(Some(&stored), newer.clone()), Some(newer));
        let same = record(3, Phase::Queued);
        assert_eq!(merge_saved(Some(&stored), same.clone()), Some(same));
    }
}
