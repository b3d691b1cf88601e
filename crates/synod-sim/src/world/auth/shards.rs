//! The auth agent on a sharded cluster (design 0018). Its puts go to the
//! shard that owns their key, judged first as a node judges them
//! (`synod_kv::judge_routed`, the real code) by the node's meta replica at
//! the revision the put's caller carries; a shard then applies a put only
//! if its stamp's auth fence (the meta group's auth store when the oracle
//! handed the stamp out) shows no change since.
//!
//! Checked, against the model of the meta log that `super` keeps:
//! - **the node's judgment** is the model's at the node's applied slot;
//! - **the oracle's fence** is never below the revision the put was
//!   judged at (the oracle answers from a point after every auth change
//!   the judging node had applied), and is a state the log had: same
//!   revision, same enabled flag;
//! - **answers**: a put acknowledged OK has a copy in its shard's log
//!   whose fence lets it run: auth off then, or on at exactly the judged
//!   revision (so the roles that allowed it were the roles when it was
//!   ordered); one refused `AuthOldRevision` has a copy fenced above its
//!   judged revision; a shard never refuses with `PermissionDenied` (it
//!   holds no roles).
//!
//! Negative control `--auth-unfenced`: shards ignore the fence, so a put
//! judged before a revocation and ordered after it is acknowledged.

use super::{put_key, wire, AuthView, CallerModel, Verdict, PREFIX, USER};
use crate::checker::Violation;
use crate::node::Waiting;
use crate::world::World;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use synod_group::Request;
use synod_kv::{AuthError, KvError};
use synod_paxos::Value;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::Caller;

/// What the checker keeps of the agent's puts to shards.
#[derive(Default)]
pub(in crate::world) struct ShardPuts {
    /// Put number → the auth revision its node judged it at.
    judged: BTreeMap<u64, u64>,
    /// Put number → the auth fences `(enabled, revision)` its copies in
    /// the shards' logs carry.
    fences: BTreeMap<u64, BTreeSet<(bool, u64)>>,
}

impl World {
    /// Sends put `n` (`op`) through node `i` as a node routes it: judged
    /// by the node's meta replica, then to the shard owning the key.
    pub(super) fn send_shard_put(&mut self, i: usize, n: u64, op: Op) -> Result<(), Violation> {
        let Some(meta) = self.nodes[i].group.as_ref() else {
            return Ok(());
        };
        let auth = meta.kv().auth().clone();
        let applied = meta.applied();
        let caller = Caller {
            user: USER.into(),
            auth_revision: auth.revision(),
        };
        let Some(map) = self.nodes[i].shard_map() else {
            return Ok(());
        };
        let group = synod_storage::GroupId(map.group_of(&put_key(n)));
        if self.nodes[i].is_blank(group) {
            return Ok(());
        }
        let judged = synod_kv::judge_routed(&auth, &caller, &op, &|_| Vec::new());
        let model = &self.auth_agent.model;
        let view = &model.views[model.index_at(applied)].1;
        let expected = view.put_verdict(
            &CallerModel {
                user: USER.into(),
                revision: caller.auth_revision,
            },
            &put_key(n),
        );
        let verdict = match &judged {
            Ok(()) => Verdict::Written,
            Err(KvError::Auth(AuthError::PermissionDenied)) => Verdict::Denied,
            Err(_) => Verdict::OldRevision,
        };
        if verdict != expected {
            return Err(Violation {
                invariant: "a node judges a shard's write by the meta group's roles",
                detail: format!(
                    "{} (meta applied {applied}) judged put auth/{n} {judged:?}; the log gives {expected:?} with {view}",
                    self.nodes[i].id
                ),
            });
        }
        if judged.is_err() {
            self.auth_agent.denied += 1;
            return Ok(());
        }
        self.auth_agent
            .shard_puts
            .judged
            .insert(n, caller.auth_revision);
        let now = self.nodes[i].local_time(self.now);
        let node = &mut self.nodes[i];
        let ticket = node.ticket(Waiting::AuthPut(n));
        if let Some(g) = node.group_of(group) {
            g.request(ticket, Request::WriteAs { op, caller }, now);
        }
        Ok(())
    }

    /// A shard replica applied `value`: the fences of the agent's puts in
    /// it are recorded (every copy, from every replica: a set).
    pub(in crate::world) fn auth_on_shard_apply(&mut self, value: &Value<Bytes>) {
        if !self.cfg.options.auth {
            return;
        }
        let Value::Batch(commands) = value else {
            return;
        };
        for command in commands.iter() {
            let (mut put, mut fence) = (None, None);
            for (field, v) in wire::Fields(command) {
                match (field, v) {
                    (3, wire::Field::Bytes(b)) => put = Some(b),
                    (23, wire::Field::Bytes(b)) => {
                        let enabled = wire::varint_field(b, 1) != 0;
                        fence = Some((enabled, wire::varint_field(b, 2)));
                    }
                    _ => {}
                }
            }
            let (Some(put), Some(fence)) = (put, fence) else {
                continue;
            };
            let key = wire::bytes_field(put, 1);
            let n = key
                .strip_prefix(PREFIX)
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u64>().ok());
            if let Some(n) = n {
                let fences = self.auth_agent.shard_puts.fences.entry(n).or_default();
                fences.insert(fence);
            }
        }
    }

    /// Put `n` answered `answered` by its shard: the fences of its copies
    /// must allow the answer.
    pub(super) fn on_shard_put_answer(
        &mut self,
        n: u64,
        answered: Verdict,
    ) -> Result<(), Violation> {
        let puts = &self.auth_agent.shard_puts;
        let Some(&judged) = puts.judged.get(&n) else {
            return Err(Violation {
                invariant: "an answered put of the auth agent was judged by its node",
                detail: format!("put auth/{n} answered {answered:?}, never sent"),
            });
        };
        let fences = puts.fences.get(&n).cloned().unwrap_or_default();
        let model = &self.auth_agent.model;
        let view_at = |revision: u64| -> Option<&AuthView> {
            let i = model.views.partition_point(|(_, v)| v.revision < revision);
            model
                .views
                .get(i)
                .map(|(_, v)| v)
                .filter(|v| v.revision == revision)
        };
        let caller = CallerModel {
            user: USER.into(),
            revision: judged,
        };
        let mut verdicts = Vec::new();
        for &(enabled, revision) in &fences {
            let Some(view) = view_at(revision) else {
                return Err(Violation {
                    invariant: "an auth fence is a state the meta log had",
                    detail: format!(
                        "put auth/{n} fenced at revision {revision}, which the log never had"
                    ),
                });
            };
            if view.enabled != enabled || revision < judged {
                return Err(Violation {
                    invariant: "the oracle's auth fence is the meta group's store, not below the judged revision",
                    detail: format!(
                        "put auth/{n} judged at {judged}, fenced (enabled={enabled}, {revision}); the log at {revision}: {view}"
                    ),
                });
            }
            verdicts.push(view.put_verdict(&caller, &put_key(n)));
        }
        if !verdicts.contains(&answered) {
            return Err(Violation {
                invariant: match answered {
                    Verdict::Written => "a put acknowledged OK in a shard ran while the log allowed it",
                    Verdict::Denied => "a shard never judges roles",
                    Verdict::OldRevision => {
                        "a put refused AuthOldRevision in a shard was ordered after an auth change"
                    }
                },
                detail: format!(
                    "put auth/{n} judged at {judged}, its copies' fences {fences:?} give {verdicts:?}"
                ),
            });
        }
        match answered {
            Verdict::Written => self.auth_agent.puts_ok += 1,
            Verdict::Denied => self.auth_agent.denied += 1,
            Verdict::OldRevision => self.auth_agent.old_revision += 1,
        }
        Ok(())
    }
}
