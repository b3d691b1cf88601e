//! Group membership as the log records it: who votes, who only learns, and
//! the quorum sizes of each configuration. A change goes through the log as a
//! joint configuration `C_old,new` (every quorum must be met in both halves),
//! then as `C_new`; see `docs/design/0003-membership.md` for when an entry
//! takes effect and why that is safe with a pipelined window.

use crate::config::VOTERS_MAX;
use crate::types::{NodeId, Slot};
use std::fmt;

/// One set of replicas with its quorum sizes.
///
/// Invariants (checked by [`Membership::validate`]): `voters` non-empty, at
/// most [`VOTERS_MAX`], sorted and unique; `observers` sorted, unique and
/// disjoint from `voters`; `1 <= Q1, Q2 <= |voters|` and `Q1 + Q2 > |voters|`.
/// Quorum sizes travel with the membership through the log, so every replica
/// computes the same quorums for the same slot, including a replica that
/// joined later with a different local configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Membership {
    /// Replicas that promise and accept, sorted.
    pub voters: Vec<NodeId>,
    /// Replicas that learn but never count towards a quorum (etcd learners,
    /// ZooKeeper observers), sorted.
    pub observers: Vec<NodeId>,
    /// Promises a candidate needs from these voters.
    pub phase1_quorum: usize,
    /// Acceptances from these voters that choose a value.
    pub phase2_quorum: usize,
}

/// Why a membership (or a change to it) was refused. Membership changes come
/// from operators, so every rule breaks into an error, never a panic.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipError {
    /// Only the leader changes membership; `leader` is the best guess of who
    /// leads.
    NotLeader {
        /// The replica believed to lead, if any.
        leader: Option<NodeId>,
    },
    /// A change is still in progress (joint configuration in the log or not
    /// yet chosen); retry once it finished.
    InProgress,
    /// The proposed membership breaks a rule; the text says which.
    Invalid(String),
    /// The proposed membership equals the current one.
    Unchanged,
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::NotLeader { leader: Some(l) } => {
                write!(f, "not the leader; try {l}")
            }
            MembershipError::NotLeader { leader: None } => {
                write!(f, "not the leader; none known")
            }
            MembershipError::InProgress => {
                write!(f, "a membership change is already in progress")
            }
            MembershipError::Invalid(s) => write!(f, "invalid membership: {s}"),
            MembershipError::Unchanged => write!(f, "membership unchanged"),
        }
    }
}

impl std::error::Error for MembershipError {}

fn count(voters: &[NodeId], acks: &[NodeId]) -> usize {
    voters.iter().filter(|v| acks.contains(v)).count()
}

impl Membership {
    /// Majority quorums over `voters`; both lists are sorted (duplicates and
    /// overlaps are left for [`validate`](Membership::validate) to report).
    pub fn new(voters: &[NodeId], observers: &[NodeId]) -> Membership {
        let mut voters = voters.to_vec();
        voters.sort();
        let mut observers = observers.to_vec();
        observers.sort();
        let n = voters.len();
        Membership {
            voters,
            observers,
            phase1_quorum: n / 2 + 1,
            phase2_quorum: n / 2 + 1,
        }
    }

    /// Checks every rule in the type's doc.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let n = self.voters.len();
        let invalid = |s: String| Err(MembershipError::Invalid(s));
        if n == 0 || n > VOTERS_MAX {
            return invalid(format!("{n} voters; need 1..={VOTERS_MAX}"));
        }
        if self.voters.windows(2).any(|w| w[0] >= w[1]) {
            return invalid(format!(
                "voters {:?} must be sorted and unique",
                self.voters
            ));
        }
        if self.observers.windows(2).any(|w| w[0] >= w[1]) {
            return invalid(format!(
                "observers {:?} must be sorted and unique",
                self.observers
            ));
        }
        if let Some(o) = self.observers.iter().find(|o| self.voters.contains(o)) {
            return invalid(format!("{o} is both voter and observer"));
        }
        let (q1, q2) = (self.phase1_quorum, self.phase2_quorum);
        if q1 == 0 || q2 == 0 || q1 > n || q2 > n || q1 + q2 <= n {
            return invalid(format!(
                "Q1={q1} Q2={q2} must lie within 1..={n} and sum above {n}"
            ));
        }
        Ok(())
    }

    /// True when `id` votes here.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// True when `id` votes or observes here.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.observers.binary_search(&id).is_ok()
    }

    /// Voters whose acknowledgements meet every phase-1 quorum (`N − Q1 + 1`).
    pub fn confirm_quorum(&self) -> usize {
        self.voters.len() - self.phase1_quorum + 1
    }

    fn q1_met(&self, acks: &[NodeId]) -> bool {
        count(&self.voters, acks) >= self.phase1_quorum
    }

    fn q2_met(&self, acks: &[NodeId]) -> bool {
        count(&self.voters, acks) >= self.phase2_quorum
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = |v: &[NodeId]| {
            v.iter()
                .map(|n| n.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(f, "voters=({})", ids(&self.voters))?;
        if !self.observers.is_empty() {
            write!(f, " observers=({})", ids(&self.observers))?;
        }
        let majority = self.voters.len() / 2 + 1;
        if self.phase1_quorum != majority || self.phase2_quorum != majority {
            write!(f, " q1={} q2={}", self.phase1_quorum, self.phase2_quorum)?;
        }
        Ok(())
    }
}

/// The configuration governing a slot: one membership, or the joint
/// configuration of a change in progress.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Configuration {
    /// No change in progress.
    Stable(Membership),
    /// `C_old,new`: every phase-1 and phase-2 quorum must be met in `old` and
    /// in `new`, so a quorum of this configuration meets every quorum of
    /// either half.
    Joint {
        /// The membership being left.
        old: Membership,
        /// The membership being entered.
        new: Membership,
    },
}

impl Configuration {
    /// The halves whose quorums must all be met (one or two).
    pub fn halves(&self) -> Vec<&Membership> {
        match self {
            Configuration::Stable(m) => vec![m],
            Configuration::Joint { old, new } => vec![old, new],
        }
    }

    /// The membership this configuration leads to: itself when stable, the
    /// new half when joint.
    pub fn target(&self) -> &Membership {
        match self {
            Configuration::Stable(m) => m,
            Configuration::Joint { new, .. } => new,
        }
    }

    /// True for `C_old,new`.
    pub fn is_joint(&self) -> bool {
        matches!(self, Configuration::Joint { .. })
    }

    /// True when `id` votes in some half.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.halves().iter().any(|m| m.is_voter(id))
    }

    /// True when `id` votes or observes in some half.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.halves().iter().any(|m| m.is_member(id))
    }

    /// Every voter of every half, sorted and unique.
    pub fn voters(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .halves()
            .iter()
            .flat_map(|m| m.voters.iter().copied())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Every member (voters first, then observers that vote nowhere), unique.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all = self.voters();
        let mut observers: Vec<NodeId> = self
            .halves()
            .iter()
            .flat_map(|m| m.observers.iter().copied())
            .filter(|o| !all.contains(o))
            .collect();
        observers.sort();
        observers.dedup();
        all.extend(observers);
        all
    }

    /// True when `acks` holds a phase-1 quorum of every half.
    pub fn q1_met(&self, acks: &[NodeId]) -> bool {
        self.halves().iter().all(|m| m.q1_met(acks))
    }

    /// True when `acks` holds a phase-2 quorum of every half.
    pub fn q2_met(&self, acks: &[NodeId]) -> bool {
        self.halves().iter().all(|m| m.q2_met(acks))
    }

    /// Checks each half.
    pub fn validate(&self) -> Result<(), MembershipError> {
        for m in self.halves() {
            m.validate()?;
        }
        Ok(())
    }
}

impl fmt::Display for Configuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Configuration::Stable(m) => write!(f, "{m}"),
            Configuration::Joint { old, new } => write!(f, "joint[{old} | {new}]"),
        }
    }
}

/// The configuration in effect after `slot`: what the durable store keeps so
/// that membership survives compaction (the log entries that set it are gone)
/// and restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipRecord {
    /// The configuration governs the slots after this one.
    pub slot: Slot,
    /// The configuration.
    pub configuration: Configuration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn validation_refuses_bad_input() {
        assert!(Membership::new(&ids(&[1, 2, 3]), &[]).validate().is_ok());
        assert!(Membership::new(&[], &[]).validate().is_err());
        assert!(Membership::new(&ids(&[1, 1]), &[]).validate().is_err());
        assert!(Membership::new(&ids(&[1, 2]), &ids(&[2]))
            .validate()
            .is_err());
        let mut m = Membership::new(&ids(&[1, 2, 3]), &[]);
        m.phase1_quorum = 1;
        assert!(m.validate().is_err());
        let too_many: Vec<NodeId> = (1..=65).map(NodeId).collect();
        assert!(Membership::new(&too_many, &[]).validate().is_err());
    }

    #[test]
    fn joint_quorums_need_both_halves() {
        let old = Membership::new(&ids(&[1, 2, 3]), &[]);
        let new = Membership::new(&ids(&[3, 4, 5]), &[]);
        let joint = Configuration::Joint { old, new };
        assert!(!joint.q2_met(&ids(&[1, 2])));
        assert!(!joint.q2_met(&ids(&[4, 5])));
        assert!(joint.q2_met(&ids(&[1, 3, 4])));
        assert!(joint.q1_met(&ids(&[1, 2, 4, 5])));
        assert_eq!(joint.voters(), ids(&[1, 2, 3, 4, 5]));
    }
}
