//! [`Sim`]: a whole cluster of real `solo` nodes as turmoil hosts.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use solo::{ChildId, ChildSpec, Cluster, Event, WorkerContext, WorkerError};
use tokio::sync::mpsc;

use crate::network::TurmoilNetwork;

/// The port every simulated node listens on.
const PORT: u16 = 7000;

/// What happened, when, where: the history the invariant checker reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// Simulated time since the start.
    pub at: Duration,
    /// The host (`n0`, `n1`, …).
    pub host: usize,
    /// Which process of that host (1 for the first start, then one more per restart).
    pub incarnation: u64,
    /// What happened.
    pub what: What,
}

/// The kinds of [`Record`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum What {
    /// A worker group started running.
    Started {
        /// The child or singleton.
        id: String,
        /// The fencing token it runs under, if it is exclusive.
        token: Option<u64>,
    },
    /// A worker group ended.
    Stopped {
        /// The child or singleton.
        id: String,
        /// Why.
        reason: String,
    },
    /// The host's process was crashed by the nemesis: everything it ran is gone.
    Crashed,
    /// A membership event, for reading a history.
    Member(String),
    /// `start_child` returned `Ok` on this node.
    ChildAcked {
        /// The child.
        id: String,
        /// Whether a second member held the spec; if not, this node was alone in its view and
        /// the child survives only if this process does until it meets the others.
        replicated: bool,
    },
    /// `terminate_child` returned `Ok` on this node.
    Terminated {
        /// The child.
        id: String,
    },
    /// The node left gracefully.
    Left,
    /// [`Sim::call`] was issued on this node.
    Called {
        /// The call's number: [`SimCall::number`].
        call: u64,
        /// The actor called.
        name: String,
    },
    /// A call issued on this node ended: the encoded reply, or the error's text.
    Answered {
        /// The call's number: [`SimCall::number`].
        call: u64,
        /// The actor called.
        name: String,
        /// The encoded reply (postcard), or why there is none.
        reply: Result<Vec<u8>, String>,
    },
}

/// What the test asks a simulated node to do, through its command queue.
#[derive(Debug, Clone)]
enum SimCommand {
    StartChild(String),
    TerminateChild(String),
    Leave,
    Call {
        call: u64,
        name: String,
        payload: Vec<u8>,
        timeout: Duration,
    },
}

type Commands = Arc<Mutex<Vec<Option<mpsc::UnboundedSender<SimCommand>>>>>;

/// Registers one worker kind on a node's builder.
type Registration = Arc<dyn Fn(solo::ClusterBuilder) -> solo::ClusterBuilder + Send + Sync>;

/// Builds a [`Sim`].
#[derive(Clone)]
pub struct SimBuilder {
    nodes: usize,
    seed: u64,
    /// Singleton names, with the worker kinds of each, and whether it is exclusive.
    singletons: Vec<(String, Vec<String>, bool)>,
    /// How many hosts (`n0`, `n1`, …) are the cluster's voters.
    voters: usize,
    /// Whether children started by the nemesis are exclusive.
    exclusive_children: bool,
    workers: Vec<Registration>,
    config: solo::Config,
    min_latency: Duration,
    max_latency: Duration,
    tick: Duration,
    sabotage: bool,
    sabotage_claims: bool,
    sabotage_silent: bool,
    tls: bool,
}

impl std::fmt::Debug for SimBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBuilder")
            .field("nodes", &self.nodes)
            .field("seed", &self.seed)
            .field("singletons", &self.singletons)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl SimBuilder {
    /// Runs deliberately broken nodes that never stop a child that moved, so duplicates
    /// survive a heal: for testing that the invariant checker catches it.
    pub fn sabotage_duplicate_resolution(mut self) -> Self {
        self.sabotage = true;
        self
    }

    /// Runs deliberately broken nodes that start what they own without claiming it first
    /// (solo before claims): for testing that the checker of "never two at once" catches it.
    pub fn sabotage_skip_claims(mut self) -> Self {
        self.sabotage_claims = true;
        self
    }

    /// Runs deliberately broken nodes that never replace a silent connection to a peer they
    /// suspect, and any other only after 5 s of silence (solo before
    /// [`Transport::refresh`](solo_transport_tcp::Transport::refresh)):
    /// after a heal, connections a partition stalled then cost false `Down`s and failovers.
    pub fn sabotage_keep_silent_connections(mut self) -> Self {
        self.sabotage_silent = true;
        self
    }

    /// Runs every node's streams over mutual TLS (the `tls` carrier of `solo`), with a fresh
    /// cluster CA and a certificate per node, inside turmoil's TCP.
    ///
    /// The schedule stays a function of the seed (TLS adds bytes, not timing choices), but
    /// rustls draws its handshake keys from the operating system: runs are not
    /// byte-for-byte identical, so this is for smoke tests, not for [`check::history_hash`]
    /// comparisons.
    ///
    /// [`check::history_hash`]: crate::check::history_hash
    #[cfg(feature = "tls")]
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// How many nodes (default 3).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// The seed every random choice follows from (turmoil's, the nodes', the nemesis').
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// A singleton every node declares, whose one worker just waits for shutdown.
    pub fn singleton(mut self, name: impl Into<String>) -> Self {
        self.singletons
            .push((name.into(), vec!["wait".into()], false));
        self
    }

    /// An [`Exclusive`](solo::Mode::Exclusive) singleton every node declares, whose one
    /// worker waits for shutdown or the loss of its lease. Needs [`voters`](Self::voters).
    pub fn exclusive_singleton(mut self, name: impl Into<String>) -> Self {
        self.singletons
            .push((name.into(), vec!["fenced".into()], true));
        self
    }

    /// Makes the children that [`Sim::start_child`] starts
    /// [`Exclusive`](solo::Mode::Exclusive). Needs [`voters`](Self::voters).
    pub fn exclusive_children(mut self) -> Self {
        self.exclusive_children = true;
        self
    }

    /// Makes the first `voters` hosts (`n0`, `n1`, …) the cluster's voters (default none).
    pub fn voters(mut self, voters: usize) -> Self {
        self.voters = voters;
        self
    }

    /// A singleton every node declares, made of workers of the given kinds (register them
    /// with [`worker`](SimBuilder::worker)).
    pub fn singleton_of<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        kinds: impl IntoIterator<Item = S>,
    ) -> Self {
        let kinds = kinds.into_iter().map(Into::into).collect();
        self.singletons.push((name.into(), kinds, false));
        self
    }

    /// Registers your [`solo::Actor`] type as worker kind `kind` on every node: calls made
    /// with [`Sim::call`] reach it.
    pub fn actor<A: solo::Actor>(mut self, kind: impl Into<String>) -> Self {
        let kind = kind.into();
        self.workers
            .push(Arc::new(move |builder: solo::ClusterBuilder| {
                builder.actor::<A>(kind.clone())
            }));
        self
    }

    /// Registers one of your worker kinds on every node: the simulation runs your code.
    pub fn worker<W: solo::Worker + Clone>(mut self, kind: impl Into<String>, worker: W) -> Self {
        let kind = kind.into();
        self.workers
            .push(Arc::new(move |builder: solo::ClusterBuilder| {
                builder.worker(kind.clone(), worker.clone())
            }));
        self
    }

    /// The protocol configuration of every node.
    pub fn config(mut self, config: solo::Config) -> Self {
        self.config = config;
        self
    }

    /// One-way message latency range (default 0.1–2 ms).
    pub fn latency(mut self, min: Duration, max: Duration) -> Self {
        self.min_latency = min;
        self.max_latency = max;
        self
    }

    /// How much simulated time one turmoil step covers (default 1 ms). Every host runs each
    /// step, so a shorter tick gives finer timings at a proportional cost.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Builds the simulation and registers every host; nothing runs until
    /// [`Sim::run_for`].
    pub fn build(self) -> Sim {
        let mut builder = turmoil::Builder::new();
        builder
            .rng_seed(self.seed)
            // turmoil's default epoch is the wall clock: fix it so that a seed replays.
            .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
            .simulation_duration(Duration::from_secs(24 * 3600))
            .tick_duration(self.tick)
            .min_message_latency(self.min_latency)
            .max_message_latency(self.max_latency);
        let mut sim = builder.build();
        let history = Arc::new(Mutex::new(Vec::new()));
        let incarnations: Arc<Vec<AtomicU64>> =
            Arc::new((0..self.nodes).map(|_| AtomicU64::new(0)).collect());
        let commands: Commands = Arc::new(Mutex::new(vec![None; self.nodes]));
        let names: Vec<String> = (0..self.nodes).map(|i| format!("n{i}")).collect();
        let carriers = Carriers::new(self.tls, &names);
        for host in 0..self.nodes {
            let node = NodeSetup {
                host,
                names: names.clone(),
                seed: self.seed,
                singletons: self.singletons.clone(),
                voters: self.voters,
                exclusive_children: self.exclusive_children,
                workers: self.workers.clone(),
                config: self.config.clone(),
                history: Arc::clone(&history),
                incarnations: Arc::clone(&incarnations),
                commands: Arc::clone(&commands),
                sabotage: self.sabotage,
                sabotage_claims: self.sabotage_claims,
                sabotage_silent: self.sabotage_silent,
                carriers: carriers.clone(),
            };
            sim.host(names[host].as_str(), move || node.clone().run());
        }
        Sim {
            sim,
            seed: self.seed,
            names,
            history,
            incarnations,
            commands,
            next_call: 0,
            max_latency: self.max_latency,
        }
    }
}

/// Everything one host needs to start (and restart) its node.
#[derive(Clone)]
struct NodeSetup {
    host: usize,
    names: Vec<String>,
    seed: u64,
    singletons: Vec<(String, Vec<String>, bool)>,
    voters: usize,
    exclusive_children: bool,
    workers: Vec<Registration>,
    config: solo::Config,
    history: Arc<Mutex<Vec<Record>>>,
    incarnations: Arc<Vec<AtomicU64>>,
    commands: Commands,
    sabotage: bool,
    sabotage_claims: bool,
    sabotage_silent: bool,
    carriers: Carriers,
}

/// What carries each host's streams: turmoil's TCP, plain or under TLS.
#[derive(Clone, Default)]
struct Carriers {
    #[cfg(feature = "tls")]
    tls: Option<Arc<Vec<solo::tls::TlsConfig>>>,
}

impl Carriers {
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    fn new(tls: bool, names: &[String]) -> Self {
        #[cfg(feature = "tls")]
        if tls {
            let ca = solo::tls::CertificateAuthority::new("simulated").expect("a CA");
            let configs = names
                .iter()
                .map(|name| {
                    let issued = ca.issue(name).expect("a node certificate");
                    solo::tls::TlsConfig::from_pem(
                        ca.cert_pem().as_bytes(),
                        issued.cert_pem.as_bytes(),
                        issued.key_pem.as_bytes(),
                    )
                    .expect("fresh certificates are valid")
                })
                .collect();
            return Self {
                tls: Some(Arc::new(configs)),
            };
        }
        Self::default()
    }

    async fn start(
        &self,
        host: usize,
        builder: solo::ClusterBuilder,
    ) -> Result<Cluster, solo::ClusterStartError> {
        #[cfg(feature = "tls")]
        if let Some(configs) = &self.tls {
            let network = solo_transport_tcp::tls::TlsNetwork::new(TurmoilNetwork, &configs[host]);
            return builder.start_on(network).await;
        }
        let _ = host;
        builder.start_on(TurmoilNetwork).await
    }
}

impl NodeSetup {
    async fn run(self) -> Result<(), Box<dyn std::error::Error>> {
        let incarnation = self.incarnations[self.host].fetch_add(1, Ordering::SeqCst) + 1;
        let ip = |name: &str| -> IpAddr { turmoil::lookup(name) };
        let me = SocketAddr::new(ip(&self.names[self.host]), PORT);
        let seeds: Vec<SocketAddr> = self
            .names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.host)
            .map(|(_, n)| SocketAddr::new(ip(n), PORT))
            .collect();
        let mut builder = Cluster::builder();
        if self.sabotage {
            builder = builder.sabotage_ignore_moves();
        }
        if self.sabotage_claims {
            builder = builder.sabotage_skip_claims();
        }
        if self.sabotage_silent {
            builder = builder.sabotage_keep_silent_connections();
        }
        for register in &self.workers {
            builder = register(builder);
        }
        let builder = builder
            .node_name(self.names[self.host].clone())
            .incarnation(incarnation)
            .listen(SocketAddr::new([0, 0, 0, 0].into(), PORT))
            .advertise(me)
            .seeds(seeds)
            .cookie("simulated.Tq7vX2pL9sK")
            .config(self.config.clone())
            .simulation_seed(self.seed ^ (self.host as u64) << 32 ^ incarnation)
            .voters(self.names.iter().take(self.voters).cloned())
            .worker("wait", wait_for_shutdown)
            .worker("fenced", wait_for_shutdown_or_lease_lost);
        let cluster = self.carriers.start(self.host, builder).await?;
        let mut events = cluster.events();
        for (singleton, kinds, exclusive) in &self.singletons {
            let workers = kinds
                .iter()
                .map(|k| solo::WorkerSpec::new(k.clone(), Vec::new()));
            let mut spec = ChildSpec::group(ChildId::new(singleton.clone())?, workers.collect());
            if *exclusive {
                spec = spec.mode(solo::Mode::Exclusive);
            }
            cluster.declare_singleton(spec).await?;
        }
        let (tx, mut commands) = mpsc::unbounded_channel();
        if let Ok(mut queues) = self.commands.lock() {
            queues[self.host] = Some(tx);
        }
        let history = Arc::clone(&self.history);
        let host = self.host;
        let exclusive_children = self.exclusive_children;
        let record = move |what: What| {
            let at = turmoil::sim_elapsed().unwrap_or_default();
            if let Ok(mut history) = history.lock() {
                history.push(Record {
                    at,
                    host,
                    incarnation,
                    what,
                });
            }
        };
        loop {
            let event = tokio::select! {
                biased;
                Some(command) = commands.recv() => {
                    let cluster = cluster.clone();
                    let record = record.clone();
                    // Calls run beside the event loop: a start waits for its replication.
                    tokio::task::spawn_local(async move {
                        match command {
                            SimCommand::StartChild(id) => {
                                let Ok(child) = ChildId::new(id.clone()) else { return };
                                let spec = if exclusive_children {
                                    ChildSpec::new(child, "fenced", Vec::new())
                                        .mode(solo::Mode::Exclusive)
                                } else {
                                    ChildSpec::new(child, "wait", Vec::new())
                                };
                                if let Ok(replicated) = cluster.supervisor().start_child(spec).await {
                                    record(What::ChildAcked { id, replicated: replicated == solo::ChildStart::Replicated });
                                }
                            }
                            SimCommand::TerminateChild(id) => {
                                let Ok(child) = ChildId::new(id.clone()) else { return };
                                if cluster.supervisor().terminate_child(&child).await.is_ok() {
                                    record(What::Terminated { id });
                                }
                            }
                            SimCommand::Leave => {
                                cluster.leave().await;
                                record(What::Left);
                            }
                            SimCommand::Call { call, name, payload, timeout } => {
                                record(What::Called { call, name: name.clone() });
                                let reply = match ChildId::new(name.clone()) {
                                    Ok(id) => cluster
                                        .call_encoded(&id, payload, timeout)
                                        .await
                                        .map_err(|e| e.to_string()),
                                    Err(e) => Err(e.to_string()),
                                };
                                record(What::Answered { call, name, reply });
                            }
                        }
                    });
                    continue;
                }
                event = events.recv() => event,
            };
            match event {
                Ok(Event::WorkerStarted { id, token, .. }) => record(What::Started {
                    id: id.to_string(),
                    token,
                }),
                Ok(Event::WorkerStopped { id, reason, .. }) => record(What::Stopped {
                    id: id.to_string(),
                    reason: reason.to_string(),
                }),
                Ok(Event::Member(event)) => record(What::Member(format!("{event:?}"))),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    return Err(format!("history lost {n} events").into());
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
}

async fn wait_for_shutdown(ctx: WorkerContext) -> Result<(), WorkerError> {
    ctx.shutdown().await;
    Ok(())
}

async fn wait_for_shutdown_or_lease_lost(ctx: WorkerContext) -> Result<(), WorkerError> {
    tokio::select! {
        () = ctx.shutdown() => {}
        () = ctx.lease_lost() => {}
    }
    Ok(())
}

/// A call made with [`Sim::call`], whose reply decodes as `R`: give it to [`Sim::reply`].
#[derive(Debug)]
pub struct SimCall<R> {
    number: u64,
    reply: std::marker::PhantomData<fn() -> R>,
}

impl<R> SimCall<R> {
    /// Its number in the history ([`What::Called`], [`What::Answered`]).
    pub fn number(&self) -> u64 {
        self.number
    }
}

impl<R> Clone for SimCall<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for SimCall<R> {}

/// A simulated cluster of real `solo` nodes, each a turmoil host running the `solo` driver
/// and the TCP transport over turmoil's network, with a fixed seed and epoch.
pub struct Sim {
    sim: turmoil::Sim<'static>,
    seed: u64,
    names: Vec<String>,
    history: Arc<Mutex<Vec<Record>>>,
    incarnations: Arc<Vec<AtomicU64>>,
    commands: Commands,
    next_call: u64,
    /// The builder's maximum one-way latency, restored by [`Sim::heal`].
    max_latency: Duration,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("nodes", &self.names.len())
            .finish_non_exhaustive()
    }
}

/// A simulation step failed: a host's software returned an error or panicked.
#[derive(Debug, thiserror::Error)]
#[error("simulation failed: {0}")]
pub struct SimError(String);

impl Sim {
    /// Starts building a simulation.
    pub fn builder() -> SimBuilder {
        SimBuilder {
            nodes: 3,
            seed: 0,
            singletons: Vec::new(),
            voters: 0,
            exclusive_children: false,
            workers: Vec::new(),
            config: solo::Config::default(),
            min_latency: Duration::from_micros(100),
            max_latency: Duration::from_millis(2),
            tick: Duration::from_millis(1),
            sabotage: false,
            sabotage_claims: false,
            sabotage_silent: false,
            tls: false,
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How many hosts.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no hosts.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Runs the cluster for `duration` of simulated time.
    ///
    /// # Errors
    ///
    /// [`SimError`] if a host failed.
    pub fn run_for(&mut self, duration: Duration) -> Result<(), SimError> {
        let until = self.sim.elapsed() + duration;
        while self.sim.elapsed() < until {
            self.sim.step().map_err(|e| SimError(e.to_string()))?;
        }
        Ok(())
    }

    /// Crashes host `i`'s process (its connections close, as after a SIGKILL).
    pub fn crash(&mut self, i: usize) {
        if !self.sim.is_host_running(self.names[i].as_str()) {
            return;
        }
        let incarnation = self.incarnations[i].load(Ordering::SeqCst);
        self.record(i, incarnation, What::Crashed);
        self.sim.crash(self.names[i].as_str());
    }

    /// Restarts host `i` as a new incarnation (crashing the running one first).
    pub fn restart(&mut self, i: usize) {
        self.crash(i);
        self.sim.bounce(self.names[i].as_str());
    }

    /// Whether host `i`'s process runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.sim.is_host_running(self.names[i].as_str())
    }

    /// Cuts every link between the two groups (both ways).
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.sim
                    .partition(self.names[x].as_str(), self.names[y].as_str());
            }
        }
    }

    /// Cuts the link from `from` to `to` only.
    pub fn partition_oneway(&mut self, from: usize, to: usize) {
        self.sim
            .partition_oneway(self.names[from].as_str(), self.names[to].as_str());
    }

    /// Repairs every link, and delivers what [`Sim::hold`] held.
    pub fn repair_all(&mut self) {
        for a in 0..self.names.len() {
            for b in 0..self.names.len() {
                if a != b {
                    let (a, b) = (self.names[a].as_str(), self.names[b].as_str());
                    self.sim.repair(a, b);
                    self.sim.release(a, b);
                }
            }
        }
    }

    /// Holds every message between `a` and `b` (both ways) until [`Sim::release`] or
    /// [`Sim::repair_all`]: a link that stalls, then delivers a burst late.
    pub fn hold(&mut self, a: usize, b: usize) {
        self.sim
            .hold(self.names[a].as_str(), self.names[b].as_str());
    }

    /// Delivers what [`Sim::hold`] held between `a` and `b`, and lets messages flow again.
    pub fn release(&mut self, a: usize, b: usize) {
        self.sim
            .release(self.names[a].as_str(), self.names[b].as_str());
    }

    /// Sets the maximum one-way latency of every link (each message takes a random time
    /// between the builder's minimum and this).
    pub fn set_max_latency(&mut self, max: Duration) {
        self.sim.set_max_message_latency(max);
    }

    /// Undoes every network fault: repairs and releases every link, stops link failures and
    /// restores the builder's latency. Crashed hosts stay down.
    pub fn heal(&mut self) {
        self.repair_all();
        self.set_loss(0.0);
        self.set_max_latency(self.max_latency);
    }

    /// Sets turmoil's link failure rate on every link: the probability, each step, that a
    /// link fails until turmoil repairs it. This makes links flap (TCP streams over a failed
    /// link lose what they carry); it is not independent per-message loss.
    pub fn set_loss(&mut self, rate: f64) {
        self.sim.set_fail_rate(rate);
    }

    /// Asks host `i` to start the distributed child `id` (recorded as
    /// [`What::ChildAcked`] once `start_child` returns `Ok`). Ignored if the host is down.
    pub fn start_child(&mut self, i: usize, id: impl Into<String>) {
        self.command(i, SimCommand::StartChild(id.into()));
    }

    /// Asks host `i` to terminate the child `id` (recorded as [`What::Terminated`]).
    pub fn terminate_child(&mut self, i: usize, id: impl Into<String>) {
        self.command(i, SimCommand::TerminateChild(id.into()));
    }

    /// Asks host `i` to call the actor `name`, of type `A`, with `message` (recorded as
    /// [`What::Called`], then [`What::Answered`]). Ignored if the host is down. The
    /// returned handle finds the typed reply in the history: [`Sim::reply`].
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use solo::{Actor, WorkerContext, WorkerError};
    /// # struct Counter(u64);
    /// # impl Actor for Counter {
    /// #     type Call = u64; type Reply = u64; type Cast = (); type State = ();
    /// #     async fn start(_: &WorkerContext, _: Option<()>) -> Result<Self, WorkerError> { Ok(Counter(0)) }
    /// #     async fn handle_call(&mut self, n: u64, _: &WorkerContext) -> Result<u64, WorkerError> {
    /// #         self.0 += n; Ok(self.0)
    /// #     }
    /// # }
    /// use std::time::Duration;
    /// use solo_sim::Sim;
    ///
    /// let mut sim = Sim::builder()
    ///     .nodes(3)
    ///     .seed(1)
    ///     .actor::<Counter>("counter")
    ///     .singleton_of("count", ["counter"])
    ///     .build();
    /// sim.run_for(Duration::from_secs(3)).expect("runs");
    /// let call = sim.call::<Counter>(0, "count", &5, Duration::from_secs(1));
    /// sim.run_for(Duration::from_secs(1)).expect("runs");
    /// assert_eq!(sim.reply(&call), Some(Ok(5)));
    /// ```
    ///
    /// # Panics
    ///
    /// If `message` cannot be encoded.
    pub fn call<A: solo::Actor>(
        &mut self,
        i: usize,
        name: impl Into<String>,
        message: &A::Call,
        timeout: Duration,
    ) -> SimCall<A::Reply> {
        self.next_call += 1;
        let call = self.next_call;
        let payload = postcard::to_allocvec(message).expect("the message encodes");
        self.command(
            i,
            SimCommand::Call {
                call,
                name: name.into(),
                payload,
                timeout,
            },
        );
        SimCall {
            number: call,
            reply: std::marker::PhantomData,
        }
    }

    /// How `call` ended, once it has: the decoded reply, or the error's text (a
    /// [`CallError`](solo::CallError)'s, or why the reply did not decode). `None` while it
    /// is in flight, or if its host crashed before it ended.
    pub fn reply<R: serde::de::DeserializeOwned>(
        &self,
        call: &SimCall<R>,
    ) -> Option<Result<R, String>> {
        let history = self.history.lock().ok()?;
        history.iter().find_map(|record| match &record.what {
            What::Answered {
                call: number,
                reply,
                ..
            } if *number == call.number => {
                Some(reply.as_ref().map_err(Clone::clone).and_then(|bytes| {
                    postcard::from_bytes(bytes).map_err(|e| format!("bad reply: {e}"))
                }))
            }
            _ => None,
        })
    }

    /// Asks host `i` to leave the cluster gracefully (recorded as [`What::Left`]).
    pub fn leave(&mut self, i: usize) {
        self.command(i, SimCommand::Leave);
    }

    fn command(&mut self, i: usize, command: SimCommand) {
        if !self.is_running(i) {
            return;
        }
        if let Ok(queues) = self.commands.lock()
            && let Some(Some(queue)) = queues.get(i)
        {
            let _ = queue.send(command);
        }
    }

    /// A copy of the history so far.
    pub fn history(&self) -> Vec<Record> {
        self.history.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn record(&self, host: usize, incarnation: u64, what: What) {
        if let Ok(mut history) = self.history.lock() {
            history.push(Record {
                at: self.sim.elapsed(),
                host,
                incarnation,
                what,
            });
        }
    }
}
