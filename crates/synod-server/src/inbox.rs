//! The core loop's input queue, with a bound per class of sender.
//!
//! ```text
//!   clients (gRPC handlers) ──client()──┐  refused past CLIENT_INPUTS_MAX
//!   peers (stream readers)  ──peer()────┼─► one FIFO ─► core loop ─► taken()
//!   hub, node itself        ──internal()┘  never refused (bounded by design)
//! ```
//!
//! One FIFO keeps the order between inputs (a watch cancel cannot overtake
//! its create), while the counters keep an overloaded node from growing
//! without bound: clients get etcd's "too many requests" at once instead of
//! a timeout after their request sat in memory, and peer batches past the
//! bound are dropped (Paxos retransmits). Client and peer inputs are counted
//! apart so that a flood of client requests never starves the messages the
//! cluster needs to make progress.

use crate::core::Input;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// Client inputs (writes, reads, watch creates, lease questions) queued
/// before new ones are refused. At 64 clients per node a queue this deep
/// is never reached; it bounds what a flood of clients can pile up.
pub const CLIENT_INPUTS_MAX: usize = 8192;
/// Peer batches queued before new ones are dropped: a peer sends at most
/// `PEER_QUEUE_MAX` batches ahead, so this allows several busy peers.
pub const PEER_INPUTS_MAX: usize = 4 * crate::transport::PEER_QUEUE_MAX;

/// Why an input was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many inputs of this class are waiting.
    Full,
    /// The core loop is gone.
    Stopped,
}

/// Who sent an input, for the bound it counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A client request through a front end.
    Client,
    /// A batch from a peer.
    Peer,
    /// The node's own work (hub resyncs, membership, shutdown).
    Internal,
}

#[derive(Default)]
struct Counts {
    clients: AtomicUsize,
    peers: AtomicUsize,
}

impl Counts {
    fn of(&self, class: Class) -> Option<(&AtomicUsize, usize)> {
        match class {
            Class::Client => Some((&self.clients, CLIENT_INPUTS_MAX)),
            Class::Peer => Some((&self.peers, PEER_INPUTS_MAX)),
            Class::Internal => None,
        }
    }
}

/// The sending side of the core's queue; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    tx: Sender<Input>,
    counts: Arc<Counts>,
}

/// The core's side: tells the inbox an input left the queue.
#[derive(Clone)]
pub struct Outbox {
    counts: Arc<Counts>,
}

/// A queue for the core loop; the receiver goes to the core.
pub fn channel() -> (Inbox, Outbox, std::sync::mpsc::Receiver<Input>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let counts = Arc::new(Counts::default());
    let outbox = Outbox {
        counts: counts.clone(),
    };
    (Inbox { tx, counts }, outbox, rx)
}

impl Inbox {
    /// Queues `input`, unless its class is at its bound.
    pub fn send(&self, input: Input) -> Result<(), Refused> {
        let class = input.class();
        if let Some((count, max)) = self.counts.of(class) {
            // Reserve first, so concurrent senders cannot overshoot.
            if count.fetch_add(1, Ordering::AcqRel) >= max {
                count.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::Full);
            }
        }
        self.tx.send(input).map_err(|_| {
            if let Some((count, _)) = self.counts.of(class) {
                count.fetch_sub(1, Ordering::AcqRel);
            }
            Refused::Stopped
        })
    }

    /// The raw sender, for the hub (its inputs are internal).
    pub fn sender(&self) -> Sender<Input> {
        self.tx.clone()
    }
}

impl Outbox {
    /// Called by the core for every input it took off the queue.
    pub fn taken(&self, input: &Input) {
        if let Some((count, _)) = self.counts.of(input.class()) {
            let before = count.fetch_sub(1, Ordering::AcqRel);
            assert!(
                before > 0,
                "{:?} input taken that was never counted",
                input.class()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> Input {
        Input::Query(Box::new(|_| {}))
    }

    #[test]
    fn clients_are_refused_at_the_bound_and_admitted_once_the_core_takes_one() {
        let (inbox, outbox, rx) = channel();
        for _ in 0..CLIENT_INPUTS_MAX {
            inbox.send(query()).unwrap();
        }
        assert_eq!(inbox.send(query()), Err(Refused::Full));
        // Internal inputs are never refused: shutdown must get through.
        inbox.send(Input::Shutdown).unwrap();
        let first = rx.recv().unwrap();
        outbox.taken(&first);
        inbox.send(query()).unwrap();
        assert_eq!(inbox.send(query()), Err(Refused::Full));
        drop(rx);
        assert_eq!(inbox.send(Input::Shutdown), Err(Refused::Stopped));
    }
}
