//! The distributed supervisor and singletons: what runs, where, and what happens when it
//! exits.
//!
//! * **Singletons** are declared on every node ([`Node::declare_singleton`]); each node
//!   announces what it declared, and the declaring node with the highest rendezvous weight runs
//!   it. Two nodes that declared one name with different specs are reported
//!   ([`SupervisorEvent::SingletonConflict`]); the owner runs its own spec, so the singleton is
//!   never split in two.
//! * **Distributed children** are started and terminated from any node
//!   ([`Node::start_child`], [`Node::terminate_child`]); their specs are replicated to every
//!   node (see [`ChildRecord`]), and the owner is computed from the member view.
//! * **Supervision** follows OTP: a [`RestartPolicy`] and a restart intensity per child; the
//!   runtime reports exits ([`Node::worker_exited`]) and the core decides.
//! * **Partitions** (`Available` mode): each side runs what it owns in its own view; when the
//!   views merge again, every node recomputes owners and a node that no longer owns a child
//!   stops it ([`StopReason::Moved`]), offering its state to the owner.
//!
//! Every decision to run a child goes through one function, `Node::may_run`, which is where
//! `Exclusive` mode's lease check will stand.
//!
//! [`Node::declare_singleton`]: crate::Node::declare_singleton
//! [`Node::start_child`]: crate::Node::start_child
//! [`Node::terminate_child`]: crate::Node::terminate_child
//! [`Node::worker_exited`]: crate::Node::worker_exited

mod spec;
mod table;

pub use spec::{
    ChildSpec, Exit, MAX_GROUP_LEN, MAX_LABEL_LEN, MAX_SPEC_LEN, Mode, RestartPolicy, SpecError,
    WorkerSpec,
};
pub(crate) use table::ChildTable;
pub use table::{
    ChildRecord, ChildState, DIGEST_BUCKETS, MAX_STAMP_COUNTER, MAX_STAMP_JUMP, Stamp,
};

use crate::id::NodeId;
use crate::placement::ChildId;

/// Why the runtime is asked to stop a child here.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Another node owns it now (a join, a healed partition, a draining node). The runtime
    /// should offer the worker's state to that node (handoff, or conflict resolution when the
    /// owner already runs an instance of its own).
    Moved {
        /// The new owner, if one is known.
        to: Option<NodeId>,
    },
    /// No node may run it at the moment (none has its role, or all are draining).
    NoEligibleNode,
    /// `terminate_child` ended it.
    Terminated,
    /// This node is leaving the cluster.
    Leaving,
    /// A newer process with this node's name joined the cluster: it owns everything now, so
    /// this stale process stops at once, with no handoff.
    Superseded,
    /// An [`Exclusive`](Mode::Exclusive) child's lease could not be renewed (this node is
    /// cut off from a majority of the voters), or a newer holder was granted it. The worker
    /// must have stopped by `deadline` (this node's clock); the runtime aborts it there.
    LeaseLost {
        /// When the lease ends.
        deadline: std::time::Instant,
    },
}

/// Why an exclusive child's lease was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseLoss {
    /// Renewals did not reach a majority of the voters in time (a partition, voters down,
    /// or this process was frozen).
    NotRenewed,
    /// A voter granted the child to a newer holder, under a larger token.
    Taken,
}

/// Which children `which_children` lists: `Supervisor::which_children` in the `solo` facade,
/// [`Node::which_children`](crate::Node::which_children) here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Those running on this node.
    Local,
    /// Every live child and singleton in the cluster, as this node knows them.
    Global,
}

/// One child or singleton, as `which_children` reports it (`Supervisor::which_children` in
/// the `solo` facade, [`Node::which_children`](crate::Node::which_children) here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child's id.
    pub id: ChildId,
    /// Whether it is a singleton (declared) rather than a started child.
    pub singleton: bool,
    /// The member placement assigns it to, by this node's view: it runs there, or starts
    /// there as soon as that member hears of it (`whereis` gives the same). `None` while no
    /// member may run it (none has its role, or all are draining). Where it *runs* here is
    /// [`running_here`](Self::running_here); during a move the two may briefly differ.
    pub assigned_to: Option<NodeId>,
    /// Whether an instance of it runs on this node now.
    pub running_here: bool,
}

/// What happened to children, for the user to hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorEvent {
    /// A `start_child` made on this node can be answered: a second member holds the spec
    /// (`replicated`), or this node has joined and is alone in its view, so the spec is held
    /// here only and a crash of this node before it meets others would lose it.
    ChildStarted {
        /// The child.
        id: ChildId,
        /// Whether another member acknowledged holding the spec.
        replicated: bool,
    },
    /// A `start_child` made on this node got no confirmation from another member within
    /// [`Config::start_ack_timeout`](crate::Config::start_ack_timeout), although its
    /// replication was sent again meanwhile. The child is held here (see
    /// [`StartChildError::Unconfirmed`]).
    ChildUnconfirmed {
        /// The child.
        id: ChildId,
    },
    /// A child ended because its restart policy said not to restart it.
    Completed {
        /// The child.
        id: ChildId,
    },
    /// A child exceeded its restart intensity and was given up. A distributed child is
    /// ended cluster-wide; a singleton is withdrawn from this node only (its declaration is
    /// removed, and another declaring node takes it over).
    GaveUp {
        /// The child.
        id: ChildId,
    },
    /// This node holds the lease of an [`Exclusive`](Mode::Exclusive) child, under `token`,
    /// and starts its instance now.
    LeaseAcquired {
        /// The child.
        id: ChildId,
        /// The fencing token: greater than every token granted before for this child.
        token: u64,
    },
    /// This node lost the lease of an exclusive child; its instance is being stopped (see
    /// [`StopReason::LeaseLost`]).
    LeaseLost {
        /// The child.
        id: ChildId,
        /// The token of the lease lost.
        token: u64,
        /// Why.
        reason: LeaseLoss,
    },
    /// Another node declared this singleton with a different spec. The owner runs its own
    /// spec; fix the deployment so that every node declares the same.
    SingletonConflict {
        /// The singleton.
        name: ChildId,
        /// The node whose declaration differs.
        peer: NodeId,
    },
}

/// Why `start_child` refused a child. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartChildError {
    /// A live child or a singleton already has this id.
    #[error("a child or singleton with id {0:?} already exists")]
    Duplicate(ChildId),
    /// The spec breaks a limit.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The cluster already holds [`Config::max_children`](crate::Config) live children.
    #[error("the cluster already holds the maximum of {0} children")]
    TooMany(usize),
    /// The node left or was superseded.
    #[error("node is no longer active")]
    NotActive,
    /// The child is [`Exclusive`](Mode::Exclusive) and this node has no voters configured.
    #[error("an exclusive child needs voters (NodeBuilder::voters), and none are configured")]
    NoVoters,
    /// Unlike the other variants, the child *was* started: this node holds its spec (and
    /// may run it), and anti-entropy goes on replicating it. But no other member confirmed
    /// holding it within [`Config::start_ack_timeout`](crate::Config::start_ack_timeout)
    /// (messages were lost, or the peers are unreachable), so a crash of this node now could
    /// lose it. Check with `which_children`, or terminate it and start it again.
    #[error("child {0:?} was started here, but no other member confirmed holding it in time")]
    Unconfirmed(ChildId),
}

/// Why `terminate_child` refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TerminateError {
    /// No live child has this id.
    #[error("no live child with id {0:?}")]
    NotFound(ChildId),
    /// The id names a singleton, which runs as long as nodes declare it.
    #[error("{0:?} is a singleton and cannot be terminated")]
    Singleton(ChildId),
    /// The node left or was superseded.
    #[error("node is no longer active")]
    NotActive,
}

/// Why `declare_singleton` refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeclareError {
    /// This node already declared a singleton of this name with another spec, or a child
    /// has this id.
    #[error("{0:?} is already declared or started differently")]
    Duplicate(ChildId),
    /// The spec breaks a limit.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// This node declared as many singletons as it may (256).
    #[error("too many singletons declared on this node")]
    TooMany,
    /// The singleton is [`Exclusive`](Mode::Exclusive) and this node has no voters
    /// configured.
    #[error("an exclusive singleton needs voters (NodeBuilder::voters), and none are configured")]
    NoVoters,
    /// The node left or was superseded.
    #[error("node is no longer active")]
    NotActive,
}
