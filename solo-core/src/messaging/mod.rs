//! Messaging as a state machine: routing calls and casts to the node that runs a name,
//! waiting out failovers, delivering into local mailboxes, and handing an actor's state over
//! when its child moves on purpose.
//!
//! Like [`Node`], a [`Messenger`] does no I/O and reads no clock: the runtime feeds it
//! inputs with the time (a call made, a message from a peer, an instance started or ended, a
//! timeout) and carries out its [`MessagingOutput`]s (frames to send, mail for a local
//! instance, a call's outcome). It reads the node's view (who owns a name, who is live) from
//! the [`Node`] passed with each input, and changes nothing in it.
//!
//! Rules, in one place:
//!
//! * A caller routes by its node's view ([`Node::owner_of`]). While no owner is known or
//!   reachable the message waits here, bounded by the call's deadline (or
//!   [`MessagingConfig::cast_wait`] for a cast).
//! * A node that does not run the name passes the message on to the owner it knows (at most
//!   [`MAX_HOPS`] times), or bounces a call back ([`RemoteError::NotHere`]) for the caller to
//!   route again shortly.
//! * A call sent to a node that goes `Down` before answering is routed again: a call made
//!   during a failover completes on the new instance. (If the node crashed after its worker
//!   handled the call but before the answer left, the call runs twice, once per instance;
//!   across a *graceful* handoff a call is never delivered twice.)
//! * Graceful move (the node says `Stop { Moved { to } }` here and `Start { handoff_from }`
//!   there): the old instance handles everything already in its mailbox, answers
//!   [`Mail::BeginHandoff`], and its state goes to the new node, followed by the messages
//!   that reached the old node meanwhile; then it ends, and only then does its node confirm
//!   the new node's claim. So the state is there before the new instance starts: the new
//!   node never waits for a state. While its node claims the name (or has its state and
//!   its view still names the old node), the new node holds the messages that reach it; it
//!   delivers those passed on by the old node first, then the ones that reached it
//!   directly, each group in arrival order. What reaches the old node after its state left
//!   follows the state on the same link ([`MessagingConfig::dedupe_window`] long), and
//!   mail its instance left unhandled is routed again ([`Messenger::undeliverable`]).
//! * Order: across a graceful move each sender's messages to a name are handled in the
//!   order it sent them (the core simulator checks this) once the cluster has formed.
//!   Messages sent while the nodes' views of who owns the name still disagree (a cluster
//!   forming, partitions) may be passed along different paths and overtake each other.
//! * No state is left behind by views in flux: a state that reaches a node that will not
//!   run the name goes on to the owner that node's view names; a start begins with the
//!   state of the node it names as handing over, and gets any other member's as a
//!   [`Mail::Conflict`].
//! * Every call gets exactly one [`MessagingOutput::CallDone`], by its deadline at the
//!   latest. Everything held here is bounded ([`MessagingConfig::max_pending_calls`],
//!   [`MessagingConfig::max_held_bytes`]); what does not fit is refused with a typed error
//!   ([`CallFailure::Overloaded`], [`RemoteError::Overloaded`]) or, for a cast whose sender
//!   was already told it left, reported as [`MessagingOutput::Dropped`]. Nothing is dropped
//!   in silence.
//! * A message the transport cannot take yet (the peer's queue is full) is handed back
//!   ([`Messenger::not_sent`]) and offered again, with what follows it to the same peer, in
//!   order; see [`MessagingConfig::resend_wait`].
//! * Sizes: a call's or cast's message and a reply are at most [`MAX_PAYLOAD_LEN`] bytes
//!   ([`CallFailure::TooLarge`], [`RemoteError::ReplyTooLarge`]), a handed-over state at
//!   most [`MAX_STATE_LEN`] (a larger one is reported as dropped and the new instance
//!   starts afresh).

mod journal;
mod pending;
mod room;
mod unsent;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use journal::Delivered;
use pending::{PendingCall, PendingCalls};
use room::BackedUp;

use crate::node::{Node, Status};
use crate::wire::{AppMessage, CallRef, Delivery, MAX_FRAME_LEN, Message, RemoteError};
use crate::{ChildId, InstanceId, NodeId, NodeName, Transmit};

/// How many nodes may pass one message on before it is bounced.
pub const MAX_HOPS: u8 = 4;
/// The largest message of a call or cast, and the largest answer, in bytes encoded: a
/// frame less room for the envelope (names, ids, a call's reference).
pub const MAX_PAYLOAD_LEN: usize = MAX_FRAME_LEN - 4 * 1024;
/// The most bytes a handoff spends on the calls the old instance handled (so that the new
/// one drops second copies); the newest are sent when they do not all fit.
pub const MAX_SEEN_LEN: usize = 128 * 1024;
/// The largest state an instance may hand over, in bytes encoded.
pub const MAX_STATE_LEN: usize = MAX_FRAME_LEN - MAX_SEEN_LEN - 4 * 1024;
/// The longest error text sent back for a call; a longer one is cut.
pub const MAX_ERROR_LEN: usize = 1024;
/// How soon a bounced call is routed again (the bouncing node's view was ahead or behind).
const REROUTE_PAUSE: Duration = Duration::from_millis(1);
/// How often entries that outlived their purpose are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The settings of a [`Messenger`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessagingConfig {
    /// How long an instance moving away may take to hand its state over before it is
    /// stopped without; also how long a state that arrived before its instance started is
    /// kept. Default 5 s.
    pub handoff_timeout: Duration,
    /// How long a cast waits for its name to get a reachable owner. Default 5 s.
    pub cast_wait: Duration,
    /// How long a node remembers the calls it delivered, to drop a second copy: one routed
    /// again by a caller that saw the old owner go while the first copy was being handled
    /// or passed on. Re-routes follow within milliseconds of the event that causes them.
    /// Default 2 s.
    pub dedupe_window: Duration,
    /// The most calls this node waits for at once; one more fails at once with
    /// [`CallFailure::Overloaded`]. Default 65 536.
    pub max_pending_calls: usize,
    /// The most bytes of messages and states this node holds for others at once: payloads
    /// of its calls in flight (kept to route them again), casts waiting for an owner,
    /// messages held for a name it claims or hands over, and states that arrived before
    /// their instance. What does not fit is refused, never dropped silently. Default 64 MiB.
    pub max_held_bytes: usize,
    /// How long a message the transport did not take ([`Messenger::not_sent`]) is offered
    /// again before it is given up and its sender told (a call of this node is offered
    /// until its deadline). Default 5 s.
    pub resend_wait: Duration,
    /// The most bytes that may wait for room to one peer before a cast to a name it runs
    /// is refused with [`CallFailure::Full`] (its sender waits, or is told). Calls, answers
    /// and handoffs still wait, within [`max_held_bytes`](Self::max_held_bytes).
    /// Default 8 MiB.
    pub max_backlog_bytes: usize,
    /// The most bytes of messages (each with its envelope) that may wait for room beyond
    /// one full mailbox here; a message beyond is refused (a call answered
    /// [`RemoteError::Overloaded`], a cast reported), which tells senders the actor is
    /// slower than they are. The messages held for a name during its handoff, released
    /// into its new instance all at once, wait regardless (within
    /// [`max_held_bytes`](Self::max_held_bytes)). Default 1 MiB.
    pub max_waiting_for_room_bytes: usize,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            handoff_timeout: Duration::from_secs(5),
            cast_wait: Duration::from_secs(5),
            dedupe_window: Duration::from_secs(2),
            max_pending_calls: 65_536,
            max_held_bytes: 64 << 20,
            resend_wait: Duration::from_secs(5),
            max_backlog_bytes: 8 << 20,
            max_waiting_for_room_bytes: 1 << 20,
        }
    }
}

/// Names one call of this node, for its [`MessagingOutput::CallDone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(u64);

impl CallId {
    /// The number carried on the wire ([`CallRef::call`]).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What goes into a local instance's mailbox, in this order: [`Begin`](Mail::Begin) first,
/// then calls and casts, then perhaps [`BeginHandoff`](Mail::BeginHandoff).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mail {
    /// Start, with the state handed over, if one came.
    Begin(Option<Vec<u8>>),
    /// A call; its answer goes to [`Messenger::replied`] with `reply`.
    Call {
        /// The encoded message.
        payload: Vec<u8>,
        /// Whom the answer is for.
        reply: CallRef,
    },
    /// A cast.
    Cast {
        /// The encoded message.
        payload: Vec<u8>,
    },
    /// Hand the state over and end; the answer goes to [`Messenger::handoff_done`].
    BeginHandoff,
    /// The state of a duplicate that lost to this instance after a partition healed.
    Conflict(Vec<u8>),
}

/// Why a call of this node got no answer from a worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallFailure {
    /// No child or singleton of this name exists, as this node knows the cluster.
    #[error("no such name")]
    NoSuchName,
    /// No answer by the call's deadline. The call may still be handled.
    #[error("no answer by the deadline")]
    Timeout,
    /// This node holds as many calls or bytes as it may; nothing was sent.
    #[error("too many calls or bytes in flight")]
    Overloaded,
    /// The way to the worker is full for now: its mailbox here, or what waits for room to
    /// its node ([`MessagingConfig::max_backlog_bytes`]). Nothing was sent; try again.
    #[error("the way to the worker is full")]
    Full,
    /// The message is larger than [`MAX_PAYLOAD_LEN`]; nothing was sent.
    #[error("the message is larger than {MAX_PAYLOAD_LEN} bytes")]
    TooLarge,
    /// The worker's node answered with an error.
    #[error(transparent)]
    Remote(RemoteError),
}

/// Why something a [`Messenger`] held could not be kept: a cast whose sender was already
/// told it left, a reply or state that could not be sent, or a state handed over for an
/// instance that did not take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// No owner became reachable within [`MessagingConfig::cast_wait`].
    NoOwner,
    /// [`MessagingConfig::max_held_bytes`] was reached.
    Full,
    /// A state came from a node that is not a live member, or from another node than the
    /// one the instance's start names as handing over.
    NotAwaited,
    /// A state arrived too long before its instance started
    /// ([`MessagingConfig::handoff_timeout`]).
    Expired,
    /// The transport did not take it within [`MessagingConfig::resend_wait`], or its
    /// recipient went first.
    Unsent,
    /// It is larger than it may be ([`MAX_PAYLOAD_LEN`], [`MAX_STATE_LEN`]).
    TooLarge,
    /// The instance moving away did not give its state in time: within
    /// [`MessagingConfig::handoff_timeout`], or before its node left (the runtime's drain
    /// timeout ran out first, see [`Messenger::abandon_handoffs`]). The new instance starts
    /// without it.
    NotGiven,
}

/// What was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dropped {
    /// A cast.
    Cast,
    /// A handed-over state.
    State,
    /// An answer to another node's call (the caller's call then times out).
    Reply,
}

/// What the runtime must do for a [`Messenger`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessagingOutput {
    /// Send this to a peer.
    Transmit(Transmit),
    /// Put `mail` into the mailbox of instance `instance` of `id`, running here. If that
    /// instance has ended, give it back to [`Messenger::undeliverable`].
    Mail {
        /// The child.
        id: ChildId,
        /// Its instance here.
        instance: InstanceId,
        /// What to put in.
        mail: Mail,
    },
    /// Call `call` is over: the worker's encoded answer, or why there is none. Exactly one
    /// per call.
    CallDone {
        /// The call.
        call: CallId,
        /// The answer.
        result: Result<Vec<u8>, CallFailure>,
    },
    /// The instance's state (if any) has left for its new node: stop it now.
    HandoffFinished {
        /// The child.
        id: ChildId,
        /// The instance.
        instance: InstanceId,
    },
    /// A message or state could not be kept; for logs and counters.
    Dropped {
        /// The child it was for (`None` for a reply).
        id: Option<ChildId>,
        /// What it was.
        what: Dropped,
        /// Why.
        reason: DropReason,
    },
}

/// Counters of a [`Messenger`], for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessagingStats {
    /// Calls waiting for an answer.
    pub pending_calls: usize,
    /// Bytes held (see [`MessagingConfig::max_held_bytes`]).
    pub held_bytes: usize,
    /// Calls and casts refused because a limit was reached.
    pub refused: u64,
    /// Casts and states dropped ([`MessagingOutput::Dropped`]).
    pub dropped: u64,
    /// Messages refused because their sender may not send them.
    pub forged: u64,
    /// Messages the transport did not take at first ([`Messenger::not_sent`]).
    pub unsent: u64,
}

/// A message with nowhere to go yet.
#[derive(Debug)]
enum Waiting {
    Call {
        call: u64,
        not_before: Instant,
    },
    Cast {
        target: ChildId,
        payload: Vec<u8>,
        until: Instant,
    },
}

/// Messages for a name this node claims, held until its instance starts.
#[derive(Debug, Default)]
struct Held {
    /// Passed on by the previous node: delivered first.
    forwarded: Vec<Delivery>,
    /// Sent here directly.
    direct: Vec<Delivery>,
}

impl Held {
    fn into_deliveries(self) -> impl Iterator<Item = Delivery> {
        self.forwarded.into_iter().chain(self.direct)
    }
}

/// An instance here that is handing over to `to`.
#[derive(Debug)]
struct HandingOff {
    instance: InstanceId,
    to: NodeId,
    deadline: Instant,
    /// Messages that arrived since: passed on after the state.
    held: Vec<Delivery>,
}

/// A name whose instance here handed over to `to`.
#[derive(Debug)]
struct MovedAway {
    to: NodeId,
    /// Forwarding ends then (the dedupe window: long after every view moved on).
    until: Instant,
}

/// A state that arrived before its instance started here.
#[derive(Debug)]
struct EarlyState {
    /// The node that sent it: the instance takes it only if that is the node its start
    /// names as handing over.
    from: NodeId,
    state: Option<Vec<u8>>,
    /// Dropped after this.
    until: Instant,
    /// Whether `from` was a live member when it came (a node that leaves right after
    /// handing over is no longer one when the instance starts here).
    from_member: bool,
}

impl EarlyState {
    /// Whether it comes from a member: it did when it came, or this node has heard of the
    /// sender since.
    fn sent_by_member(&self, node: &Node) -> bool {
        self.from_member || Messenger::is_live_member(node, &self.from)
    }

    /// `states` split into those from members (as [`sent_by_member`](Self::sent_by_member)
    /// says) and those from nodes this node does not know.
    fn split_by_sender(states: Vec<EarlyState>, node: &Node) -> (Vec<EarlyState>, Vec<EarlyState>) {
        states.into_iter().partition(|e| e.sent_by_member(node))
    }

    /// What it holds, counted against `max_held_bytes`; an empty one counts too, so that
    /// their number is bounded.
    fn bytes(&self) -> usize {
        EARLY_STATE_OVERHEAD + self.state.as_ref().map_or(0, Vec::len)
    }
}

/// The bytes an early state counts beyond its own: what keeping it costs.
const EARLY_STATE_OVERHEAD: usize = 64;

/// An instance running here, as far as messaging cares.
#[derive(Debug, Clone, Copy)]
struct Local {
    instance: InstanceId,
    /// Whether it takes mail (its worker is an actor).
    actor: bool,
}

/// The messaging state machine of one node. See the [module](self) for its rules.
#[derive(Debug)]
pub struct Messenger {
    config: MessagingConfig,
    next_call: u64,
    /// Calls made here that wait for their answer, by number and by deadline (for
    /// timeouts without a timer per call).
    calls: PendingCalls,
    waiting: VecDeque<Waiting>,
    /// Instances running here.
    local: BTreeMap<ChildId, Local>,
    /// Messages for names the node claims here, until their instance starts.
    claimed: BTreeMap<ChildId, Held>,
    handing_off: BTreeMap<ChildId, HandingOff>,
    /// Names whose instance here handed its state over, with where to: what still comes
    /// here for them follows the state there, on the same link, until the views agree.
    moved: BTreeMap<ChildId, MovedAway>,
    /// State that arrived before its instance started here, with when it expires.
    /// In the order they came (from one node or several: the views may have been in flux).
    early_state: BTreeMap<ChildId, Vec<EarlyState>>,
    next_sweep: Instant,
    /// Waiting casts are routed again no sooner than this.
    cast_retry_at: Instant,
    /// Calls delivered into a mailbox here, or by a previous owner (per its handoff): a
    /// second copy is dropped.
    delivered: Delivered,
    /// Mail a full mailbox here could not take yet, per name (see `room.rs`).
    backed_up: BTreeMap<ChildId, BackedUp>,
    /// Mail that waited for room in an instance that ended: routed again.
    orphans: VecDeque<Delivery>,
    /// When the runtime is next asked to look for room, while mail waits for it.
    room_check_at: Instant,
    /// Set while what was held for a starting instance is released: it waits for room,
    /// all of it, rather than meet a mailbox too small for it.
    releasing_held: bool,
    /// Bytes of payloads and states held, against `config.max_held_bytes`.
    held_bytes: usize,
    stats: MessagingStats,
    /// What the runtime is to do, each with when to give it up if it is a message offered
    /// again after the transport refused it ([`not_sent`](Self::not_sent)).
    outputs: VecDeque<(MessagingOutput, Option<Instant>)>,
    /// The give-up time of the output polled last, if it was a message offered again.
    polled_until: Option<Instant>,
    /// What waits for a peer whose transport queue was full, per peer.
    backlogs: BTreeMap<NodeId, unsent::Backlog>,
    tokens: CallTokens,
    /// See [`sabotage_forget_held`](Self::sabotage_forget_held).
    #[cfg(any(test, feature = "testing"))]
    sabotage_forget_held: bool,
}

/// Where call tokens come from: a keyed pseudo-random function of the call number.
struct CallTokens(Box<dyn Fn(u64) -> u64 + Send>);

impl std::fmt::Debug for CallTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallTokens")
    }
}

/// What holding a message costs against `max_held_bytes` beyond its payload: its envelope
/// and its place in a queue, so that a flood of tiny messages is bounded in number too.
const HELD_MESSAGE_OVERHEAD: usize = 128;

fn delivery_bytes(delivery: &Delivery) -> usize {
    held_message_bytes(&delivery.payload)
}

/// What a held message of `payload` counts against `max_held_bytes`.
fn held_message_bytes(payload: &[u8]) -> usize {
    payload.len() + HELD_MESSAGE_OVERHEAD
}

/// `why`, cut to [`MAX_ERROR_LEN`] bytes at a character boundary.
fn cut(mut why: String) -> String {
    if why.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
    }
    why
}

impl Messenger {
    /// A messenger with `config`, at `now`.
    ///
    /// `tokens` gives each call its [`CallRef::token`] from its number: it must be
    /// unguessable by other nodes, a keyed pseudo-random function such as SipHash with
    /// random keys (the `solo` runtime uses `std::hash::RandomState`; a simulation, a
    /// function of its seed). An answer without its call's token is ignored.
    pub fn new(
        config: MessagingConfig,
        now: Instant,
        tokens: impl Fn(u64) -> u64 + Send + 'static,
    ) -> Self {
        Self {
            delivered: Delivered::new(config.dedupe_window),
            config,
            next_call: 0,
            calls: PendingCalls::default(),
            waiting: VecDeque::new(),
            local: BTreeMap::new(),
            claimed: BTreeMap::new(),
            handing_off: BTreeMap::new(),
            early_state: BTreeMap::new(),
            moved: BTreeMap::new(),
            next_sweep: now + SWEEP_EVERY,
            cast_retry_at: now,
            backed_up: BTreeMap::new(),
            orphans: VecDeque::new(),
            room_check_at: now,
            releasing_held: false,
            held_bytes: 0,
            stats: MessagingStats::default(),
            outputs: VecDeque::new(),
            polled_until: None,
            backlogs: BTreeMap::new(),
            tokens: CallTokens(Box::new(tokens)),
            #[cfg(any(test, feature = "testing"))]
            sabotage_forget_held: false,
        }
    }

    /// The next thing for the runtime to do.
    pub fn poll_output(&mut self) -> Option<MessagingOutput> {
        let (output, until) = self.outputs.pop_front()?;
        self.polled_until = until;
        Some(output)
    }

    /// The earliest moment [`handle_timeout`](Self::handle_timeout) has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let waiting = self.waiting.iter().map(|w| match w {
            Waiting::Call { not_before, .. } => *not_before,
            Waiting::Cast { until, .. } => (*until).min(self.cast_retry_at),
        });
        let handing = self.handing_off.values().map(|h| h.deadline);
        let calls = self.calls.next_deadline();
        let backlogs = self.backlogs.values().map(|backlog| backlog.retry_at);
        let room =
            (!self.backed_up.is_empty() || !self.orphans.is_empty()).then_some(self.room_check_at);
        waiting
            .chain(handing)
            .chain(calls)
            .chain(backlogs)
            .chain(room)
            .chain(std::iter::once(self.next_sweep))
            .min()
    }

    /// Whether an instance is still handing over (a leave waits for it).
    pub fn is_handing_off(&self) -> bool {
        !self.handing_off.is_empty() || self.backlog_holds_a_handoff()
    }

    /// Its counters.
    pub fn stats(&self) -> MessagingStats {
        MessagingStats {
            pending_calls: self.calls.len(),
            held_bytes: self.held_bytes,
            ..self.stats
        }
    }

    /// The bytes held, counted afresh from every table: what
    /// [`MessagingStats::held_bytes`] must equal (the fuzz targets check it after every
    /// input).
    #[cfg(any(test, feature = "testing"))]
    pub fn recount_held_bytes(&self) -> usize {
        let calls: usize = self.calls.iter().map(|(_, c)| c.payload.len()).sum();
        let waiting: usize = self
            .waiting
            .iter()
            .map(|w| match w {
                Waiting::Cast { payload, .. } => held_message_bytes(payload),
                Waiting::Call { .. } => 0,
            })
            .sum();
        let claimed: usize = self
            .claimed
            .values()
            .flat_map(|held| held.forwarded.iter().chain(&held.direct))
            .map(delivery_bytes)
            .sum();
        let handing: usize = self
            .handing_off
            .values()
            .flat_map(|h| &h.held)
            .map(delivery_bytes)
            .sum();
        let early: usize = self
            .early_state
            .values()
            .flatten()
            .map(EarlyState::bytes)
            .sum();
        let room: usize = self
            .backed_up
            .values()
            .flat_map(|b| &b.mail)
            .chain(&self.orphans)
            .map(delivery_bytes)
            .sum();
        let parked: usize = self
            .backlogs
            .values()
            .flat_map(|backlog| &backlog.entries)
            .map(unsent::Parked::bytes)
            .sum();
        calls + waiting + claimed + handing + early + parked + room
    }

    /// Sabotage for testing the checkers: an instance handing over passes on its state but
    /// forgets the messages that reached it meanwhile (they are neither delivered nor
    /// answered). The messaging simulation must catch this.
    #[cfg(any(test, feature = "testing"))]
    pub fn sabotage_forget_held(&mut self) {
        self.sabotage_forget_held = true;
    }

    fn emit(&mut self, output: MessagingOutput) {
        self.outputs.push_back((output, None));
    }

    /// Takes `bytes` from the budget, if they fit.
    fn reserve(&mut self, bytes: usize) -> bool {
        match self.held_bytes.checked_add(bytes) {
            Some(total) if total <= self.config.max_held_bytes => {
                self.held_bytes = total;
                true
            }
            _ => false,
        }
    }

    fn release(&mut self, bytes: usize) {
        self.held_bytes = self.held_bytes.saturating_sub(bytes);
    }

    /// Sends `message` to `to`, or parks it behind what waits for `to` already.
    fn send_app(&mut self, now: Instant, node: &Node, to: &NodeId, message: AppMessage) {
        let addr = node
            .member(&to.name)
            .filter(|m| m.id() == to)
            .map(|m| m.addr());
        let transmit = Transmit {
            to: Some(to.clone()),
            addr,
            message: Message::App(message),
        };
        if self.is_backlogged(to) {
            self.park(now, node, transmit);
        } else {
            self.emit(MessagingOutput::Transmit(transmit));
        }
    }

    /// The live member `name` is, or this node.
    fn node_id_of(node: &Node, name: &NodeName) -> Option<NodeId> {
        if *name == node.id().name {
            return Some(node.id().clone());
        }
        node.member(name)
            .filter(|m| m.state().is_live())
            .map(|m| m.id().clone())
    }

    fn owner(node: &Node, id: &ChildId) -> Option<NodeId> {
        node.owner_of(id)
            .and_then(|name| Self::node_id_of(node, name))
    }

    /// Hands `delivery` to `owner`: this node's own instance, or a peer.
    fn deliver_to(&mut self, now: Instant, node: &Node, owner: &NodeId, delivery: Delivery) {
        if owner == node.id() {
            self.deliver(now, node, delivery);
        } else {
            self.send_app(now, node, owner, AppMessage::Deliver(delivery));
        }
    }

    // ----- the caller's side -------------------------------------------------------------

    /// Calls the worker of `target` with `payload`; its answer comes as
    /// [`MessagingOutput::CallDone`] by `deadline` at the latest (at once if the call
    /// cannot be made).
    pub fn call(
        &mut self,
        now: Instant,
        node: &Node,
        target: ChildId,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> CallId {
        self.next_call += 1;
        let call = self.next_call;
        let failure = if !node.knows(&target) {
            Some(CallFailure::NoSuchName)
        } else if payload.len() > MAX_PAYLOAD_LEN {
            Some(CallFailure::TooLarge)
        } else if self.calls.len() >= self.config.max_pending_calls || !self.reserve(payload.len())
        {
            self.stats.refused += 1;
            Some(CallFailure::Overloaded)
        } else {
            None
        };
        if let Some(failure) = failure {
            self.emit(MessagingOutput::CallDone {
                call: CallId(call),
                result: Err(failure),
            });
            return CallId(call);
        }
        let token = (self.tokens.0)(call);
        self.calls.insert(
            call,
            PendingCall {
                target,
                token,
                payload,
                deadline,
                sent_to: None,
            },
        );
        self.route_call(now, node, call);
        CallId(call)
    }

    /// Gives up waiting for `call` (its caller went away): no `CallDone` follows.
    pub fn cancel(&mut self, call: CallId) {
        self.forget_call(call.0);
    }

    fn forget_call(&mut self, call: u64) -> Option<PendingCall> {
        let pending = self.calls.remove(call)?;
        self.release(pending.payload.len());
        Some(pending)
    }

    fn finish_call(&mut self, call: u64, result: Result<Vec<u8>, CallFailure>) {
        if self.forget_call(call).is_some() {
            self.emit(MessagingOutput::CallDone {
                call: CallId(call),
                result,
            });
        }
    }

    /// Sends call `call` to the owner of its target, or parks it until there is one.
    fn route_call(&mut self, now: Instant, node: &Node, call: u64) {
        let Some(pending) = self.calls.get(call) else {
            return;
        };
        let target = pending.target.clone();
        if !node.knows(&target) {
            // Terminated (or given up) while the call was on its way.
            self.finish_call(call, Err(CallFailure::NoSuchName));
            return;
        }
        let owner = Self::owner(node, &target);
        let Some(pending) = self.calls.get_mut(call) else {
            return;
        };
        pending.sent_to = owner.clone();
        let Some(owner) = owner else {
            self.waiting.push_back(Waiting::Call {
                call,
                not_before: now + REROUTE_PAUSE,
            });
            return;
        };
        let delivery = Delivery {
            to: target,
            reply_to: Some(CallRef {
                caller: node.id().clone(),
                call,
                token: pending.token,
            }),
            payload: pending.payload.clone(),
            hops: 0,
            from_previous_owner: false,
        };
        self.deliver_to(now, node, &owner, delivery);
    }

    /// Sends `payload` to the worker of `target`, without an answer.
    ///
    /// # Errors
    ///
    /// [`CallFailure::NoSuchName`] if the name is unknown here, [`CallFailure::TooLarge`] if
    /// `payload` is longer than [`MAX_PAYLOAD_LEN`], [`CallFailure::Full`] if what waits for
    /// room to the owner's node holds [`MessagingConfig::max_backlog_bytes`] already,
    /// [`CallFailure::Overloaded`] if it would have to wait for an owner and the budget is
    /// spent.
    pub fn cast(
        &mut self,
        now: Instant,
        node: &Node,
        target: ChildId,
        payload: Vec<u8>,
    ) -> Result<(), CallFailure> {
        if !node.knows(&target) {
            return Err(CallFailure::NoSuchName);
        }
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(CallFailure::TooLarge);
        }
        // One that must wait is refused here, while its sender can still be told.
        let owner = Self::owner(node, &target);
        if owner
            .as_ref()
            .is_some_and(|owner| self.backlog_bytes(owner) >= self.config.max_backlog_bytes)
        {
            self.stats.refused += 1;
            return Err(CallFailure::Full);
        }
        let waits = owner.is_none();
        if waits && !self.reserve(held_message_bytes(&payload)) {
            self.stats.refused += 1;
            return Err(CallFailure::Overloaded);
        }
        let until = now + self.config.cast_wait;
        self.route_cast(now, node, target, payload, until, waits);
        Ok(())
    }

    /// Routes a cast to its owner, or makes it wait for one. `reserved`: its bytes are in
    /// the budget already (it was waiting).
    fn route_cast(
        &mut self,
        now: Instant,
        node: &Node,
        target: ChildId,
        payload: Vec<u8>,
        until: Instant,
        reserved: bool,
    ) {
        // This node's view may still name it while its instance is gone (it ended, or
        // handed over and stops): the cast waits for the view to move on.
        let owner = Self::owner(node, &target).filter(|owner| {
            owner != node.id()
                || self.local.contains_key(&target)
                || self.awaits(node, &target)
                || self.moved.contains_key(&target)
        });
        let Some(owner) = owner else {
            if reserved || self.reserve(held_message_bytes(&payload)) {
                self.waiting.push_back(Waiting::Cast {
                    target,
                    payload,
                    until,
                });
                self.cast_retry_at = now + REROUTE_PAUSE;
            } else {
                self.stats.refused += 1;
                self.dropped(Some(target), Dropped::Cast, DropReason::Full);
            }
            return;
        };
        if reserved {
            self.release(held_message_bytes(&payload));
        }
        let delivery = Delivery {
            to: target,
            reply_to: None,
            payload,
            hops: 0,
            from_previous_owner: false,
        };
        self.deliver_to(now, node, &owner, delivery);
    }

    fn dropped(&mut self, id: Option<ChildId>, what: Dropped, reason: DropReason) {
        self.stats.dropped += 1;
        self.emit(MessagingOutput::Dropped { id, what, reason });
    }

    /// An answer for call `call` of this node, carrying `token`.
    fn answered(
        &mut self,
        call: u64,
        token: u64,
        result: Result<Vec<u8>, RemoteError>,
        now: Instant,
    ) {
        if self
            .calls
            .get(call)
            .is_none_or(|pending| pending.token != token)
        {
            // Not an answer to a call this node is waiting for: late (the call is over),
            // or from a node the call never reached.
            if self.calls.contains(call) {
                self.stats.forged += 1;
                tracing::debug!(call, "an answer without its call's token; ignored");
            }
            return;
        }
        match result {
            Err(RemoteError::NotHere) => {
                if let Some(pending) = self.calls.get_mut(call) {
                    pending.sent_to = None;
                    self.waiting.push_back(Waiting::Call {
                        call,
                        not_before: now + REROUTE_PAUSE,
                    });
                }
            }
            Err(RemoteError::NoSuchName) => self.finish_call(call, Err(CallFailure::NoSuchName)),
            result => self.finish_call(call, result.map_err(CallFailure::Remote)),
        }
    }

    /// An answer from one of this node's instances, for the call `to` (made here or
    /// elsewhere).
    pub fn replied(
        &mut self,
        now: Instant,
        node: &Node,
        to: CallRef,
        result: Result<Vec<u8>, RemoteError>,
    ) {
        let result = match result {
            Ok(answer) if answer.len() > MAX_PAYLOAD_LEN => Err(RemoteError::ReplyTooLarge),
            Err(RemoteError::BadMessage(why)) => Err(RemoteError::BadMessage(cut(why))),
            Err(RemoteError::Failed(why)) => Err(RemoteError::Failed(cut(why))),
            result => result,
        };
        if matches!(result, Err(RemoteError::NotHere)) {
            // Sent back unhandled (its instance ended first): a copy routed again must not be
            // taken for a duplicate.
            self.delivered.remove(&to);
        }
        if to.caller == *node.id() {
            self.answered(to.call, to.token, result, now);
        } else {
            let caller = to.caller;
            self.send_app(
                now,
                node,
                &caller,
                AppMessage::Reply {
                    call: to.call,
                    token: to.token,
                    result,
                },
            );
        }
    }

    // ----- the receiving side -------------------------------------------------------------

    /// A message from the runtime of `from`.
    pub fn handle_message(
        &mut self,
        now: Instant,
        node: &Node,
        from: &NodeId,
        message: AppMessage,
    ) {
        match message {
            AppMessage::Deliver(delivery) => {
                let first_hop = delivery.hops == 0 && !delivery.from_previous_owner;
                if first_hop
                    && delivery
                        .reply_to
                        .as_ref()
                        .is_some_and(|reply| reply.caller != *from)
                {
                    // A call straight from its caller names that caller: one naming another
                    // node would send the answer where nobody asked.
                    self.stats.forged += 1;
                    tracing::debug!(%from, "a call whose answer goes to another node; ignored");
                    return;
                }
                self.deliver(now, node, delivery);
            }
            AppMessage::Reply {
                call,
                token,
                result,
            } => self.answered(call, token, result, now),
            AppMessage::Handoff {
                id,
                state: handed,
                seen,
            } => {
                tracing::debug!(child = %id, %from, with_state = handed.is_some(), "state handed over");
                self.delivered.insert_handled(&id, seen, now);
                self.handed_over(now, node, from, id, handed);
            }
        }
    }

    /// Puts `delivery` where it belongs: a mailbox here, a buffer, another node, or back.
    fn deliver(&mut self, now: Instant, node: &Node, delivery: Delivery) {
        let id = &delivery.to;
        if self.handing_off.contains_key(id) {
            if self.reserve(delivery_bytes(&delivery)) {
                if let Some(handing) = self.handing_off.get_mut(id) {
                    handing.held.push(delivery);
                }
            } else {
                self.refuse(now, node, delivery);
            }
            return;
        }
        if let Some(local) = self.local.get(id).copied() {
            if !local.actor {
                if let Some(reply) = delivery.reply_to {
                    self.bounce(now, node, reply, RemoteError::NotAnActor);
                }
                return;
            }
            if let Some(call) = &delivery.reply_to {
                if self.delivered.contains(id, call) {
                    tracing::debug!(child = %id, ?call, "a second copy of a call; dropped");
                    return;
                }
                self.delivered.insert(id, call, now);
            }
            if self.releasing_held || self.is_backed_up(id, local.instance) {
                let id = id.clone();
                let limited = !self.releasing_held;
                self.wait_for_room(now, node, &id, local.instance, delivery, limited);
                return;
            }
            let mail = match delivery.reply_to {
                Some(reply) => Mail::Call {
                    payload: delivery.payload,
                    reply,
                },
                None => Mail::Cast {
                    payload: delivery.payload,
                },
            };
            self.emit(MessagingOutput::Mail {
                id: delivery.to,
                instance: local.instance,
                mail,
            });
            return;
        }
        if self.awaits(node, id) {
            if !self.reserve(delivery_bytes(&delivery)) {
                self.refuse(now, node, delivery);
                return;
            }
            let held = self.claimed.entry(id.clone()).or_default();
            if delivery.from_previous_owner {
                held.forwarded.push(delivery);
            } else {
                held.direct.push(delivery);
            }
            return;
        }
        if let Some(moved) = self.moved.get(id)
            && delivery.hops < MAX_HOPS
        {
            // After the state, on the same link: the new instance takes it in order with
            // what this node held for it during the handoff.
            let to = moved.to.clone();
            let delivery = Delivery {
                hops: delivery.hops + 1,
                from_previous_owner: true,
                ..delivery
            };
            self.send_app(now, node, &to, AppMessage::Deliver(delivery));
            return;
        }
        // Not running here: pass it on, or send it back.
        if !node.knows(id) {
            if let Some(reply) = delivery.reply_to {
                self.bounce(now, node, reply, RemoteError::NoSuchName);
            }
            return;
        }
        let owner = Self::owner(node, id).filter(|owner| owner != node.id());
        match owner {
            Some(owner) if delivery.hops < MAX_HOPS => {
                let delivery = Delivery {
                    hops: delivery.hops + 1,
                    ..delivery
                };
                self.send_app(now, node, &owner, AppMessage::Deliver(delivery));
            }
            _ => match delivery.reply_to {
                Some(reply) => self.bounce(now, node, reply, RemoteError::NotHere),
                None => {
                    let until = now + self.config.cast_wait;
                    self.route_cast(now, node, delivery.to, delivery.payload, until, false);
                }
            },
        }
    }

    /// A delivery that does not fit: a call goes back with a typed error, a cast is
    /// reported dropped.
    fn refuse(&mut self, now: Instant, node: &Node, delivery: Delivery) {
        self.stats.refused += 1;
        match delivery.reply_to {
            Some(reply) => self.bounce(now, node, reply, RemoteError::Overloaded),
            None => self.dropped(Some(delivery.to), Dropped::Cast, DropReason::Full),
        }
    }

    fn bounce(&mut self, now: Instant, node: &Node, reply: CallRef, error: RemoteError) {
        self.replied(now, node, reply, Err(error));
    }

    /// Mail for `id` the runtime could not put into its instance's mailbox (the instance
    /// had just ended), or found there unhandled when the instance ended: a call goes back
    /// to its caller to be routed again, a cast is routed again (for up to
    /// [`MessagingConfig::cast_wait`]), to wherever the name runs next.
    pub fn undeliverable(&mut self, now: Instant, node: &Node, id: &ChildId, mail: Mail) {
        match mail {
            Mail::Call { reply, .. } => self.bounce(now, node, reply, RemoteError::NotHere),
            Mail::Cast { payload } => {
                let until = now + self.config.cast_wait;
                self.route_cast(now, node, id.clone(), payload, until, false);
            }
            Mail::Begin(_) | Mail::BeginHandoff | Mail::Conflict(_) => {}
        }
    }

    // ----- instances and handoff -------------------------------------------------------------

    /// The node started `id` here as `instance` (its claim succeeded); `actor`: its worker
    /// takes mail. An actor gets [`Mail::Begin`] with the state handed over, if one came,
    /// then what waited for it.
    pub fn instance_started(
        &mut self,
        now: Instant,
        node: &Node,
        id: ChildId,
        instance: InstanceId,
        actor: bool,
        handoff_from: Option<&NodeId>,
    ) {
        self.local.insert(id.clone(), Local { instance, actor });
        self.moved.remove(&id);
        let early = self.early_state.remove(&id).unwrap_or_default();
        for state in &early {
            self.release(state.bytes());
        }
        // Only live members' states count (one kept from a node not known then, and still
        // not known, is not taken).
        let (members, strangers) = EarlyState::split_by_sender(early, node);
        for stranger in strangers {
            if stranger.state.is_some() {
                self.forged_state(id.clone());
            }
        }
        let mut early = members;
        // The start begins with the (first) state of the node it names as handing over
        // (one that names none, its view not knowing of a move, with the first that came). Any other member's
        // state is not its to begin with, but is not dropped either: it is the state of a
        // lineage that ran while the views were in flux (or was passed on by a node it was
        // sent to astray), and comes after the start as a conflict, as it would to a
        // running instance.
        let taken = match handoff_from {
            Some(from) => early.iter().position(|e| e.from == *from),
            None => (!early.is_empty()).then_some(0),
        }
        .map(|at| early.remove(at));
        let mut conflicts = Vec::new();
        for other in early {
            match other.state {
                None => {}
                Some(_) if other.until <= now => {
                    self.dropped(Some(id.clone()), Dropped::State, DropReason::Expired);
                }
                Some(state) => conflicts.push(state),
            }
        }
        let handed = match taken {
            Some(early) if early.state.is_some() && early.until <= now => {
                self.dropped(Some(id.clone()), Dropped::State, DropReason::Expired);
                None
            }
            Some(early) => early.state,
            None => None,
        };
        if handed.is_none()
            && let Some(from) = handoff_from
        {
            // The state (if any) travels ahead of the end's confirmation: none came.
            tracing::debug!(child = %id, %from, "the previous instance handed no state over");
        }
        if actor {
            self.emit(MessagingOutput::Mail {
                id: id.clone(),
                instance,
                mail: Mail::Begin(handed),
            });
            for state in conflicts {
                self.emit(MessagingOutput::Mail {
                    id: id.clone(),
                    instance,
                    mail: Mail::Conflict(state),
                });
            }
        }
        self.deliver_held(now, node, &id);
    }

    /// Instance `instance` of `id` has ended here. Mail that waited for room in its mailbox
    /// ([`mailbox_full`](Self::mailbox_full)) is routed again at the next
    /// [`handle_timeout`](Self::handle_timeout), after the mail its mailbox held (which the
    /// runtime gives back to [`undeliverable`](Self::undeliverable)).
    pub fn instance_ended(&mut self, id: &ChildId, instance: InstanceId) {
        if self.local.get(id).is_some_and(|l| l.instance == instance) {
            self.local.remove(id);
        }
        if self.is_backed_up(id, instance) {
            self.orphan_backed_up(id);
        }
    }

    /// State for `id` arrived from `from`, the node it moved away from (or a losing
    /// duplicate). Only a live member's is taken; an instance that starts later takes it
    /// only if its start names `from` as the node handing over.
    fn handed_over(
        &mut self,
        now: Instant,
        node: &Node,
        from: &NodeId,
        id: ChildId,
        handed: Option<Vec<u8>>,
    ) {
        // A node this one does not hold for a live member yet (it joined a moment ago, and
        // its view is behind) may still be the one handing over: its state is kept, within
        // the same bounds, and judged when an instance starts here (or passed on).
        if !Self::is_live_member(node, from) && (self.local.contains_key(&id) || handed.is_none()) {
            if handed.is_some() {
                self.forged_state(id);
            }
            return;
        }
        match (self.local.get(&id).copied(), handed) {
            // Running already: the sender lost a conflict (or was late).
            (Some(local), Some(theirs)) if local.actor => {
                self.emit(MessagingOutput::Mail {
                    id,
                    instance: local.instance,
                    mail: Mail::Conflict(theirs),
                });
            }
            (Some(_), _) => {}
            // Claimed here: the instance starts once the old one's end is confirmed.
            // The views may not agree yet that the name moves here: kept for a while.
            (None, state) => {
                let early = EarlyState {
                    from: from.clone(),
                    state,
                    until: now + self.config.handoff_timeout,
                    from_member: Self::is_live_member(node, from),
                };
                if !self.reserve(early.bytes()) {
                    self.stats.refused += 1;
                    self.dropped(Some(id), Dropped::State, DropReason::Full);
                    return;
                }
                self.early_state.entry(id).or_default().push(early);
            }
        }
    }

    /// The node moves `id` away from here on purpose (`Stop { Moved { to } }`): asks the
    /// instance for its state with [`Mail::BeginHandoff`]. Returns whether a handoff
    /// started; if not (the instance is not an actor, or is not the one running), the
    /// runtime stops the instance at once.
    pub fn start_handoff(
        &mut self,
        now: Instant,
        node: &Node,
        id: &ChildId,
        instance: InstanceId,
        to: NodeId,
    ) -> bool {
        let Some(local) = self.local.get(id).filter(|l| l.instance == instance) else {
            return false;
        };
        if self.handing_off.contains_key(id) {
            // Asked again (a second stop): the handoff under way goes on, with what it
            // holds.
            return true;
        }
        if !local.actor {
            // A plain worker has nothing to hand over; tell the new node not to wait.
            self.send_app(
                now,
                node,
                &to,
                AppMessage::Handoff {
                    id: id.clone(),
                    state: None,
                    seen: Vec::new(),
                },
            );
            return false;
        }
        tracing::debug!(child = %id, %to, "asking the instance for its state");
        self.emit(MessagingOutput::Mail {
            id: id.clone(),
            instance,
            mail: Mail::BeginHandoff,
        });
        let deadline = now + self.config.handoff_timeout;
        // Mail that waited for room was not handled here: it goes on first, ahead of what
        // arrives from now on.
        let held = self.take_backed_up(id, instance);
        self.handing_off.insert(
            id.clone(),
            HandingOff {
                instance,
                to,
                deadline,
                held,
            },
        );
        true
    }

    /// The instance answered [`Mail::BeginHandoff`] with `state`: the state goes to the new
    /// node, then what arrived meanwhile, then [`MessagingOutput::HandoffFinished`].
    ///
    /// A state longer than [`MAX_STATE_LEN`] cannot travel: it is reported as
    /// [`MessagingOutput::Dropped`] ([`DropReason::TooLarge`]) and the new instance starts
    /// without one. (The `solo` runtime checks the size first and tells the instance.)
    pub fn handoff_done(
        &mut self,
        now: Instant,
        node: &Node,
        id: &ChildId,
        instance: InstanceId,
        state: Option<Vec<u8>>,
    ) {
        if self
            .handing_off
            .get(id)
            .is_some_and(|h| h.instance == instance)
        {
            let state = match state {
                Some(state) if state.len() > MAX_STATE_LEN => {
                    self.dropped(Some(id.clone()), Dropped::State, DropReason::TooLarge);
                    None
                }
                state => state,
            };
            self.finish_handoff(now, node, id, state);
        }
    }

    /// The node leaves now, although instances here are still handing over (the runtime's
    /// drain timeout ran out before they gave their state): each of those handoffs ends
    /// without a state, reported as [`Dropped::State`] ([`DropReason::NotGiven`]). Call it
    /// before [`Node::leave`]: the new node learns that no state comes ahead of the leave,
    /// and its instance starts fresh at once instead of waiting for the state, or taking a
    /// state that arrives from a node no longer a member (which it refuses as not awaited).
    /// A state the instance gives after this is not sent.
    pub fn abandon_handoffs(&mut self, now: Instant, node: &Node) {
        let ids: Vec<ChildId> = self.handing_off.keys().cloned().collect();
        for id in ids {
            tracing::warn!(child = %id, "leaving before the instance gave its state: it starts fresh on its new node");
            self.give_up_handoff(now, node, &id);
        }
    }

    /// Ends the handoff of `id` without the state its instance did not give, and says so.
    fn give_up_handoff(&mut self, now: Instant, node: &Node, id: &ChildId) {
        self.dropped(Some(id.clone()), Dropped::State, DropReason::NotGiven);
        self.finish_handoff(now, node, id, None);
    }

    fn finish_handoff(&mut self, now: Instant, node: &Node, id: &ChildId, handed: Option<Vec<u8>>) {
        let Some(handing) = self.handing_off.remove(id) else {
            return;
        };
        let seen = self.delivered.handled(id, MAX_SEEN_LEN);
        tracing::debug!(child = %id, to = %handing.to, held = handing.held.len(), "state sent");
        // The instance takes no more mail: it is stopping, and its state has gone.
        if self
            .local
            .get(id)
            .is_some_and(|l| l.instance == handing.instance)
        {
            self.local.remove(id);
        }
        self.moved.insert(
            id.clone(),
            MovedAway {
                to: handing.to.clone(),
                until: now + self.config.dedupe_window,
            },
        );
        self.send_app(
            now,
            node,
            &handing.to,
            AppMessage::Handoff {
                id: id.clone(),
                state: handed,
                seen,
            },
        );
        #[cfg_attr(not(any(test, feature = "testing")), allow(unused_mut))]
        let mut held = handing.held;
        #[cfg(any(test, feature = "testing"))]
        if self.sabotage_forget_held {
            for delivery in held.drain(..) {
                self.release(delivery_bytes(&delivery));
            }
        }
        for delivery in held {
            self.release(delivery_bytes(&delivery));
            let delivery = Delivery {
                hops: delivery.hops.saturating_add(1),
                from_previous_owner: true,
                ..delivery
            };
            self.send_app(now, node, &handing.to, AppMessage::Deliver(delivery));
        }
        let finished = unsent::Parked::Finished {
            id: id.clone(),
            instance: handing.instance,
        };
        match self.backlogs.get_mut(&handing.to) {
            // The state waits for room: the instance stops once it has left.
            Some(backlog) if !backlog.entries.is_empty() => backlog.entries.push_back(finished),
            _ => self.emit(MessagingOutput::HandoffFinished {
                id: id.clone(),
                instance: handing.instance,
            }),
        }
    }

    /// Delivers what was held for `id` while this node claimed it: to its instance, or to
    /// wherever the name runs now.
    fn deliver_held(&mut self, now: Instant, node: &Node, id: &ChildId) {
        if let Some(held) = self.claimed.remove(id) {
            // Into the instance as its mailbox has room (see `room.rs`), however many.
            self.releasing_held = true;
            for delivery in held.into_deliveries() {
                self.release(delivery_bytes(&delivery));
                self.deliver(now, node, delivery);
            }
            self.releasing_held = false;
            self.room_check_at = now;
        }
    }

    fn is_live_member(node: &Node, id: &NodeId) -> bool {
        node.member(&id.name)
            .is_some_and(|m| m.id() == id && m.state().is_live())
    }

    /// A state from a node that is not a live member: not taken.
    fn forged_state(&mut self, id: ChildId) {
        self.stats.forged += 1;
        self.dropped(Some(id), Dropped::State, DropReason::NotAwaited);
    }

    /// Whether an instance of `id` is about to start here, so that messages for it wait
    /// here instead of going to the owner this node's view names: it claims the name, or
    /// the node moving it away sent its state ahead and this node's view names no other
    /// owner than that node (whose view names this one: this node's will once the move is
    /// gossiped; passing messages back meanwhile would send them round between the two,
    /// and let later ones overtake them).
    fn awaits(&self, node: &Node, id: &ChildId) -> bool {
        // A node that moved the name away does not wait for it to come back: a state
        // from where it went is one passed on (sent astray while the views were in flux).
        let may_start =
            node.status() == Status::Active && !node.is_draining() && !self.moved.contains_key(id);
        node.is_claiming(id)
            || may_start
                && self.early_state.get(id).is_some_and(|states| {
                    Self::owner(node, id).is_none_or(|owner| {
                        owner == *node.id() || states.iter().any(|e| e.from == owner)
                    })
                })
    }

    /// A state that came here ahead of an instance that will not start here (this node's
    /// view names a third node as the owner: the views were in flux when it was sent)
    /// goes on to that owner, ahead of the messages held with it, so that no state is
    /// left behind: the owner starts with it, or, already running, gets it as a
    /// [`Mail::Conflict`].
    fn pass_on_early_states(&mut self, now: Instant, node: &Node) {
        if self.early_state.is_empty() {
            return;
        }
        let elsewhere: Vec<(ChildId, NodeId)> = self
            .early_state
            .keys()
            .filter(|id| !self.awaits(node, id))
            .filter_map(|id| Some((id.clone(), Self::owner(node, id)?)))
            .collect();
        for (id, owner) in elsewhere {
            let Some(states) = self.early_state.remove(&id) else {
                continue;
            };
            // A state from a node not known here yet stays until it is, or expires.
            let (members, strangers) = EarlyState::split_by_sender(states, node);
            if !strangers.is_empty() {
                self.early_state.insert(id.clone(), strangers);
            }
            for early in members {
                self.release(early.bytes());
                if let Some(state) = early.state {
                    tracing::debug!(child = %id, from = %early.from, to = %owner, "state passed on to the owner");
                    self.pass_on(now, node, &owner, id.clone(), state);
                }
            }
        }
    }

    /// Sends a state that came here to `owner`, with what this node's journal knows the
    /// name handled.
    fn pass_on(&mut self, now: Instant, node: &Node, owner: &NodeId, id: ChildId, state: Vec<u8>) {
        let seen = self.delivered.handled(&id, MAX_SEEN_LEN);
        self.send_app(
            now,
            node,
            owner,
            AppMessage::Handoff {
                id,
                state: Some(state),
                seen,
            },
        );
    }

    /// Messages held for names this node no longer claims (the claim gave way, or the
    /// name moved on) go where the name is now.
    fn release_unclaimed(&mut self, now: Instant, node: &Node) {
        self.pass_on_early_states(now, node);
        if self.claimed.is_empty() {
            return;
        }
        let gone: Vec<ChildId> = self
            .claimed
            .keys()
            .filter(|id| !self.awaits(node, id) && !self.local.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.deliver_held(now, node, &id);
        }
    }

    // ----- failures and time ---------------------------------------------------------------

    /// `peer` is gone (down or left): calls in flight to it are routed again, and what
    /// waited for room to it goes elsewhere or is reported.
    pub fn peer_gone(&mut self, now: Instant, node: &Node, peer: &NodeId) {
        self.abandon_backlog(now, node, peer);
        self.moved.retain(|_, moved| moved.to != *peer);
        for (call, pending) in self.calls.iter_mut() {
            if pending.sent_to.as_ref() == Some(peer) {
                pending.sent_to = None;
                self.waiting.push_back(Waiting::Call {
                    call,
                    not_before: now,
                });
            }
        }
    }

    /// Routes what waits, and acts on expired waits. Call it after every input to the node
    /// or to this messenger (the node's view may have changed), and at
    /// [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant, node: &Node) {
        self.route_orphans(now, node);
        if !self.backed_up.is_empty() && self.room_check_at <= now {
            self.room_check_at = now + room::ROOM_RECHECK;
        }
        self.resend_due(now, node);
        while let Some(call) = self.calls.first_expired(now) {
            self.finish_call(call, Err(CallFailure::Timeout));
        }
        if !self.waiting.is_empty() {
            let waiting = std::mem::take(&mut self.waiting);
            for item in waiting {
                match item {
                    Waiting::Call { call, not_before } if not_before > now => {
                        self.waiting.push_back(Waiting::Call { call, not_before });
                    }
                    Waiting::Call { call, .. } => self.route_call(now, node, call),
                    Waiting::Cast {
                        target,
                        until,
                        payload,
                    } if until <= now => {
                        self.release(held_message_bytes(&payload));
                        self.dropped(Some(target), Dropped::Cast, DropReason::NoOwner);
                    }
                    Waiting::Cast {
                        target,
                        payload,
                        until,
                    } if self.cast_retry_at > now => {
                        self.waiting.push_back(Waiting::Cast {
                            target,
                            payload,
                            until,
                        });
                    }
                    Waiting::Cast {
                        target,
                        payload,
                        until,
                    } => self.route_cast(now, node, target, payload, until, true),
                }
            }
        }
        self.release_unclaimed(now, node);
        let stuck: Vec<ChildId> = self
            .handing_off
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stuck {
            self.give_up_handoff(now, node, &id);
        }
        if self.next_sweep <= now {
            self.next_sweep = now + SWEEP_EVERY;
            let mut expired = Vec::new();
            for (id, states) in &mut self.early_state {
                let (gone, kept) = std::mem::take(states)
                    .into_iter()
                    .partition(|early| early.until <= now);
                *states = kept;
                expired.extend(gone.into_iter().map(|early| (id.clone(), early)));
            }
            self.early_state.retain(|_, states| !states.is_empty());
            for (id, early) in expired {
                self.release(early.bytes());
                if !early.sent_by_member(node) {
                    if early.state.is_some() {
                        self.forged_state(id);
                    }
                    continue;
                }
                let Some(state) = early.state else { continue };
                // No instance here took it in time: the owner gets it (as a conflict if
                // it runs), or, with none but this node, it is given up.
                match Self::owner(node, &id).filter(|owner| owner != node.id()) {
                    Some(owner) => self.pass_on(now, node, &owner, id, state),
                    None => self.dropped(Some(id), Dropped::State, DropReason::Expired),
                }
            }
            // What waited for an instance that did not start goes where the name is now.
            self.release_unclaimed(now, node);
            self.moved.retain(|_, moved| moved.until > now);
            self.delivered.expire(now);
        }
    }
}

#[cfg(test)]
mod tests;
