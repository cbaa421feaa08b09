//! The multicast beacon: a node's name and listening address, signed with a key derived
//! from the cluster cookie, and judged on receipt. Pure: bytes and clocks in, a verdict
//! out, so every hostile datagram is a unit test.
//!
//! ```text
//! "SOLB" | version (1) | postcard(Beacon) | HMAC-SHA256(key, everything before it)
//! ```
//!
//! The key is `HMAC(cookie, "solo multicast beacon v1")`, never the cookie itself, so a
//! beacon's tag can never stand in for a proof of the connection handshake, which signs
//! with the cookie. A beacon is only a claim by a cookie holder about *itself*; what it
//! earns is a dial, and the dial's handshake still has to succeed.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ring::hmac;
use serde::{Deserialize, Serialize};

const MAGIC: [u8; 4] = *b"SOLB";
const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
/// The longest datagram taken for a beacon: a node name and a cluster name of at most 255
/// bytes each fit, with room to spare, and far below one Ethernet frame.
pub(crate) const MAX_BEACON_LEN: usize = 1024;
/// How far a beacon's clock may be from the receiver's, either way, before it is stale: a
/// beacon recorded and sent again later is refused after this long, whatever its tag.
pub(crate) const FRESH_FOR_MS: u64 = 30_000;
/// The most senders whose last beacon is remembered (each is a cookie holder: strangers
/// never get in). Past it, the sender heard from least recently is forgotten.
pub(crate) const MAX_SENDERS: usize = 1024;

/// What a beacon says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Beacon {
    /// The sender's cluster name: a beacon of another cluster sharing the cookie (and the
    /// group) is ignored.
    pub(crate) cluster: String,
    /// The sender's node name.
    pub(crate) node: String,
    /// Where the sender accepts peers. An unspecified IP (`0.0.0.0`) means the datagram's
    /// source address.
    pub(crate) addr: SocketAddr,
    /// The sender's wall clock when it sent this, in ms since the Unix epoch.
    pub(crate) sent_at_ms: u64,
    /// The sender process's count of its beacons, from 1: it breaks ties within one
    /// millisecond, and 1 says "I just started" (every node hearing it answers at once).
    pub(crate) seq: u64,
}

/// Why a datagram is not a beacon to act on. The variants are the metric's bounded labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// Shorter than a header and a tag, or longer than [`MAX_BEACON_LEN`].
    #[error("not a beacon's length ({0} bytes)")]
    Length(usize),
    /// Another magic or version: another program or another release on the group.
    #[error("not a solo beacon of this version")]
    Foreign,
    /// The tag does not verify: a stranger's, a forgery, or a damaged datagram.
    #[error("the tag does not verify (another cookie, or a forgery)")]
    BadTag,
    /// Signed with our key but not a beacon (cannot happen short of a bug or a key leak).
    #[error("the signed body is not a beacon")]
    Malformed,
    /// Signed, but for another cluster name.
    #[error("a beacon of another cluster")]
    OtherCluster,
    /// Our own beacon, looped back.
    #[error("our own beacon")]
    Own,
    /// The node name is not a valid one.
    #[error("an invalid node name")]
    BadName,
    /// Sent too long ago (or too far in the future) by the receiver's clock.
    #[error("stale: sent {0} ms from now")]
    Stale(i128),
    /// Not newer than the last beacon taken from that sender: a replay.
    #[error("replayed")]
    Replayed,
}

impl Refused {
    /// The `reason` label of `solo_beacons_refused_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Refused::Length(_) => "length",
            Refused::Foreign => "foreign",
            Refused::BadTag => "bad_tag",
            Refused::Malformed => "malformed",
            Refused::OtherCluster => "other_cluster",
            Refused::Own => "own",
            Refused::BadName => "bad_name",
            Refused::Stale(_) => "stale",
            Refused::Replayed => "replayed",
        }
    }
}

/// The key beacons are signed and checked with.
pub(crate) struct BeaconKey(hmac::Key);

impl BeaconKey {
    pub(crate) fn from_cookie(cookie: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, cookie);
        let derived = hmac::sign(&root, b"solo multicast beacon v1");
        BeaconKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// The datagram for `beacon`.
    pub(crate) fn seal(&self, beacon: &Beacon) -> Vec<u8> {
        let mut datagram = Vec::with_capacity(128);
        datagram.extend_from_slice(&MAGIC);
        datagram.push(VERSION);
        // A `Vec` sink cannot fail, and the names were checked when the node was built.
        if let Ok(body) = postcard::to_allocvec(beacon) {
            datagram.extend_from_slice(&body);
        }
        let tag = hmac::sign(&self.0, &datagram);
        datagram.extend_from_slice(tag.as_ref());
        datagram
    }

    /// The beacon in `datagram`, if its tag verifies. The tag is checked before the body is
    /// decoded: a stranger's bytes never reach the decoder.
    pub(crate) fn open(&self, datagram: &[u8]) -> Result<Beacon, Refused> {
        let header = MAGIC.len() + 1;
        if datagram.len() < header + TAG_LEN || datagram.len() > MAX_BEACON_LEN {
            return Err(Refused::Length(datagram.len()));
        }
        if datagram[..MAGIC.len()] != MAGIC || datagram[MAGIC.len()] != VERSION {
            return Err(Refused::Foreign);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        hmac::verify(&self.0, signed, tag).map_err(|_| Refused::BadTag)?;
        match postcard::take_from_bytes::<Beacon>(&signed[header..]) {
            Ok((beacon, [])) => Ok(beacon),
            _ => Err(Refused::Malformed),
        }
    }
}

/// Judges signed beacons: ours and other clusters' are ignored, and each sender's must be
/// fresh and newer than the last one taken from it.
#[derive(Debug)]
pub(crate) struct Judge {
    cluster: String,
    me: String,
    /// Per sender: the `(sent_at_ms, seq)` of the last beacon taken.
    last: BTreeMap<String, (u64, u64)>,
}

impl Judge {
    pub(crate) fn new(cluster: String, me: String) -> Self {
        Judge {
            cluster,
            me,
            last: BTreeMap::new(),
        }
    }

    /// Takes `beacon` (remembering it against replays), or says why not. `now_ms` is the
    /// receiver's wall clock.
    pub(crate) fn admit(&mut self, beacon: &Beacon, now_ms: u64) -> Result<(), Refused> {
        if beacon.cluster != self.cluster {
            return Err(Refused::OtherCluster);
        }
        if beacon.node == self.me {
            return Err(Refused::Own);
        }
        if solo_core::NodeName::new(beacon.node.as_str()).is_err() {
            return Err(Refused::BadName);
        }
        let skew = i128::from(beacon.sent_at_ms) - i128::from(now_ms);
        if skew.unsigned_abs() > u128::from(FRESH_FOR_MS) {
            return Err(Refused::Stale(skew));
        }
        let stamp = (beacon.sent_at_ms, beacon.seq);
        if self
            .last
            .get(&beacon.node)
            .is_some_and(|last| stamp <= *last)
        {
            return Err(Refused::Replayed);
        }
        if self.last.len() >= MAX_SENDERS && !self.last.contains_key(&beacon.node) {
            let oldest = self
                .last
                .iter()
                .min_by_key(|(_, stamp)| **stamp)
                .map(|(node, _)| node.clone());
            if let Some(oldest) = oldest {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(beacon.node.clone(), stamp);
        Ok(())
    }

    /// How many senders are remembered.
    #[cfg(test)]
    fn senders(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000_000;

    fn beacon(node: &str, sent_at_ms: u64, seq: u64) -> Beacon {
        Beacon {
            cluster: "solo".into(),
            node: node.into(),
            addr: "10.0.0.2:7001".parse().expect("an address"),
            sent_at_ms,
            seq,
        }
    }

    fn key() -> BeaconKey {
        BeaconKey::from_cookie(b"0123456789abcdef0123")
    }

    #[test]
    fn a_sealed_beacon_opens_with_the_same_cookie_only() {
        let sent = beacon("b", NOW, 1);
        let datagram = key().seal(&sent);
        assert!(datagram.len() <= MAX_BEACON_LEN);
        assert_eq!(key().open(&datagram), Ok(sent));
        let stranger = BeaconKey::from_cookie(b"another cookie of 20 b");
        assert_eq!(stranger.open(&datagram), Err(Refused::BadTag));
    }

    #[test]
    fn the_key_is_not_the_cookie() {
        // A beacon's tag is never the HMAC the handshake would compute with the cookie.
        let datagram = key().seal(&beacon("b", NOW, 1));
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let handshake_key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123");
        assert!(hmac::verify(&handshake_key, signed, tag).is_err());
    }

    #[test]
    fn foreign_and_truncated_datagrams_are_refused_by_kind() {
        let datagram = key().seal(&beacon("b", NOW, 1));
        assert_eq!(key().open(&[]), Err(Refused::Length(0)));
        assert_eq!(
            key().open(&datagram[..36]),
            Err(Refused::Length(36)),
            "shorter than a header and a tag"
        );
        assert_eq!(
            key().open(&vec![0; MAX_BEACON_LEN + 1]),
            Err(Refused::Length(MAX_BEACON_LEN + 1))
        );
        let mut other_version = datagram.clone();
        other_version[4] = 2;
        assert_eq!(key().open(&other_version), Err(Refused::Foreign));
        let mut cut = datagram.clone();
        cut.pop();
        assert_eq!(key().open(&cut), Err(Refused::BadTag));
    }

    #[test]
    fn ours_and_other_clusters_beacons_are_ignored() {
        let mut judge = Judge::new("solo".into(), "a".into());
        assert_eq!(judge.admit(&beacon("a", NOW, 1), NOW), Err(Refused::Own));
        let mut other = beacon("b", NOW, 1);
        other.cluster = "staging".into();
        assert_eq!(judge.admit(&other, NOW), Err(Refused::OtherCluster));
        assert_eq!(
            judge.admit(&beacon("not a name!", NOW, 1), NOW),
            Err(Refused::BadName)
        );
        assert_eq!(judge.senders(), 0, "nothing refused is remembered");
    }

    #[test]
    fn a_replayed_or_stale_beacon_is_refused() {
        let mut judge = Judge::new("solo".into(), "a".into());
        let first = beacon("b", NOW, 1);
        assert_eq!(judge.admit(&first, NOW), Ok(()));
        assert_eq!(judge.admit(&first, NOW + 5), Err(Refused::Replayed));
        assert_eq!(
            judge.admit(&beacon("b", NOW - 1, 9), NOW),
            Err(Refused::Replayed),
            "an older beacon of the same sender"
        );
        assert_eq!(
            judge.admit(&beacon("b", NOW, 2), NOW),
            Ok(()),
            "same ms, next seq"
        );
        assert_eq!(judge.admit(&beacon("b", NOW + 1000, 0), NOW + 1000), Ok(()));
        // Recorded and sent again after the window, to a receiver that never saw it (it
        // started later, or forgot the sender): refused by its age alone.
        let mut fresh_judge = Judge::new("solo".into(), "c".into());
        let late = NOW + FRESH_FOR_MS + 1;
        assert_eq!(
            fresh_judge.admit(&first, late),
            Err(Refused::Stale(-i128::from(FRESH_FOR_MS) - 1))
        );
        assert!(matches!(
            fresh_judge.admit(&beacon("b", late + FRESH_FOR_MS + 1, 1), NOW),
            Err(Refused::Stale(_))
        ));
    }

    #[test]
    fn the_senders_remembered_are_bounded() {
        let mut judge = Judge::new("solo".into(), "a".into());
        for i in 0..MAX_SENDERS + 10 {
            let sent_at = NOW + i as u64;
            assert_eq!(
                judge.admit(&beacon(&format!("n{i}"), sent_at, 0), sent_at),
                Ok(())
            );
        }
        assert_eq!(judge.senders(), MAX_SENDERS);
    }

    proptest! {
        /// Any bytes at all: a typed refusal, never a panic, never a beacon.
        #[test]
        fn arbitrary_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            prop_assert!(key().open(&bytes).is_err());
        }

        /// Any one byte of a real beacon changed: refused (the tag covers every byte).
        #[test]
        fn a_changed_byte_is_refused(at in 0usize..200, flip in 1u8..=255) {
            let mut datagram = key().seal(&beacon("b", NOW, 7));
            let at = at % datagram.len();
            datagram[at] ^= flip;
            prop_assert!(key().open(&datagram).is_err());
        }
    }
}
