//! The sans-IO core of [solo](https://docs.rs/solo): membership, failure detection and the
//! wire codec, as a plain state machine.
//!
//! Nothing in this crate reads a clock, opens a socket, spawns a task or draws ambient
//! randomness (its `clippy.toml` forbids it). A [`Node`] is driven by its caller: every input
//! carries the time, every output is data to poll. The `solo` crate drives it with tokio and
//! a transport; a test drives it by hand; the simulator in [`testing`] drives thousands of
//! them through seeded faults in one thread.
//!
//! # The protocol in one page
//!
//! * **Identity.** A [`NodeId`] is a [`NodeName`] and an [`Incarnation`] the process picks at
//!   start. A restarted process is a new member and retires its former self.
//! * **Join.** A new node sends its table to its seeds; a seed answers with the whole table,
//!   and the newcomer announces itself to every member directly.
//! * **Failure detection.** Each node probes its [`Config::monitors`] successors on a
//!   hash-ordered ring every [`Config::probe_interval`]. A missed probe is retried through
//!   [`Config::indirect_probes`] other members (SWIM's `ping-req`); still silent, the target
//!   is suspected, and every member, the suspect included, is told at once. The suspect
//!   refutes by raising its version; otherwise it is declared `Down` after
//!   [`Config::suspicion_timeout`]. A transport's [`Link::Down`] skips all of that.
//! * **Dissemination.** News is sent straight to every member by whoever first knew it,
//!   piggybacked on probes for a few rounds in case of loss, and reconciled by a full-table
//!   exchange with one random member every [`Config::sync_interval`]; the same exchange with
//!   one `Down` member heals partitions.
//! * **Convergence.** Updates merge by a total order (see [`wire::MemberUpdate`]), so tables
//!   converge whatever order gossip arrives in.
//! * **Messaging.** Calls, casts and the handoff of an actor's state when its child moves
//!   are a second state machine, [`messaging::Messenger`], that reads the node's view and
//!   is driven the same way.
//!
//! * **Claims.** `from`, the sender the transport authenticated, is trusted to speak for
//!   itself, not for others. A claim that another node is suspect, down or gone is refuted
//!   by that node whatever its version; a `Left` counts only from the node that leaves (relayed,
//!   it is a suspicion); versions beyond [`MAX_VERSION`], or more than [`MAX_VERSION_JUMP`]
//!   above what is known, and child stamps beyond
//!   [`supervisor::MAX_STAMP_COUNTER`] or [`supervisor::MAX_STAMP_JUMP`] ahead, are
//!   ignored. A member can still do what the protocol lets every member do (start and
//!   terminate children, vote, announce a newer process of a name); the cookie and the
//!   cluster's certificates decide who is a member.
//!
//! # Limits
//!
//! Every table and queue has a cap ([`Config::max_members`],
//! [`Config::max_queued_transmits`], frames of at most [`wire::MAX_FRAME_LEN`] bytes), and no
//! input, however malformed, panics a node.

mod config;
mod id;
mod membership;
pub mod messaging;
mod node;
mod placement;
mod rng;
pub mod supervisor;
pub mod wire;

#[cfg(feature = "testing")]
pub mod testing;

/// One real instant for a unit test to start its own clock from.
#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the only clock read, and only in unit tests
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}

pub use config::{Config, ConfigBuilder, ConfigError};
pub use id::{Incarnation, InstanceId, MAX_NODE_NAME_LEN, NodeId, NodeName, NodeNameError};
pub use membership::{
    MAX_ROLE_LEN, MAX_ROLES, MAX_SINGLETONS, MAX_VERSION, MAX_VERSION_JUMP, Member, MemberEvent,
    MemberState, NodeMeta,
};
pub use node::{
    Action, CommandError, Fence, Link, Node, NodeBuilder, SendFailure, Status, TableSizes, Transmit,
};
pub use placement::{ChildId, ChildIdError, MAX_CHILD_ID_LEN, owner, weight};
pub use rng::Rng;
pub use supervisor::{
    ChildInfo, ChildSpec, DeclareError, Exit, LeaseLoss, Mode, RestartPolicy, Scope,
    StartChildError, StopReason, SupervisorEvent, TerminateError, WorkerSpec,
};
