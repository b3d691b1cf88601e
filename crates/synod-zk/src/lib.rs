//! The ZooKeeper client protocol over synod's replicated state machine
//! (design 0012): zkCli, kazoo, Curator and other ZooKeeper clients talk
//! to any node of a synod cluster, beside etcd clients.
//!
//! - [`jute`] and [`proto`]: the pure wire codec (hostile bytes give a
//!   value or an error, never a panic);
//! - [`server`]: the listeners (plain and TLS), four-letter words and
//!   the reaper of containers and TTL nodes;
//! - `conn`: one connection (handshake, sessions, requests, replies);
//! - [`watches`]: who waits for which change, fed by the core thread.
//!
//! The tree's rules live in the state machine (`synod_kv::zk`): this
//! crate translates and never decides.

pub mod auth;
mod conn;
pub mod jute;
pub mod proto;
pub mod server;
pub mod watches;
mod words;

pub use server::{
    ZkConfig, ZkListen, ZkServer, MAX_BACKLOG_BYTES_DEFAULT, MAX_CLIENT_CNXNS_DEFAULT,
};

#[cfg(test)]
mod tests {
    use crate::proto::{create_mode, err};
    use synod_kv::zk::{code, mode};

    /// The state machine answers with ZooKeeper's numbers, which the
    /// front end sends as they are: the two lists must agree.
    #[test]
    fn the_tree_speaks_the_wire_codes() {
        let codes = [
            (code::OK, err::OK),
            (code::RUNTIME_INCONSISTENCY, err::RUNTIME_INCONSISTENCY),
            (code::BAD_ARGUMENTS, err::BAD_ARGUMENTS),
            (code::UNIMPLEMENTED, err::UNIMPLEMENTED),
            (code::NO_NODE, err::NO_NODE),
            (code::NO_AUTH, err::NO_AUTH),
            (code::BAD_VERSION, err::BAD_VERSION),
            (
                code::NO_CHILDREN_FOR_EPHEMERALS,
                err::NO_CHILDREN_FOR_EPHEMERALS,
            ),
            (code::NODE_EXISTS, err::NODE_EXISTS),
            (code::NOT_EMPTY, err::NOT_EMPTY),
            (code::SESSION_EXPIRED, err::SESSION_EXPIRED),
            (code::INVALID_ACL, err::INVALID_ACL),
        ];
        for (tree, wire) in codes {
            assert_eq!(tree, wire);
        }
        let modes = [
            (mode::PERSISTENT, create_mode::PERSISTENT),
            (mode::EPHEMERAL, create_mode::EPHEMERAL),
            (
                mode::PERSISTENT_SEQUENTIAL,
                create_mode::PERSISTENT_SEQUENTIAL,
            ),
            (
                mode::EPHEMERAL_SEQUENTIAL,
                create_mode::EPHEMERAL_SEQUENTIAL,
            ),
            (mode::CONTAINER, create_mode::CONTAINER),
            (mode::PERSISTENT_WITH_TTL, create_mode::PERSISTENT_WITH_TTL),
            (
                mode::PERSISTENT_SEQUENTIAL_WITH_TTL,
                create_mode::PERSISTENT_SEQUENTIAL_WITH_TTL,
            ),
        ];
        for (tree, wire) in modes {
            assert_eq!(tree, wire);
        }
    }
}
