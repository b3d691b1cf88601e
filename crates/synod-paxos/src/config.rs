//! Static configuration of one replica, checked once so the rest of the core
//! can rely on its relationships (quorum intersection, timer ordering).

use crate::limits::{SLOTS_AHEAD_WINDOWS, WINDOW_SLOTS_LIMIT};
use crate::membership::Membership;
use crate::types::NodeId;
use std::fmt;

/// The most voters a group may have: acknowledgements are tracked as a `u64`
/// bitset indexed by voter position.
pub const VOTERS_MAX: usize = 64;

/// Everything a replica needs to know before it can take part in a group.
///
/// Invariants (checked by [`Config::validate`]):
/// `phase1_quorum + phase2_quorum > voters.len()` (every phase-1 quorum meets
/// every phase-2 quorum), `heartbeat_interval_ms < lease_duration_ms <
/// election_timeout_ms` when leases are on, and the drift margin is shorter
/// than the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This replica.
    pub id: NodeId,
    /// Replicas that promise and accept; sorted and unique.
    pub voters: Vec<NodeId>,
    /// Replicas that learn chosen values but never vote (ZooKeeper's
    /// observers, etcd's learners).
    pub observers: Vec<NodeId>,
    /// Q1: promises a candidate needs to become leader.
    pub phase1_quorum: usize,
    /// Q2: acceptances that make a value chosen.
    pub phase2_quorum: usize,
    /// A voter that heard nothing from a leader for this long (plus jitter in
    /// `[0, election_timeout_ms)`) starts phase 1. Also the stickiness window:
    /// a voter that heard from a leader this recently refuses other prepares.
    pub election_timeout_ms: u64,
    /// How often the leader sends commit points, retransmissions and lease
    /// renewals when it has nothing else to send.
    pub heartbeat_interval_ms: u64,
    /// How long an acceptor's acknowledgement binds it to the leader; 0 turns
    /// leader leases off (every linearizable read then takes a quorum round).
    pub lease_duration_ms: u64,
    /// The largest rate difference between any two clocks, in parts per
    /// million; the leader shortens its lease by twice this fraction.
    pub clock_drift_max_ppm: u64,
    /// Slots the leader may have proposed but not yet seen chosen; at most
    /// [`WINDOW_SLOTS_LIMIT`].
    pub window_slots_max: u64,
    /// Commands packed into one slot.
    pub batch_commands_max: usize,
    /// Chosen slots sent to a lagging replica in one catch-up message; at
    /// most [`WINDOW_SLOTS_LIMIT`].
    pub catchup_slots_max: u64,
    /// Commands the leader queues while its window is full; more are refused.
    pub proposals_queued_max: usize,
    /// Linearizable reads waiting for leadership confirmation.
    pub reads_pending_max: usize,
    /// Seeds the election jitter, so a simulation can reproduce elections.
    pub rng_seed: u64,
    /// This replica was added to a running group (etcd's
    /// `--initial-cluster-state existing`): `voters` and `observers` are only
    /// what the operator was told, not the group's history, so the replica
    /// trusts no membership until it learns one from the log or a snapshot,
    /// and never campaigns before. Keep it set across restarts; it is ignored
    /// once a membership has been stored.
    pub join: bool,
}

/// Why a configuration cannot be used. Each variant says which rule broke.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No voters, too many, or duplicated.
    Voters(String),
    /// This replica is neither a voter nor an observer, or is both.
    Membership(String),
    /// Quorum sizes out of range or not intersecting.
    Quorums(String),
    /// Timers or limits in the wrong order or zero.
    Timing(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Voters(s) => write!(f, "invalid voters: {s}"),
            ConfigError::Membership(s) => write!(f, "invalid membership: {s}"),
            ConfigError::Quorums(s) => write!(f, "invalid quorums: {s}"),
            ConfigError::Timing(s) => write!(f, "invalid timing: {s}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// A configuration with majority quorums and timings suited to a LAN.
    pub fn majority(id: NodeId, voters: &[NodeId]) -> Config {
        let n = voters.len();
        let mut voters = voters.to_vec();
        voters.sort();
        Config {
            id,
            voters,
            observers: Vec::new(),
            phase1_quorum: n / 2 + 1,
            phase2_quorum: n / 2 + 1,
            election_timeout_ms: 1000,
            heartbeat_interval_ms: 100,
            lease_duration_ms: 800,
            clock_drift_max_ppm: 10_000,
            window_slots_max: 256,
            batch_commands_max: 1024,
            catchup_slots_max: 256,
            proposals_queued_max: 65_536,
            reads_pending_max: 65_536,
            rng_seed: 0,
            join: false,
        }
    }

    /// The group's initial membership, as this configuration describes it.
    pub fn membership(&self) -> Membership {
        Membership {
            voters: self.voters.clone(),
            observers: self.observers.clone(),
            phase1_quorum: self.phase1_quorum,
            phase2_quorum: self.phase2_quorum,
        }
    }

    /// Checks every relationship the core relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_membership()?;
        self.validate_quorums()?;
        self.validate_timing()
    }

    fn validate_membership(&self) -> Result<(), ConfigError> {
        let n = self.voters.len();
        if n == 0 || n > VOTERS_MAX {
            return Err(ConfigError::Voters(format!(
                "{n} voters; need 1..={VOTERS_MAX}"
            )));
        }
        if self.voters.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ConfigError::Voters(format!(
                "{:?} must be sorted and unique",
                self.voters
            )));
        }
        let is_voter = self.voters.contains(&self.id);
        let is_observer = self.observers.contains(&self.id);
        if is_voter == is_observer {
            return Err(ConfigError::Membership(format!(
                "{} must be exactly one of voter or observer",
                self.id
            )));
        }
        if let Some(o) = self.observers.iter().find(|o| self.voters.contains(o)) {
            return Err(ConfigError::Membership(format!(
                "{o} is both voter and observer"
            )));
        }
        Ok(())
    }

    fn validate_quorums(&self) -> Result<(), ConfigError> {
        let n = self.voters.len();
        let (q1, q2) = (self.phase1_quorum, self.phase2_quorum);
        if q1 == 0 || q2 == 0 || q1 > n || q2 > n {
            return Err(ConfigError::Quorums(format!(
                "Q1={q1} Q2={q2} must be within 1..={n}"
            )));
        }
        if q1 + q2 <= n {
            return Err(ConfigError::Quorums(format!(
                "Q1={q1} + Q2={q2} must exceed N={n} so every phase-1 quorum meets every phase-2 quorum"
            )));
        }
        Ok(())
    }

    fn validate_timing(&self) -> Result<(), ConfigError> {
        let zero = [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("window_slots_max", self.window_slots_max),
            ("batch_commands_max", self.batch_commands_max as u64),
            ("catchup_slots_max", self.catchup_slots_max),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Timing(format!("{name} must be positive")));
        }
        let limited = [
            ("window_slots_max", self.window_slots_max),
            ("catchup_slots_max", self.catchup_slots_max),
        ];
        if let Some((name, v)) = limited.iter().find(|(_, v)| *v > WINDOW_SLOTS_LIMIT) {
            return Err(ConfigError::Timing(format!(
                "{name}={v} must be at most {WINDOW_SLOTS_LIMIT}"
            )));
        }
        if self.heartbeat_interval_ms >= self.election_timeout_ms {
            return Err(ConfigError::Timing(format!(
                "heartbeat_interval_ms={} must be below election_timeout_ms={}",
                self.heartbeat_interval_ms, self.election_timeout_ms
            )));
        }
        if self.lease_duration_ms == 0 {
            return Ok(());
        }
        if self.lease_duration_ms >= self.election_timeout_ms
            || self.lease_duration_ms <= self.heartbeat_interval_ms
        {
            return Err(ConfigError::Timing(format!(
                "lease_duration_ms={} must lie between heartbeat_interval_ms={} and election_timeout_ms={}",
                self.lease_duration_ms, self.heartbeat_interval_ms, self.election_timeout_ms
            )));
        }
        if self.clock_drift_max_ppm >= 250_000 || self.lease_margin_ms() >= self.lease_duration_ms {
            return Err(ConfigError::Timing(format!(
                "clock_drift_max_ppm={} leaves no usable lease of {} ms",
                self.clock_drift_max_ppm, self.lease_duration_ms
            )));
        }
        Ok(())
    }

    /// How much shorter the leader counts its lease than acceptors grant it.
    ///
    /// With clock rates within `1 ± ε` of real time, a lease the leader counts
    /// as `D·(1 − 2ε)` on its clock lasts at most `D·(1 − 2ε)/(1 − ε)` real
    /// time, which is below the `D/(1 + ε)` any acceptor waits; one extra
    /// millisecond covers the rounding of whole-millisecond clocks.
    pub fn lease_margin_ms(&self) -> u64 {
        let d = self.lease_duration_ms as u128;
        let margin = (d * 2 * self.clock_drift_max_ppm as u128).div_ceil(1_000_000);
        margin as u64 + 1
    }

    /// How far past its commit point this replica stores slots that peers
    /// send in accepts and learns; the rest of such a message is dropped
    /// (see [`SLOTS_AHEAD_WINDOWS`]). At most `SLOTS_AHEAD_WINDOWS *
    /// WINDOW_SLOTS_LIMIT` once the configuration validated.
    pub fn slots_ahead_max(&self) -> u64 {
        let window = self.window_slots_max.max(self.catchup_slots_max);
        SLOTS_AHEAD_WINDOWS.saturating_mul(window)
    }

    /// Voters whose acknowledgements together meet every phase-1 quorum: what a
    /// lease or a read-index confirmation needs (`N − Q1 + 1 ≤ Q2`).
    pub fn confirm_quorum(&self) -> usize {
        self.voters.len() - self.phase1_quorum + 1
    }

    /// Position of `node` among voters, for acknowledgement bitsets.
    pub fn voter_index(&self, node: NodeId) -> Option<usize> {
        self.voters.binary_search(&node).ok()
    }

    /// True when this replica votes.
    pub fn is_voter(&self) -> bool {
        self.voter_index(self.id).is_some()
    }

    /// Voters other than this one (owned, so the caller may send while
    /// iterating).
    pub fn other_voters(&self) -> Vec<NodeId> {
        self.voters
            .iter()
            .copied()
            .filter(|v| *v != self.id)
            .collect()
    }

    /// Every replica other than this one, voters first.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let id = self.id;
        self.voters
            .iter()
            .chain(self.observers.iter())
            .copied()
            .filter(move |n| *n != id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    #[test]
    fn majority_config_is_valid() {
        for n in 1..=7 {
            Config::majority(NodeId(1), &ids(n)).validate().unwrap();
        }
    }

    #[test]
    fn non_intersecting_quorums_are_refused() {
        let mut c = Config::majority(NodeId(1), &ids(5));
        c.phase1_quorum = 2;
        c.phase2_quorum = 3;
        assert!(matches!(c.validate(), Err(ConfigError::Quorums(_))));
        c.phase1_quorum = 3;
        c.validate().unwrap();
        c.phase1_quorum = 4;
        c.phase2_quorum = 2;
        c.validate().unwrap();
        assert_eq!(c.confirm_quorum(), 2);
    }

    #[test]
    fn lease_must_fit_between_heartbeat_and_election() {
        let mut c = Config::majority(NodeId(1), &ids(3));
        c.lease_duration_ms = c.election_timeout_ms;
        assert!(matches!(c.validate(), Err(ConfigError::Timing(_))));
        c.lease_duration_ms = 0;
        c.validate().unwrap();
    }

    #[test]
    fn membership_rules() {
        let mut c = Config::majority(NodeId(9), &ids(3));
        assert!(matches!(c.validate(), Err(ConfigError::Membership(_))));
        c.observers = vec![NodeId(9)];
        c.validate().unwrap();
        c.observers = vec![NodeId(9), NodeId(1)];
        assert!(matches!(c.validate(), Err(ConfigError::Membership(_))));
        c.voters = vec![NodeId(2), NodeId(1)];
        assert!(matches!(c.validate(), Err(ConfigError::Voters(_))));
    }

    #[test]
    fn windows_are_bounded() {
        let mut c = Config::majority(NodeId(1), &ids(3));
        c.window_slots_max = WINDOW_SLOTS_LIMIT + 1;
        assert!(matches!(c.validate(), Err(ConfigError::Timing(_))));
        c.window_slots_max = WINDOW_SLOTS_LIMIT;
        c.validate().unwrap();
        c.catchup_slots_max = u64::MAX;
        assert!(matches!(c.validate(), Err(ConfigError::Timing(_))));
    }

    #[test]
    fn lease_margin_covers_drift() {
        let c = Config::majority(NodeId(1), &ids(3));
        // 800 ms at 1% drift: 2% of 800 = 16, plus 1 for rounding.
        assert_eq!(c.lease_margin_ms(), 17);
    }
}
