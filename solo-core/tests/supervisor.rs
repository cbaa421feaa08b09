//! Singletons, the distributed supervisor and supervision, driven through the simulator.
//! Each anchor complaint from the issue has a test named after it.

use std::collections::BTreeMap;
use std::time::Duration;

use solo_core::testing::{Sim, SimConfig};
use solo_core::{
    Action, ChildId, ChildSpec, Exit, RestartPolicy, Scope, StartChildError, StopReason,
    SupervisorEvent, TerminateError, WorkerSpec, owner,
};

const SEED: u64 = 0xB0B;

fn id(s: &str) -> ChildId {
    ChildId::new(s).expect("valid id")
}

fn singleton() -> ChildSpec {
    ChildSpec::group(
        id("roar"),
        vec![
            WorkerSpec::new("lion", b"".to_vec()),
            WorkerSpec::new("echo", b"".to_vec()),
        ],
    )
}

fn cluster_with(nodes: usize, config: SimConfig) -> Sim {
    let mut sim = Sim::new(SEED, config);
    for _ in 0..nodes {
        sim.add_node();
    }
    let formed = sim.run_until(Duration::from_secs(5), Sim::converged);
    assert!(formed.is_some(), "cluster did not form");
    sim.run_for(Duration::from_millis(100));
    sim.clear_records();
    sim
}

fn cluster(nodes: usize) -> Sim {
    cluster_with(
        nodes,
        SimConfig {
            singletons: vec![singleton()],
            ..SimConfig::default()
        },
    )
}

fn host_running(sim: &Sim, child: &ChildId) -> Option<usize> {
    (0..sim.len()).find(|&i| sim.node(i).is_some() && sim.workers(i).contains_key(child))
}

fn start(sim: &mut Sim, host: usize, child: &str) {
    let spec = ChildSpec::new(id(child), "worker", child.as_bytes().to_vec());
    sim.with_node(host, |n, now| n.start_child(now, spec))
        .expect("running")
        .expect("started");
}

/// Every listed child runs exactly once, and nothing else runs.
fn assert_exactly_once(sim: &Sim, children: &[ChildId]) {
    let all = sim.all_instances();
    for child in children {
        assert_eq!(all.get(child), Some(&1), "{child} instances: {all:?}");
    }
    assert_eq!(all.len(), children.len(), "unexpected instances: {all:?}");
}

fn supervisor_events(sim: &Sim) -> Vec<(usize, SupervisorEvent)> {
    sim.records()
        .iter()
        .filter_map(|r| match &r.action {
            Action::Supervisor(e) => Some((r.host, e.clone())),
            _ => None,
        })
        .collect()
}

// ----- singletons --------------------------------------------------------------------------

#[test]
fn a_singleton_runs_exactly_once_on_its_rendezvous_owner() {
    let sim = cluster(3);
    let roar = id("roar");
    assert_exactly_once(&sim, std::slice::from_ref(&roar));
    let names: Vec<_> = (0..3)
        .map(|i| sim.node(i).expect("up").id().name.clone())
        .collect();
    let (expected, _) = owner(&roar, &names).expect("someone");
    let host = host_running(&sim, &roar).expect("runs");
    assert_eq!(&sim.node(host).expect("up").id().name, expected);
}

#[test]
fn a_killed_singleton_owner_is_replaced_within_milliseconds() {
    let mut sim = cluster(3);
    let roar = id("roar");
    let owner = host_running(&sim, &roar).expect("runs");
    sim.kill(owner);
    let took = sim
        .run_until(Duration::from_secs(5), |sim| sim.instances(&roar) == 1)
        .expect("taken over");
    assert!(took <= Duration::from_millis(5), "took {took:?}");
    assert_ne!(host_running(&sim, &roar), Some(owner));
}

#[test]
fn a_silent_singleton_owner_is_replaced_within_the_failure_bound() {
    let mut sim = cluster(3);
    let roar = id("roar");
    let owner = host_running(&sim, &roar).expect("runs");
    sim.crash_silently(owner);
    let bound = sim
        .node((owner + 1) % 3)
        .expect("up")
        .config()
        .silent_failure_bound();
    let took = sim
        .run_until(Duration::from_secs(10), |sim| sim.instances(&roar) == 1)
        .expect("taken over");
    assert!(took <= bound + Duration::from_millis(5), "took {took:?}");
}

#[test]
fn a_singleton_declared_differently_is_reported_and_still_runs_once() {
    let mut sim = cluster(3);
    let other = ChildSpec::new(id("roar"), "mouse", b"".to_vec());
    // Host 2 restarts with a different declaration of the same singleton.
    sim.config_mut().singletons = vec![other];
    sim.restart(2);
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("rejoined");
    sim.run_for(Duration::from_millis(100));
    let conflicts: Vec<_> = supervisor_events(&sim)
        .into_iter()
        .filter(|(_, e)| matches!(e, SupervisorEvent::SingletonConflict { .. }))
        .collect();
    let reporters: std::collections::BTreeSet<usize> = conflicts.iter().map(|(h, _)| *h).collect();
    assert_eq!(
        reporters.len(),
        3,
        "every node reports the conflict: {conflicts:?}"
    );
    assert_eq!(sim.instances(&id("roar")), 1);
}

// ----- the distributed supervisor ----------------------------------------------------------

#[test]
fn a_child_started_anywhere_runs_once_and_every_node_lists_it() {
    let mut sim = cluster(3);
    start(&mut sim, 1, "job-1");
    sim.run_for(Duration::from_millis(50));
    let job = id("job-1");
    assert_eq!(sim.instances(&job), 1);
    for i in 0..3 {
        let global = sim.node(i).expect("up").which_children(Scope::Global);
        assert!(global.iter().any(|c| c.id == job && !c.singleton));
        let local = sim.node(i).expect("up").which_children(Scope::Local);
        assert_eq!(
            local.iter().any(|c| c.id == job),
            host_running(&sim, &job) == Some(i)
        );
    }
}

#[test]
fn start_child_is_answered_once_a_second_member_holds_the_spec() {
    let mut sim = cluster(3);
    sim.partition(&[vec![0], vec![1, 2]]);
    start(&mut sim, 0, "job-1");
    sim.run_for(Duration::from_millis(50));
    let answered = |sim: &Sim| {
        supervisor_events(sim)
            .iter()
            .any(|(h, e)| *h == 0 && matches!(e, SupervisorEvent::ChildStarted { .. }))
    };
    assert!(!answered(&sim), "answered before any other member held it");
    sim.heal();
    // The broadcast was lost to the partition; anti-entropy replicates it, then the
    // answer waits for an ack that only the original broadcast asks for. A lone node
    // answers at once: check that path too.
    let mut alone = Sim::new(SEED, SimConfig::default());
    alone.add_node_with_seeds(&[]);
    alone.run_for(Duration::from_millis(10));
    start(&mut alone, 0, "solo-job");
    assert!(answered(&alone));
    let mut sim = cluster(3);
    start(&mut sim, 0, "job-2");
    let took = sim
        .run_until(Duration::from_secs(1), answered)
        .expect("answered");
    assert!(took <= Duration::from_millis(5), "took {took:?}");
}

#[test]
fn bad_commands_get_typed_errors_and_change_nothing() {
    let mut sim = cluster(3);
    start(&mut sim, 0, "job-1");
    sim.run_for(Duration::from_millis(50));
    let dup = ChildSpec::new(id("job-1"), "worker", vec![]);
    let err = sim
        .with_node(1, |n, now| n.start_child(now, dup))
        .expect("up");
    assert_eq!(err, Err(StartChildError::Duplicate(id("job-1"))));
    let err = sim
        .with_node(2, |n, now| n.terminate_child(now, &id("nope")))
        .expect("up");
    assert_eq!(err, Err(TerminateError::NotFound(id("nope"))));
    let huge = ChildSpec::new(id("huge"), "worker", vec![0u8; 64 * 1024]);
    let err = sim
        .with_node(0, |n, now| n.start_child(now, huge))
        .expect("up");
    assert!(matches!(err, Err(StartChildError::Spec(_))), "{err:?}");
    let err = sim
        .with_node(0, |n, now| n.terminate_child(now, &id("roar")))
        .expect("up");
    assert_eq!(err, Err(TerminateError::Singleton(id("roar"))));
    sim.run_for(Duration::from_millis(50));
    for i in 0..3 {
        assert_eq!(sim.node(i).expect("up").live_children(), 1);
    }
    assert_exactly_once(&sim, &[id("roar"), id("job-1")]);
}

#[test]
fn terminate_from_another_node_stops_the_child_everywhere() {
    let mut sim = cluster(3);
    start(&mut sim, 0, "job-1");
    sim.run_for(Duration::from_millis(50));
    let job = id("job-1");
    let runner = host_running(&sim, &job).expect("runs");
    let other = (runner + 1) % 3;
    sim.with_node(other, |n, now| n.terminate_child(now, &job))
        .expect("up")
        .expect("terminated");
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.instances(&job), 0);
    let stopped = sim.records().iter().any(|r| {
        r.host == runner
            && matches!(
                &r.action,
                Action::Stop {
                    reason: StopReason::Terminated,
                    ..
                }
            )
    });
    assert!(stopped);
}

#[test]
fn a_join_moves_exactly_the_children_rendezvous_gives_the_newcomer() {
    let mut sim = cluster(3);
    let children: Vec<ChildId> = (0..200).map(|k| id(&format!("c{k}"))).collect();
    for (k, child) in children.iter().enumerate() {
        start(&mut sim, k % 3, child.as_str());
    }
    sim.run_for(Duration::from_millis(200));
    let before: BTreeMap<ChildId, usize> = children
        .iter()
        .map(|c| (c.clone(), host_running(&sim, c).expect("runs")))
        .collect();
    let newcomer = sim.add_node();
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("joined");
    sim.run_for(Duration::from_millis(200));
    let names: Vec<_> = (0..4)
        .map(|i| sim.node(i).expect("up").id().name.clone())
        .collect();
    let mut moved = 0;
    for child in &children {
        let now_on = host_running(&sim, child).expect("still runs");
        let (expected, _) = owner(child, &names).expect("someone");
        assert_eq!(&names[now_on], expected);
        if now_on != before[child] {
            assert_eq!(now_on, newcomer, "{child} moved between old nodes");
            moved += 1;
        }
    }
    let expected_moves = children
        .iter()
        .filter(|c| owner(c, &names).expect("someone").0 == &names[newcomer])
        .count();
    assert_eq!(moved, expected_moves);
    assert!(moved > 0);
}

#[test]
fn children_run_only_on_nodes_with_their_role_and_never_on_draining_ones() {
    let mut sim = Sim::new(SEED, SimConfig::default());
    sim.add_node_with_roles(&["web"]);
    let gpu_a = sim.add_node_with_roles(&["gpu"]);
    let gpu_b = sim.add_node_with_roles(&["gpu"]);
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("formed");
    for k in 0..30 {
        let spec = ChildSpec::new(id(&format!("train-{k}")), "trainer", vec![]).role("gpu");
        sim.with_node(0, |n, now| n.start_child(now, spec))
            .expect("up")
            .expect("ok");
    }
    sim.run_for(Duration::from_millis(100));
    assert!(sim.workers(0).is_empty());
    assert_eq!(sim.workers(gpu_a).len() + sim.workers(gpu_b).len(), 30);
    sim.with_node(gpu_a, |n, now| n.set_draining(now, true))
        .expect("up")
        .expect("ok");
    sim.run_for(Duration::from_millis(100));
    assert!(sim.workers(gpu_a).is_empty());
    assert_eq!(sim.workers(gpu_b).len(), 30);
}

// ----- supervision -------------------------------------------------------------------------

fn start_with(sim: &mut Sim, spec: ChildSpec) -> (ChildId, usize) {
    let child = spec.id.clone();
    sim.with_node(0, |n, now| n.start_child(now, spec))
        .expect("up")
        .expect("ok");
    sim.run_for(Duration::from_millis(50));
    let host = host_running(sim, &child).expect("runs");
    (child, host)
}

#[test]
fn restart_policies_follow_otp() {
    let mut sim = cluster(3);
    let cases = [
        (RestartPolicy::Permanent, Exit::Normal, true),
        (RestartPolicy::Permanent, Exit::Failed("boom".into()), true),
        (RestartPolicy::Transient, Exit::Normal, false),
        (RestartPolicy::Transient, Exit::Failed("boom".into()), true),
        (RestartPolicy::Temporary, Exit::Failed("boom".into()), false),
    ];
    for (k, (policy, exit, restarted)) in cases.into_iter().enumerate() {
        let spec = ChildSpec::new(id(&format!("p{k}")), "w", vec![]).restart(policy);
        let (child, host) = start_with(&mut sim, spec);
        assert!(sim.exit_worker(host, &child, exit.clone()));
        sim.run_for(Duration::from_millis(50));
        assert_eq!(
            sim.instances(&child) == 1,
            restarted,
            "{policy:?} after {exit:?}"
        );
        if !restarted {
            for i in 0..3 {
                assert!(
                    sim.node(i).expect("up").owner_of(&child).is_none(),
                    "ended everywhere"
                );
            }
        }
    }
}

#[test]
fn a_child_past_its_restart_intensity_is_given_up_and_an_event_says_so() {
    let mut sim = cluster(3);
    let spec = ChildSpec::new(id("flaky"), "w", vec![]).intensity(2, Duration::from_secs(5));
    let (child, host) = start_with(&mut sim, spec);
    for _ in 0..2 {
        assert!(sim.exit_worker(host, &child, Exit::Failed("boom".into())));
        sim.run_for(Duration::from_millis(10));
        assert_eq!(sim.instances(&child), 1, "restarted within intensity");
    }
    assert!(sim.exit_worker(host, &child, Exit::Failed("boom".into())));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.instances(&child), 0);
    assert!(
        supervisor_events(&sim).contains(&(host, SupervisorEvent::GaveUp { id: child.clone() }))
    );
    // Given up cluster-wide: no other node picks it up, even after the owner dies.
    sim.kill(host);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.instances(&child), 0);
}

#[test]
fn a_singleton_given_up_on_one_node_moves_to_the_next() {
    let mut sim = cluster(3);
    let roar = id("roar");
    let first = host_running(&sim, &roar).expect("runs");
    // The default intensity is 3 restarts in 5 s: the fourth crash gives up.
    for _ in 0..4 {
        assert!(sim.exit_worker(first, &roar, Exit::Failed("bad disk".into())));
        sim.run_for(Duration::from_millis(10));
    }
    assert!(
        supervisor_events(&sim).contains(&(first, SupervisorEvent::GaveUp { id: roar.clone() }))
    );
    sim.run_for(Duration::from_millis(50));
    let second = host_running(&sim, &roar).expect("taken over");
    assert_ne!(second, first);
    assert_eq!(sim.instances(&roar), 1);
}

#[test]
fn restarts_outside_the_window_do_not_count() {
    let mut sim = cluster(3);
    let spec = ChildSpec::new(id("slow-flaky"), "w", vec![]).intensity(1, Duration::from_secs(1));
    let (child, host) = start_with(&mut sim, spec);
    for _ in 0..5 {
        assert!(sim.exit_worker(host, &child, Exit::Failed("boom".into())));
        sim.run_for(Duration::from_millis(1500));
        assert_eq!(sim.instances(&child), 1);
    }
}

// ----- what users of the anchors complain about ----------------------------------------------

fn many_children(sim: &mut Sim, n: usize) -> Vec<ChildId> {
    let hosts = sim.len();
    let children: Vec<ChildId> = (0..n).map(|k| id(&format!("child-{k}"))).collect();
    for (k, child) in children.iter().enumerate() {
        start(sim, k % hosts, child.as_str());
    }
    sim.run_for(Duration::from_millis(200));
    children
}

/// Horde #207: children duplicated when nodes are removed one after another.
#[test]
fn horde_207_removing_nodes_one_after_another_never_duplicates_children() {
    let mut sim = cluster(5);
    let mut children = many_children(&mut sim, 100);
    children.push(id("roar"));
    for (k, victim) in [4, 3, 2].into_iter().enumerate() {
        if k % 2 == 0 {
            sim.kill(victim);
        } else {
            sim.with_node(victim, |n, now| n.leave(now))
                .expect("up")
                .expect("left");
        }
        sim.run_for(Duration::from_millis(100));
        assert_exactly_once(&sim, &children);
    }
}

/// Horde #172: children lost instead of restarted when a node is removed.
#[test]
fn horde_172_a_removed_nodes_children_restart_on_survivors() {
    let mut sim = cluster(3);
    let children = many_children(&mut sim, 60);
    let victim = host_running(&sim, &children[0]).expect("runs");
    let theirs = sim.workers(victim).len();
    assert!(theirs > 0);
    sim.crash_silently(victim);
    sim.run_for(Duration::from_secs(2));
    let mut expected = children.clone();
    expected.push(id("roar"));
    assert_exactly_once(&sim, &expected);
}

/// Horde #186: a process gone from both registry and supervisor after a netsplit heals.
#[test]
fn horde_186_after_a_netsplit_heals_every_child_is_still_known_and_running() {
    let mut sim = cluster(5);
    let mut children = many_children(&mut sim, 80);
    sim.partition(&[vec![0, 1], vec![2, 3, 4]]);
    sim.run_for(Duration::from_secs(3));
    // Both sides keep running everything they can (Available mode).
    sim.heal();
    sim.run_until(Duration::from_secs(10), Sim::converged)
        .expect("healed");
    sim.run_for(Duration::from_secs(2));
    children.push(id("roar"));
    assert_exactly_once(&sim, &children);
    for i in 0..5 {
        assert_eq!(sim.node(i).expect("up").live_children(), 80);
    }
}

/// Horde #200: CRDT memory growing with every start attempt.
#[test]
fn horde_200_start_and_terminate_churn_does_not_grow_memory() {
    let mut config = SimConfig::default();
    config.node.child_tombstone_ttl = Duration::from_secs(5);
    let mut sim = cluster_with(3, config);
    for round in 0..2000 {
        let child = format!("churn-{round}");
        start(&mut sim, round % 3, &child);
        // A failed attempt (duplicate) adds nothing.
        let dup = ChildSpec::new(id(&child), "w", vec![]);
        sim.run_for(Duration::from_millis(5));
        let refused = sim.with_node((round + 1) % 3, |n, now| n.start_child(now, dup));
        assert_eq!(refused, Some(Err(StartChildError::Duplicate(id(&child)))));
        sim.with_node((round + 2) % 3, |n, now| {
            n.terminate_child(now, &id(&child))
        })
        .expect("up")
        .expect("terminated");
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(7));
    for i in 0..3 {
        let node = sim.node(i).expect("up");
        assert_eq!(node.live_children(), 0);
        assert_eq!(node.which_children(Scope::Global).len(), 0);
    }
    assert!(sim.all_instances().is_empty());
}

/// Horde #227: `set_members` timing out when 16 nodes join at once.
#[test]
fn horde_227_sixteen_nodes_joining_at_once_converge_and_share_the_children() {
    let mut sim = cluster(3);
    let children = many_children(&mut sim, 300);
    for _ in 0..16 {
        sim.add_node();
    }
    let took = sim
        .run_until(Duration::from_secs(10), Sim::converged)
        .expect("converged");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    sim.run_for(Duration::from_millis(500));
    for i in 0..19 {
        assert_eq!(sim.node(i).expect("up").live_children(), 300, "host {i}");
    }
    let mut expected = children;
    expected.push(id("roar"));
    assert_exactly_once(&sim, &expected);
}

/// Swarm #86 / #124: duplicates still running after a heal.
#[test]
fn swarm_86_124_duplicates_are_resolved_to_one_after_a_heal() {
    let mut sim = cluster(4);
    let children = many_children(&mut sim, 40);
    sim.partition(&[vec![0, 1], vec![2, 3]]);
    sim.run_for(Duration::from_secs(3));
    // During the split, each side runs its own copy of what the other side owned.
    assert_eq!(sim.instances(&id("roar")), 2);
    assert!(children.iter().all(|c| sim.instances(c) == 2));
    sim.heal();
    sim.run_until(Duration::from_secs(10), Sim::converged)
        .expect("healed");
    sim.run_for(Duration::from_millis(100));
    let mut expected = children;
    expected.push(id("roar"));
    assert_exactly_once(&sim, &expected);
    // The losers were told the winner, so they can hand their state over.
    let moved = sim
        .records()
        .iter()
        .filter(|r| {
            matches!(
                &r.action,
                Action::Stop {
                    reason: StopReason::Moved { to: Some(_) },
                    ..
                }
            )
        })
        .count();
    assert!(moved >= 41, "{moved}");
}

/// A start's confirmation lost on the way (the peers' answers dropped) is not waited for
/// in vain: the replication goes out again until a member confirms it.
#[test]
fn a_start_whose_confirmations_are_lost_is_sent_again_until_confirmed() {
    let mut sim = cluster(3);
    sim.block(1, 0);
    sim.block(2, 0);
    sim.clear_records();
    start(&mut sim, 0, "lonely");
    sim.run_for(Duration::from_millis(500));
    let started = |sim: &Sim| {
        supervisor_events(sim).into_iter().any(|(h, e)| {
            h == 0
                && matches!(e, SupervisorEvent::ChildStarted { ref id, replicated: true } if id.as_str() == "lonely")
        })
    };
    assert!(!started(&sim), "confirmed although every answer was lost");
    sim.heal();
    sim.run_for(Duration::from_millis(500));
    assert!(started(&sim), "never confirmed after the heal");
}

/// With no member able to answer for longer than `start_ack_timeout` (shorter here than
/// it takes to declare the silent peers down), the start is answered as unconfirmed
/// instead of hanging.
#[test]
fn a_start_no_member_confirms_in_time_is_answered_as_unconfirmed() {
    let node = solo_core::Config::builder()
        .start_ack_timeout(Duration::from_millis(500))
        .build()
        .expect("valid");
    let mut sim = cluster_with(
        3,
        SimConfig {
            singletons: vec![singleton()],
            node,
            ..SimConfig::default()
        },
    );
    sim.block(1, 0);
    sim.block(2, 0);
    sim.clear_records();
    start(&mut sim, 0, "lonely");
    sim.run_for(Duration::from_millis(700));
    let events = supervisor_events(&sim);
    assert!(
        events.iter().any(|(h, e)| *h == 0
            && matches!(e, SupervisorEvent::ChildUnconfirmed { id } if id.as_str() == "lonely")),
        "{events:?}"
    );
    assert!(!events.iter().any(
        |(_, e)| matches!(e, SupervisorEvent::ChildStarted { id, .. } if id.as_str() == "lonely")
    ));
}

/// A singleton that moves to a node joining the cluster starts there within a few network
/// round trips of its old instance's stop. Two things once stretched it to a suspicion plus a
/// probe cycle (650 ms): the newcomer counted the members that had left before it came (its
/// seed's tombstones, relayed) as live and waited for their answers, and the owner refused
/// the newcomer's claim until it heard of the newcomer, costing a retry period.
#[test]
fn a_singleton_moves_to_a_joining_node_within_round_trips() {
    let spec = ChildSpec::new(id("handoff-count"), "counter", Vec::new());
    let mut sim = Sim::new(
        SEED,
        SimConfig {
            singletons: vec![spec.clone()],
            declare_on_start: false,
            ..SimConfig::default()
        },
    );
    let seed = sim.add_node();
    let candidates = [sim.add_node(), sim.add_node()];
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("formed");
    for candidate in candidates {
        sim.declare(candidate);
    }
    sim.run_for(Duration::from_secs(1));
    let mut rebalances = 0;
    for _round in 0..8 {
        // The owner leaves (a tombstone the next newcomer learns from its seed), and a fresh
        // node declaring the singleton joins.
        let owner = host_running(&sim, &spec.id).expect("the singleton runs");
        sim.leave_gracefully(owner, Duration::from_secs(2));
        sim.run_for(Duration::from_millis(500));
        sim.clear_records();
        let newcomer = sim.add_node_with_seeds(&[seed]);
        sim.declare(newcomer);
        sim.run_for(Duration::from_secs(2));
        let stop = sim.records().iter().find_map(|r| match r.action {
            Action::Stop { .. } => Some(r.at),
            _ => None,
        });
        let start = sim.records().iter().find_map(|r| match r.action {
            Action::Start { .. } => Some((r.at, r.host)),
            _ => None,
        });
        if let Some(stopped) = stop {
            let (started, host) = start.expect("a stopped singleton starts again");
            assert_eq!(host, newcomer, "it moves only to the newcomer");
            assert!(
                started - stopped < Duration::from_millis(50),
                "the newcomer started it {:?} after the old owner stopped it",
                started - stopped
            );
            rebalances += 1;
        }
    }
    assert!(rebalances > 0, "no newcomer won the rendezvous in 8 rounds");
}

/// The ownership epoch moves whenever what `which_children` says may have changed (a child
/// added elsewhere, a member come), and only then: the runtime reads the view again on it.
#[test]
fn the_ownership_epoch_moves_when_an_owner_may_have_changed_and_stays_put_otherwise() {
    let mut sim = cluster(3);
    let epoch = |sim: &Sim| sim.node(0).expect("running").ownership_epoch();
    let quiet = epoch(&sim);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(epoch(&sim), quiet, "nothing changed, nothing moved");

    start(&mut sim, 1, "heard-of-elsewhere");
    let known = sim.run_until(Duration::from_secs(5), |sim| {
        sim.node(0).is_some_and(|n| {
            n.which_children(Scope::Global)
                .iter()
                .any(|c| c.id == id("heard-of-elsewhere") && c.assigned_to.is_some())
        })
    });
    assert!(known.is_some(), "node 0 hears of the child");
    let after_child = epoch(&sim);
    assert_ne!(after_child, quiet, "a child added elsewhere moves it");

    sim.add_node_with_seeds(&[0]);
    let formed = sim.run_until(Duration::from_secs(5), Sim::converged);
    assert!(formed.is_some(), "the fourth node joins");
    assert_ne!(epoch(&sim), after_child, "a member come moves it");
}
