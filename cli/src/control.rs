//! The control socket: the process that runs the session (`ferry get` or
//! `ferry run`) owns the store and listens on `control.sock` in the state
//! directory (owner-only, like the directory). Other `ferry` commands talk
//! to it with one [`Request`] per connection and read [`Reply`] or
//! [`Followed`] lines back (see [`wire`](crate::wire)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use scheduler::{Session, SessionEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use transfer_core::TaskId;

use crate::enqueue::{Target, add_downloads, add_upload};
use crate::listing::LsRow;
use crate::wire::{Added, Change, Followed, Reply, Request};

/// The socket's path in the state directory.
fn socket_path(home: &Path) -> PathBuf {
    home.join("control.sock")
}

/// A connection to the running `ferry`, if there is one.
pub(crate) async fn connect(home: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket_path(home)).await.ok()
}

/// The lines of an answer, read one at a time as they come.
pub(crate) struct Answer<T> {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    of: std::marker::PhantomData<T>,
}

impl<T: DeserializeOwned> Answer<T> {
    /// The next line; `None` once the running ferry has closed the
    /// connection.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<T>> {
        match self.lines.next_line().await? {
            Some(line) => Ok(Some(serde_json::from_str(&line)?)),
            None => Ok(None),
        }
    }
}

/// Sends one request and returns its answer's lines as they come.
pub(crate) async fn request<T: DeserializeOwned>(
    stream: UnixStream,
    req: &Request,
) -> anyhow::Result<Answer<T>> {
    let (read, mut write) = stream.into_split();
    write.write_all(&line_of(req)?).await?;
    write.shutdown().await?;
    Ok(Answer {
        lines: BufReader::new(read).lines(),
        of: std::marker::PhantomData,
    })
}

/// Sends one request and reads its single reply; a [`Reply::Error`] is an
/// error.
pub(crate) async fn call(stream: UnixStream, req: &Request) -> anyhow::Result<Reply> {
    let reply = request(stream, req)
        .await?
        .next()
        .await?
        .context("the running ferry closed the connection")?;
    if let Reply::Error { error } = reply {
        bail!("{error}");
    }
    Ok(reply)
}

/// `value` as one line of JSON.
fn line_of(value: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    Ok(line)
}

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

/// Listens on the control socket for as long as the session runs.
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
        let mut pause = ACCEPT_PAUSE;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    pause = ACCEPT_PAUSE;
                    stream
                }
                Err(e) => {
                    // Out of descriptors, most likely: trying again at
                    // once would spin; the clients wait in the backlog.
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                    continue;
                }
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

/// The first pause after a failed accept; doubled each failure in a row.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// The longest pause after failed accepts.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

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

/// The longest request line read, in bytes; a longer one is refused.
const MAX_REQUEST: u64 = 1 << 20;

/// How long a client may take to send its whole request.
const REQUEST_TIME: Duration = Duration::from_secs(30);

/// Reads one request line of at most `max` bytes within `within`: `None`
/// when the client closed without sending anything, an error in words
/// (for a [`Reply::Error`]) when the line is too long, too late or not a
/// request.
async fn read_request(
    read: impl tokio::io::AsyncRead + Unpin,
    max: u64,
    within: Duration,
) -> anyhow::Result<Option<Result<Request, String>>> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let mut limited = BufReader::new(read.take(max + 1));
    let read = tokio::time::timeout(within, limited.read_until(b'\n', &mut line)).await;
    let n = match read {
        Ok(n) => n?,
        Err(_) => {
            let error = format!("no complete request within {} s", within.as_secs_f64());
            return Ok(Some(Err(error)));
        }
    };
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && line.len() as u64 > max {
        return Ok(Some(Err(format!("request longer than {max} bytes"))));
    }
    Ok(Some(
        serde_json::from_slice(&line).map_err(|e| format!("unknown request: {e}")),
    ))
}

/// Reads one request from `stream` and answers it; a request that is too
/// long, too slow or not one is answered with [`Reply::Error`] and the
/// connection closed.
async fn answer(stream: UnixStream, session: &Session, rates: &Rates) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let req = match read_request(read, MAX_REQUEST, REQUEST_TIME).await? {
        None => return Ok(()),
        Some(Ok(req)) => req,
        Some(Err(error)) => return send(&mut write, &Reply::Error { error }).await,
    };
    if let Request::Follow { ids } = req {
        if let Err(e) = follow(session, &ids, &mut write).await {
            let error = format!("{e:#}");
            let _ = send(&mut write, &Followed::Error { error }).await;
        }
        return Ok(());
    }
    let reply = match reply(req, session, rates).await {
        Ok(reply) => reply,
        Err(e) => Reply::Error {
            error: format!("{e:#}"),
        },
    };
    send(&mut write, &reply).await
}

/// Carries out a request other than [`Request::Follow`].
async fn reply(req: Request, session: &Session, rates: &Rates) -> anyhow::Result<Reply> {
    Ok(match req {
        Request::Add(downloads) => added(add_downloads(Target::Live(session), &downloads).await?),
        Request::Put(upload) => added(add_upload(Target::Live(session), &upload).await?),
        Request::Ls => Reply::Tasks {
            tasks: session
                .tasks()
                .await?
                .iter()
                .map(|r| LsRow {
                    rate: rates.of(r.id),
                    ..LsRow::of(r, true)
                })
                .collect(),
        },
        Request::Change { id, change } => {
            let task = session.task(id);
            match change {
                Change::Pause => task.suspend().await?,
                Change::Resume => task.resume().await?,
                Change::Cancel => task.cancel().await?,
            }
            Reply::Changed
        }
        Request::Follow { .. } => bail!("a follow request streams its answer"),
    })
}

/// The reply naming the tasks a request added.
fn added(tasks: Vec<(TaskId, String)>) -> Reply {
    Reply::Added {
        tasks: tasks
            .into_iter()
            .map(|(id, name)| Added { id, name })
            .collect(),
    }
}

/// Writes one line of an answer.
async fn send(write: &mut OwnedWriteHalf, value: &impl Serialize) -> anyhow::Result<()> {
    write.write_all(&line_of(value)?).await?;
    Ok(())
}

/// Streams progress and the end of each task in `ids` until all have ended.
async fn follow(
    session: &Session,
    ids: &[TaskId],
    write: &mut OwnedWriteHalf,
) -> anyhow::Result<()> {
    let mut events = Box::pin(session.events());
    let mut open: Vec<TaskId> = ids.to_vec();
    // Tasks that already ended.
    for id in ids {
        if let Some(outcome) = session.task(*id).outcome().await? {
            send(write, &Followed::ended(*id, &outcome)).await?;
            open.retain(|t| t != id);
        }
    }
    while !open.is_empty() {
        let Some(e) = events.next().await else { break };
        let line = match e {
            SessionEvent::Progress { task, progress } if open.contains(&task) => {
                Followed::Progress {
                    id: task,
                    bytes: progress.total,
                    total: progress.expected,
                }
            }
            SessionEvent::Waiting { task, reason } if open.contains(&task) => Followed::Waiting {
                id: task,
                reason: crate::progress::wait_words(&reason),
            },
            SessionEvent::Completed(c) if open.contains(&c.task) => {
                open.retain(|t| *t != c.task);
                Followed::ended(c.task, &c.outcome)
            }
            _ => continue,
        };
        send(write, &line).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that connects and sends nothing is answered with an error
    /// once the time for a request has passed, not waited for forever.
    #[tokio::test]
    async fn a_silent_client_is_refused_after_the_request_time() -> anyhow::Result<()> {
        let (server, _client) = UnixStream::pair()?;
        let start = Instant::now();
        let read = read_request(server, MAX_REQUEST, Duration::from_millis(100)).await?;
        let Some(Err(error)) = read else {
            bail!("not refused: {read:?}");
        };
        assert!(error.contains("no complete request"), "{error}");
        assert!(start.elapsed() < Duration::from_secs(5));
        Ok(())
    }

    /// A line longer than the limit is refused after reading just past the
    /// limit; one at the limit is read whole.
    #[tokio::test]
    async fn a_line_past_the_limit_is_refused() -> anyhow::Result<()> {
        let long = [b' '; 65];
        let read = read_request(&long[..], 64, REQUEST_TIME).await?;
        let Some(Err(error)) = read else {
            bail!("not refused: {read:?}");
        };
        assert!(error.contains("longer than 64 bytes"), "{error}");
        let mut at_limit = vec![b' '; 64 - 12];
        at_limit.extend_from_slice(b"{\"op\":\"ls\"}\n");
        assert_eq!(at_limit.len(), 64);
        let read = read_request(&at_limit[..], 64, REQUEST_TIME).await?;
        assert!(matches!(read, Some(Ok(Request::Ls))), "{read:?}");
        Ok(())
    }
}
