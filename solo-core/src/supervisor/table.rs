//! The replicated child table: every node holds every child's spec, so that no child is lost
//! with the node that started it or the node that ran it.
//!
//! Records merge by a total order, as member updates do: a greater [`Stamp`] (a Lamport
//! counter, then the origin's name) wins, and at equal stamps an ended record beats a live
//! one. A `terminate_child` therefore beats the start it ends, wherever either arrives first,
//! and a start stamped before a termination it had not seen cannot resurrect the child when a
//! partition heals. A new start of an ended id carries a greater stamp and wins.
//!
//! Ended records (tombstones) are kept for [`Config::child_tombstone_ttl`](crate::Config) and
//! then forgotten, so start/terminate churn does not grow memory (Horde #200). The table's
//! digest covers live records only, so two nodes that forgot tombstones at different times do
//! not send them back and forth.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::spec::ChildSpec;
use crate::id::NodeName;
use crate::membership::Since;
use crate::placement::ChildId;

/// How many buckets the digest splits the table into: anti-entropy sends only the children
/// of buckets that differ, so a node missing a few children gets a few, not the whole table.
pub const DIGEST_BUCKETS: usize = 256;

/// The highest stamp counter a node accepts from a peer. Lamport counters rise by one per
/// write cluster-wide, so no real cluster gets near; a record above it is refused, and so
/// this node's own next stamp can never wrap.
pub const MAX_STAMP_COUNTER: u64 = 1 << 62;
/// How far above this node's own clock a peer's stamp counter may be: 2^40 writes (a
/// thousand a second for thirty years) that this node never heard of. A record beyond it is
/// refused as implausible, so a peer's bug cannot spend the counters' room in one message.
pub const MAX_STAMP_JUMP: u64 = 1 << 40;

/// Orders the versions of a child record: a Lamport counter, then the name of the node that
/// wrote it, so that no two writes tie.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// The writer's Lamport clock.
    pub counter: u64,
    /// The writer.
    pub origin: NodeName,
}

/// Whether a child should run, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChildState {
    /// It should run somewhere.
    Live,
    /// Its restart policy said not to restart it after it exited.
    Completed,
    /// It exceeded its restart intensity.
    GaveUp,
    /// `terminate_child` ended it.
    Terminated,
}

/// One child as replicated between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRecord {
    /// What to run.
    pub spec: ChildSpec,
    /// Which write this is.
    pub stamp: Stamp,
    /// Whether it should run.
    pub state: ChildState,
    /// For an ended record: how long ago, in milliseconds, the sender learned that it ended
    /// (0 for a live one, and in a node's own table). A receiver dates the tombstone back by
    /// as much, so a copy one node forgot is not brought back, young again, by another.
    pub ended_ms_ago: u32,
}

impl ChildRecord {
    fn precedence(&self) -> (&Stamp, bool) {
        (&self.stamp, self.state != ChildState::Live)
    }

    /// The bucket of the digest this child falls in.
    pub fn bucket(id: &ChildId) -> usize {
        (xxhash_rust::xxh3::xxh3_64(id.as_str().as_bytes()) % DIGEST_BUCKETS as u64) as usize
    }

    /// This record's contribution to its bucket's digest (XOR-ed in, so order-free).
    fn digest(&self) -> u64 {
        // Hashed for every record merged: a stack buffer, not an allocation (ids and names
        // are length-checked, so they fit).
        const CAP: usize =
            crate::placement::MAX_CHILD_ID_LEN + 1 + 8 + crate::id::MAX_NODE_NAME_LEN;
        let id = self.spec.id.as_str().as_bytes();
        let origin = self.stamp.origin.as_str().as_bytes();
        let len = id.len() + 1 + 8 + origin.len();
        if len > CAP {
            let mut bytes = Vec::with_capacity(len);
            bytes.extend_from_slice(id);
            bytes.push(0xFF);
            bytes.extend_from_slice(&self.stamp.counter.to_le_bytes());
            bytes.extend_from_slice(origin);
            return xxhash_rust::xxh3::xxh3_64(&bytes);
        }
        let mut buf = [0u8; CAP];
        buf[..id.len()].copy_from_slice(id);
        buf[id.len()] = 0xFF;
        buf[id.len() + 1..id.len() + 9].copy_from_slice(&self.stamp.counter.to_le_bytes());
        buf[id.len() + 9..len].copy_from_slice(origin);
        xxhash_rust::xxh3::xxh3_64(&buf[..len])
    }
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) record: ChildRecord,
    /// The owner's name and weight, or `None` if no eligible node exists.
    pub(crate) owner: Option<(NodeName, u64)>,
    /// When the record ended, for forgetting tombstones.
    ended: Option<Since>,
}

impl Slot {
    /// How long ago the record ended, or `None` while it is live.
    fn tombstone_age(&self, now: Instant) -> Option<Duration> {
        self.ended.map(|since| since.age(now))
    }
}

/// What [`ChildTable::merge`] did with a record.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MergeOutcome {
    /// Already known, or older than what is known.
    Stale,
    /// New or newer: the record now stands.
    Applied,
}

#[derive(Debug)]
pub(crate) struct ChildTable {
    slots: BTreeMap<ChildId, Slot>,
    digests: Vec<u64>,
    live: usize,
    /// The Lamport clock: above every counter seen.
    clock: u64,
}

impl Default for ChildTable {
    fn default() -> Self {
        Self {
            slots: BTreeMap::new(),
            digests: vec![0; DIGEST_BUCKETS],
            live: 0,
            clock: 0,
        }
    }
}

impl ChildTable {
    pub(crate) fn get(&self, id: &ChildId) -> Option<&Slot> {
        self.slots.get(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ChildId, &Slot)> {
        self.slots.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&ChildId, &mut Slot)> {
        self.slots.iter_mut()
    }

    /// Live children.
    pub(crate) fn live_len(&self) -> usize {
        self.live
    }

    /// Rows, tombstones included.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn digests(&self) -> &[u64] {
        &self.digests
    }

    /// One hash of the whole table's live records, cheap enough to piggyback on every probe.
    pub(crate) fn summary(&self) -> u64 {
        let mut bytes = [0u8; DIGEST_BUCKETS * 8];
        for (chunk, d) in bytes.chunks_exact_mut(8).zip(&self.digests) {
            chunk.copy_from_slice(&d.to_le_bytes());
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// A stamp greater than any this node has seen.
    pub(crate) fn next_stamp(&mut self, origin: &NodeName) -> Stamp {
        // The clock never exceeds MAX_STAMP_COUNTER (merges refuse what is above), so
        // this cannot overflow.
        self.clock += 1;
        Stamp {
            counter: self.clock,
            origin: origin.clone(),
        }
    }

    /// Merges a record; the caller recomputes the child's owner when it was applied.
    #[cfg(test)]
    pub(crate) fn merge(&mut self, now: Instant, record: ChildRecord) -> MergeOutcome {
        match self.merge_slot(now, record, Duration::from_secs(600)) {
            Some(_) => MergeOutcome::Applied,
            None => MergeOutcome::Stale,
        }
    }

    /// Merges a record and returns its slot when it was applied (`None`: stale), so the
    /// caller can recompute the owner without looking the child up again.
    ///
    /// A record whose counter is above [`MAX_STAMP_COUNTER`], or more than
    /// [`MAX_STAMP_JUMP`] above this node's clock, is refused (`None`) and changes nothing;
    /// so is the tombstone of an unknown child older than `tombstone_ttl` (one this node
    /// forgot, or would forget at once).
    pub(crate) fn merge_slot(
        &mut self,
        now: Instant,
        mut record: ChildRecord,
        tombstone_ttl: Duration,
    ) -> Option<&mut Slot> {
        let counter = record.stamp.counter;
        if counter > MAX_STAMP_COUNTER || counter > self.clock.saturating_add(MAX_STAMP_JUMP) {
            tracing::debug!(child = %record.spec.id, counter, clock = self.clock, "implausible stamp refused");
            return None;
        }
        let ended =
            (record.state != ChildState::Live).then(|| Since::wire(now, record.ended_ms_ago));
        if ended.is_some_and(|since| since.age(now) >= tombstone_ttl)
            && !self.slots.contains_key(&record.spec.id)
        {
            return None;
        }
        // The age travels beside the record, not in the table.
        record.ended_ms_ago = 0;
        self.clock = self.clock.max(counter);
        let bucket = ChildRecord::bucket(&record.spec.id);
        match self.slots.entry(record.spec.id.clone()) {
            Entry::Occupied(entry) => {
                let slot = entry.into_mut();
                if record.precedence() <= slot.record.precedence() {
                    return None;
                }
                if slot.record.state == ChildState::Live {
                    self.digests[bucket] ^= slot.record.digest();
                    self.live -= 1;
                }
                if record.state == ChildState::Live {
                    self.digests[bucket] ^= record.digest();
                    self.live += 1;
                }
                slot.record = record;
                slot.ended = ended;
                Some(slot)
            }
            Entry::Vacant(entry) => {
                if record.state == ChildState::Live {
                    self.digests[bucket] ^= record.digest();
                    self.live += 1;
                }
                Some(entry.insert(Slot {
                    record,
                    owner: None,
                    ended,
                }))
            }
        }
    }

    /// Live records in the given buckets, and tombstones there too (so a termination reaches
    /// a node that still runs the child), each tombstone with its age at `now`.
    pub(crate) fn records_in(&self, now: Instant, buckets: &[usize]) -> Vec<ChildRecord> {
        let mut wanted = vec![false; DIGEST_BUCKETS];
        for &b in buckets {
            if let Some(w) = wanted.get_mut(b) {
                *w = true;
            }
        }
        self.slots
            .iter()
            .filter(|(id, _)| wanted[ChildRecord::bucket(id)])
            .map(|(_, slot)| {
                let mut record = slot.record.clone();
                record.ended_ms_ago = slot.ended.map_or(0, |since| since.wire_age(now));
                record
            })
            .collect()
    }

    /// Forgets tombstones older than `ttl`.
    pub(crate) fn expire_tombstones(&mut self, now: Instant, ttl: Duration) {
        if self.slots.len() == self.live {
            // No tombstone to forget: skip the scan of a table that may be large.
            return;
        }
        self.slots
            .retain(|_, slot| slot.tombstone_age(now).is_none_or(|age| age < ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, counter: u64, origin: &str, state: ChildState) -> ChildRecord {
        ChildRecord {
            ended_ms_ago: 0,
            spec: ChildSpec::new(ChildId::new(id).expect("valid"), "w", vec![]),
            stamp: Stamp {
                counter,
                origin: NodeName::new(origin).expect("valid"),
            },
            state,
        }
    }

    fn now() -> Instant {
        crate::test_epoch()
    }

    #[test]
    fn a_termination_beats_the_start_it_ends_in_any_order() {
        let start = record("x", 5, "a", ChildState::Live);
        let end = record("x", 5, "a", ChildState::Terminated);
        let mut one = ChildTable::default();
        one.merge(now(), start.clone());
        one.merge(now(), end.clone());
        let mut two = ChildTable::default();
        two.merge(now(), end);
        assert_eq!(two.merge(now(), start), MergeOutcome::Stale);
        assert_eq!(one.digests(), two.digests());
        assert_eq!(one.live_len(), 0);
        assert_eq!(two.live_len(), 0);
    }

    #[test]
    fn a_restart_after_termination_carries_a_greater_stamp_and_wins() {
        let mut table = ChildTable::default();
        table.merge(now(), record("x", 5, "a", ChildState::Terminated));
        let origin = NodeName::new("b").expect("valid");
        let stamp = table.next_stamp(&origin);
        assert!(stamp.counter > 5);
        let mut again = record("x", 0, "b", ChildState::Live);
        again.stamp = stamp;
        assert_eq!(table.merge(now(), again), MergeOutcome::Applied);
        assert_eq!(table.live_len(), 1);
    }

    #[test]
    fn digests_are_order_free_and_ignore_tombstones() {
        let records = [
            record("x", 1, "a", ChildState::Live),
            record("y", 2, "b", ChildState::Live),
            record("z", 3, "a", ChildState::Terminated),
        ];
        let mut forward = ChildTable::default();
        let mut backward = ChildTable::default();
        for r in &records {
            forward.merge(now(), r.clone());
        }
        for r in records.iter().rev() {
            backward.merge(now(), r.clone());
        }
        assert_eq!(forward.digests(), backward.digests());
        let mut without_tombstone = ChildTable::default();
        without_tombstone.merge(now(), records[0].clone());
        without_tombstone.merge(now(), records[1].clone());
        assert_eq!(forward.digests(), without_tombstone.digests());
    }

    #[test]
    fn tombstones_are_forgotten_after_their_ttl() {
        let mut table = ChildTable::default();
        let start = now();
        for i in 0..1000 {
            table.merge(
                start,
                record(&format!("c{i}"), i, "a", ChildState::Terminated),
            );
        }
        table.expire_tombstones(start + Duration::from_secs(61), Duration::from_secs(60));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_tombstone_keeps_its_age_when_sent_and_a_forgotten_one_is_not_taken_back() {
        let ttl = Duration::from_secs(600);
        let start = now();
        let mut a = ChildTable::default();
        a.merge_slot(start, record("x", 3, "a", ChildState::Terminated), ttl);
        // Sent 400 s later, it is 400 s old; B dates it back, so both forget it at once.
        let sent = a.records_in(
            start + Duration::from_secs(400),
            &[ChildRecord::bucket(&ChildId::new("x").expect("valid"))],
        );
        assert_eq!(sent[0].ended_ms_ago, 400_000);
        let mut b = ChildTable::default();
        b.merge_slot(start + Duration::from_secs(400), sent[0].clone(), ttl);
        a.expire_tombstones(start + ttl, ttl);
        b.expire_tombstones(start + ttl, ttl);
        assert_eq!((a.len(), b.len()), (0, 0));
        // A copy as old as the TTL is one this node forgot: it is not taken back.
        let mut late = record("x", 3, "a", ChildState::Terminated);
        late.ended_ms_ago = 600_000;
        assert!(a.merge_slot(start + ttl, late.clone(), ttl).is_none());
        assert_eq!(a.len(), 0);
        // But it still ends a child this node holds live.
        a.merge_slot(start + ttl, record("x", 2, "a", ChildState::Live), ttl);
        assert!(a.merge_slot(start + ttl, late, ttl).is_some());
        assert_eq!(a.live_len(), 0);
    }
}
