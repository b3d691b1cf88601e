//! Hostile snapshot streams (issue 12): what a node receives from a peer
//! that sends chunks out of order, of another snapshot, with absurd
//! indexes, with bytes that are not rows, or with rows that are not a
//! store. Each chunk is taken or refused exactly as the stream's rules
//! say (a model of them runs beside the storage), a refused chunk writes
//! nothing, a completed stage of garbage rows fails to load (or loads a
//! store that serves every read), and the stream is never wedged: the real
//! snapshot still installs afterwards.
//!
//! Case counts follow `PROPTEST_CASES` for long runs (docs/fuzzing.md):
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release -p synod-storage --test hostile_input
//! ```

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::sync::OnceLock;
use synod_kv::{KeyRange, KvStore};
use synod_paxos::Slot;
use synod_proto::etcdserverpb::{LeaseGrantRequest, PutRequest, RangeRequest};
use synod_proto::synodpb::{command::Op, Command};
use synod_storage::stream::{
    check_rows, for_each_row, push_row, CHUNK_BYTES_MAX, ROW_KEY_BYTES_MAX, ROW_VALUE_BYTES_MAX,
};
use synod_storage::{GroupId, Identity, Received, Storage, StreamChunk};

const G: GroupId = GroupId(1);

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

fn open(dir: &std::path::Path, node: u64) -> Storage {
    Storage::open(
        dir,
        Identity {
            cluster_id: 9,
            node_id: node,
        },
    )
    .expect("open")
}

/// A real snapshot stream: its slot, its chunks, and the store it holds.
struct Fixture {
    slot: Slot,
    chunks: Vec<StreamChunk>,
    store: KvStore,
    _dir: tempfile::TempDir,
}

/// A leader's store with short and long values, history and a lease,
/// streamed in small chunks.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path(), 1);
        let mut kv = KvStore::default();
        kv.attach(storage.state(G).expect("state"), true);
        let mut commands = vec![Command {
            client: 1,
            seq: 1,
            op: Some(Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 })),
            ..Command::default()
        }];
        for seq in 2..=12u64 {
            let len = if seq % 3 == 0 { 400 } else { 10 };
            commands.push(Command {
                client: 1,
                seq,
                op: Some(Op::Put(PutRequest {
                    key: Bytes::from(format!("key{}", seq % 5)),
                    value: Bytes::from(vec![seq as u8; len]),
                    lease: if seq == 4 { 7 } else { 0 },
                    ..PutRequest::default()
                })),
                ..Command::default()
            });
        }
        for (slot, command) in commands.iter().enumerate() {
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
        let mut chunks = Vec::new();
        while let Some(c) = reader.next_chunk(300).expect("chunk") {
            chunks.push(c);
        }
        assert!(chunks.len() >= 4, "{} chunks", chunks.len());
        Fixture {
            slot: reader.slot(),
            chunks,
            store: KvStore::restore(kv.snapshot()).expect("restore"),
            _dir: dir,
        }
    })
}

/// A loaded store serves every read without a panic: every revision of
/// every key with its value (long ones from disk), the history, the hash.
fn check_usable(kv: &KvStore) {
    kv.check_invariants();
    let all = RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        ..RangeRequest::default()
    };
    for revision in kv.compact_revision().max(1)..=kv.revision() {
        let _ = kv.range(&RangeRequest {
            revision,
            ..all.clone()
        });
    }
    let _ = kv.history(&KeyRange::all(), kv.compact_revision() + 1);
    let _ = kv.hash_kv(0);
}

// ---------------------------------------------------------------------
// Row framing.
// ---------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1024))]

    /// Any bytes either parse as rows whose framing is exactly the input
    /// (nothing skipped, nothing read past the end), or are refused.
    #[test]
    fn any_bytes_parse_exactly_or_are_refused(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut rows = Vec::new();
        match for_each_row(&data, |k, v| rows.push((k.to_vec(), v.to_vec()))) {
            Ok(n) => {
                prop_assert_eq!(n, rows.len());
                let mut again = Vec::new();
                for (k, v) in &rows {
                    prop_assert!(!k.is_empty());
                    push_row(&mut again, k, v);
                }
                prop_assert_eq!(again, data);
            }
            Err(why) => prop_assert!(why.starts_with("row ")),
        }
    }

    /// Rows framed by the writer parse back to themselves unless a key is
    /// empty; with any length field overwritten by a larger claim, or cut
    /// anywhere inside a row, they are refused.
    #[test]
    fn framed_rows_parse_back_and_damage_is_refused(
        rows in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..12), prop::collection::vec(any::<u8>(), 0..40)),
            1..6,
        ),
        field in any::<prop::sample::Index>(),
        claim in prop_oneof![Just(u32::MAX), Just(1u32 << 31), Just(ROW_VALUE_BYTES_MAX as u32 + 1)],
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = Vec::new();
        let mut fields = Vec::new();
        for (k, v) in &rows {
            fields.push(data.len());
            fields.push(data.len() + 4 + k.len());
            push_row(&mut data, k, v);
        }
        let mut seen = Vec::new();
        let parsed = for_each_row(&data, |k, v| seen.push((k.to_vec(), v.to_vec())));
        if rows.iter().any(|(k, _)| k.is_empty()) {
            prop_assert!(parsed.is_err());
        } else {
            prop_assert_eq!(parsed, Ok(rows.len()));
            prop_assert_eq!(&seen, &rows);
            let at = fields[field.index(fields.len())];
            let mut bad = data.clone();
            bad[at..at + 4].copy_from_slice(&claim.to_le_bytes());
            prop_assert!(check_rows(&bad).is_err());
            // Every row boundary is a valid end; any other cut is not.
            let boundaries: Vec<usize> = fields.iter().step_by(2).copied().collect();
            let end = cut.index(data.len());
            if !boundaries.contains(&end) {
                prop_assert!(check_rows(&data[..end]).is_err(), "cut at {}", end);
            }
        }
    }
}

#[test]
fn limits_of_a_chunk_are_enforced() {
    // The largest key and value a chunk may carry parse; one byte more is
    // refused, before any of it is written.
    let mut data = Vec::new();
    push_row(&mut data, &vec![b'k'; ROW_KEY_BYTES_MAX], b"");
    assert_eq!(check_rows(&data), Ok(1));
    let mut data = Vec::new();
    push_row(&mut data, &vec![b'k'; ROW_KEY_BYTES_MAX + 1], b"");
    assert!(check_rows(&data).is_err());
    let mut data = Vec::new();
    push_row(&mut data, b"k", &vec![0; ROW_VALUE_BYTES_MAX + 1]);
    assert!(check_rows(&data).is_err());
    assert!(check_rows(&vec![0; CHUNK_BYTES_MAX + 1])
        .unwrap_err()
        .contains("more than"));
    // A chunk that large is refused by the receiver and changes nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = open(dir.path(), 2);
    let before = storage.state_ids(G).expect("ids");
    let chunk = StreamChunk {
        index: 0,
        last: true,
        data: Bytes::from(vec![0; CHUNK_BYTES_MAX + 1]),
    };
    assert!(matches!(
        storage.receive_chunk(G, Slot(1), &chunk).expect("receive"),
        Received::Refused(_)
    ));
    assert_eq!(storage.state_ids(G).expect("ids"), before);
}

// ---------------------------------------------------------------------
// The receiver, against a model of the stream's rules.
// ---------------------------------------------------------------------

/// What a chunk carries.
#[derive(Clone, Debug)]
enum Data {
    /// Chunk `i` of the real stream.
    Real(prop::sample::Index),
    /// Chunk `i` of the real stream with bytes flipped.
    Flipped(prop::sample::Index, Vec<(prop::sample::Index, u8)>),
    /// Bytes that are probably not rows.
    Bytes(Vec<u8>),
    /// Well-framed rows of anything: a tag the store knows or not.
    Rows(Vec<(u8, Vec<u8>, Vec<u8>)>),
}

/// Which index a chunk claims.
#[derive(Clone, Debug)]
enum Index {
    /// The one the receiver expects next (0 without a stage).
    Expected,
    /// The real chunk's own.
    Own,
    Zero,
    Any(u64),
}

#[derive(Clone, Debug)]
struct Step {
    data: Data,
    index: Index,
    /// An offset from the real slot (0: the real one).
    slot: u64,
    last: Option<bool>,
}

fn arb_step() -> impl Strategy<Value = Step> {
    let at = any::<prop::sample::Index>;
    let data = prop_oneof![
        6 => at().prop_map(Data::Real),
        2 => (at(), prop::collection::vec((at(), 0u8..8), 1..4))
            .prop_map(|(i, flips)| Data::Flipped(i, flips)),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Data::Bytes),
        2 => prop::collection::vec(
            (
                prop::sample::select(b"mkdlszy\0".to_vec()),
                prop::collection::vec(any::<u8>(), 0..20),
                prop::collection::vec(any::<u8>(), 0..40),
            ),
            0..5,
        )
        .prop_map(Data::Rows),
    ];
    let index = prop_oneof![
        4 => Just(Index::Expected),
        3 => Just(Index::Own),
        1 => Just(Index::Zero),
        1 => prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), 0u64..16, any::<u64>()]
            .prop_map(Index::Any),
    ];
    let slot = prop_oneof![6 => Just(0u64), 1 => Just(1u64), 1 => any::<u64>()];
    let last = prop_oneof![4 => Just(None), 1 => any::<bool>().prop_map(Some)];
    (data, index, slot, last).prop_map(|(data, index, slot, last)| Step {
        data,
        index,
        slot,
        last,
    })
}

/// The stream's rules: what the receiver must do with a chunk, given the
/// stage it has (slot, next index, complete).
fn expected(stage: Option<(Slot, u64, bool)>, slot: Slot, chunk: &StreamChunk) -> Expect {
    if check_rows(&chunk.data).is_err() {
        return Expect::Refused;
    }
    match (stage, chunk.index) {
        (Some((_, _, true)), _) => Expect::Refused,
        (_, 0) => Expect::Taken { fresh: true },
        (Some((s, next, false)), i) if s == slot && next == i => Expect::Taken { fresh: false },
        _ => Expect::Refused,
    }
}

#[derive(Debug, PartialEq)]
enum Expect {
    Refused,
    Taken { fresh: bool },
}

/// Chunks of every kind of wrongness go to a receiver, each checked
/// against the rules; a completed stage is loaded (and installed when it
/// loads, discarded when not) as the runtime does. The loaded store is the
/// real one exactly when the real chunks arrived in order, and serves
/// every read whatever it is. Afterwards the real stream still installs.
#[test]
fn hostile_chunk_sequences_follow_the_stream_rules() {
    let f = fixture();
    let n = f.chunks.len();
    proptest!(config(48), |(steps in prop::collection::vec(arb_step(), 1..24))| {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path(), 2);
        // The data of the chunks taken into the current stage, in order.
        let mut taken: Vec<Bytes> = Vec::new();
        let mut stage_id = None;
        for step in &steps {
            let ids = storage.state_ids(G).expect("ids");
            let stage = ids.stage.map(|s| (s.slot, s.next, s.complete));
            let (data, own) = match &step.data {
                Data::Real(i) => {
                    let c = &f.chunks[i.index(n)];
                    (c.data.clone(), Some(c))
                }
                Data::Flipped(i, flips) => {
                    let c = &f.chunks[i.index(n)];
                    let mut d = c.data.to_vec();
                    let len = d.len();
                    for (at, bit) in flips.iter().filter(|_| len > 0) {
                        d[at.index(len)] ^= 1 << bit;
                    }
                    (Bytes::from(d), Some(c))
                }
                Data::Bytes(b) => (Bytes::from(b.clone()), None),
                Data::Rows(rows) => {
                    let mut d = Vec::new();
                    for (tag, k, v) in rows {
                        push_row(&mut d, &[&[*tag][..], k].concat(), v);
                    }
                    (Bytes::from(d), None)
                }
            };
            let index = match step.index {
                Index::Expected => stage.map_or(0, |(_, next, _)| next),
                Index::Own => own.map_or(0, |c| c.index),
                Index::Zero => 0,
                Index::Any(i) => i,
            };
            let last = step.last.unwrap_or_else(|| own.is_some_and(|c| c.last));
            let slot = Slot(f.slot.0.wrapping_add(step.slot));
            let chunk = StreamChunk { index, last, data };
            let want = expected(stage, slot, &chunk);
            let got = storage.receive_chunk(G, slot, &chunk).expect("receive");
            let after = storage.state_ids(G).expect("ids");
            prop_assert_eq!(after.live, ids.live, "a chunk changed the live rows");
            match (&want, &got) {
                (Expect::Refused, Received::Refused(_)) => {
                    prop_assert_eq!(after, ids, "a refused chunk changed the stage");
                    continue;
                }
                (Expect::Taken { .. }, Received::Partial) if !last => {}
                (Expect::Taken { .. }, Received::Complete { .. }) if last => {}
                _ => prop_assert!(false, "expected {:?}, got {:?} for {:?}", want, got, step),
            }
            let s = after.stage.expect("a stage after a taken chunk");
            prop_assert_eq!((s.slot, s.complete), (slot, last));
            if want == (Expect::Taken { fresh: true }) {
                prop_assert!(stage_id != Some(s.id), "a new stream reused stage {}", s.id);
                prop_assert_eq!(s.next, 1);
                taken.clear();
            } else {
                prop_assert_eq!(Some(s.id), stage_id);
                prop_assert_eq!(s.next, index + 1);
            }
            stage_id = Some(s.id);
            taken.push(chunk.data.clone());
            let Received::Complete { stage } = got else {
                continue;
            };
            prop_assert_eq!(stage, s.id);
            let real = slot == f.slot
                && taken.len() == n
                && taken.iter().zip(&f.chunks).all(|(a, b)| *a == b.data);
            let mut batch = storage.batch().expect("batch");
            match storage.load_staged(G, stage) {
                Ok(kv) => {
                    if real {
                        prop_assert!(kv == f.store, "the real stream loaded another store");
                    }
                    check_usable(&kv);
                    batch.install_staged(G, stage).expect("install");
                    batch.set_applied(G, slot).expect("applied");
                    batch.commit().expect("commit");
                    check_usable(&storage.load_store(G).expect("live store"));
                }
                Err(e) => {
                    prop_assert!(!real, "the real stream failed to load: {}", e);
                    batch.discard_stage(G, stage).expect("discard");
                    batch.commit().expect("commit");
                }
            }
            prop_assert_eq!(storage.state_ids(G).expect("ids").stage, None);
            taken.clear();
        }
        // Whatever came before, the real stream installs.
        let mut installed = None;
        for c in &f.chunks {
            match storage.receive_chunk(G, f.slot, c).expect("receive") {
                Received::Complete { stage } => installed = Some(stage),
                Received::Partial => {}
                Received::Refused(why) => prop_assert!(false, "real chunk refused: {}", why),
            }
        }
        let stage = installed.expect("complete");
        prop_assert!(storage.load_staged(G, stage).expect("loads") == f.store);
    });
}

/// One row: key, value.
type Row = (Vec<u8>, Vec<u8>);

/// A stage whose rows hold no store (no meta row), or whose long value
/// rows are missing or cut, fails to load with the reason, and the stage
/// can then be discarded. The value rows are the regression: such a
/// stage used to load, and the first read of the value panicked.
#[test]
fn stages_of_broken_stores_fail_to_load() {
    let f = fixture();
    let mut rows: Vec<Row> = Vec::new();
    for c in &f.chunks {
        for_each_row(&c.data, |k, v| rows.push((k.to_vec(), v.to_vec()))).expect("rows");
    }
    let value_rows: Vec<usize> = (0..rows.len()).filter(|i| rows[*i].0[0] == b'd').collect();
    assert!(!value_rows.is_empty());
    let broken: Vec<(&str, Vec<Row>)> = vec![
        (
            "no meta row",
            rows.iter().filter(|(k, _)| k != b"m").cloned().collect(),
        ),
        (
            "value row",
            rows.iter()
                .enumerate()
                .filter(|(i, _)| *i != value_rows[0])
                .map(|(_, r)| r.clone())
                .collect(),
        ),
        (
            "value row",
            rows.iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    let v = if i == value_rows[0] {
                        v[..v.len() - 1].to_vec()
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        (
            "value row",
            rows.iter()
                .map(|(k, v)| (k.clone(), if k[0] == b'd' { Vec::new() } else { v.clone() }))
                .collect(),
        ),
    ];
    for (reason, rows) in broken {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path(), 2);
        let mut data = Vec::new();
        for (k, v) in &rows {
            push_row(&mut data, k, v);
        }
        let chunk = StreamChunk {
            index: 0,
            last: true,
            data: Bytes::from(data),
        };
        let Received::Complete { stage } =
            storage.receive_chunk(G, f.slot, &chunk).expect("receive")
        else {
            panic!("one chunk completes the stage");
        };
        let e = storage.load_staged(G, stage).expect_err(reason).to_string();
        assert!(e.contains(reason), "{e}");
        let mut batch = storage.batch().expect("batch");
        batch.discard_stage(G, stage).expect("discard");
        batch.commit().expect("commit");
        assert_eq!(storage.state_ids(G).expect("ids").stage, None);
    }
}
