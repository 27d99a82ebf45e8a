//! One attempt of one upload: the file (as the raw body, or as the file part
//! of a `multipart/form-data` body) streamed by the transport, bytes sent
//! reported as progress, and the server's answer kept for the completion.
//! Resumable uploads are in `resumable.rs`.
//!
//! The file was stamped (length, modification time) when the task was
//! enqueued; the transport checks the stamp before the first and before the
//! last bytes go out, so a file changed in between fails the attempt with
//! `SourceChanged` and never reaches the server whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, header};
use http_body_util::BodyExt;
use transfer_core::{
    BodyPart, ErrorKind, Event, FileStamp, RequestBody, ResponseSummary, TaskKind, TransferError,
    UploadBody,
};

use super::Attempt;
use crate::command::Report;

/// A multipart body's parts, its boundary and its length.
struct Framed {
    body: RequestBody,
    content_type: String,
}

/// Quotes a form field's name or file name the way browsers do (WHATWG
/// multipart/form-data): `"` as `%22`, CR as `%0D`, LF as `%0A`.
fn form_quote(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A boundary that the parts do not contain: 128 random bits (from std's
/// randomly keyed hasher), checked against the text fields; the file is not
/// read to check, and a collision with it is as likely as guessing the key.
fn boundary(fields: &[(String, String)]) -> String {
    let random = transfer_core::random_u64;
    loop {
        let b = format!("ferry-{:016x}{:016x}", random(), random());
        if !fields.iter().any(|(n, v)| n.contains(&b) || v.contains(&b)) {
            return b;
        }
    }
}

/// The request body for `body` framing the file at `path` (stamped `stamp`).
fn frame(
    body: &UploadBody,
    path: &std::path::Path,
    stamp: FileStamp,
) -> Result<Framed, TransferError> {
    let file = BodyPart::File {
        path: path.to_owned(),
        offset: 0,
        len: stamp.len,
        stamp: Some(stamp),
    };
    match body {
        UploadBody::Raw { content_type } => Ok(Framed {
            body: RequestBody { parts: vec![file] },
            content_type: content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
        }),
        UploadBody::Multipart {
            field,
            file_name,
            content_type,
            fields,
        } => {
            let b = boundary(fields);
            let mut head = BytesMut::new();
            for (name, value) in fields {
                head.extend_from_slice(
                    format!(
                        "--{b}\r\ncontent-disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n",
                        form_quote(name)
                    )
                    .as_bytes(),
                );
            }
            head.extend_from_slice(
                format!(
                    "--{b}\r\ncontent-disposition: form-data; name=\"{}\"; filename=\"{}\"\r\n\
                     content-type: {}\r\n\r\n",
                    form_quote(field),
                    form_quote(file_name),
                    content_type
                        .as_deref()
                        .unwrap_or("application/octet-stream")
                )
                .as_bytes(),
            );
            let tail = Bytes::from(format!("\r\n--{b}--\r\n"));
            Ok(Framed {
                body: RequestBody {
                    parts: vec![BodyPart::Bytes(head.freeze()), file, BodyPart::Bytes(tail)],
                },
                content_type: format!("multipart/form-data; boundary={b}"),
            })
        }
        UploadBody::Resumable { content_type, .. } => frame(
            &UploadBody::Raw {
                content_type: content_type.clone(),
            },
            path,
            stamp,
        ),
    }
}

impl Attempt {
    /// Sends the file; `Ok(Some(bytes sent))` on a 2xx answer, `Ok(None)`
    /// when stopped (the next attempt sends it again from the start).
    pub(crate) async fn upload(
        &mut self,
        base: &http::request::Parts,
    ) -> Result<Option<u64>, TransferError> {
        let TaskKind::Upload {
            source,
            body,
            stamp,
        } = &self.spec().kind
        else {
            return Err(TransferError::new(
                ErrorKind::InvalidRequest,
                "downloads are not run by this runner",
            ));
        };
        let stamp = match stamp {
            Some(s) => *s,
            None => {
                // Enqueued without a stamp (by an older build): take it now.
                let meta = tokio::fs::metadata(source).await.map_err(|e| {
                    TransferError::new(
                        ErrorKind::SourceChanged,
                        format!("upload source {}: {e}", source.display()),
                    )
                })?;
                FileStamp::of(&meta)
            }
        };
        let source = source.clone();
        match body.clone() {
            UploadBody::Resumable {
                content_type,
                protocol,
            } => {
                self.resumable(base, &source, stamp, content_type.as_deref(), protocol)
                    .await
            }
            body => self.send_whole(base, &body, &source, stamp).await,
        }
    }

    /// A resumable upload the server does not offer, sent whole.
    pub(crate) async fn upload_plain(
        &mut self,
        base: &http::request::Parts,
        source: &std::path::Path,
        stamp: FileStamp,
        content_type: Option<&str>,
    ) -> Result<Option<u64>, TransferError> {
        let body = UploadBody::Raw {
            content_type: content_type.map(str::to_owned),
        };
        self.send_whole(base, &body, source, stamp).await
    }

    /// Sends the file in one request, framed as `body` says.
    async fn send_whole(
        &mut self,
        base: &http::request::Parts,
        body: &UploadBody,
        source: &std::path::Path,
        stamp: FileStamp,
    ) -> Result<Option<u64>, TransferError> {
        let framed = frame(body, source, stamp)?;
        let total = framed.body.len();
        self.send(Event::Responded {
            attempt: self.attempt,
            validator: None,
            total: Some(total),
        });

        let mut b = Request::builder()
            .method(base.method.clone())
            .uri(base.uri.clone());
        for (k, v) in &base.headers {
            b = b.header(k, v);
        }
        let mut request = b
            .body(framed.body)
            .map_err(|e| TransferError::new(ErrorKind::InvalidRequest, e.to_string()))?;
        let multipart = matches!(body, UploadBody::Multipart { .. });
        if multipart || !request.headers().contains_key(header::CONTENT_TYPE) {
            let v = HeaderValue::from_str(&framed.content_type)
                .map_err(|e| TransferError::new(ErrorKind::InvalidRequest, e.to_string()))?;
            request.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        let mut request = self.with_options(request);
        request.on_sent = Some(self.sent_progress(0, total));
        request.pacer = Some(self.pacer());

        let send = self.transport.send(request);
        let response = tokio::select! {
            r = send => r?,
            _ = self.stop.wait_for(|s| *s) => return Ok(None),
        };
        self.report_proxy(&response);
        let metrics = response.metrics.clone();
        let (parts, body) = response.response.into_parts();
        let limit = self.config.upload_response_limit;
        let kept = tokio::select! {
            b = read_bounded(body, limit) => b,
            _ = self.stop.wait_for(|s| *s) => return Ok(None),
        };
        self.report_metrics(metrics);
        let summary = ResponseSummary {
            status: parts.status,
            headers: parts.headers,
            body: kept?,
        };
        let status = summary.status;
        let retry_after = summary
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| transfer_core::parse_retry_after(v, self.handles.clock.now()));
        self.handles.inbox.report(Report::Response {
            task: self.task,
            attempt: self.attempt,
            response: Box::new(summary),
        });
        if status.is_success() {
            Ok(Some(total))
        } else {
            Err(TransferError::status(status.as_u16(), retry_after))
        }
    }

    /// Reports bytes sent to the engine as progress (`from` plus the bytes
    /// this request sent), at most every `progress_interval` (and at `end`).
    pub(crate) fn sent_progress(&self, from: u64, end: u64) -> transfer_core::SentProgress {
        let inbox = self.handles.inbox.clone();
        let (task, attempt) = (self.task, self.attempt);
        let every = self.config.progress_interval;
        let last = std::sync::Mutex::new(tokio::time::Instant::now());
        let reported = AtomicU64::new(0);
        Arc::new(move |sent: u64| {
            let sent = from.saturating_add(sent);
            let due = {
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                let due = sent == end || last.elapsed() >= every;
                if due {
                    *last = tokio::time::Instant::now();
                }
                due
            };
            // Progress never goes back, even if calls race.
            if due && reported.fetch_max(sent, Ordering::AcqRel) < sent {
                inbox.report(Report::Event {
                    task,
                    event: Event::Progress {
                        attempt,
                        received: sent,
                    },
                    ack: None,
                });
            }
        })
    }
}

/// The start of a response body, up to `limit` bytes; the rest is read and
/// dropped so the connection can be reused.
pub(crate) async fn read_bounded(
    mut body: transfer_core::ResponseBody,
    limit: usize,
) -> Result<Bytes, TransferError> {
    let mut kept = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&data[..data.len().min(room)]);
        // A hostile server's endless answer is not read forever.
        if seen > limit.saturating_add(16 << 20) {
            break;
        }
    }
    Ok(kept.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_frames_fields_then_the_file() {
        let stamp = FileStamp {
            len: 5,
            modified_ns: None,
        };
        let body = UploadBody::Multipart {
            field: "file".into(),
            file_name: "a \"b\".txt".into(),
            content_type: Some("text/plain".into()),
            fields: vec![("note".into(), "hi".into())],
        };
        let framed = frame(&body, std::path::Path::new("/x"), stamp).unwrap();
        let b = framed
            .content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap()
            .to_owned();
        let [
            BodyPart::Bytes(head),
            BodyPart::File { len: 5, .. },
            BodyPart::Bytes(tail),
        ] = &framed.body.parts[..]
        else {
            panic!("{:?}", framed.body.parts);
        };
        assert_eq!(
            std::str::from_utf8(head).unwrap(),
            format!(
                "--{b}\r\ncontent-disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
                 --{b}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a %22b%22.txt\"\r\n\
                 content-type: text/plain\r\n\r\n"
            )
        );
        assert_eq!(&tail[..], format!("\r\n--{b}--\r\n").as_bytes());
        assert_eq!(framed.body.len(), head.len() as u64 + 5 + tail.len() as u64);
    }

    #[test]
    fn boundaries_differ_each_time() {
        let a = boundary(&[]);
        let fields = vec![("x".to_owned(), a.clone())];
        let b = boundary(&fields);
        assert_ne!(a, b);
        assert!(!fields[0].1.contains(&b));
    }
}
