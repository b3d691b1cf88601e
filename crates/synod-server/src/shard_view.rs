//! The node's current shard map, shared between the core loop (which
//! changes it when a split applies or a snapshot shrinks a shard) and the
//! router on the client tasks (which reads it per request). Design 0016.
//!
//! The map is what this node's own replicas hold: a node that has not
//! applied a split yet routes by the old map, and the shard refuses the
//! keys it no longer holds (`WRONG_SHARD`) when the request applies; the
//! router then reads the map again and retries.

use crate::shards::ShardMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The shard map as this node's replicas hold it now.
#[derive(Debug)]
pub struct ShardView {
    map: RwLock<Arc<ShardMap>>,
    /// Bumped on every change, so a router can tell a new map from the
    /// one it routed by.
    version: AtomicU64,
}

impl ShardView {
    /// The view of a node that starts with `map`.
    pub fn new(map: ShardMap) -> ShardView {
        ShardView {
            map: RwLock::new(Arc::new(map)),
            version: AtomicU64::new(1),
        }
    }

    /// The map now.
    pub fn get(&self) -> Arc<ShardMap> {
        Arc::clone(&self.map.read().expect("shard map lock"))
    }

    /// How many times the map changed since start (1 at start).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Replaces the map when it changed.
    pub(crate) fn set(&self, map: ShardMap) {
        let mut held = self.map.write().expect("shard map lock");
        if **held != map {
            *held = Arc::new(map);
            self.version.fetch_add(1, Ordering::AcqRel);
        }
    }
}
