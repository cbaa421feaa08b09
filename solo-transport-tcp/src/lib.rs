//! TCP transport for [solo](https://docs.rs/solo): a thin adapter between tokio TCP streams
//! and the sans-IO [`solo_core::Node`].
//!
//! It owns sockets and nothing else: length-prefixed frames (the size limit is checked before
//! allocating), one connection per pair of nodes, reconnects with jittered backoff and a
//! cookie challenge-response handshake. Every protocol decision stays in `solo-core`.
//!
//! Status: the adapter lands with issue [C]; until then this crate only names its place in the
//! workspace and re-exports the frame limits it will enforce.

pub use solo_core::wire::{MAX_FRAME_LEN, PROTOCOL_VERSION};
