//! Certificate loading errors, and the transport over mutual TLS on loopback.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use solo_core::Link;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::transport::tests::{
    CLUSTER, assert_quiet, config, eventually, expect_frame, expect_link, message, start_with,
    transmit,
};
use crate::{Config, TokioNetwork};

/// A fresh directory under the system's temporary directory.
fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "solo-tls-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tls_for(ca: &CertificateAuthority, node: &str) -> TlsConfig {
    let issued = ca.issue(node).expect("issues");
    TlsConfig::from_pem(
        ca.cert_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .expect("valid certificates")
}

/// Writes the PEM files of `node` (issued by `ca`, or given) and loads them back.
fn load(dir: &Path, ca: &str, cert: &str, key: &str) -> Result<TlsConfig, TlsError> {
    std::fs::create_dir_all(dir).expect("mkdir");
    let paths = ["ca.pem", "node.pem", "node.key"].map(|f| dir.join(f));
    for (path, contents) in paths.iter().zip([ca, cert, key]) {
        std::fs::write(path, contents).expect("write");
    }
    TlsConfig::from_files(&paths[0], &paths[1], &paths[2])
}

fn assert_one_line_naming(error: &TlsError, file: &str) {
    let message = error.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.contains(file), "{message:?} names {file}");
}

#[test]
fn good_files_load() {
    let ca = CertificateAuthority::new("prod").expect("ca");
    let node = ca.issue("n1").expect("issues");
    let dir = scratch_dir();
    load(&dir, ca.cert_pem(), &node.cert_pem, &node.key_pem).expect("loads");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_files_give_one_line_errors_that_name_the_file() {
    let ca = CertificateAuthority::new("prod").expect("ca");
    let other = CertificateAuthority::new("prod").expect("ca");
    let node = ca.issue("n1").expect("issues");
    let stranger = other.issue("n1").expect("issues");
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    let expired = ca
        .issue_valid_between("n1", now - 10 * day, now - day)
        .expect("issues");
    let future = ca
        .issue_valid_between("n1", now + day, now + 10 * day)
        .expect("issues");
    let dir = scratch_dir();

    let missing = TlsConfig::from_files(dir.join("nope.pem"), dir.join("a"), dir.join("b"))
        .expect_err("missing");
    assert!(matches!(missing, TlsError::Read { .. }));
    assert_one_line_naming(&missing, "nope.pem");

    type Case<'a> = (&'a str, &'a str, &'a str, &'a str, fn(&TlsError) -> bool);
    let cases: [Case<'_>; 7] = [
        (
            "garbage CA",
            "not pem",
            &node.cert_pem,
            &node.key_pem,
            |e| matches!(e, TlsError::NoCertificate { .. }),
        ),
        (
            "key as cert",
            ca.cert_pem(),
            &node.key_pem,
            &node.key_pem,
            |e| matches!(e, TlsError::NoCertificate { .. }),
        ),
        (
            "cert as key",
            ca.cert_pem(),
            &node.cert_pem,
            &node.cert_pem,
            |e| matches!(e, TlsError::NoKey { .. }),
        ),
        (
            "another CA",
            ca.cert_pem(),
            &stranger.cert_pem,
            &stranger.key_pem,
            |e| matches!(e, TlsError::OtherCa { .. }),
        ),
        (
            "expired",
            ca.cert_pem(),
            &expired.cert_pem,
            &expired.key_pem,
            |e| matches!(e, TlsError::Expired { .. }),
        ),
        (
            "not yet valid",
            ca.cert_pem(),
            &future.cert_pem,
            &future.key_pem,
            |e| matches!(e, TlsError::NotValidYet { .. }),
        ),
        (
            "wrong key",
            ca.cert_pem(),
            &node.cert_pem,
            &stranger.key_pem,
            |e| matches!(e, TlsError::KeyMismatch { .. }),
        ),
    ];
    for (what, ca_pem, cert, key, expected) in cases {
        let error = load(&dir, ca_pem, cert, key).expect_err(what);
        assert!(expected(&error), "{what}: got {error}");
        let file = match &error {
            TlsError::NoCertificate { file, .. } | TlsError::NoKey { file, .. } => file.clone(),
            TlsError::KeyMismatch { key, .. } => key.clone(),
            TlsError::OtherCa { file, ca } => {
                assert!(error.to_string().contains(&ca.display().to_string()));
                file.clone()
            }
            TlsError::Expired { file, .. } | TlsError::NotValidYet { file, .. } => file.clone(),
            other => panic!("{what}: unexpected {other}"),
        };
        assert_one_line_naming(&error, &file.display().to_string());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn write_cluster_writes_every_file_and_never_overwrites() {
    let dir = scratch_dir();
    let nodes = ["n1".to_owned(), "n2".to_owned()];
    let files = write_cluster(&dir, "prod", &nodes).expect("writes");
    assert_eq!(files.len(), 6);
    TlsConfig::from_files(dir.join("ca.pem"), dir.join("n2.pem"), dir.join("n2.key"))
        .expect("loads");
    let ca_before = std::fs::read(dir.join("ca.key")).expect("read");
    let again = write_cluster(&dir, "prod", &nodes).expect_err("refuses");
    assert!(matches!(again, CertgenError::Write { .. }), "{again}");
    assert_eq!(std::fs::read(dir.join("ca.key")).expect("read"), ca_before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca.key"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "keys are private");
    }
    let _ = std::fs::remove_dir_all(dir);
}

// ----- the transport over TLS ----------------------------------------------------------

async fn start_tls(
    name: &str,
    network: TlsNetwork,
    config: Config,
) -> (
    crate::Transport<TlsNetwork>,
    crate::transport::tests::Events,
) {
    start_with(network, name, 1, config).await
}

#[tokio::test]
async fn frames_flow_over_mutual_tls() {
    let ca = CertificateAuthority::new(CLUSTER).expect("ca");
    let (a, mut a_events) = start_tls(
        "a",
        TlsNetwork::new(TokioNetwork, &tls_for(&ca, "a")),
        config(),
    )
    .await;
    let (b, mut b_events) = start_tls(
        "b",
        TlsNetwork::new(TokioNetwork, &tls_for(&ca, "b")),
        config(),
    )
    .await;
    a.send(transmit(None, Some(b.advertised_addr()), 1));
    expect_link(&mut b_events, a.node(), Link::Up).await;
    assert_eq!(expect_frame(&mut b_events, a.node()).await, message(1));
    expect_link(&mut a_events, b.node(), Link::Up).await;
    b.send(transmit(Some(a.node().clone()), None, 2));
    assert_eq!(expect_frame(&mut a_events, b.node()).await, message(2));
    // A closed peer is reported at once, as over plain TCP.
    drop(b);
    expect_link(
        &mut a_events,
        &crate::handshake::tests::id("b", 1),
        Link::Down,
    )
    .await;
}

/// Starts `b` with good certificates, lets `a` (set up by the caller) dial it, waits until
/// the dial failed and checks that neither side ever saw the other up.
async fn assert_refused(a_network: TlsNetwork, a_config: Config, ca: &CertificateAuthority) {
    let (b, mut b_events) = start_tls(
        "b",
        TlsNetwork::new(TokioNetwork, &tls_for(ca, "b")),
        config(),
    )
    .await;
    let (a, mut a_events) = start_tls("a", a_network, a_config).await;
    a.send(transmit(None, Some(b.advertised_addr()), 1));
    eventually("the dial fails", || a.stats().dials_failed >= 1).await;
    eventually("b drops the connection", || {
        b.stats().handshakes_failed >= 1 || b.stats().connections == 0
    })
    .await;
    assert_quiet(&mut a_events);
    assert_quiet(&mut b_events);
    assert_eq!((a.stats().links_up, b.stats().links_up), (0, 0));
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = CertificateAuthority::new(CLUSTER).expect("ca");
    let other = CertificateAuthority::new(CLUSTER).expect("ca");
    assert_refused(
        TlsNetwork::new(TokioNetwork, &tls_for(&other, "a")),
        config(),
        &ca,
    )
    .await;
}

#[tokio::test]
async fn a_node_without_a_certificate_is_refused() {
    let ca = CertificateAuthority::new(CLUSTER).expect("ca");
    let good = tls_for(&ca, "a");
    // Trusts the right CA, the way nodes do, but presents no certificate of its own.
    let roots = load_roots(&Source {
        name: "<ca>".into(),
        pem: ca.cert_pem().as_bytes(),
    })
    .expect("roots");
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .expect("verifier");
    let mut bare = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClusterServerVerifier(verifier)))
        .with_no_client_auth();
    bare.alpn_protocols = vec![ALPN.to_vec()];
    let network = TlsNetwork {
        inner: TokioNetwork,
        acceptor: TlsAcceptor::from(good.server_config()),
        connector: TlsConnector::from(Arc::new(bare)),
    };
    assert_refused(network, config(), &ca).await;
}

#[tokio::test]
async fn the_right_certificate_with_the_wrong_cookie_is_refused() {
    let ca = CertificateAuthority::new(CLUSTER).expect("ca");
    assert_refused(
        TlsNetwork::new(TokioNetwork, &tls_for(&ca, "a")),
        Config::new(CLUSTER, b"another cookie entirely".to_vec()),
        &ca,
    )
    .await;
}

/// A node holding a certificate from the cluster CA for `x` cannot join as `a`: the node it
/// dials refuses it once its hello names `a`.
#[tokio::test]
async fn a_certificate_for_another_node_cannot_dial_in() {
    let ca = CertificateAuthority::new(CLUSTER).expect("ca");
    assert_refused(
        TlsNetwork::new(TokioNetwork, &tls_for(&ca, "x")),
        config(),
        &ca,
    )
    .await;
}

/// Nor can it answer as `b`: the dialer refuses a peer whose certificate names another
/// node than its hello.
#[tokio::test]
async fn a_certificate_for_another_node_cannot_answer_a_dial() {
    let ca = CertificateAuthority::new(CLUSTER).expect("ca");
    let (impostor, _impostor_events) = start_tls(
        "b",
        TlsNetwork::new(TokioNetwork, &tls_for(&ca, "x")),
        config(),
    )
    .await;
    let (a, mut a_events) = start_tls(
        "a",
        TlsNetwork::new(TokioNetwork, &tls_for(&ca, "a")),
        config(),
    )
    .await;
    a.send(transmit(None, Some(impostor.advertised_addr()), 1));
    eventually("the dial fails", || a.stats().dials_failed >= 1).await;
    assert_quiet(&mut a_events);
    assert_eq!(a.stats().links_up, 0);
    assert!(!certificate_names(
        None,
        &solo_core::NodeName::new("a").expect("valid")
    ));
}
