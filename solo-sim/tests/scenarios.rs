//! The real driver and TCP transport under turmoil: fixed seeds, hand-written scenarios.

use std::time::Duration;

use solo_sim::{Sim, check};

fn owner(sim: &Sim, id: &str) -> Option<usize> {
    let running = check::running_at_end(&sim.history());
    match running.get(id).map(Vec::as_slice) {
        Some([only]) => Some(only.host),
        _ => None,
    }
}

fn instances(sim: &Sim, id: &str) -> usize {
    check::running_at_end(&sim.history())
        .get(id)
        .map_or(0, Vec::len)
}

#[test]
fn the_singleton_runs_once_and_survives_the_crash_of_its_node() {
    let mut sim = Sim::builder().nodes(3).seed(1).singleton("roar").build();
    sim.run_for(Duration::from_secs(3)).expect("runs");
    let first =
        owner(&sim, "roar").unwrap_or_else(|| panic!("{}", check::excerpt(&sim.history(), "roar")));
    sim.crash(first);
    let crashed_at = sim.elapsed();
    sim.run_for(Duration::from_secs(3)).expect("runs");
    let second =
        owner(&sim, "roar").unwrap_or_else(|| panic!("{}", check::excerpt(&sim.history(), "roar")));
    assert_ne!(first, second);
    let history = sim.history();
    let taken_over = history
        .iter()
        .find(|r| {
            r.at >= crashed_at
                && r.host == second
                && matches!(&r.what, solo_sim::What::Started { id, .. } if id == "roar")
        })
        .expect("a start after the crash");
    // The crash closes its connections: the takeover is a network delay, not a timeout.
    assert!(
        taken_over.at - crashed_at < Duration::from_millis(100),
        "took {:?}",
        taken_over.at - crashed_at
    );
}

#[test]
fn a_healed_partition_leaves_exactly_one_singleton() {
    let mut sim = Sim::builder().nodes(3).seed(2).singleton("roar").build();
    sim.run_for(Duration::from_secs(3)).expect("runs");
    let first = owner(&sim, "roar").expect("one owner");
    let others: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    sim.partition(&[first], &others);
    sim.run_for(Duration::from_secs(5)).expect("runs");
    assert_eq!(
        instances(&sim, "roar"),
        2,
        "each side runs one (Available mode)"
    );
    sim.repair_all();
    sim.run_for(Duration::from_secs(10)).expect("runs");
    assert_eq!(
        instances(&sim, "roar"),
        1,
        "{}",
        check::excerpt(&sim.history(), "roar")
    );
}

#[test]
fn a_restarted_node_rejoins_and_the_singleton_stays_single() {
    let mut sim = Sim::builder().nodes(3).seed(3).singleton("roar").build();
    sim.run_for(Duration::from_secs(3)).expect("runs");
    let first = owner(&sim, "roar").expect("one owner");
    sim.restart(first);
    sim.run_for(Duration::from_secs(5)).expect("runs");
    assert_eq!(
        instances(&sim, "roar"),
        1,
        "{}",
        check::excerpt(&sim.history(), "roar")
    );
}

#[test]
fn the_same_seed_gives_the_same_history() {
    let run = || {
        let mut sim = Sim::builder().nodes(3).seed(42).singleton("roar").build();
        sim.run_for(Duration::from_secs(2)).expect("runs");
        sim.crash(1);
        sim.run_for(Duration::from_secs(2)).expect("runs");
        check::history_hash(&sim.history())
    };
    assert_eq!(run(), run());
}

/// The TLS carrier under turmoil: a crash, a partition and its heal, over mutual TLS.
#[test]
fn over_tls_the_singleton_survives_a_crash_and_a_healed_partition() {
    let mut sim = Sim::builder()
        .nodes(3)
        .seed(5)
        .singleton("roar")
        .tls()
        .build();
    sim.run_for(Duration::from_secs(3)).expect("runs");
    let first =
        owner(&sim, "roar").unwrap_or_else(|| panic!("{}", check::excerpt(&sim.history(), "roar")));
    sim.crash(first);
    sim.run_for(Duration::from_secs(3)).expect("runs");
    let second =
        owner(&sim, "roar").unwrap_or_else(|| panic!("{}", check::excerpt(&sim.history(), "roar")));
    assert_ne!(first, second);
    sim.restart(first);
    let others: Vec<usize> = (0..3).filter(|&i| i != second).collect();
    sim.run_for(Duration::from_secs(3)).expect("runs");
    sim.partition(&[second], &others);
    sim.run_for(Duration::from_secs(5)).expect("runs");
    assert_eq!(instances(&sim, "roar"), 2, "each side runs its own");
    sim.repair_all();
    sim.run_for(Duration::from_secs(5)).expect("runs");
    assert_eq!(
        instances(&sim, "roar"),
        1,
        "{}",
        check::excerpt(&sim.history(), "roar")
    );
}

/// The downs `history` records about peers of the *same* side of a partition `sides` (host
/// sets): what [G] found after a heal of 5 nodes, a node declaring a neighbour it never lost
/// touch with down.
fn own_side_downs(history: &[solo_sim::Record], sides: [&[usize]; 2]) -> Vec<String> {
    let side = |host: usize| sides.iter().position(|s| s.contains(&host));
    history
        .iter()
        .filter_map(|r| {
            let solo_sim::What::Member(event) = &r.what else {
                return None;
            };
            let peer: usize = event
                .strip_prefix("Down(n")?
                .split('#')
                .next()?
                .parse()
                .ok()?;
            (side(peer) == side(r.host)).then(|| format!("{:?}: n{} {event}", r.at, r.host))
        })
        .collect()
}

#[test]
fn healing_a_partition_of_five_downs_no_neighbour_and_starts_nothing() {
    let minority: &[usize] = &[0, 1];
    let majority: &[usize] = &[2, 3, 4];
    for seed in 0..20 {
        let mut sim = Sim::builder().nodes(5).seed(seed).singleton("roar").build();
        sim.run_for(Duration::from_secs(3)).expect("runs");
        sim.partition(minority, majority);
        sim.run_for(Duration::from_secs(5)).expect("runs");
        assert_eq!(instances(&sim, "roar"), 2, "seed {seed}: one per side");
        sim.repair_all();
        let healed_at = sim.elapsed();
        sim.run_for(Duration::from_secs(10)).expect("runs");
        let history = sim.history();
        let neighbours = own_side_downs(&history, [minority, majority]);
        assert!(neighbours.is_empty(), "seed {seed}: {neighbours:?}");
        let after_heal = check::false_downs_from(&history, healed_at);
        assert!(after_heal.is_empty(), "seed {seed}: {after_heal:?}");
        let started = check::overlaps_from(&history, healed_at);
        assert!(started.is_empty(), "seed {seed}: {started:?}");
        assert_eq!(check::max_concurrent(&history, "roar").0, 2, "seed {seed}");
        assert_eq!(instances(&sim, "roar"), 1, "seed {seed}");
    }
}
