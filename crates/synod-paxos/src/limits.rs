//! Bounds on what a replica takes from its peers, and the counters that make
//! every refusal observable.
//!
//! Paxos tolerates lost messages, so refusing a message (or the tail of one)
//! is always safe: it is the same as the network dropping it. What these
//! bounds buy is that no peer message, however extreme, can make a replica
//! allocate without bound, overflow an integer, panic, or wedge itself. They
//! are sized so that a correct peer never hits them (see each constant).

use crate::message::{Message, SlotRecord};
use crate::types::{Slot, Value};

/// The most slots one `Accept`, `Learn` or `Promise` may carry; a message
/// with more is refused whole.
///
/// A correct replica never sends more: a leader has at most
/// `window_slots_max` slots open (a takeover defers the rest), a catch-up
/// `Learn` carries at most `catchup_slots_max`, both at most
/// [`WINDOW_SLOTS_LIMIT`], and a promise reports at most
/// [`CANDIDATE_LAG_MAX`] chosen slots the candidate misses plus what the
/// acceptor stores past its own commit point (at most
/// `SLOTS_AHEAD_WINDOWS * WINDOW_SLOTS_LIMIT`).
pub const MESSAGE_SLOTS_MAX: u64 = 65_536;

/// The largest `window_slots_max` and `catchup_slots_max` a configuration may
/// set, so that every bound derived from them stays below
/// [`MESSAGE_SLOTS_MAX`].
pub const WINDOW_SLOTS_LIMIT: u64 = 2_048;

/// A replica stores accepted or learned slots at most this many windows
/// (`max(window_slots_max, catchup_slots_max)`) past its commit point, and
/// drops the rest of the message (see `Config::slots_ahead_max`).
///
/// A leader has at most one window open past its own commit point, and a
/// follower that keeps up is at most about one window behind that (it learns
/// the commit point from the next accept), so two windows suffice. Sixteen
/// let a follower that fell behind (a pause, a restart under load) go on
/// storing new slots, and so count in the leader's quorums, while `Learn`
/// fills its gap: with fewer, under steady load, catch-up at
/// `catchup_slots_max` per round trip races a leader that chooses up to
/// `window_slots_max` per round trip. The cost is bounded: at most
/// `16 * WINDOW_SLOTS_LIMIT` empty log entries. A
/// follower further behind is caught up by `Learn` (in batches of
/// `catchup_slots_max`) or a snapshot first, and accepts the leader's newest
/// slots when they are retransmitted, so it never allocates one entry per
/// missed slot at once.
pub const SLOTS_AHEAD_WINDOWS: u64 = 16;

/// An acceptor refuses to promise a candidate whose commit point lies more
/// than this many slots behind its own, as it already refuses one behind its
/// snapshot: its promise would have to report every chosen slot in between,
/// in one message. The most advanced live voter is never refused for this,
/// so some live voter can always lead, and the leader catches the lagging
/// one up.
pub const CANDIDATE_LAG_MAX: u64 = MESSAGE_SLOTS_MAX - SLOTS_AHEAD_WINDOWS * WINDOW_SLOTS_LIMIT;

/// The highest ballot round a replica takes from a message; a message whose
/// ballot (or reported promise) has a higher round is refused whole.
///
/// Rounds grow by one per campaign, and probing keeps a cut-off replica from
/// raising them, so a correct group never gets near this. Without the bound,
/// a single message with round `u64::MAX` would make `round + 1` overflow, or
/// leave this replica unable to pick a higher ballot ever again. Half the
/// range leaves any number of campaigns' headroom above an accepted round.
/// (A peer that deliberately sends rounds just below the bound can still
/// exhaust the rounds of a crash-fault-tolerant protocol; this bound stops
/// overflow and absurd values, not a Byzantine peer.)
pub const ROUND_MAX: u64 = u64::MAX / 2;

const _: () = assert!(SLOTS_AHEAD_WINDOWS * WINDOW_SLOTS_LIMIT < MESSAGE_SLOTS_MAX);
const _: () = assert!(CANDIDATE_LAG_MAX >= WINDOW_SLOTS_LIMIT);
// Every voter that acknowledged the newest chosen slot stores at most this
// far past its commit point, so some live voter is always within
// CANDIDATE_LAG_MAX of every other's commit point and can be promised.
const _: () = assert!(CANDIDATE_LAG_MAX >= SLOTS_AHEAD_WINDOWS * WINDOW_SLOTS_LIMIT);
const _: () = assert!(ROUND_MAX < u64::MAX);

/// How many peer messages (or parts of them) a replica refused, by reason;
/// see [`Replica::refused`](crate::Replica::refused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// Messages whose ballot round (or reported promise) exceeds
    /// [`ROUND_MAX`].
    pub absurd_round: u64,
    /// Messages whose slots cannot exist (slot 0, a range past `u64::MAX`),
    /// that carry more than [`MESSAGE_SLOTS_MAX`] slots, that carry a
    /// membership entry that fails validation, or that propose (probe,
    /// prepare, accept, hand over) in the receiver's own ballot (its own
    /// are delivered locally, never through the network).
    pub malformed: u64,
    /// Accepted or learned slots dropped because they lie more than
    /// `Config::slots_ahead_max` past the commit point (counted per slot).
    pub slots_ahead: u64,
    /// Promises not counted because they report slots more than
    /// [`MESSAGE_SLOTS_MAX`] past the candidate's commit point.
    pub promise_range: u64,
    /// Prepares not promised because the promise would report more than
    /// [`MESSAGE_SLOTS_MAX`] slots.
    pub promise_size: u64,
    /// Learned or reported chosen values that contradict a value already
    /// known chosen for the slot (only a broken or hostile peer sends them).
    pub conflicting_chosen: u64,
}

/// True when `first .. first + len` is a range of real slots: none is slot 0
/// and none lies past `u64::MAX`. An empty range is always fine.
pub(crate) fn slot_range_ok(first: Slot, len: u64) -> bool {
    len == 0 || (first.0 >= 1 && first.0.checked_add(len - 1).is_some())
}

/// True when `value` is not a membership entry, or one that validates.
fn value_ok<C>(value: &Value<C>) -> bool {
    value.configuration().is_none_or(|c| c.validate().is_ok())
}

fn values_ok<C>(first: Slot, values: &[Value<C>]) -> bool {
    let len = values.len() as u64;
    len <= MESSAGE_SLOTS_MAX && slot_range_ok(first, len) && values.iter().all(value_ok)
}

fn records_ok<C>(records: &[SlotRecord<C>]) -> bool {
    records.len() as u64 <= MESSAGE_SLOTS_MAX
        && records.iter().all(|r| r.slot.0 >= 1 && value_ok(&r.value))
}

/// Why a message is refused before any handler sees it, if it is.
pub(crate) enum Verdict {
    Admit,
    AbsurdRound,
    Malformed,
}

/// Checks what can be checked of `message` without the replica's state.
pub(crate) fn judge<C>(message: &Message<C>) -> Verdict {
    let reported = match message {
        Message::ProbeReply { promised, .. } | Message::Reject { promised, .. } => promised.round,
        _ => 0,
    };
    if message.ballot().round > ROUND_MAX || reported > ROUND_MAX {
        return Verdict::AbsurdRound;
    }
    let ok = match message {
        Message::Accept { first, values, .. } | Message::Learn { first, values, .. } => {
            values_ok(*first, values)
        }
        Message::Promise { accepted, .. } => records_ok(accepted),
        Message::Accepted { first, count, .. } => {
            *count <= MESSAGE_SLOTS_MAX && slot_range_ok(*first, *count)
        }
        _ => true,
    };
    if ok {
        Verdict::Admit
    } else {
        Verdict::Malformed
    }
}
