//! Following redirects, one way for every transport (DESIGN §4): at most the
//! policy's limit, only to http(s), never https→http unless allowed,
//! credentials dropped when the origin changes, methods rewritten as
//! browsers do, and the [`RedirectHook`] asked about each hop.
//!
//! A `Location`'s scheme is checked before anything else is made of it; a
//! redirect to another scheme (`file:`), or one whose `Location` is not a
//! URL, fails with [`ErrorKind::RedirectRefused`], which is permanent: the
//! server would answer the same to a retry. Errors quote a `Location` cut
//! to a few hundred bytes ([`echo`]).
//!
//! The decisions are pure; [`follow`] is the one loop that applies them. A
//! transport hands it a [`HopSender`], a way to send one request on the wire
//! and read its head, and the loop sends hop after hop until an answer is
//! not a redirect to follow. HTTP/1.1, HTTP/2 and HTTP/3 differ only in how
//! one hop travels.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::BodyExt;

use crate::error::{ErrorKind, TransferError, echo};
use crate::headers;
use crate::transport::{
    ByteCount, RedirectDecision, RedirectHook, RedirectPolicy, RequestBody, RequestMetrics,
    TransportResponse,
};

/// A request as it stands at the current hop: what a [`HopSender`] sends.
#[derive(Debug)]
pub struct Outgoing {
    /// The method (a 303 turns it into `GET`).
    pub method: Method,
    /// The URL of this hop.
    pub uri: Uri,
    /// The headers (credentials are dropped when the origin changes).
    pub headers: HeaderMap,
    /// The body, replayed on a 307/308 and dropped when the method becomes
    /// `GET`.
    pub body: RequestBody,
}

impl From<http::Request<RequestBody>> for Outgoing {
    fn from(request: http::Request<RequestBody>) -> Self {
        let (parts, body) = request.into_parts();
        Outgoing {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        }
    }
}

/// One hop's answer, as its transport read it: the response head with a
/// streaming body, and how the request went.
#[derive(Debug)]
pub struct Answer<B> {
    /// Status, headers and the body as it streams in.
    pub response: http::Response<B>,
    /// The metrics of this hop; [`follow`] fills in
    /// [`redirects`](RequestMetrics::redirects).
    pub metrics: RequestMetrics,
    /// Body bytes received so far; grows as the body is read.
    pub received: ByteCount,
}

/// How a transport sends one request, with no redirect followed: what
/// [`follow`] needs of it.
pub trait HopSender: Sync {
    /// The response body this transport streams.
    type Body: http_body::Body<Data = Bytes, Error = TransferError> + Send + 'static;

    /// Sends `out` and returns once its response head has arrived.
    fn send_hop(
        &self,
        out: &Outgoing,
    ) -> impl Future<Output = Result<Answer<Self::Body>, TransferError>> + Send;

    /// Lets go of the body of a redirect that is being followed, before the
    /// next hop is sent. The default drops it; a transport whose connection
    /// can carry the next hop once the body is read may read it first.
    fn discard(&self, body: Self::Body) -> impl Future<Output = ()> + Send {
        async move { drop(body) }
    }
}

/// Sends `request` through `sender`, following the redirects `policy`
/// allows and `hook` (if any) accepts, and returns the answer of the last
/// hop with the URL that gave it. A redirect refused by the policy or the
/// hook, or one whose `Location` is not an http(s) URL, fails the request
/// with [`ErrorKind::RedirectRefused`] (permanent).
pub async fn follow<S: HopSender>(
    sender: &S,
    request: http::Request<RequestBody>,
    policy: &RedirectPolicy,
    hook: Option<&Arc<dyn RedirectHook>>,
) -> Result<TransportResponse, TransferError> {
    let mut out = Outgoing::from(request);
    let mut redirects = Redirects::new(policy, hook);
    loop {
        let answer = sender.send_hop(&out).await?;
        let status = answer.response.status();
        let location = answer.response.headers().get(header::LOCATION).cloned();
        let uri = out.uri.clone();
        if redirects.next(status, location.as_ref(), &mut out).await? {
            sender.discard(answer.response.into_body()).await;
            continue;
        }
        let Answer {
            response,
            mut metrics,
            received,
        } = answer;
        metrics.redirects = redirects.hops;
        return Ok(TransportResponse {
            response: response.map(BodyExt::boxed_unsync),
            url: uri,
            metrics,
            received,
        });
    }
}

/// The redirects of one request so far, judged under its policy and hook.
struct Redirects<'a> {
    policy: &'a RedirectPolicy,
    hook: Option<&'a Arc<dyn RedirectHook>>,
    /// Redirects followed so far.
    hops: u32,
}

impl<'a> Redirects<'a> {
    fn new(policy: &'a RedirectPolicy, hook: Option<&'a Arc<dyn RedirectHook>>) -> Self {
        Redirects {
            policy,
            hook,
            hops: 0,
        }
    }

    /// Judges a response to `out`: `Ok(true)` when it is a redirect to
    /// follow and `out` now describes the next hop, `Ok(false)` when the
    /// response is the answer (and `out` is untouched), an error when the
    /// redirect is refused.
    async fn next(
        &mut self,
        status: StatusCode,
        location: Option<&HeaderValue>,
        out: &mut Outgoing,
    ) -> Result<bool, TransferError> {
        let Some(hop) = hop(status, &out.method, &out.uri, location)? else {
            return Ok(false);
        };
        self.hops += 1;
        let from = &out.uri;
        check(from, &hop.to, self.policy, self.hops)?;
        let mut to = hop.to;
        if let Some(hook) = self.hook {
            match hook.redirect(from, &to, status).await {
                RedirectDecision::Follow => {}
                RedirectDecision::FollowTo(other) => {
                    check(from, &other, self.policy, self.hops)?;
                    to = other;
                }
                RedirectDecision::Refuse => {
                    return Err(refused(format!(
                        "redirect from {} to {} vetoed",
                        echo(&from.to_string()),
                        echo(&to.to_string())
                    )));
                }
            }
        }
        headers::drop_credentials_across_origins(from, &to, &mut out.headers);
        if hop.drop_body {
            out.body = RequestBody::empty();
            headers::drop_body_headers(&mut out.headers);
        }
        tracing::debug!(uri = %from, %to, %status, "following redirect");
        out.method = hop.method;
        out.uri = to;
        Ok(true)
    }
}

/// One redirect to follow.
#[derive(Debug, PartialEq, Eq)]
struct Hop {
    to: Uri,
    method: Method,
    /// 303, and 301/302 after a POST, turn the request into a body-less GET.
    drop_body: bool,
}

/// A refused redirect: permanent, since the same answer comes again.
fn refused(detail: String) -> TransferError {
    TransferError::new(ErrorKind::RedirectRefused, detail)
}

/// The scheme a URL reference names, if it names one (RFC 3986 §3.1:
/// a letter, then letters, digits, `+`, `-` or `.`, then `:`), read as a
/// URL parser does: surrounding spaces and control characters and inner
/// tabs and newlines ignored.
fn scheme_of(reference: &str) -> Option<String> {
    let mut scheme = String::new();
    let trimmed = reference.trim_matches(|c: char| c <= ' ');
    for c in trimmed.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')) {
        match c {
            ':' if !scheme.is_empty() => return Some(scheme),
            c if c.is_ascii_alphabetic() => scheme.push(c.to_ascii_lowercase()),
            c if !scheme.is_empty() && (c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) => {
                scheme.push(c);
            }
            _ => return None,
        }
    }
    None
}

/// Refuses a scheme other than http(s).
fn http_scheme(scheme: &str) -> Result<(), TransferError> {
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        return Ok(());
    }
    Err(refused(format!(
        "redirect to a non-HTTP scheme ({}) refused",
        echo(scheme)
    )))
}

/// The hop a response asks for, `None` when it is not a redirect to follow
/// (not a 301/302/303/307/308, or no `Location`). The `Location`'s scheme
/// is checked before anything else is made of it; one that is not http(s),
/// or that is not a URL at all, is refused for good (the server would
/// answer the same again).
fn hop(
    status: StatusCode,
    method: &Method,
    from: &Uri,
    location: Option<&HeaderValue>,
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
        .map_err(|_| refused("the redirect's Location is not text".to_owned()))?;
    let to = resolve(from, location, "redirect Location")?;
    let to_get = code == 303 && *method != Method::HEAD
        || matches!(code, 301 | 302) && *method == Method::POST;
    Ok(Some(Hop {
        to,
        method: if to_get { Method::GET } else { method.clone() },
        drop_body: to_get,
    }))
}

/// `location` resolved against `from`, fragment dropped; refused unless it
/// is an http(s) URL. `what` names it in errors.
fn resolve(from: &Uri, location: &str, what: &str) -> Result<Uri, TransferError> {
    if let Some(scheme) = scheme_of(location) {
        http_scheme(&scheme)?;
    }
    let base = url::Url::parse(&from.to_string()).map_err(|e| {
        TransferError::new(
            ErrorKind::InvalidRequest,
            format!("request URL {}: {e}", echo(&from.to_string())),
        )
    })?;
    let mut joined = base
        .join(location)
        .map_err(|e| refused(format!("{what} {} is not a URL: {e}", echo(location))))?;
    // What the parser made of it, which is what would be asked.
    http_scheme(joined.scheme())?;
    joined.set_fragment(None);
    joined
        .as_str()
        .parse()
        .map_err(|e| refused(format!("{what} {}: {e}", echo(location))))
}

/// Where a `Location` outside a redirect leads (such as the upload resource
/// a resumable upload's creation names), held to the rules a redirect is:
/// resolved against `from`, only http(s), and never from https to http
/// unless `policy` allows it. As for a redirect, another origin is allowed;
/// a caller that sends credentials there drops them first
/// ([`drop_credentials_across_origins`](crate::headers::drop_credentials_across_origins)).
/// A refusal is [`ErrorKind::RedirectRefused`] (permanent), quoting the
/// `Location` cut to a few hundred bytes.
pub fn location(from: &Uri, location: &str, policy: &RedirectPolicy) -> Result<Uri, TransferError> {
    let to = resolve(from, location, "Location").and_then(|to| {
        downgrade(from, &to, policy)?;
        Ok(to)
    });
    to.map_err(|e| {
        TransferError::new(
            e.kind(),
            format!("{} (Location {})", e.detail(), echo(location)),
        )
    })
}

/// Refuses an https→http step unless the policy allows it.
fn downgrade(from: &Uri, to: &Uri, policy: &RedirectPolicy) -> Result<(), TransferError> {
    if from.scheme_str() == Some("https")
        && to.scheme_str() == Some("http")
        && !policy.allow_https_to_http
    {
        return Err(refused(format!(
            "redirect from https to http ({}) refused",
            echo(&to.to_string())
        )));
    }
    Ok(())
}

/// Refuses hops the policy does not allow: the `hops`-th redirect, from
/// `from` to `to`.
fn check(from: &Uri, to: &Uri, policy: &RedirectPolicy, hops: u32) -> Result<(), TransferError> {
    http_scheme(to.scheme_str().unwrap_or("none"))?;
    if hops > policy.max {
        return Err(TransferError::new(
            ErrorKind::TooManyRedirects,
            format!(
                "more than {} redirects (last to {})",
                policy.max,
                echo(&to.to_string())
            ),
        ));
    }
    downgrade(from, to, policy)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::pin;
    use std::sync::Mutex;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use async_trait::async_trait;
    use http_body_util::Full;

    use super::*;
    use crate::transport::{Protocol, ResponseBody};

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn loc(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    /// Runs a future that never waits on anything outside it (the fakes
    /// below answer at once).
    fn run<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    fn request(method: Method, url: &str, body: RequestBody) -> Outgoing {
        let mut out = Outgoing::from(
            http::Request::builder()
                .method(method)
                .uri(url)
                .header(header::AUTHORIZATION, "Bearer t")
                .body(body)
                .unwrap(),
        );
        if !out.body.is_empty() {
            out.headers.insert(header::CONTENT_TYPE, loc("text/plain"));
        }
        out
    }

    /// A hook that answers every hop with one decision and records them.
    struct Hook {
        decision: RedirectDecision,
        asked: Mutex<Vec<(Uri, Uri, StatusCode)>>,
    }

    impl Hook {
        fn new(decision: RedirectDecision) -> Arc<Hook> {
            Arc::new(Hook {
                decision,
                asked: Mutex::new(Vec::new()),
            })
        }
    }

    #[async_trait]
    impl RedirectHook for Hook {
        async fn redirect(&self, from: &Uri, to: &Uri, status: StatusCode) -> RedirectDecision {
            let mut asked = self.asked.lock().unwrap();
            asked.push((from.clone(), to.clone(), status));
            self.decision.clone()
        }
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

    /// A `Location` that is not a URL will not become one on a retry: the
    /// request fails at once, for good.
    #[test]
    fn a_location_that_is_not_a_url_is_refused_for_good() {
        let from = uri("http://a.example/");
        let binary = HeaderValue::from_bytes(b"/caf\xe9").unwrap();
        for location in [
            binary,
            loc("http://[::1"),
            loc("https://"),
            loc("http://a b/"),
        ] {
            let e = hop(StatusCode::FOUND, &Method::GET, &from, Some(&location)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::RedirectRefused, "{location:?}: {e}");
            assert!(!e.is_retryable(), "{location:?}");
        }
    }

    /// A redirect to another scheme is refused before anything else is
    /// made of it: before the hook is asked, before the hop counts, and
    /// whether or not the rest of the URL would parse.
    #[test]
    fn a_redirect_to_another_scheme_is_refused_at_once() {
        for location in [
            "file:///etc/passwd",
            "FILE:///etc/passwd",
            "file://[bad/etc/passwd",
            "ftp://a.example/f",
            "javascript:alert(1)",
            "data:text/plain,x",
            "\u{20}file:///etc/passwd",
            "fi\tle:///etc/passwd",
        ] {
            let sender = Scripted::new([Ok((StatusCode::FOUND, Some(location.to_owned())))]);
            let hook = Hook::new(RedirectDecision::Follow);
            let as_dyn: Arc<dyn RedirectHook> = hook.clone();
            let request = http::Request::builder()
                .uri("https://a.example/f")
                .body(RequestBody::empty())
                .unwrap();
            let policy = RedirectPolicy::default();
            let e = run(follow(&sender, request, &policy, Some(&as_dyn))).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::RedirectRefused, "{location:?}: {e}");
            assert!(!e.is_retryable(), "{location:?}");
            assert_eq!(sender.sent.lock().unwrap().len(), 1, "{location:?}");
            assert!(hook.asked.lock().unwrap().is_empty(), "{location:?}");
        }
    }

    /// However long the `Location` a server sends, an error quotes a few
    /// hundred bytes of it: errors are shown and stored.
    #[test]
    fn a_huge_location_is_cut_in_errors() {
        let huge = "a".repeat(200 << 10);
        let from = uri("https://a.example/f");
        let locations = [
            format!("http://[{huge}"),
            format!("file:///{huge}"),
            format!("{huge}:x"),
            format!("http://b.example/{huge}"),
        ];
        for location in &locations {
            let sender = Scripted::new([Ok((StatusCode::FOUND, Some(location.clone())))]);
            let request = http::Request::builder()
                .uri(from.clone())
                .body(RequestBody::empty())
                .unwrap();
            let e = run(follow(&sender, request, &RedirectPolicy::default(), None)).unwrap_err();
            let shown = e.to_string();
            assert!(
                shown.len() < 1024,
                "{} bytes: {}…",
                shown.len(),
                &shown[..200]
            );
            assert_eq!(e.kind(), ErrorKind::RedirectRefused, "{}…", &shown[..200]);
        }
        // Refusals of a URL that parses quote it cut too (a `Uri` holds
        // less than 64 KiB).
        let path = "a".repeat(60 << 10);
        let long = uri(&format!("https://b.example/{path}"));
        let p = RedirectPolicy::default();
        for e in [
            check(&from, &long, &p, 11).unwrap_err(),
            check(&long, &uri(&format!("http://c.example/{path}")), &p, 1).unwrap_err(),
        ] {
            assert!(e.to_string().len() < 1024, "{} bytes", e.to_string().len());
        }
        let hook: Arc<dyn RedirectHook> = Hook::new(RedirectDecision::Refuse);
        let mut redirects = Redirects::new(&p, Some(&hook));
        let mut out = request(Method::GET, "https://a.example/f", RequestBody::empty());
        let far = loc(&format!("https://b.example/{path}"));
        let e = run(redirects.next(StatusCode::FOUND, Some(&far), &mut out)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RedirectRefused);
        assert!(e.to_string().len() < 1024, "{} bytes", e.to_string().len());
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
        assert!(check(&uri("http://a.example/"), &https, &p, 1).is_ok());
    }

    #[test]
    fn a_303_turns_the_request_into_a_bodyless_get() {
        let policy = RedirectPolicy::default();
        let mut redirects = Redirects::new(&policy, None);
        let mut out = request(
            Method::POST,
            "https://a.example/form",
            RequestBody::bytes("x=1"),
        );
        let followed =
            run(redirects.next(StatusCode::SEE_OTHER, Some(&loc("/done")), &mut out)).unwrap();
        assert!(followed);
        assert_eq!(out.method, Method::GET);
        assert_eq!(out.uri, uri("https://a.example/done"));
        assert!(out.body.is_empty());
        assert!(!out.headers.contains_key(header::CONTENT_TYPE));
        assert!(
            out.headers.contains_key(header::AUTHORIZATION),
            "same origin keeps credentials"
        );
        assert_eq!(redirects.hops, 1);
    }

    #[test]
    fn a_307_replays_the_body_to_the_next_origin_without_credentials() {
        let policy = RedirectPolicy::default();
        let mut redirects = Redirects::new(&policy, None);
        let mut out = request(
            Method::PUT,
            "https://a.example/up",
            RequestBody::bytes("data"),
        );
        let followed = run(redirects.next(
            StatusCode::TEMPORARY_REDIRECT,
            Some(&loc("https://b.example/up")),
            &mut out,
        ))
        .unwrap();
        assert!(followed);
        assert_eq!(out.method, Method::PUT);
        assert_eq!(out.body, RequestBody::bytes("data"));
        assert!(out.headers.contains_key(header::CONTENT_TYPE));
        assert!(!out.headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn an_answer_leaves_the_request_as_it_was() {
        let policy = RedirectPolicy::default();
        let mut redirects = Redirects::new(&policy, None);
        let mut out = request(Method::GET, "https://a.example/f", RequestBody::empty());
        let followed = run(redirects.next(StatusCode::OK, Some(&loc("/x")), &mut out)).unwrap();
        assert!(!followed);
        assert_eq!(out.uri, uri("https://a.example/f"));
        assert!(out.headers.contains_key(header::AUTHORIZATION));
        assert_eq!(redirects.hops, 0);
    }

    #[test]
    fn the_hook_is_asked_and_may_veto() {
        let policy = RedirectPolicy::default();
        let hook = Hook::new(RedirectDecision::Refuse);
        let as_dyn: Arc<dyn RedirectHook> = hook.clone();
        let mut redirects = Redirects::new(&policy, Some(&as_dyn));
        let mut out = request(Method::GET, "https://a.example/f", RequestBody::empty());
        let e = run(redirects.next(StatusCode::FOUND, Some(&loc("/g")), &mut out)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RedirectRefused);
        assert_eq!(
            *hook.asked.lock().unwrap(),
            vec![(
                uri("https://a.example/f"),
                uri("https://a.example/g"),
                StatusCode::FOUND
            )]
        );
        assert_eq!(out.uri, uri("https://a.example/f"));
    }

    #[test]
    fn a_rewritten_hop_is_held_to_the_policy_too() {
        let policy = RedirectPolicy::default();
        let rewrite = |to: &str| {
            let hook: Arc<dyn RedirectHook> = Hook::new(RedirectDecision::FollowTo(uri(to)));
            let mut redirects = Redirects::new(&policy, Some(&hook));
            let mut out = request(Method::GET, "https://a.example/f", RequestBody::empty());
            run(redirects.next(StatusCode::FOUND, Some(&loc("/g")), &mut out)).map(|_| out)
        };
        let out = rewrite("https://mirror.example/g").unwrap();
        assert_eq!(out.uri, uri("https://mirror.example/g"));
        assert!(
            !out.headers.contains_key(header::AUTHORIZATION),
            "credentials stay with the first origin"
        );
        assert_eq!(
            rewrite("http://mirror.example/g").unwrap_err().kind(),
            ErrorKind::RedirectRefused
        );
        assert_eq!(
            rewrite("ftp://mirror.example/g").unwrap_err().kind(),
            ErrorKind::RedirectRefused
        );
    }

    /// What a scripted hop answers: a status and a `Location`, or an error.
    type Script = Result<(StatusCode, Option<String>), TransferError>;

    /// A transport that answers from a script and records what it was sent
    /// and what it was told to discard.
    struct Scripted {
        answers: Mutex<VecDeque<Script>>,
        sent: Mutex<Vec<(Method, Uri, u64)>>,
        discarded: Mutex<u32>,
    }

    impl Scripted {
        fn new(answers: impl IntoIterator<Item = Script>) -> Scripted {
            Scripted {
                answers: Mutex::new(answers.into_iter().collect()),
                sent: Mutex::new(Vec::new()),
                discarded: Mutex::new(0),
            }
        }
    }

    fn metrics() -> RequestMetrics {
        RequestMetrics {
            protocol: Protocol::Http2,
            reused_connection: true,
            dns: None,
            connect: None,
            tls: None,
            first_byte: Duration::from_millis(3),
            bytes_sent: 0,
            redirects: 0,
            remote_addr: None,
            proxy: None,
        }
    }

    impl HopSender for Scripted {
        type Body = ResponseBody;

        async fn send_hop(&self, out: &Outgoing) -> Result<Answer<ResponseBody>, TransferError> {
            self.sent
                .lock()
                .unwrap()
                .push((out.method.clone(), out.uri.clone(), out.body.len()));
            let next = self.answers.lock().unwrap().pop_front();
            let (status, location) = next.unwrap_or(Ok((StatusCode::OK, None)))?;
            let mut response = http::Response::builder().status(status);
            if let Some(l) = location {
                response = response.header(header::LOCATION, l);
            }
            let body = Full::new(Bytes::from_static(b"body"))
                .map_err(|never| match never {})
                .boxed_unsync();
            Ok(Answer {
                response: response.body(body).unwrap(),
                metrics: metrics(),
                received: ByteCount::new(),
            })
        }

        async fn discard(&self, body: ResponseBody) {
            drop(body);
            *self.discarded.lock().unwrap() += 1;
        }
    }

    fn send(
        sender: &Scripted,
        method: Method,
        url: &str,
        policy: RedirectPolicy,
    ) -> Result<TransportResponse, TransferError> {
        let request = http::Request::builder()
            .method(method)
            .uri(url)
            .body(RequestBody::bytes("form"))
            .unwrap();
        run(follow(sender, request, &policy, None))
    }

    #[test]
    fn the_loop_follows_hop_after_hop_to_the_answer() {
        let sender = Scripted::new([
            Ok((
                StatusCode::MOVED_PERMANENTLY,
                Some("http://b.example/1".into()),
            )),
            Ok((StatusCode::TEMPORARY_REDIRECT, Some("/2".into()))),
            Ok((StatusCode::SEE_OTHER, Some("/3".into()))),
            Ok((StatusCode::OK, None)),
        ]);
        let response = send(
            &sender,
            Method::POST,
            "http://a.example/0",
            RedirectPolicy::default(),
        )
        .unwrap();
        assert_eq!(response.url, uri("http://b.example/3"));
        assert_eq!(response.response.status(), StatusCode::OK);
        assert_eq!(response.metrics.redirects, 3);
        assert_eq!(response.metrics.protocol, Protocol::Http2);
        assert_eq!(
            *sender.sent.lock().unwrap(),
            vec![
                (Method::POST, uri("http://a.example/0"), 4),
                (Method::GET, uri("http://b.example/1"), 0),
                (Method::GET, uri("http://b.example/2"), 0),
                (Method::GET, uri("http://b.example/3"), 0),
            ]
        );
        assert_eq!(*sender.discarded.lock().unwrap(), 3);
    }

    #[test]
    fn the_loop_stops_past_the_limit() {
        let sender = Scripted::new((0..20).map(|_| Ok((StatusCode::FOUND, Some("/again".into())))));
        let policy = RedirectPolicy {
            max: 2,
            ..RedirectPolicy::default()
        };
        let e = send(&sender, Method::GET, "https://a.example/", policy).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooManyRedirects);
        assert_eq!(sender.sent.lock().unwrap().len(), 3);
        assert_eq!(*sender.discarded.lock().unwrap(), 2);
    }

    #[test]
    fn the_loop_passes_on_a_failed_hop_and_an_unfollowed_redirect() {
        let lost = TransferError::new(ErrorKind::ConnectionLost, "reset");
        let sender = Scripted::new([Ok((StatusCode::FOUND, Some("/next".into()))), Err(lost)]);
        let e = send(
            &sender,
            Method::GET,
            "https://a.example/",
            RedirectPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionLost);

        let sender = Scripted::new([Ok((StatusCode::FOUND, None))]);
        let response = send(
            &sender,
            Method::GET,
            "https://a.example/",
            RedirectPolicy::default(),
        )
        .unwrap();
        assert_eq!(response.response.status(), StatusCode::FOUND);
        assert_eq!(response.metrics.redirects, 0);
        assert_eq!(*sender.discarded.lock().unwrap(), 0);
    }
}
