//! False failure verdicts under load: three real `solo-node` processes (release build) on
//! 127.0.0.1 while this machine is saturated, for a fixed time. Nobody is stopped, so every
//! `member_down` one node gives about another is false.
//!
//! ```sh
//! cargo bench -p tests --bench false_downs            # 10 minutes
//! cargo bench -p tests --bench false_downs -- 60      # 60 seconds
//! ```
//!
//! The load, all at once:
//!
//! * a CPU hog: one busy thread per core, at the nodes' own priority;
//! * calls: a `solo-node call` after another through the cluster to its singleton (each one a
//!   process that joins as an observer, calls, and leaves: membership churn as well as
//!   traffic);
//! * the calls bench (`cargo bench -p solo --bench calls`, in-process clusters of its own
//!   hammering calls), over and over, if `SOLO_LOAD_CALLS_BENCH=1`.
//!
//! Reported: `member_down`, `member_suspect` and `member_refuted` events among the three
//! nodes, and the calls made and failed.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tests::{Node, call, cluster_specs, dump_all, solo_node_binary, wait_full_mesh};

const SINGLETON: &str = "roar";
const MESH: Duration = Duration::from_secs(20);
const NAMES: [&str; 3] = ["n1", "n2", "n3"];

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(600);
    let run_for = Duration::from_secs(seconds);
    let binary = solo_node_binary(true);
    let specs = cluster_specs(3, "false-downs", &[SINGLETON]);
    let through = specs[0].clone();
    let nodes: Vec<Node> = specs
        .into_iter()
        .map(|spec| Node::start(&binary, spec))
        .collect();
    if !wait_full_mesh(&nodes, MESH) {
        eprintln!("no full mesh:\n{}", dump_all(&nodes));
        std::process::exit(1);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let hogs: Vec<_> = (0..cores)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x: u64 = 1;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..100_000 {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let (made, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let caller = {
        let (stop, made, failed) = (Arc::clone(&stop), Arc::clone(&made), Arc::clone(&failed));
        let failures = Arc::clone(&failures);
        let binary = binary.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                made.fetch_add(1, Ordering::Relaxed);
                if let Err(why) = call(&binary, &through, SINGLETON, "get", Duration::from_secs(5))
                {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut failures) = failures.lock() {
                        failures.push(why.lines().last().unwrap_or_default().to_owned());
                    }
                }
            }
        })
    };
    let calls_bench = std::env::var("SOLO_LOAD_CALLS_BENCH").is_ok_and(|v| v == "1");
    let started = Instant::now();
    let mut bench: Option<Child> = None;
    let mut bench_runs = 0u32;
    while started.elapsed() < run_for {
        if calls_bench
            && bench
                .as_mut()
                .is_none_or(|b| b.try_wait().ok().flatten().is_some())
        {
            bench_runs += 1;
            bench = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["bench", "-q", "-p", "solo", "--bench", "calls"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(mut bench) = bench {
        let _ = bench.kill();
        let _ = bench.wait();
    }
    for hog in hogs {
        let _ = hog.join();
    }
    let _ = caller.join();

    let among_nodes = |event: &str| -> Vec<String> {
        nodes
            .iter()
            .flat_map(|n| {
                let seen = n.seen.lock().map(|s| s.clone()).unwrap_or_default();
                seen.into_iter()
                    .filter(|e| e.event == event)
                    .filter_map(|e| {
                        let member = e.field("member")?.to_owned();
                        let name = member.split('#').next()?;
                        NAMES
                            .contains(&name)
                            .then(|| format!("{} {event} {member} at {}", n.spec.name, e.ts_us))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let downs = among_nodes("member_down");
    let suspects = among_nodes("member_suspect");
    let refuted = among_nodes("member_refuted");
    println!(
        "{seconds} s under load ({cores} busy threads, {} calls through the cluster, {} failed{}):",
        made.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        if calls_bench {
            format!(", the calls bench {bench_runs} times")
        } else {
            String::new()
        }
    );
    println!(
        "false member_down: {}, member_suspect: {}, member_refuted: {}",
        downs.len(),
        suspects.len(),
        refuted.len()
    );
    for line in downs.iter().chain(&suspects).take(20) {
        println!("  {line}");
    }
    for why in failures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default()
        .iter()
        .take(5)
    {
        println!("  a call failed: {why}");
    }
}
