//! The simulated network between replicas: per-message delay (so messages
//! reorder), loss, duplication, and directed link cuts for symmetric and
//! asymmetric partitions.

use crate::config::{Micros, MS};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use synod_paxos::NodeId;

/// Fault settings in force; the nemesis changes them during a run.
#[derive(Clone, Debug, Default)]
pub struct Network {
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Probability a message takes a long detour (reordering).
    pub slow: f64,
    /// Directed links that drop everything: `(from, to)`.
    pub cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// The delivery delays for one message sent `from → to`: empty when it
    /// is lost, two entries when duplicated.
    pub fn deliveries(&self, from: NodeId, to: NodeId, rng: &mut ChaCha8Rng) -> Vec<Micros> {
        if self.cut.contains(&(from, to)) || rng.gen_bool(self.loss) {
            return Vec::new();
        }
        let copies = if rng.gen_bool(self.duplicate) { 2 } else { 1 };
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    fn delay(&self, rng: &mut ChaCha8Rng) -> Micros {
        if rng.gen_bool(self.slow) {
            rng.gen_range(5 * MS..200 * MS)
        } else {
            rng.gen_range(50..2 * MS)
        }
    }

    /// Cuts every link between `side` and the rest, both ways.
    pub fn partition(&mut self, side: &[NodeId], all: &[NodeId]) {
        for &a in all {
            for &b in all {
                if side.contains(&a) != side.contains(&b) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    /// Back to a perfect network.
    pub fn heal(&mut self) {
        *self = Network::default();
    }
}
