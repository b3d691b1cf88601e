//! The etcd v3 wire protocol: message types (prost) and, with the `grpc`
//! feature, the gRPC service traits and clients (tonic).
//!
//! The `.proto` files in `proto/` were written for synod from the etcd API
//! reference; every package, service, method, message, field name and field
//! number matches etcd's, which is what lets etcdctl and etcd client
//! libraries talk to synod unchanged. Byte fields are `bytes::Bytes`, so
//! keys and values move between the wire, the log and the store without
//! copies.

#![allow(missing_docs)] // generated code carries the .proto comments only
#![allow(clippy::all)] // generated code is not ours to restyle

/// Keys, values and events (etcd's `mvccpb` package).
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// Users, roles and key permissions (etcd's `authpb` package).
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// Requests, responses and services (etcd's `etcdserverpb` package).
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// synod's own log entries (package `synodpb`).
pub mod synodpb {
    include!(concat!(env!("OUT_DIR"), "/synodpb.rs"));
}

/// Node-to-node messages (package `peerpb`).
pub mod peerpb {
    include!(concat!(env!("OUT_DIR"), "/peerpb.rs"));
}

/// etcd's lock service (package `v3lockpb`).
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

/// etcd's election service (package `v3electionpb`).
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}
