//! `--json`: one JSON object per line on standard output for each event of
//! the transfers a command runs, for programs to follow. The format is
//! stable (the README's table): `event`, `id` (16 hex digits, as `ferry
//! ls` prints it), `url` (without credentials) and `time` (RFC 3339, UTC)
//! on every line, and the event's own fields.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use scheduler::SessionEvent;
use serde_json::{Map, Value, json};
use transfer_core::{Outcome, TaskId, Timestamp, WaitReason};

use crate::output::without_credentials;
use crate::progress::{Teller, wait_words};

/// How often a running task says how far it is, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The JSON lines of a command's transfers, gathered per burst of events.
pub(crate) struct JsonLines {
    /// Each task's URL, without credentials.
    urls: HashMap<TaskId, String>,
    /// The tasks whose bytes began to move ("started" was said).
    started: HashSet<TaskId>,
    /// When each running task last said its progress.
    last: HashMap<TaskId, Instant>,
    /// The tasks whose end was said.
    ended: HashSet<TaskId>,
    out: Vec<String>,
}

impl JsonLines {
    /// Lines for the tasks in `urls` (each task's URL); events of other
    /// tasks are left out.
    pub(crate) fn new(urls: HashMap<TaskId, String>) -> JsonLines {
        JsonLines {
            urls: urls
                .into_iter()
                .map(|(id, url)| (id, without_credentials(&url)))
                .collect(),
            started: HashSet::new(),
            last: HashMap::new(),
            ended: HashSet::new(),
            out: Vec::new(),
        }
    }

    /// Adds a task to follow (`ferry run` meets them as they come).
    pub(crate) fn follow(&mut self, id: TaskId, url: &str) {
        self.urls
            .entry(id)
            .or_insert_with(|| without_credentials(url));
    }

    /// Whether `id` is followed.
    pub(crate) fn follows(&self, id: TaskId) -> bool {
        self.urls.contains_key(&id)
    }

    /// Says that `id` (named `name`) is queued.
    pub(crate) fn queued(&mut self, id: TaskId, name: &str) {
        self.event(id, "queued", json!({ "name": name }));
    }

    /// Says the server's answer to upload `id`: its status and the start
    /// of its body (as text; bytes that are not UTF-8 are replaced).
    pub(crate) fn response(&mut self, id: TaskId, status: u16, body: &[u8]) {
        self.event(
            id,
            "response",
            json!({ "status": status, "body": String::from_utf8_lossy(body) }),
        );
    }

    /// Adds the line for `event` of task `id` with `fields` beside the
    /// common ones.
    fn event(&mut self, id: TaskId, event: &str, fields: Value) {
        let Some(url) = self.urls.get(&id) else {
            return;
        };
        let mut line = Map::new();
        line.insert("event".into(), event.into());
        line.insert("id".into(), id.to_string().into());
        line.insert("url".into(), url.clone().into());
        line.insert(
            "time".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        self.out.push(Value::Object(line).to_string());
    }

    /// Adds the line for the end of `id`, once.
    fn ended(&mut self, id: TaskId, outcome: &Outcome) {
        if !self.follows(id) || !self.ended.insert(id) {
            return;
        }
        self.last.remove(&id);
        match outcome {
            Outcome::Completed { bytes } => self.event(id, "completed", json!({ "bytes": bytes })),
            Outcome::Failed { error } => {
                self.event(id, "failed", json!({ "error": error.to_string() }))
            }
            Outcome::Cancelled { .. } => self.event(id, "failed", json!({ "error": "cancelled" })),
        }
    }
}

impl Teller for JsonLines {
    fn take(&mut self, e: SessionEvent) {
        match e {
            SessionEvent::Progress { task, progress } => {
                if !self.follows(task) {
                    return;
                }
                if self.started.insert(task) {
                    self.event(task, "started", json!({}));
                }
                let now = Instant::now();
                let due = self
                    .last
                    .get(&task)
                    .is_none_or(|t| now.duration_since(*t) >= PROGRESS_EVERY);
                if due {
                    self.last.insert(task, now);
                    self.event(
                        task,
                        "progress",
                        json!({ "bytes": progress.total, "total": progress.expected }),
                    );
                }
            }
            SessionEvent::Waiting {
                task,
                reason: WaitReason::BackingOff { until, error },
            } => {
                let delay = until.saturating_since(Timestamp::from_system_time(SystemTime::now()));
                self.event(
                    task,
                    "retry",
                    json!({
                        "error": error.to_string(),
                        "delay_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    }),
                );
            }
            SessionEvent::Waiting { task, reason } => {
                self.event(task, "waiting", json!({ "reason": wait_words(&reason) }));
            }
            SessionEvent::Restarted { task, reason } => {
                self.started.remove(&task);
                self.event(task, "restarted", json!({ "reason": reason.to_string() }));
            }
            SessionEvent::Completed(c) => self.ended(c.task, &c.outcome),
            _ => {}
        }
    }

    fn missed(&mut self, outcomes: &[(TaskId, &str, Outcome)]) {
        for (id, _, outcome) in outcomes {
            self.ended(*id, outcome);
        }
    }

    fn flush(&mut self) {
        // A reader that stops early is not an error here either; the
        // transfers go on.
        let _ = crate::output::print_lines(self.out.drain(..));
    }
}
