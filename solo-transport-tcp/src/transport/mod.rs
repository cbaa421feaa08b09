//! [`Transport`]: the handle, and the tasks behind it.
//!
//! One task accepts connections; one task per connection runs its handshake and then reads
//! it; one more per established connection writes what its senders did not write
//! themselves (see `outbox.rs`) and the keep-alives; one task per address being dialed
//! connects and runs the initiator's handshake (then becomes that connection's reader). All
//! of them share a [`State`] behind a `std` mutex that is never held across an `.await`.
//!
//! Link events (`Up`, `Down`) are computed and sent while holding `link_lock`, an async mutex,
//! so the core sees them in the order the connection table changed: never a `Down` for a
//! connection after the `Up` of the one that replaced it.
//!
//! This file holds the public handle and what every task shares; the rest, by seam:
//!
//! * `table.rs`: the connection table ([`State`]) and its rows.
//! * `send.rs`: a frame's way to a connection's outbox, or to a dial's queue.
//! * `outbox.rs`: a connection's frames waiting for its writer, as one buffer of bytes, and
//!   the [`Cork`] under which a sender writes them itself.
//! * `lifecycle.rs`: install after a handshake (with the tiebreak between two connections
//!   to one peer), retirement and handover, loss, idleness, dial failures and backoff.
//! * `tasks.rs`: the accept loop, the handshakes, the readers and the writers.
//! * `stats.rs`: the counters behind [`TransportStats`].
//! * `events.rs`: the bounded stream of [`TransportEvent`]s to the driver.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use solo_core::wire::{EncodeError, Hello, PROTOCOL_VERSION};
use solo_core::{Link, NodeId, SendFailure, Transmit};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{Config, ConfigError};
use crate::frame::{self};
use crate::handshake::{Identity, NONCE_LEN, Nonce};
use crate::network::{Network, TokioNetwork};
use crate::random::{RandomError, Randomness};
use crate::tiebreak::Direction;

mod events;
mod lifecycle;
mod outbox;
mod send;
mod stats;
mod table;
mod tasks;

use send::Outgoing;
use stats::Counters;
use table::{PendingHandshakes, State};
#[cfg(test)]
pub(crate) mod tests;

pub use events::EventReceiver;
use events::EventSender;
pub use outbox::Cork;

/// Read buffer per connection: many small frames cost one system call.
const READ_BUFFER: usize = 64 * 1024;
/// The write buffer a connection's writer keeps between batches (it grows for a larger
/// batch, and gives the extra back after it).
const WRITE_BUFFER: usize = 64 * 1024;
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
        /// The frame's bytes, at most [`MAX_FRAME_LEN`](solo_core::wire::MAX_FRAME_LEN); not yet decoded.
        /// A slice of the buffer the frames read with it share: drop it once decoded.
        frame: bytes::Bytes,
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
    /// Messages that could not be encoded (larger than [`MAX_FRAME_LEN`](solo_core::wire::MAX_FRAME_LEN)).
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
    /// [`SendFailure::TooLarge`] when the message encodes to more than [`MAX_FRAME_LEN`](solo_core::wire::MAX_FRAME_LEN).
    pub fn try_send(&self, transmit: &Transmit) -> Result<(), SendFailure> {
        self.shared().route(
            transmit.to.clone(),
            transmit.addr,
            Outgoing::Message(&transmit.message),
        )
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
        let _ = shared.route(
            Some(peer.clone()),
            Some(addr),
            Outgoing::Bytes(KEEPALIVE.to_vec()),
        );
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
}
