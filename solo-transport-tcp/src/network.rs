//! [`Network`]: what the transport needs from a TCP stack, so that the same code runs over
//! tokio's sockets and over a simulator's (turmoil's `net` module has the same shape).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// A TCP stack: [`TokioNetwork`] for real sockets, or a simulator's.
///
/// An implementation for `turmoil::net` forwards each method to `TcpListener::bind`,
/// `TcpListener::local_addr`, `TcpListener::accept` and `TcpStream::connect`.
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
