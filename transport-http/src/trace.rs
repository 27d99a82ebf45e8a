//! The request and response heads as `tracing` events, for a user who asks
//! what happens underneath (`ferry -v`), without a secret: credentials
//! are never written, neither header values that carry them nor a URL's
//! `user:password@`.

use http::{HeaderMap, HeaderName, Uri, header};

/// Headers whose values carry credentials: only their names are shown.
const SECRET: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::SET_COOKIE,
];

/// `uri` without a `user:password@` before its host.
pub fn shown_uri(uri: &Uri) -> String {
    let Some(authority) = uri.authority() else {
        return uri.to_string();
    };
    let host = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, host)| host);
    let scheme = uri
        .scheme_str()
        .map_or(String::new(), |s| format!("{s}://"));
    let rest = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}{host}{rest}")
}

/// `headers` as `name: value` pairs separated by `; `, with the values of
/// credentials shown as `<redacted>`.
pub fn shown_headers(headers: &HeaderMap) -> String {
    let mut out = String::new();
    for (name, value) in headers {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(name.as_str());
        out.push_str(": ");
        if SECRET.contains(name) {
            out.push_str("<redacted>");
        } else {
            out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn no_secret_is_shown() {
        let uri: Uri = "http://user:secret@a.test:8080/x?y=1".parse().unwrap();
        assert_eq!(shown_uri(&uri), "http://a.test:8080/x?y=1");
        let uri: Uri = "https://a.test/x".parse().unwrap();
        assert_eq!(shown_uri(&uri), "https://a.test/x");
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic c2VjcmV0"),
        );
        h.insert(header::COOKIE, HeaderValue::from_static("s=secret"));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=10-"));
        let shown = shown_headers(&h);
        assert!(
            !shown.contains("secret") && !shown.contains("c2VjcmV0"),
            "{shown}"
        );
        assert!(shown.contains("authorization: <redacted>"), "{shown}");
        assert!(shown.contains("range: bytes=10-"), "{shown}");
    }
}
