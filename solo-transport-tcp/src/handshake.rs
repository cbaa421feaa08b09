//! The connection handshake: hellos, and a mutual HMAC challenge-response over the cookie.
//!
//! The byte-level description, and the argument for why it is safe, are in the crate docs.
//! This module holds the two roles as straight-line async functions over any byte stream, so
//! they can be tested over an in-memory pipe.

use ring::hmac;
use solo_core::wire::{self, DecodeError, EncodeError, Hello, HelloError};
use solo_core::{Incarnation, NodeId};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::frame::{self, FrameError};
use crate::random::RandomError;

/// Bytes in a nonce.
pub(crate) const NONCE_LEN: usize = 32;
/// Bytes in an HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 32;
/// The largest handshake message accepted. A hello takes under 200 bytes; the cap keeps an
/// unauthenticated peer from making this node allocate more than this.
pub(crate) const MAX_HANDSHAKE_FRAME_LEN: usize = 1024;
/// Domain separation: a tag made here is useless to any other protocol keyed by the cookie.
pub(crate) const DOMAIN: &[u8] = b"solo-tcp handshake v1\0";
/// The role byte in the initiator's transcript.
pub(crate) const ROLE_INITIATOR: u8 = 0x01;
/// The role byte in the acceptor's transcript.
pub(crate) const ROLE_ACCEPTOR: u8 = 0x02;

/// A nonce.
pub(crate) type Nonce = [u8; NONCE_LEN];

/// Why a handshake failed. The connection is closed and never reported to the core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The TCP connect failed.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The handshake did not finish within [`Config::handshake_timeout`](crate::Config::handshake_timeout).
    #[error("handshake timed out")]
    Timeout,
    /// The stream failed or closed, or a message's length prefix was out of range.
    #[error("handshake framing: {0}")]
    Frame(#[from] FrameError),
    /// A handshake message has the wrong length for its step.
    #[error("handshake message of {0} bytes has the wrong length")]
    BadLength(usize),
    /// The peer's hello could not be decoded.
    #[error("malformed hello: {0}")]
    Hello(#[from] DecodeError),
    /// The peer speaks another protocol version or belongs to another cluster.
    #[error("peer refused: {0}")]
    Refused(#[from] HelloError),
    /// The peer claims this node's own identity (a node dialed itself, or an impostor).
    #[error("peer claims this node's own identity")]
    SelfConnection,
    /// The peer's proof of the cookie is wrong: another cookie, a replay or a forgery.
    #[error("peer failed to prove knowledge of the cluster cookie")]
    BadProof,
    /// The acceptor's verdict byte is not one this build knows.
    #[error("unknown verdict {0}")]
    UnknownVerdict(u8),
    /// The peer refused this node because it knows a newer incarnation of its name: this
    /// process is stale.
    #[error("superseded: the peer knows a newer incarnation of this node")]
    Superseded,
    /// The peer refused this node because it has as many connections as it allows.
    #[error("peer refused: it has too many connections")]
    PeerFull,
    /// The peer's certificate (from the cluster CA) does not name the node it claims to be.
    #[error("the peer's certificate does not name {claimed}")]
    WrongCertificate {
        /// The node name the peer's hello claimed.
        claimed: solo_core::NodeName,
    },
    /// This node could not draw a nonce.
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl HandshakeError {
    /// A short fixed name for the kind of failure: the `reason` label of the
    /// `solo_handshakes_rejected_total` metric (a bounded set, never the peer's words).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Timeout => "timeout",
            Self::Frame(_) => "framing",
            Self::BadLength(_) => "bad_length",
            Self::Hello(_) => "malformed_hello",
            Self::Refused(_) => "misconfigured",
            Self::SelfConnection => "self_connection",
            Self::BadProof => "bad_proof",
            Self::UnknownVerdict(_) => "unknown_verdict",
            Self::Superseded => "superseded",
            Self::PeerFull => "peer_full",
            Self::WrongCertificate { .. } => "wrong_certificate",
            Self::Random(_) => "randomness",
        }
    }
}

/// What the acceptor decided, once both sides were authenticated: the last byte of the
/// handshake, covered by the acceptor's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// This connection is the pair's connection from now on.
    Accepted = 0,
    /// The pair already has a connection that the tie-break keeps; this one closes quietly.
    Duplicate = 1,
    /// The acceptor knows a newer incarnation of the initiator's name; the initiator is
    /// stale. The newer incarnation follows the verdict byte.
    Superseded = 2,
    /// The acceptor has [`Config::max_connections`](crate::Config::max_connections) peers.
    Full = 3,
}

impl Verdict {
    fn from_byte(byte: u8) -> Result<Self, HandshakeError> {
        Ok(match byte {
            0 => Self::Accepted,
            1 => Self::Duplicate,
            2 => Self::Superseded,
            3 => Self::Full,
            other => return Err(HandshakeError::UnknownVerdict(other)),
        })
    }
}

/// This node's side of every handshake: its hello, encoded once, and the cookie as an HMAC key.
pub(crate) struct Identity {
    hello: Hello,
    hello_bytes: Vec<u8>,
    key: hmac::Key,
}

impl Identity {
    pub(crate) fn new(hello: Hello, cookie: &[u8]) -> Result<Self, EncodeError> {
        let hello_bytes = wire::encode_hello(&hello)?;
        Ok(Self {
            hello,
            hello_bytes,
            key: hmac::Key::new(hmac::HMAC_SHA256, cookie),
        })
    }

    pub(crate) fn node(&self) -> &NodeId {
        &self.hello.node
    }

    pub(crate) fn hello(&self) -> &Hello {
        &self.hello
    }

    fn check_peer(&self, peer: &Hello) -> Result<(), HandshakeError> {
        peer.check(&self.hello.cluster, &self.hello.voters)?;
        if peer.node == self.hello.node {
            return Err(HandshakeError::SelfConnection);
        }
        Ok(())
    }
}

/// The bytes each side's tag covers: `DOMAIN ‖ role ‖ nonce_i ‖ nonce_a ‖ u32be(len) ‖ hello_i
/// ‖ u32be(len) ‖ hello_a`, then the verdict for the acceptor (its byte, and for
/// [`Verdict::Superseded`] the newer incarnation as `u64be`).
pub(crate) fn transcript(
    role: u8,
    nonce_i: &Nonce,
    nonce_a: &Nonce,
    hello_i: &[u8],
    hello_a: &[u8],
    verdict: Option<&[u8]>,
) -> Vec<u8> {
    let mut t = Vec::with_capacity(
        DOMAIN.len() + 1 + 2 * NONCE_LEN + 8 + hello_i.len() + hello_a.len() + 9,
    );
    t.extend_from_slice(DOMAIN);
    t.push(role);
    t.extend_from_slice(nonce_i);
    t.extend_from_slice(nonce_a);
    for hello in [hello_i, hello_a] {
        // Hellos are at most MAX_HANDSHAKE_FRAME_LEN bytes, so the length always fits.
        let len = u32::try_from(hello.len()).unwrap_or(u32::MAX);
        t.extend_from_slice(&len.to_be_bytes());
        t.extend_from_slice(hello);
    }
    t.extend_from_slice(verdict.unwrap_or_default());
    t
}

/// The acceptor's verdict as sent: its byte, and the newer incarnation it knows of the
/// initiator's name when it says [`Verdict::Superseded`] (so that the stale process learns
/// who replaced it on its first redial).
fn verdict_bytes(verdict: Verdict, newer: Option<Incarnation>) -> Vec<u8> {
    let mut bytes = vec![verdict as u8];
    if verdict == Verdict::Superseded {
        bytes.extend_from_slice(&newer.map_or(0, |i| i.0).to_be_bytes());
    }
    bytes
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, message: &[u8]) -> Result<(), HandshakeError> {
    let bytes = frame::framed(message, MAX_HANDSHAKE_FRAME_LEN)?;
    stream.write_all(&bytes).await.map_err(FrameError::from)?;
    stream.flush().await.map_err(FrameError::from)?;
    Ok(())
}

async fn receive<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, HandshakeError> {
    Ok(frame::read_frame(stream, MAX_HANDSHAKE_FRAME_LEN).await?)
}

/// Splits `nonce ‖ hello` and checks the hello.
fn nonce_and_hello(me: &Identity, message: &[u8]) -> Result<(Nonce, Hello), HandshakeError> {
    let (nonce, hello) = unchecked_nonce_and_hello(message)?;
    me.check_peer(&hello)?;
    Ok((nonce, hello))
}

/// Splits `nonce ‖ hello`, checking only that the hello decodes.
fn unchecked_nonce_and_hello(message: &[u8]) -> Result<(Nonce, Hello), HandshakeError> {
    let (nonce, hello_bytes) = message
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(HandshakeError::BadLength(message.len()))?;
    let hello = wire::decode_hello(hello_bytes)?;
    Ok((*nonce, hello))
}

/// Runs the initiator's side on a fresh connection. Returns the acceptor's hello and verdict
/// (with, for [`Verdict::Superseded`], the newer incarnation of this node's name).
///
/// On any error the caller drops the stream. Not cancel-safe (the caller only ever cancels by
/// dropping the connection).
pub(crate) async fn initiate<S>(
    stream: &mut S,
    me: &Identity,
    nonce_i: Nonce,
) -> Result<(Hello, Verdict, Option<Incarnation>), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // 1. nonce_i ‖ hello_i
    let mut first = Vec::with_capacity(NONCE_LEN + me.hello_bytes.len());
    first.extend_from_slice(&nonce_i);
    first.extend_from_slice(&me.hello_bytes);
    send(stream, &first).await?;

    // 2. nonce_a ‖ hello_a
    let second = receive(stream).await?;
    let (nonce_a, hello_a) = nonce_and_hello(me, &second)?;
    let hello_a_bytes = &second[NONCE_LEN..];

    // 3. tag_i: the initiator proves first, and only to a node it chose to dial.
    let t_i = transcript(
        ROLE_INITIATOR,
        &nonce_i,
        &nonce_a,
        &me.hello_bytes,
        hello_a_bytes,
        None,
    );
    send(stream, hmac::sign(&me.key, &t_i).as_ref()).await?;

    // 4. tag_a ‖ verdict (‖ u64be newer incarnation, for `Superseded`)
    let fourth = receive(stream).await?;
    let (tag_a, verdict_bytes, newer) = match fourth.split_first_chunk::<TAG_LEN>() {
        Some((tag, rest @ &[_])) => (tag, rest, None),
        Some((tag, rest)) if rest.len() == 9 && rest[0] == Verdict::Superseded as u8 => {
            let mut incarnation = [0; 8];
            incarnation.copy_from_slice(&rest[1..]);
            (
                tag,
                rest,
                Some(Incarnation(u64::from_be_bytes(incarnation))),
            )
        }
        _ => return Err(HandshakeError::BadLength(fourth.len())),
    };
    let t_a = transcript(
        ROLE_ACCEPTOR,
        &nonce_i,
        &nonce_a,
        &me.hello_bytes,
        hello_a_bytes,
        Some(verdict_bytes),
    );
    hmac::verify(&me.key, &t_a, tag_a).map_err(|_| HandshakeError::BadProof)?;
    let verdict = Verdict::from_byte(verdict_bytes[0])?;
    if verdict == Verdict::Superseded && newer.is_none() {
        return Err(HandshakeError::BadLength(fourth.len()));
    }
    Ok((hello_a, verdict, newer))
}

/// An authenticated initiator, waiting for the acceptor's verdict.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) hello: Hello,
    hello_bytes: Vec<u8>,
    nonce_i: Nonce,
    nonce_a: Nonce,
}

/// Runs the acceptor's side up to and including checking the initiator's proof. The caller
/// then decides on a [`Verdict`] and calls [`finish_accept`].
///
/// The acceptor reveals no proof of its own before the initiator has proved itself, so a
/// stranger who connects learns nothing it could use to guess the cookie offline.
///
/// The first message must arrive within `hello_within` (a socket that never speaks is
/// closed long before the whole handshake's timeout).
pub(crate) async fn accept<S>(
    stream: &mut S,
    me: &Identity,
    nonce_a: Nonce,
    hello_within: std::time::Duration,
) -> Result<Pending, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // 1. nonce_i ‖ hello_i
    let first = tokio::time::timeout(hello_within, receive(stream))
        .await
        .map_err(|_| HandshakeError::Timeout)??;
    let (nonce_i, hello) = unchecked_nonce_and_hello(&first)?;
    let hello_bytes = first[NONCE_LEN..].to_vec();

    // 2. nonce_a ‖ hello_a, even to a dialer whose hello differs (another cluster name,
    // version or voter set): the hello holds nothing secret (it goes to any dialer that
    // names the right cluster), and the dialer, reading it, can say what differs instead
    // of seeing a bare close. Nothing is proved yet, and nothing more is sent.
    let mut second = Vec::with_capacity(NONCE_LEN + me.hello_bytes.len());
    second.extend_from_slice(&nonce_a);
    second.extend_from_slice(&me.hello_bytes);
    send(stream, &second).await?;
    me.check_peer(&hello)?;

    // 3. tag_i
    let third = receive(stream).await?;
    if third.len() != TAG_LEN {
        return Err(HandshakeError::BadLength(third.len()));
    }
    let t_i = transcript(
        ROLE_INITIATOR,
        &nonce_i,
        &nonce_a,
        &hello_bytes,
        &me.hello_bytes,
        None,
    );
    hmac::verify(&me.key, &t_i, &third).map_err(|_| HandshakeError::BadProof)?;
    Ok(Pending {
        hello,
        hello_bytes,
        nonce_i,
        nonce_a,
    })
}

/// Sends the acceptor's proof and verdict: the last handshake message.
pub(crate) async fn finish_accept<S>(
    stream: &mut S,
    me: &Identity,
    pending: &Pending,
    verdict: Verdict,
    newer: Option<Incarnation>,
) -> Result<(), HandshakeError>
where
    S: AsyncWrite + Unpin,
{
    let verdict = verdict_bytes(verdict, newer);
    let t_a = transcript(
        ROLE_ACCEPTOR,
        &pending.nonce_i,
        &pending.nonce_a,
        &pending.hello_bytes,
        &me.hello_bytes,
        Some(&verdict),
    );
    let mut fourth = Vec::with_capacity(TAG_LEN + verdict.len());
    fourth.extend_from_slice(hmac::sign(&me.key, &t_a).as_ref());
    fourth.extend_from_slice(&verdict);
    send(stream, &fourth).await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use solo_core::wire::PROTOCOL_VERSION;
    use solo_core::{Incarnation, NodeName};
    use tokio::io::AsyncReadExt;

    /// Never hit: the tests' peers speak at once.
    pub(crate) const HELLO_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

    pub(crate) fn id(name: &str, incarnation: u64) -> NodeId {
        NodeId::new(
            NodeName::new(name).expect("valid"),
            Incarnation(incarnation),
        )
    }

    pub(crate) fn identity(name: &str, cluster: &str, cookie: &[u8]) -> Identity {
        Identity::new(
            Hello {
                protocol_version: PROTOCOL_VERSION,
                cluster: cluster.into(),
                node: id(name, 1),
                addr: "127.0.0.1:7000".parse().expect("addr"),
                voters: Vec::new(),
            },
            cookie,
        )
        .expect("encodes")
    }

    /// Runs both roles over an in-memory pipe; the acceptor answers `Accepted`.
    async fn run(
        initiator: &Identity,
        acceptor: &Identity,
    ) -> (
        Result<(Hello, Verdict, Option<Incarnation>), HandshakeError>,
        Result<Pending, HandshakeError>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let accepting = async move {
            let result = async {
                let pending = accept(&mut b, acceptor, [2; NONCE_LEN], HELLO_WITHIN).await?;
                finish_accept(&mut b, acceptor, &pending, Verdict::Accepted, None).await?;
                Ok(pending)
            }
            .await;
            // Closing the pipe tells the other side, as closing a socket would.
            drop(b);
            result
        };
        let initiating = async move {
            let result = initiate(&mut a, initiator, [1; NONCE_LEN]).await;
            drop(a);
            result
        };
        tokio::join!(initiating, accepting)
    }

    #[tokio::test]
    async fn nodes_with_the_same_cookie_authenticate_each_other() {
        let a = identity("a", "prod", b"cookie");
        let b = identity("b", "prod", b"cookie");
        let (i, p) = run(&a, &b).await;
        let (hello, verdict, _) = i.expect("initiator succeeds");
        assert_eq!(hello.node, id("b", 1));
        assert_eq!(verdict, Verdict::Accepted);
        assert_eq!(p.expect("acceptor succeeds").hello.node, id("a", 1));
    }

    #[tokio::test]
    async fn a_wrong_cookie_fails_and_the_acceptor_reveals_no_proof() {
        let a = identity("a", "prod", b"cookie");
        let b = identity("b", "prod", b"other");
        let (i, p) = run(&a, &b).await;
        assert!(matches!(p, Err(HandshakeError::BadProof)), "{p:?}");
        // The acceptor closed instead of sending its tag.
        assert!(matches!(i, Err(HandshakeError::Frame(_))), "{i:?}");
    }

    #[tokio::test]
    async fn other_clusters_and_versions_are_refused() {
        let a = identity("a", "prod", b"cookie");
        let b = identity("b", "staging", b"cookie");
        let (_, p) = run(&a, &b).await;
        assert!(matches!(
            p,
            Err(HandshakeError::Refused(HelloError::WrongCluster { .. }))
        ));

        let mut old = identity("c", "prod", b"cookie").hello().clone();
        old.protocol_version = PROTOCOL_VERSION + 1;
        let old = Identity::new(old, b"cookie").expect("encodes");
        let (i, p) = run(&a, &old).await;
        assert!(
            matches!(
                i,
                Err(HandshakeError::Refused(HelloError::WrongVersion { .. }))
            ),
            "{i:?}"
        );
        assert!(p.is_err());
    }

    #[tokio::test]
    async fn a_node_refuses_itself() {
        let a = identity("a", "prod", b"cookie");
        let (i, p) = run(&a, &a).await;
        assert!(matches!(p, Err(HandshakeError::SelfConnection)));
        assert!(i.is_err());
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let me = identity("b", "prod", b"cookie");
        for garbage in [
            &[0u8, 0, 0, 3, 1, 2, 3][..],      // too short for a nonce
            &[0, 0, 0, 40, 7, 7, 7, 7, 7][..], // truncated
            &[0xFF, 0xFF, 0xFF, 0xFF][..],     // oversized
            &[0, 0, 0, 0][..],                 // empty
            &[0, 0, 4, 1][..],                 // over the handshake limit
        ] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            a.write_all(garbage).await.expect("write");
            drop(a);
            assert!(
                accept(&mut b, &me, [0; NONCE_LEN], HELLO_WITHIN)
                    .await
                    .is_err()
            );
        }
        // A nonce and then bytes that are no hello.
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut junk = vec![0xAB; NONCE_LEN + 20];
        junk[NONCE_LEN] = 0xFF;
        a.write_all(&frame::framed(&junk, 1024).expect("framed"))
            .await
            .expect("write");
        assert!(matches!(
            accept(&mut b, &me, [0; NONCE_LEN], HELLO_WITHIN).await,
            Err(HandshakeError::Hello(_))
        ));
    }

    #[tokio::test]
    async fn a_replayed_initiator_transcript_fails_against_a_fresh_nonce() {
        let a = identity("a", "prod", b"cookie");
        let b = identity("b", "prod", b"cookie");
        // Record what an honest initiator sends.
        let (mut client, mut server) = tokio::io::duplex(4096);
        let (i, p) = tokio::join!(initiate(&mut client, &a, [1; NONCE_LEN]), async {
            let pending = accept(&mut server, &b, [2; NONCE_LEN], HELLO_WITHIN).await?;
            finish_accept(&mut server, &b, &pending, Verdict::Accepted, None).await
        });
        i.expect("honest run");
        p.expect("honest run");
        drop(client);
        // The initiator's two messages, byte for byte as it sent them.
        let mut recorded = Vec::new();
        let mut first = a.hello_bytes.clone();
        first.splice(0..0, [1u8; NONCE_LEN]);
        recorded.extend(frame::framed(&first, 1024).expect("framed"));
        let t_i = transcript(
            ROLE_INITIATOR,
            &[1; NONCE_LEN],
            &[2; NONCE_LEN],
            &a.hello_bytes,
            &b.hello_bytes,
            None,
        );
        recorded.extend(frame::framed(hmac::sign(&a.key, &t_i).as_ref(), 1024).expect("framed"));

        // Replay against an acceptor that draws another nonce.
        let (mut attacker, mut server) = tokio::io::duplex(4096);
        attacker.write_all(&recorded).await.expect("write");
        let result = accept(&mut server, &b, [3; NONCE_LEN], HELLO_WITHIN).await;
        assert!(
            matches!(result, Err(HandshakeError::BadProof)),
            "{result:?}"
        );
        drop(server);
        // The attacker read the acceptor's nonce and hello, then nothing: no tag leaked.
        let mut rest = Vec::new();
        attacker.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest.len(), 4 + NONCE_LEN + b.hello_bytes.len());
    }

    #[test]
    fn roles_are_bound_so_a_tag_cannot_be_reflected() {
        let (n1, n2) = ([1; NONCE_LEN], [2; NONCE_LEN]);
        let t_i = transcript(ROLE_INITIATOR, &n1, &n2, b"h1", b"h2", None);
        let t_a = transcript(ROLE_ACCEPTOR, &n1, &n2, b"h1", b"h2", None);
        assert_ne!(t_i, t_a);
        // Moving bytes between the two hellos changes the transcript.
        assert_ne!(
            transcript(ROLE_INITIATOR, &n1, &n2, b"h1h", b"2", None),
            t_i
        );
    }

    #[test]
    fn unknown_verdicts_are_errors() {
        assert!(matches!(
            Verdict::from_byte(9),
            Err(HandshakeError::UnknownVerdict(9))
        ));
        for v in [
            Verdict::Accepted,
            Verdict::Duplicate,
            Verdict::Superseded,
            Verdict::Full,
        ] {
            assert_eq!(Verdict::from_byte(v as u8).expect("known"), v);
        }
    }
}

/// The handshake's bodies for fuzzing (see `solo_core::testing::fuzz`): one copy, run by
/// the coverage-guided targets in `fuzz/` and by the stable tests.
#[doc(hidden)]
pub mod fuzzing {
    use std::time::Duration;

    use solo_core::wire::{Hello, PROTOCOL_VERSION};
    use solo_core::{Incarnation, NodeId, NodeName};
    use tokio::io::AsyncWriteExt;

    use super::{Identity, NONCE_LEN, accept, initiate};

    fn identity(name: &str) -> Identity {
        let node = NodeId::new(
            NodeName::new(name).unwrap_or_else(|e| panic!("a valid name: {e}")),
            Incarnation(1),
        );
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster: "fuzz".into(),
            node,
            addr: ([127, 0, 0, 1], 7000).into(),
            voters: Vec::new(),
        };
        Identity::new(hello, b"fuzzing-cookie-0123456789")
            .unwrap_or_else(|e| panic!("the fuzzing hello encodes: {e}"))
    }

    /// `bytes` as everything a stranger's connection sends, to the acceptor and to the
    /// initiator in turn, over an in-memory pipe: neither panics, and neither admits a peer
    /// that never proved the cookie.
    pub fn handshake(bytes: &[u8]) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("a runtime: {e}"));
        runtime.block_on(async {
            for initiator in [false, true] {
                let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
                let me = identity("me");
                let sent = bytes.to_vec();
                let stranger = tokio::spawn(async move {
                    let _ = theirs.write_all(&sent).await;
                    let _ = theirs.shutdown().await;
                    // Keep reading so that our side's writes never block.
                    let mut sink = Vec::new();
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut sink).await;
                });
                let result = if initiator {
                    initiate(&mut ours, &me, [1; NONCE_LEN]).await.map(|_| ())
                } else {
                    accept(&mut ours, &me, [2; NONCE_LEN], Duration::from_secs(1))
                        .await
                        .map(|_| ())
                };
                // Our end closes, so the stranger's read ends.
                drop(ours);
                let _ = stranger.await;
                assert!(
                    result.is_err(),
                    "a peer that cannot know the cookie was admitted (initiator: {initiator})"
                );
            }
        });
    }
}
