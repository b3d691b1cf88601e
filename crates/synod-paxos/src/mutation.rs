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
}

impl Mutation {
    /// Every mutation, for sweeping negative controls.
    pub const ALL: [Mutation; 5] = [
        Mutation::AcceptBelowPromise,
        Mutation::IgnoreAcceptedValues,
        Mutation::LeaseNotBinding,
        Mutation::ChooseWithoutQuorum,
        Mutation::ReadWithoutConfirmation,
    ];
}
