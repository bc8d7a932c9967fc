//! Raft layer of boxoffice.
//!
//! - [`types`]: the openraft type config, declared once, and group/shard addressing.
//! - [`command`]: what goes into the replicated log (commands, stamped by the leader)
//!   and what comes out of apply (outcomes). These are the booking domain's wire types.
//! - [`network`]: node-to-node RPC over HTTP/2 (append entries, vote, snapshot chunks),
//!   one connection pool per peer shared by every group.
//! - [`server`]: the receiving side of that RPC as an axum router, dispatching by group.
//! - [`groups`]: the set of Raft groups hosted by one node.
//! - [`placement`]: which nodes should hold a shard's replicas and leadership
//!   (a deterministic scoring and one-step balancers).
//!
//! This crate knows nothing about RocksDB or the public HTTP API.

pub mod codec;
pub mod command;
pub mod groups;
pub mod network;
pub mod placement;
pub mod request_id;
pub mod server;
pub mod types;

pub use types::*;
