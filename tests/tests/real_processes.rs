//! Real-process tests: several `solo-node` processes on 127.0.0.1, each test with its own
//! processes on fresh ports, killed by PID when the test ends (pass or fail).
//!
//! Every wait is bounded and generous: these are functional checks ("another node takes the
//! singleton over"), never timing assertions; the failover bench measures the timings.

use std::time::{Duration, Instant};

use tests::{
    Node, NodeEvent, NodeSpec, Wire, WireKind, cluster_specs, dump_all, free_addr, now_us,
    run_to_exit, settled_owner, settled_owner_for, solo_node_binary, test_cookie, use_wire,
    wait_any, wait_full_mesh,
};

/// Runs each scenario once per transport, as `scenario::tcp`, `scenario::tls` and
/// `scenario::quic`.
macro_rules! over_each_wire {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::WireKind;
            #[test]
            fn tcp() {
                super::$scenario(WireKind::Tcp);
            }
            #[test]
            fn tls() {
                super::$scenario(WireKind::Tls);
            }
            #[test]
            fn quic() {
                super::$scenario(WireKind::Quic);
            }
        }
    )*};
}

over_each_wire!(
    sigkill_of_the_owner_moves_the_singleton,
    sigstop_of_the_owner_moves_the_singleton_and_sigcont_resolves_the_duplicate,
    a_node_with_the_wrong_cookie_never_becomes_a_member,
    a_restarted_node_rejoins_as_a_new_incarnation,
    sigterm_of_the_owner_hands_the_singleton_over_and_exits_cleanly,
    a_frozen_owner_replaced_by_a_new_process_stops_at_once_when_resumed,
);

/// The certificate checks, over both transports that have certificates.
mod a_node_with_a_certificate_from_another_ca_never_becomes_a_member {
    use super::WireKind;
    #[test]
    fn tls() {
        super::a_node_with_a_certificate_from_another_ca_never_becomes_a_member(WireKind::Tls);
    }
    #[test]
    fn quic() {
        super::a_node_with_a_certificate_from_another_ca_never_becomes_a_member(WireKind::Quic);
    }
}

/// The singleton every test declares.
const SINGLETON: &str = "s";
/// A cookie for the tests that start a node alone.
const COOKIE: &str = "Zr8Lq2Vx7KmT4pW9";

/// How long a fresh cluster gets to form and settle on a loaded 2-core machine.
const FORM: Duration = Duration::from_secs(30);

/// How long a fresh cluster gets to report a full mesh (it takes milliseconds when it works).
const MESH: Duration = Duration::from_secs(10);

fn is_start(e: &NodeEvent, after_us: u64) -> bool {
    e.event == "worker_started" && e.field("name") == Some(SINGLETON) && e.ts_us >= after_us
}

fn is_member(e: &NodeEvent, kind: &str, id: &str) -> bool {
    e.event == kind && e.field("member") == Some(id)
}

/// How many fresh clusters a feature test tries before it gives up on forming one: one. A
/// cluster that does not form a full mesh is a bug (solo-node once lost `member_up` events
/// raised while it started), not bad luck, so it fails the test.
const FORM_ATTEMPTS: usize = 1;

/// Starts 3-node clusters declaring [`SINGLETON`] until one forms a full mesh (every node
/// prints `member_up` for every other), at most [`FORM_ATTEMPTS`] times.
///
fn full_mesh(cookie: &str, wire: WireKind) -> Vec<Node> {
    let binary = solo_node_binary(false);
    for attempt in 1..=FORM_ATTEMPTS {
        let mut specs = cluster_specs(3, cookie, &[SINGLETON]);
        use_wire(&binary, &mut specs, wire);
        let nodes: Vec<Node> = specs
            .into_iter()
            .map(|spec| Node::start(&binary, spec))
            .collect();
        if wait_full_mesh(&nodes, MESH) {
            return nodes;
        }
        eprintln!(
            "attempt {attempt}: the cluster did not form a full mesh:\n{}",
            dump_all(&nodes)
        );
    }
    panic!("no cluster formed a full mesh in {FORM_ATTEMPTS} attempts");
}

/// [`full_mesh`], then waits for a settled owner; returns the nodes and the owner's index.
fn formed_cluster(cookie: &str, wire: WireKind) -> (Vec<Node>, usize) {
    let nodes = full_mesh(cookie, wire);
    let owner = settled_owner(&nodes, SINGLETON, FORM)
        .unwrap_or_else(|| panic!("no settled owner:\n{}", dump_all(&nodes)));
    (nodes, owner)
}

#[test]
fn every_node_reports_every_member_up() {
    // A cold start (all nodes at once) and a late joiner, several times: every node must
    // print `member_up` for every other. A node can learn of members while it starts, so
    // this checks that no such event is lost before the printer subscribes.
    let binary = solo_node_binary(false);
    for round in 0..10 {
        let mut specs = cluster_specs(4, "mesh", &[SINGLETON]);
        let late = specs.pop().expect("four specs");
        for spec in &mut specs {
            spec.seeds.retain(|seed| *seed != late.addr);
        }
        let mut nodes: Vec<Node> = specs
            .into_iter()
            .map(|spec| Node::start(&binary, spec))
            .collect();
        assert!(
            wait_full_mesh(&nodes, MESH),
            "round {round}: a cold-started cluster of 3 did not report a full mesh:\n{}",
            dump_all(&nodes)
        );
        nodes.push(Node::start(&binary, late));
        assert!(
            wait_full_mesh(&nodes, MESH),
            "round {round}: a late joiner and the cluster did not report each other:\n{}",
            dump_all(&nodes)
        );
    }
}

/// The id (`name#incarnation`) under which `observer` last saw `name` come up.
fn member_id(observer: &Node, name: &str) -> String {
    observer
        .member_ups(name)
        .pop()
        .unwrap_or_else(|| panic!("{} never saw {name} up", observer.spec.name))
}

fn sigkill_of_the_owner_moves_the_singleton(wire: WireKind) {
    let (mut nodes, owner) = formed_cluster("sigkill", wire);
    let killed = nodes.remove(owner);
    let killed_at = now_us();
    killed.signal("KILL");
    let survivors: Vec<&Node> = nodes.iter().collect();
    let takeover = wait_any(&survivors, Duration::from_secs(5), |e| {
        is_start(e, killed_at)
    });
    assert!(
        takeover.is_some(),
        "no survivor started the singleton within 5 s of the SIGKILL of {}:\n{}",
        killed.spec.name,
        dump_all(&nodes)
    );
    assert!(
        settled_owner_for(&nodes, SINGLETON, Duration::from_secs(1), FORM).is_some(),
        "the survivors did not settle on one running instance:\n{}",
        dump_all(&nodes)
    );
}

fn sigstop_of_the_owner_moves_the_singleton_and_sigcont_resolves_the_duplicate(wire: WireKind) {
    let (nodes, owner) = formed_cluster("sigstop", wire);
    let frozen = &nodes[owner];
    let frozen_id = member_id(&nodes[(owner + 1) % 3], &frozen.spec.name);
    let others: Vec<&Node> = (0..3).filter(|&i| i != owner).map(|i| &nodes[i]).collect();
    let stopped_at = now_us();
    frozen.signal("STOP");
    let takeover = wait_any(&others, Duration::from_secs(10), |e| {
        is_start(e, stopped_at)
    });
    let continued_at = now_us();
    frozen.signal("CONT");
    assert!(
        takeover.is_some(),
        "no other node started the singleton within 10 s of the SIGSTOP of {}:\n{}",
        frozen.spec.name,
        dump_all(&nodes)
    );
    // The silent node was declared Down (not merely missed): that is what moved the singleton.
    for other in &others {
        assert!(
            other
                .wait_seen(FORM, |e| is_member(e, "member_down", &frozen_id))
                .is_some(),
            "{} never declared {frozen_id} down:\n{}",
            other.spec.name,
            dump_all(&nodes)
        );
    }
    // Continued, the frozen node learns it was declared Down, refutes and rejoins; one of the
    // two running instances stops.
    let Some(winner) = settled_owner_for(&nodes, SINGLETON, Duration::from_secs(1), FORM) else {
        panic!(
            "after SIGCONT, the cluster did not settle on exactly one running instance:\n{}",
            dump_all(&nodes)
        );
    };
    for other in &others {
        assert!(
            other
                .wait_seen(FORM, |e| e.event == "member_up"
                    && e.ts_us >= continued_at
                    && e.field("member").is_some_and(
                        |m| m.starts_with(&format!("{}#", frozen.spec.name))
                    ))
                .is_some(),
            "{} never saw {} back up after SIGCONT:\n{}",
            other.spec.name,
            frozen.spec.name,
            dump_all(&nodes)
        );
    }
    // The resumed node tells its own operator that it was accused and is back.
    assert!(
        frozen
            .wait_seen(FORM, |e| is_member(e, "member_refuted", &frozen_id))
            .is_some(),
        "{} never reported refuting its own accusation:\n{}",
        frozen.spec.name,
        dump_all(&nodes)
    );
    // The settled owner really is the only one roaring: over the next two roars of the
    // winner, no other node roars.
    let mark = now_us();
    let mut roars = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while roars < 2 && Instant::now() < deadline {
        if nodes[winner]
            .wait_for(Duration::from_secs(2), |e| {
                e.event == "roar" && e.ts_us >= mark
            })
            .is_some()
        {
            roars += 1;
        }
    }
    assert_eq!(
        roars, 2,
        "the winner {} stopped roaring",
        nodes[winner].spec.name
    );
    for (i, node) in nodes.iter().enumerate().filter(|&(i, _)| i != winner) {
        assert!(
            !node.has_seen(|e| e.event == "roar" && e.ts_us >= mark),
            "node {i} ({}) still roars next to the winner {}:\n{}",
            node.spec.name,
            nodes[winner].spec.name,
            dump_all(&nodes)
        );
    }
}

/// Starts `specs` (three nodes, the third a stranger that must be refused), waits until the
/// two good nodes formed a cluster, then checks for 3 s that nobody admits anybody across
/// the boundary.
fn assert_the_stranger_stays_out(specs: Vec<NodeSpec>) {
    let binary = solo_node_binary(false);
    let stranger_name = specs[2].name.clone();
    let nodes: Vec<Node> = specs
        .into_iter()
        .map(|spec| Node::start(&binary, spec))
        .collect();
    // The two good nodes form a cluster (so both sides are up and dialling each other).
    assert!(
        wait_full_mesh(&nodes[..2], MESH),
        "the good nodes did not report each other up:\n{}",
        dump_all(&nodes)
    );
    let (good, stranger) = nodes.split_at(2);
    let stranger = &stranger[0];
    assert!(
        stranger.wait_seen(FORM, |e| e.event == "ready").is_some(),
        "the stranger never got ready:\n{}",
        dump_all(&nodes)
    );
    // Observe for 3 s: nobody admits anybody across the cookie boundary.
    let prefix = format!("{stranger_name}#");
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        for node in good {
            assert!(
                !node.has_seen(|e| e.event == "member_up"
                    && e.field("member").is_some_and(|m| m.starts_with(&prefix))),
                "{} admitted the node with the wrong cookie:\n{}",
                node.spec.name,
                dump_all(&nodes)
            );
        }
        assert!(
            !stranger.has_seen(|e| e.event == "member_up"),
            "the node with the wrong cookie was admitted:\n{}",
            dump_all(&nodes)
        );
        if Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn a_node_with_the_wrong_cookie_never_becomes_a_member(wire: WireKind) {
    let binary = solo_node_binary(false);
    let mut specs = cluster_specs(3, "right-cookie", &[SINGLETON]);
    use_wire(&binary, &mut specs, wire);
    specs[2].cookie = test_cookie("wrong-cookie");
    assert_the_stranger_stays_out(specs);
}

fn a_node_with_a_certificate_from_another_ca_never_becomes_a_member(wire: WireKind) {
    let binary = solo_node_binary(false);
    let mut specs = cluster_specs(3, "ca", &[SINGLETON]);
    use_wire(&binary, &mut specs[..2], wire);
    use_wire(&binary, &mut specs[2..], wire);
    assert_the_stranger_stays_out(specs);
}

/// Over TLS: a node without any certificate (plain TCP, the right cookie) is refused.
#[test]
fn a_node_without_a_certificate_never_becomes_a_member_of_a_tls_cluster() {
    let binary = solo_node_binary(false);
    let mut specs = cluster_specs(3, "no-cert", &[SINGLETON]);
    use_wire(&binary, &mut specs[..2], WireKind::Tls);
    assert_eq!(specs[2].wire, Wire::Tcp);
    assert_the_stranger_stays_out(specs);
}

fn a_restarted_node_rejoins_as_a_new_incarnation(wire: WireKind) {
    let binary = solo_node_binary(false);
    let mut nodes = full_mesh("restart", wire);
    let old_ids = [member_id(&nodes[0], "n3"), member_id(&nodes[1], "n3")];
    assert_eq!(old_ids[0], old_ids[1], "n1 and n2 disagree on n3's id");
    let old_id = old_ids[0].clone();
    // SIGKILL and restart at once, with the same name and address: the others may see the
    // new incarnation before they notice the old one is gone.
    let old = nodes.pop().expect("three nodes");
    let restarted = old.restart(&binary);
    nodes.push(restarted);
    let new_id = |e: &NodeEvent| {
        e.event == "member_up"
            && e.field("member")
                .is_some_and(|m| m.starts_with("n3#") && m != old_id)
    };
    for observer in &nodes[..2] {
        let up = observer.wait_seen(FORM, new_id);
        let Some(up) = up else {
            panic!(
                "{} never saw a new incarnation of n3 up:\n{}",
                observer.spec.name,
                dump_all(&nodes)
            );
        };
        let down = observer.wait_seen(FORM, |e| is_member(e, "member_down", &old_id));
        let Some(down) = down else {
            panic!(
                "{} never retired the old incarnation {old_id}:\n{}",
                observer.spec.name,
                dump_all(&nodes)
            );
        };
        assert!(
            down.ts_us <= up.ts_us,
            "{} saw {} up before {old_id} down:\n{}",
            observer.spec.name,
            up.field("member").unwrap_or_default(),
            dump_all(&nodes)
        );
    }
    // All of them agree on one owner.
    assert!(
        settled_owner_for(&nodes, SINGLETON, Duration::from_secs(1), FORM).is_some(),
        "no single owner after the restart:\n{}",
        dump_all(&nodes)
    );
}

fn sigterm_of_the_owner_hands_the_singleton_over_and_exits_cleanly(wire: WireKind) {
    let (mut nodes, owner) = formed_cluster("sigterm", wire);
    let owner_id = member_id(&nodes[(owner + 1) % 3], &nodes[owner].spec.name);
    let termed_at = now_us();
    nodes[owner].signal("TERM");
    let status = nodes[owner].exit_status(Duration::from_secs(15));
    let leaving = nodes.remove(owner);
    let Some(status) = status else {
        panic!(
            "{} did not exit within 15 s of SIGTERM:\n{}{}",
            leaving.spec.name,
            leaving.dump(),
            dump_all(&nodes)
        );
    };
    assert!(
        status.success(),
        "{} exited with {status} after SIGTERM:\n{}",
        leaving.spec.name,
        leaving.dump()
    );
    // Its last words are in the pipe: give the reader thread a moment to reach them.
    let stopped = leaving.wait_seen(Duration::from_secs(5), |e| {
        e.event == "worker_stopped" && e.field("name") == Some(SINGLETON)
    });
    let Some(stopped) = stopped else {
        panic!(
            "the leaving owner never stopped its singleton:\n{}",
            leaving.dump()
        );
    };
    let reason = stopped.field("reason").unwrap_or_default();
    assert!(
        reason.starts_with("moved") || reason.starts_with("leaving"),
        "the leaving owner stopped its singleton for {reason:?}, not a handover"
    );
    let Some(left) = leaving.wait_seen(Duration::from_secs(5), |e| e.event == "left") else {
        panic!(
            "the leaving owner never printed `left`:\n{}",
            leaving.dump()
        );
    };
    // The handover happened before the exit: another node started it before the owner
    // printed `left`, its last line.
    let survivors: Vec<&Node> = nodes.iter().collect();
    let Some((_, started)) = wait_any(&survivors, Duration::from_secs(10), |e| {
        is_start(e, termed_at)
    }) else {
        panic!(
            "no other node started the singleton after the SIGTERM of {}:\n{}{}",
            leaving.spec.name,
            leaving.dump(),
            dump_all(&nodes)
        );
    };
    assert!(
        started.ts_us <= left.ts_us,
        "the singleton restarted only after {} had left:\n{}{}",
        leaving.spec.name,
        leaving.dump(),
        dump_all(&nodes)
    );
    for node in &nodes {
        assert!(
            node.wait_seen(Duration::from_secs(10), |e| is_member(
                e,
                "member_left",
                &owner_id
            ))
            .is_some(),
            "{} never saw {owner_id} leave:\n{}",
            node.spec.name,
            dump_all(&nodes)
        );
        assert!(
            !node.has_seen(|e| is_member(e, "member_down", &owner_id)),
            "{} saw the graceful leave of {owner_id} as a failure:\n{}",
            node.spec.name,
            dump_all(&nodes)
        );
    }
    assert!(
        settled_owner_for(&nodes, SINGLETON, Duration::from_secs(1), FORM).is_some(),
        "the survivors did not settle on one running instance:\n{}",
        dump_all(&nodes)
    );
}

/// Checks that a `solo-node` run failed cleanly: the expected status, one line on stderr
/// naming the problem, no panic or backtrace.
fn assert_clean_failure(args: &[&str], code: i32, mentions: &str) {
    let binary = solo_node_binary(false);
    let Some(exited) = run_to_exit(&binary, args, Duration::from_secs(20)) else {
        panic!("solo-node {args:?} did not exit within 20 s");
    };
    let stderr = exited.stderr.trim_end();
    assert_eq!(
        exited.status.code(),
        Some(code),
        "solo-node {args:?}: unexpected status {}; stderr:\n{stderr}",
        exited.status
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "solo-node {args:?}: not one line on stderr:\n{stderr}"
    );
    for bad in ["panic", "backtrace", "RUST_BACKTRACE", "thread '"] {
        assert!(
            !stderr.to_lowercase().contains(&bad.to_lowercase()),
            "solo-node {args:?}: {bad:?} on stderr:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(mentions),
        "solo-node {args:?}: stderr does not mention {mentions:?}:\n{stderr}"
    );
}

#[test]
fn bad_flags_fail_with_one_line_and_no_panic() {
    let addr = free_addr().to_string();
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "--name", "a", "--listen", &addr, "--cookie", COOKIE, "--bogus",
            ],
            "--bogus",
        ),
        (&["--listen", &addr, "--cookie", COOKIE], "--name"),
        (&["--name", "a", "--cookie", COOKIE], "--listen"),
        (&["--name", "a", "--listen", &addr], "--cookie"),
        (
            &["--name", "a", "--listen", "nope", "--cookie", COOKIE],
            "nope",
        ),
        (&["--name", "a", "--listen", &addr, "--cookie"], "--cookie"),
        (
            &[
                "--name",
                "a",
                "--listen",
                &addr,
                "--cookie",
                "c",
                "--seed-timeout",
                "x",
            ],
            "x",
        ),
    ];
    for (args, mentions) in cases {
        assert_clean_failure(args, 2, mentions);
    }
    assert_clean_failure(&[], 2, "required");
}

#[test]
fn a_short_missing_or_doubly_given_cookie_fails_with_one_line() {
    let addr = free_addr().to_string();
    let node = ["--name", "a", "--listen", &addr];
    let dir = tests::fresh_dir("cookie-flags");
    std::fs::create_dir_all(&dir).expect("a fresh directory");
    let file = dir.join("cookie");
    std::fs::write(&file, "short\n").expect("write the cookie file");
    let file = file.to_string_lossy().into_owned();
    let missing = dir.join("absent").to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 4] = [
        (&["--cookie", "fifteen-bytes!!"], "at least 16"),
        (&["--cookie-file", &file], "at least 16"),
        (&["--cookie-file", &missing], &missing),
        (&["--cookie", COOKIE, "--cookie-file", &file], "give one"),
    ];
    for (cookie, mentions) in cases {
        let args: Vec<&str> = node.iter().chain(cookie).copied().collect();
        assert_clean_failure(&args, 2, mentions);
    }
}

/// The cookie read from a file (and its trailing newline dropped) is the one the others
/// give on their command lines: the three nodes form one cluster.
#[test]
fn a_node_reads_its_cookie_from_a_file() {
    let binary = solo_node_binary(false);
    let mut specs = cluster_specs(3, "cookie-file", &[SINGLETON]);
    let dir = tests::fresh_dir("cookie-file");
    std::fs::create_dir_all(&dir).expect("a fresh directory");
    let file = dir.join("cookie");
    std::fs::write(&file, format!("{}\n", specs[0].cookie)).expect("write the cookie file");
    specs[0].cookie = String::new();
    specs[0].extra = vec![
        "--cookie-file".to_owned(),
        file.to_string_lossy().into_owned(),
    ];
    let nodes: Vec<Node> = specs
        .into_iter()
        .map(|spec| Node::start(&binary, spec))
        .collect();
    if !wait_full_mesh(&nodes, MESH) {
        panic!(
            "no full mesh with a cookie from a file:\n{}",
            dump_all(&nodes)
        );
    }
}

#[test]
fn a_port_in_use_fails_with_one_line_and_no_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("local addr").to_string();
    assert_clean_failure(
        &[
            "--name", "a", "--listen", &addr, "--cookie", COOKIE, "--json",
        ],
        1,
        &addr,
    );
    drop(taken);
}

/// Freeze the owner (SIGSTOP), start a replacement with the same name, resume the old
/// process: it learns on its first redial (the peers refuse its handshake as superseded)
/// that a newer process owns its name, stops its singleton at once, says `superseded`, and
/// exits non-zero with one line on stderr. The singleton runs once, among the others.
fn a_frozen_owner_replaced_by_a_new_process_stops_at_once_when_resumed(wire: WireKind) {
    let binary = solo_node_binary(false);
    let (mut nodes, owner) = formed_cluster("superseded", wire);
    let stopped_at = now_us();
    nodes[owner].signal("STOP");
    let others: Vec<usize> = (0..3).filter(|&i| i != owner).collect();
    let taken = wait_any(
        &others.iter().map(|&i| &nodes[i]).collect::<Vec<_>>(),
        Duration::from_secs(10),
        |e| is_start(e, stopped_at),
    );
    assert!(
        taken.is_some(),
        "no node took the singleton over from the frozen owner:\n{}",
        dump_all(&nodes)
    );
    // The replacement: same name, a new port (the frozen process still holds its own).
    let mut spec = nodes[owner].spec.clone();
    spec.addr = free_addr();
    spec.seeds = others.iter().map(|&i| nodes[i].spec.addr).collect();
    let name = spec.name.clone();
    let replacement = Node::start(&binary, spec);
    for &i in &others {
        assert!(
            nodes[i]
                .wait_for(FORM, |e| e.event == "member_up"
                    && e.field("member")
                        .is_some_and(|m| m.starts_with(&format!("{name}#"))))
                .is_some(),
            "{} never saw the replacement {name} up:\n{}",
            nodes[i].spec.name,
            dump_all(&nodes)
        );
    }
    let resumed_at = now_us();
    nodes[owner].signal("CONT");
    let stale = &nodes[owner];
    assert!(
        stale
            .wait_for(FORM, |e| e.event == "superseded" && e.ts_us >= resumed_at)
            .is_some(),
        "the resumed process never said it was superseded:\n{}",
        dump_all(&nodes)
    );
    // Its singleton, running since before the freeze, stops at once, without a handoff.
    assert!(
        stale
            .wait_seen(FORM, |e| e.event == "worker_stopped"
                && e.field("name") == Some(SINGLETON)
                && e.field("reason") == Some("superseded"))
            .is_some(),
        "the stale process's singleton did not stop as superseded:\n{}",
        dump_all(&nodes)
    );
    let status = nodes[owner].exit_status(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the superseded process did not exit non-zero: {status:?}\n{}",
        dump_all(&nodes)
    );
    let stderr = nodes[owner]
        .stderr
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    assert_eq!(stderr.trim().lines().count(), 1, "stderr: {stderr:?}");
    assert!(stderr.contains("superseded"), "stderr: {stderr:?}");
    // It never ran the singleton after it resumed beside the new owner.
    assert!(
        !nodes[owner].has_seen(|e| is_start(e, resumed_at)),
        "the stale process started the singleton again:\n{}",
        dump_all(&nodes)
    );
    let mut live: Vec<Node> = nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != owner)
        .map(|(_, n)| n)
        .collect();
    live.push(replacement);
    assert!(
        settled_owner_for(&live, SINGLETON, Duration::from_secs(1), FORM).is_some(),
        "the singleton did not settle on one node:\n{}",
        dump_all(&live)
    );
}
