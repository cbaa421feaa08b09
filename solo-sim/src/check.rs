//! Invariant checks over a [`Record`] history.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::harness::{Record, What};

/// One running instance: where, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The host.
    pub host: usize,
    /// Its process.
    pub incarnation: u64,
    /// When it started.
    pub since: Duration,
}

/// The instances of every id running at the end of `history` (a crash ends everything its
/// process ran).
pub fn running_at_end(history: &[Record]) -> BTreeMap<String, Vec<Running>> {
    let mut running: BTreeMap<(usize, u64, String), Duration> = BTreeMap::new();
    for record in history {
        match &record.what {
            What::Started { id, .. } => {
                running.insert((record.host, record.incarnation, id.clone()), record.at);
            }
            What::Stopped { id, .. } => {
                running.remove(&(record.host, record.incarnation, id.clone()));
            }
            What::Crashed => {
                running.retain(|(h, i, _), _| !(*h == record.host && *i == record.incarnation))
            }
            _ => {}
        }
    }
    let mut by_id: BTreeMap<String, Vec<Running>> = BTreeMap::new();
    for ((host, incarnation, id), since) in running {
        by_id.entry(id).or_default().push(Running {
            host,
            incarnation,
            since,
        });
    }
    by_id
}

/// The most instances of `id` that ever ran at the same instant (invariant 1 asks for at
/// most one in `Exclusive` mode), with the first instant it was reached.
pub fn max_concurrent(history: &[Record], id: &str) -> (usize, Duration) {
    let mut live: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut max = (0, Duration::ZERO);
    for record in history {
        match &record.what {
            What::Started { id: i, .. } if i == id => {
                live.insert((record.host, record.incarnation));
            }
            What::Stopped { id: i, .. } if i == id => {
                live.remove(&(record.host, record.incarnation));
            }
            What::Crashed => live.retain(|(h, i)| !(*h == record.host && *i == record.incarnation)),
            _ => {}
        }
        if live.len() > max.0 {
            max = (live.len(), record.at);
        }
    }
    max
}

/// Every breach of `Exclusive` mode's promises for `id` in `history`: a start while another
/// instance still ran (at any instant, partitions or not: an instance runs from its
/// `worker_started` until its `worker_stopped`, or its process's crash), a start without a
/// token, or a token not above every earlier start's.
pub fn exclusive(history: &[Record], id: &str) -> Vec<String> {
    let mut live: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut highest: Option<u64> = None;
    let mut found = Vec::new();
    for record in history {
        let me = (record.host, record.incarnation);
        match &record.what {
            What::Started { id: i, token } if i == id => {
                if let Some(&(h, inc)) = live.iter().find(|other| **other != me) {
                    found.push(format!(
                        "{:?}: n{}#{} started {id} while n{h}#{inc} ran it",
                        record.at, record.host, record.incarnation
                    ));
                }
                match (token, highest) {
                    (None, _) => found.push(format!(
                        "{:?}: n{}#{} started {id} without a token",
                        record.at, record.host, record.incarnation
                    )),
                    (Some(t), Some(h)) if *t <= h => found.push(format!(
                        "{:?}: n{}#{} started {id} under token {t}, not above {h}",
                        record.at, record.host, record.incarnation
                    )),
                    _ => {}
                }
                highest = highest.max(*token);
                live.insert(me);
            }
            What::Stopped { id: i, .. } if i == id => {
                live.remove(&me);
            }
            What::Crashed => {
                live.retain(|(h, i)| !(*h == record.host && *i == record.incarnation));
            }
            _ => {}
        }
    }
    found
}

/// Every start of an instance while another instance of the same id still ran (another
/// host, or an earlier process of the same host that has not ended): what "exactly one"
/// forbids in a cluster whose network is healthy. Each entry names the id, when, and where.
pub fn overlaps(history: &[Record]) -> Vec<String> {
    overlaps_from(history, Duration::ZERO)
}

/// [`overlaps`] of the starts at or after `from` (instances that started earlier still count
/// as running): what a heal at `from` may not cause.
pub fn overlaps_from(history: &[Record], from: Duration) -> Vec<String> {
    let mut live: BTreeMap<&str, BTreeSet<(usize, u64)>> = BTreeMap::new();
    let mut found = Vec::new();
    for record in history {
        match &record.what {
            What::Started { id, .. } => {
                let running = live.entry(id.as_str()).or_default();
                let others: Vec<String> = running
                    .iter()
                    .filter(|(h, i)| (*h, *i) != (record.host, record.incarnation))
                    .map(|(h, i)| format!("n{h}#{i}"))
                    .collect();
                if !others.is_empty() && record.at >= from {
                    found.push(format!(
                        "{:?}: n{}#{} started {id} while it ran on {}",
                        record.at,
                        record.host,
                        record.incarnation,
                        others.join(", ")
                    ));
                }
                running.insert((record.host, record.incarnation));
            }
            What::Stopped { id, .. } => {
                if let Some(running) = live.get_mut(id.as_str()) {
                    running.remove(&(record.host, record.incarnation));
                }
            }
            What::Crashed => {
                for running in live.values_mut() {
                    running.retain(|(h, i)| !(*h == record.host && *i == record.incarnation));
                }
            }
            _ => {}
        }
    }
    found
}

/// Every `Down` verdict about a process that was alive: it had not crashed by then, and
/// never left. Each entry says who declared whom down, and when.
pub fn false_downs(history: &[Record]) -> Vec<String> {
    false_downs_from(history, Duration::ZERO)
}

/// [`false_downs`] given at or after `from`.
pub fn false_downs_from(history: &[Record], from: Duration) -> Vec<String> {
    let left: BTreeSet<(usize, u64)> = history
        .iter()
        .filter(|r| r.what == What::Left)
        .map(|r| (r.host, r.incarnation))
        .collect();
    let mut crashed: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut found = Vec::new();
    for record in history {
        match &record.what {
            What::Crashed => {
                crashed.insert((record.host, record.incarnation));
            }
            What::Member(event) => {
                let Some(peer) = event
                    .strip_prefix("Down(n")
                    .and_then(|e| e.strip_suffix(')'))
                else {
                    continue;
                };
                let Some((host, incarnation)) = peer.split_once('#') else {
                    continue;
                };
                let (Ok(host), Ok(incarnation)) = (host.parse(), incarnation.parse()) else {
                    continue;
                };
                let process = (host, incarnation);
                if !crashed.contains(&process) && !left.contains(&process) && record.at >= from {
                    found.push(format!(
                        "{:?}: n{}#{} declared the live n{host}#{incarnation} down",
                        record.at, record.host, record.incarnation
                    ));
                }
            }
            _ => {}
        }
    }
    found
}

/// How many instances stopped because they moved (a heal's duplicates resolved, children
/// the merged view places elsewhere) at or after `from`.
pub fn moves_from(history: &[Record], from: Duration) -> usize {
    history
        .iter()
        .filter(|r| {
            r.at >= from
                && matches!(&r.what, What::Stopped { reason, .. } if reason.starts_with("moved"))
        })
        .count()
}

/// The shortest excerpt of `history` that shows `id`'s instances: its starts, stops and the
/// crashes of the processes that ran it.
pub fn excerpt(history: &[Record], id: &str) -> String {
    history
        .iter()
        .filter(|r| match &r.what {
            What::Started { id: i, .. } | What::Stopped { id: i, .. } => i == id,
            What::Crashed | What::Left => true,
            What::ChildAcked { id: i, .. } | What::Terminated { id: i } => i == id,
            _ => false,
        })
        .map(|r| format!("{:>12?} n{}#{} {:?}", r.at, r.host, r.incarnation, r.what))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A hash of the history, to check that a seed replays exactly.
pub fn history_hash(history: &[Record]) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys (DefaultHasher::new) is stable within one build, which is all
    // a replay check within one test run needs.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    history.hash(&mut hasher);
    hasher.finish()
}
