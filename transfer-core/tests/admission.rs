//! Property tests of admission: it never admits what a task's constraints
//! (or the session's) forbid, more constraints never admit more, it is
//! monotone in the conditions, and every wait reason reads as words.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use transfer_core::*;

fn network() -> impl Strategy<Value = NetworkPath> {
    (0u8..5, any::<bool>(), any::<bool>()).prop_map(|(k, expensive, constrained)| NetworkPath {
        kind: match k {
            0 => NetworkKind::None,
            1 => NetworkKind::Wifi,
            2 => NetworkKind::Ethernet,
            3 => NetworkKind::Cellular,
            _ => NetworkKind::Other,
        },
        expensive,
        constrained,
    })
}

fn power() -> impl Strategy<Value = Power> {
    (
        proptest::option::of(0u8..=100),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(battery, external_power, low_power)| Power {
            battery,
            external_power,
            low_power,
        })
}

fn conditions() -> impl Strategy<Value = Conditions> {
    (network(), power()).prop_map(|(network, power)| Conditions { network, power })
}

/// Conditions at least as good as `a`, drawn at random.
fn improved(a: Conditions) -> impl Strategy<Value = Conditions> {
    (network(), any::<[bool; 6]>(), 0u8..=100).prop_map(move |(fresh, flags, gain)| {
        let [
            new_kind,
            drop_exp,
            drop_cons,
            plug_in,
            leave_low,
            no_battery,
        ] = flags;
        let network = if !a.network.is_connected() {
            fresh
        } else {
            let kind = match (a.network.kind, new_kind) {
                (NetworkKind::Cellular, true) => NetworkKind::Wifi,
                (k, _) => k,
            };
            NetworkPath {
                kind,
                expensive: a.network.expensive && !drop_exp,
                constrained: a.network.constrained && !drop_cons,
            }
        };
        let battery = match a.power.battery {
            _ if no_battery => None,
            None => None,
            Some(level) => Some(level.saturating_add(gain).min(100)),
        };
        let power = Power {
            battery,
            external_power: a.power.external_power || plug_in,
            low_power: a.power.low_power && !leave_low,
        };
        Conditions { network, power }
    })
}

fn demand() -> impl Strategy<Value = Demand> {
    (
        0.0f32..=1.0,
        any::<[bool; 4]>(),
        proptest::option::of(0u64..100_000),
        proptest::option::of(1u64..1 << 30),
    )
        .prop_map(|(p, [d, c, u, local], begin, max_rate)| Demand {
            priority: Priority::new(p).unwrap(),
            constraints: Constraints {
                discretionary: d,
                requires_charging: c,
                requires_unmetered: u,
            },
            earliest_begin: begin.map(|b| Timestamp::from_millis(1_800_000_000_000 + b)),
            max_rate,
            local,
        })
}

const TIMETABLES: [&str; 3] = [
    "08:00,512k 19:00,off",
    "Mon-00:00,0 Wed-12:00,1M",
    "00:00,10M",
];

fn constraints() -> impl Strategy<Value = Constraints> {
    any::<[bool; 3]>().prop_map(|[d, c, u]| Constraints {
        discretionary: d,
        requires_charging: c,
        requires_unmetered: u,
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        any::<[bool; 4]>(),
        (0u8..=100, 0u8..=100),
        proptest::array::uniform3(proptest::option::of(1u64..1 << 30)),
        proptest::option::of(0..TIMETABLES.len()),
        prop_oneof![3 => Just(Constraints::default()), 1 => constraints()],
    )
        .prop_map(
            |([cell, exp, cons, waits], (a, b), [total, cellular, low], timetable, constraints)| {
                Policy {
                    allows_cellular: cell,
                    allows_expensive: exp,
                    allows_constrained: cons,
                    waits_for_connectivity: waits,
                    rate_limit: total,
                    cellular_rate_limit: cellular,
                    low_power_rate_limit: low,
                    battery_threshold: a.max(b),
                    battery_floor: a.min(b),
                    timetable: timetable.map(|i| Timetable::parse(TIMETABLES[i]).unwrap()),
                    constraints,
                    ..Policy::default()
                }
            },
        )
}

/// A rate of `None` is unlimited: the largest.
fn rate_at_least(better: Option<u64>, worse: Option<u64>) -> bool {
    match (better, worse) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(b), Some(w)) => b >= w,
    }
}

/// Why admitting `task` under `c` broke one of its constraints (its own
/// or the session's) or the session's network rules, if it did.
fn broken_rule(policy: &Policy, task: &Demand, c: &Conditions, now: Timestamp) -> Option<String> {
    let k = task.constraints.and(policy.constraints);
    let (net, power) = (&c.network, &c.power);
    let on_battery_below =
        |level: u8| !power.external_power && power.battery.is_some_and(|b| b < level);
    let rules = [
        (
            task.earliest_begin.is_some_and(|t| t > now),
            "ran before its earliest begin",
        ),
        (
            k.requires_charging && !power.external_power,
            "required charging, ran on battery",
        ),
        (
            k.discretionary && power.low_power,
            "discretionary, ran in low power mode",
        ),
        (
            k.discretionary && on_battery_below(policy.battery_threshold),
            "discretionary, ran on battery below the threshold",
        ),
        (
            task.priority < policy.high_priority && on_battery_below(policy.battery_floor),
            "not high-priority, ran on battery below the floor",
        ),
        (!task.local && !net.is_connected(), "ran with no network"),
        (
            !task.local && (k.requires_unmetered || k.discretionary) && net.is_metered(),
            "wanted an unmetered network, ran on a metered one",
        ),
        (
            !task.local && k.discretionary && net.constrained,
            "discretionary, ran on a constrained network",
        ),
        (
            !task.local && !policy.allows_cellular && net.kind == NetworkKind::Cellular,
            "ran on cellular, which the session forbids",
        ),
        (
            !task.local && !policy.allows_expensive && net.expensive,
            "ran on an expensive network, which the session forbids",
        ),
        (
            !task.local && !policy.allows_constrained && net.constrained,
            "ran on a constrained network, which the session forbids",
        ),
    ];
    rules
        .iter()
        .find(|(broken, _)| *broken)
        .map(|(_, why)| (*why).to_owned())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn admission_never_admits_what_the_constraints_forbid(
        policy in policy(),
        task in demand(),
        c in conditions(),
        offset in 0u64..7 * 86_400_000,
    ) {
        let now = Timestamp::from_millis(1_800_000_000_000 + offset);
        if let Verdict::Run(_) = policy.admit(&task, &c, Load::default(), now)
            && let Some(why) = broken_rule(&policy, &task, &c, now)
        {
            return Err(TestCaseError::fail(format!("{why}: {task:?} {c:?} {policy:?}")));
        }
    }

    /// More constraints, on the task or on the whole session, never admit a
    /// task that fewer constraints kept waiting.
    #[test]
    fn adding_constraints_never_admits_more(
        policy in policy(),
        task in demand(),
        more in constraints(),
        on_session in any::<bool>(),
        c in conditions(),
        offset in 0u64..7 * 86_400_000,
    ) {
        let now = Timestamp::from_millis(1_800_000_000_000 + offset);
        let (stricter_policy, stricter_task) = if on_session {
            (Policy { constraints: policy.constraints.and(more), ..policy.clone() }, task)
        } else {
            (policy.clone(), Demand { constraints: task.constraints.and(more), ..task })
        };
        let before = policy.admit(&task, &c, Load::default(), now);
        let after = stricter_policy.admit(&stricter_task, &c, Load::default(), now);
        if let Verdict::Run(_) = after {
            prop_assert!(
                matches!(before, Verdict::Run(_)),
                "more constraints ({more:?}) admitted a task fewer kept out: {before:?}"
            );
        }
    }

    #[test]
    fn better_conditions_never_turn_run_into_wait(
        policy in policy(),
        task in demand(),
        (a, b) in conditions().prop_flat_map(|a| (Just(a), improved(a))),
        running in 0u32..20,
        on_host in 0u32..10,
        offset in 0u64..7 * 86_400_000,
    ) {
        prop_assert!(b.at_least_as_good_as(&a));
        let now = Timestamp::from_millis(1_800_000_000_000 + offset);
        let load = Load { running, running_on_host: on_host };
        if let Verdict::Run(worse) = policy.admit(&task, &a, load, now) {
            let verdict = policy.admit(&task, &b, load, now);
            let Verdict::Run(better) = verdict else {
                return Err(TestCaseError::fail(format!("{a:?} ran, better {b:?} gave {verdict:?}")));
            };
            // A local task runs with no network at all, unlimited; the
            // session's cellular limit still applies once there is one.
            if !task.local || a.network.is_connected() {
                prop_assert!(rate_at_least(better.session, worse.session));
            }
            prop_assert_eq!(better.task, worse.task);
        }
    }

    /// A task whose origin is this machine is judged as if the network were
    /// unmetered Ethernet, whatever the network is (bandwidth aside: the
    /// session's cellular limit still follows the path).
    #[test]
    fn a_local_origin_ignores_the_network_path(
        policy in policy(),
        task in demand(),
        c in conditions(),
        offset in 0u64..7 * 86_400_000,
    ) {
        let local = Demand { local: true, ..task };
        let now = Timestamp::from_millis(1_800_000_000_000 + offset);
        let on_ethernet = Conditions { network: NetworkPath::ETHERNET, ..c };
        let here = policy.admit(&local, &c, Load::default(), now);
        let there = policy.admit(&local, &on_ethernet, Load::default(), now);
        match (&here, &there) {
            (Verdict::Run(_), Verdict::Run(_)) => {}
            _ => prop_assert_eq!(here, there),
        }
    }

    #[test]
    fn the_ordering_of_conditions_is_reflexive_and_transitive(a in conditions(), b in conditions(), c in conditions()) {
        prop_assert!(a.at_least_as_good_as(&a));
        if b.at_least_as_good_as(&a) && c.at_least_as_good_as(&b) {
            prop_assert!(c.at_least_as_good_as(&a));
        }
    }

    #[test]
    fn waits_explain_themselves_and_wake_up_timers_are_in_the_future(
        policy in policy(), task in demand(), c in conditions(), offset in 0u64..7 * 86_400_000,
    ) {
        let now = Timestamp::from_millis(1_800_000_000_000 + offset);
        if let Verdict::Wait(reason) = policy.admit(&task, &c, Load::default(), now) {
            let words = reason.to_string();
            prop_assert!(words.len() > 8 && !words.contains("Wait"), "{}", words);
            prop_assert!(reason.is_policy());
            if let Some(t) = reason.wake_at() {
                prop_assert!(t > now);
            }
        }
    }
}

#[test]
fn default_policy_follows_the_design() {
    let p = Policy::default();
    let now = Timestamp::from_millis(1_800_000_000_000);
    let normal = Demand {
        priority: Priority::DEFAULT,
        constraints: Constraints::default(),
        earliest_begin: None,
        max_rate: None,
        local: false,
    };
    let discretionary = Demand {
        constraints: Constraints {
            discretionary: true,
            ..Constraints::default()
        },
        ..normal
    };
    let high = Demand {
        priority: Priority::HIGH,
        ..normal
    };
    let at = |net, power| Conditions {
        network: net,
        power,
    };
    let admit = |d: &Demand, c: Conditions| p.admit(d, &c, Load::default(), now);

    // Discretionary waits below 30% unless charging; runs on Wi-Fi above it.
    assert_eq!(
        admit(&discretionary, at(NetworkPath::WIFI, Power::on_battery(29))),
        Verdict::Wait(WaitReason::BatteryLow {
            level: 29,
            threshold: 30
        })
    );
    let charging = Power {
        external_power: true,
        ..Power::on_battery(29)
    };
    assert!(admit(&discretionary, at(NetworkPath::WIFI, charging)).is_run());
    assert!(admit(&normal, at(NetworkPath::WIFI, Power::on_battery(29))).is_run());
    // Below 10% only high-priority work runs.
    assert_eq!(
        admit(&normal, at(NetworkPath::WIFI, Power::on_battery(9))),
        Verdict::Wait(WaitReason::BatteryLow {
            level: 9,
            threshold: 10
        })
    );
    assert!(admit(&high, at(NetworkPath::WIFI, Power::on_battery(9))).is_run());
    // Discretionary never on cellular; low power mode makes it wait and throttles the rest.
    assert_eq!(
        admit(&discretionary, at(NetworkPath::CELLULAR, Power::MAINS)),
        Verdict::Wait(WaitReason::ExpensiveNetwork)
    );
    let low = Power {
        low_power: true,
        ..Power::MAINS
    };
    assert_eq!(
        admit(&discretionary, at(NetworkPath::WIFI, low)),
        Verdict::Wait(WaitReason::LowPowerMode)
    );
    assert_eq!(
        admit(&normal, at(NetworkPath::WIFI, low)),
        Verdict::Run(Throttle {
            session: Some(1 << 20),
            task: None
        })
    );
    // No network: wait, or fail fast when the session says so.
    assert_eq!(
        admit(&normal, at(NetworkPath::NONE, Power::MAINS)),
        Verdict::Wait(WaitReason::NoNetwork)
    );
    let fast = Policy {
        waits_for_connectivity: false,
        ..Policy::default()
    };
    assert!(matches!(
        fast.admit(
            &normal,
            &at(NetworkPath::NONE, Power::MAINS),
            Load::default(),
            now
        ),
        Verdict::Fail(_)
    ));
    // Earliest begin, limits.
    let later = now.saturating_add(Duration::from_secs(60));
    assert_eq!(
        admit(
            &Demand {
                earliest_begin: Some(later),
                ..normal
            },
            Conditions::default()
        ),
        Verdict::Wait(WaitReason::NotBefore(later))
    );
    assert_eq!(
        p.admit(
            &normal,
            &Conditions::default(),
            Load {
                running: 16,
                running_on_host: 0
            },
            now
        ),
        Verdict::Wait(WaitReason::SessionLimit)
    );
    assert_eq!(
        p.admit(
            &normal,
            &Conditions::default(),
            Load {
                running: 3,
                running_on_host: 8
            },
            now
        ),
        Verdict::Wait(WaitReason::HostLimit)
    );
}

#[test]
fn timetable_pauses_and_limits() {
    // Tue, 24 Nov 2026 00:00:00 UTC
    let tue = 1_795_478_400_000u64;
    let p = Policy {
        timetable: Some(Timetable::parse("08:00,0 12:00,256k 19:00,off").unwrap()),
        ..Policy::default()
    };
    let d = Demand {
        priority: Priority::DEFAULT,
        constraints: Constraints::default(),
        earliest_begin: None,
        max_rate: Some(1000),
        local: false,
    };
    let at = |h: u64| Timestamp::from_millis(tue + h * 3_600_000);
    assert_eq!(
        p.admit(&d, &Conditions::default(), Load::default(), at(9)),
        Verdict::Wait(WaitReason::Schedule { until: at(12) })
    );
    assert_eq!(
        p.admit(&d, &Conditions::default(), Load::default(), at(13)),
        Verdict::Run(Throttle {
            session: Some(256 * 1024),
            task: Some(1000)
        })
    );
    assert_eq!(
        p.admit(&d, &Conditions::default(), Load::default(), at(20)),
        Verdict::Run(Throttle {
            session: None,
            task: Some(1000)
        })
    );
    assert_eq!(
        WaitReason::Schedule { until: at(12) }.to_string(),
        "paused by the bandwidth timetable until Tue, 24 Nov 2026 12:00:00 GMT"
    );
}
