//! Property tests of resume splicing: `judge_response` appends a body only
//! when it is provably the same representation starting at the offset asked,
//! under a validator that vouches for a range.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use transfer_core::*;

fn etag() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(
        prop_oneof![Just("\"a\""), Just("\"b\""), Just("W/\"a\"")].prop_map(|s: &str| s.to_owned()),
    )
}

fn last_modified() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(
        prop_oneof![
            Just("Wed, 21 Oct 2015 07:28:00 GMT"),
            Just("Wed, 21 Oct 2015 07:28:01 GMT"),
        ]
        .prop_map(|s: &str| s.to_owned()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn never_splices_two_representations(
        old_tag in etag(),
        new_tag in etag(),
        old_date in last_modified(),
        new_date in last_modified(),
        old_total in proptest::option::of(1u64..1000),
        offset in 0u64..1000,
        status in prop_oneof![Just(200u16), Just(206), Just(416), Just(503), Just(204), Just(302)],
        first in 0u64..1000,
        len in 1u64..1000,
        complete in proptest::option::of(1u64..2000),
        lie in proptest::option::of(0u64..1000),
        allow_weak in any::<bool>(),
    ) {
        let mut headers = http::HeaderMap::new();
        if let Some(t) = &new_tag { headers.insert("etag", t.parse().unwrap()); }
        if let Some(d) = &new_date { headers.insert("last-modified", d.parse().unwrap()); }
        let last = first + len - 1;
        let complete_text = complete.map_or("*".to_owned(), |c| c.to_string());
        headers.insert("content-range", format!("bytes {first}-{last}/{complete_text}").parse().unwrap());
        if let Some(l) = lie { headers.insert("content-length", l.to_string().parse().unwrap()); }
        let mut old_headers = http::HeaderMap::new();
        if let Some(t) = &old_tag { old_headers.insert("etag", t.parse().unwrap()); }
        if let Some(d) = &old_date { old_headers.insert("last-modified", d.parse().unwrap()); }
        let resume = ResumeData {
            validator: Validator::from_headers(&old_headers, allow_weak),
            total_length: old_total,
            durable_offset: offset,
            ..ResumeData::default()
        };
        let status = http::StatusCode::from_u16(status).unwrap();
        let judged = judge_response(&resume, offset, status, &headers, allow_weak, Timestamp::EPOCH);
        match judged {
            Ok(Continuation::Append { offset: at, total, validator }) => {
                prop_assert_eq!(at, offset, "appends only at the offset asked");
                if offset > 0 {
                    prop_assert_eq!(status, http::StatusCode::PARTIAL_CONTENT);
                    prop_assert_eq!(first, offset);
                    prop_assert_eq!(&validator, &resume.validator, "same representation");
                    prop_assert!(
                        resume.validator.as_ref().is_some_and(|v| v.trusts_range(allow_weak)),
                        "a range only under a validator that vouches for it"
                    );
                    if let (Some(a), Some(b)) = (old_total, complete) { prop_assert_eq!(a, b); }
                    if let Some(l) = lie { prop_assert_eq!(l, len); }
                }
                if let (Some(t), Some(c)) = (total, complete)
                    && status == http::StatusCode::PARTIAL_CONTENT
                {
                    prop_assert_eq!(t, c);
                }
            }
            Ok(Continuation::RestartWithBody { .. }) => prop_assert_eq!(status, http::StatusCode::OK),
            Ok(Continuation::AlreadyComplete { total }) => {
                prop_assert_eq!(status, http::StatusCode::RANGE_NOT_SATISFIABLE);
                prop_assert_eq!(total, offset);
                prop_assert!(resume.validator.as_ref().is_some_and(|v| v.trusts_range(allow_weak)));
            }
            Ok(Continuation::Rerequest { .. }) => {}
            Err(e) => prop_assert!(!status.is_success() || status == http::StatusCode::NO_CONTENT, "{e}"),
        }
    }
}
