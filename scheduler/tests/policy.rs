#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Condition stories over real downloads: the network changes under a
//! running download (scripted conditions); the task stops, says why it
//! waits, moves no bytes while waiting, and continues from its durable
//! offset when the network is allowed again. The origin is reached by a
//! name that is not loopback, so the network path counts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, Proto};
use scheduler::{Clock, ScriptedConditions, Session};
use store_fs::{FsPayloadStore, FsTaskStore};
use testkit::{Fault, Resource, Script, body};
use transfer_core::{
    Conditions, NetworkPath, Phase, Power, TaskRecord, Timestamp, Timetable, WaitReason,
};
use transport_http::{HttpConfig, HttpTransport, Roots};

async fn until(
    task: &scheduler::TaskHandle,
    what: &str,
    ok: impl Fn(&TaskRecord) -> bool,
) -> TaskRecord {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = task.snapshot().await.unwrap().unwrap();
            if ok(&r) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waiting for {what}"))
}

/// A session reaching the origin as `origin.test` (not loopback, so the
/// network path counts), with scripted conditions.
async fn story_session(
    f: &Fixture,
    conditions: Arc<ScriptedConditions>,
    delegate: Arc<dyn transfer_core::Delegate>,
    config: scheduler::SessionConfig,
) -> Session {
    story_builder(f, conditions, delegate, config)
        .build()
        .await
        .unwrap()
}

/// [`story_session`] before it is built.
fn story_builder(
    f: &Fixture,
    conditions: Arc<ScriptedConditions>,
    delegate: Arc<dyn transfer_core::Delegate>,
    config: scheduler::SessionConfig,
) -> scheduler::SessionBuilder {
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .resolve("origin.test", f.origin.http_addr());
    Session::builder("test.story")
        .unwrap()
        .store(Arc::new(FsTaskStore::open(&f.state).unwrap()))
        .payloads(Arc::new(FsPayloadStore::new(&f.out).unwrap()))
        .transport(Arc::new(HttpTransport::new(http).unwrap()))
        .conditions(conditions)
        .delegate(delegate)
        .config(config)
}

/// A download of `path` from `origin.test`, labelled and stored by its name.
fn story_task(f: &Fixture, path: &str, discretionary: bool) -> transfer_core::TaskSpec {
    let name = path.trim_start_matches('/');
    transfer_core::TaskSpec::download(
        &format!("http://origin.test:{}{path}", f.origin.http_addr().port()),
        transfer_core::Destination::Path(name.into()),
    )
    .label(name)
    .discretionary(discretionary)
    .build()
    .unwrap()
}

/// The task's durable offset now.
async fn durable(task: &scheduler::TaskHandle) -> u64 {
    task.snapshot()
        .await
        .unwrap()
        .unwrap()
        .state
        .resume
        .durable_offset
}

/// Lets what was in flight settle, then checks that no bytes of `paths`
/// move for 700 ms.
async fn still(f: &Fixture, paths: &[&str], what: &str) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before: Vec<u64> = paths.iter().map(|p| sent(f, p)).collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after: Vec<u64> = paths.iter().map(|p| sent(f, p)).collect();
    assert_eq!(after, before, "bytes moved {what}");
}

fn sent(f: &Fixture, path: &str) -> u64 {
    f.origin
        .log()
        .iter()
        .filter(|e| e.path == path)
        .map(|e| e.bytes_sent)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wifi_then_cellular_then_none_then_wifi() {
    let f = Fixture::new(Proto::H1).await;
    let len = 4u64 << 20;
    f.origin.resource("/story", Resource::seeded(31, len));
    f.origin
        .script("/story", Script::new().always(Fault::RateLimit(1 << 20)));
    let conditions = Arc::new(ScriptedConditions::new(Conditions {
        network: NetworkPath::WIFI,
        power: Power::MAINS,
    }));
    let mut config = Fixture::config();
    config.policy.allows_cellular = false;
    let s = story_session(
        &f,
        conditions.clone(),
        Arc::new(transfer_core::NoDelegate),
        config,
    )
    .await;
    let t = s
        .enqueue(story_task(&f, "/story", false), true)
        .await
        .unwrap();
    until(&t, "a checkpoint on Wi-Fi", |r| {
        r.state.resume.durable_offset > 0
    })
    .await;

    // Cellular, which the session does not allow: stop and wait.
    conditions.update(|c| c.network = NetworkPath::CELLULAR);
    let waiting = until(&t, "the wait for cellular", |r| {
        r.state.phase == Phase::Waiting(WaitReason::CellularNotAllowed)
    })
    .await;
    assert!(
        waiting.state.resume.durable_offset < len,
        "stopped before the end"
    );
    still(&f, &["/story"], "on cellular").await;

    // No network at all: still waiting, now for that.
    conditions.update(|c| c.network = NetworkPath::NONE);
    until(&t, "the wait for a network", |r| {
        r.state.phase == Phase::Waiting(WaitReason::NoNetwork)
    })
    .await;
    let durable = durable(&t).await;
    assert!(durable > 0);

    // Wi-Fi again: it continues from the durable offset and lands intact.
    conditions.update(|c| c.network = NetworkPath::WIFI);
    let outcome = common::wait(&t).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(f.file("story").unwrap(), body::bytes(31, 0, 0..len));
    let ranges = f.ranges("/story");
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[1], durable, "resumed from the durable offset");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_from_localhost_ignores_the_network() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.resource("/here", Resource::seeded(32, 100_000));
    let conditions = Arc::new(ScriptedConditions::new(Conditions {
        network: NetworkPath::NONE,
        power: Power::MAINS,
    }));
    let s = Session::builder("test.local")
        .unwrap()
        .store(Arc::new(FsTaskStore::open(&f.state).unwrap()))
        .payloads(Arc::new(FsPayloadStore::new(&f.out).unwrap()))
        .transport(Arc::new(
            HttpTransport::new(HttpConfig::default().roots(Roots::Webpki)).unwrap(),
        ))
        .conditions(conditions)
        .config(Fixture::config())
        .build()
        .await
        .unwrap();
    let t = f.get(&s, &f.url("/here"), "here").await;
    assert!(common::wait(&t).await.is_completed());
    assert_eq!(f.file("here").unwrap(), body::bytes(32, 0, 0..100_000));
    s.shutdown().await;
}

/// Rewrites the URL of a delayed task to a fresh one, or cancels it.
struct Begin {
    cancel: bool,
    asked: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl transfer_core::Delegate for Begin {
    async fn will_begin(
        &self,
        _task: &TaskRecord,
        request: &mut http::request::Parts,
    ) -> transfer_core::BeginDecision {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.cancel {
            return transfer_core::BeginDecision::Cancel;
        }
        let fresh = request.uri.to_string().replace("/stale", "/fresh");
        request.uri = fresh.parse().unwrap();
        transfer_core::BeginDecision::Continue
    }
}

/// A task with an earliest begin a moment away: `will_begin` runs before it
/// starts and rewrites its request (the origin sees only the fresh URL), or
/// cancels it (no request at all). A task that never waited is not asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_begin_rewrites_or_cancels_a_delayed_task() {
    use std::sync::atomic::Ordering;
    for cancel in [false, true] {
        let f = Fixture::new(Proto::H1).await;
        f.origin.resource("/fresh", Resource::seeded(33, 50_000));
        f.origin.resource("/now", Resource::seeded(34, 1_000));
        let delegate = Arc::new(Begin {
            cancel,
            asked: 0.into(),
        });
        let payloads = Arc::new(FsPayloadStore::new(&f.out).unwrap());
        let s = f
            .session_full(true, payloads, Fixture::config(), delegate.clone())
            .await;
        let now = f.get(&s, &f.url("/now"), "now").await;
        assert!(common::wait(&now).await.is_completed());
        assert_eq!(delegate.asked.load(Ordering::SeqCst), 0, "not delayed");

        let soon = transfer_core::Timestamp::from_system_time(std::time::SystemTime::now())
            .saturating_add(Duration::from_millis(300));
        let spec = transfer_core::TaskSpec::download(
            &f.url("/stale"),
            transfer_core::Destination::Path("later".into()),
        )
        .earliest_begin(soon)
        .build()
        .unwrap();
        let t = s.enqueue(spec, true).await.unwrap();
        let outcome = common::wait(&t).await;
        assert_eq!(delegate.asked.load(Ordering::SeqCst), 1);
        let paths: Vec<String> = f.origin.log().iter().map(|e| e.path.clone()).collect();
        if cancel {
            assert!(
                matches!(outcome, transfer_core::Outcome::Cancelled { .. }),
                "{outcome:?}"
            );
            assert_eq!(paths, ["/now"]);
            assert!(f.file("later").is_none());
        } else {
            assert!(outcome.is_completed(), "{outcome:?}");
            assert_eq!(paths, ["/now", "/fresh"]);
            assert_eq!(f.file("later").unwrap(), body::bytes(33, 0, 0..50_000));
        }
        s.shutdown().await;
    }
}

/// Records each `waiting` call: (task label, reason).
#[derive(Default)]
struct Waits(std::sync::Mutex<Vec<(String, WaitReason)>>);

#[async_trait::async_trait]
impl transfer_core::Delegate for Waits {
    async fn waiting(&self, task: &TaskRecord, reason: &WaitReason) {
        let label = task.spec.label.clone().unwrap_or_default();
        self.0.lock().unwrap().push((label, reason.clone()));
    }
}

/// A discretionary and a normal download of `len` bytes each, paced at
/// 1 MiB/s, on Ethernet with `power`.
struct Pair {
    s: Session,
    conditions: Arc<ScriptedConditions>,
    waits: Arc<Waits>,
    disc: scheduler::TaskHandle,
    normal: scheduler::TaskHandle,
}

async fn pair(f: &Fixture, power: Power, paths: [(&str, u64); 2], len: u64) -> Pair {
    for (path, seed) in paths {
        f.origin.resource(path, Resource::seeded(seed, len));
        f.origin
            .script(path, Script::new().always(Fault::RateLimit(1 << 20)));
    }
    let conditions = Arc::new(ScriptedConditions::new(Conditions {
        network: NetworkPath::ETHERNET,
        power,
    }));
    let waits = Arc::new(Waits::default());
    let s = story_session(f, conditions.clone(), waits.clone(), Fixture::config()).await;
    let disc = s
        .enqueue(story_task(f, paths[0].0, true), true)
        .await
        .unwrap();
    let normal = s
        .enqueue(story_task(f, paths[1].0, false), true)
        .await
        .unwrap();
    Pair {
        s,
        conditions,
        waits,
        disc,
        normal,
    }
}

/// The battery drains while two downloads run on a non-loopback origin:
/// below 30% the discretionary one waits, below 10% the normal one too;
/// a network change that does not change the reason tells the delegate
/// nothing new; on external power both continue from their durable
/// offsets and land intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_battery_drains_then_charges() {
    let f = Fixture::new(Proto::H1).await;
    let len = 4u64 << 20;
    let Pair {
        s,
        conditions,
        waits,
        disc,
        normal,
    } = pair(
        &f,
        Power::on_battery(60),
        [("/disc", 41), ("/normal", 42)],
        len,
    )
    .await;
    for t in [&disc, &normal] {
        until(t, "a checkpoint", |r| r.state.resume.durable_offset > 0).await;
    }

    let low = |level: u8, threshold: u8| {
        move |r: &TaskRecord| {
            r.state.phase == Phase::Waiting(WaitReason::BatteryLow { level, threshold })
        }
    };
    conditions.update(|c| c.power = Power::on_battery(25));
    until(&disc, "discretionary waits below 30%", low(25, 30)).await;
    assert!(matches!(
        normal.snapshot().await.unwrap().unwrap().state.phase,
        Phase::Running { .. }
    ));
    // Wi-Fi instead of Ethernet: the discretionary task still waits for the
    // battery, and is not told again.
    conditions.update(|c| c.network = NetworkPath::WIFI);
    tokio::time::sleep(Duration::from_millis(300)).await;

    conditions.update(|c| c.power = Power::on_battery(8));
    until(
        &normal,
        "everything but high priority waits below 10%",
        low(8, 10),
    )
    .await;
    until(&disc, "the discretionary task's reason follows", low(8, 10)).await;
    let durable = [durable(&disc).await, durable(&normal).await];
    still(&f, &["/disc", "/normal"], "with the battery low").await;

    conditions.update(|c| c.power.external_power = true);
    for (t, (path, seed)) in [&disc, &normal]
        .into_iter()
        .zip([("/disc", 41), ("/normal", 42)])
    {
        assert!(common::wait(t).await.is_completed());
        let name = path.trim_start_matches('/');
        assert_eq!(
            f.file(name).unwrap(),
            body::bytes(seed, 0, 0..len),
            "{name}"
        );
    }
    assert_eq!(f.ranges("/disc"), [0, durable[0]]);
    assert_eq!(f.ranges("/normal"), [0, durable[1]]);
    let told = waits.0.lock().unwrap().clone();
    let of = |label: &str| -> Vec<WaitReason> {
        told.iter()
            .filter(|(l, _)| l == label)
            .map(|(_, r)| r.clone())
            .collect()
    };
    let bl = |level, threshold| WaitReason::BatteryLow { level, threshold };
    assert_eq!(
        of("disc"),
        [bl(25, 30), bl(8, 10)],
        "one call per reason change"
    );
    assert_eq!(of("normal"), [bl(8, 10)], "one call per reason change");
    s.shutdown().await;
}

/// Low power mode comes on: the discretionary download waits (and says
/// so), the normal one goes on; off again, the discretionary one continues
/// from its durable offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_power_mode_holds_discretionary_work() {
    let f = Fixture::new(Proto::H1).await;
    let len = 3u64 << 20;
    let Pair {
        s,
        conditions,
        waits,
        disc,
        normal,
    } = pair(
        &f,
        Power::MAINS,
        [("/lp-disc", 51), ("/lp-normal", 52)],
        len,
    )
    .await;
    until(&disc, "a checkpoint", |r| r.state.resume.durable_offset > 0).await;
    conditions.update(|c| c.power.low_power = true);
    let waiting = until(&disc, "the wait in low power mode", |r| {
        r.state.phase == Phase::Waiting(WaitReason::LowPowerMode)
    })
    .await;
    assert!(matches!(
        normal.snapshot().await.unwrap().unwrap().state.phase,
        Phase::Running { .. } | Phase::Completed
    ));
    still(&f, &["/lp-disc"], "in low power mode").await;
    let durable = durable(&disc).await;
    assert!(durable >= waiting.state.resume.durable_offset);
    conditions.update(|c| c.power.low_power = false);
    for (t, name, seed) in [(&disc, "lp-disc", 51), (&normal, "lp-normal", 52)] {
        assert!(common::wait(t).await.is_completed());
        assert_eq!(
            f.file(name).unwrap(),
            body::bytes(seed, 0, 0..len),
            "{name}"
        );
    }
    assert_eq!(f.ranges("/lp-disc"), [0, durable]);
    let told = waits.0.lock().unwrap().clone();
    assert_eq!(told, [("lp-disc".to_owned(), WaitReason::LowPowerMode)]);
    s.shutdown().await;
}

/// The session's rate set to zero by a call stops a running download at its
/// next chunk and holds it, saying why; set back to unlimited, it continues
/// from its durable offset and lands intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_set_by_a_call_takes_effect_at_once() {
    let f = Fixture::new(Proto::H1).await;
    let len = 8u64 << 20;
    f.origin.resource("/paced", Resource::seeded(61, len));
    f.origin
        .script("/paced", Script::new().always(Fault::RateLimit(2 << 20)));
    let s = f.session().await;
    let t = f.get(&s, &f.url("/paced"), "paced").await;
    until(&t, "a checkpoint", |r| r.state.resume.durable_offset > 0).await;
    s.set_rate_limit(Some(0)).unwrap();
    let held = until(&t, "the pause", |r| {
        matches!(r.state.phase, Phase::Waiting(_))
    })
    .await;
    let Phase::Waiting(reason) = &held.state.phase else {
        unreachable!()
    };
    assert_eq!(
        reason.to_string(),
        "paused: the session's rate limit is zero"
    );
    still(&f, &["/paced"], "while paused").await;
    let durable = durable(&t).await;
    s.set_rate_limit(None).unwrap();
    assert!(common::wait(&t).await.is_completed());
    assert_eq!(f.file("paced").unwrap(), body::bytes(61, 0, 0..len));
    assert_eq!(f.ranges("/paced"), [0, durable]);
    s.shutdown().await;
}

/// A task with an earliest begin a second away waits for it (saying until
/// when), sends nothing before, and then runs to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earliest_begin_in_the_future_waits_for_its_time() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.resource("/later", Resource::seeded(71, 200_000));
    let s = f.session().await;
    let begin = transfer_core::Timestamp::from_system_time(std::time::SystemTime::now())
        .saturating_add(Duration::from_secs(1));
    let spec = transfer_core::TaskSpec::download(
        &f.url("/later"),
        transfer_core::Destination::Path("later".into()),
    )
    .earliest_begin(begin)
    .build()
    .unwrap();
    let t = s.enqueue(spec, true).await.unwrap();
    let waiting = until(&t, "the wait", |r| {
        matches!(r.state.phase, Phase::Waiting(_))
    })
    .await;
    assert_eq!(
        waiting.state.phase,
        Phase::Waiting(WaitReason::NotBefore(begin))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(f.origin.log().is_empty(), "a request before the begin time");
    assert!(common::wait(&t).await.is_completed());
    let now = transfer_core::Timestamp::from_system_time(std::time::SystemTime::now());
    assert!(now >= begin);
    assert_eq!(f.file("later").unwrap(), body::bytes(71, 0, 0..200_000));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timetable_pauses_then_lifts_the_limit() {
    let f = Fixture::new(Proto::H1).await;
    let len = 4u64 << 20;
    f.origin.resource("/night", Resource::seeded(37, len));
    // The origin paces itself too, so the socket buffers do not hold the
    // whole body when the pause comes.
    f.origin
        .script("/night", Script::new().always(Fault::RateLimit(1 << 20)));
    // Tue 24 Nov 2026, 07:59 UTC: a minute of 1 MiB/s, paused from 08:00,
    // no limit ("off", as rclone reads it) from 09:00.
    let tuesday_0759 = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_507_140);
    let clock = Clock::starting_at(tuesday_0759);
    let mut config = Fixture::config();
    config.policy.timetable = Some(Timetable::parse("00:00,1M 08:00,0 09:00,off").unwrap());
    let s = story_builder(
        &f,
        Arc::new(ScriptedConditions::new(Conditions {
            network: NetworkPath::WIFI,
            power: Power::MAINS,
        })),
        Arc::new(transfer_core::NoDelegate),
        config,
    )
    .clock(clock.clone())
    .build()
    .await
    .unwrap();
    let t = s
        .enqueue(story_task(&f, "/night", false), true)
        .await
        .unwrap();
    until(&t, "a checkpoint at 1 MiB/s", |r| {
        r.state.resume.durable_offset > 0
    })
    .await;

    // 08:00: the timetable pauses every transfer until 09:00.
    clock.advance(Duration::from_secs(60));
    let nine = Timestamp::from_system_time(tuesday_0759 + Duration::from_secs(3660));
    let waiting = until(&t, "the timetable's pause", |r| {
        r.state.phase == Phase::Waiting(WaitReason::Schedule { until: nine })
    })
    .await;
    assert!(
        waiting.state.resume.durable_offset < len,
        "stopped before the end"
    );
    assert!(
        WaitReason::Schedule { until: nine }
            .to_string()
            .contains("paused by the bandwidth timetable until"),
        "says why in words"
    );
    still(&f, &["/night"], "while the timetable pauses").await;
    let durable = durable(&t).await;
    assert!(durable > 0);

    // 09:00: no limit; it continues from the durable offset and lands intact.
    clock.advance(Duration::from_secs(3600));
    let outcome = common::wait(&t).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(f.file("night").unwrap(), body::bytes(37, 0, 0..len));
    let ranges = f.ranges("/night");
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[1], durable, "resumed from the durable offset");
    s.shutdown().await;
}
