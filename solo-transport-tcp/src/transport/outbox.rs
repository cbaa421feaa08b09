//! A connection's outbox: the frames waiting to be written, kept as the bytes that go on the
//! wire (length prefix, frame, length prefix, frame…) in one buffer.
//!
//! The sender appends under a short lock; the writer swaps the whole buffer out for an empty
//! one it kept from last time and writes it with one call. So a frame costs no allocation of
//! its own on its way to the socket (none made on one thread and freed on another, which is
//! what the allocator charges most for), and however many frames queued up while the writer
//! was busy, they go out in one write and one flush.

use std::sync::{Mutex, MutexGuard, PoisonError};

use solo_core::SendFailure;
use solo_core::wire::{self, MAX_FRAME_LEN, Message};
use tokio::sync::Notify;

use crate::frame::{self, LEN_PREFIX};

/// The frames waiting for one connection's writer, and the limits on them.
#[derive(Debug)]
pub(super) struct Outbox {
    waiting: Mutex<Waiting>,
    /// Wakes the writer when the first frame goes into an empty outbox, or on close.
    ready: Notify,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Waiting {
    /// Length-prefixed frames, oldest first.
    bytes: Vec<u8>,
    frames: usize,
    /// No frame is taken any more; the writer writes what is left, then ends.
    closed: bool,
}

/// What the writer found in the outbox.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Taken {
    /// This many frames, now in the writer's buffer.
    Frames(usize),
    /// Closed, and everything before the close was taken.
    Closed,
}

impl Outbox {
    /// An empty outbox that holds at most `max_frames` frames and `max_bytes` bytes of them
    /// (a frame larger than `max_bytes` still goes into an empty one).
    pub(super) fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            waiting: Mutex::new(Waiting::default()),
            ready: Notify::new(),
            max_frames,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Every update below leaves the buffer whole, so a panic elsewhere cannot have left
        // it half-written.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `frame`, or says why not: [`SendFailure::QueueFull`] beyond the limits,
    /// [`SendFailure::NoRoute`] once closed, [`SendFailure::TooLarge`] beyond
    /// [`MAX_FRAME_LEN`] (or empty, which no encoder produces).
    pub(super) fn push(&self, frame: &[u8]) -> Result<(), SendFailure> {
        frame::prefix_for(frame, MAX_FRAME_LEN).map_err(|_| SendFailure::TooLarge)?;
        self.push_with(|bytes| {
            bytes.extend_from_slice(frame);
            Ok(frame.len())
        })
    }

    /// Appends the frame `message` encodes to, encoded straight into the outbox (no buffer of
    /// its own on the way), within the same limits as [`push`](Self::push):
    /// [`SendFailure::TooLarge`] if it encodes to more than [`MAX_FRAME_LEN`].
    pub(super) fn push_message(&self, message: &Message) -> Result<(), SendFailure> {
        self.push_with(|bytes| {
            wire::encode_frame_onto(message, bytes).map_err(|_oversized| SendFailure::TooLarge)
        })
    }

    /// Appends a frame that `write` appends to the buffer (returning its length, at most
    /// [`MAX_FRAME_LEN`], never 0), behind a length prefix; everything is as it was if
    /// `write` fails or the frame does not fit.
    fn push_with(
        &self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<usize, SendFailure>,
    ) -> Result<(), SendFailure> {
        let mut waiting = self.lock();
        if waiting.closed {
            return Err(SendFailure::NoRoute);
        }
        if waiting.frames >= self.max_frames {
            return Err(SendFailure::QueueFull);
        }
        let start = waiting.bytes.len();
        waiting.bytes.extend_from_slice(&[0; LEN_PREFIX]);
        let written = write(&mut waiting.bytes);
        let len = match written {
            // A frame larger than the byte limit still goes into an empty outbox.
            Ok(len) if start == 0 || start + LEN_PREFIX + len <= self.max_bytes => {
                u32::try_from(len).map_err(|_| SendFailure::TooLarge)
            }
            Ok(_) => Err(SendFailure::QueueFull),
            Err(why) => Err(why),
        };
        let len = match len {
            Ok(len) => len,
            Err(why) => {
                waiting.bytes.truncate(start);
                return Err(why);
            }
        };
        waiting.bytes[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
        waiting.frames += 1;
        let first = waiting.frames == 1;
        drop(waiting);
        if first {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Takes no more frames; the writer finishes what is there and ends.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Waits for frames, then moves all of them into `into` (which the writer passes in
    /// empty, and which keeps its allocation from one batch to the next).
    ///
    /// Cancel safe: frames are only moved out by a call that returns them. No timer of its
    /// own: the writer keeps one for its keep-alives, for the life of the connection,
    /// rather than one made per batch.
    pub(super) async fn take(&self, into: &mut Vec<u8>) -> Taken {
        loop {
            {
                let mut waiting = self.lock();
                if waiting.frames > 0 {
                    std::mem::swap(&mut waiting.bytes, into);
                    return Taken::Frames(std::mem::take(&mut waiting.frames));
                }
                if waiting.closed {
                    return Taken::Closed;
                }
            }
            // A push between the check and this wait leaves a permit: it is not missed.
            self.ready.notified().await;
        }
    }

    /// Frames and bytes waiting now.
    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        let waiting = self.lock();
        (waiting.frames, waiting.bytes.len())
    }
}

/// The sending side of an outbox, held by the connection table: dropping it (the connection
/// left the table) closes the outbox, as dropping a channel's sender would.
#[derive(Debug)]
pub(super) struct OutboxSender(pub(super) std::sync::Arc<Outbox>);

impl Drop for OutboxSender {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    const QUIET: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn frames_come_out_prefixed_in_order_in_one_batch() {
        let outbox = Outbox::new(8, 1024);
        outbox.push(b"one").expect("fits");
        outbox.push(b"two!").expect("fits");
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, Taken::Frames(2));
        assert_eq!(batch, b"\0\0\0\x03one\0\0\0\x04two!");
        assert_eq!(outbox.len(), (0, 0));
        batch.clear();
        assert!(
            tokio::time::timeout(QUIET, outbox.take(&mut batch))
                .await
                .is_err(),
            "an empty outbox waits"
        );
    }

    #[tokio::test]
    async fn limits_in_frames_and_bytes_refuse_and_keep_what_was_there() {
        let outbox = Outbox::new(2, 20);
        outbox.push(b"a").expect("fits");
        outbox.push(b"b").expect("fits");
        assert_eq!(outbox.push(b"c"), Err(SendFailure::QueueFull));
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, Taken::Frames(2));
        // In bytes: 4 + 10 fits, 4 + 10 more does not; one larger than the budget goes
        // into an empty outbox alone.
        let mut batch = Vec::new();
        outbox.push(&[1; 10]).expect("fits");
        assert_eq!(outbox.push(&[2; 10]), Err(SendFailure::QueueFull));
        assert_eq!(outbox.len(), (1, 14));
        assert_eq!(outbox.take(&mut batch).await, Taken::Frames(1));
        outbox.push(&[3; 100]).expect("alone, it goes");
        assert_eq!(outbox.push(&[]), Err(SendFailure::TooLarge));
    }

    #[tokio::test]
    async fn a_close_lets_the_writer_finish_what_waits_then_end() {
        let outbox = std::sync::Arc::new(Outbox::new(8, 1024));
        let sender = OutboxSender(std::sync::Arc::clone(&outbox));
        outbox.push(b"last").expect("fits");
        drop(sender);
        assert_eq!(outbox.push(b"late"), Err(SendFailure::NoRoute));
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, Taken::Frames(1));
        assert_eq!(batch, b"\0\0\0\x04last");
        assert_eq!(outbox.take(&mut Vec::new()).await, Taken::Closed);
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_the_first_frame() {
        let outbox = std::sync::Arc::new(Outbox::new(8, 1024));
        let writer = {
            let outbox = std::sync::Arc::clone(&outbox);
            tokio::spawn(async move {
                let mut batch = Vec::new();
                let taken = outbox.take(&mut batch).await;
                (taken, batch)
            })
        };
        tokio::task::yield_now().await;
        outbox.push(b"wake").expect("fits");
        let (taken, batch) = writer.await.expect("the writer ends");
        assert_eq!(taken, Taken::Frames(1));
        assert_eq!(batch, b"\0\0\0\x04wake");
    }
}
