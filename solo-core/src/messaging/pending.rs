//! The calls this node made that wait for their answer, by call number and by deadline.
//!
//! Every call passes through here twice (made, then answered), so the table is built for
//! that path: O(1) and no allocation per call in the usual case, where calls are numbered
//! one after the other, mostly answered in about the order they were made, and most share
//! one timeout.
//!
//! * By number: the calls from `base` on sit in a window indexed by number (`recent`). A
//!   call still waiting when the window is full moves to a sorted map (`old`), so a call
//!   that waits long (a slow actor, a 60 s timeout) keeps the window short instead of
//!   holding it open for every call made after it.
//! * By deadline: deadlines come in the order the calls were made (`queue`); a call whose
//!   deadline is earlier than the last one queued (a shorter timeout) goes to a sorted set
//!   (`early`). Entries of answered calls leave the queue lazily, from its front, and the
//!   whole queue is swept once they outnumber the waiting calls: its length stays within a
//!   small factor of [`len`](PendingCalls::len).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use crate::{ChildId, NodeId};

/// How many call numbers the window spans before a call that still waits moves to `old`.
const WINDOW: usize = 1024;

/// A call this node made, until it is answered (or its deadline passes).
#[derive(Debug)]
pub(super) struct PendingCall {
    pub(super) target: ChildId,
    /// The secret its answer must carry.
    pub(super) token: u64,
    pub(super) payload: Vec<u8>,
    pub(super) deadline: Instant,
    /// The node it was last sent to, if it is in flight.
    pub(super) sent_to: Option<NodeId>,
}

/// A place in the window: a waiting call, or a number whose call is over (or never
/// waited: it failed at once).
#[derive(Debug)]
struct Slot {
    call: Option<PendingCall>,
    /// Whether its deadline sits in `early` rather than in `queue`.
    early: bool,
}

/// The calls that wait for an answer. See the [module](self).
#[derive(Debug, Default)]
pub(super) struct PendingCalls {
    /// The number of `recent[0]`.
    base: u64,
    recent: VecDeque<Slot>,
    old: BTreeMap<u64, (PendingCall, bool)>,
    /// Waiting calls, in `recent` and `old`.
    len: usize,
    /// `(deadline, call)` in the order made, deadlines never decreasing; entries of calls
    /// that are over are dropped from the front as they come to it.
    queue: VecDeque<(Instant, u64)>,
    /// Calls whose deadline came before the last one in `queue` when they were made.
    early: BTreeSet<(Instant, u64)>,
}

impl PendingCalls {
    /// How many calls wait.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds call number `call`, which must be higher than every number added before.
    pub(super) fn insert(&mut self, call: u64, pending: PendingCall) {
        let deadline = pending.deadline;
        let early = self.queue.back().is_some_and(|&(last, _)| deadline < last);
        if early {
            self.early.insert((deadline, call));
        } else {
            self.queue.push_back((deadline, call));
        }
        let end = self.base + self.recent.len() as u64;
        debug_assert!(call >= end, "call numbers only grow");
        if call.saturating_sub(end) >= WINDOW as u64 || self.recent.is_empty() {
            // Far past the window (or nothing in it): the window starts again at `call`.
            self.retire(self.recent.len());
            self.base = call;
        }
        for _ in self.base + self.recent.len() as u64..call {
            self.recent.push_back(Slot {
                call: None,
                early: false,
            });
        }
        self.recent.push_back(Slot {
            call: Some(pending),
            early,
        });
        self.len += 1;
        self.trim();
        if self.recent.len() > WINDOW {
            self.retire(self.recent.len() - WINDOW);
        }
    }

    /// Moves the first `count` places of the window out of it: their waiting calls to `old`.
    fn retire(&mut self, count: usize) {
        for slot in self.recent.drain(..count) {
            if let Some(call) = slot.call {
                self.old.insert(self.base, (call, slot.early));
            }
            self.base += 1;
        }
    }

    /// Drops the window's leading places whose calls are over.
    fn trim(&mut self) {
        while self.recent.front().is_some_and(|slot| slot.call.is_none()) {
            self.recent.pop_front();
            self.base += 1;
        }
    }

    /// Where call `call` sits: its place in the window, or `None` for a number before it
    /// (in `old`, if it waits at all). A number past the window finds no place there.
    fn place(&self, call: u64) -> Option<usize> {
        let at = call.checked_sub(self.base)?;
        Some(usize::try_from(at).unwrap_or(usize::MAX))
    }

    pub(super) fn get(&self, call: u64) -> Option<&PendingCall> {
        match self.place(call) {
            Some(at) => self.recent.get(at).and_then(|slot| slot.call.as_ref()),
            None => self.old.get(&call).map(|(call, _)| call),
        }
    }

    pub(super) fn get_mut(&mut self, call: u64) -> Option<&mut PendingCall> {
        match self.place(call) {
            Some(at) => self.recent.get_mut(at).and_then(|slot| slot.call.as_mut()),
            None => self.old.get_mut(&call).map(|(call, _)| call),
        }
    }

    pub(super) fn contains(&self, call: u64) -> bool {
        self.get(call).is_some()
    }

    /// Takes call `call` out, if it waits.
    pub(super) fn remove(&mut self, call: u64) -> Option<PendingCall> {
        let (pending, early) = match self.place(call) {
            Some(at) => {
                let slot = self.recent.get_mut(at)?;
                let pending = slot.call.take()?;
                let early = slot.early;
                self.trim();
                (pending, early)
            }
            None => self.old.remove(&call)?,
        };
        self.len -= 1;
        if early {
            self.early.remove(&(pending.deadline, call));
        }
        self.sweep_queue();
        Some(pending)
    }

    /// Drops the queue's entries of calls that are over: from its front, and all of them
    /// once they outnumber the calls that wait.
    fn sweep_queue(&mut self) {
        while let Some(&(_, call)) = self.queue.front() {
            if self.contains(call) {
                break;
            }
            self.queue.pop_front();
        }
        if self.queue.len() > 2 * self.len + 64 {
            let mut queue = std::mem::take(&mut self.queue);
            queue.retain(|&(_, call)| self.contains(call));
            self.queue = queue;
        }
    }

    /// The earliest deadline of a waiting call.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        // The queue's front is always a waiting call (`sweep_queue`).
        let queued = self.queue.front().map(|&(at, _)| at);
        let early = self.early.first().map(|&(at, _)| at);
        queued.into_iter().chain(early).min()
    }

    /// The waiting call with the earliest deadline, if that deadline is `now` or before.
    pub(super) fn first_expired(&self, now: Instant) -> Option<u64> {
        let queued = self.queue.front().copied();
        let early = self.early.first().copied();
        let (deadline, call) = queued.into_iter().chain(early).min()?;
        (deadline <= now).then_some(call)
    }

    /// The waiting calls, in the order they were made.
    #[cfg(any(test, feature = "testing"))]
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &PendingCall)> {
        let old = self.old.iter().map(|(&call, (pending, _))| (call, pending));
        let recent = (self.base..)
            .zip(&self.recent)
            .filter_map(|(call, slot)| slot.call.as_ref().map(|pending| (call, pending)));
        old.chain(recent)
    }

    /// As [`iter`](Self::iter), with each call open to change.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut PendingCall)> {
        let old = self
            .old
            .iter_mut()
            .map(|(&call, (pending, _))| (call, pending));
        let recent = (self.base..)
            .zip(&mut self.recent)
            .filter_map(|(call, slot)| slot.call.as_mut().map(|pending| (call, pending)));
        old.chain(recent)
    }

    /// How many entries the deadline queue holds: for the test of its bound.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.len() + self.early.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn pending(deadline: Instant) -> PendingCall {
        PendingCall {
            target: ChildId::new("c").expect("a valid id"),
            token: 0,
            payload: Vec::new(),
            deadline,
            sent_to: None,
        }
    }

    /// What the table is checked against: the plain sorted maps it replaces.
    #[derive(Default)]
    struct Model {
        calls: BTreeMap<u64, Instant>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A call: numbers skipped before it, and its timeout in ms.
        Call { skip: u8, timeout: u16 },
        /// Answers the `n`th waiting call (modulo their number).
        Answer(u16),
        /// Expires what is due `ms` from the start.
        Expire(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, prop_oneof![Just(1000u16), 1u16..5000])
                .prop_map(|(skip, timeout)| Op::Call { skip, timeout }),
            4 => any::<u16>().prop_map(Op::Answer),
            1 => (0u32..20_000).prop_map(Op::Expire),
        ]
    }

    proptest! {
        /// Any sequence of calls, answers and timeouts leaves the table agreeing with a
        /// sorted map on every question, and its deadline queue bounded.
        #[test]
        fn agrees_with_a_sorted_map(ops in proptest::collection::vec(op(), 1..3000)) {
            let start = crate::test_epoch();
            let mut table = PendingCalls::default();
            let mut model = Model::default();
            let mut next = 0u64;
            let mut clock = 0u64;
            for op in ops {
                match op {
                    Op::Call { skip, timeout } => {
                        next += 1 + u64::from(skip);
                        clock += 1;
                        let deadline = start
                            + Duration::from_millis(clock + u64::from(timeout));
                        table.insert(next, pending(deadline));
                        model.calls.insert(next, deadline);
                    }
                    Op::Answer(n) => {
                        if model.calls.is_empty() {
                            prop_assert!(table.remove(next + 1).is_none());
                            continue;
                        }
                        let at = usize::from(n) % model.calls.len();
                        let call = *model.calls.keys().nth(at).expect("in range");
                        let deadline = model.calls.remove(&call);
                        prop_assert_eq!(table.remove(call).map(|p| p.deadline), deadline);
                        prop_assert!(table.remove(call).is_none());
                    }
                    Op::Expire(ms) => {
                        let now = start + Duration::from_millis(u64::from(ms));
                        while let Some(call) = table.first_expired(now) {
                            let deadline = model.calls.remove(&call);
                            prop_assert!(deadline.is_some_and(|d| d <= now));
                            prop_assert!(table.remove(call).is_some());
                        }
                        prop_assert!(model.calls.values().all(|&d| d > now));
                    }
                }
                prop_assert_eq!(table.len(), model.calls.len());
                prop_assert_eq!(table.next_deadline(), model.calls.values().min().copied());
                let listed: Vec<u64> = table.iter().map(|(call, _)| call).collect();
                let expected: Vec<u64> = model.calls.keys().copied().collect();
                prop_assert_eq!(listed, expected);
                prop_assert!(table.queued() <= 3 * table.len() + 64);
                prop_assert!(table.recent.len() <= WINDOW);
                for (&call, &deadline) in &model.calls {
                    prop_assert_eq!(table.get(call).map(|p| p.deadline), Some(deadline));
                }
            }
        }
    }

    /// A call that waits long moves out of the window instead of holding it open.
    #[test]
    fn a_call_that_waits_long_does_not_hold_the_window_open() {
        let start = crate::test_epoch();
        let mut table = PendingCalls::default();
        table.insert(1, pending(start + Duration::from_secs(60)));
        for call in 2..100_000 {
            table.insert(call, pending(start + Duration::from_secs(1)));
            assert!(table.remove(call).is_some());
        }
        assert_eq!(table.len(), 1);
        assert!(table.recent.len() <= WINDOW);
        assert!(table.queued() <= 64 + 3);
        assert_eq!(
            table.get(1).map(|p| p.deadline),
            Some(start + Duration::from_secs(60))
        );
        assert_eq!(table.next_deadline(), Some(start + Duration::from_secs(60)));
    }
}
