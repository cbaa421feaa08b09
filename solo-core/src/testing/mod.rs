//! A deterministic, single-threaded cluster simulator for the core (feature `testing`).
//!
//! [`Sim`] runs N [`Node`]s in one thread. Messages are encoded to frames and carried by a
//! simulated network with seeded delay, loss, duplication and reordering, one-way and
//! two-way partitions, and a connection model that reports [`Link::Down`] when a process is
//! killed (as the kernel's FIN/RST would) but not when a cable is cut. Each node has its own
//! clock running at a bounded, seeded rate drift. Nodes can be killed, crashed silently,
//! frozen (SIGSTOP) and thawed, and restarted as a new incarnation.
//!
//! Everything random comes from the seed given to [`Sim::new`], so a run replays exactly.
//! Virtual time jumps straight to the next delivery or deadline: seconds of cluster life cost
//! microseconds.
//!
//! ```
//! use std::time::Duration;
//! use solo_core::testing::{Sim, SimConfig};
//!
//! let mut sim = Sim::new(7, SimConfig::default());
//! for _ in 0..3 {
//!     sim.add_node();
//! }
//! let took = sim.run_until(Duration::from_secs(5), |sim| sim.converged());
//! assert!(took.is_some(), "three nodes join within 5 s");
//! ```

pub mod fuzz;
pub mod messaging;
mod schedule;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::id::{Incarnation, InstanceId, NodeId, NodeName};
use crate::node::{Action, Link, Node, Status};
use crate::placement::ChildId;
use crate::rng::Rng;
use crate::supervisor::{ChildSpec, Exit, StopReason};
use crate::wire::{self, Message};

pub use messaging::{MessageKey, MessagingLog, SimMessaging};
pub use schedule::{Fault, Schedule};

/// A seed count or seed from the environment variable `var` (for sweeps and replays), or
/// `None` when it is unset or not a number.
pub fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|s| s.parse().ok())
}

/// Fails a seeded run: the seed, what went wrong, and the command that replays it.
pub fn fail_seed(seed: u64, why: &str, replay_command: &str) -> ! {
    panic!("seed {seed} failed: {why}\n\nreplay: {replay_command}")
}

/// The most events one [`Sim::run_for`] may process; a run that needs more is a livelock.
const MAX_STEPS_PER_RUN: u64 = 50_000_000;

/// The most history lines kept; older ones are dropped in halves.
const MAX_HISTORY_LINES: usize = 200_000;

/// How the simulated network and clocks behave.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The protocol configuration every node runs.
    pub node: Config,
    /// The shortest one-way delay.
    pub min_delay: Duration,
    /// The longest one-way delay (delays are uniform between the two, so messages reorder).
    pub max_delay: Duration,
    /// The probability that a message is lost.
    pub loss: f64,
    /// The probability that a message is delivered twice.
    pub duplicate: f64,
    /// The largest clock-rate drift of a node, in parts per million (each node draws its own
    /// in `-max..=max`).
    pub max_drift_ppm: u32,
    /// Whether to keep a log of every event, printed when a check fails (slower).
    pub log_history: bool,
    /// Singletons every process declares when it starts (see `declare_on_start`).
    pub singletons: Vec<ChildSpec>,
    /// Whether a process declares `singletons` as it starts (default), or only when
    /// [`Sim::declare`] says so.
    pub declare_on_start: bool,
    /// Runs nodes that start children without claiming them (see
    /// [`NodeBuilder::sabotage_skip_claims`](crate::NodeBuilder::sabotage_skip_claims)).
    pub sabotage_skip_claims: bool,
    /// How many hosts vote on leases of exclusive children: hosts `0..voters` (named
    /// `n0`, `n1`, …), given to every node as [`NodeBuilder::voters`](crate::NodeBuilder::voters).
    pub voters: usize,
    /// Whether voters keep their tokens in a data directory that survives restarts
    /// ([`NodeBuilder::persisted_tokens`](crate::NodeBuilder::persisted_tokens)).
    pub voter_data_dir: bool,
    /// Runs holders that count leases from the answer (see
    /// [`NodeBuilder::sabotage_count_from_reply`](crate::NodeBuilder::sabotage_count_from_reply)).
    pub sabotage_count_from_reply: bool,
    /// Runs voters that renew every lease a renewal by digest names (see
    /// [`NodeBuilder::sabotage_renew_blindly`](crate::NodeBuilder::sabotage_renew_blindly)).
    pub sabotage_renew_blindly: bool,
    /// A firewall that answers with resets: a partition makes every host on each side
    /// receive evidence that the processes on the other side are gone, which breaks the
    /// assumption of [`Config::crash_evidence`].
    pub resets_on_partition: bool,
    /// Frames from one host to another arrive in the order they were sent, as on one TCP
    /// connection or QUIC stream (delays still differ between pairs, so what travels two
    /// ways reorders). Off by default: every frame draws its own delay.
    pub fifo_links: bool,
    /// Runs a [`Messenger`](crate::messaging::Messenger) beside every node, with simulated
    /// actors for every instance (see [`messaging`]). Off by default.
    pub messaging: Option<SimMessaging>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            node: Config::default(),
            min_delay: Duration::from_micros(100),
            max_delay: Duration::from_millis(2),
            loss: 0.0,
            duplicate: 0.0,
            max_drift_ppm: 200,
            log_history: false,
            singletons: Vec::new(),
            declare_on_start: true,
            sabotage_skip_claims: false,
            voters: 0,
            voter_data_dir: false,
            sabotage_count_from_reply: false,
            sabotage_renew_blindly: false,
            resets_on_partition: false,
            fifo_links: false,
            messaging: None,
        }
    }
}

/// One simulated machine: its address survives restarts, its process may not.
#[derive(Debug)]
struct Host {
    name: NodeName,
    addr: SocketAddr,
    node: Option<Node>,
    incarnation: u64,
    frozen: bool,
    /// Frames that reached a frozen process, delivered when it thaws (kernel buffers).
    backlog: Vec<Delivery>,
    drift_ppm: i64,
    /// Where this host's clock started relative to the simulation's base instant.
    offset: Duration,
    sent: u64,
    /// Bytes of the frames it sent.
    sent_bytes: u64,
    /// Of those, `Exclusive` mode's: messages and bytes.
    lease_sent: (u64, u64),
    /// The hosts it joins through; `None` for all of them.
    seeds: Option<Vec<usize>>,
    /// The workers the simulated runtime runs for this process: child id to instance.
    workers: BTreeMap<ChildId, InstanceId>,
    /// The lease ends (simulated time) of the exclusive workers among them: the runtime
    /// aborts a worker there, and a frozen one cannot act, so it counts as running only
    /// until then.
    fences: BTreeMap<ChildId, Duration>,
    /// What the host's data directory holds (voters with `voter_data_dir`): survives
    /// restarts.
    durable_tokens: Option<u64>,
    /// Roles given to every process of this host.
    roles: Vec<String>,
    /// The process's next deadline in simulated time, as last read after an input (its
    /// entry in `Sim::timeouts`); `None` when it has none or is frozen or stopped.
    timeout: Option<Duration>,
    /// The process's messaging, with [`SimConfig::messaging`].
    runtime: Option<messaging::Runtime>,
}

#[derive(Debug, Clone)]
enum Payload {
    Frame {
        from: NodeId,
        /// The sending host, and whether the frame is messaging's (counted in flight).
        from_host: usize,
        app: bool,
        /// The process the frame is for when it travels on an existing connection only.
        only_to: Option<NodeId>,
        frame: Vec<u8>,
    },
    LinkDown {
        peer: NodeId,
    },
    /// The runtime's evidence that `peer`'s process is gone (see
    /// [`Node::handle_process_gone`]).
    ProcessGone {
        peer: NodeId,
    },
    /// An instance the node asked to stop has ended: the simulated runtime reports it, as
    /// the real one does once every worker task has finished.
    WorkerEnded {
        /// The process that stopped it (a restarted process never ran it).
        incarnation: u64,
        id: ChildId,
        instance: InstanceId,
    },
    /// A simulated actor serves the next mail in its mailbox.
    ActorStep {
        incarnation: u64,
        id: ChildId,
        instance: InstanceId,
    },
}

#[derive(Debug, Clone)]
struct Delivery {
    at: Duration,
    order: u64,
    to: usize,
    payload: Payload,
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Delivery {}
impl PartialOrd for Delivery {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delivery {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// One thing that happened, for the history log and for tests that look at events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Simulated time since the start.
    pub at: Duration,
    /// The host it happened on.
    pub host: usize,
    /// What the node asked for.
    pub action: Action,
}

/// An instance started while another instance of the same id still ran (or was still
/// stopping) on another host: what "exactly one" forbids in a healthy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// Simulated time of the start.
    pub at: Duration,
    /// The child or singleton.
    pub id: ChildId,
    /// The host that started it.
    pub started_on: usize,
    /// The hosts whose instance still ran.
    pub running_on: Vec<usize>,
}

/// What `Exclusive` mode forbids, whatever the network does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExclusiveViolation {
    /// An instance of an exclusive child started (or had its lease extended) while another
    /// host's instance still ran under an unexpired lease, or without one.
    Overlap {
        /// Simulated time.
        at: Duration,
        /// The child.
        id: ChildId,
        /// The host that started or extended its instance.
        host: usize,
        /// The hosts whose instance still ran then.
        running_on: Vec<usize>,
    },
    /// An instance started under a token not above an earlier start's.
    TokenNotIncreasing {
        /// Simulated time.
        at: Duration,
        /// The child.
        id: ChildId,
        /// The token of this start.
        token: u64,
        /// The highest token an earlier start had.
        earlier: u64,
    },
    /// An exclusive child started without a lease.
    NoLease {
        /// Simulated time.
        at: Duration,
        /// The child.
        id: ChildId,
        /// The host.
        host: usize,
    },
}

/// A node declared `Down` a process that was running, not frozen, and active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalseDown {
    /// Simulated time of the verdict.
    pub at: Duration,
    /// The host that declared it.
    pub by: usize,
    /// The process declared down.
    pub peer: NodeId,
}

/// The simulated cluster. See the [module docs](self).
#[derive(Debug)]
pub struct Sim {
    seed: u64,
    config: SimConfig,
    rng: Rng,
    base: Instant,
    now: Duration,
    hosts: Vec<Host>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<Delivery>>,
    order: u64,
    /// Directed pairs whose traffic is dropped: a cut cable or a firewall rule.
    blocked: BTreeSet<(usize, usize)>,
    /// Pairs with an open connection, which a killed process closes with a FIN.
    connections: BTreeSet<(usize, usize)>,
    records: Vec<Record>,
    overlaps: Vec<Overlap>,
    false_downs: Vec<FalseDown>,
    exclusive_violations: Vec<ExclusiveViolation>,
    /// The highest token any start of each exclusive child had.
    tokens: BTreeMap<ChildId, u64>,
    /// How many exclusive instances started.
    exclusive_starts: u64,
    history: Vec<String>,
    steps: u64,
    /// Every running, unfrozen host's next deadline: a node's `poll_timeout` only changes
    /// when it handles an input, so it is read once then, not at every step.
    timeouts: BTreeSet<(Duration, usize)>,
    /// With [`SimConfig::fifo_links`]: the latest arrival scheduled per directed pair.
    last_arrival: BTreeMap<(usize, usize), Duration>,
    /// With [`SimConfig::messaging`]: what messaging did.
    messaging: messaging::Records,
}

impl Sim {
    /// A simulation whose every random choice follows from `seed`.
    pub fn new(seed: u64, config: SimConfig) -> Self {
        // Instants cannot be built from nothing: the base is read once; the run never
        // depends on its value, only on offsets from it.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        Self {
            seed,
            rng: Rng::new(seed),
            config,
            base,
            now: Duration::ZERO,
            hosts: Vec::new(),
            by_addr: BTreeMap::new(),
            queue: BinaryHeap::new(),
            order: 0,
            blocked: BTreeSet::new(),
            connections: BTreeSet::new(),
            records: Vec::new(),
            overlaps: Vec::new(),
            false_downs: Vec::new(),
            exclusive_violations: Vec::new(),
            tokens: BTreeMap::new(),
            exclusive_starts: 0,
            history: Vec::new(),
            steps: 0,
            timeouts: BTreeSet::new(),
            last_arrival: BTreeMap::new(),
            messaging: messaging::Records::default(),
        }
    }

    /// The seed the simulation was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Simulated time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// How many hosts were added (running or not).
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host was added yet.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The simulation's configuration; network settings may be changed mid-run.
    pub fn config_mut(&mut self) -> &mut SimConfig {
        &mut self.config
    }

    /// Adds a host named `n<index>` and starts its first process, with every host as a
    /// seed. Returns its index.
    pub fn add_node(&mut self) -> usize {
        self.add_host(None, Vec::new())
    }

    /// Adds a host that joins through the given hosts only (an empty list starts a cluster
    /// of its own). Returns its index.
    pub fn add_node_with_seeds(&mut self, seeds: &[usize]) -> usize {
        self.add_host(Some(seeds.to_vec()), Vec::new())
    }

    fn add_host(&mut self, seeds: Option<Vec<usize>>, roles: Vec<String>) -> usize {
        let index = self.hosts.len();
        let ip = Ipv4Addr::new(10, (index >> 16) as u8, (index >> 8) as u8, index as u8);
        let addr = SocketAddr::new(ip.into(), 7000);
        let max = i64::from(self.config.max_drift_ppm);
        let drift_ppm = if max == 0 {
            0
        } else {
            self.rng.below(2 * max as u64 + 1) as i64 - max
        };
        let offset = Duration::from_millis(self.rng.below(10_000));
        let name = NodeName::new(format!("n{index}")).unwrap_or_else(|_| unreachable!());
        self.hosts.push(Host {
            name,
            addr,
            node: None,
            incarnation: 0,
            frozen: false,
            backlog: Vec::new(),
            drift_ppm,
            offset,
            sent: 0,
            sent_bytes: 0,
            lease_sent: (0, 0),
            seeds,
            workers: BTreeMap::new(),
            fences: BTreeMap::new(),
            durable_tokens: None,
            roles,
            timeout: None,
            runtime: None,
        });
        self.by_addr.insert(addr, index);
        self.start_process(index);
        index
    }

    /// Adds a host with roles, joining through every host. Returns its index.
    pub fn add_node_with_roles(&mut self, roles: &[&str]) -> usize {
        self.add_host(None, roles.iter().map(|r| (*r).to_owned()).collect())
    }

    /// The workers host `i` runs: child id to instance.
    pub fn workers(&self, i: usize) -> &BTreeMap<ChildId, InstanceId> {
        &self.hosts[i].workers
    }

    /// How many processes run an instance of `id` (frozen ones included: their workers
    /// still exist).
    pub fn instances(&self, id: &ChildId) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.node.is_some() && h.workers.contains_key(id))
            .count()
    }

    /// Every child id running anywhere, with how many instances.
    pub fn all_instances(&self) -> BTreeMap<ChildId, usize> {
        let mut all = BTreeMap::new();
        for host in self.hosts.iter().filter(|h| h.node.is_some()) {
            for id in host.workers.keys() {
                *all.entry(id.clone()).or_insert(0) += 1;
            }
        }
        all
    }

    /// Makes the worker `id` on host `i` exit with `exit`, as the runtime would report it.
    /// Returns whether such a worker ran there.
    /// A frozen process's workers cannot exit.
    pub fn exit_worker(&mut self, i: usize, id: &ChildId, exit: Exit) -> bool {
        if self.hosts[i].frozen {
            return false;
        }
        let Some(instance) = self.hosts[i].workers.remove(id) else {
            return false;
        };
        self.hosts[i].fences.remove(id);
        self.messaging_ended(i, id, instance);
        self.with_node(i, |node, now| node.worker_exited(now, id, instance, exit))
            .is_some()
    }

    /// The node running on host `i`, if its process runs.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.hosts.get(i)?.node.as_ref()
    }

    /// Runs `f` on the node of host `i` at the current time and carries out its outputs.
    /// Returns `None` if the host's process is not running or is frozen (a stopped process
    /// takes no calls).
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> Option<R> {
        if self.hosts.get(i)?.frozen {
            return None;
        }
        let now = self.local_now(i);
        let result = f(self.hosts.get_mut(i)?.node.as_mut()?, now);
        self.drain(i);
        Some(result)
    }

    /// Whether host `i`'s process runs (and is not frozen).
    pub fn is_running(&self, i: usize) -> bool {
        self.hosts.get(i).is_some_and(|h| {
            !h.frozen
                && h.node
                    .as_ref()
                    .is_some_and(|n| n.status() == Status::Active)
        })
    }

    /// Kills host `i`'s process: its peers' connections close and they hear `Link::Down`.
    pub fn kill(&mut self, i: usize) {
        self.stop_process(i, true);
    }

    /// Crashes host `i` silently (power loss, a cut cable): nobody is told.
    pub fn crash_silently(&mut self, i: usize) {
        self.stop_process(i, false);
    }

    /// Restarts host `i` as a new incarnation (killing the old process first if it runs).
    pub fn restart(&mut self, i: usize) {
        if self.hosts[i].node.is_some() {
            self.stop_process(i, true);
        }
        self.start_process(i);
    }

    /// Freezes host `i` (SIGSTOP): it handles nothing; frames to it wait.
    pub fn freeze(&mut self, i: usize) {
        self.log(format!("freeze {i}"));
        self.hosts[i].frozen = true;
        self.messaging_frozen(i);
        self.refresh_timeout(i);
    }

    /// Thaws host `i` (SIGCONT): it handles what waited, then runs on.
    pub fn thaw(&mut self, i: usize) {
        if !std::mem::take(&mut self.hosts[i].frozen) {
            return;
        }
        self.log(format!("thaw {i}"));
        self.refresh_timeout(i);
        let backlog = std::mem::take(&mut self.hosts[i].backlog);
        for mut delivery in backlog {
            delivery.at = self.now;
            self.push(delivery);
        }
    }

    /// Drops all traffic between the groups (hosts in no group are unaffected).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.log(format!("partition {groups:?}"));
        for (gi, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(gi + 1) {
                for &x in a {
                    for &y in b {
                        self.blocked.insert((x, y));
                        self.blocked.insert((y, x));
                        if self.config.resets_on_partition {
                            self.reset_across(x, y);
                            self.reset_across(y, x);
                        }
                    }
                }
            }
        }
    }

    /// A firewall's reset: `to` hears that `from`'s process is gone, which it is not.
    fn reset_across(&mut self, from: usize, to: usize) {
        let Some(gone) = self.hosts[from].node.as_ref().map(|n| n.id().clone()) else {
            return;
        };
        let at = self.now + self.delay();
        self.push(Delivery {
            at,
            order: 0,
            to,
            payload: Payload::ProcessGone { peer: gone },
        });
    }

    /// Drops traffic from `from` to `to` only.
    pub fn block(&mut self, from: usize, to: usize) {
        self.log(format!("block {from}->{to}"));
        self.blocked.insert((from, to));
    }

    /// Removes every partition and block.
    pub fn heal(&mut self) {
        self.log("heal".into());
        self.blocked.clear();
    }

    /// Every action recorded so far, in order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The overlaps since the last call: starts of an id while another host still ran it,
    /// whatever the network did meanwhile (the caller judges them: in `Available` mode a
    /// partition may run one copy per side).
    pub fn take_overlaps(&mut self) -> Vec<Overlap> {
        std::mem::take(&mut self.overlaps)
    }

    /// Every violation of `Exclusive` mode's guarantees so far, whatever the network did:
    /// none is ever allowed.
    pub fn exclusive_violations(&self) -> &[ExclusiveViolation] {
        &self.exclusive_violations
    }

    /// How many instances of exclusive children started so far.
    pub fn exclusive_starts(&self) -> u64 {
        self.exclusive_starts
    }

    /// How many processes run an instance of `id` whose lease has not ended (for an
    /// exclusive child; any instance for another).
    pub fn live_instances(&self, id: &ChildId) -> usize {
        (0..self.hosts.len())
            .filter(|&j| self.runs_live(j, id))
            .count()
    }

    /// Whether host `j` runs an instance of `id` that can still act: it exists, and for an
    /// exclusive child its lease has not ended.
    fn runs_live(&self, j: usize, id: &ChildId) -> bool {
        let host = &self.hosts[j];
        host.node.is_some()
            && host.workers.contains_key(id)
            && host.fences.get(id).is_none_or(|until| *until > self.now)
    }

    /// The false `Down` verdicts since the last call (a live, unfrozen, active process
    /// declared down), whatever the network did meanwhile: the caller judges them.
    pub fn take_false_downs(&mut self) -> Vec<FalseDown> {
        std::mem::take(&mut self.false_downs)
    }

    /// Declares the configured singletons on host `i` (a no-op for those it declared).
    pub fn declare(&mut self, i: usize) {
        let specs = self.config.singletons.clone();
        self.with_node(i, |node, now| {
            for spec in specs {
                // A node that left refuses; nothing to check then.
                let _ = node.declare_singleton(now, spec);
            }
        });
    }

    /// Leaves as the `solo` runtime does: the node drains (its children move to others),
    /// the simulation runs until nothing runs there any more (at most `within`), then the
    /// node announces its leave.
    pub fn leave_gracefully(&mut self, i: usize, within: Duration) {
        if self.with_node(i, |node, now| node.set_draining(now, true).is_ok()) != Some(true) {
            return;
        }
        self.run_until(within, |sim| {
            sim.node(i).is_none_or(|n| n.is_idle()) && sim.hosts[i].workers.is_empty()
        });
        self.with_node(i, |node, now| node.leave(now).is_ok());
    }

    /// Forgets the recorded actions (to bound memory in long runs).
    pub fn clear_records(&mut self) {
        self.records.clear();
    }

    /// Messages sent by host `i` since it was added.
    pub fn messages_sent(&self, i: usize) -> u64 {
        self.hosts[i].sent
    }

    /// Bytes of the frames host `i` put on the network since it was added (not those a
    /// partition or loss dropped before they left).
    pub fn bytes_sent(&self, i: usize) -> u64 {
        self.hosts[i].sent_bytes
    }

    /// Lease messages (requests, renewals, releases, answers, token floors) host `i` put
    /// on the network since it was added, and their bytes.
    pub fn lease_traffic(&self, i: usize) -> (u64, u64) {
        self.hosts[i].lease_sent
    }

    /// The ids of the processes that run and take part in the cluster.
    pub fn running_ids(&self) -> BTreeSet<NodeId> {
        (0..self.hosts.len())
            .filter(|&i| self.is_running(i))
            .filter_map(|i| self.node(i).map(|n| n.id().clone()))
            .collect()
    }

    /// Whether every running node sees exactly the running nodes as live.
    pub fn converged(&self) -> bool {
        let expected = self.running_ids();
        (0..self.hosts.len())
            .filter(|&i| self.is_running(i))
            .all(|i| self.node(i).is_some_and(|n| n.live_view() == expected))
    }

    /// The last lines of the history log (when [`SimConfig::log_history`] is on).
    pub fn history_tail(&self, lines: usize) -> String {
        let start = self.history.len().saturating_sub(lines);
        self.history[start..].join("\n")
    }

    /// Runs for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        let start_steps = self.steps;
        while let Some(at) = self.next_event_at() {
            if at > until {
                break;
            }
            self.step_at(at);
            assert!(
                self.steps - start_steps < MAX_STEPS_PER_RUN,
                "simulation livelock at {:?}; replay with seed {}",
                self.now,
                self.seed
            );
        }
        self.now = self.now.max(until);
    }

    /// Runs until `done` holds, checked after every event, for at most `limit`. Returns how
    /// long it took, or `None` if `limit` passed first.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let until = self.now + limit;
        if done(self) {
            return Some(Duration::ZERO);
        }
        while let Some(at) = self.next_event_at() {
            if at > until {
                break;
            }
            self.step_at(at);
            if done(self) {
                return Some(self.now - start);
            }
        }
        self.now = self.now.max(until);
        None
    }

    // ----- internals -----------------------------------------------------------------------

    fn start_process(&mut self, i: usize) {
        let seeds: Vec<SocketAddr> = match &self.hosts[i].seeds {
            Some(seeds) => seeds.iter().map(|&s| self.hosts[s].addr).collect(),
            None => self.by_addr.keys().copied().collect(),
        };
        self.discard_backlog(i);
        let host = &mut self.hosts[i];
        host.incarnation += 1;
        host.frozen = false;
        let id = NodeId::new(host.name.clone(), Incarnation(host.incarnation));
        let rng_seed = self.rng.next_u64();
        let now = self.local_now(i);
        let voters = (0..self.config.voters)
            .map(|v| NodeName::new(format!("n{v}")).unwrap_or_else(|_| unreachable!()));
        let persisted = if self.config.voter_data_dir && i < self.config.voters {
            Some(self.hosts[i].durable_tokens.unwrap_or(0))
        } else {
            None
        };
        // What the runtime passes: the wall clock in microseconds (a simulated one here).
        let wall_micros = 1_700_000_000_000_000 + self.now.as_micros() as u64;
        let node = Node::builder(id.clone(), self.hosts[i].addr)
            .config(self.config.node.clone())
            .seeds(seeds)
            .roles(self.hosts[i].roles.clone())
            .rng_seed(rng_seed)
            .sabotage_skip_claims(self.config.sabotage_skip_claims)
            .sabotage_count_from_reply(self.config.sabotage_count_from_reply)
            .sabotage_renew_blindly(self.config.sabotage_renew_blindly)
            .voters(voters)
            .token_floor(wall_micros)
            .persisted_tokens(persisted)
            .build(now);
        let mut node = match node {
            Ok(node) => node,
            Err(e) => panic!("simulated node config is invalid: {e}"),
        };
        let declared = if self.config.declare_on_start {
            self.config.singletons.as_slice()
        } else {
            &[]
        };
        for spec in declared {
            if let Err(e) = node.declare_singleton(now, spec.clone()) {
                panic!("simulated singleton is invalid: {e}");
            }
        }
        self.log(format!("start {id}"));
        self.hosts[i].workers.clear();
        self.hosts[i].fences.clear();
        self.hosts[i].node = Some(node);
        if let Some(settings) = &self.config.messaging {
            let token_key = self.rng.next_u64();
            self.hosts[i].runtime = Some(messaging::Runtime::new(settings, now, token_key));
        }
        self.drain(i);
    }

    fn stop_process(&mut self, i: usize, close_connections: bool) {
        let Some(node) = self.hosts[i].node.take() else {
            return;
        };
        let id = node.id().clone();
        self.log(format!(
            "{} {id}",
            if close_connections { "kill" } else { "crash" }
        ));
        self.hosts[i].frozen = false;
        self.discard_backlog(i);
        self.hosts[i].workers.clear();
        self.hosts[i].fences.clear();
        self.messaging_stopped(i);
        self.refresh_timeout(i);
        let peers: Vec<usize> = self
            .connections
            .iter()
            .filter(|(a, _)| *a == i)
            .map(|(_, b)| *b)
            .collect();
        self.connections.retain(|(a, b)| *a != i && *b != i);
        if close_connections {
            for peer in peers {
                // The FIN travels like any packet: a cut cable swallows it.
                if self.blocked.contains(&(i, peer)) {
                    continue;
                }
                let at = self.now + self.delay();
                self.push(Delivery {
                    at,
                    order: 0,
                    to: peer,
                    payload: Payload::LinkDown { peer: id.clone() },
                });
                if self.config.node.crash_evidence {
                    // The runtime dials the closed peer once: its kernel refuses.
                    let at = at + self.delay() + self.delay();
                    self.push(Delivery {
                        at,
                        order: 0,
                        to: peer,
                        payload: Payload::ProcessGone { peer: id.clone() },
                    });
                }
            }
        }
    }

    /// The instant host `i`'s clock shows now.
    fn local_now(&self, i: usize) -> Instant {
        let host = &self.hosts[i];
        let nanos = self.now.as_nanos() as i128;
        let drifted = nanos + nanos * i128::from(host.drift_ppm) / 1_000_000;
        self.base + host.offset + Duration::from_nanos(drifted.max(0) as u64)
    }

    /// The simulated time at which host `i`'s clock shows `local` (rounded up).
    fn sim_time_of(&self, i: usize, local: Instant) -> Duration {
        let host = &self.hosts[i];
        let since = local
            .saturating_duration_since(self.base + host.offset)
            .as_nanos() as i128;
        let rate = 1_000_000 + i128::from(host.drift_ppm);
        let sim = (since * 1_000_000 + rate - 1) / rate;
        Duration::from_nanos(sim.max(0) as u64)
    }

    /// The earliest deadline of a running, unfrozen host, and which host; a deadline
    /// already past counts as now, and ties go to the lowest index.
    fn next_timeout(&self) -> Option<(Duration, usize)> {
        let &(first, i) = self.timeouts.first()?;
        if first > self.now {
            return Some((first, i));
        }
        let due = self.timeouts.range(..=(self.now, usize::MAX));
        due.map(|&(_, i)| i).min().map(|i| (self.now, i))
    }

    /// Reads host `i`'s next deadline again, after an input or a change of its process.
    fn refresh_timeout(&mut self, i: usize) {
        let host = &self.hosts[i];
        let deadline = if host.frozen {
            None
        } else {
            let messaging = host
                .runtime
                .as_ref()
                .and_then(messaging::Runtime::poll_timeout);
            let node = host.node.as_ref().and_then(Node::poll_timeout);
            node.into_iter().chain(messaging).min()
        };
        let at = deadline.map(|d| self.sim_time_of(i, d));
        let host = &mut self.hosts[i];
        if host.timeout == at {
            return;
        }
        if let Some(old) = host.timeout.take() {
            self.timeouts.remove(&(old, i));
        }
        if let Some(at) = at {
            self.timeouts.insert((at, i));
        }
        self.hosts[i].timeout = at;
    }

    fn next_event_at(&self) -> Option<Duration> {
        let delivery = self.queue.peek().map(|Reverse(d)| d.at);
        let timeout = self.next_timeout().map(|(at, _)| at);
        match (delivery, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn step_at(&mut self, at: Duration) {
        self.steps += 1;
        self.now = at;
        if self.queue.peek().is_some_and(|Reverse(d)| d.at <= at) {
            if let Some(Reverse(delivery)) = self.queue.pop() {
                self.deliver(delivery);
            }
            return;
        }
        if let Some((_, i)) = self.next_timeout() {
            let now = self.local_now(i);
            if let Some(node) = self.hosts[i].node.as_mut() {
                node.handle_timeout(now);
            }
            self.drain(i);
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let i = delivery.to;
        if self.hosts[i].frozen && self.hosts[i].node.is_some() {
            self.hosts[i].backlog.push(delivery);
            return;
        }
        self.messaging.landed(&delivery.payload, i);
        if self.hosts[i].node.is_none() {
            return;
        }
        let now = self.local_now(i);
        let log = self.config.log_history;
        let Some(node) = self.hosts[i].node.as_mut() else {
            return;
        };
        match delivery.payload {
            Payload::Frame {
                from,
                only_to,
                frame,
                ..
            } => {
                if only_to.is_some_and(|to| to != *node.id()) {
                    return;
                }
                let message = match wire::decode_frame(&frame) {
                    Ok(message) => message,
                    Err(e) => panic!("simulator produced an undecodable frame: {e}"),
                };
                let line = log.then(|| format!("{from} -> {}: {message:?}", node.id()));
                match message {
                    Message::App(app) => self.messaging_frame(i, &from, app),
                    message => node.handle_message(now, &from, message),
                }
                if let Some(line) = line {
                    self.log(line);
                }
            }
            Payload::LinkDown { peer } => {
                node.handle_link(now, &peer, Link::Down);
            }
            Payload::ProcessGone { peer } => {
                node.handle_process_gone(now, &peer);
            }
            Payload::ActorStep {
                incarnation,
                id,
                instance,
            } => self.actor_step(i, incarnation, id, instance),
            Payload::WorkerEnded {
                incarnation,
                id,
                instance,
            } => {
                let host = &mut self.hosts[i];
                if host.incarnation != incarnation || host.workers.get(&id) != Some(&instance) {
                    return;
                }
                host.workers.remove(&id);
                host.fences.remove(&id);
                if log {
                    self.log(format!("worker ended on {i}: {id} instance {instance}"));
                }
                self.messaging_ended(i, &id, instance);
                if let Some(node) = self.hosts[i].node.as_mut() {
                    node.worker_exited(now, &id, instance, Exit::Normal);
                }
            }
        }
        self.drain(i);
    }

    /// Carries out everything node `i` asked for, then notes its next deadline.
    fn drain(&mut self, i: usize) {
        self.drain_outputs(i);
        if self.hosts[i].runtime.is_some() {
            // As the runtime does after every input: what waits is routed again (the
            // node's view may have changed), then the node's own outputs.
            self.messaging_tick(i);
            self.drain_outputs(i);
        }
        self.refresh_timeout(i);
    }

    fn drain_outputs(&mut self, i: usize) {
        loop {
            let Some(node) = self.hosts[i].node.as_mut() else {
                return;
            };
            let transmit = node.poll_transmit();
            let action = if transmit.is_none() {
                node.poll_action()
            } else {
                None
            };
            let from = node.id().clone();
            match (transmit, action) {
                (Some(t), _) => self.route(i, from, t),
                (None, Some(action)) => {
                    let workers = &mut self.hosts[i].workers;
                    match &action {
                        Action::Start {
                            id,
                            instance,
                            spec,
                            fence,
                            handoff_from,
                        } => {
                            if let Some(old) = workers.insert(id.clone(), *instance) {
                                panic!("{from} started {id} as {instance} while {old} still ran");
                            }
                            if spec.is_exclusive() {
                                self.exclusive_started(i, id, *fence);
                            }
                            let running_on: Vec<usize> = (0..self.hosts.len())
                                .filter(|&j| j != i)
                                .filter(|&j| {
                                    self.hosts[j].node.is_some()
                                        && self.hosts[j].workers.contains_key(id)
                                })
                                .collect();
                            if !running_on.is_empty() {
                                self.overlaps.push(Overlap {
                                    at: self.now,
                                    id: id.clone(),
                                    started_on: i,
                                    running_on,
                                });
                            }
                            self.messaging_started(i, id, *instance, handoff_from.as_ref());
                        }
                        Action::Member(crate::membership::MemberEvent::Down(peer)) => {
                            let alive = self.hosts.iter().any(|h| {
                                !h.frozen
                                    && h.node.as_ref().is_some_and(|n| {
                                        n.id() == peer && n.status() == Status::Active
                                    })
                            });
                            if alive {
                                self.false_downs.push(FalseDown {
                                    at: self.now,
                                    by: i,
                                    peer: peer.clone(),
                                });
                            }
                            self.messaging_peer_gone(i, peer);
                        }
                        Action::Member(crate::membership::MemberEvent::Left(peer)) => {
                            self.messaging_peer_gone(i, peer);
                        }
                        Action::LeaseExtended {
                            id,
                            instance,
                            valid_until,
                        } if workers.get(id) == Some(instance) => {
                            let until = self.sim_time_of(i, *valid_until);
                            self.hosts[i].fences.insert(id.clone(), until);
                            self.check_exclusive_overlap(i, id);
                        }
                        Action::PersistTokens { up_to } => {
                            // Written and synced at once: the data directory survives
                            // restarts of the host.
                            let up_to = *up_to;
                            self.hosts[i].durable_tokens = Some(up_to);
                            let now = self.local_now(i);
                            if let Some(node) = self.hosts[i].node.as_mut() {
                                node.tokens_persisted(now, up_to);
                            }
                        }
                        Action::Stop {
                            id,
                            instance,
                            reason,
                        } if workers.get(id) == Some(instance) => {
                            // A child moved on purpose hands its state over first, and
                            // ends once it has left.
                            let to = match reason {
                                StopReason::Moved { to } => to.as_ref(),
                                _ => None,
                            };
                            if !self.messaging_stop(i, id, *instance, to) {
                                self.end_worker_soon(i, id.clone(), *instance);
                            }
                        }
                        _ => {}
                    }
                    if self.config.log_history {
                        self.log(format!("{from}: {action:?}"));
                    }
                    self.records.push(Record {
                        at: self.now,
                        host: i,
                        action,
                    });
                }
                (None, None) => return,
            }
        }
    }

    /// Forgets what waited for host `i` while it was frozen (its process is gone): those
    /// frames are no longer in flight.
    fn discard_backlog(&mut self, i: usize) {
        for delivery in std::mem::take(&mut self.hosts[i].backlog) {
            self.messaging.landed(&delivery.payload, i);
        }
    }

    /// Instance `instance` of `id` on host `i` ends a moment from now, as the runtime
    /// stops a worker (and no later than its lease's end: the runtime aborts it).
    fn end_worker_soon(&mut self, i: usize, id: ChildId, instance: InstanceId) {
        let incarnation = self.hosts[i].incarnation;
        let mut at = self.now + self.delay();
        if let Some(until) = self.hosts[i].fences.get(&id) {
            at = at.min((*until).max(self.now));
        }
        self.push(Delivery {
            at,
            order: 0,
            to: i,
            payload: Payload::WorkerEnded {
                incarnation,
                id,
                instance,
            },
        });
    }

    /// Checks an exclusive start on host `i` against every other instance and every
    /// earlier token.
    fn exclusive_started(&mut self, i: usize, id: &ChildId, fence: Option<crate::Fence>) {
        self.exclusive_starts += 1;
        let Some(fence) = fence else {
            self.exclusive_violations.push(ExclusiveViolation::NoLease {
                at: self.now,
                id: id.clone(),
                host: i,
            });
            return;
        };
        let until = self.sim_time_of(i, fence.valid_until);
        self.hosts[i].fences.insert(id.clone(), until);
        if let Some(&earlier) = self.tokens.get(id)
            && fence.token <= earlier
        {
            self.exclusive_violations
                .push(ExclusiveViolation::TokenNotIncreasing {
                    at: self.now,
                    id: id.clone(),
                    token: fence.token,
                    earlier,
                });
        }
        let highest = self.tokens.entry(id.clone()).or_insert(fence.token);
        *highest = (*highest).max(fence.token);
        self.check_exclusive_overlap(i, id);
    }

    fn check_exclusive_overlap(&mut self, i: usize, id: &ChildId) {
        let running_on: Vec<usize> = (0..self.hosts.len())
            .filter(|&j| j != i && self.runs_live(j, id))
            .collect();
        if !running_on.is_empty() {
            self.log(format!("EXCLUSIVE OVERLAP {id} on {i} with {running_on:?}"));
            self.exclusive_violations.push(ExclusiveViolation::Overlap {
                at: self.now,
                id: id.clone(),
                host: i,
                running_on,
            });
        }
    }

    /// The host a transmit goes to, if any.
    fn target_of(&self, transmit: &crate::node::Transmit) -> Option<usize> {
        match (&transmit.addr, &transmit.to) {
            (Some(addr), _) => self.by_addr.get(addr).copied(),
            (None, Some(to)) => self.hosts.iter().position(|h| h.name == to.name),
            (None, None) => None,
        }
    }

    fn route(&mut self, i: usize, from: NodeId, transmit: crate::node::Transmit) {
        self.hosts[i].sent += 1;
        let Some(j) = self.target_of(&transmit) else {
            return;
        };
        let Some(node) = self.hosts[j].node.as_ref() else {
            return;
        };
        // Without an address the frame can only go over an open connection to that process.
        let only_to = transmit
            .addr
            .is_none()
            .then(|| transmit.to.clone())
            .flatten();
        if only_to.as_ref().is_some_and(|to| to != node.id()) {
            return;
        }
        if self.blocked.contains(&(i, j)) || self.rng.chance(self.config.loss) {
            return;
        }
        let frame = match wire::encode_frame(&transmit.message) {
            Ok(frame) => frame,
            Err(e) => panic!("node produced an unencodable message: {e}"),
        };
        self.hosts[i].sent_bytes += frame.len() as u64;
        if matches!(
            transmit.message,
            Message::LeaseRequest { .. }
                | Message::LeaseReply { .. }
                | Message::LeaseRelease { .. }
                | Message::LeaseRenew { .. }
                | Message::LeaseRenewed { .. }
                | Message::TokenFloorQuery
                | Message::TokenFloor { .. }
        ) {
            let lease = &mut self.hosts[i].lease_sent;
            *lease = (lease.0 + 1, lease.1 + frame.len() as u64);
        }
        self.connections.insert((i, j));
        self.connections.insert((j, i));
        let copies = if self.rng.chance(self.config.duplicate) {
            2
        } else {
            1
        };
        let app = matches!(transmit.message, Message::App(_));
        for _ in 0..copies {
            let mut at = self.now + self.delay();
            if self.config.fifo_links {
                let last = self.last_arrival.entry((i, j)).or_default();
                at = at.max(*last);
                *last = at;
            }
            if app {
                *self.messaging.in_flight.entry((i, j)).or_default() += 1;
            }
            self.push(Delivery {
                at,
                order: 0,
                to: j,
                payload: Payload::Frame {
                    from_host: i,
                    app,
                    from: from.clone(),
                    only_to: only_to.clone(),
                    frame: frame.clone(),
                },
            });
        }
    }

    fn delay(&mut self) -> Duration {
        let min = self.config.min_delay.as_nanos() as u64;
        let max = (self.config.max_delay.as_nanos() as u64).max(min);
        Duration::from_nanos(min + self.rng.below(max - min + 1))
    }

    fn push(&mut self, mut delivery: Delivery) {
        self.order += 1;
        delivery.order = self.order;
        self.queue.push(Reverse(delivery));
    }

    fn log(&mut self, line: String) {
        if self.config.log_history {
            if self.history.len() >= MAX_HISTORY_LINES {
                self.history.drain(..MAX_HISTORY_LINES / 2);
            }
            self.history.push(format!("{:>12?} {line}", self.now));
        }
    }
}
