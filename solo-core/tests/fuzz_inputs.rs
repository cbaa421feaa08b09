//! The fuzz targets' bodies ([`solo_core::testing::fuzz`]) under `cargo test`, on stable:
//! proptest's structured random inputs (random bytes, valid frames with bytes flipped, and
//! sequences of either into one node). CI runs them from a fixed seed
//! (`PROPTEST_RNG_SEED`); `SOLO_FUZZ_CASES=N` runs N cases each (default 256). The
//! coverage-guided targets over the same bodies are in `fuzz/` (see the README).

use proptest::prelude::*;
use solo_core::testing::{env_u64, fuzz};
use solo_core::wire::{self, MemberUpdate, Message};
use solo_core::{ChildId, Incarnation, MemberState, NodeId, NodeMeta, NodeName};

fn cases() -> u32 {
    env_u64("SOLO_FUZZ_CASES")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(256)
}

fn node_id() -> impl Strategy<Value = NodeId> {
    (0..64u8, prop_oneof![0..3u64, Just(u64::MAX)]).prop_map(|(n, inc)| {
        NodeId::new(
            NodeName::new(format!("p{n}")).expect("valid"),
            Incarnation(inc),
        )
    })
}

fn update() -> impl Strategy<Value = MemberUpdate> {
    let version = prop_oneof![0..4u64, Just(u64::MAX), any::<u64>()];
    let age = prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()];
    (node_id(), 0..4u8, version, 0..3usize, age).prop_map(|(id, state, version, roles, age)| {
        MemberUpdate {
            ended_ms_ago: age,
            id,
            addr: "10.0.0.2:7000".parse().expect("addr"),
            state: [
                MemberState::Alive,
                MemberState::Suspect,
                MemberState::Down,
                MemberState::Left,
            ][usize::from(state)],
            version,
            meta: NodeMeta {
                roles: (0..roles).map(|r| format!("r{r}")).collect(),
                ..NodeMeta::default()
            },
        }
    })
}

/// Valid messages of the kinds a peer sends most, to be mutated.
fn message() -> impl Strategy<Value = Message> {
    let child = (0..8u8).prop_map(|c| ChildId::new(format!("c{c}")).expect("valid"));
    prop_oneof![
        proptest::collection::vec(update(), 0..6).prop_map(|updates| Message::Gossip { updates }),
        (proptest::collection::vec(update(), 0..6), any::<bool>())
            .prop_map(|(members, reply)| Message::Sync { members, reply }),
        (
            any::<u32>(),
            node_id(),
            proptest::collection::vec(update(), 0..4),
            any::<u64>()
        )
            .prop_map(|(seq, target, updates, children)| Message::Ping {
                seq,
                target,
                updates,
                children,
            }),
        (
            any::<u32>(),
            proptest::collection::vec((child.clone(), any::<u64>()), 0..4)
        )
            .prop_map(|(seq, leases)| Message::LeaseRequest { seq, leases }),
        (any::<u32>(), any::<u32>(), any::<u128>())
            .prop_map(|(seq, count, digest)| Message::LeaseRenew { seq, count, digest }),
        proptest::collection::vec((child, any::<u64>()), 0..4)
            .prop_map(|leases| Message::LeaseRelease { leases }),
    ]
}

/// `message`'s frame with some bytes overwritten.
fn mutated(message: &Message, flips: &[(usize, u8)]) -> Vec<u8> {
    let mut frame = wire::encode_frame(message).expect("a valid message encodes");
    for &(at, byte) in flips {
        let len = frame.len();
        frame[at % len] = byte;
    }
    frame
}

/// The input [`fuzz::node_inputs`] reads: each frame from peer `who`, then time passing.
fn as_node_inputs(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (who, frame) in frames {
        data.push((who % 16) << 3);
        let len = u16::try_from(frame.len()).unwrap_or(u16::MAX);
        data.extend_from_slice(&len.to_le_bytes());
        data.extend_from_slice(&frame[..usize::from(len)]);
        data.extend_from_slice(&[0b111, 3]);
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_bytes_as_a_frame(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz::frame(&data);
    }

    #[test]
    fn valid_frames_with_bytes_flipped(
        message in message(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    ) {
        fuzz::frame(&mutated(&message, &flips));
    }

    #[test]
    fn random_input_sequences_into_a_node(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        fuzz::node_inputs(&data);
    }

    #[test]
    fn frames_valid_and_mutated_into_a_node(
        frames in proptest::collection::vec(
            (any::<u8>(), message(), proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3)),
            1..40,
        ),
    ) {
        let frames: Vec<(u8, Vec<u8>)> = frames
            .iter()
            .map(|(who, message, flips)| (*who, mutated(message, flips)))
            .collect();
        fuzz::node_inputs(&as_node_inputs(&frames));
    }
}

/// Runtime messages as a peer could send them, extremes included.
fn app_message() -> impl Strategy<Value = Message> {
    use solo_core::wire::{AppMessage, CallRef, Delivery, RemoteError};
    let child = prop_oneof![
        Just("here".to_owned()),
        Just("nowhere".to_owned()),
        (0..4u8).prop_map(|c| format!("c{c}")),
    ]
    .prop_map(|name| ChildId::new(name).expect("valid"));
    let call = prop_oneof![0..16u64, Just(u64::MAX), any::<u64>()];
    let reply_to = proptest::option::of((node_id(), call.clone(), any::<u64>()).prop_map(
        |(caller, call, token)| CallRef {
            caller,
            call,
            token,
        },
    ));
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..16),
        (0..3_000usize).prop_map(|n| vec![0; n]),
    ];
    let ranges = proptest::collection::vec(
        (
            node_id(),
            proptest::collection::vec((call.clone(), call.clone()), 0..3),
        ),
        0..3,
    );
    let app = prop_oneof![
        (
            child.clone(),
            reply_to,
            payload.clone(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(to, reply_to, payload, hops, from_previous_owner)| {
                AppMessage::Deliver(Delivery {
                    to,
                    reply_to,
                    payload,
                    hops,
                    from_previous_owner,
                })
            }),
        (call, any::<u64>(), any::<bool>(), payload.clone()).prop_map(
            |(call, token, ok, bytes)| AppMessage::Reply {
                call,
                token,
                result: if ok {
                    Ok(bytes)
                } else {
                    Err(RemoteError::NotHere)
                },
            }
        ),
        (child, proptest::option::of(payload), ranges)
            .prop_map(|(id, state, seen)| AppMessage::Handoff { id, state, seen }),
    ];
    prop_oneof![app.prop_map(Message::App), message()]
}

/// One input of [`fuzz::messaging_inputs`]: a frame from a peer, a call or cast made here,
/// the local instance acting, or time passing.
fn messaging_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            any::<u8>(),
            app_message(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..2)
        )
            .prop_map(|(who, message, flips)| {
                let frame = if flips.is_empty() {
                    wire::encode_frame(&message).expect("a valid message encodes")
                } else {
                    mutated(&message, &flips)
                };
                let len = u16::try_from(frame.len()).unwrap_or(u16::MAX);
                let mut input = vec![((who % 32) << 3) | (who % 3)];
                input.extend_from_slice(&len.to_le_bytes());
                input.extend_from_slice(&frame[..usize::from(len)]);
                input
            }),
        (any::<u8>(), any::<u8>()).prop_map(|(who, arg)| vec![(who << 3) | 3, arg]),
        (any::<u8>(), any::<u8>()).prop_map(|(who, arg)| vec![(who << 3) | 4, arg]),
        any::<u8>().prop_map(|who| vec![(who << 3) | 5]),
        any::<u8>().prop_map(|who| vec![(who << 3) | 6]),
        any::<u8>().prop_map(|arg| vec![7, arg]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_input_sequences_into_a_messenger(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        fuzz::messaging_inputs(&data);
    }

    #[test]
    fn runtime_messages_calls_and_time_into_a_messenger(
        inputs in proptest::collection::vec(messaging_input(), 1..80),
    ) {
        fuzz::messaging_inputs(&inputs.concat());
    }
}
