//! Calls, casts and handoff, checked in the core simulator: every simulated process runs a
//! `Messenger` beside its `Node`, and every instance is a simulated actor (a bounded
//! mailbox, one mail at a time, a handled-count for its state). Traffic comes in bursts
//! from random running hosts to three singletons while the nemesis works, in three tiers:
//!
//! * **graceful** (a healthy network, FIFO links as on TCP; nodes join, leave after
//!   draining, and come back): every call gets exactly one outcome by its deadline, and
//!   it is the echo of the call, or a refusal (`Overloaded`, `Full`) of a call never
//!   handled; every message is handled at most once, every answered call exactly once;
//!   per sender and target, messages are handled in the order they were sent; every cast
//!   accepted is handled or reported dropped; no state is lost (each singleton's final
//!   count is the number of messages it handled in all its lives);
//! * **crashes** (a healthy network, processes killed, crashed silently and restarted):
//!   every call gets exactly one outcome by its deadline, unless its caller died first;
//!   an answered call was handled at least once;
//! * **faults** (partitions, loss, duplication, reordering, freezes): one outcome by the
//!   deadline for every call whose caller ran on time, answers echo their calls, and each
//!   messenger's held-bytes figure matches a recount of its tables; once the faults end
//!   and membership converges, every call is answered and every node's pending calls and
//!   held bytes go back to zero.
//!
//! CI runs a fixed set of seeds per tier. A sweep: `SOLO_MESSAGING_SEEDS=2000 cargo test
//! --release -p solo-core --features testing --test messaging_sim -- --nocapture`
//! (`SOLO_MESSAGING_SEED_START=N` starts part-way). One seed, with its history:
//! `SOLO_MESSAGING_SEED=N SOLO_MESSAGING_TIER=graceful cargo test -p solo-core --features
//! testing --test messaging_sim replay -- --nocapture` (tiers: `graceful`, `crashes`,
//! `faults`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use solo_core::messaging::{CallFailure, Dropped, MessagingConfig};
use solo_core::testing::{
    Fault, MessageKey, MessagingLog, Schedule, Sim, SimConfig, SimMessaging, env_u64, fail_seed,
};
use solo_core::wire::RemoteError;
use solo_core::{ChildId, ChildSpec, Rng};

const NODES: usize = 4;
const TARGETS: [&str; 3] = ["s0", "s1", "s2"];
const CI_SEEDS: u64 = 100;
/// How long a call may wait: long enough for a graceful move or a crash to be noticed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Traffic comes in slices of this much simulated time.
const SLICE: Duration = Duration::from_millis(20);
/// How long a graceful leave may drain (the runtime's drain timeout).
const DRAIN_WITHIN: Duration = Duration::from_secs(5);
/// Rounding between a host's clock and simulated time.
const CLOCK_SLACK: Duration = Duration::from_millis(1);

fn id(s: &str) -> ChildId {
    ChildId::new(s).expect("valid")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tier {
    Graceful,
    Crashes,
    Faults,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Graceful => "graceful",
            Tier::Crashes => "crashes",
            Tier::Faults => "faults",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Tier::Graceful, Tier::Crashes, Tier::Faults]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

/// What a sweep counted, for its figures.
#[derive(Default, Debug, Clone, Copy)]
struct Figures {
    schedules: u64,
    calls: u64,
    answered: u64,
    timeouts: u64,
    refused: u64,
    other_errors: u64,
    casts: u64,
    handled: u64,
    duplicates_handled: u64,
    handoffs: u64,
    dropped_reported: u64,
    transmits_refused: u64,
    /// Leaves cut short with a handoff still under way (crash tier).
    handoffs_abandoned: u64,
}

impl Figures {
    fn add(&mut self, other: &Figures) {
        // Destructured, not field by field: a figure added to the struct and forgotten here
        // does not compile, rather than summing to 0.
        let Figures {
            schedules,
            calls,
            answered,
            timeouts,
            refused,
            other_errors,
            casts,
            handled,
            duplicates_handled,
            handoffs,
            dropped_reported,
            transmits_refused,
            handoffs_abandoned,
        } = *other;
        self.schedules += schedules;
        self.calls += calls;
        self.answered += answered;
        self.timeouts += timeouts;
        self.refused += refused;
        self.other_errors += other_errors;
        self.casts += casts;
        self.handled += handled;
        self.duplicates_handled += duplicates_handled;
        self.handoffs += handoffs;
        self.dropped_reported += dropped_reported;
        self.transmits_refused += transmits_refused;
        self.handoffs_abandoned += handoffs_abandoned;
    }
}

fn config(tier: Tier, sabotage: bool, log_history: bool) -> SimConfig {
    SimConfig {
        log_history,
        singletons: TARGETS
            .iter()
            .map(|t| ChildSpec::new(id(t), "counter", vec![]))
            .collect(),
        declare_on_start: true,
        fifo_links: tier != Tier::Faults,
        duplicate: if tier == Tier::Faults { 0.02 } else { 0.0 },
        messaging: Some(SimMessaging {
            // A small mailbox, little room to wait beyond it, and links that fill, so that
            // refusals and resends happen.
            config: {
                let mut config = MessagingConfig::default();
                config.max_waiting_for_room_bytes = 8 << 10;
                config
            },
            mailbox_capacity: 16,
            link_capacity: Some(64),
            sabotage_forget_held: sabotage,
            ..SimMessaging::default()
        }),
        ..SimConfig::default()
    }
}

/// Sends traffic from random running hosts for `duration`, a burst every slice, checking
/// every messenger's held bytes against a recount as it goes.
struct Traffic {
    rng: Rng,
    problems: Vec<String>,
    /// The leaves cut short with handoffs still under way.
    abandoned: Vec<Abandoned>,
}

/// A leave cut short: host `host` left at `at` while handing `ids` over.
#[derive(Debug)]
struct Abandoned {
    host: usize,
    at: Duration,
    ids: Vec<ChildId>,
}

impl Traffic {
    fn burst(&mut self, sim: &mut Sim) {
        let running: Vec<usize> = (0..sim.len()).filter(|&i| sim.is_running(i)).collect();
        if running.is_empty() {
            return;
        }
        // Now and then a flood, which fills mailboxes and links.
        let count = if self.rng.below(25) == 0 {
            80
        } else {
            self.rng.below(6)
        };
        for _ in 0..count {
            let from = running[self.rng.below(running.len() as u64) as usize];
            let target = id(TARGETS[self.rng.below(TARGETS.len() as u64) as usize]);
            let padding = self.rng.below(300) as usize;
            if self.rng.below(3) == 0 {
                sim.cast(from, &target, padding);
            } else {
                sim.call(from, &target, CALL_TIMEOUT, padding);
            }
        }
    }

    fn check_held(&mut self, sim: &Sim) {
        for i in 0..sim.len() {
            let (Some(stats), Some(recount)) = (sim.messaging_stats(i), sim.recount_held_bytes(i))
            else {
                continue;
            };
            if stats.held_bytes != recount {
                self.problems.push(format!(
                    "at {:?} n{i} counts {} bytes held, its tables {recount}",
                    sim.now(),
                    stats.held_bytes
                ));
            }
        }
    }

    /// Runs `duration` with traffic, or until `done` holds.
    fn run(&mut self, sim: &mut Sim, duration: Duration, done: impl Fn(&Sim) -> bool) {
        let until = sim.now() + duration;
        while sim.now() < until && self.problems.is_empty() && !done(sim) {
            self.burst(sim);
            let left = until.saturating_sub(sim.now());
            sim.run_for(SLICE.min(left));
            self.check_held(sim);
        }
    }
}

/// A random member of a non-empty set.
fn pick(rng: &mut Rng, set: &BTreeSet<usize>) -> usize {
    let at = rng.below(set.len() as u64) as usize;
    set.iter().nth(at).copied().unwrap_or_default()
}

/// The graceful nemesis: joins, drained leaves, and left hosts coming back, with a healthy
/// network throughout.
fn graceful_schedule(seed: u64, steps: usize) -> Vec<Fault> {
    let mut rng = Rng::new(seed ^ 0x6EAC_EF01);
    let mut running: BTreeSet<usize> = (0..NODES).collect();
    let mut left: BTreeSet<usize> = BTreeSet::new();
    let mut hosts = NODES;
    let mut faults = Vec::new();
    for _ in 0..steps {
        let fault = match rng.below(3) {
            0 if hosts < 2 * NODES => {
                running.insert(hosts);
                hosts += 1;
                Fault::Join
            }
            1 if !left.is_empty() => {
                let back = pick(&mut rng, &left);
                left.remove(&back);
                running.insert(back);
                Fault::Restart(back)
            }
            _ if running.len() > 2 => {
                let go = pick(&mut rng, &running);
                running.remove(&go);
                left.insert(go);
                Fault::Leave(go)
            }
            _ => Fault::Wait(Duration::from_millis(100)),
        };
        faults.push(fault);
        faults.push(Fault::Wait(Duration::from_millis(200 + rng.below(1300))));
    }
    faults
}

fn schedule(tier: Tier, seed: u64) -> Vec<Fault> {
    match tier {
        Tier::Graceful => graceful_schedule(seed, 8),
        // Joins and leaves belong to the graceful tier: the crash tier is about losses.
        Tier::Crashes => Schedule::random_healthy(seed, NODES, 8)
            .faults
            .into_iter()
            .filter(|f| !matches!(f, Fault::Declare(_)))
            .collect(),
        Tier::Faults => Schedule::random(seed, NODES, 8).faults,
    }
}

/// Applies one fault, with traffic running through it: a leave drains while messages
/// flow (the handoffs it causes are what the graceful tier is about).
fn apply(tier: Tier, sim: &mut Sim, traffic: &mut Traffic, fault: &Fault) {
    match fault {
        Fault::Wait(d) => traffic.run(sim, *d, |_| false),
        Fault::Leave(i) => {
            let i = *i;
            let draining = sim.with_node(i, |node, now| node.set_draining(now, true).is_ok());
            if draining != Some(true) {
                return;
            }
            // As the runtime does, a leave waits for the instances here to end and for
            // their handoffs to finish (within its drain timeout). In the crash tier the
            // drain timeout runs out as soon as the last instance here is handing over:
            // the leave goes on without its state.
            let hasty = tier == Tier::Crashes;
            traffic.run(sim, DRAIN_WITHIN, |sim| {
                let done = sim.node(i).is_none_or(|n| n.is_idle())
                    && sim.workers(i).is_empty()
                    && sim.is_handing_off(i) != Some(true);
                let cut_short =
                    hasty && sim.workers(i).len() <= 1 && sim.is_handing_off(i) == Some(true);
                done || cut_short
            });
            if sim.is_handing_off(i) == Some(true) {
                traffic.abandoned.push(Abandoned {
                    host: i,
                    at: sim.now(),
                    ids: sim.workers(i).keys().cloned().collect(),
                });
                sim.abandon_handoffs(i);
            }
            sim.with_node(i, |node, now| node.leave(now).is_ok());
        }
        fault => Schedule {
            nodes: NODES,
            faults: vec![fault.clone()],
        }
        .apply(sim),
    }
}

fn is_refusal(result: &Result<Vec<u8>, CallFailure>) -> bool {
    matches!(
        result,
        Err(CallFailure::Overloaded
            | CallFailure::Full
            | CallFailure::Remote(RemoteError::Overloaded))
    )
}

/// Judges what messaging did against the tier's promises.
fn judge(
    tier: Tier,
    log: &MessagingLog,
    sim: &Sim,
    abandoned: &[Abandoned],
    figures: &mut Figures,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut handlings: BTreeMap<&MessageKey, u64> = BTreeMap::new();
    for handled in &log.handled {
        *handlings.entry(&handled.key).or_default() += 1;
    }
    figures.handled += log.handled.len() as u64;
    figures.duplicates_handled += handlings.values().map(|n| n - 1).sum::<u64>();
    figures.handoffs += log.handed_over.len() as u64;
    figures.dropped_reported += log.dropped.len() as u64;
    figures.transmits_refused += log.refused_transmits;
    figures.handoffs_abandoned += abandoned.len() as u64;
    figures.casts += log.casts.len() as u64;
    if log.stray_outcomes > 0 {
        problems.push(format!(
            "{} outcomes for calls nobody made",
            log.stray_outcomes
        ));
    }
    for ((host, incarnation, _), call) in &log.calls {
        figures.calls += 1;
        let caller_stopped = log
            .stopped
            .get(&(*host, *incarnation))
            .is_some_and(|&at| at <= call.deadline + CLOCK_SLACK);
        let times = handlings.get(&call.key).copied().unwrap_or(0);
        let what = || {
            format!(
                "call {:?} (made at {:?}, deadline {:?}, handled {times} times)",
                call.key, call.made_at, call.deadline
            )
        };
        match call.outcomes.as_slice() {
            [] if caller_stopped || call.caller_paused => {}
            [] => problems.push(format!("{} got no outcome", what())),
            [(at, result)] => {
                if *at > call.deadline + CLOCK_SLACK && !call.caller_paused {
                    problems.push(format!("{} got its outcome late, at {at:?}", what()));
                }
                match result {
                    Ok(answer) => {
                        figures.answered += 1;
                        if *answer != call.payload {
                            problems.push(format!("{} got another call's answer", what()));
                        }
                        if times == 0 {
                            problems.push(format!("{} was answered but never handled", what()));
                        }
                        if tier == Tier::Graceful && times != 1 {
                            problems
                                .push(format!("{} was answered but handled {times} times", what()));
                        }
                    }
                    Err(CallFailure::Timeout) => {
                        figures.timeouts += 1;
                        if tier == Tier::Graceful {
                            problems.push(format!("{} timed out in a graceful move", what()));
                        }
                    }
                    result if is_refusal(result) => {
                        figures.refused += 1;
                        if tier == Tier::Graceful && times != 0 {
                            problems.push(format!("{} was refused after being handled", what()));
                        }
                    }
                    Err(e) => {
                        figures.other_errors += 1;
                        if tier != Tier::Faults {
                            problems.push(format!("{} failed: {e}", what()));
                        }
                    }
                }
            }
            more => problems.push(format!("{} got {} outcomes: {more:?}", what(), more.len())),
        }
    }
    // A leave cut short (its drain timeout ran out mid-handoff) loses the state, but never
    // in silence: the next instance of each child it was handing over starts with a state
    // (one given in time after all, or a conflict merged), or the loss is reported.
    for cut in abandoned {
        for id in &cut.ids {
            let Some(next) = log.began.iter().find(|b| b.at >= cut.at && b.id == *id) else {
                continue;
            };
            let merged = log
                .merged
                .iter()
                .any(|m| m.host == next.host && m.id == next.id && m.instance == next.instance);
            let reported = log
                .dropped
                .iter()
                .any(|d| d.at >= cut.at && d.what == Dropped::State && d.id.as_ref() == Some(id));
            if next.handed.is_none() && !merged && !reported {
                problems.push(format!(
                    "{next:?} started fresh after n{} left mid-handoff at {:?}, and no loss was reported",
                    cut.host, cut.at
                ));
            }
        }
    }
    if tier != Tier::Graceful {
        return problems;
    }
    // Graceful moves: each message at most once, in each sender's order, no cast lost in
    // silence, no state lost.
    for (key, times) in &handlings {
        if *times > 1 {
            problems.push(format!("{key:?} was handled {times} times"));
        }
    }
    let mut last_seq: BTreeMap<(usize, u64, &ChildId), (u64, solo_core::InstanceId)> =
        BTreeMap::new();
    for handled in &log.handled {
        let key = &handled.key;
        let last = last_seq
            .entry((key.sender, key.incarnation, &key.target))
            .or_insert((0, handled.instance));
        if key.seq <= last.0 {
            problems.push(format!(
                "n{} handled {key:?} on instance {} at {:?} after seq {} (instance {})",
                handled.host, handled.instance, handled.at, last.0, last.1
            ));
        }
        *last = (key.seq.max(last.0), handled.instance);
    }
    for target in TARGETS.map(id) {
        let accepted = log
            .casts
            .iter()
            .filter(|c| c.key.target == target && c.accepted.is_ok())
            .count() as u64;
        let handled = log
            .handled
            .iter()
            .filter(|h| !h.call && h.key.target == target)
            .count() as u64;
        let reported = log
            .dropped
            .iter()
            .filter(|d| d.what == Dropped::Cast && d.id.as_ref() == Some(&target))
            .count() as u64;
        if accepted != handled + reported {
            problems.push(format!(
                "{target}: {accepted} casts accepted, {handled} handled, {reported} reported dropped"
            ));
        }
        let all_handled = log
            .handled
            .iter()
            .filter(|h| h.key.target == target)
            .count() as u64;
        let counts: Vec<u64> = (0..sim.len())
            .filter_map(|i| sim.actor_count(i, &target))
            .collect();
        if counts != [all_handled] {
            problems.push(format!(
                "{target} handled {all_handled} messages in all its lives, its running instances count {counts:?}"
            ));
        }
    }
    for began in &log.began {
        let merged = log
            .merged
            .iter()
            .any(|m| m.host == began.host && m.id == began.id && m.instance == began.instance);
        if began.handoff_from.is_some() && began.handed.is_none() && !merged {
            problems.push(format!(
                "{began:?} was to be handed a state and started fresh"
            ));
        }
    }
    problems
}

/// Once the faults are over: every call answered, nothing left pending or held.
fn check_recovery(sim: &mut Sim, traffic: &mut Traffic, problems: &mut Vec<String>) {
    if sim
        .run_until(Duration::from_secs(20), Sim::converged)
        .is_none()
    {
        problems.push("membership did not converge".into());
        return;
    }
    // Ownership settles and what was cut off finds its way or times out.
    traffic.run(sim, CALL_TIMEOUT + Duration::from_secs(1), |_| false);
    let before = sim.take_messaging_log();
    drop(before);
    let running: Vec<usize> = (0..sim.len()).filter(|&i| sim.is_running(i)).collect();
    for &i in &running {
        for target in TARGETS.map(id) {
            sim.call(i, &target, CALL_TIMEOUT, 8);
        }
    }
    sim.run_for(CALL_TIMEOUT + CLOCK_SLACK);
    for call in sim.messaging_log().calls.values() {
        match call.outcomes.as_slice() {
            [(_, Ok(answer))] if *answer == call.payload => {}
            other => problems.push(format!("after healing, call {:?} got {other:?}", call.key)),
        }
    }
    // Casts wait at most `cast_wait`, early states `handoff_timeout`, the journal
    // `dedupe_window`: all 5 s or less by default.
    let quiet = |sim: &Sim| {
        (0..sim.len()).all(|i| {
            sim.messaging_stats(i)
                .is_none_or(|s| s.pending_calls == 0 && s.held_bytes == 0)
        })
    };
    if sim.run_until(Duration::from_secs(10), quiet).is_none() {
        for i in 0..sim.len() {
            if let Some(stats) = sim.messaging_stats(i) {
                problems.push(format!("after healing, n{i} still has {stats:?}"));
            }
        }
    }
}

fn check_seed(seed: u64, tier: Tier, sabotage: bool, log: bool) -> Result<Figures, String> {
    let mut sim = Sim::new(seed, config(tier, sabotage, log));
    for _ in 0..NODES {
        sim.add_node();
    }
    let faults = schedule(tier, seed);
    let mut traffic = Traffic {
        rng: Rng::new(seed ^ 0x7AFF_1C00),
        problems: Vec::new(),
        abandoned: Vec::new(),
    };
    // The cluster forms and the singletons start before traffic does.
    sim.run_for(Duration::from_millis(500));
    for fault in &faults {
        apply(tier, &mut sim, &mut traffic, fault);
        if !traffic.problems.is_empty() {
            break;
        }
    }
    let mut figures = Figures {
        schedules: 1,
        ..Figures::default()
    };
    let mut problems = std::mem::take(&mut traffic.problems);
    if problems.is_empty() {
        // Traffic stops; what is open resolves.
        sim.run_for(CALL_TIMEOUT + Duration::from_secs(1));
        // Outcomes so far are judged before recovery (faults tier) takes the log.
        problems.extend(judge(
            tier,
            sim.messaging_log(),
            &sim,
            &traffic.abandoned,
            &mut figures,
        ));
        if tier == Tier::Faults {
            sim.end_faults();
            check_recovery(&mut sim, &mut traffic, &mut problems);
            problems.append(&mut traffic.problems);
        }
    }
    if problems.is_empty() {
        return Ok(figures);
    }
    problems.truncate(20);
    Err(format!(
        "{}\nschedule: {faults:?}\nhistory tail:\n{}",
        problems.join("\n"),
        sim.history_tail(env_u64("SOLO_HISTORY_LINES").unwrap_or(120) as usize)
    ))
}

fn replay_command(seed: u64, tier: Tier) -> String {
    format!(
        "SOLO_MESSAGING_SEED={seed} SOLO_MESSAGING_TIER={} cargo test -p solo-core --features testing --test messaging_sim replay -- --nocapture",
        tier.name()
    )
}

fn sweep(tier: Tier) {
    let seeds = env_u64("SOLO_MESSAGING_SEEDS").unwrap_or(CI_SEEDS);
    let start = env_u64("SOLO_MESSAGING_SEED_START").unwrap_or(0);
    // Wall time, for the schedules-per-second figure only.
    #[allow(clippy::disallowed_methods)]
    let began = Instant::now();
    let mut total = Figures::default();
    for seed in start..seeds {
        match check_seed(seed, tier, false, false) {
            Ok(figures) => total.add(&figures),
            Err(_) => {
                let why = match check_seed(seed, tier, false, true) {
                    Err(why) => why,
                    Ok(_) => "failed, then passed with history on (non-determinism)".into(),
                };
                fail_seed(seed, &why, &replay_command(seed, tier));
            }
        }
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{} tier: {} schedules in {secs:.1} s ({:.1} schedules/s), 0 violations; {total:?}",
        tier.name(),
        total.schedules,
        total.schedules as f64 / secs.max(1e-9),
    );
}

#[test]
fn graceful_moves_handle_each_message_exactly_once_in_order_and_keep_state() {
    sweep(Tier::Graceful);
}

#[test]
fn across_crashes_every_call_gets_one_outcome_and_answers_were_handled() {
    sweep(Tier::Crashes);
}

#[test]
fn under_faults_every_call_gets_one_outcome_in_time_and_nothing_stays_held() {
    sweep(Tier::Faults);
}

#[test]
fn replay() {
    let Some(seed) = env_u64("SOLO_MESSAGING_SEED") else {
        return;
    };
    let tier = std::env::var("SOLO_MESSAGING_TIER")
        .ok()
        .and_then(|t| Tier::from_name(&t))
        .unwrap_or(Tier::Graceful);
    match check_seed(seed, tier, false, true) {
        Ok(figures) => println!("seed {seed} holds ({figures:?})"),
        Err(why) => fail_seed(seed, &why, &replay_command(seed, tier)),
    }
}

/// The checker itself is tested: messengers that forget the messages held while an
/// instance hands over must be caught.
#[test]
fn a_build_that_forgets_held_messages_is_caught() {
    let caught = (0..20)
        .filter(|&seed| check_seed(seed, Tier::Graceful, true, false).is_err())
        .count();
    assert!(caught > 0, "the sabotaged build passed every seed");
    println!("the sabotaged build failed {caught} of 20 seeds");
}
