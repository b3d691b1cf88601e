//! The messages replicas exchange. Names follow the Paxos papers: prepare /
//! promise (phase 1), accept / accepted (phase 2), plus learn for shipping
//! chosen values to a replica that missed them.

use crate::types::{Ballot, NodeId, Slot, Time, Value};
use std::fmt;

/// One slot as an acceptor reports it in a promise or stores it on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRecord<C> {
    /// Position in the log.
    pub slot: Slot,
    /// Ballot the value was accepted in (for a chosen value, the ballot of
    /// the proposer that told us; it no longer matters).
    pub ballot: Ballot,
    /// The value itself.
    pub value: Value<C>,
    /// The value is known chosen: it can never change.
    pub chosen: bool,
}

/// A protocol message. Every message carries the sender's ballot so stale
/// senders can be told and step down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<C> {
    /// "Would you promise `ballot`?" Asked before phase 1 and answered without
    /// any change of state, so a replica that was cut off cannot raise its
    /// own promise and then reject the live leader when it comes back.
    Probe {
        /// The ballot the prober would campaign with.
        ballot: Ballot,
        /// The prober's commit point.
        commit: Slot,
    },
    /// The answer to a probe.
    ProbeReply {
        /// Echo of the probe's ballot.
        ballot: Ballot,
        /// A prepare for that ballot would be promised now.
        ok: bool,
        /// The replier's promised ballot, so the prober can outbid it.
        promised: Ballot,
    },
    /// Phase 1a: "promise `ballot` and tell me what you accepted after `commit`".
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// Everything up to here is already chosen and known to the candidate.
        commit: Slot,
    },
    /// Phase 1b: the acceptor promised `ballot` and reports its accepted slots.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// Accepted or chosen slots after the candidate's commit point.
        accepted: Vec<SlotRecord<C>>,
        /// The acceptor's log starts after this slot; a candidate whose commit
        /// point is below it cannot learn those slots from this acceptor.
        snapshot: Slot,
    },
    /// Phase 2a: "accept these values in `ballot`". An empty `values` is a
    /// heartbeat that still carries the commit point and renews the lease.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// Slot of `values[0]`; values fill consecutive slots.
        first: Slot,
        /// Values proposed in `ballot`.
        values: Vec<Value<C>>,
        /// Every slot up to here is chosen.
        commit: Slot,
        /// Increases with every accept the leader sends in this ballot;
        /// echoed so a read can tell which acknowledgements came after it.
        seq: u64,
        /// The leader's clock when sending, echoed for lease accounting.
        sent_at: Time,
    },
    /// Phase 2b: the acceptor accepted `first .. first + count` in `ballot`.
    Accepted {
        /// The ballot accepted in.
        ballot: Ballot,
        /// First slot acknowledged.
        first: Slot,
        /// Number of consecutive slots acknowledged.
        count: u64,
        /// The acceptor's own commit point, so the leader knows what to resend.
        commit: Slot,
        /// The accept's commit point was ahead of `commit`: this acceptor
        /// misses chosen values and needs a `Learn`.
        behind: bool,
        /// Echo of the accept's `seq`.
        seq: u64,
        /// Echo of the accept's `sent_at`.
        sent_at: Time,
    },
    /// Chosen values for a replica that is behind the leader's commit point.
    Learn {
        /// The sender's ballot (informational; chosen values need no ballot).
        ballot: Ballot,
        /// Chosen values in consecutive slots starting at `first`.
        first: Slot,
        /// The values.
        values: Vec<Value<C>>,
    },
    /// The receiver of a `Learn` stored it and is now chosen through `commit`.
    Learned {
        /// Echo of the learn's ballot.
        ballot: Ballot,
        /// The learner's commit point after storing.
        commit: Slot,
    },
    /// "Your ballot is stale: I promised `promised`."
    Reject {
        /// The ballot the receiver sent (so late replies can be ignored).
        ballot: Ballot,
        /// The higher ballot the acceptor has promised.
        promised: Ballot,
    },
    /// Leadership transfer: the leader of `ballot` stopped serving lease
    /// reads and proposing, and releases the leases (and stickiness) its
    /// accepts up to `seq` obtained, in favour of `target`. Sent to every
    /// voter; the target campaigns at once when it receives it.
    Handover {
        /// The leader's ballot.
        ballot: Ballot,
        /// The last accept `seq` the released leases may come from.
        seq: u64,
        /// The replica that should lead next.
        target: NodeId,
    },
}

impl<C> Message<C> {
    /// The ballot the message speaks for.
    pub fn ballot(&self) -> Ballot {
        match self {
            Message::Probe { ballot, .. }
            | Message::ProbeReply { ballot, .. }
            | Message::Prepare { ballot, .. }
            | Message::Promise { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::Learn { ballot, .. }
            | Message::Learned { ballot, .. }
            | Message::Reject { ballot, .. }
            | Message::Handover { ballot, .. } => *ballot,
        }
    }
}

/// A message with its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<C> {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Payload.
    pub message: Message<C>,
}

impl<C: fmt::Debug> fmt::Display for Envelope<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} ", self.from, self.to)?;
        match &self.message {
            Message::Probe { ballot, commit } => write!(f, "Probe b={ballot} commit={commit}"),
            Message::ProbeReply {
                ballot,
                ok,
                promised,
            } => write!(f, "ProbeReply b={ballot} ok={ok} promised={promised}"),
            Message::Prepare { ballot, commit } => write!(f, "Prepare b={ballot} commit={commit}"),
            Message::Promise {
                ballot,
                accepted,
                snapshot,
            } => {
                write!(f, "Promise b={ballot} snapshot={snapshot} accepted=[")?;
                for (i, r) in accepted.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    let chosen = if r.chosen { "!" } else { "" };
                    write!(
                        f,
                        "{sep}{}@{}{chosen}:{}",
                        r.slot,
                        r.ballot,
                        ValueFmt(&r.value)
                    )?;
                }
                write!(f, "]")
            }
            Message::Accept {
                ballot,
                first,
                values,
                commit,
                seq,
                ..
            } => {
                write!(f, "Accept b={ballot} commit={commit} seq={seq}")?;
                write_values(f, *first, values)
            }
            Message::Accepted {
                ballot,
                first,
                count,
                commit,
                behind,
                seq,
                ..
            } => {
                let behind = if *behind { " behind" } else { "" };
                write!(f, "Accepted b={ballot} commit={commit}{behind} seq={seq}")?;
                if *count > 0 {
                    let last = first.0.saturating_add(count - 1);
                    write!(f, " slots={first}..={last}")?;
                }
                Ok(())
            }
            Message::Learn {
                ballot,
                first,
                values,
            } => {
                write!(f, "Learn b={ballot}")?;
                write_values(f, *first, values)
            }
            Message::Learned { ballot, commit } => write!(f, "Learned b={ballot} commit={commit}"),
            Message::Reject { ballot, promised } => {
                write!(f, "Reject b={ballot} promised={promised}")
            }
            Message::Handover {
                ballot,
                seq,
                target,
            } => write!(f, "Handover b={ballot} seq={seq} to={target}"),
        }
    }
}

fn write_values<C: fmt::Debug>(
    f: &mut fmt::Formatter<'_>,
    first: Slot,
    values: &[Value<C>],
) -> fmt::Result {
    if values.is_empty() {
        return Ok(());
    }
    write!(f, " [")?;
    for (i, v) in values.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let slot = first.0.saturating_add(i as u64);
        write!(f, "{sep}{slot}:{}", ValueFmt(v))?;
    }
    write!(f, "]")
}

/// Compact rendering of a value for traces: `noop` or the commands joined by
/// commas.
pub struct ValueFmt<'a, C>(pub &'a Value<C>);

impl<C: fmt::Debug> fmt::Display for ValueFmt<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Noop => write!(f, "noop"),
            Value::Membership(c) => write!(f, "config {c}"),
            Value::Batch(commands) => {
                for (i, c) in commands.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}{c:?}")?;
                }
                Ok(())
            }
        }
    }
}
