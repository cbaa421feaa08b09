//! A connection's outbox: the frames waiting to be written, kept as the bytes that go on the
//! wire (length prefix, frame, length prefix, frame…) in one buffer, and the socket's
//! writing half, which whoever writes takes out while writing.
//!
//! The sender appends under a short lock. Two kinds of writer then take the whole buffer
//! out (swapping in an empty one kept from last time) and write it with one call:
//!
//! * the connection's writer task, woken when the first frame goes into an empty outbox;
//! * the sender itself, at the end of a [`Cork`]: a sender that sends many frames in one go
//!   (the driver, once per turn of its loop) corks them, and when the cork comes out writes
//!   them at once without waiting, handing only what the socket does not take now to the
//!   writer task. That saves the writer task's wake-up and turn on the way of every batch.
//!
//! So a frame costs no allocation of its own on its way to the socket (none made on one
//! thread and freed on another, which is what the allocator charges most for), and however
//! many frames queued up while a write was under way, they go out in one write.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use solo_core::SendFailure;
use solo_core::wire::{self, MAX_FRAME_LEN, Message};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

use crate::frame::{self, LEN_PREFIX};
use crate::network::StreamWriter;

use super::WRITE_BUFFER;

/// The frames waiting for one connection's writer, and the limits on them.
pub(super) struct Outbox {
    waiting: Mutex<Waiting>,
    /// Wakes the writer task when the first frame goes into an empty outbox (unless corked),
    /// when a pen comes back with work left for it, or on close.
    ready: Notify,
    max_frames: usize,
    max_bytes: usize,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("max_frames", &self.max_frames)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Waiting {
    /// Length-prefixed frames, oldest first.
    bytes: Vec<u8>,
    frames: usize,
    /// No frame is taken any more; the writer writes what is left, then ends.
    closed: bool,
    /// The writing half, while nobody writes (`None` before the writer task hands it in,
    /// and while a writer holds it).
    pen: Option<Pen>,
    /// Batches written by a sender at the end of its cork, which the writer task counts as
    /// traffic for its keep-alives.
    written_directly: u64,
}

/// The socket's writing half and the batch being written on it: whoever writes holds it.
pub(super) struct Pen {
    half: StreamWriter,
    /// The bytes taken from the outbox; `batch[sent..]` is not written yet.
    batch: Vec<u8>,
    sent: usize,
    /// Written in full but not yet flushed (a TLS stream may buffer).
    unflushed: bool,
    frames: usize,
    frames_out: metrics::Counter,
    bytes_out: metrics::Counter,
}

impl Pen {
    /// A pen for `half`, counting what it writes into the connection's traffic counters.
    pub(super) fn new(
        half: StreamWriter,
        frames_out: metrics::Counter,
        bytes_out: metrics::Counter,
    ) -> Self {
        Self {
            half,
            batch: Vec::with_capacity(WRITE_BUFFER),
            sent: 0,
            unflushed: false,
            frames: 0,
            frames_out,
            bytes_out,
        }
    }

    /// The writing half, for the writer task's own awaits.
    pub(super) fn half(&mut self) -> &mut StreamWriter {
        &mut self.half
    }

    /// Whether part of the batch is not yet written, or not yet flushed.
    fn has_leftover(&self) -> bool {
        self.sent < self.batch.len() || self.unflushed
    }

    /// Moves what waits in `waiting` behind what the pen still has to write.
    fn take_from(&mut self, waiting: &mut Waiting) {
        if self.batch.is_empty() {
            std::mem::swap(&mut waiting.bytes, &mut self.batch);
        } else {
            self.batch.extend_from_slice(&waiting.bytes);
            waiting.bytes.clear();
        }
        self.frames += std::mem::take(&mut waiting.frames);
    }

    /// Writes as much of the batch as the socket takes now, and flushes it, without
    /// waiting: whatever is left is the writer task's.
    fn write_without_waiting(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        while self.sent < self.batch.len() {
            match Pin::new(&mut self.half).poll_write(&mut cx, &self.batch[self.sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => self.sent += n,
                // Full, or failing: the writer task writes the rest, or meets the error.
                _ => return,
            }
        }
        self.unflushed = true;
        if let Poll::Ready(Ok(())) = Pin::new(&mut self.half).poll_flush(&mut cx) {
            self.finished();
        }
    }

    /// The writer task's way: writes the rest of the batch and flushes, waiting as needed.
    pub(super) async fn write_all(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if self.sent < self.batch.len() {
            self.half.write_all(&self.batch[self.sent..]).await?;
            self.sent = self.batch.len();
            self.unflushed = true;
        }
        if self.unflushed {
            self.half.flush().await?;
        }
        self.finished();
        Ok(())
    }

    /// The batch is on the wire: counted, and its buffer cleared for the next one.
    fn finished(&mut self) {
        if self.frames > 0 {
            self.frames_out.increment(self.frames as u64);
            self.bytes_out.increment(self.batch.len() as u64);
        }
        if self.batch.capacity() > WRITE_BUFFER {
            // A large state went out: its room is not kept for the life of the connection.
            self.batch = Vec::with_capacity(WRITE_BUFFER);
        }
        self.batch.clear();
        self.sent = 0;
        self.unflushed = false;
        self.frames = 0;
    }
}

/// What the writer task found in the outbox.
pub(super) enum Taken {
    /// Work to write: the pen, holding it in its batch.
    Work(Pen),
    /// Closed, everything before the close written: the pen, to end the connection with.
    Closed(Pen),
}

/// What the writer task finds when its keep-alive interval passes.
pub(super) enum Quiet {
    /// Nothing was written since it last looked: the pen, to write a keep-alive with.
    Idle(Pen),
    /// Something was written, or is being written: no keep-alive is needed.
    Busy,
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
    pub(super) fn push(self: &Arc<Self>, frame: &[u8]) -> Result<(), SendFailure> {
        frame::prefix_for(frame, MAX_FRAME_LEN).map_err(|_| SendFailure::TooLarge)?;
        self.push_with(|bytes| {
            bytes.extend_from_slice(frame);
            Ok(frame.len())
        })
    }

    /// Appends the frame `message` encodes to, encoded straight into the outbox (no buffer of
    /// its own on the way), within the same limits as [`push`](Self::push):
    /// [`SendFailure::TooLarge`] if it encodes to more than [`MAX_FRAME_LEN`].
    pub(super) fn push_message(self: &Arc<Self>, message: &Message) -> Result<(), SendFailure> {
        self.push_with(|bytes| {
            wire::encode_frame_onto(message, bytes).map_err(|_oversized| SendFailure::TooLarge)
        })
    }

    /// Appends a frame that `write` appends to the buffer (returning its length, at most
    /// [`MAX_FRAME_LEN`], never 0), behind a length prefix; everything is as it was if
    /// `write` fails or the frame does not fit.
    fn push_with(
        self: &Arc<Self>,
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
        if first && !Cork::defer(self) {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Takes no more frames; the writer finishes what is there and ends.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Hands the writer task's pen in (when the writer starts), or back after a write; wakes
    /// the writer task again if work is left (frames pushed meanwhile by a cork that found
    /// the pen out, or the close).
    pub(super) fn put_back(&self, pen: Pen) {
        let mut waiting = self.lock();
        let work_left = waiting.frames > 0 || waiting.closed || pen.has_leftover();
        waiting.pen = Some(pen);
        drop(waiting);
        if work_left {
            self.ready.notify_one();
        }
    }

    /// Waits for work, then takes the pen with all of it in its batch.
    ///
    /// Cancel safe: the pen and the frames are only moved out by a call that returns them.
    /// No timer of its own: the writer keeps one for its keep-alives, for the life of the
    /// connection, rather than one made per batch.
    pub(super) async fn take(&self) -> Taken {
        loop {
            {
                let mut waiting = self.lock();
                let has_work = waiting.frames > 0
                    || waiting.closed
                    || waiting.pen.as_ref().is_some_and(Pen::has_leftover);
                if has_work && let Some(mut pen) = waiting.pen.take() {
                    if waiting.frames > 0 {
                        pen.take_from(&mut waiting);
                        return Taken::Work(pen);
                    }
                    if pen.has_leftover() {
                        return Taken::Work(pen);
                    }
                    return Taken::Closed(pen);
                }
                // Nothing, or a sender writing now: it puts the pen back, which wakes this
                // task if work is left.
            }
            // A push or a put_back between the check and this wait leaves a permit.
            self.ready.notified().await;
        }
    }

    /// For the writer task's keep-alive: the pen, if nothing was written since
    /// `written_directly` was last `seen` (which this updates) and nobody writes now.
    pub(super) fn quiet(&self, seen: &mut u64) -> Quiet {
        let mut waiting = self.lock();
        if waiting.written_directly != *seen {
            *seen = waiting.written_directly;
            return Quiet::Busy;
        }
        match waiting.pen.take() {
            // A batch left half-written is the writer task's next take, never interleaved.
            Some(pen) if !pen.has_leftover() => Quiet::Idle(pen),
            Some(pen) => {
                waiting.pen = Some(pen);
                Quiet::Busy
            }
            None => Quiet::Busy,
        }
    }

    /// Writes what waits without waiting, if nobody else is writing: what the socket does
    /// not take now (and anything a writer should see, such as the close) is left to the
    /// writer task.
    fn write_now(&self) {
        let mut pen = {
            let mut waiting = self.lock();
            if waiting.frames == 0 {
                return;
            }
            match waiting.pen.take() {
                // Leftovers are the writer task's, which has been woken for them.
                Some(mut pen) if !pen.has_leftover() => {
                    pen.take_from(&mut waiting);
                    waiting.written_directly += 1;
                    pen
                }
                Some(pen) => {
                    waiting.pen = Some(pen);
                    drop(waiting);
                    self.ready.notify_one();
                    return;
                }
                // The writer task is writing: it looks again when it puts the pen back.
                None => return,
            }
        };
        pen.write_without_waiting();
        self.put_back(pen);
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
pub(super) struct OutboxSender(pub(super) Arc<Outbox>);

impl Drop for OutboxSender {
    fn drop(&mut self) {
        self.0.close();
    }
}

thread_local! {
    /// The outboxes that got their first frame under this thread's cork, if one is in.
    static CORKED: RefCell<Corked> = const { RefCell::new(Corked { depth: 0, outboxes: Vec::new() }) };
}

struct Corked {
    depth: usize,
    outboxes: Vec<Arc<Outbox>>,
}

/// While alive, frames this thread sends wait in their outboxes instead of waking their
/// connections' writer tasks; when the last cork on the thread comes out, they are written
/// at once, without waiting, by this thread (what a socket does not take now is left to its
/// writer task). For a sender that sends many frames in one go and then waits itself (a
/// driver's turn): its frames go out in one write each, without a task switch on their way.
///
/// A cork belongs to its thread (it is neither `Send` nor `Sync`), so it cannot be held
/// across an `.await` of a spawned task: keep it for a stretch of code that does not wait.
#[must_use = "frames are written when the cork is dropped"]
pub struct Cork {
    _not_send: PhantomData<*const ()>,
}

impl Cork {
    /// Corks this thread's sends until the cork is dropped (corks nest: the frames go out
    /// when the outermost comes out).
    pub fn new() -> Self {
        CORKED.with(|corked| corked.borrow_mut().depth += 1);
        Self {
            _not_send: PhantomData,
        }
    }

    /// Whether a cork holds this thread's sends: if so, `outbox` is written when it
    /// comes out, and its writer task need not be woken now.
    fn defer(outbox: &Arc<Outbox>) -> bool {
        CORKED.with(|corked| {
            let mut corked = corked.borrow_mut();
            if corked.depth == 0 {
                return false;
            }
            if !corked.outboxes.iter().any(|o| Arc::ptr_eq(o, outbox)) {
                corked.outboxes.push(Arc::clone(outbox));
            }
            true
        })
    }
}

impl Default for Cork {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Cork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cork").finish_non_exhaustive()
    }
}

impl Drop for Cork {
    fn drop(&mut self) {
        let outboxes = CORKED.with(|corked| {
            let mut corked = corked.borrow_mut();
            corked.depth -= 1;
            if corked.depth > 0 {
                return Vec::new();
            }
            std::mem::take(&mut corked.outboxes)
        });
        for outbox in &outboxes {
            outbox.write_now();
        }
        // The list keeps its room for the next cork on this thread.
        CORKED.with(|corked| {
            let mut corked = corked.borrow_mut();
            if corked.outboxes.capacity() == 0 {
                let mut outboxes = outboxes;
                outboxes.clear();
                corked.outboxes = outboxes;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    const QUIET: Duration = Duration::from_millis(20);
    /// The bound on a wait that must end.
    const BOUND: Duration = Duration::from_secs(10);

    /// An outbox with a pen handed in, writing into a pipe that holds `room` bytes; the
    /// pipe's other end.
    fn outbox_on_pipe(
        max_frames: usize,
        max_bytes: usize,
        room: usize,
    ) -> (Arc<Outbox>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(room);
        let outbox = Arc::new(Outbox::new(max_frames, max_bytes));
        let counter = metrics::Counter::noop;
        outbox.put_back(Pen::new(Box::new(ours), counter(), counter()));
        (outbox, theirs)
    }

    async fn take_work(outbox: &Outbox) -> Pen {
        match outbox.take().await {
            Taken::Work(pen) => pen,
            Taken::Closed(_) => panic!("closed, not work"),
        }
    }

    #[tokio::test]
    async fn frames_come_out_prefixed_in_order_in_one_batch() {
        let (outbox, _pipe) = outbox_on_pipe(8, 1024, 1024);
        outbox.push(b"one").expect("fits");
        outbox.push(b"two!").expect("fits");
        let pen = take_work(&outbox).await;
        assert_eq!(pen.batch, b"\0\0\0\x03one\0\0\0\x04two!");
        assert_eq!(outbox.len(), (0, 0));
        assert!(
            tokio::time::timeout(QUIET, outbox.take()).await.is_err(),
            "while the pen is out, the writer task waits"
        );
    }

    #[tokio::test]
    async fn limits_in_frames_and_bytes_refuse_and_keep_what_was_there() {
        let (outbox, _pipe) = outbox_on_pipe(2, 20, 1024);
        outbox.push(b"a").expect("fits");
        outbox.push(b"b").expect("fits");
        assert_eq!(outbox.push(b"c"), Err(SendFailure::QueueFull));
        let mut pen = take_work(&outbox).await;
        pen.write_all().await.expect("written");
        outbox.put_back(pen);
        // In bytes: 4 + 10 fits, 4 + 10 more does not; one larger than the budget goes
        // into an empty outbox alone.
        outbox.push(&[1; 10]).expect("fits");
        assert_eq!(outbox.push(&[2; 10]), Err(SendFailure::QueueFull));
        assert_eq!(outbox.len(), (1, 14));
        let _pen = take_work(&outbox).await;
        outbox.push(&[3; 100]).expect("alone, it goes");
        assert_eq!(outbox.push(&[]), Err(SendFailure::TooLarge));
    }

    #[tokio::test]
    async fn a_close_lets_the_writer_finish_what_waits_then_end() {
        let (outbox, _pipe) = outbox_on_pipe(8, 1024, 1024);
        let sender = OutboxSender(Arc::clone(&outbox));
        outbox.push(b"last").expect("fits");
        drop(sender);
        assert_eq!(outbox.push(b"late"), Err(SendFailure::NoRoute));
        let mut pen = take_work(&outbox).await;
        assert_eq!(pen.batch, b"\0\0\0\x04last");
        pen.write_all().await.expect("written");
        outbox.put_back(pen);
        assert!(matches!(outbox.take().await, Taken::Closed(_)));
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_the_first_frame() {
        let (outbox, _pipe) = outbox_on_pipe(8, 1024, 1024);
        let writer = {
            let outbox = Arc::clone(&outbox);
            tokio::spawn(async move { take_work(&outbox).await.batch })
        };
        tokio::task::yield_now().await;
        outbox.push(b"wake").expect("fits");
        let batch = writer.await.expect("the writer ends");
        assert_eq!(batch, b"\0\0\0\x04wake");
    }

    #[tokio::test]
    async fn a_cork_writes_its_frames_itself_in_one_go_and_wakes_no_writer() {
        let (outbox, mut pipe) = outbox_on_pipe(8, 1024, 1024);
        {
            let _cork = Cork::new();
            outbox.push(b"one").expect("fits");
            outbox.push(b"two").expect("fits");
            let _inner = Cork::new();
            outbox.push(b"six").expect("fits");
            drop(_inner);
            assert_eq!(
                outbox.len(),
                (3, 21),
                "nothing goes before the outer cork is out"
            );
        }
        assert_eq!(outbox.len(), (0, 0));
        let mut wire = [0; 21];
        tokio::time::timeout(BOUND, pipe.read_exact(&mut wire))
            .await
            .expect("the cork wrote the frames itself")
            .expect("read");
        assert_eq!(&wire, b"\0\0\0\x03one\0\0\0\x03two\0\0\0\x03six");
        assert!(
            tokio::time::timeout(QUIET, outbox.ready.notified())
                .await
                .is_err(),
            "the writer task was not woken (a wake-up leaves a permit)"
        );
        assert_eq!(outbox.len(), (0, 0), "nothing is left for it");
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_at_once_goes_to_the_writer_task_in_order() {
        // The pipe takes 8 bytes: the rest of the corked batch, then the frames sent after
        // it, are the writer task's, in that order.
        let (outbox, mut pipe) = outbox_on_pipe(8, 1024, 8);
        {
            let _cork = Cork::new();
            outbox.push(b"first").expect("fits");
            outbox.push(b"second").expect("fits");
        }
        outbox.push(b"third").expect("fits");
        let writer = {
            let outbox = Arc::clone(&outbox);
            tokio::spawn(async move {
                let mut pen = take_work(&outbox).await;
                pen.write_all().await.expect("written");
                outbox.put_back(pen);
            })
        };
        let expected: &[u8] = b"\0\0\0\x05first\0\0\0\x06second\0\0\0\x05third";
        let mut wire = vec![0; expected.len()];
        tokio::time::timeout(BOUND, pipe.read_exact(&mut wire))
            .await
            .expect("every byte arrives, none lost on the way to the writer task")
            .expect("read");
        assert_eq!(wire, expected);
        writer.await.expect("the writer ends");
    }

    #[tokio::test]
    async fn a_cork_that_finds_the_writer_task_writing_leaves_its_frames_to_it() {
        let (outbox, _pipe) = outbox_on_pipe(8, 1024, 1024);
        outbox.push(b"early").expect("fits");
        let mut pen = take_work(&outbox).await;
        {
            let _cork = Cork::new();
            outbox.push(b"late").expect("fits");
        }
        assert_eq!(
            outbox.len(),
            (1, 8),
            "the writer task has the pen: the frame waits"
        );
        pen.write_all().await.expect("written");
        outbox.put_back(pen);
        let pen = take_work(&outbox).await;
        assert_eq!(
            pen.batch, b"\0\0\0\x04late",
            "putting the pen back woke the writer task"
        );
    }
}
