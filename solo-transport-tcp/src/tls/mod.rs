//! Mutual TLS against a cluster CA: the certificate configuration both the TLS-over-TCP
//! network here and the QUIC transport take.
//!
//! Every node holds the cluster CA's certificate, its own certificate signed by that CA, and
//! the certificate's private key, as PEM files. A connection is accepted only if *both* ends
//! present a certificate that chains to the cluster CA, is within its validity period and is
//! marked for TLS client and server authentication. Host names are not checked: nodes dial
//! addresses, and membership of the cluster is what the CA's signature says. Node names
//! are: once the cookie handshake inside TLS has named the peer, the transport checks that
//! the peer's certificate names that node (a subject alternative name, as `solo-node
//! certs` writes it, so node names must be valid DNS names), and closes the connection
//! otherwise: a node holding `n1`'s certificate cannot join as `n2`.
//!
//! Only TLS 1.3, on the `ring` provider (the project's one crypto provider).
//!
//! ```no_run
//! use solo_transport_tcp::tls::{TlsConfig, TlsNetwork};
//! use solo_transport_tcp::TokioNetwork;
//!
//! let tls = TlsConfig::from_files("certs/ca.pem", "certs/n1.pem", "certs/n1.key")?;
//! let network = TlsNetwork::new(TokioNetwork, &tls);
//! // Transport::builder(id, config).bind(network, addr) as over plain TCP.
//! # Ok::<(), solo_transport_tcp::tls::TlsError>(())
//! ```

#[cfg(feature = "certgen")]
mod certgen;
mod stream;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

#[cfg(feature = "certgen")]
pub use certgen::{
    CertgenError, CertificateAuthority, NODE_VALIDITY, NodeCertificate, write_cluster,
};
pub use stream::{TlsNetwork, TlsStream};

/// Whether the leaf of a peer's certificate `chain` (already verified against the cluster
/// CA) names node `name` among its subject alternative names, as `solo-node certs` writes
/// them: what stops a node holding `n1`'s certificate from joining as `n2`.
pub fn certificate_names(chain: Option<&[CertificateDer<'_>]>, name: &solo_core::NodeName) -> bool {
    let Some(leaf) = chain.and_then(<[_]>::first) else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(subject) = ServerName::try_from(name.as_str()) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&subject).is_ok()
}

/// The server name every node dials with. It is not checked against the certificate (see
/// the module docs); it only has to be a valid name.
pub const SERVER_NAME: &str = "solo";

/// The ALPN protocol both ends must offer: a TLS or QUIC peer that speaks something else
/// fails the handshake instead of reading garbage.
pub const ALPN: &[u8] = b"solo/1";

/// A node's TLS identity within its cluster, ready for TLS over TCP ([`TlsNetwork`]) and for
/// QUIC. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key material stays out of logs.
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// Why a [`TlsConfig`] could not be made. Each message is one line that names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not PEM, or has no certificate in it.
    #[error("{}: no PEM certificate in it{}", file.display(), detail(reason))]
    NoCertificate {
        /// The file.
        file: PathBuf,
        /// What the parser said, if anything.
        reason: Option<String>,
    },
    /// The file is not PEM, or has no private key in it.
    #[error("{}: no PEM private key in it{}", file.display(), detail(reason))]
    NoKey {
        /// The file.
        file: PathBuf,
        /// What the parser said, if anything.
        reason: Option<String>,
    },
    /// The CA file's certificate cannot serve as a trust anchor.
    #[error("{}: not a usable CA certificate: {reason}", file.display())]
    BadCa {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate's validity period is over.
    #[error("{}: certificate expired ({reason})", file.display())]
    Expired {
        /// The file.
        file: PathBuf,
        /// The dates, as the verifier gave them.
        reason: String,
    },
    /// The certificate's validity period has not begun.
    #[error("{}: certificate not valid yet ({reason})", file.display())]
    NotValidYet {
        /// The file.
        file: PathBuf,
        /// The dates, as the verifier gave them.
        reason: String,
    },
    /// The certificate is not signed by the cluster CA.
    #[error("{}: not signed by the cluster CA in {}", file.display(), ca.display())]
    OtherCa {
        /// The certificate's file.
        file: PathBuf,
        /// The CA's file.
        ca: PathBuf,
    },
    /// The certificate chains to the CA but cannot be used (for example, it is not marked
    /// for both TLS client and server authentication).
    #[error("{}: certificate rejected: {reason}", file.display())]
    Rejected {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key is not the certificate's, or not a key the provider can use.
    #[error("{}: not the private key of the certificate in {}: {reason}", key.display(), cert.display())]
    KeyMismatch {
        /// The key's file.
        key: PathBuf,
        /// The certificate's file.
        cert: PathBuf,
        /// Why.
        reason: String,
    },
}

fn detail(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

/// PEM bytes and the name errors give them.
struct Source<'a> {
    name: PathBuf,
    pem: &'a [u8],
}

impl TlsConfig {
    /// Loads the cluster CA's certificate, this node's certificate (optionally followed by
    /// intermediates) and its private key from PEM files, and checks them now: the
    /// certificate must chain to the CA, be valid today, allow TLS client and server
    /// authentication, and match the key.
    ///
    /// # Errors
    ///
    /// [`TlsError`], whose message names the file at fault.
    pub fn from_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                file: path.to_owned(),
                source,
            })
        };
        let (ca, cert, key) = (ca.as_ref(), cert.as_ref(), key.as_ref());
        let (ca_pem, cert_pem, key_pem) = (read(ca)?, read(cert)?, read(key)?);
        Self::build(
            Source {
                name: ca.to_owned(),
                pem: &ca_pem,
            },
            Source {
                name: cert.to_owned(),
                pem: &cert_pem,
            },
            Source {
                name: key.to_owned(),
                pem: &key_pem,
            },
        )
    }

    /// As [`from_files`](Self::from_files), from PEM bytes already in memory. Errors name
    /// them `<ca>`, `<certificate>` and `<key>`.
    ///
    /// # Errors
    ///
    /// [`TlsError`].
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        Self::build(
            Source {
                name: "<ca>".into(),
                pem: ca,
            },
            Source {
                name: "<certificate>".into(),
                pem: cert,
            },
            Source {
                name: "<key>".into(),
                pem: key,
            },
        )
    }

    /// The configuration for the accepting end: requires and verifies the peer's certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    /// The configuration for the dialing end: presents this node's certificate and verifies
    /// the peer's against the cluster CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client)
    }

    fn build(ca: Source<'_>, cert: Source<'_>, key: Source<'_>) -> Result<Self, TlsError> {
        let provider = crypto_provider();
        let roots = Arc::new(load_roots(&ca)?);
        let chain = load_chain(&cert)?;
        let private_key = load_key(&key)?;
        let mismatch = |reason: String| TlsError::KeyMismatch {
            key: key.name.clone(),
            cert: cert.name.clone(),
            reason,
        };
        // Fails if the key is unusable or is not the certificate's.
        rustls::sign::CertifiedKey::from_der(chain.clone(), private_key.clone_key(), &provider)
            .map_err(|e| {
                mismatch(match e {
                    rustls::Error::InconsistentKeys(_) => {
                        "its public key is not the certificate's".to_owned()
                    }
                    other => other.to_string(),
                })
            })?;

        let bad_ca = |e: &dyn fmt::Display| TlsError::BadCa {
            file: ca.name.clone(),
            reason: e.to_string(),
        };
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| bad_ca(&e))?;
        let server_verifier = Arc::new(ClusterServerVerifier(
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| bad_ca(&e))?,
        ));

        // Check our own certificate the way peers will, in both roles, so that a bad file
        // fails here with its name rather than as refused connections later.
        let now = UnixTime::now();
        let (end_entity, intermediates) =
            chain.split_first().ok_or_else(|| TlsError::NoCertificate {
                file: cert.name.clone(),
                reason: None,
            })?;
        let as_client = client_verifier
            .verify_client_cert(end_entity, intermediates, now)
            .map(drop);
        let server_name = ServerName::try_from(SERVER_NAME).map_err(|e| bad_ca(&e))?;
        let as_server = server_verifier
            .verify_server_cert(end_entity, intermediates, &server_name, &[], now)
            .map(drop);
        as_client
            .and(as_server)
            .map_err(|e| verify_error(e, &cert.name, &ca.name))?;

        let versions = [&rustls::version::TLS13];
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)
            .map_err(|e| mismatch(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), private_key.clone_key())
            .map_err(|e| mismatch(e.to_string()))?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| mismatch(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(chain, private_key)
            .map_err(|e| mismatch(e.to_string()))?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

fn load_roots(ca: &Source<'_>) -> Result<RootCertStore, TlsError> {
    let certs = load_chain(ca)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            file: ca.name.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn load_chain(source: &Source<'_>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let no_cert = |reason| TlsError::NoCertificate {
        file: source.name.clone(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(source.pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no_cert(Some(e.to_string())))?;
    if chain.is_empty() {
        return Err(no_cert(None));
    }
    Ok(chain)
}

fn load_key(source: &Source<'_>) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(source.pem).map_err(|e| TlsError::NoKey {
        file: source.name.clone(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => None,
            other => Some(other.to_string()),
        },
    })
}

fn verify_error(error: rustls::Error, cert: &Path, ca: &Path) -> TlsError {
    let file = cert.to_owned();
    let reason = error.to_string();
    match error {
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => TlsError::Expired { file, reason },
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => TlsError::NotValidYet { file, reason },
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => TlsError::OtherCa {
            file,
            ca: ca.to_owned(),
        },
        _ => TlsError::Rejected { file, reason },
    }
}

/// Verifies a server's certificate against the cluster CA, ignoring the host name (nodes
/// dial addresses; the CA's signature is what admits a node).
#[derive(Debug)]
struct ClusterServerVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain, validity and usage are checked before the name, so a name mismatch
        // means everything else passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The provider every TLS and QUIC configuration of solo uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(all(test, feature = "certgen"))]
mod tests;
