//! What a [`QuicNetwork`](crate::QuicNetwork) does when its socket learns that an address is
//! unreachable (an ICMP "port unreachable", see `socket.rs`): close every connection to
//! it and give up every dial to it. The registry of connections and dials is here; the socket
//! side is Linux-only.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use quinn::{Connection, VarInt};
use tokio::sync::Notify;

use crate::stats::QuicStatsHandle;

/// The application error code of a connection closed because its peer is unreachable.
const UNREACHABLE_CODE: VarInt = VarInt::from_u32(1);
/// Its reason phrase.
const UNREACHABLE_REASON: &[u8] = b"peer unreachable (ICMP)";

/// A connection or a dial that an unreachable error may end. Whoever owns it holds the
/// [`Arc`]; the registry only a [`Weak`], so it keeps nothing alive.
#[derive(Debug)]
pub(crate) enum Watched {
    /// An established connection, matched by its current remote address. The clone is
    /// dropped with the [`QuicStream`](crate::QuicStream) that holds the watch.
    Connection(Connection),
    /// A dial in progress to `addr`: told through `refused` (and counted once, however many
    /// errors come before the dial gives up: `counted`).
    Dial {
        addr: SocketAddr,
        refused: Notify,
        counted: AtomicBool,
    },
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
#[derive(Debug)]
pub(crate) struct Registry {
    watched: Mutex<Vec<Weak<Watched>>>,
    counters: QuicStatsHandle,
}

impl Registry {
    /// An empty registry that counts in `counters`.
    pub(crate) fn new(counters: QuicStatsHandle) -> Self {
        Self {
            watched: Mutex::default(),
            counters,
        }
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
            counted: AtomicBool::new(false),
        })
    }

    /// An ICMP "port unreachable" named `addr`: closes every connection to it and ends every
    /// dial to it.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn peer_unreachable(&self, addr: SocketAddr) {
        let counters = self.counters.counters();
        counters.unreachable_errors.inc();
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
                    // Counted first: the close is seen (and the stats read) at once.
                    counters.closed_unreachable.inc();
                    connection.close(UNREACHABLE_CODE, UNREACHABLE_REASON);
                }
                Watched::Dial {
                    refused, counted, ..
                } => {
                    tracing::debug!(%addr, "dial refused (ICMP port unreachable)");
                    if !counted.swap(true, Ordering::Relaxed) {
                        counters.dials_refused.inc();
                    }
                    refused.notify_one();
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
        let stats = QuicStatsHandle::default();
        let registry = Registry::new(stats.clone());
        let here = SocketAddr::from((Ipv4Addr::LOCALHOST, 7000));
        let there = SocketAddr::from((Ipv4Addr::LOCALHOST, 7001));
        let dial = registry.watch_dial(here);
        let other = registry.watch_dial(there);
        registry.peer_unreachable(SocketAddr::from((
            Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
            7000,
        )));
        // A second error before the dial gives up: one dial refused, counted once.
        registry.peer_unreachable(here);
        // The permit is stored: a waiter that comes later still hears of it.
        tokio::time::timeout(std::time::Duration::from_secs(10), dial.refused())
            .await
            .expect("the dial is refused");
        let stats = stats.stats();
        assert_eq!(
            (
                stats.unreachable_errors,
                stats.dials_refused,
                stats.closed_unreachable
            ),
            (2, 1, 0)
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
