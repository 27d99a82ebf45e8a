//! The server side of IETF "Resumable Uploads for HTTP"
//! (draft-ietf-httpbis-resumable-upload-12, interop version 9) under
//! `/resumable/…`, with the same request log and scripts as the rest of
//! the origin.
//!
//! - `OPTIONS /resumable/NAME` offers it (`Accept-Patch:
//!   application/partial-upload`, `Upload-Limit`).
//! - A request with a body and `Upload-Complete` to `/resumable/NAME`
//!   creates an upload; its resource is `/resumable/NAME?upload=ID`. With
//!   `?1` and the whole body the answer gives its length and SHA-256 (in the
//!   body and in `x-received-length`, `x-received-sha256`);
//!   with `?0` it is `201` with `Location` and `Upload-Offset`.
//! - `HEAD` on the resource gives `Upload-Offset` (and `Upload-Complete`,
//!   `Upload-Length`); `PATCH` with `application/partial-upload` appends
//!   at `Upload-Offset` (`409` with the right offset otherwise); `DELETE`
//!   cancels it.
//! - Bytes are kept as they arrive, so a cut request keeps what came before
//!   the cut. The upload is hashed as it grows, never stored.
//! - [`Fault::CutUploadAt`] drops the connection when an upload reaches
//!   that offset (once per point and upload); [`Fault::RateLimit`] reads
//!   bodies at that pace; [`Fault::UploadLocation`] answers a creation
//!   with another `Location`. A request without
//!   `Upload-Draft-Interop-Version: 9` is treated as a plain upload.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::script::Fault;
use crate::server::{Cut, LogEntry, OriginBody, ReqBody, Shared, lock, text};

/// The interop version spoken here.
const INTEROP: &str = "9";

/// One upload's state: what arrived, hashed in order.
#[derive(Default)]
pub(crate) struct Upload {
    hasher: Sha256,
    offset: u64,
    length: Option<u64>,
    complete: bool,
    cuts_done: HashSet<u64>,
    /// Bumped by every request to the resource: an older request still
    /// streaming stops appending (the draft: a new request ends the old).
    generation: u64,
}

/// What a request to `/resumable/…` needs.
pub(crate) struct Request<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) parts: &'a http::request::Parts,
    pub(crate) path: &'a str,
    pub(crate) faults: &'a [Fault],
    pub(crate) log: LogEntry,
}

fn header<'h>(parts: &'h http::request::Parts, name: &str) -> Option<&'h str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

fn with(
    mut r: Response<OriginBody>,
    name: &'static str,
    value: impl ToString,
) -> Response<OriginBody> {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        r.headers_mut().insert(name, v);
    }
    r
}

fn hex(digest: [u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Answers a request under `/resumable/`; `Err(Cut)` drops the connection.
pub(crate) async fn handle(req: Request<'_>, body: ReqBody) -> Result<Response<OriginBody>, Cut> {
    let Request {
        shared,
        parts,
        path,
        faults,
        mut log,
    } = req;
    let id = parts
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("upload=")))
        .map(str::to_owned);
    let speaks = header(parts, "upload-draft-interop-version") == Some(INTEROP);
    let complete_flag = header(parts, "upload-complete").map(|v| v.trim() == "?1");
    let rate = faults.iter().find_map(|f| match f {
        Fault::RateLimit(r) => Some((*r).max(1)),
        _ => None,
    });
    let cuts: Vec<u64> = faults
        .iter()
        .filter_map(|f| match f {
            Fault::CutUploadAt(p) => Some(*p),
            _ => None,
        })
        .collect();

    let response = match (&parts.method, id) {
        (&Method::OPTIONS, None) => {
            let r = text(StatusCode::NO_CONTENT, String::new());
            let r = with(r, "accept-patch", "application/partial-upload");
            with(r, "upload-limit", "max-size=1099511627776")
        }
        (m, None) if *m == Method::POST || *m == Method::PUT => {
            if !speaks || complete_flag.is_none() {
                // Not a resumable upload: the plain sink's answer.
                let (n, digest) = take(shared, None, body, &cuts, rate, &mut log).await?;
                log.bytes_received = n;
                let r = text(StatusCode::OK, format!("received {n} bytes\n"));
                let r = with(r, "x-received-length", n);
                with(r, "x-received-sha256", hex(digest))
            } else {
                let id = format!(
                    "{:08x}",
                    shared
                        .next_upload
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let mut up = Upload {
                    length: header(parts, "upload-length").and_then(|v| v.parse().ok()),
                    ..Upload::default()
                };
                up.generation = 1;
                lock(&shared.uploads).insert(id.clone(), up);
                let location = faults
                    .iter()
                    .find_map(|f| match f {
                        Fault::UploadLocation(l) => Some(l.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| format!("{path}?upload={id}"));
                take(shared, Some(&id), body, &cuts, rate, &mut log).await?;
                finish(
                    shared,
                    &id,
                    complete_flag == Some(true),
                    StatusCode::CREATED,
                    &location,
                )
            }
        }
        (&Method::HEAD, Some(id)) => {
            let mut uploads = lock(&shared.uploads);
            match uploads.get_mut(&id) {
                None => text(StatusCode::NOT_FOUND, String::new()),
                Some(up) => {
                    up.generation += 1;
                    let r = text(StatusCode::NO_CONTENT, String::new());
                    let r = with(r, "upload-offset", up.offset);
                    let r = with(r, "upload-complete", if up.complete { "?1" } else { "?0" });
                    let r = with(r, "cache-control", "no-store");
                    match up.length {
                        Some(l) => with(r, "upload-length", l),
                        None => r,
                    }
                }
            }
        }
        (&Method::PATCH, Some(id)) => {
            let state = lock(&shared.uploads)
                .get(&id)
                .map(|u| (u.offset, u.complete));
            let asked: Option<u64> = header(parts, "upload-offset").and_then(|v| v.parse().ok());
            match state {
                None => text(StatusCode::NOT_FOUND, "no such upload\n".into()),
                Some((_, true)) => text(StatusCode::GONE, "the upload is complete\n".into()),
                Some(_) if header(parts, "content-type") != Some("application/partial-upload") => {
                    text(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "appends are application/partial-upload\n".into(),
                    )
                }
                Some((offset, _)) if asked != Some(offset) || complete_flag.is_none() => {
                    let mut r = text(
                        StatusCode::CONFLICT,
                        "{\"type\":\"https://iana.org/assignments/http-problem-types#mismatching-upload-offset\"}"
                            .into(),
                    );
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/problem+json"),
                    );
                    with(r, "upload-offset", offset)
                }
                Some(_) => {
                    if let Some(up) = lock(&shared.uploads).get_mut(&id) {
                        up.generation += 1;
                    }
                    take(shared, Some(&id), body, &cuts, rate, &mut log).await?;
                    finish(
                        shared,
                        &id,
                        complete_flag == Some(true),
                        StatusCode::NO_CONTENT,
                        "",
                    )
                }
            }
        }
        (&Method::DELETE, Some(id)) => match lock(&shared.uploads).remove(&id) {
            Some(_) => text(StatusCode::NO_CONTENT, String::new()),
            None => text(StatusCode::NOT_FOUND, String::new()),
        },
        (m, _) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not allowed here\n"),
        ),
    };
    log.status = response.status();
    log.finished = true;
    shared.record(log);
    Ok(response)
}

/// The answer once a request's body has ended cleanly: the upload's
/// (`Upload-Complete: ?1`, length and SHA-256 when whole), or the
/// resource's offset (`?0`), with `Location` when it was just created.
fn finish(
    shared: &Shared,
    id: &str,
    complete: bool,
    incomplete_status: StatusCode,
    location: &str,
) -> Response<OriginBody> {
    let mut uploads = lock(&shared.uploads);
    let Some(up) = uploads.get_mut(id) else {
        return text(StatusCode::NOT_FOUND, "no such upload\n".into());
    };
    let r = if complete {
        if up.length.is_some_and(|l| l != up.offset) {
            let r = text(
                StatusCode::BAD_REQUEST,
                "{\"type\":\"https://iana.org/assignments/http-problem-types#inconsistent-upload-length\"}"
                    .into(),
            );
            return with(r, "upload-offset", up.offset);
        }
        up.complete = true;
        let digest: [u8; 32] = up.hasher.clone().finalize().into();
        let r = text(
            StatusCode::OK,
            format!("received {} bytes, sha256 {}\n", up.offset, hex(digest)),
        );
        let r = with(r, "x-received-length", up.offset);
        let r = with(r, "x-received-sha256", hex(digest));
        with(r, "upload-complete", "?1")
    } else {
        let r = text(incomplete_status, String::new());
        with(r, "upload-complete", "?0")
    };
    let r = with(r, "upload-offset", up.offset);
    if location.is_empty() {
        r
    } else {
        with(r, "location", location)
    }
}

/// Reads a request body into upload `id` (or, with `None`, just hashes
/// it), dropping the connection at a scripted cut point. Returns the bytes
/// read and their SHA-256.
async fn take(
    shared: &Arc<Shared>,
    id: Option<&str>,
    mut body: ReqBody,
    cuts: &[u64],
    rate: Option<u64>,
    log: &mut LogEntry,
) -> Result<(u64, [u8; 32]), Cut> {
    let mut own = Sha256::new();
    let mut n = 0u64;
    let began = tokio::time::Instant::now();
    // A client that goes away mid-request may take the connection, and with
    // it this future, down before the body says so: the bytes appended so
    // far are logged all the same.
    let mut unlogged = Unlogged {
        shared: shared.clone(),
        log: Some(log.clone()),
    };
    let generation = id.and_then(|id| lock(&shared.uploads).get(id).map(|u| u.generation));
    loop {
        let data: Bytes = match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Some(Err(_)) => {
                unlogged.log = None;
                log.bytes_received = n;
                shared.record(log.clone());
                return Err(Cut);
            }
        };
        if let Some(rate) = rate {
            let due =
                std::time::Duration::from_secs_f64((n + data.len() as u64) as f64 / rate as f64);
            tokio::time::sleep_until(began + due).await;
        }
        let Some(id) = id else {
            own.update(&data);
            n += data.len() as u64;
            if let Some(l) = unlogged.log.as_mut() {
                l.bytes_received = n;
            }
            continue;
        };
        let mut uploads = lock(&shared.uploads);
        let Some(up) = uploads.get_mut(id) else {
            unlogged.log = None;
            return Err(Cut);
        };
        if Some(up.generation) != generation {
            // A newer request took over the upload.
            drop(uploads);
            unlogged.log = None;
            log.bytes_received = n;
            shared.record(log.clone());
            return Err(Cut);
        }
        let end = up.offset + data.len() as u64;
        let cut = cuts
            .iter()
            .copied()
            .filter(|p| *p > up.offset && *p <= end && !up.cuts_done.contains(p))
            .min();
        let keep = cut.map_or(data.len(), |p| (p - up.offset) as usize);
        up.hasher.update(&data[..keep]);
        up.offset += keep as u64;
        n += keep as u64;
        if let Some(l) = unlogged.log.as_mut() {
            l.bytes_received = n;
        }
        if let Some(p) = cut {
            up.cuts_done.insert(p);
            drop(uploads);
            unlogged.log = None;
            log.bytes_received = n;
            shared.record(log.clone());
            return Err(Cut);
        }
    }
    unlogged.log = None;
    log.bytes_received = n;
    Ok((n, own.finalize().into()))
}

/// Records its log entry when dropped before the request was logged.
struct Unlogged {
    shared: Arc<Shared>,
    log: Option<LogEntry>,
}

impl Drop for Unlogged {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            self.shared.record(log);
        }
    }
}
