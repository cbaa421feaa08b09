//! `Exclusive` mode with real `solo-node` processes on 127.0.0.1: three nodes, all voters,
//! each declaring the exclusive demo singleton. Every process reads the same clock, so the
//! events' `ts_us` order what happened on different nodes.
//!
//! Every wait is bounded and generous: these are functional checks (the order of events,
//! rising tokens); the failover bench measures the timings.

use std::time::Duration;

use tests::{
    Node, NodeEvent, WireKind, cluster_specs, dump_all, exclusive_flags, fresh_dir, now_us,
    settled_owner, solo_node_binary, use_wire, wait_any_other,
};

macro_rules! over_tcp_and_quic {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::WireKind;
            #[test]
            fn tcp() {
                super::$scenario(WireKind::Tcp);
            }
            #[test]
            fn quic() {
                super::$scenario(WireKind::Quic);
            }
        }
    )*};
}

over_tcp_and_quic!(
    a_frozen_owner_is_replaced_only_after_its_lease_and_roars_no_more_when_resumed,
    a_killed_owner_is_replaced_under_a_larger_token,
    sigterm_hands_the_exclusive_singleton_over_with_its_state,
    a_restarted_voter_keeps_the_guarantees,
    voters_with_data_dirs_go_on_from_their_tokens_after_a_whole_cluster_restart,
);

const LOCK: &str = "lock";
const WAIT: Duration = Duration::from_secs(20);

/// Three nodes `n1`–`n3`, all voters, each declaring the exclusive singleton [`LOCK`].
fn exclusive_cluster(wire: WireKind) -> (std::path::PathBuf, Vec<Node>) {
    exclusive_cluster_with(wire, |_| Vec::new())
}

/// [`exclusive_cluster`], node `i` also given `more(i)` flags.
fn exclusive_cluster_with(
    wire: WireKind,
    more: impl Fn(usize) -> Vec<String>,
) -> (std::path::PathBuf, Vec<Node>) {
    let binary = solo_node_binary(false);
    let mut specs = cluster_specs(3, "k9Qe4tXv2Lm8Rz7w-real", &[]);
    use_wire(&binary, &mut specs, wire);
    for (i, spec) in specs.iter_mut().enumerate() {
        spec.extra = exclusive_flags(&["n1", "n2", "n3"], LOCK);
        spec.extra.extend(more(i));
    }
    let nodes = specs
        .into_iter()
        .map(|spec| Node::start(&binary, spec))
        .collect();
    (binary, nodes)
}

fn token(event: &NodeEvent) -> u64 {
    event
        .field("token")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no token in {event:?}"))
}

/// The first `worker_started` of [`LOCK`] at or after `since_us` on a node other than
/// `except`, with the node's index.
fn next_start(nodes: &[Node], except: usize, since_us: u64) -> Option<(usize, NodeEvent)> {
    wait_any_other(nodes, except, WAIT, |e| {
        e.event == "worker_started" && e.field("name") == Some(LOCK) && e.ts_us >= since_us
    })
}

fn owner_and_token(nodes: &[Node]) -> (usize, u64) {
    let owner = settled_owner(nodes, LOCK, WAIT)
        .unwrap_or_else(|| panic!("no settled owner\n{}", dump_all(nodes)));
    let started = nodes[owner]
        .find(|e| e.event == "worker_started" && e.field("name") == Some(LOCK))
        .expect("the owner printed its start");
    (owner, token(&started))
}

fn a_frozen_owner_is_replaced_only_after_its_lease_and_roars_no_more_when_resumed(wire: WireKind) {
    let (_binary, nodes) = exclusive_cluster(wire);
    let (old, old_token) = owner_and_token(&nodes);
    // Wait for a roar, then freeze the owner just after it.
    nodes[old]
        .wait_seen(WAIT, |e| e.event == "roar" && e.field("name") == Some(LOCK))
        .expect("the owner roars");
    let frozen_at = now_us();
    nodes[old].signal("STOP");
    let (new, started) = next_start(&nodes, old, frozen_at)
        .unwrap_or_else(|| panic!("nobody took over\n{}", dump_all(&nodes)));
    // Its lease (2 s, counted from a renewal at most 0.5 s before the freeze) had to run out.
    let waited = started.ts_us - frozen_at;
    assert!(
        waited >= 1_000_000,
        "took over after {waited} µs: before the lease could end"
    );
    assert!(token(&started) > old_token, "a larger token");
    let resumed_at = now_us();
    nodes[old].signal("CONT");
    let stopped = nodes[old]
        .wait_seen(WAIT, |e| {
            e.event == "worker_stopped" && e.field("name") == Some(LOCK) && e.ts_us >= resumed_at
        })
        .unwrap_or_else(|| panic!("the resumed owner did not stop\n{}", dump_all(&nodes)));
    let late_roars: Vec<NodeEvent> = nodes[old]
        .seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e.event == "roar" && e.ts_us >= resumed_at && e.ts_us <= stopped.ts_us)
        .cloned()
        .collect();
    assert!(
        late_roars.is_empty(),
        "the resumed owner roared: {late_roars:?}"
    );
    // The resumed node refutes its `Down` and, as the rendezvous winner, may take the lock
    // back by a graceful move (under a larger token still): whichever way, exactly one node
    // runs it once things settle.
    let deadline = std::time::Instant::now() + WAIT;
    let runners = loop {
        let runners: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].runs(LOCK)).collect();
        if runners.len() == 1 || std::time::Instant::now() >= deadline {
            break runners;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        runners.len(),
        1,
        "one node runs it after the resume (new owner {new}): {runners:?}\n{}",
        dump_all(&nodes)
    );
}

fn a_killed_owner_is_replaced_under_a_larger_token(wire: WireKind) {
    let (_binary, nodes) = exclusive_cluster(wire);
    let (old, old_token) = owner_and_token(&nodes);
    let killed_at = now_us();
    nodes[old].signal("KILL");
    let (_, started) = next_start(&nodes, old, killed_at)
        .unwrap_or_else(|| panic!("nobody took over\n{}", dump_all(&nodes)));
    assert!(token(&started) > old_token, "a larger token");
}

fn sigterm_hands_the_exclusive_singleton_over_with_its_state(wire: WireKind) {
    let (_binary, nodes) = exclusive_cluster(wire);
    let (old, old_token) = owner_and_token(&nodes);
    let roared_under = |wanted: u64| {
        move |e: &NodeEvent| {
            e.event == "roar" && e.field("name") == Some(LOCK) && token(e) == wanted
        }
    };
    nodes[old]
        .wait_seen(WAIT, |e| e.event == "roar" && e.field("name") == Some(LOCK))
        .expect("the owner roars");
    let term_at = now_us();
    nodes[old].signal("TERM");
    let (new, started) = next_start(&nodes, old, term_at)
        .unwrap_or_else(|| panic!("nobody took over\n{}", dump_all(&nodes)));
    let new_token = token(&started);
    assert!(new_token > old_token, "a larger token");
    // A graceful move releases the lease: no lease is waited out.
    assert!(
        started.ts_us - term_at < 1_500_000,
        "the move waited a lease out"
    );
    nodes[old]
        .wait_seen(WAIT, |e| {
            e.event == "worker_stopped" && e.field("name") == Some(LOCK)
        })
        .expect("the old instance stopped");
    // The order of the two runs is read from their roars, which each worker prints itself as
    // it roars: `worker_started` and `worker_stopped` are printed by a task that follows the
    // cluster's events, a few milliseconds late under load, so their stamps bound nothing.
    // Every roar of the old run (all printed: its end is) comes before the first of the new
    // one, and the new run goes on from the count the old one handed over, not one lost.
    nodes[new]
        .wait_seen(WAIT, roared_under(new_token))
        .expect("the new owner roars");
    let count = |e: &NodeEvent| -> u64 {
        e.field("count")
            .and_then(|c| c.parse().ok())
            .expect("a count")
    };
    let old_roars = nodes[old].all_seen(roared_under(old_token));
    let last_old = old_roars.last().expect("the old run roared");
    let new_roars = nodes[new].all_seen(roared_under(new_token));
    let first_new = new_roars.first().expect("the new run roared");
    assert!(
        last_old.ts_us < first_new.ts_us,
        "the runs overlapped: the old one roared at {} µs, the new one at {} µs",
        last_old.ts_us,
        first_new.ts_us
    );
    assert_eq!(
        count(first_new),
        count(last_old) + 1,
        "the new run goes on from the count handed over"
    );
}

fn a_restarted_voter_keeps_the_guarantees(wire: WireKind) {
    let (binary, mut nodes) = exclusive_cluster(wire);
    let (owner, first_token) = owner_and_token(&nodes);
    // Restart a voter that does not own it: the owner renews with the other two meanwhile.
    let voter = (owner + 1) % nodes.len();
    let node = nodes.remove(voter);
    node.signal("KILL");
    let restarted = node.restart(&binary);
    nodes.insert(voter, restarted);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        nodes[owner].runs(LOCK),
        "the owner kept its lease\n{}",
        dump_all(&nodes)
    );
    // Then the owner dies: the survivors, the restarted voter among them, take over.
    let killed_at = now_us();
    nodes[owner].signal("KILL");
    let (_, started) = next_start(&nodes, owner, killed_at)
        .unwrap_or_else(|| panic!("nobody took over\n{}", dump_all(&nodes)));
    assert!(
        token(&started) > first_token,
        "a larger token after the voter's restart"
    );
}

/// Every process of the cluster dies at once (a power cut, a botched deploy) and comes back
/// with its data directory: the voters go on from the tokens they made durable. Without
/// them, a majority that lost its state continues above the wall clock instead (the
/// incarnation, in ms, × 1000), a jump of at least 1 000 000 per second of restart; a token
/// just above the last one shows it came from the data directories.
fn voters_with_data_dirs_go_on_from_their_tokens_after_a_whole_cluster_restart(wire: WireKind) {
    let dirs: Vec<std::path::PathBuf> = (0..3).map(|_| fresh_dir("voter")).collect();
    let (binary, nodes) = exclusive_cluster_with(wire, |i| {
        vec!["--data-dir".to_owned(), dirs[i].display().to_string()]
    });
    let (_, first_token) = owner_and_token(&nodes);
    for node in &nodes {
        node.signal("KILL");
    }
    let restarted_at = now_us();
    let nodes: Vec<Node> = nodes.into_iter().map(|n| n.restart(&binary)).collect();
    let (_, started) = next_start(&nodes, usize::MAX, restarted_at)
        .unwrap_or_else(|| panic!("the singleton never started again\n{}", dump_all(&nodes)));
    let second_token = token(&started);
    assert!(
        second_token > first_token,
        "{second_token} is not above {first_token}"
    );
    assert!(
        second_token - first_token < 500_000,
        "{second_token} came from the wall clock, not from the data directories (last {first_token})"
    );
    drop(nodes);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
