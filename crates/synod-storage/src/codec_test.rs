//! Codec tests: exact layouts, round trips over random values, and inputs
//! that are truncated, garbled or valid-but-wrong never panic and never
//! decode to something else.

use super::*;
use proptest::prelude::*;

fn record(slot: u64, value: Value<Bytes>, chosen: bool) -> SlotRecord<Bytes> {
    SlotRecord {
        slot: Slot(slot),
        ballot: Ballot {
            round: 7,
            node: NodeId(3),
        },
        value,
        chosen,
    }
}

fn batch(commands: &[&[u8]]) -> Value<Bytes> {
    let commands: Vec<Bytes> = commands.iter().map(|c| Bytes::copy_from_slice(c)).collect();
    Value::Batch(Arc::from(commands))
}

/// Pins the record layout byte by byte: a change here is a format change and
/// needs a new FORMAT_VERSION.
#[test]
fn record_layout_is_exactly_as_documented() {
    let mut buf = Vec::new();
    encode_record(&mut buf, &record(2, batch(&[b"ab", b""]), true));
    let mut expected = vec![1, b'R'];
    expected.extend_from_slice(&2u64.to_le_bytes());
    expected.extend_from_slice(&7u64.to_le_bytes());
    expected.extend_from_slice(&3u64.to_le_bytes());
    expected.extend_from_slice(&[1, VALUE_BATCH]);
    expected.extend_from_slice(&2u32.to_le_bytes());
    expected.extend_from_slice(&2u32.to_le_bytes());
    expected.extend_from_slice(b"ab");
    expected.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&expected);
    expected.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(buf, expected);
}

/// F1: the format record's layout is frozen forever.
#[test]
fn format_layout_is_frozen() {
    let mut buf = Vec::new();
    encode_format(&mut buf, 1);
    let mut expected = vec![1, b'F', 1, 0, 0, 0];
    let crc = crc32fast::hash(&expected);
    expected.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(buf, expected);
    assert_eq!(decode_format(&buf), Ok(1));
}

#[test]
fn noop_empty_batch_and_empty_command_stay_distinct() {
    let mut buf = Vec::new();
    for value in [Value::Noop, batch(&[]), batch(&[b""])] {
        let r = record(1, value, false);
        encode_record(&mut buf, &r);
        assert_eq!(decode_record(&buf), Ok(r));
    }
}

#[test]
fn every_single_byte_corruption_is_detected() {
    let mut buf = Vec::new();
    encode_record(&mut buf, &record(9, batch(&[b"hello", b"world"]), true));
    for i in 0..buf.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut bad = buf.clone();
            bad[i] ^= mask;
            assert!(
                decode_record(&bad).is_err(),
                "flip {mask:#x} at byte {i} went undetected"
            );
        }
    }
}

#[test]
fn a_value_of_another_kind_is_rejected_despite_a_valid_checksum() {
    let mut buf = Vec::new();
    encode_acceptor(&mut buf, &AcceptorState::default());
    assert!(matches!(
        decode_record(&buf),
        Err(DecodeError::Kind {
            expected: b'R',
            found: b'A'
        })
    ));
}

#[test]
fn buffer_is_reused_across_values() {
    let mut buf = Vec::new();
    encode_record(&mut buf, &record(1, batch(&[&[7u8; 1000]]), false));
    let capacity = buf.capacity();
    let small = record(2, Value::Noop, true);
    encode_record(&mut buf, &small);
    assert_eq!(buf.capacity(), capacity);
    assert_eq!(decode_record(&buf), Ok(small));
}

/// Wraps `body` in a valid envelope, so that garbled bodies reach the field
/// parser instead of stopping at the checksum.
fn envelope(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut data = vec![CODEC_VERSION, kind as u8];
    data.extend_from_slice(body);
    let crc = crc32fast::hash(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    data
}

#[test]
fn a_huge_command_count_is_rejected_before_allocating() {
    let mut body = Vec::new();
    body.extend_from_slice(&[0u8; 24]);
    body.extend_from_slice(&[0, VALUE_BATCH]);
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_record(&envelope(Kind::Record, &body)),
        Err(DecodeError::Truncated {
            field: "commands",
            ..
        })
    ));
}

fn arb_membership() -> impl Strategy<Value = Membership> {
    (
        prop::collection::btree_set(1u64..20, 1..6),
        prop::collection::btree_set(20u64..30, 0..3),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(voters, observers, q)| {
            let voters: Vec<NodeId> = voters.into_iter().map(NodeId).collect();
            let observers: Vec<NodeId> = observers.into_iter().map(NodeId).collect();
            let n = voters.len();
            let mut m = Membership::new(&voters, &observers);
            // Any flexible pair with Q1 + Q2 = N + 1.
            m.phase1_quorum = 1 + q.index(n);
            m.phase2_quorum = n + 1 - m.phase1_quorum;
            m
        })
}

fn arb_configuration() -> impl Strategy<Value = Configuration> {
    prop_oneof![
        arb_membership().prop_map(Configuration::Stable),
        (arb_membership(), arb_membership())
            .prop_map(|(old, new)| Configuration::Joint { old, new }),
    ]
}

/// Pins the membership layout byte by byte.
#[test]
fn membership_layout_is_exactly_as_documented() {
    let m = Membership::new(&[NodeId(1), NodeId(2)], &[NodeId(9)]);
    let mut buf = Vec::new();
    encode_membership(
        &mut buf,
        &MembershipRecord {
            slot: Slot(5),
            configuration: Configuration::Stable(m),
        },
    );
    let mut expected = vec![1, b'M'];
    expected.extend_from_slice(&5u64.to_le_bytes());
    expected.push(SHAPE_STABLE);
    expected.extend_from_slice(&2u64.to_le_bytes());
    expected.extend_from_slice(&2u64.to_le_bytes());
    expected.extend_from_slice(&2u32.to_le_bytes());
    expected.extend_from_slice(&1u64.to_le_bytes());
    expected.extend_from_slice(&2u64.to_le_bytes());
    expected.extend_from_slice(&1u32.to_le_bytes());
    expected.extend_from_slice(&9u64.to_le_bytes());
    let crc = crc32fast::hash(&expected);
    expected.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(buf, expected);
}

/// A membership that breaks a rule is corrupt data, even with a valid
/// checksum.
#[test]
fn an_invalid_membership_is_rejected() {
    let mut body = Vec::new();
    body.extend_from_slice(&5u64.to_le_bytes());
    body.push(SHAPE_STABLE);
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(&2u64.to_le_bytes());
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        decode_membership(&envelope(Kind::Membership, &body)),
        Err(DecodeError::Invalid { .. })
    ));
}

fn arb_value() -> impl Strategy<Value = Value<Bytes>> {
    prop_oneof![
        1 => Just(Value::Noop),
        1 => arb_configuration().prop_map(Value::Membership),
        4 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..6).prop_map(
            |commands| {
                let commands: Vec<Bytes> = commands.into_iter().map(Bytes::from).collect();
                Value::Batch(Arc::from(commands))
            }
        ),
    ]
}

fn arb_record() -> impl Strategy<Value = SlotRecord<Bytes>> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        arb_value(),
        any::<bool>(),
    )
        .prop_map(|(slot, round, node, value, chosen)| SlotRecord {
            slot: Slot(slot),
            ballot: Ballot {
                round,
                node: NodeId(node),
            },
            value,
            chosen,
        })
}

fn arb_acceptor() -> impl Strategy<Value = AcceptorState> {
    any::<[u64; 5]>().prop_map(|[round, node, snapshot, commit, applied]| AcceptorState {
        promised: Ballot {
            round,
            node: NodeId(node),
        },
        snapshot: Slot(snapshot),
        commit: Slot(commit),
        applied: Slot(applied),
    })
}

proptest! {
    #[test]
    fn records_round_trip(r in arb_record()) {
        let mut buf = Vec::new();
        encode_record(&mut buf, &r);
        prop_assert_eq!(decode_record(&buf), Ok(r));
    }

    #[test]
    fn acceptor_identity_and_format_round_trip(
        state in arb_acceptor(),
        cluster_id in any::<u64>(),
        node_id in any::<u64>(),
        version in any::<u32>(),
    ) {
        let mut buf = Vec::new();
        encode_acceptor(&mut buf, &state);
        prop_assert_eq!(decode_acceptor(&buf), Ok(state));
        let identity = Identity { cluster_id, node_id };
        encode_identity(&mut buf, identity);
        prop_assert_eq!(decode_identity(&buf), Ok(identity));
        encode_format(&mut buf, version);
        prop_assert_eq!(decode_format(&buf), Ok(version));
    }

    #[test]
    fn membership_records_round_trip(slot in any::<u64>(), configuration in arb_configuration()) {
        let record = MembershipRecord { slot: Slot(slot), configuration };
        let mut buf = Vec::new();
        encode_membership(&mut buf, &record);
        prop_assert_eq!(decode_membership(&buf), Ok(record));
    }

    #[test]
    fn every_truncation_is_an_error(r in arb_record(), cut in any::<prop::sample::Index>()) {
        let mut buf = Vec::new();
        encode_record(&mut buf, &r);
        let len = cut.index(buf.len());
        prop_assert!(decode_record(&buf[..len]).is_err());
    }

    #[test]
    fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..96)) {
        let _ = decode_record(&data);
        let _ = decode_acceptor(&data);
        let _ = decode_identity(&data);
        let _ = decode_format(&data);
        let _ = decode_membership(&data);
    }

    /// Garbled bodies inside valid envelopes exercise every field check; a
    /// body that decodes must re-encode to the same bytes (no two encodings
    /// of one value, so nothing decodes "almost right").
    #[test]
    fn garbled_bodies_never_panic_and_decode_canonically(
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let data = envelope(Kind::Record, &body);
        if let Ok(r) = decode_record(&data) {
            let mut again = Vec::new();
            encode_record(&mut again, &r);
            prop_assert_eq!(again, data);
        }
        let data = envelope(Kind::Membership, &body);
        if let Ok(m) = decode_membership(&data) {
            let mut again = Vec::new();
            encode_membership(&mut again, &m);
            prop_assert_eq!(again, data);
        }
        let data = envelope(Kind::Acceptor, &body);
        if let Ok(state) = decode_acceptor(&data) {
            let mut again = Vec::new();
            encode_acceptor(&mut again, &state);
            prop_assert_eq!(again, data);
        }
    }
}
