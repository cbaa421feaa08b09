//! The connection manager every solo transport runs, and its TCP carrier.
//!
//! Despite the crate's name, most of it is not about TCP: [`Transport`] is the connection
//! manager that the plain TCP, the TLS ([`tls`]) and the QUIC (`solo-transport-quic`)
//! transports all share. It holds one connection per pair of nodes (with a deterministic
//! tie-break when both dial at once), runs the cookie handshake that authenticates a peer
//! before one byte of its frames is believed, dials on demand with jittered backoff, frames
//! messages, sends keep-alives, enforces the idle timeout and every queue's byte limit, and
//! reports `Link::Up`/`Link::Down` to the core. What carries the bytes is a [`Network`]:
//! [`TokioNetwork`] (TCP) here, `TlsNetwork` behind the `tls` feature, `QuicNetwork` in
//! `solo-transport-quic`, turmoil's network in `solo-sim`.
//!
//! It owns sockets and nothing else: every protocol decision stays in the sans-IO
//! [`solo_core::Node`]; the transport never decodes a frame after the handshake.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use solo_core::{Incarnation, NodeId, NodeName};
//! use solo_transport_tcp::{Config, TokioNetwork, Transport, TransportEvent};
//!
//! let id = NodeId::new(NodeName::new("a")?, Incarnation(1));
//! let config = Config::new("prod", "a long random shared cookie");
//! let (transport, mut events) = Transport::builder(id, config)
//!     .bind(TokioNetwork, "127.0.0.1:7000".parse()?)
//!     .await?;
//! // The driver loop: `node.poll_transmit()` outputs go to `transport.send(..)`;
//! // events go back into the node.
//! while let Some(event) = events.recv().await {
//!     match event {
//!         TransportEvent::Frame { from, frame } => { /* node.handle_frame(now, &from, &frame) */ }
//!         TransportEvent::Link { peer, link } => { /* node.handle_link(now, &peer, link) */ }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Running under a simulator
//!
//! The transport is generic over a [`Network`] (bind, accept, connect) and takes its
//! randomness from a [`Randomness`]; its only clock is `tokio::time`. Under turmoil, implement
//! [`Network`] over `turmoil::net` and pass [`Randomness::from_fn`] with the simulation's
//! seeded generator: the very same code then runs in virtual time, replayably.
//!
//! # Framing
//!
//! On the wire every message, handshake or not, is a frame: a `u32` big-endian length, then
//! that many bytes. After the handshake a frame is the output of
//! [`solo_core::wire::encode_frame`], at most [`MAX_FRAME_LEN`] bytes; during the handshake,
//! at most 1024. The length is checked *before* anything is allocated, and a length out of
//! range closes the connection ([`FrameError`]). A zero-length frame is never data: after the
//! handshake it is the *handover marker* (see [one connection per pair](#one-connection-per-pair)).
//!
//! # The handshake, byte by byte
//!
//! The node that dials is the *initiator* (I), the other the *acceptor* (A). Each draws a
//! fresh 32-byte random nonce for every connection. `hello` is a postcard-encoded
//! [`Hello`](solo_core::wire::Hello): protocol version, cluster name, [`NodeId`](solo_core::NodeId),
//! advertised address.
//!
//! ```text
//! 1. I → A   nonce_i (32) ‖ hello_i
//! 2. A → I   nonce_a (32) ‖ hello_a                  (only if hello_i checks out)
//! 3. I → A   tag_i (32)                              (only if hello_a checks out)
//! 4. A → I   tag_a (32) ‖ verdict (1)                (only if tag_i verifies)
//!
//! T        = "solo-tcp handshake v1\0" ‖ role (1) ‖ nonce_i ‖ nonce_a
//!            ‖ u32be(len hello_i) ‖ hello_i ‖ u32be(len hello_a) ‖ hello_a
//! tag_i    = HMAC-SHA256(cookie, T with role 0x01)
//! tag_a    = HMAC-SHA256(cookie, T with role 0x02 ‖ verdict)
//! verdict  = 0 accepted | 1 duplicate | 2 superseded | 3 full
//! ```
//!
//! Each side checks the peer's hello ([`Hello::check`](solo_core::wire::Hello::check):
//! same protocol version, same cluster; and not this node itself), then verifies the peer's
//! tag in constant time (`ring::hmac::verify`). Any failure, or the whole exchange taking
//! longer than [`Config::handshake_timeout`], drops the connection ([`HandshakeError`]); the
//! core never hears of it. `verdict` tells the initiator whether the acceptor keeps this
//! connection (see below); only an accepted connection yields
//! [`Link::Up`](solo_core::Link::Up), on both sides.
//!
//! ## Why it is safe
//!
//! * **The cookie never crosses the wire**, only HMAC tags over the transcript, which reveal
//!   nothing about the key.
//! * **No replay.** Each tag covers the verifier's own fresh nonce, so a recorded tag is
//!   worthless on any later connection.
//! * **No reflection.** The role byte differs between the two tags, so a node cannot be
//!   tricked into producing the proof it expects from its peer.
//! * **No splicing.** Both hellos are covered, length-prefixed, so an on-path attacker cannot
//!   swap identities, clusters or addresses between authenticated connections; the verdict is
//!   covered too.
//! * **Nothing for strangers.** The acceptor proves itself only after the initiator has: a
//!   stranger who connects learns no tag it could use to guess the cookie offline. The
//!   initiator proves itself only to addresses it chose to dial (seeds and members). Still,
//!   use a long random cookie: anyone at an address a node dials sees one tag.
//! * **Bounded.** Handshake messages are at most 1024 bytes, the handshake has a deadline, and
//!   at most [`Config::max_pending_handshakes`] run at once.
//!
//! What it does not give: confidentiality or integrity of the frames that follow. An attacker
//! who can read and rewrite the TCP stream can read and inject frames after the handshake.
//! On a network you do not trust, use the TLS or QUIC transport.
//!
//! # One connection per pair
//!
//! Connections are keyed by the peer's [`NodeName`](solo_core::NodeName). When a second
//! authenticated connection to the same name appears:
//!
//! * a newer incarnation replaces an older one (the older is reported `Down`), and an older
//!   incarnation is refused (`superseded`);
//! * if both nodes dialed each other at once, both keep the connection dialed by the node whose
//!   [`NodeId`](solo_core::NodeId) sorts lower, whatever order the handshakes finished in;
//! * if the same node dialed twice, the newer connection wins.
//!
//! The connection that loses is closed without a `Link::Down`. When one side retires a
//! connection the other side may still be using, it first sends the handover marker (a
//! zero-length frame): the other side then drops that connection silently too, and reports
//! `Down` only if its successor does not arrive within the handshake timeout.
//!
//! # Sending, dialing, backoff
//!
//! [`Transport::send`] is synchronous and never blocks: it encodes the message and puts the
//! frame in the peer's bounded queue, or in the queue of a dial it starts on demand; what does
//! not fit is dropped and counted ([`TransportStats`]). Each connection's writer writes all
//! queued frames, then flushes once. A sender that sends many frames in one go can hold a
//! [`Cork`] meanwhile: its frames then go out when the cork comes out, written by its own
//! thread in one write per connection without waiting, and the writer task writes only
//! what a socket did not take at once (the driver corks each turn of its loop). After a failed dial, the next dial to that address waits
//! `50 ms · 2^(failures − 1)`, capped at 2 s, with equal jitter (defaults); a successful
//! handshake resets it.
//!
//! # Events and failure detection
//!
//! Frames and link changes arrive on a bounded channel of [`TransportEvent`]s. A reader waits
//! when the channel is full (backpressure). `Link::Down` is sent the moment an established
//! connection's read side sees end-of-file or an error: a killed peer process's kernel closes
//! its sockets at once, so this is the millisecond failover path. (A silent peer, frozen or
//! cut off, is the core's failure detector's job.)
//!
//! # Keep-alive
//!
//! A connection can also stall without closing: a path that drops one direction, a middlebox
//! that lost its state. TCP would notice only after minutes of retransmissions, and the core
//! cannot repair a connection. So a connection on which nothing was written for
//! [`Config::keepalive_interval`] carries a keep-alive (a frame of one zero byte, which no
//! data frame can be), and one on which nothing arrived for [`Config::idle_timeout`] is
//! replaced: retired with the handover marker and dialed afresh at once, without a
//! `Link::Down` (the core's failure detector, not a stalled socket, decides that a peer is
//! dead). Keep-alives never reach the core.

mod backoff;
mod config;
mod frame;
mod handshake;
mod network;
mod random;
mod tiebreak;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

pub use config::{Config, ConfigError, Cookie};
pub use frame::FrameError;
pub use handshake::HandshakeError;
#[doc(hidden)]
pub use handshake::fuzzing;
pub use network::{Network, StreamReader, StreamWriter, TokioNetwork};
pub use random::{RandomError, Randomness};
pub use solo_core::wire::{MAX_FRAME_LEN, PROTOCOL_VERSION};
pub use tiebreak::Direction;
pub use transport::{
    ConnectionInfo, Cork, EventReceiver, Transport, TransportBuilder, TransportEvent,
    TransportStartError, TransportStats,
};
