//! Which proxy a request goes through: proxy URLs read as curl reads them,
//! the conventional environment variables, and `NO_PROXY`.
//!
//! A [`Proxy`] is one proxy: `http://` (plain requests in absolute form,
//! HTTPS through `CONNECT`), `https://` (the same, over TLS to the proxy),
//! `socks5://` (names resolved here) or `socks5h://` (the proxy resolves),
//! with optional credentials from the URL's `user:password@`. [`Proxies`]
//! says which proxy, if any, carries a URL; the rules for `NO_PROXY` are
//! curl's, as hyper-util's matcher implements them (case, `*`, domains and
//! their subdomains, addresses and CIDR blocks).
//!
//! Credentials are sent to the proxy only (`Proxy-Authorization`, or the
//! SOCKS5 username/password exchange), never to an origin, and never shown:
//! [`Proxy`]'s `Display` and `Debug` leave them out.

use std::fmt;
use std::sync::Arc;

use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;

use crate::ConfigError;

/// How a proxy is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyScheme {
    /// An HTTP proxy over plain TCP.
    Http,
    /// An HTTP proxy over TLS (its certificate verified as an origin's).
    Https,
    /// SOCKS5, with names resolved on this machine.
    Socks5,
    /// SOCKS5, with names resolved by the proxy.
    Socks5h,
}

impl ProxyScheme {
    fn name(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Socks5h => "socks5h",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            ProxyScheme::Http => 80,
            ProxyScheme::Https => 443,
            ProxyScheme::Socks5 | ProxyScheme::Socks5h => 1080,
        }
    }
}

/// One proxy, as a URL names it: `[scheme://][user[:password]@]host[:port]`
/// (no scheme means `http://`, as curl reads it).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Proxy {
    scheme: ProxyScheme,
    host: String,
    port: u16,
    user: Option<(String, String)>,
}

impl Proxy {
    /// Reads a proxy URL. Refuses, in words, a scheme Ferry does not speak
    /// (`socks4://`, `ftp://`), a URL with no host, a port that does not fit
    /// in 16 bits, and a path (a proxy is a host and a port).
    pub fn parse(url: &str) -> Result<Proxy, ConfigError> {
        let bad = |why: &str| ConfigError::Proxy(format!("{url:?}: {why}"));
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((s, rest)) => (s.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), url),
        };
        let scheme = match scheme.as_str() {
            "http" => ProxyScheme::Http,
            "https" => ProxyScheme::Https,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            "socks4" | "socks4a" => {
                return Err(bad(
                    "SOCKS4 proxies are not supported; use socks5:// or socks5h://",
                ));
            }
            other => {
                return Err(bad(&format!(
                    "{other}:// is not a proxy scheme (http, https, socks5, socks5h)"
                )));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL is a host and a port, with no path"));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map(|s| s.into_owned())
                        .map_err(|_| bad("its credentials are not UTF-8 once decoded"))
                };
                (Some((decode(u)?, decode(p)?)), hostport)
            }
            None => (None, rest),
        };
        let (host, port) = split_host_port(hostport).map_err(|why| bad(&why))?;
        if host.is_empty() {
            return Err(bad("it names no host"));
        }
        Ok(Proxy {
            scheme,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(scheme.default_port()),
            user,
        })
    }

    /// How it is spoken to.
    pub fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// Its host (lowercase, IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether credentials go with it.
    pub fn has_credentials(&self) -> bool {
        self.user.is_some()
    }

    /// The user name and password, for the SOCKS5 exchange.
    pub(crate) fn credentials(&self) -> Option<(&str, &str)> {
        self.user.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// `Proxy-Authorization: Basic …` for an HTTP proxy with credentials.
    pub(crate) fn authorization(&self) -> Option<HeaderValue> {
        use base64::Engine;
        let (u, p) = self.user.as_ref()?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// The scheme as the URL writes it.
    pub(crate) fn scheme_name(&self) -> &'static str {
        self.scheme.name()
    }

    /// `host:port` with an IPv6 host in brackets.
    pub(crate) fn authority(&self) -> String {
        authority(&self.host, self.port)
    }

    /// The URL without credentials, for hyper-util's matcher (which reads
    /// credentials from it again, so they are not given to it at all).
    fn bare_url(&self) -> String {
        format!("{}://{}", self.scheme.name(), self.authority())
    }
}

impl fmt::Display for Proxy {
    /// `scheme://host:port`: never the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.bare_url())
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let creds = if self.user.is_some() {
            " (with credentials)"
        } else {
            ""
        };
        write!(f, "Proxy({self}{creds})")
    }
}

/// `host:port`, bracketing an IPv6 host.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address is not closed with ']'".to_owned())?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("unexpected {p:?} after the address"))?,
                ),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                format!("port {p} is out of range (at most 65535)")
            } else {
                format!("{p:?} is not a port number")
            }
        })?),
    };
    Ok((host, port))
}

/// Which proxy carries which URL: one for `http://` URLs, one for
/// `https://` URLs (either may be absent), and the hosts that go direct.
///
/// ```
/// use transport_http::Proxies;
///
/// let proxies = Proxies::new()
///     .all("http://user:secret@proxy.internal:3128")?
///     .no_proxy("localhost, .corp.example, 10.0.0.0/8");
/// let uri = "https://example.com/file".parse()?;
/// assert_eq!(proxies.for_uri(&uri).unwrap().to_string(), "http://proxy.internal:3128");
/// assert!(proxies.for_uri(&"https://files.corp.example/x".parse()?).is_none());
/// assert!(proxies.for_uri(&"http://10.1.2.3/x".parse()?).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct Proxies {
    http: Option<Proxy>,
    https: Option<Proxy>,
    no: String,
    /// Built from the three above, for curl's `NO_PROXY` rules.
    matcher: Option<Arc<Matcher>>,
}

impl Proxies {
    /// No proxy at all.
    pub fn new() -> Proxies {
        Proxies::default()
    }

    /// What the environment asks, read as curl reads it: `http_proxy`
    /// (lowercase only, as curl: `HTTP_PROXY` may be set by a web server's
    /// CGI from a request header), `https_proxy` or `HTTPS_PROXY`,
    /// `all_proxy` or `ALL_PROXY` for the scheme without its own, and
    /// `no_proxy` or `NO_PROXY` (lowercase first). An empty variable counts
    /// as unset; a value that is not a proxy URL is an error naming it.
    pub fn from_env() -> Result<Proxies, ConfigError> {
        Proxies::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Proxies, ConfigError> {
        let first = |names: &[&'static str]| -> Option<(&'static str, String)> {
            names
                .iter()
                .find_map(|n| var(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
        };
        let parse = |found: Option<(&str, String)>| {
            found
                .map(|(name, v)| {
                    Proxy::parse(&v).map_err(|e| ConfigError::Proxy(format!("{name}: {e}")))
                })
                .transpose()
        };
        let all = parse(first(&["all_proxy", "ALL_PROXY"]))?;
        let http = parse(first(&["http_proxy"]))?.or_else(|| all.clone());
        let https = parse(first(&["https_proxy", "HTTPS_PROXY"]))?.or(all);
        let no = first(&["no_proxy", "NO_PROXY"])
            .map(|(_, v)| v)
            .unwrap_or_default();
        Ok(Proxies {
            http,
            https,
            no,
            matcher: None,
        }
        .built())
    }

    /// Sends every URL through `url` (curl's `-x`), unless `NO_PROXY` or
    /// [`no_proxy`](Self::no_proxy) excludes its host.
    pub fn all(mut self, url: &str) -> Result<Proxies, ConfigError> {
        let proxy = Proxy::parse(url)?;
        self.http = Some(proxy.clone());
        self.https = Some(proxy);
        Ok(self.built())
    }

    /// Sends `http://` URLs through `proxy` (`None`: direct).
    pub fn http(mut self, proxy: Option<Proxy>) -> Proxies {
        self.http = proxy;
        self.built()
    }

    /// Sends `https://` URLs through `proxy` (`None`: direct).
    pub fn https(mut self, proxy: Option<Proxy>) -> Proxies {
        self.https = proxy;
        self.built()
    }

    /// The hosts that go direct, in curl's `NO_PROXY` form (replacing any
    /// list before): comma-separated host names (each also covers its
    /// subdomains; a leading dot is the same), IP addresses, CIDR blocks,
    /// or `*` for every host.
    pub fn no_proxy(mut self, list: &str) -> Proxies {
        self.no = list.to_owned();
        self.built()
    }

    /// Whether any URL goes through a proxy.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy that carries `uri`, if any.
    pub fn for_uri(&self, uri: &Uri) -> Option<&Proxy> {
        let matcher = self.matcher.as_ref()?;
        // The matcher answers for `http`/`https` and applies NO_PROXY.
        matcher.intercept(uri)?;
        match uri.scheme_str() {
            Some("http") => self.http.as_ref(),
            Some("https") => self.https.as_ref(),
            _ => None,
        }
    }

    fn built(mut self) -> Proxies {
        self.matcher = (!self.is_empty()).then(|| {
            let url = |p: &Option<Proxy>| p.as_ref().map(Proxy::bare_url).unwrap_or_default();
            Arc::new(
                Matcher::builder()
                    .http(url(&self.http))
                    .https(url(&self.https))
                    .no(self.no.clone())
                    .build(),
            )
        });
        self
    }
}

impl fmt::Debug for Proxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxies")
            .field("http", &self.http)
            .field("https", &self.https)
            .field("no_proxy", &self.no)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn proxy_urls_read_as_curl_reads_them() {
        let p = Proxy::parse("proxy.example:3128").unwrap();
        assert_eq!(p.to_string(), "http://proxy.example:3128");
        let p = Proxy::parse("https://Proxy.Example").unwrap();
        assert_eq!(p.to_string(), "https://proxy.example:443");
        let p = Proxy::parse("socks5h://u%40x:p%3Aw@[::1]:1080/").unwrap();
        assert_eq!(p.scheme(), ProxyScheme::Socks5h);
        assert_eq!(p.host(), "::1");
        assert_eq!(p.credentials(), Some(("u@x", "p:w")));
        assert_eq!(p.to_string(), "socks5h://[::1]:1080");
        assert!(!format!("{p:?}").contains("p:w"));
        let p = Proxy::parse("http://user:pa55@proxy:8080").unwrap();
        // "user:pa55" in base64.
        assert_eq!(
            p.authorization().unwrap(),
            HeaderValue::from_static("Basic dXNlcjpwYTU1")
        );
        for (bad, why) in [
            ("socks4://proxy:1080", "SOCKS4"),
            ("ftp://proxy", "not a proxy scheme"),
            ("http://proxy:99999", "port 99999 is out of range"),
            ("http://proxy:abc", "not a port number"),
            ("http://proxy:3128/path", "no path"),
            ("http://:3128", "no host"),
        ] {
            let e = Proxy::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_environment_is_read_with_curls_rules() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        // HTTP_PROXY in capitals is not read (a CGI sets it from a header).
        let p = Proxies::from_vars(env(&[("HTTP_PROXY", "http://evil:1")])).unwrap();
        assert!(p.for_uri(&uri("http://example.com/")).is_none());
        let p = Proxies::from_vars(env(&[
            ("http_proxy", "http://plain:3128"),
            ("HTTPS_PROXY", "http://tls:3128"),
            ("NO_PROXY", "localhost,.internal, 192.168.0.0/16"),
        ]))
        .unwrap();
        let via = |u: &str| p.for_uri(&uri(u)).map(|p| p.to_string());
        assert_eq!(
            via("http://example.com/").as_deref(),
            Some("http://plain:3128")
        );
        assert_eq!(
            via("https://example.com/").as_deref(),
            Some("http://tls:3128")
        );
        assert_eq!(via("https://a.b.internal/"), None);
        assert_eq!(via("https://internal/"), None);
        assert_eq!(via("http://localhost:8080/"), None);
        assert_eq!(via("http://192.168.4.5/"), None);
        assert_eq!(
            via("http://notinternal/").as_deref(),
            Some("http://plain:3128")
        );
        // Lowercase wins; ALL_PROXY fills the scheme without its own.
        let p = Proxies::from_vars(env(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:1"),
            ("ALL_PROXY", "socks5h://all:1080"),
            ("no_proxy", "*"),
        ]))
        .unwrap();
        assert!(p.for_uri(&uri("https://x/")).is_none(), "* is every host");
        let p = p.no_proxy("");
        assert_eq!(p.for_uri(&uri("https://x/")).unwrap().host(), "lower");
        assert_eq!(p.for_uri(&uri("http://x/")).unwrap().host(), "all");
        // A value that is not a proxy says which variable holds it.
        let e = Proxies::from_vars(env(&[("https_proxy", "socks4://x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("https_proxy") && e.contains("SOCKS4"), "{e}");
    }
}
