//! Request headers every Ferry transport sets alike.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method};

/// Sets the headers every Ferry transport sets alike: no connection-level
/// headers on a multiplexed protocol (HTTP/2, HTTP/3), `Accept-Encoding:
/// identity` on downloads (ranges and lengths count bytes of the file
/// itself), the `User-Agent` unless the caller chose one, and the body's
/// `Content-Length`.
pub fn finish_headers(
    h: &mut HeaderMap,
    method: &Method,
    body_len: u64,
    agent: &str,
    multiplexed: bool,
) {
    if multiplexed {
        for name in [
            header::CONNECTION,
            header::HOST,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::HeaderName::from_static("keep-alive"),
            header::HeaderName::from_static("proxy-connection"),
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
