//! Seeds by name ([`ClusterBuilder::seed_names`](crate::ClusterBuilder::seed_names)):
//! `HOST:PORT` names resolved in the background, again and again, so that a Kubernetes
//! headless service or a DNS round-robin keeps working when pods come back with new
//! addresses. Each change of the resolved set goes to the driver.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use super::SeedSource;
use crate::driver::Command;

/// How often the names are resolved again.
pub(crate) const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// How soon the names are tried again while none resolves (a cold start: the service's
/// records appear as its pods get ready).
const RETRY_EMPTY: Duration = Duration::from_millis(500);
/// The most addresses taken from one name.
const MAX_ADDRS_PER_NAME: usize = 64;

/// A seed name that is not `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seed {name:?} is not HOST:PORT (a DNS name or an address, and a port)")]
pub struct SeedNameError {
    /// The name given.
    pub name: String,
}

/// Checks that `name` is `HOST:PORT` with a port number, as
/// [`ClusterBuilder::seed_names`](crate::ClusterBuilder::seed_names) takes (without
/// resolving it).
///
/// # Errors
///
/// [`SeedNameError`] naming it, if it is not.
pub fn validate_seed_name(name: &str) -> Result<(), SeedNameError> {
    let valid = name
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(SeedNameError { name: name.into() })
    }
}

/// Checks every one of `names` as [`validate_seed_name`] does.
pub(crate) fn check(names: &[String]) -> Result<(), SeedNameError> {
    names.iter().try_for_each(|name| validate_seed_name(name))
}

/// Resolves `names` now and every [`RESOLVE_EVERY`], and tells the driver the addresses
/// whenever they change, until the driver is gone. It holds the command queue weakly: the
/// node still leaves once every `Cluster` handle is dropped.
pub(crate) async fn resolve_forever(names: Vec<String>, commands: mpsc::WeakSender<Command>) {
    let mut told: Option<BTreeSet<SocketAddr>> = None;
    loop {
        let mut seeds: BTreeSet<SocketAddr> = BTreeSet::new();
        let mut resolved_any = false;
        for name in &names {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(addrs) => {
                    let before = seeds.len();
                    seeds.extend(addrs.take(MAX_ADDRS_PER_NAME));
                    resolved_any |= seeds.len() > before;
                }
                Err(error) => {
                    tracing::debug!(seed = %name, %error, "seed name does not resolve (yet)")
                }
            }
        }
        if told.as_ref() != Some(&seeds) {
            tracing::debug!(seeds = ?seeds, "seeds resolved");
            let command = Command::SetSeeds {
                source: SeedSource::Names,
                seeds: seeds.iter().copied().collect(),
            };
            let Some(commands) = commands.upgrade() else {
                return;
            };
            if commands.send(command).await.is_err() {
                return;
            }
            told = Some(seeds);
        }
        let pause = if resolved_any {
            RESOLVE_EVERY
        } else {
            RETRY_EMPTY
        };
        tokio::time::sleep(pause).await;
        if commands.strong_count() == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_name_needs_a_host_and_a_port() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            check(&names(&[
                "solo-0.solo.default.svc:7001",
                "10.0.0.1:7001",
                "[::1]:7001"
            ])),
            Ok(())
        );
        for bad in ["solo", "solo:", ":7001", "solo:http", "solo:70000"] {
            assert_eq!(
                check(&names(&[bad])),
                Err(SeedNameError { name: bad.into() }),
                "{bad}"
            );
        }
    }
}
