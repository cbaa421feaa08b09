//! turmoil's simulated TCP as a [`Network`] for the real transport.

use std::io;
use std::net::SocketAddr;

use solo_transport_tcp::Network;

/// turmoil's `net` module: the TCP transport runs over it unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilNetwork;

impl Network for TurmoilNetwork {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(addr).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> io::Result<(Self::Stream, SocketAddr)> {
        listener.accept().await
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr).await
    }
}
