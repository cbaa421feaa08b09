//! Gossip: how what a node knows of the members spreads. Updates piggybacked on probes,
//! broadcasts of this node's own news, and full syncs (with a joining node, with a member
//! back from the dead, with a stranger that might be one).

use std::net::SocketAddr;
use std::time::Instant;

use super::{Action, Node, Status};
use crate::id::NodeId;
use crate::membership::{self, MemberEvent, MemberState};
use crate::supervisor::StopReason;
use crate::wire::{MemberUpdate, Message};

#[derive(Debug)]
pub(super) struct PendingGossip {
    pub(super) update: MemberUpdate,
    pub(super) remaining: usize,
}

impl Node {
    /// Merges what `from` says about members (itself included). Claims about others are
    /// only claims: one whose version could not be real is ignored, and a `Left` that
    /// `from` relays about another member counts as a lesser verdict
    /// ([`MemberTable::believable`](membership::MemberTable::believable)).
    pub(super) fn apply_updates(&mut self, now: Instant, from: &NodeId, updates: &[MemberUpdate]) {
        // Gossip that learned of a suspicion second-hand waits one probe period longer than
        // the accuser, whose own `Down` normally arrives first.
        let suspicion_deadline = now + self.config.suspicion_timeout + self.config.probe_interval;
        for update in updates.iter().take(self.config.max_members) {
            if update.id.name == self.id.name {
                self.about_self(from, update);
                if self.status != Status::Active {
                    return;
                }
                continue;
            }
            let update = &*self.members.believable(from, update);
            if let Some(why) = self.members.implausible(from, update) {
                tracing::debug!(node = %self.id, %from, about = %update.id, version = update.version, ?why, "claim ignored");
                continue;
            }
            // A `Down` verdict from a peer about a member this node holds alive, and heard
            // from lately, is only a claim: after a heal it is often old news from the other
            // side about a node this side talks to. Check it first: the member is suspected at the verdict's
            // version and told so, and either refutes within a probe cycle or is declared
            // down on this node's own evidence.
            let check_by = now + self.config.probe_timeout + self.config.indirect_timeout;
            let recent = 2 * self.config.probe_interval;
            match self.members.doubt(now, update, check_by, recent) {
                Some(Some((suspicion, event))) => {
                    tracing::debug!(node = %self.id, accused = %update.id, "checking a second-hand down");
                    self.placement_dirty = true;
                    self.broadcast(suspicion, false);
                    self.emit(event);
                    continue;
                }
                Some(None) => continue,
                None => {}
            }
            let merged = self.members.merge(
                now,
                update,
                self.config.max_members,
                suspicion_deadline,
                self.config.tombstone_ttl,
            );
            if merged.changed {
                self.placement_dirty = true;
                self.queue_gossip(update.clone());
            }
            for event in merged.events {
                self.emit(event);
            }
        }
    }

    /// Reacts to news about this node: refutes a suspicion or a false `Down`, or learns
    /// that a newer process took over its name.
    pub(super) fn about_self(&mut self, from: &NodeId, update: &MemberUpdate) {
        if update.id.incarnation > self.id.incarnation {
            self.supersede(&update.id);
            return;
        }
        // A `Left` about this process is never its own word (it hears only others): it is
        // refuted like a suspicion.
        let accused = matches!(
            update.state,
            MemberState::Suspect | MemberState::Down | MemberState::Left
        );
        if update.id != self.id || !accused || update.version < self.version {
            return;
        }
        // A claim beyond what anyone could have heard from this node is a forgery that
        // others ignore too; refuting it would only hand the forger a higher version.
        if update.version >= membership::MAX_VERSION
            || update.version > self.version.saturating_add(membership::MAX_VERSION_JUMP)
        {
            tracing::debug!(node = %self.id, %from, version = update.version, "implausible claim about this node ignored");
            return;
        }
        self.version = update.version + 1;
        tracing::debug!(node = %self.id, version = self.version, "refuting");
        // Members that think this node is down are told too: they may be the other side of
        // a healed partition.
        let refutation = self.self_update();
        self.broadcast(refutation, true);
        // Tell this node's operator too: it was accused (frozen, partitioned) and is back.
        self.emit(MemberEvent::Refuted(self.id.clone()));
    }

    /// A newer process has this node's name: it owns the name and everything this one ran,
    /// so this one stops every worker at once, with no handoff (a frozen process's state is
    /// stale by definition), and takes no further part.
    pub(super) fn supersede(&mut self, by: &NodeId) {
        tracing::warn!(node = %self.id, %by, "superseded by a newer process");
        self.status = Status::Superseded;
        self.placement_dirty = true;
        self.stop_all(StopReason::Superseded);
        self.probes.clear();
        self.relays.clear();
        self.actions
            .push_back(Action::Superseded { by: by.clone() });
    }

    pub(super) fn self_update(&self) -> MemberUpdate {
        MemberUpdate {
            id: self.id.clone(),
            addr: self.addr,
            state: match self.status {
                Status::Left => MemberState::Left,
                _ => MemberState::Alive,
            },
            version: self.version,
            meta: self.meta.clone(),
            ended_ms_ago: 0,
        }
    }

    /// Tells every member that this node's metadata changed, under a new version.
    pub(super) fn announce_self(&mut self) {
        self.placement_dirty = true;
        // Bounded by MAX_VERSION: ~2^62 announcements, which no node makes.
        self.version = (self.version + 1).min(membership::MAX_VERSION);
        let me = self.self_update();
        self.broadcast(me, false);
    }

    /// Sends the whole member table to a peer, in [`Message::Sync`]s of at most
    /// [`SYNC_CHUNK_BYTES`] of updates each (so that members at their documented limits
    /// never make a frame over [`wire::MAX_FRAME_LEN`]). Each chunk starts with this node's
    /// own update; only the last asks for the peer's table in return.
    pub(super) fn send_sync(&mut self, to: Option<NodeId>, addr: Option<SocketAddr>, reply: bool) {
        let me = self.self_update();
        let me_bytes = serialized_size(&me);
        let mut chunks: Vec<Vec<MemberUpdate>> = Vec::new();
        let mut chunk = vec![me.clone()];
        let mut bytes = me_bytes;
        let now = self.latest_now;
        for update in self.members.iter().map(|m| m.to_update(now)) {
            let size = serialized_size(&update);
            if chunk.len() > 1 && bytes + size > SYNC_CHUNK_BYTES {
                chunks.push(std::mem::replace(&mut chunk, vec![me.clone()]));
                bytes = me_bytes;
            }
            bytes += size;
            chunk.push(update);
        }
        chunks.push(chunk);
        let last = chunks.len() - 1;
        for (i, members) in chunks.into_iter().enumerate() {
            let reply = reply && i == last;
            self.send(to.clone(), addr, Message::Sync { members, reply });
        }
    }

    /// Sends `update` to every live member (and to remembered `Down` ones too when
    /// `to_tombstones`), and keeps piggybacking it in case a message is lost.
    pub(super) fn broadcast(&mut self, update: MemberUpdate, to_tombstones: bool) {
        let recipients: Vec<(NodeId, SocketAddr)> = self
            .members
            .iter()
            .filter(|m| m.state().is_live() || (to_tombstones && m.state() == MemberState::Down))
            .map(|m| (m.id().clone(), m.addr()))
            .collect();
        for (id, addr) in recipients {
            let message = Message::Gossip {
                updates: vec![update.clone()],
            };
            self.send(Some(id), Some(addr), message);
        }
        self.queue_gossip(update);
    }

    /// Queues `update` to be piggybacked. The queue holds one update per name and at most
    /// [`Config::max_members`] names (a flood of strangers' tombstones cannot grow it): a
    /// new name makes room by dropping the update about a name the member table no longer
    /// holds, or else the one nearest to being spent. Anti-entropy (the periodic full-table
    /// sync) still carries whatever was dropped.
    pub(super) fn queue_gossip(&mut self, update: MemberUpdate) {
        let live = self.members.live().count() + 1;
        let remaining = self.config.retransmit_mult * ceil_log2(live + 1);
        let name = update.id.name.clone();
        if !self.gossip.contains_key(&name) && self.gossip.len() >= self.config.max_members {
            let forgotten = self
                .gossip
                .keys()
                .find(|n| self.members.get(n).is_none())
                .cloned();
            let victim = forgotten.or_else(|| {
                self.gossip
                    .iter()
                    .min_by_key(|(_, p)| p.remaining)
                    .map(|(n, _)| n.clone())
            });
            if let Some(victim) = victim {
                self.gossip.remove(&victim);
            }
        }
        self.gossip
            .insert(name, PendingGossip { update, remaining });
    }

    /// The updates to piggyback on a message to `recipient`: first what this node believes
    /// of the recipient when that is bad news (so it can refute), then pending gossip.
    pub(super) fn piggyback(&mut self, recipient: &NodeId) -> Vec<MemberUpdate> {
        let mut updates = Vec::new();
        if let Some(m) = self.members.get(&recipient.name)
            && (m.state() != MemberState::Alive || m.id() != recipient)
        {
            updates.push(m.to_update(self.latest_now));
        }
        let mut spent = Vec::new();
        let mut bytes: usize = updates.iter().map(serialized_size).sum();
        for (name, pending) in self.gossip.iter_mut() {
            if updates.len() >= self.config.max_piggyback {
                break;
            }
            if name == &recipient.name {
                continue;
            }
            // A probe stays small whatever the members' metadata: the rest waits for the
            // next one (or the next sync).
            let size = serialized_size(&pending.update);
            if !updates.is_empty() && bytes + size > PIGGYBACK_BYTES {
                break;
            }
            bytes += size;
            updates.push(pending.update.clone());
            pending.remaining = pending.remaining.saturating_sub(1);
            if pending.remaining == 0 {
                spent.push(name.clone());
            }
        }
        for name in spent {
            self.gossip.remove(&name);
        }
        updates
    }

    pub(super) fn sync_round(&mut self) {
        let live: Vec<(NodeId, SocketAddr)> = self
            .members
            .live()
            .map(|m| (m.id().clone(), m.addr()))
            .collect();
        // One live partner for anti-entropy, at random.
        if let Some(i) = self.rng.index(live.len()) {
            let (id, addr) = live[i].clone();
            self.send_child_digest(&id);
            self.send_sync(Some(id), Some(addr), true);
        }
        // One `Down` member in case it is alive on the far side of a partition that has
        // healed, in turn, so that each is tried within as many rounds as there are.
        let down: Vec<(NodeId, SocketAddr)> = self
            .members
            .iter()
            .filter(|m| m.state() == MemberState::Down)
            .map(|m| (m.id().clone(), m.addr()))
            .collect();
        if let Some((id, addr)) = next_in_turn(&down, self.last_down_synced, |d| d.1).cloned() {
            self.last_down_synced = Some(addr);
            self.send_sync(Some(id), Some(addr), true);
        }
        // And one seed that is not a live member, in turn too: two halves that formed
        // separate clusters (cut apart before they ever met) find each other through their
        // seeds.
        let strangers: Vec<SocketAddr> = self
            .seeds
            .iter()
            .filter(|seed| !self.members.live().any(|m| m.addr() == **seed))
            .copied()
            .collect();
        if let Some(&addr) = next_in_turn(&strangers, self.last_stranger_synced, |a| *a) {
            self.last_stranger_synced = Some(addr);
            self.send_sync(None, Some(addr), true);
        }
    }

    pub(super) fn join_round(&mut self) {
        for seed in self.seeds.clone() {
            self.send_sync(None, Some(seed), true);
        }
    }

    /// Runs after every input: a node that just found its first live peer announces itself
    /// to all of them (so a join is known cluster-wide in one round trip) and asks one of them
    /// for the child table; then placement catches up with whatever changed.
    pub(super) fn after_input_at(&mut self, now: Instant) {
        if self.status != Status::Active {
            return;
        }
        let has_peers = self.members.live().next().is_some();
        if has_peers && !self.had_peers {
            let me = self.self_update();
            self.broadcast(me, false);
            let peers: Vec<NodeId> = self.members.live().map(|m| m.id().clone()).collect();
            if let Some(i) = self.rng.index(peers.len()) {
                self.send_child_digest(&peers[i]);
            }
        }
        self.had_peers = has_peers;
        if !self.joined && has_peers && self.join_grace_until.is_none() {
            self.join_grace_until = Some(now + self.config.probe_timeout);
        }
        let every_seed_answered = self.seeds.iter().all(|s| self.seeds_heard.contains(s));
        let grace_over = self.join_grace_until.is_some_and(|at| now >= at);
        if !self.joined
            && ((has_peers && every_seed_answered) || grace_over || now >= self.join_deadline)
        {
            tracing::debug!(node = %self.id, peers = has_peers, "joined");
            self.joined = true;
            self.placement_dirty = true;
        }
        self.refresh_placement();
    }
}

/// The most bytes of member updates one [`Message::Sync`] carries: a member at its
/// documented limits (256 singletons of 256-byte names) takes about 70 KB, so a chunk holds
/// several, and a frame stays far below [`wire::MAX_FRAME_LEN`].
const SYNC_CHUNK_BYTES: usize = 256 * 1024;
/// The most bytes of gossip piggybacked on one probe or acknowledgement.
const PIGGYBACK_BYTES: usize = 128 * 1024;

/// The encoded size of `update` (its largest case if it cannot be measured, which a
/// valid update never is).
fn serialized_size(update: &MemberUpdate) -> usize {
    postcard::experimental::serialized_size(update).unwrap_or(SYNC_CHUNK_BYTES)
}

fn ceil_log2(n: usize) -> usize {
    (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize
}

/// The entry of `pool` whose address comes next after `last` (wrapping to the lowest), so
/// that a round-robin over a pool whose members come and go still reaches every member
/// within as many turns as the pool has entries.
fn next_in_turn<T>(
    pool: &[T],
    last: Option<SocketAddr>,
    addr: impl Fn(&T) -> SocketAddr,
) -> Option<&T> {
    let after = pool
        .iter()
        .filter(|entry| last.is_none_or(|last| addr(entry) > last))
        .min_by_key(|entry| addr(entry));
    after.or_else(|| pool.iter().min_by_key(|entry| addr(entry)))
}
