//! One frame from a peer: `solo_core::testing::fuzz::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| solo_core::testing::fuzz::frame(data));
