//! Mail waiting for room in a full mailbox here.
//!
//! A mailbox fills when its actor is slower than its senders, and all at once when the
//! messages held for a name during its handoff are released into the new instance. Refusing
//! what does not fit there and then would bounce a burst of calls `Overloaded` that a moment
//! later would have fitted. So the mail a full mailbox could not take waits here, oldest
//! first and ahead of any newer mail for that instance (which waits behind it, so a sender's
//! order holds): the runtime offers it again as room frees ([`Messenger::mailbox_room`]),
//! and asks [`Messenger::waiting_for_room`] which mailboxes to look at.
//!
//! Bounds: what was held during a handoff is released this way in full (it was taken
//! within [`MessagingConfig::max_held_bytes`](super::MessagingConfig::max_held_bytes)
//! already); other mail waits only within
//! [`MessagingConfig::max_waiting_for_room_bytes`](super::MessagingConfig::max_waiting_for_room_bytes)
//! per mailbox, so that an actor slower than its senders still tells them so (a call answered
//! `Overloaded`, a cast reported) instead of queueing for minutes.
//!
//! Where the waiting mail goes when its instance stops taking mail:
//! * the instance hands over: the waiting mail goes to the new node first, ahead of what
//!   reached this node during the handoff (so it is not counted as handled here);
//! * the instance ends: the mail is routed again, as mail left in its mailbox is, after
//!   that mail.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Delivery, DropReason, Dropped, Mail, MessagingOutput, Messenger, delivery_bytes};
use crate::node::Node;
use crate::wire::RemoteError;
use crate::{ChildId, InstanceId};

/// How often the runtime is asked to look for room while mail waits for it (it is asked
/// after every input as well: an actor's answer is one).
pub(super) const ROOM_RECHECK: Duration = Duration::from_millis(1);

/// The mail one instance's full mailbox could not take yet, oldest first.
#[derive(Debug)]
pub(super) struct BackedUp {
    pub(super) instance: InstanceId,
    pub(super) mail: VecDeque<Delivery>,
    /// What `mail` counts against the budgets.
    bytes: usize,
}

/// A call or cast as mail, back into the delivery it came as.
fn as_delivery(id: &ChildId, mail: Mail) -> Result<Delivery, Mail> {
    let (reply_to, payload) = match mail {
        Mail::Call { payload, reply } => (Some(reply), payload),
        Mail::Cast { payload } => (None, payload),
        other => return Err(other),
    };
    Ok(Delivery {
        to: id.clone(),
        reply_to,
        payload,
        hops: 0,
        from_previous_owner: false,
    })
}

fn as_mail(delivery: Delivery) -> Mail {
    match delivery.reply_to {
        Some(reply) => Mail::Call {
            payload: delivery.payload,
            reply,
        },
        None => Mail::Cast {
            payload: delivery.payload,
        },
    }
}

impl Messenger {
    /// A call or cast the runtime could not put into the mailbox of instance `instance` of
    /// `id` because the mailbox is full. It waits for room, with the mail for that instance
    /// that the runtime has not taken yet, and anything newer queues behind it; the runtime
    /// offers room with [`mailbox_room`](Self::mailbox_room). What does not fit in
    /// [`MessagingConfig::max_held_bytes`](super::MessagingConfig::max_held_bytes) is
    /// refused: a call is answered [`RemoteError::Overloaded`], a cast is reported
    /// ([`DropReason::Full`]). Other mail must always find room (the runtime keeps a few
    /// places for it).
    pub fn mailbox_full(
        &mut self,
        now: Instant,
        node: &Node,
        id: ChildId,
        instance: InstanceId,
        mail: Mail,
    ) {
        let first = match as_delivery(&id, mail) {
            Ok(delivery) => delivery,
            Err(other) => return self.undeliverable(now, node, &id, other),
        };
        // Mail for the same instance that the runtime has yet to take goes behind this one:
        // put in as room frees, it would overtake it.
        let mut later = Vec::new();
        let outputs = std::mem::take(&mut self.outputs);
        for (output, until) in outputs {
            match output {
                MessagingOutput::Mail {
                    id: to,
                    instance: of,
                    mail: mail @ (Mail::Call { .. } | Mail::Cast { .. }),
                } if to == id && of == instance => later.extend(as_delivery(&to, mail).ok()),
                other => self.outputs.push_back((other, until)),
            }
        }
        if self
            .backed_up
            .get(&id)
            .is_some_and(|b| b.instance != instance)
        {
            // Left by an instance that has ended: routed again first.
            self.orphan_backed_up(&id);
        }
        if !self.backed_up.contains_key(&id) {
            self.room_check_at = now + ROOM_RECHECK;
        }
        for delivery in std::iter::once(first).chain(later) {
            self.wait_for_room(now, node, &id, instance, delivery, true);
        }
    }

    /// Queues `delivery` behind the mail waiting for room in `instance`'s mailbox, or
    /// refuses it when the budget is spent (`limited`: that mailbox's own one too).
    pub(super) fn wait_for_room(
        &mut self,
        now: Instant,
        node: &Node,
        id: &ChildId,
        instance: InstanceId,
        delivery: Delivery,
        limited: bool,
    ) {
        let bytes = delivery_bytes(&delivery);
        let waiting = self
            .backed_up
            .get(id)
            .filter(|b| b.instance == instance)
            .map_or(0, |b| b.bytes);
        let over = limited && waiting + bytes > self.config.max_waiting_for_room_bytes;
        if over || !self.reserve(bytes) {
            self.stats.refused += 1;
            match delivery.reply_to {
                Some(reply) => {
                    // Not handled: a copy routed again is not a second one.
                    self.delivered.remove(&reply);
                    self.bounce(now, node, reply, RemoteError::Overloaded);
                }
                None => self.dropped(Some(id.clone()), Dropped::Cast, DropReason::Full),
            }
            return;
        }
        let backed = self
            .backed_up
            .entry(id.clone())
            .or_insert_with(|| BackedUp {
                instance,
                mail: VecDeque::new(),
                bytes: 0,
            });
        backed.mail.push_back(delivery);
        backed.bytes += bytes;
    }

    /// Whether new mail for `instance` of `id` must queue behind mail waiting for room.
    pub(super) fn is_backed_up(&self, id: &ChildId, instance: InstanceId) -> bool {
        self.backed_up
            .get(id)
            .is_some_and(|b| b.instance == instance)
    }

    /// The mailboxes that mail waits for room in: the runtime offers what room each has
    /// with [`mailbox_room`](Self::mailbox_room), after every input and at
    /// [`poll_timeout`](Self::poll_timeout).
    pub fn waiting_for_room(&self) -> impl Iterator<Item = (&ChildId, InstanceId)> + '_ {
        self.backed_up.iter().map(|(id, b)| (id, b.instance))
    }

    /// The mailbox of instance `instance` of `id` has room for `room` more messages: that
    /// many of those waiting for it come out as [`MessagingOutput::Mail`], oldest first.
    pub fn mailbox_room(&mut self, now: Instant, id: &ChildId, instance: InstanceId, room: usize) {
        let Some(backed) = self
            .backed_up
            .get_mut(id)
            .filter(|b| b.instance == instance)
        else {
            return;
        };
        let out: Vec<Delivery> = {
            let take = room.min(backed.mail.len());
            backed.mail.drain(..take).collect()
        };
        backed.bytes = backed
            .bytes
            .saturating_sub(out.iter().map(delivery_bytes).sum::<usize>());
        if backed.mail.is_empty() {
            self.backed_up.remove(id);
        } else {
            self.room_check_at = now + ROOM_RECHECK;
        }
        for delivery in out {
            self.release(delivery_bytes(&delivery));
            self.emit(MessagingOutput::Mail {
                id: id.clone(),
                instance,
                mail: as_mail(delivery),
            });
        }
    }

    /// The mail waiting for room in `instance`'s mailbox, taken out (to be handed over
    /// with the state): its calls no longer count as delivered here. Its bytes stay held.
    pub(super) fn take_backed_up(&mut self, id: &ChildId, instance: InstanceId) -> Vec<Delivery> {
        if !self.is_backed_up(id, instance) {
            return Vec::new();
        }
        let taken: Vec<Delivery> = self
            .backed_up
            .remove(id)
            .map(|b| b.mail.into())
            .unwrap_or_default();
        for delivery in &taken {
            if let Some(reply) = &delivery.reply_to {
                self.delivered.remove(reply);
            }
        }
        taken
    }

    /// The instance that mail waited for has ended: the mail is routed again at the next
    /// [`handle_timeout`](Self::handle_timeout), after what its mailbox held.
    pub(super) fn orphan_backed_up(&mut self, id: &ChildId) {
        let Some(backed) = self.backed_up.remove(id) else {
            return;
        };
        for delivery in backed.mail {
            if let Some(reply) = &delivery.reply_to {
                self.delivered.remove(reply);
            }
            self.orphans.push_back(delivery);
        }
    }

    /// Routes again the mail of instances that ended while it waited for room.
    pub(super) fn route_orphans(&mut self, now: Instant, node: &Node) {
        while let Some(delivery) = self.orphans.pop_front() {
            self.release(delivery_bytes(&delivery));
            self.deliver(now, node, delivery);
        }
    }
}
