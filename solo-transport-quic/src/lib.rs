//! QUIC transport for [solo](https://docs.rs/solo): quinn with rustls and mutual TLS against a
//! cluster CA, behind the `quic` feature of the `solo` facade.
//!
//! This crate is a thin adapter: it holds no connection manager of its own. The one every
//! solo transport shares lives in `solo-transport-tcp` ([`solo_transport_tcp::Transport`]);
//! [`QuicNetwork`] implements [`solo_transport_tcp::Network`], and that manager runs over it
//! unchanged: the cookie handshake, one
//! connection per pair of nodes with its tie-break, dialing with backoff, framing,
//! keep-alives and the idle timeout, and the `Link::Up`/`Link::Down` events. Only the byte
//! streams differ: each is a QUIC connection carrying one bidirectional stream
//! ([`QuicStream`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use solo_core::{Incarnation, NodeId, NodeName};
//! use solo_transport_quic::{QuicConfig, QuicNetwork};
//! use solo_transport_tcp::tls::TlsConfig;
//! use solo_transport_tcp::{Config, Transport};
//!
//! let tls = TlsConfig::from_files("certs/ca.pem", "certs/a.pem", "certs/a.key")?;
//! let network = QuicNetwork::new(&tls, QuicConfig::default())?;
//! let id = NodeId::new(NodeName::new("a")?, Incarnation(1));
//! let config = Config::new("prod", "a long random shared cookie");
//! let (transport, mut events) = Transport::builder(id, config)
//!     .bind(network, "127.0.0.1:7000".parse()?)
//!     .await?;
//! // Drive it exactly as the TCP transport: see `solo_transport_tcp`.
//! # Ok(()) }
//! ```
//!
//! # Security
//!
//! QUIC is always encrypted. Both ends present a certificate signed by the cluster CA
//! ([`TlsConfig`](solo_transport_tcp::tls::TlsConfig)); a peer without one, or with one from
//! another CA, fails the QUIC handshake and the transport never hears of it beyond a failed
//! dial or handshake in its statistics. Inside the encrypted stream the transport's cookie
//! handshake still runs, so a node must hold both the cluster's certificate and its cookie
//! to be admitted, and everything after the handshake is confidential and tamper-proof
//! (which plain TCP does not give).
//!
//! # One endpoint, one connection and one stream per peer pair
//!
//! A node binds one UDP socket ([`quinn::Endpoint`]) that both accepts and dials, so it is
//! reached and seen at one address. Each dial is a fresh QUIC connection with exactly one
//! bidirectional stream; the transport's tie-break keeps one connection per pair of nodes
//! and drops the other, which closes that QUIC connection.
//!
//! Why one ordered stream, and not QUIC datagrams or a stream per message:
//!
//! * solo's messaging needs **per-sender order** (a `send` after a `send` to the same worker
//!   arrives after it), and an ordered stream gives it for free.
//! * **Loss recovery matters for some traffic.** The core tolerates loss, but the
//!   synchronisation of child tables and handoff state is large and expensive to repeat;
//!   datagrams would give up QUIC's retransmission and congestion control for exactly those
//!   messages, and cap every message at one packet.
//! * **Head-of-line blocking is cheap here.** A lost packet holds back the frames behind it
//!   for one retransmission, about one QUIC probe timeout: a few milliseconds on a LAN, well
//!   under the core's 100 ms probe timeout. Failure-detector probes are tiny and rarely sit
//!   behind anything large.
//!
//! The reader's side of the stream also fits the transport's framing unchanged:
//! length-prefixed frames, checked before anything is allocated.
//!
//! # Failure detection
//!
//! * **A connection closed on purpose** (the peer's transport shut down, dropped the
//!   connection in a tie-break, or after a read error): dropping a [`QuicStream`] finishes
//!   its stream, so the peer reads end-of-file right after the last bytes, as after a TCP
//!   close, and reports `Link::Down` within one round trip. The QUIC connection itself is
//!   closed (CONNECTION_CLOSE) once those bytes are acknowledged.
//! * **A dead, frozen or cut-off peer**: QUIC sends a `PING` after
//!   [`QuicConfig::keep_alive_interval`] of silence (1 s), and a connection on which nothing
//!   arrived for [`QuicConfig::idle_timeout`] (5 s) is closed; the transport's own
//!   keep-alive frames and [`idle_timeout`](solo_transport_tcp::Config::idle_timeout) (same
//!   defaults) back this up. Either way the peer is `Link::Down` within the idle timeout.
//! * **A peer process that was killed** (SIGKILL, a crash, the OOM killer): when a process
//!   dies its kernel closes its TCP sockets with a FIN or RST, which the TCP transport
//!   reports at once, but closes a UDP socket silently. Two things make up for it:
//!
//!   * **The tripwire** ([`QuicConfig::tripwire`], the default, all platforms): each QUIC
//!     connection has a companion TCP connection between the same two processes, opened by
//!     the dialer to the same address (the network listens on TCP at its QUIC port number
//!     too) and bound to its QUIC connection by a token exported from that connection's TLS
//!     session, so that no one else can attach or trip it. Nothing flows on it; when the
//!     peer's process dies, its kernel closes it, and the survivor closes the QUIC
//!     connection at once: the transport reports `Link::Down` within a round trip of the
//!     death, as over TCP, with nothing sent to the dead peer. (On loopback, about a
//!     millisecond after the SIGKILL.) An end that is done with a connection in the ordinary
//!     way (shutdown, a tie-break, a dropped stream) tells the other end to stand down
//!     rather than trip, and a tripwire only ever closes its own QUIC connection. The cost
//!     is one idle TCP connection per QUIC connection and a TCP listener on the QUIC port
//!     number; firewalls must let TCP through on that port too.
//!   * **ICMP** ([`QuicConfig::close_on_unreachable`], the default, Linux only), for
//!     connections without a tripwire (TCP blocked, the peer has them off): the killed
//!     peer's kernel answers every later packet sent to its port with an ICMP "port
//!     unreachable". The endpoint's socket asks the kernel for those errors (`IP_RECVERR`
//!     and `IPV6_RECVERR`, read from the socket's error queue), and each one closes every
//!     connection to the address it names, dialed or accepted: the transport reports
//!     `Link::Down` within one round trip of the next packet sent to the dead peer.
//!     Something is sent soon: the core probes each monitored peer every
//!     [`probe_interval`](solo_core::Config::probe_interval) (200 ms); on any connection the
//!     transport sends a keep-alive frame after 1 s without writes and QUIC a `PING` after
//!     1 s without sending. So a killed peer is `Down` at its monitors within about 200 ms
//!     plus a round trip, and at every other connected node within about 1 s. (On loopback,
//!     with a transport keep-alive of 100 ms and nothing else sent, `Link::Down` came 0.3 to
//!     60 ms after the SIGKILL.) A dial to an address where nothing listens fails at once
//!     too, as a refused TCP connection does, instead of after the handshake's timeout, and
//!     the transport's backoff spaces the next dials out. ICMP is not authenticated: see
//!     [`QuicConfig::close_on_unreachable`] for what a forged error can do (churn, never
//!     more than a false suspicion).
//!
//!   Neither works with both options off, nor when a firewall drops both TCP and ICMP (the
//!   latter is not reported on other platforms either); nor when the peer's whole host
//!   died, which closes nothing (a router may send "host unreachable", which is ignored).
//!   Then the killed peer is found by the idle timeout (with the defaults, `Link::Down`
//!   comes 5 s after the kill), or earlier by the core's failure detector (about 1.3 s),
//!   whichever comes first: lower both idle timeouts and keep-alive intervals (QUIC's and
//!   the transport's) for faster failover, at the cost of more keep-alive traffic and of
//!   closing connections over shorter stalls. Either way, a restarted node is a new
//!   incarnation that dials again, and the transport replaces the old connection at once.
//!
//! # Simulation
//!
//! quinn runs over real UDP sockets only, so this transport does not run under turmoil:
//! simulate with the TCP transport (same connection manager), and test QUIC with real
//! processes.

mod config;
mod network;
#[cfg(target_os = "linux")]
mod socket;
mod stats;
mod stream;
mod tripwire;
mod unreachable;

pub use config::{QuicConfig, QuicConfigError};
pub use network::{QuicError, QuicNetwork};
pub use solo_core::wire::{MAX_FRAME_LEN, PROTOCOL_VERSION};
pub use stats::{QuicStats, QuicStatsHandle};
pub use stream::QuicStream;
