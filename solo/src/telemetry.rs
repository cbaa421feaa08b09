//! What solo records through the `metrics` facade: the list is the crate docs' "Metrics"
//! section (`lib.rs`), which users read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram, counter, gauge, histogram};
use solo_core::{ChildId, MemberEvent, MemberState, Node, NodeName, Scope, SupervisorEvent};

use crate::Event;
use crate::actor::CallError;
use crate::worker::WorkerStopReason;

/// How long a lost owner's children are remembered, waiting for their new instance here.
const LOSS_MEMORY: Duration = Duration::from_secs(60);
/// How often the children's owners are read again from the view between membership changes.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// The most children whose loss or failure is remembered at once.
const MAX_REMEMBERED: usize = 65_536;

/// Records what an event says. Called where each event is made, before it is broadcast:
/// a slow subscriber must not make the counts lag or miss.
pub(crate) fn event(event: &Event) {
    match event {
        Event::Member(_) => {
            // `member_down` in the JSON contract is `event="down"` here.
            let name = event
                .name()
                .and_then(|name| name.strip_prefix("member_"))
                .unwrap_or("other");
            counter!("solo_membership_events_total", "event" => name).increment(1);
        }
        Event::WorkerStopped { reason, .. } => {
            counter!("solo_worker_stops_total", "reason" => stop_label(reason)).increment(1);
        }
        Event::Supervisor(supervisor) => match supervisor {
            SupervisorEvent::GaveUp { .. } => counter!("solo_child_give_ups_total").increment(1),
            SupervisorEvent::SingletonConflict { .. } => {
                counter!("solo_conflicts_total").increment(1);
            }
            SupervisorEvent::LeaseAcquired { .. } => lease("acquired"),
            SupervisorEvent::LeaseLost { .. } => lease("lost"),
            _ => {}
        },
        Event::MessageDropped { what, reason, .. } => {
            counter!(
                "solo_messages_dropped_total",
                "what" => format!("{what:?}").to_lowercase(),
                "reason" => format!("{reason:?}"),
            )
            .increment(1);
        }
        _ => {}
    }
}

/// Tells `tracing` subscribers of `event`: target `solo::event`, the field `event` named as
/// `solo-node --json` names it, and the other fields as that line has them (`member`,
/// `name`, `token`, `reason`, `addr`, `by`, `what`), so that a user's subscriber sees what
/// `solo-node` prints. Problems (a misconfigured peer, a superseded process, a failed
/// handoff, a dropped message, a lost lease) at `WARN`, the rest at `INFO`.
pub(crate) fn trace(event: &Event) {
    const T: &str = "solo::event";
    match event {
        Event::Member(member) => {
            let (kind, id) = (event.name().unwrap_or("member"), member.member());
            tracing::info!(target: T, event = kind, member = %id, "{kind} {id}");
        }
        Event::WorkerStarted { id, token, .. } => {
            tracing::info!(target: T, event = "worker_started", name = %id, token, "worker started: {id}");
        }
        Event::WorkerStopped { id, reason, .. } => {
            tracing::info!(target: T, event = "worker_stopped", name = %id, reason = %reason, "worker stopped: {id} ({reason})");
        }
        Event::Supervisor(SupervisorEvent::LeaseAcquired { id, token }) => {
            tracing::info!(target: T, event = "lease_acquired", name = %id, token, "lease acquired: {id} (token {token})");
        }
        Event::Supervisor(SupervisorEvent::LeaseLost { id, reason, .. }) => {
            let reason = match reason {
                solo_core::LeaseLoss::NotRenewed => "not renewed",
                solo_core::LeaseLoss::Taken => "taken",
                _ => "lost",
            };
            tracing::warn!(target: T, event = "lease_lost", name = %id, reason, "lease lost: {id} ({reason})");
        }
        Event::PeerMisconfigured { addr, reason } => {
            tracing::warn!(target: T, event = "peer_misconfigured", addr = %addr, reason = %reason, "peer {addr} is configured for another cluster: {reason}");
        }
        Event::Superseded { by } => {
            tracing::warn!(target: T, event = "superseded", by = %by, "superseded by {by}");
        }
        Event::HandoffFailed { id, error, .. } => {
            tracing::warn!(target: T, event = "handoff_failed", name = %id, reason = %error, "handoff failed: {id} ({error})");
        }
        Event::MessageDropped { id, what, reason } => {
            let name = id.as_ref().map_or("", ChildId::as_str);
            let what = format!("{what:?}").to_lowercase();
            tracing::warn!(target: T, event = "message_dropped", name, what = %what, reason = ?reason, "{what} dropped: {name} ({reason:?})");
        }
        _ => {}
    }
}

/// A lease event of an exclusive child here.
pub(crate) fn lease(event: &'static str) {
    counter!("solo_lease_events_total", "event" => event).increment(1);
}

/// An actor moving away answered `begin_handoff` (`resume`, `restart`, `ignore`), or its
/// state could not move (`failed`).
pub(crate) fn handoff(outcome: &'static str) {
    counter!("solo_handoffs_total", "outcome" => outcome).increment(1);
}

fn stop_label(reason: &WorkerStopReason) -> &'static str {
    match reason {
        WorkerStopReason::Moved { .. } => "moved",
        WorkerStopReason::NoEligibleNode => "no_eligible_node",
        WorkerStopReason::Terminated => "terminated",
        WorkerStopReason::Leaving => "leaving",
        WorkerStopReason::Superseded => "superseded",
        WorkerStopReason::LeaseLost => "lease_lost",
        WorkerStopReason::Replaced => "replaced",
        WorkerStopReason::Exited => "exited",
        WorkerStopReason::Failed(_) => "failed",
        _ => "other",
    }
}

/// The outcome label of a call's or cast's result.
fn outcome<T>(result: &Result<T, CallError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(CallError::NoSuchName(_)) => "no_such_name",
        Err(CallError::Timeout(_)) => "timeout",
        Err(CallError::NotAnActor) => "not_an_actor",
        Err(CallError::Encode(_)) => "encode",
        Err(CallError::BadMessage(_)) => "bad_message",
        Err(CallError::BadReply(_)) => "bad_reply",
        Err(CallError::Failed(_)) => "failed",
        Err(CallError::Closed) => "closed",
        Err(CallError::Overloaded) => "overloaded",
        Err(CallError::Full) => "full",
        Err(CallError::TooLarge) => "too_large",
        Err(CallError::ReplyTooLarge) => "reply_too_large",
    }
}

/// The handles of the call path, made once at start (a lookup per call would cost more
/// than the rest of the bookkeeping).
#[derive(Debug)]
pub(crate) struct CallMetrics {
    ok: Counter,
    ok_duration: Histogram,
}

impl CallMetrics {
    pub(crate) fn new() -> Self {
        Self {
            ok: counter!("solo_calls_total", "outcome" => "ok"),
            ok_duration: histogram!("solo_call_duration_seconds", "outcome" => "ok"),
        }
    }

    /// A call made from here ended with `result` after `took`.
    pub(crate) fn call<T>(&self, result: &Result<T, CallError>, took: Duration) {
        if result.is_ok() {
            self.ok.increment(1);
            self.ok_duration.record(took.as_secs_f64());
        } else {
            // Failures are rarer: their handles are looked up when they happen.
            let outcome = outcome(result);
            counter!("solo_calls_total", "outcome" => outcome).increment(1);
            histogram!("solo_call_duration_seconds", "outcome" => outcome)
                .record(took.as_secs_f64());
        }
    }

    /// A cast sent from here ended with `result`.
    pub(crate) fn cast(&self, result: &Result<(), CallError>) {
        counter!("solo_casts_total", "outcome" => outcome(result)).increment(1);
    }
}

/// The driver's side: what takes remembering between events (when a member was suspected,
/// which children a lost owner had).
#[derive(Debug, Default)]
pub(crate) struct DriverMetrics {
    suspected_at: HashMap<NodeName, Instant>,
    /// Each child's owner by this node's view, as of the last change of membership.
    assigned: HashMap<ChildId, NodeName>,
    /// Children whose owner went down, since when.
    lost_at: HashMap<ChildId, Instant>,
    /// Children whose instance here failed, for the restart that follows.
    failed: HashMap<ChildId, Instant>,
    /// Instances asked for their state, since when.
    handing_off: HashMap<ChildId, Instant>,
    /// When `assigned` was last read from the view.
    refreshed_at: Option<Instant>,
    /// The node's ownership epoch when `assigned` was last read.
    read_at_epoch: Option<u64>,
}

impl DriverMetrics {
    /// A membership change: the suspicion and failover clocks, and the member gauges.
    pub(crate) fn member(&mut self, node: &Node, event: &MemberEvent, now: Instant) {
        match event {
            MemberEvent::Suspect(peer) if self.suspected_at.len() < MAX_REMEMBERED => {
                self.suspected_at.insert(peer.name.clone(), now);
            }
            MemberEvent::Refuted(peer) | MemberEvent::Left(peer) | MemberEvent::Up(peer) => {
                self.suspected_at.remove(&peer.name);
            }
            MemberEvent::Down(peer) => {
                if let Some(since) = self.suspected_at.remove(&peer.name) {
                    histogram!("solo_suspicion_to_down_seconds")
                        .record(now.saturating_duration_since(since).as_secs_f64());
                }
                self.lost_at
                    .retain(|_, at| now.saturating_duration_since(*at) < LOSS_MEMORY);
                for (child, owner) in &self.assigned {
                    if *owner == peer.name && self.lost_at.len() < MAX_REMEMBERED {
                        self.lost_at.insert(child.clone(), now);
                    }
                }
            }
            _ => {}
        }
        self.refresh(node);
    }

    /// Reads the view again once an owner in it may have changed (a member came without
    /// an event yet, a child was added or claimed), or a second after the last read: a
    /// node killed right after it came to own a child is counted as a failover too.
    pub(crate) fn tick(&mut self, node: &Node, now: Instant) {
        let moved = self.read_at_epoch != Some(node.ownership_epoch());
        if moved
            || self
                .refreshed_at
                .is_none_or(|at| now.saturating_duration_since(at) >= REFRESH_EVERY)
        {
            self.refreshed_at = Some(now);
            self.refresh(node);
        }
    }

    /// Notes each child's owner and the members by state, from `node`'s view now.
    pub(crate) fn refresh(&mut self, node: &Node) {
        self.read_at_epoch = Some(node.ownership_epoch());
        self.assigned = node
            .which_children(Scope::Global)
            .into_iter()
            .filter_map(|child| Some((child.id, child.assigned_to?.name)))
            .collect();
        let mut counts = [0_u32; 4];
        // This node is alive in its own view.
        counts[0] = 1;
        for member in node.members() {
            let at = match member.state() {
                MemberState::Alive => 0,
                MemberState::Suspect => 1,
                MemberState::Down => 2,
                _ => 3,
            };
            counts[at] += 1;
        }
        for (state, count) in ["alive", "suspect", "down", "left"].into_iter().zip(counts) {
            gauge!("solo_members", "state" => state).set(f64::from(count));
        }
    }

    /// An instance of `id` starts here (`handed_over`: on a graceful move).
    pub(crate) fn started(&mut self, id: &ChildId, handed_over: bool, now: Instant) {
        if let Some(lost) = self.lost_at.remove(id)
            && !handed_over
        {
            histogram!("solo_failover_seconds")
                .record(now.saturating_duration_since(lost).as_secs_f64());
        }
        if self.failed.remove(id).is_some() {
            counter!("solo_worker_restarts_total").increment(1);
        }
    }

    /// An instance of `id` ended here by failing: its next start is a restart.
    pub(crate) fn failed(&mut self, id: &ChildId, now: Instant) {
        if self.failed.len() >= MAX_REMEMBERED {
            self.failed.clear();
        }
        self.failed.insert(id.clone(), now);
    }

    /// An instance of `id` here is asked for its state.
    pub(crate) fn handoff_started(&mut self, id: &ChildId, now: Instant) {
        if self.handing_off.len() >= MAX_REMEMBERED {
            self.handing_off.clear();
        }
        self.handing_off.insert(id.clone(), now);
    }

    /// The state of `id` has left (or the handoff ended without one).
    pub(crate) fn handoff_finished(&mut self, id: &ChildId, now: Instant) {
        if let Some(since) = self.handing_off.remove(id) {
            histogram!("solo_handoff_seconds")
                .record(now.saturating_duration_since(since).as_secs_f64());
        }
    }
}
