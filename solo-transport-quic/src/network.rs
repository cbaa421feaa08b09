//! [`QuicNetwork`]: the transport's [`Network`] over one quinn endpoint.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{
    ClientConfig, Connecting, Connection, Endpoint, IdleTimeout, ServerConfig, TransportConfig,
    VarInt,
};
use solo_transport_tcp::Network;
use solo_transport_tcp::tls::{SERVER_NAME, TlsConfig};
use tokio::net::TcpListener;

use crate::config::{QuicConfig, QuicConfigError};
use crate::stats::{QuicStats, QuicStatsHandle};
use crate::stream::{QuicStream, connection_error};
use crate::tripwire::{Listening, Tripwires};
use crate::unreachable::{Registry, Watched};

/// How many unreachable addresses may wait for the network to close their connections; more
/// are dropped (the next packet to such an address draws another error).
#[cfg(target_os = "linux")]
const UNREACHABLE_QUEUE: usize = 1024;

/// How many UDP ports [`bind`](Network::bind) tries, when asked for any port, to find one whose
/// number is free on TCP too, for the tripwire listener.
const TRIPWIRE_PORT_ATTEMPTS: usize = 8;

/// Bidirectional streams a peer may have open at once on one connection: the transport uses
/// exactly one per connection.
const MAX_BIDI_STREAMS: u32 = 1;

/// Why a [`QuicNetwork`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// The [`QuicConfig`] is invalid.
    #[error("invalid QUIC config: {0}")]
    Config(#[from] QuicConfigError),
    /// The TLS server configuration cannot secure QUIC (QUIC needs TLS 1.3 and the
    /// `TLS13_AES_128_GCM_SHA256` cipher suite, and no early data).
    #[error("the TLS server configuration cannot be used for QUIC: {0}")]
    ServerCrypto(#[source] NoInitialCipherSuite),
    /// The TLS client configuration cannot secure QUIC (same requirements).
    #[error("the TLS client configuration cannot be used for QUIC: {0}")]
    ClientCrypto(#[source] NoInitialCipherSuite),
}

/// QUIC through quinn, with mutual TLS against the cluster CA, as a
/// [`Network`] for [`solo_transport_tcp::Transport`].
///
/// [`bind`](Network::bind) opens one UDP socket that both accepts connections and dials
/// them, so a node is reached at one address. Every [`connect`](Network::connect) opens a
/// new QUIC connection with one bidirectional stream ([`QuicStream`]).
///
/// One `QuicNetwork` serves one transport: it remembers the endpoint [`bind`](Network::bind)
/// created in order to dial from it, so a second `bind` fails, and a
/// [`connect`](Network::connect) before `bind` fails with [`io::ErrorKind::NotConnected`].
///
/// With [`QuicConfig::tripwire`] (the default), [`bind`](Network::bind) also listens on TCP at
/// the same IP address and port number, and each connection gets a companion TCP connection
/// that closes it as soon as the peer's process is gone. On Linux, with
/// [`QuicConfig::close_on_unreachable`] (the default), the endpoint's socket also hears ICMP
/// "port unreachable" errors, and each one closes the connections to the address it names
/// and fails the dials to it at once. See the crate docs.
pub struct QuicNetwork {
    server: ServerConfig,
    client: ClientConfig,
    /// How long a dropped stream's connection waits for the peer's acknowledgements.
    linger: Duration,
    endpoint: OnceLock<Endpoint>,
    /// The connections and dials an ICMP error may end: `None` when that is off.
    unreachable: Option<Arc<Registry>>,
    /// The connections' tripwires: `None` when they are off.
    tripwires: Option<Arc<Tripwires>>,
    /// The tripwire listener, once bound: without it, accepted connections get none.
    tripwire_listener: OnceLock<Listening>,
    stats: QuicStatsHandle,
}

impl fmt::Debug for QuicNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local_addr = self.endpoint.get().and_then(|e| e.local_addr().ok());
        f.debug_struct("QuicNetwork")
            .field("local_addr", &local_addr)
            .field("close_on_unreachable", &self.unreachable.is_some())
            .field("tripwire", &self.tripwires.is_some())
            .field(
                "tripwire_listener",
                &self.tripwire_listener.get().map(Listening::addr),
            )
            .field("stats", &self.stats.stats())
            .finish_non_exhaustive()
    }
}

impl QuicNetwork {
    /// A network whose connections authenticate with the node's certificate in `tls` and
    /// accept only peers whose certificates chain to the same cluster CA, in both directions.
    ///
    /// # Errors
    ///
    /// [`QuicError::Config`] when `config` is invalid. (A [`TlsConfig`] always suits QUIC;
    /// the crypto errors are for [`from_rustls`](QuicNetwork::from_rustls).)
    pub fn new(tls: &TlsConfig, config: QuicConfig) -> Result<Self, QuicError> {
        Self::from_rustls(tls.server_config(), tls.client_config(), config)
    }

    /// As [`new`](QuicNetwork::new), from rustls configurations made some other way. They
    /// must use TLS 1.3 and agree on ALPN with the cluster's peers
    /// ([`solo_transport_tcp::tls::ALPN`]), and the server side should require client
    /// certificates: this network adds no check of its own. Dials use the server name
    /// [`solo_transport_tcp::tls::SERVER_NAME`].
    ///
    /// # Errors
    ///
    /// [`QuicError`] when `config` is invalid or either configuration cannot secure QUIC.
    pub fn from_rustls(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        config: QuicConfig,
    ) -> Result<Self, QuicError> {
        config.validate()?;
        let transport = Arc::new(transport_config(&config)?);
        let server_crypto = QuicServerConfig::try_from(server).map_err(QuicError::ServerCrypto)?;
        let client_crypto = QuicClientConfig::try_from(client).map_err(QuicError::ClientCrypto)?;
        let mut server = ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(Arc::clone(&transport));
        let mut client = ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let stats = QuicStatsHandle::default();
        let unreachable = (cfg!(target_os = "linux") && config.close_on_unreachable)
            .then(|| Arc::new(Registry::new(stats.clone())));
        let tripwires = config
            .tripwire
            .then(|| Arc::new(Tripwires::new(stats.clone())));
        Ok(Self {
            server,
            client,
            linger: config.idle_timeout,
            endpoint: OnceLock::new(),
            unreachable,
            tripwires,
            tripwire_listener: OnceLock::new(),
            stats,
        })
    }

    /// The counters of the fast paths to a killed peer so far (see
    /// [`QuicConfig::close_on_unreachable`] and [`QuicConfig::tripwire`]).
    pub fn stats(&self) -> QuicStats {
        self.stats.stats()
    }

    /// A handle that reads [`stats`](QuicNetwork::stats) also after this network was handed
    /// to a transport.
    pub fn stats_handle(&self) -> QuicStatsHandle {
        self.stats.clone()
    }

    /// A new endpoint on `addr`: quinn's own, or one on a socket that reports ICMP errors.
    fn new_endpoint(&self, addr: SocketAddr) -> io::Result<Endpoint> {
        #[cfg(target_os = "linux")]
        if let Some(registry) = &self.unreachable {
            let (tx, mut rx) = tokio::sync::mpsc::channel(UNREACHABLE_QUEUE);
            let socket = crate::socket::bind(addr, tx)?;
            let endpoint = Endpoint::new_with_abstract_socket(
                quinn::EndpointConfig::default(),
                Some(self.server.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )?;
            // Closing connections from a task of its own, not from within quinn's drivers
            // (which read the errors while holding their locks). It ends with the socket.
            let registry = Arc::clone(registry);
            tokio::spawn(async move {
                while let Some(addr) = rx.recv().await {
                    registry.peer_unreachable(addr);
                }
            });
            return Ok(endpoint);
        }
        Endpoint::server(self.server.clone(), addr)
    }

    /// A new endpoint on `addr` and, with tripwires on, a TCP listener for them on the same
    /// IP address and port number. When `addr` asks for any port, tries a few until one is
    /// free on TCP too; without a listener the endpoint runs without tripwires on accepted
    /// connections (and says so).
    async fn bind_endpoint(&self, addr: SocketAddr) -> io::Result<(Endpoint, Option<TcpListener>)> {
        let attempts = if addr.port() == 0 {
            TRIPWIRE_PORT_ATTEMPTS
        } else {
            1
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let endpoint = self.new_endpoint(addr)?;
            if self.tripwires.is_none() {
                return Ok((endpoint, None));
            }
            let local = endpoint.local_addr()?;
            match TcpListener::bind(local).await {
                Ok(listener) => return Ok((endpoint, Some(listener))),
                // Dropping the endpoint frees its port: the next one is another.
                Err(error) if attempt < attempts => {
                    tracing::debug!(%local, %error, "TCP port taken: another UDP port");
                }
                Err(error) => {
                    tracing::warn!(
                        %local,
                        %error,
                        "cannot listen on TCP at the QUIC endpoint's address: connections \
                         accepted here run without tripwires, and a killed peer that dialed \
                         them is noticed later"
                    );
                    return Ok((endpoint, None));
                }
            }
        }
    }

    fn endpoint(&self) -> io::Result<&Endpoint> {
        self.endpoint.get().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the QUIC network is not bound yet: nothing to dial from",
            )
        })
    }
}

fn transport_config(config: &QuicConfig) -> Result<TransportConfig, QuicError> {
    let idle_timeout = IdleTimeout::try_from(config.idle_timeout)
        .map_err(|_| QuicConfigError::IdleTimeoutTooLong(config.idle_timeout))?;
    let mut transport = TransportConfig::default();
    transport
        .keep_alive_interval(Some(config.keep_alive_interval))
        .max_idle_timeout(Some(idle_timeout))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_BIDI_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None);
    Ok(transport)
}

impl Network for QuicNetwork {
    type Stream = QuicStream;
    type Listener = Endpoint;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Endpoint> {
        if self.endpoint.get().is_some() {
            return Err(already_bound());
        }
        let (mut endpoint, listener) = self.bind_endpoint(addr).await?;
        endpoint.set_default_client_config(self.client.clone());
        self.endpoint
            .set(endpoint.clone())
            .map_err(|_| already_bound())?;
        if let (Some(tripwires), Some(listener)) = (&self.tripwires, listener) {
            match tripwires.listen(listener) {
                Ok(listening) => {
                    let _ = self.tripwire_listener.set(listening);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for tripwires: running without");
                }
            }
        }
        Ok(endpoint)
    }

    fn local_addr(&self, listener: &Endpoint) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(&self, listener: &mut Endpoint) -> io::Result<(QuicStream, SocketAddr)> {
        let incoming = listener.accept().await.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, "the QUIC endpoint is closed")
        })?;
        let remote = incoming.remote_address();
        // The handshake runs on the stream's first read, in the transport's per-connection
        // task and under its handshake timeout: a slow or hostile dialer holds up nobody.
        let registry = self.unreachable.clone();
        let tripwires = self
            .tripwire_listener
            .get()
            .and(self.tripwires.as_ref())
            .map(Arc::clone);
        Ok((
            QuicStream::accepting(incoming, self.linger, registry, tripwires),
            remote,
        ))
    }

    fn peer_may_be(&self, stream: &QuicStream, name: &solo_core::NodeName) -> bool {
        stream.peer_certificate_names(name)
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<QuicStream> {
        let endpoint = self.endpoint()?;
        // Watched before the first packet goes out: its error may come back at once.
        let dial = self
            .unreachable
            .as_ref()
            .map(|registry| registry.watch_dial(addr));
        let connecting = endpoint
            .connect_with(self.client.clone(), addr, SERVER_NAME)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let connection = match &dial {
            None => connecting.await.map_err(connection_error)?,
            Some(dial) => dial_unless_refused(connecting, dial).await?,
        };
        drop(dial);
        let watch = self
            .unreachable
            .as_ref()
            .map(|registry| registry.watch_connection(&connection));
        // The peer hears of the stream with its first bytes: the initiator speaks first.
        let (send, recv) = connection.open_bi().await.map_err(connection_error)?;
        let tripwire = self
            .tripwires
            .as_ref()
            .and_then(|tripwires| tripwires.dial(addr, &connection));
        Ok(QuicStream::open(
            connection,
            send,
            recv,
            self.linger,
            watch,
            tripwire,
        ))
    }
}

/// Completes a dial, unless an ICMP "port unreachable" says that nothing listens at the
/// address: then it fails at once, as a refused TCP connection does, rather than after the
/// handshake's timeout. Dropping `connecting` abandons the attempt.
async fn dial_unless_refused(connecting: Connecting, dial: &Watched) -> io::Result<Connection> {
    let mut connecting = pin!(connecting);
    let mut refused = pin!(dial.refused());
    poll_fn(|cx| {
        if let Poll::Ready(result) = connecting.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(connection_error));
        }
        if refused.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "nothing listens at the address (ICMP port unreachable)",
            )));
        }
        Poll::Pending
    })
    .await
}

fn already_bound() -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        "this QUIC network is already bound: use one QuicNetwork per transport",
    )
}
