//! Messages the transport could not take yet: backpressure instead of loss.
//!
//! The transport queues a bounded number of frames per peer. When a peer's queue is full
//! (it reads slower than this node writes) or there is no route to it for a moment, the
//! runtime hands the message back ([`Messenger::not_sent`]) instead of dropping it. It is
//! parked here, in a backlog per peer, with everything sent to that peer after it, so the
//! peer still sees each sender's messages in order (and a handoff's state before the
//! messages that follow it). The backlog is offered again after a pause that doubles while
//! the peer stays full, up to [`MAX_RESEND_PAUSE`].
//!
//! Nothing parked is lost in silence. A message that waited
//! [`MessagingConfig::resend_wait`](super::MessagingConfig::resend_wait) (a call of this
//! node: its deadline), that does not fit in
//! [`MessagingConfig::max_held_bytes`](super::MessagingConfig::max_held_bytes), or that can
//! never be sent (larger than a frame) is given up with a typed outcome: this node's call
//! fails, another node's call is answered [`RemoteError::Overloaded`], a cast, a reply or a
//! state is reported as [`MessagingOutput::Dropped`]. A backlog for a peer that goes is
//! emptied at once: calls and casts are routed again, the rest is reported.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::{CallFailure, DropReason, Dropped, MessagingOutput, Messenger, RemoteError};
use crate::node::Node;
use crate::wire::{AppMessage, Message};
use crate::{ChildId, InstanceId, NodeId, SendFailure, Transmit};

/// The first pause before a backlog is offered again.
pub(super) const RESEND_PAUSE: Duration = Duration::from_millis(1);
/// The longest pause between two offers of a backlog.
pub(super) const MAX_RESEND_PAUSE: Duration = Duration::from_millis(64);
/// What a parked entry costs in the byte budget besides its payload, so that a flood of
/// empty messages is bounded too.
const PARKED_OVERHEAD: usize = 64;

/// What waits for one peer, in the order it was sent.
#[derive(Debug)]
pub(super) struct Backlog {
    pub(super) entries: VecDeque<Parked>,
    /// The bytes its entries hold in the budget.
    bytes: usize,
    /// When it is offered again.
    pub(super) retry_at: Instant,
    /// The pause after the next refusal.
    pause: Duration,
}

/// One parked entry.
#[derive(Debug)]
pub(super) enum Parked {
    /// A message for the peer, given up after `until`.
    Message { transmit: Transmit, until: Instant },
    /// The [`MessagingOutput::HandoffFinished`] of a handoff whose state waits in this
    /// backlog: the instance stops only once its state has left.
    Finished { id: ChildId, instance: InstanceId },
}

impl Parked {
    /// Its cost in the byte budget.
    pub(super) fn bytes(&self) -> usize {
        match self {
            Parked::Message { transmit, .. } => PARKED_OVERHEAD + message_bytes(&transmit.message),
            Parked::Finished { .. } => 0,
        }
    }
}

/// The bytes of a message that vary with what its sender put in.
fn message_bytes(message: &Message) -> usize {
    match message {
        Message::App(AppMessage::Deliver(delivery)) => delivery.payload.len(),
        Message::App(AppMessage::Reply { result, .. }) => match result {
            Ok(payload) => payload.len(),
            Err(RemoteError::BadMessage(why) | RemoteError::Failed(why)) => why.len(),
            Err(_) => 0,
        },
        Message::App(AppMessage::Handoff { state, seen, .. }) => {
            let ranges: usize = seen.iter().map(|(_, ranges)| ranges.len()).sum();
            state.as_ref().map_or(0, Vec::len) + seen.len() * 64 + ranges * 16
        }
        _ => 0,
    }
}

fn peer_of(transmit: &Transmit) -> Option<&NodeId> {
    match transmit.message {
        Message::App(_) => transmit.to.as_ref(),
        _ => None,
    }
}

fn handoff_of(transmit: &Transmit) -> Option<&ChildId> {
    match &transmit.message {
        Message::App(AppMessage::Handoff { id, .. }) => Some(id),
        _ => None,
    }
}

impl Messenger {
    /// The transport did not take `transmit`, one of this messenger's
    /// [`MessagingOutput::Transmit`]s, for `why`. It is offered again, with everything this
    /// messenger sends its peer meanwhile, in order, until it goes or is given up after
    /// [`MessagingConfig::resend_wait`](super::MessagingConfig::resend_wait). `transmit`
    /// must be the output polled last; transmits of other
    /// origins are ignored.
    pub fn not_sent(&mut self, now: Instant, node: &Node, transmit: Transmit, why: SendFailure) {
        let until = self.polled_until.take();
        let Some(peer) = peer_of(&transmit).cloned() else {
            return;
        };
        self.stats.unsent += 1;
        if why == SendFailure::TooLarge {
            self.give_up(now, node, transmit, DropReason::TooLarge);
            return;
        }
        // What follows it to the same peer has not reached the transport yet: it waits too,
        // in order, with the end of any handoff whose state waits.
        let mut parked = vec![(transmit, until)];
        let mut finished = Vec::new();
        let mut handoffs: BTreeSet<ChildId> = parked
            .iter()
            .filter_map(|(t, _)| handoff_of(t))
            .cloned()
            .collect();
        let mut rest = VecDeque::with_capacity(self.outputs.len());
        for (output, until) in std::mem::take(&mut self.outputs) {
            match output {
                MessagingOutput::Transmit(next) if peer_of(&next) == Some(&peer) => {
                    handoffs.extend(handoff_of(&next).cloned());
                    parked.push((next, until));
                }
                MessagingOutput::HandoffFinished { id, instance } if handoffs.contains(&id) => {
                    finished.push((parked.len(), id, instance));
                }
                other => rest.push_back((other, until)),
            }
        }
        self.outputs = rest;

        let mut entries = VecDeque::with_capacity(parked.len() + finished.len());
        let mut finished = finished.into_iter().peekable();
        for (at, (transmit, until)) in parked.into_iter().enumerate() {
            while let Some((_, id, instance)) = finished.next_if(|(before, _, _)| *before <= at) {
                entries.push_back(Parked::Finished { id, instance });
            }
            if let Some(entry) = self.parked(now, node, transmit, until) {
                entries.push_back(entry);
            }
        }
        entries.extend(finished.map(|(_, id, instance)| Parked::Finished { id, instance }));

        let backlog = self.backlogs.entry(peer).or_insert_with(|| Backlog {
            entries: VecDeque::new(),
            bytes: 0,
            retry_at: now,
            pause: RESEND_PAUSE,
        });
        if backlog.entries.is_empty() {
            backlog.retry_at = now + backlog.pause;
            backlog.pause = (backlog.pause * 2).min(MAX_RESEND_PAUSE);
        }
        // These were sent before anything already parked for the peer.
        for entry in entries.into_iter().rev() {
            backlog.bytes += entry.bytes();
            backlog.entries.push_front(entry);
        }
        self.settle_finished();
    }

    /// The bytes waiting for room to `peer`.
    pub(super) fn backlog_bytes(&self, peer: &NodeId) -> usize {
        self.backlogs.get(peer).map_or(0, |backlog| backlog.bytes)
    }

    /// Whether messages the transport did not take at first wait to be offered again, to
    /// some peer. What is sent to that peer meanwhile waits behind them, in order: a runtime
    /// that sends some replies without the messenger (straight from the actor) must give
    /// them to the messenger while this holds.
    pub fn has_backlog(&self) -> bool {
        self.backlogs
            .values()
            .any(|backlog| !backlog.entries.is_empty())
    }

    /// Whether what is sent to `peer` now must wait behind its backlog.
    pub(super) fn is_backlogged(&self, peer: &NodeId) -> bool {
        self.backlogs
            .get(peer)
            .is_some_and(|backlog| !backlog.entries.is_empty())
    }

    /// Parks `transmit` at the end of its peer's backlog (which exists).
    pub(super) fn park(&mut self, now: Instant, node: &Node, transmit: Transmit) {
        let Some(peer) = transmit.to.clone() else {
            return;
        };
        if let Some(entry) = self.parked(now, node, transmit, None)
            && let Some(backlog) = self.backlogs.get_mut(&peer)
        {
            backlog.bytes += entry.bytes();
            backlog.entries.push_back(entry);
        }
    }

    /// `transmit` as a parked entry with its bytes reserved, or given up if they do not fit
    /// or it is no longer needed (a call of this node that is over). `until`: when it is
    /// given up, if it was parked before.
    fn parked(
        &mut self,
        now: Instant,
        node: &Node,
        transmit: Transmit,
        until: Option<Instant>,
    ) -> Option<Parked> {
        let until = match own_call(node, &transmit) {
            Some(call) => self.calls.get(call)?.deadline,
            None => until.unwrap_or(now + self.config.resend_wait),
        };
        let entry = Parked::Message { transmit, until };
        if self.reserve(entry.bytes()) {
            return Some(entry);
        }
        self.stats.refused += 1;
        if let Parked::Message { transmit, .. } = entry {
            self.give_up(now, node, transmit, DropReason::Full);
        }
        None
    }

    /// Offers again the backlogs whose pause is over. Part of
    /// [`handle_timeout`](Self::handle_timeout).
    pub(super) fn resend_due(&mut self, now: Instant, node: &Node) {
        let due: Vec<NodeId> = self
            .backlogs
            .iter()
            .filter(|(_, backlog)| backlog.retry_at <= now)
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in due {
            let Some(backlog) = self.backlogs.get_mut(&peer) else {
                continue;
            };
            if backlog.entries.is_empty() {
                // Everything went at the last offer: the peer keeps up again.
                self.backlogs.remove(&peer);
                continue;
            }
            let entries = std::mem::take(&mut backlog.entries);
            backlog.bytes = 0;
            // Kept, empty, for a while: a refusal soon after waits a longer pause.
            backlog.retry_at = now + backlog.pause;
            let mut again = Vec::with_capacity(entries.len());
            for entry in entries {
                self.release(entry.bytes());
                match entry {
                    Parked::Message { transmit, until } => {
                        let live_call = own_call(node, &transmit).is_none_or(|call| {
                            self.calls
                                .get(call)
                                .is_some_and(|pending| pending.sent_to.as_ref() == Some(&peer))
                        });
                        if !live_call {
                            // Over, or routed elsewhere since.
                        } else if until <= now {
                            self.give_up(now, node, transmit, DropReason::Unsent);
                        } else {
                            again.push((MessagingOutput::Transmit(transmit), Some(until)));
                        }
                    }
                    Parked::Finished { id, instance } => {
                        again.push((MessagingOutput::HandoffFinished { id, instance }, None));
                    }
                }
            }
            // Ahead of anything queued since for the peer: they were sent before it.
            for output in again.into_iter().rev() {
                self.outputs.push_front(output);
            }
        }
    }

    /// `peer` is gone: its backlog is emptied. Calls and casts are routed again (a call of
    /// this node by [`peer_gone`](Self::peer_gone), as it was sent there), what only the
    /// peer wanted is reported.
    pub(super) fn abandon_backlog(&mut self, now: Instant, node: &Node, peer: &NodeId) {
        let Some(backlog) = self.backlogs.remove(peer) else {
            return;
        };
        for entry in backlog.entries {
            self.release(entry.bytes());
            let transmit = match entry {
                Parked::Finished { id, instance } => {
                    self.emit(MessagingOutput::HandoffFinished { id, instance });
                    continue;
                }
                Parked::Message { transmit, .. } => transmit,
            };
            let Message::App(message) = transmit.message else {
                continue;
            };
            match message {
                AppMessage::Deliver(delivery) => match delivery.reply_to {
                    Some(reply) if reply.caller == *node.id() => {}
                    Some(reply) => self.bounce(now, node, reply, RemoteError::NotHere),
                    None => {
                        let until = now + self.config.cast_wait;
                        self.route_cast(now, node, delivery.to, delivery.payload, until, false);
                    }
                },
                AppMessage::Reply { .. } => self.dropped(None, Dropped::Reply, DropReason::Unsent),
                AppMessage::Handoff { id, state, .. } => {
                    if state.is_some() {
                        self.dropped(Some(id), Dropped::State, DropReason::Unsent);
                    }
                }
            }
        }
    }

    /// Whether a backlog holds the end of a handoff.
    pub(super) fn backlog_holds_a_handoff(&self) -> bool {
        self.backlogs.values().any(|backlog| {
            backlog
                .entries
                .iter()
                .any(|entry| matches!(entry, Parked::Finished { .. }))
        })
    }

    /// A backlog whose first entries are ends of handoffs (their states went, or were
    /// given up) lets them out at once.
    fn settle_finished(&mut self) {
        let mut ready = Vec::new();
        for backlog in self.backlogs.values_mut() {
            while let Some(Parked::Finished { .. }) = backlog.entries.front() {
                if let Some(Parked::Finished { id, instance }) = backlog.entries.pop_front() {
                    ready.push(MessagingOutput::HandoffFinished { id, instance });
                }
            }
        }
        for output in ready {
            self.emit(output);
        }
    }

    /// `transmit` will not be sent: its sender learns so.
    fn give_up(&mut self, now: Instant, node: &Node, transmit: Transmit, reason: DropReason) {
        let Message::App(message) = transmit.message else {
            return;
        };
        tracing::debug!(to = ?transmit.to, ?reason, "a message could not be sent; given up");
        match message {
            AppMessage::Deliver(delivery) => match delivery.reply_to {
                Some(reply) if reply.caller == *node.id() => {
                    let failure = match reason {
                        DropReason::TooLarge => CallFailure::TooLarge,
                        DropReason::Full => CallFailure::Overloaded,
                        _ => CallFailure::Timeout,
                    };
                    self.finish_call(reply.call, Err(failure));
                }
                Some(reply) => self.bounce(now, node, reply, RemoteError::Overloaded),
                None => self.dropped(Some(delivery.to), Dropped::Cast, reason),
            },
            AppMessage::Reply { .. } => self.dropped(None, Dropped::Reply, reason),
            AppMessage::Handoff { id, state, .. } => {
                if state.is_some() {
                    self.dropped(Some(id), Dropped::State, reason);
                }
            }
        }
    }
}

/// The number of this node's own call that `transmit` carries, if it is one.
fn own_call(node: &Node, transmit: &Transmit) -> Option<u64> {
    match &transmit.message {
        Message::App(AppMessage::Deliver(delivery)) => delivery
            .reply_to
            .as_ref()
            .filter(|reply| reply.caller == *node.id())
            .map(|reply| reply.call),
        _ => None,
    }
}
