//! Seeds heard on a LAN ([`ClusterBuilder::discover_multicast`](crate::ClusterBuilder::discover_multicast)):
//! every node announces its name and address on a UDP multicast group, signed with the
//! cookie, and dials what it hears, as libcluster's gossip strategy forms Elixir clusters.
//! A stranger's beacon, another cluster's, a forged, replayed or stale one is counted and
//! ignored ([`beacon`](super::beacon)).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::counter;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::SeedSource;
use super::beacon::{Beacon, BeaconKey, Judge, MAX_BEACON_LEN};
use crate::driver::Command;

/// The most addresses heard and kept at once; past it, the one heard least recently goes.
const MAX_FOUND: usize = 256;

/// How a node finds its peers on a LAN with no seed list: the settings of
/// [`ClusterBuilder::discover_multicast`](crate::ClusterBuilder::discover_multicast).
///
/// Every node sends a beacon (its cluster name, node name and address, signed with a key
/// derived from the cookie) to the group when it starts and every
/// [`interval`](Self::interval), and answers a newcomer's beacon with its own at once. What
/// it hears becomes a seed, and is forgotten after five intervals of silence. A beacon is
/// ignored if its tag does not verify (a stranger), if it names another cluster, if it is
/// not newer than the last one from its sender (a replay), or if it was sent more than
/// 30 s from the receiver's clock (a late replay). Each is counted in
/// `solo_discovery_beacons_total{outcome}`.
///
/// Beacons only say where to dial: the connection's handshake still proves the cookie, so
/// a forged beacon gets no further than a refused handshake.
///
/// # Examples
///
/// ```
/// use solo::{Cluster, MulticastDiscovery};
/// use std::time::Duration;
///
/// let builder = Cluster::builder()
///     .node_name("a")
///     .listen("10.0.0.1:7001".parse().unwrap())
///     .cookie("a cluster-wide secret of 16+ bytes")
///     .discover_multicast(MulticastDiscovery::new().interval(Duration::from_millis(500)));
/// # drop(builder);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastDiscovery {
    group: SocketAddrV4,
    interface: Option<Ipv4Addr>,
    interval: Duration,
    ttl: u32,
}

impl Default for MulticastDiscovery {
    fn default() -> Self {
        MulticastDiscovery {
            group: Self::DEFAULT_GROUP,
            interface: None,
            interval: Duration::from_secs(1),
            ttl: 1,
        }
    }
}

impl MulticastDiscovery {
    /// The group beacons go to unless [`group`](Self::group) says otherwise,
    /// 239.255.83.79:7979: an organisation-local address (239.255.0.0/16, RFC 2365), which
    /// routers do not forward off the site.
    pub const DEFAULT_GROUP: SocketAddrV4 =
        SocketAddrV4::new(Ipv4Addr::new(239, 255, 83, 79), 7979);

    /// The defaults: [`DEFAULT_GROUP`](Self::DEFAULT_GROUP), the interface of the listening address, a beacon a
    /// second, TTL 1 (the local network only).
    pub fn new() -> Self {
        MulticastDiscovery::default()
    }

    /// The group and port beacons go to; every node of a cluster uses the same.
    pub fn group(mut self, group: SocketAddrV4) -> Self {
        self.group = group;
        self
    }

    /// The interface (by its IPv4 address) to send and listen on. By default, the
    /// listening address's, or the routing table's choice if the node listens on
    /// `0.0.0.0`.
    pub fn interface(mut self, interface: Ipv4Addr) -> Self {
        self.interface = Some(interface);
        self
    }

    /// How often a node announces itself (10 ms to 60 s; default 1 s). A node that starts
    /// hears the others within one interval, or at once if they hear it first.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The beacons' multicast TTL: 1 (the default) keeps them on the local network.
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    fn validate(&self) -> Result<(), DiscoveryError> {
        if !self.group.ip().is_multicast() {
            return Err(DiscoveryError::NotMulticast(self.group));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.interval) {
            return Err(DiscoveryError::Interval(self.interval));
        }
        if self.ttl > 255 {
            return Err(DiscoveryError::Ttl(self.ttl));
        }
        Ok(())
    }

    /// The interface for a node listening on `listen`.
    fn interface_for(&self, listen: SocketAddr) -> Ipv4Addr {
        self.interface.unwrap_or(match listen.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        })
    }
}

/// Why multicast discovery cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The group is not a multicast address.
    #[error("discovery group {0} is not a multicast address (224.0.0.0/4)")]
    NotMulticast(SocketAddrV4),
    /// The beacon interval is outside 10 ms to 60 s.
    #[error("discovery interval {0:?} is outside 10 ms to 60 s")]
    Interval(Duration),
    /// The TTL is over 255.
    #[error("discovery TTL {0} is over 255")]
    Ttl(u32),
    /// The socket could not be set up (the port is taken without address reuse, the
    /// interface has no multicast, ...).
    #[error("multicast discovery on {group} via {interface}: cannot {action}: {source}")]
    Socket {
        /// What failed.
        action: &'static str,
        /// The group.
        group: SocketAddrV4,
        /// The interface.
        interface: Ipv4Addr,
        /// The operating system's error.
        source: io::Error,
    },
}

/// Who announces itself, and to whom it tells what it hears.
pub(crate) struct Announcer {
    socket: UdpSocket,
    group: SocketAddrV4,
    interval: Duration,
    key: BeaconKey,
    judge: Judge,
    /// This node's beacon, stamped anew for each send; `None` for an observer, which only
    /// listens (it is gone again soon, and nobody needs to dial it first).
    me: Option<Beacon>,
}

impl Announcer {
    /// Checks `config` and joins the group, so that a bad setting fails the start. The
    /// beacons announce `advertised`; the interface follows `listen`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bind(
        config: &MulticastDiscovery,
        listen: SocketAddr,
        advertised: SocketAddr,
        cluster: &str,
        node: &str,
        cookie: &[u8],
        announce: bool,
    ) -> Result<Announcer, DiscoveryError> {
        config.validate()?;
        let interface = config.interface_for(listen);
        let fail = |action: &'static str| {
            move |source| DiscoveryError::Socket {
                action,
                group: config.group,
                interface,
                source,
            }
        };
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(fail("open a UDP socket"))?;
        // Every node of a host binds the group's port.
        socket
            .set_reuse_address(true)
            .map_err(fail("reuse the address"))?;
        socket
            .set_nonblocking(true)
            .map_err(fail("make the socket non-blocking"))?;
        let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.group.port());
        socket
            .bind(&any.into())
            .map_err(fail("bind the group's port"))?;
        socket
            .join_multicast_v4(config.group.ip(), &interface)
            .map_err(fail("join the group"))?;
        if !interface.is_unspecified() {
            socket
                .set_multicast_if_v4(&interface)
                .map_err(fail("send through the interface"))?;
        }
        socket
            .set_multicast_ttl_v4(config.ttl)
            .map_err(fail("set the TTL"))?;
        // Nodes sharing a host hear each other.
        socket
            .set_multicast_loop_v4(true)
            .map_err(fail("loop beacons back to this host"))?;
        let socket = UdpSocket::from_std(socket.into()).map_err(fail("register the socket"))?;
        Ok(Announcer {
            socket,
            group: config.group,
            interval: config.interval,
            key: BeaconKey::from_cookie(cookie),
            judge: Judge::new(cluster.to_owned(), node.to_owned()),
            me: announce.then(|| Beacon {
                cluster: cluster.to_owned(),
                node: node.to_owned(),
                addr: advertised,
                sent_at_ms: 0,
                seq: 0,
            }),
        })
    }

    /// Announces this node and listens, telling the driver the addresses heard whenever
    /// they change, until the driver is gone. It holds the command queue weakly: the node
    /// still leaves once every `Cluster` handle is dropped.
    pub(crate) async fn run(mut self, commands: mpsc::WeakSender<Command>) {
        let forget_after = self.interval * 5;
        let mut found: BTreeMap<SocketAddr, Instant> = BTreeMap::new();
        let mut told: Vec<SocketAddr> = Vec::new();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut datagram = vec![0u8; MAX_BEACON_LEN + 1];
        loop {
            let mut answer = false;
            tokio::select! {
                _ = ticks.tick() => {
                    self.announce().await;
                    let now = Instant::now();
                    found.retain(|_, heard| now.duration_since(*heard) < forget_after);
                }
                received = self.socket.recv_from(&mut datagram) => {
                    let Ok((len, from)) = received else { continue };
                    if let Some((addr, first)) = self.hear(&datagram[..len], from) {
                        if found.len() >= MAX_FOUND && !found.contains_key(&addr) {
                            let oldest = found.iter().min_by_key(|(_, heard)| **heard).map(|(a, _)| *a);
                            if let Some(oldest) = oldest {
                                found.remove(&oldest);
                            }
                        }
                        answer = found.insert(addr, Instant::now()).is_none() || first;
                    }
                }
            }
            // A newcomer hears us at once rather than a tick later, when it may have given
            // up waiting and started a cluster of its own: answered are an address heard
            // anew, and a process's first beacon (a node started again at its address).
            // Each is a fresh beacon of a cookie holder (replays are refused), so answers
            // are as many as the starts of others.
            if answer {
                self.announce().await;
            }
            let Some(sender) = commands.upgrade() else {
                return;
            };
            if sender.is_closed() {
                return;
            }
            let now: Vec<SocketAddr> = found.keys().copied().collect();
            if now != told {
                tracing::debug!(found = ?now, "seeds heard on the multicast group");
                let command = Command::SetSeeds {
                    source: SeedSource::Multicast,
                    seeds: now.clone(),
                };
                if sender.send(command).await.is_err() {
                    return;
                }
                told = now;
            }
        }
    }

    /// Sends this node's beacon (an observer sends none).
    async fn announce(&mut self) {
        let Some(me) = self.me.as_mut() else {
            return;
        };
        me.seq += 1;
        me.sent_at_ms = unix_millis();
        let datagram = self.key.seal(me);
        if let Err(error) = self.socket.send_to(&datagram, self.group).await {
            tracing::debug!(group = %self.group, %error, "cannot send a discovery beacon");
        }
    }

    /// The address to dial that `datagram` announces, if it is a beacon to act on, and
    /// whether it is its sender's first.
    fn hear(&mut self, datagram: &[u8], from: SocketAddr) -> Option<(SocketAddr, bool)> {
        let judged = self
            .key
            .open(datagram)
            .and_then(|beacon| self.judge.admit(&beacon, unix_millis()).map(|()| beacon));
        match judged {
            Ok(beacon) => {
                counter!("solo_discovery_beacons_total", "outcome" => "taken").increment(1);
                let mut addr = beacon.addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(from.ip());
                }
                Some((addr, beacon.seq == 1))
            }
            Err(refused) => {
                counter!("solo_discovery_beacons_total", "outcome" => refused.label()).increment(1);
                if !matches!(refused, super::beacon::Refused::Own) {
                    tracing::debug!(%from, reason = %refused, "discovery beacon ignored");
                }
                None
            }
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused_before_any_socket() {
        let listen: SocketAddr = "127.0.0.1:7001".parse().expect("an address");
        let bind = |config: MulticastDiscovery| {
            Announcer::bind(
                &config,
                listen,
                listen,
                "solo",
                "a",
                b"0123456789abcdef",
                true,
            )
            .err()
        };
        let unicast = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7979);
        assert!(matches!(
            bind(MulticastDiscovery::new().group(unicast)),
            Some(DiscoveryError::NotMulticast(g)) if g == unicast
        ));
        assert!(matches!(
            bind(MulticastDiscovery::new().interval(Duration::ZERO)),
            Some(DiscoveryError::Interval(_))
        ));
        assert!(matches!(
            bind(MulticastDiscovery::new().ttl(256)),
            Some(DiscoveryError::Ttl(256))
        ));
    }

    #[test]
    fn the_interface_is_the_listening_addresss_unless_named() {
        let config = MulticastDiscovery::new();
        let on = |listen: &str| config.interface_for(listen.parse().expect("an address"));
        assert_eq!(on("10.0.0.7:7001"), Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(on("0.0.0.0:7001"), Ipv4Addr::UNSPECIFIED);
        assert_eq!(on("[::1]:7001"), Ipv4Addr::UNSPECIFIED);
        let named = config.interface(Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!(
            named.interface_for("10.0.0.7:7001".parse().expect("an address")),
            Ipv4Addr::new(192, 168, 1, 2)
        );
    }
}
