//! Membership figures, measured in the deterministic simulator (simulated time is exact;
//! wall time is this machine's).
//!
//! ```sh
//! cargo bench -p solo-core --features testing --bench membership
//! ```

// A benchmark measures wall time: it is the one place here allowed to read the clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use solo_core::MemberState;
use solo_core::testing::{Schedule, Sim, SimConfig};

fn main() {
    for nodes in [3, 100] {
        detection(nodes, if nodes > 10 { 5 } else { 20 });
    }
    steady_state_messages(&[10, 30, 100]);
    schedules(1000);
}

fn cluster(seed: u64, nodes: usize) -> Sim {
    let mut sim = Sim::new(seed, SimConfig::default());
    for _ in 0..nodes {
        sim.add_node();
    }
    let formed = sim.run_until(Duration::from_secs(30), Sim::converged);
    assert!(
        formed.is_some(),
        "seed {seed}: {nodes} nodes did not converge"
    );
    sim.run_for(Duration::from_secs(2));
    sim
}

/// Time until every survivor sees the victim `Down`, then until all views agree.
fn detection(nodes: usize, trials: u64) {
    let mut silent = Vec::new();
    let mut killed = Vec::new();
    let mut converged = Vec::new();
    for seed in 0..trials {
        for kill in [false, true] {
            let mut sim = cluster(seed, nodes);
            let victim = sim.node(nodes - 1).expect("running").id().clone();
            if kill {
                sim.kill(nodes - 1);
            } else {
                sim.crash_silently(nodes - 1);
            }
            let all_see_down = |sim: &Sim| {
                (0..nodes - 1).all(|i| {
                    sim.node(i)
                        .and_then(|n| n.member(&victim.name))
                        .is_some_and(|m| m.state() == MemberState::Down)
                })
            };
            let took = sim
                .run_until(Duration::from_secs(30), all_see_down)
                .expect("detected");
            if kill {
                killed.push(took);
            } else {
                silent.push(took);
                let rest = sim
                    .run_until(Duration::from_secs(30), Sim::converged)
                    .expect("converged");
                converged.push(took + rest);
            }
        }
    }
    println!("{nodes:>3} nodes, {trials} trials (simulated time):");
    report("  silent failure, all survivors see Down", &mut silent);
    report("  silent failure, all views converged   ", &mut converged);
    report("  killed process (Link::Down), all Down ", &mut killed);
}

fn steady_state_messages(sizes: &[usize]) {
    println!("steady state, messages sent per node per second (simulated):");
    for &nodes in sizes {
        let mut sim = cluster(1, nodes);
        let before: Vec<u64> = (0..nodes).map(|i| sim.messages_sent(i)).collect();
        let window = Duration::from_secs(10);
        sim.run_for(window);
        let sent: Vec<f64> = (0..nodes)
            .map(|i| (sim.messages_sent(i) - before[i]) as f64 / window.as_secs_f64())
            .collect();
        let mean = sent.iter().sum::<f64>() / nodes as f64;
        let max = sent.iter().copied().fold(0.0, f64::max);
        println!("  {nodes:>3} nodes: mean {mean:.1}/s, max {max:.1}/s");
    }
}

fn schedules(count: u64) {
    let start = Instant::now();
    let mut simulated = Duration::ZERO;
    for seed in 0..count {
        let mut sim = Sim::new(seed, SimConfig::default());
        for _ in 0..5 {
            sim.add_node();
        }
        Schedule::random(seed, 5, 8).apply(&mut sim);
        sim.end_faults();
        let done = sim.run_until(Duration::from_secs(30), Sim::converged);
        assert!(done.is_some(), "seed {seed} did not converge");
        simulated += sim.now();
    }
    let wall = start.elapsed();
    println!(
        "{count} random schedules of a 5-node cluster: {:.2} s wall, {:.0} schedules/s, \
         {:.0} simulated s per wall s",
        wall.as_secs_f64(),
        count as f64 / wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64()
    );
}

fn report(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    let min = samples[0];
    println!("{label}: min {min:>9.1?}  median {median:>9.1?}  max {max:>9.1?}");
}
