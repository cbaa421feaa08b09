//! Three nodes driven through the deterministic simulator: join, failure detection,
//! refutation, restart and leave. Times are simulated, so the bounds below are exact
//! properties of the protocol, not wall-clock races.

use std::time::Duration;

use solo_core::testing::{Record, Sim, SimConfig};
use solo_core::{Action, Config, MemberEvent, MemberState, NodeId};

const SEED: u64 = 0x5010;

/// Three nodes; n1 and n2 know only n0's address.
fn three_nodes() -> Sim {
    let mut sim = Sim::new(
        SEED,
        SimConfig {
            log_history: true,
            ..SimConfig::default()
        },
    );
    sim.add_node_with_seeds(&[]);
    sim.add_node_with_seeds(&[0]);
    sim.add_node_with_seeds(&[0]);
    let joined = sim.run_until(Duration::from_secs(5), Sim::converged);
    assert!(
        joined.is_some(),
        "no convergence:\n{}",
        sim.history_tail(50)
    );
    sim.clear_records();
    sim
}

fn id_of(sim: &Sim, i: usize) -> NodeId {
    sim.node(i).expect("running").id().clone()
}

fn state_of(sim: &Sim, viewer: usize, of: &NodeId) -> Option<MemberState> {
    let member = sim.node(viewer)?.member(&of.name)?;
    (member.id() == of).then(|| member.state())
}

fn events_about(records: &[Record], who: &NodeId) -> Vec<(usize, MemberEvent)> {
    records
        .iter()
        .filter_map(|r| match &r.action {
            Action::Member(e) => Some((r.host, e.clone())),
            _ => None,
        })
        .filter(|(_, e)| match e {
            MemberEvent::Up(id)
            | MemberEvent::Suspect(id)
            | MemberEvent::Refuted(id)
            | MemberEvent::Down(id)
            | MemberEvent::Left(id) => id == who,
            _ => false,
        })
        .collect()
}

#[test]
fn nodes_join_through_one_seed_and_all_see_each_other_up() {
    let sim = three_nodes();
    let all = sim.running_ids();
    assert_eq!(all.len(), 3);
    for i in 0..3 {
        assert_eq!(sim.node(i).expect("running").live_view(), all);
    }
}

#[test]
fn a_join_is_seen_cluster_wide_within_milliseconds() {
    let mut sim = Sim::new(SEED, SimConfig::default());
    sim.add_node_with_seeds(&[]);
    sim.add_node_with_seeds(&[0]);
    sim.add_node_with_seeds(&[0]);
    let took = sim
        .run_until(Duration::from_secs(5), Sim::converged)
        .expect("converges");
    // First join round at t=0, then a sync exchange and one direct announcement.
    assert!(took < Duration::from_millis(20), "join took {took:?}");
}

#[test]
fn a_silent_node_is_declared_down_by_every_survivor_within_the_bound() {
    let mut sim = three_nodes();
    let victim = id_of(&sim, 2);
    sim.crash_silently(2);
    let bound = Config::default().silent_failure_bound();
    let took = sim
        .run_until(Duration::from_secs(10), |sim| {
            (0..2).all(|i| state_of(sim, i, &victim) == Some(MemberState::Down))
        })
        .expect("detected");
    // One more network delay for the accuser's broadcast to arrive.
    let slack = SimConfig::default().max_delay * 2;
    assert!(took <= bound + slack, "took {took:?}, bound {bound:?}");
    // And it was a suspicion first, not a premature verdict.
    assert!(took >= Config::default().suspicion_timeout);
    let events = events_about(sim.records(), &victim);
    assert!(events.contains(&(0, MemberEvent::Suspect(victim.clone()))));
    assert!(events.contains(&(0, MemberEvent::Down(victim.clone()))));
    assert!(events.contains(&(1, MemberEvent::Down(victim.clone()))));
}

#[test]
fn a_killed_node_is_down_as_soon_as_its_connections_close() {
    let mut sim = three_nodes();
    let victim = id_of(&sim, 2);
    sim.kill(2);
    let took = sim
        .run_until(Duration::from_secs(10), |sim| {
            (0..2).all(|i| state_of(sim, i, &victim) == Some(MemberState::Down))
        })
        .expect("detected");
    // Two network delays at most (the FIN, then nothing else is needed), far below the
    // first probe timeout.
    assert!(took <= SimConfig::default().max_delay * 2, "took {took:?}");
    assert!(took < Config::default().probe_timeout);
    // No suspicion phase: the link going down is the verdict.
    let events = events_about(sim.records(), &victim);
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, MemberEvent::Suspect(_)))
    );
}

#[test]
fn a_suspected_node_that_is_alive_refutes_and_stays_up() {
    let mut sim = three_nodes();
    let victim = id_of(&sim, 2);
    // Frozen long enough to miss a probe and its indirect probes, not long enough to be
    // declared down.
    sim.freeze(2);
    let suspected = sim.run_until(Duration::from_secs(2), |sim| {
        (0..2).any(|i| state_of(sim, i, &victim) == Some(MemberState::Suspect))
    });
    assert!(
        suspected.is_some(),
        "never suspected:\n{}",
        sim.history_tail(40)
    );
    sim.thaw(2);
    sim.run_for(Duration::from_secs(3));
    for i in 0..2 {
        assert_eq!(state_of(&sim, i, &victim), Some(MemberState::Alive));
    }
    let events = events_about(sim.records(), &victim);
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, MemberEvent::Refuted(_)))
    );
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, MemberEvent::Down(_)))
    );
    assert!(sim.converged());
    // The frozen node did not accuse anyone for its own silence.
    for i in 0..2 {
        let id = id_of(&sim, i);
        assert!(
            events_about(sim.records(), &id).is_empty(),
            "{id} was accused"
        );
    }
}

#[test]
fn a_restarted_node_replaces_its_former_self() {
    let mut sim = three_nodes();
    let old = id_of(&sim, 2);
    sim.restart(2);
    let new = id_of(&sim, 2);
    assert!(new.incarnation > old.incarnation);
    let took = sim.run_until(Duration::from_secs(5), Sim::converged);
    assert!(took.is_some(), "no convergence:\n{}", sim.history_tail(50));
    for i in 0..2 {
        let events = events_about(sim.records(), &old);
        assert!(events.contains(&(i, MemberEvent::Down(old.clone()))));
        let events = events_about(sim.records(), &new);
        assert!(events.contains(&(i, MemberEvent::Up(new.clone()))));
        assert_eq!(state_of(&sim, i, &new), Some(MemberState::Alive));
    }
}

#[test]
fn a_leave_is_seen_as_left_and_never_as_a_failure() {
    let mut sim = three_nodes();
    let leaver = id_of(&sim, 2);
    sim.with_node(2, |node, now| node.leave(now))
        .expect("running")
        .expect("left");
    sim.run_for(Duration::from_secs(5));
    let mut events = events_about(sim.records(), &leaver);
    events.sort_by_key(|(host, _)| *host);
    assert_eq!(
        events,
        vec![
            (0, MemberEvent::Left(leaver.clone())),
            (1, MemberEvent::Left(leaver.clone()))
        ]
    );
    for i in 0..2 {
        assert_eq!(state_of(&sim, i, &leaver), Some(MemberState::Left));
    }
    assert!(sim.converged());
}

#[test]
fn a_partition_heals_into_one_cluster() {
    let mut sim = three_nodes();
    sim.partition(&[vec![0, 1], vec![2]]);
    sim.run_for(Duration::from_secs(5));
    let n2 = id_of(&sim, 2);
    assert_eq!(state_of(&sim, 0, &n2), Some(MemberState::Down));
    sim.heal();
    let took = sim.run_until(Duration::from_secs(10), Sim::converged);
    let took = took.unwrap_or_else(|| panic!("no convergence:\n{}", sim.history_tail(60)));
    // One sync period to try a `Down` member, plus round trips.
    assert!(took <= Config::default().sync_interval * 3, "took {took:?}");
}

#[test]
fn a_bad_frame_is_refused_and_changes_no_state() {
    use solo_core::wire::{self, DecodeError, Message, PROTOCOL_VERSION};
    let mut sim = three_nodes();
    let from = id_of(&sim, 1);
    let good = wire::encode_frame(&Message::Gossip { updates: vec![] }).expect("encodes");
    let mut wrong_version = good.clone();
    wrong_version[0] = PROTOCOL_VERSION + 1;
    let oversized = vec![PROTOCOL_VERSION; wire::MAX_FRAME_LEN + 1];
    let frames: Vec<Vec<u8>> = vec![
        Vec::new(),
        good[..good.len() - 1].to_vec(),
        wrong_version,
        oversized,
        vec![PROTOCOL_VERSION, 0x7F],
    ];
    let results = sim
        .with_node(0, |node, now| {
            let before = (node.table_sizes(), node.live_view(), node.poll_timeout());
            let errors: Vec<DecodeError> = frames
                .iter()
                .map(|f| node.handle_frame(now, &from, f).expect_err("refused"))
                .collect();
            let after = (node.table_sizes(), node.live_view(), node.poll_timeout());
            (
                before == after,
                errors,
                node.poll_transmit(),
                node.poll_action(),
            )
        })
        .expect("running");
    let (unchanged, errors, transmit, action) = results;
    assert!(unchanged, "state changed");
    assert_eq!(errors.len(), 5);
    assert!(
        transmit.is_none() && action.is_none(),
        "a bad frame caused output"
    );
}
