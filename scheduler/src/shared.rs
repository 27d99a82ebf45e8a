//! Sessions shared by several processes (see [`crate::SessionBuilder::shared`]).
//!
//! Each process keeps its own view of the session's records and follows the
//! others' changes by loading the store every so often. A process runs a
//! task, and writes its record, only while it holds the task's
//! [`Claim`]:
//! - **claiming**: a task this process would start is claimed first, and
//!   its record is then read again from the store, so a task that another
//!   process finished a moment ago is not run twice;
//! - **holding**: the claim is renewed at a third of its time to live; a
//!   renewal that fails because another process took the claim, or no
//!   successful renewal for two thirds of it, stops the attempt at once and
//!   the task's record is no longer written here;
//! - **releasing**: once the attempt has ended and its record is durable,
//!   and once a completion has been delivered and acknowledged.
//!
//! A completion left unacknowledged by a process that died is delivered by
//! whichever process claims its task next.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use transfer_core::{
    Claim, Claims, Completion, SessionId, Snapshot, TaskId, TaskRecord, TaskStore,
};

use crate::engine::Command;

/// What a claim attempt found.
pub(crate) struct Claimed {
    pub(crate) task: TaskId,
    /// The claim, when this process got it.
    pub(crate) claim: Option<Held>,
    /// The task's record as the store has it after the claim, and its
    /// unacknowledged completion; `None` when the store could not be read.
    pub(crate) fresh: Option<(Option<TaskRecord>, Option<Completion>)>,
    /// The commit count before the store was read (see [`Follow`]).
    pub(crate) generation: u64,
}

/// A claim held: renewed in the background until dropped (then released).
pub(crate) struct Held {
    _release: oneshot::Sender<()>,
}

/// The session's state as the store had it, and the commit count read
/// before the load began: records this process wrote in a later commit may
/// be missing or older in it.
pub(crate) struct Follow {
    pub(crate) generation: u64,
    pub(crate) snapshot: Snapshot,
    /// Records other processes saved since the last follow, in order.
    pub(crate) foreign: Vec<TaskRecord>,
}

/// The engine's part of a shared session.
pub(crate) struct Shared {
    pub(crate) claims: Arc<dyn Claims>,
    /// Claims held, by task.
    pub(crate) held: HashMap<TaskId, Held>,
    /// Claims being tried.
    pub(crate) claiming: HashSet<TaskId>,
    /// Tasks another process holds: not tried again before then.
    pub(crate) not_before: HashMap<TaskId, tokio::time::Instant>,
    /// When those tries come due (some may be moot by then): the engine
    /// wakes to make them.
    pub(crate) retries: BTreeSet<tokio::time::Instant>,
    /// Tasks whose claim was lost while running: their record is not
    /// written here until the store says how they are now.
    pub(crate) lost: HashSet<TaskId>,
    /// Runners per task that have not said they are done.
    pub(crate) runners: HashMap<TaskId, usize>,
    /// Tasks whose completion waits for its acknowledgement.
    pub(crate) unacked: HashSet<TaskId>,
    /// Commits made so far.
    pub(crate) commits: Arc<AtomicU64>,
    /// The commit after which each record was last written here.
    pub(crate) written: HashMap<TaskId, u64>,
}

impl Shared {
    pub(crate) fn new(claims: Arc<dyn Claims>) -> Shared {
        Shared {
            claims,
            held: HashMap::new(),
            claiming: HashSet::new(),
            not_before: HashMap::new(),
            retries: BTreeSet::new(),
            lost: HashSet::new(),
            runners: HashMap::new(),
            unacked: HashSet::new(),
            commits: Arc::new(AtomicU64::new(0)),
            written: HashMap::new(),
        }
    }

    /// Whether this process has the task in hand (claimed, claiming, or
    /// still running an attempt).
    pub(crate) fn mine(&self, task: TaskId) -> bool {
        self.held.contains_key(&task)
            || self.claiming.contains(&task)
            || self.runners.contains_key(&task)
    }

    /// Whether the task may be claimed now.
    pub(crate) fn may_claim(&self, task: TaskId) -> bool {
        !self.mine(task)
            && self
                .not_before
                .get(&task)
                .is_none_or(|t| *t <= tokio::time::Instant::now())
    }

    /// Notes that `task` is held elsewhere: tried again at `at`.
    pub(crate) fn retry_at(&mut self, task: TaskId, at: tokio::time::Instant) {
        self.not_before.insert(task, at);
        self.retries.insert(at);
    }

    /// When the engine must next wake to try a claim again.
    pub(crate) fn next_retry(&self) -> Option<tokio::time::Instant> {
        self.retries.first().copied()
    }

    /// Forgets the retries that have come due.
    pub(crate) fn retries_due(&mut self) {
        let now = tokio::time::Instant::now();
        while self.retries.first().is_some_and(|t| *t <= now) {
            self.retries.pop_first();
        }
    }

    /// Whether a record this process wrote after commit `generation` is
    /// newer than what a load begun then can show.
    pub(crate) fn newer_here(&self, task: TaskId, generation: u64) -> bool {
        self.written.get(&task).is_some_and(|g| *g > generation)
    }

    /// Notes a commit that wrote `tasks`.
    pub(crate) fn committed(&mut self, tasks: impl IntoIterator<Item = TaskId>) {
        let g = self.commits.fetch_add(1, Ordering::AcqRel) + 1;
        for t in tasks {
            self.written.insert(t, g);
        }
    }

    /// Tries to claim `task` in the background; the answer comes back as
    /// [`Command::Claimed`].
    pub(crate) fn claim(
        &mut self,
        task: TaskId,
        session: SessionId,
        store: Arc<dyn TaskStore>,
        tx: mpsc::UnboundedSender<Command>,
    ) {
        self.claiming.insert(task);
        let claims = self.claims.clone();
        let commits = self.commits.clone();
        tokio::spawn(async move {
            let generation = commits.load(Ordering::Acquire);
            let claim = match claims.try_claim(&session, task).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%task, error = %e, "could not claim the task");
                    None
                }
            };
            let (claim, fresh) = match claim {
                None => (None, None),
                Some(claim) => {
                    // Claimed: what the store says of the task now (another
                    // process may have finished it just before).
                    let fresh = match store.load_task(&session, task).await {
                        Ok(found) => Some(found),
                        Err(e) => {
                            tracing::warn!(%task, error = %e, "could not read the session");
                            None
                        }
                    };
                    let held = hold(claim, claims.ttl(), task, tx.clone());
                    (Some(held), fresh)
                }
            };
            let _ = tx.send(Command::Claimed(Box::new(Claimed {
                task,
                claim,
                fresh,
                generation,
            })));
        });
    }
}

/// Renews `claim` until the returned handle is dropped, then releases it.
/// A renewal refused, or none that succeeded for two thirds of the time to
/// live, sends [`Command::ClaimLost`].
fn hold(
    mut claim: Box<dyn Claim>,
    ttl: Duration,
    task: TaskId,
    tx: mpsc::UnboundedSender<Command>,
) -> Held {
    let (release, mut released) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let every = ttl / 3;
        let mut renewed = tokio::time::Instant::now();
        let mut next = renewed + every;
        loop {
            tokio::select! {
                _ = &mut released => {
                    if let Err(e) = claim.release().await {
                        tracing::debug!(%task, error = %e, "could not release the claim");
                    }
                    return;
                }
                () = tokio::time::sleep_until(next) => {}
            }
            let attempt = tokio::time::Instant::now();
            // Others may take the claim over a time to live after they saw
            // the last renewal: stop well before that.
            let deadline = renewed + ttl * 2 / 3;
            match tokio::time::timeout_at(deadline, claim.renew()).await {
                Ok(Ok(())) => {
                    renewed = attempt;
                    next = attempt + every;
                }
                Ok(Err(e)) if e.is_conflict() => {
                    tracing::warn!(%task, "another process took the task over");
                    let _ = tx.send(Command::ClaimLost(task));
                    return;
                }
                Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                    // Soon, not a whole period later: the deadline is near.
                    tracing::warn!(%task, error = %e, "could not renew the claim; trying again");
                    next = (tokio::time::Instant::now() + ttl / 20).min(deadline);
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(%task, "the claim could not be renewed in time");
                    let _ = tx.send(Command::ClaimLost(task));
                    return;
                }
            }
        }
    });
    Held { _release: release }
}

/// Loads the session every `every` and hands the engine what it found.
pub(crate) async fn follow(
    every: Duration,
    session: SessionId,
    store: Arc<dyn TaskStore>,
    commits: Arc<AtomicU64>,
    tx: mpsc::UnboundedSender<Command>,
) {
    loop {
        tokio::time::sleep(every).await;
        let generation = commits.load(Ordering::Acquire);
        match store.follow(&session).await {
            Ok((snapshot, foreign)) => {
                if tx
                    .send(Command::Followed(Box::new(Follow {
                        generation,
                        snapshot,
                        foreign,
                    })))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not follow the session"),
        }
    }
}
