//! Whole-cluster simulation of [solo](https://docs.rs/solo) under turmoil: the real driver and
//! TCP transport, seeded partitions, crashes and restarts, and an invariant checker.
//!
//! Status: the turmoil harness lands with issue [D]. Until then, the deterministic core-level
//! simulator in `solo_core::testing` (feature `testing`) is re-exported here, so that users can
//! already run seeded schedules of the membership protocol from their own tests.

pub use solo_core::testing;
