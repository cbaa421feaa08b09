//! Failover bench: real `solo-node` processes (release build), 3 nodes on 127.0.0.1, a fresh
//! cluster per trial.
//!
//! ```sh
//! cargo bench -p tests --bench failover          # 20 trials per scenario
//! cargo bench -p tests --bench failover -- 50    # 50 trials per scenario
//! cargo bench -p tests --bench failover -- --transport quic   # or tls; default tcp
//! cargo bench -p tests --bench failover -- --exclusive        # an Exclusive singleton
//! cargo bench -p tests --bench failover -- --exclusive --crash-evidence
//! ```
//!
//! With `--exclusive` the singleton is `Exclusive` (all three nodes are voters): a crashed
//! or frozen owner is replaced once its lease ran out (`lease_duration`, 2 s by default),
//! a graceful one as soon as it released its lease. With `--crash-evidence` too
//! (`solo-node --crash-evidence`), a killed owner's lease is freed as soon as its port
//! refuses the voters' dial.
//!
//! * `SIGKILL`: from just before the owner is sent SIGKILL (the bench's clock) to the new
//!   owner's `worker_started` (its `ts_us`).
//! * `SIGSTOP`: the same for a silent failure (a frozen process), default settings.
//! * `SIGTERM gap`: from the old owner's `worker_stopped` to the new owner's
//!   `worker_started`, both by their `ts_us`; negative when the new instance started before
//!   the old one had ended (an overlap).
//!
//! Every wait is bounded; a trial that times out is counted and reported as such.

use std::time::Duration;

use tests::{
    Node, NodeEvent, WireKind, cluster_specs, dump_all, exclusive_flags, now_us, settled_owner,
    solo_node_binary, use_wire, wait_any, wait_full_mesh,
};

const SINGLETON: &str = "bench";
const MESH: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(20);
const FORM_ATTEMPTS: usize = 3;

/// What every trial runs on.
#[derive(Clone, Copy)]
struct Setup {
    wire: WireKind,
    exclusive: bool,
    crash_evidence: bool,
}

/// How one trial ended.
enum Outcome {
    /// The measured value, in microseconds (signed).
    Value(i64),
    /// The measurement did not complete in time: what was missing.
    Timeout(String),
    /// No cluster could be formed and settled for this trial.
    NoCluster,
}

/// The results of one scenario.
struct Scenario {
    name: &'static str,
    outcomes: Vec<Outcome>,
}

fn is_start(e: &NodeEvent, after_us: u64) -> bool {
    e.event == "worker_started" && e.field("name") == Some(SINGLETON) && e.ts_us >= after_us
}

fn signed_us(later: u64, earlier: u64) -> i64 {
    i64::try_from(later).unwrap_or(i64::MAX) - i64::try_from(earlier).unwrap_or(i64::MAX)
}

/// A fresh 3-node cluster with a full mesh and a settled owner; the second value counts
/// attempts that did not form (reported, since solo-node can miss a `member_up`).
fn fresh_cluster(
    binary: &std::path::PathBuf,
    setup: Setup,
    misses: &mut usize,
) -> Option<(Vec<Node>, usize)> {
    for _ in 0..FORM_ATTEMPTS {
        let singletons: &[&str] = if setup.exclusive { &[] } else { &[SINGLETON] };
        let mut specs = cluster_specs(3, "failover-bench", singletons);
        if setup.exclusive {
            for spec in &mut specs {
                spec.extra = exclusive_flags(&["n1", "n2", "n3"], SINGLETON);
                if setup.crash_evidence {
                    spec.extra.push("--crash-evidence".to_owned());
                }
            }
        }
        use_wire(binary, &mut specs, setup.wire);
        let nodes: Vec<Node> = specs
            .into_iter()
            .map(|spec| Node::start(binary, spec))
            .collect();
        if !wait_full_mesh(&nodes, MESH) {
            *misses += 1;
            eprintln!(
                "  cluster did not report a full mesh:\n{}",
                dump_all(&nodes)
            );
            continue;
        }
        if let Some(owner) = settled_owner(&nodes, SINGLETON, SETTLE) {
            return Some((nodes, owner));
        }
        *misses += 1;
        eprintln!(
            "  cluster did not settle on an owner:\n{}",
            dump_all(&nodes)
        );
    }
    None
}

/// Signals the owner and waits for another node to start the singleton.
fn failover(
    binary: &std::path::PathBuf,
    setup: Setup,
    signal: &str,
    bound: Duration,
    misses: &mut usize,
) -> Outcome {
    let Some((nodes, owner)) = fresh_cluster(binary, setup, misses) else {
        return Outcome::NoCluster;
    };
    let others: Vec<&Node> = (0..nodes.len())
        .filter(|&i| i != owner)
        .map(|i| &nodes[i])
        .collect();
    let signalled_at = now_us();
    nodes[owner].signal(signal);
    match wait_any(&others, bound, |e| is_start(e, signalled_at)) {
        Some((_, started)) => Outcome::Value(signed_us(started.ts_us, signalled_at)),
        None => Outcome::Timeout(format!(
            "no worker_started within {} s of SIG{signal}",
            bound.as_secs()
        )),
    }
    // Dropping the nodes SIGCONTs and SIGKILLs every process.
}

/// SIGTERMs the owner and measures the handover gap.
fn handover(binary: &std::path::PathBuf, setup: Setup, misses: &mut usize) -> Outcome {
    let Some((mut nodes, owner)) = fresh_cluster(binary, setup, misses) else {
        return Outcome::NoCluster;
    };
    let signalled_at = now_us();
    nodes[owner].signal("TERM");
    let bound = Duration::from_secs(10);
    let exited = nodes[owner].exit_status(bound);
    let stopped = nodes[owner].wait_seen(Duration::from_secs(2), |e| {
        e.event == "worker_stopped" && e.field("name") == Some(SINGLETON) && e.ts_us >= signalled_at
    });
    let others: Vec<&Node> = (0..nodes.len())
        .filter(|&i| i != owner)
        .map(|i| &nodes[i])
        .collect();
    let started = wait_any(&others, bound, |e| is_start(e, signalled_at));
    match (exited, stopped, started) {
        (None, _, _) => Outcome::Timeout("the owner did not exit within 10 s of SIGTERM".into()),
        (Some(status), _, _) if !status.success() => {
            Outcome::Timeout(format!("the owner exited with {status} after SIGTERM"))
        }
        (_, None, _) => Outcome::Timeout("the owner never printed worker_stopped".into()),
        (_, _, None) => Outcome::Timeout("no other node printed worker_started".into()),
        (_, Some(stopped), Some((_, started))) => {
            Outcome::Value(signed_us(started.ts_us, stopped.ts_us))
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: i64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let trials = args
        .iter()
        .find_map(|arg| arg.parse::<usize>().ok())
        .unwrap_or(20)
        .max(1);
    let wire = match args
        .iter()
        .position(|a| a == "--transport")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
    {
        None | Some("tcp") => WireKind::Tcp,
        Some("tls") => WireKind::Tls,
        Some("quic") => WireKind::Quic,
        Some(other) => {
            eprintln!("--transport {other:?}: expected tcp, tls or quic");
            std::process::exit(2);
        }
    };
    let setup = Setup {
        wire,
        exclusive: args.iter().any(|a| a == "--exclusive"),
        crash_evidence: args.iter().any(|a| a == "--crash-evidence"),
    };
    eprintln!("building solo-node (release)…");
    let binary = solo_node_binary(true);
    let mut scenarios = [
        Scenario {
            name: "SIGKILL -> new worker_started",
            outcomes: Vec::new(),
        },
        Scenario {
            name: "SIGSTOP -> new worker_started",
            outcomes: Vec::new(),
        },
        Scenario {
            name: "SIGTERM: old stopped -> new started",
            outcomes: Vec::new(),
        },
    ];
    let mut misses = 0;
    for trial in 1..=trials {
        let outcomes = [
            failover(&binary, setup, "KILL", Duration::from_secs(10), &mut misses),
            failover(&binary, setup, "STOP", Duration::from_secs(30), &mut misses),
            handover(&binary, setup, &mut misses),
        ];
        let line: Vec<String> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Value(us) => format!("{} ms", ms(*us)),
                Outcome::Timeout(_) => "timeout".into(),
                Outcome::NoCluster => "no cluster".into(),
            })
            .collect();
        eprintln!(
            "trial {trial:>3}/{trials}: kill {}, stop {}, term gap {}",
            line[0], line[1], line[2]
        );
        for (scenario, outcome) in scenarios.iter_mut().zip(outcomes) {
            if let Outcome::Timeout(what) = &outcome {
                eprintln!("  {}: {what}", scenario.name);
            }
            scenario.outcomes.push(outcome);
        }
    }

    println!();
    println!(
        "failover over {wire:?}{}, 3 solo-node processes (release) on 127.0.0.1, {trials} trials \
         each, ms",
        if setup.exclusive {
            ", Exclusive singleton (lease 2 s)"
        } else {
            ""
        }
    );
    println!(
        "{:<37} {:>4} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "ok", "timeouts", "median", "p99", "min", "max"
    );
    for scenario in &scenarios {
        let mut values: Vec<i64> = scenario
            .outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Value(us) => Some(*us),
                _ => None,
            })
            .collect();
        values.sort_unstable();
        let timeouts = scenario
            .outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Timeout(_)))
            .count();
        let no_cluster = scenario
            .outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::NoCluster))
            .count();
        let stats = if values.is_empty() {
            [
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
            ]
        } else {
            [
                ms(percentile(&values, 50.0)),
                ms(percentile(&values, 99.0)),
                ms(values[0]),
                ms(values[values.len() - 1]),
            ]
        };
        println!(
            "{:<37} {:>4} {:>8} {:>9} {:>9} {:>9} {:>9}{}",
            scenario.name,
            values.len(),
            timeouts,
            stats[0],
            stats[1],
            stats[2],
            stats[3],
            if no_cluster > 0 {
                format!("  ({no_cluster} trials without a cluster)")
            } else {
                String::new()
            }
        );
    }
    println!(
        "p99 is nearest-rank (with fewer than 100 trials, the maximum); a negative SIGTERM gap \
         means the new instance started before the old one had ended."
    );
    if misses > 0 {
        println!(
            "{misses} fresh cluster(s) did not report a full mesh or settle and were replaced \
             (see stderr)."
        );
    }
}
