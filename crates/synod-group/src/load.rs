//! Splits by write load (issue 10): a shard whose leader applies more
//! writes a second than a threshold splits in two at the middle of the
//! keys written, so each half takes about half the load. Pure: the node
//! feeds it the keys its led shards write and asks it once a second.
//!
//! ```text
//!   applied writes of a led shard ─► record(group, keys): a count, and a
//!       uniform sample of the keys (at most LOAD_SAMPLE_MAX)
//!   once a second ─► due(now, writes/s): each shard at or over the rate,
//!       with the median of its sample ─► the node splits it there
//! ```
//!
//! A single hot key is the median of its own sample: the split puts it at
//! the start of the right half, which can then not split at it again
//! (a split point lies strictly inside its shard), so load on one key
//! never splits a shard over and over.

use bytes::Bytes;
use std::collections::BTreeMap;
use synod_paxos::Time;

/// Keys kept per shard and window to choose the split point from.
pub const LOAD_SAMPLE_MAX: usize = 256;
/// The shortest window a rate is judged over (ms).
pub const LOAD_WINDOW_MS: u64 = 1_000;

/// The writes of the shards a node leads, counted and sampled over the
/// current window.
#[derive(Debug, Default)]
pub struct LoadSplitter {
    window: BTreeMap<u64, Load>,
    since: Option<Time>,
    /// xorshift state for the reservoir (any fixed seed: determinism).
    rng: u64,
}

#[derive(Debug, Default)]
struct Load {
    writes: u64,
    sample: Vec<Bytes>,
}

impl LoadSplitter {
    /// Counts the writes of `keys` to shard `group` (one per key) and
    /// keeps each in the sample with equal chance (reservoir sampling).
    pub fn record<'a>(&mut self, group: u64, keys: impl IntoIterator<Item = &'a Bytes>) {
        let load = self.window.entry(group).or_default();
        for key in keys {
            load.writes += 1;
            if load.sample.len() < LOAD_SAMPLE_MAX {
                load.sample.push(key.clone());
                continue;
            }
            // xorshift64 (never seeded to 0).
            let mut x = self.rng.max(1);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.rng = x;
            let slot = x % load.writes;
            if let Some(kept) = load.sample.get_mut(slot as usize) {
                *kept = key.clone();
            }
        }
    }

    /// The shards whose writes in the window that ends at `now` reached
    /// `writes_per_s` a second, each with the median key of its sample
    /// (one with fewer than two sampled keys has none); starts the next
    /// window. Nothing until a window of `LOAD_WINDOW_MS` has passed.
    pub fn due(&mut self, now: Time, writes_per_s: u64) -> Vec<(u64, Bytes)> {
        let Some(since) = self.since else {
            self.since = Some(now);
            self.window.clear();
            return Vec::new();
        };
        let elapsed = now.0.saturating_sub(since.0);
        if elapsed < LOAD_WINDOW_MS {
            return Vec::new();
        }
        self.since = Some(now);
        let mut due = Vec::new();
        for (group, mut load) in std::mem::take(&mut self.window) {
            let rate = load.writes.saturating_mul(1_000) / elapsed;
            if writes_per_s == 0 || rate < writes_per_s || load.sample.len() < 2 {
                continue;
            }
            load.sample.sort_unstable();
            let median = load.sample.swap_remove(load.sample.len() / 2);
            due.push((group, median));
        }
        due
    }

    /// Forgets a shard's window (it split, or this node stopped leading
    /// it).
    pub fn forget(&mut self, group: u64) {
        self.window.remove(&group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(range: std::ops::Range<u32>) -> Vec<Bytes> {
        range.map(|i| Bytes::from(format!("k{i:05}"))).collect()
    }

    #[test]
    fn a_shard_over_the_rate_splits_at_the_middle_of_its_writes() {
        let mut l = LoadSplitter::default();
        assert!(
            l.due(Time(0), 100).is_empty(),
            "the first call starts a window"
        );
        // 3,000 writes in 1.5 s to shard 2 (k00000..k02999, in chunks);
        // 100 to shard 3.
        for chunk in keys(0..10_000).chunks(10).take(300) {
            l.record(2, chunk);
        }
        l.record(3, &keys(0..100));
        assert!(l.due(Time(999), 100).is_empty(), "the window is not over");
        let due = l.due(Time(1_500), 1_000);
        assert_eq!(due.len(), 1, "{due:?}");
        let (group, at) = &due[0];
        assert_eq!(*group, 2);
        // The sample is uniform over every key written: its median lies
        // near the middle of the 3,000.
        let at: u32 = std::str::from_utf8(&at[1..]).unwrap().parse().unwrap();
        assert!((900..2_100).contains(&at), "median {at}");
        // The next window starts empty.
        assert!(l.due(Time(2_600), 1).is_empty());
    }

    #[test]
    fn one_hot_key_splits_at_itself_and_no_threshold_splits_nothing() {
        let mut l = LoadSplitter::default();
        l.due(Time(0), 1);
        let hot = Bytes::from_static(b"hot");
        l.record(5, std::iter::repeat_n(&hot, 5_000));
        assert_eq!(l.due(Time(1_000), 1_000), vec![(5, hot.clone())]);
        l.record(5, std::iter::repeat_n(&hot, 5_000));
        assert!(l.due(Time(2_000), 0).is_empty(), "0 turns load splits off");
        // Fewer than two sampled keys: nothing to choose.
        l.record(6, std::iter::once(&hot));
        assert!(l.due(Time(3_000), 1).is_empty());
    }
}
