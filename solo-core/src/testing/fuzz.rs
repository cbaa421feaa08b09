//! The bodies of the fuzz targets: one copy, run two ways. The coverage-guided targets in
//! `fuzz/` (cargo-fuzz, nightly, never in CI) call them with what libFuzzer finds; on
//! stable, `tests/fuzz_inputs.rs` calls them with proptest's structured random inputs
//! (random bytes, valid frames mutated, sequences of both) from a fixed seed in CI.
//!
//! Every body panics on what must never happen (a panic inside the node is one too), and
//! after every input checks that each table a peer can grow is within its cap.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::id::{Incarnation, NodeId, NodeName};
use crate::node::Node;
use crate::wire;

/// The caps [`node_inputs`] runs its node with: small, so that floods reach them.
const MAX_MEMBERS: usize = 16;
const MAX_TRANSMITS: usize = 64;

/// One frame as a peer could send it: decoding never panics, and a frame that decodes
/// encodes again to one that decodes to the same message.
pub fn frame(data: &[u8]) {
    let Ok(message) = wire::decode_frame(data) else {
        return;
    };
    let again = match wire::encode_frame(&message) {
        Ok(frame) => frame,
        // Decoded from at most MAX_FRAME_LEN bytes; postcard's encoding is canonical, so
        // the same message fits again.
        Err(e) => panic!("a decoded message does not encode: {e}"),
    };
    assert_eq!(
        wire::decode_frame(&again).ok().as_ref(),
        Some(&message),
        "a decoded message does not survive encoding"
    );
}

/// A node fed what `data` describes, input after input, from peers the transport
/// authenticated: frames (raw bytes), link events, time passing. Each input is one byte
/// saying what it is and from which of four peers, then, for a frame, two bytes of length
/// and the frame. After every input the node's tables are within their caps.
pub fn node_inputs(data: &[u8]) {
    let config = match Config::builder()
        .max_members(MAX_MEMBERS)
        .max_queued_transmits(MAX_TRANSMITS)
        .build()
    {
        Ok(config) => config,
        Err(e) => panic!("the fuzzing config is valid: {e}"),
    };
    let at = |port: u16| SocketAddr::from(([10, 0, 0, 1], port));
    let peer = |i: u8| {
        let name = match NodeName::new(format!("p{}", i % 4)) {
            Ok(name) => name,
            Err(e) => panic!("a valid name: {e}"),
        };
        NodeId::new(name, Incarnation(u64::from(i / 4 % 2) + 1))
    };
    let me = NodeId::new(
        NodeName::new("me").unwrap_or_else(|e| panic!("a valid name: {e}")),
        Incarnation(1),
    );
    // A fixed instant: no clock is read, and the inputs move time forward.
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let Ok(mut node) = Node::builder(me, at(7000))
        .config(config)
        .seeds([at(7001)])
        .build(now)
    else {
        panic!("the fuzzing node builds");
    };
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        rest = tail;
        let from = peer(head >> 3);
        match head & 0b111 {
            0..=3 => {
                let (len, tail) = match rest {
                    [a, b, tail @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), tail),
                    _ => (rest.len(), &[][..]),
                };
                let (frame, tail) = tail.split_at(len.min(tail.len()));
                rest = tail;
                let _ = node.handle_frame(now, &from, frame);
            }
            4 => node.handle_link(now, &from, crate::Link::Up),
            5 => node.handle_link(now, &from, crate::Link::Down),
            _ => {
                let step = rest.first().copied().unwrap_or(1);
                rest = rest.get(1..).unwrap_or_default();
                now += Duration::from_millis(u64::from(step) * 10);
                node.handle_timeout(now);
            }
        }
        let sizes = node.table_sizes();
        assert!(sizes.members < MAX_MEMBERS, "{sizes:?}");
        assert!(sizes.gossip <= MAX_MEMBERS, "{sizes:?}");
        assert!(sizes.transmits <= MAX_TRANSMITS, "{sizes:?}");
        assert!(sizes.relays <= 256, "{sizes:?}");
        while node.poll_action().is_some() {}
        // Half of the inputs leave the transmits undrained: the cap must hold anyway.
        if head & 0b1000_0000 == 0 {
            while node.poll_transmit().is_some() {}
        }
    }
}
