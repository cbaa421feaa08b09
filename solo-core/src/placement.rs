//! Where a child runs: rendezvous (highest-random-weight) hashing over the eligible members.
//!
//! The owner of a child is a pure function of the child's id and the set of eligible node
//! names. Every node computes it alone and all agree once their views agree. When a node
//! joins, a child moves only if the newcomer's weight for it beats the current owner's, so a
//! join moves about `1/n` of the children, all of them to the newcomer, and nothing else.
//!
//! The weight is **XXH3-64** (a published, versioned algorithm, here through the `xxhash-rust`
//! crate) over explicit bytes: the child id's UTF-8, one `0xFF` byte (which UTF-8 never
//! contains, so `("ab", "c")` and `("a", "bc")` differ), then the node name's bytes. Not
//! `std`'s `DefaultHasher` nor `#[derive(Hash)]`, which may change between Rust releases and
//! would move children when nodes built by different compilers disagree. The test vector at
//! the bottom of this file pins it.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::{NodeName, RecentStrs, SharedStr, shared_str_comparisons};

/// The longest child id accepted, in bytes.
pub const MAX_CHILD_ID_LEN: usize = 256;

/// The name of a distributed child or of a singleton, unique in the cluster.
///
/// Shared, not copied: a clone (every call names its target) is a reference count.
#[derive(Clone)]
pub struct ChildId(Arc<str>);

shared_str_comparisons!(ChildId);

/// Why a string is not a valid [`ChildId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChildIdError {
    /// The id is empty.
    #[error("child id is empty")]
    Empty,
    /// The id is longer than [`MAX_CHILD_ID_LEN`] bytes.
    #[error("child id is {0} bytes long, the limit is {MAX_CHILD_ID_LEN}")]
    TooLong(usize),
}

impl ChildId {
    /// Checks and wraps an id: 1 to [`MAX_CHILD_ID_LEN`] bytes of any UTF-8.
    ///
    /// # Errors
    ///
    /// [`ChildIdError`] when the id is empty or too long.
    pub fn new(id: impl Into<String>) -> Result<Self, ChildIdError> {
        let id = id.into();
        Self::check(&id)?;
        Ok(Self(Arc::from(id)))
    }

    fn check(id: &str) -> Result<(), ChildIdError> {
        if id.is_empty() {
            return Err(ChildIdError::Empty);
        }
        if id.len() > MAX_CHILD_ID_LEN {
            return Err(ChildIdError::TooLong(id.len()));
        }
        Ok(())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ChildId {
    type Err = ChildIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for ChildId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChildId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        thread_local! {
            static RECENT: RefCell<RecentStrs> = const { RefCell::new(RecentStrs::new()) };
        }
        deserializer
            .deserialize_str(SharedStr::new(&RECENT, ChildId::check))
            .map(ChildId)
    }
}

/// The rendezvous weight of `node` for `child`; the eligible node with the highest weight
/// owns the child (ties, which need a 64-bit collision, go to the greater name).
pub fn weight(child: &ChildId, node: &NodeName) -> u64 {
    // Placement hashes every child against every node: the bytes go in a stack buffer (ids
    // and names are length-checked, so they fit), not a fresh allocation per weight.
    const CAP: usize = MAX_CHILD_ID_LEN + 1 + crate::id::MAX_NODE_NAME_LEN;
    let (id, name) = (child.0.as_bytes(), node.as_str().as_bytes());
    let len = id.len() + 1 + name.len();
    if len > CAP {
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(id);
        bytes.push(0xFF);
        bytes.extend_from_slice(name);
        return xxhash_rust::xxh3::xxh3_64(&bytes);
    }
    if len <= 32 {
        // The common case, without clearing a large buffer.
        let mut buf = [0u8; 32];
        buf[..id.len()].copy_from_slice(id);
        buf[id.len()] = 0xFF;
        buf[id.len() + 1..len].copy_from_slice(name);
        return xxhash_rust::xxh3::xxh3_64(&buf[..len]);
    }
    let mut buf = [0u8; CAP];
    buf[..id.len()].copy_from_slice(id);
    buf[id.len()] = 0xFF;
    buf[id.len() + 1..len].copy_from_slice(name);
    xxhash_rust::xxh3::xxh3_64(&buf[..len])
}

/// The owner of `child` among `candidates`, with its weight; `None` if there is none.
///
/// Every placement decision of the core is this function over some set of candidates: the
/// eligible members (a child's owner), a child's owner and the members that just joined (a
/// rebalance), two claimers (a claim race).
pub fn owner<'a>(
    child: &ChildId,
    candidates: impl IntoIterator<Item = &'a NodeName>,
) -> Option<(&'a NodeName, u64)> {
    candidates
        .into_iter()
        .map(|n| (n, weight(child, n)))
        .max_by(|(na, wa), (nb, wb)| wa.cmp(wb).then_with(|| na.cmp(nb)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> NodeName {
        NodeName::new(s).expect("valid")
    }

    #[test]
    fn weights_are_pinned_across_releases_and_platforms() {
        // If this fails, every cluster mixing old and new builds would disagree on owners.
        // The values come from an independent XXH3 implementation (Python's `xxhash`:
        // `xxh3_64_intdigest(b"invoice-sync" + b"\xff" + b"a")`), not from this code.
        let child = ChildId::new("invoice-sync").expect("valid");
        assert_eq!(weight(&child, &name("a")), 0xF42F_FFFC_AE5B_6A6C);
        assert_eq!(weight(&child, &name("node-2")), 0x64AF_C88C_E263_DACB);
    }

    #[test]
    fn the_separator_keeps_id_and_name_apart() {
        let ab = ChildId::new("ab").expect("valid");
        let a = ChildId::new("a").expect("valid");
        assert_ne!(weight(&ab, &name("c")), weight(&a, &name("bc")));
    }

    proptest! {
        #[test]
        fn a_join_moves_only_children_to_the_newcomer(
            nodes in proptest::collection::btree_set("[a-z]{1,6}", 1..12),
            newcomer in "[A-Z]{1,6}",
            children in proptest::collection::vec("[a-z0-9]{1,12}", 1..200),
        ) {
            let before: Vec<NodeName> = nodes.iter().map(|n| name(n)).collect();
            let newcomer = name(&newcomer);
            let mut after = before.clone();
            after.push(newcomer.clone());
            for child in children {
                let child = ChildId::new(child).expect("valid");
                let (old, _) = owner(&child, &before).expect("non-empty");
                let (new, _) = owner(&child, &after).expect("non-empty");
                // Either nothing moved, or the child moved to the newcomer: never elsewhere.
                prop_assert!(new == old || *new == newcomer);
                // And it moved exactly when the newcomer outweighs the old owner.
                let moved = new != old;
                prop_assert_eq!(moved, weight(&child, &newcomer) > weight(&child, old));
            }
        }

        #[test]
        fn a_loss_moves_only_the_lost_nodes_children(
            nodes in proptest::collection::btree_set("[a-z]{1,6}", 2..12),
            lost in any::<prop::sample::Index>(),
            children in proptest::collection::vec("[a-z0-9]{1,12}", 1..200),
        ) {
            let before: Vec<NodeName> = nodes.iter().map(|n| name(n)).collect();
            let lost = before[lost.index(before.len())].clone();
            let after: Vec<NodeName> = before.iter().filter(|n| **n != lost).cloned().collect();
            for child in children {
                let child = ChildId::new(child).expect("valid");
                let (old, _) = owner(&child, &before).expect("non-empty");
                let (new, _) = owner(&child, &after).expect("non-empty");
                prop_assert!(new == old || *old == lost);
            }
        }
    }
}
