//! Helpers for the real-process tests, the demo and the failover bench: start `solo-node`
//! processes on 127.0.0.1, read their `--json` events, signal them by PID.
//!
//! Every process a [`Node`] starts is killed (SIGKILL, by its PID) when the `Node` is dropped,
//! pass or fail, and every wait is bounded by a timeout.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One `--json` line of `solo-node`.
#[derive(Debug, Clone)]
pub struct NodeEvent {
    /// Microseconds since the Unix epoch, from the node's system clock.
    pub ts_us: u64,
    /// `ready`, `member_up`, `worker_started`, …
    pub event: String,
    /// The whole object.
    pub fields: serde_json::Value,
}

impl NodeEvent {
    /// A string field, if present.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(|v| v.as_str())
    }
}

/// Builds `solo-node` once per process (with cargo, in `release` or dev profile) and returns
/// its path.
///
/// # Panics
///
/// If cargo cannot build it: every test that needs it would fail anyway.
pub fn solo_node_binary(release: bool) -> PathBuf {
    static DEV: OnceLock<PathBuf> = OnceLock::new();
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    let cell = if release { &RELEASE } else { &DEV };
    cell.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "-p", "solo", "--bin", "solo-node"]);
        if release {
            command.arg("--release");
        }
        let status = command.status().expect("cargo runs");
        assert!(status.success(), "cargo build of solo-node failed");
        let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
            |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        );
        target
            .join(if release { "release" } else { "debug" })
            .join("solo-node")
    })
    .clone()
}

/// A free port on 127.0.0.1 (bound, then released: another process could take it in
/// between, which on a test machine does not happen in practice).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr")
}

/// Microseconds since the Unix epoch, comparable with [`NodeEvent::ts_us`].
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// `--name`.
    pub name: String,
    /// `--listen`.
    pub addr: SocketAddr,
    /// `--seed`s.
    pub seeds: Vec<SocketAddr>,
    /// `--cookie`.
    pub cookie: String,
    /// `--singleton`s.
    pub singletons: Vec<String>,
}

/// A running `solo-node` process.
pub struct Node {
    /// How it was started.
    pub spec: NodeSpec,
    child: Child,
    events: Receiver<NodeEvent>,
    /// Every event seen so far, in order.
    pub seen: Arc<Mutex<Vec<NodeEvent>>>,
}

impl Node {
    /// Starts `solo-node` with `spec`, in JSON mode.
    ///
    /// # Panics
    ///
    /// If the process cannot be started.
    pub fn start(binary: &PathBuf, spec: NodeSpec) -> Self {
        let mut command = Command::new(binary);
        command
            .args(["--name", &spec.name, "--listen", &spec.addr.to_string()])
            .args(["--cookie", &spec.cookie, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for seed in &spec.seeds {
            command.args(["--seed", &seed.to_string()]);
        }
        for singleton in &spec.singletons {
            command.args(["--singleton", singleton]);
        }
        let mut child = command.spawn().expect("solo-node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(fields) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let event = NodeEvent {
                    ts_us: fields.get("ts_us").and_then(|v| v.as_u64()).unwrap_or(0),
                    event: fields
                        .get("event")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .into(),
                    fields,
                };
                if let Ok(mut seen) = log.lock() {
                    seen.push(event.clone());
                }
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Self {
            spec,
            child,
            events,
            seen,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for an event that satisfies `matches`, skipping others.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut matches: impl FnMut(&NodeEvent) -> bool,
    ) -> Option<NodeEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if matches(&event) => return Some(event),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Whether an event satisfying `matches` has been seen (without waiting).
    pub fn has_seen(&self, mut matches: impl FnMut(&NodeEvent) -> bool) -> bool {
        self.seen
            .lock()
            .map(|seen| seen.iter().any(&mut matches))
            .unwrap_or(false)
    }

    /// Whether the node runs `name` now, by its own events (last start after last stop).
    pub fn runs(&self, name: &str) -> bool {
        let Ok(seen) = self.seen.lock() else {
            return false;
        };
        let mut running = false;
        for e in seen.iter().filter(|e| e.field("name") == Some(name)) {
            match e.event.as_str() {
                "worker_started" => running = true,
                "worker_stopped" => running = false,
                _ => {}
            }
        }
        running
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to this process, by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGCONT first, so that a stopped process can die; then SIGKILL, by PID.
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster of `n` nodes named `n1…`, each seeded with all the others, every one
/// declaring `singletons`.
pub fn cluster(binary: &PathBuf, n: usize, cookie: &str, singletons: &[&str]) -> Vec<Node> {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
    (0..n)
        .map(|i| {
            let spec = NodeSpec {
                name: format!("n{}", i + 1),
                addr: addrs[i],
                seeds: addrs.iter().copied().filter(|a| *a != addrs[i]).collect(),
                cookie: cookie.into(),
                singletons: singletons.iter().map(|s| (*s).to_owned()).collect(),
            };
            Node::start(binary, spec)
        })
        .collect()
}

/// Waits until exactly one node runs `name` and it has run for `settle` without a change;
/// returns its index.
pub fn settled_owner(nodes: &[Node], name: &str, timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    let mut last: Option<(usize, Instant)> = None;
    while Instant::now() < deadline {
        let running: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].runs(name)).collect();
        match (running.as_slice(), last) {
            ([only], Some((prev, since))) if *only == prev => {
                if since.elapsed() >= Duration::from_millis(300) {
                    return Some(prev);
                }
            }
            ([only], _) => last = Some((*only, Instant::now())),
            _ => last = None,
        }
        for node in nodes {
            // Drain the channels so that `seen` stays current.
            while node.events.try_recv().is_ok() {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
