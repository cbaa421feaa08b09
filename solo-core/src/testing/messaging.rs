//! Messaging in the simulator: every process runs a [`Messenger`] beside its [`Node`], wired
//! to it as the `solo` runtime wires them, and every instance a node starts is a simulated
//! actor with a bounded mailbox, serving one mail at a time.
//!
//! A simulated actor's state is the number of messages its lineage has handled: it hands
//! that count over when it moves, and starts from the count it is handed. Each message
//! names its sender process and its place in that sender's order for its target
//! ([`MessageKey`]), and an answer echoes its call. The [`MessagingLog`] records every call
//! and its outcomes, every message an actor handled and every state that began or left,
//! for a test to judge: one outcome per call within its timeout, each message handled
//! once, in order, no state lost.
//!
//! Turned on with [`SimConfig::messaging`](super::SimConfig::messaging); the calls come from
//! [`Sim::call`] and [`Sim::cast`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::{Delivery, Payload, Sim};
use crate::messaging::{
    CallFailure, CallId, DropReason, Dropped, Mail, MessagingConfig, MessagingOutput,
    MessagingStats, Messenger,
};
use crate::node::{Node, Transmit};
use crate::wire::AppMessage;
use crate::{ChildId, InstanceId, NodeId, Rng, SendFailure};

/// How the simulated runtime runs messaging.
#[derive(Debug, Clone)]
pub struct SimMessaging {
    /// What every messenger runs with.
    pub config: MessagingConfig,
    /// How much mail an actor's mailbox holds (the runtime's `mailbox_capacity`); the mail
    /// that starts and ends an instance always finds room.
    pub mailbox_capacity: usize,
    /// How many messaging frames may be in flight from one host to another: one more is
    /// refused as by a full transport queue ([`SendFailure::QueueFull`]) and handed back to
    /// the messenger. `None`: no limit.
    pub link_capacity: Option<usize>,
    /// The shortest time an actor takes to serve one mail.
    pub min_service: Duration,
    /// The longest time an actor takes to serve one mail.
    pub max_service: Duration,
    /// Runs messengers that forget the messages they held for an instance handing over
    /// (see [`Messenger::sabotage_forget_held`]): for testing the checkers.
    pub sabotage_forget_held: bool,
}

impl Default for SimMessaging {
    fn default() -> Self {
        Self {
            config: MessagingConfig::default(),
            mailbox_capacity: 64,
            link_capacity: None,
            min_service: Duration::from_micros(20),
            max_service: Duration::from_micros(400),
            sabotage_forget_held: false,
        }
    }
}

/// Names a message sent with [`Sim::call`] or [`Sim::cast`]: the process that sent it, its
/// target, and its place in that sender's order for that target (from 1).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MessageKey {
    /// The host that sent it.
    pub sender: usize,
    /// Its process then.
    pub incarnation: u64,
    /// The child it was sent to.
    pub target: ChildId,
    /// Its place in the sender's order for `target`.
    pub seq: u64,
}

impl MessageKey {
    /// The message's bytes: the key, then `padding` zeros (messages of varied sizes).
    fn encode(&self, padding: usize) -> Vec<u8> {
        let name = self.target.as_str().as_bytes();
        let mut bytes = Vec::with_capacity(25 + name.len() + padding);
        bytes.extend_from_slice(&(self.sender as u64).to_le_bytes());
        bytes.extend_from_slice(&self.incarnation.to_le_bytes());
        bytes.extend_from_slice(&self.seq.to_le_bytes());
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name);
        bytes.resize(bytes.len() + padding, 0);
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let word = |at: usize| {
            bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let len = usize::from(*bytes.get(24)?);
        let name = std::str::from_utf8(bytes.get(25..25 + len)?).ok()?;
        Some(Self {
            sender: usize::try_from(word(0)?).ok()?,
            incarnation: word(8)?,
            seq: word(16)?,
            target: ChildId::new(name).ok()?,
        })
    }
}

/// One call made with [`Sim::call`], and what became of it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The message.
    pub key: MessageKey,
    /// Its bytes (a correct answer echoes them).
    pub payload: Vec<u8>,
    /// Simulated time it was made.
    pub made_at: Duration,
    /// Simulated time its caller's clock reached its deadline.
    pub deadline: Duration,
    /// Every outcome it got, with when: exactly one is right.
    pub outcomes: Vec<(Duration, Result<Vec<u8>, CallFailure>)>,
    /// Whether its caller was frozen while it was open (its outcome could not come on time).
    pub caller_paused: bool,
}

/// A cast made with [`Sim::cast`].
#[derive(Debug, Clone)]
pub struct CastRecord {
    /// The message.
    pub key: MessageKey,
    /// Simulated time it was made.
    pub made_at: Duration,
    /// What the messenger said at once.
    pub accepted: Result<(), CallFailure>,
}

/// A message an actor handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// Simulated time.
    pub at: Duration,
    /// The host whose actor handled it.
    pub host: usize,
    /// The child.
    pub id: ChildId,
    /// Its instance.
    pub instance: InstanceId,
    /// The message.
    pub key: MessageKey,
    /// Whether it was a call (else a cast).
    pub call: bool,
}

/// An actor instance began, with the count it was handed, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Began {
    /// Simulated time.
    pub at: Duration,
    /// The host.
    pub host: usize,
    /// The child.
    pub id: ChildId,
    /// The instance.
    pub instance: InstanceId,
    /// The node its start named as handing over.
    pub handoff_from: Option<NodeId>,
    /// The count handed over to it.
    pub handed: Option<u64>,
}

/// An actor instance handed its count over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedOver {
    /// Simulated time.
    pub at: Duration,
    /// The host.
    pub host: usize,
    /// The child.
    pub id: ChildId,
    /// The instance.
    pub instance: InstanceId,
    /// The count it handed over.
    pub count: u64,
}

/// Something a messenger reported it could not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRecord {
    /// Simulated time.
    pub at: Duration,
    /// The host whose messenger reported it.
    pub host: usize,
    /// The child it was for.
    pub id: Option<ChildId>,
    /// What.
    pub what: Dropped,
    /// Why.
    pub reason: DropReason,
}

/// Everything messaging did in a simulation, for a test to judge.
#[derive(Debug, Default, Clone)]
pub struct MessagingLog {
    /// Every call, by caller host, caller incarnation and call.
    pub calls: BTreeMap<(usize, u64, CallId), CallRecord>,
    /// Every cast.
    pub casts: Vec<CastRecord>,
    /// Every message an actor handled, in order.
    pub handled: Vec<Handled>,
    /// Every instance that began.
    pub began: Vec<Began>,
    /// Every state handed over.
    pub handed_over: Vec<HandedOver>,
    /// Every state an instance got as a conflict and merged into its own (its count is
    /// the one merged).
    pub merged: Vec<HandedOver>,
    /// Everything reported dropped.
    pub dropped: Vec<DropRecord>,
    /// Outcomes for calls nobody made: none is right.
    pub stray_outcomes: u64,
    /// When each process stopped, by host and incarnation.
    pub stopped: BTreeMap<(usize, u64), Duration>,
    /// Transmits the simulated transport refused ([`Messenger::not_sent`]).
    pub refused_transmits: u64,
}

/// The simulation-wide part of messaging: the log, the senders' counters, what is in flight.
#[derive(Debug, Default)]
pub(super) struct Records {
    pub(super) log: MessagingLog,
    /// The last place in each sender's order per target.
    seqs: BTreeMap<(usize, u64, ChildId), u64>,
    /// Messaging frames in flight per directed pair of hosts.
    pub(super) in_flight: BTreeMap<(usize, usize), usize>,
}

impl Records {
    /// `payload` reached host `to`, or was dropped there: a messaging frame no longer takes
    /// room on its link.
    pub(super) fn landed(&mut self, payload: &Payload, to: usize) {
        if let Payload::Frame {
            from_host,
            app: true,
            ..
        } = payload
            && let Some(count) = self.in_flight.get_mut(&(*from_host, to))
        {
            *count = count.saturating_sub(1);
        }
    }
}

/// One simulated actor instance.
#[derive(Debug)]
struct SimActor {
    instance: InstanceId,
    mailbox: VecDeque<Mail>,
    /// Messages its lineage handled: its state.
    count: u64,
    handoff_from: Option<NodeId>,
    /// It serves nothing more (asked to stop, or it handed over); what is left is bounced
    /// when it ends.
    stopping: bool,
    /// A step is due.
    scheduled: bool,
}

/// The messaging half of one simulated process.
#[derive(Debug)]
pub(super) struct Runtime {
    messenger: Messenger,
    actors: BTreeMap<ChildId, SimActor>,
}

impl Runtime {
    /// The actor of instance `instance` of `id`, if that instance is the one here.
    fn actor_mut(&mut self, id: &ChildId, instance: InstanceId) -> Option<&mut SimActor> {
        self.actors.get_mut(id).filter(|a| a.instance == instance)
    }

    pub(super) fn new(settings: &SimMessaging, now: Instant, token_key: u64) -> Self {
        let mut messenger = Messenger::new(settings.config.clone(), now, move |call| {
            Rng::new(token_key ^ call.rotate_left(32)).next_u64()
        });
        if settings.sabotage_forget_held {
            messenger.sabotage_forget_held();
        }
        Self {
            messenger,
            actors: BTreeMap::new(),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.messenger.poll_timeout()
    }
}

fn decode_count(state: Option<&Vec<u8>>) -> Option<u64> {
    state
        .and_then(|bytes| bytes.as_slice().try_into().ok())
        .map(u64::from_le_bytes)
}

impl Sim {
    fn settings(&self) -> Option<&SimMessaging> {
        self.config.messaging.as_ref()
    }

    /// Splits host `i` into its node and its messaging runtime, if both run.
    fn parts(&mut self, i: usize) -> Option<(&Node, &mut Runtime)> {
        let host = self.hosts.get_mut(i)?;
        match (host.node.as_ref(), host.runtime.as_mut()) {
            (Some(node), Some(runtime)) => Some((node, runtime)),
            _ => None,
        }
    }

    /// Everything messaging did so far.
    pub fn messaging_log(&self) -> &MessagingLog {
        &self.messaging.log
    }

    /// Takes the log so far, leaving an empty one (to bound memory in long runs); the
    /// senders' orders go on.
    pub fn take_messaging_log(&mut self) -> MessagingLog {
        std::mem::take(&mut self.messaging.log)
    }

    /// The counters of host `i`'s messenger, if its process runs.
    pub fn messaging_stats(&self, i: usize) -> Option<MessagingStats> {
        self.hosts
            .get(i)?
            .runtime
            .as_ref()
            .map(|r| r.messenger.stats())
    }

    /// Whether host `i`'s messenger is still handing an instance over (the runtime's
    /// leave waits for this, up to its drain timeout), if its process runs.
    pub fn is_handing_off(&self, i: usize) -> Option<bool> {
        self.hosts
            .get(i)?
            .runtime
            .as_ref()
            .map(|r| r.messenger.is_handing_off())
    }

    /// Host `i` is about to leave with handoffs still under way (its drain timeout ran
    /// out): its messenger gives them up, reporting each state as not given, as the
    /// runtime's leave does ([`Messenger::abandon_handoffs`]).
    pub fn abandon_handoffs(&mut self, i: usize) {
        let now = self.local_now(i);
        if let Some((node, runtime)) = self.parts(i) {
            runtime.messenger.abandon_handoffs(now, node);
            self.run_messenger(i);
        }
    }

    /// Host `i`'s messenger's held bytes counted afresh from its tables (see
    /// [`Messenger::recount_held_bytes`]).
    pub fn recount_held_bytes(&self, i: usize) -> Option<usize> {
        self.hosts
            .get(i)?
            .runtime
            .as_ref()
            .map(|r| r.messenger.recount_held_bytes())
    }

    /// The count (messages its lineage handled) of the actor instance of `id` on host `i`.
    pub fn actor_count(&self, i: usize, id: &ChildId) -> Option<u64> {
        let runtime = self.hosts.get(i)?.runtime.as_ref()?;
        runtime.actors.get(id).map(|a| a.count)
    }

    fn next_key(&mut self, i: usize, target: &ChildId) -> MessageKey {
        let incarnation = self.hosts[i].incarnation;
        let seq = self
            .messaging
            .seqs
            .entry((i, incarnation, target.clone()))
            .or_insert(0);
        *seq += 1;
        MessageKey {
            sender: i,
            incarnation,
            target: target.clone(),
            seq: *seq,
        }
    }

    fn can_send(&self, i: usize) -> bool {
        self.hosts
            .get(i)
            .is_some_and(|h| !h.frozen && h.node.is_some() && h.runtime.is_some())
    }

    /// Host `i` calls `target` with a message of `padding` extra bytes, answered within
    /// `timeout`. Returns the message, or `None` if the process does not run, is frozen,
    /// or runs no messaging.
    pub fn call(
        &mut self,
        i: usize,
        target: &ChildId,
        timeout: Duration,
        padding: usize,
    ) -> Option<MessageKey> {
        if !self.can_send(i) {
            return None;
        }
        let key = self.next_key(i, target);
        let payload = key.encode(padding);
        let now = self.local_now(i);
        let deadline = now + timeout;
        let (node, runtime) = self.parts(i)?;
        let call = runtime
            .messenger
            .call(now, node, target.clone(), payload.clone(), deadline);
        let record = CallRecord {
            key: key.clone(),
            payload,
            made_at: self.now,
            deadline: self.sim_time_of(i, deadline),
            outcomes: Vec::new(),
            caller_paused: false,
        };
        let incarnation = self.hosts[i].incarnation;
        if self.config.log_history {
            self.log(format!(
                "n{i} calls {target} seq {} as call {call:?}",
                key.seq
            ));
        }
        self.messaging
            .log
            .calls
            .insert((i, incarnation, call), record);
        self.drain(i);
        Some(key)
    }

    /// Host `i` casts a message of `padding` extra bytes to `target`. Returns the message
    /// and what the messenger said, or `None` as for [`call`](Self::call).
    pub fn cast(
        &mut self,
        i: usize,
        target: &ChildId,
        padding: usize,
    ) -> Option<(MessageKey, Result<(), CallFailure>)> {
        if !self.can_send(i) {
            return None;
        }
        let key = self.next_key(i, target);
        let payload = key.encode(padding);
        let now = self.local_now(i);
        let (node, runtime) = self.parts(i)?;
        let accepted = runtime.messenger.cast(now, node, target.clone(), payload);
        if self.config.log_history {
            self.log(format!("n{i} casts {target} seq {}: {accepted:?}", key.seq));
        }
        self.messaging.log.casts.push(CastRecord {
            key: key.clone(),
            made_at: self.now,
            accepted: accepted.clone(),
        });
        self.drain(i);
        Some((key, accepted))
    }

    /// Host `i`'s process is frozen: its open calls cannot get their outcomes on time.
    pub(super) fn messaging_frozen(&mut self, i: usize) {
        let incarnation = self.hosts[i].incarnation;
        for ((host, inc, _), record) in &mut self.messaging.log.calls {
            if *host == i && *inc == incarnation && record.outcomes.is_empty() {
                record.caller_paused = true;
            }
        }
    }

    /// Host `i`'s process stopped: its messaging state is gone with it.
    pub(super) fn messaging_stopped(&mut self, i: usize) {
        if self.hosts[i].runtime.take().is_some() {
            let incarnation = self.hosts[i].incarnation;
            self.messaging
                .log
                .stopped
                .insert((i, incarnation), self.now);
        }
    }

    /// Carries out what host `i`'s messenger asked for, until it asks nothing more.
    pub(super) fn run_messenger(&mut self, i: usize) {
        loop {
            let Some(output) = self.parts(i).and_then(|(_, r)| r.messenger.poll_output()) else {
                return;
            };
            match output {
                MessagingOutput::Transmit(transmit) => self.send_app(i, transmit),
                MessagingOutput::Mail { id, instance, mail } => {
                    self.put_mail(i, id, instance, mail)
                }
                MessagingOutput::CallDone { call, result } => {
                    let incarnation = self.hosts[i].incarnation;
                    match self.messaging.log.calls.get_mut(&(i, incarnation, call)) {
                        Some(record) => record.outcomes.push((self.now, result)),
                        None => self.messaging.log.stray_outcomes += 1,
                    }
                }
                MessagingOutput::HandoffFinished { id, instance } => {
                    self.log(format!(
                        "handoff of {id} instance {instance} finished on {i}"
                    ));
                    self.end_worker_soon(i, id, instance);
                }
                MessagingOutput::Dropped { id, what, reason } => {
                    self.log(format!("dropped on {i}: {what:?} for {id:?}, {reason:?}"));
                    self.messaging.log.dropped.push(DropRecord {
                        at: self.now,
                        host: i,
                        id,
                        what,
                        reason,
                    });
                }
            }
        }
    }

    /// Offers a messaging frame to the simulated transport, which refuses it when the
    /// link's queue is full or it knows no way to the peer.
    fn send_app(&mut self, i: usize, transmit: Transmit) {
        let target = self.target_of(&transmit);
        let capacity = self.settings().and_then(|s| s.link_capacity);
        let refused = match target {
            None => Some(SendFailure::NoRoute),
            Some(j) => capacity
                .filter(|&cap| self.messaging.in_flight.get(&(i, j)).copied().unwrap_or(0) >= cap)
                .map(|_| SendFailure::QueueFull),
        };
        match refused {
            Some(why) => {
                self.messaging.log.refused_transmits += 1;
                let now = self.local_now(i);
                if let Some((node, runtime)) = self.parts(i) {
                    runtime.messenger.not_sent(now, node, transmit, why);
                }
            }
            None => {
                let Some(from) = self.hosts[i].node.as_ref().map(|n| n.id().clone()) else {
                    return;
                };
                self.route(i, from, transmit);
            }
        }
    }

    fn service_time(&mut self) -> Duration {
        let Some(settings) = self.settings() else {
            return Duration::ZERO;
        };
        let min = settings.min_service.as_nanos() as u64;
        let max = (settings.max_service.as_nanos() as u64).max(min);
        Duration::from_nanos(min + self.rng.below(max - min + 1))
    }

    fn schedule_step(&mut self, i: usize, id: ChildId, instance: InstanceId) {
        let at = self.now + self.service_time();
        let incarnation = self.hosts[i].incarnation;
        self.push(Delivery {
            at,
            order: 0,
            to: i,
            payload: Payload::ActorStep {
                incarnation,
                id,
                instance,
            },
        });
    }

    /// Puts `mail` into the mailbox of instance `instance` of `id` on host `i`, as the
    /// runtime does: an ended instance's mail goes back, a full mailbox refuses messages.
    fn put_mail(&mut self, i: usize, id: ChildId, instance: InstanceId, mail: Mail) {
        let capacity = self.settings().map_or(usize::MAX, |s| s.mailbox_capacity);
        let now = self.local_now(i);
        let Some((node, runtime)) = self.parts(i) else {
            return;
        };
        let Some(actor) = runtime.actor_mut(&id, instance) else {
            runtime.messenger.undeliverable(now, node, &id, mail);
            return;
        };
        let message = matches!(mail, Mail::Call { .. } | Mail::Cast { .. });
        if message && actor.mailbox.len() >= capacity {
            runtime
                .messenger
                .mailbox_full(now, node, id, instance, mail);
            return;
        }
        actor.mailbox.push_back(mail);
        if !actor.scheduled && !actor.stopping {
            actor.scheduled = true;
            self.schedule_step(i, id, instance);
        }
    }

    /// Instance `instance` of `id` on host `i` serves the first mail in its mailbox.
    pub(super) fn actor_step(
        &mut self,
        i: usize,
        incarnation: u64,
        id: ChildId,
        instance: InstanceId,
    ) {
        if self.hosts[i].incarnation != incarnation {
            return;
        }
        let now = self.local_now(i);
        let at = self.now;
        let Some((node, runtime)) = self.parts(i) else {
            return;
        };
        let Some(actor) = runtime
            .actors
            .get_mut(&id)
            // Not `actor_mut`: the messenger is borrowed beside the actor below.
            .filter(|a| a.instance == instance)
        else {
            return;
        };
        actor.scheduled = false;
        if actor.stopping {
            return;
        }
        let Some(mail) = actor.mailbox.pop_front() else {
            return;
        };
        let mut handled = None;
        let mut began = None;
        let mut handed = None;
        let mut merged = None;
        match mail {
            Mail::Begin(state) => {
                let count = decode_count(state.as_ref());
                actor.count = count.unwrap_or(0);
                began = Some(Began {
                    at,
                    host: i,
                    id: id.clone(),
                    instance,
                    handoff_from: actor.handoff_from.clone(),
                    handed: count,
                });
            }
            Mail::Call { payload, reply } => {
                actor.count += 1;
                handled = MessageKey::decode(&payload).map(|key| (key, true));
                runtime.messenger.replied(now, node, reply, Ok(payload));
            }
            Mail::Cast { payload } => {
                actor.count += 1;
                handled = MessageKey::decode(&payload).map(|key| (key, false));
            }
            Mail::BeginHandoff => {
                actor.stopping = true;
                let count = actor.count;
                runtime.messenger.handoff_done(
                    now,
                    node,
                    &id,
                    instance,
                    Some(count.to_le_bytes().to_vec()),
                );
                handed = Some(HandedOver {
                    at,
                    host: i,
                    id: id.clone(),
                    instance,
                    count,
                });
            }
            Mail::Conflict(theirs) => {
                // A duplicate's (or a state sent astray's) handled messages are not ours:
                // a counter merges by adding.
                let count = decode_count(Some(&theirs)).unwrap_or(0);
                actor.count += count;
                merged = Some(HandedOver {
                    at,
                    host: i,
                    id: id.clone(),
                    instance,
                    count,
                });
            }
        }
        let more = !actor.stopping && !actor.mailbox.is_empty();
        if more {
            actor.scheduled = true;
        }
        if self.config.log_history {
            let line = match (&handled, &began, &handed) {
                (Some((key, _)), _, _) => format!(
                    "n{i} {id}/{instance} handles n{}#{} seq {}",
                    key.sender, key.incarnation, key.seq
                ),
                (_, Some(began), _) => {
                    format!("n{i} {id}/{instance} begins with {:?}", began.handed)
                }
                (_, _, Some(handed)) => format!("n{i} {id}/{instance} hands over {}", handed.count),
                _ => format!("n{i} {id}/{instance} takes other mail"),
            };
            self.log(line);
        }
        let log = &mut self.messaging.log;
        if let Some((key, call)) = handled {
            log.handled.push(Handled {
                at,
                host: i,
                id: id.clone(),
                instance,
                key,
                call,
            });
        }
        log.began.extend(began);
        log.handed_over.extend(handed);
        log.merged.extend(merged);
        if more {
            self.schedule_step(i, id, instance);
        }
    }

    /// The node started `id` as `instance` on host `i`: a new actor, told of its start.
    pub(super) fn messaging_started(
        &mut self,
        i: usize,
        id: &ChildId,
        instance: InstanceId,
        handoff_from: Option<&NodeId>,
    ) {
        let now = self.local_now(i);
        let Some((node, runtime)) = self.parts(i) else {
            return;
        };
        runtime.actors.insert(
            id.clone(),
            SimActor {
                instance,
                mailbox: VecDeque::new(),
                count: 0,
                handoff_from: handoff_from.cloned(),
                stopping: false,
                scheduled: false,
            },
        );
        runtime
            .messenger
            .instance_started(now, node, id.clone(), instance, true, handoff_from);
        self.run_messenger(i);
    }

    /// The node asked host `i` to stop instance `instance` of `id`, moving it to `to` if
    /// given. Returns whether a handoff started (the instance ends once its state left).
    pub(super) fn messaging_stop(
        &mut self,
        i: usize,
        id: &ChildId,
        instance: InstanceId,
        to: Option<&NodeId>,
    ) -> bool {
        let now = self.local_now(i);
        let Some((node, runtime)) = self.parts(i) else {
            return false;
        };
        let handing_over = to.is_some_and(|to| {
            runtime
                .messenger
                .start_handoff(now, node, id, instance, to.clone())
        });
        if !handing_over && let Some(actor) = runtime.actor_mut(id, instance) {
            actor.stopping = true;
        }
        self.run_messenger(i);
        handing_over
    }

    /// Instance `instance` of `id` ended on host `i`: the calls and casts left in its
    /// mailbox go back to be routed again, as the runtime returns them.
    pub(super) fn messaging_ended(&mut self, i: usize, id: &ChildId, instance: InstanceId) {
        let now = self.local_now(i);
        let Some((node, runtime)) = self.parts(i) else {
            return;
        };
        if runtime
            .actors
            .get(id)
            .is_some_and(|a| a.instance == instance)
            && let Some(actor) = runtime.actors.remove(id)
        {
            runtime.messenger.instance_ended(id, instance);
            for mail in actor.mailbox {
                runtime.messenger.undeliverable(now, node, id, mail);
            }
        } else {
            runtime.messenger.instance_ended(id, instance);
        }
        self.run_messenger(i);
    }

    /// A messaging frame from `from` reached host `i`.
    pub(super) fn messaging_frame(&mut self, i: usize, from: &NodeId, message: AppMessage) {
        let now = self.local_now(i);
        if let Some((node, runtime)) = self.parts(i) {
            runtime.messenger.handle_message(now, node, from, message);
        }
        self.run_messenger(i);
    }

    /// Host `i`'s node says `peer` is gone.
    pub(super) fn messaging_peer_gone(&mut self, i: usize, peer: &NodeId) {
        let now = self.local_now(i);
        if let Some((node, runtime)) = self.parts(i) {
            runtime.messenger.peer_gone(now, node, peer);
        }
        self.run_messenger(i);
    }

    /// Routes what waits on host `i`, and offers the room its mailboxes have to the mail
    /// waiting for it, as the runtime does after every input.
    pub(super) fn messaging_tick(&mut self, i: usize) {
        let capacity = self.settings().map_or(usize::MAX, |s| s.mailbox_capacity);
        let now = self.local_now(i);
        let Some((node, runtime)) = self.parts(i) else {
            return;
        };
        runtime.messenger.handle_timeout(now, node);
        let waiting: Vec<(ChildId, InstanceId)> = runtime
            .messenger
            .waiting_for_room()
            .map(|(id, instance)| (id.clone(), instance))
            .collect();
        for (id, instance) in waiting {
            let room = runtime
                .actors
                .get(&id)
                .filter(|a| a.instance == instance)
                .map_or(0, |a| capacity.saturating_sub(a.mailbox.len()));
            if room > 0 {
                runtime.messenger.mailbox_room(now, &id, instance, room);
            }
        }
        self.run_messenger(i);
    }
}
