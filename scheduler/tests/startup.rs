#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What a session sees in the moments after it is built.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, Proto};
use scheduler::{ScriptedConditions, Session};
use store_fs::{FsPayloadStore, FsTaskStore};
use testkit::Resource;
use transfer_core::{Conditions, NetworkPath, Phase, Power, WaitReason};
use transport_http::{HttpConfig, HttpTransport, Roots};

/// On a current-thread runtime the engine first runs at the first await
/// after `build()`, after the conditions changed: the change is still news.
#[tokio::test]
async fn a_change_right_after_build_is_not_missed() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.resource("/x", Resource::seeded(1, 4 << 20));
    f.origin.script(
        "/x",
        testkit::Script::new().always(testkit::Fault::RateLimit(1 << 20)),
    );
    let conditions = Arc::new(ScriptedConditions::new(Conditions {
        network: NetworkPath::WIFI,
        power: Power::MAINS,
    }));
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .resolve("origin.test", f.origin.http_addr());
    let s = Session::builder("test.review")
        .unwrap()
        .store(Arc::new(FsTaskStore::open(&f.state).unwrap()))
        .payloads(Arc::new(FsPayloadStore::new(&f.out).unwrap()))
        .transport(Arc::new(HttpTransport::new(http).unwrap()))
        .conditions(conditions.clone())
        .config({
            let mut c = Fixture::config();
            c.policy.allows_cellular = false;
            c
        })
        .build()
        .await
        .unwrap();
    conditions.update(|c| c.network = NetworkPath::CELLULAR);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spec = transfer_core::TaskSpec::download(
        &format!("http://origin.test:{}/x", f.origin.http_addr().port()),
        transfer_core::Destination::Path("x".into()),
    )
    .build()
    .unwrap();
    let t = s.enqueue(spec, true).await.unwrap();
    let mut last = None;
    for _ in 0..100 {
        let r = t.snapshot().await.unwrap().unwrap();
        if r.state.phase == Phase::Waiting(WaitReason::CellularNotAllowed) {
            s.shutdown().await;
            return;
        }
        last = Some(r.state.phase);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("never waited for the network: {last:?}");
}
