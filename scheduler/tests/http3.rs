#![allow(clippy::unwrap_used, clippy::expect_used)]
//! HTTP/3 through a session: the network path changes three times under a
//! running download (scripted conditions); the session moves the QUIC
//! connection to a new socket each time, and the download continues on the
//! same request to the right checksum.

use std::sync::Arc;
use std::time::Duration;

use scheduler::{ScriptedConditions, Session};
use store_fs::{FsPayloadStore, FsTaskStore};
use testkit::{Fault, Origin, Resource, Script, body};
use transfer_core::{
    Conditions, Destination, NetworkPath, Outcome, Power, ProtocolPreference, TaskSpec,
};
use transport_http::{HttpConfig, Roots};
use transport_quic::{QuicConfig, QuicTransport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_changes_move_an_http3_download_without_a_new_request() {
    let origin = Origin::start().await.unwrap();
    let len = 256u64 << 20;
    origin.resource("/roam.bin", Resource::seeded(43, len));
    origin.script(
        "/roam.bin",
        Script::new().always(Fault::RateLimit(64 << 20)),
    );
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out"));
    std::fs::create_dir_all(&out).unwrap();
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_root(origin.root_cert_der());
    let quic = Arc::new(QuicTransport::new(QuicConfig::default().http(http)).unwrap());
    let conditions = Arc::new(ScriptedConditions::new(Conditions {
        network: NetworkPath::WIFI,
        power: Power::MAINS,
    }));
    let s = Session::builder("test.http3")
        .unwrap()
        .store(Arc::new(FsTaskStore::open(&state).unwrap()))
        .payloads(Arc::new(FsPayloadStore::new(&out).unwrap()))
        .transport(quic.clone())
        .conditions(conditions.clone())
        .build()
        .await
        .unwrap();
    let spec = TaskSpec::download(
        &origin.https_url("/roam.bin"),
        Destination::Path("roam.bin".into()),
    )
    .protocol(ProtocolPreference::RequireHttp3)
    .build()
    .unwrap();
    let task = s.enqueue(spec, true).await.unwrap();
    let mut ports = Vec::new();
    for network in [
        NetworkPath::CELLULAR,
        NetworkPath::ETHERNET,
        NetworkPath::WIFI,
    ] {
        tokio::time::sleep(Duration::from_millis(800)).await;
        ports.push(quic.local_addrs()[0].port());
        conditions.update(|c| c.network = network);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ports.push(quic.local_addrs()[0].port());
    let outcome = tokio::time::timeout(Duration::from_secs(60), task.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Outcome::Completed { bytes: len });
    ports.dedup();
    assert_eq!(ports.len(), 4, "a new socket at each change: {ports:?}");
    let log = origin.log();
    assert_eq!(log.len(), 1, "one request: {log:?}");
    assert_eq!(log[0].protocol, testkit::Protocol::Http3);
    let got = std::fs::read(out.join("roam.bin")).unwrap();
    assert!(got == body::bytes(43, 0, 0..len), "the file is intact");
    s.shutdown().await;
}
