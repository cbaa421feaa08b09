//! Whole-cluster simulation of [solo](https://docs.rs/solo) under
//! [turmoil](https://docs.rs/turmoil): the **real** code users run (the `solo` driver, worker
//! tasks, the TCP transport's framing, handshake and reconnects) over turmoil's deterministic
//! network and clock, from one seed.
//!
//! ```no_run
//! use std::time::Duration;
//! use solo_sim::{Sim, check};
//!
//! let mut sim = Sim::builder().nodes(3).seed(7).singleton("roar").build();
//! sim.run_for(Duration::from_secs(3))?;
//! sim.partition(&[0], &[1, 2]);
//! sim.run_for(Duration::from_secs(5))?;
//! sim.repair_all();
//! sim.run_for(Duration::from_secs(10))?;
//! let running = check::running_at_end(&sim.history());
//! assert_eq!(running["roar"].len(), 1, "{}", check::excerpt(&sim.history(), "roar"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! turmoil's seed and epoch are set explicitly (both default to ambient values), every node's
//! random choices follow from the seed (`ClusterBuilder::simulation_seed`), and time is
//! tokio's, which turmoil drives: a seed replays exactly.
//!
//! QUIC is not simulated: quinn would need a custom `AsyncUdpSocket` and `Runtime` over
//! turmoil's UDP, which lacks `poll_recv_from`; QUIC is covered by real-process tests.
//!
//! For the core alone, thousands of seeded schedules a second, see [`core_sim`] (the
//! simulator of `solo_core::testing`).

pub mod check;
mod harness;
pub mod nemesis;
mod network;

pub use harness::{Record, Sim, SimBuilder, SimCall, SimError, What};
pub use nemesis::{Fault, Schedule, Violation, check_healed};
pub use network::TurmoilNetwork;
/// The core-level simulator: `solo_core::testing`.
pub use solo_core::testing as core_sim;
