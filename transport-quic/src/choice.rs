//! Which protocol carries a request: HTTP/3 when the request asks for it
//! or when the origin advertised it with `Alt-Svc` (remembered for the
//! origin that sent it, the last of a redirect chain, for its `ma`,
//! optionally in a file so the next process knows it too); HTTP/1.1
//! or HTTP/2 otherwise. When a QUIC handshake fails or does not finish
//! within a short deadline (UDP blocked on the path), the request goes over
//! TCP instead and the origin is not tried over QUIC again for a while.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::Uri;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use transfer_core::{
    ErrorKind, ProtocolPreference, TimeoutKind, TransferError, Transport, TransportRequest,
    TransportResponse,
};

use crate::QuicTransport;

/// An `Alt-Svc` `ma` when the header gives none (RFC 7838: 24 hours).
const DEFAULT_MAX_AGE: u64 = 86_400;

/// An HTTP/3 alternative an origin advertised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Alternative {
    /// The UDP port to use on the same host.
    port: u16,
    /// When it expires, in milliseconds since the Unix epoch.
    expires_ms: u64,
}

/// Routes each request to HTTP/3 or to TCP; see the module documentation.
pub struct ProtocolChoice {
    tcp: Arc<dyn Transport>,
    quic: QuicTransport,
    /// Alternatives by authority (`host:port`).
    alternatives: Mutex<HashMap<String, Alternative>>,
    /// Origins whose QUIC handshake failed, and until when they go over TCP.
    broken: Mutex<HashMap<String, Instant>>,
    memory: Option<PathBuf>,
    handshake_deadline: Duration,
    broken_for: Duration,
}

impl std::fmt::Debug for ProtocolChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtocolChoice")
            .field("memory", &self.memory)
            .field("alternatives", &*lock(&self.alternatives))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn authority(uri: &Uri) -> Option<String> {
    let host = uri.host()?.to_ascii_lowercase();
    // A port beyond 16 bits names no origin (the request fails in words).
    transfer_core::uri_port(uri).ok()?;
    Some(format!("{host}:{}", uri.port_u16().unwrap_or(443)))
}

/// The HTTP/3 alternative in an `Alt-Svc` value for the same host:
/// `Some(Some(alt))` to remember, `Some(None)` for `clear`, `None` when it
/// names none.
fn parse_alt_svc(value: &str, now_ms: u64) -> Option<Option<Alternative>> {
    if value.trim() == "clear" {
        return Some(None);
    }
    for entry in value.split(',') {
        let mut params = entry.split(';').map(str::trim);
        let Some((proto, target)) = params.next().and_then(|p| p.split_once('=')) else {
            continue;
        };
        if proto.trim() != "h3" {
            continue;
        }
        let target = target.trim().trim_matches('"');
        // Only alternatives on the same host: `:PORT`.
        let Some(port) = target.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()) else {
            continue;
        };
        let max_age = params
            .filter_map(|p| p.strip_prefix("ma="))
            .find_map(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_MAX_AGE);
        return Some(Some(Alternative {
            port,
            expires_ms: now_ms.saturating_add(max_age.saturating_mul(1000)),
        }));
    }
    None
}

/// A copy of a request, to send again over TCP (the body is a list of
/// parts read when sent, so nothing has been consumed).
fn copy(request: &TransportRequest) -> Result<TransportRequest, TransferError> {
    let r = &request.request;
    let mut b = http::Request::builder()
        .method(r.method().clone())
        .uri(r.uri().clone())
        .version(r.version());
    for (k, v) in r.headers() {
        b = b.header(k, v);
    }
    let body = b
        .body(r.body().clone())
        .map_err(|e| TransferError::new(ErrorKind::InvalidRequest, e.to_string()))?;
    let mut copy = TransportRequest::new(body);
    copy.options = request.options.clone();
    copy.on_sent = request.on_sent.clone();
    copy.redirect_hook = request.redirect_hook.clone();
    copy.pacer = request.pacer.clone();
    Ok(copy)
}

/// Whether a failed HTTP/3 request failed before anything was sent: QUIC
/// could not be set up on the path.
fn before_sending(e: &TransferError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Quic | ErrorKind::ConnectFailed | ErrorKind::Timeout(TimeoutKind::Connect)
    )
}

impl ProtocolChoice {
    /// Chooses between `tcp` (HTTP/1.1 and HTTP/2) and `quic` per request.
    pub fn new(tcp: Arc<dyn Transport>, quic: QuicTransport) -> ProtocolChoice {
        ProtocolChoice {
            tcp,
            quic,
            alternatives: Mutex::new(HashMap::new()),
            broken: Mutex::new(HashMap::new()),
            memory: None,
            handshake_deadline: Duration::from_secs(3),
            broken_for: Duration::from_secs(300),
        }
    }

    /// Keeps the alternatives learned in `path` (JSON), read now and
    /// written as they change, so they outlive the process as a session
    /// does. A missing or unreadable file starts empty.
    pub fn remember_in(mut self, path: impl Into<PathBuf>) -> ProtocolChoice {
        let path = path.into();
        if let Ok(text) = std::fs::read(&path)
            && let Ok(known) = serde_json::from_slice::<HashMap<String, Alternative>>(&text)
        {
            let now = now_ms();
            *lock(&self.alternatives) = known
                .into_iter()
                .filter(|(_, a)| a.expires_ms > now)
                .collect();
        }
        self.memory = Some(path);
        self
    }

    /// How long a QUIC handshake may take before a request that may go
    /// over TCP does (default 3 s), and how long the origin then stays on
    /// TCP (default 5 minutes).
    pub fn fallback(mut self, handshake: Duration, stay_on_tcp: Duration) -> ProtocolChoice {
        self.handshake_deadline = handshake;
        self.broken_for = stay_on_tcp;
        self
    }

    /// The HTTP/3 transport (to rebind it when the network path changes).
    pub fn quic(&self) -> &QuicTransport {
        &self.quic
    }

    /// The UDP port an origin advertised for HTTP/3, if it still holds.
    pub fn advertised(&self, url: &Uri) -> Option<u16> {
        let key = authority(url)?;
        let now = now_ms();
        lock(&self.alternatives)
            .get(&key)
            .filter(|a| a.expires_ms > now)
            .map(|a| a.port)
    }

    fn is_broken(&self, key: &str) -> bool {
        let mut broken = lock(&self.broken);
        match broken.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                broken.remove(key);
                false
            }
            None => false,
        }
    }

    /// Records what the response's `Alt-Svc` advertises, for the origin
    /// that sent it (RFC 7838 §2): after redirects that is the last hop's
    /// origin, not the one the request started at. Only https origins are
    /// sent over HTTP/3, so only theirs are kept.
    fn learn(&self, response: &TransportResponse) {
        let url = &response.url;
        let Some(key) = authority(url).filter(|_| url.scheme_str() == Some("https")) else {
            return;
        };
        let now = now_ms();
        let mut changed = false;
        {
            let mut alts = lock(&self.alternatives);
            for v in response.response.headers().get_all("alt-svc") {
                let Some(found) = v.to_str().ok().and_then(|v| parse_alt_svc(v, now)) else {
                    continue;
                };
                let before = alts.get(&key).map(|a| a.port);
                match found {
                    Some(alt) => alts.insert(key.clone(), alt),
                    None => alts.remove(&key),
                };
                changed |= alts.get(&key).map(|a| a.port) != before;
            }
        }
        if changed {
            self.save();
        }
    }

    fn save(&self) {
        let Some(path) = &self.memory else { return };
        let text = match serde_json::to_vec_pretty(&*lock(&self.alternatives)) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "alt-svc memory not encoded");
                return;
            }
        };
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::debug!(error = %e, path = %path.display(), "alt-svc memory not written");
        }
    }
}

#[async_trait]
impl Transport for ProtocolChoice {
    fn name(&self) -> &'static str {
        "http+quic"
    }

    fn handles(&self, url: &Uri, preference: ProtocolPreference) -> bool {
        self.tcp.handles(url, preference) || self.quic.handles(url, preference)
    }

    async fn send(&self, request: TransportRequest) -> Result<TransportResponse, TransferError> {
        let uri = request.request.uri().clone();
        let preference = request.options.protocol;
        let Some(key) = authority(&uri).filter(|_| uri.scheme_str() == Some("https")) else {
            // It may end at an https origin (a redirect) that advertises.
            let r = self.tcp.send(request).await?;
            self.learn(&r);
            return Ok(r);
        };
        let advertised = self.advertised(&uri);
        if preference == ProtocolPreference::RequireHttp3 {
            // Asked for HTTP/3 and nothing else: direct, as proxies carry TCP.
            return self.quic.send_via(request, advertised).await;
        }
        if preference == ProtocolPreference::TcpOnly || self.quic.proxied(&uri) {
            // Asked for TCP, or a proxy carries this URL (HTTP/3 would go
            // around it).
            let r = self.tcp.send(request).await?;
            self.learn(&r);
            return Ok(r);
        }
        let wants_h3 = preference == ProtocolPreference::PreferHttp3 || advertised.is_some();
        if wants_h3 && !self.is_broken(&key) {
            let again = copy(&request)?;
            let mut quick = request;
            let t = &mut quick.options.timeouts;
            t.connect = t.connect.min(self.handshake_deadline);
            match self.quic.send_via(quick, advertised).await {
                Ok(r) => return Ok(r),
                Err(e) if before_sending(&e) => {
                    tracing::info!(origin = %key, error = %e, "HTTP/3 unavailable; using TCP for a while");
                    lock(&self.broken).insert(key, Instant::now() + self.broken_for);
                    let r = self.tcp.send(again).await?;
                    self.learn(&r);
                    return Ok(r);
                }
                Err(e) => return Err(e),
            }
        }
        let r = self.tcp.send(request).await?;
        self.learn(&r);
        Ok(r)
    }

    fn network_changed(&self) {
        self.tcp.network_changed();
        self.quic.network_changed();
        // A path that blocked UDP may not block it any more.
        lock(&self.broken).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An alternative is used for its `ma` and no longer: one remembered
    /// past its expiry (in the memory file of an earlier process) is not
    /// used, one still fresh is.
    #[test]
    fn alternatives_expire_with_their_max_age() {
        let dir = std::env::temp_dir().join(format!("ferry-alt-svc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let memory = dir.join("alt-svc.json");
        let now = now_ms();
        let known = HashMap::from([
            (
                "old.test:443".to_owned(),
                Alternative {
                    port: 443,
                    expires_ms: now - 1,
                },
            ),
            (
                "new.test:443".to_owned(),
                Alternative {
                    port: 8443,
                    expires_ms: now + 60_000,
                },
            ),
        ]);
        std::fs::write(&memory, serde_json::to_vec(&known).unwrap()).unwrap();
        let http = transport_http::HttpConfig::default().roots(transport_http::Roots::Webpki);
        let tcp = Arc::new(transport_http::HttpTransport::new(http.clone()).unwrap());
        let quic = QuicTransport::new(crate::QuicConfig::default().http(http)).unwrap();
        let choice = ProtocolChoice::new(tcp, quic).remember_in(&memory);
        let url = |host: &str| format!("https://{host}/f").parse::<Uri>().unwrap();
        assert_eq!(choice.advertised(&url("old.test")), None, "expired");
        assert_eq!(choice.advertised(&url("new.test")), Some(8443), "fresh");
        lock(&choice.alternatives).insert(
            "old.test:443".to_owned(),
            Alternative {
                port: 443,
                expires_ms: now_ms() - 1,
            },
        );
        assert_eq!(
            choice.advertised(&url("old.test")),
            None,
            "expired while running"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn alt_svc_values_parse() {
        let a = parse_alt_svc(r#"h3=":4433"; ma=60"#, 1000)
            .unwrap()
            .unwrap();
        assert_eq!(
            a,
            Alternative {
                port: 4433,
                expires_ms: 61_000
            }
        );
        let a = parse_alt_svc(r#"h3-29=":1", h3=":443""#, 0)
            .unwrap()
            .unwrap();
        assert_eq!(a.port, 443);
        assert_eq!(a.expires_ms, DEFAULT_MAX_AGE * 1000);
        assert_eq!(parse_alt_svc("clear", 0), Some(None));
        assert_eq!(parse_alt_svc(r#"h2=":443""#, 0), None);
        // Another host is not followed.
        assert_eq!(parse_alt_svc(r#"h3="other.example:443""#, 0), None);
        assert_eq!(parse_alt_svc(r#"h3=":http""#, 0), None);
    }
}
