//! Property tests: specs, resume data, records and completions survive
//! encoding; foreign or newer data is refused with a typed error.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use transfer_core::*;

fn url() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        "[a-z]{1,10}(\\.[a-z]{2,5})?",
        proptest::option::of(1u16..),
        "(/[A-Za-z0-9_.~%-]{0,12}){0,4}",
        proptest::option::of("[a-z]=[0-9]{1,4}"),
    )
        .prop_map(|(tls, host, port, path, query)| {
            let scheme = if tls { "https" } else { "http" };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{path}{query}")
        })
}

fn spec() -> impl Strategy<Value = TaskSpec> {
    (
        url(),
        prop_oneof![
            "[a-zA-Z0-9 ._/-]{1,30}".prop_map(|p| TaskKind::Download {
                destination: Destination::Path(p.into())
            }),
            "[a-z0-9/]{1,30}".prop_map(|k| TaskKind::Download {
                destination: Destination::ObjectKey(k)
            }),
            (
                "[a-z/]{1,20}",
                proptest::option::of("[a-z]+/[a-z]+"),
                proptest::option::of((any::<u64>(), proptest::option::of(any::<u64>())))
            )
                .prop_map(|(p, ct, stamp)| {
                    TaskKind::Upload {
                        source: p.into(),
                        body: UploadBody::Multipart {
                            field: "file".into(),
                            file_name: "a.bin".into(),
                            content_type: ct,
                            fields: vec![("k".into(), "v é".into())],
                        },
                        stamp: stamp.map(|(len, modified_ns)| FileStamp { len, modified_ns }),
                    }
                }),
        ],
        0.0f32..=1.0,
        proptest::collection::vec(("x-[a-z]{1,8}", "[ -~]{0,20}"), 0..4),
        (
            any::<[bool; 3]>(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<[u8; 32]>()),
        ),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(".{0,12}"),
            proptest::option::of(any::<u64>()),
        ),
    )
        .prop_map(
            |(url, kind, priority, headers, (flags, size, digest), (begin, label, rate))| {
                let (mut b, stamped) = match kind {
                    TaskKind::Download { destination } => {
                        (TaskSpec::download(&url, destination), None)
                    }
                    TaskKind::Upload {
                        source,
                        body,
                        stamp,
                    } => (TaskSpec::upload(&url, source, body), stamp),
                };
                b = b
                    .priority(priority)
                    .discretionary(flags[0])
                    .requires_charging(flags[1])
                    .requires_unmetered(flags[2]);
                for (k, v) in headers {
                    b = b.header(k, v.trim().to_owned());
                }
                if let Some(s) = size {
                    b = b.expected_size(s);
                }
                if let Some(d) = digest {
                    b = b.expected_sha256(hex(&d));
                }
                if let Some(t) = begin {
                    b = b.earliest_begin(Timestamp::from_millis(t));
                }
                if let Some(l) = label {
                    b = b.label(l).group("g").key("k1");
                }
                if let Some(r) = rate {
                    b = b.max_rate(r);
                }
                let mut spec = b.build().expect("generated specs are valid");
                if let TaskKind::Upload { stamp, .. } = &mut spec.kind {
                    *stamp = stamped;
                }
                spec
            },
        )
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn validator() -> impl Strategy<Value = Option<Validator>> {
    proptest::option::of(prop_oneof![
        "\"[a-z0-9]{0,10}\"".prop_map(Validator::StrongETag),
        "\"[a-z0-9]{0,10}\"".prop_map(Validator::WeakETag),
        Just(Validator::LastModified(
            "Wed, 21 Oct 2015 07:28:00 GMT".into()
        )),
    ])
}

fn resume() -> impl Strategy<Value = ResumeData> {
    (
        validator(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        proptest::option::of(prop_oneof![
            "[a-z/.]{1,20}".prop_map(|p| PartialLocation::File(p.into())),
            (
                "[a-z]{1,9}",
                "[A-Za-z0-9]{1,20}",
                proptest::collection::vec((1u32..10_000, "[a-f0-9]{8}", any::<u64>()), 0..5),
                proptest::option::of("[a-f0-9]{16}"),
            )
                .prop_map(|(key, upload_id, parts, tag)| PartialLocation::Multipart {
                    key,
                    upload_id,
                    parts: parts
                        .into_iter()
                        .map(|(number, id, len)| PartRecord { number, id, len })
                        .collect(),
                    tag,
                }),
        ]),
        proptest::collection::vec(
            (
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(0u16..600),
            ),
            0..20,
        ),
    )
        .prop_map(
            |(validator, total_length, durable_offset, partial, attempts)| {
                let mut r = ResumeData {
                    validator,
                    total_length,
                    durable_offset,
                    partial,
                    attempts: vec![],
                };
                for (attempt, at, from, status) in attempts {
                    r.record_attempt(AttemptRecord {
                        attempt,
                        started_at: Timestamp::from_millis(at),
                        from_offset: from,
                        error: status.map(|s| {
                            TransferError::status(s, Some(Duration::from_millis(u64::from(s))))
                        }),
                    });
                }
                r
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn specs_round_trip(spec in spec()) {
        let json = serde_json::to_vec(&spec).unwrap();
        let back: TaskSpec = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(back, spec);
    }

    #[test]
    fn resume_data_round_trips_and_keeps_a_bounded_history(r in resume()) {
        prop_assert!(r.attempts.len() <= ResumeData::HISTORY);
        prop_assert_eq!(ResumeData::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn records_and_completions_round_trip(spec in spec(), r in resume(), id in any::<u64>(), seq in any::<u64>(), seed in any::<u64>()) {
        let mut state = TaskState::new(RetryPolicy::default(), seed);
        state.resume = r.clone();
        state.phase = Phase::Waiting(WaitReason::BackingOff { until: Timestamp::from_millis(seq), error: TransferError::status(503, None) });
        let record = TaskRecord { id: TaskId::from_u64(id), seq, created_at: Timestamp::from_millis(seq), spec, state, epoch: seq % 3, request: [None, Some(transfer_core::Request::Suspend), Some(transfer_core::Request::Cancel { keep_resume_data: true })][(seq % 3) as usize] };
        prop_assert_eq!(&TaskRecord::decode(&record.encode()).unwrap(), &record);
        // The version elsewhere than first (written by hand, or by another
        // writer): read the same.
        let value: serde_json::Value = serde_json::from_slice(&record.encode()).unwrap();
        let reordered = serde_json::to_vec(&value).unwrap();
        let leading = reordered.starts_with(br#"{"v""#);
        prop_assert!(!leading);
        prop_assert_eq!(TaskRecord::decode(&reordered).unwrap(), record);
        let completion = Completion {
            event: EventId::from_u64(seq),
            task: TaskId::from_u64(id),
            label: Some("x".into()),
            at: Timestamp::from_millis(id),
            outcome: if seq % 2 == 0 {
                Outcome::Failed { error: TransferError::new(ErrorKind::Tls(TlsFailure::Expired), "cert") }
            } else {
                Outcome::Cancelled { resume: Some(r) }
            },
            response: None,
        };
        prop_assert_eq!(Completion::decode(&completion.encode()).unwrap(), completion);
    }

    #[test]
    fn ids_print_and_parse_back(v in any::<u64>()) {
        let id = TaskId::from_u64(v);
        prop_assert_eq!(id.to_string().parse::<TaskId>().unwrap(), id);
    }
}

#[test]
fn newer_or_foreign_data_is_refused_with_a_typed_error() {
    let mut bytes = ResumeData::default().encode();
    let text = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("\"v\":1", "\"v\":99");
    assert!(matches!(
        ResumeData::decode(text.as_bytes()),
        Err(DecodeError::UnsupportedVersion {
            found: 99,
            supported: 1
        })
    ));
    bytes.truncate(bytes.len() / 2);
    assert!(matches!(
        ResumeData::decode(&bytes),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        TaskRecord::decode(b"\x00\x01garbage"),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        TaskRecord::decode(b"{\"v\":0}"),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
    assert!(matches!(
        TaskRecord::decode(b"{\"v\":0,\"id\":1}"),
        Err(DecodeError::UnsupportedVersion { found: 0, .. })
    ));
}

#[test]
fn response_summaries_keep_binary_header_values() {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-bin",
        http::HeaderValue::from_bytes(b"\xff\xfe ok").unwrap(),
    );
    headers.append("set-cookie", http::HeaderValue::from_static("a=1"));
    headers.append("set-cookie", http::HeaderValue::from_static("b=2"));
    let c = Completion {
        event: EventId::from_u64(1),
        task: TaskId::from_u64(2),
        label: None,
        at: Timestamp::EPOCH,
        outcome: Outcome::Completed { bytes: 3 },
        response: Some(ResponseSummary {
            status: http::StatusCode::CREATED,
            headers,
            body: bytes::Bytes::from_static(b"\x00done"),
        }),
    };
    assert_eq!(Completion::decode(&c.encode()).unwrap(), c);
}
