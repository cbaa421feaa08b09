//! A node's view of the cluster, for operators: [`Cluster::status`](crate::Cluster::status),
//! and `solo-node --metrics ADDR`'s `/status`.

use std::net::SocketAddr;
use std::time::SystemTime;

use solo_core::{ChildId, InstanceId, MemberState, Mode, NodeId};

/// What one node knows of the cluster now: its members and every child and singleton.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// The node that answered.
    pub node: NodeId,
    /// Every member it knows of, itself first, then by name; `Down` and `Left` ones until
    /// they are forgotten.
    pub members: Vec<MemberStatus>,
    /// Every singleton and child it knows of, by id.
    pub children: Vec<ChildStatus>,
}

/// One member, as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStatus {
    /// The process.
    pub id: NodeId,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Alive, suspected, down or left.
    pub state: MemberState,
    /// Its roles.
    pub roles: Vec<String>,
    /// Whether it drains (hosts nothing), as observers and leaving nodes do.
    pub draining: bool,
}

/// One singleton or child.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildStatus {
    /// Its id.
    pub id: ChildId,
    /// A singleton (declared) rather than a started child.
    pub singleton: bool,
    /// `Global` or `Exclusive`, if the node holds its spec.
    pub mode: Option<Mode>,
    /// The member placement assigns it to (it runs there, or starts there soon).
    pub assigned_to: Option<NodeId>,
    /// Its instance on the answering node, if one runs there.
    pub running_here: Option<RunningHere>,
}

/// An instance running on the answering node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunningHere {
    /// Which run of the child on that node.
    pub instance: InstanceId,
    /// When it started, by that node's clock.
    pub since: SystemTime,
    /// The fencing token of its lease, for an exclusive child.
    pub token: Option<u64>,
}
