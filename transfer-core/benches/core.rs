//! Cost of the pure core on the scheduler's hot paths: one `apply` call and
//! one admission decision.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use transfer_core::*;

fn running_state(now: Timestamp) -> TaskState {
    let s = TaskState::new(RetryPolicy::default(), 9);
    let s = apply(&s, Event::Resume, now).unwrap().0;
    let s = apply(&s, Event::Admission(Verdict::Run(Throttle::default())), now)
        .unwrap()
        .0;
    let s = apply(
        &s,
        Event::Responded {
            attempt: 1,
            validator: Some(Validator::StrongETag("\"v1\"".into())),
            total: Some(1 << 30),
        },
        now,
    )
    .unwrap()
    .0;
    apply(
        &s,
        Event::Progress {
            attempt: 1,
            received: 1 << 20,
        },
        now,
    )
    .unwrap()
    .0
}

fn bench_apply(c: &mut Criterion) {
    let now = Timestamp::from_millis(1_800_000_000_000);
    let running = running_state(now);
    let queued = apply(
        &TaskState::new(RetryPolicy::default(), 9),
        Event::Resume,
        now,
    )
    .unwrap()
    .0;
    let mut g = c.benchmark_group("apply");
    g.bench_function("progress", |b| {
        b.iter(|| {
            apply(
                black_box(&running),
                Event::Progress {
                    attempt: 1,
                    received: 2 << 20,
                },
                now,
            )
        })
    });
    g.bench_function("checkpoint", |b| {
        b.iter(|| {
            apply(
                black_box(&running),
                Event::Checkpoint {
                    attempt: 1,
                    durable: 1 << 20,
                    partial: None,
                },
                now,
            )
        })
    });
    g.bench_function("admit_and_start", |b| {
        b.iter(|| {
            apply(
                black_box(&queued),
                Event::Admission(Verdict::Run(Throttle::default())),
                now,
            )
        })
    });
    g.bench_function("fail_and_back_off", |b| {
        let e = TransferError::new(ErrorKind::ConnectionLost, "reset");
        b.iter(|| {
            apply(
                black_box(&running),
                Event::AttemptFailed {
                    attempt: 1,
                    error: e.clone(),
                },
                now,
            )
        })
    });
    g.finish();
}

fn bench_admission(c: &mut Criterion) {
    let now = Timestamp::from_millis(1_800_000_000_000);
    let task = Demand {
        priority: Priority::DEFAULT,
        constraints: Constraints::default(),
        earliest_begin: None,
        max_rate: None,
        local: false,
    };
    let plain = Policy::default();
    let scheduled = Policy {
        timetable: Some(
            Timetable::parse("Mon-08:00,512k Mon-19:00,off 08:00,1M 19:00,off").unwrap(),
        ),
        ..Policy::default()
    };
    let wifi = Conditions {
        network: NetworkPath::WIFI,
        power: Power::on_battery(55),
    };
    let mut g = c.benchmark_group("admission");
    g.bench_function("run_default_policy", |b| {
        b.iter(|| plain.admit(black_box(&task), black_box(&wifi), Load::default(), now))
    });
    g.bench_function("run_with_timetable", |b| {
        b.iter(|| scheduled.admit(black_box(&task), black_box(&wifi), Load::default(), now))
    });
    let cellular = Conditions {
        network: NetworkPath::CELLULAR,
        ..wifi
    };
    let strict = Policy {
        allows_expensive: false,
        ..Policy::default()
    };
    g.bench_function("wait_expensive", |b| {
        b.iter(|| strict.admit(black_box(&task), black_box(&cellular), Load::default(), now))
    });
    g.finish();
}

criterion_group!(benches, bench_apply, bench_admission);
criterion_main!(benches);
