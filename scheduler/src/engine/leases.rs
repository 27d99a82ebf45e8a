//! The claims of shared sessions, held in the background: a claim is
//! tried, then renewed at a third of its time to live until released; and
//! the session is read from the store every so often so this process
//! follows the others' changes.
//!
//! A process runs a task, and writes its record, only while it holds the
//! task's [`Claim`]:
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
//! whichever process claims its task next. What each answer means for the
//! session is decided by the core (`follow.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use transfer_core::{Claim, Claims, SessionId, TaskId, TaskStore};

use crate::command::{Claimed, Fence, Follow, Held, Inbox, News};

/// Tries to claim `task` in the background; the answer comes back as
/// [`News::Claimed`]. `commits` counts this process's commits.
pub(crate) fn claim(
    claims: Arc<dyn Claims>,
    task: TaskId,
    session: SessionId,
    store: Arc<dyn TaskStore>,
    commits: Arc<AtomicU64>,
    inbox: Inbox,
) {
    tokio::spawn(async move {
        let asked = (tokio::time::Instant::now(), transfer_core::since_boot());
        let claim = match claims.try_claim(&session, task).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%task, error = %e, "could not claim the task");
                None
            }
        };
        // Every commit counted before the load begins is in what it reads
        // (counted late: this process may have been stopped since it asked,
        // and another may have run the task meanwhile).
        let generation = commits.load(Ordering::Acquire);
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
                let held = hold(claim, claims.ttl(), asked, task, inbox.clone());
                (Some(held), fresh)
            }
        };
        inbox.news(News::Claimed(Box::new(Claimed {
            task,
            claim,
            fresh,
            generation,
        })));
    });
}

/// Renews `claim` until the returned handle is dropped, then releases it.
/// A renewal refused, or none that succeeded for two thirds of the time to
/// live, sends [`News::ClaimLost`].
fn hold(
    mut claim: Box<dyn Claim>,
    ttl: Duration,
    asked: (tokio::time::Instant, Duration),
    task: TaskId,
    inbox: Inbox,
) -> Held {
    let (release, mut released) = oneshot::channel::<()>();
    let fence = Arc::new(Fence::new(claim.epoch(), ttl, asked.1));
    let renewals = fence.clone();
    tokio::spawn(async move {
        let every = ttl / 3;
        // Counted from when the claim was asked for (the claim and the
        // reading of the task took some of its time): the first renewal
        // may be due at once.
        let mut renewed = asked.0;
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
            let asked = transfer_core::since_boot();
            // Others may take the claim over a time to live after they saw
            // the last renewal: stop well before that.
            let deadline = renewed + ttl * 2 / 3;
            match tokio::time::timeout_at(deadline, claim.renew()).await {
                Ok(Ok(())) => {
                    renewals.renewed(asked);
                    renewed = attempt;
                    next = attempt + every;
                }
                Ok(Err(e)) if e.is_conflict() => {
                    tracing::warn!(%task, "another process took the task over");
                    inbox.news(News::ClaimLost(task));
                    return;
                }
                Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                    // Soon, not a whole period later: the deadline is near.
                    tracing::warn!(%task, error = %e, "could not renew the claim; trying again");
                    next = (tokio::time::Instant::now() + ttl / 20).min(deadline);
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(%task, "the claim could not be renewed in time");
                    inbox.news(News::ClaimLost(task));
                    return;
                }
            }
        }
    });
    Held {
        _release: release,
        fence,
    }
}

/// Loads the session every `every` and hands the engine what it found.
pub(crate) async fn follow(
    every: Duration,
    session: SessionId,
    store: Arc<dyn TaskStore>,
    commits: Arc<AtomicU64>,
    inbox: Inbox,
) {
    loop {
        tokio::time::sleep(every).await;
        let generation = commits.load(Ordering::Acquire);
        match store.follow(&session).await {
            Ok((snapshot, foreign)) => {
                if !inbox.news(News::Followed(Box::new(Follow {
                    generation,
                    snapshot,
                    foreign,
                }))) {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not follow the session"),
        }
    }
}
