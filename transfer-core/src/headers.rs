//! The request-header rules every Ferry transport applies alike, whatever the
//! HTTP version: what a request carries on its way out, which credentials
//! stay with their origin, and what goes with a body a redirect drops.
//!
//! Plain functions on the `http` crate's [`HeaderMap`]: no connection and no
//! runtime, so HTTP/1.1, HTTP/2 and HTTP/3 cannot drift apart.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

/// Sets the headers every Ferry transport sets alike on a request about to
/// go out: no connection-level headers on a multiplexed protocol (HTTP/2,
/// HTTP/3), `Accept-Encoding: identity` on downloads (ranges and lengths
/// count bytes of the file itself), the `User-Agent` `agent` unless the
/// caller chose one, and the body's `Content-Length` when it has one.
pub fn finish(h: &mut HeaderMap, method: &Method, body_len: u64, agent: &str, multiplexed: bool) {
    if multiplexed {
        for name in [
            header::CONNECTION,
            header::HOST,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("proxy-connection"),
        ] {
            h.remove(name);
        }
    }
    if (*method == Method::GET || *method == Method::HEAD)
        && !h.contains_key(header::ACCEPT_ENCODING)
    {
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    if !h.contains_key(header::USER_AGENT)
        && let Ok(v) = HeaderValue::from_str(agent)
    {
        h.insert(header::USER_AGENT, v);
    }
    if body_len > 0 {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    }
}

/// Removes the credentials (`Authorization`, `Cookie`,
/// `Proxy-Authorization`) from `headers` unless `to` is on the origin of
/// `from`: the same scheme, host (in any case) and port (the scheme's
/// default when none is written). A URL that is not http(s) or has no host
/// is on no one's origin.
pub fn drop_credentials_across_origins(from: &Uri, to: &Uri, headers: &mut HeaderMap) {
    let same = matches!((origin(from), origin(to)), (Some(a), Some(b)) if a == b);
    if !same {
        headers.remove(header::AUTHORIZATION);
        headers.remove(header::COOKIE);
        headers.remove(header::PROXY_AUTHORIZATION);
    }
}

/// Removes the headers that describe a body (`Content-Type`,
/// `Content-Length`, `Content-Encoding`, `Content-Language`,
/// `Content-Location`), for a request whose body was dropped.
pub fn drop_body_headers(headers: &mut HeaderMap) {
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_LANGUAGE,
        header::CONTENT_LOCATION,
    ] {
        headers.remove(h);
    }
}

/// An http(s) URL's origin: whether it is https, its lowercase host without
/// brackets, and its port.
fn origin(uri: &Uri) -> Option<(bool, String, u16)> {
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return None,
    };
    let host = uri.host().filter(|h| !h.is_empty())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = crate::spec::uri_port(uri).ok()?;
    Some((tls, host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn credentials() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value("Bearer t"));
        h.insert(header::COOKIE, value("a=b"));
        h.insert(header::PROXY_AUTHORIZATION, value("Basic x"));
        h
    }

    #[test]
    fn credentials_stay_within_one_origin() {
        let mut h = credentials();
        h.remove(header::PROXY_AUTHORIZATION);
        drop_credentials_across_origins(
            &uri("https://a.example/x"),
            &uri("https://A.example:443/y"),
            &mut h,
        );
        assert_eq!(h.len(), 2);
        drop_credentials_across_origins(
            &uri("https://a.example/x"),
            &uri("https://a.example:8443/y"),
            &mut h,
        );
        assert!(h.is_empty());
    }

    #[test]
    fn a_change_of_scheme_or_host_is_another_origin() {
        for to in [
            "http://a.example/",
            "https://b.example/",
            "https://sub.a.example/",
        ] {
            let mut h = credentials();
            drop_credentials_across_origins(&uri("https://a.example/"), &uri(to), &mut h);
            assert!(h.is_empty(), "{to} kept credentials");
        }
        let mut h = credentials();
        drop_credentials_across_origins(&uri("http://[::1]/a"), &uri("http://[::1]:80/b"), &mut h);
        assert_eq!(h.len(), 3, "the same IPv6 origin keeps them");
    }

    #[test]
    fn other_headers_cross_origins() {
        let mut h = credentials();
        h.insert(header::RANGE, value("bytes=5-"));
        drop_credentials_across_origins(
            &uri("https://a.example/"),
            &uri("https://b.example/"),
            &mut h,
        );
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::RANGE));
    }

    #[test]
    fn a_dropped_body_takes_its_headers_with_it() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, value("text/plain"));
        h.insert(header::CONTENT_LENGTH, value("5"));
        h.insert(header::CONTENT_ENCODING, value("gzip"));
        h.insert(header::CONTENT_LANGUAGE, value("en"));
        h.insert(header::CONTENT_LOCATION, value("/x"));
        h.insert(header::ACCEPT, value("*/*"));
        drop_body_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn downloads_ask_for_the_bytes_themselves() {
        let mut h = HeaderMap::new();
        finish(&mut h, &Method::GET, 0, "ferry/1", false);
        assert_eq!(h[header::ACCEPT_ENCODING], "identity");
        assert_eq!(h[header::USER_AGENT], "ferry/1");
        assert!(!h.contains_key(header::CONTENT_LENGTH));

        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, value("gzip"));
        h.insert(header::USER_AGENT, value("mine"));
        finish(&mut h, &Method::HEAD, 0, "ferry/1", false);
        assert_eq!(h[header::ACCEPT_ENCODING], "gzip");
        assert_eq!(h[header::USER_AGENT], "mine");
    }

    #[test]
    fn uploads_state_their_length() {
        let mut h = HeaderMap::new();
        finish(&mut h, &Method::PUT, 42, "ferry/1", false);
        assert_eq!(h[header::CONTENT_LENGTH], "42");
        assert!(!h.contains_key(header::ACCEPT_ENCODING));
    }

    #[test]
    fn multiplexed_protocols_carry_no_connection_headers() {
        let connection_level = |h: &mut HeaderMap| {
            h.insert(header::CONNECTION, value("keep-alive"));
            h.insert(header::HOST, value("a.example"));
            h.insert(header::TRANSFER_ENCODING, value("chunked"));
            h.insert(header::UPGRADE, value("h2c"));
            h.insert("keep-alive", value("timeout=5"));
            h.insert("proxy-connection", value("keep-alive"));
        };
        let mut h = HeaderMap::new();
        connection_level(&mut h);
        finish(&mut h, &Method::PUT, 0, "ferry/1", true);
        assert_eq!(h.len(), 1, "left {h:?}");
        assert!(h.contains_key(header::USER_AGENT));

        let mut h = HeaderMap::new();
        connection_level(&mut h);
        finish(&mut h, &Method::PUT, 0, "ferry/1", false);
        assert_eq!(h.len(), 7, "HTTP/1.1 keeps them");
    }
}
