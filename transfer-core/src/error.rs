//! Why a transfer attempt failed, and what that means for the task.
//!
//! Every failure is a [`TransferError`] with an [`ErrorKind`]; the kind decides
//! its [`ErrorClass`]: *transient* failures are retried with backoff, *permanent*
//! ones fail the task (keeping its resume data where that helps), and *policy*
//! ones make the task wait without spending a retry.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a failure affects the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorClass {
    /// Worth retrying after a backoff (resets, timeouts, 408/429/5xx, QUIC/UDP failures).
    Transient,
    /// Retrying will not help (other 4xx, TLS failures, size limits, …).
    Permanent,
    /// The environment does not allow the transfer now: wait, do not fail.
    Policy,
}

/// Which timeout expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeoutKind {
    /// Resolving the host name.
    Dns,
    /// Establishing the TCP connection or QUIC handshake.
    Connect,
    /// The TLS handshake.
    Tls,
    /// Waiting for the response head after the request was sent.
    FirstByte,
    /// Waiting between two chunks of the body.
    Idle,
    /// The body came slower than the low-speed limit for the whole window
    /// (curl's `--speed-limit` and `--speed-time`).
    LowSpeed,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Dns => "name resolution",
            TimeoutKind::Connect => "connect",
            TimeoutKind::Tls => "TLS handshake",
            TimeoutKind::FirstByte => "first byte",
            TimeoutKind::Idle => "idle body",
            TimeoutKind::LowSpeed => "low speed",
        })
    }
}

/// Why a TLS handshake was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlsFailure {
    /// The certificate chain does not lead to a trusted root.
    UnknownIssuer,
    /// The certificate is expired or not yet valid.
    Expired,
    /// The certificate is not valid for the host name.
    NameMismatch,
    /// The certificate was revoked.
    Revoked,
    /// The server's key does not match the pinned SPKI hash for this host.
    PinMismatch,
    /// The server's certificate is malformed or uses unsupported algorithms.
    BadCertificate,
    /// The handshake failed for another reason (protocol versions, alerts, …).
    Handshake,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsFailure::UnknownIssuer => "certificate issuer is not trusted",
            TlsFailure::Expired => "certificate is expired or not yet valid",
            TlsFailure::NameMismatch => "certificate is not valid for this host",
            TlsFailure::Revoked => "certificate was revoked",
            TlsFailure::PinMismatch => "server key does not match the pinned key",
            TlsFailure::BadCertificate => "certificate is malformed or unsupported",
            TlsFailure::Handshake => "TLS handshake failed",
        })
    }
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The host name did not resolve for now: the resolver timed out, could
    /// not be reached or failed (retried).
    Dns,
    /// The host name does not exist (NXDOMAIN, or a name with no address):
    /// retrying will not make it exist, unless the session waits for
    /// connectivity (see [`Policy::judge_failure`](crate::Policy::judge_failure)).
    NoSuchHost,
    /// The connection could not be established (refused, unreachable).
    ConnectFailed,
    /// The connection broke during the exchange (reset, closed early, body cut).
    ConnectionLost,
    /// A timeout expired.
    Timeout(TimeoutKind),
    /// QUIC failed (e.g. UDP blocked); HTTP/2 is the fallback.
    Quic,
    /// The server answered with an error status.
    Status(u16),
    /// The response broke HTTP (bad framing, more bytes than declared, bad headers).
    Protocol,
    /// TLS refused the server.
    Tls(TlsFailure),
    /// The payload's length or SHA-256 does not match what was expected.
    ChecksumMismatch,
    /// The body is larger than the task's expected size or the session's limit.
    SizeLimitExceeded,
    /// More redirects than allowed, or a loop.
    TooManyRedirects,
    /// A redirect was refused: its `Location` is not an http(s) URL, or the
    /// policy refuses it (https→http, vetoed).
    RedirectRefused,
    /// Local storage is full (or over its quota); retried once space returns.
    StorageFull,
    /// Storage failed otherwise (permissions, I/O error).
    Storage,
    /// The process or the system ran out of file descriptors: retried once
    /// others are closed, while the session runs fewer transfers at once.
    TooManyOpenFiles,
    /// The body the server announced does not fit in the storage's free
    /// space: the download fails before writing it, saying how much it
    /// needs and how much is free.
    InsufficientStorage,
    /// Something the task did not write is at its destination, and the
    /// task may not replace it (it did not ask to overwrite).
    DestinationExists,
    /// Remote storage (an object store) did not answer or had a server
    /// error; retried with backoff.
    StorageUnavailable,
    /// An upload's source file changed or vanished while uploading.
    SourceChanged,
    /// There is no network and the session fails fast instead of waiting.
    NoConnectivity,
    /// There is no usable network right now; the task waits for one.
    NetworkUnavailable,
    /// The task's resource deadline passed before it finished.
    DeadlineExceeded,
    /// The request could not be built (e.g. a rewritten request is invalid).
    InvalidRequest,
    /// A proxy refused the request: it wants credentials or refused the
    /// ones given (407), or its rules forbid the destination. Permanent:
    /// asking again gets the same answer.
    ProxyRefused,
}

impl ErrorKind {
    /// The class that decides retry, failure or waiting.
    pub fn class(self) -> ErrorClass {
        use ErrorKind::*;
        match self {
            Dns | ConnectFailed | ConnectionLost | Timeout(_) | Quic | Protocol | StorageFull
            | TooManyOpenFiles | StorageUnavailable => ErrorClass::Transient,
            // 501 Not Implemented and 505 Version Not Supported will not change on retry.
            Status(408 | 425 | 429) => ErrorClass::Transient,
            Status(501 | 505) => ErrorClass::Permanent,
            Status(s) if (500..600).contains(&s) => ErrorClass::Transient,
            Status(_) => ErrorClass::Permanent,
            NetworkUnavailable => ErrorClass::Policy,
            Tls(_) | ChecksumMismatch | SizeLimitExceeded | TooManyRedirects | RedirectRefused
            | Storage | InsufficientStorage | DestinationExists | SourceChanged
            | NoConnectivity | DeadlineExceeded | InvalidRequest | ProxyRefused | NoSuchHost => {
                ErrorClass::Permanent
            }
        }
    }

    /// Whether name resolution failed: a name that does not exist, one that
    /// did not resolve for now, or a resolver that timed out.
    pub fn is_dns(self) -> bool {
        matches!(
            self,
            ErrorKind::Dns | ErrorKind::NoSuchHost | ErrorKind::Timeout(TimeoutKind::Dns)
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Dns => f.write_str("host name did not resolve"),
            ErrorKind::NoSuchHost => f.write_str("no such host"),
            ErrorKind::ConnectFailed => f.write_str("could not connect"),
            ErrorKind::ConnectionLost => f.write_str("connection lost"),
            ErrorKind::Timeout(k) => write!(f, "{k} timeout"),
            ErrorKind::Quic => f.write_str("QUIC failed"),
            ErrorKind::Status(s) => match http::StatusCode::from_u16(*s)
                .ok()
                .and_then(|c| c.canonical_reason())
            {
                Some(reason) => write!(f, "server answered {s} {reason}"),
                None => write!(f, "server answered {s}"),
            },
            ErrorKind::Protocol => f.write_str("malformed response"),
            ErrorKind::Tls(t) => write!(f, "TLS: {t}"),
            ErrorKind::ChecksumMismatch => f.write_str("checksum mismatch"),
            ErrorKind::SizeLimitExceeded => f.write_str("body larger than allowed"),
            ErrorKind::TooManyRedirects => f.write_str("too many redirects"),
            ErrorKind::RedirectRefused => f.write_str("redirect refused"),
            ErrorKind::StorageFull => f.write_str("storage full"),
            ErrorKind::Storage => f.write_str("storage error"),
            ErrorKind::InsufficientStorage => f.write_str("not enough free space"),
            ErrorKind::TooManyOpenFiles => f.write_str("too many open files"),
            ErrorKind::DestinationExists => f.write_str("destination exists"),
            ErrorKind::StorageUnavailable => f.write_str("storage unavailable"),
            ErrorKind::SourceChanged => f.write_str("upload source changed"),
            ErrorKind::NoConnectivity => f.write_str("no network connection"),
            ErrorKind::NetworkUnavailable => f.write_str("network unavailable"),
            ErrorKind::DeadlineExceeded => f.write_str("resource deadline exceeded"),
            ErrorKind::InvalidRequest => f.write_str("invalid request"),
            ErrorKind::ProxyRefused => f.write_str("refused by the proxy"),
        }
    }
}

/// How many bytes of text a server sent (a `Location`, a header) an error
/// quotes; [`echo`] cuts the rest.
pub const ECHO_LIMIT: usize = 200;

/// Text a server sent, as an error may quote it: cut to its first
/// [`ECHO_LIMIT`] bytes (saying how long it was), then escaped and quoted
/// as a Rust string literal, so control characters show as escapes. A
/// server decides what it sends; a 200 KiB `Location` must not become a
/// 200 KiB error in a terminal and in every record that keeps the error.
pub fn echo(text: &str) -> String {
    if text.len() <= ECHO_LIMIT {
        return format!("{text:?}");
    }
    let mut cut = ECHO_LIMIT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}… ({} bytes in all)", &text[..cut], text.len())
}

/// A failed transfer attempt: what went wrong, in words, and any `Retry-After`.
///
/// Serializable, because it is persisted in the task record and the completion
/// outbox. Its detail is cut to [`TransferError::MAX_DETAIL`] bytes, so no
/// error, whatever it quotes, bloats the records that keep it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct TransferError {
    kind: ErrorKind,
    detail: String,
    retry_after_ms: Option<u64>,
}

impl TransferError {
    /// The longest detail an error keeps, in bytes; [`new`](Self::new) cuts
    /// a longer one (quote server text with [`echo`], which cuts it
    /// shorter still).
    pub const MAX_DETAIL: usize = 1024;

    /// An error of `kind` with a human-readable detail (may be empty), cut
    /// to [`MAX_DETAIL`](Self::MAX_DETAIL) bytes.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > Self::MAX_DETAIL {
            const MARK: &str = "…";
            let mut cut = Self::MAX_DETAIL - MARK.len();
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push_str(MARK);
        }
        TransferError {
            kind,
            detail,
            retry_after_ms: None,
        }
    }

    /// An error status from the server, with its `Retry-After` if any.
    pub fn status(status: u16, retry_after: Option<Duration>) -> Self {
        TransferError::new(ErrorKind::Status(status), "").with_retry_after(retry_after)
    }

    /// Sets the server's `Retry-After`.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after_ms = retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The detail text.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The class of the kind.
    pub fn class(&self) -> ErrorClass {
        self.kind.class()
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_ms.map(Duration::from_millis)
    }

    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout(_))
    }

    /// Whether name resolution failed ([`ErrorKind::is_dns`]).
    pub fn is_dns(&self) -> bool {
        self.kind.is_dns()
    }

    /// Whether TLS refused the server.
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, ErrorKind::Tls(_))
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.kind, self.detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_design() {
        use ErrorKind::*;
        for k in [
            ConnectionLost,
            Timeout(TimeoutKind::Idle),
            Quic,
            Status(408),
            Status(429),
            Status(503),
        ] {
            assert_eq!(k.class(), ErrorClass::Transient, "{k:?}");
        }
        for k in [
            Status(404),
            Status(403),
            Status(501),
            Tls(TlsFailure::UnknownIssuer),
            ChecksumMismatch,
            SizeLimitExceeded,
            DestinationExists,
            InsufficientStorage,
        ] {
            assert_eq!(k.class(), ErrorClass::Permanent, "{k:?}");
        }
        assert_eq!(NetworkUnavailable.class(), ErrorClass::Policy);
    }

    #[test]
    fn a_name_that_does_not_exist_is_permanent_and_every_resolution_failure_is_dns() {
        use ErrorKind::*;
        assert_eq!(NoSuchHost.class(), ErrorClass::Permanent);
        assert_eq!(Dns.class(), ErrorClass::Transient);
        assert_eq!(Timeout(TimeoutKind::Dns).class(), ErrorClass::Transient);
        for k in [NoSuchHost, Dns, Timeout(TimeoutKind::Dns)] {
            assert!(k.is_dns(), "{k:?}");
            assert!(TransferError::new(k, "x").is_dns(), "{k:?}");
        }
        for k in [ConnectFailed, Timeout(TimeoutKind::Connect), Status(404)] {
            assert!(!k.is_dns(), "{k:?}");
        }
    }

    #[test]
    fn echoed_text_and_details_are_cut() {
        assert_eq!(echo("http://a/\n"), "\"http://a/\\n\"");
        let long = "é".repeat(1000);
        let quoted = echo(&long);
        assert!(quoted.starts_with("\"éé") && quoted.ends_with("… (2000 bytes in all)"));
        assert!(quoted.len() < ECHO_LIMIT + 40, "{quoted}");
        let e = TransferError::new(ErrorKind::Protocol, "é".repeat(1000));
        assert!(e.detail().len() <= TransferError::MAX_DETAIL);
        assert!(e.detail().ends_with("é…"));
        let short = TransferError::new(ErrorKind::Protocol, "short");
        assert_eq!(short.detail(), "short");
    }

    #[test]
    fn displays_in_words() {
        let e = TransferError::status(503, Some(Duration::from_secs(2)));
        assert_eq!(e.to_string(), "server answered 503 Service Unavailable");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        let t = TransferError::new(ErrorKind::Tls(TlsFailure::NameMismatch), "localhost");
        assert_eq!(
            t.to_string(),
            "TLS: certificate is not valid for this host: localhost"
        );
    }
}
