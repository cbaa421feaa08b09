//! Three nodes in one process, an actor singleton reached through its typed handle, and a
//! crash of the node that runs it: the next call waits for the new owner and completes there.
//!
//! ```sh
//! cargo run -p solo --example actor_ref
//! ```

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use solo::{Actor, ActorRef, ChildId, Cluster, Handoff, WorkerContext, WorkerError};

/// A counter that moves with its count when it moves on purpose.
struct Counter(u64);

#[derive(Serialize, Deserialize)]
enum Op {
    Get,
    Add(u64),
}

impl Actor for Counter {
    type Call = Op;
    type Reply = u64;
    type Cast = u64;
    type State = u64;

    async fn start(_: &WorkerContext, handed_over: Option<u64>) -> Result<Self, WorkerError> {
        Ok(Counter(handed_over.unwrap_or(0)))
    }

    async fn handle_call(&mut self, op: Op, _: &WorkerContext) -> Result<u64, WorkerError> {
        if let Op::Add(n) = op {
            self.0 += n;
        }
        Ok(self.0)
    }

    async fn handle_cast(&mut self, n: u64, _: &WorkerContext) -> Result<(), WorkerError> {
        self.0 += n;
        Ok(())
    }

    async fn begin_handoff(&mut self, _: &WorkerContext) -> Handoff<u64> {
        Handoff::Resume(self.0)
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cookie = "an example cookie, 16 bytes or more";
    let mut nodes: Vec<Cluster> = Vec::new();
    for name in ["a", "b", "c"] {
        let node = Cluster::builder()
            .node_name(name)
            .listen("127.0.0.1:0".parse()?)
            .seeds(nodes.iter().map(Cluster::local_addr))
            .cookie(cookie)
            .actor::<Counter>("counter") // a kind this node can run
            .start()
            .await?;
        nodes.push(node);
    }
    let name: ChildId = "count".parse()?;
    for node in &nodes {
        node.singleton(&name, ["counter"]).await?; // every node declares the same singleton
    }
    // Wait until the three agree on one owner (a few milliseconds on loopback).
    let owner = loop {
        let mut owners = Vec::new();
        for node in &nodes {
            owners.push(node.whereis(&name).await?);
        }
        if nodes[0].members().await?.len() == 3
            && owners[0].is_some()
            && owners.iter().all(|o| *o == owners[0])
        {
            break owners[0].clone().ok_or("no owner")?;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("count runs on {owner}");

    // A typed handle, from any node: `Op` in, `u64` out.
    let caller = nodes
        .iter()
        .find(|n| *n.id() != owner)
        .ok_or("no other node")?;
    let count: ActorRef<Counter> = caller.actor_ref(&name);
    count.send(&5).await?;
    let total = count.call(&Op::Add(1), TIMEOUT).await?;
    println!("count is {total}");

    // A crash hands nothing over: the count starts again on the new owner.
    let victim = nodes
        .iter()
        .find(|n| *n.id() == owner)
        .ok_or("no owner node")?;
    let crashed_at = Instant::now();
    victim.crash().await;
    let after = count.call(&Op::Get, TIMEOUT).await?;
    let new_owner = count.whereis().await?.ok_or("no new owner")?;
    println!(
        "{} crashed; count answered {after} from {new_owner} {:.1} ms later",
        owner.name,
        crashed_at.elapsed().as_secs_f64() * 1e3
    );
    for node in &nodes {
        if *node.id() != owner {
            node.leave().await;
        }
    }
    Ok(())
}
