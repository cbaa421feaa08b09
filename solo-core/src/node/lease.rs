//! `Exclusive` mode: an owner runs an exclusive child only while a majority of the voters
//! grant it a lease, and every lease carries a fencing token.
//!
//! # The protocol
//!
//! * **Voters** are a fixed set of node names ([`NodeBuilder::voters`]), so a quorum never
//!   shifts with a partition's view. Any member may hold a lease; only voters grant.
//! * **Acquiring.** The owner (placement's choice, once its claim is answered) proposes a
//!   token above every token it has seen and sends one [`Message::LeaseRequest`] per voter,
//!   noting the time *before* it sent. A voter grants if the token is above the highest it
//!   knows for the child (or is that token, granted to this very holder: a renewal) and no
//!   other holder's grant is still running on its clock; it then grants for
//!   [`Config::lease_duration`](crate::Config::lease_duration) of its own clock. A request
//!   that finds another holder's grant waits at the voter until that grant is released or
//!   runs out, so a graceful move costs round trips, not a lease.
//! * **Holding.** The holder's lease runs from the `k`-th latest request time at which the
//!   voters granted (`k` a majority) for [`Config::holder_lease`](crate::Config::holder_lease),
//!   which is shorter than any voter's grant can last in real time when clock rates stay
//!   within [`Config::max_clock_drift_ppm`](crate::Config::max_clock_drift_ppm). It renews
//!   every [`Config::lease_renew_interval`](crate::Config::lease_renew_interval), and asks
//!   the runtime to stop the worker
//!   [`Config::lease_stop_grace`](crate::Config::lease_stop_grace) before its lease ends if
//!   the renewals did not get through; the runtime aborts it at the end.
//! * **Renewing.** One [`Message::LeaseRenew`] per voter renews every lease that voter
//!   granted the holder, whatever their number: it carries only how many leases the
//!   holder counts there and a digest of them (ids and tokens). The voter renews if its
//!   running grants to that process are exactly that set, and says so; if the sets
//!   differ (a grant or a release still in flight, a voter that restarted), it renews
//!   nothing and the holder asks lease by lease ([`Message::LeaseRequest`]), which is
//!   also how leases are acquired. So renewal traffic grows with nodes, not with
//!   exclusive children.
//! * **Tokens.** Two holders cannot both be granted by a majority at once (majorities
//!   intersect, and a voter grants one holder at a time); a voter grants only a token above
//!   every token it granted for the child, so a later holder's token is above an earlier
//!   one's. A restart of the worker is a new start, under a new token.
//! * **Voters that restart** wait out one lease before they grant anything (a grant made
//!   before the restart may still be counted on). Their highest tokens come from their data
//!   directory ([`NodeBuilder::persisted_tokens`]), or else from enough other voters that
//!   any token a majority granted is known to one of them; see [`NodeBuilder::token_floor`]
//!   for what happens when every voter lost its state at once.
//!
//! [`NodeBuilder::voters`]: crate::NodeBuilder::voters
//! [`NodeBuilder::persisted_tokens`]: crate::NodeBuilder::persisted_tokens
//! [`NodeBuilder::token_floor`]: crate::NodeBuilder::token_floor

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::ownership::sooner;
use super::{Action, Node};
use crate::id::{NodeId, NodeName};
use crate::placement::ChildId;
use crate::supervisor::{LeaseLoss, StopReason, SupervisorEvent};
use crate::wire::{LeaseAnswer, LeaseVerdict, Message};

/// Leases (or answers) per message: a child id is at most `MAX_CHILD_ID_LEN` bytes, so a
/// message of this many stays well under the frame limit.
const LEASES_PER_MESSAGE: usize = 2048;
/// A voter with a data directory makes durable this many tokens beyond the one it grants,
/// so that one write covers many grants.
const PERSIST_AHEAD: u64 = 1024;
/// Request times kept for matching answers; older requests could only give grants that
/// have run out already.
const MAX_SENT: usize = 64;
/// Renewals by digest kept per voter for matching answers (and answers queued per holder
/// at a voter): a renewal goes out every quarter lease, so older ones could only extend a
/// lease by less than the newer ones will.
const RENEWALS_KEPT: usize = 8;

/// How a holder and a voter describe a set of leases in a [`Message::LeaseRenew`]: the
/// number of leases and XXH3-128 over them in id order (each id's bytes, `0xFF`, which
/// UTF-8 never contains, then the token's little-endian bytes). A published, versioned
/// hash, so that nodes built by different compilers agree.
fn lease_set_digest<'a>(leases: impl Iterator<Item = (&'a ChildId, u64)>) -> (u32, u128) {
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    let mut count = 0u32;
    for (id, token) in leases {
        hasher.update(id.as_str().as_bytes());
        hasher.update(&[0xFF]);
        hasher.update(&token.to_le_bytes());
        count = count.saturating_add(1);
    }
    (count, hasher.digest128())
}

/// The leases one [`Message::LeaseRenew`] covered.
type RenewedSet = std::sync::Arc<[(ChildId, u64)]>;

/// The lease that lets an instance of an exclusive child run: what the worker hands to
/// external systems so that they can reject a stale owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// Strictly greater than every token granted before for this child.
    pub token: u64,
    /// The instance must have stopped by then (on this node's clock), unless
    /// [`Action::LeaseExtended`] moves it later. The runtime aborts it there.
    pub valid_until: Instant,
}

/// A node's lease state: as the holder of exclusive children, and as a voter when its name
/// is among the voters.
#[derive(Debug)]
pub(super) struct Leases {
    voters: BTreeSet<NodeName>,
    holdings: BTreeMap<ChildId, Holding>,
    /// When each request batch was sent (before it was sent), by sequence number.
    sent: BTreeMap<u32, Instant>,
    next_seq: u32,
    /// The highest token seen for any child: a new lease proposes above it, so that it is
    /// usually granted at the first try.
    token_hint: u64,
    /// Leases to request (or renew) from every voter at the next `poll_transmit`.
    unsent_requests: BTreeSet<ChildId>,
    unsent_releases: Vec<(ChildId, u64)>,
    /// Voters whose leases are renewed at the next `poll_transmit`.
    renew_due: BTreeSet<NodeName>,
    /// Per voter, the latest renewals sent by digest and the leases each covered.
    renewals: BTreeMap<NodeName, std::collections::VecDeque<(u32, RenewedSet)>>,
    /// When held leases are next renewed.
    renew_at: Option<Instant>,
    /// When a held lease may next have to be given up.
    check_at: Option<Instant>,
    voter: Option<Voter>,
    /// Test-only sabotage: count grants from the answer, not from the request.
    sabotage_count_from_reply: bool,
    /// Test-only sabotage: as a voter, answer every renewal by digest as renewed.
    pub(super) sabotage_renew_blindly: bool,
}

/// One exclusive child this node holds, or is acquiring, a lease for.
#[derive(Debug)]
struct Holding {
    token: u64,
    /// Per voter, the send time of the latest request it granted under `token`.
    granted: BTreeMap<NodeName, Instant>,
    /// Until when the lease holds, once a majority granted.
    valid_until: Option<Instant>,
    /// Whether the instance was started under it.
    started: bool,
    /// Given up: the instance is stopping, and nothing is renewed.
    lost: bool,
}

#[derive(Debug)]
struct Voter {
    phase: Phase,
    /// No ballot is created below this: the highest token this voter may ever have
    /// granted before it (re)started, and of ballots it forgot to stay bounded.
    floor: u64,
    /// The floor it started with, for a cluster whose every voter lost its state.
    boot_floor: u64,
    /// The highest token granted here for any child.
    max_granted: u64,
    ballots: BTreeMap<ChildId, Ballot>,
    /// Ballots with a request waiting for another holder's grant to end.
    waiting: BTreeSet<ChildId>,
    unsent_answers: BTreeMap<NodeId, Vec<LeaseAnswer>>,
    /// Answers to [`Message::LeaseRenew`]s, per holder: `seq` and whether it renewed.
    unsent_renewals: BTreeMap<NodeId, Vec<(u32, bool)>>,
    /// With a data directory: what is durable, and answers that wait for it.
    persist: Option<Persist>,
}

#[derive(Debug)]
struct Persist {
    /// Every token granted here is at most this, on disk.
    durable: u64,
    /// The value asked of the runtime, not yet confirmed.
    requested: u64,
    held: Vec<(NodeId, LeaseAnswer)>,
}

#[derive(Debug)]
enum Phase {
    /// Waits out one lease after starting: a grant made before a restart may be counted on.
    Quarantine {
        until: Instant,
    },
    /// Asks the other voters for the highest token they know (no data directory).
    Recovering {
        /// What each voter answered: `Some(floor)` if it knows, `None` if it recovers too,
        /// with its boot floor.
        heard: BTreeMap<NodeName, (Option<u64>, u64)>,
        query_at: Instant,
        /// From then on, a voter that heard from enough others to form a majority, but
        /// not from enough that know, continues above the boot floors.
        fallback_at: Instant,
        /// Whether `fallback_at` has passed.
        fallback_due: bool,
    },
    Voting,
}

#[derive(Debug, Default)]
struct Ballot {
    highest: u64,
    /// Who was granted `highest` (a renewal by it is granted again).
    highest_holder: Option<NodeId>,
    /// `highest_holder` released `highest`: a renewal of it that arrives later (reordered
    /// behind the release) is refused, so the next holder need not wait a lease.
    released: bool,
    grant: Option<Grant>,
    /// A request waiting for `grant` to end: holder, token, request seq.
    waiter: Option<(NodeId, u64, u32)>,
}

#[derive(Debug)]
struct Grant {
    holder: NodeId,
    token: u64,
    until: Instant,
}

/// How a node starts as a voter.
#[derive(Debug, Clone, Copy)]
pub(super) struct VoterStart {
    pub(super) boot_floor: u64,
    pub(super) persisted: Option<u64>,
}

impl Leases {
    pub(super) fn new(
        me: &NodeName,
        voters: BTreeSet<NodeName>,
        start: VoterStart,
        now: Instant,
        quarantine: std::time::Duration,
        sabotage_count_from_reply: bool,
    ) -> Self {
        let voter = voters.contains(me).then(|| {
            let floor = start.persisted.unwrap_or(start.boot_floor);
            Voter {
                phase: Phase::Quarantine {
                    until: now + quarantine,
                },
                floor,
                boot_floor: start.boot_floor,
                max_granted: floor,
                ballots: BTreeMap::new(),
                waiting: BTreeSet::new(),
                unsent_answers: BTreeMap::new(),
                unsent_renewals: BTreeMap::new(),
                persist: start.persisted.map(|durable| Persist {
                    durable,
                    requested: durable,
                    held: Vec::new(),
                }),
            }
        });
        Self {
            voters,
            holdings: BTreeMap::new(),
            sent: BTreeMap::new(),
            next_seq: 0,
            token_hint: start.persisted.unwrap_or(start.boot_floor),
            unsent_requests: BTreeSet::new(),
            unsent_releases: Vec::new(),
            renew_due: BTreeSet::new(),
            renewals: BTreeMap::new(),
            renew_at: None,
            check_at: None,
            voter,
            sabotage_count_from_reply,
            sabotage_renew_blindly: false,
        }
    }

    pub(super) fn has_voters(&self) -> bool {
        !self.voters.is_empty()
    }

    /// Whether `name` is one of the voters.
    pub(super) fn is_voter(&self, name: &NodeName) -> bool {
        self.voters.contains(name)
    }

    fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The earliest of the lease deadlines, for `poll_timeout`.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.renew_at;
        if let Some(at) = self.check_at {
            sooner(&mut next, at);
        }
        if let Some(voter) = &self.voter {
            if let Some(at) = voter.next_deadline(&self.waiting_until()) {
                sooner(&mut next, at);
            }
        }
        next
    }

    fn waiting_until(&self) -> Option<Instant> {
        let voter = self.voter.as_ref()?;
        voter
            .waiting
            .iter()
            .filter_map(|id| voter.ballots.get(id)?.grant.as_ref().map(|g| g.until))
            .min()
    }

    pub(super) fn has_unsent(&self) -> bool {
        !self.unsent_requests.is_empty()
            || !self.unsent_releases.is_empty()
            || !self.renew_due.is_empty()
            || self
                .voter
                .as_ref()
                .is_some_and(|v| !v.unsent_answers.is_empty() || !v.unsent_renewals.is_empty())
    }

    /// The token a held lease carries, if its instance runs under it.
    pub(super) fn token(&self, id: &ChildId) -> Option<u64> {
        self.holdings
            .get(id)
            .filter(|h| h.started && !h.lost)
            .map(|h| h.token)
    }
}

impl Leases {
    /// What to ask `voter` at this flush: the leases to request one by one (new ones, and
    /// renewals of those it has not granted under the current token), and those renewed
    /// by digest, in id order.
    #[allow(clippy::type_complexity)]
    fn to_ask(
        &self,
        voter: &NodeName,
        asked: &BTreeSet<ChildId>,
        renew_due: &BTreeSet<NodeName>,
    ) -> (Vec<(ChildId, u64)>, Vec<(ChildId, u64)>) {
        let mut by_request = Vec::new();
        let mut by_digest = Vec::new();
        if renew_due.contains(voter) {
            for (id, holding) in self.holdings.iter().filter(|(_, h)| !h.lost) {
                let lease = (id.clone(), holding.token);
                if holding.granted.contains_key(voter) && !asked.contains(id) {
                    by_digest.push(lease);
                } else {
                    by_request.push(lease);
                }
            }
        } else {
            by_request.extend(
                asked
                    .iter()
                    .filter_map(|id| self.holdings.get(id).map(|h| (id.clone(), h.token))),
            );
        }
        (by_request, by_digest)
    }
}

impl Voter {
    fn voting(&self) -> bool {
        matches!(self.phase, Phase::Voting)
    }

    fn next_deadline(&self, waiting_until: &Option<Instant>) -> Option<Instant> {
        let mut next = *waiting_until;
        match &self.phase {
            Phase::Quarantine { until } => sooner(&mut next, *until),
            Phase::Recovering {
                query_at,
                fallback_at,
                fallback_due,
                ..
            } => {
                sooner(&mut next, *query_at);
                if !fallback_due {
                    sooner(&mut next, *fallback_at);
                }
            }
            Phase::Voting => {}
        }
        next
    }

    /// What this voter answers to a floor query: the highest token it knows, once it knows.
    fn known_floor(&self) -> Option<u64> {
        let knows = self.voting() || self.persist.is_some();
        knows.then_some(self.max_granted.max(self.floor))
    }

    /// Decides one lease request from `holder`, for `lease` of this voter's clock. `Some`
    /// is the answer to send now; `None` means the request waits for another holder's grant
    /// to end.
    fn decide(
        &mut self,
        now: Instant,
        holder: &NodeId,
        (id, token, seq): (&ChildId, u64, u32),
        lease: std::time::Duration,
        max_ballots: usize,
    ) -> Option<LeaseVerdict> {
        if !self.voting() {
            return Some(LeaseVerdict::NotVoting);
        }
        if !self.ballots.contains_key(id) {
            self.make_room(now, max_ballots);
            let floor = self.floor;
            self.ballots.insert(
                id.clone(),
                Ballot {
                    highest: floor,
                    ..Ballot::default()
                },
            );
        }
        let ballot = self.ballots.get_mut(id)?;
        let renewal = token == ballot.highest
            && ballot.highest_holder.as_ref() == Some(holder)
            && !ballot.released;
        if token < ballot.highest || (token == ballot.highest && !renewal) {
            return Some(LeaseVerdict::Refused {
                highest: ballot.highest,
            });
        }
        let taken = ballot
            .grant
            .as_ref()
            .is_some_and(|g| g.until > now && g.holder != *holder);
        if taken {
            ballot.waiter = Some((holder.clone(), token, seq));
            self.waiting.insert(id.clone());
            return None;
        }
        ballot.highest = token;
        ballot.highest_holder = Some(holder.clone());
        ballot.released = false;
        ballot.grant = Some(Grant {
            holder: holder.clone(),
            token,
            until: now + lease,
        });
        if ballot.waiter.as_ref().is_some_and(|(h, _, _)| h == holder) {
            ballot.waiter = None;
            self.waiting.remove(id);
        }
        self.max_granted = self.max_granted.max(token);
        Some(LeaseVerdict::Granted)
    }

    /// Keeps the ballots within `max`: forgets one with no grant running and no waiter,
    /// folding its highest token into the floor (so nothing granted can repeat).
    fn make_room(&mut self, now: Instant, max: usize) {
        if self.ballots.len() < max {
            return;
        }
        let idle = self
            .ballots
            .iter()
            .find(|(_, b)| b.waiter.is_none() && b.grant.as_ref().is_none_or(|g| g.until <= now))
            .map(|(id, _)| id.clone());
        if let Some(id) = idle {
            if let Some(ballot) = self.ballots.remove(&id) {
                self.floor = self.floor.max(ballot.highest);
            }
        }
    }
}

impl Node {
    // ----- holder --------------------------------------------------------------------------

    /// Starts acquiring the lease of exclusive child `id`, under a token above every one
    /// this node has seen.
    pub(super) fn acquire_lease(&mut self, id: &ChildId) {
        let token = self.leases.token_hint + 1;
        self.leases.token_hint = token;
        self.leases.holdings.insert(
            id.clone(),
            Holding {
                token,
                granted: BTreeMap::new(),
                valid_until: None,
                started: false,
                lost: false,
            },
        );
        self.leases.unsent_requests.insert(id.clone());
        self.arm_renewals();
    }

    /// The instance of `id` ended (or never started): its lease is released at every voter.
    pub(super) fn release_lease(&mut self, id: &ChildId) {
        if let Some(holding) = self.leases.holdings.remove(id) {
            self.leases.unsent_requests.remove(id);
            self.leases
                .unsent_releases
                .push((id.clone(), holding.token));
        }
    }

    /// A restarted instance is a new start: it needs a new, larger token. The lease is
    /// still held, so a voter grants the new token to this holder at once.
    pub(super) fn reacquire_lease(&mut self, id: &ChildId) {
        let hint = self.leases.token_hint;
        if let Some(holding) = self.leases.holdings.get_mut(id) {
            holding.token = holding.token.max(hint) + 1;
            holding.granted.clear();
            holding.valid_until = None;
            holding.started = false;
            self.leases.token_hint = holding.token;
            self.leases.unsent_requests.insert(id.clone());
        } else {
            self.acquire_lease(id);
        }
    }

    fn arm_renewals(&mut self) {
        if self.leases.renew_at.is_none() {
            self.leases.renew_at = Some(self.latest_now + self.config.lease_renew_interval());
        }
    }

    /// A voter answered lease requests of this node.
    pub(super) fn handle_lease_reply(
        &mut self,
        now: Instant,
        from: &NodeId,
        answers: Vec<LeaseAnswer>,
    ) {
        if !self.leases.is_voter(&from.name) {
            return;
        }
        for answer in answers.into_iter().take(self.config.max_children) {
            self.lease_answer(now, &from.name, answer);
        }
    }

    fn lease_answer(&mut self, now: Instant, voter: &NodeName, answer: LeaseAnswer) {
        let Some(sent_at) = self.leases.sent.get(&answer.seq).copied() else {
            return;
        };
        let Some(holding) = self
            .leases
            .holdings
            .get_mut(&answer.id)
            .filter(|h| h.token == answer.token && !h.lost)
        else {
            if let LeaseVerdict::Refused { highest } = answer.verdict {
                self.leases.token_hint = self.leases.token_hint.max(highest);
            }
            return;
        };
        match answer.verdict {
            LeaseVerdict::NotVoting => {}
            LeaseVerdict::Refused { highest } => {
                self.leases.token_hint = self.leases.token_hint.max(highest);
                if holding.started && highest <= holding.token {
                    // The voter forgot this holder (it restarted): its grant is no longer
                    // counted, and the others' may still hold the lease.
                    holding.granted.remove(voter);
                } else if holding.started {
                    // A newer holder was granted a larger token: this lease is gone.
                    self.lose_lease(&answer.id, LeaseLoss::Taken);
                } else {
                    holding.token = highest.max(self.leases.token_hint) + 1;
                    self.leases.token_hint = holding.token;
                    holding.granted.clear();
                    self.leases.unsent_requests.insert(answer.id.clone());
                }
            }
            LeaseVerdict::Granted => self.count_grant(now, voter, &answer.id, sent_at),
        }
    }

    /// `voter` granted (or renewed) the lease this node holds on `id` under its current
    /// token, in answer to a request sent at `sent_at`: the lease holds longer, or starts.
    fn count_grant(&mut self, now: Instant, voter: &NodeName, id: &ChildId, sent_at: Instant) {
        let majority = self.leases.majority();
        let holder_lease = self.config.holder_lease();
        let counted_from = if self.leases.sabotage_count_from_reply {
            now
        } else {
            sent_at
        };
        let Some(holding) = self.leases.holdings.get_mut(id).filter(|h| !h.lost) else {
            return;
        };
        let entry = holding.granted.entry(voter.clone()).or_insert(counted_from);
        *entry = (*entry).max(counted_from);
        let mut times: Vec<Instant> = holding.granted.values().copied().collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&kth) = times.get(majority - 1) else {
            return;
        };
        let until = kth + holder_lease;
        if holding.valid_until.is_some_and(|v| v >= until) || until <= now {
            return;
        }
        holding.valid_until = Some(until);
        let token = holding.token;
        if holding.started {
            if let Some(instance) = self.instance_of(id) {
                self.actions.push_back(Action::LeaseExtended {
                    id: id.clone(),
                    instance,
                    valid_until: until,
                });
            }
        } else {
            holding.started = true;
            let fence = Fence {
                token,
                valid_until: until,
            };
            self.lease_acquired(id, fence);
        }
        let check = until - self.config.lease_stop_grace.min(holder_lease);
        sooner(&mut self.leases.check_at, check);
    }

    /// A voter answered a renewal by digest ([`Message::LeaseRenew`]): every lease it covered
    /// that still runs under the same token holds longer; if the voter's grants differed,
    /// they are asked for lease by lease at once.
    pub(super) fn handle_lease_renewed(
        &mut self,
        now: Instant,
        from: &NodeId,
        seq: u32,
        renewed: bool,
    ) {
        if !self.leases.is_voter(&from.name) {
            return;
        }
        let Some(sent_at) = self.leases.sent.get(&seq).copied() else {
            return;
        };
        let Some(covered) = self
            .leases
            .renewals
            .get(&from.name)
            .and_then(|sent| sent.iter().find(|(s, _)| *s == seq))
            .map(|(_, covered)| covered.clone())
        else {
            return;
        };
        for (id, token) in covered.iter() {
            let current = self
                .leases
                .holdings
                .get_mut(id)
                .filter(|h| h.token == *token && !h.lost);
            match current {
                Some(_) if renewed => self.count_grant(now, &from.name, id, sent_at),
                // Not counted at this voter until it grants the lease again, by request.
                Some(holding) => {
                    holding.granted.remove(&from.name);
                }
                None => {}
            }
        }
        if !renewed {
            tracing::debug!(node = %self.id, voter = %from, "lease sets differ: renewing lease by lease");
            self.leases.renew_due.insert(from.name.clone());
        }
    }

    /// Gives up the lease of `id`: its instance is asked to stop before the lease ends.
    fn lose_lease(&mut self, id: &ChildId, loss: LeaseLoss) {
        let Some(holding) = self.leases.holdings.get_mut(id) else {
            return;
        };
        if holding.lost {
            return;
        }
        holding.lost = true;
        let token = holding.token;
        let deadline = holding.valid_until.unwrap_or(self.latest_now);
        self.leases.unsent_requests.remove(id);
        tracing::warn!(node = %self.id, child = %id, token, ?loss, "lease lost");
        self.supervisor_event(SupervisorEvent::LeaseLost {
            id: id.clone(),
            token,
            reason: loss,
        });
        self.stop_here(id, StopReason::LeaseLost { deadline });
    }

    /// Renews held leases, and gives up those that could not be renewed in time.
    pub(super) fn lease_tick(&mut self, now: Instant) {
        if self.leases.renew_at.is_some_and(|at| at <= now) {
            self.leases.renew_at = None;
            if self.leases.holdings.values().any(|h| !h.lost) {
                let voters = self.leases.voters.clone();
                self.leases.renew_due.extend(voters);
                self.arm_renewals();
            }
        }
        if self.leases.check_at.is_some_and(|at| at <= now) {
            let grace = self.config.lease_stop_grace;
            let mut next = None;
            let mut expired = Vec::new();
            for (id, holding) in &self.leases.holdings {
                let Some(until) = holding
                    .valid_until
                    .filter(|_| holding.started && !holding.lost)
                else {
                    continue;
                };
                let check = until.checked_sub(grace).unwrap_or(until);
                if check <= now {
                    expired.push(id.clone());
                } else {
                    sooner(&mut next, check);
                }
            }
            self.leases.check_at = next;
            for id in expired {
                self.lose_lease(&id, LeaseLoss::NotRenewed);
            }
        }
        self.voter_tick(now);
    }

    /// Sends the queued lease requests, releases and answers; answers this node gives its
    /// own requests (it is a voter) are handled at once.
    pub(super) fn flush_leases(&mut self) {
        let mut to_self = Vec::new();
        if !self.leases.unsent_requests.is_empty() || !self.leases.renew_due.is_empty() {
            let asked = std::mem::take(&mut self.leases.unsent_requests);
            let renew_due = std::mem::take(&mut self.leases.renew_due);
            self.leases.next_seq = self.leases.next_seq.wrapping_add(1);
            let seq = self.leases.next_seq;
            // Counted from now, before anything is sent.
            self.leases.sent.insert(seq, self.latest_now);
            while self.leases.sent.len() > MAX_SENT {
                self.leases.sent.pop_first();
            }
            for voter in self.leases.voters.clone() {
                let (by_request, by_digest) = self.leases.to_ask(&voter, &asked, &renew_due);
                if voter == self.id.name {
                    // This node's own grants cost no message: asked one by one.
                    let me = self.id.clone();
                    let mut leases = by_request;
                    leases.extend(by_digest);
                    to_self.extend(self.voter_requests(self.latest_now, &me, seq, leases));
                    continue;
                }
                let Some(peer) = self.live_peer(&voter) else {
                    continue;
                };
                for chunk in by_request.chunks(LEASES_PER_MESSAGE) {
                    let leases = chunk.to_vec();
                    self.send_to(&peer, Message::LeaseRequest { seq, leases });
                }
                if !by_digest.is_empty() {
                    let (count, digest) =
                        lease_set_digest(by_digest.iter().map(|(id, t)| (id, *t)));
                    let sent = self.leases.renewals.entry(voter).or_default();
                    sent.push_back((seq, by_digest.into()));
                    while sent.len() > RENEWALS_KEPT {
                        sent.pop_front();
                    }
                    self.send_to(&peer, Message::LeaseRenew { seq, count, digest });
                }
            }
        }
        if !self.leases.unsent_releases.is_empty() {
            let releases = std::mem::take(&mut self.leases.unsent_releases);
            for voter in self.leases.voters.clone() {
                if voter == self.id.name {
                    let me = self.id.clone();
                    self.voter_release(self.latest_now, &me, releases.clone());
                } else if let Some(peer) = self.live_peer(&voter) {
                    for chunk in releases.chunks(LEASES_PER_MESSAGE) {
                        let leases = chunk.to_vec();
                        self.send_to(&peer, Message::LeaseRelease { leases });
                    }
                }
            }
        }
        if let Some(voter) = self.leases.voter.as_mut() {
            let mut unsent = std::mem::take(&mut voter.unsent_answers);
            if let Some(mine) = unsent.remove(&self.id) {
                to_self.extend(mine);
            }
            let renewals = std::mem::take(&mut voter.unsent_renewals);
            for (peer, answers) in unsent {
                for chunk in answers.chunks(LEASES_PER_MESSAGE) {
                    let answers = chunk.to_vec();
                    let holder = peer.clone();
                    self.send_to(&peer, Message::LeaseReply { holder, answers });
                }
            }
            for (peer, answers) in renewals {
                for (seq, renewed) in answers {
                    let holder = peer.clone();
                    self.send_to(
                        &peer,
                        Message::LeaseRenewed {
                            holder,
                            seq,
                            renewed,
                        },
                    );
                }
            }
        }
        if !to_self.is_empty() {
            let me = self.id.name.clone();
            let now = self.latest_now;
            for answer in to_self {
                self.lease_answer(now, &me, answer);
            }
        }
    }

    fn live_peer(&self, name: &NodeName) -> Option<NodeId> {
        self.members
            .get(name)
            .filter(|m| m.state().is_live())
            .map(|m| m.id().clone())
    }

    // ----- voter ---------------------------------------------------------------------------

    /// A holder asks for leases. Answers are queued for it (or returned, for this node's own
    /// requests).
    pub(super) fn handle_lease_request(
        &mut self,
        now: Instant,
        from: &NodeId,
        seq: u32,
        leases: Vec<(ChildId, u64)>,
    ) {
        let answers = self.voter_requests(now, from, seq, leases);
        if let Some(voter) = self.leases.voter.as_mut() {
            if !answers.is_empty() {
                voter
                    .unsent_answers
                    .entry(from.clone())
                    .or_default()
                    .extend(answers);
            }
        }
    }

    /// A holder renews, by digest, every lease this voter granted it
    /// ([`Message::LeaseRenew`]): renewed only if this voter's running grants to it are
    /// exactly the set described, so the holder never counts a grant this voter does not
    /// hold (a grant given meanwhile to another holder, one this voter forgot).
    pub(super) fn handle_lease_renew(
        &mut self,
        now: Instant,
        from: &NodeId,
        seq: u32,
        (count, digest): (u32, u128),
    ) {
        let lease = self.config.lease_duration;
        let blindly = self.leases.sabotage_renew_blindly;
        let Some(voter) = self.leases.voter.as_mut() else {
            return;
        };
        let granted_to_holder = |ballot: &Ballot| {
            ballot.highest_holder.as_ref() == Some(from)
                && !ballot.released
                && ballot.grant.as_ref().is_some_and(|g| {
                    g.holder == *from && g.token == ballot.highest && g.until > now
                })
        };
        let mine = voter
            .ballots
            .iter()
            .filter(|(_, b)| granted_to_holder(b))
            .map(|(id, b)| (id, b.highest));
        let renewed = voter.voting() && (blindly || lease_set_digest(mine) == (count, digest));
        if renewed {
            for ballot in voter.ballots.values_mut() {
                if granted_to_holder(ballot) {
                    if let Some(grant) = ballot.grant.as_mut() {
                        grant.until = now + lease;
                    }
                }
            }
        }
        let answers = voter.unsent_renewals.entry(from.clone()).or_default();
        answers.push((seq, renewed));
        if answers.len() > RENEWALS_KEPT {
            answers.remove(0);
        }
    }

    fn voter_requests(
        &mut self,
        now: Instant,
        from: &NodeId,
        seq: u32,
        leases: Vec<(ChildId, u64)>,
    ) -> Vec<LeaseAnswer> {
        let lease = self.config.lease_duration;
        let max = self.config.max_children;
        let mut answers = Vec::new();
        let Some(voter) = self.leases.voter.as_mut() else {
            return answers;
        };
        let mut needs_persist = 0;
        for (id, token) in leases.into_iter().take(max) {
            let Some(verdict) = voter.decide(now, from, (&id, token, seq), lease, max) else {
                continue;
            };
            let answer = LeaseAnswer {
                id,
                token,
                seq,
                verdict,
            };
            match voter.persist.as_mut() {
                Some(persist) if verdict == LeaseVerdict::Granted && token > persist.durable => {
                    needs_persist = needs_persist.max(token);
                    persist.held.push((from.clone(), answer));
                }
                _ => answers.push(answer),
            }
        }
        if needs_persist > 0 {
            self.request_persist(needs_persist);
        }
        answers
    }

    /// Asks the runtime to make tokens up to (and beyond) `token` durable, if not asked yet.
    fn request_persist(&mut self, token: u64) {
        let Some(persist) = self.leases.voter.as_mut().and_then(|v| v.persist.as_mut()) else {
            return;
        };
        if persist.requested >= token {
            return;
        }
        persist.requested = token.saturating_add(PERSIST_AHEAD);
        let up_to = persist.requested;
        self.actions.push_back(Action::PersistTokens { up_to });
    }

    /// The runtime made `up_to` durable ([`Action::PersistTokens`]): the grants that waited
    /// for it are answered.
    pub fn tokens_persisted(&mut self, now: Instant, up_to: u64) {
        self.latest_now = self.latest_now.max(now);
        let Some(voter) = self.leases.voter.as_mut() else {
            return;
        };
        let Some(persist) = voter.persist.as_mut() else {
            return;
        };
        persist.durable = persist.durable.max(up_to);
        let durable = persist.durable;
        let (ready, held): (Vec<_>, Vec<_>) = std::mem::take(&mut persist.held)
            .into_iter()
            .partition(|(_, a)| a.token <= durable);
        persist.held = held;
        for (peer, answer) in ready {
            voter.unsent_answers.entry(peer).or_default().push(answer);
        }
        self.after_input_at(now);
    }

    /// A holder released leases: grants that match end, and a request that waited for one
    /// is granted.
    pub(super) fn voter_release(
        &mut self,
        now: Instant,
        from: &NodeId,
        leases: Vec<(ChildId, u64)>,
    ) {
        let Some(voter) = self.leases.voter.as_mut() else {
            return;
        };
        let mut freed = Vec::new();
        for (id, token) in leases.into_iter().take(self.config.max_children) {
            let Some(ballot) = voter.ballots.get_mut(&id) else {
                continue;
            };
            if ballot.highest == token && ballot.highest_holder.as_ref() == Some(from) {
                ballot.released = true;
            }
            if ballot
                .grant
                .as_ref()
                .is_some_and(|g| g.holder == *from && g.token == token)
            {
                ballot.grant = None;
                freed.push(id.clone());
            }
            if ballot
                .waiter
                .as_ref()
                .is_some_and(|(h, t, _)| h == from && *t == token)
            {
                ballot.waiter = None;
                voter.waiting.remove(&id);
            }
        }
        for id in freed {
            self.grant_waiter(now, &id);
        }
    }

    /// The process `gone` is known to be gone ([`Config::crash_evidence`](crate::Config::crash_evidence)):
    /// its grants end now, as a release would end them (a renewal of theirs that arrives
    /// late is refused), and the requests that waited for them are decided.
    pub(super) fn voter_process_gone(&mut self, now: Instant, gone: &NodeId) {
        let Some(voter) = self.leases.voter.as_mut() else {
            return;
        };
        let mut freed = Vec::new();
        for (id, ballot) in &mut voter.ballots {
            if ballot.highest_holder.as_ref() == Some(gone) {
                ballot.released = true;
            }
            if ballot.grant.as_ref().is_some_and(|g| g.holder == *gone) {
                ballot.grant = None;
                freed.push(id.clone());
            }
            if ballot.waiter.as_ref().is_some_and(|(h, _, _)| h == gone) {
                ballot.waiter = None;
                voter.waiting.remove(id);
            }
        }
        if !freed.is_empty() {
            tracing::debug!(node = %self.id, %gone, freed = freed.len(), "leases of a process known to be gone freed");
        }
        for id in freed {
            self.grant_waiter(now, &id);
        }
    }

    /// The grant on `id` ended: the request that waited for it is decided now.
    fn grant_waiter(&mut self, now: Instant, id: &ChildId) {
        let Some(voter) = self.leases.voter.as_mut() else {
            return;
        };
        let Some((holder, token, seq)) = voter.ballots.get_mut(id).and_then(|b| b.waiter.take())
        else {
            return;
        };
        voter.waiting.remove(id);
        self.handle_lease_request(now, &holder, seq, vec![(id.clone(), token)]);
    }

    fn voter_tick(&mut self, now: Instant) {
        let Some(voter) = self.leases.voter.as_mut() else {
            return;
        };
        if let Phase::Quarantine { until } = voter.phase {
            if until <= now {
                voter.phase = if voter.persist.is_some() || self.leases.voters.len() == 1 {
                    Phase::Voting
                } else {
                    Phase::Recovering {
                        heard: BTreeMap::new(),
                        query_at: now,
                        fallback_at: now + self.config.lease_duration,
                        fallback_due: false,
                    }
                };
                tracing::debug!(node = %self.id, voting = voter.voting(), "voter quarantine over");
            }
        }
        let query = match &mut voter.phase {
            Phase::Recovering {
                query_at,
                fallback_at,
                fallback_due,
                ..
            } => {
                *fallback_due |= *fallback_at <= now;
                let due = *query_at <= now;
                if due {
                    *query_at = now + self.config.lease_renew_interval();
                }
                due
            }
            _ => false,
        };
        self.try_recover();
        if query {
            for name in self.leases.voters.clone() {
                if name != self.id.name
                    && let Some(peer) = self.live_peer(&name)
                {
                    self.send_to(&peer, Message::TokenFloorQuery);
                }
            }
        }
        let Some(voter) = self.leases.voter.as_ref() else {
            return;
        };
        let due: Vec<ChildId> = voter
            .waiting
            .iter()
            .filter(|id| {
                voter
                    .ballots
                    .get(*id)
                    .is_none_or(|b| b.grant.as_ref().is_none_or(|g| g.until <= now))
            })
            .cloned()
            .collect();
        for id in due {
            self.grant_waiter(now, &id);
        }
    }

    /// Another voter asks what this one knows.
    pub(super) fn handle_floor_query(&mut self, from: &NodeId) {
        if !self.leases.voters.contains(&from.name) {
            return;
        }
        let Some(voter) = self.leases.voter.as_ref() else {
            return;
        };
        let message = Message::TokenFloor {
            floor: voter.known_floor(),
            boot_floor: voter.boot_floor,
        };
        self.send_to(from, message);
    }

    /// Another voter says what it knows.
    pub(super) fn handle_floor(&mut self, from: &NodeId, floor: Option<u64>, boot_floor: u64) {
        if !self.leases.voters.contains(&from.name) || from.name == self.id.name {
            return;
        }
        let Some(voter) = self.leases.voter.as_mut() else {
            return;
        };
        let Phase::Recovering { heard, .. } = &mut voter.phase else {
            return;
        };
        heard.insert(from.name.clone(), (floor, boot_floor));
        self.try_recover();
    }

    /// A recovering voter starts to vote once it knows a floor above every token that may
    /// have been granted with its part before it restarted:
    ///
    /// * **from the voters that know**: a token granted by a majority is known to at least
    ///   `majority - 1` voters other than this one, so hearing from `n - majority + 1`
    ///   others that know meets one of them, whatever the clocks;
    /// * **or, when that many cannot answer** (a majority of the voters lost its state at
    ///   once: a whole-cluster restart, the first start of a cluster), once it heard from
    ///   enough voters to form a majority, and either waited one more lease or knows that
    ///   the voters still silent could not make up the number: above every floor it
    ///   learned and every voter's boot floor (the wall clock when it started, in µs), which
    ///   only a wall clock set back could bring below an earlier token. With no boot floor
    ///   (0) it refuses, and does not vote.
    fn try_recover(&mut self) {
        let n = self.leases.voters.len();
        let majority = self.leases.majority();
        let Some(voter) = self.leases.voter.as_mut() else {
            return;
        };
        let Phase::Recovering {
            heard,
            fallback_due,
            ..
        } = &voter.phase
        else {
            return;
        };
        let knowing: Vec<u64> = heard.values().filter_map(|(f, _)| *f).collect();
        let recovered = knowing.len() > n - majority;
        // Waiting longer helps only if the voters not heard from yet could still make up
        // the number that know.
        let hopeless = knowing.len() + (n - 1 - heard.len()) <= n - majority;
        let fallback = !recovered
            && heard.len() + 1 >= majority
            && (*fallback_due || hopeless)
            && voter.boot_floor > 0;
        if !recovered && !fallback {
            return;
        }
        let mut learned = knowing.iter().copied().max().unwrap_or(0);
        if fallback {
            let boots = heard.values().map(|(_, b)| *b);
            learned = learned.max(boots.max().unwrap_or(0)).max(voter.boot_floor);
            tracing::warn!(
                node = %self.id,
                floor = learned,
                "a majority of the voters lost its lease state: tokens go on above the boot floors"
            );
        }
        voter.floor = voter.floor.max(learned);
        voter.max_granted = voter.max_granted.max(voter.floor);
        voter.phase = Phase::Voting;
        self.leases.token_hint = self.leases.token_hint.max(voter.floor);
    }
}
