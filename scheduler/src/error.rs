//! Why a session call failed ([`SessionError`]).

use std::path::PathBuf;

use transfer_core::{SpecError, StoreError, TaskId};

/// Why a session call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The task specification was refused (bad URL, bad checksum, …).
    #[error("invalid task: {0}")]
    Spec(#[from] SpecError),
    /// The task store failed.
    #[error("task store: {0}")]
    Store(#[source] StoreError),
    /// An upload's source file is missing, unreadable or not a file.
    #[error("upload source {}: {error}", path.display())]
    Source {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        error: std::io::Error,
    },
    /// A builder was given choices that do not go together.
    #[error("{0}")]
    Conflict(&'static str),
    /// A builder was missing a part.
    #[error("the session needs {0}")]
    Missing(&'static str),
    /// Another unfinished task of the session already downloads to this
    /// destination: two tasks never write one file.
    #[error("{destination} is the destination of task {task}, which has not ended")]
    DestinationTaken {
        /// The destination, as given.
        destination: String,
        /// The task that holds it.
        task: TaskId,
    },
    /// No such task in this session.
    #[error("no task {0} in this session")]
    UnknownTask(TaskId),
    /// The session has shut down.
    #[error("the session has shut down")]
    Closed,
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl SessionError {
    /// The error for a download to `destination`, which unfinished `task`
    /// owns.
    pub(crate) fn destination_taken(
        destination: &transfer_core::Destination,
        task: TaskId,
    ) -> SessionError {
        let destination = match destination {
            transfer_core::Destination::Path(p) => p.display().to_string(),
            transfer_core::Destination::ObjectKey(k) => k.clone(),
        };
        SessionError::DestinationTaken { destination, task }
    }
}
