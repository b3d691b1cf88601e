//! Simulated clients: each has at most one operation outstanding and
//! records the history the linearizability checker reads. A read is
//! retried at another node until it is answered; a write is sent to one
//! node and waits there (the node forwards it to the leader and answers
//! when it applies), and its outcome becomes unknown if that node crashes,
//! as for an etcd client whose connection broke.

use crate::config::Micros;
use crate::linearizability::{KvInput, KvOutput, Operation};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use synod_paxos::NodeId;

/// An operation the client is waiting on.
#[derive(Clone, Debug)]
pub struct Outstanding {
    /// Sequence number (dedup key for writes).
    pub seq: u64,
    /// What was asked.
    pub input: KvInput,
    /// Index of its entry in the history.
    pub history: usize,
    /// Attempt counter; replies and timeouts of older attempts are ignored
    /// except a successful reply, which is valid from any attempt.
    pub attempt: u64,
    /// The node (and its incarnation) that took the current attempt.
    pub taken: Option<(NodeId, u64)>,
    /// The revision its write's answer carried.
    pub revision: Option<i64>,
}

/// One simulated client.
pub struct Client {
    /// Identity used in commands.
    pub id: u64,
    /// Next sequence number.
    pub next_seq: u64,
    /// The operation in flight.
    pub outstanding: Option<Outstanding>,
    /// Last value this client saw per key, to make CAS succeed sometimes.
    pub seen: Vec<Option<u64>>,
}

impl Client {
    /// A new idle client.
    pub fn new(id: u64, keys: u64) -> Client {
        Client {
            id,
            next_seq: 1,
            outstanding: None,
            seen: vec![None; keys as usize],
        }
    }

    /// Draws the next operation; values are unique per client and sequence,
    /// which makes stale reads identifiable.
    pub fn next_input(&mut self, keys: u64, rng: &mut ChaCha8Rng) -> KvInput {
        let key = rng.gen_range(0..keys);
        let value = (self.id << 32) | self.next_seq;
        match rng.gen_range(0..10) {
            0..=3 => KvInput::Put { key, value },
            4..=7 => KvInput::Get { key },
            _ => KvInput::Cas {
                key,
                expect: self.seen[key as usize],
                new: value,
            },
        }
    }

    /// Starts `input` at `now`, recording its invocation in `history`.
    pub fn invoke(
        &mut self,
        input: KvInput,
        now: Micros,
        history: &mut Vec<Operation>,
    ) -> Outstanding {
        let seq = self.next_seq;
        self.next_seq += 1;
        history.push(Operation {
            client: self.id,
            input: input.clone(),
            invoke: now,
            ret: u64::MAX,
            output: None,
        });
        let op = Outstanding {
            seq,
            input,
            history: history.len() - 1,
            attempt: 0,
            taken: None,
            revision: None,
        };
        self.outstanding = Some(op.clone());
        op
    }

    /// Completes the outstanding operation with `output` at `now`.
    pub fn complete(&mut self, output: KvOutput, now: Micros, history: &mut [Operation]) {
        let op = self
            .outstanding
            .take()
            .expect("complete without an outstanding op");
        let entry = &mut history[op.history];
        entry.ret = now;
        match (&op.input, &output) {
            (KvInput::Get { key }, KvOutput::Get(v)) => self.seen[*key as usize] = *v,
            (KvInput::Put { key, value }, _) => self.seen[*key as usize] = Some(*value),
            (KvInput::Cas { key, new, .. }, KvOutput::Cas(true)) => {
                self.seen[*key as usize] = Some(*new)
            }
            _ => {}
        }
        entry.output = Some(output);
    }

    /// Gives the outstanding operation up: its effect stays unknown (the
    /// checker lets it take effect at any point after its invocation, or
    /// never).
    pub fn give_up(&mut self) {
        self.outstanding = None;
    }
}
