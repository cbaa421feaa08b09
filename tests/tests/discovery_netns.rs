//! `--discover multicast` on a real LAN: `solo-node` processes, each in a network namespace
//! of its own on one bridge this test makes, with no seed list at all.
//!
//! Three members find each other by their beacons and run one singleton; a fourth node
//! with another cookie announces itself on the same group and is never let in; beacons
//! recorded off the wire and sent again, and forged ones, are counted as `replayed` and
//! `bad_tag` in `/metrics` and change nothing; after a SIGKILL of the singleton's node, a
//! survivor runs it, and the node started again is found again, still with no seeds.
//!
//! Prints how long discovery took: from the last node's `ready` to the full mesh, and from
//! the restarted node's `ready` to its first peer.
//!
//! Needs root and `ip` (Linux network namespaces); without them the test says so and passes
//! vacuously. It touches only what [`Net`] creates, and ends only the processes it started.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tests::netns::Net;
use tests::scrape::{scrape, value};
use tests::{
    Node, NodeSpec, Wire, dump_all, now_us, settled_owner, solo_node_binary, wait_any_other,
    wait_full_mesh,
};

const SINGLETON: &str = "roar";
const MEMBERS: usize = 3;
/// The members, the stranger, and the namespace the test sends its own datagrams from.
const HOSTS: usize = MEMBERS + 2;
const STRANGER: usize = MEMBERS;
const ATTACKER: usize = MEMBERS + 1;
const COOKIE: &str = "d1sc0very-netns-Zq7Lr2Wp";
const WAIT: Duration = Duration::from_secs(20);
const BEACON_PORT: u16 = 7979;
const METRICS_PORT: u16 = 9100;

fn spec(net: &Net, i: usize, name: &str, cookie: &str) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        addr: format!("{}:7000", net.addr(i)).parse().expect("addr"),
        seeds: Vec::new(),
        cookie: cookie.into(),
        singletons: vec![SINGLETON.into()],
        wire: Wire::Tcp,
        extra: vec![
            "--discover".into(),
            "multicast".into(),
            "--metrics".into(),
            format!("{}:{METRICS_PORT}", net.addr(i)),
        ],
        netns: Some(net.ns(i)),
    }
}

/// Runs `work` on a thread inside the namespace `ns`: its sockets are that namespace's.
fn in_namespace<T: Send + 'static>(ns: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let namespace = std::fs::File::open(&path).expect("the namespace's file");
        nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        work()
    })
    .join()
    .expect("the namespace thread")
}

/// The first beacon heard on the group from `from`, as it was on the wire.
fn record_a_beacon(interface: Ipv4Addr, from: Ipv4Addr) -> Vec<u8> {
    let socket =
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, BEACON_PORT)).expect("bind the group's port");
    let group = Ipv4Addr::new(239, 255, 83, 79);
    socket
        .join_multicast_v4(&group, &interface)
        .expect("join the group");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("a read timeout");
    let deadline = Instant::now() + WAIT;
    let mut datagram = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((len, sender)) = socket.recv_from(&mut datagram) {
            if sender.ip() == from {
                return datagram[..len].to_vec();
            }
        }
    }
    panic!("no beacon from {from} within {WAIT:?}");
}

#[test]
fn nodes_with_no_seeds_find_each_other_and_ignore_strangers_replays_and_forgeries() {
    let Some(net) = Net::new(3, HOSTS) else {
        eprintln!("skipped: this machine cannot make network namespaces (needs root and `ip`)");
        return;
    };
    let binary = solo_node_binary(false);
    let stranger = Node::start(
        &binary,
        spec(&net, STRANGER, "x", "another-cookie-of-24-bytes"),
    );
    let mut nodes: Vec<Node> = (0..MEMBERS)
        .map(|i| Node::start(&binary, spec(&net, i, &format!("n{}", i + 1), COOKIE)))
        .collect();
    assert!(
        wait_full_mesh(&nodes, WAIT),
        "no full mesh by discovery\n{}",
        dump_all(&nodes)
    );
    let last_ready = nodes
        .iter()
        .filter_map(|n| n.find(|e| e.event == "ready"))
        .map(|e| e.ts_us)
        .max()
        .expect("every node was ready");
    let meshed = nodes
        .iter()
        .flat_map(|n| {
            (0..MEMBERS).filter_map(move |j| {
                let prefix = format!("n{}#", j + 1);
                n.find(|e| {
                    e.event == "member_up"
                        && e.field("member").is_some_and(|m| m.starts_with(&prefix))
                })
            })
        })
        .map(|e| e.ts_us)
        .max()
        .expect("member_ups");
    eprintln!(
        "discovery: the last node's ready to the full mesh of {MEMBERS}: {:.1} ms",
        meshed.saturating_sub(last_ready) as f64 / 1000.0
    );
    let owner = settled_owner(&nodes, SINGLETON, WAIT)
        .unwrap_or_else(|| panic!("no settled owner\n{}", dump_all(&nodes)));

    // Recorded off the wire and sent again to each member, and forged: nothing changes.
    let victim: SocketAddr = format!("{}:{METRICS_PORT}", net.addr(1))
        .parse()
        .expect("addr");
    let interface: Ipv4Addr = net.addr(ATTACKER).parse().expect("an IPv4 address");
    let sender: Ipv4Addr = net.addr(0).parse().expect("an IPv4 address");
    let targets: Vec<SocketAddr> = (1..MEMBERS)
        .map(|i| {
            format!("{}:{BEACON_PORT}", net.addr(i))
                .parse()
                .expect("addr")
        })
        .collect();
    let (before, after) = in_namespace(&net.ns(ATTACKER), move || {
        let recorded = record_a_beacon(interface, sender);
        let socket = UdpSocket::bind((interface, 0)).expect("bind");
        let before = scrape(victim);
        for target in &targets {
            for _ in 0..3 {
                socket.send_to(&recorded, target).expect("send a replay");
            }
            let mut forged = recorded.clone();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            for _ in 0..5 {
                socket.send_to(&forged, target).expect("send a forgery");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        (before, scrape(victim))
    });
    let counted = |outcome| {
        let label = Some(("outcome", outcome));
        value(&after, "solo_discovery_beacons_total", label)
            - value(&before, "solo_discovery_beacons_total", label)
    };
    assert!(
        counted("replayed") >= 3.0,
        "replays counted: {}",
        counted("replayed")
    );
    // The stranger's own beacons (one a second) are `bad_tag` too: at least the forgeries.
    assert!(
        counted("bad_tag") >= 5.0,
        "forgeries counted: {}",
        counted("bad_tag")
    );
    assert!(
        value(
            &after,
            "solo_discovery_beacons_total",
            Some(("outcome", "taken"))
        ) > 0.0,
        "the members' own beacons are taken"
    );
    for node in &nodes {
        assert!(
            node.member_ups("x").is_empty(),
            "the stranger got in\n{}",
            dump_all(&nodes)
        );
        assert!(
            !node.has_seen(|e| e.event == "member_down"),
            "a member went down\n{}",
            dump_all(&nodes)
        );
    }
    assert!(
        !stranger.has_seen(|e| e.event == "member_up"),
        "the stranger met someone\n{}",
        stranger.dump()
    );

    // The singleton survives the kill of its node, and the node comes back by discovery.
    let killed_at = now_us();
    nodes[owner].signal("KILL");
    wait_any_other(&nodes, owner, WAIT, |e| {
        e.event == "worker_started" && e.field("name") == Some(SINGLETON) && e.ts_us >= killed_at
    })
    .unwrap_or_else(|| panic!("no survivor took the singleton over\n{}", dump_all(&nodes)));
    let name = nodes[owner].spec.name.clone();
    let restarted_at = now_us();
    let restarted = nodes.remove(owner).restart(&binary);
    let ready = restarted
        .wait_seen(WAIT, |e| e.event == "ready")
        .unwrap_or_else(|| panic!("the restarted node never got ready\n{}", restarted.dump()));
    let first_peer = restarted
        .wait_seen(WAIT, |e| e.event == "member_up")
        .unwrap_or_else(|| panic!("the restarted node found no one\n{}", restarted.dump()));
    eprintln!(
        "discovery: the restarted node's ready to its first peer: {:.1} ms",
        first_peer.ts_us.saturating_sub(ready.ts_us) as f64 / 1000.0
    );
    for node in &nodes {
        let prefix = format!("{name}#");
        node.wait_seen(WAIT, |e| {
            e.event == "member_up"
                && e.ts_us >= restarted_at
                && e.field("member").is_some_and(|m| m.starts_with(&prefix))
        })
        .unwrap_or_else(|| {
            panic!(
                "a survivor did not meet the restarted node\n{}{}",
                dump_all(&nodes),
                restarted.dump()
            )
        });
    }
}
