//! [`QuicStats`]: the counters of a [`QuicNetwork`](crate::QuicNetwork)'s fast paths to a
//! killed peer, the ICMP one (`unreachable.rs`) and the tripwire (`tripwire.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of a [`QuicNetwork`](crate::QuicNetwork)'s ways of noticing a killed peer
/// at once: ICMP errors (see
/// [`QuicConfig::close_on_unreachable`](crate::QuicConfig::close_on_unreachable); these
/// stay zero when it is off, and on platforms other than Linux) and tripwires (see
/// [`QuicConfig::tripwire`](crate::QuicConfig::tripwire); these stay zero when it is off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicStats {
    /// ICMP "port unreachable" errors received for packets this node sent.
    pub unreachable_errors: u64,
    /// Established connections closed because such an error named their peer's address.
    pub closed_unreachable: u64,
    /// Dials given up because such an error named the address being dialed.
    pub dials_refused: u64,
    /// Tripwires armed so far, on connections this node dialed or accepted: one per
    /// connection whose two ends both have tripwires on and reach each other over TCP.
    pub tripwires_attached: u64,
    /// Tripwires armed now: the connections a killed peer process closes at once.
    pub tripwires_active: u64,
    /// Connections closed because their tripwire fell: the peer's kernel closed it, so its
    /// process is gone.
    pub closed_by_tripwire: u64,
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

    pub(crate) fn counters(&self) -> &Counters {
        &self.0
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) unreachable_errors: Counter,
    pub(crate) closed_unreachable: Counter,
    pub(crate) dials_refused: Counter,
    pub(crate) tripwires_attached: Counter,
    pub(crate) tripwires_active: Counter,
    pub(crate) closed_by_tripwire: Counter,
}

impl Counters {
    fn snapshot(&self) -> QuicStats {
        QuicStats {
            unreachable_errors: self.unreachable_errors.get(),
            closed_unreachable: self.closed_unreachable.get(),
            dials_refused: self.dials_refused.get(),
            tripwires_attached: self.tripwires_attached.get(),
            tripwires_active: self.tripwires_active.get(),
            closed_by_tripwire: self.closed_by_tripwire.get(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
