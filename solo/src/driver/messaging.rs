//! The driver's half of messaging: it feeds the core's [`Messenger`] (routing, waiting,
//! handoff and the dedupe journal, all decided there) and carries out what it asks: frames
//! to the transport, mail into local mailboxes, outcomes to the callers here.
//!
//! Every input is followed at once by its outputs ([`Driver::run_messenger`]), before the
//! node's: a handed-over state must leave before the node confirms the old instance's end,
//! which lets the new owner start.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use solo_core::messaging::{
    CallFailure, CallId, MAX_PAYLOAD_LEN, MessagingConfig, MessagingOutput, Messenger,
};
use solo_core::wire::{AppMessage, CallRef, Message, RemoteError};
use solo_core::{ChildId, InstanceId, NodeId, Transmit};
use solo_transport_tcp::{Cork, Network, Transport};
use tokio::sync::{mpsc, oneshot};

use super::{Driver, State, now};
use crate::Event;
use crate::actor::{CallError, DirectReply, FromActor, HandoffDone, Mail};
use crate::worker::{CONTROL_MAIL_PLACES, WorkerStopReason};

/// A call made on this node, until its outcome.
struct Caller {
    target: ChildId,
    timeout: Duration,
    reply: oneshot::Sender<Result<Vec<u8>, CallError>>,
}

/// Hashes a [`CallId`] by one multiplication. The messenger numbers its calls one after the
/// other and no peer picks them, so SipHash's defence against chosen keys buys nothing on a
/// table every call enters and leaves.
#[derive(Default)]
struct CallIdHasher(u64);

impl Hasher for CallIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits (which the table's control bytes take) mix all
        // of `n`'s.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The messaging state of one driver.
pub(crate) struct Messaging {
    messenger: Messenger,
    callers: HashMap<CallId, Caller, BuildHasherDefault<CallIdHasher>>,
    /// Whether the messenger held a backlog at the end of the last turn of the loop, for
    /// the actors' direct replies ([`ReplyToCaller`]).
    backlog: Arc<AtomicBool>,
}

impl Messaging {
    /// `simulation_seed`: call tokens follow from it (a seed replays); otherwise they are
    /// SipHash of the call number under keys drawn from the system at start, which no other
    /// process can guess.
    pub(crate) fn new(config: MessagingConfig, simulation_seed: Option<u64>) -> Self {
        let messenger = match simulation_seed {
            Some(seed) => Messenger::new(config, now(), move |call| {
                solo_core::Rng::new(seed ^ call.rotate_left(32)).next_u64()
            }),
            None => {
                use std::hash::BuildHasher;
                let keys = std::hash::RandomState::new();
                Messenger::new(config, now(), move |call| keys.hash_one(call))
            }
        };
        Self {
            messenger,
            callers: HashMap::default(),
            backlog: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag the actors' direct replies read: set while the messenger holds a backlog.
    pub(crate) fn backlog_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.backlog)
    }

    /// Tells the actors' direct replies whether the messenger holds a backlog now. Once per
    /// turn of the driver's loop: a reply sent directly in the same turn as a message was
    /// parked may go ahead of it (an answer to another call, which nothing orders against
    /// it); none goes ahead of a backlog once the turn ends.
    pub(crate) fn share_backlog(&self) {
        self.backlog
            .store(self.messenger.has_backlog(), Ordering::Release);
    }

    /// The earliest moment the messenger needs a look.
    pub(crate) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.messenger
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
    }

    /// The messenger's counters.
    pub(crate) fn stats(&self) -> solo_core::messaging::MessagingStats {
        self.messenger.stats()
    }

    /// Whether an instance is still handing over (a leave waits for it).
    pub(crate) fn is_handing_off(&self) -> bool {
        self.messenger.is_handing_off()
    }
}

/// The way this node's actors answer callers on other nodes without the driver: the reply
/// goes on the caller's connection, the frame the messenger would have sent (see
/// `actor::answers`). The messenger alone decides while messages it could not send at
/// first wait to be offered again (the reply takes its place behind them), for a caller
/// here, for an error answer or one too long, and when the connection does not take the
/// reply now (it is missing: the messenger knows the address to dial; or full): the answer
/// is given back for the driver to send.
pub(crate) struct ReplyToCaller<N: Network> {
    transport: Transport<N>,
    me: NodeId,
    backlog: Arc<AtomicBool>,
}

impl<N: Network> ReplyToCaller<N> {
    /// `backlog`: set while the messenger holds a backlog ([`Messaging::share_backlog`]).
    pub(crate) fn new(transport: Transport<N>, me: NodeId, backlog: Arc<AtomicBool>) -> Self {
        Self {
            transport,
            me,
            backlog,
        }
    }
}

impl<N: Network> DirectReply for ReplyToCaller<N> {
    fn try_reply(
        &self,
        to: CallRef,
        answer: Vec<u8>,
        at_once: bool,
    ) -> Result<(), (CallRef, Vec<u8>)> {
        if to.caller == self.me
            || answer.len() > MAX_PAYLOAD_LEN
            || self.backlog.load(Ordering::Acquire)
        {
            return Err((to, answer));
        }
        let transmit = Transmit {
            to: Some(to.caller.clone()),
            addr: None,
            message: Message::App(AppMessage::Reply {
                call: to.call,
                token: to.token,
                result: Ok(answer),
            }),
        };
        // Uncorked as this function returns: the reply goes on the wire from here.
        let _written_at_once = at_once.then(Cork::new);
        if self.transport.try_send(&transmit).is_ok() {
            return Ok(());
        }
        match transmit.message {
            Message::App(AppMessage::Reply {
                result: Ok(answer), ..
            }) => Err((to, answer)),
            _ => unreachable!("built as a reply above"),
        }
    }
}

fn call_error(target: ChildId, timeout: Duration, failure: CallFailure) -> CallError {
    match failure {
        CallFailure::NoSuchName | CallFailure::Remote(RemoteError::NoSuchName) => {
            CallError::NoSuchName(target)
        }
        CallFailure::Timeout => CallError::Timeout(timeout),
        CallFailure::Overloaded | CallFailure::Remote(RemoteError::Overloaded) => {
            CallError::Overloaded
        }
        CallFailure::TooLarge => CallError::TooLarge,
        CallFailure::Full => CallError::Full,
        CallFailure::Remote(RemoteError::NotAnActor) => CallError::NotAnActor,
        CallFailure::Remote(RemoteError::BadMessage(why)) => CallError::BadMessage(why),
        CallFailure::Remote(RemoteError::Failed(why)) => CallError::Failed(why),
        CallFailure::Remote(RemoteError::ReplyTooLarge) => CallError::ReplyTooLarge,
        // `NotHere` is routed again by the messenger and never ends a call; a failure this
        // version does not name is still a failure, with its text.
        other => CallError::Failed(other.to_string()),
    }
}

impl<N: Network> Driver<N> {
    /// Carries out what the messenger asked for, until it asks nothing more.
    pub(super) fn run_messenger(&mut self, state: &mut State) {
        while let Some(output) = state.messaging.messenger.poll_output() {
            match output {
                MessagingOutput::Transmit(transmit) => {
                    // Calls, replies and handoffs are not lost to a full queue: the
                    // messenger offers them again, in order, or tells their sender.
                    if let Err(why) = self.transport.try_send(&transmit) {
                        state
                            .messaging
                            .messenger
                            .not_sent(now(), &self.node, transmit, why);
                    }
                }
                MessagingOutput::Mail { id, instance, mail } => {
                    let mailbox = state
                        .instances
                        .get(&id)
                        .filter(|i| i.instance == instance)
                        .and_then(|i| i.mailbox.as_ref());
                    let messenger = &mut state.messaging.messenger;
                    let Some(mailbox) = mailbox else {
                        // The instance just ended: its successor may be elsewhere.
                        messenger.undeliverable(now(), &self.node, &id, mail);
                        continue;
                    };
                    let message = matches!(mail, Mail::Call { .. } | Mail::Cast { .. });
                    if message && mailbox.capacity() <= CONTROL_MAIL_PLACES {
                        // It waits for room (see `offer_room`), and what follows behind it.
                        messenger.mailbox_full(now(), &self.node, id, instance, mail);
                        continue;
                    }
                    match mailbox.try_send(mail) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(mail)) => {
                            messenger.mailbox_full(now(), &self.node, id, instance, mail);
                        }
                        Err(mpsc::error::TrySendError::Closed(mail)) => {
                            messenger.undeliverable(now(), &self.node, &id, mail);
                        }
                    }
                }
                MessagingOutput::CallDone { call, result } => {
                    if let Some(caller) = state.messaging.callers.remove(&call) {
                        let result = result
                            .map_err(|failure| call_error(caller.target, caller.timeout, failure));
                        let _ = caller.reply.send(result);
                    }
                }
                MessagingOutput::HandoffFinished { id, instance } => {
                    state.metrics.handoff_finished(&id, now());
                    if let Some(running) = state
                        .instances
                        .get_mut(&id)
                        .filter(|i| i.instance == instance)
                    {
                        let reason = running
                            .stop_reason
                            .clone()
                            .unwrap_or(WorkerStopReason::Moved { to: None });
                        running.stop(reason);
                    }
                }
                MessagingOutput::Dropped { id, what, reason } => {
                    self.emit(Event::MessageDropped { id, what, reason });
                }
                other => tracing::debug!(?other, "unhandled messaging output"),
            }
        }
    }

    // ----- the caller's side -------------------------------------------------------------

    pub(super) fn start_call(
        &mut self,
        state: &mut State,
        target: ChildId,
        payload: Vec<u8>,
        deadline: tokio::time::Instant,
        timeout: Duration,
        reply: oneshot::Sender<Result<Vec<u8>, CallError>>,
    ) {
        let now = now();
        let deadline = deadline.into_std();
        let call =
            state
                .messaging
                .messenger
                .call(now, &self.node, target.clone(), payload, deadline);
        state.messaging.callers.insert(
            call,
            Caller {
                target,
                timeout,
                reply,
            },
        );
        self.run_messenger(state);
    }

    pub(super) fn start_cast(
        &mut self,
        state: &mut State,
        target: ChildId,
        payload: Vec<u8>,
    ) -> Result<(), CallError> {
        // A cast from here to a full mailbox here is refused while its sender can wait.
        let full_here = state
            .instances
            .get(&target)
            .and_then(|i| i.mailbox.as_ref())
            .is_some_and(|mailbox| mailbox.capacity() <= CONTROL_MAIL_PLACES)
            && self.node.owner_of(&target) == Some(&self.node.id().name);
        if full_here {
            return Err(CallError::Full);
        }
        let result = state
            .messaging
            .messenger
            .cast(now(), &self.node, target.clone(), payload)
            .map_err(|failure| call_error(target, Duration::ZERO, failure));
        self.run_messenger(state);
        result
    }

    /// An answer from one of this node's actors, for a caller here or elsewhere.
    /// Or mail it left unhandled when it ended.
    pub(super) fn actor_replied(&mut self, state: &mut State, reply: FromActor) {
        let messenger = &mut state.messaging.messenger;
        match reply {
            FromActor::Answer { to, result } => messenger.replied(now(), &self.node, to, result),
            FromActor::Unhandled { id, mail } => {
                messenger.undeliverable(now(), &self.node, &id, mail);
            }
        }
        self.run_messenger(state);
    }

    // ----- the receiving side -------------------------------------------------------------

    /// A message from another node's runtime.
    pub(super) fn app_message(&mut self, state: &mut State, from: &NodeId, message: AppMessage) {
        state
            .messaging
            .messenger
            .handle_message(now(), &self.node, from, message);
        self.run_messenger(state);
    }

    // ----- handoff ------------------------------------------------------------------------

    /// The core started `id` here as `instance` (its claim succeeded).
    pub(super) fn instance_started(
        &mut self,
        state: &mut State,
        id: ChildId,
        instance: InstanceId,
        handoff_from: Option<NodeId>,
    ) {
        let actor = state
            .instances
            .get(&id)
            .is_some_and(|i| i.mailbox.is_some());
        state.messaging.messenger.instance_started(
            now(),
            &self.node,
            id,
            instance,
            actor,
            handoff_from.as_ref(),
        );
        self.run_messenger(state);
    }

    /// Instance `instance` of `id` has ended here.
    pub(super) fn instance_ended(&mut self, state: &mut State, id: &ChildId, instance: InstanceId) {
        state.messaging.messenger.instance_ended(id, instance);
    }

    /// The core moves `id` away from here on purpose: ask the instance for its state.
    /// Returns whether a handoff started (otherwise the caller stops the instance).
    pub(super) fn start_handoff(
        &mut self,
        state: &mut State,
        id: &ChildId,
        instance: InstanceId,
        to: NodeId,
        reason: WorkerStopReason,
    ) -> bool {
        let started = state
            .messaging
            .messenger
            .start_handoff(now(), &self.node, id, instance, to);
        if started {
            state.metrics.handoff_started(id, now());
        }
        if started
            && let Some(running) = state
                .instances
                .get_mut(id)
                .filter(|i| i.instance == instance)
        {
            running.ending(reason);
        }
        self.run_messenger(state);
        started
    }

    /// The node leaves before its handoffs finished (the drain timeout ran out): each
    /// ends without a state, reported.
    pub(super) fn abandon_handoffs(&mut self, state: &mut State) {
        // A state given just in time still goes.
        self.catch_up(state);
        state
            .messaging
            .messenger
            .abandon_handoffs(now(), &self.node);
        self.run_messenger(state);
    }

    /// Carries out the answers and the handed-over states instances have given so far, in
    /// that order: an instance answers its calls before it reports its handoff.
    pub(super) fn catch_up(&mut self, state: &mut State) {
        self.drain_replies(state);
        while let Ok(done) = self.handoffs.try_recv() {
            self.handoff_done(state, done);
        }
    }

    /// Sends the answers actors have given so far. An instance answers its calls before it
    /// reports its handoff or its end, on another channel: those answers go first.
    pub(super) fn drain_replies(&mut self, state: &mut State) {
        while let Ok(reply) = self.replies.try_recv() {
            self.actor_replied(state, reply);
        }
    }

    /// The instance answered `begin_handoff`: the state goes out, then what arrived
    /// meanwhile.
    pub(super) fn handoff_done(&mut self, state: &mut State, done: HandoffDone) {
        self.drain_replies(state);
        if let Some(error) = done.failed {
            self.emit(Event::HandoffFailed {
                id: done.id.clone(),
                instance: done.instance,
                error,
            });
        }
        state.messaging.messenger.handoff_done(
            now(),
            &self.node,
            &done.id,
            done.instance,
            done.state,
        );
        self.run_messenger(state);
    }

    // ----- failures and time ---------------------------------------------------------------

    /// `peer` is gone: calls in flight to it are routed again.
    pub(super) fn peer_gone(&mut self, state: &mut State, peer: &NodeId) {
        state.messaging.messenger.peer_gone(now(), &self.node, peer);
    }

    /// Routes what waits, acts on expired waits, and offers the room mailboxes have to the
    /// mail waiting for it. Called after every input.
    pub(super) fn messaging_tick(&mut self, state: &mut State) {
        let now = now();
        let messenger = &mut state.messaging.messenger;
        messenger.handle_timeout(now, &self.node);
        let waiting: Vec<(ChildId, InstanceId)> = messenger
            .waiting_for_room()
            .map(|(id, instance)| (id.clone(), instance))
            .collect();
        for (id, instance) in waiting {
            let room = state
                .instances
                .get(&id)
                .filter(|i| i.instance == instance)
                .and_then(|i| i.mailbox.as_ref())
                .map_or(0, |mailbox| {
                    mailbox.capacity().saturating_sub(CONTROL_MAIL_PLACES)
                });
            if room > 0 {
                messenger.mailbox_room(now, &id, instance, room);
            }
        }
        self.run_messenger(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use solo_core::{Incarnation, NodeName};
    use solo_transport_tcp::{Config, TokioNetwork};

    fn node(name: &str) -> NodeId {
        NodeId::new(NodeName::new(name).expect("name"), Incarnation(1))
    }

    async fn bound(name: &str) -> (Transport, solo_transport_tcp::EventReceiver) {
        Transport::builder(node(name), Config::new("t", "cookie-0123456789abcdef"))
            .bind(TokioNetwork, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("binds")
    }

    /// The next frame from the transport's events, decoded, skipping link events.
    async fn next_frame(events: &mut solo_transport_tcp::EventReceiver) -> Message {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("an event in time")
                .expect("open");
            if let solo_transport_tcp::TransportEvent::Frame { frame, .. } = event {
                return solo_core::wire::decode_frame(&frame).expect("decodes");
            }
        }
    }

    #[tokio::test]
    async fn a_reply_goes_straight_to_a_connected_caller_and_anything_else_is_given_back_whole() {
        let (a, mut a_events) = bound("a").await;
        let (b, mut b_events) = bound("b").await;
        // `a` dials `b`: a connection both ends know.
        a.send(Transmit {
            to: None,
            addr: Some(b.advertised_addr()),
            message: Message::App(AppMessage::Reply {
                call: 0,
                token: 0,
                result: Ok(Vec::new()),
            }),
        });
        next_frame(&mut b_events).await;
        let backlog = Arc::new(AtomicBool::new(false));
        let direct = ReplyToCaller::new(b, node("b"), Arc::clone(&backlog));
        let call = |caller: NodeId| CallRef {
            caller,
            call: 7,
            token: 9,
        };
        let given_back = |result: Result<(), (CallRef, Vec<u8>)>, answer: &[u8]| {
            let (to, back) = result.expect_err("given back");
            assert_eq!((to, back.as_slice()), (call(node("a")), answer));
        };

        direct
            .try_reply(call(node("a")), b"42".to_vec(), false)
            .expect("sent straight");
        assert_eq!(
            next_frame(&mut a_events).await,
            Message::App(AppMessage::Reply {
                call: 7,
                token: 9,
                result: Ok(b"42".to_vec()),
            })
        );

        // While the messenger holds a backlog, the reply takes its place behind it.
        backlog.store(true, Ordering::Release);
        given_back(
            direct.try_reply(call(node("a")), b"43".to_vec(), false),
            b"43",
        );
        backlog.store(false, Ordering::Release);
        // No connection to the caller: the messenger knows its address and dials.
        let (to, back) = direct
            .try_reply(call(node("c")), b"44".to_vec(), false)
            .expect_err("no connection");
        assert_eq!((to, back), (call(node("c")), b"44".to_vec()));
        // A caller on this node is the messenger's to answer.
        let (to, back) = direct
            .try_reply(call(node("b")), b"45".to_vec(), false)
            .expect_err("a caller here");
        assert_eq!((to, back), (call(node("b")), b"45".to_vec()));
        // As is an answer too long to send.
        let long = vec![0; MAX_PAYLOAD_LEN + 1];
        given_back(
            direct.try_reply(call(node("a")), long.clone(), false),
            &long,
        );
    }

    #[test]
    fn a_peers_failures_map_to_the_errors_they_name() {
        let target: ChildId = "count".parse().expect("id");
        let timeout = Duration::from_secs(1);
        let map = |failure| call_error(target.clone(), timeout, failure);
        // The owner answering "no such name" (it was terminated as the call travelled) is
        // the same error as no node knowing the name, not a generic failure.
        assert_eq!(
            map(CallFailure::Remote(RemoteError::NoSuchName)),
            CallError::NoSuchName(target.clone())
        );
        assert_eq!(
            map(CallFailure::NoSuchName),
            CallError::NoSuchName(target.clone())
        );
        // A message the actor could not decode is the peer's `BadMessage`, never the
        // caller's own encoding failure (`CallError::Encode`, made before anything is sent).
        assert_eq!(
            map(CallFailure::Remote(RemoteError::BadMessage("eof".into()))),
            CallError::BadMessage("eof".into())
        );
        assert_eq!(
            map(CallFailure::Remote(RemoteError::NotAnActor)),
            CallError::NotAnActor
        );
        assert_eq!(
            map(CallFailure::Remote(RemoteError::ReplyTooLarge)),
            CallError::ReplyTooLarge
        );
        assert_eq!(map(CallFailure::Timeout), CallError::Timeout(timeout));
        assert_eq!(
            map(CallFailure::Remote(RemoteError::Overloaded)),
            CallError::Overloaded
        );
    }
}
