//! A shard's leader stamps its writes with revisions from the timestamp
//! oracle of another group (design 0011), so that revisions stay one
//! order across every shard.
//!
//! ```text
//!   write (local, or forwarded to us as leader) ─► queue
//!   queue, no question out ─► GroupReady.stamps = (id, n, leases) ─► shell asks the meta group
//!   shell: stamps_granted(id, first..=last, granted) ─► append stamp, live leases, auth fence ─► propose
//!   applied with STALE_STAMP (a deposed leader's stamp) ─► the waiting node submits it again
//! ```
//!
//! Why the order holds: a command is stamped only from a question asked
//! after it reached the leader, so after every write acknowledged before
//! its client sent it; the oracle answers each question above every
//! answer it gave before the question arrived. Within the shard the
//! leader proposes in stamp order, and the state machine refuses a stamp
//! at or below its revision, which covers a takeover that re-proposes an
//! older leader's stamps after newer ones. Stamps are never kept for
//! later writes: a leftover would lie below a stamp another shard handed
//! out since.
//!
//! Keys with leases (design 0017): the question names the leases the
//! queued writes attach keys to, and the oracle answers which of them
//! are live at the moment it hands the stamps out; each command carries
//! the live ones it names (`live_leases`), and the shard's state machine
//! attaches a key to no other. A lease revoked after that moment has its
//! keys detached by a command stamped from a later question, so above
//! every such write: it deletes them, and a copy of the write that comes
//! later is refused as stale and checked again.
//!
//! Auth (design 0018): the answer also says whether auth was on and the
//! auth store's revision at that moment (`auth_fence`, appended to every
//! stamped write); a shard refuses a client's write whose credentials
//! were judged at an older revision, as one group refuses it where it
//! applies.

use crate::group::Group;
use crate::types::{Answer, Granted, StampQuestion, Timestamps};
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use std::collections::VecDeque;
use synod_kv::{error_outcome, KvError};
use synod_paxos::{Ballot, ProposeError, Time};
use synod_proto::synodpb::{AuthFence, Command};

/// Commands a leader holds for stamps before refusing more with "too many
/// requests" (forwarded ones are dropped: their node forwards again).
pub const STAMP_QUEUE_MAX: usize = 16_384;
/// A question the shell has not answered in this long is forgotten, and
/// the queue asks again.
pub const STAMP_QUESTION_MS: u64 = 1_000;
/// After the oracle could not answer (no meta leader), the queue waits
/// this long before asking again.
pub const STAMP_RETRY_MS: u64 = 20;
/// A leader whose writes have waited this long for stamps that never came
/// hands its leadership to another voter: its node may be unable to reach
/// the oracle (cut off from the meta leader, or removed from the meta
/// group without knowing it) while its followers still hear it, so no one
/// else would take over and the shard would stall.
pub const STAMP_STARVED_MS: u64 = 3_000;

/// The protobuf key of `Command.stamp` (field 18, varint).
const STAMP_KEY: [u8; 2] = [0x90, 0x01];
/// The protobuf key of `Command.live_leases` (field 22, packed varints).
const LIVE_LEASES_KEY: [u8; 2] = [0xb2, 0x01];
/// `Command.auth_fence`'s field number (a message).
const AUTH_FENCE_FIELD: u32 = 23;

/// One command waiting for its stamp.
struct Queued {
    /// The encoded command, unstamped.
    command: Bytes,
    /// Its `(session, seq)` when it is this node's own pending write.
    local: Option<(u64, u64)>,
    /// The leases it attaches keys to (usually none).
    leases: Vec<i64>,
}

/// The stamping state of a shard's replica.
#[derive(Default)]
pub(crate) struct Stamper {
    queue: VecDeque<Queued>,
    /// The question out: its id, how many of the queue's front it covers,
    /// the ballot it was asked under, and when.
    asked: Option<(u64, u32, Ballot, Time)>,
    next_question: u64,
    /// No question before this time (the last one found no oracle).
    retry_at: Time,
    /// Since when questions have gone unanswered (none found an oracle,
    /// or none came back) while writes waited; cleared by stamps.
    starved_since: Option<Time>,
    /// Hand-overs for starvation so far, to pick another voter each time.
    hand_overs: usize,
    /// A question for the shell to send, taken by `ready`.
    pub(crate) out: Option<StampQuestion>,
    /// Stamps kept for later writes (only the negative control does).
    #[cfg(feature = "mutations")]
    leftovers: VecDeque<i64>,
}

impl Stamper {
    /// Commands waiting or asked for.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// `command` with `stamp` appended: protobuf takes the last value of a
/// field, and the command was encoded without one, so this is the
/// command stamped, without decoding or encoding it again.
#[cfg(any(test, feature = "mutations"))]
pub(crate) fn with_stamp(command: &[u8], stamp: i64) -> Bytes {
    with_stamp_and_leases(command, stamp, std::iter::empty(), None)
}

/// `command` with `stamp`, the live leases it names (none: nothing
/// appended for them) and the auth fence appended.
fn with_stamp_and_leases(
    command: &[u8],
    stamp: i64,
    live: impl Iterator<Item = i64>,
    auth: Option<&AuthFence>,
) -> Bytes {
    let live: Vec<i64> = live.collect();
    let mut out = BytesMut::with_capacity(command.len() + 28 + live.len() * 10);
    out.put_slice(command);
    out.put_slice(&STAMP_KEY);
    prost::encoding::encode_varint(stamp as u64, &mut out);
    if !live.is_empty() {
        let len: usize = live
            .iter()
            .map(|l| prost::encoding::encoded_len_varint(*l as u64))
            .sum();
        out.put_slice(&LIVE_LEASES_KEY);
        prost::encoding::encode_varint(len as u64, &mut out);
        for l in live {
            prost::encoding::encode_varint(l as u64, &mut out);
        }
    }
    if let Some(fence) = auth {
        prost::encoding::message::encode(AUTH_FENCE_FIELD, fence, &mut out);
    }
    out.freeze()
}

/// The leases a command attaches keys to: its put's, or its txn's puts'.
fn named_leases(command: &Command) -> Vec<i64> {
    use synod_proto::etcdserverpb::request_op::Request;
    use synod_proto::synodpb::command::Op;
    let mut leases = match &command.op {
        Some(Op::Put(p)) if p.lease != 0 => vec![p.lease],
        Some(Op::Txn(t)) => synod_kv::txn_requests(t)
            .filter_map(|r| match r {
                Request::RequestPut(p) if p.lease != 0 => Some(p.lease),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    leases.sort_unstable();
    leases.dedup();
    leases
}

impl Group {
    /// Whether this replica proposes `command` only once stamped: the
    /// group is stamped, the command is a key-value write (the only ones
    /// that take a revision here; a session expiry or the member table
    /// does not), and it carries no stamp of its own (a read at a stamp
    /// its node already took).
    /// Returns the leases it names when it does.
    fn needs_stamp(&self, command: &[u8], prestamped: bool) -> Option<Vec<i64>> {
        if !self.config.stamped || prestamped {
            return None;
        }
        match Command::decode(command) {
            Ok(c) if c.stamp == 0 && c.op.as_ref().is_some_and(synod_kv::takes_stamp) => {
                Some(named_leases(&c))
            }
            // Undecodable: the state machine skips it anyway.
            _ => None,
        }
    }

    /// A command for this replica to propose as the leader: stamped first
    /// when the group needs it (queued for stamps, `Ok`). `local` names
    /// this node's pending write. `Busy` when the queue is full; a replica
    /// that does not lead answers as `propose` does.
    pub(crate) fn propose_or_stamp(
        &mut self,
        command: Bytes,
        local: Option<(u64, u64)>,
        prestamped: bool,
    ) -> Result<(), ProposeError> {
        let Some(leases) = self.needs_stamp(&command, prestamped) else {
            return self.replica.propose(command);
        };
        // Stamping is for the leader only: anyone else forwards first.
        let Some(ballot) = self.replica.leading_ballot() else {
            return self.replica.propose(command);
        };
        if self.stamper.queue.len() >= STAMP_QUEUE_MAX {
            return Err(ProposeError::Busy);
        }
        #[cfg(feature = "mutations")]
        if self.mutated(crate::group::GroupMutation::StampsFromLeftovers) {
            if let Some(stamp) = self.stamper.leftovers.pop_front() {
                return self.replica.propose(with_stamp(&command, stamp));
            }
        }
        self.stamper.queue.push_back(Queued {
            command,
            local,
            leases,
        });
        self.ask_stamps(ballot);
        Ok(())
    }

    /// Asks for stamps for everything queued, unless a question is out.
    fn ask_stamps(&mut self, ballot: Ballot) {
        if self.stamper.asked.is_some()
            || self.stamper.queue.is_empty()
            || self.now < self.stamper.retry_at
        {
            return;
        }
        let count = self.stamper.queue.len().min(crate::TIMESTAMPS_MAX as usize) as u32;
        let id = self.stamper.next_question;
        self.stamper.next_question += 1;
        self.stamper.asked = Some((id, count, ballot, self.now));
        let mut leases: Vec<i64> = self
            .stamper
            .queue
            .iter()
            .take(count as usize)
            .flat_map(|q| q.leases.iter().copied())
            .collect();
        leases.sort_unstable();
        leases.dedup();
        #[cfg(feature = "mutations")]
        if self.mutated(crate::group::GroupMutation::StampsFromLeftovers) {
            let count = count + 16;
            self.stamper.out = Some(StampQuestion { id, count, leases });
            return;
        }
        self.stamper.out = Some(StampQuestion { id, count, leases });
    }

    /// The shell's answer to question `id`: stamps `first..=last`, or
    /// `None` when the oracle could not hand any out (asked again
    /// `STAMP_RETRY_MS` later), and what held when they were
    /// handed out.
    pub fn stamps_granted(&mut self, id: u64, range: Timestamps, granted: &Granted, now: Time) {
        self.now = self.now.max(now);
        let Some((asked, count, ballot, _)) = self.stamper.asked else {
            return;
        };
        if asked != id {
            return;
        }
        self.stamper.asked = None;
        let Some((first, last)) = range else {
            self.stamper.retry_at = Time(self.now.0 + STAMP_RETRY_MS);
            self.stamper.starved_since.get_or_insert(self.now);
            return;
        };
        self.stamper.starved_since = None;
        let given = (last - first + 1).clamp(0, count as i64);
        #[cfg(feature = "mutations")]
        if self.mutated(crate::group::GroupMutation::StampsFromLeftovers) {
            self.stamper.leftovers.extend(first + given..=last);
        }
        let still_leading = self.replica.leading_ballot() == Some(ballot);
        #[cfg(feature = "mutations")]
        let unchecked = self.mutated(crate::group::GroupMutation::LeasesUnchecked);
        #[cfg(not(feature = "mutations"))]
        let unchecked = false;
        for stamp in first..first + given {
            let Some(q) = self.stamper.queue.pop_front() else {
                break;
            };
            if !still_leading {
                // The stamps came for a leadership that ended: a local
                // write goes to the new leader unstamped, a forwarded
                // one is forwarded again by its node.
                if let Some(key) = q.local {
                    self.submit(key);
                }
                continue;
            }
            let named = q.leases.iter().copied();
            let stamped = with_stamp_and_leases(
                &q.command,
                stamp,
                named.filter(|l| unchecked || granted.live.contains(l)),
                Some(&granted.auth),
            );
            // Counted as proposed when queued.
            if self.replica.propose(stamped).is_err() {
                if let Some(key) = q.local {
                    self.submit(key);
                }
            }
        }
        if let Some(ballot) = self.replica.leading_ballot() {
            self.ask_stamps(ballot);
        }
    }

    /// Each tick: a question unanswered too long is forgotten; a replica
    /// that stopped leading hands its queue on; one that leads asks again.
    pub(crate) fn stamp_duties(&mut self) {
        if !self.config.stamped {
            return;
        }
        if let Some((_, _, _, at)) = self.stamper.asked {
            if self.now.0.saturating_sub(at.0) >= STAMP_QUESTION_MS {
                self.stamper.asked = None;
                self.stamper.starved_since.get_or_insert(at);
            }
        }
        match self.replica.leading_ballot() {
            Some(ballot) => {
                self.hand_over_if_starved();
                self.ask_stamps(ballot)
            }
            None => {
                self.stamper.asked = None;
                self.stamper.starved_since = None;
                for q in std::mem::take(&mut self.stamper.queue) {
                    if let Some(key) = q.local {
                        self.submit(key);
                    }
                }
            }
        }
    }

    /// Hands leadership to another voter once writes have starved for
    /// stamps `STAMP_STARVED_MS` (see there); a different voter each time.
    fn hand_over_if_starved(&mut self) {
        let Some(since) = self.stamper.starved_since else {
            return;
        };
        if self.stamper.queue.is_empty() {
            self.stamper.starved_since = None;
            return;
        }
        if self.now.0.saturating_sub(since.0) < STAMP_STARVED_MS {
            return;
        }
        let me = self.config.node;
        let Some(to) = self.another_voter(self.stamper.hand_overs) else {
            return;
        };
        self.stamper.hand_overs += 1;
        self.stamper.starved_since = None;
        let result = self.replica.transfer_leadership(to);
        tracing::info!(node = %me, %to, ?result, "no stamps for {STAMP_STARVED_MS} ms: leadership handed over");
    }

    /// A write of this node came back refused for a stale stamp: it is
    /// submitted again (under the same `(session, seq)`, which the store
    /// did not remember) rather than answered.
    pub(crate) fn restamp(
        &mut self,
        key: (u64, u64),
        outcome: &synod_proto::synodpb::Outcome,
    ) -> bool {
        let stale = matches!(
            &outcome.result,
            Some(synod_proto::synodpb::outcome::Result::Error(e))
                if matches!(synod_kv::outcome_error(e), KvError::StaleStamp { .. })
        );
        if stale && self.writes.contains_key(&key) {
            self.counters.restamped += 1;
            self.submit(key);
        }
        stale
    }

    /// Refuses a local write the leader could not queue.
    pub(crate) fn refuse_busy(&mut self, key: (u64, u64)) {
        if let Some(p) = self.writes.remove(&key) {
            if let Some(ticket) = p.ticket {
                let outcome = error_outcome(&KvError::TooManyRequests);
                self.answers.push((ticket, Answer::Write(outcome)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::etcdserverpb::PutRequest;
    use synod_proto::synodpb::command::Op;

    #[test]
    fn an_appended_stamp_decodes_as_the_commands_stamp() {
        let c = Command {
            client: 3,
            seq: 9,
            op: Some(Op::Put(PutRequest {
                key: "k".into(),
                value: "v".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let bytes = c.encode_to_vec();
        for stamp in [1, 127, 128, 1 << 40, i64::MAX] {
            let stamped = Command::decode(with_stamp(&bytes, stamp)).unwrap();
            assert_eq!(stamped.stamp, stamp);
            assert_eq!(
                Command {
                    stamp: 0,
                    ..stamped
                },
                c
            );
            let live = [1, 300, i64::MAX];
            let fence = AuthFence {
                enabled: true,
                revision: 1 << 33,
            };
            let with = with_stamp_and_leases(&bytes, stamp, live.into_iter(), Some(&fence));
            let with = Command::decode(with).unwrap();
            assert_eq!(
                (with.stamp, with.live_leases.as_slice(), with.auth_fence),
                (stamp, &live[..], Some(fence))
            );
        }
    }
}
