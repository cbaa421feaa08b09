//! [`Node`]: one cluster member's protocol state, driven by its caller.

mod lease;
mod ownership;

pub use lease::Fence;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use crate::config::{Config, ConfigError};
use crate::id::{InstanceId, NodeId, NodeName};
use crate::membership::{
    self, MAX_ROLES, Member, MemberEvent, MemberState, MemberTable, NodeMeta, Suspicion,
};
use crate::placement::ChildId;
use crate::rng::Rng;
use crate::supervisor::{ChildSpec, ChildTable, StopReason, SupervisorEvent};
use crate::wire::{self, DecodeError, MemberUpdate, Message};

/// How many indirect probes a node runs for others at once; more requests are dropped
/// (the requester then asks someone else, or suspects, which the target can refute).
const MAX_RELAYS: usize = 256;

/// A message for the transport to deliver.
#[must_use = "a transmit must be handed to the transport"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The node meant to receive it, or `None` for a seed not yet known by id.
    pub to: Option<NodeId>,
    /// Where to connect if there is no connection to `to` yet. `None` when answering a
    /// node this one has not learned the address of: the transport answers over the
    /// connection the request came on, or drops the message.
    pub addr: Option<SocketAddr>,
    /// What to send; encode it with [`wire::encode_frame`].
    pub message: Message,
}

/// Why a transport did not take a [`Transmit`] (see `Transport::try_send` in the transport
/// crates). The message was not sent; its sender decides whether to offer it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// The recipient's write queue holds as many frames or bytes as it may: the peer reads
    /// slower than this node writes. Offering it again shortly may succeed.
    #[error("the peer's write queue is full")]
    QueueFull,
    /// No connection to the recipient and no way to make one now (no address, too many
    /// dials, a stale incarnation, or the transport is shut down).
    #[error("no route to the peer")]
    NoRoute,
    /// The message encodes to more than [`wire::MAX_FRAME_LEN`] bytes: it can never be sent.
    #[error("the message is larger than a frame may be")]
    TooLarge,
}

/// Something the caller must act on or report.
#[must_use = "an action must be carried out or reported"]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Membership changed, as this node sees it.
    Member(MemberEvent),
    /// A newer process with this node's name joined the cluster: this process is stale (it
    /// was frozen, or partitioned, while its replacement started). It stops taking part in
    /// the protocol; the caller should shut it down.
    Superseded {
        /// The newer process.
        by: NodeId,
    },
    /// Start the workers of `spec` here, in order, as instance `instance` of child `id`.
    /// Report their end with [`Node::worker_exited`].
    ///
    /// A node starts nothing it has not *claimed*: every live member has answered that it
    /// runs no instance of `id` (one that did has ended it first), so a view a moment
    /// behind never runs two copies in a healthy cluster.
    Start {
        /// The child (or singleton).
        id: ChildId,
        /// Tells this run apart from earlier and later ones, in `worker_exited`.
        instance: InstanceId,
        /// What to run.
        spec: ChildSpec,
        /// The node whose instance of `id` ended so that this one could start (a rebalance,
        /// a draining or leaving node, a newcomer that outweighs it). The state it handed
        /// over, if any, was sent before the end was confirmed, so it has already arrived.
        /// `None` when no instance ran anywhere (a failure, a new child).
        handoff_from: Option<NodeId>,
        /// For an [`Exclusive`](crate::Mode::Exclusive) child, the lease it runs under:
        /// hand its token to the worker, and abort the instance at `valid_until` unless
        /// [`Action::LeaseExtended`] moves it later. `None` for an `Available` child.
        fence: Option<Fence>,
    },
    /// The lease of a running exclusive instance was renewed: it may run until
    /// `valid_until` (this node's clock) now.
    LeaseExtended {
        /// The child.
        id: ChildId,
        /// The instance.
        instance: InstanceId,
        /// The new end of its lease.
        valid_until: Instant,
    },
    /// This node is a voter with a data directory: write `up_to` there (atomically, and
    /// synced), then call [`Node::tokens_persisted`]. Grants of tokens above what is durable
    /// are answered only then, so that a restart never grants a token twice.
    PersistTokens {
        /// Every token this voter grants until the next such action is at most this.
        up_to: u64,
    },
    /// Stop instance `instance` of child `id` here, and report its end with
    /// [`Node::worker_exited`] once every worker of it has finished: until then it counts
    /// as running here, and another node's claim on `id` waits for it.
    Stop {
        /// The child (or singleton).
        id: ChildId,
        /// The instance to stop.
        instance: InstanceId,
        /// Why, and where it goes.
        reason: StopReason,
    },
    /// Something happened to children that the user should hear of.
    Supervisor(SupervisorEvent),
}

/// What a transport saw happen to its connection with a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A connection to the peer is established and authenticated.
    Up,
    /// The connection closed or failed. A killed process's connections close at once (the
    /// kernel sends FIN or RST), so this is the fastest failure signal there is.
    Down,
}

/// Whether the node takes part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Joining or joined: probing, gossiping, answering.
    Active,
    /// [`Node::leave`] was called: the leave was announced and the node is done.
    Left,
    /// A newer incarnation of this node's name exists; see [`Action::Superseded`].
    Superseded,
}

/// A command the node could not carry out. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The node already left or was superseded, so it takes no more commands.
    #[error("node is no longer active ({0:?})")]
    NotActive(Status),
}

#[derive(Debug)]
struct Probe {
    target: NodeId,
    indirect: bool,
    deadline: Instant,
}

#[derive(Debug)]
struct Relay {
    requester: NodeId,
    requester_seq: u32,
    target: NodeId,
    deadline: Instant,
}

#[derive(Debug)]
struct PendingGossip {
    update: MemberUpdate,
    remaining: usize,
}

/// Builds a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    id: NodeId,
    addr: SocketAddr,
    config: Config,
    seeds: Vec<SocketAddr>,
    rng_seed: u64,
    roles: Vec<String>,
    observer: bool,
    sabotage_skip_claims: bool,
    voters: BTreeSet<NodeName>,
    token_floor: u64,
    persisted_tokens: Option<u64>,
    sabotage_count_from_reply: bool,
    sabotage_renew_blindly: bool,
}

impl NodeBuilder {
    /// The names of the nodes that grant leases of [`Exclusive`](crate::Mode::Exclusive)
    /// children, typically 3 or 5. Every node of the cluster must be given the same set
    /// (the transports refuse a peer whose set differs); a node whose name is in it votes.
    /// A lease needs a majority of them, so a side of a partition without a majority runs
    /// no exclusive child. Without voters, exclusive children are refused.
    pub fn voters(mut self, voters: impl IntoIterator<Item = NodeName>) -> Self {
        self.voters = voters.into_iter().collect();
        self
    }

    /// The lowest token this node grants as a voter when it has no data directory and too
    /// few other voters know the highest tokens granted before: when a majority of the
    /// voters lost its state at once (a whole-cluster restart, the very first start of a
    /// cluster). The `solo` runtime passes the wall clock in microseconds since 1970 at the
    /// process's start: tokens then go on above it, and could repeat only if a voter's wall
    /// clock was set back below a token granted before. With a data directory
    /// ([`persisted_tokens`](NodeBuilder::persisted_tokens)), or while fewer than a
    /// majority of the voters lose their state at once, tokens never depend on it. With 0
    /// (the default) such a voter refuses to vote at all rather than risk a repeat, and
    /// exclusive children stop until a voter that knows is back.
    pub fn token_floor(mut self, floor: u64) -> Self {
        self.token_floor = floor;
        self
    }

    /// What this voter's data directory holds: every token it granted before is at most
    /// this (`None`, the default: no data directory). A voter with one needs no other
    /// voter to recover, and asks the runtime to write ([`Action::PersistTokens`]) before
    /// it answers a grant above it. An empty data directory is `Some(0)`.
    pub fn persisted_tokens(mut self, up_to: Option<u64>) -> Self {
        self.persisted_tokens = up_to;
        self
    }

    /// Test-only sabotage: a holder counts its lease from the voter's answer instead of
    /// from before its request, so that tests can show their checkers catch it.
    #[doc(hidden)]
    pub fn sabotage_count_from_reply(mut self, sabotage: bool) -> Self {
        self.sabotage_count_from_reply = sabotage;
        self
    }

    /// Test-only sabotage: a voter renews every lease a renewal by digest names, whether
    /// or not it holds the same grants, so that tests can show their checkers catch it.
    #[doc(hidden)]
    pub fn sabotage_renew_blindly(mut self, sabotage: bool) -> Self {
        self.sabotage_renew_blindly = sabotage;
        self
    }

    /// Test-only sabotage: start children without claiming them first (the behaviour
    /// before claims), so that tests can show their checkers catch the duplicates it makes.
    #[doc(hidden)]
    pub fn sabotage_skip_claims(mut self, skip: bool) -> Self {
        self.sabotage_skip_claims = skip;
        self
    }

    /// Makes the node an observer: a member that never owns a child or singleton (it
    /// starts, and stays, draining), for clients that join to call workers or to watch.
    pub fn observer(mut self, observer: bool) -> Self {
        self.observer = observer;
        self
    }

    /// The node's roles, which children's placement constraints match (at most
    /// [`MAX_ROLES`] of at most [`MAX_ROLE_LEN`](crate::MAX_ROLE_LEN) bytes; extra or
    /// longer roles are ignored).
    pub fn roles<S: Into<String>>(mut self, roles: impl IntoIterator<Item = S>) -> Self {
        let mut roles: Vec<String> = roles
            .into_iter()
            .map(Into::into)
            .filter(|r: &String| r.len() <= membership::MAX_ROLE_LEN)
            .collect();
        roles.sort();
        roles.dedup();
        roles.truncate(MAX_ROLES);
        self.roles = roles;
        self
    }

    /// Timings and limits; [`Config::default`] if not set.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Addresses of nodes to join through. A node without seeds starts a cluster of its
    /// own and waits for others to join it. Its own address is skipped.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.seeds = seeds.into_iter().collect();
        self
    }

    /// Seeds the node's random choices (indirect-probe helpers, sync partners). Give each
    /// node its own: in production any varying number will do, in a simulation a number
    /// derived from the run's seed makes the run replay.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }

    /// Builds the node; it sends its first join at its first [`Node::handle_timeout`].
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the configuration cannot work.
    pub fn build(self, now: Instant) -> Result<Node, ConfigError> {
        self.config.validate()?;
        let mut seeds = self.seeds;
        seeds.retain(|s| *s != self.addr);
        seeds.sort();
        seeds.dedup();
        // A node with no one to join is the first of its cluster: it owns children at once.
        // Others wait to hear from every seed (or, once one answered, for `probe_timeout`
        // more: a seed that is down never answers), or for `join_timeout` if none answers,
        // so that they know who runs what before they claim anything.
        let joined = seeds.is_empty();
        let mut leases = lease::Leases::new(
            &self.id.name,
            self.voters,
            lease::VoterStart {
                boot_floor: self.token_floor,
                persisted: self.persisted_tokens,
            },
            now,
            self.config.voter_quarantine(),
            self.sabotage_count_from_reply,
        );
        leases.sabotage_renew_blindly = self.sabotage_renew_blindly;
        Ok(Node {
            leases,
            meta: NodeMeta {
                roles: self.roles,
                draining: self.observer,
                ..NodeMeta::default()
            },
            joined,
            join_deadline: now + self.config.join_timeout,
            seeds_heard: BTreeSet::new(),
            join_grace_until: None,
            children: ChildTable::default(),
            singletons: BTreeMap::new(),
            running: BTreeMap::new(),
            stopping: BTreeMap::new(),
            unsent_claims: BTreeMap::new(),
            unsent_answers: BTreeMap::new(),
            open_claims: BTreeSet::new(),
            merging_until: None,
            deferred: BTreeMap::new(),
            claim_tick_at: None,
            latest_now: now,
            sabotage_skip_claims: self.sabotage_skip_claims,
            pending_acks: BTreeMap::new(),
            start_tick_at: None,
            next_instance: InstanceId::default(),
            view: BTreeMap::new(),
            reported_conflicts: BTreeSet::new(),
            next_child_repair_at: now,
            placement_dirty: true,
            unsent_starts: Vec::new(),
            id: self.id,
            addr: self.addr,
            seeds,
            rng: Rng::new(self.rng_seed),
            version: 0,
            status: Status::Active,
            members: MemberTable::default(),
            probes: BTreeMap::new(),
            relays: BTreeMap::new(),
            next_seq: 0,
            gossip: BTreeMap::new(),
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            next_probe_at: now,
            next_sync_at: now + self.config.sync_interval,
            next_join_at: now,
            last_down_synced: None,
            last_stranger_synced: None,
            had_peers: false,
            transmits_dropped: 0,
            config: self.config,
        })
    }
}

/// One member's protocol state: membership, failure detection and gossip, with no I/O.
///
/// A `Node` never reads a clock, opens a socket or draws ambient randomness. Its caller (the
/// `solo` runtime, a test, the simulator) feeds it inputs, each stamped with `now`, and
/// carries out what it asks:
///
/// * **inputs**: [`handle_message`](Node::handle_message) (a frame from a peer),
///   [`handle_link`](Node::handle_link) (a connection came or went),
///   [`handle_timeout`](Node::handle_timeout) (the deadline passed), and commands such as
///   [`leave`](Node::leave);
/// * **outputs**: [`poll_transmit`](Node::poll_transmit) (messages to send),
///   [`poll_action`](Node::poll_action) (events to act on) and
///   [`poll_timeout`](Node::poll_timeout) (when to call `handle_timeout` next).
///
/// **The drain rule**: after every input, call `poll_transmit` and `poll_action` until each
/// returns `None`, then read `poll_timeout` and arm one timer for it. A `handle_timeout`
/// before the deadline is harmless: it does nothing that is not due.
///
/// ```
/// use std::time::Instant;
/// use solo_core::{Incarnation, Node, NodeId, NodeName};
///
/// let id = NodeId::new(NodeName::new("a")?, Incarnation(1));
/// let now = Instant::now();
/// let mut node = Node::builder(id, "127.0.0.1:7000".parse()?)
///     .seeds(["127.0.0.1:7001".parse()?])
///     .rng_seed(42)
///     .build(now)?;
/// node.handle_timeout(now);
/// // A lone node asks its seeds to let it in.
/// let join = node.poll_transmit().expect("a join");
/// assert_eq!(join.addr, Some("127.0.0.1:7001".parse()?));
/// assert!(node.poll_timeout().is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Node {
    config: Config,
    id: NodeId,
    addr: SocketAddr,
    seeds: Vec<SocketAddr>,
    rng: Rng,
    /// This node's own refutation counter.
    version: u64,
    status: Status,
    members: MemberTable,
    /// Probes this node started, by sequence number.
    probes: BTreeMap<u32, Probe>,
    /// Probes this node makes on behalf of others, by the sequence number it used.
    relays: BTreeMap<u32, Relay>,
    next_seq: u32,
    /// Updates still to piggyback on probes, with how many more times.
    gossip: BTreeMap<NodeName, PendingGossip>,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    next_probe_at: Instant,
    next_sync_at: Instant,
    next_join_at: Instant,
    /// The addresses the last sync round tried beyond the live members (a `Down` member,
    /// a stranger seed): the next round takes the next address after each, so that every
    /// one is tried within as many rounds as there are (a random pick can miss one for long).
    last_down_synced: Option<SocketAddr>,
    last_stranger_synced: Option<SocketAddr>,
    /// Whether the node had a live peer after the last input, to notice the first one.
    had_peers: bool,
    transmits_dropped: u64,
    /// What this node says about itself: roles, draining, declared singletons.
    meta: NodeMeta,
    /// Whether this node may own children yet (see `NodeBuilder::build`).
    joined: bool,
    join_deadline: Instant,
    /// The seeds that answered while this node was joining.
    seeds_heard: BTreeSet<SocketAddr>,
    /// Once a first peer answered: the seeds still silent by then are taken for down.
    join_grace_until: Option<Instant>,
    /// The replicated table of distributed children.
    children: ChildTable,
    singletons: BTreeMap<ChildId, ownership::Singleton>,
    /// What this node asked the runtime to run, or claims in order to run.
    running: BTreeMap<ChildId, ownership::Running>,
    /// Instances asked to stop whose end the runtime has not reported yet, with the claims
    /// that wait for it.
    stopping: BTreeMap<ChildId, ownership::Stopping>,
    /// Claims to send, per peer, by the next `poll_transmit` (one message per peer).
    unsent_claims: BTreeMap<NodeId, Vec<(ChildId, u64)>>,
    /// Answers to peers' claims, sent by the next `poll_transmit`.
    unsent_answers: BTreeMap<NodeId, Vec<wire::ClaimAnswer>>,
    /// The children with a claim in progress here.
    open_claims: BTreeSet<ChildId>,
    /// Peers' claims whose answer waits for this node's view to agree (a third node owns
    /// the child by it), by child: at most one per peer.
    deferred: BTreeMap<ChildId, Vec<(NodeId, u64)>>,
    /// When open claims are next looked at (resent to silent peers, or retried).
    claim_tick_at: Option<Instant>,
    /// Until when a heal is merging views: a member this node held `Down` spoke to it, and
    /// the members on that member's side are about to come back too. Claims opened until
    /// then start nothing (they are tried afresh after it): what this node owns by its
    /// view of a moment ago, another node on the far side may run.
    merging_until: Option<Instant>,
    /// The latest `now` an input carried: deadlines set by code that runs without one
    /// (placement, deep in an input) count from it.
    latest_now: Instant,
    /// See [`NodeBuilder::sabotage_skip_claims`].
    sabotage_skip_claims: bool,
    /// `start_child` calls waiting for a second member to hold the spec.
    pending_acks: BTreeMap<ChildId, ownership::PendingStart>,
    /// When pending starts are next looked at (sent again, or given up).
    start_tick_at: Option<Instant>,
    next_instance: InstanceId,
    /// The nodes that may own children, as of the last placement.
    view: ownership::View,
    reported_conflicts: BTreeSet<(ChildId, NodeId, u64)>,
    /// No child-table repair starts before this (repairs are rate-limited).
    next_child_repair_at: Instant,
    /// Whether the placement view may have changed since it was last computed: set by
    /// whatever can change it (membership news, this node's own metadata, joining, leaving),
    /// so that inputs which change nothing skip rebuilding the view.
    placement_dirty: bool,
    /// Children started here and not yet replicated: `poll_transmit` sends them, so that a
    /// burst of `start_child` calls costs one message per peer, not one per child.
    unsent_starts: Vec<crate::supervisor::ChildRecord>,
    /// Leases of exclusive children: held, and granted if this node is a voter.
    leases: lease::Leases,
}

impl Node {
    /// Starts building the node `id`, reachable by peers at `addr`.
    pub fn builder(id: NodeId, addr: SocketAddr) -> NodeBuilder {
        NodeBuilder {
            id,
            addr,
            config: Config::default(),
            seeds: Vec::new(),
            rng_seed: 0,
            roles: Vec::new(),
            observer: false,
            sabotage_skip_claims: false,
            voters: BTreeSet::new(),
            token_floor: 0,
            persisted_tokens: None,
            sabotage_count_from_reply: false,
            sabotage_renew_blindly: false,
        }
    }

    // ----- queries -------------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Where this node accepts connections.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the node still takes part in the cluster.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Every other member this node knows, live or remembered (`Down`, `Left`), by name.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
    }

    /// What this node knows of the member called `name`.
    pub fn member(&self, name: &NodeName) -> Option<&Member> {
        self.members.get(name)
    }

    /// The ids of the live members (`Alive` or `Suspect`), this node included while active:
    /// the cluster as this node sees it.
    pub fn live_view(&self) -> BTreeSet<NodeId> {
        let mut view: BTreeSet<NodeId> = self.members.live().map(|m| m.id().clone()).collect();
        if self.status == Status::Active {
            view.insert(self.id.clone());
        }
        view
    }

    /// How many outgoing messages were dropped because the caller did not drain
    /// [`poll_transmit`](Node::poll_transmit) fast enough.
    pub fn transmits_dropped(&self) -> u64 {
        self.transmits_dropped
    }

    /// Sizes of the node's internal tables, to check that they stay bounded.
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            members: self.members.len(),
            probes: self.probes.len(),
            relays: self.relays.len(),
            gossip: self.gossip.len(),
            transmits: self.transmits.len(),
            actions: self.actions.len(),
        }
    }

    // ----- outputs -------------------------------------------------------------------------

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if !self.unsent_starts.is_empty() {
            self.flush_starts();
        }
        if !self.unsent_claims.is_empty() || !self.unsent_answers.is_empty() {
            self.flush_claims();
        }
        if self.leases.has_unsent() {
            self.flush_leases();
        }
        self.transmits.pop_front()
    }

    /// The next action to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Node::handle_timeout) should next be called; `None` once
    /// the node has left or been superseded.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.status != Status::Active {
            return None;
        }
        let has_peers = self.members.live().next().is_some();
        let mut next = self.next_sync_at;
        if !self.joined {
            next = next.min(self.join_deadline);
            if let Some(at) = self.join_grace_until {
                next = next.min(at);
            }
        }
        for at in [
            self.claim_tick_at,
            self.start_tick_at,
            self.leases.next_deadline(),
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(at);
        }
        if has_peers {
            next = next.min(self.next_probe_at);
        } else {
            next = next.min(self.next_join_at);
        }
        let probes = self.probes.values().map(|p| p.deadline);
        let relays = self.relays.values().map(|r| r.deadline);
        let suspicions = self
            .members
            .iter()
            .filter_map(|m| m.suspicion.map(|s| s.deadline));
        Some(
            probes
                .chain(relays)
                .chain(suspicions)
                .fold(next, Instant::min),
        )
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Decodes a frame from `from` and handles it.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the frame is malformed; it is dropped and nothing changes.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        from: &NodeId,
        frame: &[u8],
    ) -> Result<(), DecodeError> {
        let message = wire::decode_frame(frame)?;
        self.handle_message(now, from, message);
        Ok(())
    }

    /// Handles a message from `from`, whose identity the transport authenticated.
    pub fn handle_message(&mut self, now: Instant, from: &NodeId, message: Message) {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active {
            return;
        }
        if !self.joined {
            self.note_seed_heard(from, &message);
        }
        if self
            .members
            .current(from)
            .is_some_and(|m| m.state() == MemberState::Down)
        {
            // The heal's first sign; its round trips take a moment more.
            self.merging_until = Some(now + self.config.probe_timeout);
        }
        self.members.heard(now, from);
        match message {
            Message::Ping {
                seq,
                target,
                updates,
                children,
            } => {
                self.apply_updates(now, from, &updates);
                self.compare_children(now, from, children);
                if target == self.id {
                    let updates = self.piggyback(from);
                    let children = self.children.summary();
                    self.send_to(
                        from,
                        Message::Ack {
                            seq,
                            updates,
                            children,
                        },
                    );
                } else if target.name == self.id.name && target.incarnation < self.id.incarnation {
                    // Probing this node's former self: say who lives here now.
                    let updates = vec![self.self_update()];
                    self.send_to(from, Message::Gossip { updates });
                }
            }
            Message::Ack {
                seq,
                updates,
                children,
            } => {
                self.apply_updates(now, from, &updates);
                self.compare_children(now, from, children);
                if self.probes.get(&seq).is_some_and(|p| p.target == *from) {
                    self.probes.remove(&seq);
                } else if let Some(relay) = self.relays.remove(&seq) {
                    if relay.target == *from {
                        let ack = Message::IndirectAck {
                            seq: relay.requester_seq,
                            target: relay.target,
                        };
                        self.send_to(&relay.requester, ack);
                    }
                }
            }
            Message::PingReq {
                seq,
                target,
                target_addr: _,
            } => {
                if self.relays.len() >= MAX_RELAYS || target == self.id {
                    return;
                }
                // Only a member this node knows is probed, at the address it knows: a
                // request cannot make it dial an address of the requester's choosing.
                let Some(target_addr) = self.members.current(&target).map(Member::addr) else {
                    tracing::debug!(node = %self.id, %from, %target, "ping request for a stranger ignored");
                    return;
                };
                let my_seq = self.next_seq();
                let deadline = now + self.config.probe_timeout + self.config.indirect_timeout;
                let updates = self.piggyback(&target);
                self.relays.insert(
                    my_seq,
                    Relay {
                        requester: from.clone(),
                        requester_seq: seq,
                        target: target.clone(),
                        deadline,
                    },
                );
                let ping = Message::Ping {
                    seq: my_seq,
                    target: target.clone(),
                    updates,
                    children: self.children.summary(),
                };
                self.send(Some(target), Some(target_addr), ping);
            }
            Message::IndirectAck { seq, target } => {
                if self.probes.get(&seq).is_some_and(|p| p.target == target) {
                    self.probes.remove(&seq);
                }
            }
            Message::Gossip { updates } => self.apply_updates(now, from, &updates),
            Message::Children { records, ack } => self.handle_children(now, from, records, ack),
            Message::ChildAck { acks } => self.handle_child_ack(acks),
            Message::ChildDigest { digests } => self.handle_child_digest(from, digests),
            Message::ChildPull { buckets } => self.handle_child_pull(from, buckets),
            Message::Claim { claims } => self.handle_claim(now, from, claims),
            Message::ClaimReply { claimer, answers } => {
                if claimer == self.id {
                    self.handle_claim_reply(now, from, answers);
                }
            }
            Message::LeaseRequest { seq, leases } => {
                self.handle_lease_request(now, from, seq, leases);
            }
            Message::LeaseReply { holder, answers } => {
                if holder == self.id {
                    self.handle_lease_reply(now, from, answers);
                }
            }
            Message::LeaseRelease { leases } => self.voter_release(now, from, leases),
            Message::LeaseRenew { seq, count, digest } => {
                self.handle_lease_renew(now, from, seq, (count, digest));
            }
            Message::LeaseRenewed {
                holder,
                seq,
                renewed,
            } => {
                if holder == self.id {
                    self.handle_lease_renewed(now, from, seq, renewed);
                }
            }
            Message::TokenFloorQuery => self.handle_floor_query(from),
            Message::TokenFloor { floor, boot_floor } => {
                self.handle_floor(from, floor, boot_floor);
            }
            // The runtime's business: it decodes frames itself and handles these.
            Message::App(_) => {}
            Message::Sync { members, reply } => {
                self.apply_updates(now, from, &members);
                if reply {
                    self.send_sync(Some(from.clone()), None, false);
                }
            }
        }
        self.after_input_at(now);
    }

    /// Handles a transport's report about its connection to `peer`.
    ///
    /// `Link::Down` from a live member is taken as its failure at once (or after
    /// [`Config::link_down_grace`]), and announced to every member; if the peer is in fact
    /// alive it refutes, and is `Up` again.
    pub fn handle_link(&mut self, now: Instant, peer: &NodeId, link: Link) {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active || link == Link::Up {
            return;
        }
        if !self
            .members
            .current(peer)
            .is_some_and(|m| m.state().is_live())
        {
            return;
        }
        tracing::debug!(node = %self.id, %peer, "link down");
        if self.config.link_down_grace.is_zero() {
            self.declare_down(now, peer, true);
        } else {
            let deadline = now + self.config.link_down_grace;
            self.suspect(now, peer, deadline);
        }
        self.after_input_at(now);
    }

    /// Handles the passing of time: probe deadlines, suspicions, the next probe round, sync
    /// and join retries. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active {
            return;
        }
        self.expire_probes(now);
        self.relays.retain(|_, r| r.deadline > now);
        self.expire_suspicions(now);
        self.claim_tick(now);
        self.start_tick(now);
        self.lease_tick(now);
        let has_peers = self.members.live().next().is_some();
        if has_peers && now >= self.next_probe_at {
            self.probe_round(now);
            self.next_probe_at = now + self.config.probe_interval;
        }
        if now >= self.next_sync_at {
            self.members
                .expire_tombstones(now, self.config.tombstone_ttl);
            self.children
                .expire_tombstones(now, self.config.child_tombstone_ttl);
            self.sync_round();
            self.next_sync_at = now + self.config.sync_interval;
        }
        if !has_peers && now >= self.next_join_at {
            self.join_round();
            self.next_join_at = now + self.config.join_retry_interval;
        }
        self.after_input_at(now);
    }

    /// Handles the runtime's evidence that the process `peer` is gone (its host refused a
    /// connection to the port it listened on, or a newer process of its name answers
    /// there). With [`Config::crash_evidence`], a voter frees every lease `peer` held at
    /// once, so the next holder need not wait them out; without it, nothing changes. The
    /// evidence is trusted as the option's documentation says, nothing more: membership
    /// still judges the peer by its own rules.
    pub fn handle_process_gone(&mut self, now: Instant, peer: &NodeId) {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active || !self.config.crash_evidence {
            return;
        }
        self.voter_process_gone(now, peer);
        self.after_input_at(now);
    }

    /// Handles a peer's refusal of this node's handshake because it knows `by`, a newer
    /// process with this node's name (the transport's verdict). This node is superseded: it
    /// stops every worker at once and emits [`Action::Superseded`]. Nothing changes if `by`
    /// is not a newer incarnation of this node's name, or the node is no longer active.
    pub fn handle_superseded(&mut self, now: Instant, by: &NodeId) {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active
            || by.name != self.id.name
            || by.incarnation <= self.id.incarnation
        {
            return;
        }
        self.supersede(by);
    }

    // ----- commands ------------------------------------------------------------------------

    /// Leaves the cluster gracefully: every member is told, so that none mistakes the
    /// departure for a crash. Drain [`poll_transmit`](Node::poll_transmit) and send what it
    /// gives before closing connections; the node takes no more input.
    ///
    /// # Errors
    ///
    /// [`CommandError::NotActive`] if the node already left or was superseded; nothing
    /// changes.
    pub fn leave(&mut self, now: Instant) -> Result<(), CommandError> {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active {
            return Err(CommandError::NotActive(self.status));
        }
        self.status = Status::Left;
        self.placement_dirty = true;
        self.stop_all(StopReason::Leaving);
        self.probes.clear();
        self.relays.clear();
        let update = self.self_update();
        self.broadcast(update, false);
        self.refresh_placement();
        Ok(())
    }

    // ----- failure detection ---------------------------------------------------------------

    /// The members this node watches: the next [`Config::monitors`] live members after it
    /// on a ring ordered by a hash of their names. Every node is thus watched by the same
    /// number of others, and the hash spreads watchers across racks that share a name prefix.
    fn ring_targets(&self) -> Vec<NodeId> {
        let mut ring: Vec<(u64, &NodeId)> = self
            .members
            .live()
            .map(|m| (ring_position(&m.id().name), m.id()))
            .collect();
        let me = (ring_position(&self.id.name), &self.id);
        ring.push(me);
        ring.sort();
        let Some(start) = ring.iter().position(|e| *e == me) else {
            return Vec::new();
        };
        ring.iter()
            .cycle()
            .skip(start + 1)
            .take(self.config.monitors.min(ring.len() - 1))
            .map(|(_, id)| (*id).clone())
            .collect()
    }

    fn probe_round(&mut self, now: Instant) {
        for target in self.ring_targets() {
            let alive = self
                .members
                .current(&target)
                .is_some_and(|m| m.state() == MemberState::Alive);
            let in_flight = self.probes.values().any(|p| p.target == target);
            if !alive || in_flight {
                continue;
            }
            let seq = self.next_seq();
            let updates = self.piggyback(&target);
            self.probes.insert(
                seq,
                Probe {
                    target: target.clone(),
                    indirect: false,
                    deadline: now + self.config.probe_timeout,
                },
            );
            self.send_to(
                &target,
                Message::Ping {
                    seq,
                    target: target.clone(),
                    updates,
                    children: self.children.summary(),
                },
            );
        }
    }

    fn expire_probes(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .probes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in due {
            let Some(probe) = self.probes.remove(&seq) else {
                continue;
            };
            // A deadline overshot by a whole probe period means this node was not running
            // (frozen, starved of CPU): the silence is its own, so it accuses nobody
            // (Lifeguard's lesson on local health).
            if now.saturating_duration_since(probe.deadline) > self.config.probe_interval {
                continue;
            }
            let Some(target_addr) = self.members.current(&probe.target).map(|m| m.addr()) else {
                continue;
            };
            if probe.indirect {
                let deadline = now + self.config.suspicion_timeout;
                self.suspect(now, &probe.target, deadline);
                continue;
            }
            for helper in self.pick_live(self.config.indirect_probes, &probe.target) {
                let request = Message::PingReq {
                    seq,
                    target: probe.target.clone(),
                    target_addr,
                };
                self.send_to(&helper, request);
            }
            self.probes.insert(
                seq,
                Probe {
                    indirect: true,
                    deadline: now + self.config.indirect_timeout,
                    ..probe
                },
            );
        }
    }

    fn expire_suspicions(&mut self, now: Instant) {
        let due: Vec<(NodeId, bool)> = self
            .members
            .iter()
            .filter_map(|m| {
                let s = m.suspicion?;
                (s.deadline <= now).then(|| (m.id().clone(), s.first_hand))
            })
            .collect();
        for (id, first_hand) in due {
            self.declare_down(now, &id, first_hand);
        }
    }

    /// Suspects `target` on this node's own evidence and tells every live member, the
    /// suspect included so it can refute at once (Lifeguard's "buddy system").
    fn suspect(&mut self, now: Instant, target: &NodeId, deadline: Instant) {
        let suspicion = Suspicion {
            deadline,
            first_hand: true,
        };
        if let Some((update, event)) =
            self.members
                .accuse(now, target, MemberState::Suspect, Some(suspicion))
        {
            tracing::debug!(node = %self.id, suspect = %target, "suspecting");
            self.broadcast(update, false);
            self.emit(event);
        }
    }

    /// Declares `target` down. A node that raised the suspicion itself tells every member
    /// at once; others only gossip it, so a failure costs `O(n)` messages, not `O(n²)`.
    fn declare_down(&mut self, now: Instant, target: &NodeId, first_hand: bool) {
        let Some((update, event)) = self.members.accuse(now, target, MemberState::Down, None)
        else {
            return;
        };
        tracing::debug!(node = %self.id, down = %target, first_hand, "declaring down");
        if first_hand {
            self.broadcast(update, false);
        } else {
            self.queue_gossip(update);
        }
        self.emit(event);
    }

    // ----- gossip --------------------------------------------------------------------------

    /// Merges what `from` says about members (itself included). Claims about others are
    /// only claims: one whose version could not be real is ignored, and a `Left` that
    /// `from` relays about another member counts as a lesser verdict
    /// ([`MemberTable::believable`](membership::MemberTable::believable)).
    fn apply_updates(&mut self, now: Instant, from: &NodeId, updates: &[MemberUpdate]) {
        // Gossip that learned of a suspicion second-hand waits one probe period longer than
        // the accuser, whose own `Down` normally arrives first.
        let suspicion_deadline = now + self.config.suspicion_timeout + self.config.probe_interval;
        for update in updates.iter().take(self.config.max_members) {
            if update.id.name == self.id.name {
                self.about_self(from, update);
                if self.status != Status::Active {
                    return;
                }
                continue;
            }
            let update = &*self.members.believable(from, update);
            if let Some(why) = self.members.implausible(from, update) {
                tracing::debug!(node = %self.id, %from, about = %update.id, version = update.version, ?why, "claim ignored");
                continue;
            }
            // A `Down` verdict from a peer about a member this node holds alive, and heard
            // from lately, is only a claim: after a heal it is often old news from the other
            // side about a node this side talks to. Check it first: the member is suspected at the verdict's
            // version and told so, and either refutes within a probe cycle or is declared
            // down on this node's own evidence.
            let check_by = now + self.config.probe_timeout + self.config.indirect_timeout;
            let recent = 2 * self.config.probe_interval;
            match self.members.doubt(now, update, check_by, recent) {
                Some(Some((suspicion, event))) => {
                    tracing::debug!(node = %self.id, accused = %update.id, "checking a second-hand down");
                    self.placement_dirty = true;
                    self.broadcast(suspicion, false);
                    self.emit(event);
                    continue;
                }
                Some(None) => continue,
                None => {}
            }
            let merged = self.members.merge(
                now,
                update,
                self.config.max_members,
                suspicion_deadline,
                self.config.tombstone_ttl,
            );
            if merged.changed {
                self.placement_dirty = true;
                self.queue_gossip(update.clone());
            }
            for event in merged.events {
                self.emit(event);
            }
        }
    }

    /// Reacts to news about this node: refutes a suspicion or a false `Down`, or learns
    /// that a newer process took over its name.
    fn about_self(&mut self, from: &NodeId, update: &MemberUpdate) {
        if update.id.incarnation > self.id.incarnation {
            self.supersede(&update.id);
            return;
        }
        // A `Left` about this process is never its own word (it hears only others): it is
        // refuted like a suspicion.
        let accused = matches!(
            update.state,
            MemberState::Suspect | MemberState::Down | MemberState::Left
        );
        if update.id != self.id || !accused || update.version < self.version {
            return;
        }
        // A claim beyond what anyone could have heard from this node is a forgery that
        // others ignore too; refuting it would only hand the forger a higher version.
        if update.version >= membership::MAX_VERSION
            || update.version > self.version.saturating_add(membership::MAX_VERSION_JUMP)
        {
            tracing::debug!(node = %self.id, %from, version = update.version, "implausible claim about this node ignored");
            return;
        }
        self.version = update.version + 1;
        tracing::debug!(node = %self.id, version = self.version, "refuting");
        // Members that think this node is down are told too: they may be the other side of
        // a healed partition.
        let refutation = self.self_update();
        self.broadcast(refutation, true);
        // Tell this node's operator too: it was accused (frozen, partitioned) and is back.
        self.emit(MemberEvent::Refuted(self.id.clone()));
    }

    /// A newer process has this node's name: it owns the name and everything this one ran,
    /// so this one stops every worker at once, with no handoff (a frozen process's state is
    /// stale by definition), and takes no further part.
    fn supersede(&mut self, by: &NodeId) {
        tracing::warn!(node = %self.id, %by, "superseded by a newer process");
        self.status = Status::Superseded;
        self.placement_dirty = true;
        self.stop_all(StopReason::Superseded);
        self.probes.clear();
        self.relays.clear();
        self.actions
            .push_back(Action::Superseded { by: by.clone() });
    }

    fn self_update(&self) -> MemberUpdate {
        MemberUpdate {
            id: self.id.clone(),
            addr: self.addr,
            state: match self.status {
                Status::Left => MemberState::Left,
                _ => MemberState::Alive,
            },
            version: self.version,
            meta: self.meta.clone(),
            ended_ms_ago: 0,
        }
    }

    /// Tells every member that this node's metadata changed, under a new version.
    fn announce_self(&mut self) {
        self.placement_dirty = true;
        // Bounded by MAX_VERSION: ~2^62 announcements, which no node makes.
        self.version = (self.version + 1).min(membership::MAX_VERSION);
        let me = self.self_update();
        self.broadcast(me, false);
    }

    /// Sends the whole member table to a peer, in [`Message::Sync`]s of at most
    /// [`SYNC_CHUNK_BYTES`] of updates each (so that members at their documented limits
    /// never make a frame over [`wire::MAX_FRAME_LEN`]). Each chunk starts with this node's
    /// own update; only the last asks for the peer's table in return.
    fn send_sync(&mut self, to: Option<NodeId>, addr: Option<SocketAddr>, reply: bool) {
        let me = self.self_update();
        let me_bytes = serialized_size(&me);
        let mut chunks: Vec<Vec<MemberUpdate>> = Vec::new();
        let mut chunk = vec![me.clone()];
        let mut bytes = me_bytes;
        let now = self.latest_now;
        for update in self.members.iter().map(|m| m.to_update(now)) {
            let size = serialized_size(&update);
            if chunk.len() > 1 && bytes + size > SYNC_CHUNK_BYTES {
                chunks.push(std::mem::replace(&mut chunk, vec![me.clone()]));
                bytes = me_bytes;
            }
            bytes += size;
            chunk.push(update);
        }
        chunks.push(chunk);
        let last = chunks.len() - 1;
        for (i, members) in chunks.into_iter().enumerate() {
            let reply = reply && i == last;
            self.send(to.clone(), addr, Message::Sync { members, reply });
        }
    }

    /// Sends `update` to every live member (and to remembered `Down` ones too when
    /// `to_tombstones`), and keeps piggybacking it in case a message is lost.
    fn broadcast(&mut self, update: MemberUpdate, to_tombstones: bool) {
        let recipients: Vec<(NodeId, SocketAddr)> = self
            .members
            .iter()
            .filter(|m| m.state().is_live() || (to_tombstones && m.state() == MemberState::Down))
            .map(|m| (m.id().clone(), m.addr()))
            .collect();
        for (id, addr) in recipients {
            let message = Message::Gossip {
                updates: vec![update.clone()],
            };
            self.send(Some(id), Some(addr), message);
        }
        self.queue_gossip(update);
    }

    /// Queues `update` to be piggybacked. The queue holds one update per name and at most
    /// [`Config::max_members`] names (a flood of strangers' tombstones cannot grow it): a
    /// new name makes room by dropping the update about a name the member table no longer
    /// holds, or else the one nearest to being spent. Anti-entropy (the periodic full-table
    /// sync) still carries whatever was dropped.
    fn queue_gossip(&mut self, update: MemberUpdate) {
        let live = self.members.live().count() + 1;
        let remaining = self.config.retransmit_mult * ceil_log2(live + 1);
        let name = update.id.name.clone();
        if !self.gossip.contains_key(&name) && self.gossip.len() >= self.config.max_members {
            let forgotten = self
                .gossip
                .keys()
                .find(|n| self.members.get(n).is_none())
                .cloned();
            let victim = forgotten.or_else(|| {
                self.gossip
                    .iter()
                    .min_by_key(|(_, p)| p.remaining)
                    .map(|(n, _)| n.clone())
            });
            if let Some(victim) = victim {
                self.gossip.remove(&victim);
            }
        }
        self.gossip
            .insert(name, PendingGossip { update, remaining });
    }

    /// The updates to piggyback on a message to `recipient`: first what this node believes
    /// of the recipient when that is bad news (so it can refute), then pending gossip.
    fn piggyback(&mut self, recipient: &NodeId) -> Vec<MemberUpdate> {
        let mut updates = Vec::new();
        if let Some(m) = self.members.get(&recipient.name)
            && (m.state() != MemberState::Alive || m.id() != recipient)
        {
            updates.push(m.to_update(self.latest_now));
        }
        let mut spent = Vec::new();
        let mut bytes: usize = updates.iter().map(serialized_size).sum();
        for (name, pending) in self.gossip.iter_mut() {
            if updates.len() >= self.config.max_piggyback {
                break;
            }
            if name == &recipient.name {
                continue;
            }
            // A probe stays small whatever the members' metadata: the rest waits for the
            // next one (or the next sync).
            let size = serialized_size(&pending.update);
            if !updates.is_empty() && bytes + size > PIGGYBACK_BYTES {
                break;
            }
            bytes += size;
            updates.push(pending.update.clone());
            pending.remaining = pending.remaining.saturating_sub(1);
            if pending.remaining == 0 {
                spent.push(name.clone());
            }
        }
        for name in spent {
            self.gossip.remove(&name);
        }
        updates
    }

    fn sync_round(&mut self) {
        let live: Vec<(NodeId, SocketAddr)> = self
            .members
            .live()
            .map(|m| (m.id().clone(), m.addr()))
            .collect();
        // One live partner for anti-entropy, at random.
        if let Some(i) = self.rng.index(live.len()) {
            let (id, addr) = live[i].clone();
            self.send_child_digest(&id);
            self.send_sync(Some(id), Some(addr), true);
        }
        // One `Down` member in case it is alive on the far side of a partition that has
        // healed, in turn, so that each is tried within as many rounds as there are.
        let down: Vec<(NodeId, SocketAddr)> = self
            .members
            .iter()
            .filter(|m| m.state() == MemberState::Down)
            .map(|m| (m.id().clone(), m.addr()))
            .collect();
        if let Some((id, addr)) = next_in_turn(&down, self.last_down_synced, |d| d.1).cloned() {
            self.last_down_synced = Some(addr);
            self.send_sync(Some(id), Some(addr), true);
        }
        // And one seed that is not a live member, in turn too: two halves that formed
        // separate clusters (cut apart before they ever met) find each other through their
        // seeds.
        let strangers: Vec<SocketAddr> = self
            .seeds
            .iter()
            .filter(|seed| !self.members.live().any(|m| m.addr() == **seed))
            .copied()
            .collect();
        if let Some(&addr) = next_in_turn(&strangers, self.last_stranger_synced, |a| *a) {
            self.last_stranger_synced = Some(addr);
            self.send_sync(None, Some(addr), true);
        }
    }

    fn join_round(&mut self) {
        for seed in self.seeds.clone() {
            self.send_sync(None, Some(seed), true);
        }
    }

    /// Runs after every input: a node that just found its first live peer announces itself
    /// to all of them (so a join is known cluster-wide in one round trip) and asks one of them
    /// for the child table; then placement catches up with whatever changed.
    fn after_input_at(&mut self, now: Instant) {
        if self.status != Status::Active {
            return;
        }
        let has_peers = self.members.live().next().is_some();
        if has_peers && !self.had_peers {
            let me = self.self_update();
            self.broadcast(me, false);
            let peers: Vec<NodeId> = self.members.live().map(|m| m.id().clone()).collect();
            if let Some(i) = self.rng.index(peers.len()) {
                self.send_child_digest(&peers[i]);
            }
        }
        self.had_peers = has_peers;
        if !self.joined && has_peers && self.join_grace_until.is_none() {
            self.join_grace_until = Some(now + self.config.probe_timeout);
        }
        let every_seed_answered = self.seeds.iter().all(|s| self.seeds_heard.contains(s));
        let grace_over = self.join_grace_until.is_some_and(|at| now >= at);
        if !self.joined
            && ((has_peers && every_seed_answered) || grace_over || now >= self.join_deadline)
        {
            tracing::debug!(node = %self.id, peers = has_peers, "joined");
            self.joined = true;
            self.placement_dirty = true;
        }
        self.refresh_placement();
    }

    // ----- plumbing ------------------------------------------------------------------------

    /// While joining: notes that the seed `from` speaks for has answered (its address is
    /// the one its own member row, in the table it sent, gives).
    fn note_seed_heard(&mut self, from: &NodeId, message: &Message) {
        let own_row = match message {
            Message::Sync { members, .. } => members.iter().find(|m| m.id == *from).map(|m| m.addr),
            _ => None,
        };
        let addr = own_row.or_else(|| self.members.current(from).map(|m| m.addr()));
        if let Some(addr) = addr.filter(|a| self.seeds.contains(a)) {
            self.seeds_heard.insert(addr);
        }
    }

    fn emit(&mut self, event: MemberEvent) {
        self.placement_dirty = true;
        if let MemberEvent::Down(id) | MemberEvent::Left(id) = &event {
            self.probes.retain(|_, p| p.target != *id);
        }
        tracing::info!(node = %self.id, ?event, "membership");
        self.actions.push_back(Action::Member(event));
    }

    /// Up to `n` random live members other than `except`.
    fn pick_live(&mut self, n: usize, except: &NodeId) -> Vec<NodeId> {
        let mut pool: Vec<NodeId> = self
            .members
            .iter()
            .filter(|m| m.state() == MemberState::Alive && m.id() != except)
            .map(|m| m.id().clone())
            .collect();
        self.rng.shuffle(&mut pool);
        pool.truncate(n);
        pool
    }

    fn next_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    fn send_to(&mut self, to: &NodeId, message: Message) {
        let addr = self.members.current(to).map(|m| m.addr());
        self.send(Some(to.clone()), addr, message);
    }

    fn send(&mut self, to: Option<NodeId>, addr: Option<SocketAddr>, message: Message) {
        if self.transmits.len() >= self.config.max_queued_transmits {
            self.transmits_dropped += 1;
            return;
        }
        self.transmits.push_back(Transmit { to, addr, message });
    }
}

/// Sizes of a node's internal tables (see [`Node::table_sizes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TableSizes {
    /// Rows of the member table (live and remembered).
    pub members: usize,
    /// Probes in flight.
    pub probes: usize,
    /// Indirect probes run for others.
    pub relays: usize,
    /// Updates waiting to be piggybacked.
    pub gossip: usize,
    /// Queued outgoing messages.
    pub transmits: usize,
    /// Queued actions.
    pub actions: usize,
}

/// The most bytes of member updates one [`Message::Sync`] carries: a member at its
/// documented limits (256 singletons of 256-byte names) takes about 70 KB, so a chunk holds
/// several, and a frame stays far below [`wire::MAX_FRAME_LEN`].
const SYNC_CHUNK_BYTES: usize = 256 * 1024;
/// The most bytes of gossip piggybacked on one probe or acknowledgement.
const PIGGYBACK_BYTES: usize = 128 * 1024;

/// The encoded size of `update` (its largest case if it cannot be measured, which a
/// valid update never is).
fn serialized_size(update: &MemberUpdate) -> usize {
    postcard::experimental::serialized_size(update).unwrap_or(SYNC_CHUNK_BYTES)
}

fn ring_position(name: &NodeName) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_str().as_bytes())
}

fn ceil_log2(n: usize) -> usize {
    (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize
}

/// The entry of `pool` whose address comes next after `last` (wrapping to the lowest), so
/// that a round-robin over a pool whose members come and go still reaches every member
/// within as many turns as the pool has entries.
fn next_in_turn<T>(
    pool: &[T],
    last: Option<SocketAddr>,
    addr: impl Fn(&T) -> SocketAddr,
) -> Option<&T> {
    let after = pool
        .iter()
        .filter(|entry| last.is_none_or(|last| addr(entry) > last))
        .min_by_key(|entry| addr(entry));
    after.or_else(|| pool.iter().min_by_key(|entry| addr(entry)))
}
