//! What a buggy or compromised member (one that holds the cookie) can send, and what it
//! cannot do with it. Claims a member makes about *another* node are only claims: a forged
//! `Left` or `Down` about a live node, at any version, is refuted, and the node goes on
//! running what it ran. Implausible counters are refused, a ping request dials no address
//! of the requester's choosing, and floods stay within the tables' caps.
//!
//! Each test delivers messages forged by one member (whose connection the transport
//! authenticated) to the others, and checks what they did.

use std::time::Duration;

use solo_core::testing::{Sim, SimConfig};
use solo_core::wire::{MemberUpdate, Message};
use solo_core::{ChildId, ChildSpec, MAX_VERSION, MAX_VERSION_JUMP, MemberState, NodeId};

const SEED: u64 = 0xF0E6;

/// Three nodes, joined, with a child `work` running on n2.
fn three_nodes() -> Sim {
    let mut sim = Sim::new(SEED, SimConfig::default());
    for _ in 0..3 {
        sim.add_node();
    }
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("converges");
    let work = ChildSpec::new(ChildId::new("work").expect("valid"), "worker", vec![]);
    // Start it where placement puts it, then find that node.
    sim.with_node(0, |node, now| node.start_child(now, work))
        .expect("running")
        .expect("started");
    sim.run_for(Duration::from_secs(2));
    sim
}

fn id_of(sim: &Sim, i: usize) -> NodeId {
    sim.node(i).expect("running").id().clone()
}

/// The host that runs `work`.
fn worker_host(sim: &Sim) -> usize {
    let work = ChildId::new("work").expect("valid");
    let hosts: Vec<usize> = (0..3)
        .filter(|&i| sim.workers(i).contains_key(&work))
        .collect();
    assert_eq!(hosts.len(), 1, "work runs once: {hosts:?}");
    hosts[0]
}

/// What `viewer` believes of `of`.
fn state_of(sim: &Sim, viewer: usize, of: &NodeId) -> Option<MemberState> {
    let member = sim.node(viewer)?.member(&of.name)?;
    (member.id() == of).then(|| member.state())
}

/// Delivers `claim` about the worker's host, forged by another member, to every node
/// (the accused included), then lets the cluster run.
fn forge(sim: &mut Sim, state: MemberState, version: impl Fn(u64) -> u64) -> usize {
    let accused = worker_host(sim);
    let forger = (accused + 1) % 3;
    let accused_id = id_of(sim, accused);
    let forger_id = id_of(sim, forger);
    let member = sim
        .node(forger)
        .expect("running")
        .member(&accused_id.name)
        .expect("known")
        .clone();
    let version = version(member.version());
    let claim = MemberUpdate {
        ended_ms_ago: 0,
        id: accused_id,
        addr: member.addr(),
        state,
        version,
        meta: member.meta().clone(),
    };
    for i in (0..3).filter(|&i| i != forger) {
        let updates = vec![claim.clone()];
        sim.with_node(i, |node, now| {
            node.handle_message(now, &forger_id, Message::Gossip { updates });
        });
    }
    sim.run_for(Duration::from_secs(5));
    accused
}

/// The accused is a live member in every view, and still runs `work`, alone.
fn assert_unharmed(sim: &Sim, accused: usize, what: &str) {
    let accused_id = id_of(sim, accused);
    for viewer in (0..3).filter(|&i| i != accused) {
        assert_eq!(
            state_of(sim, viewer, &accused_id),
            Some(MemberState::Alive),
            "{what}: n{viewer}'s view of the accused"
        );
    }
    assert_eq!(worker_host(sim), accused, "{what}: work moved");
}

#[test]
fn a_forged_left_about_a_live_node_is_refuted() {
    let mut sim = three_nodes();
    let accused = forge(&mut sim, MemberState::Left, |v| v);
    assert_unharmed(&sim, accused, "a forged Left");
}

#[test]
fn a_forged_left_at_a_higher_version_is_refuted() {
    let mut sim = three_nodes();
    let accused = forge(&mut sim, MemberState::Left, |v| v + 5);
    assert_unharmed(&sim, accused, "a forged Left, version + 5");
}

#[test]
fn a_forged_down_at_any_version_is_refuted_or_ignored() {
    type Version = fn(u64) -> u64;
    let extremes: [(&str, Version); 8] = [
        ("the same version", |v| v),
        ("the largest jump believed", |v| v + MAX_VERSION_JUMP),
        ("one above it", |v| v + MAX_VERSION_JUMP + 1),
        ("u32::MAX", |_| u64::from(u32::MAX)),
        ("u32::MAX - 1", |_| u64::from(u32::MAX - 1)),
        ("MAX_VERSION - 1", |_| MAX_VERSION - 1),
        ("MAX_VERSION", |_| MAX_VERSION),
        ("u64::MAX", |_| u64::MAX),
    ];
    for (what, version) in extremes {
        for state in [MemberState::Down, MemberState::Suspect, MemberState::Left] {
            let mut sim = three_nodes();
            let accused = forge(&mut sim, state, version);
            assert_unharmed(&sim, accused, &format!("a forged {state:?} at {what}"));
        }
    }
}

#[test]
fn forged_downs_one_after_another_are_each_refuted() {
    let mut sim = three_nodes();
    let mut accused = None;
    for round in 0..50 {
        let a = forge(&mut sim, MemberState::Down, |v| v + 1);
        assert!(accused.is_none_or(|x| x == a), "round {round}: work moved");
        accused = Some(a);
    }
    let accused = accused.expect("forged");
    assert_unharmed(&sim, accused, "50 forged Downs in a row");
    // Each was believed by someone and refuted: the accused's version rose each time.
    let accused_id = id_of(&sim, accused);
    let viewer = (accused + 2) % 3;
    let seen = sim
        .node(viewer)
        .expect("running")
        .member(&accused_id.name)
        .expect("known");
    assert!(
        seen.version() >= 50,
        "version {} after 50 refutations",
        seen.version()
    );
}

/// A child record from a peer stamped at the end of the counters' room (a bug or a
/// forgery) is refused: the next command on this node neither panics nor wraps, and a
/// later termination still ends the child everywhere.
#[test]
fn a_child_stamp_at_the_counters_end_is_refused_and_later_commands_work() {
    use solo_core::supervisor::{ChildRecord, ChildState, MAX_STAMP_COUNTER, Stamp};
    for counter in [u64::MAX, MAX_STAMP_COUNTER + 1, 1 << 41] {
        let mut sim = three_nodes();
        let forger = id_of(&sim, 1);
        let forged = ChildRecord {
            ended_ms_ago: 0,
            spec: ChildSpec::new(ChildId::new("forged").expect("valid"), "worker", vec![]),
            stamp: Stamp {
                counter,
                origin: forger.name.clone(),
            },
            state: ChildState::Live,
        };
        for i in [0, 2] {
            let records = vec![forged.clone()];
            sim.with_node(i, |node, now| {
                node.handle_message(
                    now,
                    &forger,
                    Message::Children {
                        records,
                        ack: false,
                    },
                );
            });
        }
        sim.run_for(Duration::from_secs(1));
        let forged_id = ChildId::new("forged").expect("valid");
        assert_eq!(
            sim.instances(&forged_id),
            0,
            "counter {counter}: the forged child runs"
        );
        // Commands go on: a new child starts, and its termination ends it.
        let next = ChildSpec::new(ChildId::new("next").expect("valid"), "worker", vec![]);
        sim.with_node(0, |node, now| node.start_child(now, next))
            .expect("running")
            .expect("started");
        sim.run_for(Duration::from_secs(2));
        let next_id = ChildId::new("next").expect("valid");
        assert_eq!(
            sim.instances(&next_id),
            1,
            "counter {counter}: next runs once"
        );
        sim.with_node(2, |node, now| node.terminate_child(now, &next_id))
            .expect("running")
            .expect("terminated");
        sim.run_for(Duration::from_secs(2));
        assert_eq!(
            sim.instances(&next_id),
            0,
            "counter {counter}: next was terminated"
        );
    }
}

/// A ping request makes a node probe only a member it knows, at the address it knows: never
/// an address the requester names.
#[test]
fn a_ping_request_never_makes_a_node_dial_an_address_it_was_given() {
    let mut sim = three_nodes();
    let forger = id_of(&sim, 1);
    let member = id_of(&sim, 2);
    let elsewhere: std::net::SocketAddr = "192.0.2.7:9".parse().expect("addr");
    let stranger = NodeId::new(
        solo_core::NodeName::new("stranger").expect("valid"),
        solo_core::Incarnation(1),
    );
    let known_addr = sim.node(2).expect("running").addr();
    let transmits = sim
        .with_node(0, |node, now| {
            for (seq, target) in [(7, stranger.clone()), (8, member.clone())] {
                let request = Message::PingReq {
                    seq,
                    target,
                    target_addr: elsewhere,
                };
                node.handle_message(now, &forger, request);
            }
            std::iter::from_fn(|| node.poll_transmit()).collect::<Vec<_>>()
        })
        .expect("running");
    assert!(
        transmits.iter().all(|t| t.addr != Some(elsewhere)),
        "a node dialed the address a request named: {transmits:?}"
    );
    let probes: Vec<_> = transmits
        .iter()
        .filter(|t| matches!(t.message, Message::Ping { ref target, .. } if *target == member))
        .collect();
    assert_eq!(probes.len(), 1, "the known member is probed: {transmits:?}");
    assert_eq!(probes[0].addr, Some(known_addr));
    assert!(
        !transmits.iter().any(|t| t.to.as_ref() == Some(&stranger)),
        "the stranger was probed: {transmits:?}"
    );
}

/// A flood of tombstones about strangers, each a new name, keeps the member table and the
/// gossip queue within `max_members`.
#[test]
fn a_flood_of_strangers_tombstones_stays_within_the_caps() {
    let config = solo_core::Config::builder()
        .max_members(16)
        .build()
        .expect("valid");
    let mut sim = Sim::new(
        SEED,
        SimConfig {
            node: config,
            ..SimConfig::default()
        },
    );
    for _ in 0..3 {
        sim.add_node();
    }
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("converges");
    let forger = id_of(&sim, 1);
    let addr = sim.node(1).expect("running").addr();
    for batch in 0..100u64 {
        let updates: Vec<MemberUpdate> = (0..100u64)
            .map(|i| MemberUpdate {
                ended_ms_ago: 0,
                id: NodeId::new(
                    solo_core::NodeName::new(format!("ghost-{batch}-{i}")).expect("valid"),
                    solo_core::Incarnation(1),
                ),
                addr,
                state: MemberState::Down,
                version: 0,
                meta: Default::default(),
            })
            .collect();
        sim.with_node(0, |node, now| {
            node.handle_message(now, &forger, Message::Gossip { updates });
        });
        sim.run_for(Duration::from_millis(10));
        let sizes = sim.node(0).expect("running").table_sizes();
        assert!(sizes.members < 16, "batch {batch}: {sizes:?}");
        assert!(sizes.gossip <= 16, "batch {batch}: {sizes:?}");
    }
    // The real members are still there, alive.
    let view = sim.node(0).expect("running").live_view();
    assert_eq!(view.len(), 3, "{view:?}");
}

/// Metadata beyond its documented limits (more roles than `MAX_ROLES`, a role longer than
/// `MAX_ROLE_LEN`, more singletons than `MAX_SINGLETONS`) is ignored on receipt, even from
/// the member itself: what the receiver knew of it stands.
#[test]
fn metadata_beyond_its_limits_is_ignored() {
    use solo_core::{MAX_ROLE_LEN, MAX_ROLES, MAX_SINGLETONS, NodeMeta};
    let oversized = [
        NodeMeta {
            roles: (0..=MAX_ROLES).map(|r| format!("r{r:02}")).collect(),
            ..NodeMeta::default()
        },
        NodeMeta {
            roles: vec!["x".repeat(MAX_ROLE_LEN + 1)],
            ..NodeMeta::default()
        },
        NodeMeta {
            singletons: (0..=MAX_SINGLETONS)
                .map(|s| (ChildId::new(format!("s{s}")).expect("valid"), 0))
                .collect(),
            ..NodeMeta::default()
        },
    ];
    for meta in oversized {
        let mut sim = three_nodes();
        let sender = id_of(&sim, 1);
        let before = sim
            .node(0)
            .expect("running")
            .member(&sender.name)
            .expect("known")
            .clone();
        let update = MemberUpdate {
            ended_ms_ago: 0,
            id: sender.clone(),
            addr: before.addr(),
            state: MemberState::Alive,
            version: before.version() + 1,
            meta,
        };
        sim.with_node(0, |node, now| {
            let updates = vec![update];
            node.handle_message(now, &sender, Message::Gossip { updates });
        });
        let after = sim
            .node(0)
            .expect("running")
            .member(&sender.name)
            .expect("known");
        assert_eq!(after.version(), before.version(), "the update was applied");
        assert_eq!(after.meta(), before.meta());
    }
}

/// Members at their documented limits make no frame over the maximum: 20 nodes, each
/// declaring 256 singletons with 200-byte names, converge (the simulator fails on any
/// message it cannot encode), and every singleton runs once.
#[test]
fn twenty_nodes_at_the_declaration_limits_converge() {
    let singletons: Vec<ChildSpec> = (0..solo_core::MAX_SINGLETONS)
        .map(|s| {
            let name = format!("{s:03}-{}", "n".repeat(196));
            ChildSpec::new(ChildId::new(name).expect("valid"), "worker", vec![])
        })
        .collect();
    let mut sim = Sim::new(
        SEED,
        SimConfig {
            singletons,
            ..SimConfig::default()
        },
    );
    for _ in 0..20 {
        sim.add_node();
    }
    let converged = sim.run_until(Duration::from_secs(30), Sim::converged);
    assert!(
        converged.is_some(),
        "20 nodes at the limits did not converge"
    );
    sim.run_for(Duration::from_secs(5));
    let running = sim.all_instances();
    assert_eq!(
        running.len(),
        solo_core::MAX_SINGLETONS,
        "every singleton runs"
    );
    assert!(running.values().all(|&n| n == 1), "each once: {running:?}");
}
