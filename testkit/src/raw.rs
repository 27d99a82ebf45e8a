//! The raw HTTP/1.1 listener: a small hand-written responder for the faults
//! hyper refuses to produce, a `Content-Length` that lies. One request per
//! connection, `GET`/`HEAD` of whole bodies only.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderMap, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::script::Fault;
use crate::server::{ConnInfo, LogEntry, Plan, Protocol, Shared};

const MAX_HEAD: usize = 64 * 1024;

/// Serves one connection of the raw listener.
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>, conn: ConnInfo) {
    if let Err(e) = respond(stream, shared, conn).await {
        tracing::debug!(error = %e, "raw connection ended");
    }
}

async fn respond(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    conn: ConnInfo,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next().unwrap_or("").split_whitespace();
    let method = Method::from_bytes(words.next().unwrap_or("").as_bytes()).unwrap_or(Method::GET);
    let target = words.next().unwrap_or("/").to_owned();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.clone(), None),
    };
    let (plan, faults) = shared.plan(&path, query.as_deref());
    let Plan::Serve { resource } = plan else {
        let entry = entry(&method, &target, StatusCode::NOT_FOUND, conn, true);
        shared.record(entry);
        stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        return stream.shutdown().await;
    };
    let extra = faults.iter().find_map(|f| match f {
        Fault::LieLength { declared_extra } => Some(*declared_extra),
        _ => None,
    });
    let declared = resource.len.saturating_add_signed(extra.unwrap_or(0));
    let validators = if faults.contains(&Fault::NoValidators) {
        String::new()
    } else {
        format!(
            "etag: {}\r\nlast-modified: {}\r\n",
            resource.etag(),
            resource.last_modified()
        )
    };
    let response_head = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\ncontent-type: application/octet-stream\r\n\
         {validators}accept-ranges: none\r\nconnection: close\r\n\r\n"
    );
    let (sent, finished) = shared.record(entry(&method, &target, StatusCode::OK, conn, false));
    stream.write_all(response_head.as_bytes()).await?;
    if method != Method::HEAD {
        let mut pos = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        while pos < resource.len {
            let n = (resource.len - pos).min(chunk.len() as u64) as usize;
            crate::body::fill(resource.seed, resource.version, pos, &mut chunk[..n]);
            stream.write_all(&chunk[..n]).await?;
            pos += n as u64;
            sent.fetch_add(n as u64, Ordering::AcqRel);
        }
    }
    finished.set();
    stream.shutdown().await
}

fn entry(
    method: &Method,
    target: &str,
    status: StatusCode,
    conn: ConnInfo,
    finished: bool,
) -> LogEntry {
    LogEntry {
        method: method.clone(),
        path: target.to_owned(),
        range: None,
        if_range: None,
        status,
        bytes_sent: 0,
        bytes_received: 0,
        finished,
        protocol: Protocol::Http1,
        listener: conn.listener,
        connection: conn.id,
        headers: HeaderMap::new(),
        at: std::time::Instant::now(),
        ended: None,
    }
}
