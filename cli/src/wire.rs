//! What crosses the control socket: the typed requests a `ferry` command
//! sends to the process that runs the session, and the replies and events it
//! reads back, one JSON object per line.

use serde::{Deserialize, Serialize};
use transfer_core::{Event, Outcome, TaskId};

use crate::enqueue::{Downloads, Upload};
use crate::listing::LsRow;

/// A request: one per connection.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Enqueue these downloads; answered with [`Reply::Added`].
    Add(Downloads),
    /// Enqueue this upload; answered with [`Reply::Added`].
    Put(Upload),
    /// List the tasks; answered with [`Reply::Tasks`].
    Ls,
    /// Pause, resume or cancel a task; answered with [`Reply::Changed`].
    Change {
        /// The task.
        id: TaskId,
        /// What to do with it.
        change: Change,
    },
    /// Follow these tasks until each has ended; answered with a stream of
    /// [`Followed`] events.
    Follow {
        /// The tasks.
        ids: Vec<TaskId>,
    },
}

/// The answer to a request other than [`Request::Follow`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// The tasks enqueued (or found already there), in the order asked.
    Added {
        /// Each task and its name.
        tasks: Vec<Added>,
    },
    /// The session's tasks, as `ferry ls` shows them.
    Tasks {
        /// One row per task.
        tasks: Vec<LsRow>,
    },
    /// The change was made.
    Changed,
    /// The request failed.
    Error {
        /// Why, in words.
        error: String,
    },
}

/// A task a request added, and its name (file name or object key).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Added {
    /// The task.
    pub(crate) id: TaskId,
    /// Its name.
    pub(crate) name: String,
}

/// One line of the answer to [`Request::Follow`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Followed {
    /// A task's bytes so far.
    Progress {
        /// The task.
        id: TaskId,
        /// Bytes transferred.
        bytes: u64,
        /// The total, when known.
        total: Option<u64>,
    },
    /// A task waits.
    Waiting {
        /// The task.
        id: TaskId,
        /// Why, in words.
        reason: String,
    },
    /// A task completed.
    Completed {
        /// The task.
        id: TaskId,
        /// Its size.
        bytes: u64,
    },
    /// A task failed or was cancelled.
    Failed {
        /// The task.
        id: TaskId,
        /// Why, in words.
        error: String,
        /// The exit code it comes to (see `exit`).
        #[serde(default = "other")]
        code: u8,
    },
    /// Following stopped: the session could not answer.
    Error {
        /// Why, in words.
        error: String,
    },
}

/// What an older runner's `Failed` line without a code comes to.
fn other() -> u8 {
    crate::exit::OTHER
}

impl Followed {
    /// The line for a task that ended with `outcome`.
    pub(crate) fn ended(id: TaskId, outcome: &Outcome) -> Followed {
        match outcome {
            Outcome::Completed { bytes } => Followed::Completed { id, bytes: *bytes },
            Outcome::Failed { error, .. } => Followed::Failed {
                id,
                error: error.to_string(),
                code: crate::exit::code_of_outcome(outcome),
            },
            Outcome::Cancelled { .. } => Followed::Failed {
                id,
                error: "cancelled".to_owned(),
                code: crate::exit::code_of_outcome(outcome),
            },
        }
    }
}

/// What the user does to a task (`ferry pause|resume|cancel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Change {
    /// Suspend it, keeping its partial.
    Pause,
    /// Resume it.
    Resume,
    /// Cancel it and delete its partial.
    Cancel,
}

impl Change {
    /// The state machine's event for the change.
    pub(crate) fn event(self) -> Event {
        match self {
            Change::Pause => Event::Suspend,
            Change::Resume => Event::Resume,
            Change::Cancel => Event::Cancel {
                keep_resume_data: false,
            },
        }
    }

    /// The change done, in a word: `paused`, `resumed`, `cancelled`.
    /// What the change will be, once the process holding the task makes it.
    pub(crate) fn asked(self) -> &'static str {
        match self {
            Change::Pause => "to be paused",
            Change::Resume => "to be resumed",
            Change::Cancel => "to be cancelled",
        }
    }

    pub(crate) fn done(self) -> &'static str {
        match self {
            Change::Pause => "paused",
            Change::Resume => "resumed",
            Change::Cancel => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests and replies read back as what was sent, tagged as the
    /// protocol says.
    #[test]
    fn messages_read_back_as_sent() -> anyhow::Result<()> {
        let id = TaskId::from_u64(0xab);
        let change = Request::Change {
            id,
            change: Change::Cancel,
        };
        let line = serde_json::to_string(&change)?;
        assert_eq!(line, r#"{"op":"change","id":171,"change":"cancel"}"#);
        assert!(matches!(
            serde_json::from_str(&line)?,
            Request::Change {
                change: Change::Cancel,
                ..
            }
        ));
        let add = Request::Add(Downloads {
            urls: vec!["https://a.test/x".to_owned()],
            output: "/tmp/out".into(),
            files: Vec::new(),
            to: None,
            sha256: None,
            rate: Some(1024),
            overwrite: false,
            max_size: None,
            when: transfer_core::Constraints::default(),
        });
        let Request::Add(back) = serde_json::from_str(&serde_json::to_string(&add)?)? else {
            anyhow::bail!("not an add");
        };
        assert_eq!(back.urls, ["https://a.test/x"]);
        assert_eq!(back.rate, Some(1024));
        let put = Request::Put(Upload {
            file: "/tmp/f".into(),
            url: "https://a.test/up".to_owned(),
            form_file: Some("file".to_owned()),
            fields: vec![("a".to_owned(), "b".to_owned())],
            method: Some(http::Method::PATCH),
            content_type: None,
            resumable: None,
            rate: None,
            when: transfer_core::Constraints::default(),
        });
        let Request::Put(back) = serde_json::from_str(&serde_json::to_string(&put)?)? else {
            anyhow::bail!("not a put");
        };
        assert_eq!(back.method, Some(http::Method::PATCH));
        assert_eq!(back.fields, [("a".to_owned(), "b".to_owned())]);
        let error = serde_json::to_string(&Reply::Error {
            error: "no".to_owned(),
        })?;
        assert_eq!(error, r#"{"reply":"error","error":"no"}"#);
        let done =
            serde_json::to_string(&Followed::ended(id, &Outcome::Cancelled { resume: None }))?;
        assert_eq!(
            done,
            r#"{"event":"failed","id":171,"error":"cancelled","code":1}"#
        );
        // A line from a runner that sends no code reads as code 1.
        let old: Followed = serde_json::from_str(r#"{"event":"failed","id":171,"error":"x"}"#)?;
        assert!(matches!(old, Followed::Failed { code: 1, .. }));
        Ok(())
    }
}
