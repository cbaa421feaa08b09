//! Multicast discovery in-process, on 127.0.0.1 (beacons go out through the loopback
//! interface, so no root and no LAN are needed): nodes with no seed list form one cluster
//! and fail a singleton over; a node with another cookie on the same group stays alone; a
//! group that is not multicast fails the start with a typed error. The networked proof
//! (separate hosts on a bridge, replays and forgeries) is `tests/tests/discovery_netns.rs`.
//! Every wait is bounded.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use solo::{ChildId, Cluster, ClusterStartError, DiscoveryError, MulticastDiscovery, NodeId};

const COOKIE: &str = "discovery-cookie.Vq3Lz8Kp";
const BOUND: Duration = Duration::from_secs(10);

/// A group of this test's own: the port is one no other process here holds, so that
/// parallel tests and other runs do not hear each other.
fn own_group() -> SocketAddrV4 {
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    SocketAddrV4::new(Ipv4Addr::new(239, 255, 83, 79), port)
}

fn discovery(group: SocketAddrV4) -> MulticastDiscovery {
    MulticastDiscovery::new()
        .group(group)
        .interval(Duration::from_millis(100))
}

/// Waits until every node of `nodes` sees `count` members (itself included).
async fn wait_members(nodes: &[&Cluster], count: usize) {
    tokio::time::timeout(BOUND, async {
        loop {
            let mut all = true;
            for node in nodes {
                all &= node.members().await.expect("running").len() == count;
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the members within the bound");
}

/// The owner of `job` as `node` sees it, once it is one other than `not`.
async fn owner_other_than(node: &Cluster, job: &ChildId, not: Option<&NodeId>) -> NodeId {
    tokio::time::timeout(BOUND, async {
        loop {
            match node.whereis(job).await.expect("running") {
                Some(owner) if Some(&owner) != not => return owner,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .expect("an owner within the bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_no_seeds_find_each_other_and_a_stranger_stays_out() {
    let group = own_group();
    let stranger = common::node("x", "another-cookie.Hw5Tn1Qe")
        .discover_multicast(discovery(group))
        .start()
        .await
        .expect("the stranger starts");
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let node = common::node(name, COOKIE)
            .discover_multicast(discovery(group))
            .start()
            .await
            .expect("starts");
        node.singleton(&"job".parse().expect("an id"), ["idle"])
            .await
            .expect("declared");
        nodes.push(node);
    }
    let refs: Vec<&Cluster> = nodes.iter().collect();
    wait_members(&refs, 3).await;
    // Several of its beacons later, the stranger still knows only itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stranger.members().await.expect("running").len(), 1);
    wait_members(&refs, 3).await;

    let job = "job".parse().expect("an id");
    let owner = owner_other_than(&nodes[0], &job, None).await;
    let at = nodes
        .iter()
        .position(|n| n.id() == &owner)
        .expect("one of ours");
    nodes.remove(at).crash().await;
    let refs: Vec<&Cluster> = nodes.iter().collect();
    wait_members(&refs, 2).await;
    let next = owner_other_than(&nodes[0], &job, Some(&owner)).await;
    assert!(nodes.iter().any(|n| n.id() == &next));
    for node in nodes {
        node.leave().await;
    }
    stranger.leave().await;
}

#[tokio::test]
async fn a_group_that_is_not_multicast_fails_the_start() {
    let unicast = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7979);
    let refused = common::node("a", COOKIE)
        .discover_multicast(MulticastDiscovery::new().group(unicast))
        .start()
        .await
        .err();
    assert!(
        matches!(
            refused,
            Some(ClusterStartError::Discovery(DiscoveryError::NotMulticast(group))) if group == unicast
        ),
        "{refused:?}"
    );
}
