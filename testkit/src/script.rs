//! Scripted faults: what goes wrong, and for which requests to a path.

use std::time::Duration;

use http::StatusCode;

/// One thing that goes wrong with a response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Send the head and `k` body bytes, then break the connection (HTTP/1.1)
    /// or reset the stream (HTTP/2): the client sees an error, never a clean end.
    CutAfter(u64),
    /// Send the head and `k` body bytes, then drop the whole connection:
    /// over HTTP/3 the QUIC connection is closed (every stream on it ends);
    /// over HTTP/1.1 it is [`CutAfter`](Fault::CutAfter); over HTTP/2 the
    /// stream is reset.
    DropConnectionAfter(u64),
    /// Send `after` body bytes, pause for `duration`, then go on.
    Stall {
        /// Body bytes before the pause.
        after: u64,
        /// How long to pause.
        duration: Duration,
    },
    /// Answer with this status, an optional `Retry-After`, and a short text body.
    Status {
        /// The status code.
        code: StatusCode,
        /// The `Retry-After` value, verbatim.
        retry_after: Option<String>,
    },
    /// Bump the resource's version before answering: new ETag, new
    /// Last-Modified, new bytes. Lasts for all later requests.
    ChangeRepresentation,
    /// Answer 200 with the whole body even when a range is asked.
    IgnoreRange,
    /// Send neither `ETag` nor `Last-Modified`: nothing tells one version
    /// of the resource from another. With
    /// [`ChangeRepresentation`](Fault::ChangeRepresentation) the bytes
    /// change (same length) and no header says so.
    NoValidators,
    /// Declare a `Content-Length` that is `declared_extra` bytes off the
    /// bytes sent (positive: fewer bytes arrive than declared, then the
    /// connection closes; negative: more bytes arrive than declared).
    /// Served only on the raw HTTP/1.1 listener ([`Origin::raw_url`](crate::Origin::raw_url)).
    LieLength {
        /// Declared minus actual length.
        declared_extra: i64,
    },
    /// Pace the body at this many bytes per second.
    RateLimit(u64),
    /// Declare no length: no `Content-Length` (HTTP/1.1 sends the body
    /// chunked), so the client learns the size only when the body ends, as
    /// with an endless body.
    NoLength,
    /// A resumable upload to this path (`/resumable/…`): drop the
    /// connection when the upload reaches this offset, once per upload.
    CutUploadAt(u64),
    /// A resumable upload to this path (`/resumable/…`): answer its
    /// creation with this `Location` instead of the resource's, as a
    /// hostile or broken server might.
    UploadLocation(String),
    /// Add response headers totalling about this many bytes.
    OversizedHeaders(usize),
    /// Send an RFC 9530 `Repr-Digest: sha-256=:…:` of the whole
    /// representation with every 200 or 206: the right digest (`true`) or
    /// a wrong one (`false`).
    ReprDigest(bool),
}

/// Which requests to a path a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Only the `n`th request (1-based).
    Nth(u64),
    /// The `n`th request and all after it.
    From(u64),
    /// Every request.
    Always,
}

impl When {
    fn matches(self, n: u64) -> bool {
        match self {
            When::Nth(k) => n == k,
            When::From(k) => n >= k,
            When::Always => true,
        }
    }
}

/// The faults of one path: rules tried in order, all that match apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    rules: Vec<(When, Fault)>,
}

impl Script {
    /// An empty script (no faults).
    pub fn new() -> Self {
        Script::default()
    }

    /// Adds `fault` for the `n`th request (1-based).
    pub fn nth(mut self, n: u64, fault: Fault) -> Self {
        self.rules.push((When::Nth(n), fault));
        self
    }

    /// Adds `fault` for the `n`th request and every one after it.
    pub fn from(mut self, n: u64, fault: Fault) -> Self {
        self.rules.push((When::From(n), fault));
        self
    }

    /// Adds `fault` for every request.
    pub fn always(mut self, fault: Fault) -> Self {
        self.rules.push((When::Always, fault));
        self
    }

    /// A status sequence: the first request gets `statuses[0]`, the second
    /// `statuses[1]`, …; requests after the sequence are served normally.
    pub fn statuses(mut self, statuses: &[(u16, Option<&str>)]) -> Self {
        for (i, (code, retry_after)) in statuses.iter().enumerate() {
            let code = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let fault = Fault::Status {
                code,
                retry_after: retry_after.map(str::to_owned),
            };
            self.rules.push((When::Nth(i as u64 + 1), fault));
        }
        self
    }

    /// The faults for the `n`th request.
    pub(crate) fn faults_for(&self, n: u64) -> Vec<Fault> {
        self.rules
            .iter()
            .filter(|(w, _)| w.matches(n))
            .map(|(_, f)| f.clone())
            .collect()
    }
}

/// The faults that shape one response body.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BodyFaults {
    pub(crate) cut_after: Option<u64>,
    /// The cut drops the whole connection.
    pub(crate) drop_connection: bool,
    pub(crate) stall: Option<(u64, Duration)>,
    pub(crate) rate: Option<u64>,
    /// No length is declared (see [`Fault::NoLength`]).
    pub(crate) no_length: bool,
}

impl BodyFaults {
    pub(crate) fn from(faults: &[Fault]) -> Self {
        let mut b = BodyFaults::default();
        for f in faults {
            match f {
                Fault::CutAfter(k) => b.cut_after = Some(*k),
                Fault::DropConnectionAfter(k) => {
                    b.cut_after = Some(*k);
                    b.drop_connection = true;
                }
                Fault::Stall { after, duration } => b.stall = Some((*after, *duration)),
                Fault::RateLimit(r) => b.rate = Some((*r).max(1)),
                Fault::NoLength => b.no_length = true,
                _ => {}
            }
        }
        b
    }
}
