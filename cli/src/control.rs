//! The control socket: the process that runs the session (`ferry get` or
//! `ferry run`) owns the store and listens on `control.sock` in the state
//! directory (owner-only, like the directory). Other `ferry` commands talk
//! to it with one JSON request per connection and read JSON lines back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use scheduler::{Session, SessionEvent};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use transfer_core::{Outcome, TaskId};

use crate::{AddArgs, PutArgs, Target, add_tasks, add_upload, ls_row};

/// The socket's path in the state directory.
pub(crate) fn socket_path(home: &Path) -> PathBuf {
    home.join("control.sock")
}

/// A connection to the running `ferry`, if there is one.
pub(crate) async fn connect(home: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket_path(home)).await.ok()
}

/// Sends one request and returns the response lines as they come.
pub(crate) async fn request(
    stream: UnixStream,
    req: &Value,
) -> anyhow::Result<tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>> {
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.shutdown().await?;
    Ok(BufReader::new(read).lines())
}

/// Sends one request and reads its single answer.
pub(crate) async fn call(stream: UnixStream, req: &Value) -> anyhow::Result<Value> {
    let mut lines = request(stream, req).await?;
    let line = lines
        .next_line()
        .await?
        .context("the running ferry closed the connection")?;
    let v: Value = serde_json::from_str(&line)?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("{e}");
    }
    Ok(v)
}

/// Listens on the control socket for as long as the session runs.
/// The control socket while it is open: dropping it stops listening and
/// removes the socket file.
pub(crate) struct Listening {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(crate) fn serve(home: &Path, session: Session) -> anyhow::Result<Listening> {
    let path = socket_path(home);
    // A socket left by a killed runner: this process holds the store's lock,
    // so no one else is listening on it.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let session = Arc::new(session);
    let rates = Rates::default();
    let watcher = {
        let (session, rates) = (session.clone(), rates.clone());
        tokio::spawn(async move { rates.watch(&session).await })
    };
    let task = tokio::spawn(async move {
        let _watcher = AbortOnDrop(watcher);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (session, rates) = (session.clone(), rates.clone());
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &session, &rates).await {
                    tracing::debug!(error = %e, "control connection failed");
                }
            });
        }
    });
    Ok(Listening { task, path })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Each running task's recent rate, from its progress reports (bytes per
/// second, smoothed over about two seconds).
#[derive(Clone, Default)]
struct Rates(Arc<std::sync::Mutex<HashMap<TaskId, Sample>>>);

/// When a task last reported, how far it was, and its smoothed rate.
type Sample = (Instant, u64, f64);

impl Rates {
    async fn watch(&self, session: &Session) {
        let mut events = Box::pin(session.events());
        while let Some(e) = events.next().await {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match e {
                SessionEvent::Progress { task, progress } => {
                    let now = Instant::now();
                    let entry = map.entry(task).or_insert((now, progress.total, 0.0));
                    let dt = now.duration_since(entry.0).as_secs_f64();
                    if dt >= 0.2 {
                        let inst = progress.total.saturating_sub(entry.1) as f64 / dt;
                        let w = (dt / 2.0).min(1.0);
                        *entry = (now, progress.total, entry.2 * (1.0 - w) + inst * w);
                    }
                }
                SessionEvent::Completed(c) => {
                    map.remove(&c.task);
                }
                SessionEvent::Waiting { task, .. } => {
                    map.remove(&task);
                }
                _ => {}
            }
        }
    }

    fn of(&self, task: TaskId) -> Option<u64> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&task).map(|e| e.2 as u64)
    }
}

async fn answer(stream: UnixStream, session: &Session, rates: &Rates) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Some(line) = lines.next_line().await? else {
        return Ok(());
    };
    let req: Value = serde_json::from_str(&line)?;
    let send = |v: Value| {
        let mut b = serde_json::to_vec(&v).unwrap_or_default();
        b.push(b'\n');
        b
    };
    let result: anyhow::Result<()> = async {
        match req.get("op").and_then(Value::as_str) {
            Some(op @ ("add" | "put")) => {
                let args = req["args"].clone();
                let added = if op == "add" {
                    let args: AddArgs = serde_json::from_value(args)?;
                    add_tasks(Target::Live(session), &args).await?
                } else {
                    let args: PutArgs = serde_json::from_value(args)?;
                    add_upload(Target::Live(session), &args).await?
                };
                let tasks: Vec<Value> = added
                    .iter()
                    .map(|(id, name)| json!({"id": id.to_string(), "name": name}))
                    .collect();
                write.write_all(&send(json!({ "tasks": tasks }))).await?;
            }
            Some("ls") => {
                let rows: Vec<Value> = session
                    .tasks()
                    .await?
                    .iter()
                    .map(|r| {
                        let mut row = ls_row(r, true);
                        if let Some(rate) = rates.of(r.id) {
                            row["rate"] = json!(rate);
                        }
                        row
                    })
                    .collect();
                write.write_all(&send(json!({ "tasks": rows }))).await?;
            }
            Some(op @ ("pause" | "resume" | "cancel")) => {
                let id = parse_id(req["id"].as_str().unwrap_or_default())?;
                let task = session.task(id);
                match op {
                    "pause" => task.suspend().await?,
                    "resume" => task.resume().await?,
                    _ => task.cancel().await?,
                }
                write.write_all(&send(json!({ "ok": true }))).await?;
            }
            Some("follow") => {
                let ids: Vec<TaskId> = req["ids"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().and_then(|s| parse_id(s).ok()))
                            .collect()
                    })
                    .unwrap_or_default();
                follow(session, &ids, &mut write, send).await?;
            }
            _ => bail!("unknown request"),
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = write
            .write_all(&send(json!({ "error": format!("{e:#}") })))
            .await;
    }
    Ok(())
}

/// Streams progress and the end of each task in `ids` until all have ended.
async fn follow(
    session: &Session,
    ids: &[TaskId],
    write: &mut tokio::net::unix::OwnedWriteHalf,
    send: impl Fn(Value) -> Vec<u8>,
) -> anyhow::Result<()> {
    let mut events = Box::pin(session.events());
    let mut open: Vec<TaskId> = ids.to_vec();
    // Tasks that already ended.
    for id in ids {
        if let Some(outcome) = session.task(*id).outcome().await? {
            write.write_all(&send(end_line(*id, &outcome))).await?;
            open.retain(|t| t != id);
        }
    }
    while !open.is_empty() {
        let Some(e) = events.next().await else { break };
        match e {
            SessionEvent::Progress { task, progress } if open.contains(&task) => {
                let line = json!({"event": "progress", "id": task.to_string(),
                    "bytes": progress.total, "total": progress.expected});
                write.write_all(&send(line)).await?;
            }
            SessionEvent::Waiting { task, reason } if open.contains(&task) => {
                let line = json!({"event": "waiting", "id": task.to_string(), "reason": reason.to_string()});
                write.write_all(&send(line)).await?;
            }
            SessionEvent::Completed(c) if open.contains(&c.task) => {
                write.write_all(&send(end_line(c.task, &c.outcome))).await?;
                open.retain(|t| *t != c.task);
            }
            _ => {}
        }
    }
    Ok(())
}

fn end_line(id: TaskId, outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Completed { bytes } => {
            json!({"event": "done", "id": id.to_string(), "ok": true, "bytes": bytes})
        }
        Outcome::Failed { error, .. } => {
            json!({"event": "done", "id": id.to_string(), "ok": false, "error": error.to_string()})
        }
        Outcome::Cancelled { .. } => {
            json!({"event": "done", "id": id.to_string(), "ok": false, "error": "cancelled"})
        }
    }
}

/// A task id as `ferry ls` prints it (16 hex digits).
pub(crate) fn parse_id(s: &str) -> anyhow::Result<TaskId> {
    let v = u64::from_str_radix(s.trim(), 16)
        .with_context(|| format!("{s:?} is not a task id (16 hex digits, as `ferry ls` shows)"))?;
    Ok(TaskId::from_u64(v))
}
