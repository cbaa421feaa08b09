//! [`Network`]: what the transport needs from a stream network, so that the same code runs
//! over tokio's sockets, a simulator's (turmoil's `net` module has the same shape), TLS and
//! QUIC.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

/// The half of a connected stream its reader task reads, from [`Network::split`].
pub type StreamReader = Box<dyn AsyncRead + Unpin + Send>;

/// The half of a connected stream its writer task writes, from [`Network::split`].
pub type StreamWriter = Box<dyn AsyncWrite + Unpin + Send>;

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

    /// Splits an established stream into the half its reader task reads and the half its
    /// writer task writes, which run on different threads at once. Dropping both halves
    /// must close the stream as dropping it does; dropping one alone must not close
    /// anything (the transport shuts the writing side down itself when it means to).
    ///
    /// The default, [`tokio::io::split`], puts the stream behind a lock the halves share,
    /// which they then contend for under load: a network whose streams split without one
    /// (as [`TokioNetwork`]'s do) should say so here.
    fn split(&self, stream: Self::Stream) -> (StreamReader, StreamWriter) {
        let (read, write) = tokio::io::split(stream);
        (Box::new(read), Box::new(write))
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

    /// Splits without a lock: a socket can be read and written at once.
    fn split(&self, stream: Self::Stream) -> (StreamReader, StreamWriter) {
        let (read, write) = stream.into_split();
        (Box::new(read), Box::new(TcpWriter(Some(write))))
    }
}

/// A TCP stream's write half that, dropped, leaves the socket open until the read half is
/// dropped too, as [`tokio::io::split`]'s halves do: tokio's own half shuts the writing
/// side down on drop, and a writer task ending on an error must not half-close a
/// connection its reader still reads. Always `Some` until dropped.
struct TcpWriter(Option<tokio::net::tcp::OwnedWriteHalf>);

impl TcpWriter {
    /// Polls the half; it is gone only once the writer is dropped, so the error is never
    /// seen in practice.
    fn poll_half<T>(
        self: Pin<&mut Self>,
        poll: impl FnOnce(Pin<&mut tokio::net::tcp::OwnedWriteHalf>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.get_mut().0.as_mut() {
            Some(half) => poll(Pin::new(half)),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for TcpWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_half(|half| half.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_half(|half| half.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_half(|half| half.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_half(|half| half.poll_shutdown(cx))
    }
}

impl Drop for TcpWriter {
    fn drop(&mut self) {
        if let Some(half) = self.0.take() {
            half.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Two ends of a loopback TCP connection; the first from `TokioNetwork::connect`.
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let network = TokioNetwork;
        let mut listener = network
            .bind("127.0.0.1:0".parse().expect("an address"))
            .await
            .expect("bind");
        let addr = network.local_addr(&listener).expect("an address");
        let (ours, theirs) = tokio::join!(network.connect(addr), network.accept(&mut listener));
        (ours.expect("connect"), theirs.expect("accept").0)
    }

    #[tokio::test]
    async fn a_tcp_writer_dropped_alone_leaves_the_connection_open() {
        let (ours, mut theirs) = pair().await;
        let (mut reader, mut writer) = TokioNetwork.split(ours);
        writer.write_all(b"ping").await.expect("write");
        writer.flush().await.expect("flush");
        drop(writer);
        let mut got = [0; 4];
        theirs
            .read_exact(&mut got)
            .await
            .expect("the bytes written");
        assert_eq!(&got, b"ping");
        // A half-close would reach the peer as end-of-file within microseconds on loopback:
        // none in 200 ms is a pass, and a writer that shuts down on drop fails every time.
        let mut byte = [0; 1];
        let read = tokio::time::timeout(Duration::from_millis(200), theirs.read(&mut byte)).await;
        assert!(
            read.is_err(),
            "the peer read {read:?}: the writer's drop half-closed"
        );
        // The reading half still reads, and dropping it too closes the connection.
        theirs.write_all(b"pong").await.expect("write back");
        reader.read_exact(&mut got).await.expect("the reply");
        assert_eq!(&got, b"pong");
        drop(reader);
        let closed = theirs.read(&mut byte).await.expect("a clean close");
        assert_eq!(closed, 0, "end-of-file once both halves are dropped");
    }
}
