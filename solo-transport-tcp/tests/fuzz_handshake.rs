//! The handshake fuzz body (`solo_transport_tcp::fuzzing::handshake`) under `cargo test`,
//! on stable: random bytes, and well-framed messages with a real hello and random proofs,
//! as a stranger would send them. CI runs a fixed seed (`PROPTEST_RNG_SEED`);
//! `SOLO_FUZZ_CASES=N` runs N cases (default 128). The coverage-guided target is
//! `fuzz/fuzz_targets/handshake.rs`.

use proptest::prelude::*;
use solo_core::wire::{Hello, PROTOCOL_VERSION, encode_hello};
use solo_core::{Incarnation, NodeId, NodeName};
use solo_transport_tcp::fuzzing;

fn cases() -> u32 {
    std::env::var("SOLO_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(128)
}

/// `body` with the stream's length prefix (a big-endian `u32`).
fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(body.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(body);
    frame
}

/// A stranger's plausible first messages: a nonce and a hello that names the right cluster
/// (or not), then a proof it could only guess.
fn plausible(cluster_ok: bool, nonce: &[u8], tag: &[u8], name: u8) -> Vec<u8> {
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster: if cluster_ok { "fuzz" } else { "other" }.into(),
        node: NodeId::new(
            NodeName::new(format!("s{name}")).expect("valid"),
            Incarnation(1),
        ),
        addr: ([127, 0, 0, 1], 7001).into(),
        voters: Vec::new(),
    };
    let mut first = nonce.to_vec();
    first.extend(encode_hello(&hello).expect("encodes"));
    let mut bytes = framed(&first);
    bytes.extend(framed(tag));
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_bytes_never_pass_the_handshake(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::handshake(&bytes);
    }

    #[test]
    fn a_real_hello_with_a_guessed_proof_never_passes(
        cluster_ok in any::<bool>(),
        nonce in proptest::collection::vec(any::<u8>(), 32),
        tag in proptest::collection::vec(any::<u8>(), 0..40),
        name in any::<u8>(),
    ) {
        fuzzing::handshake(&plausible(cluster_ok, &nonce, &tag, name));
    }
}
