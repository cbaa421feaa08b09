//! The TCP crate's transport over QUIC, on real UDP sockets on 127.0.0.1. No test sleeps for
//! a fixed time to let something happen: each waits for an event or a condition, within a
//! generous bound.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use solo_core::wire::{Message, decode_frame};
use solo_core::{Incarnation, Link, NodeId, NodeName, Transmit};
use solo_transport_quic::{QuicConfig, QuicNetwork, QuicStatsHandle, QuicStream};
use solo_transport_tcp::tls::{
    ALPN, CertificateAuthority, NodeCertificate, SERVER_NAME, TlsConfig, crypto_provider,
};
use solo_transport_tcp::{Config, Direction, Network, Transport, TransportEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Long enough never to be hit on a loaded machine; the tests pass in milliseconds.
const WAIT: Duration = Duration::from_secs(10);
const COOKIE: &str = "test-cookie-0123456789";
const CLUSTER: &str = "test";

type Events = solo_transport_tcp::EventReceiver;

fn id(name: &str, incarnation: u64) -> NodeId {
    NodeId::new(
        NodeName::new(name).expect("valid name"),
        Incarnation(incarnation),
    )
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config() -> Config {
    Config::new(CLUSTER, COOKIE)
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::new(CLUSTER).expect("a CA")
}

/// The TLS identity of `node`, certified by `ca`.
fn tls(ca: &CertificateAuthority, node: &str) -> TlsConfig {
    let cert = ca.issue(node).expect("a node certificate");
    TlsConfig::from_pem(
        ca.cert_pem().as_bytes(),
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
    )
    .expect("a TLS config")
}

fn network(ca: &CertificateAuthority, node: &str) -> QuicNetwork {
    QuicNetwork::new(&tls(ca, node), QuicConfig::default()).expect("a QUIC network")
}

async fn start_with<N: Network>(network: N, name: &str, config: Config) -> (Transport<N>, Events) {
    Transport::builder(id(name, 1), config)
        .bind(network, loopback())
        .await
        .expect("transport starts")
}

async fn start(ca: &CertificateAuthority, name: &str) -> (Transport<QuicNetwork>, Events) {
    start_with(network(ca, name), name, config()).await
}

fn message(seq: u32) -> Message {
    Message::IndirectAck {
        seq,
        target: id("x", 1),
    }
}

fn transmit(to: Option<NodeId>, addr: Option<SocketAddr>, seq: u32) -> Transmit {
    Transmit {
        to,
        addr,
        message: message(seq),
    }
}

async fn next(events: &mut Events) -> TransportEvent {
    timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the event stream is open")
}

async fn expect_link(events: &mut Events, peer: &NodeId, link: Link) {
    match next(events).await {
        TransportEvent::Link { peer: p, link: l } if p == *peer && l == link => {}
        other => panic!("expected {link:?} for {peer}, got {other:?}"),
    }
}

async fn expect_frame(events: &mut Events, from: &NodeId) -> Message {
    match next(events).await {
        TransportEvent::Frame { from: f, frame } if f == *from => {
            decode_frame(&frame).expect("a valid frame")
        }
        other => panic!("expected a frame from {from}, got {other:?}"),
    }
}

/// Waits until `condition` holds, checking every few milliseconds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let polling = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    timeout(WAIT, polling)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

fn assert_no_link_up(events: &mut Events) {
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, TransportEvent::Link { link: Link::Up, .. }),
            "unexpected {event:?}"
        );
    }
}

fn assert_quiet(events: &mut Events) {
    if let Ok(event) = events.try_recv() {
        panic!("unexpected event {event:?}");
    }
}

/// [`assert_quiet`], but a frame sent while both sides were still dialing (`seq` 0) may
/// still come in late: it travelled on the connection the tie-break closed.
fn assert_quiet_but_dial_frames(events: &mut Events) {
    while let Ok(event) = events.try_recv() {
        let late_dial_frame = matches!(
            &event,
            TransportEvent::Frame { frame, .. }
                if matches!(
                    decode_frame(frame),
                    Ok(Message::IndirectAck { seq: 0, .. })
                )
        );
        assert!(late_dial_frame, "unexpected event {event:?}");
    }
}

// ----- the network on its own -----------------------------------------------------------

#[tokio::test]
async fn dialing_before_binding_and_binding_twice_fail() {
    let ca = ca();
    let net = network(&ca, "a");
    let error = net
        .connect(SocketAddr::from(([127, 0, 0, 1], 9)))
        .await
        .expect_err("not bound");
    assert_eq!(error.kind(), io::ErrorKind::NotConnected);
    let _endpoint = net.bind(loopback()).await.expect("binds");
    let error = net.bind(loopback()).await.expect_err("bound already");
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
}

/// Linux only: elsewhere the dial waits for the handshake's timeout.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn dialing_an_address_where_nothing_listens_is_refused_at_once() {
    let ca = ca();
    // The QUIC handshake's timeout is the idle timeout: far beyond the wait.
    let mut config = QuicConfig::default();
    config.idle_timeout = Duration::from_secs(60);
    let net = QuicNetwork::new(&tls(&ca, "a"), config).expect("a QUIC network");
    let _endpoint = net.bind(loopback()).await.expect("binds");
    // A port that was just free, and is again: nothing listens there.
    let closed = std::net::UdpSocket::bind(loopback())
        .and_then(|socket| socket.local_addr())
        .expect("an address");
    let started = Instant::now();
    let error = timeout(WAIT, net.connect(closed))
        .await
        .expect("in time")
        .expect_err("refused");
    let elapsed = started.elapsed();
    eprintln!("dial to a closed port refused after {elapsed:?}: {error}");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(net.stats().dials_refused, 1);
    assert_eq!(net.stats().closed_unreachable, 0);
}

#[test]
fn an_invalid_config_is_refused() {
    let ca = ca();
    let mut config = QuicConfig::default();
    config.idle_timeout = Duration::from_millis(500);
    let result = QuicNetwork::new(&tls(&ca, "a"), config);
    assert!(result.is_err(), "{result:?}");
}

/// A stream dialed from one bound network to another, and the accepting end's stream.
async fn stream_pair(ca: &CertificateAuthority) -> (QuicStream, QuicStream, [QuicNetwork; 2]) {
    let (a, b) = (network(ca, "a"), network(ca, "b"));
    let a_endpoint = a.bind(loopback()).await.expect("binds");
    let a_addr = a.local_addr(&a_endpoint).expect("an address");
    let mut b_endpoint = b.bind(loopback()).await.expect("binds");
    let b_addr = b.local_addr(&b_endpoint).expect("an address");
    // The dialer's handshake needs the acceptor's stream to be driven: both at once.
    let dialing = async {
        let mut dialed = a.connect(b_addr).await.expect("connects");
        // The acceptor learns of the stream from its first bytes.
        dialed.write_all(b"hello").await.expect("writes");
        dialed
    };
    let accepting = async {
        let (mut accepted, remote) = b.accept(&mut b_endpoint).await.expect("accepts");
        let mut hello = [0; 5];
        accepted.read_exact(&mut hello).await.expect("reads");
        assert_eq!(&hello, b"hello");
        (accepted, remote)
    };
    let (dialed, (accepted, remote)) = timeout(WAIT, async { tokio::join!(dialing, accepting) })
        .await
        .expect("in time");
    // One socket listens and dials: the dialer is seen at its listening address.
    assert_eq!(remote, a_addr);
    assert_eq!(accepted.remote_addr(), Some(a_addr));
    assert_eq!(dialed.remote_addr(), Some(b_addr));
    (dialed, accepted, [a, b])
}

#[tokio::test]
async fn shutdown_delivers_every_byte_then_end_of_file_even_if_dropped_at_once() {
    let (mut dialed, mut accepted, _networks) = stream_pair(&ca()).await;
    // Much more than fits in one packet or one flow-control window's first round.
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let writing = async move {
        dialed.write_all(&data).await.expect("writes");
        dialed
            .shutdown()
            .await
            .expect("the peer acknowledges everything");
        // Dropping closes the connection: nothing written may be lost by it.
        drop(dialed);
        data
    };
    let reading = async {
        let mut received = Vec::new();
        accepted
            .read_to_end(&mut received)
            .await
            .expect("every byte, then end-of-file");
        received
    };
    let (sent, received) = timeout(WAIT, async { tokio::join!(writing, reading) })
        .await
        .expect("in time");
    assert_eq!(received.len(), sent.len());
    assert!(received == sent);
}

#[tokio::test]
async fn dropping_a_stream_ends_the_peers_read_at_once_and_closes_the_connection() {
    let (mut dialed, mut accepted, _networks) = stream_pair(&ca()).await;
    dialed.write_all(b"last words").await.expect("writes");
    let started = Instant::now();
    drop(dialed);
    let mut received = Vec::new();
    timeout(WAIT, accepted.read_to_end(&mut received))
        .await
        .expect("in time")
        .expect("what was written, then end-of-file");
    assert_eq!(received, b"last words");
    // Far below the 5 s idle timeout: the end was sent, not inferred.
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    // The dropped end reads nothing more, and its connection closes: writing fails.
    let writing = async {
        loop {
            if let Err(error) = accepted.write_all(&[0; 1024]).await {
                return error;
            }
            tokio::task::yield_now().await;
        }
    };
    let error = timeout(WAIT, writing).await.expect("in time");
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
        ),
        "{error}"
    );
}

#[tokio::test]
async fn an_inbound_handshake_failure_is_a_read_error() {
    // The dialer's certificate is from another CA: the acceptor's stream fails on first use.
    let (a, b) = (network(&ca(), "a"), network(&ca(), "b"));
    let _a_endpoint = a.bind(loopback()).await.expect("binds");
    let mut b_endpoint = b.bind(loopback()).await.expect("binds");
    let b_addr = b.local_addr(&b_endpoint).expect("an address");
    let dialing = tokio::spawn(async move {
        let result = a.connect(b_addr).await;
        (a, result.map(drop))
    });
    let (mut accepted, _) = timeout(WAIT, b.accept(&mut b_endpoint))
        .await
        .expect("in time")
        .expect("accept returns before the handshake");
    let mut buf = [0; 1];
    let result = timeout(WAIT, accepted.read(&mut buf))
        .await
        .expect("in time");
    assert!(result.is_err(), "{result:?}");
    let (_a, dialed) = timeout(WAIT, dialing)
        .await
        .expect("in time")
        .expect("joins");
    assert!(
        dialed.is_err(),
        "the dialer refuses the acceptor's certificate too"
    );
}

// ----- the transport over QUIC ------------------------------------------------------------

/// Connects two transports and returns once both saw `Link::Up`.
async fn connect_pair(
    ca: &CertificateAuthority,
) -> (
    (Transport<QuicNetwork>, Events),
    (Transport<QuicNetwork>, Events),
) {
    let (a, mut a_events) = start(ca, "a").await;
    let (b, mut b_events) = start(ca, "b").await;
    a.send(transmit(None, Some(b.advertised_addr()), 0));
    expect_link(&mut b_events, a.node(), Link::Up).await;
    assert_eq!(expect_frame(&mut b_events, a.node()).await, message(0));
    expect_link(&mut a_events, b.node(), Link::Up).await;
    ((a, a_events), (b, b_events))
}

#[tokio::test]
async fn two_transports_connect_and_frames_flow_both_ways_in_order() {
    let ((a, mut a_events), (b, mut b_events)) = connect_pair(&ca()).await;
    assert_eq!(a.connections().len(), 1);
    assert_eq!(a.connections()[0].peer, *b.node());
    assert_eq!(a.connections()[0].direction, Direction::Outbound);
    assert_eq!(a.connections()[0].addr, b.advertised_addr());
    assert_eq!(b.connections()[0].direction, Direction::Inbound);
    assert_eq!(b.connections()[0].addr, a.advertised_addr());

    for seq in 1..=300 {
        a.send(transmit(
            Some(b.node().clone()),
            Some(b.advertised_addr()),
            seq,
        ));
        // `b` knows `a` only by the connection: no address needed.
        b.send(transmit(Some(a.node().clone()), None, seq));
    }
    for seq in 1..=300 {
        assert_eq!(expect_frame(&mut b_events, a.node()).await, message(seq));
        assert_eq!(expect_frame(&mut a_events, b.node()).await, message(seq));
    }
    assert_quiet(&mut a_events);
    assert_quiet(&mut b_events);
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.links_up, sb.links_up), (1, 1));
    assert_eq!((sa.frames_received, sb.frames_received), (300, 301));
    assert_eq!(sa.dropped_queue_full + sb.dropped_queue_full, 0);
    assert_eq!(sa.dials_failed + sb.handshakes_failed, 0);
}

#[tokio::test]
async fn a_node_certified_by_another_ca_is_never_up() {
    let (a, mut a_events) = start(&ca(), "a").await;
    let (b, mut b_events) = start(&ca(), "b").await;
    a.send(transmit(None, Some(b.advertised_addr()), 1));
    b.send(transmit(None, Some(a.advertised_addr()), 1));
    eventually("both dials fail, and both acceptors' handshakes", || {
        let (sa, sb) = (a.stats(), b.stats());
        sa.dials_failed >= 1
            && sb.dials_failed >= 1
            && sa.handshakes_failed >= 1
            && sb.handshakes_failed >= 1
    })
    .await;
    assert_no_link_up(&mut a_events);
    assert_no_link_up(&mut b_events);
    assert!(a.connections().is_empty() && b.connections().is_empty());
    assert_eq!(a.stats().links_up + b.stats().links_up, 0);
}

/// Plain rustls client settings (no cluster-specific verifier) that trust the cluster CA
/// and present `cert`, if any.
fn plain_client(
    ca: &CertificateAuthority,
    cert: Option<&NodeCertificate>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    let ca_cert = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("CA PEM");
    roots.add(ca_cert).expect("a trust anchor");
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut client = match cert {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("certificate PEM");
            let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("a client certificate")
        }
    };
    client.alpn_protocols = vec![ALPN.to_vec()];
    Arc::new(client)
}

#[tokio::test]
async fn a_node_without_a_certificate_is_refused() {
    let ca = ca();
    // `b` is named for the server name dialers use, and its certificate names it, so that
    // a plain verifier (no cluster-specific name handling) accepts it: the only thing
    // missing is `n`'s certificate.
    let b_tls = tls(&ca, SERVER_NAME);
    let (b, mut b_events) = start_with(
        QuicNetwork::new(&b_tls, QuicConfig::default()).expect("a QUIC network"),
        SERVER_NAME,
        config(),
    )
    .await;
    // Dialers only; their accepting sides (borrowed from `b`) are never used.
    let dialer = |client| {
        QuicNetwork::from_rustls(b_tls.server_config(), client, QuicConfig::default())
            .expect("a QUIC network")
    };

    // The control: the very same client settings with a certificate are admitted.
    let m_cert = ca.issue("m").expect("a node certificate");
    let (m, mut m_events) =
        start_with(dialer(plain_client(&ca, Some(&m_cert))), "m", config()).await;
    m.send(transmit(None, Some(b.advertised_addr()), 1));
    expect_link(&mut m_events, b.node(), Link::Up).await;
    expect_link(&mut b_events, m.node(), Link::Up).await;
    assert_eq!(expect_frame(&mut b_events, m.node()).await, message(1));

    let (n, mut n_events) = start_with(dialer(plain_client(&ca, None)), "n", config()).await;
    n.send(transmit(None, Some(b.advertised_addr()), 1));
    eventually("the dial fails and the acceptor refuses it", || {
        n.stats().dials_failed >= 1 && b.stats().handshakes_failed >= 1
    })
    .await;
    assert_no_link_up(&mut n_events);
    assert_no_link_up(&mut b_events);
    assert_eq!(n.stats().links_up, 0);
    assert_eq!(b.stats().links_up, 1, "only `m`");
    assert_eq!(b.connections().len(), 1);
}

#[tokio::test]
async fn the_right_certificate_with_the_wrong_cookie_is_never_up() {
    let ca = ca();
    let (a, mut a_events) = start(&ca, "a").await;
    let (b, mut b_events) =
        start_with(network(&ca, "b"), "b", Config::new(CLUSTER, "another")).await;
    a.send(transmit(
        Some(b.node().clone()),
        Some(b.advertised_addr()),
        1,
    ));
    eventually("both sides fail the cookie handshake", || {
        a.stats().dials_failed >= 1 && b.stats().handshakes_failed >= 1
    })
    .await;
    assert_eq!(
        a.stats().handshakes_failed,
        1,
        "TLS passed; the cookie failed"
    );
    assert_no_link_up(&mut a_events);
    assert_no_link_up(&mut b_events);
    assert!(a.connections().is_empty() && b.connections().is_empty());
}

#[tokio::test]
async fn dropping_a_transport_is_reported_down_at_once() {
    let ca = ca();
    // Idle timeouts far beyond the wait: a `Down` can only come from the close.
    let mut slow = QuicConfig::default();
    slow.idle_timeout = Duration::from_secs(60);
    let mut config = config();
    config.idle_timeout = Duration::from_secs(60);
    let a_net = QuicNetwork::new(&tls(&ca, "a"), slow.clone()).expect("a QUIC network");
    let b_net = QuicNetwork::new(&tls(&ca, "b"), slow).expect("a QUIC network");
    let (a, mut a_events) = start_with(a_net, "a", config.clone()).await;
    let (b, mut b_events) = start_with(b_net, "b", config).await;
    a.send(transmit(None, Some(b.advertised_addr()), 0));
    expect_link(&mut b_events, a.node(), Link::Up).await;
    expect_frame(&mut b_events, a.node()).await;
    expect_link(&mut a_events, b.node(), Link::Up).await;

    let b_id = b.node().clone();
    let started = Instant::now();
    drop(b);
    expect_link(&mut a_events, &b_id, Link::Down).await;
    let elapsed = started.elapsed();
    eprintln!("Link::Down {elapsed:?} after the peer's transport was dropped");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(a.stats().idle_timeouts, 0);
    assert!(a.connections().is_empty());
}

/// Holds each side's first dial until the other side dials too, so both handshakes race.
struct SimultaneousNetwork {
    inner: QuicNetwork,
    barrier: Arc<tokio::sync::Barrier>,
    waited: AtomicBool,
}

impl Network for SimultaneousNetwork {
    type Stream = QuicStream;
    type Listener = <QuicNetwork as Network>::Listener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        self.inner.bind(addr).await
    }
    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        self.inner.local_addr(listener)
    }
    async fn accept(&self, listener: &mut Self::Listener) -> io::Result<(QuicStream, SocketAddr)> {
        self.inner.accept(listener).await
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<QuicStream> {
        if !self.waited.swap(true, Ordering::SeqCst) {
            self.barrier.wait().await;
        }
        self.inner.connect(addr).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_end_with_exactly_one_connection_and_frames_still_flow() {
    let ca = ca();
    for round in 0..5 {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let network = |name: &str| SimultaneousNetwork {
            inner: network(&ca, name),
            barrier: Arc::clone(&barrier),
            waited: AtomicBool::new(false),
        };
        let (x_net, y_net) = (network(x_name(round)), network(y_name(round)));
        let (a_stats, b_stats) = (x_net.inner.stats_handle(), y_net.inner.stats_handle());
        let (x, y) = (x_name(round), y_name(round));
        let (a, mut a_events) = start_with(x_net, x, config()).await;
        let (b, mut b_events) = start_with(y_net, y, config()).await;
        a.send(transmit(
            Some(b.node().clone()),
            Some(b.advertised_addr()),
            0,
        ));
        b.send(transmit(
            Some(a.node().clone()),
            Some(a.advertised_addr()),
            0,
        ));

        expect_link(&mut a_events, b.node(), Link::Up).await;
        expect_link(&mut b_events, a.node(), Link::Up).await;
        eventually("both sides settle on one connection", || {
            let (sa, sb) = (a.stats(), b.stats());
            sa.dials_in_progress == 0
                && sb.dials_in_progress == 0
                && sa.duplicates_closed == 1
                && sb.duplicates_closed == 1
        })
        .await;
        let (ca_, cb) = (a.connections(), b.connections());
        assert_eq!((ca_.len(), cb.len()), (1, 1));
        assert_ne!(
            ca_[0].direction, cb[0].direction,
            "both ends kept the same connection"
        );
        // The kept connection is the one the lower id dialed.
        let a_is_lower = a.node() < b.node();
        assert_eq!(ca_[0].direction == Direction::Outbound, a_is_lower);

        for seq in 1..=50 {
            a.send(transmit(Some(b.node().clone()), None, seq));
            b.send(transmit(Some(a.node().clone()), None, seq));
        }
        // The frames sent while dialing may or may not have survived the tie-break (loss
        // is allowed); the ones sent after it arrive, in order, with no `Down` in between.
        for (events, from) in [(&mut a_events, b.node()), (&mut b_events, a.node())] {
            let mut expected = 1;
            while expected <= 50 {
                match expect_frame(events, from).await {
                    Message::IndirectAck { seq: 0, .. } => {}
                    Message::IndirectAck { seq, .. } => {
                        assert_eq!(seq, expected);
                        expected += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_quiet_but_dial_frames(events);
        }
        assert_eq!(a.stats().links_down + b.stats().links_down, 0);
        // Each connection had a tripwire: the dropped one's stood down without tripping
        // anything, and the kept one's is armed at both ends.
        eventually(
            "the kept connection's tripwire is armed at both ends",
            || a_stats.stats().tripwires_active == 1 && b_stats.stats().tripwires_active == 1,
        )
        .await;
        let (qa, qb) = (a_stats.stats(), b_stats.stats());
        assert_eq!(
            (qa.closed_by_tripwire, qb.closed_by_tripwire),
            (0, 0),
            "{qa:?} {qb:?}"
        );
        assert_eq!(a.stats().links_down + b.stats().links_down, 0);
        assert_quiet_but_dial_frames(&mut a_events);
        assert_quiet_but_dial_frames(&mut b_events);
    }
}

/// Alternates which side of the simultaneous dials has the lower id.
fn x_name(round: usize) -> &'static str {
    if round % 2 == 0 { "a" } else { "d" }
}

fn y_name(round: usize) -> &'static str {
    if round % 2 == 0 { "b" } else { "c" }
}

// ----- tripwires --------------------------------------------------------------------------

async fn start_watched(
    ca: &CertificateAuthority,
    name: &str,
    quic: QuicConfig,
) -> (Transport<QuicNetwork>, Events, QuicStatsHandle) {
    let network = QuicNetwork::new(&tls(ca, name), quic).expect("a QUIC network");
    let stats = network.stats_handle();
    let (transport, events) = start_with(network, name, config()).await;
    (transport, events, stats)
}

/// `a` dials `b`; returns once both are up.
async fn connect(
    a: &Transport<QuicNetwork>,
    a_events: &mut Events,
    b: &Transport<QuicNetwork>,
    b_events: &mut Events,
) {
    a.send(transmit(None, Some(b.advertised_addr()), 0));
    expect_link(b_events, a.node(), Link::Up).await;
    assert_eq!(expect_frame(b_events, a.node()).await, message(0));
    expect_link(a_events, b.node(), Link::Up).await;
}

/// 32 bytes nobody can have exported from a QUIC connection.
fn forged_token(seed: u64) -> [u8; 32] {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    let mut token = [0; 32];
    for (i, chunk) in (0u64..).zip(token.chunks_mut(8)) {
        chunk.copy_from_slice(&state.hash_one((seed, i)).to_le_bytes());
    }
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tripwires_close_nothing() {
    let ca = ca();
    let (a, mut a_events, a_stats) = start_watched(&ca, "a", QuicConfig::default()).await;
    let (b, mut b_events, b_stats) = start_watched(&ca, "b", QuicConfig::default()).await;
    connect(&a, &mut a_events, &b, &mut b_events).await;
    eventually("the connection's tripwire is armed at both ends", || {
        a_stats.stats().tripwires_active == 1 && b_stats.stats().tripwires_active == 1
    })
    .await;

    // Strangers at both nodes' tripwire listeners: the QUIC port numbers, on TCP.
    for target in [a.local_addr(), b.local_addr()] {
        let stranger = || async {
            TcpStream::connect(target)
                .await
                .expect("the tripwire listener accepts anyone")
        };
        // Closes at once; closes after part of a token.
        drop(stranger().await);
        let mut short = stranger().await;
        short.write_all(&[7; 31]).await.expect("writes");
        drop(short);
        // Forged tokens: one closed at once, one closed after a while, one held open until
        // the listener gives up on it.
        let mut forged = Vec::new();
        for seed in 0..3 {
            let mut tripwire = stranger().await;
            tripwire
                .write_all(&forged_token(seed))
                .await
                .expect("writes");
            forged.push(tripwire);
        }
        let held = forged.pop().expect("three");
        drop(forged.remove(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(forged);
        // Never answered (a real one gets the proof): closed once its time is up.
        let mut held = held;
        let mut answer = Vec::new();
        let _ = timeout(WAIT, held.read_to_end(&mut answer))
            .await
            .expect("the listener gives up on it in time");
        assert!(answer.is_empty(), "{answer:?}");
    }

    // The connection is untouched: frames flow both ways, and nothing tripped.
    for seq in 1..=20 {
        a.send(transmit(Some(b.node().clone()), None, seq));
        b.send(transmit(Some(a.node().clone()), None, seq));
    }
    for seq in 1..=20 {
        assert_eq!(expect_frame(&mut b_events, a.node()).await, message(seq));
        assert_eq!(expect_frame(&mut a_events, b.node()).await, message(seq));
    }
    assert_quiet(&mut a_events);
    assert_quiet(&mut b_events);
    let (qa, qb) = (a_stats.stats(), b_stats.stats());
    eprintln!("after the forgeries: {qa:?} {qb:?}");
    assert_eq!(
        (qa.closed_by_tripwire, qb.closed_by_tripwire),
        (0, 0),
        "{qa:?} {qb:?}"
    );
    assert_eq!(
        (qa.tripwires_active, qb.tripwires_active),
        (1, 1),
        "{qa:?} {qb:?}"
    );
    assert_eq!((qa.tripwires_attached, qb.tripwires_attached), (1, 1));
    assert_eq!(a.stats().links_down + b.stats().links_down, 0);
    assert_eq!((a.connections().len(), b.connections().len()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_close_stands_tripwires_down_without_tripping_them() {
    let ca = ca();
    let (a, mut a_events, a_stats) = start_watched(&ca, "a", QuicConfig::default()).await;
    let (b, mut b_events, b_stats) = start_watched(&ca, "b", QuicConfig::default()).await;
    let (c, mut c_events, c_stats) = start_watched(&ca, "c", QuicConfig::default()).await;
    // `a` dials `b`, and `c` dials `a`: `a` holds a tripwire in either role.
    connect(&a, &mut a_events, &b, &mut b_events).await;
    connect(&c, &mut c_events, &a, &mut a_events).await;
    eventually("every tripwire is armed", || {
        a_stats.stats().tripwires_active == 2
            && b_stats.stats().tripwires_active == 1
            && c_stats.stats().tripwires_active == 1
    })
    .await;

    // The transport closes a connection (the core declared the peer down): the other end
    // reads the handover marker (no `Down`: whether `a` lives is the core's call), both
    // ends close, and the tripwire stands down at both ends.
    a.disconnect(b.node());
    eventually("b lets the connection go", || b.connections().is_empty()).await;
    // A dropped transport: its peers read end-of-file, and their tripwires stand down.
    let c_id = c.node().clone();
    drop(c);
    expect_link(&mut a_events, &c_id, Link::Down).await;
    eventually("every tripwire stood down", || {
        a_stats.stats().tripwires_active == 0
            && b_stats.stats().tripwires_active == 0
            && c_stats.stats().tripwires_active == 0
    })
    .await;
    let (qa, qb, qc) = (a_stats.stats(), b_stats.stats(), c_stats.stats());
    assert_eq!(
        (
            qa.closed_by_tripwire,
            qb.closed_by_tripwire,
            qc.closed_by_tripwire
        ),
        (0, 0, 0),
        "{qa:?} {qb:?} {qc:?}"
    );

    // The connection comes back, with a tripwire of its own. b took it as the handed-over
    // connection's successor, so it reports no second `Up`.
    a.send(transmit(
        Some(b.node().clone()),
        Some(b.advertised_addr()),
        1,
    ));
    assert_eq!(expect_frame(&mut b_events, a.node()).await, message(1));
    eventually("the new connection's tripwire is armed", || {
        a_stats.stats().tripwires_active == 1 && b_stats.stats().tripwires_active == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_tripwires_is_connected_without_one() {
    let ca = ca();
    let mut off = QuicConfig::default();
    off.tripwire = false;
    let (a, mut a_events, a_stats) = start_watched(&ca, "a", QuicConfig::default()).await;
    let (b, mut b_events, b_stats) = start_watched(&ca, "b", off.clone()).await;
    let (c, mut c_events, c_stats) = start_watched(&ca, "c", off).await;
    // `a` dials one without (no TCP listener there); one without dials `a` (no tripwire
    // comes: `a`'s registration waits in vain).
    connect(&a, &mut a_events, &b, &mut b_events).await;
    connect(&c, &mut c_events, &a, &mut a_events).await;
    // Past the listener's deadline for a tripwire: nothing may have come of it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for seq in 1..=10 {
        a.send(transmit(Some(b.node().clone()), None, seq));
        c.send(transmit(Some(a.node().clone()), None, seq));
    }
    for seq in 1..=10 {
        assert_eq!(expect_frame(&mut b_events, a.node()).await, message(seq));
        assert_eq!(expect_frame(&mut a_events, c.node()).await, message(seq));
    }
    assert_quiet(&mut a_events);
    assert_quiet(&mut b_events);
    assert_quiet(&mut c_events);
    for stats in [&a_stats, &b_stats, &c_stats] {
        assert_eq!(stats.stats(), Default::default());
    }
    assert_eq!(a.connections().len(), 2);
}

/// Sockets that open at a node's tripwire listener and never speak (more than the
/// listener holds, all from one address) do not keep a new connection from its tripwire:
/// one address holds only a few slots, and a silent socket is closed at the token deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_at_the_tripwire_listener_leave_room_for_tripwires() {
    let ca = ca();
    let (a, mut a_events, a_stats) = start_watched(&ca, "a", QuicConfig::default()).await;
    let (b, mut b_events, b_stats) = start_watched(&ca, "b", QuicConfig::default()).await;
    let mut silent = Vec::new();
    for target in [a.local_addr(), b.local_addr()] {
        for _ in 0..300 {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            socket
                .bind(std::net::SocketAddr::from(([127, 0, 0, 2], 0)))
                .expect("bind a loopback source");
            silent.push(socket.connect(target).await.expect("connects"));
        }
    }
    connect(&a, &mut a_events, &b, &mut b_events).await;
    eventually(
        "the new connection's tripwire is armed at both ends",
        || a_stats.stats().tripwires_active == 1 && b_stats.stats().tripwires_active == 1,
    )
    .await;
    drop(silent);
}

/// A node holding a certificate from the cluster CA for `x` can join neither as `a` (the
/// node it dials refuses it) nor answer as `b` (its dialer refuses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_cannot_join_under_a_name() {
    let ca = ca();
    let (b, mut b_events) = start(&ca, "b").await;
    let (impostor, mut impostor_events) = start_with(network(&ca, "x"), "a", config()).await;
    impostor.send(transmit(None, Some(b.advertised_addr()), 1));
    eventually("the impostor's dial fails", || {
        impostor.stats().dials_failed >= 1
    })
    .await;
    eventually("b refuses it", || b.stats().handshakes_failed >= 1).await;
    assert_eq!(b.stats().links_up, 0);
    assert_quiet(&mut b_events);
    drop(impostor_events.try_recv());

    let (answering, _answering_events) = start_with(network(&ca, "x"), "c", config()).await;
    let (a, mut a_events) = start(&ca, "a").await;
    a.send(transmit(None, Some(answering.advertised_addr()), 1));
    eventually("a's dial fails", || a.stats().dials_failed >= 1).await;
    assert_eq!(a.stats().links_up, 0);
    assert_quiet(&mut a_events);
}
