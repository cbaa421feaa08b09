//! `Exclusive` mode through the facade, in-process: nodes on 127.0.0.1 with port 0.
//! Every wait is bounded.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::next_matching;
use solo::{ChildSpec, Cluster, Error, Event, MemberEvent, Mode, WorkerContext, WorkerError};

const BOUND: Duration = Duration::from_secs(15);

/// The tokens the `fenced` workers saw in their context, by node.
type Seen = Arc<Mutex<Vec<(String, Option<u64>)>>>;

fn builder(name: &str, voters: &[&str], seen: &Seen) -> solo::ClusterBuilder {
    let seen = Arc::clone(seen);
    Cluster::builder()
        .node_name(name)
        .listen("127.0.0.1:0".parse().expect("addr"))
        .cookie("k9Qe4tXv2Lm8Rz7w-test")
        .voters(voters.iter().copied())
        .worker("fenced", move |ctx: WorkerContext| {
            let seen = Arc::clone(&seen);
            async move {
                assert!(
                    ctx.lease_valid(),
                    "an exclusive worker starts under a valid lease"
                );
                let entry = (ctx.node().name.to_string(), ctx.fencing_token());
                seen.lock().expect("lock").push(entry);
                tokio::select! {
                    () = ctx.shutdown() => {}
                    () = ctx.lease_lost() => {}
                }
                Ok::<(), WorkerError>(())
            }
        })
}

fn lock_spec() -> ChildSpec {
    ChildSpec::new("lock".parse().expect("id"), "fenced", vec![]).mode(Mode::Exclusive)
}

fn started_token(event: &Event) -> Option<u64> {
    match event {
        Event::WorkerStarted { id, token, .. } if id.as_str() == "lock" => *token,
        _ => None,
    }
}

#[tokio::test]
async fn an_exclusive_singleton_runs_under_a_token_and_moves_gracefully_under_a_larger_one() {
    let seen: Seen = Arc::default();
    let voters = ["a", "b", "c"];
    let a = builder("a", &voters, &seen).start().await.expect("a");
    let seed = a.local_addr();
    let b = builder("b", &voters, &seen)
        .seeds([seed])
        .start()
        .await
        .expect("b");
    let c = builder("c", &voters, &seen)
        .seeds([seed])
        .start()
        .await
        .expect("c");
    let nodes = [a, b, c];
    let mut events: Vec<_> = nodes.iter().map(Cluster::events).collect();
    for node in &nodes {
        node.declare_singleton(lock_spec()).await.expect("declared");
    }
    // The first start, wherever it is.
    let (first, token) = tokio::time::timeout(BOUND, async {
        loop {
            for (i, rx) in events.iter_mut().enumerate() {
                while let Ok(event) = rx.try_recv() {
                    if let Some(token) = started_token(&event) {
                        return (i, token);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the exclusive singleton starts");
    let owner_name = nodes[first].id().name.to_string();
    assert_eq!(
        seen.lock().expect("lock").last(),
        Some(&(owner_name, Some(token))),
        "the worker reads the event's token from its context"
    );
    // The owner leaves: the singleton moves with a larger token, in milliseconds.
    let left_at = Instant::now();
    nodes[first].leave().await;
    let (taker, new_token) = tokio::time::timeout(BOUND, async {
        loop {
            for (i, rx) in events.iter_mut().enumerate().filter(|(i, _)| *i != first) {
                while let Ok(event) = rx.try_recv() {
                    if let Some(t) = started_token(&event) {
                        return (i, t);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("another node takes it over");
    let gap = left_at.elapsed();
    assert!(new_token > token, "{new_token} is above {token}");
    // A graceful move releases the lease: it never waits one out (2 s by default).
    assert!(gap < Duration::from_secs(1), "the move took {gap:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, rx) in events.iter_mut().enumerate() {
        while let Ok(event) = rx.try_recv() {
            assert!(
                started_token(&event).is_none() || i == taker,
                "a second node started it: {event:?}"
            );
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        if i != first {
            node.leave().await;
        }
    }
}

#[tokio::test]
async fn an_exclusive_singleton_needs_voters() {
    let seen: Seen = Arc::default();
    let a = builder("a", &[], &seen).start().await.expect("a");
    let refused = a.declare_singleton(lock_spec()).await;
    assert!(
        matches!(
            refused,
            Err(Error::Declare(solo::core::DeclareError::NoVoters))
        ),
        "{refused:?}"
    );
    a.leave().await;
}

#[tokio::test]
async fn a_node_configured_with_other_voters_is_never_admitted() {
    let seen: Seen = Arc::default();
    let a = builder("a", &["a", "b", "c"], &seen)
        .start()
        .await
        .expect("a");
    let mut events = a.events();
    let d = builder("d", &["a", "b", "x"], &seen)
        .seeds([a.local_addr()])
        .start()
        .await
        .expect("d");
    // The misconfigured node hears why, once.
    let mut d_events = d.events();
    let told = next_matching(&mut d_events, BOUND, |e| {
        matches!(e, Event::PeerMisconfigured { .. })
    })
    .await;
    let Event::PeerMisconfigured { addr, reason } = told else {
        unreachable!("matched above")
    };
    assert_eq!(addr, a.local_addr());
    assert!(
        reason.contains("voters") && reason.contains('x'),
        "{reason}"
    );
    // A node with the same voters would be up within milliseconds.
    let admitted = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(Event::Member(MemberEvent::Up(id))) = events.recv().await
                && id.name.as_str() == "d"
            {
                return;
            }
        }
    })
    .await;
    assert!(
        admitted.is_err(),
        "a node with other voters became a member"
    );
    d.leave().await;
    a.leave().await;
}

#[tokio::test]
async fn a_voter_with_a_data_dir_never_grants_a_token_twice_across_restarts() {
    let dir = std::env::temp_dir().join(format!("solo-exclusive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let seen: Seen = Arc::default();
    let mut tokens = Vec::new();
    for run in 0..2u64 {
        // An explicit, small incarnation: tokens can only come from the data directory.
        let a = builder("a", &["a"], &seen)
            .incarnation(run + 1)
            .data_dir(&dir)
            .start()
            .await
            .expect("a");
        let mut events = a.events();
        a.declare_singleton(lock_spec()).await.expect("declared");
        let event = next_matching(&mut events, BOUND, |e| started_token(e).is_some()).await;
        tokens.extend(started_token(&event));
        a.leave().await;
    }
    let on_disk: u64 = std::fs::read_to_string(dir.join("lease-tokens"))
        .expect("the data directory holds the tokens")
        .trim()
        .parse()
        .expect("a number");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        tokens[1] > tokens[0],
        "tokens rose across the restart: {tokens:?}"
    );
    assert!(on_disk >= tokens[1], "{on_disk} covers every token granted");
}
