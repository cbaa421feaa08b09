//! Flood bench: one node casts to a slow actor on another as fast as it can, for 60 s, and
//! the figures say whether memory stayed bounded and whether every cast is accounted for.
//!
//! ```sh
//! cargo bench -p solo --bench flood                  # 60 s
//! FLOOD_SECS=5 cargo bench -p solo --bench flood     # a short run
//! ```
//!
//! Two `Cluster` nodes in this one process, over TCP on 127.0.0.1: `sink` runs the actor
//! `slow` (its `handle_cast` sleeps 200 µs, so it takes at most a few thousand casts a second),
//! `flooder` is an observer whose task calls [`Cluster::try_send`] in a loop, yielding to the
//! runtime after each refusal. The casts the flooder's node took (`Ok`) must all be either
//! handled by the actor, or refused by the sink's full mailbox, or dropped by the flooder's
//! node after waiting for room (both reported as `MessageDropped` events and counted in
//! `Cluster::messaging_stats`): the bench checks that the sum is exact once the actor has
//! drained, and fails if not.
//!
//! Reported: casts accepted, refused at once (`CallError::Full`), handled, refused by the
//! mailbox, dropped at the sender; the most bytes either node held for others
//! (sampled every 100 ms); the process's peak RSS (`VmHWM`: both nodes and the bench itself).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use solo::{Actor, CallError, ChildId, Cluster, WorkerContext, WorkerError};

/// Casts the actor handled, in this process.
static HANDLED: AtomicU64 = AtomicU64::new(0);

struct Slow;

impl Actor for Slow {
    type Call = ();
    type Reply = ();
    type Cast = u64;
    type State = ();

    async fn start(_: &WorkerContext, _: Option<()>) -> Result<Self, WorkerError> {
        Ok(Slow)
    }

    async fn handle_call(&mut self, (): (), _: &WorkerContext) -> Result<(), WorkerError> {
        Ok(())
    }

    async fn handle_cast(&mut self, _: u64, _: &WorkerContext) -> Result<(), WorkerError> {
        tokio::time::sleep(Duration::from_micros(200)).await;
        HANDLED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(flood());
}

async fn flood() {
    let secs: u64 = std::env::var("FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let builder = |name: &str| {
        Cluster::builder()
            .node_name(name)
            .listen("127.0.0.1:0".parse().expect("an address"))
            .cookie("flood-bench-cookie-4kQ9")
    };
    let sink = builder("sink")
        .actor::<Slow>("slow")
        .start()
        .await
        .expect("sink starts");
    let flooder = builder("flooder")
        .observer()
        .seeds([sink.local_addr()])
        .start()
        .await
        .expect("flooder starts");
    sink.singleton(&"slow".parse().expect("id"), ["slow"])
        .await
        .expect("declared");
    let slow: ChildId = "slow".parse().expect("a name");
    let started = Instant::now();
    while flooder
        .call::<_, ()>(&slow, &(), Duration::from_secs(1))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the actor never answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("flooding for {secs} s");

    // Stopped by the flag, not aborted: an aborted task's answer is lost.
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampling = {
        let (sink, flooder) = (sink.clone(), flooder.clone());
        let stop = Arc::clone(&stop_sampling);
        tokio::spawn(async move {
            let mut most = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let (Ok(s), Ok(f)) = (
                    sink.messaging_stats().await,
                    flooder.messaging_stats().await,
                ) else {
                    return most;
                };
                most = (most.0.max(s.held_bytes), most.1.max(f.held_bytes));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            most
        })
    };

    let (mut accepted, mut full) = (0_u64, 0_u64);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut seq = 0_u64;
    while Instant::now() < until {
        seq += 1;
        match flooder.try_send(&slow, &seq).await {
            Ok(()) => accepted += 1,
            Err(CallError::Full) => {
                full += 1;
                tokio::task::yield_now().await;
            }
            Err(other) => panic!("cast failed: {other}"),
        }
    }
    eprintln!("flood over; waiting for the actor to drain");

    // Drained: the counts stop moving (bounded: at most 120 s).
    let mut last = (u64::MAX, u64::MAX);
    let mut settled = None;
    for _ in 0..1_200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = sink.messaging_stats().await.expect("sink up");
        let f = flooder.messaging_stats().await.expect("flooder up");
        let now = (HANDLED.load(Ordering::Relaxed), s.dropped + f.dropped);
        if now == last && s.held_bytes == 0 && f.held_bytes == 0 {
            settled = Some((s, f));
            break;
        }
        last = now;
    }
    let (s, f) = settled.expect("the counts settle within 120 s");
    let handled = HANDLED.load(Ordering::Relaxed);
    stop_sampling.store(true, Ordering::Relaxed);
    let peak_held = sampling.await.expect("the sampler ends");
    let rss = peak_rss_kib().map_or("unknown".into(), |k| {
        format!("{:.1} MiB", k as f64 / 1024.0)
    });

    println!("| flood, {secs} s | value |");
    println!("|---|---:|");
    println!("| casts accepted by the flooder's node | {accepted} |");
    println!("| refused at once (`CallError::Full`) | {full} |");
    println!("| handled by the actor | {handled} |");
    println!(
        "| refused by the full mailbox (sink, reported) | {} |",
        s.dropped
    );
    println!(
        "| dropped after waiting for room (flooder, reported) | {} |",
        f.dropped
    );
    println!(
        "| most bytes held for others, sink / flooder | {} / {} |",
        peak_held.0, peak_held.1
    );
    println!("| peak RSS of the process | {rss} |");
    let accounted = handled + s.dropped + f.dropped;
    assert_eq!(
        accepted, accounted,
        "every cast accepted is handled or reported: {accepted} accepted, {accounted} accounted"
    );
    flooder.leave().await;
    sink.leave().await;
}
