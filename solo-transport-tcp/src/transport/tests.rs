//! The transport over real loopback TCP. No test sleeps for a fixed time to let something
//! happen: each waits for an event or a condition, within a generous bound.

use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll, ready};

use solo_core::wire::{HelloError, MAX_FRAME_LEN, Message, decode_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use super::*;
use crate::frame::FrameError;
use crate::handshake::tests::{HELLO_WITHIN, id, identity};
use crate::handshake::{self, Verdict};
use solo_core::wire;

/// Long enough never to be hit on a loaded machine; the tests pass in milliseconds.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
pub(crate) const COOKIE: &[u8] = b"test-cookie-0123456789";
pub(crate) const CLUSTER: &str = "test";

pub(crate) type Events = super::EventReceiver;

pub(crate) fn config() -> Config {
    Config::new(CLUSTER, COOKIE)
}

pub(crate) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub(crate) async fn start_with<N: Network>(
    network: N,
    name: &str,
    incarnation: u64,
    config: Config,
) -> (Transport<N>, Events) {
    TransportBuilder::new(id(name, incarnation), config)
        .bind(network, loopback())
        .await
        .expect("transport starts")
}

async fn start(name: &str) -> (Transport, Events) {
    start_with(TokioNetwork, name, 1, config()).await
}

pub(crate) fn message(seq: u32) -> Message {
    Message::IndirectAck {
        seq,
        target: id("x", 1),
    }
}

pub(crate) fn transmit(to: Option<NodeId>, addr: Option<SocketAddr>, seq: u32) -> Transmit {
    Transmit {
        to,
        addr,
        message: message(seq),
    }
}

pub(crate) async fn next(events: &mut Events) -> TransportEvent {
    timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the event stream is open")
}

pub(crate) async fn expect_link(events: &mut Events, peer: &NodeId, link: Link) {
    match next(events).await {
        TransportEvent::Link { peer: p, link: l } if p == *peer && l == link => {}
        other => panic!("expected {link:?} for {peer}, got {other:?}"),
    }
}

pub(crate) async fn expect_frame(events: &mut Events, from: &NodeId) -> Message {
    match next(events).await {
        TransportEvent::Frame { from: f, frame } if f == *from => {
            decode_frame(&frame).expect("a valid frame")
        }
        other => panic!("expected a frame from {from}, got {other:?}"),
    }
}

/// Waits until `condition` holds, checking every few milliseconds.
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let polling = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    timeout(WAIT, polling)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

pub(crate) fn assert_quiet(events: &mut Events) {
    if let Ok(event) = events.try_recv() {
        panic!("unexpected event {event:?}");
    }
}

/// Waits until the far end closes `stream` (EOF or reset), discarding what it sends.
async fn closed_by_peer(stream: &mut TcpStream) {
    let mut sink = Vec::new();
    let _ = timeout(WAIT, stream.read_to_end(&mut sink))
        .await
        .expect("the transport closes the connection");
}

/// Connects two transports and returns once both saw `Link::Up`.
async fn connect_pair() -> ((Transport, Events), (Transport, Events)) {
    connect_pair_with(config()).await
}

/// As [`connect_pair`], with `b` started with `b_config`.
async fn connect_pair_with(b_config: Config) -> ((Transport, Events), (Transport, Events)) {
    let (a, mut a_events) = start("a").await;
    let (b, mut b_events) = start_with(TokioNetwork, "b", 1, b_config).await;
    a.send(transmit(None, Some(b.advertised_addr()), 0));
    expect_link(&mut b_events, a.node(), Link::Up).await;
    expect_frame(&mut b_events, a.node()).await;
    expect_link(&mut a_events, b.node(), Link::Up).await;
    ((a, a_events), (b, b_events))
}

#[tokio::test]
async fn two_transports_connect_and_frames_flow_both_ways_in_order() {
    let ((a, mut a_events), (b, mut b_events)) = connect_pair().await;
    assert_eq!(a.connections().len(), 1);
    assert_eq!(a.connections()[0].peer, *b.node());
    assert_eq!(a.connections()[0].direction, Direction::Outbound);
    assert_eq!(a.connections()[0].addr, b.advertised_addr());
    assert_eq!(b.connections()[0].direction, Direction::Inbound);

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
    assert_eq!(a.stats().links_up, 1);
    assert_eq!(b.stats().frames_received, 301);
    assert_eq!(a.stats().dropped_queue_full, 0);
}

#[tokio::test]
async fn a_wrong_cookie_fails_on_both_sides_and_nothing_is_reported() {
    let (a, mut a_events) = start("a").await;
    let (b, mut b_events) = start_with(TokioNetwork, "b", 1, Config::new(CLUSTER, "another")).await;
    a.send(transmit(
        Some(b.node().clone()),
        Some(b.advertised_addr()),
        1,
    ));
    eventually("both sides fail the handshake", || {
        a.stats().dials_failed == 1 && b.stats().handshakes_failed == 1
    })
    .await;
    assert_eq!(a.stats().handshakes_failed, 1);
    assert_eq!(a.stats().dropped_dial_failed, 1);
    assert_quiet(&mut a_events);
    assert_quiet(&mut b_events);
    assert!(a.connections().is_empty() && b.connections().is_empty());
}

#[tokio::test]
async fn another_cluster_is_refused() {
    let (a, mut a_events) = start("a").await;
    let mut other = config();
    other.cluster = "elsewhere".into();
    let (b, mut b_events) = start_with(TokioNetwork, "b", 1, other).await;
    a.send(transmit(None, Some(b.advertised_addr()), 1));
    eventually("both sides fail the handshake", || {
        a.stats().dials_failed == 1 && b.stats().handshakes_failed == 1
    })
    .await;
    // The dialer read the acceptor's hello, so it can say what differs.
    match a_events.try_recv() {
        Ok(TransportEvent::Misconfigured { addr, error }) => {
            assert_eq!(addr, b.advertised_addr());
            assert!(
                matches!(error, HelloError::WrongCluster { .. }),
                "{error:?}"
            );
        }
        other => panic!("expected the dialer to report the other cluster: {other:?}"),
    }
    assert_quiet(&mut a_events);
    assert_quiet(&mut b_events);
}

#[tokio::test]
async fn another_protocol_version_is_refused_in_either_role() {
    let (b, mut b_events) = start("b").await;

    // As initiator: a raw client announcing another version.
    let mut hello = identity("m", CLUSTER, COOKIE).hello().clone();
    hello.protocol_version = PROTOCOL_VERSION + 1;
    let future = Identity::new(hello, COOKIE).expect("encodes");
    let mut stream = TcpStream::connect(b.local_addr()).await.expect("connect");
    let result = handshake::initiate(&mut stream, &future, [7; NONCE_LEN]).await;
    assert!(result.is_err(), "{result:?}");
    eventually("b refuses", || b.stats().handshakes_failed == 1).await;

    // As acceptor: a raw listener that answers with another version.
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let raw_addr = listener.local_addr().expect("addr");
    b.send(transmit(None, Some(raw_addr), 1));
    let (mut stream, _) = timeout(WAIT, listener.accept())
        .await
        .expect("b dials")
        .expect("accept");
    frame::read_frame(&mut stream, 1024)
        .await
        .expect("b's hello");
    let mut second = vec![9; NONCE_LEN];
    second.extend(wire::encode_hello(future.hello()).expect("encodes"));
    stream
        .write_all(&frame::framed(&second, 1024).expect("framed"))
        .await
        .expect("write");
    closed_by_peer(&mut stream).await;
    eventually("b's dial fails", || b.stats().dials_failed == 1).await;
    match b_events.try_recv() {
        Ok(TransportEvent::Misconfigured { addr, error }) => {
            assert_eq!(addr, raw_addr);
            assert!(
                matches!(error, HelloError::WrongVersion { .. }),
                "{error:?}"
            );
        }
        other => panic!("expected the dialer to report the other version: {other:?}"),
    }
    assert_quiet(&mut b_events);
}

#[tokio::test]
async fn an_oversized_length_prefix_closes_the_connection_and_others_keep_working() {
    let (b, mut b_events) = start("b").await;

    // Before the handshake: the first length prefix is over the handshake limit.
    let mut stream = TcpStream::connect(b.local_addr()).await.expect("connect");
    stream.write_all(&[0xFF; 4]).await.expect("write");
    closed_by_peer(&mut stream).await;

    // After the handshake: an authenticated peer announces a 4 GiB frame.
    let mallory = identity("mallory", CLUSTER, COOKIE);
    let mut stream = TcpStream::connect(b.local_addr()).await.expect("connect");
    let (_, verdict, _) = handshake::initiate(&mut stream, &mallory, [1; NONCE_LEN])
        .await
        .expect("handshake");
    assert_eq!(verdict, Verdict::Accepted);
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
    stream.write_all(&[0xFF; 4]).await.expect("write");
    expect_link(&mut b_events, mallory.node(), Link::Down).await;
    closed_by_peer(&mut stream).await;

    // The transport still serves others.
    let (a, _a_events) = start("a").await;
    a.send(transmit(None, Some(b.advertised_addr()), 5));
    expect_link(&mut b_events, a.node(), Link::Up).await;
    assert_eq!(expect_frame(&mut b_events, a.node()).await, message(5));
}

#[tokio::test]
async fn garbage_and_truncated_handshakes_are_dropped_without_a_panic() {
    let mut short = config();
    short.handshake_timeout = Duration::from_millis(200);
    let (b, mut b_events) = start_with(TokioNetwork, "b", 1, short).await;
    let garbage: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
        &[0, 0, 0, 3, 1, 2, 3],
        &[0, 0, 0, 0],
        &[0, 0, 0, 200, 1, 2, 3, 4, 5],
        &[0x5A; 700],
    ];
    for bytes in garbage {
        let mut stream = TcpStream::connect(b.local_addr()).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        stream.shutdown().await.expect("half-close");
        closed_by_peer(&mut stream).await;
    }
    // A nonce and then a hello cut short.
    let mallory = identity("mallory", CLUSTER, COOKIE);
    let mut first = vec![1; NONCE_LEN];
    first.extend(wire::encode_hello(mallory.hello()).expect("encodes"));
    let framed = frame::framed(&first, 1024).expect("framed");
    let mut stream = TcpStream::connect(b.local_addr()).await.expect("connect");
    stream
        .write_all(&framed[..framed.len() - 3])
        .await
        .expect("write");
    stream.shutdown().await.expect("half-close");
    closed_by_peer(&mut stream).await;
    // Silence: the handshake timeout closes it.
    let mut silent = TcpStream::connect(b.local_addr()).await.expect("connect");
    closed_by_peer(&mut silent).await;

    eventually("every attempt counted", || b.stats().handshakes_failed == 7).await;
    assert_quiet(&mut b_events);

    let (a, _a_events) = start("a").await;
    a.send(transmit(None, Some(b.advertised_addr()), 5));
    expect_link(&mut b_events, a.node(), Link::Up).await;
}

/// A stream that records what is written to it.
struct Recorder {
    inner: TcpStream,
    written: Vec<u8>,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_recorded_handshake_replayed_from_a_raw_socket_fails() {
    let (b, mut b_events) = start("b").await;
    let mallory = identity("mallory", CLUSTER, COOKIE);
    let mut recorder = Recorder {
        inner: TcpStream::connect(b.local_addr()).await.expect("connect"),
        written: Vec::new(),
    };
    handshake::initiate(&mut recorder, &mallory, [1; NONCE_LEN])
        .await
        .expect("the honest run succeeds");
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
    let recorded = recorder.written;
    let mut honest = recorder.inner;
    write_keepalive(&mut honest).await;
    drop(honest);
    expect_link(&mut b_events, mallory.node(), Link::Down).await;

    // The initiator's two messages, byte for byte.
    let first_len = 4 + usize::try_from(u32::from_be_bytes(
        recorded[..4].try_into().expect("prefix"),
    ))
    .expect("fits");
    let (first, third) = recorded.split_at(first_len);
    assert_eq!(third.len(), 4 + handshake::TAG_LEN);

    let mut stream = TcpStream::connect(b.local_addr()).await.expect("connect");
    stream.write_all(first).await.expect("write");
    frame::read_frame(&mut stream, 1024)
        .await
        .expect("b answers with a fresh nonce");
    stream.write_all(third).await.expect("write");
    // b closes without its own proof: nothing more arrives.
    let mut rest = Vec::new();
    let _ = timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("closed");
    assert!(rest.is_empty(), "b sent {} more bytes", rest.len());
    eventually("b counts the failure", || b.stats().handshakes_failed == 1).await;
    assert_quiet(&mut b_events);
}

#[tokio::test]
async fn dropping_a_transport_makes_its_peer_report_link_down_promptly() {
    let ((a, mut a_events), (b, b_events)) = connect_pair().await;
    let b_id = b.node().clone();
    let started = Instant::now();
    drop(b);
    drop(b_events);
    expect_link(&mut a_events, &b_id, Link::Down).await;
    // The read side sees the close: no timeout is involved (the handshake timeout is 5 s,
    // the core's failure detector's longer still).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(a.connections().is_empty());
    assert_eq!(a.stats().links_down, 1);
}

#[tokio::test]
async fn dropping_the_dialer_makes_the_acceptor_report_link_down_promptly() {
    let ((a, a_events), (b, mut b_events)) = connect_pair().await;
    let a_id = a.node().clone();
    drop(a);
    drop(a_events);
    // The dialer's first frame confirmed its handshake, so its close is a failure.
    expect_link(&mut b_events, &a_id, Link::Down).await;
    assert_eq!(b.stats().links_down, 1);
}

#[tokio::test]
async fn shutdown_closes_connections_and_ends_the_event_stream() {
    let ((a, mut a_events), (b, mut b_events)) = connect_pair().await;
    a.shutdown();
    expect_link(&mut b_events, a.node(), Link::Down).await;
    let end = timeout(WAIT, async { while a_events.recv().await.is_some() {} });
    end.await.expect("the stream ends");
    a.send(transmit(
        Some(b.node().clone()),
        Some(b.advertised_addr()),
        1,
    ));
    assert_eq!(a.stats().dropped_no_route, 1);
    // The listener is closed too.
    assert!(TcpStream::connect(a.local_addr()).await.is_err());
}

/// Holds each side's first dial until the other side dials too, so both handshakes race.
struct SimultaneousNetwork {
    barrier: Arc<tokio::sync::Barrier>,
    waited: AtomicBool,
}

impl Network for SimultaneousNetwork {
    type Stream = TcpStream;
    type Listener = TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        TokioNetwork.bind(addr).await
    }
    fn local_addr(&self, listener: &TcpListener) -> io::Result<SocketAddr> {
        TokioNetwork.local_addr(listener)
    }
    async fn accept(&self, listener: &mut TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        TokioNetwork.accept(listener).await
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        if !self.waited.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.barrier.wait().await;
        }
        TokioNetwork.connect(addr).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_end_with_exactly_one_connection_and_frames_still_flow() {
    for round in 0..5 {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let network = || SimultaneousNetwork {
            barrier: Arc::clone(&barrier),
            waited: AtomicBool::new(false),
        };
        // Alternate which side has the lower id.
        let (x, y) = if round % 2 == 0 {
            ("a", "b")
        } else {
            ("d", "c")
        };
        let (a, mut a_events) = start_with(network(), x, 1, config()).await;
        let (b, mut b_events) = start_with(network(), y, 1, config()).await;
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
        let (ca, cb) = (a.connections(), b.connections());
        assert_eq!((ca.len(), cb.len()), (1, 1));
        assert_ne!(
            ca[0].direction, cb[0].direction,
            "both ends kept the same connection"
        );
        // The kept connection is the one the lower id dialed.
        let a_is_lower = a.node() < b.node();
        assert_eq!(ca[0].direction == Direction::Outbound, a_is_lower);

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
            assert_quiet(events);
        }
        assert_eq!(a.stats().links_down + b.stats().links_down, 0);
    }
}

#[tokio::test]
async fn a_newer_incarnation_replaces_the_older_connection() {
    let ((a, mut a_events), (b1, mut b1_events)) = connect_pair().await;
    let (b2, _b2_events) = start_with(TokioNetwork, "b", 2, config()).await;
    b2.send(transmit(None, Some(a.advertised_addr()), 1));
    expect_link(&mut a_events, b1.node(), Link::Down).await;
    expect_link(&mut a_events, b2.node(), Link::Up).await;
    assert_eq!(expect_frame(&mut a_events, b2.node()).await, message(1));
    assert_eq!(a.connections()[0].peer, *b2.node());
    expect_link(&mut b1_events, a.node(), Link::Down).await;

    // Frames for the stale incarnation are not delivered to the new one.
    a.send(transmit(
        Some(b1.node().clone()),
        Some(b1.advertised_addr()),
        2,
    ));
    assert_eq!(a.stats().dropped_no_route, 1);

    // The stale process cannot get back in, and learns on that first redial who replaced
    // it.
    b1.send(transmit(
        Some(a.node().clone()),
        Some(a.advertised_addr()),
        3,
    ));
    eventually("b1's dial is refused", || b1.stats().dials_failed == 1).await;
    assert_eq!(b1.stats().dropped_dial_failed, 1);
    assert!(b1.connections().is_empty());
    assert_eq!(
        b1_events.try_recv().ok(),
        Some(TransportEvent::Superseded {
            refused_by: a.node().clone(),
            by: b2.node().clone(),
        })
    );
    assert_quiet(&mut b1_events);
    assert_eq!(a.connections()[0].peer, *b2.node());
}

/// A transport told of a newer incarnation refuses the older one even with no connection
/// to the newer one, and says so in the refusal.
#[tokio::test]
async fn a_dialer_older_than_the_newest_known_incarnation_is_refused_as_superseded() {
    let (a, _a_events) = start_with(TokioNetwork, "a", 1, config()).await;
    let (b1, mut b1_events) = start_with(TokioNetwork, "b", 1, config()).await;
    let newer = NodeId::new(b1.node().name.clone(), solo_core::Incarnation(7));
    a.note_incarnation(&newer);
    b1.send(transmit(
        Some(a.node().clone()),
        Some(a.advertised_addr()),
        1,
    ));
    eventually("b1's dial is refused", || b1.stats().dials_failed == 1).await;
    assert_eq!(
        b1_events.try_recv().ok(),
        Some(TransportEvent::Superseded {
            refused_by: a.node().clone(),
            by: newer,
        })
    );
    assert!(a.connections().is_empty());
}

/// Records when each dial starts.
#[derive(Default)]
struct RecordingNetwork {
    dials: Arc<Mutex<Vec<(SocketAddr, Instant)>>>,
}

impl Network for RecordingNetwork {
    type Stream = TcpStream;
    type Listener = TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        TokioNetwork.bind(addr).await
    }
    fn local_addr(&self, listener: &TcpListener) -> io::Result<SocketAddr> {
        TokioNetwork.local_addr(listener)
    }
    async fn accept(&self, listener: &mut TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        TokioNetwork.accept(listener).await
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.dials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((addr, Instant::now()));
        TokioNetwork.connect(addr).await
    }
}

#[tokio::test]
async fn a_failed_dial_makes_the_next_one_wait_out_the_backoff() {
    let dials = Arc::new(Mutex::new(Vec::new()));
    let network = RecordingNetwork {
        dials: Arc::clone(&dials),
    };
    let (a, mut a_events) = start_with(network, "a", 1, config()).await;
    let attempts = || dials.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let backoff = |addr| {
        a.shared()
            .state()
            .backoff
            .get(&addr)
            .map(|b| (b.failures, b.next_attempt))
    };

    // A port nobody listens on.
    let dead = {
        let listener = std::net::TcpListener::bind(loopback()).expect("bind");
        listener.local_addr().expect("addr")
    };
    let before = Instant::now();
    a.send(transmit(None, Some(dead), 1));
    eventually("the dial fails", || a.stats().dials_failed == 1).await;
    assert_eq!(a.stats().dropped_dial_failed, 1);
    let (failures, next_attempt) = backoff(dead).expect("backoff recorded");
    assert_eq!(failures, 1);
    // 50 ms with equal jitter: at least 25 ms after the failure.
    assert!(next_attempt >= before + Duration::from_millis(25));

    a.send(transmit(None, Some(dead), 2));
    eventually("the second dial fails", || a.stats().dials_failed == 2).await;
    let attempts_now = attempts();
    assert_eq!(attempts_now.len(), 2);
    assert!(
        attempts_now[1].1 >= next_attempt,
        "the second dial started before the backoff ended"
    );
    let (failures, second_next) = backoff(dead).expect("backoff recorded");
    assert_eq!(failures, 2);
    assert!(second_next >= attempts_now[1].1 + Duration::from_millis(50));

    // Someone listens there now: the next dial succeeds and clears the backoff.
    let (b, mut b_events) = TransportBuilder::new(id("b", 1), config())
        .bind(TokioNetwork, dead)
        .await
        .expect("the port is free again");
    a.send(transmit(None, Some(dead), 3));
    expect_link(&mut b_events, a.node(), Link::Up).await;
    assert_eq!(expect_frame(&mut b_events, a.node()).await, message(3));
    expect_link(&mut a_events, b.node(), Link::Up).await;
    assert_eq!(backoff(dead), None);
}

#[tokio::test]
async fn unroutable_and_overflowing_frames_are_dropped_and_counted() {
    let mut small = config();
    small.max_queued_frames_dialing = 2;
    let (a, _a_events) = start_with(TokioNetwork, "a", 1, small).await;
    a.send(transmit(Some(id("nobody", 1)), None, 1));
    a.send(transmit(None, None, 2));
    a.send(transmit(
        Some(a.node().clone()),
        Some(a.advertised_addr()),
        3,
    ));
    assert_eq!(a.stats().dropped_no_route, 3);

    let dead = {
        let listener = std::net::TcpListener::bind(loopback()).expect("bind");
        listener.local_addr().expect("addr")
    };
    // Nothing runs between these sends (a current-thread runtime): one dial, two queued.
    for seq in 0..5 {
        a.send(transmit(None, Some(dead), seq));
    }
    let stats = a.stats();
    assert_eq!((stats.frames_queued, stats.dropped_queue_full), (2, 3));
    assert_eq!(stats.dials_in_progress, 1);
    eventually("the dial fails", || a.stats().dials_failed == 1).await;
    assert_eq!(a.stats().dropped_dial_failed, 2);
}

/// `try_send` gives back what `send` would drop, with why, and counts nothing: its caller
/// decides whether the message is lost.
#[tokio::test]
async fn try_send_says_why_a_frame_was_not_queued() {
    let mut small = config();
    small.max_queued_frames_dialing = 2;
    let (a, _a_events) = start_with(TokioNetwork, "a", 1, small).await;
    assert_eq!(
        a.try_send(&transmit(Some(id("nobody", 1)), None, 1)),
        Err(SendFailure::NoRoute)
    );
    let dead = {
        let listener = std::net::TcpListener::bind(loopback()).expect("bind");
        listener.local_addr().expect("addr")
    };
    // Nothing runs between these sends (a current-thread runtime): one dial, two queued.
    let results: Vec<_> = (0..3)
        .map(|seq| a.try_send(&transmit(None, Some(dead), seq)))
        .collect();
    assert_eq!(results, [Ok(()), Ok(()), Err(SendFailure::QueueFull)]);
    let huge = Transmit {
        to: None,
        addr: Some(dead),
        message: message_of_about(2 * wire::MAX_FRAME_LEN),
    };
    assert_eq!(a.try_send(&huge), Err(SendFailure::TooLarge));
    let stats = a.stats();
    assert_eq!(
        (
            stats.frames_queued,
            stats.dropped_queue_full,
            stats.dropped_no_route,
            stats.dropped_unencodable
        ),
        (2, 0, 0, 0)
    );
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Transport>();
    assert_send_sync::<Transport<RecordingNetwork>>();
}

#[tokio::test]
async fn binding_checks_the_config_and_the_advertised_address() {
    let bad = Config::new(CLUSTER, "");
    let result = Transport::builder(id("a", 1), bad)
        .bind(TokioNetwork, loopback())
        .await;
    assert!(matches!(
        result,
        Err(TransportStartError::Config(ConfigError::EmptyCookie))
    ));
    let result = Transport::builder(id("a", 1), config())
        .bind(TokioNetwork, SocketAddr::from(([0, 0, 0, 0], 0)))
        .await;
    assert!(matches!(
        result,
        Err(TransportStartError::UnspecifiedAddr(_))
    ));
    let mut advertised = config();
    advertised.advertised_addr = Some("127.0.0.1:4000".parse().expect("addr"));
    let (a, _events) = Transport::builder(id("a", 1), advertised)
        .bind(TokioNetwork, SocketAddr::from(([0, 0, 0, 0], 0)))
        .await
        .expect("binds");
    assert_eq!(a.advertised_addr().port(), 4000);
}

/// An authenticated raw connection to `to`, as `who`.
async fn raw_peer(to: &Transport, who: &Identity, nonce: u8) -> TcpStream {
    let mut stream = TcpStream::connect(to.local_addr()).await.expect("connect");
    let (_, verdict, _) = handshake::initiate(&mut stream, who, [nonce; NONCE_LEN])
        .await
        .expect("handshake");
    assert_eq!(verdict, Verdict::Accepted);
    stream
}

/// The next frame from a raw connection that is not a keep-alive.
async fn read_skipping_keepalives(stream: &mut TcpStream) -> Result<Vec<u8>, FrameError> {
    loop {
        let frame = frame::read_frame(stream, MAX_FRAME_LEN).await?;
        if frame != KEEPALIVE {
            return Ok(frame);
        }
    }
}

/// What a dialer sends first: a keep-alive, which confirms the handshake to the acceptor.
async fn write_keepalive(stream: &mut TcpStream) {
    let bytes = frame::framed(&KEEPALIVE, MAX_FRAME_LEN).expect("framed");
    stream.write_all(&bytes).await.expect("write");
}

#[tokio::test]
async fn a_dialer_that_closes_before_confirming_its_handshake_is_not_reported_down() {
    let (b, mut b_events) = start("b").await;
    let mallory = identity("mallory", CLUSTER, COOKIE);
    // The acceptor's verdict was its last step; the dialer (its verdict lost, its deadline
    // passed) closes without a frame. That is a failed handshake, not a failed peer.
    let unconfirmed = raw_peer(&b, &mallory, 1).await;
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
    drop(unconfirmed);
    eventually("b drops the connection", || b.connections().is_empty()).await;
    assert_quiet(&mut b_events);
    assert_eq!(b.stats().links_down, 0);

    // Once the dialer's first frame arrived, a close is the peer's failure.
    let mut confirmed = raw_peer(&b, &mallory, 2).await;
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
    write_keepalive(&mut confirmed).await;
    drop(confirmed);
    expect_link(&mut b_events, mallory.node(), Link::Down).await;
}

async fn write_message(stream: &mut TcpStream, seq: u32) {
    let frame = wire::encode_frame(&message(seq)).expect("encodes");
    let bytes = frame::framed(&frame, MAX_FRAME_LEN).expect("framed");
    stream.write_all(&bytes).await.expect("write");
}

#[tokio::test]
async fn a_handover_marker_passes_the_link_to_its_successor_without_a_down() {
    let (b, mut b_events) = start("b").await;
    let mallory = identity("mallory", CLUSTER, COOKIE);
    let mut first = raw_peer(&b, &mallory, 1).await;
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
    first.write_all(&HANDOVER_MARKER).await.expect("write");
    let mut second = raw_peer(&b, &mallory, 2).await;
    write_message(&mut second, 7).await;
    // No `Down` and no second `Up` before the frame.
    assert_eq!(
        expect_frame(&mut b_events, mallory.node()).await,
        message(7)
    );
    drop(first);
    b.send(transmit(Some(mallory.node().clone()), None, 8));
    let reply = read_skipping_keepalives(&mut second)
        .await
        .expect("b answers over the successor");
    assert_eq!(decode_frame(&reply).expect("valid"), message(8));
    let stats = b.stats();
    assert_eq!((stats.links_up, stats.links_down), (1, 0));
    assert_eq!(b.connections().len(), 1);
    assert_quiet(&mut b_events);
}

#[tokio::test]
async fn a_handover_without_a_successor_is_not_reported_down() {
    let mut short = config();
    short.handshake_timeout = Duration::from_millis(300);
    let (b, mut b_events) = start_with(TokioNetwork, "b", 1, short).await;
    let mallory = identity("mallory", CLUSTER, COOKIE);
    let mut stream = raw_peer(&b, &mallory, 1).await;
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
    // The peer retired the connection (it declared b down, say) and dials no successor:
    // it was alive to send the marker, so only the core's failure detector may judge it.
    stream.write_all(&HANDOVER_MARKER).await.expect("write");
    eventually("b drops the connection", || b.connections().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_quiet(&mut b_events);
    assert_eq!(b.stats().links_down, 0);
    // A successor after the wait is a new link.
    let _successor = raw_peer(&b, &mallory, 2).await;
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
}

#[tokio::test]
async fn a_redial_replaces_the_old_connection_which_gets_the_handover_marker() {
    let (b, mut b_events) = start("b").await;
    let mallory = identity("mallory", CLUSTER, COOKIE);
    let mut first = raw_peer(&b, &mallory, 1).await;
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
    let mut second = raw_peer(&b, &mallory, 2).await;
    // b retires the first connection: the marker, then end of stream.
    assert!(matches!(
        read_skipping_keepalives(&mut first).await,
        Err(FrameError::Empty)
    ));
    assert!(matches!(
        frame::read_frame(&mut first, MAX_FRAME_LEN).await,
        Err(FrameError::Closed)
    ));
    drop(first);
    write_message(&mut second, 3).await;
    assert_eq!(
        expect_frame(&mut b_events, mallory.node()).await,
        message(3)
    );
    assert_eq!(b.stats().duplicates_closed, 1);
    assert_eq!(b.connections().len(), 1);
    assert_quiet(&mut b_events);
}

#[tokio::test]
async fn disconnect_drops_the_connection_quietly_and_the_next_frame_dials_again() {
    let ((a, mut a_events), (b, mut b_events)) = connect_pair().await;
    a.disconnect(b.node());
    assert!(a.connections().is_empty());
    // Neither side reports anything: `a` decided, and `b` got the handover marker, so it
    // waits for a successor rather than take the close for a crash.
    eventually("b drops the retired connection", || {
        b.connections().is_empty()
    })
    .await;
    a.send(transmit(
        Some(b.node().clone()),
        Some(b.advertised_addr()),
        7,
    ));
    expect_link(&mut a_events, b.node(), Link::Up).await;
    assert_eq!(expect_frame(&mut b_events, a.node()).await, message(7));
    assert_eq!(a.connections().len(), 1);
    assert_eq!(b.stats().links_down, 0, "b never reported a down");
    assert_quiet(&mut b_events);
}

fn fast_keepalive(idle_timeout: Duration) -> Config {
    let mut config = config();
    config.keepalive_interval = Duration::from_millis(50);
    config.idle_timeout = idle_timeout;
    config
}

#[tokio::test]
async fn a_connection_that_falls_silent_is_replaced_without_a_down() {
    let (b, mut b_events) = start_with(
        TokioNetwork,
        "b",
        1,
        fast_keepalive(Duration::from_millis(300)),
    )
    .await;
    let mallory = identity("mallory", CLUSTER, COOKIE);
    // Mallory completes the handshake and then never sends a byte, like a peer behind a path
    // that stalled without a FIN or a reset.
    let mut stream = raw_peer(&b, &mallory, 1).await;
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
    let up = Instant::now();
    // b kept the connection alive from its side, then retired it with the handover marker
    // (so that the peer waits for a successor rather than report a failure) and closed it.
    let mut keepalives = 0;
    let ending = loop {
        match frame::read_frame(&mut stream, MAX_FRAME_LEN).await {
            Ok(frame) => {
                assert_eq!(frame, KEEPALIVE, "b had nothing else to send");
                keepalives += 1;
            }
            Err(end) => break end,
        }
    };
    assert!(
        matches!(ending, FrameError::Empty),
        "the handover marker, got {ending}"
    );
    assert!(up.elapsed() >= Duration::from_millis(300));
    assert!(
        keepalives >= 1,
        "b sent keep-alives while the link was quiet"
    );
    assert_eq!(b.stats().idle_timeouts, 1);
    // It dials a successor at once (mallory's advertised address does not listen, so that
    // dial fails), and the core hears of no `Down`.
    eventually("b dials a successor", || {
        let stats = b.stats();
        stats.dials_failed + stats.dials_in_progress as u64 >= 1
    })
    .await;
    assert_eq!(b.stats().links_down, 0);
    assert_quiet(&mut b_events);
}

#[tokio::test]
async fn quiet_connections_stay_up_on_keepalives_alone() {
    // Keep-alives every 50 ms against a 2 s idle timeout: only a scheduler stalled for
    // seconds could close these.
    let idle = Duration::from_secs(2);
    let (a, mut a_events) = start_with(TokioNetwork, "a", 1, fast_keepalive(idle)).await;
    let (b, mut b_events) = start_with(TokioNetwork, "b", 1, fast_keepalive(idle)).await;
    a.send(transmit(None, Some(b.advertised_addr()), 0));
    expect_link(&mut b_events, a.node(), Link::Up).await;
    expect_frame(&mut b_events, a.node()).await;
    expect_link(&mut a_events, b.node(), Link::Up).await;
    // Nothing to wait for here: this checks that nothing happens for longer than the idle
    // timeout.
    tokio::time::sleep(idle + idle / 2).await;
    assert_quiet(&mut a_events);
    assert_quiet(&mut b_events);
    assert_eq!((a.stats().idle_timeouts, b.stats().idle_timeouts), (0, 0));
    assert_eq!((a.connections().len(), b.connections().len()), (1, 1));
    // Keep-alives are not frames for the core.
    assert_eq!(b.stats().frames_received, 1);
}

#[tokio::test]
async fn refresh_replaces_a_silent_connection_and_keeps_a_talking_one() {
    // A keep-alive every 5 s: a connection is silent only after 7.5 s without a byte.
    let mut slow = config();
    slow.keepalive_interval = Duration::from_secs(5);
    slow.idle_timeout = Duration::from_secs(10);
    let (b, mut b_events) = start_with(TokioNetwork, "b", 1, slow).await;
    let mallory = identity("mallory", CLUSTER, COOKIE);
    let mut talking = raw_peer(&b, &mallory, 1).await;
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
    write_keepalive(&mut talking).await;
    assert!(!b.refresh(mallory.node()), "a talking connection is kept");
    assert_eq!(b.connections().len(), 1);

    // A keep-alive every 50 ms: silent after 75 ms.
    let (c, mut c_events) = start_with(
        TokioNetwork,
        "c",
        1,
        fast_keepalive(Duration::from_secs(10)),
    )
    .await;
    let mut silent = raw_peer(&c, &mallory, 2).await;
    expect_link(&mut c_events, mallory.node(), Link::Up).await;
    write_keepalive(&mut silent).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.refresh(mallory.node()), "a silent connection is replaced");
    assert!(matches!(
        read_skipping_keepalives(&mut silent).await,
        Err(FrameError::Empty)
    ));
    // A successor is dialed at once; the core hears of no `Down`.
    eventually("c dials a successor", || {
        let stats = c.stats();
        stats.dials_failed + stats.dials_in_progress as u64 >= 1
    })
    .await;
    assert_eq!(c.stats().links_down, 0);
}

#[tokio::test]
async fn a_redial_replaces_a_silent_connection_the_tie_break_would_keep() {
    let (b, mut b_events) = start_with(
        TokioNetwork,
        "b",
        1,
        fast_keepalive(Duration::from_secs(10)),
    )
    .await;
    let mallory = identity("mallory", CLUSTER, COOKIE);
    // b dials mallory, which accepts and then stalls: never a byte more.
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    b.send(transmit(
        None,
        Some(listener.local_addr().expect("addr")),
        1,
    ));
    let (mut stalled, _) = listener.accept().await.expect("accept");
    let pending = handshake::accept(&mut stalled, &mallory, [3; NONCE_LEN], HELLO_WITHIN)
        .await
        .expect("b's hello");
    handshake::finish_accept(&mut stalled, &mallory, &pending, Verdict::Accepted, None)
        .await
        .expect("verdict sent");
    expect_link(&mut b_events, mallory.node(), Link::Up).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Mallory gives up on it and dials b. b's id sorts first, so the tie-break of a
    // simultaneous dial keeps b's own connection; a silent one loses to the redial.
    let _successor = raw_peer(&b, &mallory, 4).await;
    eventually("b keeps the redial", || {
        b.connections()
            .first()
            .is_some_and(|c| c.direction == Direction::Inbound)
    })
    .await;
    assert_eq!(b.connections().len(), 1);
    assert_eq!(b.stats().links_down, 0);
    drop(stalled);
}

#[tokio::test]
async fn a_closed_peer_whose_port_refuses_is_reported_gone() {
    let mut probing = config();
    probing.probe_closed_peers = true;
    let (a, mut a_events) = start_with(TokioNetwork, "a", 1, probing).await;
    let (b, mut b_events) = start("b").await;
    a.send(transmit(None, Some(b.advertised_addr()), 0));
    expect_link(&mut b_events, a.node(), Link::Up).await;
    expect_link(&mut a_events, b.node(), Link::Up).await;
    let b_id = b.node().clone();
    // b's process ends: its connection closes, and then its port refuses a's dial.
    drop(b);
    drop(b_events);
    expect_link(&mut a_events, &b_id, Link::Down).await;
    match next(&mut a_events).await {
        TransportEvent::ProcessGone { peer } => assert_eq!(peer, b_id),
        other => panic!("expected b reported gone, got {other:?}"),
    }
}

#[tokio::test]
async fn without_probing_a_closed_peer_is_only_down() {
    let ((a, mut a_events), (b, b_events)) = connect_pair().await;
    let b_id = b.node().clone();
    drop(b);
    drop(b_events);
    expect_link(&mut a_events, &b_id, Link::Down).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_quiet(&mut a_events);
    drop(a);
}

/// 500 sockets that connect and never speak (half from one address, half from 125 others)
/// cannot lock a peer out: per-address limits turn most away, the oldest silent handshake
/// makes room for a new one, and the rest are closed at the hello deadline. The handshake
/// timeout is a minute here, which is what a lockout would cost (before these limits, 64
/// silent sockets blocked every inbound handshake for the whole handshake timeout).
#[tokio::test]
async fn silent_sockets_do_not_lock_a_peer_out() {
    let mut patient = config();
    patient.handshake_timeout = Duration::from_secs(60);
    let (b, mut b_events) = start_with(TokioNetwork, "b", 1, patient).await;
    let target = b.advertised_addr();
    let mut silent = Vec::new();
    for i in 0..500u16 {
        let source = if i < 250 {
            std::net::Ipv4Addr::new(127, 0, 0, 2)
        } else {
            std::net::Ipv4Addr::new(127, 0, 1, u8::try_from(i % 125).expect("small") + 1)
        };
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind a loopback source");
        silent.push(socket.connect(target).await.expect("connects"));
    }
    let (a, _a_events) = start("a").await;
    let started = Instant::now();
    a.send(transmit(Some(b.node().clone()), Some(target), 1));
    expect_link(&mut b_events, a.node(), Link::Up).await;
    assert_eq!(expect_frame(&mut b_events, a.node()).await, message(1));
    let took = started.elapsed();
    let stats = b.stats();
    println!(
        "joined in {took:?} beside 500 silent sockets ({} refused by address, {} evicted)",
        stats.connections_refused, stats.handshakes_evicted
    );
    assert!(stats.connections_refused >= 200, "{stats:?}");
    assert!(stats.handshakes_evicted >= 1, "{stats:?}");
    drop(silent);
}

/// A socket that connects and stays silent is closed at the hello deadline, long before
/// the handshake timeout.
#[tokio::test]
async fn a_silent_socket_is_closed_at_the_hello_deadline() {
    let mut patient = config();
    patient.handshake_timeout = Duration::from_secs(60);
    patient.hello_timeout = Duration::from_millis(200);
    let (b, _b_events) = start_with(TokioNetwork, "b", 1, patient).await;
    let mut silent = TcpStream::connect(b.advertised_addr())
        .await
        .expect("connects");
    let mut byte = [0u8; 1];
    let read = timeout(WAIT, silent.read(&mut byte))
        .await
        .expect("closed well before the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(b.stats().handshakes_failed, 1);
}

/// A gossip message of about `bytes` bytes.
fn message_of_about(bytes: usize) -> Message {
    let update = solo_core::wire::MemberUpdate {
        id: id("someone", 1),
        addr: loopback(),
        state: solo_core::MemberState::Alive,
        version: 0,
        meta: solo_core::NodeMeta::default(),
        ended_ms_ago: 0,
    };
    let each = wire::encode_frame(&Message::Gossip {
        updates: vec![update.clone()],
    })
    .expect("encodes")
    .len();
    Message::Gossip {
        updates: vec![update; bytes / each + 1],
    }
}

/// The frames waiting for a peer are bounded in bytes, not only in number: a queue of two
/// frame slots still drops a frame that would take it over `max_queued_bytes`.
#[tokio::test]
async fn frames_waiting_for_a_peer_are_bounded_in_bytes() {
    let mut small = config();
    small.max_queued_frames_dialing = 64;
    small.max_queued_bytes = 4_000;
    let (a, _a_events) = start_with(TokioNetwork, "a", 1, small).await;
    let dead = {
        let listener = std::net::TcpListener::bind(loopback()).expect("bind");
        listener.local_addr().expect("addr")
    };
    // Nothing runs between these sends (a current-thread runtime): as many as fit in
    // 4 000 bytes are queued and the rest dropped, though 64 frames would fit.
    let message = message_of_about(1_500);
    let len = wire::encode_frame(&message).expect("encodes").len();
    let fit = u64::try_from(4_000 / len).expect("small");
    assert!((1..5).contains(&fit), "{len} bytes a frame");
    for _ in 0..5 {
        a.send(Transmit {
            to: None,
            addr: Some(dead),
            message: message.clone(),
        });
    }
    let stats = a.stats();
    assert_eq!(
        (stats.frames_queued, stats.dropped_queue_full),
        (fit, 5 - fit),
        "{stats:?}"
    );
}

/// The frames read from peers and not yet taken by the owner are bounded in bytes, not only
/// in number: a busy owner stops the reads (its peers are slowed down by TCP) instead of
/// holding a megabyte per event slot, and nothing is dropped.
#[tokio::test]
async fn frames_waiting_for_their_owner_are_bounded_in_bytes() {
    let mut small = config();
    small.max_event_bytes = 100_000;
    let ((a, _a_events), (b, mut b_events)) = connect_pair_with(small).await;

    let message = message_of_about(30_000);
    let len = wire::encode_frame(&message).expect("encodes").len();
    let fit = 100_000 / len;
    assert_eq!(fit, 3, "{len} bytes a frame");
    const SENT: usize = 40;
    for _ in 0..SENT {
        a.send(Transmit {
            to: Some(b.node().clone()),
            addr: None,
            message: message.clone(),
        });
    }
    // Three frames fit. The reader holds the run of frames it read next, at most one fill of
    // its buffer and a frame, while it waits for room.
    let before = b.stats().frames_received;
    eventually("b read as many frames as fit", || {
        b.stats().frames_received > before + fit as u64
    })
    .await;
    // Time for a build without the byte bound to read all forty; this one never reads on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = usize::try_from(b.stats().frames_received - before).expect("small");
    let bound = fit + READ_BUFFER / len + 1;
    assert!(
        held <= bound && held < SENT,
        "the reader stopped at the byte budget: {held} frames read, at most {bound} may wait"
    );
    let queued = b_events.queued_bytes();
    assert!(queued > 0 && queued <= 100_000, "{queued} bytes queued");

    for _ in 0..SENT {
        assert_eq!(expect_frame(&mut b_events, a.node()).await, message);
    }
    assert_eq!(b_events.queued_bytes(), 0);
    assert_quiet(&mut b_events);
}

/// A frame larger than the whole event budget still passes, alone.
#[tokio::test]
async fn a_frame_larger_than_the_event_budget_still_passes() {
    let mut tiny = config();
    tiny.max_event_bytes = 1_000;
    let (a, mut a_events) = start("a").await;
    let (b, mut b_events) = start_with(TokioNetwork, "b", 1, tiny).await;
    let message = message_of_about(5_000);
    a.send(Transmit {
        to: None,
        addr: Some(b.advertised_addr()),
        message: message.clone(),
    });
    expect_link(&mut b_events, a.node(), Link::Up).await;
    assert_eq!(expect_frame(&mut b_events, a.node()).await, message);
    expect_link(&mut a_events, b.node(), Link::Up).await;
    assert_eq!(b_events.queued_bytes(), 0);
}
