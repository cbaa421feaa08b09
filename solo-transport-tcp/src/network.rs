//! [`Network`]: what the transport needs from a stream network, so that the same code runs
//! over tokio's sockets, a simulator's (turmoil's `net` module has the same shape), TLS and
//! QUIC.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// A network of reliable, ordered byte streams: [`TokioNetwork`] for real TCP sockets, a
/// simulator's, TLS over either (`tls::TlsNetwork`, with the `tls` feature), or QUIC
/// (`solo-transport-quic`).
///
/// An implementation for `turmoil::net` forwards each method to `TcpListener::bind`,
/// `TcpListener::local_addr`, `TcpListener::accept` and `TcpStream::connect`.
///
/// What the transport relies on, beyond the method signatures:
///
/// * **Dropping a stream closes it gracefully**: bytes already written still reach the
///   peer, which then reads end-of-file (as TCP's close does). The handshake's last message
///   and the handover marker are written just before a drop.
/// * **A dead peer's stream fails promptly if the stack can tell** (TCP: the peer's kernel
///   resets it): this is the transport's fast failure signal.
/// * **`accept` does not wait for anything slow** (a TLS or QUIC handshake): it returns the
///   stream at once, and the stream finishes its handshake on first use, inside the
///   connection's own task and under the transport's handshake timeout.
pub trait Network: Send + Sync + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A bound, listening socket.
    type Listener: Send + 'static;

    /// Binds a listener to `addr` (port 0 picks a free port).
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The address `listener` is bound to.
    ///
    /// # Errors
    ///
    /// The stack's error when the address cannot be read.
    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Waits for the next inbound connection; returns it and the peer's address.
    fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// Opens a connection to `addr`.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Whether what this network proved of `stream`'s peer, beneath the transport's own
    /// handshake, lets it be the node `name`: with certificates, that the peer's certificate
    /// names it, so that a node holding `n1`'s certificate cannot join as `n2`. Asked once
    /// the peer's hello has named it. `true` where the network proves nothing of the kind
    /// (plain TCP: there the cookie is all there is).
    fn peer_may_be(&self, stream: &Self::Stream, name: &solo_core::NodeName) -> bool {
        let _ = (stream, name);
        true
    }
}

/// Real TCP through tokio. Streams have `TCP_NODELAY` set: the transport batches writes
/// itself, and Nagle's algorithm would add up to 40 ms to a lone heartbeat.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioNetwork;

impl Network for TokioNetwork {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, addr) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, addr))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
