//! The README demo: a local 3-node cluster whose singleton survives a graceful handover
//! (SIGTERM: its roar count goes on) and the SIGKILL of its node (the count starts again).
//!
//! ```sh
//! cargo run -p tests --example demo
//! ```

use std::time::Duration;

use tests::{Node, cluster, now_us, settled_owner, solo_node_binary, wait_any_other};

/// The next `roar` of `node` (after `since_us`), with its count.
fn next_roar(node: &Node, since_us: u64) -> Option<u64> {
    node.wait_for(Duration::from_secs(3), |e| {
        e.event == "roar" && e.ts_us >= since_us
    })
    .and_then(|e| e.field("count").and_then(|c| c.parse().ok()))
}

/// Which of `nodes` (but `except`) starts the singleton after `since_us`, and how long after.
fn takeover(nodes: &[Node], except: usize, since_us: u64) -> Option<(usize, u64)> {
    let (i, started) = wait_any_other(nodes, except, Duration::from_secs(10), |e| {
        e.event == "worker_started" && e.field("name") == Some("roar") && e.ts_us >= since_us
    })?;
    Some((i, started.ts_us.saturating_sub(since_us)))
}

fn fail(why: &str) -> ! {
    eprintln!("demo: {why}");
    std::process::exit(1);
}

fn main() {
    println!("building solo-node…");
    let binary = solo_node_binary(false);
    println!("starting 3 nodes on 127.0.0.1, each declaring the singleton \"roar\"");
    let nodes = cluster(&binary, 3, "demo-cookie", &["roar"]);
    for node in &nodes {
        println!("  {} listens on {}", node.spec.name, node.spec.addr);
    }
    let Some(first) = settled_owner(&nodes, "roar", Duration::from_secs(10)) else {
        fail("no node settled as the singleton's owner within 10 s");
    };
    let mut count = 0;
    for _ in 0..3 {
        count = next_roar(&nodes[first], 0).unwrap_or_else(|| fail("the owner does not roar"));
        println!(
            "{}: I am singleton, hear me roar (roar {count})",
            nodes[first].spec.name
        );
    }

    println!(
        "SIGTERM {} (pid {}): a graceful handover",
        nodes[first].spec.name,
        nodes[first].pid()
    );
    let termed_at = now_us();
    nodes[first].signal("TERM");
    let Some((second, micros)) = takeover(&nodes, first, termed_at) else {
        fail("nobody took the singleton over after the SIGTERM");
    };
    println!(
        "{} took the singleton over {:.1} ms after the SIGTERM, with its state:",
        nodes[second].spec.name,
        micros as f64 / 1000.0
    );
    let after = next_roar(&nodes[second], termed_at).unwrap_or_else(|| fail("no roar"));
    println!(
        "{}: I am singleton, hear me roar (roar {after}: the count goes on from {count})",
        nodes[second].spec.name
    );

    println!(
        "SIGKILL {} (pid {}): a crash",
        nodes[second].spec.name,
        nodes[second].pid()
    );
    let killed_at = now_us();
    nodes[second].signal("KILL");
    let third = (0..3)
        .find(|&i| i != first && i != second)
        .unwrap_or_else(|| fail("no third node"));
    let Some((_, micros)) = takeover(&nodes, second, killed_at) else {
        fail("the last node did not take the singleton over after the SIGKILL");
    };
    println!(
        "{} took the singleton over {:.1} ms after the kill",
        nodes[third].spec.name,
        micros as f64 / 1000.0
    );
    let fresh = next_roar(&nodes[third], killed_at).unwrap_or_else(|| fail("no roar"));
    println!(
        "{}: I am singleton, hear me roar (roar {fresh}: a crash hands nothing over, the count starts again)",
        nodes[third].spec.name
    );
    nodes[third].signal("TERM");
    println!("done");
}
