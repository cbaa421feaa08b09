//! The tasks: the accept loop, each connection's handshake and reader, and its writer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use solo_core::NodeId;
use solo_core::wire::MAX_FRAME_LEN;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use crate::frame::FrameError;
use crate::handshake::{HandshakeError, Verdict};
use crate::network::{Network, StreamWriter};
use crate::tiebreak::Direction;
use crate::{frame, handshake};

use super::events::FrameRun;
use super::lifecycle::{Installed, NewConn, emit};
use super::outbox::{Pen, Quiet, Taken};
use super::{
    ACCEPT_ERROR_PAUSE, Events, HANDOVER_MARKER, KEEPALIVE, READ_BUFFER, Shared, TransportEvent,
};

impl<N: Network> Shared<N> {
    /// Accepts connections until shutdown aborts it. It holds an event sender only so that
    /// the event stream cannot end while the listener is still open.
    pub(super) async fn accept_loop(self: Arc<Self>, mut listener: N::Listener, events: Events) {
        loop {
            match self.network.accept(&mut listener).await {
                Ok((stream, remote)) => self.start_inbound(stream, remote, &events),
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    pub(super) fn start_inbound(
        self: &Arc<Self>,
        stream: N::Stream,
        remote: SocketAddr,
        events: &Events,
    ) {
        let mut st = self.state();
        if st.closed {
            return;
        }
        let events = events.clone();
        if st.pending.from(remote.ip()) >= self.config.max_pending_handshakes_per_ip {
            self.counters.connections_refused.inc();
            tracing::debug!(%remote, "too many handshakes in progress from this address; connection closed");
            return;
        }
        if st.pending.len() >= self.config.max_pending_handshakes {
            // The oldest makes room: a peer that knows the cookie finishes in round trips,
            // so the oldest is the likeliest never to speak.
            if let Some(oldest) = st.pending.pop_oldest() {
                if let Some(task) = st.tasks.remove(&oldest) {
                    task.abort();
                }
                self.counters.handshakes_evicted.inc();
                tracing::debug!(%remote, "too many handshakes in progress; the oldest closed");
            }
        }
        let task = st.next_id();
        st.pending.insert(task, remote.ip());
        let span = tracing::info_span!(
            "conn",
            node = %self.me.node(),
            %remote,
            dir = "in",
            peer = tracing::field::Empty,
        );
        let accepting = Arc::clone(self)
            .run_inbound(stream, task, events)
            .instrument(span);
        self.spawn(&mut st, task, accepting);
    }

    pub(super) async fn run_inbound(
        self: Arc<Self>,
        mut stream: N::Stream,
        task: u64,
        events: Events,
    ) {
        let deadline = Instant::now() + self.config.handshake_timeout;
        let hello_within = self.config.hello_timeout;
        let result = match self.nonce() {
            Ok(nonce) => timeout_at(
                deadline,
                handshake::accept(&mut stream, &self.me, nonce, hello_within),
            )
            .await
            .unwrap_or(Err(HandshakeError::Timeout)),
            Err(error) => Err(error.into()),
        };
        if !self.state().pending.remove(task) {
            // Closed to make room for a newer handshake (and its abort is on its way):
            // nothing of it may be installed.
            return;
        }
        let pending = match result {
            Ok(pending) => pending,
            Err(error) => return self.handshake_failed(&error),
        };
        let claimed = &pending.hello.node.name;
        if !self.network.peer_may_be(&stream, claimed) {
            let claimed = claimed.clone();
            return self.handshake_failed(&HandshakeError::WrongCertificate { claimed });
        }
        let peer = pending.hello.node.clone();
        tracing::Span::current().record("peer", tracing::field::display(&peer));

        let link = self.link_lock.lock().await;
        let installed = {
            let mut st = self.state();
            self.install(&mut st, &pending.hello, Direction::Inbound, task, None)
        };
        for old in installed.abort {
            old.abort();
        }
        if !emit(&events, installed.events).await {
            return self.shutdown();
        }
        drop(link);

        let finished = timeout_at(
            deadline,
            handshake::finish_accept(
                &mut stream,
                &self.me,
                &pending,
                installed.verdict,
                installed.newer,
            ),
        )
        .await
        .unwrap_or(Err(HandshakeError::Timeout));
        let Some(conn) = installed.conn else {
            tracing::debug!(verdict = ?installed.verdict, "connection not kept");
            return;
        };
        if let Err(error) = finished {
            tracing::debug!(%error, "handshake failed at the last step");
            self.counters.handshakes_failed.inc();
            return self.connection_lost(conn.id, &peer, task, &events).await;
        }
        tracing::info!("link up");
        self.run_connection(stream, conn, peer, task, events).await;
    }

    pub(super) async fn run_outbound(self: Arc<Self>, addr: SocketAddr, task: u64, events: Events) {
        let wait = self.state().backoff.get(&addr).map(|b| b.next_attempt);
        if let Some(at) = wait {
            tokio::time::sleep_until(at).await;
        }
        let deadline = Instant::now() + self.config.handshake_timeout;
        let attempt = async {
            let nonce = self.nonce()?;
            let mut stream = self
                .network
                .connect(addr)
                .await
                .map_err(HandshakeError::Connect)?;
            let (hello, verdict, newer) = handshake::initiate(&mut stream, &self.me, nonce).await?;
            if !self.network.peer_may_be(&stream, &hello.node.name) {
                let claimed = hello.node.name.clone();
                return Err(HandshakeError::WrongCertificate { claimed });
            }
            Ok((stream, hello, verdict, newer))
        };
        let (stream, hello, verdict, newer) = match timeout_at(deadline, attempt)
            .await
            .unwrap_or(Err(HandshakeError::Timeout))
        {
            Ok(done) => done,
            Err(error) => {
                if let HandshakeError::Refused(error) = &error {
                    let event = TransportEvent::Misconfigured {
                        addr,
                        error: error.clone(),
                    };
                    if !emit(&events, vec![event]).await {
                        return self.shutdown();
                    }
                }
                return self.dial_failed(addr, &error);
            }
        };
        let peer = hello.node.clone();
        tracing::Span::current().record("peer", tracing::field::display(&peer));
        // Refused for good reasons, but refused: wait out the backoff before asking again.
        match verdict {
            Verdict::Superseded => {
                let me = self.me.node();
                let by = NodeId::new(me.name.clone(), newer.unwrap_or(me.incarnation));
                tracing::warn!(node = %me, refused_by = %peer, %by, "superseded: a peer knows a newer process of this name");
                let superseded = TransportEvent::Superseded {
                    refused_by: peer,
                    by,
                };
                if !emit(&events, vec![superseded]).await {
                    return self.shutdown();
                }
                return self.dial_failed(addr, &HandshakeError::Superseded);
            }
            Verdict::Full => return self.dial_failed(addr, &HandshakeError::PeerFull),
            Verdict::Accepted | Verdict::Duplicate => {}
        }

        let link = self.link_lock.lock().await;
        let installed = {
            let mut st = self.state();
            st.backoff.remove(&addr);
            let queue = st.dials.remove(&addr).map(|d| d.queue).unwrap_or_default();
            let installed = if verdict == Verdict::Accepted {
                self.install(&mut st, &hello, Direction::Outbound, task, Some(addr))
            } else {
                self.counters.duplicates_closed.inc();
                Installed::refused(verdict)
            };
            self.flush_queue(&st, &peer, queue);
            installed
        };
        for old in installed.abort {
            old.abort();
        }
        if !emit(&events, installed.events).await {
            return self.shutdown();
        }
        drop(link);
        match installed.conn {
            Some(conn) => {
                tracing::info!("link up");
                self.run_connection(stream, conn, peer, task, events).await;
            }
            None if verdict == Verdict::Accepted && installed.verdict == Verdict::Duplicate => {
                // The acceptor installed this connection; tell it the other one is kept.
                tracing::debug!("connection not kept; handing over");
                let mut stream = stream;
                let deadline = Instant::now() + self.config.handshake_timeout;
                let _ = timeout_at(deadline, async {
                    stream.write_all(&HANDOVER_MARKER).await?;
                    stream.shutdown().await
                })
                .await;
            }
            None => tracing::debug!(verdict = ?installed.verdict, "connection not kept"),
        }
    }

    /// Runs an established connection: spawns its writer, then reads it until it fails.
    pub(super) async fn run_connection(
        self: &Arc<Self>,
        stream: N::Stream,
        new: NewConn,
        peer: NodeId,
        task: u64,
        events: Events,
    ) {
        let conn = new.id;
        let heard = new.heard.clone();
        let (read_half, write_half) = self.network.split(stream);
        {
            // Spawned even if the connection was retired since it was installed: the writer
            // then sends the handover marker at once.
            let mut st = self.state();
            let writer = st.next_id();
            let writing = Arc::clone(self)
                .run_writer(write_half, new, peer.clone(), writer, events.clone())
                .instrument(tracing::Span::current());
            self.spawn(&mut st, writer, writing);
            if let Some(c) = st.conns.get_mut(&peer.name).filter(|c| c.id == conn) {
                c.writer_task = Some(writer);
            }
        }
        let mut reader = BufReader::with_capacity(READ_BUFFER, read_half);
        let idle_timeout = self.config.idle_timeout;
        let (frames_in, bytes_in) = traffic_counters(&peer, "in");
        // The frames one fill of the buffer holds go to the owner together, before the next
        // read waits: one send and one wake-up per fill, and never a frame held back.
        let mut run = FrameRun::new(peer.clone());
        // One timer for the connection's life, for waits on an empty buffer: moved only when
        // it fires early, not made and dropped (a lock on the timer wheel each) per wait.
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        loop {
            // A frame the buffer holds whole is taken at once: the timer and the clock are
            // for reads that wait, once per fill of the buffer, not once per frame.
            let buffered = match frame::buffered_frame(reader.buffer(), MAX_FRAME_LEN) {
                Some(Ok((frame, took))) => {
                    if frame != KEEPALIVE {
                        if run.is_empty() {
                            // One allocation per run: the frames of this fill are all in
                            // the buffer, prefixes included.
                            run.reserve(reader.buffer().len());
                        }
                        self.took_frame(&mut run, frame, &frames_in, &bytes_in);
                    }
                    reader.consume(took);
                    if run.len() < READ_BUFFER {
                        continue;
                    }
                    None
                }
                Some(Err(error)) => Some(Err(error)),
                None => None,
            };
            // Backpressure: a slow consumer slows this peer down.
            if !run.is_empty() {
                let full = std::mem::replace(&mut run, FrameRun::new(peer.clone()));
                if events.send_run(full).await.is_err() {
                    return self.shutdown();
                }
            }
            let read = match buffered {
                Some(read) => read,
                None if reader.buffer().is_empty() => {
                    // Waiting for bytes between frames: `fill_buf` loses nothing if the wait
                    // ends without them, so the timer can be re-armed around it.
                    let waited_from = Instant::now();
                    let filled = loop {
                        tokio::select! {
                            biased;
                            filled = reader.fill_buf() => break filled.map(<[u8]>::len),
                            () = &mut idle => {
                                let until = waited_from + idle_timeout;
                                if Instant::now() < until {
                                    idle.as_mut().reset(until);
                                    continue;
                                }
                                return self.connection_idle(conn, &peer).await;
                            }
                        }
                    };
                    match filled {
                        Ok(0) => Err(FrameError::Closed),
                        Ok(_) => {
                            heard.hear(self.epoch, Instant::now());
                            continue;
                        }
                        Err(error) => Err(FrameError::Io(error)),
                    }
                }
                None => {
                    // Dropping a half-read frame is fine: the connection is closed right after.
                    let Ok(read) = tokio::time::timeout(
                        idle_timeout,
                        frame::read_frame(&mut reader, MAX_FRAME_LEN),
                    )
                    .await
                    else {
                        return self.connection_idle(conn, &peer).await;
                    };
                    if !matches!(read, Err(FrameError::Closed | FrameError::Io(_))) {
                        // Bytes arrived: a frame, the handover marker, or an over-long prefix.
                        heard.hear(self.epoch, Instant::now());
                    }
                    read.map(|frame| {
                        if frame != KEEPALIVE {
                            self.took_frame(&mut run, &frame, &frames_in, &bytes_in);
                        }
                    })
                }
            };
            match read {
                Ok(()) => {}
                Err(FrameError::Empty) => return self.handover(conn, &peer).await,
                Err(error) => {
                    tracing::debug!(%error, "connection closed");
                    return self.connection_lost(conn, &peer, task, &events).await;
                }
            }
        }
    }

    /// Counts a frame from a peer and adds it to the run going to the owner.
    fn took_frame(
        &self,
        run: &mut FrameRun,
        frame: &[u8],
        frames_in: &metrics::Counter,
        bytes_in: &metrics::Counter,
    ) {
        self.counters.frames_received.inc();
        frames_in.increment(1);
        bytes_in.increment((frame.len() + frame::LEN_PREFIX) as u64);
        run.push(frame);
    }

    /// Writes what waits in the outbox, all of it in one write, then flushes; ends when the
    /// connection is removed (its outbox closed) or the socket fails. A sender at the end
    /// of a cork writes without it when the socket takes its frames at once (see
    /// `outbox.rs`): this task writes what it leaves, and the keep-alives.
    pub(super) async fn run_writer(
        self: Arc<Self>,
        half: StreamWriter,
        conn: NewConn,
        peer: NodeId,
        task: u64,
        events: Events,
    ) {
        let NewConn {
            id: conn,
            outbox,
            retired,
            confirm,
            ..
        } = conn;
        let keepalive_interval = self.config.keepalive_interval;
        let (frames_out, bytes_out) = traffic_counters(&peer, "out");
        let mut pen = Pen::new(half, frames_out, bytes_out);
        let result: Result<(), FrameError> = async {
            let keepalive = frame::framed(&KEEPALIVE, MAX_FRAME_LEN)?;
            if confirm {
                pen.half().write_all(&keepalive).await?;
                pen.half().flush().await?;
            }
            // From here on, whoever writes takes the pen from the outbox.
            outbox.put_back(pen);
            // One timer for the connection's life, moved on only when it fires: a keep-alive
            // goes out once nothing was written for the keep-alive interval.
            let mut wrote_at = Instant::now();
            let mut seen_direct = 0;
            let quiet = tokio::time::sleep_until(wrote_at + keepalive_interval);
            tokio::pin!(quiet);
            let mut closing = loop {
                let mut writing = tokio::select! {
                    biased;
                    taken = outbox.take() => match taken {
                        Taken::Work(writing) => writing,
                        Taken::Closed(closing) => break closing,
                    },
                    () = &mut quiet => {
                        if Instant::now() < wrote_at + keepalive_interval {
                            quiet.as_mut().reset(wrote_at + keepalive_interval);
                            continue;
                        }
                        match outbox.quiet(&mut seen_direct) {
                            Quiet::Idle(mut idle) => {
                                let half = idle.half();
                                let written = match half.write_all(&keepalive).await {
                                    Ok(()) => half.flush().await,
                                    Err(error) => Err(error),
                                };
                                outbox.put_back(idle);
                                written?;
                            }
                            Quiet::Busy => {}
                        }
                        wrote_at = Instant::now();
                        quiet.as_mut().reset(wrote_at + keepalive_interval);
                        continue;
                    }
                };
                let written = writing.write_all().await;
                outbox.put_back(writing);
                written?;
                wrote_at = Instant::now();
                if quiet.is_elapsed() {
                    quiet.as_mut().reset(wrote_at + keepalive_interval);
                }
            };
            // The outbox is closed and the task was not aborted. If the connection was
            // retired in favour of another to the same peer, say so before closing.
            let half = closing.half();
            if retired.load(Ordering::Acquire) {
                half.write_all(&HANDOVER_MARKER).await?;
            }
            half.shutdown().await?;
            Ok(())
        }
        .await;
        if let Err(error) = result {
            tracing::debug!(%error, "write failed");
            self.connection_lost(conn, &peer, task, &events).await;
        }
    }
}

/// The `solo_transport_frames_total` and `solo_transport_bytes_total` counters of one peer
/// and direction (`in`, `out`), made once per connection task. Keep-alives are not counted;
/// bytes include the length prefixes. The `peer` label is a node name: one per member.
fn traffic_counters(
    peer: &NodeId,
    direction: &'static str,
) -> (metrics::Counter, metrics::Counter) {
    let name = peer.name.to_string();
    (
        metrics::counter!("solo_transport_frames_total", "peer" => name.clone(), "direction" => direction),
        metrics::counter!("solo_transport_bytes_total", "peer" => name, "direction" => direction),
    )
}
