//! Deliberately broken variants of the protocol (feature `mutations`), so the
//! simulator's negative controls can show each checker catching a real bug. A
//! checker that cannot fail proves nothing.

/// One way to break Paxos on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The acceptor accepts values from ballots below its promise.
    AcceptBelowPromise,
    /// A new leader ignores accepted values reported in promises and fills
    /// every unchosen slot with a no-op.
    IgnoreAcceptedValues,
    /// Acceptors promise new ballots while their lease to a leader runs, and
    /// forget stickiness: two replicas can then hold leases at once.
    LeaseNotBinding,
    /// The leader declares a slot chosen one acceptance short of a quorum.
    ChooseWithoutQuorum,
    /// The leader serves reads at once, with neither a lease nor a quorum
    /// round: a deposed leader then serves stale data.
    ReadWithoutConfirmation,
    /// Membership changes skip joint consensus: during a joint
    /// configuration only the new half's quorums count, and a candidate asks
    /// only the configuration in effect after its commit point, not the ones
    /// the membership entries in its promises install. A candidate that
    /// missed a change then gathers a quorum of the old voters only, and
    /// re-proposes slots the new voters chose differently.
    NoJointConsensus,
}

impl Mutation {
    /// Every mutation, for sweeping negative controls.
    pub const ALL: [Mutation; 6] = [
        Mutation::AcceptBelowPromise,
        Mutation::IgnoreAcceptedValues,
        Mutation::LeaseNotBinding,
        Mutation::ChooseWithoutQuorum,
        Mutation::ReadWithoutConfirmation,
        Mutation::NoJointConsensus,
    ];
}
