//! What a store keeps: a task's record (spec plus state) and completion
//! events in the session's outbox. Both encode to versioned JSON here, so every
//! backend stores the same bytes.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::id::{EventId, TaskId};
use crate::machine::{Outcome, TaskState};
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
