//! `solo-node`: runs one solo node from the command line, the way
//! `elixir --sname bob --cookie foo -S mix run --no-halt` runs a BEAM node.
//!
//! ```text
//! solo-node --name a --listen 127.0.0.1:7001 --seed 127.0.0.1:7002 --seed 127.0.0.1:7003 \
//!           --cookie secret --singleton roar [--json]
//! ```
//!
//! The flags and the output are a contract that tests and operators script against:
//!
//! * `--name NAME`, `--listen ADDR:PORT` (required); `--seed HOST:PORT` (repeatable; an
//!   address, or a DNS name resolved again every 5 s, so that a headless service's pods are
//!   found again with new addresses; a seed that does not answer, or a name that does not
//!   resolve, yet is retried in the background, which is how a cluster cold starts, for up to `--seed-timeout SECS`, default 30, after which a node that has met no
//!   one exits with an error naming its seeds); the cluster's secret (required, at least
//!   16 bytes: a shorter one is refused with one line): `--cookie-file PATH` (the file's
//!   contents, without a trailing newline), the `SOLO_COOKIE` environment variable, or
//!   `--cookie SECRET` (visible to every user in `ps`: for tests); `--discover multicast`
//!   (find peers with no seed list: beacons signed with the cookie on the UDP multicast
//!   group `--multicast-group ADDR:PORT`, default 239.255.83.79:7979, through the interface
//!   of `--listen` or `--multicast-interface IP`; see `solo::MulticastDiscovery`);
//!   `--singleton NAME` (repeatable: a demo singleton, an actor that prints
//!   `I am singleton, hear me roar` every second while it runs and counts its roars; it
//!   hands the count over when it moves on purpose, so the count goes on after a graceful
//!   handover and starts again from 0 after a crash); `--exclusive-singleton NAME`
//!   (repeatable: the same demo singleton in `Exclusive` mode: at most one instance at any
//!   instant, under a lease from a majority of the voters; it prints its fencing token with
//!   each roar, and roars only while its lease is valid); `--voter NAME` (repeatable: the
//!   cluster's voters, the same list on every node; required with
//!   `--exclusive-singleton`); `--data-dir PATH` (where a voter keeps its highest lease
//!   token); `--crash-evidence` (opt-in: voters free the lease of an owner whose port
//!   refuses connections at once, so an exclusive singleton fails over in milliseconds
//!   after a kill; wrong behind a firewall that rejects with resets, see
//!   `solo::Config::crash_evidence`); `--fenced-store ADDR` (the exclusive demo singleton writes each roar, with its
//!   token, as the line `NAME TOKEN COUNT` to a TCP store at ADDR, and prints its one-line
//!   answer as `store_reply` with `name`, `token`, `count` and `reply`);
//!   `--store-delay-ms N` (each such write travels N ms first, as over a slow network;
//!   default 0); `--cluster NAME` (default `solo`); `--json`; `--metrics ADDR:PORT` (built
//!   with the `prometheus` feature: an HTTP endpoint with the node's metrics in the
//!   Prometheus text format at `/metrics`, as listed in the `solo` crate's docs, and its
//!   view of the cluster as JSON at `/status`: `node`, `members` (each with `name`,
//!   `incarnation`, `addr`, `state`, `roles`, `draining`) and `children` (each with `id`,
//!   `singleton`, `mode`, `owner`, and `running_here`: `null`, or `instance`, `since_ms`
//!   and `token` on the node that runs it); port 0 picks one, which `ready` names).
//! * `--json` prints one JSON object per line, each with `ts_us` (microseconds since the Unix
//!   epoch, read as the line is printed: by the worker itself for `roar`, as the node's
//!   events reach the printer for the rest, which under load can be milliseconds after the
//!   event), `node` and `event`: `ready` (with `listen`, and `metrics` with `--metrics`), `member_up` / `member_down` /
//!   `member_left` (with `member`), `worker_started` (with `name`, and `token` for an
//!   exclusive singleton, once the worker task runs), `worker_stopped` (with `name` and
//!   `reason`, once the task has ended), `roar` (with `name`, `count`, and `token` when
//!   exclusive), `lease_acquired` (with `name` and `token`), `lease_lost` (with `name` and
//!   `reason`: `not renewed` or `taken`), `peer_misconfigured` (with `addr` and `reason`: a
//!   peer dialed has another cluster name, version or voter set), `superseded` (with `by`),
//!   `handoff_failed` (with `name` and `reason`: the state could not move),
//!   `message_dropped` (with `name`, empty for an answer, `what`: `cast`, `state` or
//!   `reply`, and `reason`: `NoOwner`, `Full`, `NotAwaited`, `Expired`, `Unsent` or
//!   `TooLarge`), `left`. Without `--json`, the same as readable lines.
//! * A process that learns a newer process with its name exists (it was frozen, or cut
//!   off, while a replacement started) stops its workers at once, prints `superseded`, and
//!   exits with status 1 and one line on stderr saying so.
//! * Transport: `--transport tcp` (default) or `--transport quic` (built with the `quic`
//!   feature). `--certs DIR` turns on mutual TLS (TLS over TCP, or QUIC's) with
//!   `DIR/ca.pem`, `DIR/NAME.pem` and `DIR/NAME.key` (built with the `tls` feature); `--ca`,
//!   `--cert` and `--key FILE` name the files one by one instead. QUIC requires certificates.
//! * `solo-node call NAME MESSAGE... --seed HOST:PORT --cookie SECRET [--timeout SECS]` joins
//!   as an observer (a member that never runs anything), calls the actor `NAME` with the
//!   text `MESSAGE` (its words joined by spaces: `call roar add 5`), prints its text reply and leaves. The demo singleton answers `get`
//!   and `add N` with its count. Takes `--cluster`, `--transport`, `--certs`/`--ca`/
//!   `--cert`/`--key`, `--name` and `--listen` (default `127.0.0.1:0`) as a node does;
//!   over TLS or QUIC its `--name` must be one its certificate names (peers check).
//! * `solo-node status --seed HOST:PORT [--json] [--timeout SECS]` (or `--discover
//!   multicast` instead of `--seed`) joins as an observer,
//!   waits until its view of the children has settled (or `--timeout`, default 5 s), prints
//!   the members (without itself) and every singleton and child with its kind, mode and
//!   owner as a table, or with `--json` the same object as `--metrics`'s `/status`, and
//!   leaves. Takes the flags `call` takes.
//! * `solo-node certs --out DIR [--cluster NAME] NODE...` (built with the `certgen` feature)
//!   writes a new cluster CA (`ca.pem`, `ca.key`) and a certificate and key per node, and
//!   refuses to overwrite any file.
//! * `solo-node run ...` is the same as `solo-node ...` with no subcommand. `--help` (of
//!   `solo-node` and of each subcommand) lists every flag with its help; `--version`
//!   prints the version; both exit 0. Deployment settings may come from the environment
//!   instead: `SOLO_NAME`, `SOLO_LISTEN`, `SOLO_SEEDS` (a comma-separated list of seeds),
//!   `SOLO_CLUSTER`, `SOLO_DATA_DIR`, `SOLO_METRICS`, and the secret from `SOLO_COOKIE`; a
//!   flag beats its variable. `call` and `status` read only `SOLO_SEEDS`, `SOLO_CLUSTER` and
//!   `SOLO_COOKIE`: in a pod they must not take the pod's own node name.
//! * SIGTERM and SIGINT leave gracefully: workers move to other nodes before the exit.
//! * A bad or missing flag, an unresolvable seed, a port in use: one line on stderr naming the
//!   problem, and exit status 2 (usage) or 1 (runtime). Never a panic or a backtrace.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use solo::{
    Actor, CallError, Cluster, ClusterBuilder, Event, Handoff, MemberEvent, WorkerContext,
    WorkerError,
};

mod cli;
#[cfg(feature = "prometheus")]
mod endpoint;
mod view;

use cli::{Args, CertFiles, Invocation, TransportKind};

#[cfg(feature = "certgen")]
fn write_certs(out: &Path, cluster: &str, nodes: &[String]) -> Result<String, String> {
    let files = solo::tls::write_cluster(out, cluster, nodes).map_err(|e| e.to_string())?;
    let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Ok(format!("wrote {}", list.join(" ")))
}

#[cfg(not(feature = "certgen"))]
fn write_certs(_: &Path, _: &str, _: &[String]) -> Result<String, String> {
    Err("certs: this solo-node was built without the `certgen` feature".to_owned())
}

/// Prints one event line, as JSON or as text.
#[derive(Clone)]
struct Printer {
    node: String,
    json: bool,
}

impl Printer {
    fn print(&self, event: &str, fields: &[(&str, &str)], text: &str) {
        if self.json {
            let ts_us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            let mut line = format!(
                "{{\"ts_us\":{ts_us},\"node\":{},\"event\":{}",
                quote(&self.node),
                quote(event)
            );
            for (key, value) in fields {
                line.push_str(&format!(",{}:{}", quote(key), quote(value)));
            }
            line.push('}');
            println!("{line}");
        } else {
            println!("[{}] {text}", self.node);
        }
    }
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args().skip(1), std::env::var("SOLO_COOKIE").ok()) {
        Ok(invocation) => invocation,
        Err(cli::Refusal::Display(shown)) => {
            // --help and --version: to stdout, status 0.
            let _ = shown.print();
            return ExitCode::SUCCESS;
        }
        Err(cli::Refusal::Usage(message)) => {
            eprintln!("solo-node: {message}");
            return ExitCode::from(2);
        }
    };
    match invocation {
        Invocation::Certs {
            out,
            cluster,
            nodes,
        } => match write_certs(&out, &cluster, &nodes) {
            Ok(done) => {
                println!("{done}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("solo-node: {message}");
                ExitCode::from(2)
            }
        },
        Invocation::Run(args) => on_a_runtime(run(args)),
        Invocation::Call(args) => on_a_runtime(call(args)),
        Invocation::Status(args) => on_a_runtime(status(args)),
    }
}

/// Runs `work` (`run`, `call` or `status`) on a runtime of its own; an error is one line
/// and status 1.
fn on_a_runtime(work: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("solo-node: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("solo-node: {message}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let printer = Printer {
        node: args.name.clone(),
        json: args.json,
    };
    let _ = PRINTER.set(printer.clone());
    if let Some(store) = args.fenced_store {
        let _ = STORE.set(store);
    }
    let builder = joining(&args)?
        .voters(args.voters.clone())
        .config({
            let mut config = solo::Config::default();
            config.crash_evidence = args.crash_evidence;
            config
        })
        .actor::<Roar>("roar");
    let builder = match &args.data_dir {
        Some(dir) => builder.data_dir(dir),
        None => builder,
    };
    // The recorder goes in before the node starts: the node keeps handles made at start.
    #[cfg(feature = "prometheus")]
    let endpoint = match args.metrics {
        Some(addr) => Some(endpoint::Endpoint::bind(addr).await?),
        None => None,
    };
    #[cfg(feature = "prometheus")]
    let metrics_addr = match &endpoint {
        Some(endpoint) => Some(endpoint.local_addr()?.to_string()),
        None => None,
    };
    #[cfg(not(feature = "prometheus"))]
    let metrics_addr: Option<String> = None;
    let cluster = builder.start().await.map_err(|e| e.to_string())?;
    #[cfg(feature = "prometheus")]
    if let Some(endpoint) = endpoint {
        endpoint.serve(cluster.clone());
    }
    let mut events = cluster.events();
    for name in &args.singletons {
        let id =
            solo::ChildId::new(name.clone()).map_err(|e| format!("--singleton {name:?}: {e}"))?;
        cluster
            .singleton(&id, ["roar"])
            .await
            .map_err(|e| format!("cannot declare singleton {name:?}: {e}"))?;
    }
    for name in &args.exclusive_singletons {
        let id = solo::ChildId::new(name.clone())
            .map_err(|e| format!("--exclusive-singleton {name:?}: {e}"))?;
        let spec = solo::ChildSpec::new(id, "roar", Vec::new()).mode(solo::Mode::Exclusive);
        cluster
            .declare_singleton(spec)
            .await
            .map_err(|e| format!("cannot declare exclusive singleton {name:?}: {e}"))?;
    }
    let listen = cluster.local_addr().to_string();
    match &metrics_addr {
        Some(metrics) => printer.print(
            "ready",
            &[("listen", &listen), ("metrics", metrics)],
            &format!("ready on {listen}, metrics on http://{metrics}/metrics"),
        ),
        None => printer.print(
            "ready",
            &[("listen", &listen)],
            &format!("ready on {listen}"),
        ),
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let seeds: Vec<String> = args
        .seeds
        .iter()
        .map(ToString::to_string)
        .chain(args.seed_names.iter().cloned())
        .collect();
    let mut met_someone = seeds.is_empty();
    // Workers running here, as the events tell: a superseded node waits for their ends.
    let mut running = 0usize;
    let seed_deadline = tokio::time::sleep(args.seed_timeout);
    tokio::pin!(seed_deadline);
    loop {
        tokio::select! {
            () = &mut seed_deadline, if !met_someone => {
                cluster.leave().await;
                return Err(format!(
                    "no seed answered within {}s: {}",
                    args.seed_timeout.as_secs(),
                    seeds.join(", ")
                ));
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            event = events.recv() => match event {
                Ok(Event::Superseded { by }) => {
                    print_event(&printer, &Event::Superseded { by: by.clone() });
                    return Err(superseded_exit(running, &mut events, &printer, &by).await);
                }
                Ok(event) => {
                    met_someone |= matches!(event, Event::Member(MemberEvent::Up(_)));
                    match event {
                        Event::WorkerStarted { .. } => running += 1,
                        Event::WorkerStopped { .. } => running = running.saturating_sub(1),
                        _ => {}
                    }
                    print_event(&printer, &event);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(n, "event printer fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    let leave = cluster.leave();
    tokio::pin!(leave);
    // Keep printing while the node drains, so that `worker_stopped` lines appear.
    loop {
        tokio::select! {
            () = &mut leave => break,
            Ok(event) = events.recv() => print_event(&printer, &event),
        }
    }
    while let Ok(event) = events.try_recv() {
        print_event(&printer, &event);
    }
    printer.print("left", &[], "left the cluster");
    Ok(())
}

/// A newer process took this node's name: the core stopped every worker (no handoff).
/// Prints their ends as they come (bounded by the shutdown grace), then says why it exits.
async fn superseded_exit(
    running: usize,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    printer: &Printer,
    by: &solo::NodeId,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut stopped = 0;
    while stopped < running {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => {
                stopped += usize::from(matches!(event, Event::WorkerStopped { .. }));
                print_event(printer, &event);
            }
            _ => break,
        }
    }
    while let Ok(event) = events.try_recv() {
        print_event(printer, &event);
    }
    format!(
        "superseded: a newer process with this name ({by}) joined the cluster; this one stopped"
    )
}

/// The printer the demo singleton prints through (set once, before the node starts).
static PRINTER: std::sync::OnceLock<Printer> = std::sync::OnceLock::new();

/// `--fenced-store` and `--store-delay-ms`: where an exclusive demo singleton writes each
/// roar, with its token, and how long a write travels first.
static STORE: std::sync::OnceLock<(SocketAddr, Duration)> = std::sync::OnceLock::new();

/// Writes one roar to the fenced store, as a task of its own: once sent, a write is out of
/// the worker's hands (the store's fence, not the worker, decides what a late one does).
/// The store answers one line, which is printed as `store_reply`.
fn write_to_store(name: String, token: u64, count: u64) {
    let Some(&(addr, delay)) = STORE.get() else {
        return;
    };
    tokio::spawn(async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        tokio::time::sleep(delay).await;
        let reply = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream
                .write_all(format!("{name} {token} {count}\n").as_bytes())
                .await?;
            let mut line = String::new();
            tokio::io::BufReader::new(stream)
                .read_line(&mut line)
                .await?;
            Ok::<String, std::io::Error>(line.trim().to_owned())
        }
        .await
        .unwrap_or_else(|e| format!("store unreachable: {e}"));
        if let Some(printer) = PRINTER.get() {
            let (token, count) = (token.to_string(), count.to_string());
            printer.print(
                "store_reply",
                &[
                    ("name", &name),
                    ("token", &token),
                    ("count", &count),
                    ("reply", &reply),
                ],
                &format!("store: {reply} (write {count} of {name}, token {token})"),
            );
        }
    });
}

/// The demo singleton: roars every second and counts its roars; the count is handed over
/// when it moves on purpose. Answers the text calls `get` and `add N`.
struct Roar {
    count: u64,
}

impl Actor for Roar {
    type Call = String;
    type Reply = String;
    type Cast = String;
    type State = u64;

    const TICK: Option<Duration> = Some(Duration::from_secs(1));

    async fn start(_: &WorkerContext, handed_over: Option<u64>) -> Result<Self, WorkerError> {
        Ok(Roar {
            count: handed_over.unwrap_or(0),
        })
    }

    async fn handle_tick(&mut self, ctx: &WorkerContext) -> Result<(), WorkerError> {
        // An exclusive roar is an effect only the lease holder may have: checked at the
        // last moment, against the clock (the actor loop checked too, before this tick).
        if !ctx.lease_valid() {
            return Ok(());
        }
        self.count += 1;
        if let Some(printer) = PRINTER.get() {
            let count = self.count.to_string();
            match ctx.fencing_token() {
                Some(token) => {
                    write_to_store(ctx.id().to_string(), token, self.count);
                    let token = token.to_string();
                    printer.print(
                        "roar",
                        &[
                            ("name", ctx.id().as_str()),
                            ("count", &count),
                            ("token", &token),
                        ],
                        &format!(
                            "I am singleton, hear me roar ({}, roar {count}, token {token})",
                            ctx.id()
                        ),
                    );
                }
                None => printer.print(
                    "roar",
                    &[("name", ctx.id().as_str()), ("count", &count)],
                    &format!("I am singleton, hear me roar ({}, roar {count})", ctx.id()),
                ),
            }
        }
        Ok(())
    }

    async fn handle_call(
        &mut self,
        text: String,
        _: &WorkerContext,
    ) -> Result<String, WorkerError> {
        let mut words = text.split_whitespace();
        Ok(match (words.next(), words.next().map(str::parse::<u64>)) {
            (Some("get"), None) => self.count.to_string(),
            (Some("add"), Some(Ok(n))) => {
                self.count = self.count.saturating_add(n);
                self.count.to_string()
            }
            _ => format!("unknown request {text:?}: try `get` or `add N`"),
        })
    }

    async fn begin_handoff(&mut self, _: &WorkerContext) -> Handoff<u64> {
        Handoff::Resume(self.count)
    }
}

/// `solo-node call`: join as an observer, call, print the reply, leave.
async fn call(args: Args) -> Result<(), String> {
    let Some((target, message, timeout)) = args.call.clone() else {
        return Err("call: nothing to call".to_owned());
    };
    let target: solo::ChildId = target
        .parse()
        .map_err(|e| format!("call: {target:?}: {e}"))?;
    let cluster = join_as_observer(&args).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    // Until it has joined, this node knows no names: a `NoSuchName` then is not final.
    let answer = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let joined = cluster.members().await.map_err(|e| e.to_string())?.len() > 1;
        match cluster.call::<_, String>(&target, &message, left).await {
            Err(CallError::NoSuchName(_)) if !joined && !left.is_zero() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other,
        }
    };
    cluster.leave().await;
    let reply = answer.map_err(|e| format!("call {target}: {e}"))?;
    println!("{reply}");
    Ok(())
}

/// `call` and `status`: a node that only looks (it runs nothing), joined through the seeds.
async fn join_as_observer(args: &Args) -> Result<Cluster, String> {
    let builder = joining(args)?.observer();
    builder.start().await.map_err(|e| e.to_string())
}

/// What every subcommand that joins builds on: the node's name and address, how it finds
/// the cluster (seeds, names, discovery), its secret and transport.
fn joining(args: &Args) -> Result<ClusterBuilder, String> {
    let builder = Cluster::builder()
        .node_name(args.name.clone())
        .listen(args.listen)
        .seeds(args.seeds.clone())
        .seed_names(args.seed_names.clone())
        .cookie(args.cookie.clone())
        .cluster_name(args.cluster.clone());
    let builder = match args.discovery.clone() {
        Some(discovery) => builder.discover_multicast(discovery),
        None => builder,
    };
    with_transport(builder, args.transport, &args.certs, &args.name)
}

/// `solo-node status`: joins as an observer, waits until its view of the children has not
/// changed for a moment (or the timeout), prints it, and leaves.
async fn status(args: Args) -> Result<(), String> {
    let timeout = args.status.unwrap_or(Duration::from_secs(5));
    let cluster = join_as_observer(&args).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    // Joined, and what gossip brings (the singletons' specs and owners) has stopped moving.
    const SETTLED: Duration = Duration::from_millis(300);
    let mut last: Option<(solo::ClusterStatus, tokio::time::Instant)> = None;
    let view = loop {
        let now = tokio::time::Instant::now();
        let view = cluster.status().await.map_err(|e| e.to_string())?;
        let joined = view.members.len() > 1;
        match &last {
            Some((previous, since)) if joined && *previous == view => {
                if now - *since >= SETTLED || now >= deadline {
                    break view;
                }
            }
            _ => last = Some((view.clone(), now)),
        }
        if now >= deadline {
            if !joined {
                cluster.leave().await;
                return Err(format!(
                    "status: met no member through {:?} {:?} within {timeout:?}",
                    args.seeds, args.seed_names
                ));
            }
            break view;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.leave().await;
    if args.json {
        print!("{}", view::status_json(&view));
    } else {
        print!("{}", view::status_table(&view, &args.name));
    }
    Ok(())
}

/// Applies `--transport` and the certificate flags, or says which feature is missing.
fn with_transport(
    builder: ClusterBuilder,
    transport: TransportKind,
    certs: &CertFiles,
    name: &str,
) -> Result<ClusterBuilder, String> {
    if transport == TransportKind::Tcp && certs.is_empty() {
        return Ok(builder);
    }
    #[cfg(feature = "tls")]
    {
        let [ca, cert, key] = certs.resolve(name)?;
        let tls = solo::tls::TlsConfig::from_files(ca, cert, key).map_err(|e| e.to_string())?;
        match transport {
            TransportKind::Tcp => Ok(builder.tls(tls)),
            #[cfg(feature = "quic")]
            TransportKind::Quic => Ok(builder.quic(tls)),
            #[cfg(not(feature = "quic"))]
            TransportKind::Quic => {
                Err("--transport quic: this solo-node was built without the `quic` feature".into())
            }
        }
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = (builder, name, certs.resolve(name));
        Err("certificates given, but this solo-node was built without the `tls` feature".into())
    }
}

fn print_event(printer: &Printer, event: &Event) {
    match event {
        Event::Member(member) => {
            let (kind, id) = (event.name().unwrap_or("member"), member.member());
            let id = id.to_string();
            let text = format!("{} {id}", kind.replace('_', " "));
            printer.print(kind, &[("member", &id)], &text);
        }
        Event::WorkerStarted { id, token, .. } => match token {
            Some(token) => {
                let token = token.to_string();
                printer.print(
                    "worker_started",
                    &[("name", id.as_str()), ("token", &token)],
                    &format!("worker started: {id} (token {token})"),
                );
            }
            None => printer.print(
                "worker_started",
                &[("name", id.as_str())],
                &format!("worker started: {id}"),
            ),
        },
        Event::Supervisor(solo::SupervisorEvent::LeaseAcquired { id, token }) => {
            let token = token.to_string();
            printer.print(
                "lease_acquired",
                &[("name", id.as_str()), ("token", &token)],
                &format!("lease acquired: {id} (token {token})"),
            );
        }
        Event::Supervisor(solo::SupervisorEvent::LeaseLost { id, reason, .. }) => {
            let reason = match reason {
                solo::LeaseLoss::NotRenewed => "not renewed",
                solo::LeaseLoss::Taken => "taken",
                _ => "lost",
            };
            printer.print(
                "lease_lost",
                &[("name", id.as_str()), ("reason", reason)],
                &format!("lease lost: {id} ({reason})"),
            );
        }
        Event::WorkerStopped { id, reason, .. } => {
            let reason = reason.to_string();
            printer.print(
                "worker_stopped",
                &[("name", id.as_str()), ("reason", &reason)],
                &format!("worker stopped: {id} ({reason})"),
            );
        }
        Event::PeerMisconfigured { addr, reason } => {
            let addr = addr.to_string();
            printer.print(
                "peer_misconfigured",
                &[("addr", &addr), ("reason", reason)],
                &format!("peer {addr} is configured for another cluster: {reason}"),
            );
        }
        Event::Superseded { by } => {
            let by = by.to_string();
            printer.print("superseded", &[("by", &by)], &format!("superseded by {by}"));
        }
        Event::HandoffFailed { id, error, .. } => {
            let error = error.to_string();
            printer.print(
                "handoff_failed",
                &[("name", id.as_str()), ("reason", &error)],
                &format!("handoff failed: {id} ({error})"),
            );
        }
        Event::MessageDropped { id, what, reason } => {
            let (what, reason) = (format!("{what:?}").to_lowercase(), format!("{reason:?}"));
            let name = id.as_ref().map_or("", solo::ChildId::as_str);
            printer.print(
                "message_dropped",
                &[("name", name), ("what", &what), ("reason", &reason)],
                &format!("{what} dropped: {name} ({reason})"),
            );
        }
        _ => {}
    }
}
