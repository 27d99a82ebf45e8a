//! One attempt of one download (uploads: `upload.rs`): ask from the durable offset, judge the
//! answer, stream through the throttle and a SHA-256 into the partial,
//! checkpoint (data durable, then offset recorded), verify, commit.
//!
//! The runner reports to the engine with runner events; it never touches
//! the task record itself.

use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use transfer_core::{
    BeginDecision, Continuation, ErrorKind, Event, Partial, RangePlan, RequestBody, ResumeData,
    StoreError, StoreErrorKind, TaskKind, TimeoutKind, TransferError, judge_response, plan_range,
};

use super::Attempt;

fn storage_error(e: StoreError) -> TransferError {
    let kind = match e.kind() {
        StoreErrorKind::Full => ErrorKind::StorageFull,
        StoreErrorKind::Exists => ErrorKind::DestinationExists,
        StoreErrorKind::Descriptors => ErrorKind::TooManyOpenFiles,
        _ => ErrorKind::Storage,
    };
    TransferError::new(kind, e.to_string())
}

/// Fails, in words, when the `need` bytes still to come cannot fit in the
/// storage's `room` (when it can tell): better at once than after writing
/// until the disk is full.
fn fits(need: u64, room: Option<u64>) -> Result<(), TransferError> {
    match room {
        Some(room) if need > room => Err(TransferError::new(
            ErrorKind::InsufficientStorage,
            format!(
                "needs {}, {} free",
                transfer_core::format_size(need),
                transfer_core::format_size(room)
            ),
        )),
        _ => Ok(()),
    }
}

impl Attempt {
    /// The request the task's spec describes, before any range.
    fn base_request(&self) -> Result<http::request::Parts, TransferError> {
        let spec = self.spec();
        let mut b = Request::builder()
            .method(spec.request.method.clone())
            .uri(spec.url().as_uri().clone());
        for (k, v) in &spec.request.headers {
            b = b.header(k, v);
        }
        let (parts, ()) = b
            .body(())
            .map_err(|e| TransferError::new(ErrorKind::InvalidRequest, e.to_string()))?
            .into_parts();
        Ok(parts)
    }

    /// The request every range of this attempt starts from (method, URL,
    /// headers): the spec's, or for a delayed task what the delegate's
    /// `will_begin` made of it; `None` when the delegate cancelled the task.
    pub(super) async fn begin(&self) -> Result<Option<http::request::Parts>, TransferError> {
        let mut parts = self.base_request()?;
        if !self.delayed {
            return Ok(Some(parts));
        }
        match self
            .handles
            .delegate
            .will_begin(&self.record, &mut parts)
            .await
        {
            BeginDecision::Continue => Ok(Some(parts)),
            BeginDecision::Cancel => {
                self.send(Event::Cancel {
                    keep_resume_data: false,
                });
                Ok(None)
            }
        }
    }

    async fn open(&self, resume: &ResumeData) -> Result<Box<dyn Partial>, TransferError> {
        let TaskKind::Download { destination } = &self.spec().kind else {
            return Err(TransferError::new(
                ErrorKind::InvalidRequest,
                "uploads are not run by this runner",
            ));
        };
        self.handles
            .payloads
            .open(&self.handles.session, self.task, destination, resume)
            .await
            .map_err(storage_error)
    }

    /// `Ok(Some(bytes))` when committed, `Ok(None)` when stopped.
    pub(super) async fn download(
        &mut self,
        base: &http::request::Parts,
    ) -> Result<Option<u64>, TransferError> {
        let mut resume = self.resume().clone();
        let mut partial = self.open(&resume).await?;
        let mut offset = partial.offset();
        let mut restarted_once = false;
        loop {
            // Bytes held under no validator that vouches for them are not
            // continued: a bare range could splice two versions.
            let range = match plan_range(&resume, offset, self.config.allow_weak_etags) {
                RangePlan::Restart { reason } => {
                    self.restart(&mut partial, &mut resume, reason).await?;
                    offset = 0;
                    continue;
                }
                range => range,
            };
            let response = self.request(base, &range).await?;
            let status = response.response.status();
            let headers = response.response.headers().clone();
            let now = self.handles.clock.now();
            let judged = judge_response(
                &resume,
                offset,
                status,
                &headers,
                self.config.allow_weak_etags,
                now,
            )?;
            let (total, validator) = match judged {
                Continuation::Append {
                    total, validator, ..
                } => (total, validator),
                Continuation::RestartWithBody {
                    reason,
                    total,
                    validator,
                } => {
                    self.restart(&mut partial, &mut resume, reason).await?;
                    (total, validator)
                }
                Continuation::Rerequest { reason } => {
                    if restarted_once {
                        return Err(TransferError::new(
                            ErrorKind::Protocol,
                            "the server refused the range twice",
                        ));
                    }
                    restarted_once = true;
                    self.restart(&mut partial, &mut resume, reason).await?;
                    offset = 0;
                    continue;
                }
                Continuation::AlreadyComplete { total } => {
                    let expected = self.expected_digest(&headers, status);
                    return self.finish(partial, total, expected, None).await.map(Some);
                }
            };
            self.send(Event::Responded {
                attempt: self.attempt,
                validator: validator.clone(),
                total,
            });
            resume.validator = validator;
            resume.total_length = total;
            if let Some(limit) = self.spec().size_cap(self.config.max_body)
                && total.is_some_and(|t| t > limit)
            {
                return Err(TransferError::new(
                    ErrorKind::SizeLimitExceeded,
                    format!(
                        "the body is {} bytes, over the limit of {limit}",
                        total.unwrap_or(0)
                    ),
                ));
            }
            if let Some(total) = total {
                fits(total.saturating_sub(partial.offset()), partial.room())?;
            }
            let expected = self.expected_digest(&headers, status);
            let mut hasher = match &expected {
                Some(_) => {
                    let mut h = Sha256::new();
                    let prefix = partial.offset();
                    hash_prefix(&mut partial, prefix, &mut h).await?;
                    Some(h)
                }
                None => None,
            };
            let metrics = response.metrics.clone();
            let body = response.response.into_body();
            let streamed = self
                .stream(&mut partial, body, total, hasher.as_mut())
                .await;
            self.report_metrics(metrics);
            match streamed {
                Ok(Streamed::Stopped) => return Ok(None),
                Ok(Streamed::Ended) => {}
                Err(e) => {
                    // What arrived before the failure is good: keep it, so
                    // the next attempt asks only for the rest.
                    if partial.offset() > offset
                        && let Err(c) = self.checkpoint(&mut partial, false).await
                    {
                        tracing::debug!(task = %self.task, error = %c, "no checkpoint after a failure");
                    }
                    return Err(e);
                }
            }
            let written = partial.offset();
            if let Some(t) = total
                && written != t
            {
                return Err(TransferError::new(
                    ErrorKind::ConnectionLost,
                    format!("the body ended at {written} of {t} bytes"),
                ));
            }
            return self
                .finish(partial, written, expected, hasher)
                .await
                .map(Some);
        }
    }

    /// `base` with the range to ask for, sent.
    async fn request(
        &self,
        base: &http::request::Parts,
        range: &RangePlan,
    ) -> Result<transfer_core::TransportResponse, TransferError> {
        let mut b = Request::builder()
            .method(base.method.clone())
            .uri(base.uri.clone());
        for (k, v) in &base.headers {
            b = b.header(k, v);
        }
        let offset = match range {
            RangePlan::From { offset, if_range } => {
                b = b.header(header::RANGE, format!("bytes={offset}-"));
                if let Some(v) = if_range {
                    b = b.header(header::IF_RANGE, v);
                }
                *offset
            }
            RangePlan::Whole | RangePlan::Restart { .. } => 0,
        };
        let request = b
            .body(RequestBody::empty())
            .map_err(|e| TransferError::new(ErrorKind::InvalidRequest, e.to_string()))?;
        let response = self.transport.send(self.with_options(request)).await?;
        self.report_proxy(&response);
        tracing::debug!(
            task = %self.task,
            attempt = self.attempt,
            offset,
            status = %response.response.status(),
            protocol = %response.metrics.protocol,
            reused = response.metrics.reused_connection,
            "response"
        );
        Ok(response)
    }

    async fn restart(
        &self,
        partial: &mut Box<dyn Partial>,
        resume: &mut ResumeData,
        reason: transfer_core::RestartReason,
    ) -> Result<(), TransferError> {
        self.send_durably(Event::Restarted {
            attempt: self.attempt,
            reason,
        })
        .await?;
        resume.durable_offset = 0;
        resume.validator = None;
        resume.total_length = None;
        let fresh = ResumeData {
            partial: resume.partial.clone(),
            ..ResumeData::default()
        };
        // Reopening at durable offset 0 cuts the old representation away.
        *partial = self.open(&fresh).await?;
        Ok(())
    }

    async fn stream(
        &mut self,
        partial: &mut Box<dyn Partial>,
        mut body: transfer_core::ResponseBody,
        total: Option<u64>,
        mut hasher: Option<&mut Sha256>,
    ) -> Result<Streamed, TransferError> {
        let limit = self.spec().size_cap(self.config.max_body);
        let pacer = self.body_pacer();
        let mut last_checkpoint = Instant::now();
        let mut since_checkpoint = 0u64;
        let mut last_progress = Instant::now();
        let mut speed = self.config.low_speed.map(LowSpeed::new);
        loop {
            if *self.stop.borrow() {
                self.checkpoint(partial, false).await?;
                return Ok(Streamed::Stopped);
            }
            // A frame already there is taken without the select (the
            // frame future holds nothing: dropped unready, it loses none);
            // the stop was checked just above. Waiting, a stop comes first.
            let frame = match futures::FutureExt::now_or_never(body.frame()) {
                Some(f) => f,
                None => tokio::select! {
                    biased;
                    changed = self.stop.changed() => {
                        // The engine gone (its sender dropped) stops the
                        // attempt as a stop would: otherwise this would
                        // spin, the channel answering at once forever.
                        if changed.is_err() {
                            self.checkpoint(partial, false).await?;
                            return Ok(Streamed::Stopped);
                        }
                        continue;
                    }
                    f = body.frame() => f,
                },
            };
            let Some(frame) = frame else {
                return Ok(Streamed::Ended);
            };
            let Ok(data) = frame?.into_data() else {
                continue; // trailers
            };
            let n = data.len() as u64;
            if let Some(limit) = limit
                && partial.offset() + n > limit
            {
                return Err(TransferError::new(
                    ErrorKind::SizeLimitExceeded,
                    format!("the body grew past the limit of {limit} bytes"),
                ));
            }
            if total.is_some_and(|t| partial.offset() + n > t) {
                return Err(TransferError::new(
                    ErrorKind::Protocol,
                    "the server sent more bytes than it declared",
                ));
            }
            // A stop must not wait out a long throttle pause; the bytes in
            // hand are written either way.
            if let Some(speed) = speed.as_mut() {
                speed.check(n)?;
            }
            if let Some(paced) = pacer.take(n) {
                let waited = Instant::now();
                tokio::select! {
                    () = paced => {}
                    _ = self.stop.wait_for(|s| *s) => {}
                }
                if let Some(speed) = speed.as_mut() {
                    speed.paced(waited.elapsed());
                }
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&data);
            }
            // In a shared session, nothing is written once the claim may
            // have lapsed (another process may run the task now).
            self.check_claim()?;
            partial.write(data).await.map_err(storage_error)?;
            since_checkpoint += n;
            // The storage made more durable since the last checkpoint (a
            // flush finished, a part was stored): record it now rather than
            // at the next checkpoint.
            if let Some((durable, location)) = partial.durable_update() {
                self.record_durable(partial.offset(), durable, location);
            }
            if last_progress.elapsed() >= self.config.progress_interval {
                last_progress = Instant::now();
                self.send(Event::Progress {
                    attempt: self.attempt,
                    received: partial.offset(),
                });
            }
            // At full speed (the byte count comes first) the disk flushes
            // while the next bytes arrive, and the offset recorded trails by
            // up to one checkpoint; a slower transfer waits for its flush.
            let by_bytes = since_checkpoint >= self.config.checkpoint_bytes;
            if by_bytes || last_checkpoint.elapsed() >= self.config.checkpoint_interval {
                self.checkpoint(partial, by_bytes).await?;
                since_checkpoint = 0;
                last_checkpoint = Instant::now();
            }
        }
    }

    /// Data durable first, then the offset recorded.
    async fn checkpoint(
        &self,
        partial: &mut Box<dyn Partial>,
        behind: bool,
    ) -> Result<(), TransferError> {
        let synced = if behind {
            partial.sync_behind().await
        } else {
            partial.sync().await
        };
        let (durable, location) = synced.map_err(storage_error)?;
        self.record_durable(partial.offset(), durable, location);
        Ok(())
    }

    /// Records a checkpoint: the bytes received first, since a durable
    /// offset may not run ahead of them.
    fn record_durable(
        &self,
        received: u64,
        durable: u64,
        location: transfer_core::PartialLocation,
    ) {
        self.send(Event::Progress {
            attempt: self.attempt,
            received,
        });
        self.send(Event::Checkpoint {
            attempt: self.attempt,
            durable,
            partial: Some(location),
        });
    }

    /// The SHA-256 the payload must have, and who says so: the task's
    /// expected checksum, else RFC 9530 `Repr-Digest`, else `Content-Digest`
    /// on a full (200) response.
    fn expected_digest(
        &self,
        headers: &HeaderMap,
        status: StatusCode,
    ) -> Option<(String, &'static str)> {
        self.spec()
            .expected_sha256
            .as_ref()
            .map(|d| (d.to_hex(), "the expected SHA-256"))
            .or_else(|| digest_header(headers, "repr-digest").map(|d| (d, "Repr-Digest")))
            .or_else(|| {
                (status == StatusCode::OK)
                    .then(|| digest_header(headers, "content-digest"))
                    .flatten()
                    .map(|d| (d, "Content-Digest"))
            })
    }

    /// Verifies the checksum (streamed, or read back when no body came),
    /// then commits the partial.
    async fn finish(
        &self,
        mut partial: Box<dyn Partial>,
        bytes: u64,
        expected: Option<(String, &'static str)>,
        hashed: Option<Sha256>,
    ) -> Result<u64, TransferError> {
        // No sync here: `commit` makes the data durable, and a mismatch
        // discards it.
        if let Some((want, source)) = expected {
            let got = match hashed {
                Some(h) => hex::encode(h.finalize()),
                None => {
                    let mut h = Sha256::new();
                    hash_prefix(&mut partial, bytes, &mut h).await?;
                    hex::encode(h.finalize())
                }
            };
            if got != want {
                let _ = partial.discard().await;
                tracing::debug!(task = %self.task, "checksum mismatch; partial discarded");
                return Err(TransferError::new(
                    ErrorKind::ChecksumMismatch,
                    format!("SHA-256 is {got}, {source} says {want}"),
                ));
            }
        }
        self.check_claim()?;
        partial
            .commit(self.spec().overwrite)
            .await
            .map_err(storage_error)?;
        Ok(bytes)
    }
}

enum Streamed {
    Ended,
    Stopped,
}

/// Feeds the partial's first `len` bytes to `hasher`: the bytes earlier
/// attempts (or processes) wrote, so the checksum covers the whole payload.
async fn hash_prefix(
    partial: &mut Box<dyn Partial>,
    len: u64,
    hasher: &mut Sha256,
) -> Result<(), TransferError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let want = buf
            .len()
            .min(usize::try_from(len - at).unwrap_or(usize::MAX));
        let n = partial
            .read_at(at, &mut buf[..want])
            .await
            .map_err(storage_error)?;
        if n == 0 {
            return Err(TransferError::new(
                ErrorKind::Storage,
                format!("the partial ended at {at} of {len} bytes"),
            ));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

/// The `sha-256` member of an RFC 9530 digest field, as hex.
fn digest_header(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    value.split(',').find_map(|member| {
        let (key, v) = member.trim().split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("sha-256") {
            return None;
        }
        let b64 = v.trim().strip_prefix(':')?.strip_suffix(':')?;
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        (raw.len() == 32).then(|| hex::encode(raw))
    })
}

/// The low-speed check of one body (see [`SessionConfig::low_speed`](crate::SessionConfig::low_speed)): the
/// bytes of the current window and when it began, less the time spent in
/// the rate limit's pauses.
struct LowSpeed {
    limit: u64,
    window: Duration,
    start: Instant,
    bytes: u64,
    paced: Duration,
}

impl LowSpeed {
    fn new((limit, window): (u64, Duration)) -> LowSpeed {
        LowSpeed {
            limit,
            window,
            start: Instant::now(),
            bytes: 0,
            paced: Duration::ZERO,
        }
    }

    /// Counts `n` bytes that just arrived; once a window has passed, fails
    /// when its average was under the limit, else starts the next window.
    fn check(&mut self, n: u64) -> Result<(), TransferError> {
        self.bytes += n;
        let spent = self.start.elapsed().saturating_sub(self.paced);
        if spent < self.window {
            return Ok(());
        }
        let rate = self.bytes as f64 / spent.as_secs_f64();
        if rate < self.limit as f64 {
            return Err(TransferError::new(
                ErrorKind::Timeout(TimeoutKind::LowSpeed),
                format!(
                    "the body came at {rate:.0} B/s over {:.1} s, under the limit of {} B/s",
                    spent.as_secs_f64(),
                    self.limit
                ),
            ));
        }
        *self = LowSpeed::new((self.limit, self.window));
        Ok(())
    }

    /// Leaves time spent waiting for the rate limit out of the window.
    fn paced(&mut self, waited: Duration) {
        self.paced += waited;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_fields_parse_per_rfc_9530() {
        let mut h = HeaderMap::new();
        let digest = Sha256::digest(b"hello");
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        h.insert(
            "repr-digest",
            format!("sha-512=:AAAA:, sha-256=:{b64}:").parse().unwrap(),
        );
        assert_eq!(digest_header(&h, "repr-digest"), Some(hex::encode(digest)));
        h.insert("content-digest", "sha-256=:short:".parse().unwrap());
        assert_eq!(digest_header(&h, "content-digest"), None);
    }
}
