//! Clients and the requests they send to nodes. Any node takes any request:
//! the group forwards writes to the leader and orders reads itself, as a
//! real node does. Reads are retried at another node on a timeout; a write
//! waits at the node that took it, and its outcome is unknown if that node
//! crashes (a retry elsewhere would be a second write, as with etcd).

use super::{Event, World};
use crate::checker::Violation;
use crate::config::MS;
use crate::kv;
use crate::linearizability::{KvInput, KvOutput};
use crate::node::Waiting;
use crate::node::GROUP;
use rand::Rng;
use synod_group::{Answer, Request};
use synod_paxos::NodeId;
use synod_storage::GroupId;

/// A client whose read was refused waits this long before retrying.
const RETRY_BACKOFF_MAX: u64 = 10 * MS;
/// A client that got its answer thinks this long before the next operation.
const THINK_MAX: u64 = 20 * MS;

impl World {
    pub(super) fn on_client_start(&mut self, client: u64) {
        if self.healed_at.is_some() {
            return; // After healing, clients only finish what they started.
        }
        let c = &mut self.clients[(client - 1) as usize];
        let input = c.next_input(self.cfg.keys, &mut self.rng);
        let op = c.invoke(input, self.now, &mut self.history);
        self.send_request(client, op.seq, 0);
    }

    fn send_request(&mut self, client: u64, seq: u64, attempt: u64) {
        let c = &mut self.clients[(client - 1) as usize];
        let op = c
            .outstanding
            .as_mut()
            .expect("request without an operation");
        op.attempt = attempt;
        op.taken = None;
        let input = op.input.clone();
        let members = self.current_members();
        let to = members[self.rng.gen_range(0..members.len())];
        let delay = self.rng.gen_range(50..1000);
        self.schedule(
            delay,
            Event::Request {
                to,
                client,
                seq,
                attempt,
                input,
            },
        );
        self.client_timer(self.cfg.client_timeout, client, seq, attempt, false);
    }

    /// The members of the newest configuration a running replica knows:
    /// the endpoints a client's member list holds (all nodes before any
    /// is known).
    pub(super) fn current_members(&self) -> Vec<NodeId> {
        let newest = self
            .nodes
            .iter()
            .filter_map(|n| n.replica())
            .max_by_key(|r| r.status().commit)
            .and_then(|r| r.membership().cloned());
        match newest {
            Some(c) => c.members(),
            None => self.cfg.nodes.clone(),
        }
    }

    /// Arms the client's timer for `attempt`: a timeout, or (`redirect`) a
    /// retry after a refusal.
    fn client_timer(&mut self, delay: u64, client: u64, seq: u64, attempt: u64, redirect: bool) {
        let timeout = Event::ClientTimeout {
            client,
            seq,
            attempt,
            redirect,
        };
        self.schedule(delay, timeout);
    }

    /// A request reaches a running node: the group takes it.
    pub(super) fn on_request(
        &mut self,
        to: NodeId,
        client: u64,
        seq: u64,
        attempt: u64,
        input: KvInput,
    ) {
        let i = self.node_index(to);
        let now = self.nodes[i].local_time(self.now);
        let incarnation = self.nodes[i].incarnation;
        let current = self.clients[(client - 1) as usize]
            .outstanding
            .as_mut()
            .filter(|op| op.seq == seq && op.attempt == attempt);
        match current {
            Some(op) => op.taken = Some((to, incarnation)),
            // A write's earlier attempt, delayed (a paused node) past the
            // client's timeout: the client sent it again, so this copy must
            // not be a second write.
            None if !matches!(input, KvInput::Get { .. }) => return,
            None => {}
        }
        // The node routes by its shards as its replicas hold them.
        let map = self.cfg.shard_map.as_ref().map(|_| {
            self.nodes[i]
                .shard_map()
                .expect("a node's shards tile the key space")
        });
        let group = match (map, &input) {
            (
                Some(map),
                KvInput::Get { key } | KvInput::Put { key, .. } | KvInput::Cas { key, .. },
            ) => GroupId(map.group_of(&kv::key(*key))),
            (None, _) => GROUP,
        };
        let request = match &input {
            KvInput::Get { key } => Request::Read {
                request: kv::read_request(*key),
                serializable: false,
            },
            write => Request::Write(kv::write_op(write)),
        };
        if self.nodes[i].is_blank(group) {
            // Its state is on its way: refused, the client tries again.
            let refusal = match request {
                Request::Read { .. } => Answer::Read(Err(synod_kv::KvError::WrongShard)),
                _ => Answer::Write(synod_kv::error_outcome(&synod_kv::KvError::WrongShard)),
            };
            self.client_answer(client, seq, attempt, Some(refusal));
            return;
        }
        let node = &mut self.nodes[i];
        let ticket = node.ticket(Waiting::Client {
            client,
            seq,
            attempt,
        });
        match node.group_of(group) {
            Some(g) => g.request(ticket, request, now),
            None => unreachable!("a running node hosts every shard"),
        }
    }

    /// A node answered a client's request (`None`: the node crashed with
    /// the request in it).
    pub(super) fn client_answer(
        &mut self,
        client: u64,
        seq: u64,
        attempt: u64,
        answer: Option<Answer>,
    ) {
        let c = &self.clients[(client - 1) as usize];
        let Some(op) = c.outstanding.as_ref().filter(|o| o.seq == seq) else {
            return;
        };
        let input = op.input.clone();
        // Ask again (the current attempt only) when the request surely did
        // not take effect: a write refused before it was proposed (no
        // leader, overload), or a read refused or lost.
        let retry = match &answer {
            Some(Answer::Write(o)) => kv::refused_unproposed(o),
            Some(Answer::Read(Ok(_))) => false,
            _ => matches!(input, KvInput::Get { .. }),
        };
        if retry {
            if attempt == op.attempt {
                let backoff = self.rng.gen_range(1..RETRY_BACKOFF_MAX);
                self.client_timer(backoff, client, seq, attempt, true);
            }
            return;
        }
        if let Some(Answer::Write(outcome)) = &answer {
            let revision = kv::write_revision(outcome);
            if let Some(op) = self.clients[(client - 1) as usize].outstanding.as_mut() {
                op.revision = revision;
            }
        }
        let result = match answer {
            Some(Answer::Read(Ok(r))) => Some(kv::read_output(&r.fill())),
            Some(Answer::Write(outcome)) => kv::write_output(&input, &outcome),
            // A write whose node crashed: its outcome is unknown.
            _ => None,
        };
        let delay = self.rng.gen_range(50..1000);
        self.schedule(
            delay,
            Event::Reply {
                client,
                seq,
                attempt,
                result,
            },
        );
    }

    pub(super) fn on_reply(
        &mut self,
        client: u64,
        seq: u64,
        _attempt: u64,
        result: Option<KvOutput>,
    ) -> Result<(), Violation> {
        let c = &self.clients[(client - 1) as usize];
        let Some(op) = c.outstanding.as_ref().filter(|op| op.seq == seq) else {
            return Ok(());
        };
        let (invoked, revision) = (self.history[op.history].invoke, op.revision);
        if let (Some(revision), Some(_), true) = (revision, &result, self.cfg.shard_map.is_some()) {
            self.revisions.on_ack(client, invoked, self.now, revision)?;
        }
        let c = &mut self.clients[(client - 1) as usize];
        match result {
            Some(output) => {
                c.complete(output.clone(), self.now, &mut self.history);
                self.note(|| format!("client {client} #{seq} -> {output:?}"));
                self.report.ops_ok += 1;
            }
            None => {
                c.give_up();
                self.note(|| format!("client {client} #{seq} -> unknown"));
            }
        }
        let think = self.rng.gen_range(0..THINK_MAX);
        self.schedule(think, Event::ClientStart(client));
        Ok(())
    }

    /// The current attempt got no answer in time, or was refused
    /// (`redirect`): a read, a refused write or a write that reached no
    /// node is sent again; a write a running node took keeps waiting there.
    pub(super) fn on_client_timeout(
        &mut self,
        client: u64,
        seq: u64,
        attempt: u64,
        redirect: bool,
    ) {
        let c = &self.clients[(client - 1) as usize];
        let Some(op) = c.outstanding.as_ref() else {
            return;
        };
        if op.seq != seq || op.attempt != attempt {
            return;
        }
        let members = self.current_members();
        let waiting_at_live_node = op.taken.is_some_and(|(node, incarnation)| {
            let n = &self.nodes[self.node_index(node)];
            n.is_up() && n.incarnation == incarnation
        });
        let waiting_at_member = op.taken.is_some_and(|(node, _)| members.contains(&node));
        if redirect || matches!(op.input, KvInput::Get { .. }) || op.taken.is_none() {
            self.send_request(client, seq, attempt + 1);
        } else if waiting_at_live_node && !waiting_at_member {
            // The node was removed from the group meanwhile and may never
            // hear of its write again (nobody sends a removed member
            // anything): the client gives up, the outcome stays unknown.
            self.client_answer(client, seq, attempt, None);
        } else if waiting_at_live_node {
            self.client_timer(self.cfg.client_timeout, client, seq, attempt, false);
        }
        // Otherwise the node crashed and its crash answered `None`.
    }
}
