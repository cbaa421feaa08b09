//! Seeds by name: a node whose seed names the runtime has not resolved yet joins, rather
//! than start a cluster of its own, and asks the addresses it is given later at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use solo_core::{Action, ChildId, ChildSpec, Incarnation, Node, NodeId, NodeName};

fn node(by_name: bool, now: Instant) -> Node {
    let id = NodeId::new(NodeName::new("a").expect("name"), Incarnation(1));
    let addr = SocketAddr::from(([127, 0, 0, 1], 7001));
    let mut node = Node::builder(id, addr)
        .seeds_by_name(by_name)
        .build(now)
        .expect("builds");
    let spec = ChildSpec::new(ChildId::new("s").expect("id"), "worker", Vec::new());
    node.declare_singleton(now, spec).expect("declares");
    node
}

/// Whether the node starts its singleton by `at`, stepping its clock there.
fn starts_by(node: &mut Node, from: Instant, at: Instant) -> bool {
    let mut now = from;
    loop {
        node.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        while let Some(action) = node.poll_action() {
            if matches!(action, Action::Start { .. }) {
                return true;
            }
        }
        if now >= at {
            return false;
        }
        now = (now + Duration::from_millis(10)).min(at);
    }
}

#[test]
fn a_node_waiting_for_its_seed_names_does_not_start_alone_until_the_join_timeout() {
    // The tests' epoch: the core reads no clock, its tests give it one.
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    // Without seeds at all, a node is the first of its cluster: it starts at once.
    let mut alone = node(false, t0);
    assert!(starts_by(&mut alone, t0, t0));

    let mut waiting = node(true, t0);
    let join_timeout = waiting.config().join_timeout;
    let half = t0 + join_timeout / 2;
    assert!(!starts_by(&mut waiting, t0, half), "waits for its seeds");
    // The names resolve: the new seed is asked at once.
    let seed = SocketAddr::from(([127, 0, 0, 1], 7002));
    waiting.set_seeds([seed, SocketAddr::from(([127, 0, 0, 1], 7001))]);
    let asked = std::iter::from_fn(|| waiting.poll_transmit()).any(|t| t.addr == Some(seed));
    assert!(asked, "the resolved seed is sent a sync");
    // Nobody answers: after the join timeout, it is alone after all.
    assert!(starts_by(&mut waiting, half, t0 + join_timeout * 2));
}
