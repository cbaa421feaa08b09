//! Lease traffic of `Exclusive` mode in the deterministic simulator: messages and bytes per
//! node per second with 1 and with 10 000 exclusive children, beside what membership costs
//! anyway (the same cluster with none). A holder renews all its leases at a voter with one
//! message of a fixed size (a count and a digest), so neither rate should grow with the
//! number of children.
//!
//! ```sh
//! cargo bench -p solo-core --features testing --bench leases
//! ```

// A benchmark measures wall time: it is the one place here allowed to read the clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use solo_core::testing::{Sim, SimConfig};
use solo_core::{ChildId, ChildSpec, Mode};

const NODES: usize = 5;
const VOTERS: usize = 3;
const MEASURE: Duration = Duration::from_secs(20);

fn main() {
    let (base_msgs, base_bytes, _) = traffic(0);
    println!(
        "{NODES} nodes, {VOTERS} voters, default settings, {MEASURE:?} measured after settling"
    );
    println!(
        "no exclusive child: {base_msgs:.1} messages and {base_bytes:.0} bytes per node per second (membership)"
    );
    for children in [1, 10_000] {
        let (msgs, bytes, (lease_msgs, lease_bytes)) = traffic(children);
        println!(
            "{children:>6} exclusive children: {lease_msgs:.1} lease messages and {lease_bytes:.0} lease bytes per node per second; all traffic {msgs:.1} messages, {bytes:.0} bytes"
        );
    }
}

/// Messages and bytes per node per second of a settled cluster running `children`
/// exclusive children: all of them, and lease messages alone.
fn traffic(children: usize) -> (f64, f64, (f64, f64)) {
    let config = SimConfig {
        voters: VOTERS,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(7, config);
    for _ in 0..NODES {
        sim.add_node();
    }
    sim.run_for(Duration::from_secs(3));
    for c in 0..children {
        let id = ChildId::new(format!("exclusive-{c}")).expect("valid");
        let spec = ChildSpec::new(id, "fenced", vec![]).mode(Mode::Exclusive);
        sim.with_node(c % NODES, |node, now| node.start_child(now, spec))
            .expect("running")
            .expect("started");
        if c % 1000 == 999 {
            sim.run_for(Duration::from_millis(10));
            sim.clear_records();
        }
    }
    // Settle: every child runs once.
    for _ in 0..100 {
        sim.run_for(Duration::from_millis(100));
        sim.clear_records();
        let running: usize = (0..NODES).map(|i| sim.workers(i).len()).sum();
        if running == children {
            break;
        }
    }
    let running: usize = (0..NODES).map(|i| sim.workers(i).len()).sum();
    assert_eq!(running, children, "every exclusive child runs once");
    let before: Vec<(u64, u64, (u64, u64))> = (0..NODES)
        .map(|i| {
            (
                sim.messages_sent(i),
                sim.bytes_sent(i),
                sim.lease_traffic(i),
            )
        })
        .collect();
    let mut left = MEASURE;
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(1));
        sim.run_for(step);
        sim.clear_records();
        left -= step;
    }
    let (mut msgs, mut bytes, mut lease_msgs, mut lease_bytes) = (0u64, 0u64, 0u64, 0u64);
    for (i, (m, b, (lm, lb))) in before.into_iter().enumerate() {
        msgs += sim.messages_sent(i) - m;
        bytes += sim.bytes_sent(i) - b;
        let (lm_now, lb_now) = sim.lease_traffic(i);
        lease_msgs += lm_now - lm;
        lease_bytes += lb_now - lb;
    }
    let per = (NODES as f64) * MEASURE.as_secs_f64();
    (
        msgs as f64 / per,
        bytes as f64 / per,
        (lease_msgs as f64 / per, lease_bytes as f64 / per),
    )
}
