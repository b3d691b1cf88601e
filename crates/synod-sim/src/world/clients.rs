//! Clients and the requests they send to nodes. A client retries the same
//! operation (same sequence number) until it gets an answer; the first
//! successful answer from any attempt completes it.

use super::{Event, World};
use crate::config::MS;
use crate::linearizability::{KvInput, KvOutput};
use crate::node::ReadWait;
use rand::Rng;
use synod_paxos::{NodeId, ProposeError, ReadId};

/// A redirected client waits this long before retrying.
const REDIRECT_BACKOFF_MAX: u64 = 10 * MS;
/// A client that got its answer thinks this long before the next operation.
const THINK_MAX: u64 = 20 * MS;

impl World {
    pub(super) fn reply(
        &mut self,
        client: u64,
        seq: u64,
        attempt: u64,
        result: Result<KvOutput, Option<NodeId>>,
    ) {
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
        let input = op.input.clone();
        let to = match c.leader_hint {
            Some(l) => l,
            None => self.cfg.nodes[self.rng.gen_range(0..self.cfg.nodes.len())],
        };
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
        let timeout = self.cfg.client_timeout;
        let redirect = false;
        self.schedule(
            timeout,
            Event::ClientTimeout {
                client,
                seq,
                attempt,
                redirect,
            },
        );
    }

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
        let node = &mut self.nodes[i];
        let replica = node.replica.as_mut().expect("up");
        let result = match input {
            KvInput::Get { key } => {
                let rid = ReadId(node.next_read);
                node.next_read += 1;
                let r = replica.read(rid, now);
                if r.is_ok() {
                    node.pending_reads.insert(
                        rid,
                        ReadWait {
                            client,
                            seq,
                            attempt,
                            key,
                        },
                    );
                }
                r
            }
            input => {
                let command = crate::kv::Command {
                    client,
                    seq,
                    op: crate::kv::Op::Kv(input),
                };
                let r = replica.propose(command);
                if r.is_ok() {
                    node.pending_writes.insert((client, seq), attempt);
                }
                r
            }
        };
        match result {
            Ok(()) => {}
            Err(ProposeError::NotLeader { leader }) => {
                self.reply(client, seq, attempt, Err(leader))
            }
            Err(_) => self.reply(client, seq, attempt, Err(None)),
        }
    }

    pub(super) fn on_reply(
        &mut self,
        client: u64,
        seq: u64,
        attempt: u64,
        result: Result<KvOutput, Option<NodeId>>,
    ) {
        let c = &mut self.clients[(client - 1) as usize];
        let Some(op) = c.outstanding.as_ref() else {
            return;
        };
        if op.seq != seq {
            return;
        }
        match result {
            Ok(output) => {
                c.complete(output.clone(), self.now, &mut self.history);
                self.note(|| format!("client {client} #{seq} -> {output:?}"));
                self.report.ops_ok += 1;
                let think = self.rng.gen_range(0..THINK_MAX);
                self.schedule(think, Event::ClientStart(client));
            }
            Err(hint) if attempt == op.attempt => {
                c.leader_hint = hint;
                let backoff = self.rng.gen_range(1..REDIRECT_BACKOFF_MAX);
                let (attempt, redirect) = (op.attempt, true);
                self.schedule(
                    backoff,
                    Event::ClientTimeout {
                        client,
                        seq,
                        attempt,
                        redirect,
                    },
                );
            }
            Err(_) => {}
        }
    }

    /// Retries the outstanding operation: after a redirect towards the hint,
    /// after a timeout towards a random node (the hint may be what failed).
    pub(super) fn on_client_timeout(
        &mut self,
        client: u64,
        seq: u64,
        attempt: u64,
        redirect: bool,
    ) {
        let c = &mut self.clients[(client - 1) as usize];
        let Some(op) = c.outstanding.as_ref() else {
            return;
        };
        if op.seq != seq || op.attempt != attempt {
            return;
        }
        if !redirect {
            c.leader_hint = None;
        }
        self.send_request(client, seq, attempt + 1);
    }
}
