//! Helpers shared by the facade's in-process tests.
// Each test binary uses some of them.
#![allow(dead_code)]

use std::time::Duration;

use solo::{Cluster, ClusterBuilder, Event, WorkerContext, WorkerError};
use tokio::sync::broadcast;

/// A worker that does nothing until it is told to stop.
pub(crate) async fn idle(ctx: WorkerContext) -> Result<(), WorkerError> {
    ctx.shutdown().await;
    Ok(())
}

/// A node on 127.0.0.1 (a port the system picks) with `cookie`, that can run `idle`.
pub(crate) fn node(name: &str, cookie: &str) -> ClusterBuilder {
    Cluster::builder()
        .node_name(name)
        .listen("127.0.0.1:0".parse().expect("addr"))
        .cookie(cookie)
        .worker("idle", idle)
}

/// The next event of `events` that `matches`, within `bound`.
///
/// # Panics
///
/// If none comes within `bound`, or the stream fails.
pub(crate) async fn next_matching(
    events: &mut broadcast::Receiver<Event>,
    bound: Duration,
    mut matches: impl FnMut(&Event) -> bool,
) -> Event {
    tokio::time::timeout(bound, async {
        loop {
            match events.recv().await {
                Ok(event) if matches(&event) => return event,
                Ok(_) => {}
                Err(e) => panic!("event stream failed: {e}"),
            }
        }
    })
    .await
    .expect("event within the bound")
}
