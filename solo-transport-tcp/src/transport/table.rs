//! The connection table: established connections, dials in progress, backoffs, handovers
//! and handshakes, behind [`Shared`](super::Shared)'s mutex.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use solo_core::{Incarnation, NodeId, NodeName};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::random::Randomness;
use crate::tiebreak::Direction;

use super::Events;
use super::outbox::OutboxSender;

pub(super) struct State {
    pub(super) closed: bool,
    /// Each task gets a clone; taken at shutdown so the stream ends when the tasks are gone.
    pub(super) events: Option<Events>,
    /// The established connection per peer name: at most one.
    pub(super) conns: BTreeMap<NodeName, Conn>,
    /// Addresses (advertised, or dialed) of established connections, for `to == None`.
    pub(super) addrs: BTreeMap<SocketAddr, NodeName>,
    /// Dials in progress, by address, with the frames waiting for them.
    pub(super) dials: BTreeMap<SocketAddr, Dial>,
    /// Addresses whose last dial failed.
    pub(super) backoff: BTreeMap<SocketAddr, Backoff>,
    /// Peers whose connection was handed over (see [`Shared::handover`]) and whose
    /// successor connection is not installed yet.
    pub(super) handovers: BTreeMap<NodeName, Handover>,
    /// Every running task, so that shutdown can stop them and replacement can close one.
    pub(super) tasks: BTreeMap<u64, AbortHandle>,
    /// The newest incarnation known of each name (see [`Transport::note_incarnation`]): an
    /// older one is refused at its handshake, with [`Verdict::Superseded`].
    pub(super) newest: BTreeMap<NodeName, Incarnation>,
    pub(super) next_id: u64,
    /// Inbound connections in their handshake.
    pub(super) pending: PendingHandshakes,
    pub(super) random: Randomness,
}

/// Inbound connections in their handshake, by task (ids rise, so the first is the oldest)
/// and by source address, for [`Config::max_pending_handshakes`] and
/// [`Config::max_pending_handshakes_per_ip`].
#[derive(Debug, Default)]
pub(super) struct PendingHandshakes {
    pub(super) by_task: BTreeMap<u64, IpAddr>,
    pub(super) by_ip: BTreeMap<IpAddr, usize>,
}

impl PendingHandshakes {
    pub(super) fn len(&self) -> usize {
        self.by_task.len()
    }

    pub(super) fn from(&self, ip: IpAddr) -> usize {
        self.by_ip.get(&ip).copied().unwrap_or(0)
    }

    pub(super) fn insert(&mut self, task: u64, ip: IpAddr) {
        self.by_task.insert(task, ip);
        *self.by_ip.entry(ip).or_default() += 1;
    }

    /// Forgets `task`; whether it was pending.
    pub(super) fn remove(&mut self, task: u64) -> bool {
        let Some(ip) = self.by_task.remove(&task) else {
            return false;
        };
        if let Some(count) = self.by_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.by_ip.remove(&ip);
            }
        }
        true
    }

    /// Forgets the oldest handshake and returns its task.
    pub(super) fn pop_oldest(&mut self) -> Option<u64> {
        let task = *self.by_task.keys().next()?;
        self.remove(task);
        Some(task)
    }
}

impl State {
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Removes the connection of `name` and its address entries.
    pub(super) fn remove_conn(&mut self, name: &NodeName) -> Option<Conn> {
        let conn = self.conns.remove(name)?;
        for addr in &conn.addrs {
            if self.addrs.get(addr) == Some(name) {
                self.addrs.remove(addr);
            }
        }
        Some(conn)
    }

    /// The abort handles of a connection's tasks, except `except` (the caller's own).
    pub(super) fn take_tasks(&mut self, conn: &Conn, except: Option<u64>) -> Vec<AbortHandle> {
        [Some(conn.reader_task), conn.writer_task]
            .into_iter()
            .flatten()
            .filter(|&task| Some(task) != except)
            .filter_map(|task| self.tasks.remove(&task))
            .collect()
    }

    pub(super) fn is_current(&self, name: &NodeName, conn: u64) -> bool {
        self.conns.get(name).is_some_and(|c| c.id == conn)
    }
}

pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) peer: NodeId,
    pub(super) direction: Direction,
    pub(super) addr: SocketAddr,
    /// Where frames for the writer wait; dropped with the row, which closes it.
    pub(super) outbox: OutboxSender,
    /// Set when the connection is retired in favour of another to the same peer: its writer
    /// then ends with the handover marker.
    pub(super) retired: Arc<AtomicBool>,
    /// When something last arrived on it after the handshake.
    pub(super) heard: Heard,
    /// When it was installed.
    pub(super) installed_at: Instant,
    pub(super) reader_task: u64,
    pub(super) writer_task: Option<u64>,
    pub(super) addrs: Vec<SocketAddr>,
}

/// When something last arrived on a connection after its handshake, shared by its reader
/// and the table.
///
/// The acceptor sends the handshake's last message, so until the dialer's first frame (a
/// keep-alive it sends at once) the acceptor cannot tell whether the dialer took the
/// connection: a close before then is a handshake that failed at the dialer, not a failure
/// of the peer, and is not reported `Down`. The dialer read the acceptor's verdict, so its
/// side is confirmed from the start.
#[derive(Clone, Default)]
pub(super) struct Heard {
    /// Microseconds since [`Shared::epoch`], plus one; zero while nothing arrived.
    pub(super) at: Arc<AtomicU64>,
}

impl Heard {
    pub(super) fn hear(&self, epoch: Instant, now: Instant) {
        let micros =
            u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX - 1);
        self.at.store(micros + 1, Ordering::Release);
    }

    pub(super) fn confirmed(&self) -> bool {
        self.at.load(Ordering::Acquire) != 0
    }

    /// How long nothing arrived, counted from `since` if nothing ever did.
    pub(super) fn silent_for(&self, epoch: Instant, since: Instant, now: Instant) -> Duration {
        let last = match self.at.load(Ordering::Acquire) {
            0 => since,
            micros => epoch + Duration::from_micros(micros - 1),
        };
        now.saturating_duration_since(last.max(since))
    }
}

pub(super) struct Handover {
    pub(super) peer: NodeId,
    pub(super) conn: u64,
}

pub(super) struct Dial {
    pub(super) queue: VecDeque<Queued>,
}

pub(super) struct Queued {
    pub(super) to: Option<NodeId>,
    pub(super) frame: Vec<u8>,
}

pub(super) struct Backoff {
    pub(super) failures: u32,
    pub(super) next_attempt: Instant,
}
