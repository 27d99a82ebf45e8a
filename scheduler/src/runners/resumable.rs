//! Resumable uploads: the file goes to an upload resource on the server in
//! appends, and an interrupted upload (a cut connection, a killed process)
//! continues from the offset the server reports, not from zero.
//!
//! Two protocols behind one flow:
//! - IETF "Resumable Uploads for HTTP", draft-ietf-httpbis-resumable-upload-12
//!   (`Upload-Draft-Interop-Version: 9`). `OPTIONS` on the target asks
//!   whether the server offers it (`Accept-Patch: application/partial-upload`);
//!   if not, the file goes as a plain upload. Otherwise an empty creation
//!   request (`Upload-Complete: ?0`, `Upload-Length`) gets the resource's
//!   `Location`, and `PATCH`es (`application/partial-upload`) append to it,
//!   the last with `Upload-Complete: ?1`, whose answer is the target's.
//! - tus 1.0.0: `POST` with `Upload-Length` creates the resource, `PATCH`es
//!   (`application/offset+octet-stream`) append to it.
//!
//! In both, `HEAD` on the resource gives the offset to continue from, and
//! `DELETE` cancels it. The resource's URL is saved in the task record
//! (its partial location) before any byte is sent, and the offset the
//! server confirms after each append is the task's durable offset. Appends
//! are at most `SessionConfig::upload_chunk_bytes` each, so a server that
//! keeps only whole appends loses at most one chunk to an interruption.

use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use transfer_core::{
    BodyPart, ErrorKind, Event, FileStamp, PartialLocation, RedirectPolicy, RequestBody,
    ResponseSummary, RestartReason, ResumableProtocol, TransferError, TransportRequest,
};

use super::Attempt;
use super::upload::read_bounded;
use crate::command::Report;

/// What the server says of an upload resource.
enum Remote {
    /// It holds this many bytes.
    At(u64),
    /// The upload is complete (its answer was lost with the connection).
    Complete(ResponseSummary),
    /// It no longer knows the upload.
    Gone,
}

/// The headers every request of a protocol carries.
fn speak(protocol: ResumableProtocol, b: http::request::Builder) -> http::request::Builder {
    match protocol {
        ResumableProtocol::IetfDraft => b.header(
            "upload-draft-interop-version",
            ResumableProtocol::IETF_INTEROP_VERSION,
        ),
        ResumableProtocol::Tus => b.header("tus-resumable", "1.0.0"),
    }
}

/// A structured-field Integer (or tus's decimal) header.
fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn protocol_error(detail: impl Into<String>) -> TransferError {
    TransferError::new(ErrorKind::Protocol, detail)
}

/// `location` resolved against `base`, held to the rules a redirect is
/// (see [`transfer_core::redirect::location`]): only http(s), and no step
/// from https down to http unless `policy` allows it. A refusal is
/// permanent: the server would name the same place again.
fn resolve(base: &Uri, location: &str, policy: &RedirectPolicy) -> Result<String, TransferError> {
    transfer_core::redirect::location(base, location, policy).map(|to| to.to_string())
}

/// A bodiless answer as a completion's answer.
fn summary(parts: http::response::Parts) -> ResponseSummary {
    ResponseSummary {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::new(),
    }
}

/// A request with no body.
fn bodiless(b: http::request::Builder) -> Result<Request<RequestBody>, TransferError> {
    b.body(RequestBody::empty())
        .map_err(|e| TransferError::new(ErrorKind::InvalidRequest, e.to_string()))
}

impl Attempt {
    /// Sends the file resumably; `Ok(Some(bytes))` when the server has all
    /// of it, `Ok(None)` when stopped (the next attempt asks the server for
    /// its offset).
    pub(crate) async fn resumable(
        &mut self,
        base: &http::request::Parts,
        source: &Path,
        stamp: FileStamp,
        content_type: Option<&str>,
        protocol: ResumableProtocol,
    ) -> Result<Option<u64>, TransferError> {
        let total = stamp.len;
        self.send(Event::Responded {
            attempt: self.attempt,
            validator: None,
            total: Some(total),
        });
        let durable = self.resume().durable_offset;
        let mut resource = match &self.resume().partial {
            Some(PartialLocation::UploadResource { url, protocol: p }) if *p == protocol => {
                Some(url.clone())
            }
            _ => None,
        };
        let mut offset = 0;
        if let Some(url) = &resource {
            match self.offset_of(url, protocol).await? {
                Remote::At(o) => offset = o,
                Remote::Complete(answer) => return Ok(Some(self.answered(answer, total))),
                Remote::Gone => resource = None,
            }
        }
        if durable > 0 && (resource.is_none() || offset < durable) {
            // The server has less than it confirmed: start over.
            self.send_durably(Event::Restarted {
                attempt: self.attempt,
                reason: RestartReason::UploadLost,
            })
            .await?;
        }
        let url = match resource {
            Some(url) => url,
            None => {
                let Some(url) = self
                    .create(base, total, content_type, protocol, source)
                    .await?
                else {
                    // The server does not offer resumable uploads.
                    return self.upload_plain(base, source, stamp, content_type).await;
                };
                offset = 0;
                url
            }
        };
        self.confirmed(offset, Some(&url), protocol).await?;
        let mut conflicts = 0;
        loop {
            if protocol == ResumableProtocol::Tus && offset == total && total > 0 {
                // All there; the answer to the last append was lost.
                let answer = self.head_answer(&url, protocol).await?;
                return Ok(Some(self.answered(answer, total)));
            }
            let end = total.min(offset.saturating_add(self.config.upload_chunk_bytes.max(1)));
            let last = end == total;
            if protocol == ResumableProtocol::Tus && total == 0 {
                let answer = self.head_answer(&url, protocol).await?;
                return Ok(Some(self.answered(answer, 0)));
            }
            let request = self.append(&url, protocol, source, stamp, offset, end, last)?;
            let response = tokio::select! {
                r = self.transport.send(request) => r?,
                _ = self.stop.wait_for(|s| *s) => return Ok(None),
            };
            self.report_proxy(&response);
            let metrics = response.metrics.clone();
            let (parts, body) = response.response.into_parts();
            let kept = read_bounded(body, self.config.upload_response_limit).await?;
            self.report_metrics(metrics);
            let status = parts.status;
            let reported = number(&parts.headers, "upload-offset");
            let answer = ResponseSummary {
                status,
                headers: parts.headers,
                body: kept,
            };
            match status {
                StatusCode::CONFLICT => {
                    conflicts += 1;
                    if conflicts > 3 {
                        return Err(protocol_error(
                            "the server keeps disagreeing about the upload offset",
                        ));
                    }
                    offset = match reported {
                        Some(o) => o,
                        None => match self.offset_of(&url, protocol).await? {
                            Remote::At(o) => o,
                            Remote::Complete(answer) => {
                                return Ok(Some(self.answered(answer, total)));
                            }
                            Remote::Gone => return Err(protocol_error("the upload vanished")),
                        },
                    };
                    self.confirmed(offset, None, protocol).await?;
                }
                s if s.is_success() => {
                    let now = match protocol {
                        ResumableProtocol::IetfDraft => reported.unwrap_or(end),
                        ResumableProtocol::Tus => reported
                            .ok_or_else(|| protocol_error("no Upload-Offset in the tus answer"))?,
                    };
                    if now < offset || now > total {
                        return Err(protocol_error(format!(
                            "the server reports offset {now} after an append from {offset}"
                        )));
                    }
                    let done = match protocol {
                        ResumableProtocol::IetfDraft => last,
                        ResumableProtocol::Tus => now == total,
                    };
                    if done {
                        return Ok(Some(self.answered(answer, total)));
                    }
                    offset = now;
                    self.confirmed(offset, None, protocol).await?;
                }
                _ => {
                    let retry_after = answer
                        .headers
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| {
                            transfer_core::parse_retry_after(v, self.handles.clock.now())
                        });
                    self.keep_answer(answer);
                    return Err(TransferError::status(status.as_u16(), retry_after));
                }
            }
        }
    }

    /// Records that the server holds `offset` bytes (and, the first time,
    /// where the upload resource is), durably before anything more is sent.
    async fn confirmed(
        &self,
        offset: u64,
        url: Option<&str>,
        protocol: ResumableProtocol,
    ) -> Result<(), TransferError> {
        self.send(Event::Progress {
            attempt: self.attempt,
            received: offset,
        });
        self.send_durably(Event::Checkpoint {
            attempt: self.attempt,
            durable: offset,
            partial: url.map(|u| PartialLocation::UploadResource {
                url: u.to_owned(),
                protocol,
            }),
        })
        .await
    }

    /// Keeps the server's answer for the completion and returns `bytes`.
    fn answered(&self, answer: ResponseSummary, bytes: u64) -> u64 {
        self.keep_answer(answer);
        bytes
    }

    fn keep_answer(&self, answer: ResponseSummary) {
        self.handles.inbox.report(Report::Response {
            task: self.task,
            attempt: self.attempt,
            response: Box::new(answer),
        });
    }

    /// Creates the upload resource and returns its URL; `None` when the
    /// server does not offer the IETF protocol.
    async fn create(
        &self,
        base: &http::request::Parts,
        total: u64,
        content_type: Option<&str>,
        protocol: ResumableProtocol,
        source: &Path,
    ) -> Result<Option<String>, TransferError> {
        if protocol == ResumableProtocol::IetfDraft {
            let probe =
                speak(protocol, Request::builder().method(Method::OPTIONS)).uri(base.uri.clone());
            let response = self
                .transport
                .send(self.with_options(bodiless(probe)?))
                .await?;
            let offered = response.response.status().is_success()
                && response
                    .response
                    .headers()
                    .get_all("accept-patch")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("application/partial-upload"));
            let _ = read_bounded(response.response.into_body(), 0).await;
            if !offered {
                tracing::debug!(task = %self.task, "no resumable uploads offered; a plain upload");
                return Ok(None);
            }
        }
        let method = match protocol {
            ResumableProtocol::IetfDraft => base.method.clone(),
            ResumableProtocol::Tus => Method::POST,
        };
        let mut b = speak(protocol, Request::builder().method(method)).uri(base.uri.clone());
        for (k, v) in &base.headers {
            b = b.header(k, v);
        }
        b = b.header("upload-length", total);
        match protocol {
            ResumableProtocol::IetfDraft => {
                b = b.header("upload-complete", "?0");
                if let Some(ct) = content_type {
                    b = b.header(header::CONTENT_TYPE, ct);
                }
            }
            ResumableProtocol::Tus => {
                use base64::Engine as _;
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                let name = source
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut meta = format!("filename {}", b64(&name));
                if let Some(ct) = content_type {
                    meta.push_str(&format!(",filetype {}", b64(ct)));
                }
                b = b.header("upload-metadata", meta);
            }
        }
        let response = self.transport.send(self.with_options(bodiless(b)?)).await?;
        let status = response.response.status();
        let location = response
            .response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (parts, body) = response.response.into_parts();
        let kept = read_bounded(body, self.config.upload_response_limit).await?;
        if !status.is_success() {
            self.keep_answer(ResponseSummary {
                status,
                headers: parts.headers,
                body: kept,
            });
            return Err(TransferError::status(status.as_u16(), None));
        }
        let location =
            location.ok_or_else(|| protocol_error("the upload was created without a Location"))?;
        resolve(&base.uri, &location, &self.config.redirects).map(Some)
    }

    /// `HEAD` on the upload resource: its answer, body dropped.
    async fn head(
        &self,
        url: &str,
        protocol: ResumableProtocol,
    ) -> Result<http::response::Parts, TransferError> {
        let b = speak(protocol, Request::builder().method(Method::HEAD)).uri(url);
        let response = self.transport.send(self.with_options(bodiless(b)?)).await?;
        let (parts, body) = response.response.into_parts();
        let _ = read_bounded(body, 0).await;
        Ok(parts)
    }

    /// Asks the server how much of the upload it holds.
    async fn offset_of(
        &self,
        url: &str,
        protocol: ResumableProtocol,
    ) -> Result<Remote, TransferError> {
        let parts = self.head(url, protocol).await?;
        if matches!(parts.status, StatusCode::NOT_FOUND | StatusCode::GONE) {
            return Ok(Remote::Gone);
        }
        if !parts.status.is_success() {
            return Err(TransferError::status(parts.status.as_u16(), None));
        }
        let offset = number(&parts.headers, "upload-offset")
            .ok_or_else(|| protocol_error("no Upload-Offset in the offset answer"))?;
        let complete = match protocol {
            ResumableProtocol::IetfDraft => parts
                .headers
                .get("upload-complete")
                .is_some_and(|v| v.as_bytes() == b"?1"),
            ResumableProtocol::Tus => false,
        };
        Ok(if complete {
            Remote::Complete(summary(parts))
        } else {
            Remote::At(offset)
        })
    }

    /// The offset answer, as the upload's answer when nothing better is left.
    async fn head_answer(
        &self,
        url: &str,
        protocol: ResumableProtocol,
    ) -> Result<ResponseSummary, TransferError> {
        Ok(summary(self.head(url, protocol).await?))
    }

    /// The append of bytes `offset..end` of the file.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        url: &str,
        protocol: ResumableProtocol,
        source: &Path,
        stamp: FileStamp,
        offset: u64,
        end: u64,
        last: bool,
    ) -> Result<TransportRequest, TransferError> {
        let mut b = speak(protocol, Request::builder().method(Method::PATCH))
            .uri(url)
            .header("upload-offset", offset);
        b = match protocol {
            ResumableProtocol::IetfDraft => b
                .header(header::CONTENT_TYPE, "application/partial-upload")
                .header("upload-complete", if last { "?1" } else { "?0" }),
            ResumableProtocol::Tus => {
                b.header(header::CONTENT_TYPE, "application/offset+octet-stream")
            }
        };
        let body = RequestBody {
            parts: vec![BodyPart::File {
                path: source.to_owned(),
                offset,
                len: end - offset,
                stamp: Some(stamp),
            }],
        };
        let request = b
            .body(body)
            .map_err(|e| TransferError::new(ErrorKind::InvalidRequest, e.to_string()))?;
        let mut request = self.with_options(request);
        request.on_sent = Some(self.sent_progress(offset, end));
        request.pacer = Some(self.pacer());
        Ok(request)
    }
}

/// Cancels an upload resource (`DELETE`), best effort: a server that keeps
/// it lets it expire.
pub(crate) async fn cancel(
    transport: &dyn transfer_core::Transport,
    url: &str,
    protocol: ResumableProtocol,
) {
    let Ok(request) = bodiless(speak(protocol, Request::builder().method(Method::DELETE)).uri(url))
    else {
        return;
    };
    match transport.send(TransportRequest::new(request)).await {
        Ok(r) => {
            let _ = read_bounded(r.response.into_body(), 0).await;
        }
        Err(e) => tracing::debug!(%url, error = %e, "cancelling the upload resource failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_target() {
        let base: Uri = "https://h.example/files/up?x=1".parse().unwrap();
        let policy = RedirectPolicy::default();
        assert_eq!(
            resolve(&base, "/files/abc", &policy).unwrap(),
            "https://h.example/files/abc"
        );
        assert_eq!(
            resolve(&base, "abc", &policy).unwrap(),
            "https://h.example/files/abc"
        );
        assert_eq!(
            resolve(&base, "https://other:8443/u/1", &policy).unwrap(),
            "https://other:8443/u/1"
        );
    }

    #[test]
    fn a_location_that_is_not_http_or_leaves_https_for_http_is_refused_for_good() {
        let base: Uri = "https://h.example/files/up".parse().unwrap();
        let policy = RedirectPolicy::default();
        for location in [
            "file:///etc/passwd",
            "http://other:8080/u/1",
            "http://h.example/u",
        ] {
            let e = resolve(&base, location, &policy).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::RedirectRefused, "{location}: {e}");
            assert!(!e.is_retryable(), "{location}: {e}");
        }
        let allowed = RedirectPolicy {
            allow_https_to_http: true,
            ..policy
        };
        assert_eq!(
            resolve(&base, "http://h.example/u", &allowed).unwrap(),
            "http://h.example/u"
        );
    }
}
