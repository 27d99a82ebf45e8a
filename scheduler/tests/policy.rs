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
use scheduler::{ScriptedConditions, Session};
use store_fs::{FsPayloadStore, FsTaskStore};
use testkit::{Fault, Resource, Script, body};
use transfer_core::{Conditions, NetworkPath, Phase, Power, TaskRecord, WaitReason};
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
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .resolve("origin.test", f.origin.http_addr());
    let s = Session::builder("test.policy")
        .unwrap()
        .store(Arc::new(FsTaskStore::open(&f.state).unwrap()))
        .payloads(Arc::new(FsPayloadStore::new(&f.out).unwrap()))
        .transport(Arc::new(HttpTransport::new(http).unwrap()))
        .conditions(conditions.clone())
        .config(config)
        .build()
        .await
        .unwrap();
    let url = format!("http://origin.test:{}/story", f.origin.http_addr().port());
    let t = s
        .download(&url)
        .unwrap()
        .to("story")
        .enqueue()
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = sent(&f, "/story");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sent(&f, "/story"), before, "bytes moved on cellular");

    // No network at all: still waiting, now for that.
    conditions.update(|c| c.network = NetworkPath::NONE);
    until(&t, "the wait for a network", |r| {
        r.state.phase == Phase::Waiting(WaitReason::NoNetwork)
    })
    .await;
    let durable = t
        .snapshot()
        .await
        .unwrap()
        .unwrap()
        .state
        .resume
        .durable_offset;
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
