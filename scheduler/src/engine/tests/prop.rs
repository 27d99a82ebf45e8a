//! The core under random steps: limits, slots, starts after commits, and
//! every caller answered once.

use std::time::Duration;

use proptest::prelude::*;
use transfer_core::{
    Conditions, ErrorKind, Event, NetworkPath, Phase, StoreError, StoreErrorKind, TaskId,
};

use super::{Sim, config, failure, spec};
use crate::engine::core::Action;

/// One step a property test takes.
#[derive(Clone, Debug)]
enum Step {
    Enqueue { host: u8 },
    Finish(usize),
    Fail(usize),
    Cancel(usize),
    Suspend(usize),
    Resume(usize),
    Offline,
    Online,
    Wait(u16),
    CommitFails,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4).prop_map(|host| Step::Enqueue { host }),
        3 => any::<usize>().prop_map(Step::Finish),
        2 => any::<usize>().prop_map(Step::Fail),
        1 => any::<usize>().prop_map(Step::Cancel),
        1 => any::<usize>().prop_map(Step::Suspend),
        1 => any::<usize>().prop_map(Step::Resume),
        1 => Just(Step::Offline),
        1 => Just(Step::Online),
        2 => (1u16..5000).prop_map(Step::Wait),
        1 => Just(Step::CommitFails),
    ]
}

proptest! {
    /// Whatever happens: the limits hold, a slot is held only by a task
    /// that runs (or is admitted to), nothing starts before its record was
    /// committed, every caller is answered once, and once nothing fails any
    /// more every task ends or waits only for the user.
    #[test]
    fn the_core_keeps_its_limits_and_answers_everyone(steps in proptest::collection::vec(step(), 1..120)) {
        let max = 3;
        let per_host = 2;
        let mut s = Sim::new(config(max, per_host));
        let mut ids: Vec<TaskId> = Vec::new();
        let mut committed: std::collections::HashSet<TaskId> = Default::default();
        let mut waiters = 0u32;
        let mut answered = std::collections::HashSet::new();
        let mut fail_next = false;
        for st in steps {
            // Tasks whose creation was never committed are forgotten.
            ids.retain(|id| s.core.record(*id).is_some());
            let pick = |i: usize| (!ids.is_empty()).then(|| ids[i % ids.len()]);
            match st {
                Step::Enqueue { host } => {
                    waiters += 1;
                    ids.push(s.enqueue(spec(&format!("https://h{host}.example/{}", ids.len())), waiters));
                }
                Step::Finish(i) => if let Some(id) = pick(i)
                    && let Phase::Running { attempt } = s.phase(id) {
                    s.core.handle_report(id, Event::Finished { attempt, bytes: 1 });
                    s.core.handle_runner_done(id, attempt);
                },
                Step::Fail(i) => if let Some(id) = pick(i)
                    && let Phase::Running { attempt } = s.phase(id) {
                    s.core.handle_report(id, Event::AttemptFailed { attempt, error: failure(ErrorKind::ConnectionLost) });
                    s.core.handle_runner_done(id, attempt);
                },
                Step::Cancel(i) => if let Some(id) = pick(i) {
                    s.core.handle_user(id, Event::Cancel { keep_resume_data: false });
                },
                Step::Suspend(i) => if let Some(id) = pick(i) {
                    s.core.handle_user(id, Event::Suspend);
                },
                Step::Resume(i) => if let Some(id) = pick(i) {
                    s.core.handle_user(id, Event::Resume);
                },
                Step::Offline => s.core.handle_conditions(Conditions { network: NetworkPath::NONE, ..Conditions::default() }),
                Step::Online => s.core.handle_conditions(Conditions::default()),
                Step::Wait(ms) => s.advance(Duration::from_millis(u64::from(ms))),
                Step::CommitFails => fail_next = true,
            }
            s.core.pump();
            let busy = s.core.busy();
            s.core.check_busy(busy);
            let early = s.actions();
            for a in &early {
                if let Action::Start(st) = a {
                    prop_assert!(committed.contains(&st.record.id), "started before its record was committed");
                }
            }
            if let Some(batch) = s.core.begin_commit() {
                for a in s.actions() {
                    if let Action::Start(st) = a {
                        prop_assert!(committed.contains(&st.record.id), "started before its record was committed");
                    }
                }
                if fail_next {
                    fail_next = false;
                    s.core.end_commit(Err(StoreError::new(StoreErrorKind::Full, "full")));
                } else {
                    committed.extend(batch.save.iter().map(|r| r.id));
                    s.core.end_commit(Ok(()));
                }
            }
            s.core.check_idle(busy);
            for a in s.actions() {
                if let Action::Reply(w, _) = a {
                    prop_assert!(answered.insert(w), "answered twice");
                }
            }
            prop_assert!(s.core.busy_slots() <= max as usize);
            for (host, n) in &s.core.per_host {
                prop_assert!(*n <= per_host, "{host} has {n}");
            }
            for id in s.core.running.keys().chain(s.core.reserved.keys()) {
                prop_assert!(matches!(s.phase(*id), Phase::Running { .. }), "a slot held by {:?}", s.phase(*id));
            }
        }
        // Everyone who waited for a commit was answered once one ran.
        s.core.handle_conditions(Conditions::default());
        s.advance(Duration::from_secs(60));
        s.core.pump();
        if s.core.begin_commit().is_some() {
            s.core.end_commit(Ok(()));
        }
        for a in s.actions() {
            if let Action::Reply(w, _) = a {
                prop_assert!(answered.insert(w), "answered twice");
            }
        }
        prop_assert_eq!(answered.len() as u32, waiters);
    }
}
