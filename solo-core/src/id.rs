//! Typed identifiers: a node's name, the incarnation that tells one process from the next,
//! and the instance that tells one run of a child on a node from the next.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::thread::LocalKey;

use serde::{Deserialize, Serialize};

/// The longest node name accepted, in bytes. Names travel in every membership update, so
/// they are kept short; 64 bytes holds any hostname label or pod name.
pub const MAX_NODE_NAME_LEN: usize = 64;

/// A node's stable name, such as `"a"`, `"web-3"` or `"pod-7f9c.eu"`.
///
/// Names are 1 to [`MAX_NODE_NAME_LEN`] bytes of ASCII letters, digits, `-`, `_` and `.`, so
/// they print safely in logs and JSON. The name is what placement hashes on: a node that
/// restarts under the same name gets the same children back.
///
/// Shared, not copied: a clone (every message names its nodes) is a reference count.
#[derive(Clone)]
pub struct NodeName(Arc<str>);

shared_str_comparisons!(NodeName);

/// Why a string is not a valid [`NodeName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeNameError {
    /// The name is empty.
    #[error("node name is empty")]
    Empty,
    /// The name is longer than [`MAX_NODE_NAME_LEN`] bytes.
    #[error("node name is {0} bytes long, the limit is {MAX_NODE_NAME_LEN}")]
    TooLong(usize),
    /// The name holds a character outside `[A-Za-z0-9._-]`.
    #[error("node name holds {0:?}: only ASCII letters, digits, '-', '_' and '.' are allowed")]
    BadChar(char),
}

impl NodeName {
    /// Checks and wraps a name.
    ///
    /// # Errors
    ///
    /// [`NodeNameError`] when the name is empty, too long or holds a character outside
    /// `[A-Za-z0-9._-]`.
    pub fn new(name: impl Into<String>) -> Result<Self, NodeNameError> {
        let name = name.into();
        Self::check(&name)?;
        Ok(Self(Arc::from(name)))
    }

    fn check(name: &str) -> Result<(), NodeNameError> {
        if name.is_empty() {
            return Err(NodeNameError::Empty);
        }
        if name.len() > MAX_NODE_NAME_LEN {
            return Err(NodeNameError::TooLong(name.len()));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(NodeNameError::BadChar(bad));
        }
        Ok(())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for NodeName {
    type Err = NodeNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for NodeName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

// Names arrive from peers: deserialisation validates them, so a bad name is a decode error
// and never reaches the state machine.
impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        thread_local! {
            static RECENT: RefCell<RecentStrs> = const { RefCell::new(RecentStrs::new()) };
        }
        deserializer
            .deserialize_str(SharedStr::new(&RECENT, NodeName::check))
            .map(NodeName)
    }
}

/// Equality, order and hash of a name held as one `Arc<str>`, as its string's: one
/// allocation is one name, which answers most comparisons without reading the bytes (a
/// decoded name shares the allocation of the same name decoded before, see [`SharedStr`]).
macro_rules! shared_str_comparisons {
    ($name:ty) => {
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                std::sync::Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
            }
        }

        impl Eq for $name {}

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                if std::sync::Arc::ptr_eq(&self.0, &other.0) {
                    return std::cmp::Ordering::Equal;
                }
                self.0.cmp(&other.0)
            }
        }

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.0.hash(state);
            }
        }
    };
}
pub(crate) use shared_str_comparisons;

/// How many strings of one kind a thread keeps for [`SharedStr`]: the nodes and names a
/// node hears from at once are few, and a miss costs one comparison per place.
const RECENT_STRS: usize = 8;

/// The strings of one kind (node names, child ids) a thread decoded last, already checked.
pub(crate) struct RecentStrs {
    places: [Option<Arc<str>>; RECENT_STRS],
    /// The place the next new string takes (the oldest).
    next: usize,
}

impl RecentStrs {
    pub(crate) const fn new() -> Self {
        Self {
            places: [const { None }; RECENT_STRS],
            next: 0,
        }
    }

    fn find(&self, value: &str) -> Option<Arc<str>> {
        self.places
            .iter()
            .flatten()
            .find(|kept| ***kept == *value)
            .cloned()
    }

    fn keep(&mut self, value: Arc<str>) {
        self.places[self.next] = Some(value);
        self.next = (self.next + 1) % RECENT_STRS;
    }
}

/// Deserialises and checks a string into an `Arc<str>`: a string this thread decoded lately
/// is shared, not allocated and checked again (every call frame names its child and its
/// caller, and the same few come again and again); a new one takes one allocation of the
/// size of its bytes.
pub(crate) struct SharedStr<E: 'static> {
    recent: &'static LocalKey<RefCell<RecentStrs>>,
    check: fn(&str) -> Result<(), E>,
}

impl<E> SharedStr<E> {
    pub(crate) fn new(
        recent: &'static LocalKey<RefCell<RecentStrs>>,
        check: fn(&str) -> Result<(), E>,
    ) -> Self {
        Self { recent, check }
    }
}

impl<E: fmt::Display> serde::de::Visitor<'_> for SharedStr<E> {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<D: serde::de::Error>(self, value: &str) -> Result<Arc<str>, D> {
        // Only checked strings are kept, so a hit needs no check.
        if let Some(kept) = self.recent.with_borrow(|recent| recent.find(value)) {
            return Ok(kept);
        }
        (self.check)(value).map_err(D::custom)?;
        let shared: Arc<str> = Arc::from(value);
        self.recent
            .with_borrow_mut(|recent| recent.keep(Arc::clone(&shared)));
        Ok(shared)
    }
}

/// Which life of a named node this is. The caller supplies it when the process starts and it
/// must grow from one start to the next; the milliseconds since the Unix epoch at start-up do.
///
/// A restarted node therefore is a *new* member: peers retire its former self (`Down`) and
/// never confuse messages from the two.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Incarnation(pub u64);

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One process of the cluster: a [`NodeName`] and the [`Incarnation`] of that process.
///
/// Displays as `name#incarnation`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's stable name.
    pub name: NodeName,
    /// Which start of that name this process is.
    pub incarnation: Incarnation,
}

impl NodeId {
    /// Builds an id from a name and an incarnation.
    pub fn new(name: NodeName, incarnation: Incarnation) -> Self {
        Self { name, incarnation }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.incarnation)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One run of a child's workers on a node: each start there (the first, a restart, a move
/// back) gets a new one, so events and exits of an old run are never taken for the new one's.
///
/// Instances are numbered by the node that starts them, from one counter for all its
/// children: they grow with each start on that node, and say nothing about how often a given
/// child ran, or about runs on other nodes. Displays as its number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct InstanceId(u64);

impl InstanceId {
    /// The instance numbered `n`. Nodes number their own; this is for tests and tools that
    /// replay a node's records.
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next instance after this one.
    pub(crate) const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name decoded again is the same allocation, and a bad one is refused every time
    /// (it is never kept), whatever this thread decoded before.
    #[test]
    fn decoded_names_are_shared_and_bad_ones_never_kept() {
        let decode = |name: &str| {
            let bytes = postcard::to_allocvec(name).expect("a str encodes");
            postcard::from_bytes::<NodeName>(&bytes)
        };
        let first = decode("node-a").expect("a valid name");
        let again = decode("node-a").expect("a valid name");
        assert!(Arc::ptr_eq(&first.0, &again.0));
        assert!(decode("bad name").is_err());
        assert!(decode("bad name").is_err());
        // More names than places: the oldest is decoded afresh, still equal and checked.
        for n in 0..2 * RECENT_STRS {
            assert_eq!(
                decode(&format!("n{n}")).expect("valid").as_str(),
                format!("n{n}")
            );
        }
        let later = decode("node-a").expect("a valid name");
        assert_eq!(later, first);
        assert!(!Arc::ptr_eq(&later.0, &first.0));
        assert!(decode("").is_err());
    }

    /// Names compare, order and hash by their strings, whether they share an allocation
    /// (the quick way) or not.
    #[test]
    fn names_compare_by_their_strings_shared_or_not() {
        use std::hash::BuildHasher;
        let shared = NodeName::new("node-a").expect("valid");
        let same = shared.clone();
        let apart = NodeName::new("node-a").expect("valid");
        let other = NodeName::new("node-b").expect("valid");
        assert!(Arc::ptr_eq(&shared.0, &same.0) && !Arc::ptr_eq(&shared.0, &apart.0));
        assert_eq!(shared, same);
        assert_eq!(shared, apart);
        assert_ne!(shared, other);
        assert_eq!(shared.cmp(&apart), std::cmp::Ordering::Equal);
        assert_eq!(shared.cmp(&other), std::cmp::Ordering::Less);
        assert_eq!(other.cmp(&apart), std::cmp::Ordering::Greater);
        let hasher = std::hash::RandomState::new();
        assert_eq!(hasher.hash_one(&shared), hasher.hash_one(&apart));
        assert_eq!(hasher.hash_one(&shared), hasher.hash_one("node-a"));
    }

    #[test]
    fn names_are_checked() {
        assert!(NodeName::new("web-3.eu_1").is_ok());
        assert_eq!(NodeName::new(""), Err(NodeNameError::Empty));
        assert_eq!(NodeName::new("a b"), Err(NodeNameError::BadChar(' ')));
        assert_eq!(
            NodeName::new("x".repeat(65)),
            Err(NodeNameError::TooLong(65))
        );
    }

    #[test]
    fn a_bad_name_from_the_wire_is_a_decode_error() {
        let bytes = postcard::to_allocvec(&"no spaces allowed").expect("encode");
        assert!(postcard::from_bytes::<NodeName>(&bytes).is_err());
    }

    #[test]
    fn node_ids_display_name_and_incarnation() {
        let id = NodeId::new(NodeName::new("a").expect("valid"), Incarnation(7));
        assert_eq!(id.to_string(), "a#7");
    }
}
