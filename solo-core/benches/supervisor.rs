//! Supervisor figures in the deterministic simulator.
//!
//! ```sh
//! cargo bench -p solo-core --features testing --bench supervisor            # 3×100k, 100×10k
//! cargo bench -p solo-core --features testing --bench supervisor -- 100 100000
//! ```

// A benchmark measures wall time: it is the one place here allowed to read the clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use solo_core::testing::{Sim, SimConfig};
use solo_core::{ChildId, ChildSpec};

/// Resident memory of this process, in bytes (Linux), to measure state per child without
/// an allocator hook (the workspace forbids `unsafe`).
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    match args.as_slice() {
        [nodes, children] => node_loss(*nodes, *children),
        _ => {
            start_many(3, 100_000);
            node_loss(100, 10_000);
        }
    }
}

/// Runs `sim` in 10 ms slices until `done` holds (checking after every event would cost
/// O(children) per event); returns the simulated time taken, to 10 ms.
fn settle(sim: &mut Sim, limit: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
    let start = sim.now();
    while sim.now() - start < limit {
        if done(sim) {
            return Some(sim.now() - start);
        }
        sim.run_for(Duration::from_millis(10));
        sim.clear_records();
    }
    None
}

fn cluster(nodes: usize) -> Sim {
    let mut sim = Sim::new(1, SimConfig::default());
    for _ in 0..nodes {
        sim.add_node();
    }
    // Checked every 10 ms of simulated time rather than after every event: `converged`
    // compares every node's view, O(nodes²).
    settle(&mut sim, Duration::from_secs(30), Sim::converged).expect("cluster forms");
    sim
}

/// How many children the cluster is asked to start per millisecond of simulated time.
const STARTS_PER_ROUND: usize = 10_000;

/// Starts `children` children, child `k` from host `k % hosts`: each round, every host
/// starts its share of the next `STARTS_PER_ROUND` in one call (as a runtime handling a
/// burst of requests would), then the cluster runs for 1 ms.
fn start_children(sim: &mut Sim, children: usize) {
    let hosts = sim.len();
    for round in (0..children).step_by(STARTS_PER_ROUND) {
        let end = (round + STARTS_PER_ROUND).min(children);
        for host in 0..hosts {
            let first = round + (host + hosts - round % hosts) % hosts;
            let specs: Vec<ChildSpec> = (first..end)
                .step_by(hosts)
                .map(|k| {
                    ChildSpec::new(
                        ChildId::new(format!("child-{k}")).expect("valid"),
                        "worker",
                        vec![],
                    )
                })
                .collect();
            if specs.is_empty() {
                continue;
            }
            sim.with_node(host, |n, now| {
                for spec in specs {
                    n.start_child(now, spec).expect("started");
                }
            })
            .expect("up");
        }
        sim.run_for(Duration::from_millis(1));
        sim.clear_records();
    }
}

fn start_many(nodes: usize, children: usize) {
    let mut sim = cluster(nodes);
    sim.run_for(Duration::from_millis(100));
    sim.clear_records();
    let before = resident_bytes();
    let wall = Instant::now();
    start_children(&mut sim, children);
    let settled = settle(&mut sim, Duration::from_secs(60), |sim| {
        (0..nodes).all(|i| sim.node(i).is_some_and(|n| n.live_children() == children))
            && sim.all_instances().len() == children
    })
    .expect("every node holds every child and each runs");
    let wall = wall.elapsed();
    sim.clear_records();
    sim.run_for(Duration::from_secs(2));
    sim.clear_records();
    let bytes = resident_bytes().saturating_sub(before);
    let per_child_per_node = bytes as f64 / (children * nodes) as f64;
    println!(
        "start {children} children on {nodes} nodes: {:.2} s wall ({:.1?} simulated to settle), \
         {per_child_per_node:.0} bytes of resident memory per child per node (core state plus the simulated runtime's worker rows)",
        wall.as_secs_f64(),
        settled
    );
}

fn node_loss(nodes: usize, children: usize) {
    let wall = Instant::now();
    let mut sim = cluster(nodes);
    start_children(&mut sim, children);
    settle(&mut sim, Duration::from_secs(120), |sim| {
        sim.all_instances().len() == children
            && (0..nodes).all(|i| sim.node(i).is_some_and(|n| n.live_children() == children))
    })
    .expect("settled");
    sim.run_for(Duration::from_secs(1));
    sim.clear_records();
    let setup = wall.elapsed();
    let victim = nodes / 2;
    let before: Vec<(ChildId, usize)> = (0..nodes)
        .flat_map(|i| {
            sim.workers(i)
                .keys()
                .map(move |c| (c.clone(), i))
                .collect::<Vec<_>>()
        })
        .collect();
    let owned_by_victim = before.iter().filter(|(_, h)| *h == victim).count();
    sim.crash_silently(victim);
    let wall = Instant::now();
    let took = settle(&mut sim, Duration::from_secs(60), |sim| {
        sim.converged() && sim.all_instances().len() == children
    })
    .expect("converged after the loss");
    let wall = wall.elapsed();
    let moved = before
        .iter()
        .filter(|(child, host)| {
            let now_on =
                (0..nodes).find(|&i| sim.node(i).is_some() && sim.workers(i).contains_key(child));
            now_on != Some(*host)
        })
        .count();
    println!(
        "{nodes} nodes, {children} children (set up in {:.1} s wall): a silent node loss \
         converged in {took:.2?} simulated ({:.2} s wall); {moved} children moved, the lost \
         node owned {owned_by_victim}",
        setup.as_secs_f64(),
        wall.as_secs_f64()
    );
}
