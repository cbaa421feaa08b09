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
//! * `--name NAME`, `--listen ADDR:PORT` (required); `--seed HOST:PORT` (repeatable; a seed
//!   that does not answer yet is retried in the background, which is how a cluster cold
//!   starts, for up to `--seed-timeout SECS`, default 30, after which a node that has met no
//!   one exits with an error naming its seeds); `--cookie SECRET` or the `SOLO_COOKIE` environment variable (required);
//!   `--singleton NAME` (repeatable: a demo singleton that prints
//!   `I am singleton, hear me roar` every second while it runs); `--cluster NAME`
//!   (default `solo`); `--json`.
//! * `--json` prints one JSON object per line, each with `ts_us` (microseconds since the Unix
//!   epoch), `node` and `event`: `ready` (with `listen`), `member_up` / `member_down` /
//!   `member_left` (with `member`), `worker_started` (with `name`, once the worker task runs),
//!   `worker_stopped` (with `name` and `reason`, once the task has ended), `roar` (with
//!   `name`), `left`. Without `--json`, the same as readable lines.
//! * SIGTERM and SIGINT leave gracefully: workers move to other nodes before the exit.
//! * A bad or missing flag, an unresolvable seed, a port in use: one line on stderr naming the
//!   problem, and exit status 2 (usage) or 1 (runtime). Never a panic or a backtrace.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use solo::{Cluster, Event, MemberEvent, WorkerContext, WorkerError};

const USAGE: &str = "usage: solo-node --name NAME --listen ADDR:PORT [--seed HOST:PORT]... \
                     [--seed-timeout SECS] [--cookie SECRET | SOLO_COOKIE=...] [--singleton NAME]... \
                     [--cluster NAME] [--json]";

struct Args {
    name: String,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
    cookie: String,
    singletons: Vec<String>,
    cluster: String,
    json: bool,
    seed_timeout: Duration,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut name = None;
    let mut listen = None;
    let mut seeds = Vec::new();
    let mut cookie = std::env::var("SOLO_COOKIE").ok();
    let mut singletons = Vec::new();
    let mut cluster = "solo".to_owned();
    let mut json = false;
    let mut seed_timeout = Duration::from_secs(30);
    while let Some(flag) = argv.next() {
        let mut value = |flag: &str| argv.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => name = Some(value("--name")?),
            "--listen" => {
                let raw = value("--listen")?;
                let addr = raw
                    .parse()
                    .map_err(|_| format!("--listen {raw:?} is not an ADDR:PORT"))?;
                listen = Some(addr);
            }
            "--seed" => {
                let raw = value("--seed")?;
                let addr = raw
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve seed {raw:?}: {e}"))?
                    .next()
                    .ok_or(format!("seed {raw:?} resolves to no address"))?;
                seeds.push(addr);
            }
            "--cookie" => cookie = Some(value("--cookie")?),
            "--singleton" => singletons.push(value("--singleton")?),
            "--cluster" => cluster = value("--cluster")?,
            "--json" => json = true,
            "--seed-timeout" => {
                let raw = value("--seed-timeout")?;
                let secs: u64 = raw
                    .parse()
                    .map_err(|_| format!("--seed-timeout {raw:?} is not a number of seconds"))?;
                seed_timeout = Duration::from_secs(secs);
            }
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(Args {
        name: name.ok_or("--name is required")?,
        listen: listen.ok_or("--listen is required")?,
        seeds,
        cookie: cookie
            .filter(|c| !c.is_empty())
            .ok_or("--cookie (or SOLO_COOKIE) is required")?,
        singletons,
        cluster,
        json,
        seed_timeout,
    })
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
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("solo-node: {message}");
            return ExitCode::from(2);
        }
    };
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
    match runtime.block_on(run(args)) {
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
    let roar_printer = printer.clone();
    let roar = move |ctx: WorkerContext| {
        let printer = roar_printer.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = ctx.shutdown() => return Ok::<(), WorkerError>(()),
                    _ = tick.tick() => printer.print(
                        "roar",
                        &[("name", ctx.id().as_str())],
                        &format!("I am singleton, hear me roar ({})", ctx.id()),
                    ),
                }
            }
        }
    };
    let cluster = Cluster::builder()
        .node_name(args.name)
        .listen(args.listen)
        .seeds(args.seeds.clone())
        .cookie(args.cookie)
        .cluster_name(args.cluster)
        .worker("roar", roar)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let mut events = cluster.events();
    for name in &args.singletons {
        cluster
            .singleton(name, ["roar"])
            .await
            .map_err(|e| format!("cannot declare singleton {name:?}: {e}"))?;
    }
    let listen = cluster.local_addr().to_string();
    printer.print(
        "ready",
        &[("listen", &listen)],
        &format!("ready on {listen}"),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let seeds = args.seeds.clone();
    let mut met_someone = seeds.is_empty();
    let seed_deadline = tokio::time::sleep(args.seed_timeout);
    tokio::pin!(seed_deadline);
    loop {
        tokio::select! {
            () = &mut seed_deadline, if !met_someone => {
                cluster.leave().await;
                let list: Vec<String> = seeds.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "no seed answered within {}s: {}",
                    args.seed_timeout.as_secs(),
                    list.join(", ")
                ));
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            event = events.recv() => match event {
                Ok(event) => {
                    met_someone |= matches!(event, Event::Member(MemberEvent::Up(_)));
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

fn print_event(printer: &Printer, event: &Event) {
    match event {
        Event::Member(member) => {
            let (kind, id) = match member {
                MemberEvent::Up(id) => ("member_up", id),
                MemberEvent::Down(id) => ("member_down", id),
                MemberEvent::Left(id) => ("member_left", id),
                MemberEvent::Suspect(id) => ("member_suspect", id),
                MemberEvent::Refuted(id) => ("member_refuted", id),
                _ => return,
            };
            let id = id.to_string();
            let text = format!("{} {id}", kind.replace('_', " "));
            printer.print(kind, &[("member", &id)], &text);
        }
        Event::WorkerStarted { id, .. } => {
            printer.print(
                "worker_started",
                &[("name", id.as_str())],
                &format!("worker started: {id}"),
            );
        }
        Event::WorkerStopped { id, reason, .. } => {
            printer.print(
                "worker_stopped",
                &[("name", id.as_str()), ("reason", reason)],
                &format!("worker stopped: {id} ({reason})"),
            );
        }
        Event::Superseded { by } => {
            let by = by.to_string();
            printer.print("superseded", &[("by", &by)], &format!("superseded by {by}"));
        }
        _ => {}
    }
}
