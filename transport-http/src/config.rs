//! What a transport is allowed to do and how it tunes its connections.
//!
//! Every default lives in [`HttpConfig::default`]; builder-style methods
//! change one thing each.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::ConfigError;

/// Which root certificates are trusted before any extra roots are added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Roots {
    /// The platform's store (`/etc/ssl/certs` and the like) and the Mozilla
    /// roots compiled in (`webpki-roots`): works on machines with no store.
    #[default]
    PlatformAndWebpki,
    /// Only the platform's store.
    Platform,
    /// Only the compiled-in Mozilla roots.
    Webpki,
    /// None: only the roots added with [`HttpConfig::add_root`] (private PKI).
    None,
}

/// Configuration of an [`HttpTransport`](crate::HttpTransport).
///
/// ```
/// use std::time::Duration;
/// use transport_http::{HttpConfig, Roots};
///
/// let config = HttpConfig::default()
///     .roots(Roots::Webpki)
///     .max_connections_per_host(4)
///     .pool_idle_timeout(Duration::from_secs(30));
/// assert_eq!(config.connections_per_host(), 4);
/// ```
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub(crate) roots: Roots,
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    pub(crate) pins: HashMap<String, Vec<[u8; 32]>>,
    /// `--resolve` overrides: the addresses for a (lowercase host, port).
    pub(crate) resolve: HashMap<(String, u16), Vec<IpAddr>>,
    pub(crate) attempt_delay: Duration,
    pub(crate) max_per_host: usize,
    pub(crate) http1_only: bool,
    pub(crate) h2_prior_knowledge: bool,
    pub(crate) h2_stream_window: u32,
    pub(crate) h2_connection_window: u32,
    pub(crate) h2_max_frame: u32,
    pub(crate) h1_max_buf: usize,
    pub(crate) max_header_bytes: u32,
    pub(crate) pool_idle: Duration,
    pub(crate) user_agent: String,
    pub(crate) proxies: crate::Proxies,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            roots: Roots::default(),
            extra_roots: Vec::new(),
            pins: HashMap::new(),
            resolve: HashMap::new(),
            // RFC 8305's recommended Connection Attempt Delay.
            attempt_delay: Duration::from_millis(250),
            // What browsers allow per host over HTTP/1.1; HTTP/2 uses one.
            max_per_host: 6,
            http1_only: false,
            h2_prior_knowledge: false,
            // Measured against nginx on loopback (`cargo xtask bench`): the
            // 64 KiB defaults starve a bulk download; 4/8 MiB windows run as
            // fast as 16/32 MiB and keep peak RSS near 22 MiB instead of 50
            // (the windows bound what arrives ahead of the disk).
            h2_stream_window: 4 << 20,
            h2_connection_window: 8 << 20,
            h2_max_frame: 1 << 20,
            h1_max_buf: 1 << 20,
            // Header floods beyond this are a protocol error, not memory use.
            max_header_bytes: 256 << 10,
            pool_idle: Duration::from_secs(90),
            user_agent: concat!("ferry/", env!("CARGO_PKG_VERSION")).to_owned(),
            // Direct unless asked: a library does not read the environment
            // behind its user's back (`Proxies::from_env` does, when asked).
            proxies: crate::Proxies::new(),
        }
    }
}

impl HttpConfig {
    /// Chooses the base set of trusted roots (default: platform and webpki).
    pub fn roots(mut self, roots: Roots) -> Self {
        self.roots = roots;
        self
    }

    /// Trusts one more root certificate (DER), beside the base set.
    pub fn add_root(mut self, cert: CertificateDer<'static>) -> Self {
        self.extra_roots.push(cert);
        self
    }

    /// Trusts every certificate in a PEM bundle (like curl's `--cacert`, but
    /// beside the base set). A bundle with no certificate is an error.
    pub fn add_roots_pem(mut self, pem: &[u8]) -> Result<Self, ConfigError> {
        let before = self.extra_roots.len();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ConfigError::Pem(e.to_string()))?;
            self.extra_roots.push(cert);
        }
        if self.extra_roots.len() == before {
            return Err(ConfigError::Pem(
                "no certificate in the PEM data".to_owned(),
            ));
        }
        Ok(self)
    }

    /// Pins `host` to a key: connections to it succeed only if the SHA-256 of
    /// the SubjectPublicKeyInfo of its certificate or of an intermediate it
    /// sends is one of the pins (see [`spki_sha256`](crate::spki_sha256)).
    /// The chain must still be trusted; pins add to verification, never
    /// replace it.
    pub fn pin(mut self, host: &str, spki_sha256: [u8; 32]) -> Self {
        self.pins
            .entry(host.to_ascii_lowercase())
            .or_default()
            .push(spki_sha256);
        self
    }

    /// Uses `addr`'s IP for `host` on `addr`'s port instead of resolving it,
    /// as curl's `--resolve HOST:PORT:ADDR`: the override applies only to
    /// URLs for `host` on that port (others resolve `host` as usual). TLS
    /// still verifies the certificate for `host`. Several overrides for one
    /// host and port (an IPv6 and an IPv4 address, say) are all tried, as
    /// resolved addresses are.
    pub fn resolve(mut self, host: &str, addr: SocketAddr) -> Self {
        self.resolve
            .entry((host.to_ascii_lowercase(), addr.port()))
            .or_default()
            .push(addr.ip());
        self
    }

    /// How long a connection attempt has before the next address is tried
    /// beside it (RFC 8305's "Connection Attempt Delay", default 250 ms).
    /// Addresses are tried one after the other, alternating IPv6 and IPv4,
    /// each started this long after the one before unless that one has
    /// already failed; the first to connect is used and the others are
    /// dropped. A shorter delay finds a working address sooner behind a
    /// silent one, at the cost of more connection attempts.
    pub fn connection_attempt_delay(mut self, delay: Duration) -> Self {
        self.attempt_delay = delay;
        self
    }

    /// Most connections open to one host at once (default 6, at least 1).
    /// Requests beyond it wait for a connection to come free.
    pub fn max_connections_per_host(mut self, n: usize) -> Self {
        self.max_per_host = n.max(1);
        self
    }

    /// The per-host connection cap in force.
    pub fn connections_per_host(&self) -> usize {
        self.max_per_host
    }

    /// Speaks only HTTP/1.1 (TLS offers only `http/1.1` in ALPN).
    pub fn http1_only(mut self) -> Self {
        self.http1_only = true;
        self
    }

    /// Speaks HTTP/2 without negotiation on plain `http://` URLs (h2c with
    /// prior knowledge). TLS connections still use ALPN.
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.h2_prior_knowledge = true;
        self
    }

    /// HTTP/2 receive windows: per stream and per connection, in bytes.
    pub fn http2_windows(mut self, stream: u32, connection: u32) -> Self {
        self.h2_stream_window = stream;
        self.h2_connection_window = connection;
        self
    }

    /// The largest HTTP/2 frame the server may send (16 KiB to 16 MiB).
    pub fn http2_max_frame(mut self, bytes: u32) -> Self {
        self.h2_max_frame = bytes.clamp(16 << 10, (16 << 20) - 1);
        self
    }

    /// How long an unused connection stays in the pool (default 90 s).
    pub fn pool_idle_timeout(mut self, idle: Duration) -> Self {
        self.pool_idle = idle;
        self
    }

    /// The most bytes of response headers accepted (default 256 KiB).
    pub fn header_limit(&self) -> u32 {
        self.max_header_bytes
    }

    /// The `User-Agent` sent when a request has none.
    pub fn agent(&self) -> &str {
        &self.user_agent
    }

    /// Which proxy carries which URL (default: none; see
    /// [`Proxies::from_env`](crate::Proxies::from_env) for the
    /// conventional variables). HTTP/3 never goes through a proxy.
    pub fn proxies(mut self, proxies: crate::Proxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// The proxies in force.
    pub fn proxy_rules(&self) -> &crate::Proxies {
        &self.proxies
    }

    /// Sets the `User-Agent` sent when a request has none.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }
}
