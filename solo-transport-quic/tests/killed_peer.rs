//! What a surviving node sees when its peer's *process* is killed (SIGKILL): the peer's
//! kernel closes its UDP socket without a word, unlike TCP's FIN or RST, but answers later
//! packets to that port with ICMP "port unreachable". The peer runs in a child process (this
//! test binary again, running the ignored test `peer_process`).
//!
//! * With [`QuicConfig::tripwire`], the peer's kernel closes the connection's companion TCP
//!   connection, which closes the QUIC connection: `Link::Down` comes at once, with nothing
//!   sent to the dead peer, whichever side dialed.
//! * With [`QuicConfig::close_on_unreachable`] (Linux), that ICMP error closes the
//!   connection: `Link::Down` comes as soon as the survivor sends something, long before the
//!   (here very long) idle timeouts.
//! * Without either, only the QUIC idle timeout notices.
//!
//! Each test turns on only the mechanism it checks.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use solo_core::wire::Message;
use solo_core::{Incarnation, Link, NodeId, NodeName, Transmit};
use solo_transport_quic::{QuicConfig, QuicNetwork, QuicStatsHandle};
use solo_transport_tcp::tls::{CertificateAuthority, TlsConfig};
use solo_transport_tcp::{Config, Transport, TransportEvent};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
const CLUSTER: &str = "test";
const COOKIE: &str = "test-cookie-0123456789";
/// Where the child prints its address.
const ADDR_LINE: &str = "SOLO_PEER_ADDR ";
/// Tells the child which [`Mode`] to run in.
const MODE_VAR: &str = "SOLO_TEST_MODE";
/// Tells the child to dial this address (the survivor's) once started.
const DIAL_VAR: &str = "SOLO_TEST_DIAL";

/// The settings both sides of a test run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Tripwires on, the ICMP fast path off, and every timeout and keep-alive long: nothing
    /// is sent to the dead peer, and only the tripwire can explain a quick `Down`.
    Tripwire,
    /// The ICMP fast path on, tripwires off, and every timeout long: only ICMP can explain a
    /// quick `Down`.
    Icmp,
    /// The fast path off, and a short QUIC idle timeout: the only way to notice.
    IdleTimeout,
}

/// [`Mode::Tripwire`]: every liveness setting on both sides, long.
const TRIPWIRE_KEEP_ALIVE: Duration = Duration::from_secs(10);
const TRIPWIRE_QUIC_IDLE: Duration = Duration::from_secs(30);
const TRIPWIRE_TRANSPORT_IDLE: Duration = Duration::from_secs(60);
/// Well under one probe period of the core (200 ms), with room for a loaded machine.
const TRIPWIRE_BOUND: Duration = Duration::from_millis(500);

/// [`Mode::Icmp`]: QUIC's liveness settings on both sides, long.
const ICMP_QUIC_KEEP_ALIVE: Duration = Duration::from_secs(10);
const ICMP_QUIC_IDLE: Duration = Duration::from_secs(30);
/// The transport's keep-alive frames: what the survivor sends after the kill (in a cluster,
/// the core's probes every 200 ms would do it too).
const ICMP_TRANSPORT_KEEP_ALIVE: Duration = Duration::from_millis(100);
const ICMP_TRANSPORT_IDLE: Duration = Duration::from_secs(60);

/// [`Mode::IdleTimeout`]: QUIC's liveness settings on both sides, short so that the test is
/// quick.
const SLOW_KEEP_ALIVE: Duration = Duration::from_millis(200);
const SLOW_QUIC_IDLE: Duration = Duration::from_millis(1500);
/// The transport's own idle timeout, longer than QUIC's, to tell which one fires.
const SLOW_TRANSPORT_IDLE: Duration = Duration::from_secs(4);

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Tripwire => "tripwire",
            Mode::Icmp => "icmp",
            Mode::IdleTimeout => "idle-timeout",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Mode::Tripwire, Mode::Icmp, Mode::IdleTimeout]
            .into_iter()
            .find(|mode| mode.name() == name)
    }

    fn quic(self) -> QuicConfig {
        let mut quic = QuicConfig::default();
        match self {
            Mode::Tripwire => {
                quic.keep_alive_interval = TRIPWIRE_KEEP_ALIVE;
                quic.idle_timeout = TRIPWIRE_QUIC_IDLE;
                quic.close_on_unreachable = false;
                quic.tripwire = true;
            }
            Mode::Icmp => {
                quic.keep_alive_interval = ICMP_QUIC_KEEP_ALIVE;
                quic.idle_timeout = ICMP_QUIC_IDLE;
                quic.close_on_unreachable = true;
                quic.tripwire = false;
            }
            Mode::IdleTimeout => {
                quic.keep_alive_interval = SLOW_KEEP_ALIVE;
                quic.idle_timeout = SLOW_QUIC_IDLE;
                quic.close_on_unreachable = false;
                quic.tripwire = false;
            }
        }
        quic
    }

    fn transport(self) -> Config {
        let mut config = Config::new(CLUSTER, COOKIE);
        match self {
            Mode::Tripwire => {
                config.keepalive_interval = TRIPWIRE_KEEP_ALIVE;
                config.idle_timeout = TRIPWIRE_TRANSPORT_IDLE;
            }
            Mode::Icmp => {
                config.keepalive_interval = ICMP_TRANSPORT_KEEP_ALIVE;
                config.idle_timeout = ICMP_TRANSPORT_IDLE;
            }
            Mode::IdleTimeout => {
                config.keepalive_interval = SLOW_KEEP_ALIVE;
                config.idle_timeout = SLOW_TRANSPORT_IDLE;
            }
        }
        config
    }
}

fn id(name: &str) -> NodeId {
    NodeId::new(NodeName::new(name).expect("valid name"), Incarnation(1))
}

type Events = solo_transport_tcp::EventReceiver;

async fn start(
    tls: &TlsConfig,
    name: &str,
    mode: Mode,
) -> (Transport<QuicNetwork>, Events, QuicStatsHandle) {
    let network = QuicNetwork::new(tls, mode.quic()).expect("a QUIC network");
    let stats = network.stats_handle();
    let (transport, events) = Transport::builder(id(name), mode.transport())
        .bind(network, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("transport starts");
    (transport, events, stats)
}

/// The child: a transport that prints its address and runs until killed.
#[test]
#[ignore = "the peer process of the tests below"]
fn peer_process() {
    let (Ok(ca), Ok(cert), Ok(key), Some(mode)) = (
        std::env::var("SOLO_TEST_CA"),
        std::env::var("SOLO_TEST_CERT"),
        std::env::var("SOLO_TEST_KEY"),
        std::env::var(MODE_VAR)
            .ok()
            .and_then(|m| Mode::from_name(&m)),
    ) else {
        return;
    };
    let tls = TlsConfig::from_pem(ca.as_bytes(), cert.as_bytes(), key.as_bytes()).expect("TLS");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (transport, mut events, _) = start(&tls, "peer", mode).await;
        println!("{ADDR_LINE}{}", transport.local_addr());
        if let Some(survivor) = std::env::var(DIAL_VAR).ok().and_then(|a| a.parse().ok()) {
            transport.send(frame_to(survivor));
        }
        // Killed long before; the bound only keeps an orphan from running forever.
        let _ = timeout(Duration::from_secs(120), async {
            while events.recv().await.is_some() {}
        })
        .await;
    });
}

async fn next(events: &mut Events, within: Duration) -> TransportEvent {
    timeout(within, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?}"))
        .expect("the event stream is open")
}

/// Kills the child if the test fails before it does.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Which side dials the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialer {
    Survivor,
    Peer,
}

/// A survivor connected to a peer in a child process, both in `mode`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Pair {
    child: Killed,
    peer_addr: SocketAddr,
    me: Transport<QuicNetwork>,
    events: Events,
    stats: QuicStatsHandle,
}

async fn connected_pair(mode: Mode, dialer: Dialer) -> Pair {
    let ca = CertificateAuthority::new(CLUSTER).expect("a CA");
    let issue = |node: &str| ca.issue(node).expect("a certificate");
    let (mine, theirs) = (issue("me"), issue("peer"));
    let tls = TlsConfig::from_pem(
        ca.cert_pem().as_bytes(),
        mine.cert_pem.as_bytes(),
        mine.key_pem.as_bytes(),
    )
    .expect("TLS");
    let (me, mut events, stats) = start(&tls, "me", mode).await;

    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", "peer_process", "--ignored", "--nocapture"])
        .env("SOLO_TEST_CA", ca.cert_pem())
        .env("SOLO_TEST_CERT", &theirs.cert_pem)
        .env("SOLO_TEST_KEY", &theirs.key_pem)
        .env(MODE_VAR, mode.name())
        .stdout(Stdio::piped());
    if dialer == Dialer::Peer {
        command.env(DIAL_VAR, me.local_addr().to_string());
    }
    let mut child = Killed(command.spawn().expect("the peer process starts"));
    let stdout = child.0.stdout.take().expect("piped");
    let reading = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix(ADDR_LINE).map(str::to_owned))
    });
    let peer_addr: SocketAddr = timeout(WAIT, reading)
        .await
        .expect("the peer starts in time")
        .expect("joins")
        .expect("the peer prints its address")
        .parse()
        .expect("an address");

    if dialer == Dialer::Survivor {
        me.send(frame_to(peer_addr));
    }
    match next(&mut events, WAIT).await {
        TransportEvent::Link {
            peer,
            link: Link::Up,
        } if peer == id("peer") => {}
        other => panic!("expected Link::Up, got {other:?}"),
    }
    if dialer == Dialer::Peer {
        // The frame the peer dialed with.
        match next(&mut events, WAIT).await {
            TransportEvent::Frame { from, .. } if from == id("peer") => {}
            other => panic!("expected the peer's frame, got {other:?}"),
        }
    }
    Pair {
        child,
        peer_addr,
        me,
        events,
        stats,
    }
}

fn frame_to(addr: SocketAddr) -> Transmit {
    Transmit {
        to: None,
        addr: Some(addr),
        message: Message::IndirectAck {
            seq: 0,
            target: id("x"),
        },
    }
}

/// SIGKILLs the child, waits until it is gone (its sockets closed), and returns when.
fn kill(child: &mut Killed) -> Instant {
    kill_timed(child).1
}

/// As [`kill`], and returns when the signal was sent too.
fn kill_timed(child: &mut Killed) -> (Instant, Instant) {
    let signalled = Instant::now();
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("the peer is gone");
    (signalled, Instant::now())
}

async fn expect_down(events: &mut Events, within: Duration) {
    match next(events, within).await {
        TransportEvent::Link {
            peer,
            link: Link::Down,
        } if peer == id("peer") => {}
        other => panic!("expected Link::Down, got {other:?}"),
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_is_down_at_its_first_icmp_error_long_before_the_idle_timeout() {
    let Pair {
        mut child,
        peer_addr,
        me,
        mut events,
        stats,
    } = connected_pair(Mode::Icmp, Dialer::Survivor).await;
    assert_eq!(stats.stats().closed_unreachable, 0);

    let killed = kill(&mut child);
    // Bounded by half the idle timeout: only an ICMP error can explain a `Down` in time.
    expect_down(&mut events, ICMP_QUIC_IDLE / 2).await;
    let elapsed = killed.elapsed();
    let quic = stats.stats();
    eprintln!(
        "killed peer, ICMP fast path: Link::Down after {elapsed:?} (transport keep-alive \
         {ICMP_TRANSPORT_KEEP_ALIVE:?}, QUIC keep-alive {ICMP_QUIC_KEEP_ALIVE:?}, QUIC idle \
         timeout {ICMP_QUIC_IDLE:?}); {quic:?}"
    );
    assert!(elapsed < ICMP_QUIC_IDLE / 2, "{elapsed:?}");
    assert!(quic.unreachable_errors >= 1, "{quic:?}");
    // Usually the registry closes the connection (`closed_unreachable == 1`); on a loaded
    // machine the refused send that follows the ICMP error has also been seen to end it
    // first. Either way the `Down` came from the ICMP error, long before any timeout.
    assert!(quic.closed_unreachable <= 1, "{quic:?}");
    assert_eq!(me.stats().idle_timeouts, 0);
    assert!(me.connections().is_empty());

    // Dialing the dead address again fails at once, as a refused TCP connection does, not
    // after the transport's handshake timeout (5 s) or QUIC's (the idle timeout).
    let dialing = Instant::now();
    me.send(frame_to(peer_addr));
    let failed = async {
        while me.stats().dials_failed == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    timeout(WAIT, failed).await.expect("the dial fails in time");
    let elapsed = dialing.elapsed();
    let quic = stats.stats();
    eprintln!("dial to the killed peer failed after {elapsed:?}; {quic:?}");
    assert_eq!(quic.dials_refused, 1, "{quic:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(me.stats().links_up, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_icmp_fast_path_a_killed_peer_is_down_at_the_quic_idle_timeout() {
    let Pair {
        mut child,
        me,
        mut events,
        stats,
        ..
    } = connected_pair(Mode::IdleTimeout, Dialer::Survivor).await;

    let killed = kill(&mut child);
    expect_down(&mut events, WAIT).await;
    let elapsed = killed.elapsed();
    let transport = me.stats();
    eprintln!(
        "killed peer, no ICMP fast path: Link::Down after {elapsed:?} (QUIC idle timeout \
         {SLOW_QUIC_IDLE:?}, transport idle timeout {SLOW_TRANSPORT_IDLE:?}, transport idle \
         timeouts: {})",
        transport.idle_timeouts
    );
    // No ICMP shortcut: quinn learns of the death only when its idle timer expires...
    assert!(elapsed >= SLOW_QUIC_IDLE / 2, "{elapsed:?}");
    // ...which is QUIC's, before the transport's own.
    assert!(elapsed < SLOW_TRANSPORT_IDLE, "{elapsed:?}");
    assert_eq!(transport.idle_timeouts, 0);
    assert_eq!(stats.stats(), Default::default());
}

/// Kills a connected peer whose connection has an armed tripwire, and returns how long the
/// survivor took to report it `Link::Down`.
async fn killed_with_a_tripwire(dialer: Dialer) -> Duration {
    let Pair {
        mut child,
        me,
        mut events,
        stats,
        ..
    } = connected_pair(Mode::Tripwire, dialer).await;
    // The tripwire is set up beside the transport's handshake: wait until it is armed here.
    let armed = async {
        while stats.stats().tripwires_active == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    timeout(WAIT, armed).await.expect("the tripwire is armed");
    assert_eq!(stats.stats().closed_by_tripwire, 0);

    let (signalled, reaped) = kill_timed(&mut child);
    // Long before any keep-alive or idle timeout; with no ICMP fast path and nothing sent,
    // only the tripwire can explain it.
    expect_down(&mut events, WAIT).await;
    let (elapsed, after_reaped) = (signalled.elapsed(), reaped.elapsed());
    let quic = stats.stats();
    eprintln!(
        "killed peer ({dialer:?} dialed), tripwire: Link::Down {elapsed:?} after the SIGKILL \
         ({after_reaped:?} after the peer was reaped; keep-alives {TRIPWIRE_KEEP_ALIVE:?}, QUIC \
         idle timeout {TRIPWIRE_QUIC_IDLE:?}, no ICMP); {quic:?}"
    );
    assert!(elapsed < TRIPWIRE_BOUND, "{elapsed:?}");
    assert_eq!(quic.tripwires_attached, 1, "{quic:?}");
    assert_eq!(quic.tripwires_active, 0, "{quic:?}");
    assert_eq!(quic.closed_by_tripwire, 1, "{quic:?}");
    assert_eq!(
        (quic.unreachable_errors, quic.closed_unreachable),
        (0, 0),
        "{quic:?}"
    );
    let transport = me.stats();
    assert_eq!(transport.idle_timeouts, 0);
    assert_eq!(transport.links_up, 1);
    assert!(me.connections().is_empty());
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_that_was_dialed_is_down_at_once_by_its_tripwire() {
    killed_with_a_tripwire(Dialer::Survivor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_that_dialed_is_down_at_once_by_its_tripwire() {
    killed_with_a_tripwire(Dialer::Peer).await;
}
