//! Sending: a frame goes to its peer's connection queue, or waits for a dial, within the
//! queue's byte limit.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use solo_core::wire::{self, Message};
use solo_core::{NodeId, SendFailure};
use tracing::Instrument;

use crate::network::Network;

use super::Shared;
use super::table::{Conn, Dial, Queued, State};

/// A frame to send: its bytes, or the message it encodes (encoded straight into the
/// connection's outbox when there is one).
pub(super) enum Outgoing<'a> {
    Bytes(Vec<u8>),
    Message(&'a Message),
}

impl Outgoing<'_> {
    /// The frame as bytes of its own (for a dial's queue).
    fn into_bytes(self) -> Result<Vec<u8>, SendFailure> {
        match self {
            Outgoing::Bytes(bytes) => Ok(bytes),
            Outgoing::Message(message) => {
                wire::encode_frame(message).map_err(|_oversized| SendFailure::TooLarge)
            }
        }
    }
}

impl<N: Network> Shared<N> {
    pub(super) fn enqueue(&self, conn: &Conn, frame: Outgoing<'_>) -> Result<(), SendFailure> {
        match frame {
            Outgoing::Bytes(bytes) => conn.outbox.0.push(&bytes)?,
            Outgoing::Message(message) => conn.outbox.0.push_message(message)?,
        }
        self.counters.frames_queued.inc();
        Ok(())
    }

    pub(super) fn route(
        self: &Arc<Self>,
        to: Option<NodeId>,
        addr: Option<SocketAddr>,
        frame: Outgoing<'_>,
    ) -> Result<(), SendFailure> {
        let mut st = self.state();
        if st.closed || to.as_ref() == Some(self.me.node()) {
            return Err(SendFailure::NoRoute);
        }
        match &to {
            Some(id) => {
                if let Some(conn) = st.conns.get(&id.name) {
                    if conn.peer == *id {
                        return self.enqueue(conn, frame);
                    }
                    if conn.peer.incarnation > id.incarnation {
                        // A stale incarnation: its successor holds the name (and the address).
                        return Err(SendFailure::NoRoute);
                    }
                }
            }
            None => {
                let conn = addr
                    .and_then(|addr| st.addrs.get(&addr))
                    .and_then(|name| st.conns.get(name));
                if let Some(conn) = conn {
                    return self.enqueue(conn, frame);
                }
            }
        }
        let Some(addr) = addr else {
            return Err(SendFailure::NoRoute);
        };
        if addr == self.me.hello().addr || addr == self.local_addr {
            return Err(SendFailure::NoRoute);
        }
        let frame = frame.into_bytes()?;
        if let Some(dial) = st.dials.get_mut(&addr) {
            let bytes: usize = dial.queue.iter().map(|q| q.frame.len()).sum();
            if dial.queue.len() >= self.config.max_queued_frames_dialing
                || bytes + frame.len() > self.config.max_queued_bytes
            {
                return Err(SendFailure::QueueFull);
            }
            dial.queue.push_back(Queued { to, frame });
            self.counters.frames_queued.inc();
            return Ok(());
        }
        let Some(events) = st.events.clone() else {
            return Err(SendFailure::NoRoute);
        };
        if st.dials.len() >= self.config.max_dials {
            return Err(SendFailure::NoRoute);
        }
        st.dials.insert(
            addr,
            Dial {
                queue: VecDeque::from([Queued { to, frame }]),
            },
        );
        self.counters.frames_queued.inc();
        let task = st.next_id();
        let span = tracing::info_span!(
            "conn",
            node = %self.me.node(),
            remote = %addr,
            dir = "out",
            peer = tracing::field::Empty,
        );
        let dialing = Arc::clone(self)
            .run_outbound(addr, task, events)
            .instrument(span);
        self.spawn(&mut st, task, dialing);
        Ok(())
    }

    /// Hands the frames that waited for a dial to the connection now serving `peer`.
    pub(super) fn flush_queue(&self, st: &State, peer: &NodeId, queue: VecDeque<Queued>) {
        match st.conns.get(&peer.name).filter(|c| c.peer == *peer) {
            Some(conn) => {
                for queued in queue {
                    if queued.to.as_ref().is_none_or(|to| to == peer) {
                        // Counted as queued already, when they joined the dial's queue.
                        match conn.outbox.0.push(&queued.frame) {
                            Ok(()) => {}
                            Err(SendFailure::QueueFull) => self.counters.dropped_queue_full.inc(),
                            Err(_no_route) => self.counters.dropped_no_route.inc(),
                        }
                    } else {
                        self.counters.dropped_no_route.inc();
                    }
                }
            }
            None => self.counters.dropped_no_route.add(queue.len() as u64),
        }
    }
}
