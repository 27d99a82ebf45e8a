//! The core's decisions, driven step by step: no runtime, no sockets, a
//! time the test chooses. Replies are numbers, so a test sees which
//! caller was answered, and with what.

use std::sync::Arc;
use std::time::Duration;

use transfer_core::{
    Batch, Conditions, Destination, ErrorKind, Event, NetworkPath, Outcome, Phase, Snapshot,
    StoreError, StoreErrorKind, TaskId, TaskSpec, Timestamp, TransferError, WaitReason,
};

use super::core::{Action, Core, Delivery, IdleLevel};
use super::handlers::EndedWait;
use crate::SessionConfig;

const T0: u64 = 1_700_000_000_000;

struct Sim {
    core: Core<u32>,
    now: Timestamp,
}

/// A download of `url` to a file named for it.
fn spec(url: &str) -> TaskSpec {
    TaskSpec::download(url, Destination::Path(url.replace(['/', ':'], "_").into()))
        .build()
        .unwrap()
}

fn config(max: u32, per_host: u32) -> SessionConfig {
    let mut c = SessionConfig::default();
    c.policy.max_concurrent = max;
    c.policy.max_per_host = per_host;
    c
}

impl Sim {
    fn new(config: SessionConfig) -> Sim {
        Sim::with(config, None)
    }

    fn shared(config: SessionConfig, ttl: Duration) -> Sim {
        Sim::with(config, Some(ttl))
    }

    fn with(config: SessionConfig, ttl: Option<Duration>) -> Sim {
        let now = Timestamp::from_millis(T0);
        Sim {
            core: Core::new(Arc::new(config), Conditions::default(), true, now, ttl, 7),
            now,
        }
    }

    fn enqueue(&mut self, spec: TaskSpec, waiter: u32) -> TaskId {
        let id = self.core.handle_enqueue(spec, true).unwrap();
        self.core.after_enqueue(id, waiter);
        id
    }

    /// One pass of the driver's loop, up to the commit it starts.
    fn settle(&mut self) -> Option<Batch> {
        self.core.pump();
        let busy = self.core.busy();
        self.core.check_busy(busy);
        self.core.begin_commit()
    }

    /// A whole pass: the commit succeeds; what was done, in order.
    fn cycle(&mut self) -> Vec<Action<u32>> {
        self.core.pump();
        let busy = self.core.busy();
        self.core.check_busy(busy);
        if self.core.begin_commit().is_some() {
            self.core.end_commit(Ok(()));
        }
        self.core.check_idle(busy);
        self.actions()
    }

    fn actions(&mut self) -> Vec<Action<u32>> {
        std::iter::from_fn(|| self.core.poll_action()).collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now.saturating_add(by);
        self.core.handle_time(self.now);
        self.core.handle_timers();
    }

    fn phase(&self, id: TaskId) -> Phase {
        self.core.record(id).unwrap().state.phase.clone()
    }

    fn attempt(&self, id: TaskId) -> u32 {
        match self.phase(id) {
            Phase::Running { attempt } => attempt,
            other => panic!("not running: {other:?}"),
        }
    }

    fn finish(&mut self, id: TaskId) {
        let attempt = self.attempt(id);
        self.core
            .handle_report(id, Event::Finished { attempt, bytes: 10 });
    }
}

fn started(actions: &[Action<u32>]) -> Vec<TaskId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start(s) => Some(s.record.id),
            _ => None,
        })
        .collect()
}

fn replies(actions: &[Action<u32>]) -> Vec<(u32, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply(w, r) => Some((*w, r.is_ok())),
            _ => None,
        })
        .collect()
}

fn completions(actions: &[Action<u32>]) -> Vec<TaskId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver(Delivery::Completion(c)) => Some(c.task),
            _ => None,
        })
        .collect()
}

fn idles(actions: &[Action<u32>]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Deliver(Delivery::Idle(_))))
        .count()
}

fn failure(kind: ErrorKind) -> TransferError {
    TransferError::new(kind, "cut")
}

/// A store's refusal of a commit, as a full disk says it.
fn full() -> StoreError {
    StoreError::new(StoreErrorKind::Full, "disk full")
}

#[test]
fn a_new_task_starts_only_once_its_record_is_committed() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    let batch = s.settle().expect("the new record is written");
    assert_eq!(batch.save.len(), 1);
    assert_eq!(batch.save[0].id, id);
    assert!(!batch.deferrable);
    let before = s.actions();
    assert!(
        started(&before).is_empty(),
        "started before its commit: {before:?}"
    );
    assert!(replies(&before).is_empty());
    s.core.end_commit(Ok(()));
    let after = s.actions();
    assert_eq!(started(&after), vec![id]);
    assert_eq!(replies(&after), vec![(1, true)]);
}

#[test]
fn higher_priority_runs_first() {
    let mut s = Sim::new(config(1, 8));
    let low = s.enqueue(
        TaskSpec::download("https://a.example/low", Destination::Path("l".into()))
            .priority(0.2)
            .build()
            .unwrap(),
        1,
    );
    let high = s.enqueue(
        TaskSpec::download("https://a.example/high", Destination::Path("h".into()))
            .priority(0.9)
            .build()
            .unwrap(),
        2,
    );
    let a = s.cycle();
    assert_eq!(started(&a), vec![high]);
    assert_eq!(s.phase(low), Phase::Queued);
}

#[test]
fn equal_priority_runs_in_earliest_begin_order() {
    let mut s = Sim::new(config(1, 8));
    let later = TaskSpec::download("https://a.example/1", Destination::Path("1".into()))
        .earliest_begin(Timestamp::from_millis(T0 - 1_000))
        .build()
        .unwrap();
    let earlier = TaskSpec::download("https://a.example/2", Destination::Path("2".into()))
        .earliest_begin(Timestamp::from_millis(T0 - 5_000))
        .build()
        .unwrap();
    s.enqueue(later, 1);
    let first = s.enqueue(earlier, 2);
    assert_eq!(started(&s.cycle()), vec![first]);
}

#[test]
fn equal_tasks_run_in_enqueue_order() {
    let mut s = Sim::new(config(2, 8));
    let ids: Vec<TaskId> = (0..4)
        .map(|i| s.enqueue(spec(&format!("https://a.example/{i}")), i))
        .collect();
    assert_eq!(started(&s.cycle()), ids[..2].to_vec());
}

#[test]
fn the_total_limit_holds() {
    let mut s = Sim::new(config(3, 8));
    for i in 0..10 {
        s.enqueue(spec(&format!("https://h{i}.example/f")), i);
    }
    let a = s.cycle();
    assert_eq!(started(&a).len(), 3);
    assert_eq!(s.core.busy_slots(), 3);
}

#[test]
fn the_per_host_limit_holds_and_other_hosts_still_run() {
    let mut s = Sim::new(config(8, 1));
    let a1 = s.enqueue(spec("https://a.example/1"), 1);
    let a2 = s.enqueue(spec("https://a.example/2"), 2);
    let b1 = s.enqueue(spec("https://b.example/1"), 3);
    let a = s.cycle();
    assert_eq!(started(&a), vec![a1, b1]);
    assert_eq!(s.phase(a2), Phase::Waiting(WaitReason::HostLimit));
}

#[test]
fn a_completion_frees_its_slot_for_the_next_task_before_its_own_commit_ends() {
    let mut s = Sim::new(config(1, 8));
    let first = s.enqueue(spec("https://a.example/1"), 1);
    let second = s.enqueue(spec("https://a.example/2"), 2);
    assert_eq!(started(&s.cycle()), vec![first]);
    s.finish(first);
    let batch = s.settle().expect("the completion is committed");
    assert_eq!(batch.complete.len(), 1);
    let during = s.actions();
    // The next start is deferrable: it goes while the completion commits.
    assert_eq!(started(&during), vec![second]);
    assert!(completions(&during).is_empty(), "delivered before durable");
    s.core.end_commit(Ok(()));
    assert_eq!(completions(&s.actions()), vec![first]);
}

#[test]
fn a_completion_is_delivered_only_after_its_commit() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    s.finish(id);
    assert!(s.settle().is_some());
    assert!(completions(&s.actions()).is_empty());
    s.core.end_commit(Ok(()));
    assert_eq!(completions(&s.actions()), vec![id]);
}

#[test]
fn a_task_whose_creation_was_not_committed_never_starts_and_its_caller_is_told() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    assert!(s.settle().is_some());
    s.core.end_commit(Err(full()));
    let a = s.actions();
    assert_eq!(replies(&a), vec![(1, false)]);
    assert!(started(&a).is_empty(), "started without a record");
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Deliver(Delivery::Event(
            crate::SessionEvent::StoreFailed {
                kind: StoreErrorKind::Full,
                ..
            },
            _
        ))
    )));
    assert!(
        s.core.record(id).is_none(),
        "kept a task that was never recorded"
    );
    assert_eq!(s.core.busy_slots(), 0);
    s.advance(Duration::from_secs(1));
    assert!(started(&s.cycle()).is_empty());
}

#[test]
fn a_completion_whose_commit_failed_is_delivered_only_once_a_retry_commits_it() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    s.finish(id);
    assert!(s.settle().is_some());
    s.core.end_commit(Err(full()));
    assert!(
        completions(&s.actions()).is_empty(),
        "delivered though not durable"
    );
    assert!(s.settle().is_none(), "no backoff");
    let until = s.core.poll_timeout().expect("a retry is due");
    assert_eq!(until, s.now.saturating_add(Duration::from_millis(100)));
    s.advance(Duration::from_millis(100));
    let batch = s.settle().expect("tried again");
    assert_eq!(batch.complete.len(), 1);
    assert!(completions(&s.actions()).is_empty());
    // A second failure waits twice as long.
    s.core.end_commit(Err(full()));
    s.advance(Duration::from_millis(100));
    assert!(s.settle().is_none());
    s.advance(Duration::from_millis(100));
    assert!(s.settle().is_some());
    s.core.end_commit(Ok(()));
    assert_eq!(completions(&s.actions()), vec![id]);
}

#[test]
fn a_pause_whose_commit_failed_is_answered_once_it_is_durable() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    assert!(s.core.handle_user(id, Event::Suspend));
    s.core.after_commit(2);
    assert!(s.settle().is_some());
    s.core
        .end_commit(Err(StoreError::new(StoreErrorKind::Unavailable, "gone")));
    assert!(replies(&s.actions()).is_empty(), "answered before durable");
    s.advance(Duration::from_millis(100));
    assert!(s.settle().is_some());
    s.core.end_commit(Ok(()));
    assert_eq!(replies(&s.actions()), vec![(2, true)]);
}

#[test]
fn a_failed_commit_keeps_a_shared_batch_pending_until_it_is_written() {
    let mut s = Sim::shared(SessionConfig::default(), Duration::from_secs(30));
    let id = s.enqueue(spec("https://a.example/1"), 1);
    let a = s.cycle();
    assert!(a.iter().any(|a| matches!(a, Action::Claim(t) if *t == id)));
    let record = s.core.record(id).cloned();
    s.core.handle_claimed(id, true, Some((record, None)), 0);
    let a = s.cycle();
    assert_eq!(started(&a), vec![id]);
    s.finish(id);
    assert!(s.settle().is_some());
    s.core.end_commit(Err(StoreError::new(
        StoreErrorKind::Unavailable,
        "unreachable",
    )));
    let a = s.actions();
    assert!(completions(&a).is_empty(), "delivered though not durable");
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::ReleaseClaim(t) if *t == id)),
        "the claim went before the record was written"
    );
    assert!(s.settle().is_none(), "tried again at once");
    s.advance(Duration::from_millis(100));
    let again = s.settle().expect("written again");
    assert!(again.save.iter().any(|r| r.id == id));
    assert_eq!(again.complete.len(), 1);
    s.core.end_commit(Ok(()));
    assert_eq!(completions(&s.actions()), vec![id]);
}

#[test]
fn the_session_is_idle_after_the_last_task_ends() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    assert_eq!(idles(&s.cycle()), 0);
    s.finish(id);
    let a = s.cycle();
    assert_eq!(idles(&a), 1);
    let c = a
        .iter()
        .position(|a| matches!(a, Action::Deliver(Delivery::Completion(_))))
        .unwrap();
    let i = a
        .iter()
        .position(|a| matches!(a, Action::Deliver(Delivery::Idle(_))))
        .unwrap();
    assert!(c < i, "idle before the last completion");
    // Said once per change.
    assert_eq!(idles(&s.cycle()), 0);
}

#[test]
fn new_work_clears_the_idle_level() {
    let mut s = Sim::new(SessionConfig::default());
    assert_eq!(idles(&s.cycle()), 1);
    s.enqueue(spec("https://a.example/1"), 1);
    let a = s.cycle();
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Idle(IdleLevel {
            idle: false,
            generation: 2
        })
    )));
}

/// A host name that does not exist fails the task at once, unless the
/// session asks to retry missing hosts: then it backs off and tries again.
#[test]
fn a_name_that_does_not_exist_fails_unless_the_session_retries_missing_hosts() {
    for waits in [false, true] {
        let mut config = SessionConfig::default();
        config.policy.retries_missing_hosts = waits;
        let mut s = Sim::new(config);
        let id = s.enqueue(spec("https://a.example/1"), 1);
        s.cycle();
        let attempt = s.attempt(id);
        s.core.handle_report(
            id,
            Event::AttemptFailed {
                attempt,
                error: TransferError::new(ErrorKind::NoSuchHost, "cannot resolve a.example"),
            },
        );
        s.cycle();
        match s.phase(id) {
            Phase::Failed(e) if !waits => assert_eq!(e.kind(), ErrorKind::NoSuchHost),
            Phase::Waiting(WaitReason::BackingOff { error, .. }) if waits => {
                assert_eq!(error.kind(), ErrorKind::Dns);
                assert_eq!(error.detail(), "cannot resolve a.example");
            }
            other => panic!("retries_missing_hosts {waits}: {other:?}"),
        }
    }
}

#[test]
fn a_backoff_keeps_the_session_busy_and_wakes_at_its_time() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    let attempt = s.attempt(id);
    s.core.handle_report(
        id,
        Event::AttemptFailed {
            attempt,
            error: failure(ErrorKind::ConnectionLost),
        },
    );
    let a = s.cycle();
    assert_eq!(idles(&a), 0, "idle while a retry is due");
    let Phase::Waiting(WaitReason::BackingOff { until, .. }) = s.phase(id) else {
        panic!("not backing off: {:?}", s.phase(id));
    };
    assert_eq!(s.core.poll_timeout(), Some(until));
    s.advance(until.saturating_since(s.now));
    let a = s.cycle();
    assert_eq!(started(&a), vec![id]);
    assert_eq!(s.attempt(id), attempt + 1);
}

#[test]
fn waiting_for_a_network_is_idle() {
    let mut s = Sim::new(SessionConfig::default());
    s.core.handle_conditions(Conditions {
        network: NetworkPath::NONE,
        ..Conditions::default()
    });
    let id = s.enqueue(spec("https://a.example/1"), 1);
    let a = s.cycle();
    assert_eq!(s.phase(id), Phase::Waiting(WaitReason::NoNetwork));
    assert!(started(&a).is_empty());
    assert_eq!(idles(&a), 1);
}

#[test]
fn timers_fire_in_time_order() {
    let mut s = Sim::new(SessionConfig::default());
    let at = |ms| {
        TaskSpec::download(
            &format!("https://a.example/{ms}"),
            Destination::Path(format!("f{ms}").into()),
        )
        .earliest_begin(Timestamp::from_millis(T0 + ms))
        .build()
        .unwrap()
    };
    let late = s.enqueue(at(2_000), 1);
    let soon = s.enqueue(at(1_000), 2);
    s.cycle();
    assert_eq!(
        s.core.poll_timeout(),
        Some(Timestamp::from_millis(T0 + 1_000))
    );
    s.advance(Duration::from_millis(1_000));
    assert_eq!(started(&s.cycle()), vec![soon]);
    assert_eq!(
        s.core.poll_timeout(),
        Some(Timestamp::from_millis(T0 + 2_000))
    );
    s.advance(Duration::from_millis(1_000));
    assert_eq!(started(&s.cycle()), vec![late]);
}

#[test]
fn a_key_held_by_an_unfinished_task_returns_that_task() {
    let mut s = Sim::new(SessionConfig::default());
    let keyed = || {
        TaskSpec::download("https://a.example/1", Destination::Path("f".into()))
            .key("k")
            .build()
            .unwrap()
    };
    let first = s.enqueue(keyed(), 1);
    let second = s.enqueue(keyed(), 2);
    assert_eq!(first, second);
    assert_eq!(s.core.tasks().len(), 1);
}

#[test]
fn a_key_held_by_a_finished_task_replaces_it() {
    let mut s = Sim::new(SessionConfig::default());
    let keyed = || {
        TaskSpec::download("https://a.example/1", Destination::Path("f".into()))
            .key("k")
            .build()
            .unwrap()
    };
    let first = s.enqueue(keyed(), 1);
    s.cycle();
    s.finish(first);
    s.cycle();
    let second = s.enqueue(keyed(), 2);
    assert_ne!(first, second);
    let batch = s.settle().unwrap();
    assert_eq!(batch.remove, vec![first]);
    assert_eq!(s.core.tasks().len(), 1);
}

#[test]
fn a_suspended_task_enqueued_again_to_start_is_resumed() {
    let mut s = Sim::new(SessionConfig::default());
    let keyed = TaskSpec::download("https://a.example/1", Destination::Path("f".into()))
        .key("k")
        .build()
        .unwrap();
    let id = s.core.handle_enqueue(keyed.clone(), false).unwrap();
    s.cycle();
    assert_eq!(s.phase(id), Phase::Suspended);
    assert_eq!(s.core.handle_enqueue(keyed, true).unwrap(), id);
    assert_eq!(started(&s.cycle()), vec![id]);
}

#[test]
fn two_unfinished_tasks_never_own_one_destination() {
    let mut s = Sim::new(SessionConfig::default());
    let to = |url: &str| {
        TaskSpec::download(url, Destination::Path("same.bin".into()))
            .build()
            .unwrap()
    };
    let first = s.enqueue(to("https://a.example/same.bin"), 1);
    let refused = s
        .core
        .handle_enqueue(to("https://b.example/same.bin"), true);
    assert!(
        matches!(refused, Err(crate::SessionError::DestinationTaken { task, .. }) if task == first),
        "{refused:?}"
    );
    s.cycle();
    s.finish(first);
    s.cycle();
    // Ended: the name is free again (the store decides about the file).
    assert!(
        s.core
            .handle_enqueue(to("https://b.example/same.bin"), true)
            .is_ok()
    );
}

#[test]
fn a_cancelled_task_gives_up_its_destination() {
    let mut s = Sim::new(SessionConfig::default());
    let first = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    assert!(s.core.handle_user(
        first,
        Event::Cancel {
            keep_resume_data: false
        }
    ));
    assert!(
        s.core
            .handle_enqueue(spec("https://a.example/1"), true)
            .is_ok()
    );
}

#[test]
fn an_unknown_task_is_refused() {
    let mut s = Sim::new(SessionConfig::default());
    assert!(!s.core.handle_user(TaskId::from_u64(42), Event::Resume));
    let (r, wait) = s.core.ended(TaskId::from_u64(42));
    assert!(r.is_err());
    assert!(matches!(wait, EndedWait::Now));
}

#[test]
fn a_cancel_stops_the_runner_at_once_and_discards_after_the_commit() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    assert!(s.core.handle_user(
        id,
        Event::Cancel {
            keep_resume_data: false
        }
    ));
    let now = s.actions();
    assert!(
        now.iter()
            .any(|a| matches!(a, Action::Release(t) if *t == id))
    );
    assert!(s.settle().is_some());
    assert!(!s.actions().iter().any(|a| matches!(a, Action::Discard(_))));
    s.core.end_commit(Ok(()));
    let after = s.actions();
    assert!(
        after
            .iter()
            .any(|a| matches!(a, Action::Discard(r) if r.id == id))
    );
    assert_eq!(completions(&after), vec![id]);
}

#[test]
fn losing_the_network_stops_running_tasks() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    s.core.handle_conditions(Conditions {
        network: NetworkPath::NONE,
        ..Conditions::default()
    });
    let a = s.actions();
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Release(t) if *t == id))
    );
    assert_eq!(s.phase(id), Phase::Waiting(WaitReason::NoNetwork));
    assert_eq!(s.core.busy_slots(), 0);
}

#[test]
fn a_new_network_path_is_told_to_the_transports() {
    let mut s = Sim::new(SessionConfig::default());
    s.core.handle_conditions(Conditions {
        network: NetworkPath::WIFI,
        ..Conditions::default()
    });
    assert!(
        s.actions()
            .iter()
            .any(|a| matches!(a, Action::NetworkChanged))
    );
    s.core.handle_conditions(Conditions {
        network: NetworkPath::WIFI,
        ..Conditions::default()
    });
    assert!(
        !s.actions()
            .iter()
            .any(|a| matches!(a, Action::NetworkChanged))
    );
}

#[test]
fn a_checkpoint_is_committed_durably() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    let attempt = s.attempt(id);
    s.core.handle_report(
        id,
        Event::Progress {
            attempt,
            received: 5,
        },
    );
    s.core.handle_report(
        id,
        Event::Checkpoint {
            attempt,
            durable: 5,
            partial: None,
        },
    );
    let batch = s.settle().expect("a checkpoint is written");
    assert!(!batch.deferrable);
    assert_eq!(batch.save[0].state.resume.durable_offset, 5);
}

#[test]
fn a_change_nobody_waits_for_is_deferred_to_the_next_durable_commit() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    let attempt = s.attempt(id);
    s.core.handle_report(
        id,
        Event::AttemptFailed {
            attempt,
            error: failure(ErrorKind::ConnectionLost),
        },
    );
    assert!(s.settle().is_none(), "a backoff alone is not synced");
    let other = s.enqueue(spec("https://b.example/1"), 2);
    let batch = s.settle().unwrap();
    let saved: Vec<TaskId> = batch.save.iter().map(|r| r.id).collect();
    assert!(saved.contains(&id) && saved.contains(&other));
}

#[test]
fn an_ending_is_told_only_once_durable() {
    let mut s = Sim::new(SessionConfig::default());
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    s.finish(id);
    let (r, wait) = s.core.ended(id);
    assert!(matches!(r, Ok(Some(Outcome::Completed { .. }))));
    assert!(matches!(wait, EndedWait::Pending));
    assert!(s.settle().is_some());
    let (_, wait) = s.core.ended(id);
    assert!(matches!(wait, EndedWait::InFlight));
    s.core.after_in_flight(9);
    assert!(replies(&s.actions()).is_empty());
    s.core.end_commit(Ok(()));
    assert_eq!(replies(&s.actions()), vec![(9, true)]);
}

#[test]
fn a_stale_runner_does_not_free_a_newer_attempts_slot() {
    let mut s = Sim::new(config(1, 8));
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.enqueue(spec("https://a.example/2"), 2);
    s.cycle();
    let first = s.attempt(id);
    s.core.handle_report(
        id,
        Event::AttemptFailed {
            attempt: first,
            error: failure(ErrorKind::ConnectionLost),
        },
    );
    s.core.handle_runner_done(id, first);
    s.cycle();
    let Phase::Waiting(WaitReason::BackingOff { until, .. }) = s.phase(id) else {
        panic!("not backing off");
    };
    // The other task took the slot meanwhile; it ends, then this one runs.
    let other = s.core.running.keys().copied().next().unwrap();
    s.finish(other);
    s.cycle();
    s.advance(until.saturating_since(s.now));
    s.cycle();
    assert_eq!(s.attempt(id), first + 1);
    s.core.handle_runner_done(id, first);
    assert_eq!(s.core.busy_slots(), 1, "a stale runner freed the slot");
}

#[test]
fn a_new_session_rate_sets_the_bandwidth() {
    let mut s = Sim::new(SessionConfig::default());
    s.core.handle_session_rate(Some(1000));
    assert!(
        s.actions()
            .iter()
            .any(|a| matches!(a, Action::Bandwidth(Some(1000))))
    );
}

#[test]
fn a_shared_session_claims_before_it_runs_and_retries_a_claim_held_elsewhere() {
    let ttl = Duration::from_secs(30);
    let mut s = Sim::shared(SessionConfig::default(), ttl);
    let id = s.enqueue(spec("https://a.example/1"), 1);
    let a = s.cycle();
    assert!(started(&a).is_empty(), "ran without a claim");
    assert!(a.iter().any(|a| matches!(a, Action::Claim(t) if *t == id)));
    s.core.handle_claimed(id, false, None, 0);
    let retry = s.now.saturating_add(ttl / 2);
    assert_eq!(s.core.poll_timeout(), Some(retry));
    assert!(!s.cycle().iter().any(|a| matches!(a, Action::Claim(_))));
    s.advance(ttl / 2);
    assert!(
        s.cycle()
            .iter()
            .any(|a| matches!(a, Action::Claim(t) if *t == id))
    );
}

#[test]
fn a_lost_claim_stops_the_task_and_nothing_more_is_written() {
    let mut s = Sim::shared(SessionConfig::default(), Duration::from_secs(30));
    let id = s.enqueue(spec("https://a.example/1"), 1);
    s.cycle();
    let record = s.core.record(id).cloned();
    s.core.handle_claimed(id, true, Some((record, None)), 0);
    assert_eq!(started(&s.cycle()), vec![id]);
    s.core.handle_claim_lost(id);
    let a = s.actions();
    assert!(a.iter().any(|a| matches!(a, Action::Stop(t) if *t == id)));
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::ReleaseClaim(t) if *t == id))
    );
    let attempt = 1;
    s.core.handle_report(
        id,
        Event::Progress {
            attempt,
            received: 5,
        },
    );
    s.core.handle_report(
        id,
        Event::Checkpoint {
            attempt,
            durable: 5,
            partial: None,
        },
    );
    let written = s.settle().map_or(Vec::new(), |b| b.save);
    assert!(written.iter().all(|r| r.id != id), "wrote a lost task");
}

#[test]
fn a_followed_store_brings_in_other_processes_tasks() {
    let mut s = Sim::shared(SessionConfig::default(), Duration::from_secs(30));
    let mut theirs = crate::engine::new_record(
        TaskId::from_u64(99),
        0,
        spec("https://a.example/theirs"),
        &SessionConfig::default(),
        1,
        true,
        s.now,
    )
    .unwrap();
    theirs.state.phase = Phase::Running { attempt: 1 };
    s.core.handle_followed(
        0,
        Snapshot {
            records: vec![theirs.clone()],
            outbox: Vec::new(),
        },
        Vec::new(),
    );
    // Another process's attempt: queued here, to be claimed if it lapses.
    assert_eq!(s.phase(theirs.id), Phase::Queued);
    s.core.handle_followed(
        1,
        Snapshot {
            records: Vec::new(),
            outbox: Vec::new(),
        },
        Vec::new(),
    );
    assert!(
        s.core.record(theirs.id).is_none(),
        "removed there, kept here"
    );
}

mod prop;

#[test]
fn a_shortage_of_descriptors_runs_fewer_at_once_and_costs_no_retry() {
    let mut s = Sim::new(config(8, 8));
    for i in 0..20 {
        s.enqueue(spec(&format!("https://h/{i}")), i);
    }
    let first = started(&s.cycle());
    assert_eq!(first.len(), 8);
    // One runner finds no descriptor: it waits, and half as many as ran
    // may run until the shortage has passed.
    let short = first[0];
    let attempt = s.attempt(short);
    s.core.handle_report(
        short,
        Event::AttemptFailed {
            attempt,
            error: TransferError::new(ErrorKind::TooManyOpenFiles, "EMFILE"),
        },
    );
    s.core.handle_runner_done(short, attempt);
    assert!(matches!(
        s.phase(short),
        Phase::Waiting(WaitReason::BackingOff { .. })
    ));
    assert_eq!(s.core.record(short).unwrap().state.failures, 0);
    for id in &first[1..] {
        s.finish(*id);
    }
    let next = started(&s.cycle());
    assert_eq!(next.len(), 4, "squeezed to half of the 8 that ran");
    // Once the shortage has passed, the full eight again.
    s.advance(super::squeeze::SQUEEZE_FOR + Duration::from_secs(1));
    let more = started(&s.cycle());
    assert_eq!(more.len(), 4, "back to eight at once");
    assert!(s.core.squeeze.is_none());
}
