//! Multi-Paxos for one replication group, as a pure state machine.
//!
//! A [`Replica`] is acceptor, proposer and learner at once. It performs no
//! I/O, reads no clock and spawns nothing: the caller feeds it messages
//! ([`Replica::step`], with the time it arrived), time ([`Replica::tick`]), commands
//! ([`Replica::propose`]) and read requests ([`Replica::read`]), then collects
//! a [`Ready`] saying what to persist, what to send and what was chosen. That
//! is what lets the simulator run the real protocol under faults, and the
//! node runtime run it over real disks and sockets.
//!
//! The one ordering rule the runtime must keep is built into the interface:
//! replies that report a promise or an acceptance are released only by
//! [`Replica::on_persisted`], which takes the token of the `Ready` whose
//! `persist` has become durable.
//!
//! ```
//! use synod_paxos::{Config, Envelope, NodeId, Replica, Time};
//!
//! // Three replicas on a perfect network, driven by hand.
//! let ids = [NodeId(1), NodeId(2), NodeId(3)];
//! let mut replicas: Vec<Replica<&str>> = ids
//!     .iter()
//!     .map(|&id| Replica::new(Config::majority(id, &ids), Time(0)).unwrap())
//!     .collect();
//! replicas[0].campaign_now();
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _round in 0..20 {
//!     let mut mail: Vec<Envelope<&str>> = Vec::new();
//!     for (i, r) in replicas.iter_mut().enumerate() {
//!         let ready = r.ready();
//!         // A real runtime writes `ready.persist` durably here.
//!         mail.extend(ready.messages);
//!         if i == 0 {
//!             applied.extend(ready.apply.into_iter().map(|a| a.value));
//!         }
//!         r.on_persisted(ready.token);
//!     }
//!     for m in mail {
//!         replicas[(m.to.0 - 1) as usize].step(m.from, m.message, Time(0));
//!     }
//!     if !proposed && replicas[0].propose("x=1").is_ok() {
//!         proposed = true;
//!     }
//! }
//! // The leader applied its takeover no-op, then the command. (Followers
//! // learn the commit point from the next accept or heartbeat.)
//! assert_eq!(applied.len(), 2);
//! ```

mod acceptor;
mod candidate;
mod config;
mod leader;
mod limits;
mod log;
mod membership;
mod message;
mod mutation;
mod ready;
mod replica;
mod rng;
mod types;

pub use config::{Config, ConfigError, VOTERS_MAX};
pub use limits::{
    Refused, CANDIDATE_LAG_MAX, MESSAGE_SLOTS_MAX, ROUND_MAX, SLOTS_AHEAD_WINDOWS,
    WINDOW_SLOTS_LIMIT,
};
pub use log::{Entry, Log};
pub use membership::{Configuration, Membership, MembershipError, MembershipRecord};
pub use message::{Envelope, Message, SlotRecord, ValueFmt};
pub use mutation::Mutation;
pub use ready::{Apply, Persist, PersistToken, ReadReady, Ready};
pub use replica::{Durable, ProposeError, Replica, RoleKind, Status, TransferError};
pub use types::{Ballot, NodeId, ReadId, Slot, Time, Value};
