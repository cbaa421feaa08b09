//! The messenger beside one real [`Node`], alone: a name it runs (`here`), a name nobody may
//! run (`nowhere`: its role is nobody's), and a name nobody declared.

use std::net::SocketAddr;

use super::*;
use crate::supervisor::ChildSpec;
use crate::{Action, Incarnation};

fn id(name: &str) -> NodeId {
    NodeId::new(NodeName::new(name).expect("a valid name"), Incarnation(1))
}

/// The tests' call tokens: any function other nodes cannot guess will do in production.
fn token(call: u64) -> u64 {
    call ^ 0x5EC2_E7ED
}

fn child(name: &str) -> ChildId {
    ChildId::new(name).expect("a valid child id")
}

/// A lone node running `here`, knowing `nowhere`, with a messenger told of `here`'s start.
struct Lone {
    now: Instant,
    node: Node,
    messenger: Messenger,
    instance: u64,
}

impl Lone {
    fn new(config: MessagingConfig) -> Self {
        let now = crate::test_epoch();
        let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
        let mut node = Node::builder(id("a"), addr).build(now).expect("builds");
        node.declare_singleton(now, ChildSpec::new(child("here"), "actor", Vec::new()))
            .expect("declares");
        node.declare_singleton(
            now,
            ChildSpec::new(child("nowhere"), "actor", Vec::new()).role("nobody"),
        )
        .expect("declares");
        let mut at = now;
        let instance = 'started: {
            for _ in 0..1_000 {
                while let Some(action) = node.poll_action() {
                    if let Action::Start { id, instance, .. } = action
                        && id == child("here")
                    {
                        break 'started instance;
                    }
                }
                while node.poll_transmit().is_some() {}
                at += Duration::from_millis(10);
                node.handle_timeout(at);
            }
            panic!("a lone node starts its singleton");
        };
        let mut messenger = Messenger::new(config, at, token);
        messenger.instance_started(at, &node, child("here"), instance, true, None);
        let mut lone = Self {
            now: at,
            node,
            messenger,
            instance,
        };
        assert_eq!(
            lone.outputs(),
            vec![MessagingOutput::Mail {
                id: child("here"),
                instance,
                mail: Mail::Begin(None),
            }]
        );
        lone
    }

    /// Makes `name` a live member, by its own word.
    fn meet(&mut self, name: &str) {
        let update = crate::wire::MemberUpdate {
            id: id(name),
            addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
            state: crate::MemberState::Alive,
            version: 0,
            meta: crate::NodeMeta::default(),
            ended_ms_ago: 0,
        };
        self.node.handle_message(
            self.now,
            &id(name),
            Message::Gossip {
                updates: vec![update],
            },
        );
        while self.node.poll_transmit().is_some() {}
        while self.node.poll_action().is_some() {}
        assert!(
            self.node
                .member(&id(name).name)
                .is_some_and(|m| m.state().is_live()),
            "{name} is a member"
        );
    }

    fn handoff(&mut self, from: &str, to: &str, state: Vec<u8>) {
        self.messenger.handle_message(
            self.now,
            &self.node,
            &id(from),
            AppMessage::Handoff {
                id: child(to),
                state: Some(state),
                seen: Vec::new(),
            },
        );
    }

    fn outputs(&mut self) -> Vec<MessagingOutput> {
        std::iter::from_fn(|| self.messenger.poll_output()).collect()
    }

    fn call(&mut self, target: &str, payload: &[u8], timeout: Duration) -> CallId {
        self.messenger.call(
            self.now,
            &self.node,
            child(target),
            payload.to_vec(),
            self.now + timeout,
        )
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.messenger.handle_timeout(self.now, &self.node);
    }
}

fn done(call: CallId, result: Result<Vec<u8>, CallFailure>) -> MessagingOutput {
    MessagingOutput::CallDone { call, result }
}

#[test]
fn a_call_to_a_local_instance_is_mailed_and_its_answer_ends_it() {
    let mut lone = Lone::new(MessagingConfig::default());
    let call = lone.call("here", b"ping", Duration::from_secs(1));
    let reply = CallRef {
        caller: id("a"),
        call: call.get(),
        token: token(call.get()),
    };
    assert_eq!(
        lone.outputs(),
        vec![MessagingOutput::Mail {
            id: child("here"),
            instance: lone.instance,
            mail: Mail::Call {
                payload: b"ping".to_vec(),
                reply: reply.clone(),
            },
        }]
    );
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .replied(now, node, reply, Ok(b"pong".to_vec()));
    assert_eq!(lone.outputs(), vec![done(call, Ok(b"pong".to_vec()))]);
    assert_eq!(lone.messenger.stats().pending_calls, 0);
    assert_eq!(lone.messenger.stats().held_bytes, 0);
}

#[test]
fn every_call_gets_one_outcome_by_its_deadline() {
    let mut lone = Lone::new(MessagingConfig::default());
    let unknown = lone.call("nobody-declared-this", b"", Duration::from_secs(1));
    assert_eq!(
        lone.outputs(),
        vec![done(unknown, Err(CallFailure::NoSuchName))]
    );

    // No node may run `nowhere`: the call waits for an owner, then times out, once.
    let waiting = lone.call("nowhere", b"hello", Duration::from_millis(500));
    assert_eq!(lone.outputs(), vec![]);
    assert_eq!(lone.messenger.stats().held_bytes, 5);
    lone.advance(Duration::from_millis(499));
    assert_eq!(lone.outputs(), vec![]);
    lone.advance(Duration::from_millis(1));
    assert_eq!(
        lone.outputs(),
        vec![done(waiting, Err(CallFailure::Timeout))]
    );
    lone.advance(Duration::from_secs(10));
    assert_eq!(lone.outputs(), vec![]);
    assert_eq!(lone.messenger.stats().held_bytes, 0);
}

#[test]
fn calls_beyond_the_limits_fail_at_once_with_overloaded() {
    let config = MessagingConfig {
        max_pending_calls: 2,
        max_held_bytes: 100,
        ..MessagingConfig::default()
    };
    let mut lone = Lone::new(config);
    let first = lone.call("nowhere", b"", Duration::from_secs(1));
    let second = lone.call("nowhere", b"", Duration::from_secs(1));
    let third = lone.call("nowhere", b"", Duration::from_secs(1));
    assert_eq!(
        lone.outputs(),
        vec![done(third, Err(CallFailure::Overloaded))]
    );
    lone.messenger.cancel(first);
    lone.messenger.cancel(second);
    let big = lone.call("nowhere", &[0; 101], Duration::from_secs(1));
    assert_eq!(
        lone.outputs(),
        vec![done(big, Err(CallFailure::Overloaded))]
    );
    assert_eq!(lone.messenger.stats().refused, 2);
}

#[test]
fn casts_waiting_for_an_owner_are_bounded_in_bytes_and_reported_when_dropped() {
    let config = MessagingConfig {
        max_held_bytes: 1_000,
        ..MessagingConfig::default()
    };
    let mut lone = Lone::new(config);
    let (now, node) = (lone.now, &lone.node);
    assert_eq!(
        lone.messenger
            .cast(now, node, child("nowhere"), vec![0; 600]),
        Ok(())
    );
    assert_eq!(
        lone.messenger
            .cast(now, node, child("nowhere"), vec![0; 600]),
        Err(CallFailure::Overloaded),
        "a second would not fit"
    );
    assert_eq!(lone.messenger.stats().held_bytes, 600);
    lone.advance(MessagingConfig::default().cast_wait);
    assert_eq!(
        lone.outputs(),
        vec![MessagingOutput::Dropped {
            id: child("nowhere"),
            what: Dropped::Cast,
            reason: DropReason::NoOwner,
        }]
    );
    assert_eq!(lone.messenger.stats().held_bytes, 0);
}

#[test]
fn a_call_whose_answer_would_go_to_another_node_is_ignored() {
    let mut lone = Lone::new(MessagingConfig::default());
    let forged = Delivery {
        to: child("here"),
        reply_to: Some(CallRef {
            caller: id("victim"),
            call: 1,
            token: 1,
        }),
        payload: b"work".to_vec(),
        hops: 0,
        from_previous_owner: false,
    };
    lone.messenger.handle_message(
        lone.now,
        &lone.node,
        &id("mallory"),
        AppMessage::Deliver(forged.clone()),
    );
    assert_eq!(lone.outputs(), vec![]);
    assert_eq!(lone.messenger.stats().forged, 1);
    // From the caller itself, the same call is mailed.
    lone.messenger.handle_message(
        lone.now,
        &lone.node,
        &id("victim"),
        AppMessage::Deliver(forged),
    );
    assert!(matches!(
        lone.outputs().as_slice(),
        [MessagingOutput::Mail {
            mail: Mail::Call { .. },
            ..
        }]
    ));
}

#[test]
fn a_state_is_taken_only_from_a_member_and_only_by_the_start_that_names_it() {
    let mut lone = Lone::new(MessagingConfig::default());
    let not_awaited = MessagingOutput::Dropped {
        id: child("nowhere"),
        what: Dropped::State,
        reason: DropReason::NotAwaited,
    };
    // A stranger's state is dropped on arrival.
    lone.handoff("mallory", "nowhere", vec![7; 1_000]);
    assert_eq!(lone.outputs(), vec![not_awaited.clone()]);
    assert_eq!(lone.messenger.stats().held_bytes, 0);

    // A member's is kept until an instance starts; one whose start names another node as
    // handing over does not take it.
    lone.meet("b");
    lone.meet("c");
    lone.handoff("b", "nowhere", vec![7; 1_000]);
    assert_eq!(lone.outputs(), vec![]);
    assert_eq!(lone.messenger.stats().held_bytes, 1_000);
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .instance_started(now, node, child("nowhere"), 9, true, Some(&id("c")));
    assert_eq!(
        lone.outputs(),
        vec![
            not_awaited,
            MessagingOutput::Mail {
                id: child("nowhere"),
                instance: 9,
                mail: Mail::Begin(None),
            },
        ]
    );
    assert_eq!(lone.messenger.stats().forged, 2);
    lone.messenger.instance_ended(&child("nowhere"), 9);

    // From the node the start names, it is taken.
    lone.handoff("c", "nowhere", vec![8; 10]);
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .instance_started(now, node, child("nowhere"), 10, true, Some(&id("c")));
    assert_eq!(
        lone.outputs(),
        vec![MessagingOutput::Mail {
            id: child("nowhere"),
            instance: 10,
            mail: Mail::Begin(Some(vec![8; 10])),
        }]
    );

    // A state for the instance running here is a losing duplicate's, and goes to it.
    lone.handoff("b", "here", vec![1]);
    assert_eq!(
        lone.outputs(),
        vec![MessagingOutput::Mail {
            id: child("here"),
            instance: lone.instance,
            mail: Mail::Conflict(vec![1]),
        }]
    );
    assert_eq!(lone.messenger.stats().held_bytes, 0);
}

#[test]
fn mail_for_an_instance_that_just_ended_sends_the_call_back_to_be_routed_again() {
    let mut lone = Lone::new(MessagingConfig::default());
    let call = lone.call("here", b"ping", Duration::from_secs(1));
    let Some(MessagingOutput::Mail { mail, .. }) = lone.messenger.poll_output() else {
        panic!("the call is mailed");
    };
    let (now, node) = (lone.now, &lone.node);
    lone.messenger.undeliverable(now, node, mail);
    lone.messenger.instance_ended(&child("here"), lone.instance);
    // Routed again after a pause: the node still owns `here`, and no instance runs, so it
    // waits for one; at its deadline it times out.
    lone.advance(Duration::from_millis(5));
    assert_eq!(lone.messenger.stats().pending_calls, 1);
    lone.advance(Duration::from_secs(1));
    let outputs = lone.outputs();
    assert_eq!(
        outputs.last(),
        Some(&done(call, Err(CallFailure::Timeout))),
        "{outputs:?}"
    );
}

/// Found by `fuzz::messaging_inputs`: a second stop of an instance already handing over
/// restarted the handoff, and the messages it held were lost (and their bytes never given
/// back).
#[test]
fn a_second_stop_keeps_the_handoff_under_way_and_what_it_holds() {
    let mut lone = Lone::new(MessagingConfig::default());
    lone.meet("b");
    let here = child("here");
    let (now, node) = (lone.now, &lone.node);
    assert!(
        lone.messenger
            .start_handoff(now, node, &here, lone.instance, id("b"))
    );
    let call = lone.call("here", b"held", Duration::from_secs(1));
    let (now, node) = (lone.now, &lone.node);
    assert!(
        lone.messenger
            .start_handoff(now, node, &here, lone.instance, id("b"))
    );
    assert_eq!(
        lone.messenger.stats().held_bytes,
        lone.messenger.recount_held_bytes()
    );
    lone.outputs();
    let node = &lone.node;
    lone.messenger
        .handoff_done(node, &here, lone.instance, Some(b"state".to_vec()));
    let outputs = lone.outputs();
    let held_call_sent = outputs.iter().any(|output| {
        matches!(output, MessagingOutput::Transmit(Transmit {
            message: Message::App(AppMessage::Deliver(Delivery { reply_to: Some(reply), from_previous_owner: true, .. })),
            ..
        }) if reply.call == call.get())
    });
    assert!(held_call_sent, "{outputs:?}");
    assert_eq!(
        outputs.last(),
        Some(&MessagingOutput::HandoffFinished {
            id: here,
            instance: lone.instance,
        })
    );
}

#[test]
fn an_answer_without_its_calls_token_is_ignored() {
    let mut lone = Lone::new(MessagingConfig::default());
    lone.meet("b");
    let call = lone.call("here", b"ping", Duration::from_secs(1));
    lone.outputs();
    for (from, token) in [("b", token(call.get()) ^ 1), ("b", 0)] {
        lone.messenger.handle_message(
            lone.now,
            &lone.node,
            &id(from),
            AppMessage::Reply {
                call: call.get(),
                token,
                result: Ok(b"forged".to_vec()),
            },
        );
    }
    assert_eq!(lone.outputs(), vec![]);
    assert_eq!(lone.messenger.stats().forged, 2);
    // The real answer, with the token the call carried, still ends it.
    let reply = CallRef {
        caller: id("a"),
        call: call.get(),
        token: token(call.get()),
    };
    lone.messenger
        .replied(lone.now, &lone.node, reply, Ok(b"pong".to_vec()));
    assert_eq!(lone.outputs(), vec![done(call, Ok(b"pong".to_vec()))]);
}
