//! Shards follow the meta group's membership (issue 10, design 0019).
//!
//! Every node hosts every shard until placement picks replicas per shard,
//! so a shard's voters and observers are the meta group's: `member add`,
//! `remove`, `promote` change the meta group's configuration, and each
//! shard's leader then proposes the same configuration in its own log.
//!
//! A leader must never follow a meta configuration older than the one its
//! shard already follows (it would undo a change, re-adding a node the
//! operator has since shut down). Its node's meta replica may lag, so the
//! follower looks in two steps:
//!
//! ```text
//!   check: shards this node leads, settled, not at the meta target
//!            └─► remember each one's configuration, ask the shell for a
//!                linearizable barrier on the meta group
//!   confirmed (the barrier answered): a remembered shard still led here,
//!            still at the configuration remembered, still not at the
//!            meta target ─► propose the meta target
//! ```
//!
//! The barrier was asked after the shard's configuration was chosen, and
//! whatever meta configuration that one followed was chosen before it;
//! after the barrier the node's meta replica holds at least that one.
//! So a shard only ever moves to a configuration at least as new.
//!
//! Two leaders cannot follow, and the shard must not wait on them:
//! - one on a node the meta target leaves out (its meta replica learns
//!   nothing more): it hands its leadership to a voter the meta target
//!   keeps ([`hand_over`]);
//! - one on a node whose meta replica cannot confirm anything (cut off
//!   from the meta group, or removed from it without knowing): its
//!   followers still hear it, so no one else takes over, but it can
//!   neither follow nor stamp. A node that leads shards asks the barrier
//!   at least every `FOLLOW_BARRIER_MS` (one for all its shards); after
//!   `FOLLOW_CUT_OFF_MS` without an answer it hands each one to another
//!   voter. (Taking over from the other side cannot work: the acceptors
//!   keep granting the leader its lease.)

use synod_paxos::{Configuration, Membership, NodeId, RoleKind, Time};

use crate::Group;

/// How long a barrier may stay unanswered before the follower asks again
/// (the meta group may have had no leader).
pub const FOLLOW_BARRIER_MS: u64 = 2_000;

/// How often, at most, the follower looks at the shards.
pub const FOLLOW_CHECK_MS: u64 = 100;

/// How long a node that leads shards may go without a confirmed barrier
/// on the meta group before it hands them to other voters (see the
/// module doc).
pub const FOLLOW_CUT_OFF_MS: u64 = 5_000;

/// What one node keeps between asking for a meta barrier and its answer.
#[derive(Debug, Default)]
pub struct MembershipFollower {
    /// Shards seen behind, and when the barrier was asked.
    asked: Option<(Time, Vec<Behind>)>,
    checked: Option<Time>,
    /// Since when this node has led shards without a confirmed barrier.
    unconfirmed_since: Option<Time>,
    /// When a barrier last answered.
    confirmed_at: Option<Time>,
    /// Hand-overs for being cut off so far, to pick another voter each
    /// time.
    hand_overs: usize,
}

/// A shard seen behind the meta group, waiting for the barrier.
#[derive(Clone, Debug, PartialEq)]
pub struct Behind {
    /// The shard.
    pub group: u64,
    /// Its configuration when seen: it must still have it.
    pub seen: Configuration,
}

/// The barrier [`Look::barrier`] asks for: a linearizable read of nothing
/// in the meta group (answered once this node's meta replica applied
/// what the meta leader had committed when it was asked).
pub fn meta_barrier() -> crate::Request {
    crate::Request::Read {
        request: synod_proto::etcdserverpb::RangeRequest {
            key: bytes::Bytes::from_static(b"\0"),
            count_only: true,
            ..Default::default()
        },
        serializable: false,
    }
}

/// What one look at the shards asks of the shell.
#[derive(Debug, Default, PartialEq)]
pub struct Look {
    /// Ask a linearizable barrier on the meta group, then call
    /// [`MembershipFollower::confirmed`] with its answer.
    pub barrier: bool,
    /// Shards whose leadership to hand to the voter named.
    pub hand_over: Vec<(u64, NodeId)>,
}

/// The voter shard `group` should hand its leadership to, if this
/// replica leads it from a node the meta group's target leaves out (see
/// the module doc). Harmless when the meta view is stale: a transfer
/// changes nobody's data.
pub fn hand_over(me: NodeId, meta: Option<&Configuration>, group: &Group) -> Option<NodeId> {
    let meta = meta?.target();
    if meta.is_member(me) || !settled(group) {
        return None;
    }
    let current = group.replica().membership()?;
    current
        .voters()
        .into_iter()
        .find(|v| *v != me && meta.voters.contains(v))
}

/// The configuration shard `group` should move to, given the meta group's
/// `meta`, if it should move now: this replica leads it, no change or
/// transfer is under way, and its target differs from the meta target.
pub fn wanted(meta: Option<&Configuration>, group: &Group) -> Option<Membership> {
    let meta = meta?.target();
    if !settled(group) {
        return None;
    }
    let current = group.replica().membership()?;
    (current.target() != meta).then(|| meta.clone())
}

/// Whether every shard in `shards` (this node's replicas of them) has
/// settled on `target`: what a membership change of the meta group waits
/// for, and what the next one needs first (so that the shards' voters
/// always overlap the meta group's, and a leader kept can follow). A node
/// that `target` removes may never learn the last step of a change (it is
/// no longer sent the log): for it, the change under way suffices. Shards
/// whose replica holds no state yet are left out.
pub fn shards_settled<'a>(
    me: NodeId,
    target: &Membership,
    shards: impl Iterator<Item = &'a Group>,
) -> bool {
    let staying = target.is_member(me);
    shards.filter(|g| g.kv().shard().is_some()).all(|g| {
        let replica = g.replica();
        replica.membership().is_some_and(|c| c.target() == target)
            && (!staying || !replica.status().membership_changing)
    })
}

/// This replica leads, and no change or transfer is under way.
fn settled(group: &Group) -> bool {
    let replica = group.replica();
    let status = replica.status();
    replica.role_kind() == RoleKind::Leader
        && !status.membership_changing
        && status.transferring_to.is_none()
}

impl MembershipFollower {
    /// Looks at the shards (call on every tick, with the shards this node
    /// hosts): whether to ask the meta barrier, and the leaderships to
    /// hand over (see [`hand_over`]).
    pub fn check<'a>(
        &mut self,
        me: NodeId,
        now: Time,
        meta: Option<&Configuration>,
        shards: impl Iterator<Item = (u64, &'a Group)>,
    ) -> Look {
        let mut look = Look::default();
        if self
            .checked
            .is_some_and(|at| now.0.saturating_sub(at.0) < FOLLOW_CHECK_MS)
        {
            return look;
        }
        self.checked = Some(now);
        let mut behind = Vec::new();
        let mut led = Vec::new();
        for (id, group) in shards {
            if let Some(to) = hand_over(me, meta, group) {
                look.hand_over.push((id, to));
            } else if settled(group) {
                led.push((id, group));
                if let (Some(_), Some(seen)) = (wanted(meta, group), group.replica().membership()) {
                    behind.push(Behind {
                        group: id,
                        seen: seen.clone(),
                    });
                }
            }
        }
        if led.is_empty() {
            self.unconfirmed_since = None;
        } else {
            let since = *self.unconfirmed_since.get_or_insert(now);
            if now.0.saturating_sub(since.0) >= FOLLOW_CUT_OFF_MS {
                self.unconfirmed_since = Some(now);
                for (id, group) in led {
                    if let Some(to) = group.another_voter(self.hand_overs) {
                        look.hand_over.push((id, to));
                        self.hand_overs += 1;
                    }
                }
            }
        }
        if let Some((at, _)) = &self.asked {
            if now.0.saturating_sub(at.0) < FOLLOW_BARRIER_MS {
                return look;
            }
            self.asked = None;
        }
        // A barrier for the shards behind, or to keep confirming that this
        // node, which leads shards, still hears the meta group.
        let stale = self
            .confirmed_at
            .is_none_or(|at| now.0.saturating_sub(at.0) >= FOLLOW_BARRIER_MS);
        if !behind.is_empty() || (self.unconfirmed_since.is_some() && stale) {
            self.asked = Some((now, behind));
            look.barrier = true;
        }
        look
    }

    /// The barrier answered (`ok`), or failed: the shards to hand to
    /// [`follow`] (none when the barrier failed: the next check asks
    /// again).
    pub fn confirmed(&mut self, ok: bool, now: Time) -> Vec<Behind> {
        let asked = self.asked.take();
        if !ok {
            return Vec::new();
        }
        self.confirmed_at = Some(now);
        if self.unconfirmed_since.is_some() {
            self.unconfirmed_since = Some(now);
        }
        asked.map(|(_, behind)| behind).unwrap_or_default()
    }

    /// Whether a barrier is out.
    pub fn waiting(&self) -> bool {
        self.asked.is_some()
    }
}

/// After the barrier: proposes the meta target in shard `group` unless it
/// moved since it was seen (another configuration, led elsewhere, a change
/// under way) or is at the meta target already; returns the target and
/// what the proposal said.
pub fn follow(
    meta: Option<&Configuration>,
    behind: &Behind,
    group: &mut Group,
) -> Option<(Membership, Result<(), String>)> {
    if group.replica().membership() != Some(&behind.seen) {
        return None;
    }
    let target = wanted(meta, group)?;
    let result = group.change_membership(target.clone());
    Some((target, result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GroupConfig;
    use synod_kv::KvStore;
    use synod_paxos::{Config, Replica};

    /// A group of `voters` on node `me` that elects itself alone (phase-1
    /// quorum 1), led by `me` after its election timeout.
    fn led(me: u64, voters: &[u64]) -> Group {
        let voters: Vec<NodeId> = voters.iter().map(|v| NodeId(*v)).collect();
        let mut paxos = Config::majority(NodeId(me), &voters);
        paxos.phase1_quorum = 1;
        paxos.phase2_quorum = voters.len();
        let replica = Replica::new(paxos, Time(0)).expect("config");
        let config = GroupConfig {
            node: NodeId(me),
            session: 7,
            snapshot_every: 10_000,
            compact_keep: 1_000,
            session_idle_ms: 600_000,
            initial_members: Vec::new(),
            record_applied: false,
            timestamp_oracle: false,
            stamped: true,
            state_flush_rounds: crate::STATE_FLUSH_ROUNDS,
        };
        let mut group = Group::new(config, replica, KvStore::default(), Time(0));
        for ms in (0..5_000).step_by(10) {
            group.tick(Time(ms));
            while group.has_ready() {
                let ready = group.ready();
                group.on_written();
                group.on_persisted(ready.token);
            }
            if group.replica().role_kind() == RoleKind::Leader {
                return group;
            }
        }
        panic!("never led");
    }

    /// One look by node `me` at shard 2.
    fn look_at(
        f: &mut MembershipFollower,
        me: u64,
        at: u64,
        target: &Configuration,
        shard: &Group,
    ) -> Look {
        f.check(NodeId(me), Time(at), Some(target), [(2, shard)].into_iter())
    }

    fn meta(voters: &[u64]) -> Configuration {
        let voters: Vec<NodeId> = voters.iter().map(|v| NodeId(*v)).collect();
        Configuration::Stable(Membership::new(&voters, &[]))
    }

    #[test]
    fn a_shard_behind_the_meta_group_follows_only_after_the_barrier() {
        let mut shard = led(1, &[1]);
        let mut f = MembershipFollower::default();
        let target = meta(&[1, 2]);
        let look = look_at(&mut f, 1, 10_000, &target, &shard);
        assert_eq!(
            look,
            Look {
                barrier: true,
                hand_over: Vec::new()
            }
        );
        assert!(f.waiting());
        // While the barrier is out, no second one.
        let again = look_at(&mut f, 1, 10_200, &target, &shard);
        assert!(!again.barrier);
        let behind = f.confirmed(true, Time(10_300));
        assert_eq!(behind.len(), 1);
        assert_eq!(behind[0].group, 2);
        let followed = follow(Some(&target), &behind[0], &mut shard);
        assert_eq!(followed, Some((target.target().clone(), Ok(()))));
        assert!(shard.replica().status().membership_changing);
        // Under way: nothing more to do, and not twice.
        assert_eq!(follow(Some(&target), &behind[0], &mut shard), None);
    }

    #[test]
    fn a_failed_barrier_or_a_shard_that_moved_proposes_nothing() {
        let mut shard = led(1, &[1]);
        let mut f = MembershipFollower::default();
        let target = meta(&[1, 2]);
        assert!(look_at(&mut f, 1, 10_000, &target, &shard).barrier);
        assert!(f.confirmed(false, Time(10_300)).is_empty());
        assert!(!f.waiting());
        // Seen at another configuration than it has now: it moved since.
        let stale = Behind {
            group: 2,
            seen: meta(&[1, 3]),
        };
        assert_eq!(follow(Some(&target), &stale, &mut shard), None);
        assert!(!shard.replica().status().membership_changing);
        // At the meta target already, or no meta configuration known.
        let same = shard.replica().membership().cloned().expect("config");
        assert_eq!(wanted(Some(&same), &shard), None);
        assert_eq!(wanted(None, &shard), None);
    }

    #[test]
    fn a_barrier_never_answered_is_asked_again() {
        let shard = led(1, &[1]);
        let mut f = MembershipFollower::default();
        let target = meta(&[1, 2]);
        let at = 10_000;
        assert!(look_at(&mut f, 1, at, &target, &shard).barrier);
        let late = at + FOLLOW_BARRIER_MS;
        assert!(look_at(&mut f, 1, late, &target, &shard).barrier);
    }

    #[test]
    fn a_leader_the_meta_group_removed_hands_its_shard_to_a_voter_it_keeps() {
        let shard = led(1, &[1, 2, 3]);
        let mut f = MembershipFollower::default();
        let target = meta(&[2, 3]);
        assert_eq!(hand_over(NodeId(1), Some(&target), &shard), Some(NodeId(2)));
        let look = look_at(&mut f, 1, 10_000, &target, &shard);
        assert_eq!(
            look,
            Look {
                barrier: false,
                hand_over: vec![(2, NodeId(2))]
            }
        );
        // A member leads on.
        assert_eq!(hand_over(NodeId(1), Some(&meta(&[1, 2])), &shard), None);
    }

    #[test]
    fn a_leader_cut_off_from_the_meta_group_hands_its_shards_over() {
        let shard = led(1, &[1, 2, 3]);
        let mut f = MembershipFollower::default();
        // At the meta target: nothing behind, but it leads, so it keeps
        // asking a barrier.
        let target = shard.replica().membership().cloned().expect("config");
        let look = |f: &mut MembershipFollower, at: u64| look_at(f, 1, at, &target, &shard);
        assert_eq!(
            look(&mut f, 10_000),
            Look {
                barrier: true,
                hand_over: Vec::new()
            }
        );
        // Answered: no hand-over for as long as answers come.
        assert!(f.confirmed(true, Time(10_050)).is_empty());
        let mut at = 10_100;
        while at < 10_000 + 3 * FOLLOW_CUT_OFF_MS {
            let l = look(&mut f, at);
            assert!(l.hand_over.is_empty(), "at {at}");
            if l.barrier {
                f.confirmed(true, Time(at));
            }
            at += FOLLOW_CHECK_MS;
        }
        // Unanswered from now on: handed over once the cut-off passed,
        // to another voter each time.
        let cut = at;
        let mut to = Vec::new();
        while at < cut + 3 * FOLLOW_CUT_OFF_MS {
            let l = look(&mut f, at);
            if !l.hand_over.is_empty() {
                assert!(at >= cut + FOLLOW_CUT_OFF_MS - FOLLOW_BARRIER_MS, "at {at}");
                to.extend(l.hand_over.into_iter().map(|(_, v)| v));
            }
            at += FOLLOW_CHECK_MS;
        }
        assert!(to.len() >= 2, "{to:?}");
        assert_ne!(to[0], to[1]);
        assert!(to.iter().all(|v| *v != NodeId(1)));
    }
}
