//! The messenger beside one real [`Node`], alone: a name it runs (`here`), a name nobody may
//! run (`nowhere`: its role is nobody's), and a name nobody declared.

use std::net::SocketAddr;

use super::*;
use crate::supervisor::ChildSpec;
use crate::{Action, Incarnation, InstanceId, SendFailure};

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
    instance: InstanceId,
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
        self.meet_with(name, crate::NodeMeta::default());
    }

    /// Makes `name` a live member with `meta`, by its own word.
    fn meet_with(&mut self, name: &str, meta: crate::NodeMeta) {
        let update = crate::wire::MemberUpdate {
            id: id(name),
            addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
            state: crate::MemberState::Alive,
            version: 0,
            meta,
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

    /// The runtime takes the first output, mail for `here`, and finds its mailbox full.
    fn first_mail_finds_the_mailbox_full(&mut self) {
        let Some(MessagingOutput::Mail { mail, .. }) = self.messenger.poll_output() else {
            panic!("the first output is mail");
        };
        let (now, node) = (self.now, &self.node);
        self.messenger
            .mailbox_full(now, node, child("here"), self.instance, mail);
    }

    /// The mail among the outputs, in order (the rest is dropped).
    fn mails(&mut self) -> Vec<Mail> {
        self.outputs()
            .into_iter()
            .filter_map(|output| match output {
                MessagingOutput::Mail { mail, .. } => Some(mail),
                _ => None,
            })
            .collect()
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
    assert_eq!(
        lone.messenger.stats().held_bytes,
        600 + HELD_MESSAGE_OVERHEAD
    );
    lone.advance(MessagingConfig::default().cast_wait);
    assert_eq!(
        lone.outputs(),
        vec![MessagingOutput::Dropped {
            id: Some(child("nowhere")),
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
fn a_start_begins_only_with_the_state_of_the_node_it_names_and_gets_other_members_as_conflicts() {
    let mut lone = Lone::new(MessagingConfig::default());
    let not_awaited = MessagingOutput::Dropped {
        id: Some(child("nowhere")),
        what: Dropped::State,
        reason: DropReason::NotAwaited,
    };
    // A stranger's state for the name running here is dropped on arrival.
    lone.handoff("mallory", "here", vec![7; 10]);
    assert_eq!(
        lone.outputs(),
        vec![MessagingOutput::Dropped {
            id: Some(child("here")),
            what: Dropped::State,
            reason: DropReason::NotAwaited,
        }]
    );
    assert_eq!(lone.messenger.stats().forged, 1);
    // One for a name not running here is kept, counted (its sender may be a member this
    // node has not heard of yet), and judged when an instance starts: still a stranger
    // then, it is not taken.
    lone.handoff("mallory", "nowhere", vec![7; 1_000]);
    assert_eq!(lone.outputs(), vec![]);
    assert_eq!(
        lone.messenger.stats().held_bytes,
        1_000 + EARLY_STATE_OVERHEAD
    );
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .instance_started(now, node, child("nowhere"), InstanceId::new(8), true, None);
    assert_eq!(
        lone.outputs(),
        vec![
            not_awaited,
            MessagingOutput::Mail {
                id: child("nowhere"),
                instance: InstanceId::new(8),
                mail: Mail::Begin(None),
            },
        ]
    );
    assert_eq!(lone.messenger.stats().held_bytes, 0);
    assert_eq!(lone.messenger.stats().forged, 2);
    lone.messenger
        .instance_ended(&child("nowhere"), InstanceId::new(8));

    // A member's is kept (counted with its bookkeeping) until an instance starts; one whose start names another node as
    // handing over does not begin with it, but gets it after its start as a conflict (a
    // lineage that ran while the views were in flux): nothing is lost.
    lone.meet("b");
    lone.meet("c");
    lone.handoff("b", "nowhere", vec![7; 1_000]);
    assert_eq!(lone.outputs(), vec![]);
    assert_eq!(
        lone.messenger.stats().held_bytes,
        1_000 + EARLY_STATE_OVERHEAD
    );
    let (now, node) = (lone.now, &lone.node);
    lone.messenger.instance_started(
        now,
        node,
        child("nowhere"),
        InstanceId::new(9),
        true,
        Some(&id("c")),
    );
    assert_eq!(
        lone.outputs(),
        vec![
            MessagingOutput::Mail {
                id: child("nowhere"),
                instance: InstanceId::new(9),
                mail: Mail::Begin(None),
            },
            MessagingOutput::Mail {
                id: child("nowhere"),
                instance: InstanceId::new(9),
                mail: Mail::Conflict(vec![7; 1_000]),
            },
        ]
    );
    assert_eq!(lone.messenger.stats().forged, 2);
    assert_eq!(lone.messenger.stats().held_bytes, 0);
    lone.messenger
        .instance_ended(&child("nowhere"), InstanceId::new(9));

    // From the node the start names, it is taken.
    lone.handoff("c", "nowhere", vec![8; 10]);
    let (now, node) = (lone.now, &lone.node);
    lone.messenger.instance_started(
        now,
        node,
        child("nowhere"),
        InstanceId::new(10),
        true,
        Some(&id("c")),
    );
    assert_eq!(
        lone.outputs(),
        vec![MessagingOutput::Mail {
            id: child("nowhere"),
            instance: InstanceId::new(10),
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
    lone.messenger
        .undeliverable(now, node, &child("here"), mail);
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

#[test]
fn a_cast_left_unhandled_when_its_instance_ended_waits_for_the_next_one() {
    let mut lone = Lone::new(MessagingConfig::default());
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .cast(now, node, child("here"), b"tick".to_vec())
        .expect("accepted");
    let Some(MessagingOutput::Mail { mail, .. }) = lone.messenger.poll_output() else {
        panic!("the cast is mailed");
    };
    lone.messenger.instance_ended(&child("here"), lone.instance);
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .undeliverable(now, node, &child("here"), mail);
    // Held, not dropped: the node still owns `here` and no instance runs.
    assert_eq!(lone.outputs(), vec![]);
    assert_eq!(lone.messenger.stats().held_bytes, 4 + HELD_MESSAGE_OVERHEAD);
    lone.advance(Duration::from_millis(5));
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .instance_started(now, node, child("here"), lone.instance.next(), true, None);
    lone.advance(Duration::from_millis(5));
    let mails = lone.mails();
    assert_eq!(
        mails,
        vec![
            Mail::Begin(None),
            Mail::Cast {
                payload: b"tick".to_vec()
            }
        ]
    );
    assert_eq!(lone.messenger.stats().held_bytes, 0);
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
    lone.messenger.handoff_done(
        lone.now,
        node,
        &here,
        lone.instance,
        Some(b"state".to_vec()),
    );
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

// ----- backpressure: what the transport did not take ---------------------------------------

impl Lone {
    /// `b` calls `here` as call `call`, and the instance answers it. The call's mail is
    /// left among the outputs: [`sent`](Self::sent) and
    /// [`outputs_refused`](Self::outputs_refused) leave it out.
    fn answer_for_b(&mut self, call: u64, answer: Vec<u8>) {
        let reply = CallRef {
            caller: id("b"),
            call,
            token: call,
        };
        self.messenger.handle_message(
            self.now,
            &self.node,
            &id("b"),
            AppMessage::Deliver(Delivery {
                to: child("here"),
                reply_to: Some(reply.clone()),
                payload: vec![1],
                hops: 0,
                from_previous_owner: false,
            }),
        );
        self.messenger
            .replied(self.now, &self.node, reply, Ok(answer));
    }

    /// Runs the outputs as a transport whose queue to every peer is full would: every
    /// transmit comes back. Returns the other outputs.
    fn outputs_refused(&mut self) -> Vec<MessagingOutput> {
        let mut rest = Vec::new();
        while let Some(output) = self.messenger.poll_output() {
            match output {
                MessagingOutput::Transmit(transmit) => {
                    self.messenger
                        .not_sent(self.now, &self.node, transmit, SendFailure::QueueFull);
                }
                MessagingOutput::Mail {
                    mail: Mail::Call { .. },
                    ..
                } => {}
                other => rest.push(other),
            }
        }
        rest
    }

    /// The outputs but calls' mail.
    fn sent(&mut self) -> Vec<MessagingOutput> {
        let mut outputs = self.outputs();
        outputs.retain(|output| {
            !matches!(
                output,
                MessagingOutput::Mail {
                    mail: Mail::Call { .. },
                    ..
                }
            )
        });
        outputs
    }
}

/// The answers a transmit carries, in order.
fn replies(outputs: &[MessagingOutput]) -> Vec<u64> {
    outputs
        .iter()
        .filter_map(|output| match output {
            MessagingOutput::Transmit(Transmit {
                message: Message::App(AppMessage::Reply { call, .. }),
                ..
            }) => Some(*call),
            _ => None,
        })
        .collect()
}

#[test]
fn answers_the_transport_refused_are_offered_again_in_order() {
    let mut lone = Lone::new(MessagingConfig::default());
    lone.answer_for_b(1, vec![1; 100]);
    lone.answer_for_b(2, vec![2; 100]);
    assert!(lone.outputs_refused().is_empty());
    // Sent while the first two wait: it waits behind them.
    lone.answer_for_b(3, vec![3; 100]);
    assert!(lone.sent().is_empty(), "nothing overtakes the backlog");
    let stats = lone.messenger.stats();
    assert_eq!(stats.unsent, 1, "{stats:?}");
    assert_eq!(stats.held_bytes, lone.messenger.recount_held_bytes());
    assert!(stats.held_bytes >= 300);

    // Offered again after a pause, refused again: the next pause is longer.
    lone.advance(unsent::RESEND_PAUSE);
    assert!(lone.outputs_refused().is_empty());
    lone.advance(unsent::RESEND_PAUSE);
    assert!(lone.sent().is_empty(), "the pause doubled");
    lone.advance(unsent::RESEND_PAUSE);
    assert_eq!(replies(&lone.sent()), [1, 2, 3]);
    assert_eq!(lone.messenger.stats().held_bytes, 0);
    assert_eq!(lone.messenger.recount_held_bytes(), 0);
}

#[test]
fn an_answer_that_never_finds_room_is_reported_after_the_resend_wait() {
    let config = MessagingConfig {
        resend_wait: Duration::from_millis(100),
        ..MessagingConfig::default()
    };
    let mut lone = Lone::new(config);
    let start = lone.now;
    lone.answer_for_b(1, vec![1; 10]);
    let mut reported = Vec::new();
    for _ in 0..200 {
        reported.extend(lone.outputs_refused());
        if !reported.is_empty() {
            break;
        }
        lone.advance(Duration::from_millis(10));
    }
    assert_eq!(
        reported,
        [MessagingOutput::Dropped {
            id: None,
            what: Dropped::Reply,
            reason: DropReason::Unsent,
        }]
    );
    let waited = lone.now - start;
    assert!(
        (100..200).contains(&waited.as_millis()),
        "given up after {waited:?}"
    );
    assert_eq!(lone.messenger.stats().held_bytes, 0);
}

#[test]
fn an_instance_handing_over_stops_only_once_its_state_has_left() {
    let mut lone = Lone::new(MessagingConfig::default());
    lone.meet("b");
    let (now, here, instance) = (lone.now, child("here"), lone.instance);
    assert!(
        lone.messenger
            .start_handoff(now, &lone.node, &here, instance, id("b"))
    );
    assert!(matches!(
        &lone.sent()[..],
        [MessagingOutput::Mail {
            mail: Mail::BeginHandoff,
            ..
        }]
    ));
    lone.messenger
        .handoff_done(now, &lone.node, &here, instance, Some(vec![9; 1_000]));
    assert!(
        lone.outputs_refused().is_empty(),
        "no HandoffFinished before the state left"
    );
    assert!(lone.messenger.is_handing_off(), "a leave waits for it");
    lone.advance(unsent::RESEND_PAUSE);
    let outputs = lone.sent();
    assert!(
        matches!(
            &outputs[..],
            [
                MessagingOutput::Transmit(Transmit {
                    message: Message::App(AppMessage::Handoff { state: Some(_), .. }),
                    ..
                }),
                MessagingOutput::HandoffFinished { .. },
            ]
        ),
        "{outputs:?}"
    );
    assert!(!lone.messenger.is_handing_off());
}

#[test]
fn a_backlog_for_a_peer_that_goes_is_reported_and_its_handoff_ends() {
    let mut lone = Lone::new(MessagingConfig::default());
    lone.meet("b");
    let (now, here, instance) = (lone.now, child("here"), lone.instance);
    lone.answer_for_b(1, vec![1; 10]);
    assert!(lone.outputs_refused().is_empty());
    assert!(
        lone.messenger
            .start_handoff(now, &lone.node, &here, instance, id("b"))
    );
    lone.sent();
    lone.messenger
        .handoff_done(now, &lone.node, &here, instance, Some(vec![9; 10]));
    assert!(
        lone.sent().is_empty(),
        "the handoff waits behind the answer"
    );
    lone.messenger.peer_gone(now, &lone.node, &id("b"));
    assert_eq!(
        lone.sent(),
        [
            MessagingOutput::Dropped {
                id: None,
                what: Dropped::Reply,
                reason: DropReason::Unsent,
            },
            MessagingOutput::Dropped {
                id: Some(here.clone()),
                what: Dropped::State,
                reason: DropReason::Unsent,
            },
            MessagingOutput::HandoffFinished { id: here, instance },
        ]
    );
    assert_eq!(lone.messenger.stats().held_bytes, 0);
    assert!(!lone.messenger.is_handing_off());
}

#[test]
fn what_is_too_large_to_travel_gets_a_typed_error_at_once() {
    let mut lone = Lone::new(MessagingConfig::default());
    let huge = vec![0; MAX_PAYLOAD_LEN + 1];
    let call = lone.call("here", &huge, Duration::from_secs(1));
    assert_eq!(lone.sent(), [done(call, Err(CallFailure::TooLarge))]);
    let (now, here) = (lone.now, child("here"));
    assert_eq!(
        lone.messenger
            .cast(now, &lone.node, here.clone(), huge.clone()),
        Err(CallFailure::TooLarge)
    );
    assert_eq!(lone.messenger.stats().held_bytes, 0);

    // An answer too large: the caller is told, not left to time out.
    lone.answer_for_b(1, huge);
    let outputs = lone.sent();
    assert!(
        matches!(
            &outputs[..],
            [MessagingOutput::Transmit(Transmit {
                message: Message::App(AppMessage::Reply {
                    result: Err(RemoteError::ReplyTooLarge),
                    ..
                }),
                ..
            })]
        ),
        "{outputs:?}"
    );

    // A state too large: reported, and the new node is told not to wait for one.
    lone.meet("b");
    let instance = lone.instance;
    assert!(
        lone.messenger
            .start_handoff(now, &lone.node, &here, instance, id("b"))
    );
    lone.sent();
    let state = vec![0; MAX_STATE_LEN + 1];
    lone.messenger
        .handoff_done(now, &lone.node, &here, instance, Some(state));
    let outputs = lone.sent();
    assert!(
        matches!(
            &outputs[..],
            [
                MessagingOutput::Dropped {
                    what: Dropped::State,
                    reason: DropReason::TooLarge,
                    ..
                },
                MessagingOutput::Transmit(Transmit {
                    message: Message::App(AppMessage::Handoff { state: None, .. }),
                    ..
                }),
                MessagingOutput::HandoffFinished { .. },
            ]
        ),
        "{outputs:?}"
    );
}

#[test]
fn a_long_error_text_is_cut() {
    let mut lone = Lone::new(MessagingConfig::default());
    let reply = CallRef {
        caller: id("b"),
        call: 1,
        token: 1,
    };
    let why = "é".repeat(MAX_ERROR_LEN);
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .replied(now, node, reply, Err(RemoteError::Failed(why)));
    let outputs = lone.sent();
    let Some(MessagingOutput::Transmit(Transmit {
        message:
            Message::App(AppMessage::Reply {
                result: Err(RemoteError::Failed(sent)),
                ..
            }),
        ..
    })) = outputs.first()
    else {
        panic!("{outputs:?}");
    };
    assert!(sent.len() <= MAX_ERROR_LEN && sent.len() > MAX_ERROR_LEN - 4);
}

#[test]
fn a_cast_to_a_node_whose_backlog_is_full_is_refused_while_its_sender_can_wait() {
    let config = MessagingConfig {
        max_backlog_bytes: 1_000,
        ..MessagingConfig::default()
    };
    let mut lone = Lone::new(config);
    let meta = crate::NodeMeta {
        singletons: vec![(child("there"), 1)],
        ..crate::NodeMeta::default()
    };
    lone.meet_with("b", meta);
    let (now, there) = (lone.now, child("there"));
    assert_eq!(lone.node.owner_of(&there), Some(&id("b").name));
    assert_eq!(
        lone.messenger.cast(now, &lone.node, there.clone(), vec![1]),
        Ok(())
    );
    assert_eq!(lone.sent().len(), 1, "sent");
    assert!(!lone.messenger.has_backlog());
    lone.answer_for_b(1, vec![0; 2_000]);
    assert!(lone.outputs_refused().is_empty());
    assert!(lone.messenger.has_backlog(), "the refused reply waits");
    assert_eq!(
        lone.messenger.cast(now, &lone.node, there.clone(), vec![1]),
        Err(CallFailure::Full)
    );
    lone.advance(unsent::RESEND_PAUSE);
    assert_eq!(replies(&lone.sent()), [1]);
    assert!(!lone.messenger.has_backlog(), "offered again and taken");
    lone.advance(unsent::MAX_RESEND_PAUSE);
    assert_eq!(
        lone.messenger.cast(lone.now, &lone.node, there, vec![1]),
        Ok(())
    );
}

/// Calls from `b` to `here`, as they arrive on the wire.
fn deliver_from_b(lone: &mut Lone, call: u64, payload: Vec<u8>) {
    let delivery = Delivery {
        to: child("here"),
        reply_to: Some(CallRef {
            caller: id("b"),
            call,
            token: call,
        }),
        payload,
        hops: 0,
        from_previous_owner: false,
    };
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .handle_message(now, node, &id("b"), AppMessage::Deliver(delivery));
}

/// The calls (by number) among `mails`, in order.
fn mailed_calls(mails: &[Mail]) -> Vec<u64> {
    mails
        .iter()
        .filter_map(|mail| match mail {
            Mail::Call { reply, .. } => Some(reply.call),
            _ => None,
        })
        .collect()
}

#[test]
fn a_full_mailbox_keeps_its_mail_waiting_for_room_in_order() {
    let mut lone = Lone::new(MessagingConfig::default());
    lone.meet("b");
    let (here, instance) = (child("here"), lone.instance);
    deliver_from_b(&mut lone, 1, vec![1]);
    deliver_from_b(&mut lone, 2, vec![2]);
    // The runtime finds the mailbox full at the first: the second, not taken yet, goes
    // behind it, and so does one that arrives later.
    lone.first_mail_finds_the_mailbox_full();
    assert_eq!(lone.outputs(), vec![], "nothing refused, nothing overtakes");
    deliver_from_b(&mut lone, 3, vec![3]);
    assert_eq!(lone.outputs(), vec![]);
    assert_eq!(
        lone.messenger.waiting_for_room().collect::<Vec<_>>(),
        [(&here, instance)]
    );
    // Each counts its envelope too: a flood of tiny messages is bounded in number.
    assert_eq!(
        lone.messenger.stats().held_bytes,
        3 + 3 * HELD_MESSAGE_OVERHEAD
    );
    assert!(
        lone.messenger
            .poll_timeout()
            .is_some_and(|at| at <= lone.now + room::ROOM_RECHECK),
        "the runtime is asked again soon"
    );
    // Room for two, then for the rest.
    lone.messenger.mailbox_room(lone.now, &here, instance, 2);
    assert_eq!(mailed_calls(&lone.mails()), [1, 2]);
    lone.messenger.mailbox_room(lone.now, &here, instance, 10);
    assert_eq!(mailed_calls(&lone.mails()), [3]);
    assert_eq!(lone.messenger.waiting_for_room().count(), 0);
    assert_eq!(lone.messenger.stats().held_bytes, 0);
    assert_eq!(lone.messenger.stats().refused, 0);
    // A second copy of a call that waited is still a second copy.
    deliver_from_b(&mut lone, 3, vec![3]);
    assert_eq!(lone.outputs(), vec![]);
}

#[test]
fn mail_waiting_for_room_beyond_the_budget_is_refused_with_a_typed_answer() {
    // Room for one message of 8 bytes and its envelope.
    let mut lone = Lone::new(MessagingConfig {
        max_held_bytes: 10 + HELD_MESSAGE_OVERHEAD,
        ..MessagingConfig::default()
    });
    lone.meet("b");
    let (here, instance) = (child("here"), lone.instance);
    deliver_from_b(&mut lone, 1, vec![0; 8]);
    lone.first_mail_finds_the_mailbox_full();
    deliver_from_b(&mut lone, 2, vec![0; 8]);
    let outputs = lone.outputs();
    assert!(
        matches!(
            &outputs[..],
            [MessagingOutput::Transmit(Transmit {
                message: Message::App(AppMessage::Reply {
                    call: 2,
                    result: Err(RemoteError::Overloaded),
                    ..
                }),
                ..
            })]
        ),
        "{outputs:?}"
    );
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .cast(now, node, here.clone(), vec![0; 8])
        .expect("taken: it goes to the mailbox, as far as the sender can tell");
    assert_eq!(
        lone.outputs(),
        [MessagingOutput::Dropped {
            id: Some(here.clone()),
            what: Dropped::Cast,
            reason: DropReason::Full,
        }]
    );
    assert_eq!(lone.messenger.stats().refused, 2);
    // The call that fitted still goes in.
    lone.messenger.mailbox_room(lone.now, &here, instance, 1);
    assert_eq!(mailed_calls(&lone.mails()), [1]);
}

#[test]
fn a_slow_actor_still_refuses_what_waits_beyond_its_own_bound() {
    // Room to wait for two messages of 8 bytes beyond the mailbox, whatever the node's
    // budget: a slower actor than its senders says so within a bounded delay.
    let mut lone = Lone::new(MessagingConfig {
        max_waiting_for_room_bytes: 2 * (8 + HELD_MESSAGE_OVERHEAD),
        ..MessagingConfig::default()
    });
    lone.meet("b");
    let (here, instance) = (child("here"), lone.instance);
    deliver_from_b(&mut lone, 1, vec![0; 8]);
    lone.first_mail_finds_the_mailbox_full();
    deliver_from_b(&mut lone, 2, vec![0; 8]);
    assert_eq!(lone.outputs(), vec![], "the second waits too");
    deliver_from_b(&mut lone, 3, vec![0; 8]);
    let refused: Vec<u64> = lone
        .outputs()
        .iter()
        .filter_map(|output| match output {
            MessagingOutput::Transmit(Transmit {
                message:
                    Message::App(AppMessage::Reply {
                        call,
                        result: Err(RemoteError::Overloaded),
                        ..
                    }),
                ..
            }) => Some(*call),
            _ => None,
        })
        .collect();
    assert_eq!(refused, [3]);
    lone.messenger.mailbox_room(lone.now, &here, instance, 8);
    assert_eq!(mailed_calls(&lone.mails()), [1, 2]);
}

#[test]
fn mail_waiting_for_room_is_handed_over_ahead_of_what_came_later() {
    let mut lone = Lone::new(MessagingConfig::default());
    lone.meet("b");
    let (here, instance) = (child("here"), lone.instance);
    deliver_from_b(&mut lone, 1, vec![1]);
    lone.first_mail_finds_the_mailbox_full();
    let (now, node) = (lone.now, &lone.node);
    assert!(
        lone.messenger
            .start_handoff(now, node, &here, instance, id("b"))
    );
    deliver_from_b(&mut lone, 2, vec![2]);
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .handoff_done(now, node, &here, instance, Some(vec![7]));
    let outputs = lone.outputs();
    let sent: Vec<(u64, bool)> = outputs
        .iter()
        .filter_map(|output| match output {
            MessagingOutput::Transmit(Transmit {
                message: Message::App(AppMessage::Deliver(d)),
                ..
            }) => d.reply_to.as_ref().map(|r| (r.call, d.from_previous_owner)),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [(1, true), (2, true)], "{outputs:?}");
    // Not handled here, so not among the calls the new node is told were.
    let seen = outputs.iter().find_map(|output| match output {
        MessagingOutput::Transmit(Transmit {
            message: Message::App(AppMessage::Handoff { seen, .. }),
            ..
        }) => Some(seen.iter().map(|(_, ranges)| ranges.len()).sum::<usize>()),
        _ => None,
    });
    assert_eq!(seen, Some(0), "{outputs:?}");
    assert_eq!(lone.messenger.stats().held_bytes, 0);
}

#[test]
fn mail_waiting_for_room_in_an_instance_that_ended_is_routed_again() {
    let mut lone = Lone::new(MessagingConfig::default());
    let (here, instance) = (child("here"), lone.instance);
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .cast(now, node, here.clone(), b"tick".to_vec())
        .expect("accepted");
    lone.first_mail_finds_the_mailbox_full();
    lone.messenger.instance_ended(&here, instance);
    assert_eq!(lone.messenger.waiting_for_room().count(), 0);
    lone.advance(Duration::from_millis(5));
    let (now, node) = (lone.now, &lone.node);
    lone.messenger
        .instance_started(now, node, here.clone(), instance.next(), true, None);
    lone.advance(Duration::from_millis(5));
    let casts = lone
        .outputs()
        .into_iter()
        .filter(|output| {
            matches!(output, MessagingOutput::Mail { mail: Mail::Cast { payload }, instance: i, .. }
                if payload == b"tick" && *i == instance.next())
        })
        .count();
    assert_eq!(casts, 1, "the cast reaches the next instance");
    assert_eq!(lone.messenger.stats().held_bytes, 0);
}

/// The transmits and reports a handoff given up on leaves behind: the new node hears that
/// no state comes, the loss is reported, the instance stops, and a state the instance gives
/// afterwards is not sent.
fn assert_given_up_without_state(lone: &mut Lone, outputs: &[MessagingOutput]) {
    let here = child("here");
    assert!(
        matches!(
            outputs,
            [
                MessagingOutput::Dropped {
                    what: Dropped::State,
                    reason: DropReason::NotGiven,
                    id: Some(dropped),
                },
                MessagingOutput::Transmit(Transmit {
                    message: Message::App(AppMessage::Handoff { state: None, .. }),
                    ..
                }),
                MessagingOutput::HandoffFinished { .. },
            ] if *dropped == here
        ),
        "{outputs:?}"
    );
    assert!(!lone.messenger.is_handing_off());
    let (now, instance) = (lone.now, lone.instance);
    lone.messenger
        .handoff_done(now, &lone.node, &here, instance, Some(b"late".to_vec()));
    assert_eq!(lone.outputs(), Vec::new(), "a late state is not sent");
    assert_eq!(lone.messenger.stats().held_bytes, 0);
}

/// A node whose instance of `here` was asked for its state, to hand it to `b`.
fn handing_over_to_b(config: MessagingConfig) -> Lone {
    let mut lone = Lone::new(config);
    lone.meet("b");
    let (now, here, instance) = (lone.now, child("here"), lone.instance);
    assert!(
        lone.messenger
            .start_handoff(now, &lone.node, &here, instance, id("b"))
    );
    lone.outputs();
    lone
}

#[test]
fn a_leave_before_the_state_was_given_reports_it_lost_and_tells_the_new_node() {
    let mut lone = handing_over_to_b(MessagingConfig::default());
    // The drain timeout ran out: the runtime gives the handoff up before it leaves.
    let now = lone.now;
    lone.messenger.abandon_handoffs(now, &lone.node);
    let outputs = lone.outputs();
    assert_given_up_without_state(&mut lone, &outputs);
}

#[test]
fn an_instance_that_never_gives_its_state_is_reported_at_the_handoff_timeout() {
    let config = MessagingConfig::default();
    let timeout = config.handoff_timeout;
    let mut lone = handing_over_to_b(config);
    lone.advance(timeout / 2);
    assert!(lone.messenger.is_handing_off(), "{:?}", lone.outputs());
    lone.advance(timeout / 2);
    let outputs = lone.outputs();
    assert_given_up_without_state(&mut lone, &outputs);
}
