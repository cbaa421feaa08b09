//! Testing your own worker under partitions, in your own CI.
//!
//! ```sh
//! cargo run -p solo-sim --example partitioned_worker
//! ```
//!
//! The worker below counts "ticks" into shared state while it runs. The simulation splits a
//! 5-node cluster, lets both sides run (each side starts its own copy: `Available` mode),
//! heals it, and checks that exactly one copy runs afterwards, for several seeds. Everything
//! is deterministic: a failing seed replays exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use solo::{WorkerContext, WorkerError};
use solo_sim::{Sim, check};

/// Your worker: here, one tick every 100 ms of (simulated) time into a shared counter.
#[derive(Clone)]
struct Ticker {
    ticks: Arc<AtomicU64>,
}

impl solo::Worker for Ticker {
    fn run(
        &self,
        ctx: WorkerContext,
    ) -> impl std::future::Future<Output = Result<(), WorkerError>> + Send + 'static {
        let ticks = Arc::clone(&self.ticks);
        async move {
            loop {
                tokio::select! {
                    () = ctx.shutdown() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for seed in 0..5 {
        let ticks = Arc::new(AtomicU64::new(0));
        let mut sim = Sim::builder()
            .nodes(5)
            .seed(seed)
            .worker(
                "ticker",
                Ticker {
                    ticks: Arc::clone(&ticks),
                },
            )
            .singleton_of("billing", ["ticker"])
            .build();
        sim.run_for(Duration::from_secs(2))?;
        sim.partition(&[0, 1], &[2, 3, 4]);
        sim.run_for(Duration::from_secs(5))?;
        let during = check::running_at_end(&sim.history())["billing"].len();
        sim.repair_all();
        sim.run_for(Duration::from_secs(10))?;
        let history = sim.history();
        let after = check::running_at_end(&history)["billing"].len();
        println!(
            "seed {seed}: {during} copies during the split, {after} after healing, {} ticks",
            ticks.load(Ordering::Relaxed)
        );
        if after != 1 {
            eprintln!("{}", check::excerpt(&history, "billing"));
            return Err(format!("seed {seed}: {after} copies after healing").into());
        }
    }
    Ok(())
}
