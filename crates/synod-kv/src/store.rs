//! The replicated state machine as a whole: the versioned keys, the
//! per-client record of the last command applied (so a retried write takes
//! effect once), and snapshots of both.

use crate::apply::{self, WriteTxn};
use crate::error::KvError;
use crate::mvcc::Mvcc;
use crate::read;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use synod_proto::etcdserverpb::{RangeRequest, RangeResponse};
use synod_proto::mvccpb::Event;
use synod_proto::synodpb::{
    command::Op, error::Kind, outcome, Command, Error, KeyHistory, Outcome, Session, Snapshot,
};

/// Clients whose last answer is remembered; the least recently active is
/// forgotten first. A client retries within seconds, so this only has to
/// outlast a retry, not a client's lifetime.
pub const SESSIONS_MAX: usize = 65_536;

/// What applying one command produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The answer for the client (a response or a refusal).
    pub outcome: Outcome,
    /// Changes for watchers, in order; empty when nothing changed.
    pub events: Vec<Event>,
    /// The store's revision after the command.
    pub revision: i64,
    /// The command was a retry of one already applied; nothing changed.
    pub duplicate: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct SessionEntry {
    seq: u64,
    revision: i64,
    outcome: Outcome,
}

/// etcd's key-value store, deterministic: the same commands in the same
/// order give the same state, responses and events on every replica.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvStore {
    mvcc: Mvcc,
    sessions: BTreeMap<u64, SessionEntry>,
    /// `(last revision, client)`, to forget the least recently active.
    session_order: BTreeSet<(i64, u64)>,
}

impl KvStore {
    /// The revision of the last write.
    pub fn revision(&self) -> i64 {
        self.mvcc.revision()
    }

    /// Reads below this revision fail with `Compacted`.
    pub fn compact_revision(&self) -> i64 {
        self.mvcc.compact_revision()
    }

    /// The versioned keys (read-only).
    pub fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    /// The recorded outcome of `(client, seq)`, if that command was the
    /// client's last one applied: how a node answers a write that reached
    /// it inside an installed snapshot rather than through the log.
    pub fn session_outcome(&self, client: u64, seq: u64) -> Option<&Outcome> {
        self.sessions
            .get(&client)
            .filter(|s| s.seq == seq)
            .map(|s| &s.outcome)
    }

    /// Serves a range read at the store's current state.
    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, KvError> {
        read::range(&self.mvcc, r, self.mvcc.revision())
    }

    /// Applies one chosen command. Never fails: a refused command yields an
    /// error outcome and leaves the store unchanged.
    pub fn apply(&mut self, command: &Command) -> Applied {
        if let Some(s) = self.sessions.get(&command.client) {
            if command.seq <= s.seq {
                // A retry (or an older copy) of a command already applied.
                let outcome = if command.seq == s.seq {
                    s.outcome.clone()
                } else {
                    error_outcome(&KvError::InvalidArgument(
                        "etcdserver: request is a stale retry",
                    ))
                };
                return Applied {
                    outcome,
                    events: Vec::new(),
                    revision: self.mvcc.revision(),
                    duplicate: true,
                };
            }
        }
        let (outcome, events) = self.execute(command.op.as_ref());
        let revision = self.mvcc.revision();
        self.remember(command, revision, &outcome);
        Applied {
            outcome,
            events,
            revision,
            duplicate: false,
        }
    }

    fn execute(&mut self, op: Option<&Op>) -> (Outcome, Vec<Event>) {
        let no_leases = |_: i64| false;
        let rev = self.mvcc.revision() + 1;
        let mut txn = WriteTxn {
            mvcc: &mut self.mvcc,
            rev,
            wrote: false,
            events: Vec::new(),
            leases: &no_leases,
        };
        let result = match op {
            Some(Op::Put(r)) => txn.put(r).map(outcome::Result::Put),
            Some(Op::DeleteRange(r)) => Ok(outcome::Result::DeleteRange(txn.delete_range(r))),
            Some(Op::Txn(r)) => txn.txn(r).map(outcome::Result::Txn),
            Some(Op::Compact(r)) => apply::compact(txn.mvcc, r).map(outcome::Result::Compact),
            None => Err(KvError::InvalidArgument("etcdserver: empty command")),
        };
        let (wrote, events) = (txn.wrote, std::mem::take(&mut txn.events));
        match result {
            Ok(r) => {
                if wrote {
                    self.mvcc.set_revision(rev);
                }
                (Outcome { result: Some(r) }, events)
            }
            Err(e) => {
                self.rollback(rev, &events);
                (error_outcome(&e), Vec::new())
            }
        }
    }

    /// Undoes a failed write transaction: every version it wrote carries
    /// `rev`, above anything that existed before.
    fn rollback(&mut self, rev: i64, events: &[Event]) {
        let keys: BTreeSet<&Bytes> = events
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| &kv.key))
            .collect();
        for key in keys {
            self.mvcc.undo(key, rev);
        }
    }

    fn remember(&mut self, command: &Command, revision: i64, outcome: &Outcome) {
        if let Some(old) = self.sessions.get(&command.client) {
            self.session_order.remove(&(old.revision, command.client));
        }
        self.sessions.insert(
            command.client,
            SessionEntry {
                seq: command.seq,
                revision,
                outcome: outcome.clone(),
            },
        );
        self.session_order.insert((revision, command.client));
        while self.sessions.len() > SESSIONS_MAX {
            let oldest = self
                .session_order
                .pop_first()
                .expect("orders every session");
            self.sessions.remove(&oldest.1);
        }
    }

    /// The whole state, for a replica that must catch up or a backup.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            revision: self.mvcc.revision(),
            compact_revision: self.mvcc.compact_revision(),
            keys: self
                .mvcc
                .keys()
                .iter()
                .map(|(k, v)| KeyHistory {
                    key: k.clone(),
                    versions: v.clone(),
                })
                .collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(client, s)| Session {
                    client: *client,
                    seq: s.seq,
                    revision: s.revision,
                    outcome: Some(s.outcome.clone()),
                })
                .collect(),
        }
    }

    /// Rebuilds a store from a snapshot, checking it is well formed.
    pub fn restore(snapshot: Snapshot) -> Result<KvStore, KvError> {
        let bad = KvError::InvalidArgument("snapshot is malformed");
        let mut keys = BTreeMap::new();
        for h in snapshot.keys {
            let ordered = h
                .versions
                .windows(2)
                .all(|w| w[0].mod_revision < w[1].mod_revision);
            let in_range = h
                .versions
                .iter()
                .all(|v| v.mod_revision <= snapshot.revision && v.key == h.key);
            if h.versions.is_empty()
                || !ordered
                || !in_range
                || keys.insert(h.key, h.versions).is_some()
            {
                return Err(bad);
            }
        }
        if snapshot.compact_revision > snapshot.revision || snapshot.revision < 1 {
            return Err(bad);
        }
        let mut store = KvStore {
            mvcc: Mvcc::from_parts(keys, snapshot.revision, snapshot.compact_revision),
            ..KvStore::default()
        };
        for s in snapshot.sessions {
            let outcome = s.outcome.ok_or(bad.clone())?;
            store.sessions.insert(
                s.client,
                SessionEntry {
                    seq: s.seq,
                    revision: s.revision,
                    outcome,
                },
            );
            store.session_order.insert((s.revision, s.client));
        }
        Ok(store)
    }
}

/// Encodes a refusal for the client and for the session record.
pub fn error_outcome(e: &KvError) -> Outcome {
    let (kind, a, b) = match *e {
        KvError::Compacted {
            requested,
            compact_revision,
        } => (Kind::Compacted, requested, compact_revision),
        KvError::FutureRevision { requested, current } => {
            (Kind::FutureRevision, requested, current)
        }
        KvError::KeyNotFound => (Kind::KeyNotFound, 0, 0),
        KvError::LeaseNotFound(id) => (Kind::LeaseNotFound, id, 0),
        KvError::InvalidArgument(_) => (Kind::InvalidArgument, 0, 0),
    };
    Outcome {
        result: Some(outcome::Result::Error(Error {
            kind: kind as i32,
            a,
            b,
            message: e.etcd_message().to_string(),
        })),
    }
}

/// Decodes a refusal recorded in an outcome.
pub fn outcome_error(e: &Error) -> KvError {
    match Kind::try_from(e.kind) {
        Ok(Kind::Compacted) => KvError::Compacted {
            requested: e.a,
            compact_revision: e.b,
        },
        Ok(Kind::FutureRevision) => KvError::FutureRevision {
            requested: e.a,
            current: e.b,
        },
        Ok(Kind::KeyNotFound) => KvError::KeyNotFound,
        Ok(Kind::LeaseNotFound) => KvError::LeaseNotFound(e.a),
        _ => KvError::InvalidArgument(invalid_message(&e.message)),
    }
}

/// Maps a recorded message back to its static form (messages are a closed set).
fn invalid_message(m: &str) -> &'static str {
    crate::validate::MESSAGES
        .iter()
        .copied()
        .find(|s| *s == m)
        .unwrap_or("etcdserver: invalid request")
}
