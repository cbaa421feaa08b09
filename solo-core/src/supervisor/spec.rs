//! What users ask to run: worker specs, child specs, restart policies and exits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::placement::ChildId;

/// The largest encoded [`ChildSpec`], in bytes. Specs are replicated to every node, so the
/// arguments should be a key to look state up by, not the state itself.
pub const MAX_SPEC_LEN: usize = 16 * 1024;
/// The most workers in one group.
pub const MAX_GROUP_LEN: usize = 16;
/// The longest worker kind or role name, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// One worker to run: a kind, which the runtime maps to a factory, and opaque arguments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Which factory builds the worker, such as `"invoice-sync"`.
    pub kind: String,
    /// Arguments for the factory, opaque to solo.
    pub args: Vec<u8>,
}

impl WorkerSpec {
    /// A worker of `kind` with `args`.
    pub fn new(kind: impl Into<String>, args: impl Into<Vec<u8>>) -> Self {
        Self {
            kind: kind.into(),
            args: args.into(),
        }
    }
}

/// When a child that exits is started again (OTP's restart values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Always restarted, whatever the exit. The default.
    #[default]
    Permanent,
    /// Restarted only when it fails; a normal exit ends it.
    Transient,
    /// Never restarted; any exit ends it.
    Temporary,
}

/// What a child promises when the network splits: the choice Akka, Horde and Swarm make for
/// you, made per child here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Mode {
    /// At least one instance: each side of a partition runs its own copy, and when the
    /// network heals the duplicates are resolved (one survives, the others may hand their
    /// state to it). Needs no voters. The default, and what the Elixir libraries do.
    #[default]
    Available,
    /// At most one instance at any instant, partitions included: the owner runs it only
    /// while it holds a lease from a majority of the cluster's voters
    /// ([`NodeBuilder::voters`](crate::NodeBuilder::voters)), and each lease carries a
    /// fencing token larger than every token granted before for this child. A side of a
    /// partition without a majority of voters runs no exclusive child.
    Exclusive,
}

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It returned successfully.
    Normal,
    /// It returned an error or panicked; the text says why.
    Failed(String),
}

/// A child of the distributed supervisor, or a singleton: one or more workers that always
/// run together on one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChildSpec {
    /// Unique in the cluster.
    pub id: ChildId,
    /// The workers, started in order on the same node.
    pub workers: Vec<WorkerSpec>,
    /// When to restart it.
    pub restart: RestartPolicy,
    /// Restart intensity: at most this many restarts...
    pub max_restarts: u32,
    /// ...within this many milliseconds, or the child is given up.
    pub restart_window_ms: u64,
    /// Only nodes with this role may run it (Akka's singleton `role`).
    pub role: Option<String>,
    /// What it promises under partitions; [`Mode::Available`] unless set.
    pub mode: Mode,
}

/// A [`ChildSpec`] that cannot be accepted. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The group has no worker, or more than [`MAX_GROUP_LEN`].
    #[error("a child has 1 to {MAX_GROUP_LEN} workers, this one has {0}")]
    GroupSize(usize),
    /// A worker kind or role is empty or longer than [`MAX_LABEL_LEN`] bytes.
    #[error("worker kind or role {0:?} must be 1 to {MAX_LABEL_LEN} bytes")]
    BadLabel(String),
    /// The encoded spec exceeds [`MAX_SPEC_LEN`] bytes.
    #[error("child spec is {0} bytes encoded, the limit is {MAX_SPEC_LEN}")]
    TooLarge(usize),
}

impl ChildSpec {
    /// A child of one worker, `Permanent`, at most 3 restarts in 5 s (OTP's defaults), on
    /// any node.
    pub fn new(id: ChildId, kind: impl Into<String>, args: impl Into<Vec<u8>>) -> Self {
        Self::group(id, vec![WorkerSpec::new(kind, args)])
    }

    /// A group of workers that always run together.
    pub fn group(id: ChildId, workers: Vec<WorkerSpec>) -> Self {
        Self {
            id,
            workers,
            restart: RestartPolicy::Permanent,
            max_restarts: 3,
            restart_window_ms: 5_000,
            role: None,
            mode: Mode::Available,
        }
    }

    /// Sets the partition mode ([`Mode::Exclusive`]: at most one instance, ever).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether the child runs only under a lease ([`Mode::Exclusive`]).
    pub fn is_exclusive(&self) -> bool {
        self.mode == Mode::Exclusive
    }

    /// Sets the restart policy.
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// Sets the restart intensity: at most `max_restarts` within `window`.
    pub fn intensity(mut self, max_restarts: u32, window: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.restart_window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Restricts the child to nodes with `role`.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// Checks the spec's limits.
    ///
    /// # Errors
    ///
    /// [`SpecError`] names the first limit exceeded.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.workers.is_empty() || self.workers.len() > MAX_GROUP_LEN {
            return Err(SpecError::GroupSize(self.workers.len()));
        }
        let labels = self.workers.iter().map(|w| &w.kind).chain(&self.role);
        for label in labels {
            if label.is_empty() || label.len() > MAX_LABEL_LEN {
                return Err(SpecError::BadLabel(label.clone()));
            }
        }
        let len = self.encoded_len();
        if len > MAX_SPEC_LEN {
            return Err(SpecError::TooLarge(len));
        }
        Ok(())
    }

    /// A fingerprint of the whole spec, equal on every node for equal specs: how nodes
    /// notice that they declared one singleton differently.
    pub fn fingerprint(&self) -> u64 {
        // postcard's encoding is a documented, stable format: equal specs give equal bytes.
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }

    pub(crate) fn restart_window(&self) -> Duration {
        Duration::from_millis(self.restart_window_ms)
    }
}
