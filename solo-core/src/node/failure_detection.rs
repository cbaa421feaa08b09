//! Failure detection: probing the members this node watches (directly, then through
//! others), suspecting the silent, declaring the dead. SWIM, with Lifeguard's refinements.

use std::time::Instant;

use super::Node;
use crate::id::{NodeId, NodeName};
use crate::membership::{MemberState, Suspicion};
use crate::wire::Message;

/// How many indirect probes a node runs for others at once; more requests are dropped
/// (the requester then asks someone else, or suspects, which the target can refute).
pub(super) const MAX_RELAYS: usize = 256;

#[derive(Debug)]
pub(super) struct Probe {
    pub(super) target: NodeId,
    pub(super) indirect: bool,
    pub(super) deadline: Instant,
}

#[derive(Debug)]
pub(super) struct Relay {
    pub(super) requester: NodeId,
    pub(super) requester_seq: u32,
    pub(super) target: NodeId,
    pub(super) deadline: Instant,
}

impl Node {
    /// The members this node watches: the next [`Config::monitors`] live members after it
    /// on a ring ordered by a hash of their names. Every node is thus watched by the same
    /// number of others, and the hash spreads watchers across racks that share a name prefix.
    pub(super) fn ring_targets(&self) -> Vec<NodeId> {
        let mut ring: Vec<(u64, &NodeId)> = self
            .members
            .live()
            .map(|m| (ring_position(&m.id().name), m.id()))
            .collect();
        let me = (ring_position(&self.id.name), &self.id);
        ring.push(me);
        ring.sort();
        let Some(start) = ring.iter().position(|e| *e == me) else {
            return Vec::new();
        };
        ring.iter()
            .cycle()
            .skip(start + 1)
            .take(self.config.monitors.min(ring.len() - 1))
            .map(|(_, id)| (*id).clone())
            .collect()
    }

    pub(super) fn probe_round(&mut self, now: Instant) {
        for target in self.ring_targets() {
            let alive = self
                .members
                .current(&target)
                .is_some_and(|m| m.state() == MemberState::Alive);
            let in_flight = self.probes.values().any(|p| p.target == target);
            if !alive || in_flight {
                continue;
            }
            let seq = self.next_seq();
            let updates = self.piggyback(&target);
            self.probes.insert(
                seq,
                Probe {
                    target: target.clone(),
                    indirect: false,
                    deadline: now + self.config.probe_timeout,
                },
            );
            self.send_to(
                &target,
                Message::Ping {
                    seq,
                    target: target.clone(),
                    updates,
                    children: self.children.summary(),
                },
            );
        }
    }

    pub(super) fn expire_probes(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .probes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in due {
            let Some(probe) = self.probes.remove(&seq) else {
                continue;
            };
            // A deadline overshot by a whole probe period means this node was not running
            // (frozen, starved of CPU): the silence is its own, so it accuses nobody
            // (Lifeguard's lesson on local health).
            if now.saturating_duration_since(probe.deadline) > self.config.probe_interval {
                continue;
            }
            let Some(target_addr) = self.members.current(&probe.target).map(|m| m.addr()) else {
                continue;
            };
            if probe.indirect {
                let deadline = now + self.config.suspicion_timeout;
                self.suspect(now, &probe.target, deadline);
                continue;
            }
            for helper in self.pick_live(self.config.indirect_probes, &probe.target) {
                let request = Message::PingReq {
                    seq,
                    target: probe.target.clone(),
                    target_addr,
                };
                self.send_to(&helper, request);
            }
            self.probes.insert(
                seq,
                Probe {
                    indirect: true,
                    deadline: now + self.config.indirect_timeout,
                    ..probe
                },
            );
        }
    }

    pub(super) fn expire_suspicions(&mut self, now: Instant) {
        let due: Vec<(NodeId, bool)> = self
            .members
            .iter()
            .filter_map(|m| {
                let s = m.suspicion?;
                (s.deadline <= now).then(|| (m.id().clone(), s.first_hand))
            })
            .collect();
        for (id, first_hand) in due {
            self.declare_down(now, &id, first_hand);
        }
    }

    /// Suspects `target` on this node's own evidence and tells every live member, the
    /// suspect included so it can refute at once (Lifeguard's "buddy system").
    pub(super) fn suspect(&mut self, now: Instant, target: &NodeId, deadline: Instant) {
        let suspicion = Suspicion {
            deadline,
            first_hand: true,
        };
        if let Some((update, event)) =
            self.members
                .accuse(now, target, MemberState::Suspect, Some(suspicion))
        {
            tracing::debug!(node = %self.id, suspect = %target, "suspecting");
            self.broadcast(update, false);
            self.emit(event);
        }
    }

    /// Declares `target` down. A node that raised the suspicion itself tells every member
    /// at once; others only gossip it, so a failure costs `O(n)` messages, not `O(n²)`.
    pub(super) fn declare_down(&mut self, now: Instant, target: &NodeId, first_hand: bool) {
        let Some((update, event)) = self.members.accuse(now, target, MemberState::Down, None)
        else {
            return;
        };
        tracing::debug!(node = %self.id, down = %target, first_hand, "declaring down");
        if first_hand {
            self.broadcast(update, false);
        } else {
            self.queue_gossip(update);
        }
        self.emit(event);
    }
}

fn ring_position(name: &NodeName) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_str().as_bytes())
}
