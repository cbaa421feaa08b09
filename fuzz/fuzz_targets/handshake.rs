//! A stranger's bytes against the handshake, in both roles, over an in-memory pipe:
//! `solo_transport_tcp::fuzzing::handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| solo_transport_tcp::fuzzing::handshake(data));
