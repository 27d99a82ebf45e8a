//! What a task is asked to do: the request, where the bytes go or come from,
//! and the constraints under which it may run.
//!
//! Specs are validated when built ([`TaskSpec::download`], [`TaskSpec::upload`]),
//! so a bad URL or priority is refused at enqueue with a [`SpecError`] and never
//! reaches the scheduler.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde::{Deserialize, Serialize};

use crate::serde_http;
use crate::time::Timestamp;

/// Why a spec, an identifier or a piece of configuration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The URL does not parse.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's scheme is not `http` or `https`.
    #[error("unsupported URL scheme {scheme:?} in {url:?}: only http and https are allowed")]
    UnsupportedScheme {
        /// The URL as given.
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// The URL has no host.
    #[error("URL {0:?} has no host")]
    MissingHost(String),
    /// The priority is not a number in 0.0–1.0.
    #[error("priority {0} is outside 0.0–1.0")]
    InvalidPriority(f32),
    /// A header name or value is not valid HTTP.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The method cannot carry the task (e.g. an upload with GET).
    #[error("method {method} cannot be used for {what}")]
    InvalidMethod {
        /// The method given.
        method: String,
        /// The kind of task.
        what: &'static str,
    },
    /// A SHA-256 digest is not 64 hex digits.
    #[error("invalid SHA-256 digest {0:?}: expected 64 hex digits")]
    InvalidDigest(String),
    /// HTTP/3 is required for a plain-http URL: HTTP/3 runs only over QUIC,
    /// which carries TLS, so only https URLs can have it.
    #[error("HTTP/3 needs an https URL (HTTP/3 runs over QUIC with TLS): {url}")]
    Http3NeedsHttps {
        /// The URL.
        url: String,
    },
    /// A destination or source path is empty.
    #[error("empty path for {0}")]
    EmptyPath(&'static str),
    /// A session identifier is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid session identifier {0:?}: use 1–128 of A-Z a-z 0-9 . - _")]
    InvalidSessionId(String),
    /// A task or event identifier is not 16 hex digits.
    #[error("invalid identifier {0:?}: expected 16 hex digits")]
    InvalidId(String),
}

/// The port of an http(s) URL: the one it names, else the scheme's default
/// (443 for `https`, 80 otherwise). A port that does not fit in 16 bits is
/// refused in words ("port 99999 is out of range"): [`Uri::port_u16`] reads
/// it as no port at all, which would quietly mean the default.
pub fn uri_port(uri: &Uri) -> Result<u16, String> {
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    // `Uri::port` too hides a port that does not parse: read the authority.
    let Some(authority) = uri.authority() else {
        return Ok(default);
    };
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, h)| h);
    let after_host = host_port
        .rfind(']')
        .map_or(host_port, |i| &host_port[i + 1..]);
    match after_host.rsplit_once(':') {
        None | Some((_, "")) => Ok(default),
        Some((_, port)) => port
            .parse::<u16>()
            .map_err(|_| format!("port {port} is out of range")),
    }
}

/// A validated `http`/`https` URL with a host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Url(Uri);

impl Url {
    /// Parses and validates a URL: it must be absolute, `http` or `https`, with a host.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let uri: Uri = s
            .parse()
            .map_err(|e: http::uri::InvalidUri| SpecError::InvalidUrl {
                url: s.to_owned(),
                reason: e.to_string(),
            })?;
        Url::try_from_uri(uri, s)
    }

    /// Validates an already parsed [`Uri`].
    pub fn from_uri(uri: Uri) -> Result<Self, SpecError> {
        let text = uri.to_string();
        Url::try_from_uri(uri, &text)
    }

    fn try_from_uri(uri: Uri, text: &str) -> Result<Self, SpecError> {
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(other) => {
                return Err(SpecError::UnsupportedScheme {
                    url: text.to_owned(),
                    scheme: other.to_owned(),
                });
            }
            None => {
                return Err(SpecError::InvalidUrl {
                    url: text.to_owned(),
                    reason: "not an absolute URL (no scheme)".into(),
                });
            }
        }
        if let Err(reason) = uri_port(&uri) {
            return Err(SpecError::InvalidUrl {
                url: text.to_owned(),
                reason,
            });
        }
        match uri.host() {
            Some(h) if !h.is_empty() => Ok(Url(uri)),
            _ => Err(SpecError::MissingHost(text.to_owned())),
        }
    }

    /// The URL as an [`http::Uri`].
    pub fn as_uri(&self) -> &Uri {
        &self.0
    }

    /// The host (without brackets for IPv6 literals).
    pub fn host(&self) -> &str {
        self.0
            .host()
            .map_or("", |h| h.trim_start_matches('[').trim_end_matches(']'))
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        // Checked when parsed: an explicit port fits in 16 bits.
        uri_port(&self.0).unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.0.scheme_str() == Some("https")
    }

    /// Whether the host is this machine (`localhost`, 127.0.0.0/8, `::1`):
    /// reaching it needs no network.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// `scheme://host:port`, the unit of per-host limits and connection reuse.
    pub fn origin(&self) -> String {
        let scheme = if self.is_https() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host(), self.port())
    }
}

impl FromStr for Url {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Url::parse(s)
    }
}

impl TryFrom<String> for Url {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        Url::parse(&s)
    }
}

impl From<Url> for String {
    fn from(u: Url) -> String {
        u.0.to_string()
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Scheduling priority in 0.0 (lowest) to 1.0 (highest); 0.5 by default.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f32", into = "f32")]
pub struct Priority(f32);

impl Priority {
    /// The lowest priority.
    pub const LOW: Priority = Priority(0.0);
    /// The default priority.
    pub const DEFAULT: Priority = Priority(0.5);
    /// The highest priority.
    pub const HIGH: Priority = Priority(1.0);
    /// The default threshold at and above which work counts as high-priority.
    pub const HIGH_DEFAULT: Priority = Priority(0.75);

    /// Validates a priority: a number in 0.0–1.0 (NaN is refused).
    pub fn new(p: f32) -> Result<Self, SpecError> {
        if (0.0..=1.0).contains(&p) {
            Ok(Priority(p))
        } else {
            Err(SpecError::InvalidPriority(p))
        }
    }

    /// The priority as a number.
    pub fn get(self) -> f32 {
        self.0
    }
}

// A priority is never NaN, so equality is total.
impl Eq for Priority {}

impl Default for Priority {
    fn default() -> Self {
        Priority::DEFAULT
    }
}

impl TryFrom<f32> for Priority {
    type Error = SpecError;
    fn try_from(p: f32) -> Result<Self, SpecError> {
        Priority::new(p)
    }
}

impl From<Priority> for f32 {
    fn from(p: Priority) -> f32 {
        p.0
    }
}

/// Per-task conditions, beyond the session's policy, under which the task may run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    /// Background work the system may defer: runs only on an unmetered,
    /// unconstrained network, outside low power mode, and when charging or
    /// above the session's battery threshold (as iOS treats discretionary tasks).
    pub discretionary: bool,
    /// Runs only while on external power.
    pub requires_charging: bool,
    /// Runs only on a network that is neither cellular nor marked expensive.
    pub requires_unmetered: bool,
}

impl Constraints {
    /// Both sets of constraints at once: each one that either asks.
    pub fn and(self, other: Constraints) -> Constraints {
        Constraints {
            discretionary: self.discretionary || other.discretionary,
            requires_charging: self.requires_charging || other.requires_charging,
            requires_unmetered: self.requires_unmetered || other.requires_unmetered,
        }
    }
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, SpecError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|_| SpecError::InvalidDigest(s.to_owned()))?;
        Ok(Sha256Digest(out))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        Sha256Digest::from_hex(&s)
    }
}

impl From<Sha256Digest> for String {
    fn from(d: Sha256Digest) -> String {
        d.to_hex()
    }
}

/// Where a download's bytes end up.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Destination {
    /// A file path. The payload store decides how it is confined (store-fs
    /// refuses paths that escape the directory it was allowed to write in).
    Path(PathBuf),
    /// A key in an object store (e.g. an S3 bucket behind store-s3).
    ObjectKey(String),
}

/// How an upload's body is framed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UploadBody {
    /// The file's bytes as the whole request body.
    Raw {
        /// `Content-Type` to send; `application/octet-stream` when `None`.
        content_type: Option<String>,
    },
    /// A `multipart/form-data` body: text fields, then the file as one part.
    Multipart {
        /// The form field name of the file part.
        field: String,
        /// The file name announced in the file part.
        file_name: String,
        /// The file part's content type.
        content_type: Option<String>,
        /// Text fields sent before the file part, in order.
        fields: Vec<(String, String)>,
    },
    /// A resumable upload (IETF "Resumable Uploads for HTTP", or tus 1.0),
    /// which continues from the server's offset after a failure.
    Resumable {
        /// `Content-Type` of the uploaded representation.
        content_type: Option<String>,
        /// The protocol (default: the IETF draft).
        #[serde(default)]
        protocol: crate::resume::ResumableProtocol,
    },
}

/// The kind of a task: which way the bytes flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// Download the response body to a destination.
    Download {
        /// Where the body goes.
        destination: Destination,
    },
    /// Upload a file as the request body.
    Upload {
        /// The file to read.
        source: PathBuf,
        /// How the body is framed.
        body: UploadBody,
        /// What the file looked like when the task was enqueued (the session
        /// records it); an attempt fails if the file differs.
        #[serde(default)]
        stamp: Option<crate::transport::FileStamp>,
    },
}

impl TaskKind {
    /// Whether this is a download.
    pub fn is_download(&self) -> bool {
        matches!(self, TaskKind::Download { .. })
    }
}

/// The HTTP request a task sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestSpec {
    /// The method.
    #[serde(with = "serde_http::method")]
    pub method: Method,
    /// The URL (validated `http`/`https`).
    pub url: Url,
    /// Extra request headers (the transport adds `Range`, `Host` and the like).
    #[serde(with = "serde_http::headers")]
    pub headers: HeaderMap,
}

/// Everything a task is asked to do. Build one with [`TaskSpec::download`] or
/// [`TaskSpec::upload`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Download or upload, and where the bytes go or come from.
    pub kind: TaskKind,
    /// The request.
    pub request: RequestSpec,
    /// Scheduling priority.
    pub priority: Priority,
    /// The task does not start before this time.
    pub earliest_begin: Option<Timestamp>,
    /// Per-task run conditions.
    pub constraints: Constraints,
    /// Expected body size, used for progress before the server says, and as a
    /// cap: a body larger than this fails the task.
    pub expected_size: Option<u64>,
    /// Expected SHA-256 of the whole payload, verified at completion.
    pub expected_sha256: Option<Sha256Digest>,
    /// A per-task rate limit in bytes per second, below the session's.
    pub max_rate: Option<u64>,
    /// Free text for people (shown by `ferry ls`).
    pub label: Option<String>,
    /// A group name; tasks can be listed and cancelled by group.
    pub group: Option<String>,
    /// An idempotency key: enqueueing a second task with the same key in one
    /// session returns the existing task instead (like WorkManager's unique work).
    pub key: Option<String>,
    /// Which HTTP version to ask for (default: the session's choice).
    #[serde(default)]
    pub protocol: crate::transport::ProtocolPreference,
    /// A download may replace what is already at its destination (curl's
    /// `-o` over an existing file). Without it (the default) the finished
    /// payload never replaces anything this task did not write there: the
    /// task fails with [`ErrorKind::DestinationExists`](crate::ErrorKind::DestinationExists)
    /// and whatever is there stays as it was.
    #[serde(default)]
    pub overwrite: bool,
    /// The largest body accepted (curl's `--max-filesize`): a download whose
    /// server announces more, or sends more, fails with
    /// [`ErrorKind::SizeLimitExceeded`](crate::ErrorKind::SizeLimitExceeded)
    /// and leaves nothing behind.
    #[serde(default)]
    pub max_size: Option<u64>,
}

impl TaskSpec {
    /// The largest body this task accepts under `session_cap` (the
    /// session's own limit): the smallest of its expected size, its
    /// maximum size and the session's.
    pub fn size_cap(&self, session_cap: Option<u64>) -> Option<u64> {
        [self.expected_size, self.max_size, session_cap]
            .into_iter()
            .flatten()
            .min()
    }

    /// Starts a download of `url` to `destination` (a GET).
    pub fn download(url: &str, destination: Destination) -> TaskSpecBuilder {
        TaskSpecBuilder::new(url, Method::GET, TaskKind::Download { destination })
    }

    /// Starts an upload of the file at `source` to `url` (a PUT by default).
    pub fn upload(url: &str, source: impl Into<PathBuf>, body: UploadBody) -> TaskSpecBuilder {
        TaskSpecBuilder::new(
            url,
            Method::PUT,
            TaskKind::Upload {
                source: source.into(),
                body,
                stamp: None,
            },
        )
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        &self.request.url
    }
}

/// Builds a [`TaskSpec`]; every setter is checked when [`build`](Self::build) runs.
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct TaskSpecBuilder {
    url: String,
    method: Method,
    kind: TaskKind,
    headers: Vec<(String, String)>,
    priority: f32,
    earliest_begin: Option<Timestamp>,
    constraints: Constraints,
    expected_size: Option<u64>,
    expected_sha256: Option<String>,
    max_rate: Option<u64>,
    label: Option<String>,
    group: Option<String>,
    key: Option<String>,
    protocol: crate::transport::ProtocolPreference,
    overwrite: bool,
    max_size: Option<u64>,
}

impl TaskSpecBuilder {
    fn new(url: &str, method: Method, kind: TaskKind) -> Self {
        TaskSpecBuilder {
            url: url.to_owned(),
            method,
            kind,
            headers: Vec::new(),
            priority: Priority::DEFAULT.get(),
            earliest_begin: None,
            constraints: Constraints::default(),
            expected_size: None,
            expected_sha256: None,
            max_rate: None,
            label: None,
            group: None,
            key: None,
            protocol: crate::transport::ProtocolPreference::Auto,
            overwrite: false,
            max_size: None,
        }
    }

    /// Sets the method (uploads: PUT, POST or PATCH; downloads: GET or POST).
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the priority (0.0–1.0).
    pub fn priority(mut self, p: f32) -> Self {
        self.priority = p;
        self
    }

    /// The task does not start before `t`.
    pub fn earliest_begin(mut self, t: Timestamp) -> Self {
        self.earliest_begin = Some(t);
        self
    }

    /// Marks the task discretionary (see [`Constraints::discretionary`]).
    pub fn discretionary(mut self, yes: bool) -> Self {
        self.constraints.discretionary = yes;
        self
    }

    /// Runs only on external power.
    pub fn requires_charging(mut self, yes: bool) -> Self {
        self.constraints.requires_charging = yes;
        self
    }

    /// Runs only on an unmetered network.
    pub fn requires_unmetered(mut self, yes: bool) -> Self {
        self.constraints.requires_unmetered = yes;
        self
    }

    /// The expected size in bytes (also a cap on what is accepted).
    pub fn expected_size(mut self, n: u64) -> Self {
        self.expected_size = Some(n);
        self
    }

    /// The expected SHA-256 as 64 hex digits.
    pub fn expected_sha256(mut self, hex: impl Into<String>) -> Self {
        self.expected_sha256 = Some(hex.into());
        self
    }

    /// A per-task rate limit in bytes per second.
    pub fn max_rate(mut self, bytes_per_sec: u64) -> Self {
        self.max_rate = Some(bytes_per_sec);
        self
    }

    /// A label for people.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// A group name.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// An idempotency key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Asks for an HTTP version (HTTP/3 required or preferred).
    pub fn protocol(mut self, protocol: crate::transport::ProtocolPreference) -> Self {
        self.protocol = protocol;
        self
    }

    /// Lets the download replace what is already at its destination
    /// (default: never; see [`TaskSpec::overwrite`]).
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }

    /// The largest body accepted, in bytes (see [`TaskSpec::max_size`]).
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// Validates everything and returns the spec.
    pub fn build(self) -> Result<TaskSpec, SpecError> {
        let url = Url::parse(&self.url)?;
        if self.protocol == crate::transport::ProtocolPreference::RequireHttp3 && !url.is_https() {
            return Err(SpecError::Http3NeedsHttps {
                url: crate::echo(&self.url),
            });
        }
        let priority = Priority::new(self.priority)?;
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            let n =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| SpecError::InvalidHeader {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            let v = HeaderValue::from_str(&value).map_err(|e| SpecError::InvalidHeader {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            headers.append(n, v);
        }
        match &self.kind {
            TaskKind::Download { destination } => {
                if !matches!(self.method, Method::GET | Method::POST) {
                    return Err(SpecError::InvalidMethod {
                        method: self.method.to_string(),
                        what: "a download",
                    });
                }
                let empty = match destination {
                    Destination::Path(p) => p.as_os_str().is_empty(),
                    Destination::ObjectKey(k) => k.is_empty(),
                };
                if empty {
                    return Err(SpecError::EmptyPath("the download destination"));
                }
            }
            TaskKind::Upload { source, .. } => {
                if !matches!(self.method, Method::PUT | Method::POST | Method::PATCH) {
                    return Err(SpecError::InvalidMethod {
                        method: self.method.to_string(),
                        what: "an upload",
                    });
                }
                if source.as_os_str().is_empty() {
                    return Err(SpecError::EmptyPath("the upload source"));
                }
            }
        }
        let expected_sha256 = self
            .expected_sha256
            .as_deref()
            .map(Sha256Digest::from_hex)
            .transpose()?;
        Ok(TaskSpec {
            kind: self.kind,
            request: RequestSpec {
                method: self.method,
                url,
                headers,
            },
            priority,
            earliest_begin: self.earliest_begin,
            constraints: self.constraints,
            expected_size: self.expected_size,
            expected_sha256,
            max_rate: self.max_rate,
            label: self.label,
            group: self.group,
            key: self.key,
            protocol: self.protocol,
            overwrite: self.overwrite,
            max_size: self.max_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(url: &str) -> Result<TaskSpec, SpecError> {
        TaskSpec::download(url, Destination::Path("out.bin".into())).build()
    }

    #[test]
    fn accepts_http_and_https_with_host() {
        assert!(dl("http://example.com/a").is_ok());
        let s = dl("https://[::1]:8443/x?y=1").unwrap();
        assert_eq!(s.url().host(), "::1");
        assert_eq!(s.url().port(), 8443);
        assert_eq!(s.url().origin(), "https://::1:8443");
    }

    #[test]
    fn a_port_beyond_16_bits_is_refused_in_words() {
        let e = dl("http://example.com:99999/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid URL \"http://example.com:99999/x\": port 99999 is out of range"
        );
        assert_eq!(uri_port(&Uri::from_static("https://a.test/")), Ok(443));
        assert_eq!(uri_port(&Uri::from_static("http://a.test/")), Ok(80));
        assert_eq!(
            uri_port(&Uri::from_static("http://a.test:65535/")),
            Ok(65535)
        );
        assert_eq!(uri_port(&Uri::from_static("http://[::1]:8080/")), Ok(8080));
        assert_eq!(uri_port(&Uri::from_static("https://[::1]/")), Ok(443));
        assert_eq!(uri_port(&Uri::from_static("http://u:p@a.test:81/")), Ok(81));
        assert_eq!(
            uri_port(&Uri::from_static("http://a.test:65536/")),
            Err("port 65536 is out of range".to_owned())
        );
    }

    #[test]
    fn http3_is_refused_for_a_plain_http_url() {
        use crate::transport::ProtocolPreference::{PreferHttp3, RequireHttp3};
        let spec = |url: &str, protocol| {
            TaskSpec::download(url, Destination::Path("out.bin".into()))
                .protocol(protocol)
                .build()
        };
        assert!(matches!(
            spec("http://example.com/a", RequireHttp3),
            Err(SpecError::Http3NeedsHttps { .. })
        ));
        assert!(spec("https://example.com/a", RequireHttp3).is_ok());
        assert!(spec("http://example.com/a", PreferHttp3).is_ok());
    }

    #[test]
    fn refuses_other_schemes_relative_and_hostless_urls() {
        assert!(matches!(
            dl("ftp://example.com/a"),
            Err(SpecError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            dl("file:///etc/passwd"),
            Err(SpecError::UnsupportedScheme { .. }) | Err(SpecError::InvalidUrl { .. })
        ));
        assert!(matches!(
            dl("/just/a/path"),
            Err(SpecError::InvalidUrl { .. })
        ));
        assert!(matches!(
            dl("http://"),
            Err(SpecError::InvalidUrl { .. }) | Err(SpecError::MissingHost(_))
        ));
        assert!(matches!(dl("not a url"), Err(SpecError::InvalidUrl { .. })));
    }

    #[test]
    fn refuses_bad_priority_digest_header_and_method() {
        let b = || TaskSpec::download("https://h/x", Destination::Path("o".into()));
        assert!(matches!(
            b().priority(1.5).build(),
            Err(SpecError::InvalidPriority(_))
        ));
        assert!(matches!(
            b().priority(f32::NAN).build(),
            Err(SpecError::InvalidPriority(_))
        ));
        assert!(matches!(
            b().expected_sha256("abc").build(),
            Err(SpecError::InvalidDigest(_))
        ));
        assert!(matches!(
            b().header("bad name", "v").build(),
            Err(SpecError::InvalidHeader { .. })
        ));
        assert!(matches!(
            b().header("x", "a\nb").build(),
            Err(SpecError::InvalidHeader { .. })
        ));
        assert!(matches!(
            b().method(Method::DELETE).build(),
            Err(SpecError::InvalidMethod { .. })
        ));
        let up = TaskSpec::upload("https://h/x", "f", UploadBody::Raw { content_type: None });
        assert!(matches!(
            up.method(Method::GET).build(),
            Err(SpecError::InvalidMethod { .. })
        ));
        assert!(matches!(
            TaskSpec::download("https://h/x", Destination::Path("".into())).build(),
            Err(SpecError::EmptyPath(_))
        ));
    }

    #[test]
    fn overwrite_is_off_unless_asked_and_old_specs_load_without_it() {
        let spec = dl("https://h/x").unwrap();
        assert!(!spec.overwrite);
        let asked = TaskSpec::download("https://h/x", Destination::Path("o".into()))
            .overwrite(true)
            .build()
            .unwrap();
        assert!(asked.overwrite);
        // A spec stored before the field existed.
        let mut old = serde_json::to_value(&spec).unwrap();
        old.as_object_mut().unwrap().remove("overwrite");
        let loaded: TaskSpec = serde_json::from_value(old).unwrap();
        assert_eq!(loaded, spec);
    }
}
