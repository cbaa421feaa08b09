//! The README demo: a local 3-node cluster whose singleton survives the SIGKILL of its node.
//!
//! ```sh
//! cargo run -p tests --example demo
//! ```

use std::time::Duration;

use tests::{cluster, now_us, settled_owner, solo_node_binary};

fn main() {
    println!("building solo-node…");
    let binary = solo_node_binary(false);
    println!("starting 3 nodes on 127.0.0.1, each declaring the singleton \"roar\"");
    let nodes = cluster(&binary, 3, "demo-cookie", &["roar"]);
    for node in &nodes {
        println!("  {} listens on {}", node.spec.name, node.spec.addr);
    }
    let Some(owner) = settled_owner(&nodes, "roar", Duration::from_secs(10)) else {
        eprintln!("demo: no node settled as the singleton's owner within 10 s");
        std::process::exit(1);
    };
    println!(
        "{} runs the singleton (\"I am singleton, hear me roar\")",
        nodes[owner].spec.name
    );
    std::thread::sleep(Duration::from_millis(1500));

    println!(
        "SIGKILL {} (pid {})",
        nodes[owner].spec.name,
        nodes[owner].pid()
    );
    let killed_at = now_us();
    nodes[owner].signal("KILL");
    let mut takeover = None;
    for _ in 0..100 {
        for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != owner) {
            if let Some(started) = node.wait_for(Duration::from_millis(50), |e| {
                e.event == "worker_started"
                    && e.field("name") == Some("roar")
                    && e.ts_us >= killed_at
            }) {
                takeover = Some((i, started.ts_us.saturating_sub(killed_at)));
            }
        }
        if takeover.is_some() {
            break;
        }
    }
    let Some((new_owner, micros)) = takeover else {
        eprintln!("demo: no survivor took the singleton over within 10 s");
        std::process::exit(1);
    };
    println!(
        "{} took the singleton over {:.1} ms after the kill",
        nodes[new_owner].spec.name,
        micros as f64 / 1000.0
    );
    let roared = nodes[new_owner].wait_for(Duration::from_secs(3), |e| e.event == "roar");
    if roared.is_some() {
        println!(
            "{}: I am singleton, hear me roar",
            nodes[new_owner].spec.name
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        if i != owner {
            node.signal("TERM");
        }
    }
    println!("done: the survivors left gracefully");
}
