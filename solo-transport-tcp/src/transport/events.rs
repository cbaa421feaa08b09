//! The event channel from the transport's tasks to its owner, bounded twice: in events
//! ([`Config::event_capacity`]) and in the bytes of the frames it holds
//! ([`Config::max_event_bytes`]).
//!
//! A bound in events alone would let 1024 frames of a megabyte each wait in memory while the
//! owner is busy. So a reader takes a frame's size from a byte budget before it queues the
//! frame, and waits for room when the budget is spent: a slow owner slows its peers down
//! (their reads stop, TCP's window closes) instead of buffering. The owner gives the bytes
//! back as it takes each frame out.
//!
//! A reader queues the frames one fill of its buffer holds as one [`FrameRun`]: one channel
//! send, one take from the budget and one wake-up of the owner per fill, not per frame. The
//! receiver hands them out one [`TransportEvent::Frame`] at a time, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Semaphore, mpsc};

use solo_core::NodeId;

use crate::config::Config;
use crate::frame;
use crate::transport::TransportEvent;

/// What travels on the channel: an event, or the frames of one fill of a reader's buffer.
#[derive(Debug)]
enum Item {
    Event(TransportEvent),
    Run(FrameRun),
}

/// Frames from one peer, in the order they arrived, kept as they were on the wire (length
/// prefix, frame, length prefix, frame…) in one buffer. Only the reader fills one, with
/// frames it has checked (none empty, none over the limit, no keep-alives).
#[derive(Debug)]
pub(super) struct FrameRun {
    from: NodeId,
    /// The frames, while the reader adds them.
    bytes: Vec<u8>,
    /// The same bytes once handing out began: each frame goes out as a slice of them, with
    /// no copy and no allocation of its own.
    shared: Bytes,
    /// Where the next frame to hand out starts.
    next: usize,
    /// The frames' bytes, without their prefixes.
    payload: usize,
}

impl FrameRun {
    /// An empty run of frames from `from`.
    pub(super) fn new(from: NodeId) -> Self {
        Self {
            from,
            bytes: Vec::new(),
            shared: Bytes::new(),
            next: 0,
            payload: 0,
        }
    }

    /// Makes room for `bytes` more bytes of frames and prefixes.
    pub(super) fn reserve(&mut self, bytes: usize) {
        self.bytes.reserve(bytes);
    }

    /// Appends a checked frame.
    pub(super) fn push(&mut self, frame: &[u8]) {
        debug_assert!(!frame.is_empty() && u32::try_from(frame.len()).is_ok());
        debug_assert!(
            self.shared.is_empty(),
            "frames are added before any is taken"
        );
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(frame);
        self.payload += frame.len();
    }

    /// Whether it holds no frame.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes it holds, prefixes included.
    pub(super) fn len(&self) -> usize {
        self.bytes.len() + self.shared.len()
    }

    /// The next frame, taken out; `None` once all were.
    fn pop(&mut self) -> Option<Bytes> {
        if !self.bytes.is_empty() {
            self.shared = Bytes::from(std::mem::take(&mut self.bytes));
        }
        // The frames were checked on the way in: no limit applies on the way out.
        let rest = self.shared.get(self.next..)?;
        let (frame, took) = frame::buffered_frame(rest, usize::MAX)?.ok()?;
        let start = self.next + (took - frame.len());
        let frame = self.shared.slice(start..self.next + took);
        self.next += took;
        Some(frame)
    }

    fn is_spent(&self) -> bool {
        self.next >= self.len()
    }
}

/// The part of the byte budget a run of frames takes: their length, capped by the budget
/// itself so that one frame larger than the whole budget still passes (alone).
fn run_cost(run: &FrameRun, max_bytes: usize) -> usize {
    run.payload.min(max_bytes)
}

/// Makes the two ends of an event channel sized by `config`.
pub(super) fn channel(config: &Config) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel::<Item>(config.event_capacity);
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
            run: None,
        },
    )
}

/// The owner is gone: nothing more can be delivered.
#[derive(Debug)]
pub(super) struct Closed;

/// The sending end, cloned into every task that reports something.
#[derive(Debug, Clone)]
pub(super) struct EventSender {
    tx: mpsc::Sender<Item>,
    budget: Arc<Semaphore>,
    /// The bytes in the channel. Not the budget's spent permits: a waiting reader holds a
    /// part of the budget already.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl EventSender {
    /// Queues `event`, waiting for room in events. A frame goes as a run of one (see
    /// [`send_run`](Self::send_run)).
    pub(super) async fn send(&self, event: TransportEvent) -> Result<(), Closed> {
        match event {
            TransportEvent::Frame { from, frame } => {
                let mut run = FrameRun::new(from);
                run.push(&frame);
                self.send_run(run).await
            }
            event => self.tx.send(Item::Event(event)).await.map_err(|_| Closed),
        }
    }

    /// Queues a run of frames, waiting for room in events and in bytes.
    pub(super) async fn send_run(&self, run: FrameRun) -> Result<(), Closed> {
        if run.is_empty() {
            return Ok(());
        }
        let cost = run_cost(&run, self.max_bytes);
        let permits = u32::try_from(cost).unwrap_or(u32::MAX);
        // Closed (by the receiver's drop) only when nobody will ever give bytes back.
        let permit = self
            .budget
            .acquire_many(permits)
            .await
            .map_err(|_| Closed)?;
        // The receiver returns these bytes as it takes the frames out.
        permit.forget();
        // Counted before it is in the channel, so the receiver never subtracts it first.
        self.queued.fetch_add(cost, Ordering::Relaxed);
        self.tx.send(Item::Run(run)).await.map_err(|_| {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
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
    rx: mpsc::Receiver<Item>,
    budget: Arc<Semaphore>,
    /// The bytes in the channel. Not the budget's spent permits: a waiting reader holds a
    /// part of the budget already.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    /// Bytes taken out and not yet given back to the budget: given back together (the
    /// budget's lock once per batch, not per frame), before every wait and once they reach
    /// [`GIVE_BACK_AT`] of the budget.
    owed: usize,
    /// The run being handed out, with the part of its cost not given back yet.
    run: Option<(FrameRun, usize)>,
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
        loop {
            if let Some(frame) = self.next_of_run() {
                return Some(frame);
            }
            // Readers may wait for these bytes while this waits for their frames.
            self.give_back();
            // Cancel safe: what comes out of the channel is kept before anything awaits.
            let item = self.rx.recv().await?;
            if let Some(event) = self.taken(item) {
                return Some(event);
            }
        }
    }

    /// The next event if one is waiting, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if none is waiting, [`TryRecvError::Disconnected`] once the
    /// transport is gone.
    pub fn try_recv(&mut self) -> Result<TransportEvent, TryRecvError> {
        loop {
            if let Some(frame) = self.next_of_run() {
                return Ok(frame);
            }
            let item = self.rx.try_recv()?;
            if let Some(event) = self.taken(item) {
                return Ok(event);
            }
        }
    }

    /// How many bytes of frames are waiting to be received.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// What came out of the channel, as the event to hand out now (`None` for a run with no
    /// frame, which `send_run` never queues). Never waits.
    fn taken(&mut self, item: Item) -> Option<TransportEvent> {
        match item {
            Item::Event(event) => Some(event),
            Item::Run(run) => {
                let cost = run_cost(&run, self.max_bytes);
                self.run = Some((run, cost));
                self.next_of_run()
            }
        }
    }

    /// The next frame of the run being handed out, with its bytes owed back to the budget.
    fn next_of_run(&mut self) -> Option<TransportEvent> {
        let (run, unpaid) = self.run.as_mut()?;
        let Some(frame) = run.pop() else {
            // Spent (or cut short, which the reader never makes): what it still owes is
            // given back with it.
            let (_, unpaid) = self.run.take()?;
            self.queued.fetch_sub(unpaid, Ordering::Relaxed);
            self.owed += unpaid;
            return None;
        };
        // The last frame pays what is left: a run's cost is capped by the whole budget.
        let cost = if run.is_spent() {
            std::mem::take(unpaid)
        } else {
            let cost = frame.len().min(*unpaid);
            *unpaid -= cost;
            cost
        };
        let from = if run.is_spent() {
            self.run.take().map(|(run, _)| run.from)
        } else {
            Some(run.from.clone())
        }?;
        self.queued.fetch_sub(cost, Ordering::Relaxed);
        self.owed += cost;
        if self.owed >= self.max_bytes / GIVE_BACK_AT {
            self.give_back();
        }
        Some(TransportEvent::Frame { from, frame })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::tests::id;
    use crate::transport::tests::config;

    fn frame(from: &NodeId, bytes: &[u8]) -> TransportEvent {
        TransportEvent::Frame {
            from: from.clone(),
            frame: Bytes::copy_from_slice(bytes),
        }
    }

    #[tokio::test]
    async fn a_run_comes_out_frame_by_frame_in_order_and_gives_its_bytes_back() {
        let mut small = config();
        small.max_event_bytes = 1_000;
        let (tx, mut rx) = channel(&small);
        let peer = id("peer", 1);
        let mut run = FrameRun::new(peer.clone());
        for bytes in [&b"one"[..], b"two!", b"three"] {
            run.push(bytes);
        }
        tx.send_run(run).await.expect("open");
        let up = TransportEvent::Link {
            peer: peer.clone(),
            link: solo_core::Link::Up,
        };
        tx.send(up.clone()).await.expect("open");
        assert_eq!(rx.queued_bytes(), 12);
        assert_eq!(rx.recv().await, Some(frame(&peer, b"one")));
        assert_eq!(rx.queued_bytes(), 9);
        assert_eq!(rx.try_recv().ok(), Some(frame(&peer, b"two!")));
        assert_eq!(rx.recv().await, Some(frame(&peer, b"three")));
        assert_eq!(rx.queued_bytes(), 0);
        // The event queued after the run comes after all of its frames.
        assert_eq!(rx.try_recv().ok(), Some(up));
        assert!(rx.try_recv().is_err());
        rx.give_back();
        assert_eq!(
            rx.budget.available_permits(),
            1_000,
            "every byte given back"
        );
    }

    #[tokio::test]
    async fn a_run_larger_than_the_budget_passes_alone_and_pays_the_whole_budget_back() {
        let mut tiny = config();
        tiny.max_event_bytes = 10;
        let (tx, mut rx) = channel(&tiny);
        let peer = id("peer", 1);
        let mut run = FrameRun::new(peer.clone());
        run.push(&[7; 8]);
        run.push(&[8; 8]);
        tx.send_run(run).await.expect("open");
        assert_eq!(rx.queued_bytes(), 10, "capped at the budget");
        assert_eq!(rx.recv().await, Some(frame(&peer, &[7; 8])));
        assert_eq!(rx.recv().await, Some(frame(&peer, &[8; 8])));
        assert_eq!(rx.queued_bytes(), 0);
        rx.give_back();
        assert_eq!(rx.budget.available_permits(), 10);
    }
}
