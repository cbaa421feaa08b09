//! Runtime messages from peers, calls and casts made here, the local instance answering,
//! handing over and ending, and time, into one messenger beside a lone node; its caps, its
//! byte accounting and one outcome per call by its deadline checked after each input:
//! `solo_core::testing::fuzz::messaging_inputs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| solo_core::testing::fuzz::messaging_inputs(data));
