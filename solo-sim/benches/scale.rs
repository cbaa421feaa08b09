//! How fast the turmoil simulation of real nodes runs, and how big a cluster one seed can
//! carry in under 10 s of wall time.
//!
//! ```sh
//! cargo bench -p solo-sim --bench scale
//! ```

use std::time::{Duration, Instant};

use solo_sim::{Schedule, Sim, check};

fn main() {
    nemesis_speed(10);
    for (nodes, children) in [
        (10, 1_000),
        (25, 1_000),
        (50, 1_000),
        (50, 10_000),
        (100, 1_000),
        (100, 10_000),
    ] {
        if !scale(nodes, children) {
            break;
        }
    }
}

/// Simulated seconds per wall second for a 5-node cluster under the nemesis.
fn nemesis_speed(seeds: u64) {
    let wall = Instant::now();
    let mut simulated = Duration::ZERO;
    for seed in 0..seeds {
        let mut sim = Sim::builder().nodes(5).seed(seed).singleton("roar").build();
        sim.run_for(Duration::from_secs(2)).expect("runs");
        Schedule::random(seed, 5, 8).apply(&mut sim).expect("runs");
        sim.heal();
        sim.run_for(Duration::from_secs(10)).expect("runs");
        simulated += sim.elapsed();
    }
    let wall = wall.elapsed();
    println!(
        "5 nodes under the nemesis: {seeds} seeds, {:.0} s simulated in {:.1} s wall: \
         {:.1} simulated s per wall s",
        simulated.as_secs_f64(),
        wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64()
    );
}

/// Forms a cluster, starts `children`, crashes one node, and checks that every child still
/// runs exactly once. Returns whether it fit in 10 s of wall time.
fn scale(nodes: usize, children: usize) -> bool {
    let wall = Instant::now();
    let mut sim = Sim::builder()
        .nodes(nodes)
        .seed(1)
        .singleton("roar")
        .build();
    sim.run_for(Duration::from_secs(3)).expect("runs");
    for k in 0..children {
        sim.start_child(k % nodes, format!("c{k}"));
        if k % 500 == 499 {
            sim.run_for(Duration::from_millis(10)).expect("runs");
        }
    }
    sim.run_for(Duration::from_secs(3)).expect("runs");
    sim.crash(nodes / 2);
    sim.run_for(Duration::from_secs(5)).expect("runs");
    let running = check::running_at_end(&sim.history());
    let once = running.values().filter(|r| r.len() == 1).count();
    let wall = wall.elapsed();
    println!(
        "{nodes} nodes, {children} children, one crash: {:.0} s simulated in {:.1} s wall; \
         {once} of {} ids run exactly once",
        sim.elapsed().as_secs_f64(),
        wall.as_secs_f64(),
        children + 1
    );
    wall < Duration::from_secs(10)
}
