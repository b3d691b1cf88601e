//! The timestamp oracle under faults (design 0011). An agent asks a random
//! running node for a few timestamps every few milliseconds, without
//! waiting for earlier answers; any member forwards the question to its
//! leader, which hands out from a range reserved through the log, at a
//! confirmed point of its leadership.
//!
//! Checked on every answer the agent receives (O1 of `synod_group::tso`):
//! - **unique**: no two answers share a timestamp;
//! - **real-time order**: an answer to a question asked after another
//!   answer was received lies entirely above it.

use super::{Event, World};
use crate::checker::Violation;
use crate::config::{Micros, MS};
use crate::node::Waiting;
use rand::Rng;
use synod_group::{Answer, Request};

/// How often the agent asks.
const AGENT_EVERY: Micros = 25 * MS;
/// The most timestamps one question asks for.
const COUNT_MAX: u32 = 8;

/// What the agent received: `(asked, received, first, last)`.
#[derive(Default)]
pub(super) struct OracleAgent {
    answers: Vec<(Micros, Micros, i64, i64)>,
}

impl OracleAgent {
    /// Timestamps received so far, for the report.
    pub(super) fn handed_out(&self) -> u64 {
        self.answers
            .iter()
            .map(|(_, _, f, l)| (l - f + 1) as u64)
            .sum()
    }
}

impl World {
    /// The agent's periodic question to a random running node.
    pub(super) fn on_oracle_agent(&mut self) {
        if self.healed_at.is_some() {
            return;
        }
        self.schedule(AGENT_EVERY, Event::OracleAgent);
        let Some(i) = self.random_running_node() else {
            return;
        };
        let count = self.rng.gen_range(1..=COUNT_MAX);
        let now = self.nodes[i].local_time(self.now);
        let asked = self.now;
        let node = &mut self.nodes[i];
        let ticket = node.ticket(Waiting::Timestamps(asked));
        node.group().request(
            ticket,
            Request::Timestamps {
                count,
                leases: Vec::new(),
            },
            now,
        );
    }

    /// A node answered the agent: the answer travels back.
    pub(super) fn on_timestamps_answer(&mut self, asked: Micros, answer: Option<Answer>) {
        if let Some(Answer::Timestamps(Some((first, last)), _)) = answer {
            let delay = self.rng.gen_range(50..1000);
            self.schedule(delay, Event::OracleReply { asked, first, last });
        }
    }

    /// The agent received timestamps: check them against every earlier
    /// answer.
    pub(super) fn on_oracle_reply(
        &mut self,
        asked: Micros,
        first: i64,
        last: i64,
    ) -> Result<(), Violation> {
        let received = self.now;
        for &(a, r, f, l) in &self.oracle_agent.answers {
            if first <= l && f <= last {
                return Err(Violation {
                    invariant: "timestamps are unique",
                    detail: format!(
                        "{first}..={last} (asked at {asked}us) overlaps {f}..={l} (asked at {a}us)"
                    ),
                });
            }
            if r < asked && first <= l {
                return Err(Violation {
                    invariant: "timestamps increase in real time",
                    detail: format!(
                        "{first}..={last} asked at {asked}us, after {f}..={l} was received at {r}us"
                    ),
                });
            }
        }
        self.note(|| format!("oracle agent: {first}..={last} asked at {asked}us"));
        self.oracle_agent
            .answers
            .push((asked, received, first, last));
        Ok(())
    }
}
