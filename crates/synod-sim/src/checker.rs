//! Safety properties checked while the run goes, one small checker each.
//! A checker returns a [`Violation`] the moment its property breaks.

use bytes::Bytes;

/// What the log carries: encoded commands (the real group driver's).
type Command = Bytes;
use std::collections::BTreeMap;
use std::fmt;
use synod_paxos::{Ballot, Configuration, NodeId, Slot, SlotRecord, Value, ValueFmt};

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

/// Per ballot: the value accepted at one slot and the replicas that did.
type Acceptances = BTreeMap<Ballot, (Value<Command>, Vec<NodeId>)>;

/// "At most one value is chosen per slot", from durable acceptances: a value
/// is chosen once a phase-2 quorum of the configuration its ballot's leader
/// used for the slot has durably accepted it in that ballot.
///
/// Which configuration governs a slot depends on the membership entries
/// before it; the leader of a ballot proposes a slot only once every entry
/// before it is committed (the stall rule), so the configuration it uses is
/// its committed one when the slot's first accept leaves. The simulator
/// records it then ([`ChosenChecker::on_proposed`]).
#[derive(Default)]
pub struct ChosenChecker {
    /// Per slot, per ballot: the value and the replicas that accepted it.
    accepted: BTreeMap<Slot, Acceptances>,
    /// The configuration each ballot's leader used for each slot.
    proposed: BTreeMap<(Slot, Ballot), Configuration>,
    chosen: BTreeMap<Slot, Value<Command>>,
}

impl ChosenChecker {
    /// The leader of `ballot` sent the first accept for `slot`, governed by
    /// `config`.
    pub fn on_proposed(&mut self, slot: Slot, ballot: Ballot, config: &Configuration) {
        self.proposed
            .entry((slot, ballot))
            .or_insert_with(|| config.clone());
    }

    /// Records that replica `node` made `record` durable.
    pub fn on_durable(
        &mut self,
        node: NodeId,
        record: &SlotRecord<Command>,
    ) -> Result<(), Violation> {
        if record.chosen {
            return self.check_chosen(record.slot, &record.value, "learned");
        }
        let by_ballot = self.accepted.entry(record.slot).or_default();
        let (value, voters) = by_ballot
            .entry(record.ballot)
            .or_insert_with(|| (record.value.clone(), Vec::new()));
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
        if !voters.contains(&node) {
            voters.push(node);
        }
        let quorum = self
            .proposed
            .get(&(record.slot, record.ballot))
            .is_some_and(|c| c.q2_met(voters));
        if quorum {
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

/// "Revisions follow real time across shards" (design 0011), from the
/// clients' acknowledged writes in a sharded run: a write that started
/// after another was acknowledged carries a higher revision, whichever
/// shards they went to, and no two writes share one (each stamp is handed
/// out once). Every write of a sharded run is stamped, a failed compare
/// included, so the order is strict.
#[derive(Default)]
pub struct RevisionOrder {
    /// `(acknowledged at, revision)` in acknowledgement order, with the
    /// highest revision acknowledged so far beside each.
    acks: Vec<(u64, i64, i64)>,
    /// Every revision acknowledged, to tell repeats.
    seen: BTreeMap<i64, u64>,
}

impl RevisionOrder {
    /// Client `client`'s write, invoked at `invoked`, acknowledged at `now`
    /// with `revision`.
    pub fn on_ack(
        &mut self,
        client: u64,
        invoked: u64,
        now: u64,
        revision: i64,
    ) -> Result<(), Violation> {
        if let Some(other) = self.seen.insert(revision, client) {
            return Err(violation(
                "one revision per write across shards",
                format!(
                    "clients {other} and {client} were both acknowledged at revision {revision}"
                ),
            ));
        }
        // The writes acknowledged before this one was invoked.
        let before = self.acks.partition_point(|(at, _, _)| *at < invoked);
        if let Some((at, _, highest)) = before.checked_sub(1).map(|i| self.acks[i]) {
            if highest >= revision {
                return Err(violation(
                    "revisions follow real time across shards",
                    format!(
                        "client {client}'s write invoked at {invoked}us got revision {revision}, \
                         but revision {highest} was acknowledged by {at}us"
                    ),
                ));
            }
        }
        let highest = self.acks.last().map_or(revision, |a| a.2.max(revision));
        assert!(
            self.acks.last().is_none_or(|a| a.0 <= now),
            "acks in time order"
        );
        self.acks.push((now, revision, highest));
        Ok(())
    }

    /// Writes checked.
    pub fn checked(&self) -> u64 {
        self.acks.len() as u64
    }
}
