//! The calls a node has delivered lately, so that a second copy of one is dropped.
//!
//! A second copy reaches a node when a caller routes a call again (its view saw the old
//! owner go) while the first copy was already handled here, or handled by the previous owner
//! and listed in the state it handed over. A call is named by its caller and the caller's
//! call number, so the journal keeps, per child and per caller, *ranges* of call numbers:
//! a caller numbers its calls in order, so a busy caller's thousands of calls to one child
//! make a handful of ranges. Every operation is logarithmic in the ranges of one child and
//! caller, and the list a handoff sends is already built: a handoff never waits on a scan
//! of every call of the last seconds (it did, and the gap grew with a node's load).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::wire::CallRef;
use crate::{ChildId, MAX_NODE_NAME_LEN, NodeId};

/// The most ranges kept per child and caller. Calls in order make one range; only calls a
/// caller sent elsewhere leave holes, so a caller with more ranges than this within the
/// window is odd or hostile, and its oldest range is forgotten (at worst, a copy of one of
/// those calls routed again is handled a second time).
pub(crate) const MAX_RANGES_PER_CALLER: usize = 1_024;
/// What one caller costs in an encoded handoff, at most: its id.
const CALLER_BYTES: usize = MAX_NODE_NAME_LEN + 16;
/// What one range costs in an encoded handoff, at most: two varints.
const RANGE_BYTES: usize = 20;

/// The calls delivered here lately, per child and caller.
#[derive(Debug)]
pub(crate) struct Delivered {
    window: Duration,
    by_child: BTreeMap<ChildId, BTreeMap<NodeId, CallRanges>>,
}

impl Delivered {
    /// A journal that forgets a range of calls `window` after it last grew.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            by_child: BTreeMap::new(),
        }
    }

    /// Whether `call` to `child` was delivered here (or by the owner before).
    pub(crate) fn contains(&self, child: &ChildId, call: &CallRef) -> bool {
        self.by_child
            .get(child)
            .and_then(|callers| callers.get(&call.caller))
            .is_some_and(|ranges| ranges.contains(call.call))
    }

    /// Notes that `call` to `child` was delivered, at `now`.
    pub(crate) fn insert(&mut self, child: &ChildId, call: &CallRef, now: Instant) {
        self.ranges_mut(child, &call.caller)
            .insert(call.call, call.call, now);
    }

    /// Notes the calls a previous owner of `child` handled, as it listed them in its
    /// handoff.
    pub(crate) fn insert_handled(
        &mut self,
        child: &ChildId,
        handled: Vec<(NodeId, Vec<(u64, u64)>)>,
        now: Instant,
    ) {
        for (caller, ranges) in handled {
            let known = self.ranges_mut(child, &caller);
            for (first, last) in ranges {
                if first <= last {
                    known.insert(first, last, now);
                }
            }
        }
    }

    /// Forgets `call`: it was sent back unhandled, so a copy routed again is not a second
    /// one. Rare (an instance that ended with calls in its mailbox), hence a look at every
    /// child rather than a child id carried with every reply.
    pub(crate) fn remove(&mut self, call: &CallRef) {
        for callers in self.by_child.values_mut() {
            if let Some(ranges) = callers.get_mut(&call.caller) {
                ranges.remove(call.call);
            }
        }
    }

    /// The calls to `child` this node knows were handled, per caller: what a handoff lists,
    /// in at most `max_bytes` bytes encoded. If they do not all fit, the ranges that grew
    /// last are kept: the calls a caller may still route again are its latest.
    pub(crate) fn handled(
        &self,
        child: &ChildId,
        max_bytes: usize,
    ) -> Vec<(NodeId, Vec<(u64, u64)>)> {
        let Some(callers) = self.by_child.get(child) else {
            return Vec::new();
        };
        let all = callers.len() * CALLER_BYTES
            + callers.values().map(|r| r.ranges.len()).sum::<usize>() * RANGE_BYTES;
        if all <= max_bytes {
            return callers
                .iter()
                .map(|(caller, ranges)| (caller.clone(), ranges.to_vec()))
                .collect();
        }
        let mut newest: Vec<(Instant, &NodeId, u64, u64)> = callers
            .iter()
            .flat_map(|(caller, ranges)| {
                ranges
                    .ranges
                    .iter()
                    .map(move |(&first, &(last, at))| (at, caller, first, last))
            })
            .collect();
        newest.sort_by(|a, b| b.0.cmp(&a.0).then(b.3.cmp(&a.3)));
        let mut kept: BTreeMap<&NodeId, Vec<(u64, u64)>> = BTreeMap::new();
        let mut bytes = 0;
        for (_, caller, first, last) in newest {
            let cost = RANGE_BYTES
                + if kept.contains_key(caller) {
                    0
                } else {
                    CALLER_BYTES
                };
            if bytes + cost > max_bytes {
                break;
            }
            bytes += cost;
            kept.entry(caller).or_default().push((first, last));
        }
        kept.into_iter()
            .map(|(caller, mut ranges)| {
                ranges.sort_unstable();
                (caller.clone(), ranges)
            })
            .collect()
    }

    /// Forgets the ranges that have not grown within the window.
    pub(crate) fn expire(&mut self, now: Instant) {
        let window = self.window;
        self.by_child.retain(|_, callers| {
            callers.retain(|_, ranges| {
                ranges.expire(now, window);
                !ranges.is_empty()
            });
            !callers.is_empty()
        });
    }

    fn ranges_mut(&mut self, child: &ChildId, caller: &NodeId) -> &mut CallRanges {
        // Look up before inserting: the common case clones no id.
        if !self.by_child.contains_key(child) {
            self.by_child.insert(child.clone(), BTreeMap::new());
        }
        let callers = self
            .by_child
            .get_mut(child)
            .expect("inserted just above when missing");
        if !callers.contains_key(caller) {
            callers.insert(caller.clone(), CallRanges::default());
        }
        callers
            .get_mut(caller)
            .expect("inserted just above when missing")
    }
}

/// A set of call numbers as disjoint, non-adjacent ranges, each with when it last grew.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct CallRanges {
    /// First number of a range → (last number, when it last grew).
    ranges: BTreeMap<u64, (u64, Instant)>,
}

impl CallRanges {
    fn contains(&self, call: u64) -> bool {
        self.ranges
            .range(..=call)
            .next_back()
            .is_some_and(|(_, &(last, _))| call <= last)
    }

    /// Adds `first..=last`, merging it with every range it overlaps or touches.
    fn insert(&mut self, first: u64, last: u64, at: Instant) {
        // The usual case, a caller's next call: the range it extends grows in place.
        if let Some((&before, &(before_last, before_at))) = self.ranges.range(..=first).next_back()
            && before_last.saturating_add(1) >= first
        {
            let end = last.max(before_last);
            let reaches_next = before_last.checked_add(1).is_some_and(|after| {
                self.ranges
                    .range(after..=end.saturating_add(1))
                    .next()
                    .is_some()
            });
            if !reaches_next {
                if let Some(range) = self.ranges.get_mut(&before) {
                    *range = (end, at.max(before_at));
                }
                return;
            }
        }
        let mut start = first;
        let mut end = last;
        let mut grew = at;
        // A range that starts at or before `first` and reaches it (or the number before it).
        if let Some((&before, &(before_last, before_at))) = self.ranges.range(..=first).next_back()
            && before_last.saturating_add(1) >= first
        {
            start = before;
            end = end.max(before_last);
            grew = grew.max(before_at);
            self.ranges.remove(&before);
        }
        // Ranges that start inside `start..=end + 1`.
        while let Some((&next, &(next_last, next_at))) =
            self.ranges.range(start..=end.saturating_add(1)).next()
        {
            end = end.max(next_last);
            grew = grew.max(next_at);
            self.ranges.remove(&next);
        }
        self.ranges.insert(start, (end, grew));
        while self.ranges.len() > MAX_RANGES_PER_CALLER {
            self.ranges.pop_first();
        }
    }

    fn remove(&mut self, call: u64) {
        let Some((&first, &(last, at))) = self.ranges.range(..=call).next_back() else {
            return;
        };
        if call > last {
            return;
        }
        self.ranges.remove(&first);
        if first < call {
            self.ranges.insert(first, (call - 1, at));
        }
        if call < last {
            self.ranges.insert(call + 1, (last, at));
        }
    }

    fn expire(&mut self, now: Instant, window: Duration) {
        self.ranges
            .retain(|_, &mut (_, at)| now.saturating_duration_since(at) < window);
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    fn to_vec(&self) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .map(|(&first, &(last, _))| (first, last))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::{Incarnation, NodeName};
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64),
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Small numbers, so that ranges touch, overlap and split often.
        prop_oneof![
            (0u64..64, 0u64..8).prop_map(|(first, len)| Op::Insert(first, first + len)),
            (0u64..72).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// The ranges hold exactly the numbers a plain set holds, and stay disjoint and
        /// non-adjacent (so that a caller's calls in order make one range).
        #[test]
        fn ranges_hold_what_a_set_holds(ops in prop::collection::vec(op(), 0..64)) {
            let at = crate::test_epoch();
            let mut ranges = CallRanges::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(first, last) => {
                        ranges.insert(first, last, at);
                        model.extend(first..=last);
                    }
                    Op::Remove(call) => {
                        ranges.remove(call);
                        model.remove(&call);
                    }
                }
            }
            for call in 0..80 {
                prop_assert_eq!(ranges.contains(call), model.contains(&call), "call {}", call);
            }
            let spans = ranges.to_vec();
            for pair in spans.windows(2) {
                prop_assert!(pair[0].1 + 1 < pair[1].0, "{:?} overlap or touch", pair);
            }
        }
    }

    fn call(caller: &NodeId, call: u64) -> CallRef {
        CallRef {
            caller: caller.clone(),
            call,
            token: 0,
        }
    }

    fn child(name: &str) -> ChildId {
        ChildId::new(name).expect("a valid child id")
    }

    fn node(name: &str) -> NodeId {
        NodeId::new(NodeName::new(name).expect("a valid name"), Incarnation(1))
    }

    #[test]
    fn calls_in_order_make_one_range_per_child_and_caller() {
        let now = crate::test_epoch();
        let (a, b) = (node("a"), node("b"));
        let (x, y) = (child("x"), child("y"));
        let mut delivered = Delivered::new(Duration::from_secs(2));
        for n in 0..1_000 {
            // `a` alternates between two children; `b` calls only `x`.
            let child = if n % 2 == 0 { &x } else { &y };
            delivered.insert(child, &call(&a, n), now);
            delivered.insert(&x, &call(&b, n), now);
        }
        assert!(delivered.contains(&x, &call(&a, 998)));
        assert!(!delivered.contains(&x, &call(&a, 999)), "999 went to y");
        assert!(delivered.contains(&y, &call(&a, 999)));
        let mut handled = delivered.handled(&x, usize::MAX);
        handled.sort();
        assert_eq!(handled.len(), 2);
        assert_eq!(handled[1], (b.clone(), vec![(0, 999)]));
        assert_eq!(
            handled[0].1.len(),
            500,
            "a's calls to x are every other number"
        );
    }

    /// A caller that leaves a hole between every two calls keeps at most
    /// `MAX_RANGES_PER_CALLER` ranges, its newest; a handoff's list keeps within its byte
    /// budget, newest ranges first.
    #[test]
    fn the_journal_and_the_handoff_list_are_bounded() {
        let start = crate::test_epoch();
        let (a, b) = (node("a"), node("b"));
        let x = child("x");
        let mut delivered = Delivered::new(Duration::from_secs(2));
        let calls = 2 * MAX_RANGES_PER_CALLER as u64 + 10;
        for n in 0..calls {
            let at = start + Duration::from_micros(n);
            delivered.insert(&x, &call(&a, 2 * n), at);
        }
        delivered.insert(&x, &call(&b, 7), start);
        let all = delivered.handled(&x, usize::MAX);
        let a_ranges = &all.iter().find(|(caller, _)| *caller == a).expect("a").1;
        assert_eq!(a_ranges.len(), MAX_RANGES_PER_CALLER);
        assert!(delivered.contains(&x, &call(&a, 2 * (calls - 1))));
        assert!(
            !delivered.contains(&x, &call(&a, 0)),
            "the oldest range went"
        );

        let budget = 4 * 1024;
        let some = delivered.handled(&x, budget);
        let cost: usize = some
            .iter()
            .map(|(_, ranges)| CALLER_BYTES + ranges.len() * RANGE_BYTES)
            .sum();
        assert!(cost <= budget, "{cost} bytes");
        let kept = &some.iter().find(|(caller, _)| *caller == a).expect("a").1;
        assert!(kept.len() > 100, "{} ranges kept", kept.len());
        assert!(
            kept.contains(&(2 * (calls - 1), 2 * (calls - 1))),
            "the newest is kept"
        );
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "in order");
        assert!(
            some.iter().all(|(caller, _)| *caller != b),
            "b's range is the oldest"
        );
    }

    #[test]
    fn handed_over_calls_are_known_and_expire_with_the_window() {
        let start = crate::test_epoch();
        let a = node("a");
        let x = child("x");
        let mut delivered = Delivered::new(Duration::from_secs(2));
        delivered.insert_handled(&x, vec![(a.clone(), vec![(10, 20), (30, 30)])], start);
        assert!(delivered.contains(&x, &call(&a, 15)));
        assert!(delivered.contains(&x, &call(&a, 30)));
        assert!(!delivered.contains(&x, &call(&a, 25)));
        assert!(!delivered.contains(&child("y"), &call(&a, 15)));
        // A range that keeps growing is kept; one left alone is forgotten.
        delivered.insert(&x, &call(&a, 31), start + Duration::from_secs(1));
        delivered.expire(start + Duration::from_millis(2_500));
        assert!(!delivered.contains(&x, &call(&a, 15)));
        assert!(delivered.contains(&x, &call(&a, 30)));
        delivered.remove(&call(&a, 30));
        assert!(!delivered.contains(&x, &call(&a, 30)));
        assert!(delivered.contains(&x, &call(&a, 31)));
        delivered.expire(start + Duration::from_secs(4));
        assert!(delivered.handled(&x, usize::MAX).is_empty());
    }
}
