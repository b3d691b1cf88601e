//! The shard map: which group owns which keys (issue 10, design 0015).
//! Pure, so the node and the simulator route with the same code.
//!
//! ```text
//!   split points  s1 < s2 < ... < sn
//!   shards        ["", s1)  [s1, s2)  ...  [sn, ∞)
//!   groups        2         3              n + 2       (group 1 is the meta group)
//! ```
//!
//! Pure: routing decisions only, no I/O. A request whose keys lie in one
//! shard goes to that shard's group whole; a range over several is cut at
//! the split points, one piece per shard.

use bytes::Bytes;
use synod_kv::KeyRange;
use synod_proto::etcdserverpb::range_request::SortTarget;
use synod_proto::etcdserverpb::request_op::Request as TxnOp;
use synod_proto::etcdserverpb::{
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest,
};
use synod_proto::synodpb::command::Op;

/// The most split points a cluster may be started with.
pub const SPLITS_MAX: usize = 1_024;
/// The longest split point, in bytes (etcd keys are at most 1.5 MiB, but
/// a split point is a boundary, not data).
pub const SPLIT_BYTES_MAX: usize = 4_096;
/// The first data shard's group; group 1 is the meta group.
pub const FIRST_SHARD: u64 = 2;

/// The key space cut into shards, each a group: at fixed points when the
/// cluster starts, and further by splits (design 0016).
///
/// Invariant: `shards` is in strictly increasing key order of the starts,
/// the first start is the empty key, and no group appears twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    shards: Vec<(Bytes, u64)>,
}

/// Why split points were refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SplitError {
    /// Too many split points.
    TooMany(usize),
    /// A split point is empty (the first shard starts at the empty key
    /// already).
    Empty,
    /// A split point (its position, from 1) is too long.
    TooLong(usize),
    /// The split points are not strictly increasing.
    Unordered(String, String),
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitError::TooMany(n) => write!(f, "at most {SPLITS_MAX} split points, not {n}"),
            SplitError::Empty => f.write_str("a split point may not be empty"),
            SplitError::TooLong(i) => {
                write!(f, "split point {i} is longer than {SPLIT_BYTES_MAX} bytes")
            }
            SplitError::Unordered(a, b) => write!(
                f,
                "split points must be strictly increasing: {a:?} is not above {b:?}"
            ),
        }
    }
}

impl std::error::Error for SplitError {}

impl ShardMap {
    /// The map a cluster starts with, cut at `splits`; refuses points
    /// that are empty, too long, too many or not strictly increasing.
    pub fn new(splits: Vec<Bytes>) -> Result<ShardMap, SplitError> {
        if splits.len() > SPLITS_MAX {
            return Err(SplitError::TooMany(splits.len()));
        }
        for (i, s) in splits.iter().enumerate() {
            if s.is_empty() {
                return Err(SplitError::Empty);
            }
            if s.len() > SPLIT_BYTES_MAX {
                return Err(SplitError::TooLong(i + 1));
            }
            if i > 0 && splits[i - 1] >= *s {
                let show = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
                return Err(SplitError::Unordered(show(s), show(&splits[i - 1])));
            }
        }
        let shards = std::iter::once(Bytes::new())
            .chain(splits)
            .enumerate()
            .map(|(i, start)| (start, FIRST_SHARD + i as u64))
            .collect();
        Ok(ShardMap { shards })
    }

    /// A map from each shard's start and group (as the node's shards
    /// record them after splits), sorted here; `None` unless the starts
    /// are distinct, one is the empty key, and no group repeats.
    pub fn from_starts(mut shards: Vec<(Bytes, u64)>) -> Option<ShardMap> {
        shards.sort();
        let distinct = shards.windows(2).all(|w| w[0].0 < w[1].0);
        let mut groups: Vec<u64> = shards.iter().map(|(_, g)| *g).collect();
        groups.sort_unstable();
        groups.dedup();
        let whole = shards.first().is_some_and(|(s, _)| s.is_empty());
        (distinct && whole && groups.len() == shards.len()).then_some(ShardMap { shards })
    }

    /// The map a node's replicas describe (design 0016): each shard from
    /// the range its store records; one that holds no state yet (`None`:
    /// a snapshot is on its way) from the end of the shard that names it
    /// as its right neighbour. `None` when they do not tile the key space
    /// (a bug: a node's shards never overlap).
    pub fn from_replicas<'a>(
        replicas: impl IntoIterator<Item = (u64, Option<&'a synod_kv::Shard>)>,
    ) -> Option<ShardMap> {
        // (start, group, end when the store records it).
        let mut shards: Vec<(Bytes, u64, Option<Option<Bytes>>)> = Vec::new();
        let mut named = std::collections::BTreeMap::new();
        let mut empty = Vec::new();
        for (group, shard) in replicas {
            match shard {
                Some(s) => {
                    shards.push((s.start.clone(), group, Some(s.end.clone())));
                    if let (r, Some(end)) = (s.right, &s.end) {
                        if r != 0 {
                            named.insert(r, end.clone());
                        }
                    }
                }
                None => empty.push(group),
            }
        }
        for group in empty {
            if let Some(start) = named.get(&group) {
                shards.push((start.clone(), group, None));
            }
        }
        shards.sort();
        // Each recorded end is where the next shard starts (no overlap,
        // no gap), and only the last shard has none.
        for (i, (_, _, end)) in shards.iter().enumerate() {
            let next = shards.get(i + 1).map(|(s, _, _)| s.clone());
            if end.as_ref().is_some_and(|end| *end != next) {
                return None;
            }
        }
        ShardMap::from_starts(shards.into_iter().map(|(s, g, _)| (s, g)).collect())
    }

    /// Whether `shard`, the range a snapshot of group `group` carries,
    /// overlaps a range another of the node's `replicas` holds: a shard
    /// hosted empty (design 0019) whose snapshot came before this node's
    /// replica of its parent applied the split. Installing it would have
    /// two of the node's shards own the same keys; it waits until the
    /// parent catches up (the split then hands it its state, or the
    /// parent's own snapshot shrinks it and the next one installs).
    pub fn overlaps<'a>(
        group: u64,
        shard: &synod_kv::Shard,
        replicas: impl IntoIterator<Item = (u64, Option<&'a synod_kv::Shard>)>,
    ) -> bool {
        replicas.into_iter().any(|(id, other)| {
            other.is_some_and(|o| {
                id != group
                    && o.end.as_ref().is_none_or(|e| *e > shard.start)
                    && shard.end.as_ref().is_none_or(|e| *e > o.start)
            })
        })
    }

    /// The groups `replicas` name as their right neighbours that are not
    /// among them: shards made by splits the node learned of by a
    /// snapshot, which it must host (empty, until their own snapshot).
    pub fn unknown_neighbours<'a>(
        replicas: impl IntoIterator<Item = (u64, Option<&'a synod_kv::Shard>)>,
    ) -> Vec<u64> {
        let replicas: Vec<(u64, Option<&synod_kv::Shard>)> = replicas.into_iter().collect();
        let mut unknown: Vec<u64> = replicas
            .iter()
            .filter_map(|(_, s)| Some(s.as_ref()?.right))
            .filter(|r| *r != 0 && !replicas.iter().any(|(g, _)| g == r))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        unknown
    }

    /// The points where shards start, but the first (the empty key).
    pub fn splits(&self) -> Vec<Bytes> {
        self.shards[1..].iter().map(|(s, _)| s.clone()).collect()
    }

    /// How many shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Every shard's group, in key order.
    pub fn groups(&self) -> impl Iterator<Item = u64> + '_ {
        self.shards.iter().map(|(_, g)| *g)
    }

    /// Whether `group` is one of the shards.
    pub fn is_shard(&self, group: u64) -> bool {
        self.shards.iter().any(|(_, g)| *g == group)
    }

    fn group(&self, i: usize) -> u64 {
        self.shards[i].1
    }

    /// The shard holding `key`.
    fn index_of(&self, key: &[u8]) -> usize {
        self.shards.partition_point(|(s, _)| s.as_ref() <= key) - 1
    }

    /// The group owning `key`.
    pub fn group_of(&self, key: &[u8]) -> u64 {
        self.group(self.index_of(key))
    }

    /// The keys shard `i` owns.
    pub fn span(&self, i: usize) -> KeyRange {
        KeyRange::Span {
            start: self.shards[i].0.clone(),
            end: self.shards.get(i + 1).map(|(s, _)| s.clone()),
        }
    }

    /// The detaches the revocations still need (design 0017): for each
    /// shard of this map, the revoking leases it has not been reported
    /// clean of, at most `max` per shard, one command's worth. The same
    /// for the node and the simulator, which carry them out.
    pub fn detaches(
        &self,
        revoking: &std::collections::BTreeMap<i64, synod_kv::revoking::Covered>,
        max: usize,
    ) -> std::collections::BTreeMap<u64, Vec<i64>> {
        let mut work = std::collections::BTreeMap::new();
        for (i, (start, group)) in self.shards.iter().enumerate() {
            let shard = synod_kv::Shard::new(
                start.clone(),
                self.shards.get(i + 1).map(|(s, _)| s.clone()),
            );
            let leases: Vec<i64> = revoking
                .iter()
                .filter(|(_, covered)| !covered.covers(&shard))
                .map(|(lease, _)| *lease)
                .take(max)
                .collect();
            if !leases.is_empty() {
                work.insert(*group, leases);
            }
        }
        work
    }

    /// `range` cut at the shards' starts: each shard it touches with the
    /// part of it that shard owns, in key order. An empty range goes to
    /// the shard of its start (it answers with nothing).
    pub fn cut(&self, range: &KeyRange) -> Vec<(u64, KeyRange)> {
        let (start, end) = match range {
            KeyRange::Single(k) => return vec![(self.group_of(k), range.clone())],
            KeyRange::Span { start, end } => (start, end),
        };
        let first = self.index_of(start);
        let last = match end {
            _ if range.is_empty() => first,
            None => self.len() - 1,
            Some(e) => self.shards.partition_point(|(s, _)| s < e) - 1,
        };
        (first..=last)
            .map(|i| {
                let piece = KeyRange::Span {
                    start: if i == first {
                        start.clone()
                    } else {
                        self.shards[i].0.clone()
                    },
                    end: if i == last {
                        end.clone()
                    } else {
                        Some(self.shards[i + 1].0.clone())
                    },
                };
                (self.group(i), piece)
            })
            .collect()
    }

    /// The one shard every key `op` names lies in, or `None` when they lie
    /// in several. `None` also for ops that are not the key space's
    /// (leases, members, auth: the meta group's).
    pub fn owner(&self, op: &Op) -> Option<u64> {
        let mut groups = Vec::new();
        match op {
            Op::Put(r) => return Some(self.group_of(&r.key)),
            Op::DeleteRange(r) => {
                groups.extend(self.cut(&KeyRange::from_etcd(&r.key, &r.range_end)))
            }
            Op::Txn(t) => self.txn_ranges(t, &mut groups),
            _ => return None,
        }
        let first = groups.first()?.0;
        groups.iter().all(|(g, _)| *g == first).then_some(first)
    }

    fn txn_ranges(&self, t: &TxnRequest, out: &mut Vec<(u64, KeyRange)>) {
        for c in &t.compare {
            out.extend(self.cut(&KeyRange::from_etcd(&c.key, &c.range_end)));
        }
        for op in t.success.iter().chain(&t.failure) {
            self.op_ranges(op, out);
        }
    }

    fn op_ranges(&self, op: &RequestOp, out: &mut Vec<(u64, KeyRange)>) {
        match &op.request {
            Some(TxnOp::RequestRange(r)) => {
                out.extend(self.cut(&KeyRange::from_etcd(&r.key, &r.range_end)))
            }
            Some(TxnOp::RequestPut(r)) => out.push((self.group_of(&r.key), KeyRange::all())),
            Some(TxnOp::RequestDeleteRange(r)) => {
                out.extend(self.cut(&KeyRange::from_etcd(&r.key, &r.range_end)))
            }
            Some(TxnOp::RequestTxn(t)) => self.txn_ranges(t, out),
            None => {}
        }
    }
}

/// A piece of a range as etcd names it: `(key, range_end)`.
pub fn to_etcd(range: &KeyRange) -> (Bytes, Bytes) {
    match range {
        KeyRange::Single(k) => (k.clone(), Bytes::new()),
        KeyRange::Span {
            start,
            end: Some(e),
        } => (start.clone(), e.clone()),
        KeyRange::Span { start, end: None } => (start.clone(), Bytes::from_static(&[0])),
    }
}

/// `request` narrowed to one shard's piece of its keys; with `keys_only`
/// and a sort by value, the piece asks for values (they order the parts
/// together) and `merge` strips them.
pub fn piece(request: &RangeRequest, keys: &KeyRange) -> RangeRequest {
    let (key, range_end) = to_etcd(keys);
    RangeRequest {
        key,
        range_end,
        keys_only: request.keys_only && request.sort_target != SortTarget::Value as i32,
        ..request.clone()
    }
}

/// The answers of a range's pieces, in key order of the pieces, as one
/// answer to `request` at `revision`: sorted as asked, cut at its limit,
/// counts summed.
pub fn merge(request: &RangeRequest, parts: Vec<RangeResponse>, revision: i64) -> RangeResponse {
    let mut more = false;
    let mut count = 0;
    let mut kvs = Vec::new();
    for p in parts {
        more |= p.more;
        count += p.count;
        kvs.extend(p.kvs);
    }
    synod_kv::sort_as_requested(&mut kvs, request);
    let limit = usize::try_from(request.limit).unwrap_or(0);
    if limit > 0 && kvs.len() > limit {
        kvs.truncate(limit);
        more = true;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    RangeResponse {
        header: Some(ResponseHeader {
            revision,
            ..ResponseHeader::default()
        }),
        kvs,
        more,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::etcdserverpb::{Compare, PutRequest};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn map() -> ShardMap {
        ShardMap::new(vec![b("g"), b("p")]).unwrap()
    }

    fn span(s: &str, e: Option<&str>) -> KeyRange {
        KeyRange::Span {
            start: b(s),
            end: e.map(b),
        }
    }

    #[test]
    fn a_snapshot_over_a_range_another_replica_holds_overlaps() {
        let shard = |s: &str, e: Option<&str>, epoch| synod_kv::Shard {
            start: b(s),
            end: e.map(b),
            right: 0,
            epoch,
        };
        // The parent here still holds everything; the child's snapshot
        // holds [k3, ∞): it waits.
        let parent = shard("", None, 0);
        let child = shard("k3", None, 1);
        let blank: Option<&synod_kv::Shard> = None;
        assert!(ShardMap::overlaps(
            68,
            &child,
            [(2, Some(&parent)), (68, blank)]
        ));
        // Once the parent applied the split, it fits beside it.
        let parent = shard("", Some("k3"), 1);
        assert!(!ShardMap::overlaps(
            68,
            &child,
            [(2, Some(&parent)), (68, blank)]
        ));
        // A replica's own older range does not count.
        let old = shard("k3", None, 0);
        assert!(!ShardMap::overlaps(
            68,
            &child,
            [(2, Some(&parent)), (68, Some(&old))]
        ));
        // Ranges that only touch at an end do not overlap.
        let left = shard("a", Some("k3"), 2);
        assert!(!ShardMap::overlaps(68, &child, [(5, Some(&left))]));
        let inside = shard("k4", Some("k5"), 2);
        assert!(ShardMap::overlaps(68, &child, [(5, Some(&inside))]));
    }

    #[test]
    fn detaches_name_the_shards_not_yet_reported_clean() {
        let m = map();
        let mut revoking = std::collections::BTreeMap::new();
        let mut covered = synod_kv::revoking::Covered::default();
        covered.add(b("g"), Some(b("p")));
        revoking.insert(7, covered);
        revoking.insert(9, Default::default());
        let work = |m: &ShardMap, max| m.detaches(&revoking, max).into_iter().collect::<Vec<_>>();
        assert_eq!(
            work(&m, 100),
            vec![(2, vec![7, 9]), (3, vec![9]), (4, vec![7, 9])]
        );
        assert_eq!(work(&m, 1), vec![(2, vec![7]), (3, vec![9]), (4, vec![7])]);
        // A shard that split after it reported: both halves are covered.
        let split = ShardMap::new(vec![b("g"), b("k"), b("p")]).unwrap();
        assert_eq!(
            work(&split, 100),
            vec![(2, vec![7, 9]), (3, vec![9]), (4, vec![9]), (5, vec![7, 9])]
        );
    }

    #[test]
    fn keys_go_to_the_shard_whose_span_holds_them() {
        let m = map();
        assert_eq!(m.group_of(b""), 2);
        assert_eq!(m.group_of(b"a"), 2);
        assert_eq!(m.group_of(b"g"), 3);
        assert_eq!(m.group_of(b"o\xff"), 3);
        assert_eq!(m.group_of(b"p"), 4);
        assert_eq!(m.group_of(b"\xff\xff"), 4);
        for (i, g) in m.groups().enumerate() {
            assert!(m.span(i).contains(b"p") == (g == 4));
            assert!(m.is_shard(g));
        }
        assert!(!m.is_shard(1));
    }

    #[test]
    fn a_range_is_cut_at_the_split_points() {
        let m = map();
        assert_eq!(
            m.cut(&span("c", Some("h"))),
            vec![(2, span("c", Some("g"))), (3, span("g", Some("h")))]
        );
        assert_eq!(
            m.cut(&span("\0", None)),
            vec![
                (2, span("\0", Some("g"))),
                (3, span("g", Some("p"))),
                (4, span("p", None))
            ]
        );
        // An end at a split point does not reach the next shard.
        assert_eq!(
            m.cut(&span("a", Some("g"))),
            vec![(2, span("a", Some("g")))]
        );
        // Empty ranges stay whole.
        assert_eq!(
            m.cut(&span("z", Some("a"))),
            vec![(4, span("z", Some("a")))]
        );
        assert_eq!(to_etcd(&span("p", None)), (b("p"), b("\0")));
    }

    #[test]
    fn a_txn_has_an_owner_only_when_every_key_is_in_one_shard() {
        let m = map();
        let put = |k: &str| RequestOp {
            request: Some(TxnOp::RequestPut(PutRequest {
                key: b(k),
                ..Default::default()
            })),
        };
        let txn = |keys: &[&str]| {
            Op::Txn(TxnRequest {
                compare: vec![Compare {
                    key: b(keys[0]),
                    ..Default::default()
                }],
                success: keys[1..].iter().map(|k| put(k)).collect(),
                ..Default::default()
            })
        };
        assert_eq!(m.owner(&txn(&["a", "b", "c"])), Some(2));
        assert_eq!(m.owner(&txn(&["a", "h"])), None);
        assert_eq!(m.owner(&txn(&["q", "z"])), Some(4));
    }

    #[test]
    fn replicas_describe_the_map_after_splits() {
        use synod_kv::Shard;
        let whole = Shard::new(b(""), None);
        let (left, right) = whole.split(b("m"), 9);
        let (mid, last) = right.split(b("t"), 11);
        // Every half known: three shards.
        let m = ShardMap::from_replicas([(2, Some(&left)), (9, Some(&mid)), (11, Some(&last))])
            .unwrap();
        assert_eq!(m.splits(), vec![b("m"), b("t")]);
        assert_eq!(m.group_of(b"p"), 9);
        // Group 9 still empty here (its snapshot on the way): it owns
        // everything from its parent's end, 11 unknown yet.
        let m = ShardMap::from_replicas([(2, Some(&left)), (9, None)]).unwrap();
        assert_eq!(m.splits(), vec![b("m")]);
        assert_eq!(m.group_of(b"z"), 9);
        // A node that hosts only the parent must host its named neighbour.
        assert_eq!(ShardMap::unknown_neighbours([(2, Some(&left))]), vec![9]);
        assert!(ShardMap::unknown_neighbours([(2, Some(&left)), (9, None)]).is_empty());
        // Overlapping ranges do not make a map.
        assert!(ShardMap::from_replicas([(2, Some(&whole)), (9, Some(&mid))]).is_none());
        assert!(ShardMap::from_starts(vec![(b("a"), 2)]).is_none());
    }

    #[test]
    fn bad_split_points_are_refused() {
        assert_eq!(
            ShardMap::new(vec![b("b"), b("a")]),
            Err(SplitError::Unordered("a".into(), "b".into()))
        );
        assert_eq!(ShardMap::new(vec![b("")]), Err(SplitError::Empty));
        assert!(ShardMap::new(vec![b("a"), b("a")]).is_err());
        assert_eq!(ShardMap::new(Vec::new()).unwrap().len(), 1);
    }

    #[test]
    fn pieces_merge_in_the_order_and_limit_asked() {
        use synod_proto::etcdserverpb::range_request::SortOrder;
        use synod_proto::mvccpb::KeyValue;
        let kv = |k: &str, m: i64| KeyValue {
            key: b(k),
            value: b("v"),
            mod_revision: m,
            ..Default::default()
        };
        let part = |kvs: Vec<KeyValue>, more: bool| RangeResponse {
            count: kvs.len() as i64 + i64::from(more),
            more,
            kvs,
            ..Default::default()
        };
        let parts = || {
            vec![
                part(vec![kv("a", 9), kv("b", 3)], true),
                part(vec![kv("h", 5)], false),
            ]
        };
        let keys =
            |r: &RangeResponse| -> Vec<Bytes> { r.kvs.iter().map(|k| k.key.clone()).collect() };
        let by_key = RangeRequest {
            limit: 2,
            ..Default::default()
        };
        let r = merge(&by_key, parts(), 10);
        assert_eq!(keys(&r), vec![b("a"), b("b")]);
        assert!(r.more);
        assert_eq!(r.count, 4);
        assert_eq!(r.header.unwrap().revision, 10);
        let by_mod = RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            keys_only: true,
            ..Default::default()
        };
        let r = merge(&by_mod, parts(), 10);
        assert_eq!(keys(&r), vec![b("a"), b("h"), b("b")]);
        assert!(r.kvs.iter().all(|k| k.value.is_empty()));
        // A piece names only its shard's keys.
        let p = piece(&by_mod, &span("c", Some("g")));
        assert_eq!((p.key, p.range_end), (b("c"), b("g")));
        assert!(p.keys_only);
    }
}
