//! The task state machine: one pure function, [`apply`], takes a task's state,
//! an [`Event`] and the time, and returns the new state and the [`Effect`]s the
//! scheduler must carry out (persist, start, abort, notify, set a timer,
//! complete). No IO, no clock, no runtime, as quinn-proto does for QUIC.
//!
//! # Attempts and stale events
//! Each run of a task is an *attempt* with a number. Events from a runner carry
//! its attempt number; events from an older attempt are stale and ignored.
//! After an [`Effect::Abort`] the current attempt may still report its last
//! progress, checkpoint or completion while the task is already waiting: those
//! facts are applied (the bytes are on disk), its errors are not.
//!
//! # Invariants (checked by the property tests)
//! - Terminal states (`Completed`, `Failed`, `Cancelled`) absorb every event.
//! - `durable_offset <= bytes_received`; the durable offset decreases only
//!   through an explicit restart ([`Event::Restarted`], or a checksum mismatch).
//! - `failures` never exceeds the retry limit while the task is alive.
//! - Every path into a terminal state emits exactly one [`Effect::Complete`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::admission::{Throttle, Verdict, WaitReason};
use crate::error::{ErrorClass, ErrorKind, TransferError};
use crate::resume::{AttemptRecord, PartialLocation, RestartReason, ResumeData, Validator};
use crate::retry::{RetryPolicy, SplitMix64};
use crate::time::Timestamp;

/// Where a task is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Created, not yet resumed.
    Suspended,
    /// Ready to run, waiting for admission.
    Queued,
    /// Not running, for a reason.
    Waiting(WaitReason),
    /// An attempt is running.
    Running {
        /// The attempt's number.
        attempt: u32,
    },
    /// Done: the payload is in place (terminal).
    Completed,
    /// Gave up (terminal).
    Failed(TransferError),
    /// Cancelled (terminal).
    Cancelled,
}

impl Phase {
    /// Whether the phase is terminal.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed(_) | Phase::Cancelled)
    }

    /// A one-word name (`suspended`, `queued`, `waiting`, `running`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Suspended => "suspended",
            Phase::Queued => "queued",
            Phase::Waiting(_) => "waiting",
            Phase::Running { .. } => "running",
            Phase::Completed => "completed",
            Phase::Failed(_) => "failed",
            Phase::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Waiting(r) => write!(f, "waiting: {r}"),
            Phase::Running { attempt } => write!(f, "running (attempt {attempt})"),
            Phase::Failed(e) => write!(f, "failed: {e}"),
            other => f.write_str(other.name()),
        }
    }
}

/// A task's whole mutable state, as persisted in its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    /// The phase.
    pub phase: Phase,
    /// Attempts started so far; the current or last attempt's number.
    pub attempt: u32,
    /// Consecutive transient failures since the last durable progress.
    pub failures: u32,
    /// Checksum mismatches so far (the second fails the task).
    pub checksum_failures: u32,
    /// Bytes in the partial payload, durable or not.
    pub bytes_received: u64,
    /// Where to resume from.
    pub resume: ResumeData,
    /// The retry policy the task was created with.
    pub retry: RetryPolicy,
    /// When the task was first resumed; the resource deadline counts from here.
    pub started_at: Option<Timestamp>,
    /// Seed of the task's backoff jitter (drawn from the scheduler's random source).
    pub jitter_seed: u64,
    /// The durable offset when the current attempt started.
    pub attempt_base: u64,
    /// The proxy the last request went through, as `scheme://host:port`
    /// (never its credentials); `None` when it went direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

impl TaskState {
    /// A new, suspended task.
    pub fn new(retry: RetryPolicy, jitter_seed: u64) -> Self {
        TaskState {
            phase: Phase::Suspended,
            attempt: 0,
            failures: 0,
            checksum_failures: 0,
            bytes_received: 0,
            resume: ResumeData::default(),
            retry,
            started_at: None,
            jitter_seed,
            attempt_base: 0,
            proxy: None,
        }
    }

    /// When the resource deadline passes, once the task has been resumed.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.started_at
            .map(|t| t.saturating_add(self.retry.resource_timeout))
    }

    /// Whether the task has ended.
    pub fn is_terminal(&self) -> bool {
        self.phase.is_terminal()
    }

    /// The bytes the resume data makes durable.
    pub fn durable_offset(&self) -> u64 {
        self.resume.durable_offset
    }
}

/// Something that happened to a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The user (or enqueue) resumes the task.
    Resume,
    /// The user suspends the task.
    Suspend,
    /// The user cancels the task; with `keep_resume_data` the partial is kept
    /// and the resume data is handed back in the completion.
    Cancel {
        /// Keep the partial and return resume data.
        keep_resume_data: bool,
    },
    /// Admission's verdict for the task under the current conditions and load.
    Admission(Verdict),
    /// The current attempt's response was accepted; its validator and total length.
    Responded {
        /// The attempt.
        attempt: u32,
        /// The response's validator.
        validator: Option<Validator>,
        /// The total length, when known.
        total: Option<u64>,
    },
    /// The current attempt discarded the partial and starts from zero. The
    /// runner must not write bytes of the new representation before the
    /// [`Effect::Persist`] this returns is durable.
    Restarted {
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: RestartReason,
    },
    /// The current attempt has received `received` bytes of the payload in total.
    Progress {
        /// The attempt.
        attempt: u32,
        /// Bytes in the partial now.
        received: u64,
    },
    /// The current attempt made its first `durable` bytes durable.
    Checkpoint {
        /// The attempt.
        attempt: u32,
        /// The new durable offset.
        durable: u64,
        /// Where the partial is (updated for multipart uploads).
        partial: Option<PartialLocation>,
    },
    /// The current attempt failed.
    AttemptFailed {
        /// The attempt.
        attempt: u32,
        /// Why.
        error: TransferError,
    },
    /// The current attempt verified and committed the payload of `bytes` bytes.
    Finished {
        /// The attempt.
        attempt: u32,
        /// The payload's length.
        bytes: u64,
    },
    /// A timer set by [`Effect::SetTimer`] fired (or the scheduler's clock ticked).
    Timer,
}

impl Event {
    fn runner_attempt(&self) -> Option<u32> {
        match self {
            Event::Responded { attempt, .. }
            | Event::Restarted { attempt, .. }
            | Event::Progress { attempt, .. }
            | Event::Checkpoint { attempt, .. }
            | Event::AttemptFailed { attempt, .. }
            | Event::Finished { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Event::Resume => "resume",
            Event::Suspend => "suspend",
            Event::Cancel { .. } => "cancel",
            Event::Admission(_) => "admission",
            Event::Responded { .. } => "responded",
            Event::Restarted { .. } => "restarted",
            Event::Progress { .. } => "progress",
            Event::Checkpoint { .. } => "checkpoint",
            Event::AttemptFailed { .. } => "attempt failed",
            Event::Finished { .. } => "finished",
            Event::Timer => "timer",
        }
    }
}

/// What a task's completion was, as recorded in the outbox and delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The payload is in place.
    Completed {
        /// Its length.
        bytes: u64,
    },
    /// The task failed. Its partial is deleted: nothing it wrote is left
    /// behind (a download that should outlive its retries asks for a
    /// longer retry limit or deadline).
    Failed {
        /// Why.
        error: TransferError,
    },
    /// The task was cancelled.
    Cancelled {
        /// Resume data, when cancelled with `keep_resume_data`.
        resume: Option<ResumeData>,
    },
}

impl Outcome {
    /// Whether the payload is in place.
    pub fn is_completed(&self) -> bool {
        matches!(self, Outcome::Completed { .. })
    }
}

/// Something the delegate is told about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// The task waits, for this reason (sent when the reason changes).
    Waiting(WaitReason),
    /// Bytes received so far, and the total when known.
    Progress {
        /// Bytes so far.
        received: u64,
        /// Total, when known.
        total: Option<u64>,
    },
    /// The partial was discarded and the transfer starts from zero.
    Restarted(RestartReason),
}

/// What the scheduler must do after a transition, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Save the task's record durably.
    Persist,
    /// Start attempt `attempt` from the durable `offset` within `throttle`.
    Start {
        /// The attempt's number.
        attempt: u32,
        /// The offset to resume from (the partial is cut back to it).
        offset: u64,
        /// Rate limits.
        throttle: Throttle,
    },
    /// Change the running attempt's rate limits.
    Throttle(Throttle),
    /// Stop the attempt at its next chunk boundary, checkpointing first.
    Abort {
        /// The attempt to stop.
        attempt: u32,
    },
    /// Delete the partial payload.
    DiscardPartial,
    /// Tell the delegate.
    Notify(Notification),
    /// Send [`Event::Timer`] at this time.
    SetTimer(Timestamp),
    /// Record the completion in the outbox (with the record, in one commit),
    /// then deliver it. Emitted exactly once, on entering a terminal phase.
    Complete(Outcome),
}

/// An event that cannot happen in the task's state: a bug in the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid transition: {event} while {phase}: {reason}")]
pub struct InvalidTransition {
    /// The phase's name.
    pub phase: &'static str,
    /// The event's name.
    pub event: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

/// The new state and the effects of one transition.
pub type Transition = (TaskState, Vec<Effect>);

/// Applies `event` to `state` at `now`.
pub fn apply(
    state: &TaskState,
    event: Event,
    now: Timestamp,
) -> Result<Transition, InvalidTransition> {
    let mut next = state.clone();
    let mut fx = Vec::new();
    step(&mut next, event, now, &mut fx)?;
    Ok((next, fx))
}

fn invalid(s: &TaskState, event: &'static str, reason: &'static str) -> InvalidTransition {
    InvalidTransition {
        phase: s.phase.name(),
        event,
        reason,
    }
}

fn step(
    s: &mut TaskState,
    event: Event,
    now: Timestamp,
    fx: &mut Vec<Effect>,
) -> Result<(), InvalidTransition> {
    if s.is_terminal() {
        return Ok(());
    }
    let name = event.name();
    if let Some(a) = event.runner_attempt() {
        if a == 0 || a > s.attempt {
            return Err(invalid(s, name, "attempt was never started"));
        }
        if a < s.attempt {
            return Ok(()); // stale: from an attempt that was superseded
        }
    }
    let running = match s.phase {
        Phase::Running { attempt } => Some(attempt),
        _ => None,
    };
    match event {
        Event::Resume => match s.phase {
            Phase::Suspended | Phase::Waiting(WaitReason::SuspendedByUser) => {
                if s.started_at.is_none() {
                    s.started_at = Some(now);
                    if let Some(d) = s.deadline() {
                        fx.push(Effect::SetTimer(d));
                    }
                }
                s.phase = Phase::Queued;
                fx.push(Effect::Persist);
            }
            _ => {}
        },
        Event::Suspend => match s.phase {
            Phase::Suspended | Phase::Waiting(WaitReason::SuspendedByUser) => {}
            _ => {
                if let Some(attempt) = running {
                    fx.push(Effect::Abort { attempt });
                }
                wait(s, WaitReason::SuspendedByUser, fx);
                fx.push(Effect::Persist);
            }
        },
        Event::Cancel { keep_resume_data } => {
            if let Some(attempt) = running {
                fx.push(Effect::Abort { attempt });
            }
            let resume = keep_resume_data.then(|| s.resume.clone());
            if !keep_resume_data {
                fx.push(Effect::DiscardPartial);
            }
            finish(s, Phase::Cancelled, Outcome::Cancelled { resume }, fx);
        }
        Event::Admission(verdict) => {
            let admissible = match &s.phase {
                Phase::Queued | Phase::Running { .. } => true,
                Phase::Waiting(r) => r.is_policy(),
                _ => false,
            };
            if !admissible {
                return Err(invalid(
                    s,
                    name,
                    "only queued, running or policy-waiting tasks are admitted",
                ));
            }
            match verdict {
                Verdict::Run(throttle) => match running {
                    Some(_) => fx.push(Effect::Throttle(throttle)),
                    None => {
                        s.attempt += 1;
                        s.bytes_received = s.resume.durable_offset;
                        s.attempt_base = s.resume.durable_offset;
                        s.phase = Phase::Running { attempt: s.attempt };
                        s.resume.record_attempt(AttemptRecord {
                            attempt: s.attempt,
                            started_at: now,
                            from_offset: s.resume.durable_offset,
                            error: None,
                        });
                        fx.push(Effect::Persist);
                        fx.push(Effect::Start {
                            attempt: s.attempt,
                            offset: s.resume.durable_offset,
                            throttle,
                        });
                    }
                },
                Verdict::Wait(reason) => {
                    if !reason.is_policy() {
                        return Err(invalid(s, name, "admission only gives policy reasons"));
                    }
                    if let Some(attempt) = running {
                        fx.push(Effect::Abort { attempt });
                    }
                    wait(s, reason, fx);
                }
                Verdict::Fail(error) => {
                    if let Some(attempt) = running {
                        fx.push(Effect::Abort { attempt });
                    }
                    fail(s, error, fx);
                }
            }
        }
        Event::Responded {
            validator, total, ..
        } => {
            if s.resume.validator != validator || s.resume.total_length != total {
                s.resume.validator = validator;
                s.resume.total_length = total;
                fx.push(Effect::Persist);
            }
        }
        Event::Restarted { reason, .. } => {
            restart(s);
            fx.push(Effect::Persist);
            fx.push(Effect::Notify(Notification::Restarted(reason)));
        }
        Event::Progress { received, .. } => {
            if received < s.bytes_received {
                return Err(invalid(s, name, "bytes received went backwards"));
            }
            if s.resume.total_length.is_some_and(|t| received > t) {
                return Err(invalid(s, name, "more bytes than the total length"));
            }
            s.bytes_received = received;
            fx.push(Effect::Notify(Notification::Progress {
                received,
                total: s.resume.total_length,
            }));
        }
        Event::Checkpoint {
            durable, partial, ..
        } => {
            if durable > s.bytes_received || durable < s.resume.durable_offset {
                return Err(invalid(
                    s,
                    name,
                    "durable offset outside [durable, received]",
                ));
            }
            s.resume.durable_offset = durable;
            if partial.is_some() {
                s.resume.partial = partial;
            }
            fx.push(Effect::Persist);
        }
        Event::AttemptFailed { attempt, error } => {
            if running != Some(attempt) {
                return Ok(()); // the attempt was already stopped; its error no longer matters
            }
            if let Some(last) = s.resume.attempts.last_mut()
                && last.attempt == attempt
            {
                last.error = Some(error.clone());
            }
            if s.resume.durable_offset > s.attempt_base {
                s.failures = 0;
            }
            attempt_failed(s, error, now, fx);
        }
        Event::Finished { bytes, .. } => {
            if bytes < s.resume.durable_offset || s.resume.total_length.is_some_and(|t| t != bytes)
            {
                return Err(invalid(
                    s,
                    name,
                    "finished length disagrees with the resume data",
                ));
            }
            s.bytes_received = bytes;
            s.resume.durable_offset = bytes;
            finish(s, Phase::Completed, Outcome::Completed { bytes }, fx);
        }
        Event::Timer => {
            if s.deadline().is_some_and(|d| now >= d) && s.phase != Phase::Suspended {
                if let Some(attempt) = running {
                    fx.push(Effect::Abort { attempt });
                }
                let error = TransferError::new(
                    ErrorKind::DeadlineExceeded,
                    format!(
                        "not finished within its time limit of {}",
                        crate::units::format_duration(s.retry.resource_timeout)
                    ),
                );
                fail(s, error, fx);
            } else if let Phase::Waiting(r) = &s.phase
                && r.wake_at().is_some_and(|t| now >= t)
            {
                s.phase = Phase::Queued;
            }
        }
    }
    Ok(())
}

fn wait(s: &mut TaskState, reason: WaitReason, fx: &mut Vec<Effect>) {
    if s.phase == Phase::Waiting(reason.clone()) {
        return;
    }
    if let Some(t) = reason.wake_at() {
        fx.push(Effect::SetTimer(t));
    }
    fx.push(Effect::Notify(Notification::Waiting(reason.clone())));
    s.phase = Phase::Waiting(reason);
}

fn restart(s: &mut TaskState) {
    s.bytes_received = 0;
    s.attempt_base = 0;
    s.resume.durable_offset = 0;
    s.resume.validator = None;
    s.resume.total_length = None;
}

fn attempt_failed(s: &mut TaskState, error: TransferError, now: Timestamp, fx: &mut Vec<Effect>) {
    if error.kind() == ErrorKind::ChecksumMismatch {
        s.checksum_failures += 1;
        restart(s);
        fx.push(Effect::DiscardPartial);
        if s.checksum_failures >= 2 {
            s.resume.partial = None;
            fail(s, error, fx);
        } else {
            s.phase = Phase::Queued;
            fx.push(Effect::Persist);
            fx.push(Effect::Notify(Notification::Restarted(
                RestartReason::ChecksumMismatch,
            )));
        }
        return;
    }
    if error.kind() == ErrorKind::TooManyOpenFiles {
        // The process's shortage, not the task's fault: it waits a moment
        // without counting towards the retry limit.
        let mut random = SplitMix64::new(s.jitter_seed ^ u64::from(s.attempt));
        let until = now.saturating_add(s.retry.backoff(1, None, &mut random));
        if s.deadline().is_some_and(|d| until >= d) {
            return fail(s, error, fx);
        }
        wait(s, WaitReason::BackingOff { until, error }, fx);
        fx.push(Effect::Persist);
        return;
    }
    match error.class() {
        ErrorClass::Policy => wait(s, WaitReason::NoNetwork, fx),
        ErrorClass::Permanent => fail(s, error, fx),
        ErrorClass::Transient => {
            s.failures += 1;
            if s.failures > s.retry.retry_limit {
                return fail(s, error, fx);
            }
            let mut random = SplitMix64::new(s.jitter_seed ^ u64::from(s.attempt));
            let delay = s
                .retry
                .backoff(s.failures, error.retry_after(), &mut random);
            let until = now.saturating_add(delay);
            if s.deadline().is_some_and(|d| until >= d) {
                return fail(s, error, fx);
            }
            if let (Some(window), Some(started)) = (s.retry.retry_window, s.started_at)
                && until >= started.saturating_add(window)
            {
                // No retry may start this late.
                return fail(s, error, fx);
            }
            wait(s, WaitReason::BackingOff { until, error }, fx);
            fx.push(Effect::Persist);
        }
    }
}

/// Ends the task failed, deleting its partial: a failed task leaves no
/// bytes behind.
fn fail(s: &mut TaskState, error: TransferError, fx: &mut Vec<Effect>) {
    if !fx.contains(&Effect::DiscardPartial) {
        fx.push(Effect::DiscardPartial);
    }
    finish(
        s,
        Phase::Failed(error.clone()),
        Outcome::Failed { error },
        fx,
    );
}

fn finish(s: &mut TaskState, phase: Phase, outcome: Outcome, fx: &mut Vec<Effect>) {
    s.phase = phase;
    fx.push(Effect::Persist);
    fx.push(Effect::Complete(outcome));
}
