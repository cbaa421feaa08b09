//! Claims a member makes about *another* node are only claims: a forged `Left` or `Down`
//! about a live node, at any version, is refuted, and the node goes on running what it ran.
//!
//! Each test delivers a message forged by one member (n1, whose connection the transport
//! authenticated: it holds the cookie) to the others, as a buggy or compromised member
//! could send it, and checks that the accused node n2 stays a live member everywhere.

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
