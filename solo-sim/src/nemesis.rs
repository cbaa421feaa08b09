//! The nemesis: seeded fault schedules for a [`Sim`], and the check of DESIGN.md's
//! invariants over the history they produce.

use std::collections::BTreeSet;
use std::time::Duration;

use solo_core::Rng;

use crate::check::{excerpt, running_at_end};
use crate::harness::{Record, Sim, SimError, What};

/// One thing the nemesis does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Cuts every link between two groups.
    Partition(Vec<usize>, Vec<usize>),
    /// Cuts one direction of one link.
    OneWay(usize, usize),
    /// Cuts a group off from the rest except through one bridge host.
    Bridge {
        /// The hosts cut off.
        island: Vec<usize>,
        /// The host that still talks to both sides.
        bridge: usize,
    },
    /// Holds every message between two hosts (both ways) until released: a stall, then a
    /// late burst.
    Hold(usize, usize),
    /// Delivers what a [`Fault::Hold`] held and lets the link flow again.
    Release(usize, usize),
    /// Sets the maximum one-way latency of every link (a slow, jittery network).
    MaxLatency(Duration),
    /// Repairs every link and releases every hold.
    Repair,
    /// Crashes a host (its connections close).
    Crash(usize),
    /// Restarts a host as a new incarnation.
    Restart(usize),
    /// Sets turmoil's link failure rate, in per mille: the probability, each step, that a
    /// link fails (until turmoil repairs it). A flapping network, not per-message loss.
    LossPerMille(u16),
    /// A host leaves gracefully.
    Leave(usize),
    /// A random host starts a child.
    StartChild(usize, String),
    /// A random host terminates a child.
    TerminateChild(usize, String),
    /// Lets the cluster run.
    Wait(Duration),
}

/// How many kinds of draw [`Schedule::random`] makes, and how many the first version made
/// (new kinds are added at the end, so old draws keep their meaning).
const ALL_KINDS: u64 = 14;
const V1_KINDS: u64 = 11;

/// A seeded list of faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The faults, in order.
    pub faults: Vec<Fault>,
}

impl Schedule {
    /// `steps` random faults for `nodes` hosts, each followed by a wait of up to 2 s, from
    /// `seed`. At most one host is down (crashed or left) at a time (a restart follows
    /// before another crash or leave), so that a child held by two members is never
    /// legitimately lost.
    pub fn random(seed: u64, nodes: usize, steps: usize) -> Self {
        Self::generate(seed, nodes, steps, ALL_KINDS)
    }

    /// The schedules of the first sweeps, before holds, latency and leaves joined the mix:
    /// the same seed gives the same faults as then, so that a seed those sweeps found
    /// replays as a regression test.
    pub fn random_v1(seed: u64, nodes: usize, steps: usize) -> Self {
        Self::generate(seed, nodes, steps, V1_KINDS)
    }

    /// Draws each fault from the first `kinds` kinds below (a draw past the list repairs).
    fn generate(seed: u64, nodes: usize, steps: usize, kinds: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x4E4E_5E5E_0000_0001);
        let mut faults = Vec::new();
        let mut down: Option<usize> = None;
        let mut held: Vec<(usize, usize)> = Vec::new();
        let mut children = 0usize;
        let pick = |rng: &mut Rng| rng.below(nodes as u64) as usize;
        for _ in 0..steps {
            let fault = match rng.below(kinds) {
                0 | 1 => {
                    let mut hosts: Vec<usize> = (0..nodes).collect();
                    rng.shuffle(&mut hosts);
                    let cut = 1 + rng.below(nodes as u64 - 1) as usize;
                    Fault::Partition(hosts[..cut].to_vec(), hosts[cut..].to_vec())
                }
                2 => {
                    let (a, b) = (pick(&mut rng), pick(&mut rng));
                    if a == b {
                        Fault::Repair
                    } else {
                        Fault::OneWay(a, b)
                    }
                }
                3 if nodes >= 3 => {
                    let mut hosts: Vec<usize> = (0..nodes).collect();
                    rng.shuffle(&mut hosts);
                    Fault::Bridge {
                        island: vec![hosts[0]],
                        bridge: hosts[1],
                    }
                }
                4 => Fault::Repair,
                5 => match down.take() {
                    Some(host) => Fault::Restart(host),
                    None => {
                        let host = pick(&mut rng);
                        down = Some(host);
                        Fault::Crash(host)
                    }
                },
                6 => Fault::LossPerMille(rng.below(200) as u16),
                // Graceful leaves are rarer than crashes, as in a deploy: one node at a time.
                11 => match down.take() {
                    Some(host) => Fault::Restart(host),
                    None => {
                        let host = pick(&mut rng);
                        down = Some(host);
                        Fault::Leave(host)
                    }
                },
                12 if !held.is_empty() && rng.below(2) == 0 => {
                    let (a, b) = held.swap_remove(rng.below(held.len() as u64) as usize);
                    Fault::Release(a, b)
                }
                12 => {
                    let (a, b) = (pick(&mut rng), pick(&mut rng));
                    if a == b {
                        Fault::Repair
                    } else {
                        held.push((a, b));
                        Fault::Hold(a, b)
                    }
                }
                13 => Fault::MaxLatency(Duration::from_millis(2 + rng.below(60))),
                7..=9 => {
                    children += 1;
                    Fault::StartChild(pick(&mut rng), format!("c{children}"))
                }
                _ if children > 0 => {
                    let child = 1 + rng.below(children as u64) as usize;
                    Fault::TerminateChild(pick(&mut rng), format!("c{child}"))
                }
                _ => Fault::Repair,
            };
            faults.push(fault);
            faults.push(Fault::Wait(Duration::from_millis(rng.below(2000))));
        }
        if let Some(host) = down {
            faults.push(Fault::Restart(host));
        }
        Self { faults }
    }

    /// `steps` random faults for `nodes` hosts with a healthy network: crashes, restarts,
    /// graceful leaves and children started from any host (each followed by a wait of up
    /// to 2 s), from `seed`. Nothing here may ever run two instances of anything at once.
    pub fn random_healthy(seed: u64, nodes: usize, steps: usize) -> Self {
        let mut rng = Rng::new(seed ^ 0x4EA1_7457_0000_0002);
        let mut faults = Vec::new();
        let mut down: Option<usize> = None;
        let mut children = 0usize;
        for _ in 0..steps {
            let host = rng.below(nodes as u64) as usize;
            let fault = match (rng.below(6), down.take()) {
                (0..=2, Some(host)) => Fault::Restart(host),
                (0, None) => {
                    down = Some(host);
                    Fault::Crash(host)
                }
                (1, None) => {
                    down = Some(host);
                    Fault::Leave(host)
                }
                (2, None) => Fault::Restart(host),
                (_, previous) => {
                    down = previous;
                    children += 1;
                    Fault::StartChild(host, format!("c{children}"))
                }
            };
            faults.push(fault);
            // Sometimes two things at once.
            if rng.below(3) != 0 {
                faults.push(Fault::Wait(Duration::from_millis(rng.below(2000))));
            }
        }
        if let Some(host) = down {
            faults.push(Fault::Restart(host));
        }
        Self { faults }
    }

    /// Applies the faults in order.
    ///
    /// # Errors
    ///
    /// [`SimError`] if a host failed.
    pub fn apply(&self, sim: &mut Sim) -> Result<(), SimError> {
        for fault in &self.faults {
            match fault {
                Fault::Partition(a, b) => sim.partition(a, b),
                Fault::OneWay(a, b) => sim.partition_oneway(*a, *b),
                Fault::Bridge { island, bridge } => {
                    let rest: Vec<usize> = (0..sim.len())
                        .filter(|h| h != bridge && !island.contains(h))
                        .collect();
                    sim.partition(island, &rest);
                }
                Fault::Hold(a, b) => sim.hold(*a, *b),
                Fault::Release(a, b) => sim.release(*a, *b),
                Fault::MaxLatency(max) => sim.set_max_latency(*max),
                Fault::Repair => sim.repair_all(),
                Fault::Crash(h) => sim.crash(*h),
                Fault::Restart(h) => sim.restart(*h),
                Fault::LossPerMille(p) => sim.set_loss(f64::from(*p) / 1000.0),
                Fault::Leave(h) => sim.leave(*h),
                Fault::StartChild(h, id) => sim.start_child(*h, id.clone()),
                Fault::TerminateChild(h, id) => sim.terminate_child(*h, id.clone()),
                Fault::Wait(d) => sim.run_for(*d)?,
            }
        }
        Ok(())
    }
}

/// A broken invariant, with what a reader needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (DESIGN.md's numbering).
    pub invariant: &'static str,
    /// What is wrong.
    pub detail: String,
    /// The smallest excerpt of the history that shows it.
    pub excerpt: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invariant {} broken: {}\n{}",
            self.invariant, self.detail, self.excerpt
        )
    }
}

/// Checks, at the end of a history whose network has been healed for the convergence bound:
/// invariant 2 (exactly one instance of every singleton and live child), 4 (every
/// acknowledged child not terminated still runs) and that a terminated child does not run.
pub fn check_healed(history: &[Record], singletons: &[String]) -> Result<(), Violation> {
    let running = running_at_end(history);
    let count = |id: &str| running.get(id).map_or(0, Vec::len);
    for singleton in singletons {
        if count(singleton) != 1 {
            return Err(Violation {
                invariant: "2 (exactly one after healing)",
                detail: format!("singleton {singleton} runs {} times", count(singleton)),
                excerpt: excerpt(history, singleton),
            });
        }
    }
    // A child acknowledged as held only by its (lone) starter may die with that process
    // before it meets the others: `Available` mode's documented trade.
    let crashed: BTreeSet<(usize, u64)> = history
        .iter()
        .filter(|r| r.what == What::Crashed)
        .map(|r| (r.host, r.incarnation))
        .collect();
    // A child must survive when a process known to have held its record (one that started or
    // acknowledged it) survived: replication tolerates failures, not the death of every
    // holder (in `Available` mode, a lone or cut-off holder may be the only one).
    let mut survivor_held: BTreeSet<&str> = BTreeSet::new();
    for r in history {
        if let What::ChildAcked { id, .. } | What::Started { id, .. } = &r.what
            && !crashed.contains(&(r.host, r.incarnation))
        {
            survivor_held.insert(id.as_str());
        }
    }
    let acked: BTreeSet<&str> = history
        .iter()
        .filter_map(|r| match &r.what {
            What::ChildAcked { id, .. } if survivor_held.contains(id.as_str()) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let terminated: BTreeSet<&str> = history
        .iter()
        .filter_map(|r| match &r.what {
            What::Terminated { id } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    // A termination recorded only on a node that crashed before it met the others (it was
    // cut off) dies with it; one whose node survived must win.
    let terminations_that_must_win: BTreeSet<&str> = history
        .iter()
        .filter_map(|r| match &r.what {
            What::Terminated { id } if !crashed.contains(&(r.host, r.incarnation)) => {
                Some(id.as_str())
            }
            _ => None,
        })
        .collect();
    for id in running.keys() {
        if count(id) > 1 {
            return Err(Violation {
                invariant: "2 (exactly one after healing)",
                detail: format!("{id} runs {} times", count(id)),
                excerpt: excerpt(history, id),
            });
        }
    }
    for id in acked.difference(&terminated) {
        if count(id) != 1 {
            return Err(Violation {
                invariant: "4 (nothing is lost)",
                detail: format!("acknowledged child {id} runs {} times", count(id)),
                excerpt: excerpt(history, id),
            });
        }
    }
    for id in &terminations_that_must_win {
        if count(id) != 0 {
            return Err(Violation {
                invariant: "terminations win",
                detail: format!("terminated child {id} still runs"),
                excerpt: excerpt(history, id),
            });
        }
    }
    Ok(())
}
