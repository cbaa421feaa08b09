//! [`QuicStream`]: one QUIC connection carrying one bidirectional stream, as a tokio byte
//! stream.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use quinn::{Connection, ConnectionError, ReadError, RecvStream, SendStream, VarInt, WriteError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tripwire::{Attachment, Tripwires};
use crate::unreachable::{Registry, Watched};

/// The application error code of every CONNECTION_CLOSE this crate sends when it drops a
/// connection (one closed because its peer is unreachable has its own, in
/// `unreachable.rs`).
const CLOSE_CODE: VarInt = VarInt::from_u32(0);
/// Its reason phrase.
const CLOSE_REASON: &[u8] = b"solo: connection closed";

type Accepting = Pin<Box<dyn Future<Output = Result<Open, ConnectionError>> + Send>>;

/// A connection to a peer: one QUIC connection and the one bidirectional stream it carries,
/// as the [`Network::Stream`](solo_transport_tcp::Network::Stream) of a
/// [`QuicNetwork`](crate::QuicNetwork). It behaves like a TCP stream:
///
/// * Reads return the peer's bytes in order, then end-of-file once the peer finished its
///   side, or an error once the connection is closed or timed out.
/// * Writes are buffered by quinn and sent as flow and congestion control allow;
///   [`poll_flush`](AsyncWrite::poll_flush) has nothing to do.
/// * [`poll_shutdown`](AsyncWrite::poll_shutdown) finishes the send side: the peer reads
///   end-of-file after the last byte.
/// * Dropping it finishes the send side too, so the peer reads what was written and then
///   end-of-file at once, as after a TCP close; nothing more is read. The QUIC connection is
///   closed (a CONNECTION_CLOSE frame) as soon as the peer has acknowledged every byte, or
///   after the idle timeout if it never does. Closing at once would lose the bytes still
///   in flight, such as the transport's last handshake message before a tie-break drops a
///   connection.
///
/// A stream returned by [`Network::accept`](solo_transport_tcp::Network::accept) is still
/// completing its QUIC handshake (certificates included) and waiting for the dialer's
/// stream; its first read or write drives that, and fails if it fails.
pub struct QuicStream {
    state: State,
    /// How long a dropped stream's connection waits for the peer's acknowledgements.
    linger: Duration,
}

enum State {
    /// Inbound: the QUIC handshake, then the peer's stream, still to come.
    Accepting(Accepting),
    Open(Open),
    /// The inbound handshake failed (or the stream is being dropped): every read and
    /// write reports it.
    Failed(ConnectionError),
}

struct Open {
    connection: Connection,
    send: SendStream,
    recv: RecvStream,
    /// Lets an ICMP "port unreachable" for the peer's address close the connection (see
    /// [`QuicConfig::close_on_unreachable`](crate::QuicConfig::close_on_unreachable)); holds
    /// a handle to the connection, dropped with the stream.
    _watch: Option<Arc<Watched>>,
    /// The connection's tripwire (see [`QuicConfig::tripwire`](crate::QuicConfig::tripwire)),
    /// stood down when the stream is dropped.
    _tripwire: Option<Attachment>,
}

impl QuicStream {
    /// Whether the peer's certificate (verified against the cluster CA in the QUIC
    /// handshake) names node `name`; `false` before the stream is open.
    pub(crate) fn peer_certificate_names(&self, name: &solo_core::NodeName) -> bool {
        let State::Open(open) = &self.state else {
            return false;
        };
        let identity = open.connection.peer_identity();
        let chain = identity
            .as_ref()
            .and_then(|any| any.downcast_ref::<Vec<rustls::pki_types::CertificateDer<'static>>>());
        solo_transport_tcp::tls::certificate_names(chain.map(Vec::as_slice), name)
    }

    /// An established connection and its stream.
    pub(crate) fn open(
        connection: Connection,
        send: SendStream,
        recv: RecvStream,
        linger: Duration,
        watch: Option<Arc<Watched>>,
        tripwire: Option<Attachment>,
    ) -> Self {
        Self {
            state: State::Open(Open {
                connection,
                send,
                recv,
                _watch: watch,
                _tripwire: tripwire,
            }),
            linger,
        }
    }

    /// An inbound connection whose handshake and stream are still to come; once established
    /// it is watched by `registry`, if any, and waits for its tripwire from `tripwires`, if
    /// any.
    pub(crate) fn accepting(
        incoming: quinn::Incoming,
        linger: Duration,
        registry: Option<Arc<Registry>>,
        tripwires: Option<Arc<Tripwires>>,
    ) -> Self {
        let accepting = async move {
            let connection = incoming.await?;
            let watch = registry.map(|r| r.watch_connection(&connection));
            // Before the stream: the dialer opens the tripwire as soon as it has opened it.
            let tripwire = tripwires.and_then(|t| t.register(&connection));
            let (send, recv) = connection.accept_bi().await?;
            Ok(Open {
                connection,
                send,
                recv,
                _watch: watch,
                _tripwire: tripwire,
            })
        };
        Self {
            state: State::Accepting(Box::pin(accepting)),
            linger,
        }
    }

    /// The peer's address, once the connection is established.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Open(open) => Some(open.connection.remote_address()),
            State::Accepting(_) | State::Failed(_) => None,
        }
    }

    /// Drives an inbound connection to its stream; then the open connection.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut Open>> {
        if let State::Accepting(accepting) = &mut self.state {
            self.state = match ready!(accepting.as_mut().poll(cx)) {
                Ok(open) => State::Open(open),
                Err(error) => {
                    tracing::debug!(%error, "inbound QUIC connection failed");
                    State::Failed(error)
                }
            };
        }
        match &mut self.state {
            State::Open(open) => Poll::Ready(Ok(open)),
            State::Failed(error) => Poll::Ready(Err(connection_error(error.clone()))),
            // Replaced just above; never seen.
            State::Accepting(_) => Poll::Ready(Err(io::Error::other("QUIC stream not accepted"))),
        }
    }
}

impl fmt::Debug for QuicStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Accepting(_) => "accepting",
            State::Open(_) => "open",
            State::Failed(_) => "failed",
        };
        f.debug_struct("QuicStream")
            .field("state", &state)
            .field("remote_addr", &self.remote_addr())
            .finish()
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let open = ready!(self.poll_open(cx))?;
        let result = ready!(open.recv.poll_read_buf(cx, buf));
        Poll::Ready(result.map_err(|error| match error {
            ReadError::ConnectionLost(error) => connection_error(error),
            other => other.into(),
        }))
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let open = ready!(self.poll_open(cx))?;
        let result = ready!(Pin::new(&mut open.send).poll_write(cx, buf));
        Poll::Ready(result.map_err(|error| match error {
            WriteError::ConnectionLost(error) => connection_error(error),
            other => other.into(),
        }))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_open(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let open = ready!(self.poll_open(cx))?;
        // Fails only if already finished, or reset because the peer stopped reading: either
        // way there is nothing left to do.
        let _ = open.send.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        // An inbound connection still accepting is refused or closed by dropping its future.
        let State::Open(open) = std::mem::replace(
            &mut self.state,
            State::Failed(ConnectionError::LocallyClosed),
        ) else {
            return;
        };
        let Open {
            connection,
            mut send,
            recv,
            _watch: watch,
            _tripwire: tripwire,
        } = open;
        // The watch's handle to the connection goes now: the one below closes it.
        drop(watch);
        // The tripwire stands down, and tells the peer's end: this is no death, and the
        // peer reads what is in flight before the connection closes.
        drop(tripwire);
        // Nothing more will be read: the peer's further writes fail (STOP_SENDING).
        drop(recv);
        // The peer reads what is in flight, then end-of-file.
        let _ = send.finish();
        let delivered = send.stopped();
        drop(send);
        let linger = self.linger;
        let closing = async move {
            // Every byte acknowledged, the peer stopped reading, or the connection is gone.
            let _ = tokio::time::timeout(linger, delivered).await;
            connection.close(CLOSE_CODE, CLOSE_REASON);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(closing)),
            // No runtime to wait in (quinn's own tasks are gone too): dropping the future
            // drops the last handle, which closes the connection at once.
            Err(_) => drop(closing),
        }
    }
}

/// An I/O error for a failed or closed connection.
pub(crate) fn connection_error(error: ConnectionError) -> io::Error {
    let kind = match &error {
        ConnectionError::TimedOut => io::ErrorKind::TimedOut,
        ConnectionError::LocallyClosed => io::ErrorKind::NotConnected,
        ConnectionError::Reset
        | ConnectionError::ConnectionClosed(_)
        | ConnectionError::ApplicationClosed(_) => io::ErrorKind::ConnectionReset,
        ConnectionError::VersionMismatch
        | ConnectionError::TransportError(_)
        | ConnectionError::CidsExhausted => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(kind, error)
}
