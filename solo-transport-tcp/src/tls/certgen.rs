//! Generating a cluster CA and node certificates, so that nobody needs openssl to try TLS or
//! QUIC (`solo-node certs`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

/// How long a generated CA is valid: ten years.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a generated node certificate is valid by default: one year.
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Slack before "now" in `not_before`, for clocks a little behind the generating machine's.
const CLOCK_SLACK: Duration = Duration::from_secs(3600);

/// Why certificates could not be generated or written. Nothing is overwritten.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertgenError {
    /// rcgen refused the parameters (for example, a node name that is not a valid DNS name).
    #[error("cannot generate a certificate for {subject:?}: {source}")]
    Generate {
        /// The CA's cluster or the node's name.
        subject: String,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// A validity period that ends before it starts, or out of range.
    #[error("invalid validity period for {0:?}")]
    Validity(String),
    /// A file could not be written, or already exists.
    #[error("{}: {source}", file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A freshly generated cluster CA that can issue node certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// A node's certificate and private key, in PEM.
#[derive(Clone)]
#[non_exhaustive]
pub struct NodeCertificate {
    /// The certificate, signed by the cluster CA.
    pub cert_pem: String,
    /// Its private key (keep it secret).
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCertificate").finish_non_exhaustive()
    }
}

fn date(at: SystemTime, subject: &str) -> Result<OffsetDateTime, CertgenError> {
    // Certificates carry whole seconds.
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| CertgenError::Validity(subject.to_owned()))?
        .as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .map_err(|_| CertgenError::Validity(subject.to_owned()))
}

impl CertificateAuthority {
    /// A new CA for `cluster` (its name goes in the CA's common name), valid for ten years,
    /// with a fresh ECDSA P-256 key.
    ///
    /// # Errors
    ///
    /// [`CertgenError::Generate`] if rcgen fails.
    pub fn new(cluster: &str) -> Result<Self, CertgenError> {
        let generate = |source| CertgenError::Generate {
            subject: cluster.to_owned(),
            source,
        };
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("solo cluster CA {cluster}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = date(now - CLOCK_SLACK, cluster)?;
        params.not_after = date(now + CA_VALIDITY, cluster)?;
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.self_signed(&key).map_err(generate)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// The CA's certificate: every node gets a copy.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key: needed only to issue more certificates; keep it off the nodes.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for `node`, valid from an hour ago for [`NODE_VALIDITY`].
    ///
    /// # Errors
    ///
    /// [`CertgenError::Generate`] if `node` is not usable as a DNS name.
    pub fn issue(&self, node: &str) -> Result<NodeCertificate, CertgenError> {
        let now = SystemTime::now();
        self.issue_valid_between(node, now - CLOCK_SLACK, now + NODE_VALIDITY)
    }

    /// A certificate for `node` valid from `not_before` to `not_after` (tests use this to
    /// make expired certificates). It names the node in its subject and alternative names
    /// and allows TLS client and server authentication.
    ///
    /// # Errors
    ///
    /// [`CertgenError`] if the period is empty or `node` is not usable as a DNS name.
    pub fn issue_valid_between(
        &self,
        node: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeCertificate, CertgenError> {
        let generate = |source| CertgenError::Generate {
            subject: node.to_owned(),
            source,
        };
        if not_after <= not_before {
            return Err(CertgenError::Validity(node.to_owned()));
        }
        let mut params = CertificateParams::new(vec![node.to_owned()]).map_err(generate)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = date(not_before, node)?;
        params.not_after = date(not_after, node)?;
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok(NodeCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Generates a CA for `cluster` and a certificate per node into `dir` (created if missing):
/// `ca.pem`, `ca.key`, and `<node>.pem` with `<node>.key` for each node. Returns the files
/// written. Keys are written readable by their owner only (on Unix).
///
/// # Errors
///
/// [`CertgenError`]; in particular, if any of the files already exists nothing is written,
/// so an existing CA key is never lost.
pub fn write_cluster(
    dir: &Path,
    cluster: &str,
    nodes: &[String],
) -> Result<Vec<PathBuf>, CertgenError> {
    let ca = CertificateAuthority::new(cluster)?;
    let mut files = vec![
        (dir.join("ca.pem"), ca.cert_pem().to_owned(), false),
        (dir.join("ca.key"), ca.key_pem().to_owned(), true),
    ];
    for node in nodes {
        let issued = ca.issue(node)?;
        files.push((dir.join(format!("{node}.pem")), issued.cert_pem, false));
        files.push((dir.join(format!("{node}.key")), issued.key_pem, true));
    }
    let write_error = |file: &Path, source| CertgenError::Write {
        file: file.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    if let Some((file, ..)) = files.iter().find(|(file, ..)| file.exists()) {
        return Err(write_error(
            file,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already exists; nothing written",
            ),
        ));
    }
    for (file, contents, secret) in &files {
        write_new(file, contents.as_bytes(), *secret).map_err(|e| write_error(file, e))?;
    }
    Ok(files.into_iter().map(|(file, ..)| file).collect())
}

fn write_new(file: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options.open(file)?.write_all(contents)
}
