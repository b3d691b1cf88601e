//! Hostile input for the value codec (issue 12), beside the layout and
//! round-trip tests of `codec_test.rs`: a valid value of every kind,
//! damaged as a disk or a bug damages it (bits flipped, cut short, bytes
//! appended), is refused with a checksum or format error; damage behind a
//! recomputed checksum (a bug that wrote garbage, or a crafted file) is
//! refused by the field checks or decodes to the one value whose encoding
//! it is; and every length field is checked against the bytes that remain
//! before anything is allocated for it.
//!
//! Case counts follow `PROPTEST_CASES` for long runs (docs/fuzzing.md).

use super::*;
use proptest::prelude::*;
use proptest::test_runner::Config;

const KINDS: [Kind; 5] = [
    Kind::Format,
    Kind::Identity,
    Kind::Acceptor,
    Kind::Record,
    Kind::Membership,
];

/// `PROPTEST_CASES` when set, else `default`.
fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        ..Config::default()
    }
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
            let mut m = Membership::new(&voters, &observers);
            m.phase1_quorum = 1 + q.index(voters.len());
            m.phase2_quorum = voters.len() + 1 - m.phase1_quorum;
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

fn arb_record() -> impl Strategy<Value = SlotRecord<Bytes>> {
    let value = prop_oneof![
        Just(Value::Noop),
        arb_configuration().prop_map(Value::Membership),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..5).prop_map(|c| {
            let c: Vec<Bytes> = c.into_iter().map(Bytes::from).collect();
            Value::Batch(Arc::from(c))
        }),
    ];
    (any::<[u64; 3]>(), value, any::<bool>()).prop_map(|([slot, round, node], value, chosen)| {
        SlotRecord {
            slot: Slot(slot),
            ballot: Ballot {
                round,
                node: NodeId(node),
            },
            value,
            chosen,
        }
    })
}

/// A valid encoding of a value of each kind, and the kind.
fn arb_encoding() -> impl Strategy<Value = (Kind, Vec<u8>)> {
    let encoded = |kind: Kind, encode: &dyn Fn(&mut Vec<u8>)| {
        let mut buf = Vec::new();
        encode(&mut buf);
        (kind, buf)
    };
    prop_oneof![
        1 => any::<u32>().prop_map(move |v| encoded(Kind::Format, &|b| encode_format(b, v))),
        1 => any::<[u64; 2]>().prop_map(move |[cluster_id, node_id]| {
            let identity = Identity {
                cluster_id,
                node_id,
            };
            encoded(Kind::Identity, &|b| encode_identity(b, identity))
        }),
        1 => any::<[u64; 5]>().prop_map(move |[round, node, snapshot, commit, applied]| {
            let state = AcceptorState {
                promised: Ballot {
                    round,
                    node: NodeId(node),
                },
                snapshot: Slot(snapshot),
                commit: Slot(commit),
                applied: Slot(applied),
            };
            encoded(Kind::Acceptor, &|b| encode_acceptor(b, &state))
        }),
        3 => arb_record().prop_map(move |r| encoded(Kind::Record, &|b| encode_record(b, &r))),
        2 => (any::<u64>(), arb_configuration()).prop_map(move |(slot, configuration)| {
            let record = MembershipRecord {
                slot: Slot(slot),
                configuration,
            };
            encoded(Kind::Membership, &|b| encode_membership(b, &record))
        }),
    ]
}

/// Decodes `data` as a value of `kind`; the decoded value's encoding.
fn decode_as(kind: Kind, data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut buf = Vec::new();
    match kind {
        Kind::Format => encode_format(&mut buf, decode_format(data)?),
        Kind::Identity => encode_identity(&mut buf, decode_identity(data)?),
        Kind::Acceptor => encode_acceptor(&mut buf, &decode_acceptor(data)?),
        Kind::Record => encode_record(&mut buf, &decode_record(data)?),
        Kind::Membership => encode_membership(&mut buf, &decode_membership(data)?),
    }
    Ok(buf)
}

/// Recomputes the checksum of a value whose bytes were changed, so that
/// the field checks see them.
fn reseal(data: &mut [u8]) {
    if data.len() >= CRC_LEN {
        let end = data.len() - CRC_LEN;
        let crc = crc32fast::hash(&data[..end]);
        data[end..].copy_from_slice(&crc.to_le_bytes());
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    /// A little-endian u32 written over four bytes: where a length field
    /// sits, a length the value cannot hold.
    Word(prop::sample::Index, u32),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>;
    prop_oneof![
        3 => (at(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, 1 << bit)),
        2 => (at(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        2 => (at(), prop_oneof![
            Just(u32::MAX),
            Just(1 << 31),
            Just(1 << 20),
            0u32..64,
            any::<u32>(),
        ]).prop_map(|(i, w)| Mutation::Word(i, w)),
        1 => (at(), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (at(), 1usize..9).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => at().prop_map(Mutation::Truncate),
    ]
}

fn mutate(data: &mut Vec<u8>, m: &Mutation) {
    let len = data.len();
    match m {
        Mutation::Flip(i, mask) if len > 0 => data[i.index(len)] ^= mask,
        Mutation::Set(i, b) if len > 0 => data[i.index(len)] = *b,
        Mutation::Word(i, w) if len >= 4 => {
            let at = i.index(len - 3);
            data[at..at + 4].copy_from_slice(&w.to_le_bytes());
        }
        Mutation::Insert(i, bytes) => {
            let at = i.index(len + 1);
            data.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove(i, n) if len > 0 => {
            let at = i.index(len);
            data.drain(at..(at + n).min(len));
        }
        Mutation::Truncate(i) => data.truncate(i.index(len + 1)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// A value decodes as its own kind to exactly itself, and as any other
    /// kind is refused for its kind, checksum intact.
    #[test]
    fn values_decode_as_their_kind_only((kind, data) in arb_encoding()) {
        prop_assert_eq!(decode_as(kind, &data), Ok(data.clone()));
        for other in KINDS.into_iter().filter(|k| *k != kind) {
            prop_assert_eq!(
                decode_as(other, &data),
                Err(DecodeError::Kind { expected: other as u8, found: kind as u8 })
            );
        }
    }

    /// Flipped bits anywhere (header, body or checksum) are a checksum
    /// error: always within one 32-bit burst, and for flips spread over the
    /// value as long as CRC32 does not collide (2^-32).
    #[test]
    fn flipped_bits_are_checksum_errors(
        (kind, data) in arb_encoding(),
        at in any::<prop::sample::Index>(),
        burst in 1u32..=u32::MAX,
        spread in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..6),
    ) {
        let mut bad = data.clone();
        let start = at.index(data.len() - 3);
        for (i, byte) in burst.to_le_bytes().iter().enumerate() {
            bad[start + i] ^= byte;
        }
        prop_assert!(
            matches!(decode_as(kind, &bad), Err(DecodeError::Checksum { .. })),
            "burst {:#x} at {} of {:?}: {:?}", burst, start, kind, decode_as(kind, &bad)
        );
        let mut bad = data.clone();
        for (i, bit) in &spread {
            bad[i.index(data.len())] ^= 1 << bit;
        }
        if bad != data {
            let result = decode_as(kind, &bad);
            prop_assert!(
                matches!(result, Err(DecodeError::Checksum { .. })),
                "{:?}", result
            );
        }
    }

    /// A value cut short at any length, or with bytes after it, is refused
    /// (too short for an envelope, else its checksum no longer matches).
    #[test]
    fn cut_and_extended_values_are_refused(
        (kind, data) in arb_encoding(),
        tail in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        for cut in 0..data.len() {
            let result = decode_as(kind, &data[..cut]);
            prop_assert!(
                matches!(
                    result,
                    Err(DecodeError::TooShort { .. } | DecodeError::Checksum { .. })
                ),
                "cut at {} of {}: {:?}", cut, data.len(), result
            );
        }
        let mut longer = data.clone();
        longer.extend_from_slice(&tail);
        prop_assert!(decode_as(kind, &longer).is_err());
    }

    /// Damage behind a recomputed checksum reaches the field checks: it is
    /// refused with a format error (never a checksum error: the checksum
    /// holds), or it is the one encoding of the value it decodes to.
    #[test]
    fn resealed_damage_is_refused_or_decodes_canonically(
        (kind, data) in arb_encoding(),
        mutations in prop::collection::vec(arb_mutation(), 1..4),
    ) {
        let mut bad = data.clone();
        for m in &mutations {
            mutate(&mut bad, m);
        }
        reseal(&mut bad);
        match decode_as(kind, &bad) {
            Ok(canonical) => prop_assert_eq!(canonical, bad),
            Err(DecodeError::Checksum { .. }) => prop_assert!(false, "resealed, yet {:?}", bad),
            Err(DecodeError::TooShort { len }) => prop_assert!(len < HEADER_LEN + CRC_LEN),
            Err(_) => {}
        }
    }

    /// Every length and count field of a record and of a membership,
    /// overwritten with more than the value holds (up to `u32::MAX`), is
    /// refused as truncated: the check runs before the allocation, so a
    /// 4 GiB claim in a 60-byte value allocates nothing (a trusted claim of
    /// `u32::MAX` commands would ask for 64 GiB of ranges and abort the
    /// test binary).
    #[test]
    fn oversized_length_fields_are_refused_as_truncated(
        mut record in arb_record(),
        field in any::<prop::sample::Index>(),
        claim in prop_oneof![Just(u32::MAX), Just(1u32 << 31), Just(1 << 24), 0u32..=u32::MAX],
    ) {
        if record.value == Value::Noop {
            // A no-op has no length field; an empty batch has its count.
            record.value = Value::Batch(Arc::from(Vec::new()));
        }
        let mut data = Vec::new();
        let kind = match &record.value {
            Value::Membership(c) => {
                let m = MembershipRecord { slot: record.slot, configuration: c.clone() };
                encode_membership(&mut data, &m);
                Kind::Membership
            }
            _ => {
                encode_record(&mut data, &record);
                Kind::Record
            }
        };
        let fields = length_fields(kind, &data);
        let (at, unit) = fields[field.index(fields.len())];
        // At least one unit more than the bytes after the field can hold.
        let remaining = data.len() - CRC_LEN - (at + 4);
        let claim = claim.max(u32::try_from(remaining / unit + 1).expect("small"));
        data[at..at + 4].copy_from_slice(&claim.to_le_bytes());
        reseal(&mut data);
        let result = decode_as(kind, &data);
        prop_assert!(
            matches!(result, Err(DecodeError::Truncated { .. })),
            "claim {} at {}: {:?}", claim, at, result
        );
    }

    /// Bytes of any kind, with a valid envelope, never panic any decoder.
    #[test]
    fn enveloped_garbage_never_panics(
        kind_byte in prop::sample::select(vec![b'F', b'I', b'A', b'R', b'M', 0, 0xff]),
        body in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut data = vec![CODEC_VERSION, kind_byte];
        data.extend_from_slice(&body);
        data.extend_from_slice(&[0; CRC_LEN]);
        reseal(&mut data);
        for kind in KINDS {
            if let Ok(canonical) = decode_as(kind, &data) {
                prop_assert_eq!(kind as u8, kind_byte);
                prop_assert_eq!(canonical, data.clone());
            }
        }
    }
}

/// The offsets of the u32 length and count fields of an encoded record or
/// membership, each with the fewest bytes one unit it counts takes (4 per
/// command, 1 per command byte, 8 per id), found by walking the layout in
/// the module doc.
fn length_fields(kind: Kind, data: &[u8]) -> Vec<(usize, usize)> {
    let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4")) as usize;
    let mut fields = Vec::new();
    let configuration = |mut at: usize, fields: &mut Vec<(usize, usize)>| {
        let halves = if data[at] == SHAPE_JOINT { 2 } else { 1 };
        at += 1;
        for _ in 0..halves {
            at += 16;
            for _ in 0..2 {
                fields.push((at, 8));
                at += 4 + 8 * u32_at(at);
            }
        }
    };
    match kind {
        Kind::Membership => configuration(HEADER_LEN + 8, &mut fields),
        Kind::Record => {
            let tag_at = HEADER_LEN + RECORD_FIXED_LEN - 1;
            match data[tag_at] {
                VALUE_BATCH => {
                    let mut at = tag_at + 1;
                    fields.push((at, 4));
                    let count = u32_at(at);
                    at += 4;
                    for _ in 0..count {
                        fields.push((at, 1));
                        at += 4 + u32_at(at);
                    }
                }
                VALUE_MEMBERSHIP => configuration(tag_at + 1, &mut fields),
                _ => {}
            }
        }
        _ => {}
    }
    fields
}

#[test]
fn length_fields_are_where_the_layout_says() {
    let mut data = Vec::new();
    let commands: Vec<Bytes> = vec![Bytes::from_static(b"ab"), Bytes::new()];
    let record = SlotRecord {
        slot: Slot(1),
        ballot: Ballot::ZERO,
        value: Value::Batch(Arc::from(commands)),
        chosen: false,
    };
    encode_record(&mut data, &record);
    // count at 28, then "ab" with its length at 32, the empty one at 38.
    assert_eq!(
        length_fields(Kind::Record, &data),
        vec![(28, 4), (32, 1), (38, 1)]
    );
    let m = MembershipRecord {
        slot: Slot(5),
        configuration: Configuration::Stable(Membership::new(&[NodeId(1), NodeId(2)], &[])),
    };
    encode_membership(&mut data, &m);
    // slot, shape, quorums; voters at 27, two of them, observers at 47.
    assert_eq!(
        length_fields(Kind::Membership, &data),
        vec![(27, 8), (47, 8)]
    );
}

/// The largest claims, one per field, as regression inputs: each is
/// refused as truncated before any allocation.
#[test]
fn largest_claims_are_refused() {
    let commands: Vec<Bytes> = vec![Bytes::from_static(b"xyz")];
    let record = SlotRecord {
        slot: Slot(9),
        ballot: Ballot::ZERO,
        value: Value::Batch(Arc::from(commands)),
        chosen: true,
    };
    let mut data = Vec::new();
    encode_record(&mut data, &record);
    for (at, field) in [(28, "commands"), (32, "command")] {
        let mut bad = data.clone();
        bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        reseal(&mut bad);
        assert!(
            matches!(decode_record(&bad), Err(DecodeError::Truncated { field: f, .. }) if f == field),
            "{field}: {:?}",
            decode_record(&bad)
        );
    }
    let m = MembershipRecord {
        slot: Slot(5),
        configuration: Configuration::Joint {
            old: Membership::new(&[NodeId(1)], &[NodeId(4)]),
            new: Membership::new(&[NodeId(1), NodeId(2)], &[]),
        },
    };
    encode_membership(&mut data, &m);
    for (at, field) in length_fields(Kind::Membership, &data)
        .into_iter()
        .map(|(at, _)| at)
        .zip(["voters", "observers", "voters", "observers"])
    {
        let mut bad = data.clone();
        bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        reseal(&mut bad);
        assert!(
            matches!(decode_membership(&bad), Err(DecodeError::Truncated { field: f, .. }) if f == field),
            "{field}: {:?}",
            decode_membership(&bad)
        );
    }
}
