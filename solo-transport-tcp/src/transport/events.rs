//! The event channel from the transport's tasks to its owner, bounded twice: in events
//! ([`Config::event_capacity`]) and in the bytes of the frames it holds
//! ([`Config::max_event_bytes`]).
//!
//! A bound in events alone would let 1024 frames of a megabyte each wait in memory while the
//! owner is busy. So a reader takes a frame's size from a byte budget before it queues the
//! frame, and waits for room when the budget is spent: a slow owner slows its peers down
//! (their reads stop, TCP's window closes) instead of buffering. The owner gives the bytes
//! back as it takes each frame out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Semaphore, mpsc};

use crate::config::Config;
use crate::transport::TransportEvent;

/// Makes the two ends of an event channel sized by `config`.
pub(super) fn channel(config: &Config) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(config.event_capacity);
    let budget = Arc::new(Semaphore::new(config.max_event_bytes));
    let queued = Arc::new(AtomicUsize::new(0));
    let max_bytes = config.max_event_bytes;
    (
        EventSender {
            tx,
            budget: Arc::clone(&budget),
            queued: Arc::clone(&queued),
            max_bytes,
        },
        EventReceiver {
            rx,
            budget,
            queued,
            max_bytes,
            owed: 0,
        },
    )
}

/// The part of the byte budget an event takes: a frame's length, capped by the budget itself
/// so that one frame larger than the whole budget still passes (alone).
fn cost(event: &TransportEvent, max_bytes: usize) -> u32 {
    match event {
        TransportEvent::Frame { frame, .. } => {
            u32::try_from(frame.len().min(max_bytes)).unwrap_or(u32::MAX)
        }
        _ => 0,
    }
}

/// The owner is gone: nothing more can be delivered.
#[derive(Debug)]
pub(super) struct Closed;

/// The sending end, cloned into every task that reports something.
#[derive(Debug, Clone)]
pub(super) struct EventSender {
    tx: mpsc::Sender<TransportEvent>,
    budget: Arc<Semaphore>,
    /// The bytes in the channel. Not the budget's spent permits: a waiting reader holds a
    /// part of the budget already.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl EventSender {
    /// Queues `event`, waiting for room in events and, for a frame, in bytes.
    pub(super) async fn send(&self, event: TransportEvent) -> Result<(), Closed> {
        let cost = cost(&event, self.max_bytes);
        if cost > 0 {
            // Closed (by the receiver's drop) only when nobody will ever give bytes back.
            let permit = self.budget.acquire_many(cost).await.map_err(|_| Closed)?;
            // The receiver returns these bytes when it takes the frame out.
            permit.forget();
        }
        // Counted before it is in the channel, so the receiver never subtracts it first.
        self.queued.fetch_add(cost as usize, Ordering::Relaxed);
        self.tx.send(event).await.map_err(|_| {
            self.queued.fetch_sub(cost as usize, Ordering::Relaxed);
            Closed
        })
    }
}

/// The receiving end of a transport's events, returned by
/// [`TransportBuilder::bind`](crate::TransportBuilder::bind).
///
/// It holds at most [`Config::event_capacity`] events and at most
/// [`Config::max_event_bytes`] bytes of frames (a single frame larger than that passes
/// alone). While it is full, the connections whose frames do not fit stop being read, which
/// slows those peers down rather than dropping anything.
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::Receiver<TransportEvent>,
    budget: Arc<Semaphore>,
    /// The bytes in the channel. Not the budget's spent permits: a waiting reader holds a
    /// part of the budget already.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    /// Bytes taken out and not yet given back to the budget: given back together (the
    /// budget's lock once per batch, not per frame), before every wait and once they reach
    /// [`GIVE_BACK_AT`] of the budget.
    owed: usize,
}

/// The share of the byte budget owed back at which it is given back without waiting for the
/// next [`EventReceiver::recv`].
const GIVE_BACK_AT: usize = 16;

impl EventReceiver {
    /// The next event, or `None` once the transport is shut down and its tasks are gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if it is cancelled before it returns (in `tokio::select!`, say), no event
    /// was taken out.
    pub async fn recv(&mut self) -> Option<TransportEvent> {
        // Readers may wait for these bytes while this waits for their frames.
        self.give_back();
        let event = self.rx.recv().await?;
        Some(self.taken(event))
    }

    /// The next event if one is waiting, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if none is waiting, [`TryRecvError::Disconnected`] once the
    /// transport is gone.
    pub fn try_recv(&mut self) -> Result<TransportEvent, TryRecvError> {
        let event = self.rx.try_recv()?;
        Ok(self.taken(event))
    }

    /// How many bytes of frames are waiting to be received.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn taken(&mut self, event: TransportEvent) -> TransportEvent {
        let cost = cost(&event, self.max_bytes) as usize;
        self.queued.fetch_sub(cost, Ordering::Relaxed);
        self.owed += cost;
        if self.owed >= self.max_bytes / GIVE_BACK_AT {
            self.give_back();
        }
        event
    }

    fn give_back(&mut self) {
        if self.owed > 0 {
            self.budget.add_permits(std::mem::take(&mut self.owed));
        }
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        // Readers waiting for bytes would otherwise wait for ever.
        self.budget.close();
    }
}
