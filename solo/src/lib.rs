//! # solo
//!
//! Cluster-wide singleton workers and a distributed supervisor that survive node crashes,
//! network partitions and rolling deploys, with no external coordinator.
//!
//! Status: the tokio driver, the public `Cluster` API and the `solo-node` binary land with
//! issue [C]. Today the crate re-exports the sans-IO core, whose membership protocol (join,
//! gossip, failure detection, graceful leave) is complete and tested.

pub use solo_core as core;
pub use solo_core::{Config, NodeId, NodeName};
