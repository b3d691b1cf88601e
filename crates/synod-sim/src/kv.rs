//! The simulator's replicated state machine: independent registers with
//! put / get / compare-and-set, and per-client deduplication so a retried
//! command takes effect once. Small on purpose: the simulator tests
//! replication, and a register model keeps the linearizability check cheap.

use crate::linearizability::{KvInput, KvOutput};
use std::collections::BTreeMap;
use std::fmt;

/// A client's command as it travels through the log.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    /// Who sent it.
    pub client: u64,
    /// The client's sequence number: one command per number, retried as is.
    pub seq: u64,
    /// What to do.
    pub input: KvInput,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}#{}:{:?}", self.client, self.seq, self.input)
    }
}

/// Register state plus the last answer given to each client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    registers: BTreeMap<u64, u64>,
    /// Per client: the last sequence applied and its output. Clients have at
    /// most one command in flight, so this is enough to deduplicate.
    sessions: BTreeMap<u64, (u64, KvOutput)>,
}

impl Kv {
    /// Applies one command; a command seen before returns its first output
    /// without taking effect again. A copy older than the client's latest
    /// command (a retry that was chosen late) returns `None`: the client
    /// already has its answer, since it sends a command only after the
    /// previous one was answered.
    pub fn apply(&mut self, command: &Command) -> Option<KvOutput> {
        if let Some((seq, output)) = self.sessions.get(&command.client) {
            if *seq == command.seq {
                return Some(output.clone());
            }
            if *seq > command.seq {
                return None;
            }
        }
        let output = self.execute(&command.input);
        self.sessions
            .insert(command.client, (command.seq, output.clone()));
        Some(output)
    }

    fn execute(&mut self, input: &KvInput) -> KvOutput {
        match *input {
            KvInput::Put { key, value } => {
                self.registers.insert(key, value);
                KvOutput::Put
            }
            KvInput::Get { key } => KvOutput::Get(self.registers.get(&key).copied()),
            KvInput::Cas { key, expect, new } => {
                let ok = self.registers.get(&key).copied() == expect;
                if ok {
                    self.registers.insert(key, new);
                }
                KvOutput::Cas(ok)
            }
        }
    }

    /// A read served outside the log (after a lease or read-index check).
    pub fn get(&self, key: u64) -> Option<u64> {
        self.registers.get(&key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retried_command_applies_once() {
        let mut kv = Kv::default();
        let cas = Command {
            client: 1,
            seq: 1,
            input: KvInput::Cas {
                key: 1,
                expect: None,
                new: 5,
            },
        };
        assert_eq!(kv.apply(&cas), Some(KvOutput::Cas(true)));
        assert_eq!(kv.apply(&cas), Some(KvOutput::Cas(true)));
        assert_eq!(kv.get(1), Some(5));
        let put = Command {
            client: 2,
            seq: 1,
            input: KvInput::Put { key: 1, value: 7 },
        };
        kv.apply(&put);
        let stale = Command {
            seq: 0,
            ..cas.clone()
        };
        assert_eq!(kv.apply(&stale), None);
        // The replayed CAS must not run again (it would now fail).
        assert_eq!(kv.apply(&cas), Some(KvOutput::Cas(true)));
        assert_eq!(kv.get(1), Some(7));
    }
}
