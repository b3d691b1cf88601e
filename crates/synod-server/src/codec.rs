//! Paxos messages to and from their wire form (`peerpb`). Decoding checks
//! that every required field is present: a malformed message from the
//! network is an error, never a panic or a default value.

use bytes::Bytes;
use std::sync::Arc;
use synod_paxos::{
    Ballot, Configuration, Membership, Message, NodeId, Slot, SlotRecord, Time, Value,
};
use synod_proto::peerpb::{self, envelope::Message as Wire};
use synod_proto::synodpb::AuthFence;

/// A peer message that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed peer message: {0}")]
pub struct DecodeError(pub &'static str);

fn ballot(b: Ballot) -> Option<peerpb::Ballot> {
    Some(peerpb::Ballot {
        round: b.round,
        node: b.node.0,
    })
}

fn value(v: &Value<Bytes>) -> peerpb::Value {
    match v {
        Value::Noop => peerpb::Value {
            noop: true,
            commands: Vec::new(),
            membership: None,
        },
        Value::Batch(c) => peerpb::Value {
            noop: false,
            commands: c.to_vec(),
            membership: None,
        },
        Value::Membership(c) => peerpb::Value {
            noop: false,
            commands: Vec::new(),
            membership: Some(configuration(c)),
        },
    }
}

fn membership(m: &Membership) -> peerpb::Membership {
    peerpb::Membership {
        voters: m.voters.iter().map(|n| n.0).collect(),
        observers: m.observers.iter().map(|n| n.0).collect(),
        phase1_quorum: m.phase1_quorum as u64,
        phase2_quorum: m.phase2_quorum as u64,
    }
}

/// A configuration in its wire form.
pub fn configuration(c: &Configuration) -> peerpb::Configuration {
    match c {
        Configuration::Stable(m) => peerpb::Configuration {
            old: Some(membership(m)),
            new: None,
        },
        Configuration::Joint { old, new } => peerpb::Configuration {
            old: Some(membership(old)),
            new: Some(membership(new)),
        },
    }
}

fn get_membership(m: peerpb::Membership) -> Membership {
    Membership {
        voters: m.voters.into_iter().map(NodeId).collect(),
        observers: m.observers.into_iter().map(NodeId).collect(),
        phase1_quorum: m.phase1_quorum as usize,
        phase2_quorum: m.phase2_quorum as usize,
    }
}

/// A configuration from the wire, checked: an invalid one is an error.
pub fn get_configuration(c: peerpb::Configuration) -> Result<Configuration, DecodeError> {
    let old = get_membership(c.old.ok_or(DecodeError("configuration without members"))?);
    let configuration = match c.new {
        None => Configuration::Stable(old),
        Some(new) => Configuration::Joint {
            old,
            new: get_membership(new),
        },
    };
    configuration
        .validate()
        .map_err(|_| DecodeError("invalid configuration"))?;
    Ok(configuration)
}

fn values(vs: &[Value<Bytes>]) -> Vec<peerpb::Value> {
    vs.iter().map(value).collect()
}

/// Encodes one message for the wire.
pub fn encode(to: NodeId, m: &Message<Bytes>) -> peerpb::Envelope {
    let message = match m {
        Message::Probe { ballot: b, commit } => Wire::Probe(peerpb::Probe {
            ballot: ballot(*b),
            commit: commit.0,
        }),
        Message::ProbeReply {
            ballot: b,
            ok,
            promised,
        } => Wire::ProbeReply(peerpb::ProbeReply {
            ballot: ballot(*b),
            ok: *ok,
            promised: ballot(*promised),
        }),
        Message::Prepare { ballot: b, commit } => Wire::Prepare(peerpb::Prepare {
            ballot: ballot(*b),
            commit: commit.0,
        }),
        Message::Promise {
            ballot: b,
            accepted,
            snapshot,
        } => Wire::Promise(peerpb::Promise {
            ballot: ballot(*b),
            accepted: accepted
                .iter()
                .map(|r| peerpb::SlotRecord {
                    slot: r.slot.0,
                    ballot: ballot(r.ballot),
                    value: Some(value(&r.value)),
                    chosen: r.chosen,
                })
                .collect(),
            snapshot: snapshot.0,
        }),
        Message::Accept {
            ballot: b,
            first,
            values: vs,
            commit,
            seq,
            sent_at,
        } => Wire::Accept(peerpb::Accept {
            ballot: ballot(*b),
            first: first.0,
            values: values(vs),
            commit: commit.0,
            seq: *seq,
            sent_at: sent_at.0,
        }),
        Message::Accepted {
            ballot: b,
            first,
            count,
            commit,
            behind,
            seq,
            sent_at,
        } => Wire::Accepted(peerpb::Accepted {
            ballot: ballot(*b),
            first: first.0,
            count: *count,
            commit: commit.0,
            behind: *behind,
            seq: *seq,
            sent_at: sent_at.0,
        }),
        Message::Learn {
            ballot: b,
            first,
            values: vs,
        } => Wire::Learn(peerpb::Learn {
            ballot: ballot(*b),
            first: first.0,
            values: values(vs),
        }),
        Message::Learned { ballot: b, commit } => Wire::Learned(peerpb::Learned {
            ballot: ballot(*b),
            commit: commit.0,
        }),
        Message::Reject {
            ballot: b,
            promised,
        } => Wire::Reject(peerpb::Reject {
            ballot: ballot(*b),
            promised: ballot(*promised),
        }),
        Message::Handover {
            ballot: b,
            seq,
            target,
        } => handover(b, *seq, *target),
    };
    peerpb::Envelope {
        to: to.0,
        message: Some(message),
    }
}

fn handover(b: &Ballot, seq: u64, target: NodeId) -> Wire {
    Wire::Handover(peerpb::Handover {
        ballot: ballot(*b),
        seq,
        target: target.0,
    })
}

fn get_ballot(b: Option<peerpb::Ballot>) -> Result<Ballot, DecodeError> {
    let b = b.ok_or(DecodeError("missing ballot"))?;
    Ok(Ballot {
        round: b.round,
        node: NodeId(b.node),
    })
}

fn get_value(v: peerpb::Value) -> Result<Value<Bytes>, DecodeError> {
    if v.noop {
        if !v.commands.is_empty() || v.membership.is_some() {
            return Err(DecodeError("no-op with contents"));
        }
        return Ok(Value::Noop);
    }
    if let Some(c) = v.membership {
        if !v.commands.is_empty() {
            return Err(DecodeError("membership change with commands"));
        }
        return Ok(Value::Membership(get_configuration(c)?));
    }
    Ok(Value::Batch(Arc::from(v.commands)))
}

fn get_values(vs: Vec<peerpb::Value>) -> Result<Vec<Value<Bytes>>, DecodeError> {
    vs.into_iter().map(get_value).collect()
}

/// Decodes one message from the wire.
pub fn decode(e: peerpb::Envelope) -> Result<(NodeId, Message<Bytes>), DecodeError> {
    let to = NodeId(e.to);
    let m = match e.message.ok_or(DecodeError("empty envelope"))? {
        Wire::Probe(p) => Message::Probe {
            ballot: get_ballot(p.ballot)?,
            commit: Slot(p.commit),
        },
        Wire::ProbeReply(p) => Message::ProbeReply {
            ballot: get_ballot(p.ballot)?,
            ok: p.ok,
            promised: get_ballot(p.promised)?,
        },
        Wire::Prepare(p) => Message::Prepare {
            ballot: get_ballot(p.ballot)?,
            commit: Slot(p.commit),
        },
        Wire::Promise(p) => Message::Promise {
            ballot: get_ballot(p.ballot)?,
            accepted: p
                .accepted
                .into_iter()
                .map(|r| {
                    Ok(SlotRecord {
                        slot: Slot(r.slot),
                        ballot: get_ballot(r.ballot)?,
                        value: get_value(r.value.ok_or(DecodeError("record without value"))?)?,
                        chosen: r.chosen,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
            snapshot: Slot(p.snapshot),
        },
        Wire::Accept(a) => Message::Accept {
            ballot: get_ballot(a.ballot)?,
            first: Slot(a.first),
            values: get_values(a.values)?,
            commit: Slot(a.commit),
            seq: a.seq,
            sent_at: Time(a.sent_at),
        },
        Wire::Accepted(a) => Message::Accepted {
            ballot: get_ballot(a.ballot)?,
            first: Slot(a.first),
            count: a.count,
            commit: Slot(a.commit),
            behind: a.behind,
            seq: a.seq,
            sent_at: Time(a.sent_at),
        },
        Wire::Learn(l) => Message::Learn {
            ballot: get_ballot(l.ballot)?,
            first: Slot(l.first),
            values: get_values(l.values)?,
        },
        Wire::Learned(l) => Message::Learned {
            ballot: get_ballot(l.ballot)?,
            commit: Slot(l.commit),
        },
        Wire::Reject(r) => Message::Reject {
            ballot: get_ballot(r.ballot)?,
            promised: get_ballot(r.promised)?,
        },
        Wire::Handover(h) => Message::Handover {
            ballot: get_ballot(h.ballot)?,
            seq: h.seq,
            target: NodeId(h.target),
        },
    };
    if let Message::Accept { first, values, .. } | Message::Learn { first, values, .. } = &m {
        if first.0 == 0 || first.0.checked_add(values.len() as u64).is_none() {
            return Err(DecodeError("slot range out of bounds"));
        }
    }
    if let Message::Accepted { first, count, .. } = &m {
        if first.0.checked_add(*count).is_none() {
            return Err(DecodeError("slot range out of bounds"));
        }
    }
    Ok((to, m))
}

/// Every item of a peer batch addressed to `me`, in the order the group
/// takes them: Paxos messages, forwarded commands, lease questions and
/// answers, read-index questions, timestamp questions and answers,
/// read-index answers. An envelope that does not decode or names another
/// node is dropped with a log line; a granted timestamp range that is no
/// range of revisions becomes a refusal. The node's core steps its group
/// with these, and the hostile-input tests with the same function.
pub fn batch_items(batch: peerpb::Batch, me: NodeId) -> Vec<synod_group::PeerItem> {
    use synod_group::{Granted, PeerItem};
    let from = NodeId(batch.from);
    let mut out = Vec::with_capacity(batch.messages.len() + batch.forwards.len());
    for envelope in batch.messages {
        match decode(envelope) {
            Ok((to, message)) if to == me => out.push(PeerItem::Paxos(message)),
            Ok(_) => tracing::warn!(%from, "message for another node dropped"),
            Err(e) => tracing::warn!(%from, error = %e, "peer message dropped"),
        }
    }
    out.extend(batch.forwards.into_iter().map(PeerItem::Forward));
    out.extend(
        batch
            .lease_queries
            .into_iter()
            .map(|q| PeerItem::LeaseQuery {
                token: q.token,
                id: q.id,
                renew: q.renew,
            }),
    );
    out.extend(
        batch
            .lease_answers
            .into_iter()
            .map(|a| PeerItem::LeaseAnswer {
                token: a.token,
                answer: (a.ttl >= 0).then_some((a.ttl, a.granted_ttl)),
            }),
    );
    out.extend(
        batch
            .read_index
            .into_iter()
            .map(|token| PeerItem::ReadIndex { token }),
    );
    out.extend(
        batch
            .timestamp_queries
            .into_iter()
            .map(|q| PeerItem::TimestampQuery {
                token: q.token,
                count: q.count,
                // Bounded by the group (TIMESTAMPS_MAX), which refuses more.
                leases: q.leases,
            }),
    );
    for a in batch.timestamp_answers {
        // A range must be a range of revisions: refused otherwise.
        let valid = a.granted && 0 < a.first && a.first <= a.last;
        if a.granted && !valid {
            tracing::warn!(%from, first = a.first, last = a.last, "invalid timestamp range refused");
        }
        out.push(PeerItem::TimestampAnswer {
            token: a.token,
            range: valid.then_some((a.first, a.last)),
            granted: if valid {
                Granted {
                    live: a.live,
                    auth: AuthFence {
                        enabled: a.auth_enabled,
                        revision: a.auth_revision,
                    },
                }
            } else {
                Granted::default()
            },
        });
    }
    out.extend(
        batch
            .read_index_answers
            .into_iter()
            .map(|a| PeerItem::ReadIndexAnswer {
                token: a.token,
                slot: a.confirmed.then_some(Slot(a.slot)),
            }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let b = Ballot {
            round: 3,
            node: NodeId(2),
        };
        let v = Value::Batch(Arc::from(vec![Bytes::from_static(b"x")]));
        let messages = vec![
            Message::Probe {
                ballot: b,
                commit: Slot(4),
            },
            Message::ProbeReply {
                ballot: b,
                ok: true,
                promised: b,
            },
            Message::Prepare {
                ballot: b,
                commit: Slot(1),
            },
            Message::Promise {
                ballot: b,
                accepted: vec![SlotRecord {
                    slot: Slot(2),
                    ballot: b,
                    value: v.clone(),
                    chosen: true,
                }],
                snapshot: Slot(1),
            },
            Message::Accept {
                ballot: b,
                first: Slot(5),
                values: vec![v.clone(), Value::Noop],
                commit: Slot(4),
                seq: 9,
                sent_at: Time(77),
            },
            Message::Accepted {
                ballot: b,
                first: Slot(5),
                count: 2,
                commit: Slot(4),
                behind: true,
                seq: 9,
                sent_at: Time(77),
            },
            Message::Learn {
                ballot: b,
                first: Slot(1),
                values: vec![v],
            },
            Message::Learned {
                ballot: b,
                commit: Slot(3),
            },
            Message::Reject {
                ballot: b,
                promised: b,
            },
            Message::Handover {
                ballot: b,
                seq: 12,
                target: NodeId(3),
            },
            Message::Learn {
                ballot: b,
                first: Slot(9),
                values: vec![
                    Value::Membership(Configuration::Stable(Membership::new(
                        &[NodeId(1), NodeId(2), NodeId(3)],
                        &[NodeId(4)],
                    ))),
                    Value::Membership(Configuration::Joint {
                        old: Membership::new(&[NodeId(1), NodeId(2), NodeId(3)], &[]),
                        new: Membership::new(&[NodeId(1), NodeId(2), NodeId(4)], &[]),
                    }),
                ],
            },
        ];
        for m in messages {
            let (to, back) = decode(encode(NodeId(7), &m)).unwrap();
            assert_eq!((to, back), (NodeId(7), m));
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(decode(peerpb::Envelope {
            to: 1,
            message: None
        })
        .is_err());
        let no_ballot = peerpb::Envelope {
            to: 1,
            message: Some(Wire::Prepare(peerpb::Prepare {
                ballot: None,
                commit: 0,
            })),
        };
        assert!(decode(no_ballot).is_err());
        let overflow = peerpb::Envelope {
            to: 1,
            message: Some(Wire::Accepted(peerpb::Accepted {
                ballot: ballot(Ballot::ZERO),
                first: u64::MAX,
                count: 2,
                ..Default::default()
            })),
        };
        assert!(decode(overflow).is_err());
        let bad_members = peerpb::Envelope {
            to: 1,
            message: Some(Wire::Learn(peerpb::Learn {
                ballot: ballot(Ballot::ZERO),
                first: 1,
                values: vec![peerpb::Value {
                    noop: false,
                    commands: Vec::new(),
                    membership: Some(peerpb::Configuration {
                        old: Some(peerpb::Membership::default()),
                        new: None,
                    }),
                }],
            })),
        };
        assert!(decode(bad_members).is_err(), "no voters is invalid");
    }
}
