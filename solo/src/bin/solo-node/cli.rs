//! `solo-node`'s command line: clap's derive, then the checks clap cannot express, into one
//! [`Invocation`]. Every error is one line (`solo-node: ...` on stderr, status 2): scripts and
//! supervisors log the first line, and clap's usage block after it would only push the
//! reason out of sight.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

/// What the command line asks for, checked.
#[derive(Debug)]
pub(crate) enum Invocation {
    /// Run a node (`solo-node run ...`, or no subcommand at all).
    Run(Args),
    /// `solo-node call NAME MESSAGE...`.
    Call(Args),
    /// `solo-node status`.
    Status(Args),
    /// `solo-node certs --out DIR NODE...`.
    Certs {
        out: PathBuf,
        cluster: String,
        nodes: Vec<String>,
    },
}

/// Why the command line did not give an [`Invocation`].
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A bad or missing flag: this one line, and exit status 2.
    Usage(String),
    /// `--help` or `--version`: clap prints it to stdout, and the process exits 0.
    Display(clap::Error),
}

/// Which transport carries the node's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TransportKind {
    /// TCP, authenticated by the cookie (and TLS with `--certs`).
    Tcp,
    /// QUIC with mutual TLS (needs `--certs`).
    Quic,
}

/// How to find peers without a seed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Discover {
    /// Beacons signed with the cookie on a UDP multicast group (the local network).
    Multicast,
}

/// Where the node's certificate files are, if TLS is on.
#[derive(Debug, Default, Clone, ClapArgs)]
pub(crate) struct CertFiles {
    /// Turn on mutual TLS with DIR/ca.pem, DIR/NAME.pem and DIR/NAME.key (as `solo-node
    /// certs` writes them).
    #[arg(long = "certs", value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// The cluster CA's certificate (instead of DIR/ca.pem).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// This node's certificate (instead of DIR/NAME.pem).
    #[arg(long, value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// This node's private key (instead of DIR/NAME.key).
    #[arg(long, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
}

impl CertFiles {
    pub(crate) fn is_empty(&self) -> bool {
        self.dir.is_none() && self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The three files: each named flag, or its default in `--certs DIR`.
    pub(crate) fn resolve(&self, name: &str) -> Result<[PathBuf; 3], String> {
        let pick = |explicit: &Option<PathBuf>, flag: &str, file: String| {
            explicit
                .clone()
                .or_else(|| self.dir.as_ref().map(|dir| dir.join(file)))
                .ok_or(format!("{flag} or --certs is required for TLS"))
        };
        Ok([
            pick(&self.ca, "--ca", "ca.pem".to_owned())?,
            pick(&self.cert, "--cert", format!("{name}.pem"))?,
            pick(&self.key, "--key", format!("{name}.key"))?,
        ])
    }
}

/// A checked command line for `run`, `call` and `status`.
#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) name: String,
    pub(crate) listen: SocketAddr,
    pub(crate) seeds: Vec<SocketAddr>,
    /// `--seed`s given by name, resolved by the node again and again.
    pub(crate) seed_names: Vec<String>,
    pub(crate) cookie: String,
    pub(crate) singletons: Vec<String>,
    pub(crate) exclusive_singletons: Vec<String>,
    pub(crate) voters: Vec<String>,
    pub(crate) data_dir: Option<PathBuf>,
    /// `solo::Config::crash_evidence`.
    pub(crate) crash_evidence: bool,
    /// Where the exclusive demo singleton writes its roars, and after what delay.
    pub(crate) fenced_store: Option<(SocketAddr, Duration)>,
    pub(crate) cluster: String,
    pub(crate) json: bool,
    pub(crate) seed_timeout: Duration,
    pub(crate) transport: TransportKind,
    pub(crate) certs: CertFiles,
    /// `--discover multicast`, with its group and interface.
    pub(crate) discovery: Option<solo::MulticastDiscovery>,
    /// `solo-node call`: the name, the message and the timeout.
    pub(crate) call: Option<(String, String, Duration)>,
    /// `solo-node status`: how long to wait for the view to settle.
    pub(crate) status: Option<Duration>,
    /// `--metrics ADDR`: where `/metrics` and `/status` are served (refused at parsing
    /// without the `prometheus` feature).
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
    pub(crate) metrics: Option<SocketAddr>,
}

/// Runs one solo node: cluster-wide singletons that survive the loss of their node.
///
/// With no subcommand, runs a node (as `solo-node run`). SIGTERM and SIGINT leave
/// gracefully: workers move to other nodes before the exit.
#[derive(Debug, Parser)]
#[command(name = "solo-node", version)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (the default: `solo-node --name a ...` is `solo-node run --name a ...`).
    Run(RunArgs),
    /// Join as an observer, call a named actor with a text message, print its reply, leave.
    Call(CallArgs),
    /// Join as an observer, print the members and every singleton and child, leave.
    Status(StatusArgs),
    /// Write a new cluster CA and a certificate and key per node (refuses to overwrite).
    Certs(CertsArgs),
}

/// How to reach and join the cluster: every subcommand that joins takes these.
#[derive(Debug, ClapArgs)]
struct JoinArgs {
    /// A member to join through: ADDR:PORT, or HOST:PORT resolved again every 5 s (a
    /// headless service's pods come back with new addresses). Repeatable; SOLO_SEEDS takes
    /// a comma-separated list.
    #[arg(long = "seed", value_name = "HOST:PORT", env = "SOLO_SEEDS", value_delimiter = ',', value_parser = parse_seed)]
    seeds: Vec<Seed>,
    /// The cluster's secret, at least 16 bytes (visible in `ps`: for tests). Without
    /// --cookie or --cookie-file, the SOLO_COOKIE environment variable.
    #[arg(long, value_name = "SECRET")]
    cookie: Option<String>,
    /// A file holding the cluster's secret (a trailing newline is dropped).
    #[arg(long, value_name = "PATH")]
    cookie_file: Option<PathBuf>,
    /// The cluster's name: a node refuses peers of another cluster.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "solo",
        env = "SOLO_CLUSTER"
    )]
    cluster: String,
    /// What carries the traffic.
    #[arg(long, value_enum, default_value_t = TransportKind::Tcp)]
    transport: TransportKind,
    #[command(flatten)]
    certs: CertFiles,
    /// Find peers with no seed list: announce this node and dial those heard (`call` and
    /// `status` listen on 127.0.0.1 unless told: give them --listen on the LAN).
    #[arg(long, value_enum, value_name = "HOW", env = "SOLO_DISCOVER")]
    discover: Option<Discover>,
    /// The multicast group and port of --discover multicast (the same on every node).
    #[arg(long, value_name = "ADDR:PORT", default_value_t = solo::MulticastDiscovery::DEFAULT_GROUP, env = "SOLO_MULTICAST_GROUP")]
    multicast_group: std::net::SocketAddrV4,
    /// The interface (by its IPv4 address) of --discover multicast (default: the one
    /// of --listen).
    #[arg(long, value_name = "IP", env = "SOLO_MULTICAST_INTERFACE")]
    multicast_interface: Option<std::net::Ipv4Addr>,
}

#[derive(Debug, ClapArgs)]
struct RunArgs {
    /// This node's name, unique in the cluster.
    #[arg(long, value_name = "NAME", env = "SOLO_NAME", required = true)]
    name: Option<String>,
    /// Where to accept peers (port 0 picks one, which `ready` names).
    #[arg(long, value_name = "ADDR:PORT", env = "SOLO_LISTEN", required = true)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    join: JoinArgs,
    /// Give up, exit 1 and name the seeds if none has answered within SECS.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    seed_timeout: u64,
    /// Declare a demo singleton: an actor that roars every second and counts its roars
    /// (repeatable).
    #[arg(long = "singleton", value_name = "NAME")]
    singletons: Vec<String>,
    /// Declare the demo singleton in Exclusive mode: at most one instance at any instant,
    /// under a lease from a majority of the voters (repeatable; needs --voter).
    #[arg(long = "exclusive-singleton", value_name = "NAME")]
    exclusive_singletons: Vec<String>,
    /// One of the cluster's voters, the same list on every node (repeatable).
    #[arg(long = "voter", value_name = "NAME")]
    voters: Vec<String>,
    /// Where a voter keeps its highest lease token.
    #[arg(long, value_name = "PATH", env = "SOLO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Voters free the lease of an owner whose port refuses connections at once (wrong
    /// behind a firewall that rejects with resets).
    #[arg(long)]
    crash_evidence: bool,
    /// The exclusive demo singleton writes each roar, with its token, to the TCP store at
    /// ADDR:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    fenced_store: Option<SocketAddr>,
    /// Each --fenced-store write travels N ms first, as over a slow network.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "fenced_store")]
    store_delay_ms: u64,
    /// Print one JSON object per line instead of readable lines.
    #[arg(long)]
    json: bool,
    /// Serve Prometheus metrics at /metrics and the cluster view at /status (built with
    /// the `prometheus` feature).
    #[arg(long, value_name = "ADDR:PORT", env = "SOLO_METRICS")]
    metrics: Option<SocketAddr>,
}

/// The flags of a short visit (`call`, `status`): the node that joins is an observer.
///
/// No environment variable names it: in a pod whose `SOLO_NAME` is the running node's, a
/// visit under that name would supersede the node.
#[derive(Debug, ClapArgs)]
struct VisitArgs {
    /// The observer's name (default: call-PID or status-PID); over TLS, one its certificate
    /// names.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Where the observer accepts peers.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[command(flatten)]
    join: JoinArgs,
    /// How long to wait, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    timeout: Duration,
}

#[derive(Debug, ClapArgs)]
struct CallArgs {
    /// The actor's name (a singleton or child id).
    #[arg(value_name = "NAME")]
    target: String,
    /// The message: its words are joined by spaces (`call roar add 5`).
    #[arg(value_name = "MESSAGE", required = true, num_args = 1.., allow_negative_numbers = true)]
    message: Vec<String>,
    #[command(flatten)]
    visit: VisitArgs,
}

#[derive(Debug, ClapArgs)]
struct StatusArgs {
    #[command(flatten)]
    visit: VisitArgs,
    /// Print the view as JSON (the object `--metrics` serves at /status).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, ClapArgs)]
struct CertsArgs {
    /// Where to write ca.pem, ca.key, NODE.pem and NODE.key.
    #[arg(long, value_name = "DIR", required = true)]
    out: Option<PathBuf>,
    /// The cluster's name, written into the CA.
    #[arg(long, value_name = "NAME", default_value = "solo")]
    cluster: String,
    /// The nodes to certify (their names become the certificates' DNS names).
    #[arg(value_name = "NODE", required = true)]
    nodes: Vec<String>,
}

/// One `--seed`: an address as it is, or a name the node resolves again and again.
#[derive(Debug, Clone)]
enum Seed {
    Addr(SocketAddr),
    Name(String),
}

fn parse_seed(raw: &str) -> Result<Seed, String> {
    match raw.parse::<SocketAddr>() {
        Ok(addr) => Ok(Seed::Addr(addr)),
        Err(_) => {
            solo::validate_seed_name(raw).map_err(|e| e.to_string())?;
            Ok(Seed::Name(raw.to_owned()))
        }
    }
}

fn parse_seconds(raw: &str) -> Result<Duration, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "not a positive number of seconds".to_owned())
}

/// Parses `argv` (without the program's name), reading `SOLO_COOKIE` from the environment
/// where no cookie flag is given.
pub(crate) fn parse(
    argv: impl IntoIterator<Item = String>,
    cookie_env: Option<String>,
) -> Result<Invocation, Refusal> {
    let program = std::iter::once("solo-node".to_owned());
    let cli = Cli::try_parse_from(program.chain(argv)).map_err(|error| match error.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            Refusal::Display(error)
        }
        _ => Refusal::Usage(one_line(&error)),
    })?;
    let checked = match cli.command {
        None => run_args(cli.run, cookie_env).map(Invocation::Run),
        Some(Command::Run(run)) => run_args(run, cookie_env).map(Invocation::Run),
        Some(Command::Call(call)) => {
            let message = call.message.join(" ");
            let timeout = call.visit.timeout;
            visit_args(call.visit, "call", cookie_env).map(|mut args| {
                args.call = Some((call.target, message, timeout));
                Invocation::Call(args)
            })
        }
        Some(Command::Status(status)) => {
            let timeout = status.visit.timeout;
            visit_args(status.visit, "status", cookie_env).map(|mut args| {
                args.status = Some(timeout);
                args.json = status.json;
                Invocation::Status(args)
            })
        }
        Some(Command::Certs(certs)) => certs_args(certs),
    };
    checked.map_err(Refusal::Usage)
}

/// clap's message without its usage block and tips: the text up to the first blank line,
/// on one line, without the `error: ` clap starts it with.
fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let head: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = head.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("{message} (see solo-node --help)")
}

fn run_args(run: RunArgs, cookie_env: Option<String>) -> Result<Args, String> {
    // clap has checked both are there (`required`); an `Option` lets `call` and `status`
    // leave them out.
    let name = run.name.ok_or("--name is required")?;
    let listen = run.listen.ok_or("--listen is required")?;
    if !run.exclusive_singletons.is_empty() && run.voters.is_empty() {
        return Err(
            "--exclusive-singleton needs the cluster's voters (--voter NAME, repeated)".to_owned(),
        );
    }
    if run.metrics.is_some() && cfg!(not(feature = "prometheus")) {
        return Err(
            "--metrics needs solo-node built with the `prometheus` feature \
                    (cargo build -p solo --features cli,prometheus)"
                .to_owned(),
        );
    }
    let mut args = node_args(name, listen, run.join, cookie_env)?;
    args.singletons = run.singletons;
    args.exclusive_singletons = run.exclusive_singletons;
    args.voters = run.voters;
    args.data_dir = run.data_dir;
    args.crash_evidence = run.crash_evidence;
    args.fenced_store = run
        .fenced_store
        .map(|addr| (addr, Duration::from_millis(run.store_delay_ms)));
    args.json = run.json;
    args.seed_timeout = Duration::from_secs(run.seed_timeout);
    args.metrics = run.metrics;
    Ok(args)
}

fn visit_args(visit: VisitArgs, verb: &str, cookie_env: Option<String>) -> Result<Args, String> {
    if visit.join.seeds.is_empty() && visit.join.discover.is_none() {
        return Err(format!(
            "{verb}: --seed (or --discover multicast) is required"
        ));
    }
    let name = visit
        .name
        .unwrap_or_else(|| format!("{verb}-{}", std::process::id()));
    node_args(name, visit.listen, visit.join, cookie_env)
}

/// The flags every joining subcommand shares; the rest at their defaults.
fn node_args(
    name: String,
    listen: SocketAddr,
    join: JoinArgs,
    cookie_env: Option<String>,
) -> Result<Args, String> {
    if join.transport == TransportKind::Quic && join.certs.is_empty() {
        return Err("--transport quic needs certificates (--certs DIR)".to_owned());
    }
    let discovery = join.discover.map(|Discover::Multicast| {
        let discovery = solo::MulticastDiscovery::new().group(join.multicast_group);
        match join.multicast_interface {
            Some(interface) => discovery.interface(interface),
            None => discovery,
        }
    });
    let (mut seeds, mut seed_names) = (Vec::new(), Vec::new());
    for seed in join.seeds {
        match seed {
            Seed::Addr(addr) => seeds.push(addr),
            Seed::Name(host) => seed_names.push(host),
        }
    }
    Ok(Args {
        name,
        listen,
        seeds,
        seed_names,
        cookie: pick_cookie(join.cookie, join.cookie_file.as_deref(), cookie_env)?,
        singletons: Vec::new(),
        exclusive_singletons: Vec::new(),
        voters: Vec::new(),
        data_dir: None,
        crash_evidence: false,
        fenced_store: None,
        cluster: join.cluster,
        json: false,
        seed_timeout: Duration::from_secs(30),
        transport: join.transport,
        certs: join.certs,
        discovery,
        call: None,
        status: None,
        metrics: None,
    })
}

fn certs_args(certs: CertsArgs) -> Result<Invocation, String> {
    let out = certs.out.ok_or("certs: --out DIR is required")?;
    for node in &certs.nodes {
        solo::NodeName::new(node.as_str()).map_err(|e| format!("certs: {node:?}: {e}"))?;
    }
    Ok(Invocation::Certs {
        out,
        cluster: certs.cluster,
        nodes: certs.nodes,
    })
}

/// The cluster's secret: from `--cookie-file`, or `--cookie`, or else `SOLO_COOKIE`, and
/// at least [`solo::MIN_COOKIE_LEN`] bytes.
fn pick_cookie(
    flag: Option<String>,
    file: Option<&Path>,
    env: Option<String>,
) -> Result<String, String> {
    let (cookie, from) = match (flag, file) {
        (Some(_), Some(_)) => return Err("--cookie and --cookie-file: give one".to_owned()),
        (Some(cookie), None) => (cookie, "--cookie".to_owned()),
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(path)
                .map_err(|e| format!("--cookie-file {}: {e}", path.display()))?;
            let cookie = raw.trim_end_matches(['\n', '\r']).to_owned();
            (cookie, format!("--cookie-file {}", path.display()))
        }
        (None, None) => match env {
            Some(cookie) => (cookie, "SOLO_COOKIE".to_owned()),
            None => {
                return Err(
                    "a cookie is required: --cookie-file PATH, SOLO_COOKIE, or --cookie".to_owned(),
                );
            }
        },
    };
    if cookie.len() < solo::MIN_COOKIE_LEN {
        return Err(format!(
            "{from}: the cookie is {} bytes, at least {} are required (for one: head -c 32 /dev/urandom | base64)",
            cookie.len(),
            solo::MIN_COOKIE_LEN
        ));
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::{Invocation, Refusal, parse, pick_cookie};

    const GOOD: &str = "Zr8Lq2Vx7KmT4pW9";

    fn parsed(argv: &[&str]) -> Result<Invocation, String> {
        parse(argv.iter().map(|a| (*a).to_owned()), None).map_err(|refusal| match refusal {
            Refusal::Usage(line) => line,
            Refusal::Display(shown) => format!("displayed: {shown}"),
        })
    }

    /// `solo-node --name a --listen 127.0.0.1:7001 --cookie GOOD` and `extra`, as a run.
    fn run_with(extra: &[&str]) -> super::Args {
        let argv = [&RUN[..], extra].concat();
        match parsed(&argv) {
            Ok(Invocation::Run(args)) => args,
            other => panic!("{argv:?}: not a run: {other:?}"),
        }
    }

    const RUN: [&str; 6] = [
        "--name",
        "a",
        "--listen",
        "127.0.0.1:7001",
        "--cookie",
        GOOD,
    ];

    #[test]
    fn the_cookie_comes_from_the_flag_the_file_or_the_environment() {
        let from_flag = pick_cookie(Some(GOOD.into()), None, Some("other-cookie-env-1".into()));
        assert_eq!(from_flag.as_deref(), Ok(GOOD), "a flag beats SOLO_COOKIE");
        let from_env = pick_cookie(None, None, Some(GOOD.into()));
        assert_eq!(from_env.as_deref(), Ok(GOOD));
        let missing = pick_cookie(None, None, None).expect_err("no cookie at all");
        assert!(missing.contains("--cookie-file"), "{missing}");
        let short = pick_cookie(None, None, Some("short".into())).expect_err("5 bytes");
        assert!(
            short.starts_with("SOLO_COOKIE: the cookie is 5 bytes"),
            "{short}"
        );
    }

    #[test]
    fn a_calls_message_is_every_word_after_the_name() {
        let argv = [
            "call",
            "roar",
            "add",
            "-5",
            "--seed",
            "127.0.0.1:7001",
            "--cookie",
            GOOD,
        ];
        let Ok(Invocation::Call(args)) = parsed(&argv) else {
            panic!("a call: {:?}", parsed(&argv));
        };
        let (target, message, _) = args.call.expect("a call");
        assert_eq!((target.as_str(), message.as_str()), ("roar", "add -5"));
        assert!(args.name.starts_with("call-"), "{}", args.name);
        let error = parsed(&["call", "roar", "--seed", "127.0.0.1:7001", "--cookie", GOOD])
            .expect_err("no message");
        assert!(error.contains("<MESSAGE>"), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }

    #[test]
    fn status_needs_a_seed_and_takes_a_timeout() {
        let argv = [
            "status",
            "--seed",
            "127.0.0.1:7001",
            "--cookie",
            GOOD,
            "--timeout",
            "2",
        ];
        let Ok(Invocation::Status(args)) = parsed(&argv) else {
            panic!("a status: {:?}", parsed(&argv));
        };
        assert_eq!(args.status, Some(std::time::Duration::from_secs(2)));
        assert!(args.name.starts_with("status-"), "{}", args.name);
        assert!(args.call.is_none());
        assert_eq!(
            parsed(&["status", "--cookie", GOOD]).err().as_deref(),
            Some("status: --seed (or --discover multicast) is required")
        );
        assert!(
            parsed(&[
                "status",
                "--seed",
                "127.0.0.1:7001",
                "--cookie",
                GOOD,
                "roar"
            ])
            .is_err()
        );
        let zero = parsed(&["status", "--seed", "127.0.0.1:7001", "--timeout", "0"]);
        assert!(zero.is_err_and(|e| e.contains("'0'")));
    }

    #[test]
    fn run_is_the_default_and_can_be_named() {
        for argv in [RUN.to_vec(), [&["run"][..], &RUN].concat()] {
            let Ok(Invocation::Run(args)) = parsed(&argv) else {
                panic!("a run: {:?}", parsed(&argv));
            };
            assert_eq!(args.name, "a");
            assert_eq!(args.cluster, "solo");
            assert_eq!(args.seed_timeout, std::time::Duration::from_secs(30));
        }
    }

    #[test]
    fn seeds_are_addresses_or_names_and_one_flag_may_list_several() {
        let args = run_with(&[
            "--seed",
            "127.0.0.1:7002,solo-1.solo.default.svc:7000",
            "--seed",
            "[::1]:7003",
        ]);
        let addrs: Vec<String> = args.seeds.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["127.0.0.1:7002", "[::1]:7003"]);
        assert_eq!(args.seed_names, ["solo-1.solo.default.svc:7000"]);
        let bad = parsed(&[
            "--name",
            "a",
            "--listen",
            "127.0.0.1:7001",
            "--seed",
            "no-port",
        ])
        .expect_err("a name without a port");
        assert!(bad.contains("no-port"), "{bad}");
    }

    #[test]
    fn discovery_replaces_the_seeds_of_a_visit_and_takes_its_group() {
        let argv = ["status", "--discover", "multicast", "--cookie", GOOD];
        let Ok(Invocation::Status(args)) = parsed(&argv) else {
            panic!("a status: {:?}", parsed(&argv));
        };
        assert_eq!(args.discovery, Some(solo::MulticastDiscovery::new()));
        let args = run_with(&[
            "--discover",
            "multicast",
            "--multicast-group",
            "239.1.2.3:7000",
        ]);
        let group = "239.1.2.3:7000".parse().expect("a group");
        assert_eq!(
            args.discovery,
            Some(solo::MulticastDiscovery::new().group(group))
        );
        let error = parsed(&[
            "--name",
            "a",
            "--listen",
            "127.0.0.1:7001",
            "--discover",
            "dns",
        ])
        .expect_err("no such discovery");
        assert!(error.contains("'dns'"), "{error}");
    }

    #[test]
    fn every_refusal_is_one_line_that_names_the_flag() {
        let cases: [(Vec<&str>, &str); 6] = [
            ([&RUN[..], &["--bogus"]].concat(), "--bogus"),
            (
                vec!["--listen", "127.0.0.1:7001", "--cookie", GOOD],
                "--name",
            ),
            (vec!["--name", "a", "--listen", "nope"], "nope"),
            (
                vec!["--name", "a", "--listen", "127.0.0.1:7001", "--cookie"],
                "--cookie",
            ),
            ([&RUN[..], &["--seed-timeout", "x"]].concat(), "x"),
            (vec!["certs", "--out", "dir"], "<NODE>"),
        ];
        for (argv, mentions) in cases {
            let error = parsed(&argv).expect_err("refused");
            assert_eq!(error.lines().count(), 1, "{argv:?}: {error}");
            assert!(error.contains(mentions), "{argv:?}: {error}");
            assert!(!error.starts_with("error:"), "{error}");
        }
    }

    #[test]
    fn help_and_version_are_displayed_not_refused() {
        for argv in [&["--help"][..], &["--version"], &["status", "--help"]] {
            let shown = parsed(argv).expect_err("not an invocation");
            assert!(shown.starts_with("displayed: "), "{argv:?}: {shown}");
        }
        let help = parsed(&["--help"]).expect_err("help");
        for flag in ["--seed", "SOLO_SEEDS", "--cookie-file", "status", "certs"] {
            assert!(help.contains(flag), "--help does not name {flag}:\n{help}");
        }
    }
}
