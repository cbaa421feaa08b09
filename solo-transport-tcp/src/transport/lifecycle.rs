//! A connection's life in the table: installed (or refused) after its handshake, retired
//! for a successor, handed over, lost, idle; dial and handshake failures.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use solo_core::wire::Hello;
use solo_core::{Incarnation, Link, NodeId};
use tokio::task::AbortHandle;
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use crate::backoff::backoff_delay;
use crate::handshake::{HandshakeError, Verdict};
use crate::network::Network;
use crate::tiebreak::{Direction, Keep, resolve};

use super::outbox::{Outbox, OutboxSender};
use super::table::{Backoff, Conn, Handover, Heard, State};
use super::{
    Events, KEEPALIVE, MAX_BACKOFF_ENTRIES, PROBE_DIALS, PROBE_SPACING, Shared, TransportEvent,
};

/// What the tasks of an installed connection need.
pub(super) struct NewConn {
    pub(super) id: u64,
    pub(super) outbox: Arc<Outbox>,
    pub(super) retired: Arc<AtomicBool>,
    pub(super) heard: Heard,
    /// The dialer's side: its first frame confirms the handshake to the acceptor.
    pub(super) confirm: bool,
}

/// What [`Shared::install`] decided.
pub(super) struct Installed {
    pub(super) verdict: Verdict,
    /// For [`Verdict::Superseded`]: the newer incarnation of the dialer's name.
    pub(super) newer: Option<Incarnation>,
    /// The new connection, if it was installed.
    pub(super) conn: Option<NewConn>,
    pub(super) events: Vec<TransportEvent>,
    pub(super) abort: Vec<AbortHandle>,
}

impl Installed {
    pub(super) fn refused(verdict: Verdict) -> Self {
        Self {
            verdict,
            newer: None,
            conn: None,
            events: Vec::new(),
            abort: Vec::new(),
        }
    }
}

pub(super) async fn emit(events: &Events, list: Vec<TransportEvent>) -> bool {
    for event in list {
        if events.send(event).await.is_err() {
            return false;
        }
    }
    true
}

impl<N: Network> Shared<N> {
    /// Decides whether a newly authenticated connection becomes `hello.node`'s connection,
    /// and installs it if so. The caller holds `link_lock`, sends `events` before releasing
    /// it, and aborts `abort`.
    pub(super) fn install(
        &self,
        st: &mut State,
        hello: &Hello,
        direction: Direction,
        reader_task: u64,
        dialed: Option<SocketAddr>,
    ) -> Installed {
        let peer = &hello.node;
        if st.closed {
            return Installed::refused(Verdict::Full);
        }
        let me = self.me.node();
        let newer = st
            .newest
            .get(&peer.name)
            .copied()
            .filter(|newest| *newest > peer.incarnation)
            .or((peer.name == me.name && me.incarnation > peer.incarnation)
                .then_some(me.incarnation));
        if let Some(newer) = newer {
            tracing::info!(node = %me, %peer, newer = newer.0, "refusing a superseded process");
            let mut refused = Installed::refused(Verdict::Superseded);
            refused.newer = Some(newer);
            return refused;
        }
        let mut installed = Installed::refused(Verdict::Accepted);
        let mut replaced_same_peer = false;
        let now = Instant::now();
        let existing = st
            .conns
            .get(&peer.name)
            .map(|c| (c.peer.clone(), c.direction, self.is_stale(c, now)));
        if let Some((existing_peer, existing_direction, stale)) = existing {
            let keep = match resolve(
                self.me.node(),
                (&existing_peer, existing_direction),
                (peer, direction),
            ) {
                // The same process dials again over a connection that has gone silent: it
                // gave up on a stalled one (see [`Transport::refresh`]), which a simultaneous
                // dial's fresh connection never is. Only the acceptor decides, by its verdict.
                Keep::Existing if existing_peer == *peer && stale => Keep::New,
                keep => keep,
            };
            match keep {
                Keep::Existing => {
                    if existing_peer == *peer {
                        installed.verdict = Verdict::Duplicate;
                        self.counters.duplicates_closed.inc();
                        if let Some(addr) = dialed {
                            st.addrs.insert(addr, peer.name.clone());
                            if let Some(conn) = st.conns.get_mut(&peer.name) {
                                conn.addrs.push(addr);
                            }
                        }
                    } else {
                        installed.verdict = Verdict::Superseded;
                        installed.newer = Some(existing_peer.incarnation);
                    }
                    return installed;
                }
                Keep::New => {
                    if let Some(old) = st.remove_conn(&peer.name) {
                        if old.peer == *peer {
                            // Retired, not killed: dropping its queue makes its writer send
                            // the handover marker, so the peer does not take the close for
                            // a failure; its reader runs on until the peer closes.
                            old.retired.store(true, Ordering::Release);
                            replaced_same_peer = true;
                            self.counters.duplicates_closed.inc();
                        } else {
                            installed.abort = st.take_tasks(&old, None);
                            self.counters.links_down.inc();
                            let same_addr = old.addr == hello.addr;
                            installed.events.push(TransportEvent::Link {
                                peer: old.peer.clone(),
                                link: Link::Down,
                            });
                            if self.config.probe_closed_peers && same_addr {
                                // Its port now belongs to its successor.
                                installed
                                    .events
                                    .push(TransportEvent::ProcessGone { peer: old.peer });
                            }
                        }
                    }
                }
            }
        } else if st.conns.len() >= self.config.max_connections {
            installed.verdict = Verdict::Full;
            return installed;
        }
        // The peer handed a connection over to this one: the core already knows it is up.
        if let Some(handover) = st.handovers.remove(&peer.name) {
            if handover.peer == *peer {
                replaced_same_peer = true;
            } else {
                self.counters.links_down.inc();
                installed.events.push(TransportEvent::Link {
                    peer: handover.peer,
                    link: Link::Down,
                });
            }
        }
        let outbox = Arc::new(Outbox::new(
            self.config.max_queued_frames,
            self.config.max_queued_bytes,
        ));
        let retired = Arc::new(AtomicBool::new(false));
        let heard = Heard::default();
        if direction == Direction::Outbound {
            heard.hear(self.epoch, now);
        }
        let id = st.next_id();
        let mut addrs = vec![hello.addr];
        addrs.extend(dialed.filter(|&addr| addr != hello.addr));
        for addr in &addrs {
            st.addrs.insert(*addr, peer.name.clone());
        }
        st.conns.insert(
            peer.name.clone(),
            Conn {
                id,
                peer: peer.clone(),
                direction,
                addr: hello.addr,
                outbox: OutboxSender(Arc::clone(&outbox)),
                retired: Arc::clone(&retired),
                heard: heard.clone(),
                installed_at: now,
                reader_task,
                writer_task: None,
                addrs,
            },
        );
        if !replaced_same_peer {
            self.counters.links_up.inc();
            installed.events.push(TransportEvent::Link {
                peer: peer.clone(),
                link: Link::Up,
            });
        }
        installed.conn = Some(NewConn {
            id,
            outbox,
            retired,
            heard,
            confirm: direction == Direction::Outbound,
        });
        self.installs.send_replace(());
        installed
    }

    /// Whether nothing arrived on `conn` for longer than a keep-alive interval and a half,
    /// counted from its install: a live peer's keep-alives come every interval.
    pub(super) fn is_stale(&self, conn: &Conn, now: Instant) -> bool {
        let silent = conn.heard.silent_for(self.epoch, conn.installed_at, now);
        silent > self.config.keepalive_interval * 3 / 2
    }

    /// The established connection `conn` to `peer` closed or failed: report `Down` unless it
    /// was already replaced or removed, or it is an inbound connection the dialer never
    /// confirmed (see [`Heard`]).
    pub(super) async fn connection_lost(
        self: &Arc<Self>,
        conn: u64,
        peer: &NodeId,
        caller: u64,
        events: &Events,
    ) {
        let _link = self.link_lock.lock().await;
        let (abort, confirmed, addr) = {
            let mut st = self.state();
            if !st.is_current(&peer.name, conn) {
                return;
            }
            match st.remove_conn(&peer.name) {
                Some(old) => (
                    st.take_tasks(&old, Some(caller)),
                    old.heard.confirmed(),
                    old.addr,
                ),
                None => return,
            }
        };
        for task in abort {
            task.abort();
        }
        if !confirmed {
            // The dialer's handshake failed after this side's last step (a lost verdict, a
            // timeout). It dials again; if it died instead, the core's probes find out.
            tracing::debug!("connection closed before the dialer confirmed it; not a failure");
            return;
        }
        self.counters.links_down.inc();
        tracing::info!("link down");
        // If nobody listens any more there is nobody to tell.
        let _ = events
            .send(TransportEvent::Link {
                peer: peer.clone(),
                link: Link::Down,
            })
            .await;
        if self.config.probe_closed_peers {
            self.probe_closed(peer.clone(), addr, events.clone());
        }
    }

    /// Dials `addr`, where the closed connection's peer listened: a refusal by its host's
    /// kernel is evidence that the process is gone ([`TransportEvent::ProcessGone`]).
    /// A dying process's kernel may close its connections before its listener and accept a
    /// dial in between, so a dial that connects is tried again, [`PROBE_DIALS`] times in
    /// all; a live process never refuses, so retrying cannot make evidence up. Anything
    /// else (a timeout, an unreachable host) is no evidence.
    pub(super) fn probe_closed(self: &Arc<Self>, peer: NodeId, addr: SocketAddr, events: Events) {
        let mut st = self.state();
        let task = st.next_id();
        let shared = Arc::clone(self);
        let probe = async move {
            for attempt in 1..=PROBE_DIALS {
                let deadline = Instant::now() + shared.config.handshake_timeout;
                match timeout_at(deadline, shared.network.connect(addr)).await {
                    Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::info!(%peer, %addr, "its port refuses connections: the process is gone");
                        let _ = events.send(TransportEvent::ProcessGone { peer }).await;
                        return;
                    }
                    Ok(Ok(_listening)) => {
                        tracing::debug!(%peer, %addr, attempt, "its port still accepts connections");
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %addr, %error, "probe dial failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, %addr, "probe dial timed out");
                        return;
                    }
                }
                tokio::time::sleep(PROBE_SPACING).await;
            }
        };
        self.spawn(&mut st, task, probe.instrument(tracing::Span::current()));
    }

    /// Nothing arrived on `conn` for the idle timeout: the connection stalled without
    /// closing. Retire it the way the tie-break does (its writer sends the handover marker,
    /// so the peer waits for a successor instead of reporting a failure) and dial a successor
    /// at once. No `Link::Down`: a stalled connection is not a dead peer, and the core's
    /// failure detector judges the peer. If the successor cannot be dialed, the peer's side
    /// reports `Down` after its handshake timeout.
    pub(super) async fn connection_idle(self: &Arc<Self>, conn: u64, peer: &NodeId) {
        tracing::info!(
            idle_timeout = ?self.config.idle_timeout,
            "nothing received, not even a keep-alive; replacing the connection"
        );
        let addr = {
            let _link = self.link_lock.lock().await;
            let mut st = self.state();
            if !st.is_current(&peer.name, conn) {
                return;
            }
            let Some(old) = st.remove_conn(&peer.name) else {
                return;
            };
            old.retired.store(true, Ordering::Release);
            // Dropping `old` drops its queue: the writer flushes, sends the marker, closes.
            old.addr
        };
        self.counters.idle_timeouts.inc();
        // A keep-alive that finds no room is not needed: the queue is busy with frames.
        let _ = self.route(
            Some(peer.clone()),
            Some(addr),
            super::send::Outgoing::Bytes(KEEPALIVE.to_vec()),
        );
    }

    /// The peer retired connection `conn` in favour of another between the same two
    /// processes (it sent the handover marker). Remove it without a `Down`: a peer that
    /// retired a connection was alive to send the marker. Its successor is usually under way
    /// (a tie-break, an idle replacement), and is then installed without a second `Up`; a
    /// peer that retired it because it declared this node down dials again only when it has
    /// something to send. Either way the core's failure detector, not this close, judges
    /// the peer. After the handshake timeout the successor is no longer awaited.
    pub(super) async fn handover(&self, conn: u64, peer: &NodeId) {
        let mut installs = self.installs.subscribe();
        {
            let _link = self.link_lock.lock().await;
            let mut st = self.state();
            if !st.is_current(&peer.name, conn) {
                return;
            }
            // Its writer is not aborted: it flushes what is queued, then closes.
            st.remove_conn(&peer.name);
            st.handovers.insert(
                peer.name.clone(),
                Handover {
                    peer: peer.clone(),
                    conn,
                },
            );
            self.counters.duplicates_closed.inc();
        }
        tracing::debug!("connection handed over; waiting for its successor");
        let deadline = Instant::now() + self.config.handshake_timeout;
        loop {
            let pending = self
                .state()
                .handovers
                .get(&peer.name)
                .is_some_and(|h| h.conn == conn);
            if !pending {
                return;
            }
            if timeout_at(deadline, installs.changed()).await.is_err() {
                break;
            }
        }
        let _link = self.link_lock.lock().await;
        let mut st = self.state();
        if st.handovers.get(&peer.name).is_some_and(|h| h.conn == conn) {
            st.handovers.remove(&peer.name);
            tracing::debug!("the handed-over connection has no successor yet; not a failure");
        }
    }

    pub(super) fn handshake_failed(&self, error: &HandshakeError) {
        self.counters.handshakes_failed.inc();
        metrics::counter!("solo_handshakes_rejected_total", "reason" => error.reason())
            .increment(1);
        match error {
            HandshakeError::BadProof
            | HandshakeError::Refused(_)
            | HandshakeError::WrongCertificate { .. } => {
                tracing::warn!(%error, "handshake failed; connection dropped");
            }
            _ => tracing::debug!(%error, "handshake failed; connection dropped"),
        }
    }

    pub(super) fn dial_failed(&self, addr: SocketAddr, error: &HandshakeError) {
        self.counters.dials_failed.inc();
        if !matches!(error, HandshakeError::Connect(_)) {
            self.handshake_failed(error);
        }
        let now = Instant::now();
        let mut st = self.state();
        if let Some(dial) = st.dials.remove(&addr) {
            self.counters
                .dropped_dial_failed
                .add(dial.queue.len() as u64);
        }
        let jitter = st.random.next_u64().unwrap_or(0);
        if st.backoff.len() >= MAX_BACKOFF_ENTRIES && !st.backoff.contains_key(&addr) {
            st.backoff.retain(|_, b| b.next_attempt > now);
            if st.backoff.len() >= MAX_BACKOFF_ENTRIES {
                st.backoff.pop_first();
            }
        }
        let backoff = st.backoff.entry(addr).or_insert(Backoff {
            failures: 0,
            next_attempt: now,
        });
        backoff.failures = backoff.failures.saturating_add(1);
        let delay = backoff_delay(
            backoff.failures,
            self.config.backoff_initial,
            self.config.backoff_max,
            jitter,
        );
        backoff.next_attempt = now + delay;
        tracing::debug!(%error, failures = backoff.failures, ?delay, "dial failed");
    }
}
