//! [`QuicConfig`]: the QUIC settings the transport's connections run with.

use std::time::Duration;

/// The most a QUIC idle timeout can be: QUIC carries it in milliseconds as a variable-length
/// integer (at most 2^62 − 1).
const MAX_IDLE_TIMEOUT_MS: u128 = (1 << 62) - 1;

/// QUIC's own liveness settings for every connection of a [`QuicNetwork`](crate::QuicNetwork).
///
/// They play the role TCP keep-alive would, one layer down from the transport's own
/// keep-alive frames ([`Config::keepalive_interval`](solo_transport_tcp::Config::keepalive_interval)
/// and [`Config::idle_timeout`](solo_transport_tcp::Config::idle_timeout)), and have the
/// same defaults. Either timeout closes a silent connection; the transport reports it
/// [`Link::Down`](solo_core::Link::Down) and dials afresh on the next frame.
///
/// [`QuicConfig::default`] fills in the defaults documented on each field; change fields
/// directly, then [`validate`](QuicConfig::validate) ([`QuicNetwork::new`](crate::QuicNetwork::new)
/// validates too).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicConfig {
    /// A connection on which this end sent nothing for this long sends a QUIC `PING`, so that
    /// the peer's idle timer does not expire on a healthy, quiet connection. Must not be
    /// zero. Default 1 s.
    pub keep_alive_interval: Duration,
    /// A connection on which nothing arrived for this long (not a frame, not a `PING`, not
    /// an acknowledgement) is closed silently: the peer is dead, frozen or cut off. QUIC uses
    /// the smaller of the two ends' values. It is the bound within which a peer whose process
    /// was killed is noticed when neither [`tripwire`](QuicConfig::tripwire) nor
    /// [`close_on_unreachable`](QuicConfig::close_on_unreachable) does: the peer's kernel
    /// sends nothing when a UDP socket closes (see the crate docs). Must exceed
    /// [`keep_alive_interval`](QuicConfig::keep_alive_interval).
    /// Default 5 s.
    pub idle_timeout: Duration,
    /// Close a connection at once when its peer's host answers one of our packets with an
    /// ICMP "port unreachable": nothing listens there any more, so the peer process is gone
    /// (killed, crashed, or stopped without a word). Linux only; ignored elsewhere. Default
    /// `true`.
    ///
    /// A killed peer's kernel closes its UDP socket silently, but it answers every later
    /// packet sent to that port with "port unreachable". With this on, the endpoint's socket
    /// asks the kernel for those errors (`IP_RECVERR`, `IPV6_RECVERR`), and each one closes
    /// every connection to the address it names, dialed or accepted: the transport reports
    /// [`Link::Down`](solo_core::Link::Down) within one round trip of the next packet sent to
    /// the dead peer, instead of after [`idle_timeout`](QuicConfig::idle_timeout). Something
    /// is sent soon: the core probes each monitored peer every
    /// [`probe_interval`](solo_core::Config::probe_interval) (200 ms), the transport sends a
    /// keep-alive frame after [`keepalive_interval`](solo_transport_tcp::Config::keepalive_interval)
    /// (1 s) without writes, and QUIC a `PING` after
    /// [`keep_alive_interval`](QuicConfig::keep_alive_interval) (1 s) without sending. So a
    /// killed process that its monitors probe is `Down` within about 200 ms plus a round
    /// trip; on loopback, with only the transport's keep-alives, within their interval.
    /// Likewise a dial to an address where nothing listens fails at once, as a TCP
    /// connection is refused, instead of after the QUIC handshake's timeout (the idle
    /// timeout); the transport's backoff then spaces the next dials out as for TCP.
    ///
    /// The trade-offs:
    ///
    /// * ICMP is not authenticated. An off-path attacker who can forge an ICMP error naming
    ///   both addresses and ports can make a node drop a connection to a live peer. The
    ///   transport dials again with the next frame and the core's refutation keeps or brings
    ///   the peer back, so the cost is churn (a `Link::Down`, a failover at worst, as for any
    ///   false suspicion), not a split brain beyond what the `Available` mode allows. An
    ///   attacker who can do that can usually drop packets too. Turn this off if forged ICMP
    ///   is a concern and slower detection is not.
    /// * Hosts and firewalls that drop ICMP, or do not send it, leave only the idle timeout
    ///   and the core's failure detector, as with this off. A peer whose whole host died
    ///   sends no ICMP either (but a router may send "host unreachable", which is ignored).
    ///
    /// With [`tripwire`](QuicConfig::tripwire) on and working, a killed peer is noticed
    /// before anything is sent to it: this is the fallback for connections without one.
    pub close_on_unreachable: bool,
    /// Give each connection a *tripwire*: an idle TCP connection between the same two
    /// processes, which closes the QUIC connection as soon as it closes. When a process dies
    /// (SIGKILL, a crash, the OOM killer), its kernel closes its TCP sockets with a FIN or an
    /// RST, but its UDP socket silently; so the tripwire makes a killed peer's connections
    /// close within a round trip of its death, and the transport report
    /// [`Link::Down`](solo_core::Link::Down), as fast as over TCP, with nothing sent to it.
    /// All platforms. Default `true`.
    ///
    /// How: [`bind`](solo_transport_tcp::Network::bind) also listens on TCP at the same IP
    /// address and port number as the QUIC endpoint. The dialer of each connection opens a
    /// TCP connection to the address it dialed and presents a token exported from the QUIC
    /// connection's TLS session, which only the two ends of that connection know; the
    /// acceptor matches it with the connection and answers with a proof of its own. Nothing
    /// more is sent, except one byte when an end is done with the connection in the ordinary
    /// way (closed, dropped by the transport), which tells the other end to stand down. An
    /// armed tripwire that reads end-of-file or an error closes its own QUIC connection, and
    /// no other. A stranger cannot attach a tripwire to a connection nor trip one; someone
    /// who can watch and forge the TCP traffic between two nodes can (as over TCP, by a
    /// forged RST, or by dropping packets): the cost is churn, a `Link::Down` and a new
    /// dial, as for any false suspicion.
    ///
    /// What it costs: a TCP listener on the QUIC port number (the bind does not fail if
    /// that port is taken on TCP: it warns, and accepted connections run without tripwires;
    /// when asked for any port it picks one free on both), one idle TCP connection (a file
    /// descriptor on each side) per QUIC connection, and one more round trip of background
    /// set-up per connection (a dial does not wait for it).
    ///
    /// Firewalls: allow TCP on the QUIC port too. Where TCP is blocked, or the peer has
    /// tripwires off, connections run without one (they are never closed for that), and a
    /// killed peer is noticed as without this option: by ICMP on Linux
    /// ([`close_on_unreachable`](QuicConfig::close_on_unreachable)) within one round trip of
    /// the next packet sent to it (the core probes every 200 ms), else by the idle timeout or
    /// the core's failure detector. A middlebox that silently forgets idle TCP connections
    /// disarms their tripwires the same way; one that resets idle TCP connections trips
    /// them, which costs churn. A peer whose whole host died closes nothing: neither TCP nor
    /// this option can tell it from a cut cable.
    pub tripwire: bool,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            close_on_unreachable: true,
            tripwire: true,
        }
    }
}

impl QuicConfig {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`QuicConfigError`] names the first field that is out of range.
    pub fn validate(&self) -> Result<(), QuicConfigError> {
        if self.keep_alive_interval.is_zero() {
            return Err(QuicConfigError::ZeroKeepAlive);
        }
        if self.idle_timeout <= self.keep_alive_interval {
            return Err(QuicConfigError::IdleTimeoutRange);
        }
        if self.idle_timeout.as_millis() > MAX_IDLE_TIMEOUT_MS {
            return Err(QuicConfigError::IdleTimeoutTooLong(self.idle_timeout));
        }
        Ok(())
    }
}

/// A [`QuicConfig`] field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuicConfigError {
    /// [`QuicConfig::keep_alive_interval`] is zero.
    #[error("keep_alive_interval must not be zero")]
    ZeroKeepAlive,
    /// [`QuicConfig::idle_timeout`] is not longer than [`QuicConfig::keep_alive_interval`]:
    /// a healthy quiet connection would be closed.
    #[error("idle_timeout must be longer than keep_alive_interval")]
    IdleTimeoutRange,
    /// [`QuicConfig::idle_timeout`] is beyond what QUIC can carry (2^62 − 1 ms).
    #[error("idle_timeout {0:?} is too long for QUIC")]
    IdleTimeoutTooLong(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let quic = QuicConfig::default();
        // QUIC's idle timeout closes the connection, which reads as the peer's failure, so it
        // stays well above the stream's own (which only replaces a silent connection).
        let tcp = solo_transport_tcp::Config::new("c", "cookie");
        assert!(quic.idle_timeout > tcp.idle_timeout);
        assert_eq!(quic.validate(), Ok(()));
        assert!(quic.close_on_unreachable);
        assert!(quic.tripwire);
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let mut config = QuicConfig {
            keep_alive_interval: Duration::ZERO,
            ..QuicConfig::default()
        };
        assert_eq!(config.validate(), Err(QuicConfigError::ZeroKeepAlive));
        config.keep_alive_interval = config.idle_timeout;
        assert_eq!(config.validate(), Err(QuicConfigError::IdleTimeoutRange));
        config.keep_alive_interval = Duration::from_secs(1);
        config.idle_timeout = Duration::MAX;
        assert_eq!(
            config.validate(),
            Err(QuicConfigError::IdleTimeoutTooLong(Duration::MAX))
        );
    }
}
