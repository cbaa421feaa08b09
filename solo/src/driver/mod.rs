//! The driver: one task per node that owns the sans-IO [`Node`], feeds it every input
//! (frames, link changes, timeouts, commands, worker exits) and carries out what it asks.
//!
//! The loop follows the core's drain rule: after each input, drain `poll_transmit` into the
//! transport and `poll_action` into worker tasks and events, then sleep until
//! `poll_timeout` or the next input, whichever comes first. Inputs that queue up under load
//! are taken in batches of [`BATCH`] (still drained one by one), so that the loop's own work
//! is paid once per batch.

use std::collections::HashMap;
use std::time::Duration;

use solo_core::{
    Action, ChildId, ChildInfo, ChildSpec, DeclareError, Exit, MemberEvent, Node, NodeId, Scope,
    StartChildError, StopReason, SupervisorEvent, TerminateError,
};
use solo_transport_tcp::{Cork, EventReceiver, Network, Transport, TransportEvent};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use crate::Event;
use crate::actor::{AnswerReceiver, CallError, HandoffDone};
use crate::telemetry::DriverMetrics;
use crate::worker::{Exited, Instance, Spawner, WorkerStopReason};

mod messaging;

/// Inputs of one kind taken in one turn of the loop when they queue up: the loop's own
/// work (timers, routing what waits) runs once per batch, not once per message.
const BATCH: usize = 64;

/// Misconfigured peers remembered so as to report each once; forgotten all at once beyond.
const MAX_MISCONFIGURED: usize = 64;

pub(crate) use messaging::{Messaging, ReplyToCaller};

/// What the public API asks of the driver.
pub(crate) enum Command {
    DeclareSingleton(ChildSpec, oneshot::Sender<Result<(), DeclareError>>),
    StartChild(ChildSpec, oneshot::Sender<Result<bool, StartChildError>>),
    TerminateChild(ChildId, oneshot::Sender<Result<(), TerminateError>>),
    WhichChildren(Scope, oneshot::Sender<Vec<ChildInfo>>),
    Whereis(ChildId, oneshot::Sender<Option<NodeId>>),
    Members(oneshot::Sender<Vec<NodeId>>),
    Status(oneshot::Sender<crate::ClusterStatus>),
    /// The seeds one source finds now (names resolved, beacons heard).
    SetSeeds {
        source: crate::seeds::SeedSource,
        seeds: Vec<std::net::SocketAddr>,
    },
    MessagingStats(oneshot::Sender<solo_core::messaging::MessagingStats>),
    /// A call, answered by `deadline` (the messenger's timer, not one per call).
    Call {
        target: ChildId,
        payload: Vec<u8>,
        deadline: Instant,
        /// As the caller asked, for its `Timeout` error.
        timeout: Duration,
        reply: oneshot::Sender<Result<Vec<u8>, CallError>>,
    },
    Cast(ChildId, Vec<u8>, oneshot::Sender<Result<(), CallError>>),
    /// Drain (`true`) or not: answers whether the node still took it (it had not left).
    SetDraining(bool, oneshot::Sender<bool>),
    Leave(oneshot::Sender<()>),
    /// End at once, as a crash would ([`Cluster::crash`](crate::Cluster::crash)).
    Crash(oneshot::Sender<()>),
}

/// How the driver's loop ended.
enum Ending {
    /// Asked to leave (or every handle dropped: `None`).
    Leave(Option<oneshot::Sender<()>>),
    /// Asked to crash.
    Crash(oneshot::Sender<()>),
}

pub(crate) struct Driver<N: Network> {
    pub(crate) node: Node,
    pub(crate) transport: Transport<N>,
    pub(crate) frames: EventReceiver,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) exits: mpsc::UnboundedReceiver<Exited>,
    pub(crate) handoffs: mpsc::UnboundedReceiver<HandoffDone>,
    pub(crate) replies: AnswerReceiver,
    pub(crate) messaging: Option<Messaging>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) spawner: Spawner,
    /// How long a leave waits for this node's children to move before it goes anyway.
    pub(crate) drain_timeout: Duration,
    /// Test-only sabotage: ignore stops of children that moved (see
    /// `ClusterBuilder::sabotage_ignore_moves`).
    pub(crate) sabotage_ignore_moves: bool,
    /// Test-only sabotage: never refresh a suspect's silent connection (see
    /// `ClusterBuilder::sabotage_keep_silent_connections`).
    pub(crate) sabotage_keep_silent_connections: bool,
    /// Where this voter keeps its lease tokens, if anywhere.
    pub(crate) data_dir: Option<std::path::PathBuf>,
    /// The misconfigured peers already reported, with what was reported.
    pub(crate) misconfigured: HashMap<std::net::SocketAddr, solo_core::wire::HelloError>,
    /// The seeds given and found, by source.
    pub(crate) seeds: crate::seeds::Seeds,
}

/// The driver's bookkeeping beside the node.
struct State {
    instances: HashMap<ChildId, Instance>,
    pending_starts: HashMap<ChildId, oneshot::Sender<Result<bool, StartChildError>>>,
    messaging: Messaging,
    metrics: DriverMetrics,
}

impl<N: Network> Driver<N> {
    pub(crate) async fn run(mut self) {
        let Some(messaging) = self.messaging.take() else {
            return;
        };
        let mut state = State {
            instances: HashMap::new(),
            pending_starts: HashMap::new(),
            messaging,
            metrics: DriverMetrics::default(),
        };
        // One timer for the life of the loop, moved only when the deadline moves: a timer
        // made and dropped per input costs as much as the input under load.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let ending = loop {
            let turn = Turn::begin();
            self.drain(&mut state);
            self.messaging_tick(&mut state);
            self.drain(&mut state);
            state.messaging.share_backlog();
            state.metrics.tick(&self.node, now());
            let deadline = [
                self.node.poll_timeout().map(Instant::from_std),
                state.messaging.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            if deadline != armed {
                if let Some(at) = deadline {
                    timer.as_mut().reset(at);
                }
                armed = deadline;
            }
            drop(turn);
            tokio::select! {
                biased;
                Some(exited) = self.exits.recv() => {
                    let _turn = Turn::begin();
                    self.worker_exited(&mut state, exited);
                }
                Some(done) = self.handoffs.recv() => {
                    let _turn = Turn::begin();
                    self.handoff_done(&mut state, done);
                }
                Some(reply) = self.replies.recv() => {
                    let _turn = Turn::begin();
                    self.actor_replied(&mut state, reply);
                    for _ in 1..BATCH {
                        let Ok(reply) = self.replies.try_recv() else { break };
                        self.actor_replied(&mut state, reply);
                    }
                }
                event = self.frames.recv() => {
                    let _turn = Turn::begin();
                    let Some(event) = event else { break Ending::Leave(None) };
                    self.transport_event(&mut state, event);
                    for _ in 1..BATCH {
                        let Ok(event) = self.frames.try_recv() else { break };
                        self.drain(&mut state);
                        self.transport_event(&mut state, event);
                    }
                }
                command = self.commands.recv() => {
                    let _turn = Turn::begin();
                    let mut next = command;
                    let mut taken = 0;
                    // Every `Cluster` handle dropped (`None`) leaves as if asked.
                    let ending = loop {
                        match next {
                            None => break Some(Ending::Leave(None)),
                            Some(Command::Leave(reply)) => break Some(Ending::Leave(Some(reply))),
                            Some(Command::Crash(reply)) => break Some(Ending::Crash(reply)),
                            Some(command) => self.command(&mut state, command),
                        }
                        taken += 1;
                        if taken == BATCH {
                            break None;
                        }
                        match self.commands.try_recv() {
                            Ok(command) => next = Some(command),
                            Err(_) => break None,
                        }
                        self.drain(&mut state);
                    };
                    if let Some(ending) = ending {
                        break ending;
                    }
                }
                () = &mut timer, if armed.is_some() => {
                    let _turn = Turn::begin();
                    armed = None;
                    self.node.handle_timeout(now());
                }
            }
        };
        match ending {
            Ending::Leave(reply) => {
                self.leave(&mut state).await;
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            Ending::Crash(reply) => {
                tracing::info!("crashing on request: no handoff, no leave");
                for instance in state.instances.values() {
                    instance.kill();
                }
                self.transport.shutdown();
                let _ = reply.send(());
            }
        }
    }

    fn transport_event(&mut self, state: &mut State, event: TransportEvent) {
        match event {
            TransportEvent::Frame { from, frame } => self.frame(state, &from, &frame),
            TransportEvent::Link { peer, link } => self.node.handle_link(now(), &peer, link),
            TransportEvent::ProcessGone { peer } => self.node.handle_process_gone(now(), &peer),
            TransportEvent::Misconfigured { addr, error } => {
                // Reported again on every retry: said once per address and reason.
                let said = self.misconfigured.get(&addr) == Some(&error);
                if !said {
                    if self.misconfigured.len() >= MAX_MISCONFIGURED {
                        self.misconfigured.clear();
                    }
                    self.misconfigured.insert(addr, error.clone());
                    self.emit(Event::PeerMisconfigured {
                        addr,
                        reason: error.to_string(),
                    });
                }
            }
            TransportEvent::Superseded { by, refused_by } => {
                tracing::warn!(%by, %refused_by, "a peer refused this process: superseded");
                self.node.handle_superseded(now(), &by);
            }
            _ => {}
        }
    }

    /// A frame from `from`: the runtime's own messages are handled here, the rest by the
    /// core.
    fn frame(&mut self, state: &mut State, from: &NodeId, frame: &[u8]) {
        match solo_core::wire::decode_frame(frame) {
            Ok(solo_core::wire::Message::App(message)) => self.app_message(state, from, message),
            Ok(message) => self.node.handle_message(now(), from, message),
            Err(error) => tracing::debug!(%from, %error, "dropped a malformed frame"),
        }
    }

    /// Carries out everything the node asked for.
    fn drain(&mut self, state: &mut State) {
        loop {
            if let Some(transmit) = self.node.poll_transmit() {
                self.transport.send(transmit);
                continue;
            }
            let Some(action) = self.node.poll_action() else {
                return;
            };
            match action {
                Action::Start {
                    id,
                    instance,
                    spec,
                    handoff_from,
                    fence,
                } => {
                    tracing::debug!(child = %id, %instance, from = ?handoff_from, token = ?fence.map(|f| f.token), "starting an instance");
                    state.metrics.started(&id, handoff_from.is_some(), now());
                    let running = self.spawner.spawn(spec, instance, fence);
                    if let Some(mut old) = state.instances.insert(id.clone(), running) {
                        old.stop(WorkerStopReason::Replaced);
                    }
                    self.instance_started(state, id, instance, handoff_from);
                }
                Action::Stop {
                    reason: StopReason::Moved { .. },
                    ..
                } if self.sabotage_ignore_moves => {}
                Action::LeaseExtended {
                    id,
                    instance,
                    valid_until,
                } => {
                    if let Some(running) = state.instances.get(&id)
                        && running.instance == instance
                    {
                        running.extend_lease(valid_until);
                        crate::telemetry::lease("renewed");
                    }
                }
                Action::PersistTokens { up_to } => self.persist_tokens(up_to),
                Action::Stop {
                    id,
                    instance,
                    reason,
                } => {
                    if matches!(reason, StopReason::LeaseLost { .. })
                        && let Some(running) = state.instances.get(&id)
                        && running.instance == instance
                    {
                        running.lose_lease();
                    }
                    let handing_over = match &reason {
                        StopReason::Moved { to: Some(to) } => self.start_handoff(
                            state,
                            &id,
                            instance,
                            to.clone(),
                            WorkerStopReason::from(&reason),
                        ),
                        _ => false,
                    };
                    if !handing_over
                        && let Some(running) = state.instances.get_mut(&id)
                        && running.instance == instance
                    {
                        running.stop(WorkerStopReason::from(&reason));
                    }
                }
                Action::Member(event) => {
                    tracing::debug!(?event, "membership");
                    if let MemberEvent::Up(peer) = &event {
                        // Older processes of its name are refused from now on.
                        self.transport.note_incarnation(peer);
                    }
                    if let MemberEvent::Suspect(peer) = &event
                        && !self.sabotage_keep_silent_connections
                    {
                        // A silent connection may have stalled: the refutation needs a
                        // fresh one before the suspicion runs out.
                        self.transport.refresh(peer);
                    }
                    if let MemberEvent::Down(peer) = &event {
                        // Its connection may be a black hole (a cut cable): dial afresh.
                        self.transport.disconnect(peer);
                    }
                    if let MemberEvent::Down(peer) | MemberEvent::Left(peer) = &event {
                        self.peer_gone(state, peer);
                    }
                    state.metrics.member(&self.node, &event, now());
                    self.emit(Event::Member(event));
                }
                Action::Supervisor(event) => {
                    match &event {
                        SupervisorEvent::ChildStarted { id, replicated } => {
                            if let Some(reply) = state.pending_starts.remove(id) {
                                let _ = reply.send(Ok(*replicated));
                            }
                        }
                        SupervisorEvent::ChildUnconfirmed { id } => {
                            if let Some(reply) = state.pending_starts.remove(id) {
                                let _ = reply.send(Err(StartChildError::Unconfirmed(id.clone())));
                            }
                        }
                        _ => {}
                    }
                    self.emit(Event::Supervisor(event));
                }
                Action::Superseded { by } => {
                    self.emit(Event::Superseded { by });
                }
                other => tracing::debug!(?other, "unhandled action"),
            }
        }
    }

    /// Makes `up_to` durable in the data directory, then tells the core, which answers the
    /// grants that waited for it. A write that fails is not confirmed: the voter then grants
    /// nothing above what is durable (exclusive children wait), and says so in the log.
    fn persist_tokens(&mut self, up_to: u64) {
        let Some(dir) = &self.data_dir else {
            tracing::error!(
                up_to,
                "asked to persist lease tokens without a data directory"
            );
            return;
        };
        // Once per `PERSIST_AHEAD` grants, a few milliseconds: done in line, so that the
        // confirmation can never overtake the write.
        match crate::data_dir::write_tokens(dir, up_to) {
            Ok(()) => self.node.tokens_persisted(now(), up_to),
            Err(error) => {
                tracing::error!(dir = %dir.display(), %error, "cannot persist lease tokens; this voter grants nothing new until it can");
            }
        }
    }

    fn worker_exited(&mut self, state: &mut State, exited: Exited) {
        // An instance that handed its state over reports that before it ends, on another
        // channel: the state must leave before the end is confirmed to the new owner, which
        // starts on that confirmation.
        self.catch_up(state);
        let Exited { id, instance, exit } = exited;
        let current = state
            .instances
            .get(&id)
            .is_some_and(|i| i.instance == instance);
        let stopped_on_purpose = if current {
            self.instance_ended(state, &id, instance);
            state.instances.remove(&id).and_then(|i| i.stop_reason)
        } else {
            Some(WorkerStopReason::Replaced)
        };
        let reason = match (&stopped_on_purpose, &exit) {
            (Some(reason), _) => reason.clone(),
            (None, Exit::Normal) => WorkerStopReason::Exited,
            (None, Exit::Failed(why)) => WorkerStopReason::Failed(why.clone()),
        };
        if matches!(reason, WorkerStopReason::Failed(_)) {
            state.metrics.failed(&id, now());
        }
        self.emit(Event::WorkerStopped {
            id: id.clone(),
            instance,
            reason,
        });
        // Every end is reported, asked for or not: a stopped instance counts as running
        // until then, and a peer's claim on it waits for this report.
        self.node.worker_exited(now(), &id, instance, exit);
    }

    fn command(&mut self, state: &mut State, command: Command) {
        let now = now();
        match command {
            Command::DeclareSingleton(spec, reply) => {
                let _ = reply.send(self.node.declare_singleton(now, spec));
            }
            Command::StartChild(spec, reply) => {
                let id = spec.id.clone();
                match self.node.start_child(now, spec) {
                    Ok(()) => {
                        state.pending_starts.insert(id, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Command::TerminateChild(id, reply) => {
                let _ = reply.send(self.node.terminate_child(now, &id));
            }
            Command::WhichChildren(scope, reply) => {
                let _ = reply.send(self.node.which_children(scope));
            }
            Command::Whereis(id, reply) => {
                let _ = reply.send(self.node.owner_id(&id).cloned());
            }
            Command::Members(reply) => {
                let _ = reply.send(self.node.live_view().into_iter().collect());
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status(state));
            }
            Command::SetSeeds { source, seeds } => {
                let all = self.seeds.found(source, seeds);
                self.node.set_seeds(all);
            }
            Command::MessagingStats(reply) => {
                let _ = reply.send(state.messaging.stats());
            }
            Command::Call {
                target,
                payload,
                deadline,
                timeout,
                reply,
            } => {
                self.start_call(state, target, payload, deadline, timeout, reply);
            }
            Command::Cast(target, payload, reply) => {
                let _ = reply.send(self.start_cast(state, target, payload));
            }
            Command::SetDraining(draining, reply) => {
                let _ = reply.send(self.node.set_draining(now, draining).is_ok());
            }
            Command::Leave(_) | Command::Crash(_) => {}
        }
    }

    /// A graceful leave: become ineligible so that peers take this node's children (the
    /// handover gap is one message delay), wait for them to stop here, announce the leave,
    /// give the transport a moment to send it, then close.
    async fn leave(&mut self, state: &mut State) {
        if self.node.set_draining(now(), true).is_ok() {
            self.drain(state);
            let deadline = Instant::now() + self.drain_timeout;
            while (!state.instances.is_empty() || state.messaging.is_handing_off())
                && Instant::now() < deadline
            {
                let wake = state
                    .messaging
                    .next_deadline()
                    .map_or(deadline, |at| at.min(deadline));
                // Biased, as every select of the runtime: the same inputs are taken in the same
                // order, so a simulated seed replays.
                tokio::select! {
                    biased;
                    Some(exited) = self.exits.recv() => self.worker_exited(state, exited),
                    Some(done) = self.handoffs.recv() => self.handoff_done(state, done),
                    Some(reply) = self.replies.recv() => self.actor_replied(state, reply),
                    Some(TransportEvent::Frame { from, frame }) = self.frames.recv() => {
                        self.frame(state, &from, &frame);
                    }
                    () = tokio::time::sleep_until(wake) => {}
                }
                self.drain(state);
                self.messaging_tick(state);
                self.drain(state);
                state.messaging.share_backlog();
            }
        }
        // Handoffs still under way lose their state, reported, and their new nodes hear so
        // ahead of the leave (a state arriving after it would be refused as not awaited).
        self.abandon_handoffs(state);
        let _ = self.node.leave(now());
        self.drain(state);
        for instance in state.instances.values_mut() {
            instance.stop(WorkerStopReason::Leaving);
        }
        // Let the leave announcement and the last stops go out before the sockets close.
        // Messages still arriving (from a node whose view is a moment behind) are passed on
        // or sent back to their callers meanwhile, never silently dropped.
        let flush = Instant::now() + Duration::from_millis(100);
        while Instant::now() < flush {
            let wake = state
                .messaging
                .next_deadline()
                .map_or(flush, |at| at.min(flush));
            tokio::select! {
                biased;
                Some(exited) = self.exits.recv() => self.worker_exited(state, exited),
                Some(reply) = self.replies.recv() => self.actor_replied(state, reply),
                Some(TransportEvent::Frame { from, frame }) = self.frames.recv() => {
                    if let Ok(solo_core::wire::Message::App(message)) =
                        solo_core::wire::decode_frame(&frame)
                    {
                        self.app_message(state, &from, message);
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            self.drain(state);
            // Calls made here end by their deadline even now: the messenger is their timer.
            self.messaging_tick(state);
            self.drain(state);
            state.messaging.share_backlog();
        }
        self.drain_replies(state);
        self.transport.shutdown();
    }
}

impl<N: Network> Driver<N> {
    /// This node's view of the cluster now.
    fn status(&self, state: &State) -> crate::ClusterStatus {
        use crate::{ChildStatus, MemberStatus, RunningHere};
        let me = self.node.meta();
        let myself = MemberStatus {
            id: self.node.id().clone(),
            addr: self.node.addr(),
            state: solo_core::MemberState::Alive,
            roles: me.roles.clone(),
            draining: self.node.is_draining(),
        };
        let others = self.node.members().map(|m| MemberStatus {
            id: m.id().clone(),
            addr: m.addr(),
            state: m.state(),
            roles: m.meta().roles.clone(),
            draining: m.meta().draining,
        });
        let mut children: Vec<ChildStatus> = self
            .node
            .which_children(Scope::Global)
            .into_iter()
            .map(|info| {
                let running_here = state
                    .instances
                    .get(&info.id)
                    .filter(|_| info.running_here)
                    .map(|running| RunningHere {
                        instance: running.instance,
                        since: running.started_at,
                        token: self.node.fencing_token(&info.id),
                    });
                ChildStatus {
                    mode: self.node.mode_of(&info.id),
                    id: info.id,
                    singleton: info.singleton,
                    assigned_to: info.assigned_to,
                    running_here,
                }
            })
            .collect();
        children.sort_by(|a, b| a.id.cmp(&b.id));
        crate::ClusterStatus {
            node: self.node.id().clone(),
            members: std::iter::once(myself).chain(others).collect(),
            children,
        }
    }

    /// Records `event` in the metrics and as a `tracing` event, then tells the subscribers.
    fn emit(&self, event: Event) {
        crate::telemetry::event(&event);
        crate::telemetry::trace(&event);
        let _ = self.events.send(event);
    }
}

/// The driver's clock: tokio's, so that a simulation (turmoil) controls it. Within a turn of
/// the driver's loop ([`Turn`]) it is read once, on first use, and that instant serves the
/// whole turn: a turn is a batch of inputs handled without a pause, microseconds long, and
/// a clock read per input was a tenth of the driver's time under load.
fn now() -> std::time::Instant {
    TURN_NOW.with(|turn| match turn.get() {
        TurnNow::Outside => Instant::now().into_std(),
        TurnNow::Unread => {
            let now = Instant::now().into_std();
            turn.set(TurnNow::Read(now));
            now
        }
        TurnNow::Read(now) => now,
    })
}

/// What [`now`] answers on this thread.
#[derive(Clone, Copy)]
enum TurnNow {
    /// No turn runs: every read is fresh.
    Outside,
    /// A turn runs and has not read the clock yet.
    Unread,
    Read(std::time::Instant),
}

thread_local! {
    static TURN_NOW: std::cell::Cell<TurnNow> = const { std::cell::Cell::new(TurnNow::Outside) };
}

/// One turn of the driver's loop, from an input to the next wait: [`now`] reads the clock
/// once while it lives, and the frames it sends are corked ([`Cork`]): written when it
/// ends, by this thread, in one write per connection. Never held across an `.await` (the
/// task may move to another thread, or another driver run on this one).
struct Turn {
    _frames: Cork,
}

impl Turn {
    fn begin() -> Self {
        TURN_NOW.with(|turn| turn.set(TurnNow::Unread));
        Turn {
            _frames: Cork::new(),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        TURN_NOW.with(|turn| turn.set(TurnNow::Outside));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within a turn the clock is read once; outside one, and in the next turn, afresh.
    #[test]
    fn a_turn_reads_the_clock_once() {
        let turn = Turn::begin();
        let first = now();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(now(), first);
        drop(turn);
        let outside = now();
        assert!(outside > first);
        let _next = Turn::begin();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() > outside);
    }
}
