//! [`Transport`]: the handle, and the tasks behind it.
//!
//! One task accepts connections; one task per connection runs its handshake and then reads
//! it; one more per established connection writes it; one task per address being dialed
//! connects and runs the initiator's handshake (then becomes that connection's reader). All
//! of them share a [`State`] behind a `std` mutex that is never held across an `.await`.
//!
//! Link events (`Up`, `Down`) are computed and sent while holding `link_lock`, an async mutex,
//! so the core sees them in the order the connection table changed: never a `Down` for a
//! connection after the `Up` of the one that replaced it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use solo_core::wire::{self, EncodeError, Hello, MAX_FRAME_LEN, PROTOCOL_VERSION};
use solo_core::{Incarnation, Link, NodeId, NodeName, SendFailure, Transmit};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use crate::backoff::backoff_delay;
use crate::config::{Config, ConfigError};
use crate::frame::{self, FrameError};
use crate::handshake::{self, HandshakeError, Identity, NONCE_LEN, Nonce, Verdict};
use crate::network::{Network, TokioNetwork};
use crate::random::{RandomError, Randomness};
use crate::tiebreak::{Direction, Keep, resolve};

mod events;
#[cfg(test)]
pub(crate) mod tests;

pub use events::EventReceiver;
use events::EventSender;

/// Read buffer per connection: many small frames cost one system call.
const READ_BUFFER: usize = 64 * 1024;
/// Write buffer per connection: queued frames are written together, then flushed once.
const WRITE_BUFFER: usize = 64 * 1024;
/// The most frames written between two flushes.
const MAX_BATCH: usize = 256;
/// The pause after a failed `accept` (out of file descriptors, say) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// The most addresses whose backoff is remembered.
const MAX_BACKOFF_ENTRIES: usize = 4096;
/// A zero-length frame, which no sender produces as data: "this connection is retired in
/// favour of another between the same two processes; do not report it down".
const HANDOVER_MARKER: [u8; frame::LEN_PREFIX] = [0; frame::LEN_PREFIX];
/// The keep-alive frame's one byte. Every data frame starts with the protocol version, which
/// is never zero, and is longer than one byte, so the two cannot be confused.
const KEEPALIVE: [u8; 1] = [0];
/// How many times a closed peer's port is dialed for evidence that its process is gone.
const PROBE_DIALS: u32 = 5;
/// The pause between two of those dials.
const PROBE_SPACING: Duration = Duration::from_millis(10);
/// The most names whose newest incarnation a transport remembers (one per member).
const MAX_NEWEST: usize = 4096;

/// What the transport tells its owner: frames from peers and links coming and going.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// A frame from an authenticated peer; hand it to
    /// [`Node::handle_frame`](solo_core::Node::handle_frame). Frames of one connection arrive
    /// in the order they were sent, after that connection's `Link::Up`.
    Frame {
        /// The peer, as authenticated by the handshake.
        from: NodeId,
        /// The frame's bytes, at most [`MAX_FRAME_LEN`]; not yet decoded.
        frame: Vec<u8>,
    },
    /// A connection to `peer` was established ([`Link::Up`]), or the established connection
    /// closed or failed ([`Link::Down`]), reported the moment its read side saw it.
    ///
    /// A connection closed because the tie-break kept another one to the same peer is not
    /// reported, nor is a failed handshake.
    Link {
        /// The peer.
        peer: NodeId,
        /// What happened.
        link: Link,
    },
    /// A peer refused this node's handshake because it knows a newer process with this
    /// node's name: this process is stale (it was frozen, or cut off, while a replacement
    /// started) and should stop at once.
    Superseded {
        /// The peer that refused.
        refused_by: NodeId,
        /// The newer process, as the peer knows it.
        by: NodeId,
    },
    /// A peer this node dialed (a seed, a member) turned out to be configured for another
    /// cluster: another cluster name, protocol version or voter set. Nothing was
    /// exchanged; the dial is retried after the backoff, and reported again each time.
    Misconfigured {
        /// The address dialed.
        addr: SocketAddr,
        /// What differs, naming both sides' values.
        error: solo_core::wire::HelloError,
    },
    /// With [`Config::probe_closed_peers`]: evidence that the process `peer` is gone. Its
    /// connection closed, and then its host refused a connection to the port it listened
    /// on, or a newer process of its name connected from that address. Hand it to
    /// [`Node::handle_process_gone`](solo_core::Node::handle_process_gone).
    ProcessGone {
        /// The process that is gone.
        peer: NodeId,
    },
}

/// An established connection, as [`Transport::connections`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The authenticated peer.
    pub peer: NodeId,
    /// Who dialed.
    pub direction: Direction,
    /// The address the peer advertised in its hello.
    pub addr: SocketAddr,
}

/// Counters since the transport started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Frames handed to a connection's or a dial's queue.
    pub frames_queued: u64,
    /// Frames read from peers.
    pub frames_received: u64,
    /// Frames dropped because the peer's (or the dial's) queue was full.
    pub dropped_queue_full: u64,
    /// Frames dropped because there was no connection to the recipient and no address to dial
    /// (or the transport was shut down, or the recipient is a stale incarnation).
    pub dropped_no_route: u64,
    /// Frames dropped because the dial they waited for failed.
    pub dropped_dial_failed: u64,
    /// Messages that could not be encoded (larger than [`MAX_FRAME_LEN`]).
    pub dropped_unencodable: u64,
    /// Dials that failed to connect or to complete the handshake.
    pub dials_failed: u64,
    /// Handshakes, in either role, that failed after the TCP connection was made.
    pub handshakes_failed: u64,
    /// Inbound connections closed unread because too many handshakes were in progress from
    /// their address ([`Config::max_pending_handshakes_per_ip`](crate::Config::max_pending_handshakes_per_ip)).
    pub connections_refused: u64,
    /// Inbound handshakes closed to make room for a newer one
    /// ([`Config::max_pending_handshakes`](crate::Config::max_pending_handshakes)).
    pub handshakes_evicted: u64,
    /// Connections closed by the tie-break in favour of another to the same peer.
    pub duplicates_closed: u64,
    /// `Link::Up` events sent.
    pub links_up: u64,
    /// `Link::Down` events sent.
    pub links_down: u64,
    /// Connections replaced because nothing arrived on them for
    /// [`Config::idle_timeout`](crate::Config::idle_timeout), or replaced by
    /// [`Transport::refresh`] because they went silent while the peer was suspected.
    pub idle_timeouts: u64,
    /// Established connections now.
    pub connections: usize,
    /// Dials in progress now (including those waiting out a backoff).
    pub dials_in_progress: usize,
}

/// Why the transport could not start. Nothing is left running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportStartError {
    /// The [`Config`] is invalid.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// The listener could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The listener's address could not be read.
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(#[source] io::Error),
    /// The address to advertise is `0.0.0.0` or `[::]`, which peers cannot dial.
    #[error("cannot advertise the unspecified address {0}: set Config::advertised_addr")]
    UnspecifiedAddr(SocketAddr),
    /// This node's hello could not be encoded.
    #[error("cannot encode this node's hello: {0}")]
    Hello(#[from] EncodeError),
    /// [`TransportBuilder::bind`] was not called from within a tokio runtime.
    #[error("the transport must be started from within a tokio runtime")]
    NoRuntime,
}

/// Starts a [`Transport`]: [`Transport::builder`] or [`TransportBuilder::new`], then
/// [`bind`](TransportBuilder::bind).
#[derive(Debug)]
pub struct TransportBuilder {
    node: NodeId,
    config: Config,
    randomness: Option<Randomness>,
    local_tasks: bool,
}

impl TransportBuilder {
    /// A builder for the transport of `node`.
    pub fn new(node: NodeId, config: Config) -> Self {
        Self {
            node,
            config,
            randomness: None,
            local_tasks: false,
        }
    }

    /// Spawns the transport's tasks on the current [`tokio::task::LocalSet`] instead of the
    /// runtime: for deterministic simulation. turmoil runs each host in a `LocalSet`; when a
    /// host crashes, a `LocalSet` drops its tasks (and so closes their sockets) in the order
    /// they were spawned, where a runtime's order depends on task ids, which every thread of
    /// the process draws from. [`bind`](Self::bind) and everything after it must then run
    /// inside that `LocalSet`.
    pub fn local_tasks(mut self) -> Self {
        self.local_tasks = true;
        self
    }

    /// Where nonces and jitter come from. Default: [`Randomness::system`].
    pub fn randomness(mut self, randomness: Randomness) -> Self {
        self.randomness = Some(randomness);
        self
    }

    /// Binds the listener on `listen_addr` over `network`, starts accepting, and returns the
    /// handle and the event stream.
    ///
    /// The stream ends (yields `None`) once the transport is shut down and its tasks are gone.
    /// Dropping the receiver shuts the transport down the next time it has something to
    /// deliver: with nobody listening, it could only drop everything.
    ///
    /// # Errors
    ///
    /// [`TransportStartError`] when the config is invalid, the address cannot be bound or advertised,
    /// or no tokio runtime is running.
    ///
    /// # Cancel safety
    ///
    /// Cancelling it before it returns leaves nothing running.
    pub async fn bind<N: Network>(
        self,
        network: N,
        listen_addr: SocketAddr,
    ) -> Result<(Transport<N>, EventReceiver), TransportStartError> {
        let Self {
            node,
            config,
            randomness,
            local_tasks,
        } = self;
        config.validate()?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TransportStartError::NoRuntime)?;
        let listener =
            network
                .bind(listen_addr)
                .await
                .map_err(|source| TransportStartError::Bind {
                    addr: listen_addr,
                    source,
                })?;
        let local_addr = network
            .local_addr(&listener)
            .map_err(TransportStartError::LocalAddr)?;
        let advertised = config.advertised_addr.unwrap_or(local_addr);
        if advertised.ip().is_unspecified() {
            return Err(TransportStartError::UnspecifiedAddr(advertised));
        }
        let mut voters = config.voters.clone();
        voters.sort();
        voters.dedup();
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster: config.cluster.clone(),
            node,
            addr: advertised,
            voters,
        };
        let me = Identity::new(hello, config.cookie.as_bytes())?;
        let (events_tx, events_rx) = events::channel(&config);
        let events_tx_for_listener = events_tx.clone();
        let shared = Arc::new(Shared {
            network,
            me,
            config,
            local_addr,
            runtime,
            local_tasks,
            link_lock: tokio::sync::Mutex::new(()),
            installs: tokio::sync::watch::Sender::new(()),
            counters: Counters::default(),
            epoch: Instant::now(),
            state: Mutex::new(State {
                closed: false,
                events: Some(events_tx),
                conns: BTreeMap::new(),
                addrs: BTreeMap::new(),
                dials: BTreeMap::new(),
                backoff: BTreeMap::new(),
                handovers: BTreeMap::new(),
                tasks: BTreeMap::new(),
                newest: BTreeMap::new(),
                next_id: 0,
                pending: PendingHandshakes::default(),
                random: randomness.unwrap_or_default(),
            }),
        });
        {
            let mut st = shared.state();
            let task = st.next_id();
            let span =
                tracing::info_span!("listener", node = %shared.me.node(), addr = %local_addr);
            let accepting = Arc::clone(&shared)
                .accept_loop(listener, events_tx_for_listener)
                .instrument(span);
            shared.spawn(&mut st, task, accepting);
        }
        tracing::info!(node = %shared.me.node(), %local_addr, %advertised, "transport listening");
        Ok((
            Transport {
                owner: Arc::new(Owner { shared }),
            },
            events_rx,
        ))
    }
}

/// The TCP transport of one node: a cheap, cloneable handle.
///
/// [`send`](Transport::send) never blocks; frames and link changes arrive on the event
/// channel returned by [`TransportBuilder::bind`]. Dropping the last handle (or calling
/// [`shutdown`](Transport::shutdown)) closes the listener and every connection.
pub struct Transport<N: Network = TokioNetwork> {
    owner: Arc<Owner<N>>,
}

impl Transport<TokioNetwork> {
    /// A builder for the transport of `node`; the same as [`TransportBuilder::new`].
    pub fn builder(node: NodeId, config: Config) -> TransportBuilder {
        TransportBuilder::new(node, config)
    }
}

impl<N: Network> Clone for Transport<N> {
    fn clone(&self) -> Self {
        Self {
            owner: Arc::clone(&self.owner),
        }
    }
}

impl<N: Network> fmt::Debug for Transport<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("node", self.node())
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl<N: Network> Transport<N> {
    fn shared(&self) -> &Arc<Shared<N>> {
        &self.owner.shared
    }

    /// Queues a message for delivery; never blocks, never fails.
    ///
    /// Routing: to the connection with exactly `transmit.to` if there is one; else, with
    /// `to == None`, to the connection of whoever answered at `transmit.addr`; else it dials
    /// `transmit.addr` (after the address's backoff, if a dial failed lately) and the frame
    /// waits for the handshake, then goes to the peer that answered if it is `to` (or `to` is
    /// `None`). Whatever cannot be routed, or finds its queue full, is dropped and counted in
    /// [`stats`](Transport::stats): the membership protocol tolerates loss. A message that
    /// must not be lost goes through [`try_send`](Transport::try_send) instead.
    pub fn send(&self, transmit: Transmit) {
        match self.try_send(&transmit) {
            Ok(()) => {}
            Err(SendFailure::QueueFull) => self.shared().counters.dropped_queue_full.inc(),
            Err(SendFailure::TooLarge) => {
                self.shared().counters.dropped_unencodable.inc();
                tracing::warn!(node = %self.node(), "message dropped: larger than a frame");
            }
            Err(_no_route) => self.shared().counters.dropped_no_route.inc(),
        }
    }

    /// Queues a message for delivery as [`send`](Transport::send) does, but gives it back
    /// when it cannot be queued, so that its sender can offer it again or report it: the
    /// messaging layer sends calls, replies and handoffs this way. Never blocks.
    ///
    /// `Ok` means the frame is on a connection's write queue, or on the queue of a dial
    /// under way to `transmit.addr` (frames of a dial that fails are counted in
    /// [`TransportStats::dropped_dial_failed`]; its peer is then soon suspected). Failures
    /// are not counted in [`stats`](Transport::stats): the caller decides what they are.
    ///
    /// # Errors
    ///
    /// [`SendFailure::QueueFull`] when the peer's queue holds
    /// [`Config::max_queued_frames`] frames or [`Config::max_queued_bytes`] bytes,
    /// [`SendFailure::NoRoute`] when there is no connection and none can be made now,
    /// [`SendFailure::TooLarge`] when the message encodes to more than [`MAX_FRAME_LEN`].
    pub fn try_send(&self, transmit: &Transmit) -> Result<(), SendFailure> {
        let frame =
            wire::encode_frame(&transmit.message).map_err(|_oversized| SendFailure::TooLarge)?;
        self.shared()
            .route(transmit.to.clone(), transmit.addr, frame)
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        self.shared().me.node()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// The address this node advertises to peers.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.shared().me.hello().addr
    }

    /// The established connections, one per peer name, ordered by name.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.shared()
            .state()
            .conns
            .values()
            .map(|c| ConnectionInfo {
                peer: c.peer.clone(),
                direction: c.direction,
                addr: c.addr,
            })
            .collect()
    }

    /// The counters, and the numbers of connections and dials now.
    pub fn stats(&self) -> TransportStats {
        let shared = self.shared();
        let (connections, dials_in_progress) = {
            let st = shared.state();
            (st.conns.len(), st.dials.len())
        };
        shared.counters.snapshot(connections, dials_in_progress)
    }

    /// Notes that `id` is the newest process of its name this node knows of (the driver
    /// calls it for every member it learns of). A dialer with an older incarnation of that
    /// name is refused at its handshake with a verdict that says "superseded" and names
    /// `id`'s incarnation, so that a stale process (resumed after a freeze, or back from a
    /// partition) learns on its first redial that it was replaced.
    pub fn note_incarnation(&self, id: &NodeId) {
        let mut st = self.shared().state();
        if st.newest.len() >= MAX_NEWEST && !st.newest.contains_key(&id.name) {
            // Full: forget one name (the table only speeds up what gossip also says).
            st.newest.pop_first();
        }
        let newest = st.newest.entry(id.name.clone()).or_insert(id.incarnation);
        *newest = (*newest).max(id.incarnation);
    }

    /// Closes the established connection to exactly `peer` (that incarnation), if any,
    /// without reporting `Link::Down`: the caller decided. The peer is sent the handover
    /// marker, so it waits (up to its handshake timeout) for a successor rather than report
    /// this node down. The next frame for the peer dials again.
    ///
    /// The driver calls it when the protocol declares a peer down. Across a cut cable a TCP
    /// connection still looks established until TCP's own timeout, minutes later, and would
    /// swallow everything sent to the peer once the cable is mended: a fresh dial does not.
    pub fn disconnect(&self, peer: &NodeId) {
        let mut st = self.shared().state();
        let current = st.conns.get(&peer.name).is_some_and(|c| c.peer == *peer);
        if let Some(old) = current.then(|| st.remove_conn(&peer.name)).flatten() {
            // Retired, not killed: its writer flushes, sends the handover marker and closes,
            // so the peer waits for a successor instead of reporting this node down.
            // Otherwise one false `Down` would echo back and forth: each side's disconnect
            // would read as a crash to the other. Its reader runs on until the peer closes
            // (or the idle timeout): closing a socket with unread bytes sends a reset, which
            // can overtake the marker and read as a crash after all.
            old.retired.store(true, Ordering::Release);
            tracing::debug!(node = %self.node(), %peer, "disconnecting a peer declared down");
        }
    }

    /// Replaces the connection to exactly `peer` if nothing arrived on it for longer than a
    /// keep-alive interval and a half: it is retired (the handover marker, no `Link::Down`)
    /// and a successor is dialed at once. Returns whether it did.
    ///
    /// The driver calls it when the protocol suspects a peer. A connection can stall without
    /// closing (a segment lost across a cut that TCP retransmits only after a long backoff,
    /// a middlebox that forgot the flow); the idle timeout finds it in the end, but a fresh
    /// dial lets the suspect's refutation through before the suspicion runs out. A peer that
    /// is still talking keeps its connection.
    pub fn refresh(&self, peer: &NodeId) -> bool {
        let shared = self.shared();
        let addr = {
            let mut st = shared.state();
            let stale = st
                .conns
                .get(&peer.name)
                .is_some_and(|c| c.peer == *peer && shared.is_stale(c, Instant::now()));
            let Some(old) = stale.then(|| st.remove_conn(&peer.name)).flatten() else {
                return false;
            };
            old.retired.store(true, Ordering::Release);
            old.addr
        };
        tracing::debug!(node = %self.node(), %peer, "replacing a silent connection to a suspect");
        shared.counters.idle_timeouts.inc();
        // A keep-alive that finds no room is not needed: the queue is busy with frames.
        let _ = shared.route(Some(peer.clone()), Some(addr), KEEPALIVE.to_vec());
        true
    }

    /// Closes the listener and every connection, and stops every task. Peers see the
    /// connections close. No `Link::Down` is reported for them; the event stream ends once
    /// the tasks are gone. Idempotent; [`send`](Transport::send) drops everything afterwards.
    pub fn shutdown(&self) {
        self.shared().shutdown();
    }
}

/// Shuts the transport down when the last handle goes. Tasks hold [`Shared`], not this.
struct Owner<N: Network> {
    shared: Arc<Shared<N>>,
}

impl<N: Network> Drop for Owner<N> {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn inc(&self) {
        self.add(1);
    }
    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Counters {
    frames_queued: Counter,
    frames_received: Counter,
    dropped_queue_full: Counter,
    dropped_no_route: Counter,
    dropped_dial_failed: Counter,
    dropped_unencodable: Counter,
    dials_failed: Counter,
    handshakes_failed: Counter,
    connections_refused: Counter,
    handshakes_evicted: Counter,
    duplicates_closed: Counter,
    links_up: Counter,
    links_down: Counter,
    idle_timeouts: Counter,
}

impl Counters {
    fn snapshot(&self, connections: usize, dials_in_progress: usize) -> TransportStats {
        TransportStats {
            frames_queued: self.frames_queued.get(),
            frames_received: self.frames_received.get(),
            dropped_queue_full: self.dropped_queue_full.get(),
            dropped_no_route: self.dropped_no_route.get(),
            dropped_dial_failed: self.dropped_dial_failed.get(),
            dropped_unencodable: self.dropped_unencodable.get(),
            dials_failed: self.dials_failed.get(),
            handshakes_failed: self.handshakes_failed.get(),
            connections_refused: self.connections_refused.get(),
            handshakes_evicted: self.handshakes_evicted.get(),
            duplicates_closed: self.duplicates_closed.get(),
            links_up: self.links_up.get(),
            links_down: self.links_down.get(),
            idle_timeouts: self.idle_timeouts.get(),
            connections,
            dials_in_progress,
        }
    }
}

type Events = EventSender;

/// Everything the tasks share.
struct Shared<N: Network> {
    network: N,
    me: Identity,
    config: Config,
    local_addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    /// Spawn on the current `LocalSet` (see [`TransportBuilder::local_tasks`]).
    local_tasks: bool,
    /// Held while the connection table changes *and* the resulting link events are sent.
    link_lock: tokio::sync::Mutex<()>,
    /// Signalled whenever a connection is installed (handovers wait for their successor).
    installs: tokio::sync::watch::Sender<()>,
    counters: Counters,
    state: Mutex<State>,
    /// What [`Heard`] counts from.
    epoch: Instant,
}

struct State {
    closed: bool,
    /// Each task gets a clone; taken at shutdown so the stream ends when the tasks are gone.
    events: Option<Events>,
    /// The established connection per peer name: at most one.
    conns: BTreeMap<NodeName, Conn>,
    /// Addresses (advertised, or dialed) of established connections, for `to == None`.
    addrs: BTreeMap<SocketAddr, NodeName>,
    /// Dials in progress, by address, with the frames waiting for them.
    dials: BTreeMap<SocketAddr, Dial>,
    /// Addresses whose last dial failed.
    backoff: BTreeMap<SocketAddr, Backoff>,
    /// Peers whose connection was handed over (see [`Shared::handover`]) and whose
    /// successor connection is not installed yet.
    handovers: BTreeMap<NodeName, Handover>,
    /// Every running task, so that shutdown can stop them and replacement can close one.
    tasks: BTreeMap<u64, AbortHandle>,
    /// The newest incarnation known of each name (see [`Transport::note_incarnation`]): an
    /// older one is refused at its handshake, with [`Verdict::Superseded`].
    newest: BTreeMap<NodeName, Incarnation>,
    next_id: u64,
    /// Inbound connections in their handshake.
    pending: PendingHandshakes,
    random: Randomness,
}

/// Inbound connections in their handshake, by task (ids rise, so the first is the oldest)
/// and by source address, for [`Config::max_pending_handshakes`] and
/// [`Config::max_pending_handshakes_per_ip`].
#[derive(Debug, Default)]
struct PendingHandshakes {
    by_task: BTreeMap<u64, IpAddr>,
    by_ip: BTreeMap<IpAddr, usize>,
}

impl PendingHandshakes {
    fn len(&self) -> usize {
        self.by_task.len()
    }

    fn from(&self, ip: IpAddr) -> usize {
        self.by_ip.get(&ip).copied().unwrap_or(0)
    }

    fn insert(&mut self, task: u64, ip: IpAddr) {
        self.by_task.insert(task, ip);
        *self.by_ip.entry(ip).or_default() += 1;
    }

    /// Forgets `task`; whether it was pending.
    fn remove(&mut self, task: u64) -> bool {
        let Some(ip) = self.by_task.remove(&task) else {
            return false;
        };
        if let Some(count) = self.by_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.by_ip.remove(&ip);
            }
        }
        true
    }

    /// Forgets the oldest handshake and returns its task.
    fn pop_oldest(&mut self) -> Option<u64> {
        let task = *self.by_task.keys().next()?;
        self.remove(task);
        Some(task)
    }
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Removes the connection of `name` and its address entries.
    fn remove_conn(&mut self, name: &NodeName) -> Option<Conn> {
        let conn = self.conns.remove(name)?;
        for addr in &conn.addrs {
            if self.addrs.get(addr) == Some(name) {
                self.addrs.remove(addr);
            }
        }
        Some(conn)
    }

    /// The abort handles of a connection's tasks, except `except` (the caller's own).
    fn take_tasks(&mut self, conn: &Conn, except: Option<u64>) -> Vec<AbortHandle> {
        [Some(conn.reader_task), conn.writer_task]
            .into_iter()
            .flatten()
            .filter(|&task| Some(task) != except)
            .filter_map(|task| self.tasks.remove(&task))
            .collect()
    }

    fn is_current(&self, name: &NodeName, conn: u64) -> bool {
        self.conns.get(name).is_some_and(|c| c.id == conn)
    }
}

struct Conn {
    id: u64,
    peer: NodeId,
    direction: Direction,
    addr: SocketAddr,
    tx: mpsc::Sender<Vec<u8>>,
    /// Bytes in `tx`'s queue, for [`Config::max_queued_bytes`]; the writer takes off what
    /// it dequeues.
    queued_bytes: Arc<AtomicUsize>,
    /// Set when the connection is retired in favour of another to the same peer: its writer
    /// then ends with the handover marker.
    retired: Arc<AtomicBool>,
    /// When something last arrived on it after the handshake.
    heard: Heard,
    /// When it was installed.
    installed_at: Instant,
    reader_task: u64,
    writer_task: Option<u64>,
    addrs: Vec<SocketAddr>,
}

/// When something last arrived on a connection after its handshake, shared by its reader
/// and the table.
///
/// The acceptor sends the handshake's last message, so until the dialer's first frame (a
/// keep-alive it sends at once) the acceptor cannot tell whether the dialer took the
/// connection: a close before then is a handshake that failed at the dialer, not a failure
/// of the peer, and is not reported `Down`. The dialer read the acceptor's verdict, so its
/// side is confirmed from the start.
#[derive(Clone, Default)]
struct Heard {
    /// Microseconds since [`Shared::epoch`], plus one; zero while nothing arrived.
    at: Arc<AtomicU64>,
}

impl Heard {
    fn hear(&self, epoch: Instant, now: Instant) {
        let micros =
            u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX - 1);
        self.at.store(micros + 1, Ordering::Release);
    }

    fn confirmed(&self) -> bool {
        self.at.load(Ordering::Acquire) != 0
    }

    /// How long nothing arrived, counted from `since` if nothing ever did.
    fn silent_for(&self, epoch: Instant, since: Instant, now: Instant) -> Duration {
        let last = match self.at.load(Ordering::Acquire) {
            0 => since,
            micros => epoch + Duration::from_micros(micros - 1),
        };
        now.saturating_duration_since(last.max(since))
    }
}

struct Handover {
    peer: NodeId,
    conn: u64,
}

struct Dial {
    queue: VecDeque<Queued>,
}

struct Queued {
    to: Option<NodeId>,
    frame: Vec<u8>,
}

struct Backoff {
    failures: u32,
    next_attempt: Instant,
}

/// What the tasks of an installed connection need.
struct NewConn {
    id: u64,
    rx: mpsc::Receiver<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    retired: Arc<AtomicBool>,
    heard: Heard,
    /// The dialer's side: its first frame confirms the handshake to the acceptor.
    confirm: bool,
}

/// What [`Shared::install`] decided.
struct Installed {
    verdict: Verdict,
    /// For [`Verdict::Superseded`]: the newer incarnation of the dialer's name.
    newer: Option<Incarnation>,
    /// The new connection, if it was installed.
    conn: Option<NewConn>,
    events: Vec<TransportEvent>,
    abort: Vec<AbortHandle>,
}

impl Installed {
    fn refused(verdict: Verdict) -> Self {
        Self {
            verdict,
            newer: None,
            conn: None,
            events: Vec::new(),
            abort: Vec::new(),
        }
    }
}

async fn emit(events: &Events, list: Vec<TransportEvent>) -> bool {
    for event in list {
        if events.send(event).await.is_err() {
            return false;
        }
    }
    true
}

impl<N: Network> Shared<N> {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug of ours; the state stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns `future` as task `id`, registered so that shutdown can stop it.
    fn spawn<F>(self: &Arc<Self>, st: &mut State, id: u64, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if st.closed {
            // Shut down while the caller was busy: nothing new starts.
            return;
        }
        let shared = Arc::clone(self);
        // The task can only deregister itself after this registration: both take the lock.
        let task = async move {
            future.await;
            shared.state().tasks.remove(&id);
        };
        let handle = if self.local_tasks {
            tokio::task::spawn_local(task)
        } else {
            self.runtime.spawn(task)
        };
        st.tasks.insert(id, handle.abort_handle());
    }

    fn nonce(&self) -> Result<Nonce, RandomError> {
        let mut nonce = [0; NONCE_LEN];
        self.state().random.fill(&mut nonce)?;
        Ok(nonce)
    }

    fn shutdown(&self) {
        let (tasks, conns, dials, events) = {
            let mut st = self.state();
            if st.closed {
                return;
            }
            st.closed = true;
            st.addrs.clear();
            (
                std::mem::take(&mut st.tasks),
                std::mem::take(&mut st.conns),
                std::mem::take(&mut st.dials),
                st.events.take(),
            )
        };
        for task in tasks.into_values() {
            task.abort();
        }
        drop((conns, dials, events));
        tracing::info!(node = %self.me.node(), "transport shut down");
    }

    // ----- sending ---------------------------------------------------------------------

    fn enqueue(&self, conn: &Conn, frame: Vec<u8>) -> Result<(), SendFailure> {
        self.try_queue(conn, frame)?;
        self.counters.frames_queued.inc();
        Ok(())
    }

    /// Puts `frame` on `conn`'s write queue unless the queue holds
    /// [`Config::max_queued_frames`] frames or [`Config::max_queued_bytes`] bytes already
    /// (a frame larger than the whole budget still goes on an empty queue).
    fn try_queue(&self, conn: &Conn, frame: Vec<u8>) -> Result<(), SendFailure> {
        let len = frame.len();
        let queued = conn.queued_bytes.load(Ordering::Acquire);
        if queued > 0 && queued + len > self.config.max_queued_bytes {
            return Err(SendFailure::QueueFull);
        }
        conn.queued_bytes.fetch_add(len, Ordering::AcqRel);
        conn.tx.try_send(frame).map_err(|error| {
            conn.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            match error {
                mpsc::error::TrySendError::Full(_) => SendFailure::QueueFull,
                mpsc::error::TrySendError::Closed(_) => SendFailure::NoRoute,
            }
        })
    }

    fn route(
        self: &Arc<Self>,
        to: Option<NodeId>,
        addr: Option<SocketAddr>,
        frame: Vec<u8>,
    ) -> Result<(), SendFailure> {
        let mut st = self.state();
        if st.closed || to.as_ref() == Some(self.me.node()) {
            return Err(SendFailure::NoRoute);
        }
        match &to {
            Some(id) => {
                if let Some(conn) = st.conns.get(&id.name) {
                    if conn.peer == *id {
                        return self.enqueue(conn, frame);
                    }
                    if conn.peer.incarnation > id.incarnation {
                        // A stale incarnation: its successor holds the name (and the address).
                        return Err(SendFailure::NoRoute);
                    }
                }
            }
            None => {
                let conn = addr
                    .and_then(|addr| st.addrs.get(&addr))
                    .and_then(|name| st.conns.get(name));
                if let Some(conn) = conn {
                    return self.enqueue(conn, frame);
                }
            }
        }
        let Some(addr) = addr else {
            return Err(SendFailure::NoRoute);
        };
        if addr == self.me.hello().addr || addr == self.local_addr {
            return Err(SendFailure::NoRoute);
        }
        if let Some(dial) = st.dials.get_mut(&addr) {
            let bytes: usize = dial.queue.iter().map(|q| q.frame.len()).sum();
            if dial.queue.len() >= self.config.max_queued_frames_dialing
                || bytes + frame.len() > self.config.max_queued_bytes
            {
                return Err(SendFailure::QueueFull);
            }
            dial.queue.push_back(Queued { to, frame });
            self.counters.frames_queued.inc();
            return Ok(());
        }
        let Some(events) = st.events.clone() else {
            return Err(SendFailure::NoRoute);
        };
        if st.dials.len() >= self.config.max_dials {
            return Err(SendFailure::NoRoute);
        }
        st.dials.insert(
            addr,
            Dial {
                queue: VecDeque::from([Queued { to, frame }]),
            },
        );
        self.counters.frames_queued.inc();
        let task = st.next_id();
        let span = tracing::info_span!(
            "conn",
            node = %self.me.node(),
            remote = %addr,
            dir = "out",
            peer = tracing::field::Empty,
        );
        let dialing = Arc::clone(self)
            .run_outbound(addr, task, events)
            .instrument(span);
        self.spawn(&mut st, task, dialing);
        Ok(())
    }

    /// Hands the frames that waited for a dial to the connection now serving `peer`.
    fn flush_queue(&self, st: &State, peer: &NodeId, queue: VecDeque<Queued>) {
        match st.conns.get(&peer.name).filter(|c| c.peer == *peer) {
            Some(conn) => {
                for queued in queue {
                    if queued.to.as_ref().is_none_or(|to| to == peer) {
                        // Counted as queued already, when they joined the dial's queue.
                        match self.try_queue(conn, queued.frame) {
                            Ok(()) => {}
                            Err(SendFailure::QueueFull) => self.counters.dropped_queue_full.inc(),
                            Err(_no_route) => self.counters.dropped_no_route.inc(),
                        }
                    } else {
                        self.counters.dropped_no_route.inc();
                    }
                }
            }
            None => self.counters.dropped_no_route.add(queue.len() as u64),
        }
    }

    // ----- connection table ------------------------------------------------------------

    /// Decides whether a newly authenticated connection becomes `hello.node`'s connection,
    /// and installs it if so. The caller holds `link_lock`, sends `events` before releasing
    /// it, and aborts `abort`.
    fn install(
        &self,
        st: &mut State,
        hello: &Hello,
        direction: Direction,
        reader_task: u64,
        dialed: Option<SocketAddr>,
    ) -> Installed {
        let peer = &hello.node;
        if st.closed {
            return Installed::refused(Verdict::Full);
        }
        let me = self.me.node();
        let newer = st
            .newest
            .get(&peer.name)
            .copied()
            .filter(|newest| *newest > peer.incarnation)
            .or((peer.name == me.name && me.incarnation > peer.incarnation)
                .then_some(me.incarnation));
        if let Some(newer) = newer {
            tracing::info!(node = %me, %peer, newer = newer.0, "refusing a superseded process");
            let mut refused = Installed::refused(Verdict::Superseded);
            refused.newer = Some(newer);
            return refused;
        }
        let mut installed = Installed::refused(Verdict::Accepted);
        let mut replaced_same_peer = false;
        let now = Instant::now();
        let existing = st
            .conns
            .get(&peer.name)
            .map(|c| (c.peer.clone(), c.direction, self.is_stale(c, now)));
        if let Some((existing_peer, existing_direction, stale)) = existing {
            let keep = match resolve(
                self.me.node(),
                (&existing_peer, existing_direction),
                (peer, direction),
            ) {
                // The same process dials again over a connection that has gone silent: it
                // gave up on a stalled one (see [`Transport::refresh`]), which a simultaneous
                // dial's fresh connection never is. Only the acceptor decides, by its verdict.
                Keep::Existing if existing_peer == *peer && stale => Keep::New,
                keep => keep,
            };
            match keep {
                Keep::Existing => {
                    if existing_peer == *peer {
                        installed.verdict = Verdict::Duplicate;
                        self.counters.duplicates_closed.inc();
                        if let Some(addr) = dialed {
                            st.addrs.insert(addr, peer.name.clone());
                            if let Some(conn) = st.conns.get_mut(&peer.name) {
                                conn.addrs.push(addr);
                            }
                        }
                    } else {
                        installed.verdict = Verdict::Superseded;
                        installed.newer = Some(existing_peer.incarnation);
                    }
                    return installed;
                }
                Keep::New => {
                    if let Some(old) = st.remove_conn(&peer.name) {
                        if old.peer == *peer {
                            // Retired, not killed: dropping its queue makes its writer send
                            // the handover marker, so the peer does not take the close for
                            // a failure; its reader runs on until the peer closes.
                            old.retired.store(true, Ordering::Release);
                            replaced_same_peer = true;
                            self.counters.duplicates_closed.inc();
                        } else {
                            installed.abort = st.take_tasks(&old, None);
                            self.counters.links_down.inc();
                            let same_addr = old.addr == hello.addr;
                            installed.events.push(TransportEvent::Link {
                                peer: old.peer.clone(),
                                link: Link::Down,
                            });
                            if self.config.probe_closed_peers && same_addr {
                                // Its port now belongs to its successor.
                                installed
                                    .events
                                    .push(TransportEvent::ProcessGone { peer: old.peer });
                            }
                        }
                    }
                }
            }
        } else if st.conns.len() >= self.config.max_connections {
            installed.verdict = Verdict::Full;
            return installed;
        }
        // The peer handed a connection over to this one: the core already knows it is up.
        if let Some(handover) = st.handovers.remove(&peer.name) {
            if handover.peer == *peer {
                replaced_same_peer = true;
            } else {
                self.counters.links_down.inc();
                installed.events.push(TransportEvent::Link {
                    peer: handover.peer,
                    link: Link::Down,
                });
            }
        }
        let (tx, rx) = mpsc::channel(self.config.max_queued_frames);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let retired = Arc::new(AtomicBool::new(false));
        let heard = Heard::default();
        if direction == Direction::Outbound {
            heard.hear(self.epoch, now);
        }
        let id = st.next_id();
        let mut addrs = vec![hello.addr];
        addrs.extend(dialed.filter(|&addr| addr != hello.addr));
        for addr in &addrs {
            st.addrs.insert(*addr, peer.name.clone());
        }
        st.conns.insert(
            peer.name.clone(),
            Conn {
                id,
                peer: peer.clone(),
                direction,
                addr: hello.addr,
                tx,
                queued_bytes: Arc::clone(&queued_bytes),
                retired: Arc::clone(&retired),
                heard: heard.clone(),
                installed_at: now,
                reader_task,
                writer_task: None,
                addrs,
            },
        );
        if !replaced_same_peer {
            self.counters.links_up.inc();
            installed.events.push(TransportEvent::Link {
                peer: peer.clone(),
                link: Link::Up,
            });
        }
        installed.conn = Some(NewConn {
            id,
            rx,
            queued_bytes,
            retired,
            heard,
            confirm: direction == Direction::Outbound,
        });
        self.installs.send_replace(());
        installed
    }

    /// Whether nothing arrived on `conn` for longer than a keep-alive interval and a half,
    /// counted from its install: a live peer's keep-alives come every interval.
    fn is_stale(&self, conn: &Conn, now: Instant) -> bool {
        let silent = conn.heard.silent_for(self.epoch, conn.installed_at, now);
        silent > self.config.keepalive_interval * 3 / 2
    }

    /// The established connection `conn` to `peer` closed or failed: report `Down` unless it
    /// was already replaced or removed, or it is an inbound connection the dialer never
    /// confirmed (see [`Heard`]).
    async fn connection_lost(
        self: &Arc<Self>,
        conn: u64,
        peer: &NodeId,
        caller: u64,
        events: &Events,
    ) {
        let _link = self.link_lock.lock().await;
        let (abort, confirmed, addr) = {
            let mut st = self.state();
            if !st.is_current(&peer.name, conn) {
                return;
            }
            match st.remove_conn(&peer.name) {
                Some(old) => (
                    st.take_tasks(&old, Some(caller)),
                    old.heard.confirmed(),
                    old.addr,
                ),
                None => return,
            }
        };
        for task in abort {
            task.abort();
        }
        if !confirmed {
            // The dialer's handshake failed after this side's last step (a lost verdict, a
            // timeout). It dials again; if it died instead, the core's probes find out.
            tracing::debug!("connection closed before the dialer confirmed it; not a failure");
            return;
        }
        self.counters.links_down.inc();
        tracing::info!("link down");
        // If nobody listens any more there is nobody to tell.
        let _ = events
            .send(TransportEvent::Link {
                peer: peer.clone(),
                link: Link::Down,
            })
            .await;
        if self.config.probe_closed_peers {
            self.probe_closed(peer.clone(), addr, events.clone());
        }
    }

    /// Dials `addr`, where the closed connection's peer listened: a refusal by its host's
    /// kernel is evidence that the process is gone ([`TransportEvent::ProcessGone`]).
    /// A dying process's kernel may close its connections before its listener and accept a
    /// dial in between, so a dial that connects is tried again, [`PROBE_DIALS`] times in
    /// all; a live process never refuses, so retrying cannot make evidence up. Anything
    /// else (a timeout, an unreachable host) is no evidence.
    fn probe_closed(self: &Arc<Self>, peer: NodeId, addr: SocketAddr, events: Events) {
        let mut st = self.state();
        let task = st.next_id();
        let shared = Arc::clone(self);
        let probe = async move {
            for attempt in 1..=PROBE_DIALS {
                let deadline = Instant::now() + shared.config.handshake_timeout;
                match timeout_at(deadline, shared.network.connect(addr)).await {
                    Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::info!(%peer, %addr, "its port refuses connections: the process is gone");
                        let _ = events.send(TransportEvent::ProcessGone { peer }).await;
                        return;
                    }
                    Ok(Ok(_listening)) => {
                        tracing::debug!(%peer, %addr, attempt, "its port still accepts connections");
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %addr, %error, "probe dial failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, %addr, "probe dial timed out");
                        return;
                    }
                }
                tokio::time::sleep(PROBE_SPACING).await;
            }
        };
        self.spawn(&mut st, task, probe.instrument(tracing::Span::current()));
    }

    /// Nothing arrived on `conn` for the idle timeout: the connection stalled without
    /// closing. Retire it the way the tie-break does (its writer sends the handover marker,
    /// so the peer waits for a successor instead of reporting a failure) and dial a successor
    /// at once. No `Link::Down`: a stalled connection is not a dead peer, and the core's
    /// failure detector judges the peer. If the successor cannot be dialed, the peer's side
    /// reports `Down` after its handshake timeout.
    async fn connection_idle(self: &Arc<Self>, conn: u64, peer: &NodeId) {
        let addr = {
            let _link = self.link_lock.lock().await;
            let mut st = self.state();
            if !st.is_current(&peer.name, conn) {
                return;
            }
            let Some(old) = st.remove_conn(&peer.name) else {
                return;
            };
            old.retired.store(true, Ordering::Release);
            // Dropping `old` drops its queue: the writer flushes, sends the marker, closes.
            old.addr
        };
        self.counters.idle_timeouts.inc();
        // A keep-alive that finds no room is not needed: the queue is busy with frames.
        let _ = self.route(Some(peer.clone()), Some(addr), KEEPALIVE.to_vec());
    }

    /// The peer retired connection `conn` in favour of another between the same two
    /// processes (it sent the handover marker). Remove it without a `Down`: a peer that
    /// retired a connection was alive to send the marker. Its successor is usually under way
    /// (a tie-break, an idle replacement), and is then installed without a second `Up`; a
    /// peer that retired it because it declared this node down dials again only when it has
    /// something to send. Either way the core's failure detector, not this close, judges
    /// the peer. After the handshake timeout the successor is no longer awaited.
    async fn handover(&self, conn: u64, peer: &NodeId) {
        let mut installs = self.installs.subscribe();
        {
            let _link = self.link_lock.lock().await;
            let mut st = self.state();
            if !st.is_current(&peer.name, conn) {
                return;
            }
            // Its writer is not aborted: it flushes what is queued, then closes.
            st.remove_conn(&peer.name);
            st.handovers.insert(
                peer.name.clone(),
                Handover {
                    peer: peer.clone(),
                    conn,
                },
            );
            self.counters.duplicates_closed.inc();
        }
        tracing::debug!("connection handed over; waiting for its successor");
        let deadline = Instant::now() + self.config.handshake_timeout;
        loop {
            let pending = self
                .state()
                .handovers
                .get(&peer.name)
                .is_some_and(|h| h.conn == conn);
            if !pending {
                return;
            }
            if timeout_at(deadline, installs.changed()).await.is_err() {
                break;
            }
        }
        let _link = self.link_lock.lock().await;
        let mut st = self.state();
        if st.handovers.get(&peer.name).is_some_and(|h| h.conn == conn) {
            st.handovers.remove(&peer.name);
            tracing::debug!("the handed-over connection has no successor yet; not a failure");
        }
    }

    fn handshake_failed(&self, error: &HandshakeError) {
        self.counters.handshakes_failed.inc();
        match error {
            HandshakeError::BadProof
            | HandshakeError::Refused(_)
            | HandshakeError::WrongCertificate { .. } => {
                tracing::warn!(%error, "handshake failed; connection dropped");
            }
            _ => tracing::debug!(%error, "handshake failed; connection dropped"),
        }
    }

    fn dial_failed(&self, addr: SocketAddr, error: &HandshakeError) {
        self.counters.dials_failed.inc();
        if !matches!(error, HandshakeError::Connect(_)) {
            self.handshake_failed(error);
        }
        let now = Instant::now();
        let mut st = self.state();
        if let Some(dial) = st.dials.remove(&addr) {
            self.counters
                .dropped_dial_failed
                .add(dial.queue.len() as u64);
        }
        let jitter = st.random.next_u64().unwrap_or(0);
        if st.backoff.len() >= MAX_BACKOFF_ENTRIES && !st.backoff.contains_key(&addr) {
            st.backoff.retain(|_, b| b.next_attempt > now);
            if st.backoff.len() >= MAX_BACKOFF_ENTRIES {
                st.backoff.pop_first();
            }
        }
        let backoff = st.backoff.entry(addr).or_insert(Backoff {
            failures: 0,
            next_attempt: now,
        });
        backoff.failures = backoff.failures.saturating_add(1);
        let delay = backoff_delay(
            backoff.failures,
            self.config.backoff_initial,
            self.config.backoff_max,
            jitter,
        );
        backoff.next_attempt = now + delay;
        tracing::debug!(%error, failures = backoff.failures, ?delay, "dial failed");
    }

    // ----- tasks -----------------------------------------------------------------------

    /// Accepts connections until shutdown aborts it. It holds an event sender only so that
    /// the event stream cannot end while the listener is still open.
    async fn accept_loop(self: Arc<Self>, mut listener: N::Listener, events: Events) {
        loop {
            match self.network.accept(&mut listener).await {
                Ok((stream, remote)) => self.start_inbound(stream, remote, &events),
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    fn start_inbound(self: &Arc<Self>, stream: N::Stream, remote: SocketAddr, events: &Events) {
        let mut st = self.state();
        if st.closed {
            return;
        }
        let events = events.clone();
        if st.pending.from(remote.ip()) >= self.config.max_pending_handshakes_per_ip {
            self.counters.connections_refused.inc();
            tracing::debug!(%remote, "too many handshakes in progress from this address; connection closed");
            return;
        }
        if st.pending.len() >= self.config.max_pending_handshakes {
            // The oldest makes room: a peer that knows the cookie finishes in round trips,
            // so the oldest is the likeliest never to speak.
            if let Some(oldest) = st.pending.pop_oldest() {
                if let Some(task) = st.tasks.remove(&oldest) {
                    task.abort();
                }
                self.counters.handshakes_evicted.inc();
                tracing::debug!(%remote, "too many handshakes in progress; the oldest closed");
            }
        }
        let task = st.next_id();
        st.pending.insert(task, remote.ip());
        let span = tracing::info_span!(
            "conn",
            node = %self.me.node(),
            %remote,
            dir = "in",
            peer = tracing::field::Empty,
        );
        let accepting = Arc::clone(self)
            .run_inbound(stream, task, events)
            .instrument(span);
        self.spawn(&mut st, task, accepting);
    }

    async fn run_inbound(self: Arc<Self>, mut stream: N::Stream, task: u64, events: Events) {
        let deadline = Instant::now() + self.config.handshake_timeout;
        let hello_within = self.config.hello_timeout;
        let result = match self.nonce() {
            Ok(nonce) => timeout_at(
                deadline,
                handshake::accept(&mut stream, &self.me, nonce, hello_within),
            )
            .await
            .unwrap_or(Err(HandshakeError::Timeout)),
            Err(error) => Err(error.into()),
        };
        if !self.state().pending.remove(task) {
            // Closed to make room for a newer handshake (and its abort is on its way):
            // nothing of it may be installed.
            return;
        }
        let pending = match result {
            Ok(pending) => pending,
            Err(error) => return self.handshake_failed(&error),
        };
        let claimed = &pending.hello.node.name;
        if !self.network.peer_may_be(&stream, claimed) {
            let claimed = claimed.clone();
            return self.handshake_failed(&HandshakeError::WrongCertificate { claimed });
        }
        let peer = pending.hello.node.clone();
        tracing::Span::current().record("peer", tracing::field::display(&peer));

        let link = self.link_lock.lock().await;
        let installed = {
            let mut st = self.state();
            self.install(&mut st, &pending.hello, Direction::Inbound, task, None)
        };
        for old in installed.abort {
            old.abort();
        }
        if !emit(&events, installed.events).await {
            return self.shutdown();
        }
        drop(link);

        let finished = timeout_at(
            deadline,
            handshake::finish_accept(
                &mut stream,
                &self.me,
                &pending,
                installed.verdict,
                installed.newer,
            ),
        )
        .await
        .unwrap_or(Err(HandshakeError::Timeout));
        let Some(conn) = installed.conn else {
            tracing::debug!(verdict = ?installed.verdict, "connection not kept");
            return;
        };
        if let Err(error) = finished {
            tracing::debug!(%error, "handshake failed at the last step");
            self.counters.handshakes_failed.inc();
            return self.connection_lost(conn.id, &peer, task, &events).await;
        }
        tracing::info!("link up");
        self.run_connection(stream, conn, peer, task, events).await;
    }

    async fn run_outbound(self: Arc<Self>, addr: SocketAddr, task: u64, events: Events) {
        let wait = self.state().backoff.get(&addr).map(|b| b.next_attempt);
        if let Some(at) = wait {
            tokio::time::sleep_until(at).await;
        }
        let deadline = Instant::now() + self.config.handshake_timeout;
        let attempt = async {
            let nonce = self.nonce()?;
            let mut stream = self
                .network
                .connect(addr)
                .await
                .map_err(HandshakeError::Connect)?;
            let (hello, verdict, newer) = handshake::initiate(&mut stream, &self.me, nonce).await?;
            if !self.network.peer_may_be(&stream, &hello.node.name) {
                let claimed = hello.node.name.clone();
                return Err(HandshakeError::WrongCertificate { claimed });
            }
            Ok((stream, hello, verdict, newer))
        };
        let (stream, hello, verdict, newer) = match timeout_at(deadline, attempt)
            .await
            .unwrap_or(Err(HandshakeError::Timeout))
        {
            Ok(done) => done,
            Err(error) => {
                if let HandshakeError::Refused(error) = &error {
                    let event = TransportEvent::Misconfigured {
                        addr,
                        error: error.clone(),
                    };
                    if !emit(&events, vec![event]).await {
                        return self.shutdown();
                    }
                }
                return self.dial_failed(addr, &error);
            }
        };
        let peer = hello.node.clone();
        tracing::Span::current().record("peer", tracing::field::display(&peer));
        // Refused for good reasons, but refused: wait out the backoff before asking again.
        match verdict {
            Verdict::Superseded => {
                let me = self.me.node();
                let by = NodeId::new(me.name.clone(), newer.unwrap_or(me.incarnation));
                tracing::warn!(node = %me, refused_by = %peer, %by, "superseded: a peer knows a newer process of this name");
                let superseded = TransportEvent::Superseded {
                    refused_by: peer,
                    by,
                };
                if !emit(&events, vec![superseded]).await {
                    return self.shutdown();
                }
                return self.dial_failed(addr, &HandshakeError::Superseded);
            }
            Verdict::Full => return self.dial_failed(addr, &HandshakeError::PeerFull),
            Verdict::Accepted | Verdict::Duplicate => {}
        }

        let link = self.link_lock.lock().await;
        let installed = {
            let mut st = self.state();
            st.backoff.remove(&addr);
            let queue = st.dials.remove(&addr).map(|d| d.queue).unwrap_or_default();
            let installed = if verdict == Verdict::Accepted {
                self.install(&mut st, &hello, Direction::Outbound, task, Some(addr))
            } else {
                self.counters.duplicates_closed.inc();
                Installed::refused(verdict)
            };
            self.flush_queue(&st, &peer, queue);
            installed
        };
        for old in installed.abort {
            old.abort();
        }
        if !emit(&events, installed.events).await {
            return self.shutdown();
        }
        drop(link);
        match installed.conn {
            Some(conn) => {
                tracing::info!("link up");
                self.run_connection(stream, conn, peer, task, events).await;
            }
            None if verdict == Verdict::Accepted && installed.verdict == Verdict::Duplicate => {
                // The acceptor installed this connection; tell it the other one is kept.
                tracing::debug!("connection not kept; handing over");
                let mut stream = stream;
                let deadline = Instant::now() + self.config.handshake_timeout;
                let _ = timeout_at(deadline, async {
                    stream.write_all(&HANDOVER_MARKER).await?;
                    stream.shutdown().await
                })
                .await;
            }
            None => tracing::debug!(verdict = ?installed.verdict, "connection not kept"),
        }
    }

    /// Runs an established connection: spawns its writer, then reads it until it fails.
    async fn run_connection(
        self: &Arc<Self>,
        stream: N::Stream,
        new: NewConn,
        peer: NodeId,
        task: u64,
        events: Events,
    ) {
        let conn = new.id;
        let heard = new.heard.clone();
        let (read_half, write_half) = tokio::io::split(stream);
        {
            // Spawned even if the connection was retired since it was installed: the writer
            // then sends the handover marker at once.
            let mut st = self.state();
            let writer = st.next_id();
            let writing = Arc::clone(self)
                .run_writer(write_half, new, peer.clone(), writer, events.clone())
                .instrument(tracing::Span::current());
            self.spawn(&mut st, writer, writing);
            if let Some(c) = st.conns.get_mut(&peer.name).filter(|c| c.id == conn) {
                c.writer_task = Some(writer);
            }
        }
        let mut reader = BufReader::with_capacity(READ_BUFFER, read_half);
        let idle_timeout = self.config.idle_timeout;
        loop {
            // Dropping a half-read frame is fine: the connection is closed right after.
            let Ok(read) =
                tokio::time::timeout(idle_timeout, frame::read_frame(&mut reader, MAX_FRAME_LEN))
                    .await
            else {
                tracing::info!(
                    ?idle_timeout,
                    "nothing received, not even a keep-alive; replacing the connection"
                );
                return self.connection_idle(conn, &peer).await;
            };
            if !matches!(read, Err(FrameError::Closed | FrameError::Io(_))) {
                // Bytes arrived: a frame, the handover marker, or an over-long prefix.
                heard.hear(self.epoch, Instant::now());
            }
            match read {
                Ok(frame) if frame == KEEPALIVE => {}
                Ok(frame) => {
                    self.counters.frames_received.inc();
                    let event = TransportEvent::Frame {
                        from: peer.clone(),
                        frame,
                    };
                    // Backpressure: a slow consumer slows this peer down.
                    if events.send(event).await.is_err() {
                        return self.shutdown();
                    }
                }
                Err(FrameError::Empty) => return self.handover(conn, &peer).await,
                Err(error) => {
                    tracing::debug!(%error, "connection closed");
                    return self.connection_lost(conn, &peer, task, &events).await;
                }
            }
        }
    }

    /// Writes queued frames, as many as are ready, then flushes; ends when the connection is
    /// removed (its queue's sender dropped) or the socket fails.
    async fn run_writer(
        self: Arc<Self>,
        half: WriteHalf<N::Stream>,
        conn: NewConn,
        peer: NodeId,
        task: u64,
        events: Events,
    ) {
        let NewConn {
            id: conn,
            mut rx,
            queued_bytes,
            retired,
            confirm,
            ..
        } = conn;
        let dequeued = |frame: Vec<u8>| {
            queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
            frame
        };
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER, half);
        let keepalive_interval = self.config.keepalive_interval;
        let mut confirmation = confirm.then(|| KEEPALIVE.to_vec());
        let result: Result<(), FrameError> = async {
            loop {
                let next = match confirmation.take() {
                    Some(keepalive) => Ok(Some(keepalive)),
                    None => tokio::time::timeout(keepalive_interval, rx.recv())
                        .await
                        .map(|frame| frame.map(dequeued)),
                };
                let frame = match next {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(_quiet) => KEEPALIVE.to_vec(),
                };
                frame::write_frame(&mut writer, &frame, MAX_FRAME_LEN).await?;
                for _ in 1..MAX_BATCH {
                    match rx.try_recv().map(dequeued) {
                        Ok(frame) => frame::write_frame(&mut writer, &frame, MAX_FRAME_LEN).await?,
                        Err(_) => break,
                    }
                }
                writer.flush().await?;
            }
            // The queue's sender is gone and the task was not aborted. If the connection was
            // retired in favour of another to the same peer, say so before closing.
            if retired.load(Ordering::Acquire) {
                writer.write_all(&HANDOVER_MARKER).await?;
            }
            writer.shutdown().await?;
            Ok(())
        }
        .await;
        if let Err(error) = result {
            tracing::debug!(%error, "write failed");
            self.connection_lost(conn, &peer, task, &events).await;
        }
    }
}
