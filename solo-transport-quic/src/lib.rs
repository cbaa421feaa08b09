//! QUIC transport for [solo](https://docs.rs/solo): quinn with rustls and mutual TLS against a
//! cluster CA, behind the `quic` feature of the `solo` facade.
//!
//! Status: the adapter lands with issue \[E\]; until then this crate only names its place in the
//! workspace and re-exports the frame limits it will enforce.

pub use solo_core::wire::{MAX_FRAME_LEN, PROTOCOL_VERSION};
