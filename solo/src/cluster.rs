//! The public API: [`Cluster`], built with [`ClusterBuilder`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use solo_core::{
    ChildId, ChildInfo, ChildSpec, Config, ConfigError, DeclareError, Incarnation, Node, NodeId,
    NodeName, NodeNameError, Scope, StartChildError, TerminateError, WorkerSpec,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::Event;
use crate::actor::{Actor, ActorRef, CallError};
use crate::driver::{Command, Driver};
use crate::worker::{Registry, Spawner, Worker};

/// The default of [`ClusterBuilder::mailbox_capacity`].
const DEFAULT_MAILBOX_CAPACITY: usize = 1_024;

/// The shortest cookie `solo-node` accepts, and below which [`ClusterBuilder`] warns: 16
/// bytes, 128 bits if they are random.
pub const MIN_COOKIE_LEN: usize = 16;

/// Why a cluster node could not start. Nothing is left running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterStartError {
    /// No node name was given, or it is invalid.
    #[error("invalid node name: {0}")]
    NodeName(#[from] NodeNameError),
    /// [`ClusterBuilder::node_name`] was not called.
    #[error("a node name is required (ClusterBuilder::node_name)")]
    MissingName,
    /// [`ClusterBuilder::listen`] was not called.
    #[error("a listen address is required (ClusterBuilder::listen)")]
    MissingListen,
    /// [`ClusterBuilder::cookie`] was not called, or the cookie is empty.
    #[error("a non-empty cluster cookie is required (ClusterBuilder::cookie)")]
    MissingCookie,
    /// The protocol configuration cannot work.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// The transport could not start (for example, the port is in use).
    #[error(transparent)]
    Transport(#[from] solo_transport_tcp::TransportStartError),
    /// A voter name ([`ClusterBuilder::voters`]) is not a valid node name.
    #[error("invalid voter name {name:?}: {source}")]
    Voter {
        /// The name given.
        name: String,
        /// Why it is invalid.
        source: NodeNameError,
    },
    /// The data directory ([`ClusterBuilder::data_dir`]) cannot be read or created, or
    /// holds something else than lease tokens.
    #[error(transparent)]
    DataDir(#[from] crate::data_dir::DataDirError),
    /// The QUIC endpoint could not be configured.
    #[cfg(feature = "quic")]
    #[error(transparent)]
    Quic(#[from] solo_transport_quic::QuicError),
    /// A seed name ([`ClusterBuilder::seed_names`]) is not `HOST:PORT`.
    #[error(transparent)]
    SeedName(#[from] crate::SeedNameError),
    /// Multicast discovery ([`ClusterBuilder::discover_multicast`]) is misconfigured, or
    /// its socket cannot join the group.
    #[error(transparent)]
    Discovery(#[from] crate::DiscoveryError),
}

/// What carries the transport's streams.
#[derive(Debug, Clone, Default)]
enum Carrier {
    #[default]
    Tcp,
    #[cfg(feature = "tls")]
    Tls(crate::tls::TlsConfig),
    #[cfg(feature = "quic")]
    Quic(crate::tls::TlsConfig),
}

/// Why a request to the cluster failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node has left the cluster (or its driver stopped); nothing was done.
    #[error("this node has left the cluster")]
    Closed,
    /// The singleton was refused; nothing changed.
    #[error(transparent)]
    Declare(#[from] DeclareError),
    /// The child was refused; nothing changed.
    #[error(transparent)]
    Start(#[from] StartChildError),
    /// The termination was refused; nothing changed.
    #[error(transparent)]
    Terminate(#[from] TerminateError),
}

/// Builds and starts a [`Cluster`] node. See [`Cluster::builder`].
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct ClusterBuilder {
    name: Option<String>,
    incarnation: Option<u64>,
    listen: Option<SocketAddr>,
    advertise: Option<SocketAddr>,
    seeds: Vec<SocketAddr>,
    seed_names: Vec<String>,
    discovery: Option<crate::MulticastDiscovery>,
    cookie: Vec<u8>,
    cluster_name: String,
    config: Config,
    roles: Vec<String>,
    registry: Registry,
    shutdown_grace: Duration,
    drain_timeout: Duration,
    handoff_timeout: Duration,
    mailbox_capacity: usize,
    simulation_seed: Option<u64>,
    sabotage_ignore_moves: bool,
    sabotage_skip_claims: bool,
    sabotage_keep_silent_connections: bool,
    carrier: Carrier,
    observer: bool,
    voters: Vec<String>,
    data_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("seeds", &self.seeds)
            .field("cluster_name", &self.cluster_name)
            .field("workers", &self.registry)
            .field("carrier", &self.carrier)
            .finish_non_exhaustive()
    }
}

impl ClusterBuilder {
    /// The names of the nodes that grant the leases of
    /// [`Exclusive`](solo_core::Mode::Exclusive) singletons and children: typically 3 or 5
    /// nodes that run for the life of the cluster. Give every node the same list (a node
    /// whose list differs is refused at the handshake, with both lists in the error). Any
    /// node may run an exclusive child; only voters grant, and a majority of them must be
    /// reachable for exclusive children to run.
    ///
    /// To change the set, never roll a new list through a running cluster (nodes with the
    /// old list and nodes with the new would each count their own majority): stop every
    /// node, wait one [`Config::lease_duration`], and start every node with the new list.
    /// Keep the data directories of the voters that stay, and replace at most one voter
    /// at a time when the new ones start with fresh data directories, so that every
    /// majority of the new set includes a voter that knows the highest tokens.
    pub fn voters<S: Into<String>>(mut self, voters: impl IntoIterator<Item = S>) -> Self {
        self.voters = voters.into_iter().map(Into::into).collect();
        self
    }

    /// Where this node, if it is a voter, keeps the highest lease token it granted (one
    /// small file, replaced atomically and synced before the grant is answered), so that
    /// it never grants a token twice across restarts without asking the other voters.
    /// Without one, a restarted voter learns the highest tokens from the other voters;
    /// see [`solo_core::NodeBuilder::token_floor`] for what holds when a majority of the
    /// voters loses its state at once. Either way a restarted voter waits out one lease
    /// before it grants anything.
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// This node's name, unique in the cluster (letters, digits, `-`, `_`, `.`).
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Which start of this name this process is. Default: milliseconds since the Unix epoch,
    /// which grows from one start to the next.
    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = Some(incarnation);
        self
    }

    /// The address to accept peers on.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// The address peers should dial, when it differs from the listen address (a wildcard
    /// listen address, NAT).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// Addresses of nodes to join through. Listing every node is fine: unreachable seeds are
    /// retried in the background.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.seeds = seeds.into_iter().collect();
        self
    }

    /// Seeds by DNS name, as `HOST:PORT` (`solo.default.svc.cluster.local:7001`, the
    /// headless service of a StatefulSet): resolved at start and again every 5 s (every
    /// 0.5 s while none resolves), every address each name gives is a seed, beside those of
    /// [`seeds`](Self::seeds). So a pod that comes back with a new address is found again,
    /// and a node whose names do not resolve yet waits to join rather than start a cluster
    /// of its own (until [`Config::join_timeout`](solo_core::Config::join_timeout)).
    pub fn seed_names(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.seed_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Finds peers on the local network with no seed list: the node announces itself on a
    /// UDP multicast group with beacons signed by the cookie, and dials the nodes it hears
    /// (see [`MulticastDiscovery`](crate::MulticastDiscovery) for what is ignored). Works
    /// beside [`seeds`](Self::seeds) and [`seed_names`](Self::seed_names). A node that hears
    /// no one within [`Config::join_timeout`](solo_core::Config::join_timeout) starts a
    /// cluster of its own, and merges with the others once it hears them.
    ///
    /// The socket is the operating system's, also under [`start_on`](Self::start_on).
    pub fn discover_multicast(mut self, discovery: crate::MulticastDiscovery) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// The secret every node of the cluster shares. It never crosses the network: nodes
    /// prove they know it by challenge and response. Use at least [`MIN_COOKIE_LEN`]
    /// random bytes (`head -c 32 /dev/urandom | base64`): a shorter cookie is accepted, with
    /// a warning, since anyone who guesses it is a member (see the README's trust model).
    pub fn cookie(mut self, cookie: impl Into<Vec<u8>>) -> Self {
        self.cookie = cookie.into();
        self
    }

    /// The cluster's name (default `"solo"`): nodes of other clusters are refused.
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    /// Protocol timings and limits; [`Config::default`] if not set.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Roles of this node, which children's placement constraints match.
    pub fn roles<S: Into<String>>(mut self, roles: impl IntoIterator<Item = S>) -> Self {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Registers a worker kind this node can run. Specs name workers by kind.
    pub fn worker(mut self, kind: impl Into<String>, worker: impl Worker) -> Self {
        self.registry.insert(kind.into(), worker);
        self
    }

    /// Registers an [`Actor`] type as a worker kind: a child whose first worker is of this
    /// kind gets the messages sent to its name ([`Cluster::call`], [`Cluster::send`]) and
    /// hands its state over when it moves.
    pub fn actor<A: Actor>(mut self, kind: impl Into<String>) -> Self {
        self.registry.insert_actor::<A>(kind.into());
        self
    }

    /// Makes this node an observer: a member that never runs a child or singleton, for a
    /// client that joins to call workers ([`Cluster::call`]) or to watch the cluster.
    pub fn observer(mut self) -> Self {
        self.observer = true;
        self
    }

    /// How long a child moving here on purpose waits for its previous instance's state
    /// before it starts afresh, and how long an instance may take to answer
    /// [`Actor::begin_handoff`]. Messages for it wait meanwhile. Default 5 s.
    pub fn handoff_timeout(mut self, timeout: Duration) -> Self {
        self.handoff_timeout = timeout;
        self
    }

    /// How many calls and casts an actor's mailbox holds (at least 1). What finds it full
    /// waits for room beside it, in order, up to 1 MiB
    /// ([`MessagingConfig::max_waiting_for_room_bytes`](solo_core::messaging::MessagingConfig::max_waiting_for_room_bytes));
    /// past that a call fails with [`CallError::Overloaded`], and a cast from another node
    /// is refused and reported as [`Event::MessageDropped`](crate::Event::MessageDropped).
    /// A cast from this node waits for room ([`Cluster::send`]) or is refused
    /// ([`Cluster::try_send`]). The messages held for a child during its handoff go into the
    /// new instance as room frees, however many. Default 1 024.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity.max(1);
        self
    }

    /// How long a worker asked to stop may take before it is aborted. Default 5 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// How long [`Cluster::leave`] waits for this node's children to move. Default 5 s.
    ///
    /// An actor that has not given its state by then (its `begin_handoff` still runs) loses
    /// it: the node leaves anyway, its new instance starts without a state, and this node
    /// reports [`Event::MessageDropped`](crate::Event::MessageDropped) with
    /// [`DropReason::NotGiven`](solo_core::messaging::DropReason::NotGiven). Give it more
    /// time than your slowest `begin_handoff` needs.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Makes every random choice of this node (handshake nonces, backoff jitter, the core's
    /// choices) follow from `seed` instead of the operating system's generator, and spawns
    /// the node's tasks on the current [`tokio::task::LocalSet`] (so that a simulated crash
    /// drops them in a fixed order): for deterministic simulation only, where each host runs
    /// in a `LocalSet` as under turmoil. Handshake nonces become predictable: never use it in
    /// production.
    pub fn simulation_seed(mut self, seed: u64) -> Self {
        self.simulation_seed = Some(seed);
        self
    }

    /// Carries the cluster's traffic over mutual TLS 1.3 on TCP: a peer is accepted only with
    /// a certificate from the cluster CA in `tls` *and* the cookie. Every node of the cluster
    /// must use it. Replaces an earlier [`quic`](Self::quic).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.carrier = Carrier::Tls(tls);
        self
    }

    /// Carries the cluster's traffic over QUIC (UDP), with the same mutual TLS as
    /// [`tls`](Self::tls). The listen address is then a UDP port. Every node of the cluster
    /// must use it. Replaces an earlier [`tls`](Self::tls).
    #[cfg(feature = "quic")]
    pub fn quic(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.carrier = Carrier::Quic(tls);
        self
    }

    /// A deliberately broken node for testing the simulation's invariant checker: it ignores
    /// the core's requests to stop a child that moved, so duplicates survive a healed
    /// partition. Never use it outside such a test.
    #[doc(hidden)]
    pub fn sabotage_ignore_moves(mut self) -> Self {
        self.sabotage_ignore_moves = true;
        self
    }

    /// A deliberately broken node for testing the simulation's invariant checker: it starts
    /// what it owns without claiming it from its peers first, as solo did before claims.
    /// Never use it outside such a test.
    #[doc(hidden)]
    pub fn sabotage_skip_claims(mut self) -> Self {
        self.sabotage_skip_claims = true;
        self
    }

    /// A deliberately broken node for testing the simulation's checker: it never replaces a
    /// silent connection to a suspect (see `Transport::refresh`), and only after 5 s of
    /// silence otherwise, as solo did before. Never use it outside such a test.
    #[doc(hidden)]
    pub fn sabotage_keep_silent_connections(mut self) -> Self {
        self.sabotage_keep_silent_connections = true;
        self
    }

    /// Binds the listener, starts the node and begins joining the seeds.
    ///
    /// # Errors
    ///
    /// [`ClusterStartError`] when a required setting is missing or invalid, or the transport cannot
    /// bind. Nothing is left running.
    ///
    /// # Cancel safety
    ///
    /// Cancelling it before it returns leaves nothing running.
    pub async fn start(mut self) -> Result<Cluster, ClusterStartError> {
        use solo_transport_tcp::TokioNetwork;
        crate::seeds::check(&self.seed_names)?;
        match std::mem::take(&mut self.carrier) {
            Carrier::Tcp => self.start_on(TokioNetwork).await,
            #[cfg(feature = "tls")]
            Carrier::Tls(tls) => {
                let network = solo_transport_tcp::tls::TlsNetwork::new(TokioNetwork, &tls);
                self.start_on(network).await
            }
            #[cfg(feature = "quic")]
            Carrier::Quic(tls) => {
                let network = solo_transport_quic::QuicNetwork::new(
                    &tls,
                    solo_transport_quic::QuicConfig::default(),
                )?;
                self.start_on(network).await
            }
        }
    }

    /// As [`start`](ClusterBuilder::start), over another network: a simulator's (turmoil's
    /// `net`, through `solo-sim`) runs the very same driver and transport. The carrier chosen
    /// with [`tls`](Self::tls) or [`quic`](Self::quic) is ignored: `network` is the carrier.
    ///
    /// # Errors
    ///
    /// As [`start`](ClusterBuilder::start).
    ///
    /// # Cancel safety
    ///
    /// As [`start`](ClusterBuilder::start)'s.
    pub async fn start_on<N: solo_transport_tcp::Network>(
        self,
        network: N,
    ) -> Result<Cluster, ClusterStartError> {
        let name = NodeName::new(self.name.ok_or(ClusterStartError::MissingName)?)?;
        let listen = self.listen.ok_or(ClusterStartError::MissingListen)?;
        if self.cookie.is_empty() {
            return Err(ClusterStartError::MissingCookie);
        }
        if self.cookie.len() < MIN_COOKIE_LEN {
            tracing::warn!(
                bytes = self.cookie.len(),
                "the cluster cookie is shorter than {MIN_COOKIE_LEN} bytes: whoever guesses it is a member"
            );
        }
        self.config.validate()?;
        let incarnation = self.incarnation.unwrap_or_else(unix_millis);
        let id = NodeId::new(name, Incarnation(incarnation));
        let voters = self
            .voters
            .iter()
            .map(|name| {
                NodeName::new(name.clone()).map_err(|source| ClusterStartError::Voter {
                    name: name.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<NodeName>, ClusterStartError>>()?;
        let persisted = match &self.data_dir {
            Some(dir) => Some(crate::data_dir::read_tokens(dir)?),
            None => None,
        };
        // Discovery beacons name the cluster and are signed with (a key from) the cookie,
        // which the transport takes below.
        let beacon_identity = self
            .discovery
            .as_ref()
            .map(|_| (self.cluster_name.clone(), self.cookie.clone()));
        let mut transport_config = solo_transport_tcp::Config::new(self.cluster_name, self.cookie);
        transport_config.advertised_addr = self.advertise;
        transport_config.voters = voters.clone();
        transport_config.probe_closed_peers = self.config.crash_evidence;
        if self.sabotage_keep_silent_connections {
            // The defaults before silent connections were replaced within a suspicion.
            transport_config.keepalive_interval = Duration::from_secs(1);
            transport_config.idle_timeout = Duration::from_secs(5);
        }
        let mut transport = solo_transport_tcp::Transport::builder(id.clone(), transport_config);
        if let Some(seed) = self.simulation_seed {
            let mut rng = solo_core::Rng::new(seed ^ 0x7AB5_0000_0000_0001);
            transport = transport
                .randomness(solo_transport_tcp::Randomness::from_fn(move || {
                    rng.next_u64()
                }))
                .local_tasks();
        }
        let (transport, frames) = transport.bind(network, listen).await?;
        let addr = transport.advertised_addr();
        let announcer = match (&self.discovery, &beacon_identity) {
            (Some(discovery), Some((cluster, cookie))) => Some(crate::seeds::Announcer::bind(
                discovery,
                listen,
                addr,
                cluster,
                id.name.as_str(),
                cookie,
                !self.observer,
            )?),
            _ => None,
        };
        let node = Node::builder(id.clone(), addr)
            .config(self.config)
            .seeds(self.seeds.clone())
            // Seeds will come (names resolving, beacons heard): join, rather than start a
            // cluster alone, unless none has come within the join timeout.
            .seeds_by_name(!self.seed_names.is_empty() || self.discovery.is_some())
            .roles(self.roles)
            .observer(self.observer)
            .sabotage_skip_claims(self.sabotage_skip_claims)
            .voters(voters)
            .persisted_tokens(persisted)
            // Only for the case where a majority of the voters lost its state at once: the
            // incarnation is the wall clock at start, in ms, unless the user set it.
            .token_floor(incarnation.saturating_mul(1000))
            .rng_seed(
                self.simulation_seed
                    .unwrap_or(incarnation ^ u64::from(addr.port())),
            )
            .build(tokio::time::Instant::now().into_std())?;
        let (commands_tx, commands) = mpsc::channel(4096);
        // An instance sends one exit and at most one handoff, the last things it does: these
        // hold at most one entry per instance running here. Answers come one per mail taken
        // and are up to a megabyte each, so their channel is bounded in bytes.
        let (exits_tx, exits) = mpsc::unbounded_channel();
        let (handoffs_tx, handoffs) = mpsc::unbounded_channel();
        let messaging = crate::driver::Messaging::new(
            {
                let mut messaging = solo_core::messaging::MessagingConfig::default();
                messaging.handoff_timeout = self.handoff_timeout;
                messaging
            },
            self.simulation_seed,
        );
        let direct = crate::driver::ReplyToCaller::new(
            transport.clone(),
            id.clone(),
            messaging.backlog_flag(),
        );
        let (replies_tx, replies) = crate::actor::answer_channel(Some(Arc::new(direct)));
        // Subscribed before the driver runs, so that the first `events()` call sees what
        // happened while the node joined.
        let (events, first_events) = broadcast::channel(4096);
        let local_addr = transport.local_addr();
        let driver = Driver {
            node,
            transport,
            frames,
            commands,
            exits,
            handoffs,
            replies,
            messaging: Some(messaging),
            events: events.clone(),
            spawner: Spawner {
                registry: self.registry,
                node: id.clone(),
                exits: exits_tx,
                events: events.clone(),
                grace: self.shutdown_grace,
                handoffs: handoffs_tx,
                replies: replies_tx,
                mailbox_capacity: self.mailbox_capacity,
                local_tasks: self.simulation_seed.is_some(),
            },
            drain_timeout: self.drain_timeout,
            sabotage_ignore_moves: self.sabotage_ignore_moves,
            sabotage_keep_silent_connections: self.sabotage_keep_silent_connections,
            data_dir: self.data_dir,
            misconfigured: std::collections::HashMap::new(),
            seeds: crate::seeds::Seeds::new(self.seeds),
        };
        // Every event the node logs names it: several nodes may share a process (tests, the
        // simulator, an embedded observer).
        let span = tracing::info_span!("solo", node = %id.name);
        let _driver = crate::worker::spawn_task(
            self.simulation_seed.is_some(),
            tracing::Instrument::instrument(driver.run(), span.clone()),
        );
        if !self.seed_names.is_empty() {
            let resolving = crate::seeds::resolve_forever(self.seed_names, commands_tx.downgrade());
            crate::worker::spawn_task(
                self.simulation_seed.is_some(),
                tracing::Instrument::instrument(resolving, span.clone()),
            );
        }
        if let Some(announcer) = announcer {
            crate::worker::spawn_task(
                self.simulation_seed.is_some(),
                tracing::Instrument::instrument(announcer.run(commands_tx.downgrade()), span),
            );
        }
        Ok(Cluster {
            inner: Arc::new(Inner {
                id,
                local_addr,
                commands: commands_tx,
                events,
                first_events: std::sync::Mutex::new(Some(first_events)),
                calls: crate::telemetry::CallMetrics::new(),
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    id: NodeId,
    local_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    /// The receiver made before the driver started, for the first `events()` call.
    first_events: std::sync::Mutex<Option<broadcast::Receiver<Event>>>,
    /// The metrics of calls and casts made through this node.
    calls: crate::telemetry::CallMetrics,
}

/// A running cluster node: a cheap, cloneable handle to its driver task.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use solo::{Cluster, WorkerContext, WorkerError};
///
/// async fn roar(ctx: WorkerContext) -> Result<(), WorkerError> {
///     ctx.shutdown().await;
///     Ok(())
/// }
///
/// let cluster = Cluster::builder()
///     .node_name("a")
///     .listen("127.0.0.1:7001".parse()?)
///     .seeds(["127.0.0.1:7002".parse()?, "127.0.0.1:7003".parse()?])
///     .cookie("q3Vd8LmX2tKp9RfZw6Yb")
///     .worker("lion", roar)
///     .start()
///     .await?;
/// cluster.singleton(&"roar".parse()?, ["lion"]).await?;
/// cluster.leave().await;
/// # Ok(())
/// # }
/// ```
///
/// Dropping every handle leaves the cluster gracefully, as [`Cluster::leave`] does.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl Cluster {
    /// Starts building a node.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            name: None,
            incarnation: None,
            listen: None,
            advertise: None,
            seeds: Vec::new(),
            seed_names: Vec::new(),
            discovery: None,
            cookie: Vec::new(),
            cluster_name: "solo".into(),
            config: Config::default(),
            roles: Vec::new(),
            registry: Registry::default(),
            shutdown_grace: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            handoff_timeout: Duration::from_secs(5),
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            simulation_seed: None,
            sabotage_ignore_moves: false,
            sabotage_keep_silent_connections: false,
            sabotage_skip_claims: false,
            carrier: Carrier::default(),
            observer: false,
            voters: Vec::new(),
            data_dir: None,
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// The address the node listens on (useful after listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// A stream of membership, worker and supervisor events. The first call receives every
    /// event since the node started (the members met while joining included); later calls
    /// receive events from the moment of the call. A receiver that falls more than 4096
    /// events behind loses the oldest (see [`broadcast::Receiver`]).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        let first = self
            .inner
            .first_events
            .lock()
            .ok()
            .and_then(|mut first| first.take());
        first.unwrap_or_else(|| self.inner.events.subscribe())
    }

    /// Declares a singleton made of workers of the given kinds (no arguments), which always
    /// run together on one node. Every node should declare the same.
    ///
    /// # Errors
    ///
    /// [`Error::Declare`] if the name is taken or the spec breaks a limit, [`Error::Closed`]
    /// if the node left.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may or may not have handed the command to
    /// the node; once handed over it is carried out, not undone.
    pub async fn singleton<S: Into<String>>(
        &self,
        name: &ChildId,
        kinds: impl IntoIterator<Item = S>,
    ) -> Result<(), Error> {
        let workers = kinds
            .into_iter()
            .map(|kind| WorkerSpec::new(kind, Vec::new()))
            .collect();
        self.declare_singleton(ChildSpec::group(name.clone(), workers))
            .await
    }

    /// Declares a singleton from a full spec (arguments, restart policy, role).
    ///
    /// # Errors
    ///
    /// As [`Cluster::singleton`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may or may not have handed the command to
    /// the node; once handed over it is carried out, not undone.
    pub async fn declare_singleton(&self, spec: ChildSpec) -> Result<(), Error> {
        Ok(self
            .request(|reply| Command::DeclareSingleton(spec, reply))
            .await??)
    }

    /// The distributed supervisor.
    pub fn supervisor(&self) -> Supervisor<'_> {
        Supervisor { cluster: self }
    }

    /// The live members, this node included, as this node sees them.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the node left.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a query; dropping the future only forgoes the answer.
    pub async fn members(&self) -> Result<Vec<NodeId>, Error> {
        self.request(Command::Members).await
    }

    /// This node's view of the cluster now: every member it knows of with its state,
    /// address, roles and whether it drains, and every singleton and child with its mode,
    /// the member it is assigned to and, if it runs here, its instance, since when and its
    /// fencing token. What `solo-node --metrics ADDR` serves at `/status`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the node left.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a query; dropping the future only forgoes the answer.
    pub async fn status(&self) -> Result<crate::ClusterStatus, Error> {
        self.request(Command::Status).await
    }

    /// This node's messaging counters: calls pending, bytes held for others, and the
    /// messages refused or dropped (each also an [`Event::MessageDropped`](crate::Event),
    /// though a slow events reader may miss events, never these counts).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the node left.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a query; dropping the future only forgoes the answer.
    pub async fn messaging_stats(&self) -> Result<solo_core::messaging::MessagingStats, Error> {
        self.request(Command::MessagingStats).await
    }

    /// Drains this node (`true`) or ends a drain (`false`).
    ///
    /// A draining node stays a member (it routes calls and watches its peers) but runs no
    /// worker: each of its singletons and children moves to the node that would run it
    /// without this one, and actors hand their state over as they do on a leave. Ending the
    /// drain makes the node eligible again, and what the placement hash gives it moves back,
    /// with a handoff too. Use it before an upgrade that restarts the node, or to empty a
    /// node that misbehaves without removing it.
    ///
    /// Returns once the node has taken the change; the moves follow within a message delay
    /// (watch [`Cluster::events`] or [`Supervisor::which_children`] to see them done).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the node left.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may or may not have handed the command to
    /// the node; once handed over it is carried out, not undone.
    pub async fn set_draining(&self, draining: bool) -> Result<(), Error> {
        if self
            .request(|reply| Command::SetDraining(draining, reply))
            .await?
        {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Leaves the cluster gracefully: this node stops being eligible, its workers move to
    /// other nodes (waiting up to the drain timeout), the leave is announced, and the node
    /// stops. Returns when it has.
    ///
    /// An actor still in `begin_handoff` when the drain timeout runs out loses its state,
    /// reported as [`Event::MessageDropped`](crate::Event::MessageDropped) (see
    /// [`ClusterBuilder::drain_timeout`]).
    ///
    /// # Cancel safety
    ///
    /// Once called, the leave proceeds even if this future is dropped.
    pub async fn leave(&self) {
        let _ = self.request(Command::Leave).await;
    }

    /// Ends this node at once, as `SIGKILL` of its process would: no handoff, no leave
    /// announcement; its workers are aborted (no shutdown signal, no `WorkerStopped`), its
    /// connections close, and calls waiting here fail with [`CallError::Closed`]. The peers
    /// see the closed connections and take over its children, as after a real crash.
    ///
    /// Meant for tests of failover in one process; a process that really stops should
    /// [`leave`](Self::leave). Several nodes of one process each crash alone. To crash
    /// nodes under a simulated network, with partitions and clock control, use the
    /// `solo-sim` crate instead. Every request after it fails with [`Error::Closed`].
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use solo::{Cluster, Error};
    ///
    /// let node = Cluster::builder()
    ///     .node_name("a")
    ///     .listen("127.0.0.1:0".parse()?)
    ///     .cookie("a cookie of sixteen bytes or more")
    ///     .start()
    ///     .await?;
    /// node.crash().await;
    /// assert!(matches!(node.members().await, Err(Error::Closed)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Once called, the crash proceeds even if this future is dropped.
    pub async fn crash(&self) {
        let _ = self.request(Command::Crash).await;
    }

    /// Where `name` (a child or singleton) runs now, as this node sees it: the member that
    /// owns it (the same [`NodeId`] as [`members`](Cluster::members) and
    /// [`WorkerContext::node`](crate::WorkerContext::node) give), or `None` while no node may
    /// run it (no member has its role, or all are draining) or no node knows it.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the node left.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a query; dropping the future only forgoes the answer.
    pub async fn whereis(&self, name: &ChildId) -> Result<Option<NodeId>, Error> {
        let name = name.clone();
        self.request(|reply| Command::Whereis(name, reply)).await
    }

    /// Calls the actor that runs `name`, wherever it runs, and waits for its reply for at
    /// most `timeout`.
    ///
    /// While `name` has no reachable owner (its node just failed, or it is being handed
    /// over) the call waits, within its timeout, and goes to the new instance. A call sent
    /// to a node that fails before answering is sent again to the new owner. A call to a
    /// name that no node knows fails at once.
    ///
    /// # Errors
    ///
    /// [`CallError`]: no such name, timeout, not an actor, a message or reply the two ends
    /// disagree on, a failed handler, or this node left.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may leave the call delivered: the actor may
    /// still handle it, and its answer is discarded.
    pub async fn call<M, R>(
        &self,
        name: &ChildId,
        message: &M,
        timeout: Duration,
    ) -> Result<R, CallError>
    where
        M: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let payload =
            postcard::to_allocvec(message).map_err(|e| CallError::Encode(e.to_string()))?;
        let answer = self.call_encoded(name, payload, timeout).await?;
        postcard::from_bytes(&answer).map_err(|e| CallError::BadReply(e.to_string()))
    }

    /// As [`call`](Cluster::call), with the message already encoded (postcard, as the
    /// actor's `Call` type) and the reply left encoded: for bridges and tools that carry
    /// messages they do not know the types of.
    ///
    /// # Errors
    ///
    /// As [`call`](Cluster::call), but for decoding the reply.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may leave the call delivered: the actor may
    /// still handle it, and its answer is discarded.
    pub async fn call_encoded(
        &self,
        name: &ChildId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        // One clock read for the call's start and its deadline (tokio's clock, which a
        // simulation controls, for both).
        let started = tokio::time::Instant::now();
        let result = self
            .call_unmeasured(name, payload, started + timeout, timeout)
            .await;
        self.inner.calls.call(&result, started.elapsed());
        result
    }

    async fn call_unmeasured(
        &self,
        name: &ChildId,
        payload: Vec<u8>,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        // No timer per call: the driver's messenger answers `Timeout` at `deadline` (one
        // timer for all its calls). Only a full command queue is waited out here, until the
        // deadline.
        let (reply, answer) = oneshot::channel();
        let call = Command::Call {
            target: name.clone(),
            payload,
            deadline,
            timeout,
            reply,
        };
        match self.inner.commands.try_send(call) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(CallError::from(Error::Closed));
            }
            Err(mpsc::error::TrySendError::Full(call)) => {
                // Boxed: the wait's timer and the channel's `send` are most of what this
                // future would hold, and every call would carry (and its spawn copy) them.
                Box::pin(self.wait_for_room(call, deadline, timeout)).await?;
            }
        }
        answer.await.map_err(|_| CallError::from(Error::Closed))?
    }

    /// Queues `command` once the command queue has room, by `deadline`.
    async fn wait_for_room(
        &self,
        command: Command,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<(), CallError> {
        tokio::time::timeout_at(deadline, self.inner.commands.send(command))
            .await
            .map_err(|_| CallError::Timeout(timeout))?
            .map_err(|_| CallError::from(Error::Closed))
    }

    /// Sends `message` to the actor that runs `name`, one way. It waits for an owner as a
    /// call does (up to 5 s), is delivered at most once, and keeps its order with the other
    /// messages this node sends to `name` while the owner stays the same.
    ///
    /// Backpressure: while the way to the actor is full (its mailbox, when it runs here;
    /// what waits for room to its node, when that node reads slower than this one sends)
    /// this waits for room, checking again after a pause that grows from 1 ms to 64 ms.
    /// [`try_send`](Cluster::try_send) does not wait. An actor on another node whose mailbox
    /// is full refuses the message and reports it there
    /// ([`Event::MessageDropped`](crate::Event::MessageDropped)).
    ///
    /// # Cancel safety
    ///
    /// Cancelling it while it waits for room sends nothing; once the message is taken, it
    /// goes whether or not this future is polled again.
    ///
    /// # Errors
    ///
    /// [`CallError::NoSuchName`] at once if no node knows `name`; a message that does not
    /// encode ([`CallError::Encode`]) or is too large ([`CallError::TooLarge`]); this
    /// node left.
    pub async fn send<M>(&self, name: &ChildId, message: &M) -> Result<(), CallError>
    where
        M: serde::Serialize + ?Sized,
    {
        let result = self.send_unmeasured(name, message).await;
        self.inner.calls.cast(&result);
        result
    }

    async fn send_unmeasured<M>(&self, name: &ChildId, message: &M) -> Result<(), CallError>
    where
        M: serde::Serialize + ?Sized,
    {
        let payload =
            postcard::to_allocvec(message).map_err(|e| CallError::Encode(e.to_string()))?;
        let mut pause = Duration::from_millis(1);
        loop {
            let (name, payload) = (name.clone(), payload.clone());
            match self
                .request(|reply| Command::Cast(name, payload, reply))
                .await?
            {
                Err(CallError::Full) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(64));
                }
                result => return result,
            }
        }
    }

    /// As [`send`](Cluster::send), without waiting for room.
    ///
    /// # Errors
    ///
    /// As [`send`](Cluster::send), and [`CallError::Full`] when the way to the actor is full.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may or may not have sent the message; once
    /// taken, it goes.
    pub async fn try_send<M>(&self, name: &ChildId, message: &M) -> Result<(), CallError>
    where
        M: serde::Serialize + ?Sized,
    {
        let result = self.try_send_unmeasured(name, message).await;
        self.inner.calls.cast(&result);
        result
    }

    async fn try_send_unmeasured<M>(&self, name: &ChildId, message: &M) -> Result<(), CallError>
    where
        M: serde::Serialize + ?Sized,
    {
        let payload =
            postcard::to_allocvec(message).map_err(|e| CallError::Encode(e.to_string()))?;
        let name = name.clone();
        self.request(|reply| Command::Cast(name, payload, reply))
            .await?
    }

    /// A typed handle on the actor `A` that runs `name`: calls and casts of `A`'s own types,
    /// replies decoded as `A::Reply`. The handle is cheap and stays valid across failovers
    /// (it names the actor, not a node). Nothing is checked until a message is sent.
    pub fn actor_ref<A: Actor>(&self, name: &ChildId) -> ActorRef<A> {
        ActorRef::new(self.clone(), name.clone())
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(command(reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)
    }
}

/// How far a new child's spec had spread when [`Supervisor::start_child`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildStart {
    /// Another member holds its spec too: a crash of this node no longer loses the child.
    Replicated,
    /// This node is alone in its view, so the spec is held here only: a crash of this node
    /// before another member joins loses the child. It spreads to the first that joins.
    Alone,
}

/// The distributed supervisor of a [`Cluster`]: children that run once in the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Supervisor<'a> {
    cluster: &'a Cluster,
}

impl Supervisor<'_> {
    /// Starts a child wherever placement puts it. Returns once a second member holds its
    /// spec ([`ChildStart::Replicated`]), or at once with [`ChildStart::Alone`] when this
    /// node is alone.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use solo::{ChildSpec, ChildStart, Cluster, WorkerContext, WorkerError};
    ///
    /// async fn job(ctx: WorkerContext) -> Result<(), WorkerError> {
    ///     ctx.shutdown().await;
    ///     Ok(())
    /// }
    /// let node = Cluster::builder()
    ///     .node_name("a")
    ///     .listen("127.0.0.1:0".parse()?)
    ///     .cookie("a cookie of sixteen bytes or more")
    ///     .worker("job", job)
    ///     .start()
    ///     .await?;
    /// let id = "customer-42".parse()?;
    /// let start = node.supervisor().start_child(ChildSpec::new(id, "job", vec![])).await?;
    /// // No other member holds the spec yet: a crash of this node now would lose the child.
    /// assert_eq!(start, ChildStart::Alone);
    /// // Where it runs, as this node sees it: the same `NodeId` as `members()` gives.
    /// assert_eq!(node.whereis(&"customer-42".parse()?).await?, Some(node.id().clone()));
    /// node.leave().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Start`] if the id is taken or the spec breaks a limit (nothing changed), or
    /// no member confirmed holding the spec in time
    /// ([`StartChildError::Unconfirmed`]: the child is started here all the same);
    /// [`Error::Closed`] if the node left.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not cancel the start.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<ChildStart, Error> {
        let replicated = self
            .cluster
            .request(|reply| Command::StartChild(spec, reply))
            .await??;
        Ok(if replicated {
            ChildStart::Replicated
        } else {
            ChildStart::Alone
        })
    }

    /// Terminates a child wherever it runs. Returns once the termination is recorded here;
    /// it reaches the other nodes at once, or when a partition that cuts this node off heals.
    /// If this node dies before then, the termination is lost and the child keeps running.
    ///
    /// # Errors
    ///
    /// [`Error::Terminate`] if no live child has this id (nothing changed), [`Error::Closed`]
    /// if the node left.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may or may not have handed the command to
    /// the node; once handed over it is carried out, not undone.
    pub async fn terminate_child(&self, id: &ChildId) -> Result<(), Error> {
        let id = id.clone();
        Ok(self
            .cluster
            .request(|reply| Command::TerminateChild(id, reply))
            .await??)
    }

    /// The children running here ([`Scope::Local`]) or known cluster-wide
    /// ([`Scope::Global`]).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the node left.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a query; dropping the future only forgoes the answer.
    pub async fn which_children(&self, scope: Scope) -> Result<Vec<ChildInfo>, Error> {
        self.cluster
            .request(|reply| Command::WhichChildren(scope, reply))
            .await
    }
}

/// Milliseconds since the Unix epoch: a process's default incarnation.
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
