//! Real `solo-node` processes started together, one after another in either order, or in
//! a shuffled order, each declaring the singleton as it starts: never two `worker_started`
//! of the singleton without a `worker_stopped` between them, across all nodes.
//!
//! CI runs 2 trials of each order for 3 and 5 nodes; `SOLO_STARTUP_TRIALS=20 cargo test
//! --release -p tests --test startup -- --nocapture` runs more and prints the time from the
//! last node's start to the singleton running.

use std::time::{Duration, Instant};

use tests::{Node, cluster_specs, dump_all, now_us, settled_owner, solo_node_binary};

const SINGLETON: &str = "s";
const FORM: Duration = Duration::from_secs(30);
/// Each process stamps an event when its printer writes it: a line can trail its event by
/// a scheduling delay. Overlaps shorter than this are that, not two instances.
const PRINT_SLACK_US: u64 = 2_000;

#[derive(Clone, Copy, Debug)]
enum Order {
    AllAtOnce,
    Ascending,
    Descending,
    Shuffled(u64),
}

impl Order {
    fn sequence(self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        match self {
            Order::AllAtOnce | Order::Ascending => {}
            Order::Descending => order.reverse(),
            // A fixed interleaving: 7 is prime to 3 and 5, so this is a permutation.
            Order::Shuffled(seed) => order.sort_by_key(|&i| (i as u64 * 7 + seed) % n as u64),
        }
        order
    }

    /// The pause between two starts.
    fn gap(self) -> Duration {
        match self {
            Order::AllAtOnce => Duration::ZERO,
            _ => Duration::from_millis(150),
        }
    }
}

/// Every start and stop of the singleton, across all nodes, in time order.
fn timeline(nodes: &[Node]) -> Vec<(u64, usize, bool)> {
    let mut all = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let seen = node.seen.lock().map(|s| s.clone()).unwrap_or_default();
        for e in seen {
            let start = e.event == "worker_started";
            let stop = e.event == "worker_stopped";
            if (start || stop) && e.field("name") == Some(SINGLETON) {
                all.push((e.ts_us, i, start));
            }
        }
    }
    all.sort();
    all
}

/// The overlaps in a timeline: a start while another node's instance had not stopped
/// (by more than [`PRINT_SLACK_US`]).
fn overlaps(timeline: &[(u64, usize, bool)]) -> Vec<String> {
    let mut running: Vec<(usize, u64)> = Vec::new();
    let mut found = Vec::new();
    for &(at, node, start) in timeline {
        if start {
            for &(other, since) in &running {
                if other != node {
                    // Did `other` stop within the slack after this start?
                    let stopped_soon = timeline.iter().any(|&(t, n, s)| {
                        n == other && !s && t >= since && t <= at + PRINT_SLACK_US
                    });
                    if !stopped_soon {
                        found.push(format!(
                            "n{} started at {at} while n{} ran",
                            node + 1,
                            other + 1
                        ));
                    }
                }
            }
            running.push((node, at));
        } else {
            running.retain(|(n, _)| *n != node);
        }
    }
    found
}

fn trial(n: usize, order: Order) -> Duration {
    let binary = solo_node_binary(false);
    let specs = cluster_specs(n, "startup", &[SINGLETON]);
    let mut nodes: Vec<Option<Node>> = (0..n).map(|_| None).collect();
    let mut last_start = 0;
    for i in order.sequence(n) {
        std::thread::sleep(order.gap());
        last_start = now_us();
        nodes[i] = Some(Node::start(&binary, specs[i].clone()));
    }
    let nodes: Vec<Node> = nodes.into_iter().flatten().collect();
    let owner = settled_owner(&nodes, SINGLETON, FORM).unwrap_or_else(|| {
        panic!(
            "{n} nodes, {order:?}: no settled owner\n{}",
            dump_all(&nodes)
        )
    });
    let events = timeline(&nodes);
    let found = overlaps(&events);
    assert!(
        found.is_empty(),
        "{n} nodes, {order:?}: two instances at once: {found:?}\n{}",
        dump_all(&nodes)
    );
    // From the last start to the first moment the singleton ran after it (it may have run
    // since before: then the last node's start cost nothing).
    let running_at = events
        .iter()
        .filter(|(_, i, start)| *start && *i == owner)
        .map(|(t, _, _)| *t)
        .next_back()
        .unwrap_or(last_start);
    Duration::from_micros(running_at.saturating_sub(last_start))
}

fn trials() -> usize {
    tests::env_usize("SOLO_STARTUP_TRIALS").unwrap_or(2)
}

fn run(n: usize) {
    for order in [
        Order::AllAtOnce,
        Order::Ascending,
        Order::Descending,
        Order::Shuffled(n as u64),
    ] {
        let started = Instant::now();
        let mut times: Vec<Duration> = (0..trials()).map(|_| trial(n, order)).collect();
        times.sort();
        println!(
            "{n} nodes, {order:?}: {} trials in {:?}, last start to singleton running: median {:?}, max {:?}",
            times.len(),
            started.elapsed(),
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}

/// One test, so that one cluster runs at a time: the check compares the printed times of
/// different processes, which a loaded machine delays.
#[test]
fn three_or_five_nodes_started_in_any_order_never_run_two_singletons() {
    run(3);
    run(5);
}

#[test]
fn the_overlap_check_catches_two_instances() {
    // The checker itself, on a made-up timeline: n2 starts while n1 runs and n1 stops 10 ms
    // later; then n1 stops and n2 starts cleanly.
    let bad = [(0, 0, true), (1_000, 1, true), (11_000, 0, false)];
    assert_eq!(overlaps(&bad).len(), 1);
    let good = [(0, 0, true), (1_000, 0, false), (1_500, 1, true)];
    assert!(overlaps(&good).is_empty());
}
