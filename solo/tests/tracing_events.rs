//! Every event `solo-node --json` prints is also a `tracing` event (target `solo::event`)
//! with the same name and fields, so that an application's own subscriber sees them: checked
//! here with a real subscriber writing into a buffer, around a worker start and a member
//! joining and leaving. (Its own test binary: the subscriber is the process's global one.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use solo::{ChildId, ClusterBuilder};

const BOUND: Duration = Duration::from_secs(10);

/// Where the subscriber writes: every formatted line, kept.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// Waits until a line has every one of `parts`.
    async fn wait_for(&self, parts: &[&str]) -> bool {
        tokio::time::timeout(BOUND, async {
            loop {
                if self
                    .text()
                    .lines()
                    .any(|line| parts.iter().all(|part| line.contains(part)))
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok()
    }
}

fn builder(name: &str) -> ClusterBuilder {
    common::node(name, "tracing-cookie.Tq7vX2pL9sK")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_events_are_tracing_events_with_the_same_fields() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let a = builder("a").start().await.expect("a starts");
    let s: ChildId = "s".parse().expect("id");
    a.singleton(&s, ["idle"]).await.expect("declared");
    assert!(
        lines
            .wait_for(&["solo::event", "event=\"worker_started\"", "name=s"])
            .await,
        "{}",
        lines.text()
    );
    let b = builder("b")
        .seeds([a.local_addr()])
        .start()
        .await
        .expect("b starts");
    assert!(
        lines
            .wait_for(&["solo::event", "event=\"member_up\"", "member=b#"])
            .await,
        "{}",
        lines.text()
    );
    b.leave().await;
    assert!(
        lines
            .wait_for(&["solo::event", "event=\"member_left\"", "member=b#"])
            .await,
        "{}",
        lines.text()
    );
    a.leave().await;
}
