//! [`TlsNetwork`]: mutual TLS over any [`Network`]'s streams.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{Accept, TlsAcceptor, TlsConnector};

use super::{SERVER_NAME, TlsConfig};
use crate::network::{Network, TokioNetwork};

/// A [`Network`] whose streams are mutually authenticated TLS 1.3 over another network's
/// (TCP by default). The transport above is unchanged: its cookie handshake runs inside TLS.
#[derive(Clone)]
pub struct TlsNetwork<N = TokioNetwork> {
    pub(super) inner: N,
    pub(super) acceptor: TlsAcceptor,
    pub(super) connector: TlsConnector,
}

impl<N> std::fmt::Debug for TlsNetwork<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsNetwork").finish_non_exhaustive()
    }
}

impl<N: Network> TlsNetwork<N> {
    /// TLS with `tls`'s certificates over `inner`'s streams.
    pub fn new(inner: N, tls: &TlsConfig) -> Self {
        Self {
            inner,
            acceptor: TlsAcceptor::from(tls.server_config()),
            connector: TlsConnector::from(tls.client_config()),
        }
    }
}

impl<N: Network> Network for TlsNetwork<N> {
    type Stream = TlsStream<N::Stream>;
    type Listener = N::Listener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        self.inner.bind(addr).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        self.inner.local_addr(listener)
    }

    /// Returns as soon as the inner stream is accepted: the TLS handshake runs on the
    /// stream's first read or write, in the connection's own task and under the transport's
    /// handshake timeout, so a slow or hostile client never holds up the accept loop.
    async fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, addr) = self.inner.accept(listener).await?;
        let accepting = self.acceptor.accept(stream);
        Ok((TlsStream(State::Accepting(Box::new(accepting))), addr))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let stream = self.inner.connect(addr).await?;
        let name = ServerName::try_from(SERVER_NAME)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = self.connector.connect(name, stream).await?;
        Ok(TlsStream(State::Open(Box::new(stream.into()))))
    }

    fn peer_may_be(&self, stream: &Self::Stream, name: &solo_core::NodeName) -> bool {
        let State::Open(open) = &stream.0 else {
            return false;
        };
        super::certificate_names(open.get_ref().1.peer_certificates(), name)
    }
}

/// A TLS stream of a [`TlsNetwork`]; an accepted one finishes its handshake on first use.
pub struct TlsStream<S>(State<S>);

enum State<S> {
    Accepting(Box<Accept<S>>),
    Open(Box<tokio_rustls::TlsStream<S>>),
    /// The handshake failed; the error was returned once.
    Failed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// Drives an accepted stream's handshake; `Ready(Ok)` once the stream is open.
    fn poll_open(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut tokio_rustls::TlsStream<S>>> {
        if let State::Accepting(accepting) = &mut self.0 {
            match ready!(Pin::new(accepting.as_mut()).poll(cx)) {
                Ok(stream) => self.0 = State::Open(Box::new(stream.into())),
                Err(error) => {
                    self.0 = State::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
        match &mut self.0 {
            State::Open(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_open(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_open(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_open(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_open(cx))?;
        Pin::new(stream).poll_shutdown(cx)
    }
}
