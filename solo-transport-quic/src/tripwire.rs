//! Tripwires: an idle TCP connection beside each QUIC connection, so that the death of the
//! peer's process is noticed at once, as over TCP (see
//! [`QuicConfig::tripwire`](crate::QuicConfig::tripwire) and the crate docs).
//!
//! When a process dies, its kernel closes its TCP sockets with a FIN (or an RST) but its UDP
//! socket silently. So the dialer of each QUIC connection also opens a TCP connection to the
//! same address, where the acceptor's network listens for tripwires on TCP at its QUIC
//! endpoint's port number. After the first bytes, nothing is sent on it:
//!
//! 1. The dialer sends the connection's *token*: 32 bytes of keying material exported from
//!    the QUIC connection's TLS session (label `solo tripwire v1`, empty context). Both ends
//!    of that one connection compute the same bytes and nobody else can, so a stranger can
//!    neither attach a tripwire to someone's connection nor close one by closing it.
//! 2. The acceptor matches the token with the connection it accepted (whichever of the two
//!    comes first waits for the other, until [`IDENTIFY_WITHIN`] after the TCP accept) and
//!    answers with the *proof*: 32 more exported bytes (context `armed`). The tripwire is
//!    armed at the acceptor once it sent them, and at the dialer once it read them. A dialer
//!    that reads anything else, or end-of-file first, never arms: a peer with tripwires off,
//!    a firewall, a listener that refused it (too many waiting, too late), or another
//!    service on that port leave the connection without a tripwire, never closed by one.
//! 3. An end whose QUIC connection ended (for any reason) or whose stream was dropped (the
//!    transport is done with the connection) sends one [`BYE`] byte and closes the TCP
//!    connection. The other end stands down without touching its QUIC connection: its peer
//!    is closing that in the ordinary way (lingering bytes delivered first), or has.
//!
//! An armed end that reads end-of-file, an error, or any byte but [`BYE`] closes its QUIC
//! connection at once: the peer's kernel closed the socket of a process that is gone. A
//! tripwire belongs to exactly one QUIC connection, so it never closes another one, such as
//! the one a tie-break kept.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quinn::{Connection, VarInt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use crate::stats::QuicStatsHandle;

/// The application error code of a connection closed because its tripwire fell.
const TRIPWIRE_CODE: VarInt = VarInt::from_u32(2);
/// Its reason phrase.
const TRIPWIRE_REASON: &[u8] = b"peer process gone (tripwire)";

/// The label of the keying material the token and the proof are exported as.
const LABEL: &[u8] = b"solo tripwire v1";
/// The context of the token (the dialer's first bytes).
const TOKEN_CONTEXT: &[u8] = b"";
/// The context of the proof (the acceptor's answer).
const PROOF_CONTEXT: &[u8] = b"armed";
const SECRET_LEN: usize = 32;
type Secret = [u8; SECRET_LEN];

/// The one byte an end sends when it stands down in the ordinary way.
const BYE: u8 = 0;

/// The most tripwires the listener holds before they are matched with a connection; more
/// are refused, and their connections run without one.
const MAX_PENDING: usize = 256;
/// The most tripwires waiting from one IP address, so that one host cannot take every
/// slot of [`MAX_PENDING`] with sockets that never speak.
const MAX_PENDING_PER_IP: usize = 16;
/// How long after the TCP accept a tripwire may take to present its token (the dialer
/// sends it at once); a socket that stays silent is closed then.
const TOKEN_WITHIN: Duration = Duration::from_secs(1);
/// How long after the TCP accept a tripwire may take to present its token and be matched
/// with its connection; then it is refused.
const IDENTIFY_WITHIN: Duration = Duration::from_secs(2);
/// How long the dialer tries to open a tripwire (a lost SYN is sent again after 1 s).
const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// How long the listener pauses after a failed accept (out of file descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The tripwires of one network: the listener's, waiting to be matched, and the accepted
/// connections waiting for theirs. Armed tripwires run in tasks of their own.
pub(crate) struct Tripwires {
    matching: Mutex<Matching>,
    /// Numbers the listener's waiting tripwires.
    next_id: AtomicU64,
    stats: QuicStatsHandle,
}

#[derive(Default)]
struct Matching {
    /// Tripwires that presented a token no accepted connection claimed yet, each with the
    /// number of the task that waits for the connection.
    pending: HashMap<Secret, (u64, oneshot::Sender<Claim>)>,
    /// Accepted connections whose tripwire has not come yet.
    awaiting: HashMap<Secret, Claim>,
    /// Tripwires not matched yet, by source address ([`MAX_PENDING_PER_IP`]).
    waiting_from: HashMap<std::net::IpAddr, usize>,
}

/// A waiting tripwire's place in [`Matching::waiting_from`], given back when dropped.
struct FromSlot {
    tripwires: Arc<Tripwires>,
    ip: std::net::IpAddr,
}

impl Drop for FromSlot {
    fn drop(&mut self) {
        let mut matching = self.tripwires.lock();
        if let Some(count) = matching.waiting_from.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                matching.waiting_from.remove(&self.ip);
            }
        }
    }
}

/// A connection, for the tripwire that guards it.
struct Claim {
    connection: Connection,
    /// The answer to the token.
    proof: Secret,
    /// Ends (with an error: nothing is ever sent) when the connection's stream is dropped.
    owner: oneshot::Receiver<()>,
}

/// A connection's hold on its tripwire, kept by its [`QuicStream`](crate::QuicStream).
/// Dropping it stands the tripwire down (telling the peer so), and forgets a registration
/// still waiting for its tripwire.
pub(crate) struct Attachment {
    _owner: oneshot::Sender<()>,
    /// Where an accepted connection waits for its tripwire.
    registered: Option<(Arc<Tripwires>, Secret)>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Some((tripwires, token)) = self.registered.take() {
            // Dropped outside the lock: it holds a handle to the connection.
            let claim = tripwires.lock().awaiting.remove(&token);
            drop(claim);
        }
    }
}

/// The listener's task, stopped when dropped.
pub(crate) struct Listening {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Listening {
    /// The address the tripwire listener is bound to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tripwires {
    pub(crate) fn new(stats: QuicStatsHandle) -> Self {
        Self {
            matching: Mutex::default(),
            next_id: AtomicU64::new(0),
            stats,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Matching> {
        self.matching.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accepts tripwires on `listener` until the returned handle is dropped.
    pub(crate) fn listen(self: &Arc<Self>, listener: TcpListener) -> io::Result<Listening> {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(Arc::clone(self).accept_loop(listener));
        Ok(Listening { addr, task })
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        let slots = Arc::new(Semaphore::new(MAX_PENDING));
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "cannot accept a tripwire");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                // Closed before any answer: the dialer's connection runs without a tripwire.
                tracing::debug!(%from, "too many tripwires waiting: one refused");
                continue;
            };
            let from_slot = {
                let mut matching = self.lock();
                let count = matching.waiting_from.entry(from.ip()).or_default();
                if *count >= MAX_PENDING_PER_IP {
                    tracing::debug!(%from, "too many tripwires waiting from this address: one refused");
                    continue;
                }
                *count += 1;
                FromSlot {
                    tripwires: Arc::clone(&self),
                    ip: from.ip(),
                }
            };
            tokio::spawn(Arc::clone(&self).identify(stream, from, (slot, from_slot)));
        }
    }

    /// Reads an inbound tripwire's token, waits for the accepted connection it names (if
    /// it did not come first), answers with the proof and watches it. Gives up, closing the
    /// TCP connection without an answer, at [`IDENTIFY_WITHIN`].
    async fn identify(
        self: Arc<Self>,
        mut stream: TcpStream,
        from: SocketAddr,
        slot: (OwnedSemaphorePermit, FromSlot),
    ) {
        let accepted = Instant::now();
        let deadline = accepted + IDENTIFY_WITHIN;
        let mut token = [0; SECRET_LEN];
        match timeout_at(accepted + TOKEN_WITHIN, stream.read_exact(&mut token)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::debug!(%from, %error, "a tripwire closed before its token");
                return;
            }
            Err(_) => {
                tracing::debug!(%from, "a tripwire sent no token in time");
                return;
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        let claimed = {
            let mut matching = self.lock();
            if let Some(claim) = matching.awaiting.remove(&token) {
                Some(claim)
            } else if let Entry::Vacant(entry) = matching.pending.entry(token) {
                entry.insert((id, tx));
                None
            } else {
                tracing::debug!(%from, "a second tripwire with the same token: refused");
                return;
            }
        };
        let claim = match claimed {
            Some(claim) => claim,
            None => match timeout_at(deadline, &mut rx).await {
                Ok(Ok(claim)) => claim,
                // Never: a registration that takes the sender sends.
                Ok(Err(_)) => return,
                Err(_) => {
                    // Too late, unless a connection claimed it just now.
                    {
                        let mut matching = self.lock();
                        if matching.pending.get(&token).is_some_and(|(i, _)| *i == id) {
                            matching.pending.remove(&token);
                        }
                    }
                    match rx.try_recv() {
                        Ok(claim) => claim,
                        Err(_) => {
                            tracing::debug!(%from, "no connection claimed a tripwire in time");
                            return;
                        }
                    }
                }
            },
        };
        drop(slot);
        let _ = stream.set_nodelay(true);
        // A failure shows in the watch's read: the dialer is gone.
        let _ = stream.write_all(&claim.proof).await;
        self.watch(stream, claim).await;
    }

    /// Registers a connection this node accepted, once established, for the tripwire its
    /// dialer opens (which may have come first). `None` if its keying material cannot be
    /// exported.
    pub(crate) fn register(self: &Arc<Self>, connection: &Connection) -> Option<Attachment> {
        let (token, proof) = secrets(connection)?;
        let (owner_tx, owner) = oneshot::channel();
        let mut claim = Claim {
            connection: connection.clone(),
            proof,
            owner,
        };
        let mut matching = self.lock();
        if let Some((_, waiting)) = matching.pending.remove(&token) {
            match waiting.send(claim) {
                Ok(()) => {
                    return Some(Attachment {
                        _owner: owner_tx,
                        registered: None,
                    });
                }
                // Its wait just ended: the next tripwire with the token may still come.
                Err(returned) => claim = returned,
            }
        }
        matching.awaiting.insert(token, claim);
        Some(Attachment {
            _owner: owner_tx,
            registered: Some((Arc::clone(self), token)),
        })
    }

    /// Opens a tripwire to `addr` for a connection this node dialed there, from a task of
    /// its own. `None` if the connection's keying material cannot be exported.
    pub(crate) fn dial(
        self: &Arc<Self>,
        addr: SocketAddr,
        connection: &Connection,
    ) -> Option<Attachment> {
        let (token, proof) = secrets(connection)?;
        let (owner_tx, owner) = oneshot::channel();
        let claim = Claim {
            connection: connection.clone(),
            proof,
            owner,
        };
        // A dual-stack socket sees IPv4 peers as mapped IPv6 addresses (any other keeps its
        // scope: a link-local address needs it).
        let addr = match addr.ip().to_canonical() {
            ip @ IpAddr::V4(_) => SocketAddr::new(ip, addr.port()),
            IpAddr::V6(_) => addr,
        };
        tokio::spawn(Arc::clone(self).run_dialed(addr, token, claim));
        Some(Attachment {
            _owner: owner_tx,
            registered: None,
        })
    }

    async fn run_dialed(self: Arc<Self>, addr: SocketAddr, token: Secret, mut claim: Claim) {
        let connecting = timeout(CONNECT_WITHIN, TcpStream::connect(addr));
        let mut stream = tokio::select! {
            connected = connecting => match connected {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%addr, %error, "cannot open a tripwire: the connection runs without");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "cannot open a tripwire in time: the connection runs without");
                    return;
                }
            },
            // Nothing sent yet: the acceptor drops it unread.
            _ = &mut claim.owner => return,
            _ = claim.connection.closed() => return,
        };
        let _ = stream.set_nodelay(true);
        // Fits in an empty socket buffer: never waits.
        if let Err(error) = stream.write_all(&token).await {
            tracing::debug!(%addr, %error, "cannot send a tripwire's token");
            return;
        }
        let mut proof = [0; SECRET_LEN];
        let answered = tokio::select! {
            read = stream.read_exact(&mut proof) => read.is_ok(),
            // The acceptor may have armed it already: it must not take this for a death.
            _ = &mut claim.owner => {
                stand_down(&stream);
                return;
            }
            _ = claim.connection.closed() => {
                stand_down(&stream);
                return;
            }
        };
        if !answered || proof != claim.proof {
            tracing::debug!(%addr, answered, "the peer did not arm a tripwire: the connection runs without");
            return;
        }
        self.watch(stream, claim).await;
    }

    /// Watches an armed tripwire until it falls (then closes the connection), the peer
    /// stands down, or this end is done with the connection (then tells the peer).
    async fn watch(&self, mut stream: TcpStream, claim: Claim) {
        let Claim {
            connection,
            mut owner,
            ..
        } = claim;
        let counters = self.stats.counters();
        counters.tripwires_attached.inc();
        counters.tripwires_active.inc();
        let peer = connection.remote_address();
        tracing::debug!(%peer, "tripwire armed");
        let mut byte = [0; 1];
        let fell: Option<io::Error> = tokio::select! {
            read = stream.read(&mut byte) => match read {
                Ok(1) if byte[0] == BYE => {
                    tracing::debug!(%peer, "the peer stood its tripwire down");
                    None
                }
                Ok(0) => Some(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => Some(io::Error::new(io::ErrorKind::InvalidData, "an unexpected byte")),
                Err(error) => Some(error),
            },
            _ = connection.closed() => {
                stand_down(&stream);
                None
            }
            _ = &mut owner => {
                stand_down(&stream);
                None
            }
        };
        counters.tripwires_active.dec();
        let Some(why) = fell else { return };
        if connection.close_reason().is_some() {
            return;
        }
        tracing::info!(%peer, %why, "peer process gone (its tripwire fell): closing its connection");
        // Counted first: the close is seen (and the stats read) at once.
        counters.closed_by_tripwire.inc();
        connection.close(TRIPWIRE_CODE, TRIPWIRE_REASON);
    }
}

/// Tells the peer that this end stands down in the ordinary way; the caller then closes the
/// TCP connection.
fn stand_down(stream: &TcpStream) {
    // The socket's buffer holds at most the 32 bytes written before: the byte fits.
    let _ = stream.try_write(&[BYE]);
}

/// A connection's token and proof: only its two ends can compute them.
fn secrets(connection: &Connection) -> Option<(Secret, Secret)> {
    let export = |context: &[u8]| {
        let mut secret = [0; SECRET_LEN];
        match connection.export_keying_material(&mut secret, LABEL, context) {
            Ok(()) => Some(secret),
            Err(error) => {
                tracing::debug!(
                    ?error,
                    "no keying material for a tripwire: the connection runs without"
                );
                None
            }
        }
    };
    Some((export(TOKEN_CONTEXT)?, export(PROOF_CONTEXT)?))
}
