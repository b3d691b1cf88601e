//! Safety properties checked while the run goes, one small checker each.
//! A checker returns a [`Violation`] the moment its property breaks.

use crate::kv::Command;
use std::collections::BTreeMap;
use std::fmt;
use synod_paxos::{Ballot, NodeId, Slot, SlotRecord, Value, ValueFmt};

/// A broken property, named, with the facts that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which property.
    pub invariant: &'static str,
    /// What was observed.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// "At most one value is chosen per slot", from durable acceptances: a value
/// is chosen once a phase-2 quorum of voters has durably accepted it in one
/// ballot.
#[derive(Default)]
pub struct ChosenChecker {
    /// Per slot, per ballot: the value and the voters that accepted it.
    accepted: BTreeMap<Slot, BTreeMap<Ballot, (Value<Command>, u64)>>,
    chosen: BTreeMap<Slot, Value<Command>>,
}

impl ChosenChecker {
    /// Records that voter `index` made `record` durable.
    pub fn on_durable(
        &mut self,
        index: usize,
        record: &SlotRecord<Command>,
        quorum: usize,
    ) -> Result<(), Violation> {
        if record.chosen {
            return self.check_chosen(record.slot, &record.value, "learned");
        }
        let by_ballot = self.accepted.entry(record.slot).or_default();
        let (value, voters) = by_ballot
            .entry(record.ballot)
            .or_insert_with(|| (record.value.clone(), 0));
        if *value != record.value {
            return Err(violation(
                "one value per ballot and slot",
                format!(
                    "slot {} ballot {}: {} and {}",
                    record.slot,
                    record.ballot,
                    ValueFmt(value),
                    ValueFmt(&record.value)
                ),
            ));
        }
        *voters |= 1 << index;
        if voters.count_ones() as usize >= quorum {
            let value = value.clone();
            return self.check_chosen(record.slot, &value, "accepted by a quorum");
        }
        Ok(())
    }

    fn check_chosen(
        &mut self,
        slot: Slot,
        value: &Value<Command>,
        how: &str,
    ) -> Result<(), Violation> {
        match self.chosen.get(&slot) {
            Some(v) if v != value => Err(violation(
                "at most one value chosen per slot",
                format!(
                    "slot {slot}: {} was chosen, then {} ({how})",
                    ValueFmt(v),
                    ValueFmt(value)
                ),
            )),
            Some(_) => Ok(()),
            None => {
                if how == "accepted by a quorum" {
                    self.chosen.insert(slot, value.clone());
                }
                Ok(())
            }
        }
    }

    /// The value a quorum accepted at `slot`, if known.
    pub fn chosen(&self, slot: Slot) -> Option<&Value<Command>> {
        self.chosen.get(&slot)
    }
}

/// "Every replica applies the same sequence": the first replica to apply a
/// slot fixes its value; every other must apply the same, in slot order.
#[derive(Default)]
pub struct ApplyChecker {
    sequence: BTreeMap<Slot, Value<Command>>,
    applied: BTreeMap<NodeId, Slot>,
}

impl ApplyChecker {
    /// Node `node` applied `value` at `slot`.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        slot: Slot,
        value: &Value<Command>,
        chosen: Option<&Value<Command>>,
    ) -> Result<(), Violation> {
        let last = self.applied.entry(node).or_insert(Slot(0));
        if slot != last.next() {
            return Err(violation(
                "in-order delivery",
                format!("{node} applied slot {slot} after slot {last}"),
            ));
        }
        *last = slot;
        if let Some(c) = chosen.filter(|c| *c != value) {
            return Err(violation(
                "applied values are chosen",
                format!(
                    "{node} applied {} at slot {slot}, a quorum accepted {}",
                    ValueFmt(value),
                    ValueFmt(c)
                ),
            ));
        }
        match self.sequence.get(&slot) {
            Some(v) if v != value => Err(violation(
                "every replica applies the same sequence",
                format!(
                    "{node} applied {} at slot {slot}, another replica {}",
                    ValueFmt(value),
                    ValueFmt(v)
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.sequence.insert(slot, value.clone());
                Ok(())
            }
        }
    }

    /// Node `node` jumped to `slot` by installing a snapshot.
    pub fn on_snapshot(&mut self, node: NodeId, slot: Slot) {
        let last = self.applied.entry(node).or_insert(Slot(0));
        assert!(
            slot > *last,
            "snapshot {slot} not ahead of applied {last} on {node}"
        );
        *last = slot;
    }

    /// Node `node` restarted from its snapshot at `slot`.
    pub fn on_restart(&mut self, node: NodeId, slot: Slot) {
        self.applied.insert(node, slot);
    }

    /// Highest slot any replica applied.
    pub fn max_applied(&self) -> Slot {
        self.applied.values().copied().max().unwrap_or(Slot(0))
    }
}

/// "At most one replica holds a leader lease at any instant", judged in
/// real (simulated) time with every replica's own drifting clock.
pub struct LeaseChecker;

impl LeaseChecker {
    /// `holders` lists the replicas whose lease is valid right now.
    pub fn check(now_us: u64, holders: &[NodeId]) -> Result<(), Violation> {
        if holders.len() > 1 {
            return Err(violation(
                "at most one lease holder",
                format!("at t={now_us}us leases held by {holders:?}"),
            ));
        }
        Ok(())
    }
}
