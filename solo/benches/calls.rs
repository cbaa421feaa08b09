//! Calls bench: `Cluster` nodes in this one process, talking over TCP on 127.0.0.1, a counter
//! actor, and a tokio multi-thread runtime with 2 worker threads.
//!
//! ```sh
//! cargo bench -p solo --bench calls              # 20 000 latency calls, 5 rounds of
//!                                                # 100 000 calls per throughput run,
//!                                                # 100 handoffs
//! cargo bench -p solo --bench calls -- --quick   # smoke run: 2 000, 5 rounds of 20 000, 10
//! cargo bench -p solo --bench calls --features prometheus   # the same, recording metrics
//! cargo bench -p solo --bench calls -- --profile solo-pipelined   # one kind only, for perf
//! ```
//!
//! * Unloaded latency: node `a` calls the counter that runs on node `b` (only `b` declares
//!   the singleton, so only `b` can own it), one call at a time, after a warm-up; nearest-rank
//!   p50, p99, p999 and the maximum of each call's round trip as the caller sees it.
//! * Throughput, pipelined: one client task on `a` keeps up to 256 calls in flight: it spawns
//!   each call as a tokio task into a `JoinSet`, and spawns the next one as soon as any
//!   finishes. Calls per second over a fixed count.
//! * Throughput, 64 tasks: 64 tasks on `a`, each calling in a loop with one call in flight.
//! * The bare-tokio baseline: the same two throughput runs over one loopback connection
//!   with solo's frame sizes and no solo (see `bare_tokio`), in the same process and run, and
//!   solo's ratio to it (target: 0.8). The four throughput runs take turns, round after
//!   round (solo pipelined, baseline pipelined, solo 64 tasks, baseline 64 tasks), so that
//!   a noisy moment of the machine lands on both sides; the table gives each kind's median
//!   and range over the rounds, and the median of the rounds' ratios. It also gives each
//!   kind's CPU time per call (the process's user + system time over the run, median of the
//!   rounds) and the baseline's over solo's: on a machine whose cores are the limit, that
//!   decides the rate, and it swings far less between runs than the rate does.
//! * Handoff gap: a caller task on `a` calls the counter in a tight loop (one call in flight)
//!   while the counter moves gracefully: it is declared by two nodes other than `a`; the one
//!   that runs it leaves (`Cluster::leave`, which hands the state over to the other), then a
//!   fresh node declaring it joins, so that the next round has two candidates again (a fresh
//!   node that wins the rendezvous hash takes the counter over: a rebalance, also counted).
//!   A handoff is a change of the node that answers; its gap is the time between the last
//!   reply from the old instance and the first reply from the new one. Every reply must
//!   count exactly one more than the one before (the state moved, each call counted once).
//!
//! `--profile KIND` (`solo-pipelined`, `solo-tasks`, `bare-pipelined`, `bare-tasks`) runs only
//! that throughput kind, 20 rounds of 100 000 calls, printing each round's rate and CPU time
//! per call: a steady load to record with `perf record`, with nothing else in the profile.
//!
//! Every wait is bounded; a handoff round that cannot complete ends that measurement and is
//! reported. The table goes to stdout, progress to stderr; when the count broke, stderr also
//! gets the counters' journal (which instance started with which state, handed over which
//! count, received which conflicting state) to explain each break. After the table, the bench
//! asserts that every call was answered and counted exactly once (so it fails, after printing
//! everything, when one was not).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use solo::{Actor, ChildId, Cluster, ClusterBuilder, Handoff, WorkerContext, WorkerError};
use tokio::task::JoinSet;

/// The timeout of every call.
const CALL: Duration = Duration::from_secs(10);
/// The bound on every wait for the cluster (forming, agreeing on an owner, a handoff).
const BOUND: Duration = Duration::from_secs(10);
const COOKIE: &str = "calls-bench.Tq7vX2pL9sK";
/// Calls in flight in the pipelined throughput run.
const WINDOW: usize = 256;
/// Tasks in the concurrent throughput run.
const TASKS: usize = 64;
/// Replies from the settled owner before its node is asked to leave.
const SETTLE_REPLIES: u64 = 20;

/// The targets from the issue.
const TARGET_CALLS_PER_S: f64 = 100_000.0;
const TARGET_P99_US: f64 = 1_000.0;
const TARGET_GAP_MS: f64 = 5.0;

/// What the counters' instances did (started with what, handed over what, resolved which
/// conflict), in order: printed to stderr after the handoffs, to explain a break in the count.
static JOURNAL: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn note(line: String) {
    JOURNAL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(line);
}

/// A counter that hands its count over when it moves (as in `tests/actors.rs`; it also notes
/// its life in [`JOURNAL`], and keeps its own state on a conflict, as the default does).
struct Counter {
    count: u64,
    /// Where it runs, to show which instance answered.
    node: String,
}

#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Get,
    Add(u64),
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Reading {
    count: u64,
    node: String,
}

impl Actor for Counter {
    type Call = Op;
    type Reply = Reading;
    type Cast = u64;
    type State = u64;

    async fn start(ctx: &WorkerContext, handed_over: Option<u64>) -> Result<Self, WorkerError> {
        let node = ctx.node().name.to_string();
        match handed_over {
            Some(count) => note(format!("{node} starts with the handed-over count {count}")),
            None => note(format!("{node} starts afresh")),
        }
        Ok(Counter {
            count: handed_over.unwrap_or(0),
            node,
        })
    }

    async fn handle_call(&mut self, op: Op, _: &WorkerContext) -> Result<Reading, WorkerError> {
        if let Op::Add(n) = op {
            self.count += n;
        }
        Ok(Reading {
            count: self.count,
            node: self.node.clone(),
        })
    }

    async fn handle_cast(&mut self, n: u64, _: &WorkerContext) -> Result<(), WorkerError> {
        self.count += n;
        Ok(())
    }

    async fn begin_handoff(&mut self, _: &WorkerContext) -> Handoff<u64> {
        note(format!("{} hands over the count {}", self.node, self.count));
        Handoff::Resume(self.count)
    }

    async fn resolve_conflict(&mut self, theirs: u64, _: &WorkerContext) {
        note(format!(
            "{} at {} receives a conflicting instance's count {theirs}; keeps its own",
            self.node, self.count
        ));
    }
}

/// How much to measure.
struct Settings {
    warmup: usize,
    latency_calls: usize,
    /// Calls per throughput run; each round runs each of the four kinds once.
    throughput_calls: usize,
    rounds: usize,
    handoffs: usize,
    /// Only this throughput kind, for a profiler (`--profile`).
    profile: Option<Profile>,
}

/// The throughput kind `--profile` runs.
#[derive(Debug, Clone, Copy)]
enum Profile {
    SoloPipelined,
    SoloTasks,
    BarePipelined,
    BareTasks,
}

impl Settings {
    const FULL: Settings = Settings {
        warmup: 1_000,
        latency_calls: 20_000,
        throughput_calls: 100_000,
        rounds: 5,
        handoffs: 100,
        profile: None,
    };
    const QUICK: Settings = Settings {
        warmup: 200,
        latency_calls: 2_000,
        throughput_calls: 20_000,
        rounds: 5,
        handoffs: 10,
        profile: None,
    };
}

fn builder(name: &str) -> ClusterBuilder {
    Cluster::builder()
        .node_name(name)
        .listen("127.0.0.1:0".parse().expect("a socket address"))
        .cookie(COOKIE)
        .actor::<Counter>("counter")
}

fn child_id(name: &str) -> ChildId {
    name.parse().expect("a valid child id")
}

/// Waits until every node sees `size` live members.
async fn wait_mesh(nodes: &[&Cluster], size: usize) -> Result<(), String> {
    tokio::time::timeout(BOUND, async {
        for node in nodes {
            while node.members().await.map_or(0, |m| m.len()) != size {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    })
    .await
    .map_err(|_| format!("the nodes did not see {size} members within {BOUND:?}"))
}

/// Nearest-rank percentile of sorted values.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Whether `counts` (replies to `Add(1)` calls, in any order) are exactly `base + 1 ..=
/// base + counts.len()`: each call counted once.
fn counted_once(base: u64, counts: &mut [u64]) -> bool {
    counts.sort_unstable();
    counts
        .iter()
        .zip(base + 1..)
        .all(|(count, expected)| *count == expected)
}

// ----- 1 to 3: latency and throughput, a -> b -----------------------------------------------

struct Latency {
    /// Round trips of the measured calls, sorted, in nanoseconds.
    nanos: Vec<u64>,
    errors: usize,
    /// Replies whose count was not one more than the previous one.
    out_of_order: usize,
}

struct Throughput {
    calls: usize,
    elapsed: Duration,
    errors: usize,
    counted_once: bool,
    /// The process's CPU time (user + system, every thread) over the run: nothing else
    /// runs meanwhile, so it is this kind's cost. Wall rates on a shared machine swing far
    /// more than this does.
    cpu: Duration,
}

impl Throughput {
    fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_us_per_call(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }
}

/// The process's CPU time so far, user and system, of all its threads.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |usage| {
        let micros = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
        };
        micros(usage.user_time()) + micros(usage.system_time())
    })
}

/// Runs one throughput run and notes the CPU time it took.
async fn with_cpu(run: impl Future<Output = Throughput>) -> Throughput {
    let before = cpu_time();
    let mut throughput = run.await;
    throughput.cpu = cpu_time().saturating_sub(before);
    throughput
}

/// The median of the runs' CPU time per call, in µs.
fn median_cpu(runs: &[Throughput]) -> f64 {
    let mut cpu: Vec<f64> = runs.iter().map(Throughput::cpu_us_per_call).collect();
    cpu.sort_by(f64::total_cmp);
    cpu.get(cpu.len() / 2).copied().unwrap_or(0.0)
}

/// The throughput runs of every round, by kind.
#[derive(Default)]
struct Rounds {
    pipelined: Vec<Throughput>,
    concurrent: Vec<Throughput>,
    bare_pipelined: Vec<Throughput>,
    bare_concurrent: Vec<Throughput>,
}

/// The median of the runs' calls per second (the upper one of an even count).
fn median_rate(runs: &[Throughput]) -> f64 {
    let mut rates: Vec<f64> = runs.iter().map(Throughput::per_second).collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

/// "(3 rounds of 20000 calls: 180000 to 250000 calls/s)".
fn spread(runs: &[Throughput]) -> String {
    let rates = runs.iter().map(Throughput::per_second);
    let low = rates.clone().fold(f64::INFINITY, f64::min);
    let high = rates.fold(0.0, f64::max);
    let calls = runs.first().map_or(0, |t| t.calls);
    format!(
        "  ({} rounds of {calls} calls: {low:.0} to {high:.0})",
        runs.len()
    )
}

async fn current_count(a: &Cluster, id: &ChildId) -> u64 {
    a.call::<_, Reading>(id, &Op::Get, CALL)
        .await
        .map_or(0, |r| r.count)
}

async fn unloaded_latency(a: &Cluster, id: &ChildId, settings: &Settings) -> Latency {
    let mut previous = current_count(a, id).await;
    let mut nanos = Vec::with_capacity(settings.latency_calls);
    let mut errors = 0;
    let mut out_of_order = 0;
    for i in 0..settings.warmup + settings.latency_calls {
        let started = Instant::now();
        let reply = a.call::<_, Reading>(id, &Op::Add(1), CALL).await;
        let elapsed = started.elapsed();
        match reply {
            Ok(reading) => {
                if reading.count != previous + 1 {
                    out_of_order += 1;
                }
                previous = reading.count;
            }
            Err(_) => errors += 1,
        }
        if i >= settings.warmup {
            nanos.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    nanos.sort_unstable();
    Latency {
        nanos,
        errors,
        out_of_order,
    }
}

/// Calls made by `call` (`Some(count)` for an answer, `None` for an error), as they came in.
struct Run {
    elapsed: Duration,
    counts: Vec<u64>,
    errors: usize,
}

impl Run {
    /// As a [`Throughput`] row; `base`: the count before the run, to check each call was
    /// counted once (`None` where answers carry no count).
    fn throughput(mut self, calls: usize, base: Option<u64>) -> Throughput {
        let once = self.errors == 0 && base.is_none_or(|base| counted_once(base, &mut self.counts));
        Throughput {
            calls,
            elapsed: self.elapsed,
            errors: self.errors,
            counted_once: once,
            cpu: Duration::ZERO,
        }
    }
}

/// What the throughput runs call: solo's counter, or the bare-tokio baseline.
trait Caller: Clone + Send + Sync + 'static {
    /// One call: `Some(count)` for an answer, `None` for an error.
    fn call(&self) -> impl Future<Output = Option<u64>> + Send;
}

/// `Add(1)` calls from a node to the counter, answered with the count.
#[derive(Clone)]
struct AddOne {
    from: Cluster,
    id: ChildId,
}

impl Caller for AddOne {
    async fn call(&self) -> Option<u64> {
        self.from
            .call::<_, Reading>(&self.id, &Op::Add(1), CALL)
            .await
            .ok()
            .map(|reading| reading.count)
    }
}

/// One client task keeps up to [`WINDOW`] calls in flight, each a spawned tokio task.
async fn pipelined_with(caller: &impl Caller, calls: usize) -> Run {
    let mut in_flight = JoinSet::new();
    let mut counts = Vec::with_capacity(calls);
    let mut issued = 0;
    let mut errors = 0;
    let started = Instant::now();
    while issued < calls || !in_flight.is_empty() {
        while issued < calls && in_flight.len() < WINDOW {
            let caller = caller.clone();
            in_flight.spawn(async move { caller.call().await });
            issued += 1;
        }
        match in_flight.join_next().await {
            Some(Ok(Some(count))) => counts.push(count),
            Some(_) => errors += 1,
            None => break,
        }
    }
    Run {
        elapsed: started.elapsed(),
        counts,
        errors,
    }
}

/// [`TASKS`] tasks, each calling in a loop with one call in flight.
async fn concurrent_with(caller: &impl Caller, calls: usize) -> Run {
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for task in 0..TASKS {
        let share = calls / TASKS + usize::from(task < calls % TASKS);
        let caller = caller.clone();
        tasks.spawn(async move {
            let mut counts = Vec::with_capacity(share);
            let mut errors = 0;
            for _ in 0..share {
                match caller.call().await {
                    Some(count) => counts.push(count),
                    None => errors += 1,
                }
            }
            (counts, errors)
        });
    }
    let mut counts = Vec::with_capacity(calls);
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((mut theirs, their_errors)) => {
                counts.append(&mut theirs);
                errors += their_errors;
            }
            Err(_) => errors += 1,
        }
    }
    Run {
        elapsed: started.elapsed(),
        counts,
        errors,
    }
}

fn add_one(a: &Cluster, id: &ChildId) -> AddOne {
    AddOne {
        from: a.clone(),
        id: id.clone(),
    }
}

async fn pipelined(a: &Cluster, id: &ChildId, calls: usize) -> Throughput {
    let base = current_count(a, id).await;
    pipelined_with(&add_one(a, id), calls)
        .await
        .throughput(calls, Some(base))
}

async fn concurrent(a: &Cluster, id: &ChildId, calls: usize) -> Throughput {
    let base = current_count(a, id).await;
    concurrent_with(&add_one(a, id), calls)
        .await
        .throughput(calls, Some(base))
}

// ----- the bare-tokio baseline ----------------------------------------------------------------

/// What the machine can do without solo, measured in the same process and run: a request and
/// response over one loopback TCP connection with solo's frame sizes (a 26-byte call, a
/// 13-byte reply, each with a 4-byte length prefix counted in), callers multiplexed through
/// one writer task, replies matched to callers by id in a reader task, and a server that
/// answers each call. No routing, no timers, no actor: the floor solo's hops stand on.
mod bare_tokio {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, PoisonError};

    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{mpsc, oneshot};

    const CALL_FRAME: usize = 26;
    const REPLY_FRAME: usize = 13;

    type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<u64>>>>;

    /// A handle callers clone; each call is one request through the writer task.
    #[derive(Clone)]
    pub(super) struct Client {
        requests: mpsc::Sender<oneshot::Sender<u64>>,
    }

    impl super::Caller for Client {
        /// One round trip: the id the server echoed, or `None` if the connection ended.
        async fn call(&self) -> Option<u64> {
            let (reply, answer) = oneshot::channel();
            self.requests.send(reply).await.ok()?;
            answer.await.ok()
        }
    }

    /// Starts a server and a client connected to it over 127.0.0.1.
    pub(super) async fn start() -> std::io::Result<Client> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve(listener));
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let pending: Pending = Arc::default();
        let (requests, mut queued) = mpsc::channel::<oneshot::Sender<u64>>(1024);
        let writer_pending = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut write = BufWriter::with_capacity(64 * 1024, write);
            let mut frame = [0u8; CALL_FRAME];
            frame[..4].copy_from_slice(&((CALL_FRAME - 4) as u32).to_be_bytes());
            let mut next = 0u64;
            while let Some(first) = queued.recv().await {
                // Everything already queued goes out in one write.
                let mut reply = Some(first);
                while let Some(caller) = reply.take() {
                    next += 1;
                    writer_pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(next, caller);
                    frame[4..12].copy_from_slice(&next.to_le_bytes());
                    if write.write_all(&frame).await.is_err() {
                        return;
                    }
                    reply = queued.try_recv().ok();
                }
                if write.flush().await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut read = BufReader::with_capacity(64 * 1024, read);
            let mut frame = [0u8; REPLY_FRAME];
            while read.read_exact(&mut frame).await.is_ok() {
                let mut id = [0u8; 8];
                id.copy_from_slice(&frame[4..12]);
                let id = u64::from_le_bytes(id);
                let caller = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                if let Some(caller) = caller {
                    let _ = caller.send(id);
                }
            }
        });
        Ok(Client { requests })
    }

    async fn serve(listener: TcpListener) {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let mut read = BufReader::with_capacity(64 * 1024, read);
        let mut write = BufWriter::with_capacity(64 * 1024, write);
        let mut call = [0u8; CALL_FRAME];
        let mut reply = [0u8; REPLY_FRAME];
        reply[..4].copy_from_slice(&((REPLY_FRAME - 4) as u32).to_be_bytes());
        while read.read_exact(&mut call).await.is_ok() {
            reply[4..12].copy_from_slice(&call[4..12]);
            if write.write_all(&reply).await.is_err() {
                return;
            }
            // Flush once nothing more is waiting to be read: replies go out in batches.
            if read.buffer().is_empty() && write.flush().await.is_err() {
                return;
            }
        }
    }
}

/// As [`pipelined`], over the bare-tokio baseline.
async fn pipelined_bare(client: &bare_tokio::Client, calls: usize) -> Throughput {
    pipelined_with(client, calls).await.throughput(calls, None)
}

/// As [`concurrent`], over the bare-tokio baseline.
async fn concurrent_bare(client: &bare_tokio::Client, calls: usize) -> Throughput {
    concurrent_with(client, calls).await.throughput(calls, None)
}

// ----- 4: handoff gaps ------------------------------------------------------------------------

/// One handoff as the caller saw it.
struct Gap {
    from: String,
    to: String,
    gap: Duration,
}

/// What the caller shares with the orchestrating task while it runs.
#[derive(Default)]
struct Progress {
    replies: u64,
    /// The node that answered last.
    node: String,
    handoffs: usize,
}

/// What the caller saw.
struct CallerLog {
    gaps: Vec<Gap>,
    replies: u64,
    first_count: Option<u64>,
    last_count: Option<u64>,
    /// Calls that failed, with why.
    errors: Vec<String>,
    /// Replies whose count was not one more than the previous one.
    breaks: Vec<String>,
}

fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Calls `Add(1)` in a loop, one call in flight, until told to stop.
async fn caller(
    a: Cluster,
    id: ChildId,
    progress: Arc<Mutex<Progress>>,
    stop: Arc<AtomicBool>,
) -> CallerLog {
    let mut log = CallerLog {
        gaps: Vec::new(),
        replies: 0,
        first_count: None,
        last_count: None,
        errors: Vec::new(),
        breaks: Vec::new(),
    };
    // The last reply: when it arrived, from where, and its count.
    let mut last: Option<(Instant, String, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        let reply = a.call::<_, Reading>(&id, &Op::Add(1), CALL).await;
        let at = Instant::now();
        let reading = match reply {
            Ok(reading) => reading,
            Err(error) => {
                let after = last.as_ref().map_or_else(
                    || "before the first reply".to_owned(),
                    |(_, node, count)| format!("after {count} from {node}"),
                );
                log.errors.push(format!("{error} ({after})"));
                continue;
            }
        };
        log.replies += 1;
        log.first_count.get_or_insert(reading.count);
        log.last_count = Some(reading.count);
        let mut moved = last.is_none();
        if let Some((then, node, count)) = &last {
            if reading.count != count + 1 {
                log.breaks.push(format!(
                    "{count} from {node}, then {} from {}",
                    reading.count, reading.node
                ));
            }
            if reading.node != *node {
                moved = true;
                log.gaps.push(Gap {
                    from: node.clone(),
                    to: reading.node.clone(),
                    gap: at - *then,
                });
            }
        }
        {
            let mut shared = lock(&progress);
            shared.replies += 1;
            if moved {
                shared.node.clone_from(&reading.node);
                shared.handoffs = log.gaps.len();
            }
        }
        last = Some((at, reading.node, reading.count));
    }
    log
}

/// Waits until `a`, every candidate and the caller agree on who runs `id`, and the caller has
/// had [`SETTLE_REPLIES`] replies from it since; returns its name.
async fn settled_owner(
    a: &Cluster,
    candidates: &[Cluster],
    id: &ChildId,
    progress: &Mutex<Progress>,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut agreed_since: Option<(String, u64)> = None;
    loop {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the nodes and the caller did not agree on an owner within {BOUND:?}"
            ));
        }
        let owner = a.whereis(id).await.ok().flatten();
        let mut agreed = owner.clone();
        for candidate in candidates {
            if candidate.whereis(id).await.ok().flatten() != owner {
                agreed = None;
            }
        }
        let (node, replies) = {
            let shared = lock(progress);
            (shared.node.clone(), shared.replies)
        };
        match agreed {
            Some(owner) if owner.name.as_str() == node => match &agreed_since {
                Some((same, since)) if *same == node => {
                    if replies >= since + SETTLE_REPLIES {
                        return Ok(node);
                    }
                }
                _ => agreed_since = Some((node, replies)),
            },
            _ => agreed_since = None,
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A node that may run the counter: it declares the singleton.
async fn candidate(
    name: &str,
    seed: std::net::SocketAddr,
    id: &ChildId,
) -> Result<Cluster, String> {
    let node = builder(name)
        .seeds([seed])
        .start()
        .await
        .map_err(|e| format!("{name} did not start: {e}"))?;
    node.singleton(id, ["counter"])
        .await
        .map_err(|e| format!("{name} could not declare the singleton: {e}"))?;
    Ok(node)
}

struct Handoffs {
    log: CallerLog,
    /// Why the rounds stopped before enough handoffs, if they did.
    aborted: Option<String>,
    /// Nodes started in all.
    nodes_started: usize,
}

async fn handoffs(target: usize) -> Handoffs {
    let id = child_id("handoff-count");
    let a = builder("h-a").start().await.expect("node h-a starts");
    let seed = a.local_addr();
    let mut candidates = Vec::new();
    for name in ["h-b", "h-c"] {
        candidates.push(
            candidate(name, seed, &id)
                .await
                .expect("a candidate starts"),
        );
    }
    let mut nodes_started = 3;
    wait_mesh(&[&a, &candidates[0], &candidates[1]], 3)
        .await
        .expect("h-a, h-b and h-c form a cluster");
    tokio::time::timeout(BOUND, async {
        while a.whereis(&id).await.ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("h-a learns who runs the counter");
    let progress = Arc::new(Mutex::new(Progress::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let calling = tokio::spawn(caller(
        a.clone(),
        id.clone(),
        Arc::clone(&progress),
        Arc::clone(&stop),
    ));
    let rounds = async {
        while lock(&progress).handoffs < target {
            let owner = settled_owner(&a, &candidates, &id, &progress).await?;
            let Some(index) = candidates
                .iter()
                .position(|c| c.id().name.as_str() == owner)
            else {
                return Err(format!("the owner {owner} is not a candidate"));
            };
            let leaving = candidates.remove(index);
            let before = lock(&progress).handoffs;
            eprintln!(
                "  {owner} runs the counter and leaves ({before} handoffs so far, {} tasks alive)",
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks()
            );
            tokio::time::timeout(BOUND * 2, leaving.leave())
                .await
                .map_err(|_| format!("{owner} did not leave within {:?}", BOUND * 2))?;
            drop(leaving);
            tokio::time::timeout(BOUND, async {
                while lock(&progress).handoffs == before {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .map_err(|_| format!("no other node answered within {BOUND:?} of {owner} leaving"))?;
            if lock(&progress).handoffs >= target {
                break;
            }
            nodes_started += 1;
            let name = format!("n{nodes_started}");
            eprintln!("  {} answers; {name} joins", lock(&progress).node);
            candidates.push(candidate(&name, seed, &id).await?);
            let mut all: Vec<&Cluster> = vec![&a];
            all.extend(&candidates);
            wait_mesh(&all, 3).await?;
        }
        Ok(())
    };
    let aborted = rounds.await.err();
    stop.store(true, Ordering::Relaxed);
    let log = match tokio::time::timeout(CALL + BOUND, calling).await {
        Ok(Ok(log)) => log,
        Ok(Err(panicked)) => panic!("the caller panicked: {panicked}"),
        Err(_) => panic!("the caller did not stop within {:?}", CALL + BOUND),
    };
    for node in candidates {
        node.leave().await;
    }
    a.leave().await;
    Handoffs {
        log,
        aborted,
        nodes_started,
    }
}

// ----- the table ------------------------------------------------------------------------------

fn row(what: &str, value: String, target: &str, met: Option<bool>) {
    let met = match met {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "",
    };
    println!("{what:<58} {value:>12} {target:>10} {met:>4}");
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1_000.0
}

async fn run(settings: Settings) {
    // 1 to 3: a calls the counter on b.
    let id = child_id("count");
    let a = builder("a").start().await.expect("node a starts");
    let b = builder("b")
        .seeds([a.local_addr()])
        .start()
        .await
        .expect("node b starts");
    wait_mesh(&[&a, &b], 2)
        .await
        .expect("a and b form a cluster");
    b.singleton(&id, ["counter"])
        .await
        .expect("b declares the counter");
    let first = tokio::time::timeout(BOUND, async {
        loop {
            if let Ok(reading) = a.call::<_, Reading>(&id, &Op::Get, CALL).await {
                return reading;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a reaches the counter");
    assert_eq!(first.node, "b", "the counter runs on b");

    if let Some(kind) = settings.profile {
        return profile(&a, &id, kind).await;
    }
    eprintln!("unloaded latency…");
    let latency = unloaded_latency(&a, &id, &settings).await;
    // Solo and the baseline take turns, round after round, so that a noisy moment of the
    // machine lands on both rather than on one of them.
    let client = bare_tokio::start().await.expect("the baseline connects");
    let mut rounds = Rounds::default();
    for round in 1..=settings.rounds {
        eprintln!(
            "throughput, round {round} of {}: pipelined, {TASKS} tasks, each with the \
             bare-tokio baseline…",
            settings.rounds
        );
        let calls = settings.throughput_calls;
        rounds
            .pipelined
            .push(with_cpu(pipelined(&a, &id, calls)).await);
        rounds
            .bare_pipelined
            .push(with_cpu(pipelined_bare(&client, calls)).await);
        rounds
            .concurrent
            .push(with_cpu(concurrent(&a, &id, calls)).await);
        rounds
            .bare_concurrent
            .push(with_cpu(concurrent_bare(&client, calls)).await);
    }
    drop(client);
    let last: Reading = a
        .call(&id, &Op::Get, CALL)
        .await
        .expect("the counter still answers");
    assert_eq!(last.node, "b", "the counter stayed on b");
    b.leave().await;
    a.leave().await;

    eprintln!("{} handoffs…", settings.handoffs);
    let handoffs = handoffs(settings.handoffs).await;
    let mut gaps: Vec<Duration> = handoffs.log.gaps.iter().map(|g| g.gap).collect();
    gaps.sort_unstable();

    println!();
    println!(
        "solo calls: Cluster nodes in one process over TCP on 127.0.0.1, a counter actor, tokio \
         multi-thread runtime with 2 worker threads"
    );
    row("measurement", "value".into(), "target", None);
    let n = latency.nanos.len();
    if n > 0 {
        let p99 = us(percentile(&latency.nanos, 99.0));
        row(
            &format!("a -> b, one call at a time ({n} calls): p50 us"),
            format!("{:.1}", us(percentile(&latency.nanos, 50.0))),
            "",
            None,
        );
        row(
            "  p99 us",
            format!("{p99:.1}"),
            "< 1000",
            Some(p99 < TARGET_P99_US),
        );
        row(
            "  p999 us",
            format!("{:.1}", us(percentile(&latency.nanos, 99.9))),
            "",
            None,
        );
        row(
            "  max us",
            format!("{:.1}", us(latency.nanos[n - 1])),
            "",
            None,
        );
    }
    for (what, runs) in [
        (
            format!("pipelined: 1 task, <= {WINDOW} in flight (JoinSet), calls/s"),
            &rounds.pipelined,
        ),
        (
            format!("{TASKS} tasks, 1 in flight each, calls/s"),
            &rounds.concurrent,
        ),
    ] {
        let rate = median_rate(runs);
        row(
            &what,
            format!("{rate:.0}"),
            ">= 100000",
            Some(rate >= TARGET_CALLS_PER_S),
        );
        row(&spread(runs), String::new(), "", None);
    }
    for (what, bare, ours) in [
        ("pipelined", &rounds.bare_pipelined, &rounds.pipelined),
        ("64 tasks", &rounds.bare_concurrent, &rounds.concurrent),
    ] {
        let errors: usize = bare.iter().map(|t| t.errors).sum();
        row(
            &format!("bare tokio, {what}, calls/s ({errors} errors)"),
            format!("{:.0}", median_rate(bare)),
            "",
            None,
        );
        row(&spread(bare), String::new(), "", None);
        // Each round's ratio is of two runs side by side; the median of those is the figure.
        let mut ratios: Vec<f64> = ours
            .iter()
            .zip(bare)
            .map(|(ours, bare)| ours.per_second() / bare.per_second())
            .collect();
        ratios.sort_by(f64::total_cmp);
        let ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);
        row(
            &format!("  solo / bare tokio, {what} (median of the rounds' ratios)"),
            format!("{ratio:.2}"),
            ">= 0.80",
            Some(ratio >= 0.8),
        );
        // On a machine whose cores are the limit, the CPU a call costs decides the rate,
        // and varies far less from run to run than the rate does.
        let (solo_cpu, bare_cpu) = (median_cpu(ours), median_cpu(bare));
        row(
            &format!("  CPU us per call, solo / bare tokio, {what}"),
            format!("{solo_cpu:.2} / {bare_cpu:.2}"),
            "",
            None,
        );
        row(
            &format!("  bare tokio's CPU per call / solo's, {what}"),
            format!("{:.2}", bare_cpu / solo_cpu.max(f64::MIN_POSITIVE)),
            "",
            None,
        );
    }
    let gap_count = gaps.len();
    if gap_count > 0 {
        let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
        let median = ms(percentile(&gaps, 50.0));
        let p99 = ms(percentile(&gaps, 99.0));
        row(
            &format!("handoff gap ({gap_count} handoffs): median ms"),
            format!("{median:.3}"),
            "< 5",
            Some(median < TARGET_GAP_MS),
        );
        row(
            "  p99 ms",
            format!("{p99:.3}"),
            "< 5",
            Some(p99 < TARGET_GAP_MS),
        );
        row(
            "  max ms",
            format!("{:.3}", ms(gaps[gap_count - 1])),
            "",
            None,
        );
        row("  min ms", format!("{:.3}", ms(gaps[0])), "", None);
    }
    println!();
    println!(
        "Latency percentiles are nearest-rank, after {} warm-up calls; p99 with fewer than 100 \
         handoffs is the maximum.",
        settings.warmup
    );
    println!(
        "Counts: latency {} errors, {} replies out of order; pipelined {} errors, each call \
         counted once: {}; {TASKS} tasks {} errors, each call counted once: {}.",
        latency.errors,
        latency.out_of_order,
        rounds.pipelined.iter().map(|t| t.errors).sum::<usize>(),
        rounds.pipelined.iter().all(|t| t.counted_once),
        rounds.concurrent.iter().map(|t| t.errors).sum::<usize>(),
        rounds.concurrent.iter().all(|t| t.counted_once),
    );
    let log = &handoffs.log;
    println!(
        "Handoffs: {} nodes started in all; the caller had {} replies, counts {}..={}, {} call \
         errors, {} breaks in the count (a count that went back or skipped).",
        handoffs.nodes_started,
        log.replies,
        log.first_count.unwrap_or(0),
        log.last_count.unwrap_or(0),
        log.errors.len(),
        log.breaks.len()
    );
    let moves: Vec<String> = log
        .gaps
        .iter()
        .map(|g| format!("{}->{} {:.3}", g.from, g.to, g.gap.as_secs_f64() * 1_000.0))
        .collect();
    eprintln!("handoffs (ms): {}", moves.join(", "));
    if !log.breaks.is_empty() || !log.errors.is_empty() {
        let journal = std::mem::take(&mut *JOURNAL.lock().unwrap_or_else(PoisonError::into_inner));
        eprintln!("the counters' journal (to explain the breaks below):");
        for line in &journal {
            eprintln!("  {line}");
        }
    }
    for error in log.errors.iter().take(10) {
        println!("  call error: {error}");
    }
    for broken in log.breaks.iter().take(10) {
        println!("  count break: {broken}");
    }
    if let Some(why) = &handoffs.aborted {
        println!("The handoff rounds stopped early: {why}");
    }

    assert!(
        latency.errors == 0 && latency.out_of_order == 0,
        "unloaded latency: every call answered, in order"
    );
    assert!(
        rounds
            .pipelined
            .iter()
            .chain(&rounds.concurrent)
            .all(|t| t.counted_once),
        "throughput: every call answered and counted once"
    );
    assert!(
        log.errors.is_empty() && log.breaks.is_empty(),
        "handoffs: every call answered and counted once, in order"
    );
    assert!(
        handoffs.aborted.is_none() && gap_count >= settings.handoffs,
        "handoffs: {} measured of {}",
        gap_count,
        settings.handoffs
    );
}

/// Runs one throughput kind again and again (see `--profile` in the module docs).
async fn profile(a: &Cluster, id: &ChildId, kind: Profile) {
    const ROUNDS: usize = 20;
    const CALLS: usize = 100_000;
    let client = bare_tokio::start().await.expect("the baseline connects");
    for round in 1..=ROUNDS {
        let run = match kind {
            Profile::SoloPipelined => with_cpu(pipelined(a, id, CALLS)).await,
            Profile::SoloTasks => with_cpu(concurrent(a, id, CALLS)).await,
            Profile::BarePipelined => with_cpu(pipelined_bare(&client, CALLS)).await,
            Profile::BareTasks => with_cpu(concurrent_bare(&client, CALLS)).await,
        };
        println!(
            "{kind:?} round {round}: {:.0} calls/s, {} errors, {:.2} us CPU per call",
            run.per_second(),
            run.errors,
            run.cpu_us_per_call()
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments are ignored.
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|arg| arg == "--quick");
    let profile = args.iter().position(|arg| arg == "--profile").map(|at| {
        match args.get(at + 1).map(String::as_str) {
            Some("solo-pipelined") => Profile::SoloPipelined,
            Some("solo-tasks") => Profile::SoloTasks,
            Some("bare-pipelined") => Profile::BarePipelined,
            Some("bare-tasks") => Profile::BareTasks,
            other => panic!(
                "--profile takes solo-pipelined, solo-tasks, bare-pipelined or bare-tasks, \
                 not {other:?}"
            ),
        }
    });
    // Built with the `prometheus` feature, the bench records every metric into the
    // Prometheus recorder, as `solo-node --metrics` does: the cost of instrumentation is the
    // difference between a run with the feature and one without.
    #[cfg(feature = "prometheus")]
    let _metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the Prometheus recorder installs");
    #[cfg(feature = "prometheus")]
    eprintln!("recording metrics into the Prometheus recorder");
    let settings = Settings {
        profile,
        ..if quick {
            Settings::QUICK
        } else {
            Settings::FULL
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // On a worker thread, as an application's code runs, not on this thread's `block_on`
    // (where every finished call would wake a thread parked outside the runtime).
    runtime
        .block_on(runtime.spawn(run(settings)))
        .expect("the bench runs to its end");
}
