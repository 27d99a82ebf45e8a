#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A process out of file descriptors: dialling says so at once
//! (`TooManyOpenFiles`, which the session waits out while running fewer
//! transfers), rather than trying the next address or calling it a
//! refused connection. Its own test binary: it lowers the process's
//! open-file limit.

use std::time::Duration;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use transfer_core::{ErrorKind, RequestBody, Transport, TransportRequest};
use transport_http::{HttpConfig, HttpTransport};

#[tokio::test(flavor = "current_thread")]
async fn out_of_descriptors_is_too_many_open_files_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = HttpConfig::default()
        .resolve("origin.test", listener.local_addr().unwrap())
        .resolve("origin.test", ([127, 0, 0, 2], port).into())
        .connection_attempt_delay(Duration::from_secs(30));
    let transport = HttpTransport::new(config).unwrap();
    let request = TransportRequest::new(
        http::Request::get(format!("http://origin.test:{port}/x"))
            .body(RequestBody::empty())
            .unwrap(),
    );

    let before = getrlimit(Resource::Nofile);
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(open + 16),
            maximum: before.maximum,
        },
    )
    .unwrap();
    let mut held = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        held.push(f);
    }
    let result = tokio::time::timeout(Duration::from_secs(10), transport.send(request)).await;
    drop(held);
    setrlimit(Resource::Nofile, before).unwrap();

    let error = result
        .expect("no waiting for the next address")
        .expect_err("no descriptor for a socket");
    assert_eq!(error.kind(), ErrorKind::TooManyOpenFiles, "{error}");
}
