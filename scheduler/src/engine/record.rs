//! Task records as the engine makes them: a new task's first record, and
//! an ended record read as its completion.

use transfer_core::{
    Completion, Event, EventId, Outcome, Phase, TaskId, TaskRecord, TaskSpec, TaskState, Timestamp,
    apply,
};

use crate::{SessionConfig, SessionError};

/// How a task that another process ran ended, from its record (when its
/// completion has already left the outbox).
pub(crate) fn ended_elsewhere(r: &TaskRecord) -> Completion {
    let outcome = match &r.state.phase {
        Phase::Completed => Outcome::Completed {
            bytes: r.state.bytes_received,
        },
        Phase::Failed(error) => Outcome::Failed {
            error: error.clone(),
        },
        _ => Outcome::Cancelled { resume: None },
    };
    Completion {
        event: EventId::from_u64(0),
        task: r.id,
        label: r.spec.label.clone(),
        at: r.created_at,
        outcome,
        response: None,
    }
}

/// A new task's record: suspended, or queued when `start`.
pub(crate) fn new_record(
    id: TaskId,
    seq: u64,
    spec: TaskSpec,
    config: &SessionConfig,
    jitter_seed: u64,
    start: bool,
    now: Timestamp,
) -> Result<TaskRecord, SessionError> {
    let mut state = TaskState::new(config.retry, jitter_seed);
    if start {
        state = apply(&state, Event::Resume, now)
            .map_err(|e| SessionError::Internal(e.to_string()))?
            .0;
    }
    Ok(TaskRecord {
        epoch: 0,
        request: None,
        id,
        seq,
        created_at: now,
        spec,
        state,
    })
}
