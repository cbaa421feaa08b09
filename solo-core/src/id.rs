//! Typed identifiers: a node's name, the incarnation that tells one process from the next,
//! and the instance that tells one run of a child on a node from the next.

use std::fmt;
use std::sync::Arc;

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
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(Arc<str>);

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
        let raw = deserializer.deserialize_str(SharedStr)?;
        NodeName::check(&raw).map_err(serde::de::Error::custom)?;
        Ok(NodeName(raw))
    }
}

/// Deserialises a string into one allocation of the size of its bytes (not a `String`
/// grown, then copied into an `Arc<str>`), borrowing from the input where it allows.
pub(crate) struct SharedStr;

impl serde::de::Visitor<'_> for SharedStr {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Arc<str>, E> {
        Ok(Arc::from(value))
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
