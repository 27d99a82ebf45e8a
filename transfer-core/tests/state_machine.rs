//! Property tests of the task state machine: random event sequences, with the
//! invariants of DESIGN §2 checked after every step.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use transfer_core::*;

/// An event template, instantiated against the state it is applied to so that
/// most events are plausible (current attempt, offsets near the real ones),
/// while some are deliberately stale or impossible.
#[derive(Clone, Debug)]
enum Step {
    Resume,
    Suspend,
    Cancel(bool),
    Run,
    Wait(u8),
    FailFast,
    Responded { same: bool, total: Option<u64> },
    Restarted,
    Progress(u64),
    Checkpoint(u64),
    Failed(u8),
    Finished { exact: bool },
    Timer,
    Stale,
    Future,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Resume),
        1 => Just(Step::Suspend),
        1 => any::<bool>().prop_map(Step::Cancel),
        4 => Just(Step::Run),
        2 => (0u8..6).prop_map(Step::Wait),
        1 => Just(Step::FailFast),
        2 => (any::<bool>(), proptest::option::of(0u64..10_000)).prop_map(|(same, total)| Step::Responded { same, total }),
        1 => Just(Step::Restarted),
        5 => (0u64..5_000).prop_map(Step::Progress),
        4 => (0u64..5_000).prop_map(Step::Checkpoint),
        4 => (0u8..8).prop_map(Step::Failed),
        1 => any::<bool>().prop_map(|exact| Step::Finished { exact }),
        3 => Just(Step::Timer),
        1 => Just(Step::Stale),
        1 => Just(Step::Future),
    ]
}

fn error(i: u8) -> TransferError {
    let kind = match i {
        0 => ErrorKind::ConnectionLost,
        1 => ErrorKind::Timeout(TimeoutKind::Idle),
        2 => ErrorKind::Status(503),
        3 => ErrorKind::Status(404),
        4 => ErrorKind::ChecksumMismatch,
        5 => ErrorKind::NetworkUnavailable,
        6 => ErrorKind::Tls(TlsFailure::UnknownIssuer),
        _ => ErrorKind::StorageFull,
    };
    let retry_after = (i == 2).then(|| Duration::from_secs(30));
    TransferError::new(kind, "").with_retry_after(retry_after)
}

fn wait_reason(i: u8, now: Timestamp) -> WaitReason {
    match i {
        0 => WaitReason::NoNetwork,
        1 => WaitReason::ExpensiveNetwork,
        2 => WaitReason::BatteryLow {
            level: 5,
            threshold: 10,
        },
        3 => WaitReason::NotBefore(now.saturating_add(Duration::from_secs(60))),
        4 => WaitReason::SessionLimit,
        _ => WaitReason::Schedule {
            until: now.saturating_add(Duration::from_secs(3600)),
        },
    }
}

fn instantiate(s: &TaskState, step: &Step, now: Timestamp) -> Event {
    let a = s.attempt;
    match step {
        Step::Resume => Event::Resume,
        Step::Suspend => Event::Suspend,
        Step::Cancel(keep) => Event::Cancel {
            keep_resume_data: *keep,
        },
        Step::Run => Event::Admission(Verdict::Run(Throttle::default())),
        Step::Wait(i) => Event::Admission(Verdict::Wait(wait_reason(*i, now))),
        Step::FailFast => Event::Admission(Verdict::Fail(TransferError::new(
            ErrorKind::NoConnectivity,
            "",
        ))),
        Step::Responded { same, total } => Event::Responded {
            attempt: a,
            validator: if *same {
                s.resume.validator.clone()
            } else {
                Some(Validator::StrongETag(format!("\"{a}\"")))
            },
            total: if *same { s.resume.total_length } else { *total },
        },
        Step::Restarted => Event::Restarted {
            attempt: a,
            reason: RestartReason::ValidatorChanged,
        },
        Step::Progress(d) => Event::Progress {
            attempt: a,
            received: s.bytes_received + d,
        },
        Step::Checkpoint(d) => Event::Checkpoint {
            attempt: a,
            durable: s.resume.durable_offset + d % (s.bytes_received - s.resume.durable_offset + 1),
            partial: None,
        },
        Step::Failed(i) => Event::AttemptFailed {
            attempt: a,
            error: error(*i),
        },
        Step::Finished { exact } => Event::Finished {
            attempt: a,
            bytes: if *exact {
                s.resume.total_length.unwrap_or(s.bytes_received)
            } else {
                s.bytes_received + 1
            },
        },
        Step::Timer => Event::Timer,
        Step::Stale => Event::Progress {
            attempt: a.saturating_sub(1),
            received: 0,
        },
        Step::Future => Event::Finished {
            attempt: a + 1,
            bytes: 0,
        },
    }
}

fn policy() -> impl Strategy<Value = RetryPolicy> {
    (0u32..5, 1u64..10, 1u64..3_600).prop_map(|(limit, base, deadline_mins)| RetryPolicy {
        retry_limit: limit,
        base_delay: Duration::from_secs(base),
        max_delay: Duration::from_secs(600),
        resource_timeout: Duration::from_secs(deadline_mins * 60),
        retry_window: None,
    })
}

fn explicit_restart(e: &Event) -> bool {
    matches!(e, Event::Restarted { .. })
        || matches!(e, Event::AttemptFailed { error, .. } if error.kind() == ErrorKind::ChecksumMismatch)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_on_random_event_sequences(
        retry in policy(),
        seed in any::<u64>(),
        steps in proptest::collection::vec((step(), 0u64..120_000), 1..120),
    ) {
        let mut s = TaskState::new(retry, seed);
        let mut now = Timestamp::from_millis(1_800_000_000_000);
        let mut completions = 0;
        for (st, dt) in &steps {
            now = now.saturating_add(Duration::from_millis(*dt));
            let event = instantiate(&s, st, now);
            let before = s.clone();
            let Ok((next, effects)) = apply(&s, event.clone(), now) else {
                // Refused events change nothing (the caller keeps the old state).
                continue;
            };
            let completes = effects.iter().filter(|e| matches!(e, Effect::Complete(_))).count();
            completions += completes;

            // Terminal states absorb every event.
            if before.is_terminal() {
                prop_assert_eq!(&next, &before);
                prop_assert!(effects.is_empty());
            }
            // Exactly one completion, emitted on entering a terminal state.
            prop_assert_eq!(completes, usize::from(!before.is_terminal() && next.is_terminal()));
            if completes == 1 {
                prop_assert!(effects.contains(&Effect::Persist), "a completion is persisted");
            }
            // A failed task leaves nothing behind: entering Failed discards
            // the partial.
            if matches!(next.phase, Phase::Failed(_)) && !before.is_terminal() {
                prop_assert!(effects.contains(&Effect::DiscardPartial), "failed without a discard");
            }
            // The durable offset never exceeds what was received ...
            prop_assert!(next.resume.durable_offset <= next.bytes_received,
                "durable {} > received {}", next.resume.durable_offset, next.bytes_received);
            // ... and only drops through an explicit restart.
            if next.resume.durable_offset < before.resume.durable_offset {
                prop_assert!(explicit_restart(&event), "durable offset dropped on {:?}", event);
            }
            // Attempts never exceed the retry policy.
            if next.is_terminal() {
                prop_assert!(next.failures <= next.retry.retry_limit + 1);
            } else {
                prop_assert!(next.failures <= next.retry.retry_limit);
            }
            // A start is the only way into Running, and starts from the durable offset.
            for e in &effects {
                if let Effect::Start { attempt, offset, .. } = e {
                    prop_assert_eq!(&next.phase, &Phase::Running { attempt: *attempt });
                    prop_assert_eq!(*offset, next.resume.durable_offset);
                }
            }
            if matches!(next.phase, Phase::Running { .. }) && !matches!(before.phase, Phase::Running { .. }) {
                let starts = effects.iter().any(|e| matches!(e, Effect::Start { .. }));
                prop_assert!(starts, "entered running without a start");
            }
            // Leaving Running other than by finishing aborts the attempt.
            if let Phase::Running { attempt } = before.phase
                && !matches!(next.phase, Phase::Running { .. })
                && !matches!(event, Event::Finished { .. } | Event::AttemptFailed { .. })
            {
                prop_assert!(effects.contains(&Effect::Abort { attempt }), "no abort on {:?}", event);
            }
            // A wake-up time always has a timer.
            if let Phase::Waiting(r) = &next.phase
                && let Some(t) = r.wake_at()
                && next.phase != before.phase
            {
                prop_assert!(effects.contains(&Effect::SetTimer(t)));
            }
            s = next;
        }
        prop_assert_eq!(completions, usize::from(s.is_terminal()));
    }

    #[test]
    fn a_task_always_ends_if_the_driver_keeps_going(retry in policy(), seed in any::<u64>()) {
        // Failing every attempt ends in Failed within the retry limit (+ checksum rule).
        let mut s = TaskState::new(retry, seed);
        let mut now = Timestamp::from_millis(1_800_000_000_000);
        s = apply(&s, Event::Resume, now).unwrap().0;
        for _ in 0..(retry.retry_limit + 3) {
            if s.is_terminal() { break; }
            if let Phase::Waiting(r) = &s.phase {
                now = r.wake_at().unwrap_or(now);
                s = apply(&s, Event::Timer, now).unwrap().0;
                if s.is_terminal() { break; }
            }
            s = apply(&s, Event::Admission(Verdict::Run(Throttle::default())), now).unwrap().0;
            let a = s.attempt;
            s = apply(&s, Event::AttemptFailed { attempt: a, error: error(0) }, now).unwrap().0;
        }
        prop_assert!(matches!(s.phase, Phase::Failed(_)), "{:?}", s.phase);
    }
}

#[test]
fn checksum_mismatch_retries_once_from_zero_then_fails_without_a_partial() {
    let now = Timestamp::from_millis(1_800_000_000_000);
    let mut s = TaskState::new(RetryPolicy::default(), 1);
    s = apply(&s, Event::Resume, now).unwrap().0;
    for round in 0..2 {
        s = apply(&s, Event::Admission(Verdict::Run(Throttle::default())), now)
            .unwrap()
            .0;
        let a = s.attempt;
        s = apply(
            &s,
            Event::Progress {
                attempt: a,
                received: 10,
            },
            now,
        )
        .unwrap()
        .0;
        s = apply(
            &s,
            Event::Checkpoint {
                attempt: a,
                durable: 10,
                partial: None,
            },
            now,
        )
        .unwrap()
        .0;
        let (next, fx) = apply(
            &s,
            Event::AttemptFailed {
                attempt: a,
                error: error(4),
            },
            now,
        )
        .unwrap();
        assert!(fx.contains(&Effect::DiscardPartial));
        assert_eq!(next.resume.durable_offset, 0);
        if round == 0 {
            assert_eq!(next.phase, Phase::Queued);
        } else {
            assert!(
                matches!(next.phase, Phase::Failed(ref e) if e.kind() == ErrorKind::ChecksumMismatch)
            );
            assert!(fx.contains(&Effect::Complete(Outcome::Failed { error: error(4) })));
        }
        s = next;
    }
}

#[test]
fn progress_resets_the_failure_count() {
    let now = Timestamp::from_millis(1_800_000_000_000);
    let retry = RetryPolicy {
        retry_limit: 1,
        ..RetryPolicy::default()
    };
    let mut s = apply(&TaskState::new(retry, 7), Event::Resume, now)
        .unwrap()
        .0;
    let mut t = now;
    for i in 0..5u64 {
        s = apply(&s, Event::Admission(Verdict::Run(Throttle::default())), t)
            .unwrap()
            .0;
        let a = s.attempt;
        s = apply(
            &s,
            Event::Progress {
                attempt: a,
                received: (i + 1) * 100,
            },
            t,
        )
        .unwrap()
        .0;
        s = apply(
            &s,
            Event::Checkpoint {
                attempt: a,
                durable: (i + 1) * 100,
                partial: None,
            },
            t,
        )
        .unwrap()
        .0;
        s = apply(
            &s,
            Event::AttemptFailed {
                attempt: a,
                error: error(0),
            },
            t,
        )
        .unwrap()
        .0;
        let Phase::Waiting(WaitReason::BackingOff { until, .. }) = s.phase.clone() else {
            panic!("attempt {a} should back off, is {:?}", s.phase);
        };
        t = until;
        s = apply(&s, Event::Timer, t).unwrap().0;
    }
    // Every failure above followed progress, so none used up the single retry;
    // the first attempt without progress is that retry, and its failure ends the task.
    s = apply(&s, Event::Admission(Verdict::Run(Throttle::default())), t)
        .unwrap()
        .0;
    let a = s.attempt;
    s = apply(
        &s,
        Event::AttemptFailed {
            attempt: a,
            error: error(0),
        },
        t,
    )
    .unwrap()
    .0;
    assert!(matches!(s.phase, Phase::Failed(_)), "{:?}", s.phase);
    assert_eq!(s.attempt, 6);
}

#[test]
fn retry_after_is_honoured_and_the_deadline_fails_the_task() {
    let now = Timestamp::from_millis(1_800_000_000_000);
    let retry = RetryPolicy {
        resource_timeout: Duration::from_secs(3600),
        ..RetryPolicy::default()
    };
    let mut s = apply(&TaskState::new(retry, 3), Event::Resume, now)
        .unwrap()
        .0;
    s = apply(&s, Event::Admission(Verdict::Run(Throttle::default())), now)
        .unwrap()
        .0;
    let busy = TransferError::status(503, Some(Duration::from_secs(120)));
    s = apply(
        &s,
        Event::AttemptFailed {
            attempt: 1,
            error: busy,
        },
        now,
    )
    .unwrap()
    .0;
    let Phase::Waiting(WaitReason::BackingOff { until, .. }) = s.phase.clone() else {
        panic!()
    };
    assert!(until >= now.saturating_add(Duration::from_secs(120)));
    // A timer before `until` does nothing.
    assert_eq!(apply(&s, Event::Timer, now).unwrap().0, s);
    // A Retry-After beyond the deadline fails at once.
    s = apply(&s, Event::Timer, until).unwrap().0;
    s = apply(
        &s,
        Event::Admission(Verdict::Run(Throttle::default())),
        until,
    )
    .unwrap()
    .0;
    let later = TransferError::status(503, Some(Duration::from_secs(7200)));
    s = apply(
        &s,
        Event::AttemptFailed {
            attempt: 2,
            error: later,
        },
        until,
    )
    .unwrap()
    .0;
    assert!(matches!(s.phase, Phase::Failed(ref e) if e.kind() == ErrorKind::Status(503)));
    // The deadline timer fails a waiting task.
    let mut w = apply(&TaskState::new(retry, 3), Event::Resume, now)
        .unwrap()
        .0;
    w = apply(
        &w,
        Event::Admission(Verdict::Wait(WaitReason::NoNetwork)),
        now,
    )
    .unwrap()
    .0;
    let (w, fx) = apply(
        &w,
        Event::Timer,
        now.saturating_add(Duration::from_secs(3600)),
    )
    .unwrap();
    assert!(matches!(w.phase, Phase::Failed(ref e) if e.kind() == ErrorKind::DeadlineExceeded));
    assert_eq!(
        fx.iter()
            .filter(|e| matches!(e, Effect::Complete(_)))
            .count(),
        1
    );
}

#[test]
fn invalid_transitions_are_errors_not_panics() {
    let now = Timestamp::EPOCH;
    let s = TaskState::new(RetryPolicy::default(), 0);
    let err = apply(&s, Event::Admission(Verdict::Run(Throttle::default())), now).unwrap_err();
    assert_eq!(err.phase, "suspended");
    assert!(
        apply(
            &s,
            Event::Progress {
                attempt: 1,
                received: 5
            },
            now
        )
        .is_err()
    );
    let s = apply(&s, Event::Resume, now).unwrap().0;
    let s = apply(&s, Event::Admission(Verdict::Run(Throttle::default())), now)
        .unwrap()
        .0;
    let s = apply(
        &s,
        Event::Progress {
            attempt: 1,
            received: 50,
        },
        now,
    )
    .unwrap()
    .0;
    assert!(
        apply(
            &s,
            Event::Progress {
                attempt: 1,
                received: 40
            },
            now
        )
        .is_err()
    );
    assert!(
        apply(
            &s,
            Event::Checkpoint {
                attempt: 1,
                durable: 51,
                partial: None
            },
            now
        )
        .is_err()
    );
    assert!(
        apply(
            &s,
            Event::Admission(Verdict::Wait(WaitReason::SuspendedByUser)),
            now
        )
        .is_err()
    );
    let msg = apply(
        &s,
        Event::Finished {
            attempt: 2,
            bytes: 50,
        },
        now,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        msg,
        "invalid transition: finished while running: attempt was never started"
    );
}

#[test]
fn suspend_and_resume_continue_from_the_durable_offset() {
    let now = Timestamp::EPOCH;
    let mut s = apply(
        &TaskState::new(RetryPolicy::default(), 0),
        Event::Resume,
        now,
    )
    .unwrap()
    .0;
    s = apply(&s, Event::Admission(Verdict::Run(Throttle::default())), now)
        .unwrap()
        .0;
    s = apply(
        &s,
        Event::Progress {
            attempt: 1,
            received: 500,
        },
        now,
    )
    .unwrap()
    .0;
    let (next, fx) = apply(&s, Event::Suspend, now).unwrap();
    assert_eq!(fx[0], Effect::Abort { attempt: 1 });
    assert_eq!(next.phase, Phase::Waiting(WaitReason::SuspendedByUser));
    // The aborted attempt still checkpoints what it wrote; its late error is ignored.
    let next = apply(
        &next,
        Event::Checkpoint {
            attempt: 1,
            durable: 500,
            partial: None,
        },
        now,
    )
    .unwrap()
    .0;
    let lost = TransferError::new(ErrorKind::ConnectionLost, "");
    let (next, fx) = apply(
        &next,
        Event::AttemptFailed {
            attempt: 1,
            error: lost,
        },
        now,
    )
    .unwrap();
    assert!(fx.is_empty());
    assert_eq!(next.phase, Phase::Waiting(WaitReason::SuspendedByUser));
    let next = apply(&next, Event::Resume, now).unwrap().0;
    let (next, fx) = apply(
        &next,
        Event::Admission(Verdict::Run(Throttle::default())),
        now,
    )
    .unwrap();
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Start {
            attempt: 2,
            offset: 500,
            ..
        }
    )));
    // Events from attempt 1 are now stale.
    let (same, fx) = apply(
        &next,
        Event::Progress {
            attempt: 1,
            received: 9999,
        },
        now,
    )
    .unwrap();
    assert_eq!((same, fx), (next, vec![]));
}

/// curl's `--retry-max-time`: retries start only within the window from the
/// first resume; the failure whose retry would start later fails the task,
/// saying why it failed.
#[test]
fn no_retry_starts_after_the_retry_window() {
    let now = Timestamp::from_millis(1_800_000_000_000);
    let retry = RetryPolicy {
        retry_limit: 100,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(1),
        retry_window: Some(Duration::from_secs(10)),
        ..RetryPolicy::default()
    };
    let mut s = apply(&TaskState::new(retry, 5), Event::Resume, now)
        .unwrap()
        .0;
    let lost = || TransferError::new(ErrorKind::ConnectionLost, "cut");
    let mut t = now;
    let mut retries = 0;
    loop {
        s = apply(&s, Event::Admission(Verdict::Run(Throttle::default())), t)
            .unwrap()
            .0;
        let attempt = s.attempt;
        s = apply(
            &s,
            Event::AttemptFailed {
                attempt,
                error: lost(),
            },
            t,
        )
        .unwrap()
        .0;
        match &s.phase {
            Phase::Waiting(WaitReason::BackingOff { until, .. }) => {
                assert!(*until < now.saturating_add(Duration::from_secs(10)));
                retries += 1;
                t = *until;
                s = apply(&s, Event::Timer, t).unwrap().0;
            }
            Phase::Failed(e) => {
                assert_eq!(e.kind(), ErrorKind::ConnectionLost);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // One-second backoffs, jittered into their upper half: 10 to 20 fit.
    assert!((10..=20).contains(&retries), "{retries} retries");
    assert!(t < now.saturating_add(Duration::from_secs(10)));
}
