//! A sequence of frames, link events and time into one node, every table cap checked after
//! each: `solo_core::testing::fuzz::node_inputs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| solo_core::testing::fuzz::node_inputs(data));
