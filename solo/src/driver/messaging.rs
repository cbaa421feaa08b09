//! The driver's half of messaging: routing calls and casts to the node that runs a name,
//! waiting out failovers, delivering into mailboxes, and handing state over when a child
//! moves on purpose.
//!
//! Rules, in one place:
//!
//! * A caller routes by its core's view (`owner_of`). While no owner is known or reachable
//!   the message waits here, bounded by the call's timeout (or [`CAST_WAIT`] for a cast).
//! * A node that does not run the name passes the message on to the owner it knows (at most
//!   [`MAX_HOPS`] times), or bounces a call back ([`RemoteError::NotHere`]) for the caller to
//!   route again shortly.
//! * A call sent to a node that goes `Down` before answering is routed again: a call made
//!   during a failover completes on the new instance. (If the node crashed after its worker
//!   handled the call but before the answer left, the call runs twice, once per instance;
//!   across a *graceful* handoff a call is never delivered twice.)
//! * Graceful move (the core says `Stop { Moved { to } }` here and `Start { handoff_from }`
//!   there): the old instance handles everything already in its mailbox, answers
//!   `begin_handoff`, and its state goes to the new node, followed by the messages that
//!   reached the old node meanwhile; then it ends, and only then does its node confirm the
//!   new node's claim. So the state is there before the new instance starts: the new node
//!   never waits for a state. While its core claims the name, the new node holds the
//!   messages that reach it; it delivers those passed on by the old node first, then the
//!   ones that reached it directly, each group in arrival order.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use solo_core::wire::{AppMessage, CallRef, Delivery, Message, RemoteError};
use solo_core::{ChildId, NodeId, Transmit};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::dedupe::Delivered;
use super::{Driver, State};
use crate::actor::{CallError, HandoffDone, Mail, RemoteReply};
use solo_transport_tcp::Network;

/// How many nodes may pass one message on before it is bounced.
const MAX_HOPS: u8 = 4;
/// How long a cast waits for its name to get a reachable owner before it is dropped.
pub(crate) const CAST_WAIT: Duration = Duration::from_secs(5);
/// How soon a bounced call is routed again (the bouncing node's view was ahead or behind).
const REROUTE_PAUSE: Duration = Duration::from_millis(1);
/// How long a node remembers the calls it delivered, to drop a second copy: one routed
/// again by a caller that saw the old owner go while the first copy was being handled or
/// passed on. Re-routes follow within milliseconds of the event that causes them.
const DEDUPE_WINDOW: Duration = Duration::from_secs(2);

/// A call this node made, until it is answered (or its caller gives up).
struct PendingCall {
    target: ChildId,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<Vec<u8>, CallError>>,
    /// The node it was last sent to, if it is in flight.
    sent_to: Option<NodeId>,
}

/// A message with nowhere to go yet.
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

/// Messages for a name this node's core claims, held until its instance starts.
#[derive(Default)]
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
struct HandingOff {
    instance: u64,
    to: NodeId,
    deadline: Instant,
    /// Messages that arrived since: passed on after the state.
    held: Vec<Delivery>,
}

/// The messaging state of one driver.
pub(crate) struct Messaging {
    next_call: u64,
    calls: HashMap<u64, PendingCall>,
    waiting: VecDeque<Waiting>,
    /// Messages for names the core claims here, until their instance starts.
    claimed: HashMap<ChildId, Held>,
    handing_off: HashMap<ChildId, HandingOff>,
    /// State that arrived before its instance started here, with when it expires.
    early_state: HashMap<ChildId, (Option<Vec<u8>>, Instant)>,
    handoff_timeout: Duration,
    next_sweep: Instant,
    /// Waiting casts are routed again no sooner than this.
    cast_retry_at: Instant,
    /// Calls delivered into a mailbox here, or by a previous owner (per its handoff): a
    /// second copy is dropped.
    delivered: Delivered,
}

impl Messaging {
    pub(crate) fn new(handoff_timeout: Duration) -> Self {
        Self {
            next_call: 0,
            calls: HashMap::new(),
            waiting: VecDeque::new(),
            claimed: HashMap::new(),
            handing_off: HashMap::new(),
            early_state: HashMap::new(),
            handoff_timeout,
            next_sweep: Instant::now() + Duration::from_secs(1),
            cast_retry_at: Instant::now(),
            delivered: Delivered::new(DEDUPE_WINDOW),
        }
    }

    /// The earliest moment something here needs a look.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let waiting = self.waiting.iter().map(|w| match w {
            Waiting::Call { not_before, .. } => *not_before,
            Waiting::Cast { until, .. } => (*until).min(self.cast_retry_at),
        });
        let handing = self.handing_off.values().map(|h| h.deadline);
        waiting
            .chain(handing)
            .chain(std::iter::once(self.next_sweep))
            .min()
    }

    /// Whether an instance is still handing over (a leave waits for it).
    pub(crate) fn is_handing_off(&self) -> bool {
        !self.handing_off.is_empty()
    }
}

impl<N: Network> Driver<N> {
    fn send_app(&mut self, to: &NodeId, message: AppMessage) {
        let addr = self
            .node
            .member(&to.name)
            .filter(|m| m.id() == to)
            .map(|m| m.addr());
        self.transport.send(Transmit {
            to: Some(to.clone()),
            addr,
            message: Message::App(message),
        });
    }

    // ----- the caller's side -------------------------------------------------------------

    pub(super) fn start_call(
        &mut self,
        state: &mut State,
        target: ChildId,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, CallError>>,
    ) {
        if !self.node.knows(&target) {
            let _ = reply.send(Err(CallError::NoSuchName(target)));
            return;
        }
        let messaging = &mut state.messaging;
        messaging.next_call += 1;
        let call = messaging.next_call;
        messaging.calls.insert(
            call,
            PendingCall {
                target,
                payload,
                reply,
                sent_to: None,
            },
        );
        self.route_call(state, call);
    }

    /// Sends call `call` to the owner of its target, or parks it until there is one.
    fn route_call(&mut self, state: &mut State, call: u64) {
        let Some(pending) = state.messaging.calls.get_mut(&call) else {
            return;
        };
        if pending.reply.is_closed() {
            state.messaging.calls.remove(&call);
            return;
        }
        let target = pending.target.clone();
        if !self.node.knows(&target) {
            // Terminated (or given up) while the call was on its way.
            if let Some(pending) = state.messaging.calls.remove(&call) {
                let _ = pending.reply.send(Err(CallError::NoSuchName(target)));
            }
            return;
        }
        let owner = self
            .node
            .owner_of(&target)
            .and_then(|name| self.node_id_of(name));
        let Some(owner) = owner else {
            pending.sent_to = None;
            state.messaging.waiting.push_back(Waiting::Call {
                call,
                not_before: Instant::now() + REROUTE_PAUSE,
            });
            return;
        };
        pending.sent_to = Some(owner.clone());
        let delivery = Delivery {
            to: target,
            reply_to: Some(CallRef {
                caller: self.node.id().clone(),
                call,
            }),
            payload: pending.payload.clone(),
            hops: 0,
            from_previous_owner: false,
        };
        if owner == *self.node.id() {
            self.deliver(state, delivery);
        } else {
            self.send_app(&owner, AppMessage::Deliver(delivery));
        }
    }

    /// The live member `name` is, or this node.
    fn node_id_of(&self, name: &solo_core::NodeName) -> Option<NodeId> {
        if *name == self.node.id().name {
            return Some(self.node.id().clone());
        }
        self.node
            .member(name)
            .filter(|m| m.state().is_live())
            .map(|m| m.id().clone())
    }

    pub(super) fn start_cast(
        &mut self,
        state: &mut State,
        target: ChildId,
        payload: Vec<u8>,
    ) -> Result<(), CallError> {
        if !self.node.knows(&target) {
            return Err(CallError::NoSuchName(target));
        }
        self.route_cast(state, target, payload, Instant::now() + CAST_WAIT);
        Ok(())
    }

    fn route_cast(&mut self, state: &mut State, target: ChildId, payload: Vec<u8>, until: Instant) {
        let owner = self
            .node
            .owner_of(&target)
            .and_then(|name| self.node_id_of(name));
        let Some(owner) = owner else {
            state.messaging.waiting.push_back(Waiting::Cast {
                target,
                payload,
                until,
            });
            state.messaging.cast_retry_at = Instant::now() + REROUTE_PAUSE;
            return;
        };
        let delivery = Delivery {
            to: target,
            reply_to: None,
            payload,
            hops: 0,
            from_previous_owner: false,
        };
        if owner == *self.node.id() {
            self.deliver(state, delivery);
        } else {
            self.send_app(&owner, AppMessage::Deliver(delivery));
        }
    }

    /// An answer for call `call` of this node.
    fn answered(&mut self, state: &mut State, call: u64, result: Result<Vec<u8>, RemoteError>) {
        match result {
            Err(RemoteError::NotHere) => {
                if let Some(pending) = state.messaging.calls.get_mut(&call) {
                    pending.sent_to = None;
                    state.messaging.waiting.push_back(Waiting::Call {
                        call,
                        not_before: Instant::now() + REROUTE_PAUSE,
                    });
                }
            }
            result => {
                if let Some(pending) = state.messaging.calls.remove(&call) {
                    let _ = pending.reply.send(result.map_err(|e| match e {
                        RemoteError::NoSuchName => CallError::NoSuchName(pending.target.clone()),
                        other => other.into(),
                    }));
                }
            }
        }
    }

    /// An answer from one of this node's actors, for a caller here or elsewhere.
    pub(super) fn actor_replied(&mut self, state: &mut State, reply: RemoteReply) {
        let RemoteReply { to, result } = reply;
        if matches!(result, Err(RemoteError::NotHere)) {
            // Sent back unhandled (its instance ended first): a copy routed again must not be
            // taken for a duplicate.
            state.messaging.delivered.remove(&to);
        }
        if to.caller == *self.node.id() {
            self.answered(state, to.call, result);
        } else {
            let caller = to.caller;
            self.send_app(
                &caller,
                AppMessage::Reply {
                    call: to.call,
                    result,
                },
            );
        }
    }

    // ----- the receiving side -------------------------------------------------------------

    /// A message from another node's runtime.
    pub(super) fn app_message(&mut self, state: &mut State, from: &NodeId, message: AppMessage) {
        match message {
            AppMessage::Deliver(delivery) => self.deliver(state, delivery),
            AppMessage::Reply { call, result } => self.answered(state, call, result),
            AppMessage::Handoff {
                id,
                state: handed,
                seen,
            } => {
                tracing::debug!(child = %id, %from, with_state = handed.is_some(), "state handed over");
                state
                    .messaging
                    .delivered
                    .insert_handled(&id, seen, Instant::now());
                self.handed_over(state, id, handed);
            }
            other => tracing::debug!(?other, "unknown app message"),
        }
    }

    /// Puts `delivery` where it belongs: a mailbox here, a buffer, another node, or back.
    fn deliver(&mut self, state: &mut State, delivery: Delivery) {
        let id = &delivery.to;
        if let Some(handing) = state.messaging.handing_off.get_mut(id) {
            handing.held.push(delivery);
            return;
        }
        if let Some(instance) = state.instances.get(id) {
            match &instance.mailbox {
                Some(mailbox) => {
                    if let Some(call) = &delivery.reply_to {
                        if state.messaging.delivered.contains(id, call) {
                            tracing::debug!(child = %id, ?call, "a second copy of a call; dropped");
                            return;
                        }
                        state.messaging.delivered.insert(id, call, Instant::now());
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
                    if let Err(returned) = mailbox.send(mail) {
                        // The instance just ended: its successor may be elsewhere.
                        if let Mail::Call { reply, .. } = returned.0 {
                            self.bounce(state, reply, RemoteError::NotHere);
                        }
                    }
                }
                None => {
                    if let Some(reply) = delivery.reply_to {
                        self.bounce(state, reply, RemoteError::NotAnActor);
                    }
                }
            }
            return;
        }
        if self.node.is_claiming(id) {
            let held = state.messaging.claimed.entry(id.clone()).or_default();
            if delivery.from_previous_owner {
                held.forwarded.push(delivery);
            } else {
                held.direct.push(delivery);
            }
            return;
        }
        // Not running here: pass it on, or send it back.
        if !self.node.knows(id) {
            if let Some(reply) = delivery.reply_to {
                self.bounce(state, reply, RemoteError::NoSuchName);
            }
            return;
        }
        let owner = self
            .node
            .owner_of(id)
            .and_then(|name| self.node_id_of(name))
            .filter(|owner| owner != self.node.id());
        match owner {
            Some(owner) if delivery.hops < MAX_HOPS => {
                let delivery = Delivery {
                    hops: delivery.hops + 1,
                    ..delivery
                };
                self.send_app(&owner, AppMessage::Deliver(delivery));
            }
            _ => match delivery.reply_to {
                Some(reply) => self.bounce(state, reply, RemoteError::NotHere),
                None => {
                    let until = Instant::now() + CAST_WAIT;
                    state.messaging.waiting.push_back(Waiting::Cast {
                        target: delivery.to,
                        payload: delivery.payload,
                        until,
                    });
                }
            },
        }
    }

    fn bounce(&mut self, state: &mut State, reply: CallRef, error: RemoteError) {
        self.actor_replied(
            state,
            RemoteReply {
                to: reply,
                result: Err(error),
            },
        );
    }

    // ----- handoff ------------------------------------------------------------------------

    /// The core started `id` here as `instance` (its claim succeeded): begin it with the
    /// state handed over, if one came, then deliver what waited for it.
    pub(super) fn instance_started(
        &mut self,
        state: &mut State,
        id: ChildId,
        handoff_from: Option<NodeId>,
    ) {
        let now = Instant::now();
        let handed = state
            .messaging
            .early_state
            .remove(&id)
            .filter(|(_, until)| *until > now)
            .and_then(|(handed, _)| handed);
        if handed.is_none()
            && let Some(from) = &handoff_from
        {
            // The state (if any) travels ahead of the end's confirmation: none came.
            tracing::debug!(child = %id, %from, "the previous instance handed no state over");
        }
        if let Some(mailbox) = state.instances.get(&id).and_then(|i| i.mailbox.clone()) {
            let _ = mailbox.send(Mail::Begin(handed));
        }
        if let Some(held) = state.messaging.claimed.remove(&id) {
            for delivery in held.into_deliveries() {
                self.deliver(state, delivery);
            }
        }
    }

    /// State for `id` arrived from the node it moved away from (or from a losing duplicate).
    fn handed_over(&mut self, state: &mut State, id: ChildId, handed: Option<Vec<u8>>) {
        let mailbox = state.instances.get(&id).and_then(|i| i.mailbox.clone());
        match (mailbox, handed) {
            // Running already: the sender lost a conflict (or was late).
            (Some(mailbox), Some(theirs)) => {
                let _ = mailbox.send(Mail::Conflict(theirs));
            }
            (Some(_), None) => {}
            // Claimed here: the instance starts once the old one's end is confirmed.
            (None, handed) => {
                let until = Instant::now() + state.messaging.handoff_timeout;
                state.messaging.early_state.insert(id, (handed, until));
            }
        }
    }

    /// The core moves `id` away from here on purpose: ask the instance for its state.
    /// Returns whether a handoff started (otherwise the caller stops the instance).
    pub(super) fn start_handoff(
        &mut self,
        state: &mut State,
        id: &ChildId,
        instance: u64,
        to: NodeId,
        reason: String,
    ) -> bool {
        let Some(running) = state
            .instances
            .get_mut(id)
            .filter(|i| i.instance == instance)
        else {
            return false;
        };
        let Some(mailbox) = running.mailbox.clone() else {
            // A plain worker has nothing to hand over; tell the new node not to wait.
            self.send_app(
                &to,
                AppMessage::Handoff {
                    id: id.clone(),
                    state: None,
                    seen: Vec::new(),
                },
            );
            return false;
        };
        tracing::debug!(child = %id, %to, "asking the instance for its state");
        running.ending(reason);
        let _ = mailbox.send(Mail::BeginHandoff);
        let deadline = Instant::now() + state.messaging.handoff_timeout;
        state.messaging.handing_off.insert(
            id.clone(),
            HandingOff {
                instance,
                to,
                deadline,
                held: Vec::new(),
            },
        );
        true
    }

    /// The instance answered `begin_handoff`: send the state, then what arrived meanwhile.
    /// Sends the answers actors have given so far. An instance answers its calls before it
    /// reports its handoff or its end, on another channel: those answers go first.
    pub(super) fn drain_replies(&mut self, state: &mut State) {
        while let Ok(reply) = self.replies.try_recv() {
            self.actor_replied(state, reply);
        }
    }

    pub(super) fn handoff_done(&mut self, state: &mut State, done: HandoffDone) {
        self.drain_replies(state);
        let matches = state
            .messaging
            .handing_off
            .get(&done.id)
            .is_some_and(|h| h.instance == done.instance);
        if matches {
            self.finish_handoff(state, &done.id, done.state);
        }
    }

    fn finish_handoff(&mut self, state: &mut State, id: &ChildId, handed: Option<Vec<u8>>) {
        let Some(handing) = state.messaging.handing_off.remove(id) else {
            return;
        };
        let seen = state.messaging.delivered.handled(id);
        tracing::debug!(child = %id, to = %handing.to, held = handing.held.len(), "state sent");
        self.send_app(
            &handing.to,
            AppMessage::Handoff {
                id: id.clone(),
                state: handed,
                seen,
            },
        );
        for delivery in handing.held {
            let delivery = Delivery {
                hops: delivery.hops.saturating_add(1),
                from_previous_owner: true,
                ..delivery
            };
            self.send_app(&handing.to, AppMessage::Deliver(delivery));
        }
        if let Some(running) = state
            .instances
            .get_mut(id)
            .filter(|i| i.instance == handing.instance)
        {
            let reason = running
                .stop_reason
                .clone()
                .unwrap_or_else(|| "moved".into());
            running.stop(reason);
        }
    }

    /// Messages held for names this node no longer claims (the claim gave way, or the
    /// name moved on) go where the name is now.
    fn release_unclaimed(&mut self, state: &mut State) {
        if state.messaging.claimed.is_empty() {
            return;
        }
        let gone: Vec<ChildId> = state
            .messaging
            .claimed
            .keys()
            .filter(|id| !self.node.is_claiming(id) && !state.instances.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(held) = state.messaging.claimed.remove(&id) {
                for delivery in held.into_deliveries() {
                    self.deliver(state, delivery);
                }
            }
        }
    }

    // ----- failures and time ---------------------------------------------------------------

    /// `peer` is gone: calls in flight to it are routed again.
    pub(super) fn peer_gone(&mut self, state: &mut State, peer: &NodeId) {
        let lost: Vec<u64> = state
            .messaging
            .calls
            .iter()
            .filter(|(_, c)| c.sent_to.as_ref() == Some(peer))
            .map(|(call, _)| *call)
            .collect();
        for call in lost {
            if let Some(pending) = state.messaging.calls.get_mut(&call) {
                pending.sent_to = None;
            }
            state.messaging.waiting.push_back(Waiting::Call {
                call,
                not_before: Instant::now(),
            });
        }
    }

    /// Routes what waits, and acts on expired waits. Called after every input.
    pub(super) fn messaging_tick(&mut self, state: &mut State) {
        let now = Instant::now();
        if !state.messaging.waiting.is_empty() {
            let waiting = std::mem::take(&mut state.messaging.waiting);
            for item in waiting {
                match item {
                    Waiting::Call { call, not_before } if not_before > now => {
                        state
                            .messaging
                            .waiting
                            .push_back(Waiting::Call { call, not_before });
                    }
                    Waiting::Call { call, .. } => self.route_call(state, call),
                    Waiting::Cast { until, .. } if until <= now => {
                        tracing::debug!("a cast found no owner in time; dropped");
                    }
                    Waiting::Cast {
                        target,
                        payload,
                        until,
                    } if state.messaging.cast_retry_at > now => {
                        state.messaging.waiting.push_back(Waiting::Cast {
                            target,
                            payload,
                            until,
                        });
                    }
                    Waiting::Cast {
                        target,
                        payload,
                        until,
                    } => self.route_cast(state, target, payload, until),
                }
            }
        }
        self.release_unclaimed(state);
        let stuck: Vec<ChildId> = state
            .messaging
            .handing_off
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stuck {
            self.finish_handoff(state, &id, None);
        }
        if state.messaging.next_sweep <= now {
            state.messaging.next_sweep = now + Duration::from_secs(1);
            // Callers that gave up (timed out) leave entries behind.
            state
                .messaging
                .calls
                .retain(|_, pending| !pending.reply.is_closed());
            state
                .messaging
                .early_state
                .retain(|_, (_, until)| *until > now);
            state.messaging.delivered.expire(now);
        }
    }
}
