//! Seeded fault schedules: what the nemesis does to a simulated cluster, and when.

use std::time::Duration;

use super::Sim;
use crate::rng::Rng;

/// How long a graceful leave waits for the leaving node's children to move (the runtime's
/// drain timeout).
const LEAVE_WITHIN: Duration = Duration::from_secs(5);

/// One thing the nemesis does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Splits the hosts into groups that cannot talk to each other.
    Partition(Vec<Vec<usize>>),
    /// Drops traffic from one host to another only.
    Block {
        /// The sender whose frames are dropped.
        from: usize,
        /// The receiver that never gets them.
        to: usize,
    },
    /// Removes every partition and block.
    Heal,
    /// Kills a host's process (its connections close).
    Kill(usize),
    /// Crashes a host silently.
    CrashSilently(usize),
    /// Restarts a host as a new incarnation.
    Restart(usize),
    /// Freezes a host's process (SIGSTOP).
    Freeze(usize),
    /// Thaws a frozen host (SIGCONT).
    Thaw(usize),
    /// Sets the probability of losing a message, in per mille.
    LossPerMille(u16),
    /// A host leaves the cluster gracefully, as the runtime does it: it drains, then leaves.
    Leave(usize),
    /// A new host joins (through every host).
    Join,
    /// A host declares the simulation's singletons (see `SimConfig::declare_on_start`).
    Declare(usize),
    /// Lets the cluster run.
    Wait(Duration),
}

/// A list of faults to apply in order to a cluster of `nodes` hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// How many hosts the cluster has.
    pub nodes: usize,
    /// The faults, with waits between them.
    pub faults: Vec<Fault>,
}

impl Schedule {
    /// A random schedule of `steps` faults (each followed by a wait of up to 3 s) for
    /// `nodes` hosts, entirely determined by `seed`.
    pub fn random(seed: u64, nodes: usize, steps: usize) -> Self {
        let mut rng = Rng::new(seed ^ 0x5EED_5C4E_D01E_0000);
        let mut faults = Vec::with_capacity(steps * 2);
        let host = |rng: &mut Rng| rng.below(nodes as u64) as usize;
        for _ in 0..steps {
            let fault = match rng.below(12) {
                0 | 1 => {
                    let mut hosts: Vec<usize> = (0..nodes).collect();
                    rng.shuffle(&mut hosts);
                    let cut = 1 + rng.below(nodes.max(2) as u64 - 1) as usize;
                    let (a, b) = hosts.split_at(cut.min(nodes));
                    Fault::Partition(vec![a.to_vec(), b.to_vec()])
                }
                2 => Fault::Block {
                    from: host(&mut rng),
                    to: host(&mut rng),
                },
                3 | 4 => Fault::Heal,
                5 => Fault::Kill(host(&mut rng)),
                6 => Fault::CrashSilently(host(&mut rng)),
                7 | 8 => Fault::Restart(host(&mut rng)),
                9 => Fault::Freeze(host(&mut rng)),
                10 => Fault::Thaw(host(&mut rng)),
                _ => match rng.below(4) {
                    0 => Fault::Leave(host(&mut rng)),
                    _ => Fault::LossPerMille(rng.below(300) as u16),
                },
            };
            faults.push(fault);
            faults.push(Fault::Wait(Duration::from_millis(rng.below(3000))));
        }
        Self { nodes, faults }
    }

    /// A random schedule with a healthy network: processes start, join, declare, leave,
    /// crash and restart, in any order, `steps` times (each followed by a wait of up to
    /// 1.5 s), for a cluster of `nodes` hosts at first. Meant for a [`Sim`] built with
    /// `declare_on_start: false`, so that declarations come in any order too. In such a
    /// cluster no child may ever have two instances.
    pub fn random_healthy(seed: u64, nodes: usize, steps: usize) -> Self {
        let mut rng = Rng::new(seed ^ 0x4EA1_7457_0000_0001);
        let mut faults = Vec::with_capacity(steps * 2 + nodes);
        let mut hosts = nodes;
        // Most hosts declare at once, at the start, in a random order.
        let mut order: Vec<usize> = (0..nodes).collect();
        rng.shuffle(&mut order);
        for &i in &order {
            if rng.below(4) != 0 {
                faults.push(Fault::Declare(i));
            }
        }
        for _ in 0..steps {
            let host = rng.below(hosts as u64) as usize;
            let fault = match rng.below(10) {
                0..=2 => Fault::Declare(host),
                3 if hosts < 2 * nodes => {
                    hosts += 1;
                    Fault::Join
                }
                4 => Fault::Kill(host),
                5 => Fault::CrashSilently(host),
                6 | 7 => Fault::Restart(host),
                _ => Fault::Leave(host),
            };
            faults.push(fault);
            // Sometimes two things at once.
            if rng.below(3) != 0 {
                faults.push(Fault::Wait(Duration::from_millis(rng.below(1500))));
            }
        }
        Self { nodes, faults }
    }

    /// Applies the faults to `sim` in order, running it through every wait.
    pub fn apply(&self, sim: &mut Sim) {
        for fault in &self.faults {
            apply_fault(sim, fault);
        }
    }
}

/// Applies one fault to `sim`.
pub(super) fn apply_fault(sim: &mut Sim, fault: &Fault) {
    match fault {
        Fault::Partition(groups) => sim.partition(groups),
        Fault::Block { from, to } if from != to => sim.block(*from, *to),
        Fault::Block { .. } => {}
        Fault::Heal => sim.heal(),
        Fault::Kill(i) => sim.kill(*i),
        Fault::CrashSilently(i) => sim.crash_silently(*i),
        Fault::Restart(i) => sim.restart(*i),
        Fault::Freeze(i) => sim.freeze(*i),
        Fault::Thaw(i) => sim.thaw(*i),
        Fault::LossPerMille(p) => sim.config_mut().loss = f64::from(*p) / 1000.0,
        Fault::Leave(i) => sim.leave_gracefully(*i, LEAVE_WITHIN),
        Fault::Join => {
            sim.add_node();
        }
        Fault::Declare(i) => sim.declare(*i),
        Fault::Wait(d) => sim.run_for(*d),
    }
}

impl Sim {
    /// Ends every fault: heals the network, stops loss and thaws frozen hosts. Crashed
    /// hosts stay down.
    pub fn end_faults(&mut self) {
        self.heal();
        self.config_mut().loss = 0.0;
        self.config_mut().duplicate = 0.0;
        for i in 0..self.len() {
            self.thaw(i);
        }
    }
}
