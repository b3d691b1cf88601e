//! Hostile input for what a node reads from its peers and from backup files
//! (issue 12): the peer codec (`synod_server::codec`), the group a decoded
//! batch is stepped into, and the snapshot file reader
//! (`synod_server::restore_snapshot`). Whatever the input, it decodes or is
//! refused with an error: no panic, and no allocation beyond what the
//! input's size justifies.
//!
//! These are property tests rather than cargo-fuzz targets so that CI (a
//! stable toolchain) runs them on every change. The default case counts
//! keep this file to seconds; a long run is opt-in (docs/fuzzing.md):
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release -p synod-server --test hostile_input
//! ```
//!
//! Allocations are counted by a global allocator. A test that measures
//! holds [`EXCLUSIVE`] for writing and every other test holds it for
//! reading, so nothing else in this binary allocates during a measurement.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use prost::Message as ProstMessage;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use synod_group::{Group, GroupConfig, PeerItem};
use synod_kv::KvStore;
use synod_paxos::{
    Ballot, Config, Configuration, Membership, Message, NodeId, Replica, Slot, SlotRecord, Time,
    Value,
};
use synod_proto::etcdserverpb::{DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest};
use synod_proto::peerpb::{self, envelope::Message as Wire};
use synod_proto::synodpb::{self, command::Op, Command};
use synod_server::codec;
use synod_server::{restore_snapshot, GroupId, Identity, RestoreError, SnapshotFileWriter};
use synod_storage::Storage;

#[global_allocator]
static ALLOC: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Held for writing by a test that counts allocations, for reading by
/// every other test.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner)
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(PoisonError::into_inner)
}

/// What `f` returned and the bytes it allocated (new allocations plus the
/// growth of reallocations). Call with [`exclusive`] held.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let region = Region::new(ALLOC);
    let out = f();
    let stats = region.change();
    let grown = usize::try_from(stats.bytes_reallocated).unwrap_or(0);
    (out, stats.bytes_allocated + grown)
}

/// The most a decode of `len` input bytes may allocate: protobuf turns a
/// two-byte empty element into a struct of up to ~200 bytes, and vectors
/// grow by doubling, so a few hundred bytes per input byte is what
/// legitimate input costs; an allocation a length field asks for is far
/// beyond it.
fn decode_budget(len: usize) -> usize {
    64 << 10 | (1024 * len)
}

/// `PROPTEST_CASES` when set (the long runs), else `default`.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------
// Strategies: Paxos messages with extreme field values, and their wire
// form with fields missing or contradicting each other.
// ---------------------------------------------------------------------

/// Small values (the ones a live group uses), the edges of `u64`, and
/// anything.
fn edge_u64() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => 0u64..8,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(u64::MAX / 2),
        1 => Just(u64::MAX / 2 + 1),
        2 => any::<u64>(),
    ]
    .boxed()
}

fn arb_ballot() -> BoxedStrategy<Ballot> {
    (edge_u64(), edge_u64())
        .prop_map(|(round, node)| Ballot {
            round,
            node: NodeId(node),
        })
        .boxed()
}

fn arb_membership() -> BoxedStrategy<Membership> {
    prop_oneof![
        // Valid: sorted unique voters, observers apart, flexible quorums.
        (
            prop::collection::btree_set(1u64..8, 1..6),
            prop::collection::btree_set(8u64..12, 0..3),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(voters, observers, q)| {
                let voters: Vec<NodeId> = voters.into_iter().map(NodeId).collect();
                let observers: Vec<NodeId> = observers.into_iter().map(NodeId).collect();
                let mut m = Membership::new(&voters, &observers);
                m.phase1_quorum = 1 + q.index(voters.len());
                m.phase2_quorum = voters.len() + 1 - m.phase1_quorum;
                m
            }),
        // Anything: unsorted, repeated, empty, absurd quorums.
        (
            prop::collection::vec(edge_u64(), 0..6),
            prop::collection::vec(edge_u64(), 0..3),
            edge_u64(),
            edge_u64(),
        )
            .prop_map(|(voters, observers, q1, q2)| Membership {
                voters: voters.into_iter().map(NodeId).collect(),
                observers: observers.into_iter().map(NodeId).collect(),
                phase1_quorum: q1 as usize,
                phase2_quorum: q2 as usize,
            }),
    ]
    .boxed()
}

fn arb_configuration() -> BoxedStrategy<Configuration> {
    prop_oneof![
        arb_membership().prop_map(Configuration::Stable),
        (arb_membership(), arb_membership())
            .prop_map(|(old, new)| Configuration::Joint { old, new }),
    ]
    .boxed()
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_value() -> BoxedStrategy<Value<Bytes>> {
    prop_oneof![
        1 => Just(Value::Noop),
        1 => arb_configuration().prop_map(Value::Membership),
        3 => prop::collection::vec(arb_bytes(24), 0..4)
            .prop_map(|c| Value::Batch(Arc::from(c))),
    ]
    .boxed()
}

fn arb_values() -> BoxedStrategy<Vec<Value<Bytes>>> {
    prop::collection::vec(arb_value(), 0..5).boxed()
}

fn arb_record() -> BoxedStrategy<SlotRecord<Bytes>> {
    (edge_u64(), arb_ballot(), arb_value(), any::<bool>())
        .prop_map(|(slot, ballot, value, chosen)| SlotRecord {
            slot: Slot(slot),
            ballot,
            value,
            chosen,
        })
        .boxed()
}

fn arb_message() -> BoxedStrategy<Message<Bytes>> {
    let slot = || edge_u64().prop_map(Slot);
    prop_oneof![
        (arb_ballot(), slot()).prop_map(|(ballot, commit)| Message::Probe { ballot, commit }),
        (arb_ballot(), any::<bool>(), arb_ballot()).prop_map(|(ballot, ok, promised)| {
            Message::ProbeReply {
                ballot,
                ok,
                promised,
            }
        }),
        (arb_ballot(), slot()).prop_map(|(ballot, commit)| Message::Prepare { ballot, commit }),
        (
            arb_ballot(),
            prop::collection::vec(arb_record(), 0..4),
            slot()
        )
            .prop_map(|(ballot, accepted, snapshot)| Message::Promise {
                ballot,
                accepted,
                snapshot,
            }),
        (
            arb_ballot(),
            slot(),
            arb_values(),
            slot(),
            edge_u64(),
            edge_u64()
        )
            .prop_map(|(ballot, first, values, commit, seq, sent_at)| {
                Message::Accept {
                    ballot,
                    first,
                    values,
                    commit,
                    seq,
                    sent_at: Time(sent_at),
                }
            }),
        (
            arb_ballot(),
            slot(),
            edge_u64(),
            slot(),
            any::<bool>(),
            edge_u64(),
            edge_u64()
        )
            .prop_map(|(ballot, first, count, commit, behind, seq, sent_at)| {
                Message::Accepted {
                    ballot,
                    first,
                    count,
                    commit,
                    behind,
                    seq,
                    sent_at: Time(sent_at),
                }
            }),
        (arb_ballot(), slot(), arb_values()).prop_map(|(ballot, first, values)| {
            Message::Learn {
                ballot,
                first,
                values,
            }
        }),
        (arb_ballot(), slot()).prop_map(|(ballot, commit)| Message::Learned { ballot, commit }),
        (arb_ballot(), arb_ballot())
            .prop_map(|(ballot, promised)| Message::Reject { ballot, promised }),
        (arb_ballot(), edge_u64(), edge_u64()).prop_map(|(ballot, seq, target)| {
            Message::Handover {
                ballot,
                seq,
                target: NodeId(target),
            }
        }),
    ]
    .boxed()
}

/// What `codec::decode` promises to refuse: a slot range that cannot exist
/// and a membership change that breaks a rule. Everything else decodes.
fn decodable(m: &Message<Bytes>) -> bool {
    let value_ok = |v: &Value<Bytes>| match v {
        Value::Membership(c) => c.validate().is_ok(),
        _ => true,
    };
    match m {
        Message::Accept { first, values, .. } | Message::Learn { first, values, .. } => {
            first.0 != 0
                && first.0.checked_add(values.len() as u64).is_some()
                && values.iter().all(value_ok)
        }
        Message::Accepted { first, count, .. } => first.0.checked_add(*count).is_some(),
        Message::Promise { accepted, .. } => accepted.iter().all(|r| value_ok(&r.value)),
        _ => true,
    }
}

fn pb_ballot() -> BoxedStrategy<Option<peerpb::Ballot>> {
    prop::option::weighted(
        0.9,
        (edge_u64(), edge_u64()).prop_map(|(round, node)| peerpb::Ballot { round, node }),
    )
    .boxed()
}

fn pb_membership() -> BoxedStrategy<peerpb::Membership> {
    (
        prop::collection::vec(edge_u64(), 0..5),
        prop::collection::vec(edge_u64(), 0..3),
        edge_u64(),
        edge_u64(),
    )
        .prop_map(
            |(voters, observers, phase1_quorum, phase2_quorum)| peerpb::Membership {
                voters,
                observers,
                phase1_quorum,
                phase2_quorum,
            },
        )
        .boxed()
}

fn pb_configuration() -> BoxedStrategy<peerpb::Configuration> {
    prop_oneof![
        // Often valid, so that decoding gets past validation.
        arb_configuration().prop_map(|c| codec::configuration(&c)),
        (
            prop::option::of(pb_membership()),
            prop::option::of(pb_membership())
        )
            .prop_map(|(old, new)| peerpb::Configuration { old, new }),
    ]
    .boxed()
}

fn pb_value() -> BoxedStrategy<peerpb::Value> {
    (
        any::<bool>(),
        prop::collection::vec(arb_bytes(16), 0..3),
        prop::option::weighted(0.3, pb_configuration()),
    )
        .prop_map(|(noop, commands, membership)| peerpb::Value {
            noop,
            commands,
            membership,
        })
        .boxed()
}

fn pb_values() -> BoxedStrategy<Vec<peerpb::Value>> {
    prop::collection::vec(pb_value(), 0..4).boxed()
}

fn pb_wire() -> BoxedStrategy<Wire> {
    prop_oneof![
        (pb_ballot(), edge_u64())
            .prop_map(|(ballot, commit)| Wire::Probe(peerpb::Probe { ballot, commit })),
        (pb_ballot(), any::<bool>(), pb_ballot()).prop_map(|(ballot, ok, promised)| {
            Wire::ProbeReply(peerpb::ProbeReply {
                ballot,
                ok,
                promised,
            })
        }),
        (pb_ballot(), edge_u64())
            .prop_map(|(ballot, commit)| Wire::Prepare(peerpb::Prepare { ballot, commit })),
        (
            pb_ballot(),
            prop::collection::vec(
                (
                    edge_u64(),
                    pb_ballot(),
                    prop::option::weighted(0.9, pb_value()),
                    any::<bool>()
                )
                    .prop_map(|(slot, ballot, value, chosen)| peerpb::SlotRecord {
                        slot,
                        ballot,
                        value,
                        chosen,
                    }),
                0..3
            ),
            edge_u64()
        )
            .prop_map(|(ballot, accepted, snapshot)| {
                Wire::Promise(peerpb::Promise {
                    ballot,
                    accepted,
                    snapshot,
                })
            }),
        (
            pb_ballot(),
            edge_u64(),
            pb_values(),
            edge_u64(),
            edge_u64(),
            edge_u64()
        )
            .prop_map(|(ballot, first, values, commit, seq, sent_at)| {
                Wire::Accept(peerpb::Accept {
                    ballot,
                    first,
                    values,
                    commit,
                    seq,
                    sent_at,
                })
            }),
        (
            pb_ballot(),
            edge_u64(),
            edge_u64(),
            edge_u64(),
            any::<bool>(),
            edge_u64(),
            edge_u64()
        )
            .prop_map(|(ballot, first, count, commit, behind, seq, sent_at)| {
                Wire::Accepted(peerpb::Accepted {
                    ballot,
                    first,
                    count,
                    commit,
                    behind,
                    seq,
                    sent_at,
                })
            }),
        (pb_ballot(), edge_u64(), pb_values()).prop_map(|(ballot, first, values)| {
            Wire::Learn(peerpb::Learn {
                ballot,
                first,
                values,
            })
        }),
        (pb_ballot(), edge_u64())
            .prop_map(|(ballot, commit)| Wire::Learned(peerpb::Learned { ballot, commit })),
        (pb_ballot(), pb_ballot())
            .prop_map(|(ballot, promised)| Wire::Reject(peerpb::Reject { ballot, promised })),
        (pb_ballot(), edge_u64(), edge_u64()).prop_map(|(ballot, seq, target)| {
            Wire::Handover(peerpb::Handover {
                ballot,
                seq,
                target,
            })
        }),
    ]
    .boxed()
}

fn pb_envelope() -> BoxedStrategy<peerpb::Envelope> {
    (edge_u64(), prop::option::weighted(0.95, pb_wire()))
        .prop_map(|(to, message)| peerpb::Envelope { to, message })
        .boxed()
}

/// True when the envelope lacks a field `decode` cannot do without.
fn lacks_required_field(e: &peerpb::Envelope) -> bool {
    let Some(m) = &e.message else {
        return true;
    };
    let value_lacks = |v: &peerpb::Value| {
        v.membership
            .as_ref()
            .is_some_and(|c| c.old.is_none() && !v.noop && v.commands.is_empty())
    };
    match m {
        Wire::Probe(p) => p.ballot.is_none(),
        Wire::ProbeReply(p) => p.ballot.is_none() || p.promised.is_none(),
        Wire::Prepare(p) => p.ballot.is_none(),
        Wire::Promise(p) => {
            p.ballot.is_none()
                || p.accepted
                    .iter()
                    .any(|r| r.ballot.is_none() || r.value.as_ref().is_none_or(value_lacks))
        }
        Wire::Accept(a) => a.ballot.is_none() || a.values.iter().any(value_lacks),
        Wire::Accepted(a) => a.ballot.is_none(),
        Wire::Learn(l) => l.ballot.is_none() || l.values.iter().any(value_lacks),
        Wire::Learned(l) => l.ballot.is_none(),
        Wire::Reject(r) => r.ballot.is_none() || r.promised.is_none(),
        Wire::Handover(h) => h.ballot.is_none(),
    }
}

/// The checks every decoded envelope passes: decoding lost nothing (its
/// encoding is the envelope it came from), and it decodes again to itself.
fn check_decoded(
    envelope: &peerpb::Envelope,
    decoded: &(NodeId, Message<Bytes>),
) -> Result<(), TestCaseError> {
    let (to, m) = decoded;
    prop_assert_eq!(to.0, envelope.to);
    prop_assert!(decodable(m), "decoded a message it should refuse: {:?}", m);
    let again = codec::encode(*to, m);
    prop_assert_eq!(&again, envelope, "decoding dropped or changed a field");
    let back = codec::decode(again).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, decoded);
    Ok(())
}

/// Decodes every envelope of a batch, checking each one that decodes;
/// returns how many did.
fn decode_all(batch: &peerpb::Batch) -> Result<usize, TestCaseError> {
    let mut ok = 0;
    for envelope in &batch.messages {
        if let Ok(decoded) = codec::decode(envelope.clone()) {
            check_decoded(envelope, &decoded)?;
            ok += 1;
        }
    }
    Ok(ok)
}

/// A batch of every kind of item, as a peer sends it.
fn pb_batch() -> BoxedStrategy<peerpb::Batch> {
    (
        edge_u64(),
        edge_u64(),
        prop::collection::vec(
            prop_oneof![
                arb_message().prop_map(|m| codec::encode(NodeId(1), &m)),
                pb_envelope()
            ],
            0..4,
        ),
        prop::collection::vec(arb_bytes(32), 0..3),
        prop::collection::vec(
            (edge_u64(), any::<i64>(), any::<bool>())
                .prop_map(|(token, id, renew)| peerpb::LeaseQuery { token, id, renew }),
            0..2,
        ),
        prop::collection::vec(
            (edge_u64(), any::<i64>(), any::<i64>()).prop_map(|(token, ttl, granted_ttl)| {
                peerpb::LeaseAnswer {
                    token,
                    ttl,
                    granted_ttl,
                }
            }),
            0..2,
        ),
        prop::collection::vec(edge_u64(), 0..2),
    )
        .prop_map(
            |(from, group, messages, forwards, lease_queries, lease_answers, read_index)| {
                peerpb::Batch {
                    from,
                    cluster_id: 7,
                    messages,
                    forwards,
                    lease_queries,
                    lease_answers,
                    group,
                    read_index,
                    ..peerpb::Batch::default()
                }
            },
        )
        .boxed()
}

/// One change to a byte string: the mutations a fuzzer makes.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index, usize),
    /// Copies a piece of the input elsewhere (repeats a field).
    Splice(prop::sample::Index, prop::sample::Index, usize),
}

fn arb_mutation() -> BoxedStrategy<Mutation> {
    let at = any::<prop::sample::Index>;
    prop_oneof![
        3 => (at(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, 1 << bit)),
        2 => (at(), prop_oneof![Just(0u8), Just(0x7f), Just(0x80), Just(0xff), any::<u8>()])
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => at().prop_map(Mutation::Truncate),
        // Varints with the continuation bit set: huge lengths and tags.
        1 => (at(), prop::collection::vec(
            prop_oneof![Just(0xffu8), Just(0x80), Just(0x01), Just(0x7f), any::<u8>()], 1..11))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (at(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (at(), at(), 1usize..32).prop_map(|(from, to, n)| Mutation::Splice(from, to, n)),
    ]
    .boxed()
}

fn mutate(data: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = data.len();
        match m {
            Mutation::Flip(i, mask) if len > 0 => data[i.index(len)] ^= mask,
            Mutation::Set(i, b) if len > 0 => data[i.index(len)] = *b,
            Mutation::Truncate(i) => data.truncate(i.index(len + 1)),
            Mutation::Insert(i, bytes) => {
                let at = i.index(len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove(i, n) if len > 0 => {
                let at = i.index(len);
                data.drain(at..(at + n).min(len));
            }
            Mutation::Splice(from, to, n) if len > 0 => {
                let from = from.index(len);
                let piece = data[from..(from + n).min(len)].to_vec();
                let to = to.index(len + 1);
                data.splice(to..to, piece);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------
// The peer codec.
// ---------------------------------------------------------------------

/// Every message round-trips through its wire form (protobuf bytes
/// included) exactly when it is one `decode` accepts; the others are
/// refused with an error.
#[test]
fn messages_round_trip_or_are_refused() {
    let _g = shared();
    proptest!(config(512), |(to in edge_u64(), m in arb_message())| {
        let envelope = codec::encode(NodeId(to), &m);
        let bytes = envelope.encode_to_vec();
        let wire = peerpb::Envelope::decode(bytes.as_slice())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&wire, &envelope);
        match codec::decode(wire) {
            Ok(back) => {
                prop_assert!(decodable(&m), "accepted {:?}", m);
                prop_assert_eq!(back, (NodeId(to), m));
            }
            Err(e) => {
                prop_assert!(!decodable(&m), "refused {:?}: {}", m, e);
                prop_assert!(e.to_string().starts_with("malformed peer message: "));
            }
        }
    });
}

/// Envelopes as a peer could build them, fields missing or contradicting
/// each other: each decodes to a message whose encoding is the envelope
/// itself (nothing dropped, nothing defaulted), or is refused; one without
/// a required field is always refused.
#[test]
fn hostile_envelopes_decode_exactly_or_are_refused() {
    let _g = shared();
    proptest!(config(512), |(envelope in pb_envelope())| {
        match codec::decode(envelope.clone()) {
            Ok(decoded) => {
                prop_assert!(!lacks_required_field(&envelope), "{:?}", envelope);
                check_decoded(&envelope, &decoded)?;
            }
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    });
}

/// Configurations from the wire (a snapshot chunk's, a membership value's)
/// are valid or refused.
#[test]
fn configurations_are_valid_or_refused() {
    let _g = shared();
    proptest!(config(512), |(c in pb_configuration())| {
        match codec::get_configuration(c.clone()) {
            Ok(decoded) => {
                prop_assert!(decoded.validate().is_ok());
                prop_assert_eq!(codec::configuration(&decoded), c);
            }
            Err(_) => {
                let old_ok = c.old.is_some();
                let valid = old_ok && {
                    let m = |m: &peerpb::Membership| Membership {
                        voters: m.voters.iter().copied().map(NodeId).collect(),
                        observers: m.observers.iter().copied().map(NodeId).collect(),
                        phase1_quorum: m.phase1_quorum as usize,
                        phase2_quorum: m.phase2_quorum as usize,
                    };
                    let old = m(c.old.as_ref().expect("checked"));
                    let config = match &c.new {
                        None => Configuration::Stable(old),
                        Some(new) => Configuration::Joint { old, new: m(new) },
                    };
                    config.validate().is_ok()
                };
                prop_assert!(!valid, "a valid configuration refused: {:?}", c);
            }
        }
    });
}

/// Random bytes, read as each message a peer sends (a batch, an envelope,
/// a snapshot chunk): decode or fail, within the allocation budget.
#[test]
fn random_bytes_decode_cleanly_within_budget() {
    let _g = exclusive();
    let worst = std::cell::Cell::new(0f64);
    proptest!(config(1024), |(data in prop::collection::vec(any::<u8>(), 0..512))| {
        let (result, bytes) = allocated_by(|| {
            let batch = peerpb::Batch::decode(data.as_slice());
            let envelope = peerpb::Envelope::decode(data.as_slice());
            let chunk = peerpb::SnapshotChunk::decode(data.as_slice());
            let decoded = batch.as_ref().ok().map(|b| {
                b.messages.iter().filter_map(|e| codec::decode(e.clone()).ok()).count()
            });
            let configuration = chunk
                .as_ref()
                .ok()
                .and_then(|c| c.membership.clone())
                .map(codec::get_configuration);
            (batch, envelope, decoded, configuration.map(|c| c.is_ok()))
        });
        prop_assert!(
            bytes <= decode_budget(data.len()),
            "{} bytes allocated decoding {} bytes", bytes, data.len()
        );
        worst.set(worst.get().max(bytes as f64 / (data.len().max(1)) as f64));
        let (batch, envelope, _, _) = result;
        if let Ok(batch) = batch {
            decode_all(&batch)?;
        }
        if let Ok(envelope) = envelope {
            if let Ok(decoded) = codec::decode(envelope.clone()) {
                check_decoded(&envelope, &decoded)?;
            }
        }
    });
    eprintln!(
        "random bytes: at most {:.0} bytes allocated per input byte",
        worst.get()
    );
}

/// Valid batches with their encodings mutated (bits flipped, bytes set,
/// cut, inserted, removed, repeated): decode or fail within the budget,
/// and whatever decodes passes every check.
#[test]
fn mutated_batches_decode_cleanly_within_budget() {
    let _g = exclusive();
    // Mutated batches that still decode, and their envelopes that do: the
    // checks above ran on something.
    let batches = std::cell::Cell::new(0u64);
    let envelopes = std::cell::Cell::new(0usize);
    proptest!(config(512), |(
        batch in pb_batch(),
        mutations in prop::collection::vec(arb_mutation(), 1..5),
    )| {
        let mut data = batch.encode_to_vec();
        let intact = peerpb::Batch::decode(data.as_slice())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&intact, &batch);
        mutate(&mut data, &mutations);
        let (decoded, bytes) = allocated_by(|| peerpb::Batch::decode(data.as_slice()));
        prop_assert!(
            bytes <= decode_budget(data.len()),
            "{} bytes allocated decoding {} bytes", bytes, data.len()
        );
        if let Ok(batch) = decoded {
            let (checked, bytes) = allocated_by(|| decode_all(&batch));
            envelopes.set(envelopes.get() + checked?);
            batches.set(batches.get() + 1);
            prop_assert!(bytes <= decode_budget(data.len()));
        }
    });
    assert!(batches.get() > 0 && envelopes.get() > 0);
}

/// Length fields claiming more than the message holds, at every level of
/// nesting, are refused before anything is allocated for them.
#[test]
fn huge_length_prefixes_are_refused_before_allocating() {
    let _g = exclusive();
    // field 3 (messages), then field 14 (accept) inside, then field 3
    // (values) inside that, then field 2 (commands): each length claims
    // about 2^62 bytes.
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f];
    let cases: Vec<Vec<u8>> = vec![
        [&[0x1a][..], &huge].concat(),
        [&[0x1a, 0x0c, 0x72][..], &huge].concat(),
        [&[0x1a, 0x0e, 0x72, 0x0c, 0x1a][..], &huge].concat(),
        [&[0x1a, 0x10, 0x72, 0x0e, 0x1a, 0x0c, 0x12][..], &huge].concat(),
        // A packed repeated u64 (read_index) claiming 2^62 bytes.
        [&[0x4a][..], &huge].concat(),
    ];
    for data in cases {
        let (decoded, bytes) = allocated_by(|| peerpb::Batch::decode(data.as_slice()));
        assert!(decoded.is_err(), "{data:x?} decoded");
        assert!(bytes < 4096, "{bytes} bytes allocated for {data:x?}");
    }
    // A chunk whose data claims 2^62 bytes.
    let data = [&[0x3a][..], &huge].concat();
    let (decoded, bytes) = allocated_by(|| peerpb::SnapshotChunk::decode(data.as_slice()));
    assert!(decoded.is_err());
    assert!(bytes < 4096, "{bytes} bytes allocated");
}

// ---------------------------------------------------------------------
// The group a node steps decoded batches into.
//
// The node's entry point (`Core::on_peer`) is private and needs a tokio
// runtime and the node's channels; after its cluster and membership checks
// it steps the group with `codec::batch_items` of the batch. The tests
// call that same function, and three real groups (no sockets, no disk)
// take its items.
// ---------------------------------------------------------------------

const TICK_MS: u64 = 10;

/// Three groups wired by an in-memory network; every write is durable at
/// once.
struct Cluster {
    groups: BTreeMap<NodeId, Group>,
    now: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let groups = ids
            .iter()
            .map(|&id| {
                let config = GroupConfig {
                    node: id,
                    session: 100 + id.0,
                    snapshot_every: 10_000,
                    compact_keep: 0,
                    session_idle_ms: 0,
                    initial_members: Vec::new(),
                    record_applied: false,
                    timestamp_oracle: true,
                    stamped: false,
                    state_flush_rounds: 1,
                };
                let replica = Replica::new(Config::majority(id, &ids), Time(0)).expect("config");
                (id, Group::new(config, replica, KvStore::default(), Time(0)))
            })
            .collect();
        Cluster { groups, now: 0 }
    }

    /// Delivers messages until every group is quiet (or a bound of steps,
    /// which a hostile peer may keep busy: that is not a failure).
    fn settle(&mut self) {
        let mut wire: VecDeque<(NodeId, NodeId, PeerItem)> = VecDeque::new();
        for _ in 0..20_000 {
            for (&id, group) in self.groups.iter_mut() {
                while group.has_ready() {
                    let ready = group.ready();
                    wire.extend(ready.sends.into_iter().map(|(to, m)| (id, to, m)));
                    group.on_written();
                    group.on_persisted(ready.token);
                }
                group.check_invariants();
                group.replica().check_invariants();
                group.kv().check_invariants();
            }
            let Some((from, to, item)) = wire.pop_front() else {
                return;
            };
            let now = Time(self.now);
            if let Some(group) = self.groups.get_mut(&to) {
                group.step(from, item, now);
            }
        }
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / TICK_MS {
            self.now += TICK_MS;
            for group in self.groups.values_mut() {
                group.tick(Time(self.now));
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.groups
            .iter()
            .find(|(_, g)| g.status().is_leader)
            .map(|(id, _)| *id)
    }
}

/// A new cluster, run until it has a leader.
fn elected() -> Cluster {
    let mut c = Cluster::new();
    for _ in 0..100 {
        c.run_ms(100);
        if c.leader().is_some() {
            return c;
        }
    }
    panic!("no leader elected");
}

/// Ballots and slots near the live group's, so that messages reach the
/// handlers past the staleness checks.
fn near_message() -> BoxedStrategy<Message<Bytes>> {
    let ballot = (0u64..4, 1u64..4).prop_map(|(round, node)| Ballot {
        round,
        node: NodeId(node),
    });
    let slot = || (0u64..12).prop_map(Slot);
    let value = prop_oneof![
        Just(Value::Noop),
        prop::collection::vec(seed_command(), 0..3).prop_map(|c| Value::Batch(Arc::from(c))),
        arb_configuration().prop_map(Value::Membership),
    ];
    let values = prop::collection::vec(value.clone(), 0..4);
    prop_oneof![
        (ballot.clone(), slot()).prop_map(|(ballot, commit)| Message::Probe { ballot, commit }),
        (ballot.clone(), slot()).prop_map(|(ballot, commit)| Message::Prepare { ballot, commit }),
        (
            ballot.clone(),
            prop::collection::vec(
                (slot(), ballot.clone(), value.clone(), any::<bool>()).prop_map(
                    |(slot, ballot, value, chosen)| SlotRecord {
                        slot,
                        ballot,
                        value,
                        chosen
                    }
                ),
                0..3
            ),
            slot()
        )
            .prop_map(|(ballot, accepted, snapshot)| Message::Promise {
                ballot,
                accepted,
                snapshot
            }),
        (
            ballot.clone(),
            slot(),
            values.clone(),
            slot(),
            0u64..20,
            0u64..2000
        )
            .prop_map(|(ballot, first, values, commit, seq, sent_at)| {
                Message::Accept {
                    ballot,
                    first,
                    values,
                    commit,
                    seq,
                    sent_at: Time(sent_at),
                }
            }),
        (
            ballot.clone(),
            slot(),
            0u64..5,
            slot(),
            any::<bool>(),
            0u64..20,
            0u64..2000
        )
            .prop_map(|(ballot, first, count, commit, behind, seq, sent_at)| {
                Message::Accepted {
                    ballot,
                    first,
                    count,
                    commit,
                    behind,
                    seq,
                    sent_at: Time(sent_at),
                }
            }),
        (ballot.clone(), slot(), values).prop_map(|(ballot, first, values)| Message::Learn {
            ballot,
            first,
            values
        }),
        (ballot.clone(), slot()).prop_map(|(ballot, commit)| Message::Learned { ballot, commit }),
        (ballot.clone(), ballot.clone())
            .prop_map(|(ballot, promised)| Message::Reject { ballot, promised }),
        (ballot, 0u64..20, 0u64..5).prop_map(|(ballot, seq, target)| Message::Handover {
            ballot,
            seq,
            target: NodeId(target)
        }),
    ]
    .boxed()
}

/// Encoded commands a peer may forward: real ones, mutated ones, garbage.
fn seed_command() -> BoxedStrategy<Bytes> {
    let seeds: Vec<Vec<u8>> = seed_commands().iter().map(|c| c.encode_to_vec()).collect();
    (
        prop::sample::select(seeds),
        prop::collection::vec(arb_mutation(), 0..3),
    )
        .prop_map(|(mut bytes, mutations)| {
            mutate(&mut bytes, &mutations);
            Bytes::from(bytes)
        })
        .boxed()
}

fn put(client: u64, seq: u64, key: &str, value: Vec<u8>, lease: i64) -> Command {
    Command {
        client,
        seq,
        op: Some(Op::Put(PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value),
            lease,
            ..PutRequest::default()
        })),
        ..Command::default()
    }
}

/// Commands of most kinds, as the front ends make them.
fn seed_commands() -> Vec<Command> {
    let zk = |seq: u64, op: synodpb::zk_op::Op| Command {
        client: 1,
        seq,
        op: Some(Op::Zk(synodpb::ZkWrite {
            time_ms: 1000,
            session: 0,
            ops: vec![synodpb::ZkOp { op: Some(op) }],
            ..synodpb::ZkWrite::default()
        })),
        ..Command::default()
    };
    vec![
        put(1, 1, "k1", b"short".to_vec(), 0),
        put(1, 2, "k2", vec![7; 300], 0),
        Command {
            client: 1,
            seq: 3,
            op: Some(Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 })),
            ..Command::default()
        },
        put(1, 4, "k3", b"leased".to_vec(), 7),
        put(1, 5, "k1", b"again".to_vec(), 0),
        Command {
            client: 1,
            seq: 6,
            op: Some(Op::DeleteRange(DeleteRangeRequest {
                key: Bytes::from_static(b"k1"),
                ..DeleteRangeRequest::default()
            })),
            ..Command::default()
        },
        zk(
            7,
            synodpb::zk_op::Op::Create(synodpb::ZkCreate {
                path: "/app".to_string(),
                data: Bytes::from_static(b"zdata"),
                acl: vec![synodpb::ZkAcl {
                    perms: 31,
                    id: Some(synodpb::ZkId {
                        scheme: "world".to_string(),
                        id: "anyone".to_string(),
                    }),
                }],
                mode: 0,
                ttl_ms: 0,
            }),
        ),
        zk(
            8,
            synodpb::zk_op::Op::OpenSession(synodpb::ZkOpenSession {
                id: 9,
                timeout_ms: 30_000,
                password: Bytes::from_static(b"secret"),
            }),
        ),
    ]
}

/// A batch for node `to`: messages addressed to it (a few to another
/// node, or with fields missing), and every other kind of item.
fn hostile_batch(to: NodeId) -> BoxedStrategy<peerpb::Batch> {
    (
        prop::collection::vec(
            prop_oneof![
                6 => near_message().prop_map(move |m| codec::encode(to, &m)),
                1 => near_message().prop_map(|m| codec::encode(NodeId(3), &m)),
                1 => pb_envelope().prop_map(move |mut e| {
                    e.to = to.0;
                    e
                }),
                1 => pb_envelope(),
            ],
            0..6,
        ),
        prop::collection::vec(seed_command(), 0..4),
        prop::collection::vec(
            (
                0u64..4,
                prop_oneof![Just(7i64), Just(9), any::<i64>()],
                any::<bool>(),
            )
                .prop_map(|(token, id, renew)| peerpb::LeaseQuery { token, id, renew }),
            0..3,
        ),
        prop::collection::vec(
            (0u64..4, any::<i64>(), any::<i64>()).prop_map(|(token, ttl, granted_ttl)| {
                peerpb::LeaseAnswer {
                    token,
                    ttl,
                    granted_ttl,
                }
            }),
            0..2,
        ),
        prop::collection::vec(0u64..4, 0..3),
        prop::collection::vec(
            (
                0u64..4,
                prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()],
                prop::collection::vec(any::<i64>(), 0..3),
            )
                .prop_map(|(token, count, leases)| peerpb::TimestampQuery {
                    token,
                    count,
                    leases,
                }),
            0..3,
        ),
        prop::collection::vec(
            (
                0u64..4,
                any::<bool>(),
                any::<i64>(),
                any::<i64>(),
                prop::collection::vec(any::<i64>(), 0..3),
                (any::<bool>(), edge_u64()),
            )
                .prop_map(
                    |(token, granted, first, last, live, (auth_enabled, auth_revision))| {
                        peerpb::TimestampAnswer {
                            token,
                            granted,
                            first,
                            last,
                            live,
                            auth_enabled,
                            auth_revision,
                        }
                    },
                ),
            0..2,
        ),
        prop::collection::vec(
            (0u64..4, any::<bool>(), edge_u64()).prop_map(|(token, confirmed, slot)| {
                peerpb::ReadIndexAnswer {
                    token,
                    confirmed,
                    slot,
                }
            }),
            0..2,
        ),
    )
        .prop_map(
            |(
                messages,
                forwards,
                lease_queries,
                lease_answers,
                read_index,
                timestamp_queries,
                timestamp_answers,
                read_index_answers,
            )| peerpb::Batch {
                from: 2,
                cluster_id: 7,
                messages,
                forwards,
                lease_queries,
                lease_answers,
                group: 1,
                read_index,
                read_index_answers,
                timestamp_queries,
                timestamp_answers,
                more: Vec::new(),
            },
        )
        .boxed()
}

/// Batches from a member (node 2) that no correct node sends, delivered
/// through their bytes to the leader and a follower of a live group, then
/// the group runs on: no panic, and the replica, the group and the store
/// keep their invariants after every step.
#[test]
fn hostile_batches_from_a_member_are_stepped_without_panic() {
    let _g = shared();
    // What the cases reached, so that the test cannot pass vacuously.
    let stepped = std::cell::Cell::new(0u64);
    let refused = std::cell::Cell::new(0u64);
    let applied = std::cell::Cell::new(0i64);
    proptest!(config(256), |(
        batches in prop::collection::vec(
            (1u64..4).prop_flat_map(|to| {
                (
                    hostile_batch(NodeId(to)),
                    prop::collection::vec(arb_mutation(), 0..2),
                    Just(to),
                )
            }),
            1..4,
        ),
    )| {
        let mut cluster = elected();
        let revision = cluster.groups[&NodeId(1)].kv().revision();
        for (batch, mutations, target) in batches {
            let mut data = batch.encode_to_vec();
            mutate(&mut data, &mutations);
            let Ok(batch) = peerpb::Batch::decode(data.as_slice()) else {
                continue;
            };
            let target = NodeId(target);
            let now = Time(cluster.now);
            let group = cluster.groups.get_mut(&target).expect("group");
            for item in codec::batch_items(batch, target) {
                group.step(NodeId(2), item, now);
                stepped.set(stepped.get() + 1);
            }
            cluster.settle();
        }
        cluster.run_ms(300);
        for group in cluster.groups.values() {
            let r = group.replica().refused();
            refused.set(refused.get() + r.malformed + r.absurd_round + r.conflicting_chosen);
        }
        let grown = cluster.groups.values().map(|g| g.kv().revision() - revision).max();
        applied.set(applied.get() + grown.unwrap_or(0));
    });
    eprintln!(
        "DIAG stepped {} refused {} applied {}",
        stepped.get(),
        refused.get(),
        applied.get()
    );
    assert!(stepped.get() > 0, "nothing was stepped");
    assert!(refused.get() > 0, "no message was refused");
    assert!(applied.get() > 0, "no forwarded command applied");
}

/// Regression (found by `hostile_batches_from_a_member_are_stepped_without_panic`
/// after 69,286 cases): an Accept in the leader's own ballot, sent to the
/// leader by another member, with a commit point past the leader's. The
/// leader took it as an acceptor would, raised its commit point under its
/// own window, and panicked on its invariant ("leader base vs commit").
/// No correct peer sends a replica a proposal in that replica's own
/// ballot; it is refused and counted as malformed.
#[test]
fn an_accept_in_the_leaders_own_ballot_from_a_peer_is_refused() {
    let _g = shared();
    for forger in 1..=3u64 {
        let mut cluster = elected();
        let leader = cluster.leader().expect("leader");
        // The leader has something in its log.
        let now = Time(cluster.now);
        let put = seed_commands()[0].encode_to_vec();
        let group = cluster.groups.get_mut(&leader).expect("group");
        group.step(NodeId(forger), PeerItem::Forward(Bytes::from(put)), now);
        cluster.settle();
        let status = cluster.groups[&leader].replica().status();
        let first = status.commit.next();
        let members = Membership::new(&[NodeId(3)], &[]);
        let forged = Message::Accept {
            ballot: status.promised,
            first,
            values: vec![Value::Membership(Configuration::Joint {
                old: members.clone(),
                new: members,
            })],
            commit: first,
            seq: 0,
            sent_at: Time(0),
        };
        let batch = peerpb::Batch {
            from: forger,
            cluster_id: 7,
            messages: vec![codec::encode(leader, &forged)],
            group: 1,
            ..peerpb::Batch::default()
        };
        let before = cluster.groups[&leader].replica().refused().malformed;
        let now = Time(cluster.now);
        let group = cluster.groups.get_mut(&leader).expect("group");
        for item in codec::batch_items(batch, leader) {
            group.step(NodeId(forger), item, now);
        }
        cluster.settle();
        let group = &cluster.groups[&leader];
        assert_eq!(
            group.replica().refused().malformed,
            before + 1,
            "from {forger}"
        );
        assert_eq!(group.replica().status().commit, status.commit);
        cluster.run_ms(200);
        assert!(cluster.leader().is_some());
    }
}

/// A message carrying more slots than any correct peer sends is refused
/// whole and counted, through the codec as from the wire.
#[test]
fn oversized_messages_are_refused_and_counted() {
    let _g = shared();
    let mut cluster = elected();
    let leader = cluster.leader().expect("leader");
    let follower = NodeId(if leader.0 == 3 { 2 } else { 3 });
    let ballot = cluster.groups[&leader].replica().status().promised;
    let values = vec![Value::Noop; synod_paxos::MESSAGE_SLOTS_MAX as usize + 1];
    let accept = Message::Accept {
        ballot,
        first: Slot(1),
        values,
        commit: Slot(0),
        seq: 1,
        sent_at: Time(cluster.now),
    };
    let batch = peerpb::Batch {
        from: leader.0,
        cluster_id: 7,
        messages: vec![codec::encode(follower, &accept)],
        group: 1,
        ..peerpb::Batch::default()
    };
    let batch = peerpb::Batch::decode(batch.encode_to_vec().as_slice()).expect("decodes");
    let before = cluster.groups[&follower].replica().refused().malformed;
    let now = Time(cluster.now);
    let items = codec::batch_items(batch, follower);
    assert_eq!(items.len(), 1);
    let group = cluster.groups.get_mut(&follower).expect("group");
    for item in items {
        group.step(leader, item, now);
    }
    assert_eq!(group.replica().refused().malformed, before + 1);
    cluster.settle();
    cluster.run_ms(200);
    assert!(cluster.leader().is_some());
}

// ---------------------------------------------------------------------
// Snapshot files.
// ---------------------------------------------------------------------

const G: GroupId = GroupId(1);

fn identity() -> Identity {
    Identity {
        cluster_id: 7,
        node_id: 1,
    }
}

/// The rows of a store of every kind (short and long values, history, a
/// tombstone, a lease, a session, znodes and a ZooKeeper session), as a
/// node's storage holds them, and the file the node's writer makes of them.
struct Fixture {
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    file: Vec<u8>,
    v1: Vec<u8>,
    revision: i64,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path(), identity()).expect("open");
        let mut kv = KvStore::default();
        kv.attach(storage.state(G).expect("state"), true);
        for (slot, command) in seed_commands().iter().enumerate() {
            kv.apply(command);
            let mut batch = storage.batch().expect("batch");
            batch.write_state(G, &kv.take_changes()).expect("write");
            batch
                .set_applied(G, Slot(slot as u64 + 1))
                .expect("applied");
            batch.commit().expect("commit");
            kv.changes_written();
        }
        let mut reader = storage.snapshot_reader(G).expect("reader");
        let (mut writer, mut file) = SnapshotFileWriter::new();
        let mut rows = Vec::new();
        while let Some(chunk) = reader.next_chunk(200).expect("chunk") {
            synod_storage::stream::for_each_row(&chunk.data, |k, v| {
                rows.push((k.to_vec(), v.to_vec()))
            })
            .expect("rows");
            file.extend(writer.rows(&chunk.data));
        }
        file.extend(writer.finish());
        let revision = kv.revision();
        let v1 = v1_file(&kv.snapshot().encode_to_vec());
        Fixture {
            rows,
            file,
            v1,
            revision,
        }
    })
}

/// A file as the first version wrote it: magic, length, encoded
/// snapshot, SHA-256.
fn v1_file(snapshot: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut file = b"SYNODSNP".to_vec();
    file.extend_from_slice(&(snapshot.len() as u64).to_le_bytes());
    file.extend_from_slice(snapshot);
    let hash = sha2::Sha256::digest(&file);
    file.extend_from_slice(&hash);
    file
}

/// A file of these chunks of rows, made by the node's writer: framing and
/// checksum valid whatever the rows hold.
fn file_of(chunks: &[Vec<u8>]) -> Vec<u8> {
    let (mut writer, mut file) = SnapshotFileWriter::new();
    for c in chunks {
        file.extend(writer.rows(c));
    }
    file.extend(writer.finish());
    file
}

/// Restores `file` into a fresh data dir; returns the outcome and whether
/// the dir holds a database afterwards.
fn restore(file: &[u8]) -> (Result<i64, RestoreError>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snap.db");
    std::fs::write(&path, file).expect("write");
    let result = restore_snapshot(&dir.path().join("data"), identity(), &path).map(|r| r.revision);
    (result, dir)
}

fn database_in(dir: &Path) -> bool {
    dir.join("data")
        .join(synod_storage::format::FILE_NAME)
        .exists()
}

/// A restored data dir serves every read without panicking: every key's
/// every version with its value (long ones from disk), the ZooKeeper tree,
/// and the store's own invariant checks.
fn check_restored(dir: &Path, revision: i64) -> Result<(), TestCaseError> {
    let storage = Storage::open(&dir.join("data"), identity()).map_err(|e| fail(&e.to_string()))?;
    let kv = storage.load_store(G).map_err(|e| fail(&e.to_string()))?;
    prop_assert_eq!(kv.revision(), revision);
    kv.check_invariants();
    let all = RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        ..RangeRequest::default()
    };
    for rev in kv.compact_revision().max(1)..=kv.revision() {
        let _ = kv.range(&RangeRequest {
            revision: rev,
            ..all.clone()
        });
    }
    let _ = kv.history(&synod_kv::KeyRange::all(), kv.compact_revision() + 1);
    let _ = kv.hash_kv(0);
    let _ = kv.snapshot();
    Ok(())
}

fn fail(why: &str) -> TestCaseError {
    TestCaseError::fail(why.to_string())
}

/// A damaged file is refused as corrupt and leaves no database behind.
fn refused(file: &[u8]) -> Result<(), TestCaseError> {
    let (result, dir) = restore(file);
    prop_assert!(
        matches!(result, Err(RestoreError::Corrupt(_))),
        "{:?}",
        result
    );
    prop_assert!(!database_in(dir.path()), "a refused file left a database");
    Ok(())
}

#[test]
fn the_fixture_restores() {
    let _g = shared();
    let f = fixture();
    for file in [&f.file, &f.v1] {
        let (result, dir) = restore(file);
        assert_eq!(result.expect("restores"), f.revision);
        check_restored(dir.path(), f.revision).expect("reads");
    }
    assert!(f.rows.iter().any(|(k, _)| k[0] == b'd'), "a long value row");
    assert!(f.rows.iter().any(|(k, _)| k[0] == b'z'), "a znode row");
    assert!(
        f.rows.iter().any(|(k, _)| k[0] == b'y'),
        "a ZooKeeper session"
    );
    assert!(f.rows.iter().any(|(k, _)| k[0] == b'l'), "a lease row");
    assert!(f.rows.iter().any(|(k, _)| k[0] == b's'), "a session row");
}

/// The node's own file with bits flipped, cut short, or with bytes
/// appended: always refused (the SHA-256 covers every byte), the data dir
/// left without a database, and usable for the intact file afterwards.
#[test]
fn damaged_files_are_refused_and_leave_no_database() {
    let _g = shared();
    let f = fixture();
    proptest!(config(64), |(
        which in 0..2usize,
        damage in prop_oneof![
            prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4)
                .prop_map(Damage::Flips),
            any::<prop::sample::Index>().prop_map(Damage::Cut),
            prop::collection::vec(any::<u8>(), 1..600).prop_map(Damage::Append),
        ],
    )| {
        let intact = if which == 0 { &f.file } else { &f.v1 };
        let mut file = intact.clone();
        match &damage {
            Damage::Flips(flips) => {
                for (i, bit) in flips {
                    file[i.index(intact.len())] ^= 1 << bit;
                }
                prop_assume!(&file != intact);
            }
            Damage::Cut(i) => file.truncate(i.index(intact.len())),
            Damage::Append(bytes) => file.extend_from_slice(bytes),
        }
        let (result, dir) = restore(&file);
        prop_assert!(
            matches!(result, Err(RestoreError::Corrupt(_))),
            "{:?}: {:?}", damage, result
        );
        prop_assert!(!database_in(dir.path()), "a refused file left a database");
        // The same dir takes the intact file.
        let path = dir.path().join("snap.db");
        std::fs::write(&path, intact).expect("write");
        let again = restore_snapshot(&dir.path().join("data"), identity(), &path);
        prop_assert_eq!(again.map(|r| r.revision).map_err(|e| e.to_string()), Ok(f.revision));
    });
}

#[derive(Debug)]
enum Damage {
    Flips(Vec<(prop::sample::Index, u8)>),
    Cut(prop::sample::Index),
    Append(Vec<u8>),
}

/// Random bytes after the right magic (either version's), with and without
/// a valid SHA-256 at the end: refused as corrupt.
#[test]
fn random_bytes_with_the_magic_are_refused() {
    let _g = shared();
    proptest!(config(128), |(
        v1 in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..1200),
        hashed in any::<bool>(),
    )| {
        use sha2::Digest;
        let mut file = if v1 { b"SYNODSNP".to_vec() } else { b"SYNODSN2".to_vec() };
        file.extend_from_slice(&body);
        if hashed {
            let hash = sha2::Sha256::digest(&file);
            file.extend_from_slice(&hash);
        }
        refused(&file)?;
    });
}

/// Framing records as a hostile file could write them (any kind, any
/// length, any padding) with a valid SHA-256: refused as corrupt unless
/// the framing is right, never a panic, never an allocation the file
/// cannot back.
#[test]
fn hostile_framing_is_refused() {
    let _g = shared();
    let record = (
        prop_oneof![Just(0u8), Just(1u8), any::<u8>()],
        prop_oneof![
            3 => 0u64..64,
            1 => Just(synod_storage::stream::CHUNK_BYTES_MAX as u64),
            1 => Just(synod_storage::stream::CHUNK_BYTES_MAX as u64 + 1),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ],
        prop::collection::vec(any::<u8>(), 0..64),
    );
    proptest!(config(128), |(
        records in prop::collection::vec(record, 0..4),
        padding in prop_oneof![Just(0usize), 0usize..1100],
    )| {
        use sha2::Digest;
        let mut file = b"SYNODSN2".to_vec();
        for (kind, len, bytes) in &records {
            file.push(*kind);
            file.extend_from_slice(&len.to_le_bytes());
            file.extend_from_slice(bytes);
        }
        file.resize(file.len() + padding, 0);
        let hash = sha2::Sha256::digest(&file);
        file.extend_from_slice(&hash);
        let (result, dir) = restore(&file);
        match result {
            Ok(_) => prop_assert!(database_in(dir.path())),
            Err(e) => {
                prop_assert!(matches!(e, RestoreError::Corrupt(_)), "{:?}", e);
                prop_assert!(!database_in(dir.path()));
            }
        }
    });
}

/// A row chunk's length that only the end of the file can contradict is
/// refused without allocating it: a file of a few dozen bytes used to make
/// the reader allocate the largest chunk it accepts (74 MiB) before
/// finding the file too short. Measured against the same file refused at
/// its first record for its kind (opening the database costs the same in
/// both).
#[test]
fn a_record_longer_than_the_file_is_refused_before_allocating() {
    let _g = exclusive();
    use sha2::Digest;
    let restore_counted = |kind: u8| {
        let mut file = b"SYNODSN2".to_vec();
        file.push(kind);
        file.extend_from_slice(&(synod_storage::stream::CHUNK_BYTES_MAX as u64).to_le_bytes());
        file.extend_from_slice(&[0; 16]);
        let hash = sha2::Sha256::digest(&file);
        file.extend_from_slice(&hash);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.db");
        std::fs::write(&path, &file).expect("write");
        let data = dir.path().join("data");
        let (result, bytes) = allocated_by(|| restore_snapshot(&data, identity(), &path));
        assert!(
            matches!(result, Err(RestoreError::Corrupt(_))),
            "{result:?}"
        );
        assert!(!data.join(synod_storage::format::FILE_NAME).exists());
        bytes
    };
    let baseline = restore_counted(9);
    let bytes = restore_counted(1);
    assert!(
        bytes < baseline + (1 << 20),
        "{bytes} bytes allocated, {baseline} for a file refused at once"
    );
}

/// How a row of a real store is damaged before it goes into a file with a
/// valid checksum.
#[derive(Clone, Debug)]
enum RowDamage {
    Drop,
    Duplicate,
    Value(Vec<Mutation>),
    Key(Vec<Mutation>),
    /// A row of another kind's tag with this row's value.
    Retag(u8),
}

fn arb_row_damage() -> BoxedStrategy<RowDamage> {
    prop_oneof![
        2 => Just(RowDamage::Drop),
        1 => Just(RowDamage::Duplicate),
        4 => prop::collection::vec(arb_mutation(), 1..3).prop_map(RowDamage::Value),
        2 => prop::collection::vec(arb_mutation(), 1..3).prop_map(RowDamage::Key),
        1 => prop::sample::select(b"mkdlszy!".to_vec()).prop_map(RowDamage::Retag),
    ]
    .boxed()
}

/// The rows of a real store, some damaged (dropped, repeated, values or
/// keys mutated, retagged), in a file whose framing and checksum are
/// valid: the rows themselves are all that is wrong. The restore refuses
/// the file, or what it restores serves every read without a panic.
#[test]
fn damaged_rows_in_a_valid_file_are_refused_or_restore_usable() {
    let _g = shared();
    let f = fixture();
    let n = f.rows.len();
    proptest!(config(96), |(
        damage in prop::collection::btree_map(0..n, arb_row_damage(), 1..4),
        split in 1usize..4,
    )| {
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (i, (k, v)) in f.rows.iter().enumerate() {
            let (mut k, mut v) = (k.clone(), v.clone());
            match damage.get(&i) {
                None => {}
                Some(RowDamage::Drop) => continue,
                Some(RowDamage::Duplicate) => rows.push((k.clone(), v.clone())),
                Some(RowDamage::Value(m)) => mutate(&mut v, m),
                Some(RowDamage::Key(m)) => mutate(&mut k, m),
                Some(RowDamage::Retag(tag)) => k[0] = *tag,
            }
            if k.is_empty() {
                k.push(b'!');
            }
            rows.push((k, v));
        }
        // Rows go out in key order, as a reader sends them.
        rows.sort();
        let mut chunks = vec![Vec::new(); split];
        for (i, (k, v)) in rows.iter().enumerate() {
            synod_storage::stream::push_row(&mut chunks[i % split], k, v);
        }
        let (result, dir) = restore(&file_of(&chunks));
        match result {
            Ok(revision) => check_restored(dir.path(), revision)?,
            Err(e) => {
                prop_assert!(matches!(e, RestoreError::Corrupt(_)), "{:?}", e);
                prop_assert!(!database_in(dir.path()));
            }
        }
    });
}

/// Arbitrary rows (any tag, any key, any value) in a valid file.
#[test]
fn garbage_rows_in_a_valid_file_are_refused_or_restore_usable() {
    let _g = shared();
    let meta = fixture()
        .rows
        .iter()
        .find(|(k, _)| k == b"m")
        .expect("meta row")
        .clone();
    let row = (
        prop::sample::select(b"mkdlszy\0\xff".to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
        prop::collection::vec(any::<u8>(), 0..48),
    );
    proptest!(config(96), |(
        rows in prop::collection::vec(row, 0..8),
        with_meta in any::<bool>(),
    )| {
        let mut data = Vec::new();
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = rows
            .into_iter()
            .map(|(tag, rest, value)| ([vec![tag], rest].concat(), value))
            .collect();
        if with_meta {
            rows.push(meta.clone());
        }
        rows.sort();
        for (k, v) in &rows {
            synod_storage::stream::push_row(&mut data, k, v);
        }
        let (result, dir) = restore(&file_of(&[data]));
        match result {
            Ok(revision) => check_restored(dir.path(), revision)?,
            Err(e) => {
                prop_assert!(matches!(e, RestoreError::Corrupt(_)), "{:?}", e);
                prop_assert!(!database_in(dir.path()));
            }
        }
    });
}

/// Files of the first version whose snapshot is mutated but whose
/// checksum is valid: refused, or restored and usable.
#[test]
fn mutated_v1_snapshots_are_refused_or_restore_usable() {
    let _g = shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(dir.path(), identity()).expect("open");
    let mut kv = KvStore::default();
    kv.attach(storage.state(G).expect("state"), true);
    for c in seed_commands() {
        kv.apply(&c);
    }
    let snapshot = kv.snapshot().encode_to_vec();
    proptest!(config(128), |(mutations in prop::collection::vec(arb_mutation(), 1..5))| {
        let mut s = snapshot.clone();
        mutate(&mut s, &mutations);
        let (result, dir) = restore(&v1_file(&s));
        match result {
            Ok(revision) => check_restored(dir.path(), revision)?,
            Err(e) => {
                prop_assert!(matches!(e, RestoreError::Corrupt(_)), "{:?}", e);
                prop_assert!(!database_in(dir.path()));
            }
        }
    });
}
