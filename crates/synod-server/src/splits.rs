//! Shards splitting on this node (issue 10, design 0016): the core loop's
//! part. The split itself is a command in the shard's own log, applied
//! by the state machine; here the loop hosts the group it made, keeps the
//! node's shard map in step with its replicas, and decides when a shard
//! it leads is big enough to split.
//!
//! ```text
//!   operator / size check ─► oracle: a timestamp T (the new group's id,
//!       unique in the cluster) ─► Split{at, SPLIT_GROUP_BASE + T} in the shard's log
//!   applied here ─► GroupReady.splits ─► host the new group; its first
//!       ready (its rows, its log start) goes into the same write as the split
//!   a snapshot shrank a shard ─► the group to its right, if unknown, is
//!       hosted empty and catches up from its peers by snapshot
//! ```

use super::{Answer, Core, GroupMaker, Reply, Request, Time, GROUP};
use crate::hub::HubInput;
use crate::shards::ShardMap;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use synod_group::{Group, GroupReady, LoadSplitter};
use synod_kv::{error_outcome, KeyRange, KvError, Shard};
use synod_paxos::RoleKind;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{Outcome, SplitShard};
use synod_storage::GroupId;
use tokio::sync::oneshot;

/// Groups made by splits take their ids from here up: this plus a
/// timestamp from the oracle, unique in the cluster and above every group
/// the cluster was started with.
pub const SPLIT_GROUP_BASE: u64 = 1 << 32;
/// How often the loop weighs the shards it leads.
const SPLIT_CHECK: Duration = Duration::from_secs(1);
/// A shard asked to split by size is not asked again for this long while
/// its range has not changed (the split is on its way through the oracle
/// and the log; it may also have been refused).
const SPLIT_AGAIN: Duration = Duration::from_secs(10);

/// What the loop keeps for splits.
pub(super) struct Splitting {
    /// The shards the cluster was started with.
    first_map: Option<ShardMap>,
    maker: GroupMaker,
    split_bytes: u64,
    /// Split shards this node leads past this many writes a second (0:
    /// never by load), as `load` measures them.
    split_writes_per_s: u64,
    load: LoadSplitter,
    /// Shards this node asked to split by size or load: when, and their
    /// epoch then.
    asked: BTreeMap<GroupId, (Instant, u64)>,
    checked: Instant,
}

impl Splitting {
    pub(super) fn new(
        first_map: Option<ShardMap>,
        maker: GroupMaker,
        split_bytes: u64,
        split_writes_per_s: u64,
    ) -> Self {
        Splitting {
            first_map,
            maker,
            split_bytes,
            split_writes_per_s,
            load: LoadSplitter::default(),
            asked: BTreeMap::new(),
            checked: Instant::now(),
        }
    }
}

impl Core {
    /// A shard this node knows of but holds no state for yet: its
    /// snapshot is on its way, and until then it answers nothing.
    pub(super) fn is_blank(&self, id: GroupId) -> bool {
        self.shards.is_some()
            && id != GROUP
            && self
                .groups
                .get(&id)
                .is_some_and(|g| g.kv().shard().is_none())
    }

    /// Gives every shard the cluster was started with its range, unless
    /// its store records one (every replica derives the same from the
    /// same split points, which the data dir pins).
    pub(super) fn adopt_ranges(&mut self) {
        let Some(map) = &self.splitting.first_map else {
            return;
        };
        if let Some(meta) = self.groups.get_mut(&GROUP) {
            meta.set_lease_keys_in_shards();
        }
        for (i, id) in map.groups().enumerate() {
            let (Some(group), KeyRange::Span { start, end }) =
                (self.groups.get_mut(&GroupId(id)), map.span(i))
            else {
                continue;
            };
            group.set_shard_if_unset(Shard::new(start, end));
        }
    }

    /// Hosts, empty, every group a shard here names as its right
    /// neighbour and this node does not host: a split this node learned
    /// of by a snapshot, not by applying it. The group catches up from
    /// its peers (its leader sees it behind its log start).
    pub(super) fn discover_groups(&mut self) {
        if self.shards.is_none() {
            return;
        }
        loop {
            let replicas = self.groups.iter().map(|(id, g)| (id.0, g.kv().shard()));
            let missing = ShardMap::unknown_neighbours(replicas);
            if missing.is_empty() {
                return;
            }
            for id in missing.into_iter().map(GroupId) {
                let group = self.make_empty(id);
                self.groups.insert(id, group);
                self.metrics.event(
                    id.0,
                    "shard",
                    "hosting a shard a snapshot named; its state follows".to_string(),
                );
            }
        }
    }

    /// A group hosted empty, in join mode: its state and its
    /// configuration come from its leader.
    pub(super) fn make_empty(&self, id: GroupId) -> Group {
        let (config, replica) = (self.splitting.maker)(&self.storage, id, true)
            .unwrap_or_else(|e| panic!("making {id} failed, stopping the node: {e}"));
        let kv = self
            .storage
            .load_store(id)
            .unwrap_or_else(|e| panic!("reading {id} failed, stopping the node: {e}"));
        let mut group = Group::new(config, replica, kv, self.now());
        group.set_prev_values_in_events(false);
        group
    }

    /// Publishes the shard map as this node's replicas hold it: each
    /// shard from its own range; one still empty from the end of the
    /// shard that names it.
    pub(super) fn refresh_map(&mut self) {
        let Some(view) = &self.shards else {
            return;
        };
        let replicas = self
            .groups
            .iter()
            .filter(|(id, _)| **id != GROUP)
            .map(|(id, g)| (id.0, g.kv().shard()));
        match ShardMap::from_replicas(replicas) {
            Some(map) => view.set(map),
            None => tracing::error!("the shards here do not tile the key space"),
        }
    }

    /// Hosts the groups `parent`'s applied splits made; returns their
    /// first readies, to write with the parent's (the split and the new
    /// group are durable together, or neither is).
    pub(super) fn host_splits(
        &mut self,
        parent: GroupId,
        ready: &mut GroupReady,
    ) -> Vec<(GroupId, GroupReady)> {
        let mut born = Vec::new();
        for split in std::mem::take(&mut ready.splits) {
            let (id, mut kv, membership) = (GroupId(split.id), split.kv, split.membership);
            if self.groups.contains_key(&id) {
                self.adopt_split(parent, id, kv, membership, &mut born);
                continue;
            }
            let (config, replica) = (self.splitting.maker)(&self.storage, id, membership.is_none())
                .unwrap_or_else(|e| panic!("making {id} failed, stopping the node: {e}"));
            let source = self
                .storage
                .state(id)
                .unwrap_or_else(|e| panic!("reading {id} failed, stopping the node: {e}"));
            kv.attach(source, true);
            let lead = self.groups[&parent].replica().role_kind() == RoleKind::Leader;
            let mut group = Group::from_split(config, replica, membership, kv, self.now(), lead);
            group.set_prev_values_in_events(false);
            let revision = group.kv().revision();
            let first = group.ready();
            self.groups.insert(id, group);
            self.metrics.splits.inc();
            self.metrics.event(
                parent.0,
                "split",
                format!("split; the keys from the split point went to {id} at revision {revision}"),
            );
            // Watchers of the parent follow the new group from its first
            // revision on (the hub takes this before any of its events).
            let _ = self.hub.send(HubInput::Split {
                parent,
                child: id,
                revision,
            });
            self.hub_revisions.insert(id, revision);
            born.push((id, first));
        }
        if !born.is_empty() {
            self.refresh_map();
        }
        born
    }

    /// A split of `parent` made group `id`, which this node hosts already,
    /// empty (its members sent it messages before the split applied
    /// here): it takes the split's state, unless its leader's snapshot
    /// came first.
    fn adopt_split(
        &mut self,
        parent: GroupId,
        id: GroupId,
        mut kv: synod_kv::KvStore,
        membership: Option<synod_paxos::Configuration>,
        born: &mut Vec<(GroupId, GroupReady)>,
    ) {
        let source = self
            .storage
            .state(id)
            .unwrap_or_else(|e| panic!("reading {id} failed, stopping the node: {e}"));
        kv.attach(source, true);
        kv.set_prev_values_in_events(false);
        let revision = kv.revision();
        let group = self.groups.get_mut(&id).expect("hosted");
        if !group.adopt_split(membership, kv) {
            tracing::info!(%parent, group = %id, "split applied after the new group's snapshot came: nothing to take");
            return;
        }
        let first = group.ready();
        let _ = self.hub.send(HubInput::Split {
            parent,
            child: id,
            revision,
        });
        self.hub_revisions.insert(id, revision);
        self.metrics.splits.inc();
        born.push((id, first));
    }

    /// An operator's split of the shard holding `at`: a timestamp from
    /// the oracle first, for the new group's id.
    pub(super) fn split_at(&mut self, at: Bytes, reply: oneshot::Sender<Outcome>, now: Time) {
        let Some(view) = &self.shards else {
            let refused = KvError::InvalidArgument(synod_kv::validate::SPLIT_NOT_SHARD);
            let _ = reply.send(error_outcome(&refused));
            return;
        };
        let group = GroupId(view.get().group_of(&at));
        self.ask_split(group, at, Some(reply), now);
    }

    fn ask_split(
        &mut self,
        group: GroupId,
        at: Bytes,
        reply: Option<oneshot::Sender<Outcome>>,
        now: Time,
    ) {
        let ticket = self.ticket(Reply::SplitId { group, at, reply });
        let leases = Vec::new();
        self.request(GROUP, ticket, Request::Timestamps { count: 1, leases }, now);
    }

    /// The oracle answered a split's question: the split goes into the
    /// shard's log with the new group's id.
    pub(super) fn propose_split(
        &mut self,
        group: GroupId,
        at: Bytes,
        answer: Answer,
        reply: Option<oneshot::Sender<Outcome>>,
        now: Time,
    ) {
        let Answer::Timestamps(Some((stamp, _)), _) = answer else {
            if let Some(reply) = reply {
                let _ = reply.send(error_outcome(&KvError::NoLeader));
            }
            return;
        };
        let child = SPLIT_GROUP_BASE + stamp as u64;
        let ticket = match reply {
            Some(reply) => self.ticket(Reply::Write(reply)),
            None => self.ticket(Reply::Discard),
        };
        let op = Op::Split(SplitShard { at, child });
        self.request(group, ticket, Request::Write(op), now);
    }

    /// Splits the shards this node leads whose data passed the size
    /// limit, near their middle (at a key directory's start when one is
    /// near: `Mvcc::split_key`).
    pub(super) fn split_by_size(&mut self) {
        let limit = self.splitting.split_bytes;
        if self.shards.is_none() || limit == 0 || self.splitting.checked.elapsed() < SPLIT_CHECK {
            return;
        }
        self.splitting.checked = Instant::now();
        let wanted: Vec<(GroupId, Bytes)> = self
            .groups
            .iter()
            .filter(|(id, g)| self.may_ask_split(**id) && g.kv().mvcc().bytes() >= limit)
            .filter_map(|(id, g)| Some((*id, g.kv().mvcc().split_key()?)))
            .collect();
        self.ask_splits(wanted, "past its size limit");
    }

    /// Counts the writes a shard this node leads applied, when shards
    /// split by load.
    pub(super) fn weigh_load(&mut self, id: GroupId, events: &[synod_proto::mvccpb::Event]) {
        if self.splitting.split_writes_per_s == 0 || id == GROUP || self.shards.is_none() {
            return;
        }
        if self.groups[&id].replica().role_kind() != RoleKind::Leader {
            return;
        }
        let keys = events
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| &kv.key));
        self.splitting.load.record(id.0, keys);
    }

    /// Splits the shards this node leads that applied at least the load
    /// limit's writes a second, at the middle of the keys written.
    pub(super) fn split_by_load(&mut self) {
        let rate = self.splitting.split_writes_per_s;
        if self.shards.is_none() || rate == 0 {
            return;
        }
        let due = self.splitting.load.due(self.now(), rate);
        let wanted: Vec<(GroupId, Bytes)> = due
            .into_iter()
            .map(|(id, at)| (GroupId(id), at))
            .filter(|(id, _)| self.groups.contains_key(id) && self.may_ask_split(*id))
            .collect();
        self.ask_splits(wanted, "past its write load limit");
    }

    /// Whether this node may ask to split shard `id` now: it leads it,
    /// and has not asked recently for the shard at its present epoch.
    fn may_ask_split(&self, id: GroupId) -> bool {
        let g = &self.groups[&id];
        id != GROUP
            && g.replica().role_kind() == RoleKind::Leader
            && self.splitting.asked.get(&id).is_none_or(|(t, epoch)| {
                t.elapsed() >= SPLIT_AGAIN || g.kv().shard().is_some_and(|s| s.epoch != *epoch)
            })
    }

    /// Asks the oracle for the new groups' ids of the splits `wanted`,
    /// those whose point lies strictly inside their shard.
    fn ask_splits(&mut self, wanted: Vec<(GroupId, Bytes)>, why: &str) {
        let now = self.now();
        for (id, at) in wanted {
            let Some(shard) = self.groups[&id].kv().shard() else {
                continue;
            };
            if !shard.may_split_at(&at) {
                continue;
            }
            tracing::info!(group = %id, at = ?at, "splitting a shard {why}");
            let epoch = shard.epoch;
            self.splitting.asked.insert(id, (Instant::now(), epoch));
            self.splitting.load.forget(id.0);
            self.ask_split(id, at, None, now);
        }
    }
}
