//! Actors in-process: calls and casts routed to the one node that runs a name, typed
//! errors, and state handed over when the owner leaves. Every wait is bounded.

mod common;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use solo::{
    Actor, CallError, ChildId, Cluster, ClusterBuilder, Event, Handoff, WorkerContext, WorkerError,
};

const BOUND: Duration = Duration::from_secs(10);

/// A counter that hands its count over when it moves.
struct Counter {
    count: u64,
    /// Where it runs, to show which instance answered.
    node: String,
}

#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Get,
    Add(u64),
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Reading {
    count: u64,
    node: String,
}

impl Actor for Counter {
    type Call = Op;
    type Reply = Reading;
    type Cast = u64;
    type State = u64;

    async fn start(ctx: &WorkerContext, handed_over: Option<u64>) -> Result<Self, WorkerError> {
        Ok(Counter {
            count: handed_over.unwrap_or(0),
            node: ctx.node().name.to_string(),
        })
    }

    async fn handle_call(&mut self, op: Op, _: &WorkerContext) -> Result<Reading, WorkerError> {
        if let Op::Add(n) = op {
            self.count += n;
        }
        Ok(Reading {
            count: self.count,
            node: self.node.clone(),
        })
    }

    async fn handle_cast(&mut self, n: u64, _: &WorkerContext) -> Result<(), WorkerError> {
        self.count += n;
        Ok(())
    }

    async fn begin_handoff(&mut self, _: &WorkerContext) -> Handoff<u64> {
        Handoff::Resume(self.count)
    }
}

fn builder(name: &str) -> ClusterBuilder {
    common::node(name, "test-cookie.Tq7vX2pL9sK").actor::<Counter>("counter")
}

fn id(name: &str) -> ChildId {
    name.parse().expect("valid id")
}

async fn three_nodes() -> Vec<Cluster> {
    let a = builder("a").start().await.expect("a starts");
    let seed = a.local_addr();
    let b = builder("b").seeds([seed]).start().await.expect("b starts");
    let c = builder("c").seeds([seed]).start().await.expect("c starts");
    let nodes = vec![a, b, c];
    tokio::time::timeout(BOUND, async {
        for node in &nodes {
            while node.members().await.expect("up").len() < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    })
    .await
    .expect("the cluster forms");
    nodes
}

/// Three nodes that all declare the counter singleton `count`.
async fn counter_on_three_nodes() -> (Vec<Cluster>, ChildId) {
    let nodes = three_nodes().await;
    for node in &nodes {
        node.singleton(&id("count"), ["counter"])
            .await
            .expect("declared");
    }
    let count = id("count");
    (nodes, count)
}

/// Three nodes that all declare the counter singleton `count`, and its first call (adding
/// 5): the nodes, the name, that first reading and the index of the node that runs it.
async fn counter_at_five() -> (Vec<Cluster>, ChildId, Reading, usize) {
    let (nodes, count) = counter_on_three_nodes().await;
    let first: Reading = nodes[0]
        .call(&count, &Op::Add(5), BOUND)
        .await
        .expect("answered");
    let owner = nodes
        .iter()
        .position(|n| n.id().name.as_str() == first.node)
        .expect("the owner is one of ours");
    (nodes, count, first, owner)
}

/// The readings of calls that each added 1 after [`counter_at_five`]: 6, 7, 8, …
fn assert_counted_once_after_five(readings: &[Reading]) {
    let counts: Vec<u64> = readings.iter().map(|r| r.count).collect();
    let expected: Vec<u64> = (6..6 + readings.len() as u64).collect();
    assert_eq!(counts, expected, "each call counted exactly once, in order");
}

#[tokio::test]
async fn calls_and_casts_reach_the_one_instance_from_every_node() {
    let (nodes, count) = counter_on_three_nodes().await;
    // Every node's calls land on the same instance, whichever node runs it.
    let mut total = 0;
    for round in 0..3 {
        for node in &nodes {
            let reading: Reading = node
                .call(&count, &Op::Add(1), BOUND)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            total += 1;
            assert_eq!(reading.count, total);
        }
    }
    // Casts from one node arrive in order, before that node's next call.
    for _ in 0..10 {
        nodes[1].send(&count, &1u64).await.expect("sent");
    }
    let reading: Reading = nodes[1]
        .call(&count, &Op::Get, BOUND)
        .await
        .expect("answered");
    assert_eq!(reading.count, total + 10);
    let owner = nodes[0]
        .whereis(&count)
        .await
        .expect("up")
        .expect("an owner");
    assert_eq!(owner.name.as_str(), reading.node);
    // The typed handle says the same.
    let counter = nodes[2].actor_ref::<Counter>(&count);
    assert_eq!(
        counter.call(&Op::Get, BOUND).await.expect("answered").count,
        total + 10
    );
    for node in nodes {
        node.leave().await;
    }
}

#[tokio::test]
async fn unknown_names_and_plain_workers_fail_with_typed_errors() {
    let a = builder("a").start().await.expect("starts");
    let started = std::time::Instant::now();
    let unknown = a.call::<_, Reading>(&id("nobody"), &Op::Get, BOUND).await;
    assert_eq!(unknown, Err(CallError::NoSuchName(id("nobody"))));
    assert!(
        started.elapsed() < BOUND / 2,
        "fails at once, not at the timeout"
    );
    assert_eq!(
        a.send(&id("nobody"), &1u64).await,
        Err(CallError::NoSuchName(id("nobody")))
    );

    a.singleton(&id("plain"), ["idle"]).await.expect("declared");
    let mut events = a.events();
    tokio::time::timeout(BOUND, async {
        while !matches!(events.recv().await, Ok(Event::WorkerStarted { .. })) {}
    })
    .await
    .expect("the plain worker starts");
    let plain = a.call::<_, Reading>(&id("plain"), &Op::Get, BOUND).await;
    assert_eq!(plain, Err(CallError::NotAnActor));

    // The two ends disagree on the message type: a typed error, and the actor lives on.
    a.singleton(&id("count"), ["counter"])
        .await
        .expect("declared");
    let wrong = a
        .call::<_, Reading>(&id("count"), &"not an Op", BOUND)
        .await;
    assert!(matches!(wrong, Err(CallError::BadMessage(_))), "{wrong:?}");
    // A message that does not encode fails here, before anything is sent: `Encode`, not
    // the peer's `BadMessage`.
    struct Unencodable;
    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses to encode"))
        }
    }
    let local = a
        .call::<_, Reading>(&id("count"), &Unencodable, BOUND)
        .await;
    assert!(matches!(local, Err(CallError::Encode(_))), "{local:?}");
    let cast = a.send(&id("count"), &Unencodable).await;
    assert!(matches!(cast, Err(CallError::Encode(_))), "{cast:?}");
    let right: Reading = a
        .call(&id("count"), &Op::Add(2), BOUND)
        .await
        .expect("answered");
    assert_eq!(right.count, 2);
    a.leave().await;
}

#[tokio::test]
async fn a_leaving_owner_hands_its_state_over_and_no_call_is_lost() {
    let (nodes, count, first, owner) = counter_at_five().await;
    let caller = nodes[(owner + 1) % 3].clone();
    let old_node = first.node.clone();
    // A caller keeps calling while the owner leaves, until 50 calls after the first answer
    // from the new instance: every call is answered exactly once, in order, and the count
    // continues across the move.
    let calling = tokio::spawn(async move {
        let mut readings: Vec<Reading> = Vec::new();
        let mut after_move = 0;
        while after_move < 50 && readings.len() < 100_000 {
            let reading: Reading = caller
                .call(&count, &Op::Add(1), BOUND)
                .await
                .expect("answered");
            if reading.node != old_node {
                after_move += 1;
            }
            readings.push(reading);
        }
        readings
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    nodes[owner].clone().leave().await;
    let readings = tokio::time::timeout(BOUND * 2, calling)
        .await
        .expect("the calls finish")
        .expect("the caller did not panic");
    assert_counted_once_after_five(&readings);
    let moved = readings.last().expect("readings").node.clone();
    assert_ne!(moved, first.node, "the last calls ran on the new instance");
    for (i, node) in nodes.into_iter().enumerate() {
        if i != owner {
            node.leave().await;
        }
    }
}

#[tokio::test]
async fn draining_moves_the_state_away_and_ending_the_drain_brings_it_back() {
    let (nodes, count, first, owner) = counter_at_five().await;
    let home = first.node.clone();
    // The caller counts until it has had 20 answers from elsewhere and then 20 from home
    // again; the test drains the owner, then ends the drain once the count has moved.
    let caller = nodes[(owner + 1) % 3].clone();
    let (moved_tx, moved) = tokio::sync::oneshot::channel();
    let caller_home = home.clone();
    let calling = tokio::spawn(async move {
        let home = caller_home;
        let mut moved_tx = Some(moved_tx);
        let (mut away, mut back) = (0, 0);
        let mut readings: Vec<Reading> = Vec::new();
        while back < 20 && readings.len() < 200_000 {
            let reading: Reading = caller
                .call(&count, &Op::Add(1), BOUND)
                .await
                .expect("answered");
            if reading.node != home {
                away += 1;
            } else if away > 0 {
                back += 1;
            }
            if away == 20
                && let Some(tx) = moved_tx.take()
            {
                let _ = tx.send(());
            }
            readings.push(reading);
        }
        readings
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    nodes[owner].set_draining(true).await.expect("drains");
    tokio::time::timeout(BOUND, moved)
        .await
        .expect("the count moves off the draining node")
        .expect("the caller reports the move");
    assert_eq!(
        nodes[owner].members().await.expect("still up").len(),
        3,
        "a draining node stays a member"
    );
    nodes[owner].set_draining(false).await.expect("drain ends");
    let readings = tokio::time::timeout(BOUND * 2, calling)
        .await
        .expect("the calls finish")
        .expect("the caller did not panic");
    assert_counted_once_after_five(&readings);
    let mut hosts: Vec<&str> = readings.iter().map(|r| r.node.as_str()).collect();
    hosts.dedup();
    assert_eq!(hosts.first(), Some(&home.as_str()));
    assert_eq!(hosts.last(), Some(&home.as_str()), "the count came back");
    assert_eq!(hosts.len(), 3, "away once and back once: {hosts:?}");
    for node in nodes {
        node.leave().await;
    }
}

/// The README's order, exactly: each node declares the singleton right after `start()`,
/// before the cluster has formed, and the first call goes out at once. The first call is
/// answered (within its 2 s timeout: a new owner no longer waits 5 s for a handoff nobody
/// sends) and counts once, 50 times in a row. Prints the first calls' latencies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_in_the_readmes_order_is_answered_at_once_fifty_times() {
    let mut latencies = Vec::new();
    for run in 0..50 {
        let a = builder("a").start().await.expect("a starts");
        a.singleton(&id("count"), ["counter"])
            .await
            .expect("declared");
        let seed = a.local_addr();
        let b = builder("b").seeds([seed]).start().await.expect("b starts");
        b.singleton(&id("count"), ["counter"])
            .await
            .expect("declared");
        let c = builder("c").seeds([seed]).start().await.expect("c starts");
        c.singleton(&id("count"), ["counter"])
            .await
            .expect("declared");
        let asked = std::time::Instant::now();
        let first: Result<Reading, CallError> = c
            .call(&id("count"), &Op::Add(1), Duration::from_secs(2))
            .await;
        latencies.push(asked.elapsed());
        let first = first.unwrap_or_else(|e| panic!("run {run}: the first call failed: {e}"));
        assert_eq!(first.count, 1, "run {run}: the first call counted once");
        // And the instance that answered is the only one: a second call sees its count.
        let second: Reading = a
            .call(&id("count"), &Op::Get, BOUND)
            .await
            .expect("answered");
        assert_eq!(second.count, 1, "run {run}: {second:?} after {first:?}");
        for node in [c, b, a] {
            node.leave().await;
        }
    }
    latencies.sort();
    println!(
        "first call on a fresh cluster, 50 runs: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
}

/// An actor whose answers and state are as large as asked: for the size limits.
struct Big;

impl Actor for Big {
    /// The length of the answer wanted, and a message of any length.
    type Call = (usize, Vec<u8>);
    /// Where it ran, and the answer.
    type Reply = (String, Vec<u8>);
    type Cast = ();
    type State = Vec<u8>;

    async fn start(_: &WorkerContext, _: Option<Vec<u8>>) -> Result<Self, WorkerError> {
        Ok(Big)
    }

    async fn handle_call(
        &mut self,
        (len, _): (usize, Vec<u8>),
        ctx: &WorkerContext,
    ) -> Result<(String, Vec<u8>), WorkerError> {
        Ok((ctx.node().name.to_string(), vec![7; len]))
    }

    async fn begin_handoff(&mut self, _: &WorkerContext) -> Handoff<Vec<u8>> {
        // One byte of length prefix more than a handoff carries.
        Handoff::Resume(vec![7; solo::core::messaging::MAX_STATE_LEN])
    }
}

/// A message, an answer or a state too large to travel gets a typed error, never a silent
/// loss: the call fails at once, the answer's caller is told, the handoff is reported.
#[tokio::test]
async fn what_is_too_large_to_travel_fails_with_typed_errors() {
    use solo::core::messaging::{MAX_PAYLOAD_LEN, MAX_STATE_LEN};
    let start = |name: &str| builder(name).actor::<Big>("big");
    let a = start("a").start().await.expect("a starts");
    let b = start("b")
        .seeds([a.local_addr()])
        .start()
        .await
        .expect("b starts");
    let nodes = [a, b];
    for node in &nodes {
        node.singleton(&id("big"), ["big"]).await.expect("declared");
    }
    let big = id("big");
    let small: (String, Vec<u8>) = nodes[0]
        .call(&big, &(1_usize, Vec::<u8>::new()), BOUND)
        .await
        .expect("answered");
    let owner = nodes
        .iter()
        .position(|n| n.id().name.as_str() == small.0)
        .expect("the owner is one of ours");
    let caller = &nodes[1 - owner];

    let huge_message = (0_usize, vec![0_u8; MAX_PAYLOAD_LEN]);
    let sent: Result<(String, Vec<u8>), _> = caller.call(&big, &huge_message, BOUND).await;
    assert_eq!(sent, Err(CallError::TooLarge));
    let huge_answer: Result<(String, Vec<u8>), _> = caller
        .call(&big, &(MAX_PAYLOAD_LEN, Vec::<u8>::new()), BOUND)
        .await;
    assert_eq!(huge_answer, Err(CallError::ReplyTooLarge));

    let mut events = nodes[owner].events();
    nodes[owner].clone().leave().await;
    let failed = tokio::time::timeout(BOUND, async {
        loop {
            match events.recv().await {
                Ok(Event::HandoffFailed { id, error, .. }) => break (id, error),
                Ok(_) => {}
                Err(error) => panic!("the events ended first: {error}"),
            }
        }
    })
    .await
    .expect("the failed handoff is reported");
    assert_eq!(
        failed,
        (
            big.clone(),
            solo::HandoffError::StateTooLarge {
                len: MAX_STATE_LEN + 3,
                max: MAX_STATE_LEN
            }
        )
    );
    // The child moved all the same, without its state.
    let moved: (String, Vec<u8>) = caller
        .call(&big, &(1_usize, Vec::<u8>::new()), BOUND)
        .await
        .expect("answered");
    assert_eq!(moved.0, caller.id().name.as_str());
    caller.clone().leave().await;
}

/// An actor that takes 5 ms per cast and tells how many it took.
struct Slow {
    taken: u64,
}

impl Actor for Slow {
    type Call = ();
    type Reply = u64;
    type Cast = ();
    type State = ();

    async fn start(_: &WorkerContext, _: Option<()>) -> Result<Self, WorkerError> {
        Ok(Slow { taken: 0 })
    }

    async fn handle_call(&mut self, (): (), _: &WorkerContext) -> Result<u64, WorkerError> {
        Ok(self.taken)
    }

    async fn handle_cast(&mut self, (): (), _: &WorkerContext) -> Result<(), WorkerError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.taken += 1;
        Ok(())
    }
}

/// A mailbox holds what its capacity says: `try_send` beyond it is refused with `Full` and
/// changes nothing, `send` waits for room, and every cast taken is handled.
#[tokio::test]
async fn a_full_mailbox_refuses_try_send_and_send_waits_for_room() {
    const CAPACITY: usize = 4;
    let node = builder("a")
        .actor::<Slow>("slow")
        .mailbox_capacity(CAPACITY)
        .start()
        .await
        .expect("starts");
    node.singleton(&id("slow"), ["slow"])
        .await
        .expect("declared");
    let slow = node.actor_ref::<Slow>(&id("slow"));
    assert_eq!(slow.call(&(), BOUND).await, Ok(0), "running");
    let mut taken = 0_u64;
    let mut refused = 0;
    for _ in 0..50 {
        match slow.try_send(&()).await {
            Ok(()) => taken += 1,
            Err(CallError::Full) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(refused > 0, "50 casts at once fill a mailbox of {CAPACITY}");
    assert!(taken <= CAPACITY as u64 + 2, "{taken} taken");
    for _ in 0..20 {
        tokio::time::timeout(BOUND, slow.send(&()))
            .await
            .expect("room comes")
            .expect("sent");
    }
    taken += 20;
    let handled = tokio::time::timeout(BOUND, async {
        loop {
            match slow.call(&(), BOUND).await {
                Ok(n) if n == taken => break n,
                Ok(_) | Err(CallError::Overloaded) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(other) => panic!("{other}"),
            }
        }
    })
    .await
    .expect("every cast taken is handled");
    assert_eq!(handled, taken);
    node.leave().await;
}

/// A counter whose `begin_handoff` takes longer than its node's drain timeout.
struct SlowToHandOver(Counter);

impl Actor for SlowToHandOver {
    type Call = Op;
    type Reply = Reading;
    type Cast = u64;
    type State = u64;

    async fn start(ctx: &WorkerContext, handed_over: Option<u64>) -> Result<Self, WorkerError> {
        Counter::start(ctx, handed_over).await.map(SlowToHandOver)
    }

    async fn handle_call(&mut self, op: Op, ctx: &WorkerContext) -> Result<Reading, WorkerError> {
        self.0.handle_call(op, ctx).await
    }

    async fn handle_cast(&mut self, n: u64, ctx: &WorkerContext) -> Result<(), WorkerError> {
        self.0.handle_cast(n, ctx).await
    }

    async fn begin_handoff(&mut self, ctx: &WorkerContext) -> Handoff<u64> {
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.0.begin_handoff(ctx).await
    }
}

#[tokio::test]
async fn a_leave_whose_drain_timeout_runs_out_mid_handoff_reports_the_state_lost() {
    let slow = |name: &str| {
        common::node(name, "test-cookie.Tq7vX2pL9sK")
            .actor::<SlowToHandOver>("slow")
            .drain_timeout(Duration::from_millis(300))
    };
    let a = slow("a").start().await.expect("a starts");
    let b = slow("b")
        .seeds([a.local_addr()])
        .start()
        .await
        .expect("b starts");
    let count = id("count");
    for node in [&a, &b] {
        while node.members().await.expect("up").len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        node.singleton(&count, ["slow"]).await.expect("declared");
    }
    let first: Reading = a.call(&count, &Op::Add(5), BOUND).await.expect("answered");
    let (owner, other) = if first.node == "a" { (a, b) } else { (b, a) };
    let mut events = owner.events();
    let leaving = tokio::spawn({
        let owner = owner.clone();
        async move { owner.leave().await }
    });
    let dropped = common::next_matching(&mut events, BOUND, |event| {
        matches!(event, Event::MessageDropped { .. })
    })
    .await;
    assert!(
        matches!(
            &dropped,
            Event::MessageDropped {
                id: Some(dropped),
                what: solo_core::messaging::Dropped::State,
                reason: solo_core::messaging::DropReason::NotGiven,
            } if *dropped == count
        ),
        "{dropped:?}"
    );
    tokio::time::timeout(BOUND, leaving)
        .await
        .expect("the leave ends by its drain timeout")
        .expect("the leave did not panic");
    // The new instance started fresh at once, not after the slow handoff.
    let reading: Reading = other.call(&count, &Op::Get, BOUND).await.expect("answered");
    assert_eq!(
        (reading.count, reading.node),
        (0, other.id().name.to_string())
    );
    other.leave().await;
}
