//! The member table: what one node believes of every other, and the merge rule that makes
//! gossip converge whatever order it arrives in.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::id::{NodeId, NodeName};
use crate::placement::ChildId;
use crate::wire::MemberUpdate;

/// The most roles one node may have.
pub const MAX_ROLES: usize = 16;
/// The longest role, in bytes.
pub const MAX_ROLE_LEN: usize = 64;
/// The most singletons one node may declare.
pub const MAX_SINGLETONS: usize = 256;
/// The highest member version a node accepts. A claim that a member is not alive is
/// accepted only below it, so that the member can always refute it with a higher version
/// (refutation is `version + 1`, and never saturates). A member raises its version once per
/// refutation or change of metadata: a real node never gets near.
pub const MAX_VERSION: u64 = 1 << 62;
/// How far above the version a node knows for a member a claim made by *another* member
/// may be. Versions rise one refutation or metadata change at a time, so a larger jump is
/// not news but a forgery (or news so old that the member itself will say better): it is
/// ignored. The bound also makes a member that forges claims over and over need more
/// refutations than it could ever send before a victim's version reached [`MAX_VERSION`].
pub const MAX_VERSION_JUMP: u64 = 1024;

/// What a node tells others about itself beyond being alive; it changes only with the node's
/// own version, so every copy of one version is the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct NodeMeta {
    /// The node's roles (sorted), which placement constraints match against.
    pub roles: Vec<String>,
    /// A draining node hosts nothing: its children move to others.
    pub draining: bool,
    /// The singletons it declared, with each spec's fingerprint.
    pub singletons: Vec<(ChildId, u64)>,
}

impl NodeMeta {
    /// Whether the node has `role` (or no role is asked for).
    pub fn has_role(&self, role: Option<&str>) -> bool {
        role.is_none_or(|r| self.roles.iter().any(|mine| mine == r))
    }

    /// Whether the metadata keeps to the documented limits ([`MAX_ROLES`] roles of at most
    /// [`MAX_ROLE_LEN`] bytes, [`MAX_SINGLETONS`] singletons). A member's update that does
    /// not is ignored on receipt: no builder makes one.
    pub fn within_limits(&self) -> bool {
        self.roles.len() <= MAX_ROLES
            && self.roles.iter().all(|r| r.len() <= MAX_ROLE_LEN)
            && self.singletons.len() <= MAX_SINGLETONS
    }

    /// The fingerprint of the node's declaration of `singleton`, if it declared it.
    pub fn singleton(&self, singleton: &ChildId) -> Option<u64> {
        self.singletons
            .iter()
            .find(|(name, _)| name == singleton)
            .map(|(_, fp)| *fp)
    }
}

/// What a node believes of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe and its indirect probes; it has `suspicion_timeout` to refute.
    Suspect,
    /// Declared failed (silent past its suspicion, or its connection closed). It may still
    /// refute with a higher version if it was wrongly accused.
    Down,
    /// Announced a graceful leave. Final for this incarnation.
    Left,
}

impl MemberState {
    /// Whether the member counts as part of the cluster (`Alive` or `Suspect`).
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }

    fn rank(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Down => 2,
            MemberState::Left => 3,
        }
    }
}

/// A change in membership, as seen by one node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberEvent {
    /// A member joined, or came back after a false `Down`.
    Up(NodeId),
    /// A member missed its probes and is suspected.
    Suspect(NodeId),
    /// A suspected member proved it is alive. A node also reports it about itself when it
    /// refutes an accusation (it was frozen or cut off, and is back).
    Refuted(NodeId),
    /// A member was declared failed, or was replaced by a newer incarnation of its name.
    Down(NodeId),
    /// A member left gracefully.
    Left(NodeId),
}

impl MemberEvent {
    /// The member it is about.
    pub fn member(&self) -> &NodeId {
        match self {
            MemberEvent::Up(id)
            | MemberEvent::Suspect(id)
            | MemberEvent::Refuted(id)
            | MemberEvent::Down(id)
            | MemberEvent::Left(id) => id,
        }
    }
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    id: NodeId,
    addr: SocketAddr,
    state: MemberState,
    version: u64,
    meta: NodeMeta,
    /// When the row last changed state (for a tombstone: how long ago it ended).
    changed: Since,
    pub(crate) suspicion: Option<Suspicion>,
    /// When this node last had a message from the member itself: first-hand evidence.
    pub(crate) heard_at: Option<Instant>,
}

/// A running suspicion timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Suspicion {
    pub(crate) deadline: Instant,
    /// Whether this node raised the suspicion itself (and so broadcasts the `Down`).
    pub(crate) first_hand: bool,
}

impl Member {
    /// The member's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }
    /// Where the member accepts connections.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// What this node believes of it.
    pub fn state(&self) -> MemberState {
        self.state
    }
    /// The member's refutation counter.
    pub fn version(&self) -> u64 {
        self.version
    }
    /// What the member says about itself.
    pub fn meta(&self) -> &NodeMeta {
        &self.meta
    }

    /// The row as it travels at `now`: a tombstone says how old it is.
    pub(crate) fn to_update(&self, now: Instant) -> MemberUpdate {
        let ended_ms_ago = if self.state.is_live() {
            0
        } else {
            self.changed.wire_age(now)
        };
        MemberUpdate {
            id: self.id.clone(),
            addr: self.addr,
            state: self.state,
            version: self.version,
            meta: self.meta.clone(),
            ended_ms_ago,
        }
    }
}

/// The order in which updates about one incarnation supersede each other: `Left` is final,
/// then the member's own version, then severity. It is a total order, so merging by "keep
/// the greater" is commutative, associative and idempotent: gossip converges.
fn precedence(state: MemberState, version: u64) -> (bool, u64, u8) {
    (state == MemberState::Left, version, state.rank())
}

/// Why a node ignored a claim about a member ([`MemberTable::implausible`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Implausible {
    /// Above [`MAX_VERSION`] (or, for a claim that the member is not alive, at it).
    VersionTooHigh,
    /// Metadata beyond its documented limits ([`NodeMeta::within_limits`]).
    MetaTooLarge,
    /// A claim by another member more than [`MAX_VERSION_JUMP`] above the version known.
    VersionJump,
}

/// What [`MemberTable::merge`] did.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    /// The update was news and should be gossiped on.
    pub(crate) changed: bool,
    /// What users should hear of it, oldest first.
    pub(crate) events: Vec<MemberEvent>,
}

/// Every member this node knows except itself, keyed by name: a name has one current
/// incarnation, and a newer one retires the old.
#[derive(Debug, Default)]
pub(crate) struct MemberTable {
    by_name: BTreeMap<NodeName, Member>,
}

impl MemberTable {
    pub(crate) fn get(&self, name: &NodeName) -> Option<&Member> {
        self.by_name.get(name)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Member> {
        self.by_name.values()
    }

    pub(crate) fn live(&self) -> impl Iterator<Item = &Member> {
        self.iter().filter(|m| m.state.is_live())
    }

    /// What a claim by `from` about `update`'s member is believed as: only a member itself
    /// may say that it left, so a `Left` relayed by another member is believed as a lesser
    /// verdict at the same version. About a member this node holds live, it counts as a
    /// suspicion, which a member that runs refutes within a round trip (one that really left
    /// does not, and is declared down when the suspicion runs out). About a member this node
    /// does not hold live (a newcomer learning its seed's tombstones, say) it counts as a
    /// `Down`: that gives a liar no more than leaving the member out of its gossip would,
    /// and spares a newcomer from counting a departed node as live and waiting out a
    /// suspicion for its answers.
    pub(crate) fn believable<'a>(
        &self,
        from: &NodeId,
        update: &'a MemberUpdate,
    ) -> std::borrow::Cow<'a, MemberUpdate> {
        if update.state != MemberState::Left || update.id == *from {
            return std::borrow::Cow::Borrowed(update);
        }
        let held_live = self
            .current(&update.id)
            .is_some_and(|member| member.state.is_live());
        let mut believed = update.clone();
        believed.state = if held_live {
            MemberState::Suspect
        } else {
            MemberState::Down
        };
        std::borrow::Cow::Owned(believed)
    }

    /// Why `update`, received from `from`, is not believed, if it is not; a `Left` that
    /// another member relays is believed only as far as a suspicion (see
    /// [`believable`](Self::believable)).
    pub(crate) fn implausible(&self, from: &NodeId, update: &MemberUpdate) -> Option<Implausible> {
        if update.version > MAX_VERSION
            || (update.state != MemberState::Alive && update.version >= MAX_VERSION)
        {
            return Some(Implausible::VersionTooHigh);
        }
        if !update.meta.within_limits() {
            return Some(Implausible::MetaTooLarge);
        }
        if update.id == *from {
            // What a member says of itself is first-hand.
            return None;
        }
        let known = self
            .by_name
            .get(&update.id.name)
            .filter(|m| m.id == update.id)
            .map(|m| m.version);
        match known {
            Some(known) if update.version > known.saturating_add(MAX_VERSION_JUMP) => {
                Some(Implausible::VersionJump)
            }
            // A stranger's tombstone: remembered only if its version could be real news.
            None if update.state != MemberState::Alive && update.version > MAX_VERSION_JUMP => {
                Some(Implausible::VersionJump)
            }
            _ => None,
        }
    }

    /// The member with exactly this id (name and incarnation), if it is the current one.
    pub(crate) fn current(&self, id: &NodeId) -> Option<&Member> {
        self.by_name.get(&id.name).filter(|m| m.id == *id)
    }

    /// Applies what this node itself decided about a member it knows (a suspicion, a `Down`).
    /// Returns the update to gossip, or `None` if the member is not current or not live.
    pub(crate) fn accuse(
        &mut self,
        now: Instant,
        id: &NodeId,
        state: MemberState,
        suspicion: Option<Suspicion>,
    ) -> Option<(MemberUpdate, MemberEvent)> {
        let member = self.by_name.get_mut(&id.name).filter(|m| m.id == *id)?;
        if !member.state.is_live() || member.state.rank() >= state.rank() {
            return None;
        }
        member.state = state;
        member.changed = Since::now(now);
        member.suspicion = suspicion;
        let event = match state {
            MemberState::Suspect => MemberEvent::Suspect(id.clone()),
            _ => MemberEvent::Down(id.clone()),
        };
        Some((member.to_update(now), event))
    }

    /// Turns a second-hand `Down` verdict about a member this node holds `Alive` into a
    /// first-hand suspicion at the verdict's version, to be checked before it is believed
    /// (see `Node::apply_updates`): returns the suspicion to announce. `Some(None)`: a check
    /// of this node's own is already under way, and the verdict changes nothing. `None`,
    /// changing nothing: the verdict is to be merged as usual (it is about another process,
    /// would not win, or this node has no recent news of the member).
    pub(crate) fn doubt(
        &mut self,
        now: Instant,
        verdict: &MemberUpdate,
        deadline: Instant,
        recent: Duration,
    ) -> Option<Option<(MemberUpdate, MemberEvent)>> {
        let member = self
            .by_name
            .get_mut(&verdict.id.name)
            .filter(|m| m.id == verdict.id)?;
        if verdict.state != MemberState::Down || verdict.version < member.version {
            return None;
        }
        // Without recent first-hand news of it, this node has nothing to set against the
        // verdict (and a killed node's failover must not wait for a check).
        let heard_lately = member
            .heard_at
            .is_some_and(|t| now.saturating_duration_since(t) <= recent);
        // Already checking on this node's own account: its own deadline decides.
        if member.state == MemberState::Suspect && member.suspicion.is_some_and(|s| s.first_hand) {
            return Some(None);
        }
        // Alive, or suspected only on others' word: this node's own recent news of it
        // stands against the verdict.
        if !member.state.is_live() || !heard_lately {
            return None;
        }
        member.state = MemberState::Suspect;
        member.version = verdict.version;
        member.changed = Since::now(now);
        member.suspicion = Some(Suspicion {
            deadline,
            first_hand: true,
        });
        Some(Some((
            member.to_update(now),
            MemberEvent::Suspect(member.id.clone()),
        )))
    }

    /// Notes a message from the member `from` itself.
    pub(crate) fn heard(&mut self, now: Instant, from: &NodeId) {
        if let Some(member) = self.by_name.get_mut(&from.name).filter(|m| m.id == *from) {
            member.heard_at = Some(now);
        }
    }

    /// Merges one update about another member. `max_members` bounds the table: a new
    /// member evicts the oldest tombstone when the table is full, and is refused when
    /// there is none to evict.
    pub(crate) fn merge(
        &mut self,
        now: Instant,
        update: &MemberUpdate,
        max_members: usize,
        suspicion_deadline: Instant,
        tombstone_ttl: Duration,
    ) -> Merged {
        let mut merged = Merged::default();
        let Some(current) = self.by_name.get_mut(&update.id.name) else {
            // A stranger's tombstone is remembered too (without an event): otherwise stale
            // gossip arriving after it would resurrect a member that has left. One older
            // than the time tombstones are kept is one this node forgot (or would forget at
            // once): it is not brought back.
            if !update.state.is_live()
                && Since::wire(now, update.ended_ms_ago).age(now) >= tombstone_ttl
            {
                return merged;
            }
            if !self.make_room(now, max_members) {
                return merged;
            }
            let member = new_member(now, update, suspicion_deadline);
            merged.changed = true;
            if member.state.is_live() {
                merged.events.push(MemberEvent::Up(member.id.clone()));
            }
            if member.state == MemberState::Suspect {
                merged.events.push(MemberEvent::Suspect(member.id.clone()));
            }
            self.by_name.insert(update.id.name.clone(), member);
            return merged;
        };
        match update.id.incarnation.cmp(&current.id.incarnation) {
            Ordering::Less => merged,
            Ordering::Greater => {
                // A restarted process: its former self is gone for good.
                if current.state.is_live() {
                    merged.events.push(MemberEvent::Down(current.id.clone()));
                }
                *current = new_member(now, update, suspicion_deadline);
                merged.changed = true;
                match update.state {
                    MemberState::Alive => merged.events.push(MemberEvent::Up(update.id.clone())),
                    MemberState::Suspect => {
                        merged.events.push(MemberEvent::Up(update.id.clone()));
                        merged.events.push(MemberEvent::Suspect(update.id.clone()));
                    }
                    MemberState::Down | MemberState::Left => {}
                }
                merged
            }
            Ordering::Equal => {
                if precedence(update.state, update.version)
                    <= precedence(current.state, current.version)
                {
                    return merged;
                }
                let before = current.state;
                current.state = update.state;
                current.version = update.version;
                current.addr = update.addr;
                current.meta = update.meta.clone();
                merged.changed = true;
                if before != update.state {
                    current.changed = changed_since(now, update);
                    current.suspicion =
                        (update.state == MemberState::Suspect).then_some(Suspicion {
                            deadline: suspicion_deadline,
                            first_hand: false,
                        });
                }
                let id = current.id.clone();
                let event = match (before, update.state) {
                    (MemberState::Alive, MemberState::Suspect) => Some(MemberEvent::Suspect(id)),
                    (MemberState::Suspect, MemberState::Alive) => Some(MemberEvent::Refuted(id)),
                    (MemberState::Down, MemberState::Alive) => Some(MemberEvent::Up(id)),
                    (MemberState::Down, MemberState::Suspect) => {
                        merged.events.push(MemberEvent::Up(id.clone()));
                        Some(MemberEvent::Suspect(id))
                    }
                    (b, MemberState::Down) if b.is_live() => Some(MemberEvent::Down(id)),
                    (b, MemberState::Left) if b.is_live() => Some(MemberEvent::Left(id)),
                    _ => None,
                };
                merged.events.extend(event);
                merged
            }
        }
    }

    /// Forgets tombstones older than `ttl`.
    pub(crate) fn expire_tombstones(&mut self, now: Instant, ttl: Duration) {
        self.by_name
            .retain(|_, m| m.state.is_live() || m.changed.age(now) < ttl);
    }

    /// Frees a row for a new member if the table is full, by forgetting the oldest
    /// tombstone. Returns whether there is room.
    fn make_room(&mut self, now: Instant, max_members: usize) -> bool {
        // The table holds others; this node itself takes one of `max_members`.
        if self.by_name.len() + 1 < max_members {
            return true;
        }
        let oldest = self
            .by_name
            .values()
            .filter(|m| !m.state.is_live())
            .max_by_key(|m| m.changed.age(now))
            .map(|m| m.id.name.clone());
        match oldest {
            Some(name) => {
                self.by_name.remove(&name);
                true
            }
            None => {
                tracing::warn!(max_members, "member table full, refusing a new member");
                false
            }
        }
    }
}

fn new_member(now: Instant, update: &MemberUpdate, suspicion_deadline: Instant) -> Member {
    Member {
        id: update.id.clone(),
        addr: update.addr,
        state: update.state,
        version: update.version,
        meta: update.meta.clone(),
        changed: changed_since(now, update),
        suspicion: (update.state == MemberState::Suspect).then_some(Suspicion {
            deadline: suspicion_deadline,
            first_hand: false,
        }),
        heard_at: None,
    }
}

/// When a row taking `update`'s state changed: a tombstone as long ago as its sender says.
fn changed_since(now: Instant, update: &MemberUpdate) -> Since {
    if update.state.is_live() {
        Since::now(now)
    } else {
        Since::wire(now, update.ended_ms_ago)
    }
}

/// Since when something holds (a member ended, a child ended), as this node knows it: the
/// instant it learned it, plus how old the news already was then. Tombstones travel with
/// their age in whole milliseconds, so that one is forgotten everywhere about when its first
/// copy is; an `Instant` is never dated back (it could go below the process's epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Since {
    learned: Instant,
    already: Duration,
}

impl Since {
    /// From `now` on, news of this node's own.
    pub(crate) fn now(now: Instant) -> Self {
        Self {
            learned: now,
            already: Duration::ZERO,
        }
    }

    /// Learned at `now` from a peer who said it was `ms` milliseconds old.
    pub(crate) fn wire(now: Instant, ms: u32) -> Self {
        Self {
            learned: now,
            already: Duration::from_millis(u64::from(ms)),
        }
    }

    /// How old it is at `now`.
    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.learned) + self.already
    }

    /// Its age at `now` as it travels: whole milliseconds, saturating at `u32::MAX` (49 days).
    pub(crate) fn wire_age(&self, now: Instant) -> u32 {
        u32::try_from(self.age(now).as_millis()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Incarnation;

    const TTL: Duration = Duration::from_secs(3600);

    fn update(name: &str, inc: u64, state: MemberState, version: u64) -> MemberUpdate {
        MemberUpdate {
            ended_ms_ago: 0,
            id: NodeId::new(NodeName::new(name).expect("valid"), Incarnation(inc)),
            addr: "127.0.0.1:1".parse().expect("addr"),
            state,
            version,
            meta: NodeMeta::default(),
        }
    }

    fn snapshot(table: &MemberTable, now: Instant) -> Vec<MemberUpdate> {
        table.iter().map(|m| m.to_update(now)).collect()
    }

    #[test]
    fn merge_order_does_not_matter() {
        use MemberState::*;
        let updates = [
            update("b", 1, Alive, 0),
            update("b", 1, Suspect, 0),
            update("b", 1, Alive, 1),
            update("b", 1, Down, 1),
            update("b", 2, Alive, 0),
            update("c", 1, Suspect, 3),
            update("c", 1, Left, 0),
        ];
        let now = crate::test_epoch();
        let mut reference = None;
        // Every rotation and its reverse must give the same table.
        for start in 0..updates.len() {
            for reverse in [false, true] {
                let mut order: Vec<_> = updates
                    .iter()
                    .cycle()
                    .skip(start)
                    .take(updates.len())
                    .collect();
                if reverse {
                    order.reverse();
                }
                let mut table = MemberTable::default();
                for u in order {
                    table.merge(now, u, 100, now, TTL);
                }
                let snap = snapshot(&table, now);
                match &reference {
                    None => reference = Some(snap),
                    Some(r) => assert_eq!(r, &snap),
                }
            }
        }
        let table = reference.expect("ran");
        assert_eq!(table[0], update("b", 2, Alive, 0));
        assert_eq!(table[1], update("c", 1, Left, 0));
    }

    #[test]
    fn a_new_incarnation_retires_the_old_one() {
        let now = crate::test_epoch();
        let mut table = MemberTable::default();
        table.merge(now, &update("b", 1, MemberState::Alive, 0), 100, now, TTL);
        let merged = table.merge(now, &update("b", 2, MemberState::Alive, 0), 100, now, TTL);
        let old = update("b", 1, MemberState::Alive, 0).id;
        let new = update("b", 2, MemberState::Alive, 0).id;
        assert_eq!(
            merged.events,
            vec![MemberEvent::Down(old.clone()), MemberEvent::Up(new)]
        );
        // Late gossip about the old process changes nothing.
        assert!(
            !table
                .merge(now, &update("b", 1, MemberState::Alive, 9), 100, now, TTL)
                .changed
        );
    }

    #[test]
    fn a_full_table_evicts_tombstones_and_refuses_live_members_beyond_that() {
        let now = crate::test_epoch();
        let mut table = MemberTable::default();
        table.merge(now, &update("b", 1, MemberState::Alive, 0), 3, now, TTL);
        table.merge(now, &update("c", 1, MemberState::Alive, 0), 3, now, TTL);
        assert!(
            !table
                .merge(now, &update("d", 1, MemberState::Alive, 0), 3, now, TTL)
                .changed
        );
        table.merge(now, &update("b", 1, MemberState::Down, 0), 3, now, TTL);
        assert!(
            table
                .merge(now, &update("d", 1, MemberState::Alive, 0), 3, now, TTL)
                .changed
        );
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_tombstone_keeps_its_age_from_node_to_node_and_a_forgotten_one_stays_forgotten() {
        let start = crate::test_epoch();
        let secs = Duration::from_secs;
        // A learns that b went down.
        let mut a = MemberTable::default();
        a.merge(
            start,
            &update("b", 1, MemberState::Down, 0),
            100,
            start,
            TTL,
        );
        // 1000 s later it tells C, who dates the row back by as much: 500 s after that, C
        // passes it on as 1500 s old.
        let relayed = a
            .get(&name("b"))
            .expect("row")
            .to_update(start + secs(1000));
        assert_eq!(relayed.ended_ms_ago, 1_000_000);
        let mut c = MemberTable::default();
        c.merge(start + secs(1000), &relayed, 100, start, TTL);
        let again = c
            .get(&name("b"))
            .expect("row")
            .to_update(start + secs(1500));
        assert_eq!(again.ended_ms_ago, 1_500_000);
        // Both forget it when it is TTL old, whoever learned it when.
        let expiry = start + TTL;
        a.expire_tombstones(expiry, TTL);
        c.expire_tombstones(expiry, TTL);
        assert_eq!((a.len(), c.len()), (0, 0));
        // A node that had not forgotten it yet cannot give it back, young again.
        let late = MemberUpdate {
            ended_ms_ago: Since::now(expiry - TTL).wire_age(expiry),
            ..update("b", 1, MemberState::Down, 0)
        };
        assert!(!a.merge(expiry, &late, 100, expiry, TTL).changed);
        assert_eq!(a.len(), 0);
        // A live row says nothing about age, whatever the field holds.
        let live = MemberUpdate {
            ended_ms_ago: u32::MAX,
            ..update("b", 2, MemberState::Alive, 0)
        };
        assert!(a.merge(expiry, &live, 100, expiry, TTL).changed);
        assert_eq!(
            a.get(&name("b"))
                .expect("row")
                .to_update(expiry)
                .ended_ms_ago,
            0
        );
    }

    fn name(s: &str) -> NodeName {
        NodeName::new(s).expect("valid")
    }
}
