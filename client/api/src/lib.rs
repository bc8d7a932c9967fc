//! The boxoffice HTTP API as types: every request body and every answer of the
//! public (`/v1`) and admin (`/admin/v1`) API, the live seat-map stream's events,
//! and the problem codes of its errors.
//!
//! One definition for everyone who speaks the API: the node serializes these
//! types, and the client library, the fault harness and the benchmarks read them,
//! so a field added here reaches all of them at once and cannot drift.
//!
//! - [`problem`]: [`ProblemCode`] (code, status, whether a write may have applied)
//!   and the RFC 9457 [`Problem`] body.
//! - [`common`]: what many answers share: [`Applied`], [`Freshness`],
//!   [`Consistency`].
//! - [`public`]: events, seat maps, holds, bookings, search.
//! - [`stream`]: the live seat-map stream (`GET /v1/events/{id}/seats/stream`).
//! - [`admin`]: catalogue writes, cluster bootstrap and status, membership, faults.
//! - [`batch`]: several writes in one request (`POST /v1/batch`).
//!
//! Ids of holds and bookings travel as their rendered strings (`h3-17`, `b3-18`);
//! times as ms since the Unix epoch, with an RFC 3339 twin where people read them.
//! This crate depends on serde (and serde_json for raw bodies, the webhook
//! signature's hashes): clients need nothing of the server.

pub mod admin;
pub mod batch;
pub mod common;
pub mod problem;
pub mod public;
pub mod queue;
pub mod signature;
pub mod stream;

pub use admin::*;
pub use batch::*;
pub use common::*;
pub use problem::{Problem, ProblemCode};
pub use public::*;
pub use queue::*;
pub use stream::*;

/// Header carrying a write's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Header on write answers naming the shard's leader by its public address
/// (`host:port`, its `advertise`) as the answering node knows it: where to send
/// the shard's next writes. Never a cluster (peer) address.
pub const LEADER_HEADER: &str = "x-boxoffice-leader";
/// Header on write answers: the Raft term of the leader [`LEADER_HEADER`]
/// names. A hint of a higher term is newer; a client's routing cache never
/// takes an older one over a newer.
pub const TERM_HEADER: &str = "x-boxoffice-term";
/// Header on write answers: the shard the write went to.
pub const SHARD_HEADER: &str = "x-boxoffice-shard";
/// Header on write answers: the shard's placement epoch as the answering node's
/// directory has it (the log index of the membership it describes; it grows
/// with every replica move).
pub const EPOCH_HEADER: &str = "x-boxoffice-epoch";
/// Header on every public and admin answer naming the id of the node that gave it.
pub const NODE_HEADER: &str = "x-boxoffice-node";
/// Longest idempotency key accepted (bytes).
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;
