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

/// One of the four peers the targets hear from, `i` naming it and its incarnation (two
/// each, so that a newer process of a name appears too).
fn peer(i: u8) -> NodeId {
    let name = match NodeName::new(format!("p{}", i % 4)) {
        Ok(name) => name,
        Err(e) => panic!("a valid name: {e}"),
    };
    NodeId::new(name, Incarnation(u64::from(i / 4 % 2) + 1))
}

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

/// The caps [`messaging_inputs`] runs its messenger with: small, so that floods reach them.
const MAX_PENDING_CALLS: usize = 8;
const MAX_HELD_BYTES: usize = 4_096;

/// A [`Messenger`](crate::messaging::Messenger) beside a lone node that runs the singleton
/// `here` (and knows `nowhere`, which no node may run), fed what `data` describes: frames
/// from four peers (a runtime message goes to the messenger, any other to the node, so
/// peers can become members), calls and casts made here, time passing, and the local
/// instance answering its mail, handing over or ending. Each input is one byte saying what
/// it is and from whom, then its bytes as [`node_inputs`] reads them.
///
/// After every input: the messenger's calls and held bytes are within their caps, no call
/// has two outcomes, and every call whose deadline has passed has had its one outcome.
pub fn messaging_inputs(data: &[u8]) {
    use std::collections::{BTreeMap, BTreeSet};

    use crate::messaging::{CallId, Mail, MessagingConfig, MessagingOutput, Messenger};
    use crate::supervisor::ChildSpec;
    use crate::wire::{Message, RemoteError};
    use crate::{Action, ChildId, SendFailure};

    let valid = |e: &dyn std::fmt::Display| -> ! { panic!("a valid fuzzing setup: {e}") };
    let child = |name: &str| ChildId::new(name).unwrap_or_else(|e| valid(&e));
    let me = NodeId::new(
        NodeName::new("me").unwrap_or_else(|e| valid(&e)),
        Incarnation(1),
    );
    #[allow(clippy::disallowed_methods)] // the only clock read; inputs move time forward
    let mut now = Instant::now();
    let mut node = Node::builder(me, SocketAddr::from(([10, 0, 0, 1], 7000)))
        .build(now)
        .unwrap_or_else(|e| valid(&e));
    let names = [child("here"), child("nowhere"), child("undeclared")];
    node.declare_singleton(now, ChildSpec::new(names[0].clone(), "actor", Vec::new()))
        .unwrap_or_else(|e| valid(&e));
    node.declare_singleton(
        now,
        ChildSpec::new(names[1].clone(), "actor", Vec::new()).role("nobody"),
    )
    .unwrap_or_else(|e| valid(&e));
    let mut instance = None;
    for _ in 0..100 {
        while let Some(action) = node.poll_action() {
            if let Action::Start {
                id, instance: i, ..
            } = action
                && id == names[0]
            {
                instance = Some(i);
            }
        }
        while node.poll_transmit().is_some() {}
        if instance.is_some() {
            break;
        }
        now += Duration::from_millis(10);
        node.handle_timeout(now);
    }
    let Some(mut instance) = instance else {
        panic!("a lone node starts its singleton");
    };
    let config = MessagingConfig {
        max_pending_calls: MAX_PENDING_CALLS,
        max_held_bytes: MAX_HELD_BYTES,
        ..MessagingConfig::default()
    };
    // Tokens a peer's random frames hit only by chance: forged answers are ignored.
    let mut messenger =
        Messenger::new(config, now, |call| call.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    messenger.instance_started(now, &node, names[0].clone(), instance, true, None);

    let mut deadlines: BTreeMap<CallId, Instant> = BTreeMap::new();
    let mut done: BTreeSet<CallId> = BTreeSet::new();
    // Calls mailed to the local instance and not yet answered (at most 64 kept).
    let mut mailed: Vec<crate::wire::CallRef> = Vec::new();
    // Whether the transport refuses what the messenger sends (its queues are full).
    let mut refusing = false;
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        rest = tail;
        let arg = rest.first().copied().unwrap_or(0);
        match head & 0b111 {
            0..=2 => {
                let (len, tail) = match rest {
                    [a, b, tail @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), tail),
                    _ => (rest.len(), &[][..]),
                };
                let (frame, tail) = tail.split_at(len.min(tail.len()));
                rest = tail;
                let from = peer(head >> 3);
                match wire::decode_frame(frame) {
                    Ok(Message::App(message)) => {
                        messenger.handle_message(now, &node, &from, message);
                    }
                    Ok(message) => node.handle_message(now, &from, message),
                    Err(_) => {}
                }
            }
            3 => {
                rest = rest.get(1..).unwrap_or_default();
                let target = names[usize::from(arg % 3)].clone();
                let timeout = Duration::from_millis(u64::from(head >> 3) * 50);
                let payload = vec![0; usize::from(arg) * 8];
                let call = messenger.call(now, &node, target, payload, now + timeout);
                assert!(
                    deadlines.insert(call, now + timeout).is_none(),
                    "a call id is given once"
                );
            }
            4 => {
                rest = rest.get(1..).unwrap_or_default();
                let target = names[usize::from(arg % 3)].clone();
                let _ = messenger.cast(now, &node, target, vec![0; usize::from(arg) * 8]);
            }
            5 => {
                // The local instance answers its oldest call, or sends it back unhandled.
                if !mailed.is_empty() {
                    let reply = mailed.remove(0);
                    let result = if head & 0b1000 == 0 {
                        Ok(vec![1])
                    } else {
                        Err(RemoteError::NotHere)
                    };
                    messenger.replied(now, &node, reply, result);
                }
            }
            6 => match head >> 3 & 0b11 {
                0 => {
                    let to = peer(head >> 5);
                    let _ = messenger.start_handoff(now, &node, &names[0], instance, to);
                }
                1 => messenger.handoff_done(now, &node, &names[0], instance, Some(vec![2; 16])),
                2 => {
                    messenger.instance_ended(&names[0], instance);
                    instance = instance.next();
                    messenger.instance_started(now, &node, names[0].clone(), instance, true, None);
                }
                _ => messenger.peer_gone(now, &node, &peer(head >> 5)),
            },
            _ => {
                rest = rest.get(1..).unwrap_or_default();
                // The transport's queues fill up, or have room again.
                refusing = arg & 1 == 1;
                now += Duration::from_millis(u64::from(arg >> 1) * 20);
                node.handle_timeout(now);
            }
        }
        messenger.handle_timeout(now, &node);
        while node.poll_action().is_some() {}
        while node.poll_transmit().is_some() {}
        while let Some(output) = messenger.poll_output() {
            match output {
                MessagingOutput::Transmit(transmit) if refusing => {
                    messenger.not_sent(now, &node, transmit, SendFailure::QueueFull);
                }
                MessagingOutput::CallDone { call, .. } => {
                    assert!(
                        deadlines.contains_key(&call),
                        "an outcome for a call never made"
                    );
                    assert!(done.insert(call), "two outcomes for {call:?}");
                }
                MessagingOutput::Mail {
                    mail: Mail::Call { reply, .. },
                    ..
                } if mailed.len() < 64 => mailed.push(reply),
                _ => {}
            }
        }
        let stats = messenger.stats();
        assert!(stats.pending_calls <= MAX_PENDING_CALLS, "{stats:?}");
        assert!(stats.held_bytes <= MAX_HELD_BYTES, "{stats:?}");
        assert_eq!(
            stats.held_bytes,
            messenger.recount_held_bytes(),
            "the byte budget counts what is held"
        );
        for (call, deadline) in &deadlines {
            assert!(
                *deadline > now || done.contains(call),
                "{call:?} is past its deadline without an outcome"
            );
        }
    }
}
