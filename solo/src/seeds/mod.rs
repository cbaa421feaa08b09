//! How a node finds peers to join: the addresses it was given
//! ([`ClusterBuilder::seeds`](crate::ClusterBuilder::seeds)), names resolved again and again
//! ([`names`]), and beacons heard on a multicast group ([`multicast`]). Each source tells the
//! driver what it finds now; the node's seeds ([`Node::set_seeds`](solo_core::Node::set_seeds))
//! are the union.

mod beacon;
mod multicast;
mod names;

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub(crate) use multicast::Announcer;
pub use multicast::{DiscoveryError, MulticastDiscovery};
pub use names::{SeedNameError, validate_seed_name};
pub(crate) use names::{check, resolve_forever};

/// Where seeds found at run time come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SeedSource {
    /// [`ClusterBuilder::seed_names`](crate::ClusterBuilder::seed_names), resolved.
    Names,
    /// Beacons heard ([`ClusterBuilder::discover_multicast`](crate::ClusterBuilder::discover_multicast)).
    Multicast,
}

/// The seeds given by address, and what each source found last.
#[derive(Debug, Default)]
pub(crate) struct Seeds {
    given: Vec<SocketAddr>,
    found: BTreeMap<SeedSource, Vec<SocketAddr>>,
}

impl Seeds {
    pub(crate) fn new(given: Vec<SocketAddr>) -> Self {
        Seeds {
            given,
            found: BTreeMap::new(),
        }
    }

    /// Records what `source` finds now, and returns every seed: the node's new list.
    pub(crate) fn found(&mut self, source: SeedSource, seeds: Vec<SocketAddr>) -> Vec<SocketAddr> {
        self.found.insert(source, seeds);
        let mut all: Vec<SocketAddr> = self
            .given
            .iter()
            .chain(self.found.values().flatten())
            .copied()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_are_the_union_of_every_source() {
        let addr = |port: u16| SocketAddr::from(([10, 0, 0, 1], port));
        let mut seeds = Seeds::new(vec![addr(1)]);
        assert_eq!(
            seeds.found(SeedSource::Names, vec![addr(2), addr(1)]),
            [addr(1), addr(2)]
        );
        assert_eq!(
            seeds.found(SeedSource::Multicast, vec![addr(3)]),
            [addr(1), addr(2), addr(3)]
        );
        // A source that finds less takes back only its own.
        assert_eq!(seeds.found(SeedSource::Names, vec![]), [addr(1), addr(3)]);
    }
}
