//! The supervisor half of [`Node`]: singletons, distributed children, placement and restart
//! decisions. Membership (the other half, in `mod.rs`) says who is in the cluster; this file
//! decides what runs where.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::{Action, CommandError, Fence, Node, Status};
use crate::id::{InstanceId, NodeId, NodeName};
use crate::membership::{MAX_SINGLETONS, NodeMeta};
use crate::placement::{self, ChildId};
use crate::supervisor::{
    ChildInfo, ChildRecord, ChildSpec, ChildState, DIGEST_BUCKETS, DeclareError, Exit,
    RestartPolicy, Scope, StartChildError, StopReason, SupervisorEvent, TerminateError,
};
use crate::wire::{ClaimAnswer, ClaimVerdict, Message};

/// Records per `Children` message are capped by size: well under the frame limit.
const CHUNK_BYTES: usize = 256 * 1024;
/// Claims (or answers) per message: a child id is at most `MAX_CHILD_ID_LEN` bytes, so a
/// message of this many stays well under the frame limit.
const CLAIMS_PER_MESSAGE: usize = 2048;

/// The nodes that may own children right now, as this node sees them: live members, and this
/// node once it has joined.
pub(super) type View = BTreeMap<NodeName, (NodeId, NodeMeta)>;

/// A singleton this node declared.
#[derive(Debug)]
pub(super) struct Singleton {
    spec: ChildSpec,
    fingerprint: u64,
    owner: Option<(NodeName, u64)>,
    /// Its restart policy ended it here; it is not started here again.
    ended: bool,
}

/// A child this node runs (asked the runtime to run), or claims in order to run.
#[derive(Debug)]
pub(super) struct Running {
    instance: InstanceId,
    singleton: bool,
    restarts: VecDeque<Instant>,
    /// `Some` while the claim is open: nothing runs yet.
    claim: Option<Claim>,
    /// `Some` once the claim of an exclusive child is answered, while its lease is acquired:
    /// nothing runs yet. Holds the claim's `released_by`, for the start.
    acquiring: Option<Option<NodeId>>,
}

impl Running {
    fn started(&self) -> bool {
        self.claim.is_none() && self.acquiring.is_none()
    }
}

/// A claim in progress: this node owns the child by its view and waits for every live
/// peer to say that no instance of it runs there before it starts one. The round of the
/// claim is the instance number it will start.
#[derive(Debug)]
pub(super) struct Claim {
    /// The peers whose answer is still awaited.
    waiting: Vec<NodeId>,
    /// The peer whose instance ended for this claim: its state was sent ahead of its answer.
    released_by: Option<NodeId>,
    /// A peer refused (it runs the child, or claims it with precedence): claim again from
    /// this moment, if this node still owns the child then.
    retry_at: Option<Instant>,
    /// When the claim goes again to the peers still silent (a message can be lost when a
    /// connection is replaced).
    resend_at: Instant,
}

/// A `start_child` waiting for a second member to confirm it holds the spec.
#[derive(Debug)]
pub(super) struct PendingStart {
    /// The stamp counter of the record started.
    counter: u64,
    /// When the record goes out again (an acknowledgement can be lost with a connection).
    resend_at: Instant,
    /// When the start is answered as unconfirmed.
    give_up_at: Instant,
}

/// An instance asked to stop whose end the runtime has not reported yet.
#[derive(Debug)]
pub(super) struct Stopping {
    instance: InstanceId,
    /// Claims on the child that wait for this instance to end, by peer and round.
    claims: Vec<(NodeId, u64)>,
}

/// Moves the deadline in `slot` to `at` if that is sooner (or there was none).
pub(super) fn sooner(slot: &mut Option<Instant>, at: Instant) {
    *slot = Some(slot.map_or(at, |t| t.min(at)));
}

/// Whether the node described by `meta` may run `spec` (as singleton `singleton` if set).
fn eligible(meta: &NodeMeta, spec: &ChildSpec, singleton: bool) -> bool {
    !meta.draining
        && meta.has_role(spec.role.as_deref())
        && (!singleton || meta.singleton(&spec.id).is_some())
}

/// The owner of `spec` in `view`: [`placement::owner`] among the eligible members.
fn owner_in(view: &View, spec: &ChildSpec, singleton: bool) -> Option<(NodeName, u64)> {
    let eligible = view
        .iter()
        .filter(|(_, (_, meta))| eligible(meta, spec, singleton))
        .map(|(name, _)| name);
    placement::owner(&spec.id, eligible).map(|(name, w)| (name.clone(), w))
}

impl Node {
    // ----- commands ------------------------------------------------------------------------

    /// Declares a singleton on this node: every node that should be able to run it declares
    /// the same spec, and one of them runs it. Declaring the same spec again is a no-op.
    ///
    /// # Errors
    ///
    /// [`DeclareError`] if the spec breaks a limit, the name is taken by a child or by a
    /// different declaration, or the node is no longer active. Nothing changes.
    pub fn declare_singleton(&mut self, now: Instant, spec: ChildSpec) -> Result<(), DeclareError> {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active {
            return Err(DeclareError::NotActive);
        }
        spec.validate()?;
        if spec.is_exclusive() && !self.leases.has_voters() {
            return Err(DeclareError::NoVoters);
        }
        let fingerprint = spec.fingerprint();
        if let Some(existing) = self.singletons.get(&spec.id) {
            return if existing.fingerprint == fingerprint {
                Ok(())
            } else {
                Err(DeclareError::Duplicate(spec.id))
            };
        }
        if self
            .children
            .get(&spec.id)
            .is_some_and(|s| s.record.state == ChildState::Live)
        {
            return Err(DeclareError::Duplicate(spec.id));
        }
        if self.singletons.len() >= MAX_SINGLETONS {
            return Err(DeclareError::TooMany);
        }
        self.meta.singletons.push((spec.id.clone(), fingerprint));
        self.singletons.insert(
            spec.id.clone(),
            Singleton {
                spec,
                fingerprint,
                owner: None,
                ended: false,
            },
        );
        self.announce_self();
        self.after_input_at(now);
        Ok(())
    }

    /// Starts a child somewhere in the cluster (wherever placement puts it). The spec is
    /// replicated to every member, by the next [`poll_transmit`](Node::poll_transmit) (so
    /// starts made between two drains share messages);
    /// [`SupervisorEvent::ChildStarted`] follows once a second member holds it (at once if
    /// this node is alone), so a crash cannot lose it.
    ///
    /// # Errors
    ///
    /// [`StartChildError`] if the spec breaks a limit, the id is taken, or the node is no longer
    /// active. Nothing changes.
    pub fn start_child(&mut self, now: Instant, spec: ChildSpec) -> Result<(), StartChildError> {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active {
            return Err(StartChildError::NotActive);
        }
        spec.validate()?;
        if spec.is_exclusive() && !self.leases.has_voters() {
            return Err(StartChildError::NoVoters);
        }
        let taken = self.singletons.contains_key(&spec.id)
            || self
                .children
                .get(&spec.id)
                .is_some_and(|s| s.record.state == ChildState::Live);
        if taken {
            return Err(StartChildError::Duplicate(spec.id));
        }
        if self.children.live_len() >= self.config.max_children {
            return Err(StartChildError::TooMany(self.config.max_children));
        }
        let stamp = self.children.next_stamp(&self.id.name);
        let record = ChildRecord {
            spec,
            stamp,
            state: ChildState::Live,
            ended_ms_ago: 0,
        };
        let id = record.spec.id.clone();
        let counter = record.stamp.counter;
        self.apply_child(now, record.clone());
        // Until a second member holds it, the answer waits (`refresh_placement` answers
        // at once for a node that has joined and is alone).
        let resend_at = now + self.config.probe_interval;
        self.pending_acks.insert(
            id,
            PendingStart {
                counter,
                resend_at,
                give_up_at: now + self.config.start_ack_timeout,
            },
        );
        sooner(&mut self.start_tick_at, resend_at);
        // Replicated by the next `poll_transmit`, with every other start made before it.
        self.unsent_starts.push(record);
        self.defer_child_repair(now);
        self.after_input_at(now);
        Ok(())
    }

    /// Terminates a child wherever it runs; the termination is replicated and beats any start
    /// it ends, even one that arrives later from across a healed partition.
    ///
    /// # Errors
    ///
    /// [`TerminateError`] if no live child has this id, it is a singleton, or the node is no
    /// longer active. Nothing changes.
    pub fn terminate_child(&mut self, now: Instant, id: &ChildId) -> Result<(), TerminateError> {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active {
            return Err(TerminateError::NotActive);
        }
        if self.singletons.contains_key(id) {
            return Err(TerminateError::Singleton(id.clone()));
        }
        let Some(slot) = self
            .children
            .get(id)
            .filter(|s| s.record.state == ChildState::Live)
        else {
            return Err(TerminateError::NotFound(id.clone()));
        };
        let spec = slot.record.spec.clone();
        self.end_record(now, spec, ChildState::Terminated);
        self.after_input_at(now);
        Ok(())
    }

    /// Whether this node drains: it starts nothing more, and moves what runs here away.
    pub fn is_draining(&self) -> bool {
        self.meta.draining
    }

    /// Marks this node as draining (it hosts nothing, its children move to others) or not.
    ///
    /// # Errors
    ///
    /// [`CommandError::NotActive`] if the node left or was superseded; nothing changes.
    pub fn set_draining(&mut self, now: Instant, draining: bool) -> Result<(), CommandError> {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active {
            return Err(CommandError::NotActive(self.status));
        }
        if self.meta.draining != draining {
            self.meta.draining = draining;
            self.announce_self();
            self.after_input_at(now);
        }
        Ok(())
    }

    // ----- input from the runtime ----------------------------------------------------------

    /// Reports that instance `instance` of child `id` ended. The core applies the restart
    /// policy and intensity: it may answer with a new [`Action::Start`], end the child
    /// ([`SupervisorEvent::Completed`] or [`SupervisorEvent::GaveUp`]), or, for an
    /// instance it asked to stop, confirm its end to the peers whose claims wait for it.
    /// Report every end, asked for or not.
    pub fn worker_exited(&mut self, now: Instant, id: &ChildId, instance: InstanceId, exit: Exit) {
        self.latest_now = self.latest_now.max(now);
        if self.status != Status::Active {
            return;
        }
        if self
            .stopping
            .get(id)
            .is_some_and(|s| s.instance == instance)
        {
            self.stopped(id);
            // A lease lost (or a stop for any reason) while this node still owns the child:
            // it claims it again.
            self.reconcile(id);
            self.after_input_at(now);
            return;
        }
        let Some(running) = self
            .running
            .get(id)
            .filter(|r| r.instance == instance && r.started())
        else {
            return;
        };
        let singleton = running.singleton;
        let Some(spec) = self.spec_of(id, singleton) else {
            self.running.remove(id);
            return;
        };
        let restart = match (spec.restart, &exit) {
            (RestartPolicy::Permanent, _) => true,
            (RestartPolicy::Transient, Exit::Failed(_)) => true,
            (RestartPolicy::Transient, Exit::Normal) | (RestartPolicy::Temporary, _) => false,
        };
        tracing::debug!(node = %self.id, child = %id, ?exit, restart, "worker exited");
        if !restart {
            self.end_here(now, spec, singleton, ChildState::Completed);
        } else if self.within_intensity(now, id, &spec) {
            self.next_instance = self.next_instance.next();
            let instance = self.next_instance;
            let exclusive = spec.is_exclusive();
            if let Some(running) = self.running.get_mut(id) {
                running.instance = instance;
                running.restarts.push_back(now);
                if exclusive {
                    running.acquiring = Some(None);
                }
            }
            if exclusive {
                // A new start needs a new token; it starts once a majority granted it.
                self.reacquire_lease(id);
            } else {
                self.actions.push_back(Action::Start {
                    id: id.clone(),
                    instance,
                    spec,
                    handoff_from: None,
                    fence: None,
                });
            }
        } else {
            tracing::warn!(node = %self.id, child = %id, "restart intensity exceeded, giving up");
            self.end_here(now, spec, singleton, ChildState::GaveUp);
        }
        self.after_input_at(now);
    }

    // ----- queries -------------------------------------------------------------------------

    /// The node that should run `id` by this node's view, if any is eligible.
    ///
    /// For a singleton this node did not declare itself, the owner is computed from what the
    /// members declared (the highest rendezvous weight among the non-draining members that
    /// declared it), which is what the declaring nodes compute unless a declarer lacks the
    /// singleton's role.
    pub fn owner_of(&self, id: &ChildId) -> Option<&NodeName> {
        match self.singletons.get(id) {
            Some(s) => s.owner.as_ref().map(|(n, _)| n),
            None => self
                .children
                .get(id)
                .filter(|s| s.record.state == ChildState::Live)
                .and_then(|s| s.owner.as_ref().map(|(n, _)| n))
                .or_else(|| {
                    let declarers = self
                        .view
                        .iter()
                        .filter(|(_, (_, meta))| !meta.draining && meta.singleton(id).is_some())
                        .map(|(name, _)| name);
                    placement::owner(id, declarers).map(|(name, _)| name)
                }),
        }
    }

    /// The process that should run `id` by this node's view, if any is eligible: the member
    /// [`owner_of`](Self::owner_of) names, with its incarnation.
    pub fn owner_id(&self, id: &ChildId) -> Option<&NodeId> {
        self.owner_of(id).and_then(|name| self.view_member(name))
    }

    /// The process of the member a slot's owner names.
    fn member_id<W>(&self, owner: Option<&(NodeName, W)>) -> Option<NodeId> {
        owner.and_then(|(name, _)| self.view_member(name)).cloned()
    }

    /// The process of the member `name` in this node's view.
    fn view_member(&self, name: &NodeName) -> Option<&NodeId> {
        self.view.get(name).map(|(id, _)| id)
    }

    /// Whether `id` names a live child or a singleton some member (or this node) declared:
    /// a message to any other name can never be delivered.
    pub fn knows(&self, id: &ChildId) -> bool {
        self.singletons.contains_key(id)
            || self
                .children
                .get(id)
                .is_some_and(|s| s.record.state == ChildState::Live)
            || self
                .members
                .live()
                .any(|m| m.meta().singleton(id).is_some())
    }

    /// A number that moves on whenever the owner of a child may have changed in this node's
    /// view: the members placement counts changed (one came, went, or changed its roles or
    /// draining), or a child was added, moved, claimed again or stopped. What
    /// [`which_children`](Node::which_children) says changes only when this does, so a
    /// caller that keeps a copy of it (the runtime's failover metrics) reads it again only
    /// then. Only equality means anything: it wraps.
    pub fn ownership_epoch(&self) -> u64 {
        self.ownership_epoch
    }

    /// The children and singletons running here ([`Scope::Local`]) or known cluster-wide
    /// ([`Scope::Global`]: also the singletons that only other members declared, with the
    /// member placement gives them to).
    pub fn which_children(&self, scope: Scope) -> Vec<ChildInfo> {
        let singletons = self.singletons.iter().map(|(id, s)| ChildInfo {
            id: id.clone(),
            singleton: true,
            assigned_to: self.member_id(s.owner.as_ref()),
            running_here: self.runs(id),
        });
        let children = self
            .children
            .iter()
            .filter(|(_, s)| s.record.state == ChildState::Live)
            .map(|(id, s)| ChildInfo {
                id: id.clone(),
                singleton: false,
                assigned_to: self.member_id(s.owner.as_ref()),
                running_here: self.runs(id),
            });
        // Singletons only others declared: this node (an observer, say) knows them from the
        // members' metadata, and where they run by the same placement.
        let declared_elsewhere: BTreeSet<&ChildId> = self
            .view
            .values()
            .flat_map(|(_, meta)| meta.singletons.iter().map(|(id, _)| id))
            .filter(|id| !self.singletons.contains_key(*id))
            .collect();
        let elsewhere = declared_elsewhere.into_iter().map(|id| ChildInfo {
            id: id.clone(),
            singleton: true,
            assigned_to: self.owner_id(id).cloned(),
            running_here: false,
        });
        singletons
            .chain(elsewhere)
            .chain(children)
            .filter(|info| scope == Scope::Global || info.running_here)
            .collect()
    }

    /// How many live children the replicated table holds.
    pub fn live_children(&self) -> usize {
        self.children.live_len()
    }

    /// The ids this node runs, with the instance numbers it gave them (not those it only
    /// claims yet, nor those it asked to stop).
    pub fn running(&self) -> impl Iterator<Item = (&ChildId, InstanceId)> {
        self.running
            .iter()
            .filter(|(_, r)| r.started())
            .map(|(id, r)| (id, r.instance))
    }

    /// Whether this node claims `id`: it owns it by its view and waits for its peers'
    /// answers (and, for an exclusive child, a majority of the voters' leases) before it
    /// starts an instance. A runtime holds the messages for `id` that
    /// arrive meanwhile, and delivers them to the instance once it starts.
    pub fn is_claiming(&self, id: &ChildId) -> bool {
        self.running.get(id).is_some_and(|r| !r.started())
    }

    /// Whether nothing runs, starts or stops here: a draining node is done moving its
    /// children away once this holds, and may [`leave`](Node::leave).
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.stopping.is_empty()
    }

    fn runs(&self, id: &ChildId) -> bool {
        self.running.get(id).is_some_and(Running::started)
    }

    // ----- messages ------------------------------------------------------------------------

    pub(super) fn handle_children(
        &mut self,
        now: Instant,
        from: &NodeId,
        records: Vec<ChildRecord>,
        ack: bool,
    ) {
        let mut acks = Vec::new();
        let mut news = false;
        for record in records {
            if record.spec.validate().is_err() || self.singletons.contains_key(&record.spec.id) {
                continue;
            }
            let id = record.spec.id.clone();
            let counter = record.stamp.counter;
            let full =
                self.children.len() >= self.config.max_children && self.children.get(&id).is_none();
            if full {
                tracing::warn!(node = %self.id, child = %id, "child table full, dropping");
                continue;
            }
            news |= self.apply_child(now, record);
            if ack {
                acks.push((id, counter));
            }
        }
        if news {
            self.defer_child_repair(now);
        }
        // One acknowledgement for the whole message, split only if it would not fit a frame
        // (each entry is smaller than the record it answers, so it never is in practice).
        let mut bytes = 0;
        let mut chunk = Vec::new();
        for (id, counter) in acks {
            bytes += id.as_str().len() + 12;
            chunk.push((id, counter));
            if bytes >= CHUNK_BYTES {
                let acks = std::mem::take(&mut chunk);
                self.send_to(from, Message::ChildAck { acks });
                bytes = 0;
            }
        }
        if !chunk.is_empty() {
            self.send_to(from, Message::ChildAck { acks: chunk });
        }
    }

    pub(super) fn handle_child_ack(&mut self, acks: Vec<(ChildId, u64)>) {
        for (id, counter) in acks {
            if self
                .pending_acks
                .get(&id)
                .is_some_and(|p| p.counter == counter)
            {
                self.pending_acks.remove(&id);
                self.supervisor_event(SupervisorEvent::ChildStarted {
                    id,
                    replicated: true,
                });
            }
        }
    }

    /// Replicates the children started since the last call to every live member, in
    /// messages of at most [`CHUNK_BYTES`] of records, each acknowledged as a whole.
    pub(super) fn flush_starts(&mut self) {
        let records = std::mem::take(&mut self.unsent_starts);
        if self.members.live().next().is_none() {
            return;
        }
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for record in records {
            bytes += postcard::experimental::serialized_size(&record).unwrap_or(CHUNK_BYTES);
            chunk.push(record);
            if bytes >= CHUNK_BYTES {
                let records = std::mem::take(&mut chunk);
                self.send_to_live(Message::Children { records, ack: true });
                bytes = 0;
            }
        }
        if !chunk.is_empty() {
            self.send_to_live(Message::Children {
                records: chunk,
                ack: true,
            });
        }
    }

    pub(super) fn handle_child_digest(&mut self, from: &NodeId, digests: Vec<u64>) {
        if digests.len() != DIGEST_BUCKETS {
            return;
        }
        let differ: Vec<usize> = (0..DIGEST_BUCKETS)
            .filter(|&b| digests[b] != self.children.digests()[b])
            .collect();
        if differ.is_empty() {
            return;
        }
        self.push_records(from, &differ);
        let buckets = differ.iter().map(|&b| b as u16).collect();
        self.send_to(from, Message::ChildPull { buckets });
    }

    pub(super) fn handle_child_pull(&mut self, from: &NodeId, buckets: Vec<u16>) {
        let buckets: Vec<usize> = buckets
            .into_iter()
            .map(usize::from)
            .filter(|&b| b < DIGEST_BUCKETS)
            .collect();
        self.push_records(from, &buckets);
    }

    /// A peer's probe showed its child table differs from this node's: start a repair with
    /// it, at most one every two probe periods (the repair itself takes a round trip, and
    /// repeating it while records are in flight would only send them twice).
    pub(super) fn compare_children(&mut self, now: Instant, from: &NodeId, theirs: u64) {
        if theirs == self.children.summary() || now < self.next_child_repair_at {
            return;
        }
        self.next_child_repair_at = now + 2 * self.config.probe_interval;
        self.send_child_digest(from);
    }

    /// Sends this node's digest to `to`, which answers with what differs.
    pub(super) fn send_child_digest(&mut self, to: &NodeId) {
        let digests = self.children.digests().to_vec();
        self.send_to(to, Message::ChildDigest { digests });
    }

    // ----- placement -----------------------------------------------------------------------

    /// Recomputes owners after the view changed, moving only what the change can move: the
    /// children of nodes that left the view, and children the newcomers outweigh.
    pub(super) fn refresh_placement(&mut self) {
        if !std::mem::take(&mut self.placement_dirty) {
            self.answer_pending_if_alone();
            return;
        }
        let view = self.compute_view();
        if view == self.view {
            self.answer_pending_if_alone();
            return;
        }
        let removed: BTreeSet<NodeName> = self
            .view
            .iter()
            .filter(|(name, entry)| view.get(*name) != Some(*entry))
            .map(|(name, _)| name.clone())
            .collect();
        let added: Vec<NodeName> = view
            .iter()
            .filter(|(name, entry)| self.view.get(*name) != Some(*entry))
            .map(|(name, _)| name.clone())
            .collect();
        self.view = view;
        self.ownership_epoch = self.ownership_epoch.wrapping_add(1);
        self.prune_claims();
        let mut moved = Vec::new();
        for (id, slot) in self.children.iter_mut() {
            if slot.record.state != ChildState::Live {
                continue;
            }
            let spec = &slot.record.spec;
            let before = slot.owner.clone();
            let lost_owner = before.as_ref().is_none_or(|(n, _)| removed.contains(n));
            if lost_owner {
                slot.owner = owner_in(&self.view, spec, false);
            } else {
                // A join moves a child only to a newcomer that outranks its owner.
                let newcomers = added.iter().filter(|name| {
                    self.view
                        .get(*name)
                        .is_some_and(|(_, meta)| eligible(meta, spec, false))
                });
                let current = slot.owner.as_ref().map(|(name, _)| name);
                slot.owner = placement::owner(id, current.into_iter().chain(newcomers))
                    .map(|(name, w)| (name.clone(), w));
            }
            if slot.owner != before {
                moved.push(id.clone());
            }
        }
        let singletons: Vec<ChildId> = self.singletons.keys().cloned().collect();
        for id in &singletons {
            if let Some(s) = self.singletons.get_mut(id) {
                s.owner = owner_in(&self.view, &s.spec, true);
            }
        }
        for id in moved.iter().chain(&singletons) {
            self.reconcile(id);
        }
        // After the reconciling: a claim that waited on an instance here that now stops
        // waits for its end instead, and is answered `Released` then.
        self.answer_deferred();
        self.report_conflicts();
        self.answer_pending_if_alone();
    }

    /// A node that has joined and has no live peer has no second member to wait for: it
    /// answers pending starts, saying they are held here only.
    pub(super) fn answer_pending_if_alone(&mut self) {
        if self.joined && self.members.live().next().is_none() {
            for (id, _) in std::mem::take(&mut self.pending_acks) {
                self.supervisor_event(SupervisorEvent::ChildStarted {
                    id,
                    replicated: false,
                });
            }
        }
    }

    /// Every node that may own children now: live members, and this node once it joined.
    fn compute_view(&self) -> View {
        let mut view: View = self
            .members
            .live()
            .map(|m| (m.id().name.clone(), (m.id().clone(), m.meta().clone())))
            .collect();
        if self.status == Status::Active && self.joined {
            view.insert(self.id.name.clone(), (self.id.clone(), self.meta.clone()));
        }
        view
    }

    /// The one place that decides whether this node may run a child it owns. `Available`
    /// mode: it may. `Exclusive` mode will also require a valid lease here.
    fn may_run(&self, _id: &ChildId) -> bool {
        true
    }

    /// Starts or stops `id` here so that it runs exactly when this node owns it: a node
    /// that comes to own it claims it first (see [`Node::handle_claim`]), and starts it
    /// once every live peer has answered.
    fn reconcile(&mut self, id: &ChildId) {
        self.ownership_epoch = self.ownership_epoch.wrapping_add(1);
        let (owner, live, singleton) = match self.singletons.get(id) {
            Some(s) => (s.owner.clone(), !s.ended, true),
            None => match self.children.get(id) {
                Some(slot) => (
                    slot.owner.clone(),
                    slot.record.state == ChildState::Live,
                    false,
                ),
                None => (None, false, false),
            },
        };
        let mine = owner.as_ref().is_some_and(|(n, _)| *n == self.id.name);
        let should_run = self.status == Status::Active && live && mine && self.may_run(id);
        let present = self.running.contains_key(id);
        if should_run && !present {
            self.open_claim(id, singleton);
        } else if !should_run && present {
            let reason = if self.status != Status::Active {
                StopReason::Leaving
            } else if !live {
                StopReason::Terminated
            } else {
                match owner {
                    Some((name, _)) => StopReason::Moved {
                        to: self.view.get(&name).map(|(id, _)| id.clone()),
                    },
                    None => StopReason::NoEligibleNode,
                }
            };
            self.stop_here(id, reason);
        }
    }

    /// Asks the runtime to stop `id` here (or drops the claim, if nothing started yet).
    pub(super) fn stop_here(&mut self, id: &ChildId, reason: StopReason) {
        let Some(running) = self.running.remove(id) else {
            return;
        };
        if !running.started() {
            self.open_claims.remove(id);
            // A claim opened while an instance here is still stopping (the view flapped)
            // has no lease of its own: the stopping instance's lease stays until its end.
            if !self.stopping.contains_key(id) {
                self.release_lease(id);
            }
            return;
        }
        self.stopping.insert(
            id.clone(),
            Stopping {
                instance: running.instance,
                claims: Vec::new(),
            },
        );
        self.actions.push_back(Action::Stop {
            id: id.clone(),
            instance: running.instance,
            reason,
        });
    }

    /// Stops everything this node runs (it is leaving, or was superseded).
    pub(super) fn stop_all(&mut self, reason: StopReason) {
        let ids: Vec<ChildId> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop_here(&id, reason.clone());
        }
    }

    // ----- claims --------------------------------------------------------------------------

    /// Starts claiming `id`: asks every live peer whether an instance runs there. With no
    /// peer to ask (and nothing of it still stopping here), it starts at once.
    fn open_claim(&mut self, id: &ChildId, singleton: bool) {
        self.next_instance = self.next_instance.next();
        let instance = self.next_instance;
        let waiting: Vec<NodeId> = if self.sabotage_skip_claims {
            Vec::new()
        } else {
            self.members.live().map(|m| m.id().clone()).collect()
        };
        for peer in &waiting {
            self.unsent_claims
                .entry(peer.clone())
                .or_default()
                .push((id.clone(), instance.get()));
        }
        let resend_at = self.claim_resend_at();
        // While a heal merges views, the claim waits and is then made afresh, to the
        // members that came back as well.
        let retry_at = self.merging_until.filter(|&until| until > self.latest_now);
        if let Some(at) = retry_at {
            self.arm_claim_tick(at);
        }
        self.running.insert(
            id.clone(),
            Running {
                instance,
                singleton,
                restarts: VecDeque::new(),
                acquiring: None,
                claim: Some(Claim {
                    waiting,
                    released_by: None,
                    retry_at,
                    resend_at,
                }),
            },
        );
        self.open_claims.insert(id.clone());
        self.finish_claim(id);
    }

    /// When a claim still unanswered goes out again, and a refused one is retried.
    fn claim_resend_at(&mut self) -> Instant {
        let at = self.latest_now + self.config.probe_timeout;
        self.arm_claim_tick(at);
        at
    }

    fn arm_claim_tick(&mut self, at: Instant) {
        sooner(&mut self.claim_tick_at, at);
    }

    /// The mode of singleton or child `id`, if this node knows it.
    pub fn mode_of(&self, id: &ChildId) -> Option<crate::supervisor::Mode> {
        self.singletons
            .get(id)
            .map(|s| s.spec.mode)
            .or_else(|| self.children.get(id).map(|s| s.record.spec.mode))
    }

    /// The spec of singleton or child `id`, if this node still holds it.
    fn spec_of(&self, id: &ChildId, singleton: bool) -> Option<ChildSpec> {
        if singleton {
            self.singletons.get(id).map(|s| s.spec.clone())
        } else {
            self.children.get(id).map(|s| s.record.spec.clone())
        }
    }

    /// Starts the instance of a claim that every peer answered, unless a refusal or an
    /// instance of its own that is still stopping holds it back.
    fn finish_claim(&mut self, id: &ChildId) {
        if self.stopping.contains_key(id) {
            return;
        }
        let Some(running) = self.running.get_mut(id) else {
            return;
        };
        let ready = running
            .claim
            .as_ref()
            .is_some_and(|c| c.waiting.is_empty() && c.retry_at.is_none());
        if !ready {
            return;
        }
        let Some(claim) = running.claim.take() else {
            return;
        };
        let (instance, singleton) = (running.instance, running.singleton);
        self.open_claims.remove(id);
        let Some(spec) = self.spec_of(id, singleton) else {
            self.running.remove(id);
            return;
        };
        if spec.is_exclusive() {
            if let Some(running) = self.running.get_mut(id) {
                running.acquiring = Some(claim.released_by);
            }
            self.acquire_lease(id);
            return;
        }
        self.actions.push_back(Action::Start {
            id: id.clone(),
            instance,
            spec,
            handoff_from: claim.released_by,
            fence: None,
        });
    }

    /// A majority of the voters granted the lease of exclusive child `id`: its instance
    /// starts, under `fence`.
    pub(super) fn lease_acquired(&mut self, id: &ChildId, fence: Fence) {
        let Some(running) = self.running.get_mut(id) else {
            return;
        };
        let Some(handoff_from) = running.acquiring.take() else {
            return;
        };
        let (instance, singleton) = (running.instance, running.singleton);
        let Some(spec) = self.spec_of(id, singleton) else {
            self.running.remove(id);
            return;
        };
        tracing::debug!(node = %self.id, child = %id, token = fence.token, "lease acquired");
        self.supervisor_event(SupervisorEvent::LeaseAcquired {
            id: id.clone(),
            token: fence.token,
        });
        self.actions.push_back(Action::Start {
            id: id.clone(),
            instance,
            spec,
            handoff_from,
            fence: Some(fence),
        });
    }

    /// The instance this node runs (or starts) for `id`.
    pub(super) fn instance_of(&self, id: &ChildId) -> Option<InstanceId> {
        self.running.get(id).map(|r| r.instance)
    }

    /// The fencing token of the instance of `id` running here, if it is exclusive.
    pub fn fencing_token(&self, id: &ChildId) -> Option<u64> {
        self.running
            .get(id)
            .filter(|r| r.started())
            .and(self.leases.token(id))
    }

    /// A peer claims children: answer for each whether an instance runs here.
    ///
    /// * Nothing here: [`ClaimVerdict::Free`].
    /// * An instance stopping here: the answer waits for its end, then says
    ///   [`ClaimVerdict::Released`].
    /// * An instance running here: the answer waits until this node's view changes. This
    ///   node owns it by its own view; a running instance moves only when this node's view
    ///   says so, never on a peer's word. When it does, the claim waits for the instance's
    ///   end as above.
    /// * An instance starting here (its lease being acquired): [`ClaimVerdict::Refused`].
    /// * A claim of this node's own: the claim with the higher rendezvous weight wins. The
    ///   loser answers `Free` and waits before it claims again, or gets `Refused`.
    /// * Nothing here, but by this node's view a third node owns it: the answer waits until
    ///   this node's view changes (see [`Node::answer_deferred`]). Views that disagree are
    ///   catching up with a failure or merging after a heal, and a start now could
    ///   duplicate an instance the claimer does not know of yet.
    pub(super) fn handle_claim(
        &mut self,
        now: Instant,
        from: &NodeId,
        claims: Vec<(ChildId, u64)>,
    ) {
        for (id, round) in claims.into_iter().take(self.config.max_children) {
            let verdict = match self.running.get_mut(&id) {
                // It runs here and, by this node's view, belongs here: the claimer's
                // view is ahead (it joined, or declared the child, and this node has
                // not heard yet) or behind. The answer waits for this node's view to
                // change: if the claimer comes to own it, the instance here stops and
                // the answer is `Released` the moment it ended, not a refusal that
                // costs the claimer a retry period.
                Some(running) if running.started() => {
                    self.defer_answer(id, from, round);
                    continue;
                }
                Some(running) => match running.claim.as_mut() {
                    None => ClaimVerdict::Refused,
                    Some(claim) => {
                        let theirs = placement::owner(&id, [&from.name, &self.id.name])
                            .is_some_and(|(winner, _)| *winner == from.name);
                        if theirs {
                            let retry_at = now + self.config.probe_timeout;
                            claim.retry_at = Some(retry_at);
                            self.arm_claim_tick(retry_at);
                            ClaimVerdict::Free
                        } else {
                            ClaimVerdict::Refused
                        }
                    }
                },
                None => match self.stopping.get_mut(&id) {
                    Some(stopping) => {
                        if !stopping
                            .claims
                            .iter()
                            .any(|(p, r)| p == from && *r == round)
                        {
                            stopping.claims.push((from.clone(), round));
                        }
                        continue;
                    }
                    None => {
                        // A third node owns it by this node's view: the views disagree (a
                        // failure this node has not heard of yet, or a heal merging them).
                        // The answer waits until they agree.
                        if self.third_owner(&id, &from.name) {
                            self.defer_answer(id, from, round);
                            continue;
                        }
                        ClaimVerdict::Free
                    }
                },
            };
            self.unsent_answers
                .entry(from.clone())
                .or_default()
                .push(ClaimAnswer { id, round, verdict });
        }
    }

    /// Keeps `from`'s claim of `id` unanswered until this node's view changes (at most one
    /// per peer and child: a resent claim replaces the one before).
    fn defer_answer(&mut self, id: ChildId, from: &NodeId, round: u64) {
        let waiting = self.deferred.entry(id).or_default();
        waiting.retain(|(p, _)| p != from);
        waiting.push((from.clone(), round));
    }

    /// Whether, by this node's view, `id` is owned by a live node other than `claimer` and
    /// this one.
    fn third_owner(&self, id: &ChildId, claimer: &NodeName) -> bool {
        self.owner_of(id)
            .is_some_and(|o| o != claimer && *o != self.id.name && self.view.contains_key(o))
    }

    /// Answers the claims that waited for this node's view to agree with the claimer's,
    /// now that the view changed. Claims from peers gone from the view are dropped.
    fn answer_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        for (id, claims) in std::mem::take(&mut self.deferred) {
            for (peer, round) in claims {
                if self.view.get(&peer.name).is_none_or(|(p, _)| *p != peer) {
                    continue;
                }
                if self.third_owner(&id, &peer.name) {
                    self.deferred
                        .entry(id.clone())
                        .or_default()
                        .push((peer, round));
                    continue;
                }
                // Whatever else holds now (this node claims or runs it itself) is answered
                // as a fresh claim would be.
                self.handle_claim(self.latest_now, &peer, vec![(id.clone(), round)]);
            }
        }
    }

    /// A peer answered claims of this node.
    pub(super) fn handle_claim_reply(
        &mut self,
        now: Instant,
        from: &NodeId,
        answers: Vec<ClaimAnswer>,
    ) {
        for answer in answers.into_iter().take(self.config.max_children) {
            let Some(claim) = self
                .running
                .get_mut(&answer.id)
                .filter(|r| r.instance.get() == answer.round)
                .and_then(|r| r.claim.as_mut())
            else {
                continue;
            };
            if !claim.waiting.contains(from) {
                continue;
            }
            claim.waiting.retain(|p| p != from);
            match answer.verdict {
                ClaimVerdict::Free => {}
                ClaimVerdict::Released => claim.released_by = Some(from.clone()),
                ClaimVerdict::Refused => {
                    tracing::debug!(node = %self.id, child = %answer.id, peer = %from, "claim refused");
                    let retry_at = now + self.config.probe_timeout;
                    claim.retry_at = Some(retry_at);
                    self.arm_claim_tick(retry_at);
                }
            }
            self.finish_claim(&answer.id);
        }
    }

    /// The instance of `id` this node asked to stop has ended: the claims that waited for
    /// it are answered, and a claim of this node's own may start.
    fn stopped(&mut self, id: &ChildId) {
        let Some(stopping) = self.stopping.remove(id) else {
            return;
        };
        // Released only now that the instance ended: the next holder starts after this.
        self.release_lease(id);
        for (peer, round) in stopping.claims {
            self.unsent_answers
                .entry(peer)
                .or_default()
                .push(ClaimAnswer {
                    id: id.clone(),
                    round,
                    verdict: ClaimVerdict::Released,
                });
        }
        self.finish_claim(id);
    }

    /// Sends again the starts no member confirmed yet, and answers those that waited too
    /// long as unconfirmed.
    pub(super) fn start_tick(&mut self, now: Instant) {
        if self.start_tick_at.is_none_or(|at| at > now) {
            return;
        }
        self.start_tick_at = None;
        let mut next: Option<Instant> = None;
        let mut given_up = Vec::new();
        let mut resend = Vec::new();
        for (id, pending) in self.pending_acks.iter_mut() {
            if pending.give_up_at <= now {
                given_up.push(id.clone());
                continue;
            }
            if pending.resend_at <= now {
                pending.resend_at = now + self.config.probe_interval;
                resend.push(id.clone());
            }
            sooner(&mut next, pending.resend_at.min(pending.give_up_at));
        }
        for id in given_up {
            self.pending_acks.remove(&id);
            tracing::warn!(node = %self.id, child = %id, "no member confirmed the start in time");
            self.supervisor_event(SupervisorEvent::ChildUnconfirmed { id });
        }
        for id in resend {
            let counter = self.pending_acks.get(&id).map(|p| p.counter);
            let record = self
                .children
                .get(&id)
                .map(|slot| slot.record.clone())
                .filter(|r| Some(r.stamp.counter) == counter && r.state == ChildState::Live);
            match record {
                Some(record) => self.unsent_starts.push(record),
                // Ended or replaced meanwhile: nothing left to confirm.
                None => {
                    self.pending_acks.remove(&id);
                }
            }
        }
        self.start_tick_at = next;
    }

    /// Resends open claims to the peers still silent, and claims again what was refused.
    pub(super) fn claim_tick(&mut self, now: Instant) {
        if self.claim_tick_at.is_none_or(|at| at > now) {
            return;
        }
        self.claim_tick_at = None;
        let open: Vec<ChildId> = self.open_claims.iter().cloned().collect();
        let mut next: Option<Instant> = None;
        for id in open {
            let Some(running) = self.running.get_mut(&id) else {
                self.open_claims.remove(&id);
                continue;
            };
            let instance = running.instance;
            let Some(claim) = running.claim.as_mut() else {
                self.open_claims.remove(&id);
                continue;
            };
            if let Some(retry_at) = claim.retry_at {
                if retry_at > now {
                    sooner(&mut next, retry_at);
                    continue;
                }
                // Claim afresh, with a new round, if this node still owns it.
                self.running.remove(&id);
                self.open_claims.remove(&id);
                self.reconcile(&id);
                continue;
            }
            if claim.waiting.is_empty() {
                continue;
            }
            if claim.resend_at <= now {
                claim.resend_at = now + self.config.probe_timeout;
                for peer in claim.waiting.clone() {
                    self.unsent_claims
                        .entry(peer)
                        .or_default()
                        .push((id.clone(), instance.get()));
                }
            }
            let at = self
                .running
                .get(&id)
                .and_then(|r| r.claim.as_ref())
                .map(|c| c.resend_at);
            if let Some(at) = at {
                sooner(&mut next, at);
            }
        }
        if let Some(at) = next {
            self.arm_claim_tick(at);
        }
    }

    /// Peers that left the live view answer no claim: stop waiting for them.
    fn prune_claims(&mut self) {
        if self.open_claims.is_empty() {
            return;
        }
        let live: BTreeSet<&NodeId> = self.members.live().map(|m| m.id()).collect();
        let open: Vec<ChildId> = self.open_claims.iter().cloned().collect();
        let mut ready = Vec::new();
        for id in open {
            if let Some(claim) = self.running.get_mut(&id).and_then(|r| r.claim.as_mut()) {
                let before = claim.waiting.len();
                claim.waiting.retain(|p| live.contains(p));
                if claim.waiting.len() != before {
                    ready.push(id);
                }
            }
        }
        for id in ready {
            self.finish_claim(&id);
        }
    }

    /// Sends the queued claims and answers, one message per peer, in chunks that fit a frame.
    pub(super) fn flush_claims(&mut self) {
        for (peer, claims) in std::mem::take(&mut self.unsent_claims) {
            self.send_chunked(&peer, claims, |claims| Message::Claim { claims });
        }
        for (peer, answers) in std::mem::take(&mut self.unsent_answers) {
            let claimer = peer.clone();
            self.send_chunked(&peer, answers, |answers| Message::ClaimReply {
                claimer: claimer.clone(),
                answers,
            });
        }
    }

    /// Sends `items` to `peer` in messages of at most [`CLAIMS_PER_MESSAGE`] items.
    fn send_chunked<T: Clone>(
        &mut self,
        peer: &NodeId,
        items: Vec<T>,
        message: impl Fn(Vec<T>) -> Message,
    ) {
        for chunk in items.chunks(CLAIMS_PER_MESSAGE) {
            self.send_to(peer, message(chunk.to_vec()));
        }
    }

    /// Merges a record into the table and acts on it; returns whether it was news.
    fn apply_child(&mut self, now: Instant, record: ChildRecord) -> bool {
        let id = record.spec.id.clone();
        let Some(slot) = self
            .children
            .merge_slot(now, record, self.config.child_tombstone_ttl)
        else {
            return false;
        };
        slot.owner = owner_in(&self.view, &slot.record.spec, false);
        self.reconcile(&id);
        true
    }

    /// Child records are on their way (arriving here, or just started here and leaving):
    /// until they land, tables differ only because of them, and a repair would send whole
    /// buckets that are already in flight. Repairs started by a probe's mismatch wait for
    /// two probe periods without news; the periodic sync's repair still runs.
    fn defer_child_repair(&mut self, now: Instant) {
        let quiet = now + 2 * self.config.probe_interval;
        self.next_child_repair_at = self.next_child_repair_at.max(quiet);
    }

    /// Ends a distributed child cluster-wide, with `state` as the reason.
    fn end_record(&mut self, now: Instant, spec: ChildSpec, state: ChildState) {
        let stamp = self.children.next_stamp(&self.id.name);
        let record = ChildRecord {
            spec,
            stamp,
            state,
            ended_ms_ago: 0,
        };
        self.apply_child(now, record.clone());
        self.send_to_live(Message::Children {
            records: vec![record],
            ack: false,
        });
    }

    /// Ends a child whose restart policy or intensity says it is done.
    fn end_here(&mut self, now: Instant, spec: ChildSpec, singleton: bool, state: ChildState) {
        let id = spec.id.clone();
        self.running.remove(&id);
        self.release_lease(&id);
        if singleton && state == ChildState::GaveUp {
            // Giving up here need not mean giving up everywhere: the crashes may be this
            // node's own (a full disk, a bad driver). It withdraws its declaration, so the
            // next node in rendezvous order takes over with a fresh intensity.
            self.singletons.remove(&id);
            self.meta.singletons.retain(|(name, _)| *name != id);
            self.announce_self();
        } else if singleton {
            if let Some(s) = self.singletons.get_mut(&id) {
                s.ended = true;
            }
        } else {
            self.end_record(now, spec, state);
        }
        let event = match state {
            ChildState::GaveUp => SupervisorEvent::GaveUp { id },
            _ => SupervisorEvent::Completed { id },
        };
        self.supervisor_event(event);
    }

    /// Whether one more restart fits the child's intensity, forgetting restarts that left
    /// the window.
    fn within_intensity(&mut self, now: Instant, id: &ChildId, spec: &ChildSpec) -> bool {
        let window = spec.restart_window();
        let Some(running) = self.running.get_mut(id) else {
            return false;
        };
        while running
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            running.restarts.pop_front();
        }
        running.restarts.len() < spec.max_restarts as usize
    }

    fn report_conflicts(&mut self) {
        let mut found = Vec::new();
        for (id, meta) in self.view.values() {
            if *id == self.id {
                continue;
            }
            for (name, theirs) in &meta.singletons {
                let Some(mine) = self.singletons.get(name) else {
                    continue;
                };
                let key = (name.clone(), id.clone(), *theirs);
                if mine.fingerprint != *theirs && !self.reported_conflicts.contains(&key) {
                    found.push(key);
                }
            }
        }
        for key in found {
            let (name, peer, _) = key.clone();
            tracing::warn!(node = %self.id, singleton = %name, %peer, "singleton declared differently");
            if self.reported_conflicts.len() < 4 * MAX_SINGLETONS {
                self.reported_conflicts.insert(key);
            }
            self.supervisor_event(SupervisorEvent::SingletonConflict { name, peer });
        }
    }

    fn push_records(&mut self, to: &NodeId, buckets: &[usize]) {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for record in self.children.records_in(self.latest_now, buckets) {
            bytes += postcard::experimental::serialized_size(&record).unwrap_or(CHUNK_BYTES);
            chunk.push(record);
            if bytes >= CHUNK_BYTES {
                let records = std::mem::take(&mut chunk);
                self.send_to(
                    to,
                    Message::Children {
                        records,
                        ack: false,
                    },
                );
                bytes = 0;
            }
        }
        if !chunk.is_empty() {
            self.send_to(
                to,
                Message::Children {
                    records: chunk,
                    ack: false,
                },
            );
        }
    }

    fn send_to_live(&mut self, message: Message) {
        let peers: Vec<NodeId> = self.members.live().map(|m| m.id().clone()).collect();
        let Some((last, others)) = peers.split_last() else {
            return;
        };
        for peer in others {
            self.send_to(peer, message.clone());
        }
        self.send_to(last, message);
    }

    pub(super) fn supervisor_event(&mut self, event: SupervisorEvent) {
        self.actions.push_back(Action::Supervisor(event));
    }
}
