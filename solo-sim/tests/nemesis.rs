//! Seeded nemesis runs of a 5-node cluster of real nodes under turmoil, checked against
//! DESIGN.md's invariants after the network heals, and strictly from the heal on: a heal
//! stops duplicates but starts no second instance of anything, and after [`HEAL_NOTICE`]
//! declares no live process down. As in the core simulator, one exception is counted, not
//! failed: a failover the partition began may complete within [`HEAL_NOTICE`] of the heal,
//! before any node can know of it.
//!
//! * CI runs a fixed set of seeds: `cargo test -p solo-sim --test nemesis`.
//! * A larger sweep: `SOLO_SIM_SEEDS=10000 cargo test --release -p solo-sim --test nemesis`
//!   (`SOLO_SIM_SEED_START=N` resumes one from seed N).
//! * One seed, with its schedule printed: `SOLO_SIM_SEED=N cargo test -p solo-sim --test
//!   nemesis replay -- --nocapture` (`SOLO_SIM_V1_SEED=N` for a seed of the first sweeps'
//!   fault mix, as the regression seeds are).

use std::time::Duration;

use solo_sim::core_sim::{env_u64, fail_seed};
use solo_sim::{Schedule, Sim, check, check_healed};

const NODES: usize = 5;
const FAULTS: usize = 8;
const CI_SEEDS: u64 = 12;
/// Seeds from past sweeps (of the first fault mix, `Mix::V1`) that once broke an
/// invariant, run in CI with the fixed set.
/// * 8482: a link that flapped during the schedule left a TCP connection stalled without
///   ever closing (turmoil, like a real path, can lose a segment for good); node n0 stayed
///   cut off after the heal and ran the singleton beside n3. Fixed by the transport's
///   keep-alive and idle timeout.
/// * 6509: that idle timeout, reported as `Link::Down`, turned each stalled connection into
///   a false `Down` verdict, and the membership flapped for seconds after the heal; a
///   stalled connection is now replaced without a `Down`.
/// * 4689: one false `Down` echoed between nodes for seconds: a node that declared a peer
///   down closed its connection, the peer took the close for a crash and declared it down
///   in turn; a deliberate close now sends the handover marker.
const REGRESSION_SEEDS: &[u64] = &[4689, 6509, 8482];
/// How long the network stays healed before the check: membership converges within a few
/// seconds (the core's 10 000-seed sweep: at most 3.5 s), then owners settle.
const HEALED_FOR: Duration = Duration::from_secs(10);
/// How long after a heal the sides may not know of it yet: a dial that failed during the
/// partition waits out its backoff (up to the transport's `backoff_max`, 2 s) before the
/// next one, then one `sync_interval` (1 s) for the first sync across, and a claim's retry
/// (0.5 s). The core simulator, which has no dials, allows 1.5 s. Seeds 2485 and 6180 of
/// the first 10 000 with the heal window found a side meeting the last of the other 2.1 s
/// after the heal, turmoil's link failures having pushed its dials to the longest backoff.
const HEAL_NOTICE: Duration = Duration::from_millis(3500);

/// What one seed measured, for a sweep's figures.
#[derive(Default, Debug, Clone, Copy)]
struct Figures {
    heals: usize,
    /// Starts within [`HEAL_NOTICE`] of the heal that overlapped another instance.
    late_failovers: usize,
    /// `Down` verdicts about live processes from the heal on.
    false_downs_after_heal: usize,
    /// Those of them given after [`HEAL_NOTICE`], when no suspicion from before the heal can
    /// still be running.
    false_downs_after_notice: usize,
    /// Instances stopped because they moved, from the heal on.
    moves_after_heal: usize,
}

impl std::ops::AddAssign for Figures {
    fn add_assign(&mut self, other: Figures) {
        self.heals += other.heals;
        self.late_failovers += other.late_failovers;
        self.false_downs_after_heal += other.false_downs_after_heal;
        self.false_downs_after_notice += other.false_downs_after_notice;
        self.moves_after_heal += other.moves_after_heal;
    }
}

/// Which fault mix a seed's schedule comes from.
#[derive(Clone, Copy)]
enum Mix {
    /// [`Schedule::random`]: every fault kind.
    All,
    /// [`Schedule::random_v1`]: the first sweeps' mix, which found [`REGRESSION_SEEDS`].
    V1,
}

impl Mix {
    fn schedule(self, seed: u64) -> Schedule {
        match self {
            Mix::All => Schedule::random(seed, NODES, FAULTS),
            Mix::V1 => Schedule::random_v1(seed, NODES, FAULTS),
        }
    }

    /// The command that replays `seed` of this mix.
    fn replay(self, seed: u64) -> String {
        let var = match self {
            Mix::All => "SOLO_SIM_SEED",
            Mix::V1 => "SOLO_SIM_V1_SEED",
        };
        format!("{var}={seed} cargo test -p solo-sim --test nemesis replay -- --nocapture")
    }
}

/// A worker that takes a while to stop, as real ones do: a start that does not wait for the
/// old instance's end shows as an overlap.
async fn linger(ctx: solo::WorkerContext) -> Result<(), solo::WorkerError> {
    ctx.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

/// A sabotaged build [`run_seed`] must catch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sabotage {
    None,
    /// Duplicates are never stopped after a heal.
    DuplicateResolution,
    /// Silent connections to suspects are never replaced: after a heal, connections the
    /// partition stalled cost false `Down`s, and failovers beside instances that still run.
    KeepSilentConnections,
}

/// Runs one seed: its history's hash (for the replay check) and figures.
fn run_seed(seed: u64, mix: Mix, sabotage: Sabotage) -> Result<(u64, Figures), String> {
    let mut builder = Sim::builder()
        .nodes(NODES)
        .seed(seed)
        .worker("linger", linger)
        .singleton_of("roar", ["linger"]);
    match sabotage {
        Sabotage::None => {}
        Sabotage::DuplicateResolution => builder = builder.sabotage_duplicate_resolution(),
        Sabotage::KeepSilentConnections => builder = builder.sabotage_keep_silent_connections(),
    }
    let mut sim = builder.build();
    let schedule = mix.schedule(seed);
    let mut healed_at = Duration::ZERO;
    let mut run = |sim: &mut Sim| -> Result<(), solo_sim::SimError> {
        sim.run_for(Duration::from_secs(2))?;
        schedule.apply(sim)?;
        sim.heal();
        healed_at = sim.elapsed();
        sim.run_for(HEALED_FOR)
    };
    run(&mut sim).map_err(|e| e.to_string())?;
    let history = sim.history();
    let after_notice = check::overlaps_from(&history, healed_at + HEAL_NOTICE);
    if !after_notice.is_empty() {
        return Err(format!(
            "the heal at {healed_at:?} started a second instance:\n{}\nschedule: {:?}\n{}",
            after_notice.join("\n"),
            schedule.faults,
            check::excerpt(&history, "roar")
        ));
    }
    // turmoil's link failures lose segments for good, which a real path retransmits: only
    // without them is a false `Down` after the notice held against the build.
    let late_downs = check::false_downs_from(&history, healed_at + HEAL_NOTICE);
    if !late_downs.is_empty() && !link_failures(&schedule) {
        return Err(format!(
            "after the heal at {healed_at:?} and its notice, live processes were declared down:\n{}\nschedule: {:?}",
            late_downs.join("\n"),
            schedule.faults
        ));
    }
    check_healed(&history, &["roar".to_owned()])
        .map_err(|v| format!("{v}\nschedule: {:?}", schedule.faults))?;
    let figures = Figures {
        heals: 1,
        late_failovers: check::overlaps_from(&history, healed_at).len() - after_notice.len(),
        false_downs_after_heal: check::false_downs_from(&history, healed_at).len(),
        false_downs_after_notice: late_downs.len(),
        moves_after_heal: check::moves_from(&history, healed_at),
    };
    Ok((check::history_hash(&history), figures))
}

/// Whether `schedule` has turmoil's random link failures (`Fault::LossPerMille`).
fn link_failures(schedule: &Schedule) -> bool {
    schedule
        .faults
        .iter()
        .any(|f| matches!(f, solo_sim::Fault::LossPerMille(_)))
}

fn check_seed(seed: u64, mix: Mix) -> Figures {
    match run_seed(seed, mix, Sabotage::None) {
        Ok((_, figures)) => figures,
        Err(why) => fail_seed(seed, &why, &mix.replay(seed)),
    }
}

#[test]
fn seeded_nemesis_runs_keep_every_invariant() {
    let seeds = env_u64("SOLO_SIM_SEEDS").unwrap_or(CI_SEEDS);
    // `SOLO_SIM_SEED_START` resumes a long sweep where a previous one stopped.
    let start = env_u64("SOLO_SIM_SEED_START").unwrap_or(0);
    // turmoil's link failures (`Fault::LossPerMille`) lose TCP segments for good, which a
    // real path retransmits: their heals are counted apart.
    let mut figures = [Figures::default(); 2];
    let flapping = |seed: u64, mix: Mix| link_failures(&mix.schedule(seed));
    for seed in start..seeds {
        figures[usize::from(flapping(seed, Mix::All))] += check_seed(seed, Mix::All);
    }
    for &seed in REGRESSION_SEEDS {
        figures[usize::from(flapping(seed, Mix::V1))] += check_seed(seed, Mix::V1);
    }
    for (figures, what) in figures.iter().zip(["without", "with"]) {
        println!(
            "{} heals {what} link failures: {} failovers completed within the heal notice, {} false downs ({} after the notice) and {} moves after heals",
            figures.heals,
            figures.late_failovers,
            figures.false_downs_after_heal,
            figures.false_downs_after_notice,
            figures.moves_after_heal
        );
    }
}

/// A healthy network (crashes, restarts, graceful leaves, children started anywhere, and
/// every node declaring the singleton right after it starts): never two instances of
/// anything at any instant, and no live process declared down.
fn run_healthy_seed(seed: u64, sabotage: bool) -> Result<(), String> {
    let mut builder = Sim::builder()
        .nodes(NODES)
        .seed(seed)
        .worker("linger", linger)
        .singleton_of("roar", ["linger"]);
    if sabotage {
        builder = builder.sabotage_skip_claims();
    }
    let mut sim = builder.build();
    let schedule = Schedule::random_healthy(seed, NODES, FAULTS);
    let run = |sim: &mut Sim| -> Result<(), solo_sim::SimError> {
        schedule.apply(sim)?;
        sim.run_for(HEALED_FOR)
    };
    run(&mut sim).map_err(|e| e.to_string())?;
    let history = sim.history();
    let mut problems = check::overlaps(&history);
    problems.extend(check::false_downs(&history));
    if problems.is_empty() {
        check_healed(&history, &["roar".to_owned()])
            .map_err(|v| format!("{v}\nschedule: {:?}", schedule.faults))?;
        return Ok(());
    }
    Err(format!(
        "{}\nschedule: {:?}\n{}",
        problems.join("\n"),
        schedule.faults,
        check::excerpt(&history, "roar")
    ))
}

fn healthy_replay(seed: u64) -> String {
    format!(
        "SOLO_SIM_HEALTHY_SEED={seed} cargo test -p solo-sim --test nemesis replay -- --nocapture"
    )
}

#[test]
fn in_a_healthy_network_nothing_ever_runs_twice_and_no_live_node_is_declared_down() {
    let seeds = env_u64("SOLO_SIM_SEEDS").unwrap_or(CI_SEEDS);
    let start = env_u64("SOLO_SIM_SEED_START").unwrap_or(0);
    for seed in start..seeds {
        if let Err(why) = run_healthy_seed(seed, false) {
            fail_seed(seed, &why, &healthy_replay(seed));
        }
    }
}

/// The stricter checker itself is tested: nodes that start what they own without claiming
/// it first (solo before claims) must be caught within the CI seeds.
#[test]
fn a_build_that_starts_without_claiming_is_caught() {
    let caught = (0..CI_SEEDS)
        .filter(|&seed| run_healthy_seed(seed, true).is_err())
        .count();
    assert!(caught > 0, "the sabotaged build passed every CI seed");
}

/// Logs of a replay, stamped with simulated time: `SOLO_SIM_LOG=solo=debug,solo_transport_tcp=debug`
/// (tracing's target filter syntax).
fn log_replay() {
    struct SimTime;
    impl tracing_subscriber::fmt::time::FormatTime for SimTime {
        fn format_time(
            &self,
            w: &mut tracing_subscriber::fmt::format::Writer<'_>,
        ) -> std::fmt::Result {
            match turmoil::sim_elapsed() {
                Some(at) => write!(w, "{at:>10.3?}"),
                None => write!(w, "{:>10}", "-"),
            }
        }
    }
    let Ok(filter) = std::env::var("SOLO_SIM_LOG") else {
        return;
    };
    match filter.parse::<tracing_subscriber::filter::Targets>() {
        Ok(targets) => {
            use tracing_subscriber::layer::SubscriberExt;
            let subscriber = tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_timer(SimTime)
                        .with_ansi(false),
                )
                .with(targets);
            let _ = tracing::subscriber::set_global_default(subscriber);
        }
        Err(error) => panic!("SOLO_SIM_LOG={filter}: {error}"),
    }
}

#[test]
fn replay() {
    log_replay();
    if let Some(seed) = env_u64("SOLO_SIM_HEALTHY_SEED") {
        match run_healthy_seed(seed, false) {
            Ok(()) => println!("healthy seed {seed} holds every invariant"),
            Err(why) => fail_seed(seed, &why, &healthy_replay(seed)),
        }
    }
    for (var, mix) in [("SOLO_SIM_SEED", Mix::All), ("SOLO_SIM_V1_SEED", Mix::V1)] {
        if let Some(seed) = env_u64(var) {
            println!("schedule: {:?}", mix.schedule(seed).faults);
            match run_seed(seed, mix, Sabotage::None) {
                Ok((hash, figures)) => {
                    println!("seed {seed} holds every invariant (history {hash:016x}); {figures:?}")
                }
                Err(why) => fail_seed(seed, &why, &mix.replay(seed)),
            }
        }
    }
}

/// The checker itself is tested: a build that never stops duplicates after a heal must be
/// caught within the CI seeds.
#[test]
fn a_build_that_skips_duplicate_resolution_is_caught() {
    let caught = (0..CI_SEEDS)
        .filter(|&seed| run_seed(seed, Mix::All, Sabotage::DuplicateResolution).is_err())
        .count();
    assert!(caught > 0, "the sabotaged build passed every CI seed");
}

/// The heal window has teeth: a build that keeps a suspect's silent connection (solo before
/// `Transport::refresh`, with the old 1 s keep-alive and 5 s idle timeout) is caught. Seed 116
/// was the one of the first 200 that found it (its last fault cut one node off for 130 ms;
/// the heal left its connections stalled, and the others failed over beside its running
/// instances 1.7 s after the heal). Schedules change with the protocol: with the 450 ms
/// suspicion, claims held while a heal merges views and sync partners taken in turn, the
/// first 4 000 seeds catch it on 100, 232, 289 and 335, pinned here beside the CI seeds.
#[test]
fn the_heal_window_catches_a_build_that_keeps_silent_connections() {
    let caught: Vec<u64> = (0..CI_SEEDS)
        .chain([116, 100, 232, 289, 335])
        .filter(|&seed| run_seed(seed, Mix::All, Sabotage::KeepSilentConnections).is_err())
        .collect();
    eprintln!("caught on seeds {caught:?}");
    assert!(!caught.is_empty(), "the sabotaged build passed every seed");
}

#[test]
fn a_seed_replays_to_the_same_history() {
    // 5 crashes hosts while a link is held and links fail at random (a crash's closes
    // then once came in an order set by other test threads); 6 has a graceful leave.
    for seed in [5, 6] {
        assert_eq!(
            run_seed(seed, Mix::All, Sabotage::None).map(|(hash, _)| hash),
            run_seed(seed, Mix::All, Sabotage::None).map(|(hash, _)| hash),
            "seed {seed}"
        );
    }
}

/// How many seeds of the exclusive nemesis CI runs.
const EXCLUSIVE_CI_SEEDS: u64 = 8;

/// `Exclusive` mode under the full nemesis (partitions, one-way cuts, bridges, held links,
/// slow links, flapping, crashes, restarts, leaves, children started and terminated from
/// any node), with the first three hosts as voters: the exclusive singleton `lock` and the
/// exclusive children never have two instances at any instant, tokens rise over every
/// start, and after the heal every one of them, and the `Available` `roar`, runs once.
/// Returns the check's findings for `probe` too (the `Available` singleton, for the test
/// that shows the checker sees duplicates).
fn run_exclusive_seed(seed: u64, probe: &str) -> Result<Vec<String>, String> {
    let mut sim = Sim::builder()
        .nodes(NODES)
        .seed(seed)
        .voters(3)
        .exclusive_singleton("lock")
        .exclusive_children()
        .singleton("roar")
        .build();
    let schedule = Schedule::random(seed, NODES, FAULTS);
    let run = |sim: &mut Sim| -> Result<(), solo_sim::SimError> {
        sim.run_for(Duration::from_secs(4))?;
        schedule.apply(sim)?;
        sim.heal();
        sim.run_for(HEALED_FOR)
    };
    run(&mut sim).map_err(|e| e.to_string())?;
    let history = sim.history();
    let mut exclusive: Vec<String> = vec!["lock".to_owned()];
    for fault in &schedule.faults {
        if let solo_sim::Fault::StartChild(_, id) = fault
            && !exclusive.contains(id)
        {
            exclusive.push(id.clone());
        }
    }
    let broken: Vec<String> = exclusive
        .iter()
        .flat_map(|id| check::exclusive(&history, id))
        .collect();
    if !broken.is_empty() {
        return Err(format!(
            "{}\nschedule: {:?}\n{}",
            broken.join("\n"),
            schedule.faults,
            check::excerpt(&history, "lock")
        ));
    }
    check_healed(&history, &["lock".to_owned(), "roar".to_owned()])
        .map_err(|v| format!("{v}\nschedule: {:?}", schedule.faults))?;
    Ok(check::exclusive(&history, probe))
}

#[test]
fn an_exclusive_singleton_never_runs_twice_at_any_instant_under_the_nemesis() {
    let seeds = env_u64("SOLO_SIM_EXCLUSIVE_SEEDS").unwrap_or(EXCLUSIVE_CI_SEEDS);
    let start = env_u64("SOLO_SIM_SEED_START").unwrap_or(0);
    for seed in start..start + seeds {
        if let Err(why) = run_exclusive_seed(seed, "lock") {
            fail_seed(
                seed,
                &why,
                &format!(
                    "SOLO_SIM_SEED_START={seed} SOLO_SIM_EXCLUSIVE_SEEDS=1 cargo test -p solo-sim --test nemesis an_exclusive_singleton -- --nocapture"
                ),
            );
        }
    }
}

/// The exclusive checker has teeth: on the same runs, the `Available` singleton beside
/// `lock` (which partitions may legitimately duplicate) breaks it.
#[test]
fn the_exclusive_checker_sees_an_available_singleton_run_twice() {
    let caught = (0..EXCLUSIVE_CI_SEEDS)
        .filter_map(|seed| run_exclusive_seed(seed, "roar").ok())
        .filter(|found| found.iter().any(|f| f.contains("while")))
        .count();
    assert!(
        caught > 0,
        "no CI seed showed the Available singleton twice at once"
    );
}
