//! One conformance suite for every implementation of a node's disk.
//!
//! The consensus core is only as safe as the disk under it: a promise that
//! comes back lower after a restart, or a record that silently replaces a
//! newer one, breaks Paxos without any test of the core noticing. So the
//! semantics of "write a `Persist`" and "read back a `Durable`" are written
//! down once, executable, in [`MemDisk`] (the reference model: the rules of
//! the simulator's in-memory disk, except that compaction itself records the
//! snapshot slot), and every implementation — the redb
//! [`Storage`](crate::Storage), the reference model itself, a future one —
//! must pass the same cases: call [`run_all`] from a test.
//!
//! Cases panic with the case name and both states on a mismatch. The one
//! randomized case takes a seed and prints it on failure.

use crate::types::GroupId;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use synod_paxos::{
    Ballot, Configuration, Durable, Membership, MembershipRecord, NodeId, Persist, Slot,
    SlotRecord, Value,
};

/// What the suite needs from a disk.
pub trait Disk {
    /// The implementation's error; any error fails the suite.
    type Error: fmt::Debug;

    /// Makes one batch durable, atomically: each `(group, persist)` in order.
    fn write(&mut self, batch: &[(GroupId, Persist<Bytes>)]) -> Result<(), Self::Error>;

    /// What a restarting replica of `group` reads back.
    fn load(&mut self, group: GroupId) -> Result<Durable<Bytes>, Self::Error>;

    /// Closes and reopens the disk, as a clean restart of the node would.
    fn reopen(&mut self) -> Result<(), Self::Error>;
}

/// The reference model: the disk semantics in a few lines, with nothing to
/// go wrong. Other implementations are checked against it.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    groups: BTreeMap<GroupId, MemGroup>,
}

#[derive(Clone, Debug, Default)]
struct MemGroup {
    promised: Ballot,
    snapshot: Slot,
    commit: Slot,
    records: BTreeMap<Slot, SlotRecord<Bytes>>,
    membership: Option<MembershipRecord>,
}

impl MemDisk {
    /// Applies one persist, in the order `Batch::persist` documents.
    pub fn apply(&mut self, group: GroupId, persist: &Persist<Bytes>) {
        if persist.is_empty() {
            return;
        }
        let g = self.groups.entry(group).or_default();
        if let Some(promised) = persist.promised {
            assert!(promised >= g.promised, "promise regressed");
            g.promised = promised;
        }
        for r in persist.records.iter().filter(|r| r.slot > g.snapshot) {
            g.records.insert(r.slot, r.clone());
        }
        if let Some(commit) = persist.commit {
            g.commit = g.commit.max(commit);
        }
        if let Some(through) = persist.compact_through {
            if through > g.snapshot {
                g.records = g.records.split_off(&through.next());
                g.snapshot = through;
            }
        }
        // F9: a record for an earlier slot does not replace a later one.
        if let Some(record) = &persist.membership {
            if g.membership.as_ref().is_none_or(|m| m.slot <= record.slot) {
                g.membership = Some(record.clone());
            }
        }
    }
}

impl Disk for MemDisk {
    type Error = std::convert::Infallible;

    fn write(&mut self, batch: &[(GroupId, Persist<Bytes>)]) -> Result<(), Self::Error> {
        for (group, persist) in batch {
            self.apply(*group, persist);
        }
        Ok(())
    }

    fn load(&mut self, group: GroupId) -> Result<Durable<Bytes>, Self::Error> {
        let Some(g) = self.groups.get(&group) else {
            return Ok(Durable::empty());
        };
        Ok(Durable {
            promised: g.promised,
            snapshot: g.snapshot,
            records: g.records.values().cloned().collect(),
            commit: g.commit,
            applied: g.snapshot,
            membership: g.membership.clone(),
        })
    }

    fn reopen(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A named case of the suite.
type Case<D> = (&'static str, fn(&mut D));

/// Runs every case, each on a fresh disk from `fresh`.
pub fn run_all<D: Disk>(mut fresh: impl FnMut() -> D) {
    let cases: [Case<D>; 13] = [
        ("unknown_group_loads_empty", unknown_group_loads_empty),
        ("records_load_in_slot_order", records_load_in_slot_order),
        (
            "later_record_replaces_earlier",
            later_record_replaces_earlier,
        ),
        (
            "promise_survives_writes_without_one",
            promise_survives_writes_without_one,
        ),
        ("commit_hint_is_monotone", commit_hint_is_monotone),
        (
            "compaction_drops_records_through_slot",
            compaction_drops_records_through_slot,
        ),
        (
            "compaction_covers_records_of_the_same_persist",
            compaction_covers_records_of_the_same_persist,
        ),
        (
            "persists_of_one_group_apply_in_call_order",
            persists_of_one_group_apply_in_call_order,
        ),
        (
            "groups_in_one_batch_are_independent",
            groups_in_one_batch_are_independent,
        ),
        ("values_round_trip_exactly", values_round_trip_exactly),
        (
            "membership_survives_compaction_and_reopen",
            membership_survives_compaction_and_reopen,
        ),
        (
            "everything_written_survives_reopen",
            everything_written_survives_reopen,
        ),
        ("random_batches_match_the_model", |d| {
            random_batches_match_the_model(d, 0x5eed)
        }),
    ];
    for (name, case) in cases {
        let mut disk = fresh();
        eprintln!("conformance: {name}");
        case(&mut disk);
    }
}

const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);

fn ballot(round: u64, node: u64) -> Ballot {
    Ballot {
        round,
        node: NodeId(node),
    }
}

fn record(slot: u64, round: u64, command: &str, chosen: bool) -> SlotRecord<Bytes> {
    SlotRecord {
        slot: Slot(slot),
        ballot: ballot(round, 1),
        value: Value::Batch(Arc::from(vec![Bytes::copy_from_slice(command.as_bytes())])),
        chosen,
    }
}

fn records(records: Vec<SlotRecord<Bytes>>) -> Persist<Bytes> {
    Persist {
        records,
        ..Persist::default()
    }
}

fn write<D: Disk>(disk: &mut D, batch: &[(GroupId, Persist<Bytes>)]) {
    disk.write(batch).expect("write");
}

fn load<D: Disk>(disk: &mut D, group: GroupId) -> Durable<Bytes> {
    disk.load(group).expect("load")
}

/// Panics unless two durable states are equal field by field (`Durable`
/// has no `PartialEq`, and a field-level message is clearer anyway).
pub fn assert_same(actual: &Durable<Bytes>, expected: &Durable<Bytes>, context: &str) {
    let same = actual.promised == expected.promised
        && actual.snapshot == expected.snapshot
        && actual.records == expected.records
        && actual.commit == expected.commit
        && actual.applied == expected.applied
        && actual.membership == expected.membership;
    assert!(
        same,
        "{context}: durable state differs\n  actual:   {actual:?}\n  expected: {expected:?}"
    );
}

/// A group never written loads as a replica that never ran.
pub fn unknown_group_loads_empty<D: Disk>(disk: &mut D) {
    write(disk, &[(G1, records(vec![record(1, 1, "a", false)]))]);
    assert_same(&load(disk, G2), &Durable::empty(), "unwritten group");
}

/// Records come back in slot order whatever order they were written in.
pub fn records_load_in_slot_order<D: Disk>(disk: &mut D) {
    write(disk, &[(G1, records(vec![record(3, 1, "c", false)]))]);
    write(disk, &[(G1, records(vec![record(1, 1, "a", false)]))]);
    write(disk, &[(G1, records(vec![record(2, 1, "b", true)]))]);
    let slots: Vec<Slot> = load(disk, G1).records.iter().map(|r| r.slot).collect();
    assert_eq!(slots, vec![Slot(1), Slot(2), Slot(3)], "slot order");
}

/// A later record for a slot replaces an earlier one, within one persist and
/// across batches.
pub fn later_record_replaces_earlier<D: Disk>(disk: &mut D) {
    let first = record(1, 1, "old", false);
    let second = record(1, 2, "new", false);
    write(disk, &[(G1, records(vec![first, second.clone()]))]);
    assert_eq!(load(disk, G1).records, vec![second], "within one persist");
    let chosen = record(1, 3, "chosen", true);
    write(disk, &[(G1, records(vec![chosen.clone()]))]);
    assert_eq!(load(disk, G1).records, vec![chosen], "across batches");
}

/// The promised ballot persists until a higher one replaces it.
pub fn promise_survives_writes_without_one<D: Disk>(disk: &mut D) {
    let promise = |b| Persist {
        promised: Some(b),
        ..Persist::default()
    };
    write(disk, &[(G1, promise(ballot(2, 1)))]);
    write(disk, &[(G1, records(vec![record(1, 2, "a", false)]))]);
    assert_eq!(load(disk, G1).promised, ballot(2, 1), "kept");
    write(disk, &[(G1, promise(ballot(2, 3)))]);
    assert_eq!(load(disk, G1).promised, ballot(2, 3), "raised");
}

/// The commit hint only moves up; a lower or missing hint changes nothing.
pub fn commit_hint_is_monotone<D: Disk>(disk: &mut D) {
    let commit = |s| Persist {
        commit: Some(Slot(s)),
        ..Persist::default()
    };
    write(disk, &[(G1, commit(5))]);
    write(disk, &[(G1, commit(3))]);
    assert_eq!(load(disk, G1).commit, Slot(5), "lower hint ignored");
    write(disk, &[(G1, records(vec![record(6, 1, "a", false)]))]);
    assert_eq!(load(disk, G1).commit, Slot(5), "no hint");
    write(disk, &[(G1, commit(7))]);
    assert_eq!(load(disk, G1).commit, Slot(7), "raised");
}

/// Compaction deletes records through its slot, raises the snapshot, and
/// later records at or below the snapshot are ignored.
pub fn compaction_drops_records_through_slot<D: Disk>(disk: &mut D) {
    let all: Vec<_> = (1..=5).map(|s| record(s, 1, "x", true)).collect();
    write(disk, &[(G1, records(all.clone()))]);
    let compact = |s| Persist {
        compact_through: Some(Slot(s)),
        ..Persist::default()
    };
    write(disk, &[(G1, compact(3))]);
    let d = load(disk, G1);
    assert_eq!(d.snapshot, Slot(3), "snapshot");
    assert_eq!(d.applied, Slot(3), "compacted slots count as applied");
    assert_eq!(d.records, all[3..].to_vec(), "records after compaction");
    write(disk, &[(G1, records(vec![record(2, 9, "late", false)]))]);
    write(disk, &[(G1, compact(2))]);
    let d = load(disk, G1);
    assert_eq!(d.snapshot, Slot(3), "a lower compaction changes nothing");
    assert_eq!(
        d.records,
        all[3..].to_vec(),
        "record below snapshot ignored"
    );
}

/// Compaction runs after the records of its own persist, so it covers them
/// (an installed snapshot replaces what was accepted below it).
pub fn compaction_covers_records_of_the_same_persist<D: Disk>(disk: &mut D) {
    let persist = Persist {
        records: (1..=4).map(|s| record(s, 1, "x", false)).collect(),
        commit: Some(Slot(4)),
        compact_through: Some(Slot(2)),
        ..Persist::default()
    };
    write(disk, &[(G1, persist)]);
    let d = load(disk, G1);
    let slots: Vec<Slot> = d.records.iter().map(|r| r.slot).collect();
    assert_eq!(slots, vec![Slot(3), Slot(4)], "records after compaction");
    assert_eq!(
        (d.snapshot, d.commit),
        (Slot(2), Slot(4)),
        "snapshot, commit"
    );
}

/// Two persists of one group in one batch apply in call order.
pub fn persists_of_one_group_apply_in_call_order<D: Disk>(disk: &mut D) {
    let first = records((1..=3).map(|s| record(s, 1, "a", true)).collect());
    let second = Persist {
        records: vec![record(3, 2, "b", true), record(1, 2, "gone", true)],
        compact_through: Some(Slot(1)),
        ..Persist::default()
    };
    write(disk, &[(G1, first), (G1, second)]);
    let d = load(disk, G1);
    assert_eq!(
        d.records,
        vec![record(2, 1, "a", true), record(3, 2, "b", true)],
        "in call order"
    );
}

/// Groups share a batch but nothing else: one's compaction, promise and
/// records leave the other's untouched.
pub fn groups_in_one_batch_are_independent<D: Disk>(disk: &mut D) {
    let both = |round| Persist {
        promised: Some(ballot(round, 1)),
        records: (1..=3).map(|s| record(s, round, "v", true)).collect(),
        commit: Some(Slot(3)),
        ..Persist::default()
    };
    write(disk, &[(G1, both(1)), (G2, both(2))]);
    let compact = Persist {
        compact_through: Some(Slot(2)),
        ..Persist::default()
    };
    write(
        disk,
        &[(G1, compact), (G2, records(vec![record(4, 2, "w", false)]))],
    );
    let (d1, d2) = (load(disk, G1), load(disk, G2));
    assert_eq!((d1.promised, d1.snapshot), (ballot(1, 1), Slot(2)), "g1");
    assert_eq!(d1.records, vec![record(3, 1, "v", true)], "g1 records");
    assert_eq!((d2.promised, d2.snapshot), (ballot(2, 1), Slot(0)), "g2");
    assert_eq!(d2.records.len(), 4, "g2 keeps all its records");
}

/// Values come back bit for bit: no-op, empty batch, empty command, binary
/// and large commands, both chosen flags.
pub fn values_round_trip_exactly<D: Disk>(disk: &mut D) {
    let binary: Vec<u8> = (0..=255).collect();
    let values = [
        Value::Noop,
        Value::Batch(Arc::from(Vec::<Bytes>::new())),
        Value::Batch(Arc::from(vec![Bytes::new()])),
        Value::Batch(Arc::from(vec![
            Bytes::from(binary),
            Bytes::from(vec![7u8; 1 << 16]),
        ])),
    ];
    let written: Vec<SlotRecord<Bytes>> = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| SlotRecord {
            slot: Slot(i as u64 + 1),
            ballot: ballot(u64::MAX, u64::MAX - i as u64),
            value,
            chosen: i % 2 == 0,
        })
        .collect();
    write(disk, &[(G1, records(written.clone()))]);
    assert_eq!(load(disk, G1).records, written, "values");
}

fn membership(voters: &[u64], observers: &[u64]) -> Membership {
    let ids = |v: &[u64]| v.iter().copied().map(NodeId).collect::<Vec<_>>();
    Membership::new(&ids(voters), &ids(observers))
}

/// The stored membership comes back after compaction dropped the entries
/// that chose it and after a reopen; a later one replaces it; membership
/// entries in the log round-trip like any value.
pub fn membership_survives_compaction_and_reopen<D: Disk>(disk: &mut D) {
    let joint = Configuration::Joint {
        old: membership(&[1, 2, 3], &[]),
        new: membership(&[1, 2, 4], &[5]),
    };
    let stable = Configuration::Stable(membership(&[1, 2, 4], &[5]));
    let entries = vec![
        SlotRecord {
            slot: Slot(1),
            ballot: ballot(1, 1),
            value: Value::Membership(joint.clone()),
            chosen: true,
        },
        SlotRecord {
            slot: Slot(2),
            ballot: ballot(1, 1),
            value: Value::Membership(stable.clone()),
            chosen: false,
        },
    ];
    write(disk, &[(G1, records(entries.clone()))]);
    assert_eq!(load(disk, G1).records, entries, "membership entries");
    assert_eq!(load(disk, G1).membership, None, "none stored yet");
    let compact = |slot: u64, configuration: &Configuration| Persist {
        compact_through: Some(Slot(slot)),
        membership: Some(MembershipRecord {
            slot: Slot(slot),
            configuration: configuration.clone(),
        }),
        ..Persist::default()
    };
    write(disk, &[(G1, compact(1, &joint))]);
    disk.reopen().expect("reopen");
    let d = load(disk, G1);
    assert_eq!(d.snapshot, Slot(1));
    assert_eq!(
        d.membership.map(|m| (m.slot, m.configuration)),
        Some((Slot(1), joint))
    );
    write(disk, &[(G1, compact(2, &stable))]);
    disk.reopen().expect("reopen");
    let d = load(disk, G1);
    assert!(d.records.is_empty());
    assert_eq!(d.membership.map(|m| m.configuration), Some(stable));
    assert_eq!(load(disk, G2).membership, None, "other group untouched");
}

/// A clean restart keeps everything that was written.
pub fn everything_written_survives_reopen<D: Disk>(disk: &mut D) {
    let persist = Persist {
        promised: Some(ballot(4, 2)),
        records: (1..=6).map(|s| record(s, 4, "v", s <= 4)).collect(),
        commit: Some(Slot(4)),
        compact_through: Some(Slot(2)),
        membership: Some(MembershipRecord {
            slot: Slot(2),
            configuration: Configuration::Stable(membership(&[1, 2, 3], &[])),
        }),
    };
    write(
        disk,
        &[(G1, persist), (G2, records(vec![record(1, 1, "z", false)]))],
    );
    let before = (load(disk, G1), load(disk, G2));
    disk.reopen().expect("reopen");
    assert_same(&load(disk, G1), &before.0, "g1 after reopen");
    assert_same(&load(disk, G2), &before.1, "g2 after reopen");
}

/// Random batches over three groups load exactly as the reference model
/// says, before and after a reopen. The seed alone reproduces a run.
pub fn random_batches_match_the_model<D: Disk>(disk: &mut D, seed: u64) {
    const BATCHES: usize = 60;
    const GROUPS: u64 = 3;
    let mut rng = SplitMix(seed);
    let mut model = MemDisk::default();
    // Promises only grow, also between persists of one group in one batch.
    let mut promised: BTreeMap<GroupId, Ballot> = BTreeMap::new();
    for i in 0..BATCHES {
        let batch: Vec<(GroupId, Persist<Bytes>)> = (0..1 + rng.below(3))
            .map(|_| {
                let group = GroupId(1 + rng.below(GROUPS));
                let floor = promised.entry(group).or_insert(Ballot::ZERO);
                let persist = random_persist(&mut rng, *floor);
                *floor = persist.promised.unwrap_or(*floor);
                (group, persist)
            })
            .collect();
        write(disk, &batch);
        model.write(&batch).expect("model");
        if i % 10 == 9 {
            compare_groups(
                disk,
                &mut model,
                GROUPS,
                &format!("seed {seed:#x} batch {i}"),
            );
        }
    }
    disk.reopen().expect("reopen");
    compare_groups(
        disk,
        &mut model,
        GROUPS,
        &format!("seed {seed:#x} after reopen"),
    );
}

fn compare_groups<D: Disk>(disk: &mut D, model: &mut MemDisk, groups: u64, context: &str) {
    for g in 1..=groups {
        let expected = model.load(GroupId(g)).expect("model");
        assert_same(
            &load(disk, GroupId(g)),
            &expected,
            &format!("{context} group {g}"),
        );
    }
}

fn random_persist(rng: &mut SplitMix, promised: Ballot) -> Persist<Bytes> {
    let mut persist = Persist::default();
    if rng.below(3) == 0 {
        persist.promised =
            Some(ballot(promised.round + rng.below(2), 1 + rng.below(3)).max(promised));
    }
    for _ in 0..rng.below(4) {
        let slot = 1 + rng.below(24);
        let command = format!("c{}", rng.below(1000));
        persist
            .records
            .push(record(slot, 1 + rng.below(5), &command, rng.below(2) == 0));
    }
    if rng.below(2) == 0 {
        persist.commit = Some(Slot(rng.below(24)));
    }
    if rng.below(6) == 0 {
        let through = Slot(rng.below(20));
        persist.compact_through = Some(through);
        persist.membership = Some(MembershipRecord {
            slot: through,
            configuration: Configuration::Stable(membership(&[1, 2, 3], &[1 + rng.below(9) + 3])),
        });
    }
    persist
}

/// A tiny deterministic generator, so the suite needs no rng dependency.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}
