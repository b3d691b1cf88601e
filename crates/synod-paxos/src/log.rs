//! The acceptor's log: per slot, the accepted `(ballot, value)` and whether it
//! is known chosen.
//!
//! Invariants (see `check_invariants`):
//! - slots `1..=snapshot` are compacted: chosen, applied and gone from memory;
//! - `snapshot <= commit <= last()`;
//! - every slot in `snapshot+1 ..= commit` is present and marked chosen;
//! - a chosen slot is never overwritten.

use crate::message::SlotRecord;
use crate::types::{Ballot, Slot, Value};
use std::collections::VecDeque;

/// One stored slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<C> {
    /// Ballot accepted in.
    pub ballot: Ballot,
    /// Accepted value.
    pub value: Value<C>,
    /// Known chosen; immutable from then on.
    pub chosen: bool,
}

/// The log of one replica, starting after its snapshot.
#[derive(Clone, Debug)]
pub struct Log<C> {
    snapshot: Slot,
    commit: Slot,
    /// `entries[i]` is slot `snapshot + 1 + i`; `None` is a gap.
    entries: VecDeque<Option<Entry<C>>>,
}

impl<C: Clone> Log<C> {
    /// An empty log whose prefix up to `snapshot` lives in a snapshot.
    pub fn new(snapshot: Slot) -> Log<C> {
        Log {
            snapshot,
            commit: snapshot,
            entries: VecDeque::new(),
        }
    }

    /// Last slot covered by the snapshot (0 when none).
    pub fn snapshot(&self) -> Slot {
        self.snapshot
    }

    /// Highest slot such that it and all below are chosen and known here.
    pub fn commit(&self) -> Slot {
        self.commit
    }

    /// Highest slot with anything stored (or the snapshot slot).
    pub fn last(&self) -> Slot {
        Slot(self.snapshot.0 + self.entries.len() as u64)
    }

    fn index(&self, slot: Slot) -> Option<usize> {
        if slot <= self.snapshot {
            return None;
        }
        Some((slot.0 - self.snapshot.0 - 1) as usize)
    }

    /// The stored entry for `slot`, if any and not compacted.
    pub fn get(&self, slot: Slot) -> Option<&Entry<C>> {
        let i = self.index(slot)?;
        self.entries.get(i)?.as_ref()
    }

    /// The storage for `slot`, growing the log up to it; `None` for a
    /// compacted slot. Grows by one entry per slot between `last()` and
    /// `slot`: callers that store slots from peers bound `slot` first (see
    /// `Log::store_limit`).
    fn slot_mut(&mut self, slot: Slot) -> Option<&mut Option<Entry<C>>> {
        let i = self.index(slot)?;
        if i >= self.entries.len() {
            self.entries.resize(i + 1, None);
        }
        self.entries.get_mut(i)
    }

    /// The highest slot a replica stores from peers when it takes slots at
    /// most `ahead` past its commit point.
    pub fn store_limit(&self, ahead: u64) -> Slot {
        Slot(self.commit.0.saturating_add(ahead))
    }

    /// Records an acceptance of `value` in `ballot`. Returns the record to
    /// persist, or `None` when nothing changed (already accepted in this
    /// ballot, already chosen, or compacted). Allocates up to `slot`: bound
    /// it with [`store_limit`](Log::store_limit) first.
    pub fn accept(
        &mut self,
        slot: Slot,
        ballot: Ballot,
        value: &Value<C>,
    ) -> Option<SlotRecord<C>> {
        let entry = self.slot_mut(slot)?;
        if let Some(e) = entry {
            if e.chosen || e.ballot >= ballot {
                // A ballot proposes one value per slot, so an equal ballot
                // means a retransmission; a higher one means this accept is
                // older than what we hold.
                return None;
            }
        }
        *entry = Some(Entry {
            ballot,
            value: value.clone(),
            chosen: false,
        });
        Some(SlotRecord {
            slot,
            ballot,
            value: value.clone(),
            chosen: false,
        })
    }

    /// Records that `value` is chosen at `slot`. Returns the record to persist
    /// when this is news. Allocates up to `slot`: bound it with
    /// [`store_limit`](Log::store_limit) first.
    ///
    /// Panics if a different value was already known chosen there: that is a
    /// safety violation of the whole group, not an input error (a replica
    /// checks values from peers with [`conflicts`](Log::conflicts) first).
    pub fn learn(&mut self, slot: Slot, ballot: Ballot, value: &Value<C>) -> Option<SlotRecord<C>>
    where
        C: PartialEq + std::fmt::Debug,
    {
        let entry = self.slot_mut(slot)?;
        if let Some(e) = entry {
            if e.chosen {
                assert!(
                    e.value == *value,
                    "two values chosen for slot {slot}: {:?} and {:?}",
                    e.value,
                    value
                );
                return None;
            }
        }
        *entry = Some(Entry {
            ballot,
            value: value.clone(),
            chosen: true,
        });
        Some(SlotRecord {
            slot,
            ballot,
            value: value.clone(),
            chosen: true,
        })
    }

    /// True when a value other than `value` is known chosen at `slot`.
    pub fn conflicts(&self, slot: Slot, value: &Value<C>) -> bool
    where
        C: PartialEq,
    {
        self.get(slot)
            .is_some_and(|e| e.chosen && e.value != *value)
    }

    /// Marks `slot` chosen when it holds a value accepted in `ballot` (the
    /// leader of `ballot` said it is chosen, and that leader proposed exactly
    /// one value there). Returns true when the slot is now known chosen.
    pub fn mark_chosen_if(&mut self, slot: Slot, ballot: Ballot) -> bool {
        let Some(i) = self.index(slot) else {
            return true;
        };
        match self.entries.get_mut(i) {
            Some(Some(e)) if e.chosen => true,
            Some(Some(e)) if e.ballot == ballot => {
                e.chosen = true;
                true
            }
            _ => false,
        }
    }

    /// Advances the commit point over consecutive chosen slots. Returns true
    /// when it moved.
    pub fn advance_commit(&mut self) -> bool {
        let before = self.commit;
        while let Some(Some(e)) = self
            .index(self.commit.next())
            .and_then(|i| self.entries.get(i))
        {
            if !e.chosen {
                break;
            }
            self.commit = self.commit.next();
        }
        self.commit != before
    }

    /// Drops slots up to `through`, which must be chosen; a snapshot now
    /// stands for them.
    pub fn compact(&mut self, through: Slot) {
        assert!(
            through <= self.commit,
            "compact through {through} beyond commit {}",
            self.commit
        );
        if through <= self.snapshot {
            return;
        }
        let n = (through.0 - self.snapshot.0) as usize;
        self.entries.drain(..n.min(self.entries.len()));
        self.snapshot = through;
    }

    /// Replaces the prefix through `slot` by an installed snapshot, which may
    /// reach past anything stored here.
    pub fn install_snapshot(&mut self, slot: Slot) {
        assert!(
            slot > self.commit,
            "snapshot {slot} is not ahead of commit {}",
            self.commit
        );
        let n = (slot.0 - self.snapshot.0) as usize;
        self.entries.drain(..n.min(self.entries.len()));
        self.snapshot = slot;
        self.commit = slot;
        self.advance_commit();
    }

    /// Number of slots stored after `after` (gaps included): an upper bound
    /// on what [`records_after`](Log::records_after) returns.
    pub fn span_after(&self, after: Slot) -> u64 {
        self.last().0.saturating_sub(after.max(self.snapshot).0)
    }

    /// Stored slots after `after`, for a promise.
    pub fn records_after(&self, after: Slot) -> Vec<SlotRecord<C>> {
        if after >= self.last() {
            return Vec::new();
        }
        let start = after.max(self.snapshot).next();
        (start.0..=self.last().0)
            .filter_map(|s| {
                let e = self.get(Slot(s))?;
                Some(SlotRecord {
                    slot: Slot(s),
                    ballot: e.ballot,
                    value: e.value.clone(),
                    chosen: e.chosen,
                })
            })
            .collect()
    }

    /// Loads a record read back from disk at restart.
    pub fn restore(&mut self, record: SlotRecord<C>) {
        if let Some(entry) = self.slot_mut(record.slot) {
            *entry = Some(Entry {
                ballot: record.ballot,
                value: record.value,
                chosen: record.chosen,
            });
        }
    }

    /// Sets the commit point from a persisted hint at restart, clamped to
    /// what the log actually proves.
    pub fn restore_commit(&mut self, hint: Slot) {
        for s in self.commit.next().0..=hint.0.min(self.last().0) {
            let entry = self.index(Slot(s)).and_then(|i| self.entries.get_mut(i));
            match entry {
                Some(Some(e)) => e.chosen = true,
                _ => break,
            }
        }
        self.advance_commit();
    }

    /// Checks the invariants in the module doc; panics naming the broken one.
    /// Only the newest `INVARIANT_WINDOW` committed slots are scanned, so a
    /// check after every step stays cheap on a long log.
    pub fn check_invariants(&self) {
        const INVARIANT_WINDOW: u64 = 64;
        assert!(
            self.snapshot <= self.commit,
            "snapshot {} > commit {}",
            self.snapshot,
            self.commit
        );
        assert!(
            self.commit <= self.last(),
            "commit {} > last {}",
            self.commit,
            self.last()
        );
        let from = self
            .snapshot
            .0
            .max(self.commit.0.saturating_sub(INVARIANT_WINDOW))
            + 1;
        for s in from..=self.commit.0 {
            let e = self.get(Slot(s));
            assert!(
                e.is_some_and(|e| e.chosen),
                "slot {s} at or below commit {} is not chosen",
                self.commit
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;
    use std::sync::Arc;

    fn b(round: u64) -> Ballot {
        Ballot {
            round,
            node: NodeId(1),
        }
    }

    fn v(x: u32) -> Value<u32> {
        Value::Batch(Arc::from(vec![x]))
    }

    #[test]
    fn accept_keeps_the_highest_ballot() {
        let mut log = Log::new(Slot(0));
        assert!(log.accept(Slot(2), b(2), &v(1)).is_some());
        assert!(log.accept(Slot(2), b(1), &v(9)).is_none());
        assert!(log.accept(Slot(2), b(2), &v(1)).is_none());
        assert!(log.accept(Slot(2), b(3), &v(3)).is_some());
        assert_eq!(log.get(Slot(2)).unwrap().value, v(3));
        assert!(log.get(Slot(1)).is_none());
        assert_eq!(log.last(), Slot(2));
    }

    #[test]
    fn chosen_slots_never_change_and_commit_needs_no_gaps() {
        let mut log = Log::new(Slot(0));
        log.learn(Slot(2), b(1), &v(2));
        assert!(!log.advance_commit());
        assert!(log.accept(Slot(2), b(5), &v(7)).is_none());
        log.accept(Slot(1), b(1), &v(1));
        assert!(log.mark_chosen_if(Slot(1), b(1)));
        assert!(log.advance_commit());
        assert_eq!(log.commit(), Slot(2));
        log.check_invariants();
    }

    #[test]
    fn mark_chosen_requires_the_same_ballot() {
        let mut log = Log::new(Slot(0));
        log.accept(Slot(1), b(1), &v(1));
        assert!(!log.mark_chosen_if(Slot(1), b(2)));
        assert!(!log.mark_chosen_if(Slot(2), b(1)));
    }

    #[test]
    #[should_panic(expected = "two values chosen")]
    fn learning_a_different_chosen_value_panics() {
        let mut log = Log::new(Slot(0));
        log.learn(Slot(1), b(1), &v(1));
        log.learn(Slot(1), b(2), &v(2));
    }

    #[test]
    fn records_after_the_end_are_empty() {
        let mut log = Log::new(Slot(0));
        log.accept(Slot(1), b(1), &v(1));
        assert!(log.records_after(Slot(u64::MAX)).is_empty());
        assert_eq!(log.span_after(Slot(u64::MAX)), 0);
        assert_eq!(log.span_after(Slot(0)), 1);
        assert_eq!(log.store_limit(u64::MAX), Slot(u64::MAX));
        assert!(!log.conflicts(Slot(1), &v(2)), "accepted, not chosen");
        log.learn(Slot(1), b(1), &v(1));
        assert!(log.conflicts(Slot(1), &v(2)));
        assert!(!log.conflicts(Slot(1), &v(1)));
    }

    #[test]
    fn compaction_and_snapshot_install() {
        let mut log = Log::new(Slot(0));
        for s in 1..=4 {
            log.learn(Slot(s), b(1), &v(s as u32));
        }
        log.advance_commit();
        log.compact(Slot(2));
        assert_eq!(log.snapshot(), Slot(2));
        assert!(log.get(Slot(2)).is_none());
        assert_eq!(log.records_after(Slot(0)).len(), 2);
        log.accept(Slot(7), b(2), &v(7));
        log.install_snapshot(Slot(6));
        assert_eq!(log.commit(), Slot(6));
        assert_eq!(log.get(Slot(7)).unwrap().value, v(7));
        log.check_invariants();
    }
}
