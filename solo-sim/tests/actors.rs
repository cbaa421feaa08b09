//! Actors under turmoil: the real driver's messaging and handoff, with crashes, leaves and
//! a healed partition, on fixed seeds.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use solo::{Actor, Handoff, WorkerContext, WorkerError};
use solo_sim::{Sim, SimCall, check};

const CALL: Duration = Duration::from_secs(5);

/// Counts what it is told to add; hands the count over; after a partition, adds the
/// loser's count to its own, so that nothing counted on either side is lost.
struct Counter {
    count: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Get,
    Add(u64),
}

impl Actor for Counter {
    type Call = Op;
    type Reply = u64;
    type Cast = ();
    type State = u64;

    async fn start(_: &WorkerContext, handed_over: Option<u64>) -> Result<Self, WorkerError> {
        Ok(Counter {
            count: handed_over.unwrap_or(0),
        })
    }

    async fn handle_call(&mut self, op: Op, _: &WorkerContext) -> Result<u64, WorkerError> {
        if let Op::Add(n) = op {
            self.count += n;
        }
        Ok(self.count)
    }

    async fn begin_handoff(&mut self, _: &WorkerContext) -> Handoff<u64> {
        Handoff::Resume(self.count)
    }

    async fn resolve_conflict(&mut self, theirs: u64, _: &WorkerContext) {
        self.count += theirs;
    }
}

fn counters(nodes: usize, seed: u64, names: &[&str]) -> Sim {
    let mut builder = Sim::builder()
        .nodes(nodes)
        .seed(seed)
        .actor::<Counter>("counter");
    for name in names {
        builder = builder.singleton_of(*name, ["counter"]);
    }
    builder.build()
}

fn owner(sim: &Sim, id: &str) -> usize {
    let running = check::running_at_end(&sim.history());
    match running.get(id).map(Vec::as_slice) {
        Some([only]) => only.host,
        other => panic!(
            "{id} runs {other:?}\n{}",
            check::excerpt(&sim.history(), id)
        ),
    }
}

/// Calls `Add(1)` from `caller` every 10 ms for `calls` calls; returns the calls.
fn add_ones(sim: &mut Sim, caller: usize, calls: usize) -> Vec<SimCall<u64>> {
    (0..calls)
        .map(|_| {
            let call = sim.call::<Counter>(caller, "count", &Op::Add(1), CALL);
            sim.run_for(Duration::from_millis(10)).expect("runs");
            call
        })
        .collect()
}

#[test]
fn a_graceful_leave_hands_the_count_over_and_no_call_is_lost_or_counted_twice() {
    for seed in 0..4 {
        let mut sim = counters(3, seed, &["count"]);
        sim.run_for(Duration::from_secs(3)).expect("runs");
        let first = owner(&sim, "count");
        let caller = (first + 1) % 3;
        let mut calls = add_ones(&mut sim, caller, 30);
        sim.leave(first);
        calls.extend(add_ones(&mut sim, caller, 70));
        sim.run_for(Duration::from_secs(2)).expect("runs");
        let counts: Vec<u64> = calls
            .iter()
            .map(|call| match sim.reply(call) {
                Some(Ok(count)) => count,
                other => panic!("seed {seed}: call {} ended {other:?}", call.number()),
            })
            .collect();
        // Each call counted exactly once, in the order made, across the move: the state
        // arrived intact and nothing was delivered twice.
        let mut sorted = counts.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (1..=100).collect::<Vec<u64>>(),
            "seed {seed}: {counts:?}"
        );
        assert_ne!(owner(&sim, "count"), first, "seed {seed}: it moved");
    }
}

#[test]
fn calls_made_during_a_failover_complete_on_the_new_instance() {
    for seed in 0..4 {
        let mut sim = counters(3, seed, &["count"]);
        sim.run_for(Duration::from_secs(3)).expect("runs");
        let first = owner(&sim, "count");
        let caller = (first + 1) % 3;
        add_ones(&mut sim, caller, 10);
        sim.crash(first);
        // Made while the failure is not yet detected (a crash closes connections, which is
        // fast, but calls race it).
        let during = add_ones(&mut sim, caller, 20);
        sim.run_for(Duration::from_secs(3)).expect("runs");
        for call in &during {
            assert!(
                matches!(sim.reply(call), Some(Ok(_))),
                "seed {seed}: call {} ended {:?}",
                call.number(),
                sim.reply(call)
            );
        }
        // The new instance started afresh (a crash hands nothing over).
        let last = sim.reply(during.last().expect("calls"));
        assert!(
            matches!(last, Some(Ok(n)) if n <= 20),
            "seed {seed}: {last:?}"
        );
    }
}

#[test]
fn leaving_one_by_one_brings_every_singleton_with_its_count_to_the_last_node() {
    let names = ["a", "b", "c", "d"];
    let mut sim = counters(3, 7, &names);
    sim.run_for(Duration::from_secs(3)).expect("runs");
    for (i, name) in names.iter().enumerate() {
        sim.call::<Counter>(2, *name, &Op::Add(100 * (i as u64 + 1)), CALL);
    }
    sim.run_for(Duration::from_secs(1)).expect("runs");
    sim.leave(0);
    sim.run_for(Duration::from_secs(3)).expect("runs");
    sim.leave(1);
    sim.run_for(Duration::from_secs(3)).expect("runs");
    let gets: Vec<SimCall<u64>> = names
        .iter()
        .map(|name| sim.call::<Counter>(2, *name, &Op::Get, CALL))
        .collect();
    sim.run_for(Duration::from_secs(1)).expect("runs");
    for (i, (name, call)) in names.iter().zip(&gets).enumerate() {
        assert_eq!(owner(&sim, name), 2, "{name} runs on the last node");
        assert_eq!(
            sim.reply(call),
            Some(Ok(100 * (i as u64 + 1))),
            "{name} kept its count"
        );
    }
}

#[test]
fn after_a_healed_partition_the_winner_gets_the_losers_state() {
    let mut sim = counters(3, 11, &["count"]);
    sim.run_for(Duration::from_secs(3)).expect("runs");
    let first = owner(&sim, "count");
    let others: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    sim.partition(&[first], &others);
    sim.run_for(Duration::from_secs(4)).expect("runs");
    // Each side runs its own instance and counts on it.
    sim.call::<Counter>(first, "count", &Op::Add(5), CALL);
    sim.call::<Counter>(others[0], "count", &Op::Add(7), CALL);
    sim.run_for(Duration::from_secs(1)).expect("runs");
    sim.repair_all();
    sim.run_for(Duration::from_secs(6)).expect("runs");
    let get = sim.call::<Counter>(others[1], "count", &Op::Get, CALL);
    sim.run_for(Duration::from_secs(1)).expect("runs");
    let history = sim.history();
    assert_eq!(
        check::running_at_end(&history).get("count").map(Vec::len),
        Some(1),
        "{}",
        check::excerpt(&history, "count")
    );
    // The loser handed its count to the winner's resolve_conflict: both sides' counts.
    assert_eq!(sim.reply(&get), Some(Ok(12)));
}

#[test]
fn a_rejoining_node_that_wins_the_singleton_back_gets_the_state_handed_over() {
    for seed in 0..4 {
        let mut sim = counters(3, 20 + seed, &["count"]);
        sim.run_for(Duration::from_secs(3)).expect("runs");
        let first = owner(&sim, "count");
        sim.crash(first);
        sim.run_for(Duration::from_secs(3)).expect("runs");
        let second = owner(&sim, "count");
        let caller = (0..3)
            .find(|&i| i != first && i != second)
            .expect("a third node");
        // The runner-up started afresh after the crash; it counts to 50.
        let before = add_ones(&mut sim, caller, 50);
        // The old owner comes back as a new incarnation, wins the rendezvous again (same
        // name), and the runner-up must hand the count over to it: a rebalance on join.
        sim.restart(first);
        sim.run_for(Duration::from_secs(3)).expect("runs");
        assert_eq!(
            owner(&sim, "count"),
            first,
            "seed {seed}: the rejoined node wins it back"
        );
        let after = sim.call::<Counter>(caller, "count", &Op::Get, CALL);
        sim.run_for(Duration::from_secs(1)).expect("runs");
        let counted = sim.reply(before.last().expect("calls"));
        assert_eq!(counted, Some(Ok(50)), "seed {seed}");
        assert_eq!(
            sim.reply(&after),
            Some(Ok(50)),
            "seed {seed}: the state moved with it"
        );
    }
}
