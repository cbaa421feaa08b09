//! What a [`QuicNetwork`](crate::QuicNetwork) does when its socket learns that an address is
//! unreachable (an ICMP "port unreachable", see `socket.rs`): close every connection to
//! it and give up every dial to it. The registry of connections and dials is here; the socket
//! side is Linux-only.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use quinn::{Connection, VarInt};
use tokio::sync::Notify;

/// The application error code of a connection closed because its peer is unreachable.
const UNREACHABLE_CODE: VarInt = VarInt::from_u32(1);
/// Its reason phrase.
const UNREACHABLE_REASON: &[u8] = b"peer unreachable (ICMP)";

/// The counters of a [`QuicNetwork`](crate::QuicNetwork)'s unreachable fast path (see
/// [`QuicConfig::close_on_unreachable`](crate::QuicConfig::close_on_unreachable)). All stay
/// zero when it is off, and on platforms other than Linux.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicStats {
    /// ICMP "port unreachable" errors received for packets this node sent.
    pub unreachable_errors: u64,
    /// Established connections closed because such an error named their peer's address.
    pub closed_unreachable: u64,
    /// Dials given up because such an error named the address being dialed.
    pub dials_refused: u64,
}

/// Reads a [`QuicNetwork`](crate::QuicNetwork)'s [`QuicStats`], also after the network was
/// handed to a transport. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct QuicStatsHandle(Arc<Counters>);

impl QuicStatsHandle {
    /// The counters now.
    pub fn stats(&self) -> QuicStats {
        self.0.snapshot()
    }
}

#[derive(Debug, Default)]
struct Counters {
    unreachable_errors: AtomicU64,
    closed_unreachable: AtomicU64,
    dials_refused: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> QuicStats {
        QuicStats {
            unreachable_errors: self.unreachable_errors.load(Ordering::Relaxed),
            closed_unreachable: self.closed_unreachable.load(Ordering::Relaxed),
            dials_refused: self.dials_refused.load(Ordering::Relaxed),
        }
    }
}

/// A connection or a dial that an unreachable error may end. Whoever owns it holds the
/// [`Arc`]; the registry only a [`Weak`], so it keeps nothing alive.
#[derive(Debug)]
pub(crate) enum Watched {
    /// An established connection, matched by its current remote address. The clone is
    /// dropped with the [`QuicStream`](crate::QuicStream) that holds the watch.
    Connection(Connection),
    /// A dial in progress to `addr`: told through `refused`.
    Dial { addr: SocketAddr, refused: Notify },
}

impl Watched {
    /// Waits until an unreachable error names the dialed address; never for a connection.
    pub(crate) async fn refused(&self) {
        match self {
            Self::Dial { refused, .. } => refused.notified().await,
            Self::Connection(_) => std::future::pending().await,
        }
    }
}

/// The connections and dials of one network, by the address they talk to.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    watched: Mutex<Vec<Weak<Watched>>>,
    counters: QuicStatsHandle,
}

impl Registry {
    pub(crate) fn stats_handle(&self) -> QuicStatsHandle {
        self.counters.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Weak<Watched>>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn watch(&self, watched: Watched) -> Arc<Watched> {
        let watched = Arc::new(watched);
        let mut all = self.lock();
        // Forget the ones gone since: the list stays as long as the live connections.
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&watched));
        watched
    }

    /// Watches an established connection until the returned watch is dropped.
    pub(crate) fn watch_connection(&self, connection: &Connection) -> Arc<Watched> {
        self.watch(Watched::Connection(connection.clone()))
    }

    /// Watches a dial to `addr` until the returned watch is dropped.
    pub(crate) fn watch_dial(&self, addr: SocketAddr) -> Arc<Watched> {
        self.watch(Watched::Dial {
            addr,
            refused: Notify::new(),
        })
    }

    /// An ICMP "port unreachable" named `addr`: closes every connection to it and ends every
    /// dial to it.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn peer_unreachable(&self, addr: SocketAddr) {
        let counters = &self.counters.0;
        counters.unreachable_errors.fetch_add(1, Ordering::Relaxed);
        let key = canonical(addr);
        let matching: Vec<Arc<Watched>> = self
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|w| match &**w {
                Watched::Connection(connection) => canonical(connection.remote_address()) == key,
                Watched::Dial { addr, .. } => canonical(*addr) == key,
            })
            .collect();
        if matching.is_empty() {
            tracing::debug!(%addr, "ICMP port unreachable for an address with no connection");
        }
        // Outside the lock: closing wakes other tasks.
        for watched in matching {
            match &*watched {
                Watched::Connection(connection) => {
                    if connection.close_reason().is_some() {
                        continue;
                    }
                    tracing::info!(
                        %addr,
                        "peer unreachable (ICMP port unreachable): closing its connection"
                    );
                    connection.close(UNREACHABLE_CODE, UNREACHABLE_REASON);
                    counters.closed_unreachable.fetch_add(1, Ordering::Relaxed);
                }
                Watched::Dial { refused, .. } => {
                    tracing::debug!(%addr, "dial refused (ICMP port unreachable)");
                    refused.notify_one();
                    counters.dials_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// An address as a key: an IPv4-mapped IPv6 address (how a dual-stack socket sees IPv4
/// peers) is the IPv4 address; the flow label and scope are ignored.
fn canonical(addr: SocketAddr) -> (IpAddr, u16) {
    (addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn mapped_addresses_match_their_ipv4_form() {
        let v4 = SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3), 7000));
        let mapped = SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped(), 7000));
        assert_eq!(canonical(v4), canonical(mapped));
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 7000));
        assert_ne!(canonical(v6), canonical(v4));
        assert_ne!(
            canonical(v4),
            canonical(SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3), 7001)))
        );
    }

    #[tokio::test]
    async fn an_unreachable_address_ends_its_dials_only_and_the_list_is_pruned() {
        let registry = Registry::default();
        let here = SocketAddr::from((Ipv4Addr::LOCALHOST, 7000));
        let there = SocketAddr::from((Ipv4Addr::LOCALHOST, 7001));
        let dial = registry.watch_dial(here);
        let other = registry.watch_dial(there);
        registry.peer_unreachable(SocketAddr::from((
            Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
            7000,
        )));
        // The permit is stored: a waiter that comes later still hears of it.
        tokio::time::timeout(std::time::Duration::from_secs(10), dial.refused())
            .await
            .expect("the dial is refused");
        let stats = registry.stats_handle().stats();
        assert_eq!(
            (
                stats.unreachable_errors,
                stats.dials_refused,
                stats.closed_unreachable
            ),
            (1, 1, 0)
        );
        drop((dial, other));
        let _third = registry.watch_dial(there);
        assert_eq!(
            registry.lock().len(),
            1,
            "the dropped watches are forgotten"
        );
    }
}
