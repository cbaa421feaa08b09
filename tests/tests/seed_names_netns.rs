//! Seeds by name are resolved again: a `solo-node` whose only `--seed` is a DNS name that
//! points where nobody listens finds its peer once the name points at it, as a headless
//! service's record does when a pod comes back with a new address.
//!
//! The nodes run in a network namespace this test makes, where `ip netns exec` puts
//! `/etc/netns/NS/hosts` in place of `/etc/hosts`: the test changes the name's address by
//! rewriting that file (in place, so the bind mount shows the new contents), and touches no
//! other resolver setting. Needs root and `ip`; without them the test says so and passes
//! vacuously. It removes the namespace and its `/etc/netns` folder when it ends.

use std::time::{Duration, Instant};

use tests::netns::ip;
use tests::{Node, NodeSpec, Wire, dump_all, solo_node_binary};

const COOKIE: &str = "seed-names-netns.Rk4Wq9Xz";
const NAME: &str = "seed.solo.test";

/// A namespace with only its loopback interface, and its own `hosts` file.
struct Namespace {
    name: String,
}

impl Namespace {
    fn new() -> Option<Namespace> {
        let name = format!("sxdns{}", std::process::id() % 100_000);
        let made = ip(&["netns", "add", &name]);
        let namespace = Namespace { name };
        if !made
            || !ip(&[
                "netns",
                "exec",
                &namespace.name,
                "ip",
                "link",
                "set",
                "lo",
                "up",
            ])
        {
            return None;
        }
        std::fs::create_dir_all(namespace.folder()).ok()?;
        Some(namespace)
    }

    fn folder(&self) -> String {
        format!("/etc/netns/{}", self.name)
    }

    /// Points `NAME` at `addr`, rewriting the file in place.
    fn resolve_to(&self, addr: &str) {
        std::fs::write(
            format!("{}/hosts", self.folder()),
            format!("127.0.0.1 localhost\n{addr} {NAME}\n"),
        )
        .expect("write the namespace's hosts file");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(self.folder());
    }
}

fn spec(namespace: &Namespace, name: &str, addr: &str, extra: &[&str]) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        addr: addr.parse().expect("addr"),
        seeds: Vec::new(),
        cookie: COOKIE.into(),
        singletons: Vec::new(),
        wire: Wire::Tcp,
        extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        netns: Some(namespace.name.clone()),
    }
}

#[test]
fn a_seed_name_that_moves_to_its_peer_is_followed() {
    let Some(namespace) = Namespace::new() else {
        eprintln!("skipped: this machine cannot make network namespaces (needs root and `ip`)");
        return;
    };
    // The name points where nothing listens yet.
    namespace.resolve_to("127.0.0.9");
    let binary = solo_node_binary(false);
    let seed = format!("{NAME}:7000");
    let joining = Node::start(
        &binary,
        spec(
            &namespace,
            "b",
            "127.0.0.2:7000",
            &["--seed", &seed, "--seed-timeout", "60"],
        ),
    );
    let peer = Node::start(&binary, spec(&namespace, "a", "127.0.0.3:7000", &[]));
    let nodes = [joining, peer];
    for node in &nodes {
        assert!(
            node.wait_seen(Duration::from_secs(20), |e| e.event == "ready")
                .is_some(),
            "not ready\n{}",
            dump_all(&nodes)
        );
    }
    // Longer than a round of resolution: the name still leads nowhere.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        nodes[0].member_ups("a").is_empty(),
        "met its peer through a name that pointed elsewhere\n{}",
        dump_all(&nodes)
    );
    namespace.resolve_to("127.0.0.3");
    let moved = Instant::now();
    let met = nodes[0].wait_seen(Duration::from_secs(20), |e| {
        e.event == "member_up" && e.field("member").is_some_and(|m| m.starts_with("a#"))
    });
    assert!(
        met.is_some(),
        "never followed the name to its new address\n{}",
        dump_all(&nodes)
    );
    eprintln!(
        "seed names: the name moved to the peer; met it {:.1} s later (names are resolved every 5 s)",
        moved.elapsed().as_secs_f64()
    );
}
