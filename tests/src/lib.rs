//! Helpers for the real-process tests, the demo and the failover bench: start `solo-node`
//! processes on 127.0.0.1, read their `--json` events, signal them by PID.
//!
//! Every process a [`Node`] starts is killed (SIGKILL, by its PID) when the `Node` is dropped,
//! pass or fail, and every wait is bounded by a timeout.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod netns;
pub mod scrape;

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
        // The binary (`cli`), every transport, `solo-node certs` and `--metrics`.
        command.args(["build", "--quiet", "-p", "solo", "--bin", "solo-node"]);
        command.args(["--features", "cli,quic,certgen,prometheus"]);
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
/// between).
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`), so that the
/// outgoing connections of running nodes, which take ephemeral ports, cannot grab one
/// between this call and the bind of the node it is meant for; each port is handed out at
/// most once per process. Falls back to port 0 (an ephemeral port) if none is free.
pub fn free_addr() -> SocketAddr {
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let span = high - low;
    if let Ok(mut next) = NEXT.lock() {
        // Start somewhere that depends on the process, so that concurrent test binaries
        // rarely probe the same ports.
        let start = next.get_or_insert_with(|| {
            let seed = u64::from(std::process::id()) ^ now_us();
            low + u16::try_from(seed % u64::from(span)).unwrap_or(0)
        });
        for _ in 0..span.min(2000) {
            let port = *start;
            *start = if port + 1 >= high { low } else { port + 1 };
            // Free for TCP and for UDP (QUIC).
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                    return listener.local_addr().expect("local addr");
                }
            }
        }
    }
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
    /// `--cookie`; empty: none is passed (`extra` names a `--cookie-file`, say).
    pub cookie: String,
    /// `--singleton`s.
    pub singletons: Vec<String>,
    /// `--transport` and `--certs`.
    pub wire: Wire,
    /// Any further flags, such as `--voter n1` or `--exclusive-singleton lock`.
    pub extra: Vec<String>,
    /// A network namespace to run the process in (`ip netns exec NS`), made by the test.
    pub netns: Option<String>,
}

/// What carries a node's traffic: `solo-node`'s `--transport` and `--certs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Wire {
    /// Plain TCP with the cookie.
    #[default]
    Tcp,
    /// Mutual TLS over TCP, with the certificates in this folder.
    Tls(PathBuf),
    /// QUIC, with the certificates in this folder.
    Quic(PathBuf),
}

/// The kinds of [`Wire`], for tests that run over each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireKind {
    /// [`Wire::Tcp`].
    Tcp,
    /// [`Wire::Tls`].
    Tls,
    /// [`Wire::Quic`].
    Quic,
}

impl WireKind {
    /// `kind` with the certificates in `certs` (ignored for TCP).
    pub fn with_certs(self, certs: PathBuf) -> Wire {
        match self {
            WireKind::Tcp => Wire::Tcp,
            WireKind::Tls => Wire::Tls(certs),
            WireKind::Quic => Wire::Quic(certs),
        }
    }
}

/// The environment variable `var` as a number, if it is set and is one (trial counts).
pub fn env_usize(var: &str) -> Option<usize> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

/// A path under the system's temporary directory that no other test of this process uses,
/// with nothing there yet: `solo-{what}-{pid}-{n}`.
pub fn fresh_dir(what: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "solo-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Generates a fresh cluster CA and certificates for `names` with `solo-node certs`, in a
/// new folder under the system's temporary directory; returns the folder.
///
/// # Panics
///
/// If `solo-node certs` fails.
pub fn generate_certs(binary: &PathBuf, names: &[&str]) -> PathBuf {
    let dir = fresh_dir("certs");
    let out = Command::new(binary)
        .arg("certs")
        .arg("--out")
        .arg(&dir)
        .args(names)
        .output()
        .expect("solo-node certs runs");
    assert!(
        out.status.success(),
        "solo-node certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// The node name [`call`] joins under over TLS and QUIC, whose certificate [`use_wire`]
/// makes beside the nodes'.
pub const CALLER: &str = "caller";

/// Puts every spec on `kind`, with one fresh CA and a certificate per node (and one for
/// [`CALLER`]).
pub fn use_wire(binary: &PathBuf, specs: &mut [NodeSpec], kind: WireKind) {
    if kind == WireKind::Tcp {
        return;
    }
    let names: Vec<&str> = specs
        .iter()
        .map(|s| s.name.as_str())
        .chain([CALLER])
        .collect();
    let certs = generate_certs(binary, &names);
    for spec in specs {
        spec.wire = kind.with_certs(certs.clone());
    }
}

/// A running `solo-node` process.
pub struct Node {
    /// How it was started.
    pub spec: NodeSpec,
    child: Child,
    events: Receiver<NodeEvent>,
    /// Every event seen so far, in order.
    pub seen: Arc<Mutex<Vec<NodeEvent>>>,
    /// Everything the process wrote on stderr so far.
    pub stderr: Arc<Mutex<String>>,
}

impl Node {
    /// Starts `solo-node` with `spec`, in JSON mode.
    ///
    /// # Panics
    ///
    /// If the process cannot be started.
    pub fn start(binary: &PathBuf, spec: NodeSpec) -> Self {
        // `ip netns exec` execs the binary in place: the PID is the node's.
        let mut command = match &spec.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(["--name", &spec.name, "--listen", &spec.addr.to_string()])
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // An empty cookie: `extra` says where the node reads it from.
        if !spec.cookie.is_empty() {
            command.args(["--cookie", &spec.cookie]);
        }
        for seed in &spec.seeds {
            command.args(["--seed", &seed.to_string()]);
        }
        for singleton in &spec.singletons {
            command.args(["--singleton", singleton]);
        }
        command.args(&spec.extra);
        match &spec.wire {
            Wire::Tcp => {}
            Wire::Tls(certs) => {
                command.arg("--certs").arg(certs);
            }
            Wire::Quic(certs) => {
                command.args(["--transport", "quic", "--certs"]).arg(certs);
            }
        }
        let mut child = command.spawn().expect("solo-node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(pipe) = child.stderr.take() {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut text) = stderr.lock() {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
            });
        }
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
            stderr,
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
        self.exit_status(timeout).is_some()
    }

    /// Waits up to `timeout` for the process to exit; returns its exit status if it did.
    pub fn exit_status(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first event seen so far that satisfies `matches` (without waiting).
    pub fn find(&self, mut matches: impl FnMut(&NodeEvent) -> bool) -> Option<NodeEvent> {
        self.seen
            .lock()
            .ok()
            .and_then(|seen| seen.iter().find(|e| matches(e)).cloned())
    }

    /// Every event seen so far that satisfies `matches`, in the order printed (without
    /// waiting).
    pub fn all_seen(&self, mut matches: impl FnMut(&NodeEvent) -> bool) -> Vec<NodeEvent> {
        self.seen
            .lock()
            .map(|seen| seen.iter().filter(|e| matches(e)).cloned().collect())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` until an event satisfying `matches` has been seen, counting the
    /// events seen before the call too (unlike [`wait_for`](Node::wait_for), which only
    /// looks at events it has not consumed yet); returns the first such event.
    pub fn wait_seen(
        &self,
        timeout: Duration,
        mut matches: impl FnMut(&NodeEvent) -> bool,
    ) -> Option<NodeEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.find(&mut matches) {
                return Some(event);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // The reader thread appends to `seen` before it sends on the channel: a received
            // event is already in `seen`, so this only paces the loop.
            let _ = self
                .events
                .recv_timeout(left.min(Duration::from_millis(20)));
        }
    }

    /// The member ids (`name#incarnation`) this node has printed `member_up` for, whose
    /// node name is `name`, in order.
    pub fn member_ups(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}#");
        self.seen
            .lock()
            .map(|seen| {
                seen.iter()
                    .filter(|e| e.event == "member_up")
                    .filter_map(|e| e.field("member"))
                    .filter(|m| m.starts_with(&prefix))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every event seen so far but `roar`s, one compact line each, then stderr: for
    /// assertion messages.
    pub fn dump(&self) -> String {
        let Ok(seen) = self.seen.lock() else {
            return format!("{}: (event log poisoned)", self.spec.name);
        };
        let mut out = format!(
            "--- {} (pid {}, {}) ---\n",
            self.spec.name,
            self.pid(),
            self.spec.addr
        );
        for event in seen.iter().filter(|e| e.event != "roar") {
            out.push_str(&event.fields.to_string());
            out.push('\n');
        }
        let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        if !stderr.is_empty() {
            out.push_str("stderr:\n");
            out.push_str(&stderr);
        }
        out
    }

    /// Kills this process (SIGKILL, by PID, as on drop) and starts a new one with the same
    /// spec: the same name and listen address, hence a new incarnation of the same node.
    pub fn restart(self, binary: &PathBuf) -> Node {
        let spec = self.spec.clone();
        drop(self);
        Node::start(binary, spec)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGCONT first, so that a stopped process can die; then SIGKILL, by PID.
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `solo-node` flags that make `voters` the cluster's voters and declare `singleton`
/// in `Exclusive` mode, for [`NodeSpec::extra`].
pub fn exclusive_flags(voters: &[&str], singleton: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for voter in voters {
        flags.extend(["--voter".to_owned(), (*voter).to_owned()]);
    }
    flags.extend(["--exclusive-singleton".to_owned(), singleton.to_owned()]);
    flags
}

/// A cookie for tests, long enough for `solo-node` (16 bytes at least), named by `label`.
pub fn test_cookie(label: &str) -> String {
    format!("{label}.Tq7vX2pL9sK4mR8w")
}

/// The specs of a cluster of `n` nodes named `n1…` on fresh ports, each seeded with all the
/// others, every one declaring `singletons`, sharing the cookie [`test_cookie`]`(label)`:
/// change some (a cookie, say) before starting them.
pub fn cluster_specs(n: usize, label: &str, singletons: &[&str]) -> Vec<NodeSpec> {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
    (0..n)
        .map(|i| NodeSpec {
            name: format!("n{}", i + 1),
            addr: addrs[i],
            seeds: addrs.iter().copied().filter(|a| *a != addrs[i]).collect(),
            cookie: test_cookie(label),
            singletons: singletons.iter().map(|s| (*s).to_owned()).collect(),
            wire: Wire::Tcp,
            extra: Vec::new(),
            netns: None,
        })
        .collect()
}

/// A cluster of `n` nodes named `n1…`, each seeded with all the others, every one
/// declaring `singletons`.
pub fn cluster(binary: &PathBuf, n: usize, label: &str, singletons: &[&str]) -> Vec<Node> {
    cluster_specs(n, label, singletons)
        .into_iter()
        .map(|spec| Node::start(binary, spec))
        .collect()
}

/// Waits up to `timeout` until every node has printed `member_up` for every other node;
/// returns whether they all did.
pub fn wait_full_mesh(nodes: &[Node], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    nodes.iter().all(|node| {
        nodes
            .iter()
            .filter(|other| other.spec.name != node.spec.name)
            .all(|other| {
                let prefix = format!("{}#", other.spec.name);
                let left = deadline.saturating_duration_since(Instant::now());
                node.wait_seen(left, |e| {
                    e.event == "member_up"
                        && e.field("member").is_some_and(|m| m.starts_with(&prefix))
                })
                .is_some()
            })
    })
}

/// Waits up to `timeout` for an event satisfying `matches` on any of `nodes` (counting
/// events seen before the call); returns the index of the node and the event, the earliest
/// by `ts_us` if several nodes have one.
pub fn wait_any(
    nodes: &[&Node],
    timeout: Duration,
    mut matches: impl FnMut(&NodeEvent) -> bool,
) -> Option<(usize, NodeEvent)> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| node.find(&mut matches).map(|e| (i, e)))
            .min_by_key(|(_, e)| e.ts_us);
        if found.is_some() {
            return found;
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// As [`wait_any`], over every node of `nodes` but `except`; the index returned is into
/// `nodes`.
pub fn wait_any_other(
    nodes: &[Node],
    except: usize,
    timeout: Duration,
    matches: impl FnMut(&NodeEvent) -> bool,
) -> Option<(usize, NodeEvent)> {
    let others: Vec<usize> = (0..nodes.len()).filter(|&i| i != except).collect();
    let refs: Vec<&Node> = others.iter().map(|&i| &nodes[i]).collect();
    wait_any(&refs, timeout, matches).map(|(j, event)| (others[j], event))
}

/// Every node's [`dump`](Node::dump), for assertion messages.
pub fn dump_all(nodes: &[Node]) -> String {
    nodes.iter().map(Node::dump).collect()
}

/// How a short-lived `solo-node` run ended.
#[derive(Debug)]
pub struct Exited {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

/// Runs `binary` with `args` (without `SOLO_COOKIE` in its environment, with
/// `RUST_BACKTRACE=1` so that a panic would show), and waits up to `timeout` for it to exit.
/// Returns `None`, after killing it by PID, if it did not exit in time.
///
/// # Panics
///
/// If the process cannot be started.
pub fn run_to_exit(binary: &PathBuf, args: &[&str], timeout: Duration) -> Option<Exited> {
    let mut child = Command::new(binary)
        .args(args)
        .env_remove("SOLO_COOKIE")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("solo-node starts");
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    Some(Exited {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Waits until exactly one node runs `name` and it has run for 300 ms without a change;
/// returns its index.
pub fn settled_owner(nodes: &[Node], name: &str, timeout: Duration) -> Option<usize> {
    settled_owner_for(nodes, name, Duration::from_millis(300), timeout)
}

/// Waits up to `timeout` until exactly one node runs `name` and it has run for `settle`
/// without a change; returns its index.
pub fn settled_owner_for(
    nodes: &[Node],
    name: &str,
    settle: Duration,
    timeout: Duration,
) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    let mut last: Option<(usize, Instant)> = None;
    while Instant::now() < deadline {
        let running: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].runs(name)).collect();
        match (running.as_slice(), last) {
            ([only], Some((prev, since))) if *only == prev => {
                if since.elapsed() >= settle {
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

/// Runs `solo-node call NAME MESSAGE` against the cluster of `through` (seeded with its
/// address, with its cookie and transport) and returns the reply, or stderr on failure.
///
/// # Panics
///
/// If the process cannot be started.
pub fn call(
    binary: &PathBuf,
    through: &NodeSpec,
    name: &str,
    message: &str,
    timeout: Duration,
) -> Result<String, String> {
    let addr = through.addr.to_string();
    let secs = format!("{}", timeout.as_secs_f64());
    let mut args: Vec<String> = [
        "call",
        name,
        message,
        "--seed",
        &addr,
        "--cookie",
        &through.cookie,
        "--timeout",
        &secs,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // The caller presents a certificate of its own name: one that names another node
    // would be refused.
    let certs = match &through.wire {
        Wire::Tcp => None,
        Wire::Tls(certs) => Some(certs),
        Wire::Quic(certs) => {
            args.extend(["--transport".into(), "quic".into()]);
            Some(certs)
        }
    };
    if let Some(certs) = certs {
        args.extend(["--name".into(), CALLER.into()]);
        args.extend(["--certs".into(), certs.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run_to_exit(binary, &args, timeout + Duration::from_secs(10)) {
        Some(exited) if exited.status.success() => Ok(exited.stdout.trim().to_owned()),
        Some(exited) => Err(exited.stderr.trim().to_owned()),
        None => Err("solo-node call did not exit in time".to_owned()),
    }
}
