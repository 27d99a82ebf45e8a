//! Resume data, and the decisions around a resumed download: whether to
//! ask for a range at all ([`plan_range`]), and what to do with the answer
//! ([`judge_response`]).
//!
//! A download resumes with `Range` from its durable offset and `If-Range`
//! with its validator. The answer is appended only when it is provably the
//! same representation starting at the right byte; a 200, a changed
//! validator or a bad `Content-Range` restarts from zero into a fresh
//! partial. Two representations are never spliced.
//!
//! A range is trusted only under a strong validator; a partial without one
//! starts again from zero. [`plan_range`] says which validators count and
//! why this, rather than comparing an overlap, was chosen.

use std::path::PathBuf;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, TransferError};
use crate::time::Timestamp;

/// What identifies one representation of a resource across requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Validator {
    /// A strong entity tag, with its quotes (`"abc"`).
    StrongETag(String),
    /// A weak entity tag, with its quotes and without `W/` (`"abc"`). Only
    /// used when the session allows weak validators; never sent in `If-Range`
    /// (RFC 9110 forbids it), so the response's tag is compared instead.
    WeakETag(String),
    /// A `Last-Modified` HTTP-date, exactly as the server sent it.
    LastModified(String),
}

impl Validator {
    /// The validator a response carries: its strong `ETag`, else a weak one
    /// when `allow_weak`, else its `Last-Modified`.
    pub fn from_headers(headers: &HeaderMap, allow_weak: bool) -> Option<Validator> {
        if let Some(tag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) {
            let tag = tag.trim();
            if let Some(weak) = tag.strip_prefix("W/") {
                if allow_weak && is_quoted(weak) {
                    return Some(Validator::WeakETag(weak.to_owned()));
                }
            } else if is_quoted(tag) {
                return Some(Validator::StrongETag(tag.to_owned()));
            }
        }
        headers
            .get(LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .filter(|v| httpdate::parse_http_date(v).is_ok())
            .map(|v| Validator::LastModified(v.trim().to_owned()))
    }

    /// The `If-Range` value to send, if this validator may be sent there.
    pub fn if_range(&self) -> Option<HeaderValue> {
        match self {
            Validator::StrongETag(t) | Validator::LastModified(t) => HeaderValue::from_str(t).ok(),
            Validator::WeakETag(_) => None,
        }
    }

    /// Whether `other` names the same representation (same kind, same value).
    pub fn same_as(&self, other: &Validator) -> bool {
        self == other
    }

    /// Whether bytes held under this validator may be continued with a
    /// range: a strong ETag or a `Last-Modified` date always, a weak ETag
    /// only when `allow_weak` (see [`plan_range`] for why).
    pub fn trusts_range(&self, allow_weak: bool) -> bool {
        match self {
            Validator::StrongETag(_) | Validator::LastModified(_) => true,
            Validator::WeakETag(_) => allow_weak,
        }
    }
}

fn is_quoted(s: &str) -> bool {
    s.len() >= 2 && s.starts_with('"') && s.ends_with('"') && !s[1..s.len() - 1].contains('"')
}

/// One part of an object-store multipart upload that holds payload bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// The part number (1-based, as S3).
    pub number: u32,
    /// The store's identifier for the uploaded part (S3's ETag).
    pub id: String,
    /// Bytes in the part.
    pub len: u64,
}

/// The protocol a resumable upload speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResumableProtocol {
    /// IETF "Resumable Uploads for HTTP", draft-ietf-httpbis-resumable-upload-12
    /// (`Upload-Draft-Interop-Version: 9`); a plain upload when the server
    /// does not offer it.
    #[default]
    IetfDraft,
    /// tus 1.0.0 (core protocol, with the creation and termination
    /// extensions).
    Tus,
}

impl ResumableProtocol {
    /// The interop version of the IETF draft this build speaks.
    pub const IETF_INTEROP_VERSION: u32 = 9;
}

/// Where a task's partial payload lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartialLocation {
    /// A partial file (store-fs keeps it beside the destination).
    File(PathBuf),
    /// An object-store multipart upload in progress.
    Multipart {
        /// The destination key.
        key: String,
        /// The multipart upload's identifier.
        upload_id: String,
        /// The parts already stored, in order.
        parts: Vec<PartRecord>,
        /// A random tag the finished object carries (as metadata), so a
        /// process that finds this record after another completed the
        /// upload, and died before recording it, knows the object is this
        /// upload's.
        #[serde(default)]
        tag: Option<String>,
    },
    /// A resumable upload's resource on the server, which holds the bytes
    /// it has received (the durable offset is what it last confirmed).
    UploadResource {
        /// The upload resource's absolute URL.
        url: String,
        /// The protocol it speaks.
        protocol: ResumableProtocol,
    },
}

/// One attempt in a task's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt number.
    pub attempt: u32,
    /// When it started.
    pub started_at: Timestamp,
    /// The durable offset it started from.
    pub from_offset: u64,
    /// How it ended, when it failed.
    pub error: Option<TransferError>,
}

/// Everything needed to continue a download where it stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeData {
    /// The representation the partial belongs to.
    pub validator: Option<Validator>,
    /// The representation's total length, when known.
    pub total_length: Option<u64>,
    /// Bytes of the partial that are durable: data synced, then this recorded.
    pub durable_offset: u64,
    /// Where the partial is.
    pub partial: Option<PartialLocation>,
    /// The most recent attempts (at most [`ResumeData::HISTORY`]).
    pub attempts: Vec<AttemptRecord>,
}

/// Why decoding persisted data (resume data, records, completions) failed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The data was written by a newer format version.
    #[error("format version {found} is not supported (this build reads up to {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The bytes are not what was expected.
    #[error("malformed data: {0}")]
    Malformed(#[from] serde_json::Error),
}

#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    v: u32,
    #[serde(flatten)]
    data: T,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

/// Encodes `data` with a format version, as JSON.
pub(crate) fn encode_versioned<T: Serialize>(v: u32, data: &T) -> Vec<u8> {
    // Serializing plain data structures to a Vec cannot fail: no maps with
    // non-string keys, no failing Serialize impls.
    serde_json::to_vec(&Versioned { v, data }).unwrap_or_default()
}

/// Decodes what [`encode_versioned`] wrote, refusing versions above `supported`.
pub(crate) fn decode_versioned<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    supported: u32,
) -> Result<T, DecodeError> {
    let check = |v: u32| {
        if v == 0 || v > supported {
            return Err(DecodeError::UnsupportedVersion {
                found: v,
                supported,
            });
        }
        Ok(())
    };
    if let Some(v) = leading_version(bytes) {
        // As `encode_versioned` writes it, the version first: the data is
        // read in the same pass (it ignores the `v` it does not have),
        // without serde's flatten, which would buffer every field first.
        check(v)?;
        return Ok(serde_json::from_slice(bytes)?);
    }
    let VersionOnly { v } = serde_json::from_slice(bytes)?;
    check(v)?;
    let Versioned { data, .. } = serde_json::from_slice::<Versioned<T>>(bytes)?;
    Ok(data)
}

/// The version at the very start of `bytes` (`{"v":N,`), if it is there.
fn leading_version(bytes: &[u8]) -> Option<u32> {
    let rest = bytes.strip_prefix(b"{\"v\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || rest[end] != b',' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

impl ResumeData {
    /// The format version [`encode`](Self::encode) writes.
    pub const VERSION: u32 = 1;
    /// How many attempts the history keeps.
    pub const HISTORY: usize = 16;

    /// Serializes to bytes (versioned JSON), e.g. to hand to another process.
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(Self::VERSION, self)
    }

    /// Reads what [`encode`](Self::encode) wrote.
    pub fn decode(bytes: &[u8]) -> Result<ResumeData, DecodeError> {
        decode_versioned(bytes, Self::VERSION)
    }

    /// The offset the next request should start at.
    pub fn resume_offset(&self) -> u64 {
        self.durable_offset
    }

    /// Appends an attempt, keeping the newest [`HISTORY`](Self::HISTORY).
    pub fn record_attempt(&mut self, record: AttemptRecord) {
        if self.attempts.len() >= Self::HISTORY {
            self.attempts.remove(0);
        }
        self.attempts.push(record);
    }
}

/// A parsed `Content-Range: bytes first-last/complete` (complete may be `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte position.
    pub first: u64,
    /// Last byte position (inclusive).
    pub last: u64,
    /// The complete length, when given.
    pub complete: Option<u64>,
}

impl ContentRange {
    /// Parses a satisfied byte range. Refuses anything malformed or
    /// inconsistent (`last < first`, `last >= complete`).
    pub fn parse(value: &str) -> Option<ContentRange> {
        let rest = value.trim().strip_prefix("bytes ")?;
        let (range, complete) = rest.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let (first, last) = (num(first)?, num(last)?);
        let complete = if complete.trim() == "*" {
            None
        } else {
            Some(num(complete)?)
        };
        if last < first || complete.is_some_and(|c| last >= c) {
            return None;
        }
        Some(ContentRange {
            first,
            last,
            complete,
        })
    }

    /// Parses the complete length of an unsatisfied range (`bytes */N`, sent with 416).
    pub fn parse_unsatisfied(value: &str) -> Option<u64> {
        let n = value.trim().strip_prefix("bytes */")?.trim();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()
    }

    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Always false: a satisfied range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Why a download starts again from zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartReason {
    /// The server answered 200 to a range request.
    RangeIgnored,
    /// The representation changed (different validator or length).
    ValidatorChanged,
    /// The `Content-Range` is malformed or does not start at the offset asked.
    BadContentRange,
    /// The server says the range is not satisfiable, and the partial is not complete.
    RangeNotSatisfiable,
    /// The payload failed verification and is fetched again.
    ChecksumMismatch,
    /// The server no longer has the upload (or has less of it than it
    /// confirmed): it is sent again from its start.
    UploadLost,
    /// The partial was recorded without a strong validator (the server sent
    /// no ETag or Last-Modified, or only a weak ETag the session does not
    /// trust), so nothing proves the server still has those bytes: the
    /// download starts again rather than risk splicing two versions.
    NoStrongValidator,
}

impl std::fmt::Display for RestartReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestartReason::RangeIgnored => "the server ignored the range",
            RestartReason::ValidatorChanged => "the resource changed",
            RestartReason::BadContentRange => "the server sent a bad Content-Range",
            RestartReason::RangeNotSatisfiable => "the server refused the range",
            RestartReason::ChecksumMismatch => "the payload failed verification",
            RestartReason::UploadLost => "the server lost the upload",
            RestartReason::NoStrongValidator => {
                "the server sent no validator to resume against (no ETag or Last-Modified)"
            }
        })
    }
}

/// How a download's next request asks for its bytes, decided by
/// [`plan_range`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangePlan {
    /// Nothing is held: ask for the whole representation, without `Range`.
    Whole,
    /// Ask for the bytes from `offset` (`Range: bytes=offset-`).
    From {
        /// The first byte asked: the partial's durable end.
        offset: u64,
        /// The `If-Range` to send: the validator, when it may go there (a
        /// weak tag may not; the answer's tag is compared instead).
        if_range: Option<HeaderValue>,
    },
    /// The bytes held cannot be trusted: discard the partial (reporting the
    /// restart) and ask for the whole representation.
    Restart {
        /// Why.
        reason: RestartReason,
    },
}

/// Decides how to ask for the rest of a download whose partial holds
/// `offset` bytes of the representation `resume` describes: a range only
/// under a validator that [trusts ranges](Validator::trusts_range), else a
/// restart from zero.
///
/// # A range only under a strong validator
///
/// Bytes already held are continued only when the partial was recorded
/// with a validator that names one representation byte for byte, and the
/// answer carries the same one:
///
/// - a strong `ETag`, or a `Last-Modified` date: the two validators RFC 9110
///   §13.1.5 lets `If-Range` carry. `Last-Modified` has a one-second
///   resolution; RFC 9110 accepts that for `If-Range`, and an expected
///   checksum or a `Repr-Digest` still catches a file rewritten twice in
///   one second with the same length;
/// - a weak `W/` tag only when the session allows weak tags
///   (`allow_weak_etags`): a weak tag says two versions are equivalent, not
///   identical, and it may not go in `If-Range`, so the answer's tag is
///   compared instead.
///
/// A partial with no such validator (the server sent neither header, or
/// only a weak tag) is not resumed at all: it is discarded and the request
/// asks for the whole body, reported as a restart
/// ([`RestartReason::NoStrongValidator`]). Without a validator a bare
/// `Range` would be answered from whatever the server holds now, and a file
/// that changed with the same length would come back as the start of one
/// version and the rest of the other.
///
/// Verifying an overlap (asking again for the last bytes held and comparing
/// them) was not chosen: equal bytes at the end of the partial say nothing
/// about the bytes before them, so a change elsewhere in the file would
/// still be spliced, and it costs an extra request on every resume. The
/// price of restarting is fetching the bytes already held again, paid only
/// with servers that name no version.
pub fn plan_range(resume: &ResumeData, offset: u64, allow_weak: bool) -> RangePlan {
    if offset == 0 {
        return RangePlan::Whole;
    }
    match &resume.validator {
        Some(v) if v.trusts_range(allow_weak) => RangePlan::From {
            offset,
            if_range: v.if_range(),
        },
        _ => RangePlan::Restart {
            reason: RestartReason::NoStrongValidator,
        },
    }
}

/// What to do with a response, decided by [`judge_response`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Continuation {
    /// Append this body to the partial at `offset` (the offset asked).
    Append {
        /// Where the body's first byte goes.
        offset: u64,
        /// The representation's total length, when known.
        total: Option<u64>,
        /// The response's validator.
        validator: Option<Validator>,
    },
    /// Discard the partial and write this body (a full 200) from zero.
    RestartWithBody {
        /// Why.
        reason: RestartReason,
        /// The total length, when known.
        total: Option<u64>,
        /// The response's validator.
        validator: Option<Validator>,
    },
    /// Discard the partial and this body; request again from zero without `Range`.
    Rerequest {
        /// Why.
        reason: RestartReason,
    },
    /// The server says the partial already holds the whole representation:
    /// verify and commit it without a body.
    AlreadyComplete {
        /// The total length.
        total: u64,
    },
}

/// Decides what to do with the response to a request for bytes from
/// `offset` of a representation described by `resume` (`offset` is 0 for a
/// fresh request). Bytes after `offset` are appended only under a validator
/// that [trusts ranges](Validator::trusts_range) and that the answer
/// repeats. Error statuses become a [`TransferError`] (with the server's
/// `Retry-After`, resolved against `now`).
pub fn judge_response(
    resume: &ResumeData,
    offset: u64,
    status: StatusCode,
    headers: &HeaderMap,
    allow_weak: bool,
    now: Timestamp,
) -> Result<Continuation, TransferError> {
    let validator = Validator::from_headers(headers, allow_weak);
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let content_length = header(CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    // The validator the bytes held were recorded with, if it may vouch for
    // a range; `None` for a fresh request.
    let trusted = resume
        .validator
        .as_ref()
        .filter(|v| offset > 0 && v.trusts_range(allow_weak));
    let same = trusted.is_some_and(|old| validator.as_ref().is_some_and(|new| old.same_as(new)));
    match status {
        StatusCode::OK => {
            if offset == 0 {
                Ok(Continuation::Append {
                    offset: 0,
                    total: content_length,
                    validator,
                })
            } else {
                Ok(Continuation::RestartWithBody {
                    reason: RestartReason::RangeIgnored,
                    total: content_length,
                    validator,
                })
            }
        }
        StatusCode::PARTIAL_CONTENT => {
            let Some(range) = header(CONTENT_RANGE).and_then(ContentRange::parse) else {
                return Ok(Continuation::Rerequest {
                    reason: RestartReason::BadContentRange,
                });
            };
            if range.first != offset || content_length.is_some_and(|n| n != range.len()) {
                return Ok(Continuation::Rerequest {
                    reason: RestartReason::BadContentRange,
                });
            }
            if offset > 0 && trusted.is_none() {
                return Ok(Continuation::Rerequest {
                    reason: RestartReason::NoStrongValidator,
                });
            }
            let length_changed = matches!(
                (resume.total_length, range.complete),
                (Some(a), Some(b)) if a != b
            );
            // A validator that changed, or that the answer lacks, cannot
            // prove sameness.
            if offset > 0 && (!same || length_changed) {
                return Ok(Continuation::Rerequest {
                    reason: RestartReason::ValidatorChanged,
                });
            }
            Ok(Continuation::Append {
                offset,
                total: range.complete.or(resume.total_length),
                validator,
            })
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let complete = header(CONTENT_RANGE).and_then(ContentRange::parse_unsatisfied);
            if offset > 0 && trusted.is_none() {
                return Ok(Continuation::Rerequest {
                    reason: RestartReason::NoStrongValidator,
                });
            }
            match complete {
                Some(total)
                    if offset > 0
                        && total == offset
                        && same
                        && resume.total_length.is_none_or(|t| t == total) =>
                {
                    Ok(Continuation::AlreadyComplete { total })
                }
                _ => Ok(Continuation::Rerequest {
                    reason: RestartReason::RangeNotSatisfiable,
                }),
            }
        }
        s => {
            let retry_after = header(http::header::RETRY_AFTER)
                .and_then(|v| crate::retry::parse_retry_after(v, now));
            // An error status says itself ("server answered 404 Not
            // Found"); a success or redirect here is named in the detail.
            let (kind, detail) = if s.is_informational() || s.is_redirection() || s.is_success() {
                // Redirects are the transport's job and 1xx never reach us; any
                // other success code cannot be spliced into a download.
                (ErrorKind::Protocol, format!("unexpected status {s}"))
            } else {
                (ErrorKind::Status(s.as_u16()), String::new())
            };
            Err(TransferError::new(kind, detail).with_retry_after(retry_after))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn validators_prefer_strong_etags_and_refuse_weak_unless_allowed() {
        let h = headers(&[
            ("etag", "W/\"x\""),
            ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        assert_eq!(
            Validator::from_headers(&h, false),
            Some(Validator::LastModified(
                "Wed, 21 Oct 2015 07:28:00 GMT".into()
            ))
        );
        assert_eq!(
            Validator::from_headers(&h, true),
            Some(Validator::WeakETag("\"x\"".into()))
        );
        assert_eq!(Validator::WeakETag("\"x\"".into()).if_range(), None);
        let h = headers(&[("etag", "\"abc\"")]);
        let v = Validator::from_headers(&h, false).unwrap();
        assert_eq!(v.if_range().unwrap(), "\"abc\"");
        assert_eq!(
            Validator::from_headers(&headers(&[("etag", "abc")]), false),
            None
        );
    }

    #[test]
    fn content_range_parsing_is_strict() {
        assert_eq!(
            ContentRange::parse("bytes 10-19/100"),
            Some(ContentRange {
                first: 10,
                last: 19,
                complete: Some(100)
            })
        );
        assert_eq!(ContentRange::parse("bytes 10-19/*").unwrap().complete, None);
        for bad in [
            "bytes 19-10/100",
            "bytes 10-100/100",
            "bytes -1-5/10",
            "items 1-2/3",
            "bytes 1-2",
            "bytes +1-2/9",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
        assert_eq!(ContentRange::parse_unsatisfied("bytes */100"), Some(100));
    }

    fn resume(etag: &str, total: u64, offset: u64) -> ResumeData {
        ResumeData {
            validator: Some(Validator::StrongETag(etag.into())),
            total_length: Some(total),
            durable_offset: offset,
            ..ResumeData::default()
        }
    }

    #[test]
    fn judges_resumed_responses() {
        let now = Timestamp::EPOCH;
        let r = resume("\"a\"", 100, 40);
        let ok206 = headers(&[
            ("etag", "\"a\""),
            ("content-range", "bytes 40-99/100"),
            ("content-length", "60"),
        ]);
        assert_eq!(
            judge_response(&r, 40, StatusCode::PARTIAL_CONTENT, &ok206, false, now).unwrap(),
            Continuation::Append {
                offset: 40,
                total: Some(100),
                validator: r.validator.clone()
            }
        );
        let changed = headers(&[("etag", "\"b\""), ("content-range", "bytes 40-99/100")]);
        assert_eq!(
            judge_response(&r, 40, StatusCode::PARTIAL_CONTENT, &changed, false, now).unwrap(),
            Continuation::Rerequest {
                reason: RestartReason::ValidatorChanged
            }
        );
        let wrong_start = headers(&[("etag", "\"a\""), ("content-range", "bytes 0-99/100")]);
        assert_eq!(
            judge_response(
                &r,
                40,
                StatusCode::PARTIAL_CONTENT,
                &wrong_start,
                false,
                now
            )
            .unwrap(),
            Continuation::Rerequest {
                reason: RestartReason::BadContentRange
            }
        );
        let full = headers(&[("etag", "\"a\""), ("content-length", "100")]);
        assert!(matches!(
            judge_response(&r, 40, StatusCode::OK, &full, false, now).unwrap(),
            Continuation::RestartWithBody {
                reason: RestartReason::RangeIgnored,
                total: Some(100),
                ..
            }
        ));
        let done = headers(&[("etag", "\"a\""), ("content-range", "bytes */100")]);
        let r100 = resume("\"a\"", 100, 100);
        assert_eq!(
            judge_response(
                &r100,
                100,
                StatusCode::RANGE_NOT_SATISFIABLE,
                &done,
                false,
                now
            )
            .unwrap(),
            Continuation::AlreadyComplete { total: 100 }
        );
        assert_eq!(
            judge_response(&r, 40, StatusCode::RANGE_NOT_SATISFIABLE, &done, false, now).unwrap(),
            Continuation::Rerequest {
                reason: RestartReason::RangeNotSatisfiable
            }
        );
        let busy = headers(&[("retry-after", "7")]);
        let e =
            judge_response(&r, 40, StatusCode::SERVICE_UNAVAILABLE, &busy, false, now).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Status(503));
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(7)));
    }

    /// A partial is continued with a range only under a validator that
    /// vouches for it; one without is discarded before anything is asked.
    #[test]
    fn a_partial_without_a_strong_validator_is_not_continued() {
        let held = |validator| ResumeData {
            validator,
            total_length: Some(100),
            durable_offset: 40,
            ..ResumeData::default()
        };
        let restart = RangePlan::Restart {
            reason: RestartReason::NoStrongValidator,
        };
        assert_eq!(plan_range(&held(None), 40, false), restart);
        assert_eq!(plan_range(&held(None), 40, true), restart);
        assert_eq!(plan_range(&held(None), 0, false), RangePlan::Whole);
        let weak = held(Some(Validator::WeakETag("\"w\"".into())));
        assert_eq!(plan_range(&weak, 40, false), restart);
        assert_eq!(
            plan_range(&weak, 40, true),
            RangePlan::From {
                offset: 40,
                if_range: None
            },
            "a weak tag is never sent in If-Range"
        );
        let strong = held(Some(Validator::StrongETag("\"s\"".into())));
        assert_eq!(
            plan_range(&strong, 40, false),
            RangePlan::From {
                offset: 40,
                if_range: Some(HeaderValue::from_static("\"s\""))
            }
        );
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let dated = held(Some(Validator::LastModified(date.into())));
        assert_eq!(
            plan_range(&dated, 40, false),
            RangePlan::From {
                offset: 40,
                if_range: Some(HeaderValue::from_static(date))
            }
        );
    }

    /// A 206 at an offset is trusted only under a strong validator the
    /// partial was recorded with and the answer repeats: with none, a
    /// resource that changed with the same length would be spliced.
    #[test]
    fn a_range_without_a_strong_validator_is_not_trusted() {
        let now = Timestamp::EPOCH;
        let bare = ResumeData {
            validator: None,
            total_length: Some(100),
            durable_offset: 40,
            ..ResumeData::default()
        };
        let bare206 = headers(&[
            ("content-range", "bytes 40-99/100"),
            ("content-length", "60"),
        ]);
        for allow_weak in [false, true] {
            let judged = judge_response(
                &bare,
                40,
                StatusCode::PARTIAL_CONTENT,
                &bare206,
                allow_weak,
                now,
            )
            .unwrap();
            assert!(
                matches!(judged, Continuation::Rerequest { .. }),
                "no validator, allow_weak {allow_weak}: {judged:?}"
            );
        }
        let done = headers(&[("content-range", "bytes */100")]);
        let whole = ResumeData {
            durable_offset: 100,
            ..bare.clone()
        };
        assert!(matches!(
            judge_response(
                &whole,
                100,
                StatusCode::RANGE_NOT_SATISFIABLE,
                &done,
                false,
                now
            )
            .unwrap(),
            Continuation::Rerequest { .. }
        ));

        // A weak tag counts only while the session allows weak tags.
        let weak = ResumeData {
            validator: Some(Validator::WeakETag("\"w\"".into())),
            ..bare.clone()
        };
        let weak206 = headers(&[
            ("etag", "W/\"w\""),
            ("content-range", "bytes 40-99/100"),
            ("content-length", "60"),
        ]);
        assert!(matches!(
            judge_response(&weak, 40, StatusCode::PARTIAL_CONTENT, &weak206, false, now).unwrap(),
            Continuation::Rerequest { .. }
        ));
        assert!(matches!(
            judge_response(&weak, 40, StatusCode::PARTIAL_CONTENT, &weak206, true, now).unwrap(),
            Continuation::Append { offset: 40, .. }
        ));

        // Last-Modified is a validator If-Range may carry (RFC 9110 §13.1.5).
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let dated = ResumeData {
            validator: Some(Validator::LastModified(date.into())),
            ..bare.clone()
        };
        let dated206 = headers(&[
            ("last-modified", date),
            ("content-range", "bytes 40-99/100"),
            ("content-length", "60"),
        ]);
        assert!(matches!(
            judge_response(
                &dated,
                40,
                StatusCode::PARTIAL_CONTENT,
                &dated206,
                false,
                now
            )
            .unwrap(),
            Continuation::Append { offset: 40, .. }
        ));
        // A validator the partial has but the answer lacks proves nothing.
        assert!(matches!(
            judge_response(
                &dated,
                40,
                StatusCode::PARTIAL_CONTENT,
                &bare206,
                false,
                now
            )
            .unwrap(),
            Continuation::Rerequest { .. }
        ));
    }
}
