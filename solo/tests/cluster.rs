//! The facade in-process: nodes on 127.0.0.1 with port 0, driven through the public API.
//! Every wait is bounded.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::next_matching;
use solo::{
    ChildSpec, ChildStart, Cluster, Error, Event, RestartPolicy, Scope, SupervisorEvent,
    WorkerContext, WorkerError, WorkerStopReason,
};

const BOUND: Duration = Duration::from_secs(10);

async fn idle(ctx: WorkerContext) -> Result<(), WorkerError> {
    ctx.shutdown().await;
    Ok(())
}

fn builder(name: &str) -> solo::ClusterBuilder {
    Cluster::builder()
        .node_name(name)
        .listen("127.0.0.1:0".parse().expect("addr"))
        .cookie("test-cookie.Tq7vX2pL9sK")
        .worker("idle", idle)
}

fn started(id: &str) -> impl FnMut(&Event) -> bool + '_ {
    move |e| matches!(e, Event::WorkerStarted { id: i, .. } if i.as_str() == id)
}

#[tokio::test]
async fn a_lone_node_runs_its_singleton_and_children() {
    let a = builder("a").start().await.expect("starts");
    let mut events = a.events();
    a.singleton(&"roar".parse().expect("id"), ["idle"])
        .await
        .expect("declared");
    next_matching(&mut events, BOUND, started("roar")).await;
    let spec = ChildSpec::new("job".parse().expect("id"), "idle", vec![]);
    let start = a.supervisor().start_child(spec).await.expect("started");
    assert_eq!(
        start,
        ChildStart::Alone,
        "held here only, and the answer says so"
    );
    next_matching(&mut events, BOUND, started("job")).await;
    let local = a
        .supervisor()
        .which_children(Scope::Local)
        .await
        .expect("up");
    assert_eq!(local.len(), 2);
    a.supervisor()
        .terminate_child(&"job".parse().expect("id"))
        .await
        .expect("terminated");
    next_matching(
        &mut events,
        BOUND,
        |e| matches!(e, Event::WorkerStopped { reason, .. } if *reason == WorkerStopReason::Terminated),
    )
    .await;
    a.leave().await;
    assert!(matches!(a.members().await, Err(Error::Closed)));
}

#[tokio::test]
async fn a_panicking_worker_is_restarted_by_policy_and_never_takes_the_node_down() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let a = builder("a")
        .worker("crashy", move |_ctx: WorkerContext| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                panic!("deliberate panic in a test worker");
                #[allow(unreachable_code)]
                Ok::<(), WorkerError>(())
            }
        })
        .start()
        .await
        .expect("starts");
    let mut events = a.events();
    let spec = ChildSpec::new("crashy".parse().expect("id"), "crashy", vec![])
        .restart(RestartPolicy::Permanent)
        .intensity(2, Duration::from_secs(60));
    a.supervisor().start_child(spec).await.expect("started");
    let gave_up = next_matching(&mut events, BOUND, |e| {
        matches!(e, Event::Supervisor(SupervisorEvent::GaveUp { .. }))
    })
    .await;
    assert!(
        matches!(gave_up, Event::Supervisor(SupervisorEvent::GaveUp { id }) if id.as_str() == "crashy")
    );
    // The first run and two restarts, then it was given up.
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    // The node is fine.
    assert_eq!(a.members().await.expect("up").len(), 1);
    a.leave().await;
}

#[tokio::test]
async fn an_error_exit_of_a_transient_worker_restarts_it_and_a_normal_exit_ends_it() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let a = builder("a")
        .worker("flaky", move |_ctx: WorkerContext| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err::<(), WorkerError>("first run fails".into())
                } else {
                    Ok(())
                }
            }
        })
        .start()
        .await
        .expect("starts");
    let mut events = a.events();
    let spec = ChildSpec::new("flaky".parse().expect("id"), "flaky", vec![])
        .restart(RestartPolicy::Transient);
    a.supervisor().start_child(spec).await.expect("started");
    next_matching(&mut events, BOUND, |e| {
        matches!(e, Event::Supervisor(SupervisorEvent::Completed { .. }))
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    a.leave().await;
}

#[tokio::test]
async fn bad_requests_get_typed_errors() {
    let a = builder("a").start().await.expect("starts");
    let spec = ChildSpec::new("job".parse().expect("id"), "idle", vec![]);
    a.supervisor()
        .start_child(spec.clone())
        .await
        .expect("started");
    assert!(matches!(
        a.supervisor().start_child(spec).await,
        Err(Error::Start(_))
    ));
    assert!(matches!(
        a.supervisor()
            .terminate_child(&"nope".parse().expect("id"))
            .await,
        Err(Error::Terminate(_))
    ));
    assert!(
        "".parse::<solo::ChildId>().is_err(),
        "an id is checked where it is made"
    );
    let missing = Cluster::builder()
        .listen("127.0.0.1:0".parse().expect("addr"))
        .cookie("c.Tq7vX2pL9sK4mR8w")
        .start()
        .await;
    assert!(matches!(missing, Err(solo::ClusterStartError::MissingName)));
    let taken = builder("b").listen(a.local_addr()).start().await;
    assert!(matches!(taken, Err(solo::ClusterStartError::Transport(_))));
    a.leave().await;
}

#[tokio::test]
async fn two_nodes_run_the_singleton_once_and_a_leave_hands_it_over() {
    let a = builder("a").start().await.expect("starts");
    let b = builder("b")
        .seeds([a.local_addr()])
        .start()
        .await
        .expect("starts");
    let (mut a_events, mut b_events) = (a.events(), b.events());
    // (Both streams start at the nodes' start: nothing is missed.)
    a.singleton(&"roar".parse().expect("id"), ["idle"])
        .await
        .expect("declared");
    b.singleton(&"roar".parse().expect("id"), ["idle"])
        .await
        .expect("declared");
    tokio::time::timeout(BOUND, async {
        while a.members().await.expect("up").len() < 2 || b.members().await.expect("up").len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("joined");
    let id = "roar".parse().expect("id");
    let owner = tokio::time::timeout(BOUND, async {
        loop {
            let (oa, ob) = (
                a.whereis(&id).await.expect("up"),
                b.whereis(&id).await.expect("up"),
            );
            if let Some(owner) = oa
                && Some(&owner) == ob.as_ref()
            {
                return owner;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("agreed on an owner");
    let (leaver, stayer, stayer_events) = if owner.name.as_str() == "a" {
        (&a, &b, &mut b_events)
    } else {
        (&b, &a, &mut a_events)
    };
    leaver.leave().await;
    let _ = stayer_events;
    tokio::time::timeout(BOUND, async {
        loop {
            let local = stayer
                .supervisor()
                .which_children(Scope::Local)
                .await
                .expect("up");
            if local.iter().any(|c| c.id == id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stayer runs the singleton after the leave");
    stayer.leave().await;
}

#[tokio::test]
async fn a_crashed_node_hands_nothing_over_and_the_other_takes_over() {
    // Set by a worker that heard its shutdown signal: a crash gives it none.
    static SHUT_DOWN_GRACEFULLY: AtomicUsize = AtomicUsize::new(0);
    // Workers alive in this process: an aborted one is dropped, so it counts no more.
    static ALIVE: AtomicUsize = AtomicUsize::new(0);
    struct Alive;
    impl Drop for Alive {
        fn drop(&mut self) {
            ALIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
    async fn marked(ctx: WorkerContext) -> Result<(), WorkerError> {
        ALIVE.fetch_add(1, Ordering::SeqCst);
        let _alive = Alive;
        ctx.shutdown().await;
        SHUT_DOWN_GRACEFULLY.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    let start = |name: &str, seeds: Vec<std::net::SocketAddr>| {
        builder(name).worker("marked", marked).seeds(seeds).start()
    };
    let a = start("a", vec![]).await.expect("starts");
    let b = start("b", vec![a.local_addr()]).await.expect("starts");
    let id: solo::ChildId = "roar".parse().expect("id");
    for node in [&a, &b] {
        node.singleton(&id, ["marked"]).await.expect("declared");
    }
    let owner = tokio::time::timeout(BOUND, async {
        loop {
            let (oa, ob) = (
                a.whereis(&id).await.expect("up"),
                b.whereis(&id).await.expect("up"),
            );
            let running = a
                .supervisor()
                .which_children(Scope::Global)
                .await
                .expect("up");
            if let Some(owner) = oa
                && Some(&owner) == ob.as_ref()
                && a.members().await.expect("up").len() == 2
                && running.iter().any(|c| c.id == id)
            {
                return owner;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("agreed on an owner");
    let (crashed, survivor) = if owner == *a.id() { (&a, &b) } else { (&b, &a) };
    let mut crashed_events = crashed.events();
    let mut survivor_events = survivor.events();
    // (It may have moved once, gracefully, when the second node joined.)
    let graceful_before = SHUT_DOWN_GRACEFULLY.load(Ordering::SeqCst);
    crashed.crash().await;
    assert!(matches!(crashed.members().await, Err(Error::Closed)));
    next_matching(&mut survivor_events, BOUND, started("roar")).await;
    assert_eq!(
        survivor.whereis(&id).await.expect("up"),
        Some(survivor.id().clone())
    );
    assert_eq!(
        SHUT_DOWN_GRACEFULLY.load(Ordering::SeqCst),
        graceful_before,
        "a crash gives its workers no shutdown signal"
    );
    assert_eq!(
        ALIVE.load(Ordering::SeqCst),
        1,
        "the crashed node's worker is gone"
    );
    while let Ok(event) = crashed_events.try_recv() {
        assert!(
            !matches!(event, Event::WorkerStopped { .. }),
            "a crash reports no stop: {event:?}"
        );
    }
    survivor.leave().await;
}

/// Seeds by DNS name: `localhost:PORT` resolves (to 127.0.0.1, perhaps ::1 too, which
/// nobody answers) and the node joins through it; a name without a port is refused at start
/// with a typed error naming it.
#[tokio::test]
async fn a_node_joins_through_a_seed_given_by_name() {
    let a = builder("a").start().await.expect("a starts");
    let name = format!("localhost:{}", a.local_addr().port());
    let b = builder("b")
        .seed_names([name])
        .start()
        .await
        .expect("b starts");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if b.members().await.expect("b runs").len() == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("b joins a through its name");
    assert_eq!(a.members().await.expect("a runs").len(), 2);
    let refused = builder("c").seed_names(["localhost"]).start().await;
    assert!(
        matches!(&refused, Err(solo::ClusterStartError::SeedName(e)) if e.name == "localhost"),
        "{:?}",
        refused.err()
    );
    b.leave().await;
    a.leave().await;
}
