//! [`Config`]: the transport's settings, and the cluster [`Cookie`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use solo_core::wire::MAX_CLUSTER_NAME_LEN;

/// The cluster's shared secret. Nodes prove they know it during the handshake; it never
/// crosses the network, not even hashed on its own (see the crate docs).
///
/// A short cookie can be guessed offline by anyone a node dials who records the node's proof,
/// so use a long random one: 32 random bytes, for instance, or a 40-character random string.
/// `Debug` prints `Cookie(<redacted>)`, so a cookie never ends up in a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie(Vec<u8>);

impl Cookie {
    /// Wraps the secret bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<redacted>)")
    }
}

impl From<&str> for Cookie {
    fn from(secret: &str) -> Self {
        Self::new(secret.as_bytes())
    }
}

impl From<String> for Cookie {
    fn from(secret: String) -> Self {
        Self::new(secret.into_bytes())
    }
}

impl From<Vec<u8>> for Cookie {
    fn from(secret: Vec<u8>) -> Self {
        Self::new(secret)
    }
}

impl From<&[u8]> for Cookie {
    fn from(secret: &[u8]) -> Self {
        Self::new(secret)
    }
}

/// The transport's settings. [`Config::new`] fills in the defaults documented on each field;
/// change fields directly, then [`validate`](Config::validate) (binding validates too).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The cluster's name: a node only talks to nodes of the same cluster. At most
    /// [`MAX_CLUSTER_NAME_LEN`] bytes.
    pub cluster: String,
    /// The shared secret every node of the cluster proves it knows. Must not be empty.
    pub cookie: Cookie,
    /// The address peers should dial to reach this node, sent in the handshake. Default
    /// `None`: the address the listener is bound to, which must then not be unspecified
    /// (`0.0.0.0` or `[::]`).
    pub advertised_addr: Option<SocketAddr>,
    /// How long a connection may take from the TCP connect to the end of the handshake before
    /// it is dropped. It also bounds how long a connection handed over by its peer (see the
    /// crate docs) waits for its successor before the peer is reported down. Default 5 s.
    pub handshake_timeout: Duration,
    /// How many frames may wait to be written to one peer; more are dropped and counted
    /// ([`TransportStats::dropped_queue_full`](crate::TransportStats::dropped_queue_full)).
    /// The protocol above tolerates loss. Default 1024.
    pub max_queued_frames: usize,
    /// How many frames may wait for a connection being dialed; more are dropped and counted.
    /// Default 64.
    pub max_queued_frames_dialing: usize,
    /// How many bytes of frames may wait to be written to one peer (or for its dial),
    /// whatever their number: frames vary from a few bytes to
    /// [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN), so a bound in frames alone would let one
    /// slow peer hold a gigabyte. More are dropped and counted
    /// ([`TransportStats::dropped_queue_full`](crate::TransportStats::dropped_queue_full));
    /// a single frame larger than the budget still goes on an empty queue. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Capacity of the event channel, in events. Readers wait when it is full, which slows
    /// their peers down (backpressure) rather than buffering without bound. Default 1024.
    pub event_capacity: usize,
    /// Capacity of the event channel in bytes of frames, whatever their number: frames vary
    /// from a few bytes to [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN), so
    /// [`event_capacity`](Config::event_capacity) alone would let a gigabyte wait for a busy
    /// owner. A reader whose frame does not fit waits (its peer is slowed down, nothing is
    /// dropped); a single frame larger than the whole budget passes alone. Default 16 MiB.
    pub max_event_bytes: usize,
    /// The most peers connected at once; a handshake with one more new peer is refused.
    /// Default 1024.
    pub max_connections: usize,
    /// The most inbound connections in their handshake at once. One more closes the oldest
    /// of them (a peer that knows the cookie finishes in a few round trips, so the oldest is
    /// the likeliest to be a socket that never speaks), counted in
    /// [`TransportStats::handshakes_evicted`](crate::TransportStats::handshakes_evicted).
    /// Default 64.
    pub max_pending_handshakes: usize,
    /// The most inbound connections in their handshake at once from one IP address; more
    /// from it are closed unread, counted in
    /// [`TransportStats::connections_refused`](crate::TransportStats::connections_refused),
    /// so that one host cannot take every slot. Default 8.
    pub max_pending_handshakes_per_ip: usize,
    /// How long an inbound connection may take to send the first message of its handshake
    /// (after the TLS handshake, with `tls`): a socket that stays silent is closed then, not
    /// at [`handshake_timeout`](Config::handshake_timeout). A dialer sends it at once, so
    /// this is one round trip (two with TLS) plus slack. Default 1 s.
    pub hello_timeout: Duration,
    /// The most outbound dials in progress at once; a frame that needs one more is dropped
    /// and counted. Default 256.
    pub max_dials: usize,
    /// The wait before re-dialing an address after its first failed dial; it doubles with each
    /// further failure, with jitter, up to [`backoff_max`](Config::backoff_max). A successful
    /// handshake resets it. Default 50 ms.
    pub backoff_initial: Duration,
    /// The longest wait between dials to a failing address. Default 2 s.
    pub backoff_max: Duration,
    /// A connection on which nothing was written for this long gets a keep-alive frame, so
    /// that its peer can tell a quiet connection from a dead one. Default 1 s.
    pub keepalive_interval: Duration,
    /// A connection on which nothing (not even a keep-alive) arrived for this long is
    /// replaced: retired with the handover marker (so that the peer does not take the close
    /// for a failure) and dialed afresh at once. This repairs a connection that stalled
    /// without closing (a middlebox that lost its state, a lost segment on a path that went
    /// dark for a while), which TCP itself would give up on only after minutes of
    /// retransmissions. It reports no `Link::Down`: whether the *peer* is alive is the core's
    /// failure detector's call (within
    /// [`silent_failure_bound`](solo_core::Config::silent_failure_bound)), and a false `Down`
    /// would move its workers. Must exceed [`keepalive_interval`](Config::keepalive_interval).
    /// Default 5 s.
    pub idle_timeout: Duration,
    /// The cluster's voters (see `solo_core::NodeBuilder::voters`), compared in the
    /// handshake: a peer configured with other voters is refused. Default none.
    pub voters: Vec<solo_core::NodeName>,
    /// After an established connection to a peer closes (a reported `Link::Down`), dial the
    /// address it listened on once: a refusal by its host's kernel, or a newer process of
    /// its name installed from that address, is reported as
    /// [`TransportEvent::ProcessGone`](crate::TransportEvent::ProcessGone). For
    /// `solo_core::Config::crash_evidence`, whose documentation states the assumption.
    /// Over TCP and TLS; a QUIC dial does not tell a refusal apart. Default `false`.
    pub probe_closed_peers: bool,
}

impl Config {
    /// Settings for `cluster` with `cookie`, and every other field at its default.
    pub fn new(cluster: impl Into<String>, cookie: impl Into<Cookie>) -> Self {
        Self {
            cluster: cluster.into(),
            cookie: cookie.into(),
            advertised_addr: None,
            handshake_timeout: Duration::from_secs(5),
            max_queued_frames: 1024,
            max_queued_frames_dialing: 64,
            max_queued_bytes: 16 << 20,
            event_capacity: 1024,
            max_event_bytes: 16 << 20,
            max_connections: 1024,
            max_pending_handshakes: 64,
            max_pending_handshakes_per_ip: 8,
            hello_timeout: Duration::from_secs(1),
            max_dials: 256,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            keepalive_interval: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(1),
            voters: Vec::new(),
            probe_closed_peers: false,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] names the first field that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster.len() > MAX_CLUSTER_NAME_LEN {
            return Err(ConfigError::ClusterNameTooLong(self.cluster.len()));
        }
        if self.cookie.as_bytes().is_empty() {
            return Err(ConfigError::EmptyCookie);
        }
        for (field, value) in [
            ("max_queued_frames", self.max_queued_frames),
            ("max_queued_frames_dialing", self.max_queued_frames_dialing),
            ("max_queued_bytes", self.max_queued_bytes),
            ("event_capacity", self.event_capacity),
            ("max_event_bytes", self.max_event_bytes),
            ("max_connections", self.max_connections),
            ("max_pending_handshakes", self.max_pending_handshakes),
            (
                "max_pending_handshakes_per_ip",
                self.max_pending_handshakes_per_ip,
            ),
            ("max_dials", self.max_dials),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(field));
            }
        }
        for (field, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("hello_timeout", self.hello_timeout),
            ("backoff_initial", self.backoff_initial),
            ("keepalive_interval", self.keepalive_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(field));
            }
        }
        if self.max_event_bytes > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::TooLarge {
                field: "max_event_bytes",
                limit: tokio::sync::Semaphore::MAX_PERMITS,
            });
        }
        if self.backoff_max < self.backoff_initial {
            return Err(ConfigError::BackoffRange);
        }
        if self.idle_timeout <= self.keepalive_interval {
            return Err(ConfigError::IdleTimeoutRange);
        }
        Ok(())
    }
}

/// A [`Config`] field out of range. Nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// [`Config::cluster`] is longer than [`MAX_CLUSTER_NAME_LEN`] bytes.
    #[error("cluster name is {0} bytes long, the limit is {MAX_CLUSTER_NAME_LEN}")]
    ClusterNameTooLong(usize),
    /// [`Config::cookie`] is empty.
    #[error("the cluster cookie is empty")]
    EmptyCookie,
    /// A capacity or duration that must be positive is zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// A capacity is larger than the transport can count.
    #[error("{field} must be at most {limit}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its largest valid value.
        limit: usize,
    },
    /// [`Config::backoff_max`] is shorter than [`Config::backoff_initial`].
    #[error("backoff_max is shorter than backoff_initial")]
    BackoffRange,
    /// [`Config::idle_timeout`] is not longer than [`Config::keepalive_interval`]: a healthy
    /// quiet connection would be closed.
    #[error("idle_timeout must be longer than keepalive_interval")]
    IdleTimeoutRange,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new("prod", "secret").validate(), Ok(()));
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            Config::new("prod", "").validate(),
            Err(ConfigError::EmptyCookie)
        );
        assert_eq!(
            Config::new("x".repeat(65), "s").validate(),
            Err(ConfigError::ClusterNameTooLong(65))
        );
        let mut config = Config::new("prod", "s");
        config.max_queued_frames = 0;
        assert_eq!(
            config.validate(),
            Err(ConfigError::Zero("max_queued_frames"))
        );
        let mut config = Config::new("prod", "s");
        config.max_event_bytes = usize::MAX;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::TooLarge {
                field: "max_event_bytes",
                ..
            })
        ));
        let mut config = Config::new("prod", "s");
        config.backoff_max = Duration::from_millis(1);
        assert_eq!(config.validate(), Err(ConfigError::BackoffRange));
        let mut config = Config::new("prod", "s");
        config.idle_timeout = config.keepalive_interval;
        assert_eq!(config.validate(), Err(ConfigError::IdleTimeoutRange));
    }

    #[test]
    fn cookies_never_print() {
        let config = Config::new("prod", "hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
