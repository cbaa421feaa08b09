//! Random fault schedules against the membership protocol.
//!
//! * CI runs a fixed set of seeds: `cargo test -p solo-core --test membership_sim`.
//! * A larger sweep: `SOLO_CORE_SEEDS=10000 cargo test --release -p solo-core --test membership_sim`.
//! * One seed, with its history printed: `SOLO_CORE_SEED=7 cargo test -p solo-core --test
//!   membership_sim replay -- --nocapture`.

use std::time::Duration;

use proptest::prelude::*;
use solo_core::supervisor::{ChildRecord, ChildState, Stamp};
use solo_core::testing::{Schedule, Sim, SimConfig, env_u64, fail_seed};
use solo_core::wire::{MemberUpdate, Message};
use solo_core::{
    ChildId, ChildSpec, Config, Incarnation, Link, MemberState, Node, NodeId, NodeMeta, NodeName,
    WorkerSpec,
};

/// How long a healed cluster of 5 may take to agree on its members again. The slowest part
/// is a side of a former partition finding the other through its `Down` tombstones and its
/// seeds, one of each per `sync_interval`, in turn; 10 s is ten of those rounds.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(10);
const NODES: usize = 5;
const FAULTS: usize = 8;
const CI_SEEDS: u64 = 300;

/// Runs one seeded schedule; on failure, returns what went wrong with the history tail.
fn check_seed(seed: u64, log_history: bool) -> Result<Duration, String> {
    let config = SimConfig {
        log_history,
        ..SimConfig::default()
    };
    let max_members = config.node.max_members;
    let max_transmits = config.node.max_queued_transmits;
    let mut sim = Sim::new(seed, config);
    for _ in 0..NODES {
        sim.add_node();
    }
    let schedule = Schedule::random(seed, NODES, FAULTS);
    for fault in &schedule.faults {
        Schedule {
            nodes: NODES,
            faults: vec![fault.clone()],
        }
        .apply(&mut sim);
        for i in 0..NODES {
            if let Some(node) = sim.node(i) {
                let sizes = node.table_sizes();
                let bounded = sizes.members < max_members
                    && sizes.transmits == 0
                    && sizes.actions == 0
                    && sizes.relays <= 256
                    && sizes.gossip <= sizes.members + 1
                    && sizes.probes <= sizes.members;
                if !bounded || sizes.transmits > max_transmits {
                    return Err(format!("host {i} tables not bounded: {sizes:?}"));
                }
            }
        }
        sim.clear_records();
    }
    sim.end_faults();
    match sim.run_until(CONVERGENCE_BOUND, Sim::converged) {
        Some(took) => Ok(took),
        None => {
            let views: Vec<String> = (0..NODES)
                .map(|i| match sim.node(i) {
                    Some(n) => format!("  host {i} ({:?}) sees {:?}", n.status(), n.live_view()),
                    None => format!("  host {i} is down"),
                })
                .collect();
            Err(format!(
                "no convergence within {CONVERGENCE_BOUND:?} of healing\nrunning: {:?}\n{}\nschedule: {:?}\nhistory tail:\n{}",
                sim.running_ids(),
                views.join("\n"),
                schedule.faults,
                sim.history_tail(80)
            ))
        }
    }
}

fn fail(seed: u64, why: &str) -> ! {
    let replay = format!(
        "SOLO_CORE_SEED={seed} cargo test -p solo-core --test membership_sim replay -- --nocapture"
    );
    fail_seed(seed, why, &replay)
}

#[test]
fn random_schedules_converge_after_the_network_heals() {
    let seeds = env_u64("SOLO_CORE_SEEDS").unwrap_or(CI_SEEDS);
    let mut slowest = Duration::ZERO;
    for seed in 0..seeds {
        match check_seed(seed, false) {
            Ok(took) => slowest = slowest.max(took),
            // Run it again with the history on, for the report.
            Err(_) => match check_seed(seed, true) {
                Err(why) => fail(seed, &why),
                Ok(_) => fail(
                    seed,
                    "failed, then passed with history on (non-determinism)",
                ),
            },
        }
    }
    println!("{seeds} seeds converged; slowest took {slowest:?} after healing");
}

#[test]
fn replay() {
    let Some(seed) = env_u64("SOLO_CORE_SEED") else {
        return;
    };
    match check_seed(seed, true) {
        Ok(took) => println!("seed {seed} converged {took:?} after healing"),
        Err(why) => fail(seed, &why),
    }
}

#[test]
fn the_same_seed_gives_the_same_history() {
    let run = || {
        let mut sim = Sim::new(99, SimConfig::default());
        for _ in 0..NODES {
            sim.add_node();
        }
        Schedule::random(99, NODES, FAULTS).apply(&mut sim);
        format!("{:?}", sim.records())
    };
    assert_eq!(run(), run());
}

/// A node cut off from its first moment, whose only seed then died, knows nobody: it is
/// found only by the others trying their seeds. They try them in turn, so each finds it
/// within as many sync rounds as it has seeds that are not live members. With a random pick
/// instead (the build before), a survivor with seven such seeds missed it for 7 s in about
/// 1 run in 25 (core partition sweep seed 63651 was one, with three).
#[test]
fn a_node_that_never_met_anyone_is_found_within_one_sync_round_per_stranger_seed() {
    const HOSTS: usize = 10;
    for seed in 0..100 {
        let mut sim = Sim::new(seed, SimConfig::default());
        // Host 1's only seed is host 0; the others start with every earlier host.
        for _ in 0..HOSTS {
            sim.add_node();
        }
        sim.partition(&[vec![1], (0..HOSTS).filter(|&h| h != 1).collect()]);
        sim.run_for(Duration::from_secs(2));
        // Host 1's seed dies, and so do five more; the survivors restart, so that every
        // one of them has all nine others as seeds: seven of them strangers (dead, or host 1).
        for dead in [0, 3, 4, 5, 6, 7] {
            sim.kill(dead);
        }
        for survivor in [2, 8, 9] {
            sim.restart(survivor);
        }
        sim.run_for(Duration::from_secs(3));
        sim.heal();
        let interval = SimConfig::default().node.sync_interval;
        // Seven strangers: seven rounds, one more for the answer and the news to spread.
        let bound = interval * 8;
        if sim.run_until(bound, Sim::converged).is_none() {
            panic!("seed {seed}: host 1 was not found within {bound:?} of the heal");
        }
    }
}

/// A dead member's tombstone is forgotten on every node once it is `tombstone_ttl` old, and
/// stays forgotten: full-table syncs from a node that had not forgotten it yet no longer give
/// it back, young again, to one that had (so it used to live on for ever).
#[test]
fn a_dead_members_tombstone_is_forgotten_everywhere_and_stays_forgotten() {
    let ttl = Duration::from_secs(5);
    for seed in 0..20 {
        let config = SimConfig {
            node: Config::builder().tombstone_ttl(ttl).build().expect("valid"),
            ..SimConfig::default()
        };
        let mut sim = Sim::new(seed, config);
        for _ in 0..NODES {
            sim.add_node();
        }
        assert!(
            sim.run_until(Duration::from_secs(5), Sim::converged)
                .is_some()
        );
        sim.crash_silently(NODES - 1);
        // Declared down within about a second; forgotten a TTL later, at a sync round.
        sim.run_for(Duration::from_secs(2) + ttl + Duration::from_secs(2));
        for _ in 0..30 {
            sim.run_for(Duration::from_millis(500));
            for i in 0..NODES - 1 {
                let rows = sim.node(i).map(|n| n.table_sizes().members);
                assert_eq!(
                    rows,
                    Some(NODES - 2),
                    "seed {seed}: at {:?} host {i} holds the dead member's row again",
                    sim.now()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Proptest's own seeds, on top of the fixed sweep.
    #[test]
    fn any_seeded_schedule_converges(seed in any::<u64>()) {
        if let Err(why) = check_seed(seed, false) {
            fail(seed, &why);
        }
    }

    /// Arbitrary, adversarial input straight into one node: gossip about random names,
    /// incarnations, states and versions (its own name included), link events, time jumps
    /// and garbage frames. It never panics, and its tables stay within their caps.
    #[test]
    fn no_input_sequence_panics_or_grows_tables_past_their_caps(
        inputs in proptest::collection::vec(input_strategy(), 1..200)
    ) {
        let config = Config::builder().max_members(16).max_queued_transmits(64).build().expect("valid");
        let me = NodeId::new(NodeName::new("n0").expect("valid"), Incarnation(5));
        #[allow(clippy::disallowed_methods)]
        let mut now = std::time::Instant::now();
        let mut node = Node::builder(me, "10.0.0.1:7000".parse().expect("addr"))
            .config(config)
            .seeds(["10.0.0.2:7000".parse().expect("addr")])
            .build(now)
            .expect("valid");
        for input in inputs {
            match input {
                Input::Message(from, message) => node.handle_message(now, &from, message),
                Input::Link(peer, up) => node.handle_link(now, &peer, if up { Link::Up } else { Link::Down }),
                Input::Garbage(from, bytes) => { let _ = node.handle_frame(now, &from, &bytes); }
                Input::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    node.handle_timeout(now);
                }
            }
            // Leave transmits undrained half of the time: the queue cap must hold anyway.
            let sizes = node.table_sizes();
            prop_assert!(sizes.members < 16, "{sizes:?}");
            prop_assert!(sizes.gossip <= 16, "{sizes:?}");
            prop_assert!(sizes.transmits <= 64, "{sizes:?}");
            while node.poll_action().is_some() {}
            if now.elapsed().as_nanos() % 2 == 0 {
                while node.poll_transmit().is_some() {}
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Input {
    Message(NodeId, Message),
    Link(NodeId, bool),
    Garbage(NodeId, Vec<u8>),
    Advance(u64),
}

fn id_strategy() -> impl Strategy<Value = NodeId> + Clone {
    (0..40u32, 0..8u64).prop_map(|(n, inc)| {
        NodeId::new(
            NodeName::new(format!("n{n}")).expect("valid"),
            Incarnation(inc),
        )
    })
}

fn update_strategy() -> impl Strategy<Value = MemberUpdate> + Clone {
    // Mostly versions a real member reaches, sometimes the extremes a forger would send.
    let version = prop_oneof![
        8 => 0..6u64,
        1 => prop_oneof![
            Just(u64::from(u32::MAX)),
            Just(solo_core::MAX_VERSION - 1),
            Just(solo_core::MAX_VERSION),
            Just(u64::MAX),
            any::<u64>(),
        ],
    ];
    let age = prop_oneof![4 => Just(0u32), 1 => Just(u32::MAX), 1 => any::<u32>()];
    (id_strategy(), 0..4u8, version, age).prop_map(|(id, state, version, age)| MemberUpdate {
        ended_ms_ago: age,
        id,
        addr: "10.0.0.9:7000".parse().expect("addr"),
        state: match state {
            0 => MemberState::Alive,
            1 => MemberState::Suspect,
            2 => MemberState::Down,
            _ => MemberState::Left,
        },
        version,
        meta: NodeMeta::default(),
    })
}

fn record_strategy() -> impl Strategy<Value = ChildRecord> + Clone {
    let counter = prop_oneof![
        8 => 0..5u64,
        1 => prop_oneof![
            Just(u64::MAX),
            Just(solo_core::supervisor::MAX_STAMP_COUNTER),
            Just(solo_core::supervisor::MAX_STAMP_COUNTER + 1),
            any::<u64>(),
        ],
    ];
    let age = prop_oneof![4 => Just(0u32), 1 => Just(u32::MAX), 1 => any::<u32>()];
    (0..30u32, counter, 0..4u8, id_strategy(), 0..3usize, age).prop_map(
        |(k, counter, state, origin, workers, age)| {
            let spec = ChildSpec::group(
                ChildId::new(format!("c{k}")).expect("valid"),
                vec![WorkerSpec::new("w", vec![]); workers],
            );
            ChildRecord {
                ended_ms_ago: age,
                spec,
                stamp: Stamp {
                    counter,
                    origin: origin.name,
                },
                state: match state {
                    0 => ChildState::Live,
                    1 => ChildState::Completed,
                    2 => ChildState::GaveUp,
                    _ => ChildState::Terminated,
                },
            }
        },
    )
}

fn input_strategy() -> impl Strategy<Value = Input> {
    let updates = proptest::collection::vec(update_strategy(), 0..20);
    prop_oneof![
        (id_strategy(), updates.clone(), any::<bool>()).prop_map(|(from, members, reply)| {
            Input::Message(from, Message::Sync { members, reply })
        }),
        (id_strategy(), updates.clone())
            .prop_map(|(from, updates)| { Input::Message(from, Message::Gossip { updates }) }),
        (id_strategy(), id_strategy(), any::<u32>(), updates.clone()).prop_map(
            |(from, target, seq, updates)| Input::Message(
                from,
                Message::Ping {
                    seq,
                    target,
                    updates,
                    children: u64::from(seq),
                }
            )
        ),
        (id_strategy(), any::<u32>(), updates).prop_map(|(from, seq, updates)| {
            Input::Message(
                from,
                Message::Ack {
                    seq,
                    updates,
                    children: 1,
                },
            )
        }),
        (
            id_strategy(),
            proptest::collection::vec(record_strategy(), 0..8),
            any::<bool>()
        )
            .prop_map(|(from, records, ack)| Input::Message(
                from,
                Message::Children { records, ack }
            )),
        (
            id_strategy(),
            proptest::collection::vec((0..30u32, 0..5u64), 0..8)
        )
            .prop_map(|(from, acks)| Input::Message(
                from,
                Message::ChildAck {
                    acks: acks
                        .into_iter()
                        .map(|(k, counter)| (
                            ChildId::new(format!("c{k}")).expect("valid"),
                            counter
                        ))
                        .collect()
                }
            )),
        (
            id_strategy(),
            proptest::collection::vec(any::<u64>(), 0..300)
        )
            .prop_map(|(from, digests)| Input::Message(from, Message::ChildDigest { digests })),
        (
            id_strategy(),
            proptest::collection::vec(any::<u16>(), 0..300)
        )
            .prop_map(|(from, buckets)| Input::Message(from, Message::ChildPull { buckets })),
        (id_strategy(), id_strategy(), any::<u32>()).prop_map(|(from, target, seq)| {
            Input::Message(
                from,
                Message::PingReq {
                    seq,
                    target,
                    target_addr: "10.0.0.3:7000".parse().expect("addr"),
                },
            )
        }),
        (id_strategy(), id_strategy(), any::<u32>()).prop_map(|(from, target, seq)| {
            Input::Message(from, Message::IndirectAck { seq, target })
        }),
        (id_strategy(), any::<bool>()).prop_map(|(peer, up)| Input::Link(peer, up)),
        (id_strategy(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(from, bytes)| Input::Garbage(from, bytes)),
        (0..3000u64).prop_map(Input::Advance),
    ]
}
