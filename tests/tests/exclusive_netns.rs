//! `Exclusive` mode across a real network cut: five `solo-node` processes (three voters),
//! each in a network namespace of its own, joined by a bridge this test makes. Cutting the
//! owner's link (no FIN, no RST: packets just stop) must stop its worker *before* the
//! majority side starts one; every process reads the same clock, so the events' `ts_us`
//! prove the order. Healing the link then resolves nothing.
//!
//! Each run prints the takeover (the cut to the majority side's start) and the gap (the
//! owner's stop to that start). `SOLO_NETNS_TRIALS=N` runs N cuts and prints their median
//! and maximum: the figure for "after a partition of the owner".
//!
//! Needs root and `ip` (Linux network namespaces); without them the test says so and passes
//! vacuously. It touches only the namespaces, bridge and veth pairs it creates (named
//! `sx<tag>…`), and deletes them when it ends, pass or fail.

use std::net::SocketAddr;
use std::time::Duration;

use tests::netns::Net;
use tests::{
    Node, NodeEvent, NodeSpec, Wire, WireKind, dump_all, exclusive_flags, now_us, settled_owner,
    solo_node_binary, use_wire, wait_any_other,
};

const LOCK: &str = "lock";
const NODES: usize = 5;
const WAIT: Duration = Duration::from_secs(20);

mod a_cut_off_owner_stops_before_the_majority_side_starts {
    use super::WireKind;
    #[test]
    fn tcp() {
        super::trials(WireKind::Tcp, 1);
    }
    #[test]
    fn quic() {
        super::trials(WireKind::Quic, 2);
    }
}

/// Runs the cut `SOLO_NETNS_TRIALS` times (default once) and prints the figures.
fn trials(wire: WireKind, test: u8) {
    let trials = tests::env_usize("SOLO_NETNS_TRIALS").unwrap_or(1);
    let mut takeovers = Vec::new();
    for _ in 0..trials {
        match a_cut_off_owner_stops_before_the_majority_side_starts(wire, test) {
            Some(takeover) => takeovers.push(takeover),
            None => return,
        }
    }
    takeovers.sort();
    eprintln!(
        "{wire:?}, {} cuts of the owner: cut to the majority side's start median {:.1} ms, max {:.1} ms",
        takeovers.len(),
        takeovers[takeovers.len() / 2] as f64 / 1000.0,
        takeovers[takeovers.len() - 1] as f64 / 1000.0,
    );
}

fn token(event: &NodeEvent) -> u64 {
    event
        .field("token")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// One cut of the owner; returns the takeover, in µs (`None`: no namespaces here).
fn a_cut_off_owner_stops_before_the_majority_side_starts(wire: WireKind, test: u8) -> Option<u64> {
    let Some(net) = Net::new(test, NODES) else {
        eprintln!("skipped: this machine cannot make network namespaces (needs root and `ip`)");
        return None;
    };
    let binary = solo_node_binary(false);
    let addrs: Vec<SocketAddr> = (0..NODES)
        .map(|i| format!("{}:7000", net.addr(i)).parse().expect("addr"))
        .collect();
    let mut specs: Vec<NodeSpec> = (0..NODES)
        .map(|i| NodeSpec {
            name: format!("n{}", i + 1),
            addr: addrs[i],
            seeds: addrs.iter().copied().filter(|a| *a != addrs[i]).collect(),
            cookie: "k9Qe4tXv2Lm8Rz7w-netns".into(),
            singletons: Vec::new(),
            wire: Wire::Tcp,
            extra: exclusive_flags(&["n1", "n2", "n3"], LOCK),
            netns: Some(net.ns(i)),
        })
        .collect();
    use_wire(&binary, &mut specs, wire);
    let nodes: Vec<Node> = specs.into_iter().map(|s| Node::start(&binary, s)).collect();
    let owner = settled_owner(&nodes, LOCK, WAIT)
        .unwrap_or_else(|| panic!("no settled owner\n{}", dump_all(&nodes)));
    let first = nodes[owner]
        .find(|e| e.event == "worker_started" && e.field("name") == Some(LOCK))
        .expect("a start");
    let cut_at = now_us();
    net.cut(owner);
    let stopped = nodes[owner]
        .wait_seen(WAIT, |e| {
            e.event == "worker_stopped" && e.field("name") == Some(LOCK) && e.ts_us >= cut_at
        })
        .unwrap_or_else(|| panic!("the cut-off owner kept running\n{}", dump_all(&nodes)));
    let lost = nodes[owner].find(|e| e.event == "lease_lost" && e.field("name") == Some(LOCK));
    assert!(lost.is_some(), "the owner said why it stopped");
    let (_, started) = wait_any_other(&nodes, owner, WAIT, |e| {
        e.event == "worker_started" && e.field("name") == Some(LOCK) && e.ts_us >= cut_at
    })
    .unwrap_or_else(|| panic!("the majority side never started it\n{}", dump_all(&nodes)));
    assert!(
        stopped.ts_us < started.ts_us,
        "the cut-off owner stopped at {} µs, after the majority side started at {} µs",
        stopped.ts_us,
        started.ts_us
    );
    assert!(token(&started) > token(&first), "a larger token");
    let takeover = started.ts_us - cut_at;
    eprintln!(
        "cut to the majority side's start {:.1} ms; the owner's stop to it {:.1} ms",
        takeover as f64 / 1000.0,
        (started.ts_us - stopped.ts_us) as f64 / 1000.0
    );
    // Healing resolves nothing: one instance, never two.
    net.heal(owner);
    std::thread::sleep(Duration::from_secs(5));
    let running: Vec<usize> = (0..NODES).filter(|&i| nodes[i].runs(LOCK)).collect();
    assert_eq!(
        running.len(),
        1,
        "after the heal: {running:?}\n{}",
        dump_all(&nodes)
    );
    Some(takeover)
}
