//! Timings and limits of the protocol, with defaults tuned for a LAN.

use std::time::Duration;

/// Timings and limits of a [`Node`](crate::Node). Every field has a documented default
/// ([`Config::default`]) chosen for a LAN or a single data centre.
///
/// # Why the defaults are fast and still safe
///
/// HashiCorp memberlist's LAN profile probes every 1 s with a 500 ms timeout and a suspicion
/// of 4–6 probe periods, so a silent node is declared dead after about 5–7 s; Akka's
/// phi-accrual detector takes about 5.5 s. Those timeouts are sized for GC pauses and for
/// gossip that reaches the whole cluster only after several rounds. Solo has neither:
///
/// * a Rust process does not pause for GC, and a LAN round trip is well under a millisecond,
///   so a 100 ms probe timeout is still a hundred round trips of slack;
/// * a suspicion is sent **directly** to every member (the suspect included), so the suspect
///   hears of it within one round trip and refutes at once; 450 ms of suspicion leaves room
///   for hundreds of refutation round trips;
/// * every node is watched by [`monitors`](Config::monitors) ring neighbours each period, so
///   the time until someone probes a silent node is bounded, not a matter of chance as in
///   random-target SWIM.
///
/// A silent node is therefore declared `Down` by every survivor within
/// [`silent_failure_bound`](Config::silent_failure_bound) (0.95 s by default) plus one network
/// delay. A node whose connection closes (a killed process: the kernel sends FIN/RST) is
/// declared `Down` as soon as the transport reports it, with no timeout at all
/// ([`link_down_grace`](Config::link_down_grace) is zero).
///
/// A false `Down` is not fatal: the wrongly accused node refutes with a higher version and is
/// `Up` again; ownership safety never rests on the failure detector alone (`Exclusive` mode
/// uses leases).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// How often a node probes each of its ring monitors' targets. Default 200 ms.
    pub probe_interval: Duration,
    /// How long to wait for a direct probe's ack before asking others to probe. Default 100 ms.
    pub probe_timeout: Duration,
    /// How long after `probe_timeout` indirect probes may still answer before the target is
    /// suspected. Default 200 ms.
    pub indirect_timeout: Duration,
    /// How many other members are asked to probe a target that missed a direct probe
    /// (SWIM's `k`). Default 3.
    pub indirect_probes: usize,
    /// How many ring successors each node probes every period, so how many watchers each
    /// node has. Default 3.
    pub monitors: usize,
    /// How long a suspect has to refute before it is declared `Down`. Default 450 ms.
    pub suspicion_timeout: Duration,
    /// How long a peer whose transport link went down stays merely suspected. Zero (the
    /// default) declares it `Down` at once: a closed connection from a live peer is rare
    /// and refutable, a killed process is common and should fail over in milliseconds.
    pub link_down_grace: Duration,
    /// How often a node exchanges its whole member table with one random member, and tries
    /// one random `Down` member (this is what heals a partition). Default 1 s.
    pub sync_interval: Duration,
    /// How often a node with no live peer asks its seeds to let it in. Default 500 ms.
    pub join_retry_interval: Duration,
    /// How long a `Down` or `Left` member is remembered (to refuse stale gossip and to retry
    /// across a healed partition). Default 1 h.
    pub tombstone_ttl: Duration,
    /// The most members (live and remembered) a node keeps. Default 4096.
    pub max_members: usize,
    /// The most membership updates piggybacked on one probe message. Default 16.
    pub max_piggyback: usize,
    /// Each update is piggybacked `retransmit_mult × ⌈log2(n + 1)⌉` times. Default 3.
    pub retransmit_mult: usize,
    /// How long a node with seeds waits to hear from a peer before it owns children alone
    /// (the first node of a cluster whose seeds are all down). Until then it starts nothing,
    /// so that a restarting node does not duplicate a singleton running elsewhere. Default 1 s.
    pub join_timeout: Duration,
    /// How long `start_child` waits for a second member to confirm it holds the new child's
    /// spec (the replication is sent again every `probe_interval` meanwhile) before it
    /// answers [`StartChildError::Unconfirmed`](crate::StartChildError::Unconfirmed). Default 5 s.
    pub start_ack_timeout: Duration,
    /// How long an ended child (terminated, completed, given up) is remembered, so that a
    /// stale start from across a healed partition cannot resurrect it. Default 10 min.
    pub child_tombstone_ttl: Duration,
    /// The most live children the cluster may hold. Default 1 000 000.
    pub max_children: usize,
    /// The most outgoing messages queued before new gossip is dropped (gossip is
    /// loss-tolerant; the caller should drain `poll_transmit` after every input). Default 65 536.
    pub max_queued_transmits: usize,
    /// How long a voter's grant of an [`Exclusive`](crate::Mode::Exclusive) child's lease
    /// lasts on the voter's clock. The owner renews every quarter of it. A crashed owner's
    /// exclusive children move once its lease ran out, so this is their failover time after
    /// a crash; a graceful move releases the lease and takes milliseconds. Default 2 s: four
    /// renewals fit in it (a lost message or two cost nothing), and it is the order of the
    /// silent-failure bound, which an `Available` child waits for anyway.
    pub lease_duration: Duration,
    /// The bound on how far any node's clock *rate* may stray from real time, in parts per
    /// million (clocks need not agree on the time, only tick at nearly the same speed).
    /// The owner counts its lease as `lease_duration × (1 − drift) / (1 + drift)` from
    /// before it asked. Default 10 000 (1 %), far beyond what quartz and NTP slewing do.
    pub max_clock_drift_ppm: u32,
    /// How long before its lease ends an owner that could not renew stops its exclusive
    /// worker ([`StopReason::LeaseLost`](crate::StopReason::LeaseLost)); the runtime aborts
    /// the worker at the lease's end if it has not stopped by then. Default 200 ms.
    pub lease_stop_grace: Duration,
    /// Opt-in: voters free the leases of a holder whose *process* is known to be gone at
    /// once, instead of waiting them out, so an exclusive child fails over in milliseconds
    /// after its owner is killed, not after a lease. Default `false`.
    ///
    /// The evidence is the runtime's ([`Node::handle_process_gone`](crate::Node::handle_process_gone)):
    /// the holder's connection closed, and a dial to the address it listened on was refused
    /// by its host's kernel, or a newer process of its name answers there. A silent
    /// partition produces neither, and a frozen process's kernel still accepts connections.
    ///
    /// **The assumption:** only the holder's own kernel refuses connections to its port.
    /// A firewall or middlebox that answers with resets (`REJECT --reject-with tcp-reset`)
    /// while the holder runs on behind it breaks it, and with it the at-most-one guarantee:
    /// the voters hand the lease on while the cut-off holder still counts on its own. Turn
    /// it on only where nothing between the nodes rejects with resets.
    pub crash_evidence: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            indirect_timeout: Duration::from_millis(200),
            indirect_probes: 3,
            monitors: 3,
            suspicion_timeout: Duration::from_millis(450),
            link_down_grace: Duration::ZERO,
            sync_interval: Duration::from_secs(1),
            join_retry_interval: Duration::from_millis(500),
            tombstone_ttl: Duration::from_secs(3600),
            max_members: 4096,
            max_piggyback: 16,
            retransmit_mult: 3,
            max_queued_transmits: 65_536,
            join_timeout: Duration::from_secs(1),
            start_ack_timeout: Duration::from_secs(5),
            child_tombstone_ttl: Duration::from_secs(600),
            max_children: 1_000_000,
            lease_duration: Duration::from_secs(2),
            max_clock_drift_ppm: 10_000,
            lease_stop_grace: Duration::from_millis(200),
            crash_evidence: false,
        }
    }
}

/// A [`Config`] that cannot work. Nothing was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("config field `{0}` must be greater than zero")]
    Zero(&'static str),
    /// A limit is too small to run a cluster.
    #[error("config field `{field}` is {value}, the minimum is {min}")]
    TooSmall {
        /// The field's name.
        field: &'static str,
        /// The value given.
        value: usize,
        /// The smallest value that works.
        min: usize,
    },
    /// The probe would be retried before it could have been answered.
    #[error("probe_timeout + indirect_timeout must not exceed suspicion_timeout")]
    SuspicionShorterThanProbe,
    /// The clock-drift bound is 10 % or more: leases would be too short to hold.
    #[error("max_clock_drift_ppm is {0}, it must be under 100 000 (10 %)")]
    DriftTooLarge(u32),
    /// The lease would end before its renewals could keep it: the owner's share of the
    /// lease, less the stop grace, must leave room for two renewals.
    #[error("lease_duration is too short for its renewals and lease_stop_grace")]
    LeaseTooShort,
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// The longest a silent node stays undetected by its monitors, network delay aside: the
    /// next probe, its timeout, the indirect probes, then the suspicion.
    pub fn silent_failure_bound(&self) -> Duration {
        self.probe_interval + self.probe_timeout + self.indirect_timeout + self.suspicion_timeout
    }

    /// How often an owner renews its leases: a quarter of
    /// [`lease_duration`](Config::lease_duration).
    pub fn lease_renew_interval(&self) -> Duration {
        self.lease_duration / 4
    }

    /// How long an owner counts a grant as valid, from the moment *before* it sent the
    /// request: `lease_duration × (1 − drift) / (1 + drift)`. A voter grants for
    /// `lease_duration` of its own clock from when it granted, which lasts at least
    /// `lease_duration / (1 + drift)` of real time; an owner whose clock runs slow by the
    /// whole bound sees this much pass in at most that long.
    pub fn holder_lease(&self) -> Duration {
        let ppm = u128::from(self.max_clock_drift_ppm.min(999_999));
        let nanos = self.lease_duration.as_nanos() * (1_000_000 - ppm) / (1_000_000 + ppm);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How long a voter waits after it starts before it grants anything: one lease on its
    /// own clock, the longest any grant it made before a restart can still be relied on.
    pub fn voter_quarantine(&self) -> Duration {
        self.lease_duration
    }

    /// Checks that the configuration can work.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] names the first field that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("indirect_timeout", self.indirect_timeout),
            ("suspicion_timeout", self.suspicion_timeout),
            ("sync_interval", self.sync_interval),
            ("join_retry_interval", self.join_retry_interval),
            ("tombstone_ttl", self.tombstone_ttl),
            ("join_timeout", self.join_timeout),
            ("start_ack_timeout", self.start_ack_timeout),
            ("child_tombstone_ttl", self.child_tombstone_ttl),
            ("lease_duration", self.lease_duration),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(field));
            }
        }
        for (field, value, min) in [
            ("monitors", self.monitors, 1),
            ("max_members", self.max_members, 2),
            ("max_piggyback", self.max_piggyback, 1),
            ("retransmit_mult", self.retransmit_mult, 1),
            ("max_queued_transmits", self.max_queued_transmits, 16),
        ] {
            if value < min {
                return Err(ConfigError::TooSmall { field, value, min });
            }
        }
        if self.probe_timeout + self.indirect_timeout > self.suspicion_timeout {
            return Err(ConfigError::SuspicionShorterThanProbe);
        }
        if self.max_clock_drift_ppm >= 100_000 {
            return Err(ConfigError::DriftTooLarge(self.max_clock_drift_ppm));
        }
        if self.holder_lease() <= 2 * self.lease_renew_interval() + self.lease_stop_grace {
            return Err(ConfigError::LeaseTooShort);
        }
        Ok(())
    }
}

/// Builds a [`Config`]; [`build`](ConfigBuilder::build) validates it.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$field = value;
                self
            }
        )*
    };
}

impl ConfigBuilder {
    setters! {
        /// Sets [`Config::probe_interval`].
        probe_interval: Duration,
        /// Sets [`Config::probe_timeout`].
        probe_timeout: Duration,
        /// Sets [`Config::indirect_timeout`].
        indirect_timeout: Duration,
        /// Sets [`Config::indirect_probes`].
        indirect_probes: usize,
        /// Sets [`Config::monitors`].
        monitors: usize,
        /// Sets [`Config::suspicion_timeout`].
        suspicion_timeout: Duration,
        /// Sets [`Config::link_down_grace`].
        link_down_grace: Duration,
        /// Sets [`Config::sync_interval`].
        sync_interval: Duration,
        /// Sets [`Config::join_retry_interval`].
        join_retry_interval: Duration,
        /// Sets [`Config::tombstone_ttl`].
        tombstone_ttl: Duration,
        /// Sets [`Config::max_members`].
        max_members: usize,
        /// Sets [`Config::max_piggyback`].
        max_piggyback: usize,
        /// Sets [`Config::retransmit_mult`].
        retransmit_mult: usize,
        /// Sets [`Config::max_queued_transmits`].
        max_queued_transmits: usize,
        /// Sets [`Config::join_timeout`].
        join_timeout: Duration,
        /// Sets [`Config::start_ack_timeout`].
        start_ack_timeout: Duration,
        /// Sets [`Config::child_tombstone_ttl`].
        child_tombstone_ttl: Duration,
        /// Sets [`Config::max_children`].
        max_children: usize,
        /// Sets [`Config::lease_duration`].
        lease_duration: Duration,
        /// Sets [`Config::max_clock_drift_ppm`].
        max_clock_drift_ppm: u32,
        /// Sets [`Config::lease_stop_grace`].
        lease_stop_grace: Duration,
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a field cannot work; see [`Config::validate`].
    pub fn build(self) -> Result<Config, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_detect_a_silent_node_in_under_two_seconds() {
        let config = Config::default();
        assert!(config.validate().is_ok());
        assert!(config.silent_failure_bound() < Duration::from_secs(2));
    }

    #[test]
    fn builder_rejects_what_cannot_work() {
        assert_eq!(
            Config::builder().probe_interval(Duration::ZERO).build(),
            Err(ConfigError::Zero("probe_interval"))
        );
        assert!(matches!(
            Config::builder().monitors(0).build(),
            Err(ConfigError::TooSmall {
                field: "monitors",
                ..
            })
        ));
        assert_eq!(
            Config::builder()
                .suspicion_timeout(Duration::from_millis(10))
                .build(),
            Err(ConfigError::SuspicionShorterThanProbe)
        );
    }
}
