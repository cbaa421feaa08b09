//! The transport's counters, read as [`TransportStats`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::TransportStats;

#[derive(Default)]
pub(super) struct Counter(AtomicU64);

impl Counter {
    pub(super) fn inc(&self) {
        self.add(1);
    }
    pub(super) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) frames_queued: Counter,
    pub(super) frames_received: Counter,
    pub(super) dropped_queue_full: Counter,
    pub(super) dropped_no_route: Counter,
    pub(super) dropped_dial_failed: Counter,
    pub(super) dropped_unencodable: Counter,
    pub(super) dials_failed: Counter,
    pub(super) handshakes_failed: Counter,
    pub(super) connections_refused: Counter,
    pub(super) handshakes_evicted: Counter,
    pub(super) duplicates_closed: Counter,
    pub(super) links_up: Counter,
    pub(super) links_down: Counter,
    pub(super) idle_timeouts: Counter,
}

impl Counters {
    pub(super) fn snapshot(&self, connections: usize, dials_in_progress: usize) -> TransportStats {
        TransportStats {
            frames_queued: self.frames_queued.get(),
            frames_received: self.frames_received.get(),
            dropped_queue_full: self.dropped_queue_full.get(),
            dropped_no_route: self.dropped_no_route.get(),
            dropped_dial_failed: self.dropped_dial_failed.get(),
            dropped_unencodable: self.dropped_unencodable.get(),
            dials_failed: self.dials_failed.get(),
            handshakes_failed: self.handshakes_failed.get(),
            connections_refused: self.connections_refused.get(),
            handshakes_evicted: self.handshakes_evicted.get(),
            duplicates_closed: self.duplicates_closed.get(),
            links_up: self.links_up.get(),
            links_down: self.links_down.get(),
            idle_timeouts: self.idle_timeouts.get(),
            connections,
            dials_in_progress,
        }
    }
}
