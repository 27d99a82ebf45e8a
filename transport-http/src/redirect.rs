//! Whether and where to follow a redirect (DESIGN §4): at most the policy's
//! limit, only to http(s), never https→http unless allowed, credentials
//! dropped when the origin changes, methods rewritten as browsers do.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use transfer_core::{
    ErrorKind, RedirectDecision, RedirectHook, RedirectPolicy, RequestBody, TransferError,
};

use crate::pool::Key;

/// A request as it stands at the current hop.
#[derive(Debug)]
pub struct Outgoing {
    /// The method.
    pub method: Method,
    /// The URL.
    pub uri: Uri,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (replayed on a 307/308).
    pub body: RequestBody,
}

/// Follows redirects the way every Ferry transport does: at most the
/// policy's limit, only to http(s), never https→http unless allowed,
/// credentials dropped across origins, 303 (and 301/302 after a POST) as a
/// body-less GET, and the hook asked about each hop.
pub struct Redirects<'a> {
    policy: &'a RedirectPolicy,
    hook: Option<&'a Arc<dyn RedirectHook>>,
    hops: u32,
}

impl<'a> Redirects<'a> {
    /// Redirects under `policy`, each put to `hook` first.
    pub fn new(policy: &'a RedirectPolicy, hook: Option<&'a Arc<dyn RedirectHook>>) -> Self {
        Redirects {
            policy,
            hook,
            hops: 0,
        }
    }

    /// Redirects followed so far.
    pub fn hops(&self) -> u32 {
        self.hops
    }

    /// Judges a response to `out`: `Ok(true)` when it is a redirect to
    /// follow and `out` now describes the next hop (the caller drops the
    /// old response and sends again), `Ok(false)` when the response is the
    /// answer, an error when the redirect is refused.
    pub async fn next(
        &mut self,
        status: StatusCode,
        location: Option<&HeaderValue>,
        out: &mut Outgoing,
    ) -> Result<bool, TransferError> {
        let uri = out.uri.clone();
        let Some(hop) = hop(status, &out.method, &uri, location)? else {
            return Ok(false);
        };
        self.hops += 1;
        check(&uri, &hop.to, self.policy, self.hops)?;
        let mut to = hop.to;
        if let Some(hook) = self.hook {
            match hook.redirect(&uri, &to, status).await {
                RedirectDecision::Follow => {}
                RedirectDecision::FollowTo(other) => {
                    check(&uri, &other, self.policy, self.hops)?;
                    to = other;
                }
                RedirectDecision::Refuse => {
                    return Err(TransferError::new(
                        ErrorKind::RedirectRefused,
                        format!("redirect from {uri} to {to} vetoed"),
                    ));
                }
            }
        }
        strip_for(&uri, &to, &mut out.headers);
        if hop.drop_body {
            out.body = RequestBody::empty();
            strip_body_headers(&mut out.headers);
        }
        tracing::debug!(%uri, %to, %status, "following redirect");
        out.method = hop.method;
        out.uri = to;
        Ok(true)
    }
}

/// One redirect to follow.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Hop {
    pub(crate) to: Uri,
    pub(crate) method: Method,
    /// 303, and 301/302 after a POST, turn the request into a body-less GET.
    pub(crate) drop_body: bool,
}

/// The hop a response asks for, `None` when it is not a redirect to follow
/// (not a 301/302/303/307/308, or no `Location`).
pub(crate) fn hop(
    status: StatusCode,
    method: &Method,
    from: &Uri,
    location: Option<&http::HeaderValue>,
) -> Result<Option<Hop>, TransferError> {
    let code = status.as_u16();
    if !matches!(code, 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let Some(location) = location else {
        return Ok(None);
    };
    let location = location
        .to_str()
        .map_err(|_| TransferError::new(ErrorKind::Protocol, "redirect Location is not text"))?;
    let base = url::Url::parse(&from.to_string()).map_err(|e| {
        TransferError::new(
            ErrorKind::InvalidRequest,
            format!("request URL {from}: {e}"),
        )
    })?;
    let joined = base.join(location).map_err(|e| {
        TransferError::new(
            ErrorKind::Protocol,
            format!("redirect Location {location:?} is not a URL: {e}"),
        )
    })?;
    let mut joined = joined;
    joined.set_fragment(None);
    let to: Uri = joined.as_str().parse().map_err(|e| {
        TransferError::new(
            ErrorKind::Protocol,
            format!("redirect Location {location:?}: {e}"),
        )
    })?;
    let to_get = code == 303 && *method != Method::HEAD
        || matches!(code, 301 | 302) && *method == Method::POST;
    Ok(Some(Hop {
        to,
        method: if to_get { Method::GET } else { method.clone() },
        drop_body: to_get,
    }))
}

/// Refuses hops the policy does not allow.
pub(crate) fn check(
    from: &Uri,
    to: &Uri,
    policy: &RedirectPolicy,
    hops: u32,
) -> Result<(), TransferError> {
    if hops > policy.max {
        return Err(TransferError::new(
            ErrorKind::TooManyRedirects,
            format!("more than {} redirects (last to {to})", policy.max),
        ));
    }
    match to.scheme_str() {
        Some("http" | "https") => {}
        other => {
            return Err(TransferError::new(
                ErrorKind::RedirectRefused,
                format!(
                    "redirect to a non-HTTP scheme ({}) refused",
                    other.unwrap_or("none")
                ),
            ));
        }
    }
    if from.scheme_str() == Some("https")
        && to.scheme_str() == Some("http")
        && !policy.allow_https_to_http
    {
        return Err(TransferError::new(
            ErrorKind::RedirectRefused,
            format!("redirect from https to http ({to}) refused"),
        ));
    }
    Ok(())
}

/// Headers that must not follow a request to another origin.
pub(crate) fn strip_for(from: &Uri, to: &Uri, headers: &mut HeaderMap) {
    let same = matches!((Key::of(from), Key::of(to)), (Ok(a), Ok(b)) if a == b);
    if !same {
        headers.remove(header::AUTHORIZATION);
        headers.remove(header::COOKIE);
        headers.remove(header::PROXY_AUTHORIZATION);
    }
}

/// Headers that describe a body, removed when a hop drops it.
pub(crate) fn strip_body_headers(headers: &mut HeaderMap) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn loc(s: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn relative_locations_resolve_against_the_request() {
        let from = uri("http://a.example/dir/file?q=1");
        let h = hop(
            StatusCode::FOUND,
            &Method::GET,
            &from,
            Some(&loc("other#frag")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.to, uri("http://a.example/dir/other"));
        let h = hop(
            StatusCode::FOUND,
            &Method::GET,
            &from,
            Some(&loc("//b.example/x")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.to, uri("http://b.example/x"));
    }

    #[test]
    fn methods_change_as_browsers_do() {
        let from = uri("http://a.example/");
        let l = loc("/next");
        let post = |code: u16| {
            hop(
                StatusCode::from_u16(code).unwrap(),
                &Method::POST,
                &from,
                Some(&l),
            )
            .unwrap()
            .unwrap()
        };
        assert_eq!((post(301).method, post(301).drop_body), (Method::GET, true));
        assert_eq!((post(303).method, post(303).drop_body), (Method::GET, true));
        assert_eq!(
            (post(307).method, post(307).drop_body),
            (Method::POST, false)
        );
        assert_eq!(
            (post(308).method, post(308).drop_body),
            (Method::POST, false)
        );
        let put = hop(StatusCode::FOUND, &Method::PUT, &from, Some(&l))
            .unwrap()
            .unwrap();
        assert_eq!((put.method, put.drop_body), (Method::PUT, false));
        let head = hop(StatusCode::SEE_OTHER, &Method::HEAD, &from, Some(&l))
            .unwrap()
            .unwrap();
        assert_eq!(head.method, Method::HEAD);
    }

    #[test]
    fn non_redirects_and_missing_locations_are_not_followed() {
        let from = uri("http://a.example/");
        assert_eq!(
            hop(
                StatusCode::NOT_MODIFIED,
                &Method::GET,
                &from,
                Some(&loc("/x"))
            )
            .unwrap(),
            None
        );
        assert_eq!(
            hop(StatusCode::FOUND, &Method::GET, &from, None).unwrap(),
            None
        );
    }

    #[test]
    fn policy_refuses_schemes_downgrades_and_long_chains() {
        let p = RedirectPolicy::default();
        let https = uri("https://a.example/");
        let kind = |r: Result<(), TransferError>| r.unwrap_err().kind();
        assert_eq!(
            kind(check(&https, &uri("ftp://a.example/"), &p, 1)),
            ErrorKind::RedirectRefused
        );
        assert_eq!(
            kind(check(&https, &uri("http://a.example/"), &p, 1)),
            ErrorKind::RedirectRefused
        );
        assert_eq!(
            kind(check(&https, &uri("https://b.example/"), &p, 11)),
            ErrorKind::TooManyRedirects
        );
        assert!(check(&https, &uri("https://b.example/"), &p, 10).is_ok());
        let allow = RedirectPolicy {
            allow_https_to_http: true,
            ..p
        };
        assert!(check(&https, &uri("http://a.example/"), &allow, 1).is_ok());
    }

    #[test]
    fn credentials_stay_within_one_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, loc("Bearer t"));
        h.insert(header::COOKIE, loc("a=b"));
        strip_for(
            &uri("https://a.example/x"),
            &uri("https://A.example:443/y"),
            &mut h,
        );
        assert_eq!(h.len(), 2);
        strip_for(
            &uri("https://a.example/x"),
            &uri("https://a.example:8443/y"),
            &mut h,
        );
        assert!(h.is_empty());
    }
}
