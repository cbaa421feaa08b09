//! Real-process tests of messaging and handoff: `solo-node` processes on 127.0.0.1 whose
//! demo singleton is an actor counting its roars, reached with `solo-node call`.
//!
//! Every wait is bounded; these are functional checks, not timings (the `calls` bench in
//! `solo` measures those).

use std::time::Duration;

use tests::{
    Node, NodeSpec, WireKind, call, cluster_specs, dump_all, settled_owner, solo_node_binary,
    use_wire, wait_full_mesh,
};

const FORM: Duration = Duration::from_secs(30);
const MESH: Duration = Duration::from_secs(10);
const CALL: Duration = Duration::from_secs(10);

fn start(specs: Vec<NodeSpec>) -> Vec<Node> {
    let binary = solo_node_binary(false);
    let nodes: Vec<Node> = specs
        .into_iter()
        .map(|spec| Node::start(&binary, spec))
        .collect();
    assert!(
        wait_full_mesh(&nodes, MESH),
        "no full mesh:\n{}",
        dump_all(&nodes)
    );
    nodes
}

fn count(reply: &str) -> u64 {
    reply
        .parse()
        .unwrap_or_else(|_| panic!("a count, got {reply:?}"))
}

/// SIGTERM of the owner: the count goes on on the new node (state handed over); SIGKILL of
/// the next owner: a call made right after the kill completes on the new instance, whose
/// count restarted.
fn the_count_survives_a_handover_and_restarts_after_a_crash(wire: WireKind) {
    let binary = solo_node_binary(false);
    let mut specs = cluster_specs(3, "handoff", &["roar"]);
    use_wire(&binary, &mut specs, wire);
    let mut nodes = start(specs);
    let owner = settled_owner(&nodes, "roar", FORM)
        .unwrap_or_else(|| panic!("no owner:\n{}", dump_all(&nodes)));
    let entry = nodes[(owner + 1) % 3].spec.clone();
    let before = count(&call(&binary, &entry, "roar", "add 1000", CALL).expect("answered"));
    assert!(before >= 1000);

    nodes[owner].signal("TERM");
    assert!(
        nodes[owner].wait_exit(Duration::from_secs(15)),
        "{}",
        nodes[owner].dump()
    );
    nodes.remove(owner);
    let after = count(&call(&binary, &nodes[0].spec, "roar", "get", CALL).expect("answered"));
    assert!(
        after >= before,
        "the count went back from {before} to {after}: the state was not handed over\n{}",
        dump_all(&nodes)
    );

    let owner = settled_owner(&nodes, "roar", FORM)
        .unwrap_or_else(|| panic!("no owner after the handover:\n{}", dump_all(&nodes)));
    let survivor = nodes[1 - owner].spec.clone();
    nodes[owner].signal("KILL");
    // Made during the failover: it waits for the new instance and completes there.
    let reply = call(&binary, &survivor, "roar", "get", CALL).unwrap_or_else(|e| {
        panic!(
            "the call during the failover failed: {e}\n{}",
            dump_all(&nodes)
        )
    });
    assert!(
        count(&reply) < before,
        "after a crash the count starts again, got {reply} (it was {after})"
    );
}

/// Three singletons with distinct counts; every node but the last leaves by SIGTERM, one
/// by one: the last node runs all three, each with its count.
fn graceful_leaves_bring_every_singleton_with_its_state_to_the_last_node(wire: WireKind) {
    let binary = solo_node_binary(false);
    let names = ["a", "b", "c"];
    let mut specs = cluster_specs(3, "leaves", &names);
    use_wire(&binary, &mut specs, wire);
    let mut nodes = start(specs);
    for name in names {
        assert!(
            settled_owner(&nodes, name, FORM).is_some(),
            "{}",
            dump_all(&nodes)
        );
    }
    let mut counts = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let add = format!("add {}", (i + 1) * 1000);
        counts.push(count(
            &call(&binary, &nodes[2].spec, name, &add, CALL).expect("answered"),
        ));
    }
    for _ in 0..2 {
        let leaving = nodes.remove(0);
        leaving.signal("TERM");
        let mut leaving = leaving;
        assert!(
            leaving.wait_exit(Duration::from_secs(15)),
            "{}",
            leaving.dump()
        );
    }
    let last = &nodes[0];
    for (name, before) in names.iter().zip(&counts) {
        let now = count(&call(&binary, &last.spec, name, "get", CALL).expect("answered"));
        assert!(
            now >= *before,
            "{name}: the count went back from {before} to {now}\n{}",
            last.dump()
        );
        assert!(
            last.runs(name),
            "{name} does not run on the last node\n{}",
            last.dump()
        );
    }
}

#[test]
fn the_count_survives_a_handover_and_restarts_after_a_crash_over_tcp() {
    the_count_survives_a_handover_and_restarts_after_a_crash(WireKind::Tcp);
}

#[test]
fn the_count_survives_a_handover_and_restarts_after_a_crash_over_quic() {
    the_count_survives_a_handover_and_restarts_after_a_crash(WireKind::Quic);
}

#[test]
fn graceful_leaves_bring_every_singleton_with_its_state_to_the_last_node_over_tcp() {
    graceful_leaves_bring_every_singleton_with_its_state_to_the_last_node(WireKind::Tcp);
}

#[test]
fn a_call_to_an_unknown_name_fails_at_once() {
    let binary = solo_node_binary(false);
    let specs = cluster_specs(2, "unknown", &["roar"]);
    let nodes = start(specs);
    let started = std::time::Instant::now();
    let error = call(&binary, &nodes[0].spec, "nobody", "get", CALL).expect_err("no such name");
    assert!(
        error.contains("no child or singleton is named nobody"),
        "{error}"
    );
    assert!(
        started.elapsed() < CALL,
        "it failed at once, not at the timeout"
    );
}
