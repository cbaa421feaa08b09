//! Clusters over mutual TLS and over QUIC, in-process on 127.0.0.1: the same protocol as
//! over plain TCP, on certificates from `solo::tls`. Every wait is bounded.

use std::time::Duration;

use solo::tls::{CertificateAuthority, TlsConfig};
use solo::{Cluster, ClusterBuilder, Event, MemberEvent, WorkerContext, WorkerError};
use tokio::sync::broadcast;

const BOUND: Duration = Duration::from_secs(10);

async fn idle(ctx: WorkerContext) -> Result<(), WorkerError> {
    ctx.shutdown().await;
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Carrier {
    Tls,
    Quic,
}

fn tls_for(ca: &CertificateAuthority, node: &str) -> TlsConfig {
    let issued = ca.issue(node).expect("issues");
    TlsConfig::from_pem(
        ca.cert_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .expect("valid")
}

fn builder(carrier: Carrier, ca: &CertificateAuthority, name: &str) -> ClusterBuilder {
    let builder = Cluster::builder()
        .node_name(name)
        .listen("127.0.0.1:0".parse().expect("addr"))
        .cookie("test-cookie.Tq7vX2pL9sK")
        .worker("idle", idle);
    match carrier {
        Carrier::Tls => builder.tls(tls_for(ca, name)),
        Carrier::Quic => builder.quic(tls_for(ca, name)),
    }
}

async fn until_members(events: &mut broadcast::Receiver<Event>, cluster: &Cluster, n: usize) {
    tokio::time::timeout(BOUND, async {
        while cluster.members().await.expect("up").len() < n {
            let _ = events.recv().await;
        }
    })
    .await
    .expect("the cluster forms within the bound");
}

/// Three nodes form a cluster, run one singleton, and a fourth with a certificate from
/// another CA is never let in while a fourth with the right one is.
async fn a_cluster_forms_and_strangers_stay_out(carrier: Carrier) {
    let ca = CertificateAuthority::new("solo").expect("ca");
    let a = builder(carrier, &ca, "a").start().await.expect("a starts");
    let seed = a.local_addr();
    let mut a_events = a.events();
    let b = builder(carrier, &ca, "b")
        .seeds([seed])
        .start()
        .await
        .expect("b starts");
    let c = builder(carrier, &ca, "c")
        .seeds([seed])
        .start()
        .await
        .expect("c starts");
    until_members(&mut a_events, &a, 3).await;
    for node in [&a, &b, &c] {
        node.singleton(&"roar".parse().expect("id"), ["idle"])
            .await
            .expect("declared");
    }
    let roar: solo::ChildId = "roar".parse().expect("id");
    let owners = tokio::time::timeout(BOUND, async {
        loop {
            let mut owners = Vec::new();
            for node in [&a, &b, &c] {
                owners.push(node.whereis(&roar).await.expect("up"));
            }
            if owners[0].is_some() && owners.iter().all(|o| *o == owners[0]) {
                return owners;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("one owner, agreed by all");
    assert!(owners[0].is_some());

    let other_ca = CertificateAuthority::new("solo").expect("ca");
    let stranger = builder(carrier, &other_ca, "mallory")
        .seeds([seed])
        .start()
        .await
        .expect("the stranger starts");
    // A legitimate node that starts after the stranger joins through the same seed; the
    // stranger, which had the same chance, is refused at the TLS handshake.
    let d = builder(carrier, &ca, "d")
        .seeds([seed])
        .start()
        .await
        .expect("d starts");
    until_members(&mut a_events, &a, 4).await;
    let names = |members: Vec<solo::NodeId>| -> Vec<String> {
        members.into_iter().map(|m| m.name.to_string()).collect()
    };
    let members = names(a.members().await.expect("up"));
    assert!(!members.contains(&"mallory".to_owned()), "{members:?}");
    assert_eq!(names(stranger.members().await.expect("up")), ["mallory"]);
    while let Ok(event) = a_events.try_recv() {
        if let Event::Member(MemberEvent::Up(id)) = event {
            assert_ne!(id.name.as_str(), "mallory");
        }
    }
    for node in [stranger, d, c, b, a] {
        node.leave().await;
    }
}

#[tokio::test]
async fn over_tls() {
    a_cluster_forms_and_strangers_stay_out(Carrier::Tls).await;
}

#[tokio::test]
async fn over_quic() {
    a_cluster_forms_and_strangers_stay_out(Carrier::Quic).await;
}
