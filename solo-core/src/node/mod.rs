//! [`Node`]: one cluster member's protocol state, driven by its caller.
//!
//! This file holds the node's state, its inputs and outputs, and the dispatch of messages;
//! each concern lives in its own file, as methods of [`Node`]:
//!
//! * `failure_detection.rs`: probes, indirect probes, suspicion and `Down` (SWIM).
//! * `gossip.rs`: how member updates spread (piggybacked, broadcast, full syncs).
//! * `ownership.rs`: placement, claims, children and singletons, what runs here.
//! * `lease.rs`: the leases and fencing tokens of `Exclusive` children.

mod failure_detection;
mod gossip;
mod lease;
mod ownership;

pub use lease::Fence;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use crate::config::{Config, ConfigError};
use crate::id::{InstanceId, NodeId, NodeName};
use crate::membership::{self, MAX_ROLES, Member, MemberEvent, MemberState, MemberTable, NodeMeta};
use crate::placement::ChildId;
use crate::rng::Rng;
use crate::supervisor::{ChildSpec, ChildTable, StopReason, SupervisorEvent};
use crate::wire::{self, DecodeError, Message};
use failure_detection::{MAX_RELAYS, Probe, Relay};
use gossip::PendingGossip;

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

/// Builds a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    id: NodeId,
    addr: SocketAddr,
    config: Config,
    seeds: Vec<SocketAddr>,
    seeds_by_name: bool,
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

    /// The node has seeds by name that the runtime resolves and gives it later
    /// ([`Node::set_seeds`]): even with no address yet, it joins rather than start a cluster
    /// of its own (until [`Config::join_timeout`] passes with nobody answering).
    pub fn seeds_by_name(mut self, by_name: bool) -> Self {
        self.seeds_by_name = by_name;
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
        let joined = seeds.is_empty() && !self.seeds_by_name;
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
            ownership_epoch: 0,
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
    /// Moves on whenever an owner in this node's view may have changed (see
    /// [`Node::ownership_epoch`]).
    ownership_epoch: u64,
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
            seeds_by_name: false,
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

    /// What this node tells its peers about itself: its roles, whether it drains, the
    /// singletons it declared.
    pub fn meta(&self) -> &NodeMeta {
        &self.meta
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

    /// The seeds are now `seeds` (the runtime resolved the names it was given again: a pod
    /// that came back has a new address). Its own address is skipped. While joining, the
    /// new ones are asked at once; once joined, seeds are only how separate clusters find
    /// each other.
    pub fn set_seeds(&mut self, seeds: impl IntoIterator<Item = SocketAddr>) {
        let mut seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != self.addr).collect();
        seeds.sort();
        seeds.dedup();
        if seeds == self.seeds {
            return;
        }
        let new: Vec<SocketAddr> = seeds
            .iter()
            .filter(|s| !self.seeds.contains(s))
            .copied()
            .collect();
        self.seeds = seeds;
        self.seeds_heard.retain(|s| self.seeds.contains(s));
        if !self.joined && self.status == Status::Active {
            for seed in new {
                self.send_sync(None, Some(seed), true);
            }
        }
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
