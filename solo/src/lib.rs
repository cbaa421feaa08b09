//! # solo
//!
//! Cluster-wide singleton workers and a distributed supervisor that survive node crashes,
//! network partitions and rolling deploys, with no external coordinator: no etcd, no Redis,
//! no Kubernetes lease. The Rust answer to Elixir's Solo, Pogo, Swarm and Horde.
//!
//! ## Quick start
//!
//! Every node runs the same program: register the worker kinds it can run, point it at its
//! peers, declare the singleton. Exactly one node runs it; when that node dies, another takes
//! over (in milliseconds after a crash, in under two seconds after a silent failure).
//!
//! ```no_run
//! use solo::{Cluster, WorkerContext, WorkerError};
//!
//! async fn invoice_sync(ctx: WorkerContext) -> Result<(), WorkerError> {
//!     loop {
//!         tokio::select! {
//!             _ = ctx.shutdown() => return Ok(()),
//!             _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
//!                 // one batch of work
//!             }
//!         }
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = Cluster::builder()
//!     .node_name("a")
//!     .listen("127.0.0.1:7001".parse()?)
//!     .seeds(["127.0.0.1:7002".parse()?, "127.0.0.1:7003".parse()?])
//!     .cookie(std::env::var("SOLO_COOKIE")?)
//!     .worker("invoice-sync", invoice_sync)
//!     .start()
//!     .await?;
//!
//! // A singleton: one instance in the whole cluster.
//! cluster.singleton(&"invoice-sync".parse()?, ["invoice-sync"]).await?;
//!
//! // A distributed child: started from any node, run once, restarted elsewhere if its
//! // node dies.
//! let spec = solo::ChildSpec::new("customer-42".parse()?, "invoice-sync", b"42".to_vec());
//! cluster.supervisor().start_child(spec).await?;
//!
//! tokio::signal::ctrl_c().await?;
//! cluster.leave().await; // hands this node's workers to the others first
//! # Ok(()) }
//! ```
//!
//! ## How it works
//!
//! * The protocol lives in [`solo_core`], a sans-IO state machine: membership (SWIM-style
//!   probes, suspicion and refutation, gossip), placement (rendezvous hashing over the live,
//!   eligible members) and supervision decisions. It never reads a clock or a socket, which
//!   is what lets it be tested deterministically, thousands of schedules a second.
//! * This crate runs one driver task per node: it feeds the core frames from the transport,
//!   link changes (a closed connection is the fastest failure signal there is), timeouts and
//!   your commands, and carries out what the core asks: send a message, start or stop a
//!   worker, report an event.
//! * Workers run as tokio tasks. A worker that returns an error or panics is an exit, which
//!   the child's restart policy handles; it never takes the node down.
//! * Partitions (`Available` mode): each side keeps running what it owns in its view; when
//!   the partition heals, every node recomputes owners and duplicates stop, deterministically.
//!
//! ## Transports and features
//!
//! Every transport runs the same connection manager: one connection per pair of nodes,
//! authenticated by the cluster cookie (an HMAC challenge that never sends the cookie), with
//! keep-alives, reconnection with backoff, and a closed connection reported at once. What
//! carries its bytes is chosen by cargo feature and builder method:
//!
//! * no feature: plain TCP. The cookie authenticates peers, but frames are neither
//!   encrypted nor integrity-protected: use it on a network you trust.
//! * `tls`: mutual TLS 1.3 over TCP against a cluster CA ([`ClusterBuilder::tls`]).
//! * `quic`: QUIC, always encrypted, with the same mutual TLS ([`ClusterBuilder::quic`]).
//! * `certgen`: generates a cluster CA and node certificates ([`tls::write_cluster`],
//!   `solo-node certs`), so that trying TLS needs no openssl.
//! * `prometheus`: `solo-node --metrics ADDR` (see "Metrics" below); the library records
//!   metrics without it.
//!
//! All of it runs on one crypto provider, `ring`.
//!
//! ## Metrics
//!
//! solo records through the [`metrics`](https://docs.rs/metrics) facade, into whatever
//! recorder the application installed (a Prometheus exporter, an OpenTelemetry bridge);
//! without one, each record is a call that does nothing.
//! Install the recorder before [`ClusterBuilder::start`]: the hot paths keep handles made
//! at start. The `prometheus` feature builds `solo-node --metrics ADDR`, which serves them
//! at `/metrics` (and [`Cluster::status`] as JSON at `/status`).
//!
//! Names follow Prometheus habits: a `solo_` prefix, the unit in the name, `_total` on
//! counters; every label takes a fixed, small set of values (an outcome, a state, a reason),
//! or a node name (one per member): never a child id.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `solo_members` | gauge | `state` (`alive`, `suspect`, `down`, `left`) | members in this node's view, itself included |
//! | `solo_membership_events_total` | counter | `event` (`up`, `suspect`, `refuted`, `down`, `left`) | membership changes this node saw |
//! | `solo_suspicion_to_down_seconds` | histogram | | from a member's suspicion to its `down` here |
//! | `solo_failover_seconds` | histogram | | from the `down` of a child's owner to its new instance running here |
//! | `solo_handoffs_total` | counter | `outcome` (`resume`, `restart`, `ignore`, `failed`) | actors moving away from here, by their `begin_handoff` |
//! | `solo_handoff_seconds` | histogram | | from asking a moving instance for its state to the state leaving |
//! | `solo_worker_stops_total` | counter | `reason` (as `WorkerStopped`'s, snake case) | instances that ended here |
//! | `solo_worker_restarts_total` | counter | | instances started again here after a failure |
//! | `solo_child_give_ups_total` | counter | | children given up past their restart intensity |
//! | `solo_conflicts_total` | counter | | duplicates found after a partition healed |
//! | `solo_calls_total` | counter | `outcome` | calls made from this node, by outcome |
//! | `solo_call_duration_seconds` | histogram | `outcome` | their round trip, as the caller saw it |
//! | `solo_casts_total` | counter | `outcome` | casts sent from this node, by outcome |
//! | `solo_messages_dropped_total` | counter | `what`, `reason` | what this node could not keep (as `MessageDropped`) |
//! | `solo_lease_events_total` | counter | `event` (`acquired`, `renewed`, `lost`) | the leases of exclusive children here |
//! | `solo_transport_frames_total` | counter | `peer`, `direction` (`in`, `out`) | frames to and from each peer |
//! | `solo_transport_bytes_total` | counter | `peer`, `direction` | their bytes, length prefixes included |
//! | `solo_handshakes_rejected_total` | counter | `reason` | handshakes that failed, by why |
//! | `solo_discovery_beacons_total` | counter | `outcome` (`taken`, `bad_tag`, `replayed`, `stale`, `other_cluster`, `own`, `foreign`, `length`, `bad_name`, `malformed`) | multicast beacons heard, by what was made of them |

mod actor;
mod cluster;
mod data_dir;
mod driver;
mod seeds;
mod status;
mod telemetry;
mod worker;

pub use actor::{Actor, ActorRef, CallError, Handoff, HandoffError};
pub use cluster::{
    ChildStart, Cluster, ClusterBuilder, ClusterStartError, Error, MIN_COOKIE_LEN, Supervisor,
};
pub use data_dir::DataDirError;
pub use seeds::{DiscoveryError, MulticastDiscovery, SeedNameError, validate_seed_name};
pub use status::{ChildStatus, ClusterStatus, MemberStatus, RunningHere};
pub use worker::{Worker, WorkerContext, WorkerError, WorkerStopReason};

pub use solo_core as core;

/// Certificates for the `tls` and `quic` transports: [`TlsConfig`](tls::TlsConfig) loads a
/// node's PEM files and checks them (each error names its file).
#[cfg(feature = "tls")]
pub mod tls {
    #[cfg(feature = "certgen")]
    pub use solo_transport_tcp::tls::{
        CertgenError, CertificateAuthority, NODE_VALIDITY, NodeCertificate, write_cluster,
    };
    pub use solo_transport_tcp::tls::{TlsConfig, TlsError};
}
pub use solo_core::{
    ChildId, ChildInfo, ChildSpec, Config, InstanceId, LeaseLoss, MemberEvent, MemberState, Mode,
    NodeId, NodeName, RestartPolicy, Scope, SupervisorEvent, WorkerSpec,
};

/// Something that happened on this node, from [`Cluster::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Membership changed.
    Member(MemberEvent),
    /// A child's workers started running here.
    WorkerStarted {
        /// The child.
        id: ChildId,
        /// Which run.
        instance: InstanceId,
        /// The fencing token of its lease, for an
        /// [`Exclusive`](solo_core::Mode::Exclusive) child.
        token: Option<u64>,
    },
    /// A child's workers ended here (every task has finished).
    WorkerStopped {
        /// The child.
        id: ChildId,
        /// Which run.
        instance: InstanceId,
        /// Why.
        reason: WorkerStopReason,
    },
    /// A supervisor event: a start acknowledged, a child given up, a conflict.
    Supervisor(SupervisorEvent),
    /// A peer this node dialed (a seed, a member) is configured for another cluster: another
    /// cluster name, protocol version or voter set. They do not talk; fix the deployment.
    /// Said once per address and reason.
    PeerMisconfigured {
        /// The address dialed.
        addr: std::net::SocketAddr,
        /// What differs, naming both sides' values.
        reason: String,
    },
    /// A newer process took this node's name; this one stopped taking part.
    Superseded {
        /// The newer process.
        by: NodeId,
    },
    /// An actor's state could not be handed over as it moved away from this node (see
    /// [`Actor::begin_handoff`]): the new instance starts without it.
    HandoffFailed {
        /// The child.
        id: ChildId,
        /// The instance that moved.
        instance: InstanceId,
        /// Why.
        error: HandoffError,
    },
    /// A message or state this node held for others could not be kept: a cast with no
    /// reachable owner, a reply or state the transport did not take in time, a state that
    /// came unasked, a state its actor did not give before the handoff or drain timeout. Calls are never reported here: their caller gets a [`CallError`].
    MessageDropped {
        /// The child it was for (`None` for a reply).
        id: Option<ChildId>,
        /// What it was.
        what: solo_core::messaging::Dropped,
        /// Why.
        reason: solo_core::messaging::DropReason,
    },
}

impl Event {
    /// The name `solo-node --json` prints for this event (`member_up`, `worker_started`,
    /// `lease_lost`…), which is also the `event` field of its `tracing` event (target
    /// `solo::event`); `None` for an event neither reports.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            Event::Member(MemberEvent::Up(_)) => "member_up",
            Event::Member(MemberEvent::Down(_)) => "member_down",
            Event::Member(MemberEvent::Left(_)) => "member_left",
            Event::Member(MemberEvent::Suspect(_)) => "member_suspect",
            Event::Member(MemberEvent::Refuted(_)) => "member_refuted",
            Event::WorkerStarted { .. } => "worker_started",
            Event::WorkerStopped { .. } => "worker_stopped",
            Event::Supervisor(SupervisorEvent::LeaseAcquired { .. }) => "lease_acquired",
            Event::Supervisor(SupervisorEvent::LeaseLost { .. }) => "lease_lost",
            Event::PeerMisconfigured { .. } => "peer_misconfigured",
            Event::Superseded { .. } => "superseded",
            Event::HandoffFailed { .. } => "handoff_failed",
            Event::MessageDropped { .. } => "message_dropped",
            _ => return None,
        })
    }
}
