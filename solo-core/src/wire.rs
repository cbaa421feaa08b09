//! The wire format: what nodes say to each other, and how it is framed.
//!
//! A frame is one byte of [`PROTOCOL_VERSION`] followed by a postcard-encoded [`Message`].
//! The transport adds the length prefix and enforces [`MAX_FRAME_LEN`] *before* allocating;
//! [`decode_frame`] checks it again so the codec is safe on its own. Every decode failure is a
//! [`DecodeError`] value: a malformed frame never panics and never reaches the state machine,
//! so it changes no state.
//!
//! A connection starts with a [`Hello`] from each side, carrying the protocol version and the
//! cluster's name, so that two clusters, or two releases that cannot talk, refuse each other
//! at the handshake rather than by misreading frames.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::id::{NodeId, NodeName};
use crate::membership::{MemberState, NodeMeta};
use crate::supervisor::ChildRecord;

mod byte_strings;

/// The protocol this build speaks. Bumped on any incompatible change to [`Message`].
pub const PROTOCOL_VERSION: u8 = 9;

/// The largest frame, in bytes, that a node sends or accepts (1 MiB). A full member table of
/// [`Config::max_members`](crate::Config::max_members) members fits with room to spare.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// The longest cluster name accepted in a [`Hello`], in bytes.
pub const MAX_CLUSTER_NAME_LEN: usize = 64;

/// The first thing each side of a connection sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub protocol_version: u8,
    /// The cluster the sender belongs to; a node only talks to its own cluster.
    pub cluster: String,
    /// Who the sender is.
    pub node: NodeId,
    /// Where the sender accepts connections.
    pub addr: SocketAddr,
    /// The cluster's voters as the sender was configured (sorted): nodes that disagree on
    /// them could each count a different majority, so they never talk.
    pub voters: Vec<NodeName>,
}

/// Why a [`Hello`] was refused. The connection is closed; no state changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {got}, this node speaks {PROTOCOL_VERSION}")]
    WrongVersion {
        /// The version the peer announced.
        got: u8,
    },
    /// The peer belongs to another cluster.
    #[error("peer belongs to cluster {got:?}, this node to {expected:?}")]
    WrongCluster {
        /// The cluster the peer announced.
        got: String,
        /// This node's cluster.
        expected: String,
    },
    /// The peer was given another set of voters.
    #[error(
        "peer has voters {got:?}, this node has {expected:?}: every node needs the same voters"
    )]
    VotersDiffer {
        /// The peer's voters.
        got: Vec<NodeName>,
        /// This node's voters.
        expected: Vec<NodeName>,
    },
}

impl Hello {
    /// Checks a peer's hello against this node's cluster name and voters (sorted).
    ///
    /// # Errors
    ///
    /// [`HelloError`] when the version, the cluster or the voters differ.
    pub fn check(&self, cluster: &str, voters: &[NodeName]) -> Result<(), HelloError> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(HelloError::WrongVersion {
                got: self.protocol_version,
            });
        }
        if self.cluster != cluster {
            return Err(HelloError::WrongCluster {
                got: self.cluster.clone(),
                expected: cluster.to_owned(),
            });
        }
        if self.voters != voters {
            return Err(HelloError::VotersDiffer {
                got: self.voters.clone(),
                expected: voters.to_vec(),
            });
        }
        Ok(())
    }
}

/// What one node knows of one member, as it travels in gossip.
///
/// Updates merge by a total order, so gossip converges whatever order it arrives in: a newer
/// incarnation beats an older one; within an incarnation, `Left` beats everything, then the
/// higher `version` wins, and at equal versions `Down` beats `Suspect` beats `Alive`. Only a
/// member itself raises its `version`, to refute a suspicion or a false `Down`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdate {
    /// Which member.
    pub id: NodeId,
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// What the sender believes of it.
    pub state: MemberState,
    /// The member's refutation counter, raised only by the member itself, at most
    /// [`MAX_VERSION`](crate::membership::MAX_VERSION).
    pub version: u64,
    /// What the member says about itself (roles, draining, declared singletons).
    pub meta: NodeMeta,
    /// For a `Down` or `Left` row: how long ago, in milliseconds, the sender learned that the
    /// member ended (0 for a live one). A receiver dates the tombstone back by as much, so it
    /// is forgotten everywhere about when its first copy is, and a copy that one node forgot
    /// is not brought back, young again, by another that had not yet.
    pub ended_ms_ago: u32,
}

/// Everything nodes say to each other once connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// "Are you alive?" A probe of `target`, with gossip piggybacked.
    Ping {
        /// Matches the [`Message::Ack`].
        seq: u32,
        /// The member being probed; a newer incarnation at the same address does not answer.
        target: NodeId,
        /// Piggybacked membership updates.
        updates: Vec<MemberUpdate>,
        /// A hash of the sender's child table: a mismatch starts a repair.
        children: u64,
    },
    /// "I am." The answer to a [`Message::Ping`].
    Ack {
        /// The probe answered.
        seq: u32,
        /// Piggybacked membership updates.
        updates: Vec<MemberUpdate>,
        /// A hash of the sender's child table: a mismatch starts a repair.
        children: u64,
    },
    /// "Please probe `target` for me": SWIM's indirect probe, sent when a direct probe went
    /// unanswered, so that one bad link does not make a healthy node suspect.
    PingReq {
        /// Echoed in the [`Message::IndirectAck`].
        seq: u32,
        /// The member to probe: only one the helper knows, at the address it knows.
        target: NodeId,
        /// Where the requester reaches it (a hint the helper does not dial).
        target_addr: SocketAddr,
    },
    /// "`target` answered the probe you asked me to make."
    IndirectAck {
        /// The `seq` of the [`Message::PingReq`].
        seq: u32,
        /// The member that answered.
        target: NodeId,
    },
    /// Membership news sent straight to every member by the node that first knew it: a
    /// join, a suspicion, a `Down`, a refutation, a leave.
    Gossip {
        /// The news.
        updates: Vec<MemberUpdate>,
    },
    /// The sender's whole member table (anti-entropy, and the answer to a join). A receiver
    /// with `reply` set answers with its own table.
    Sync {
        /// Every member the sender knows, itself included.
        members: Vec<MemberUpdate>,
        /// Whether the receiver should answer with its own table.
        reply: bool,
    },
    /// Child records: a start or an end to replicate (`ack` set: answer with
    /// [`Message::ChildAck`]), or anti-entropy (`ack` clear).
    Children {
        /// The records.
        records: Vec<ChildRecord>,
        /// Whether the receiver should acknowledge the records (in one [`Message::ChildAck`]).
        ack: bool,
    },
    /// "I hold these records now": lets `start_child` answer once two members hold the
    /// spec. One acknowledgement answers one [`Message::Children`], for all its records.
    ChildAck {
        /// Each child held, with the stamp counter of the record held.
        acks: Vec<(crate::placement::ChildId, u64)>,
    },
    /// The sender's child-table digest, one value per bucket.
    ChildDigest {
        /// XOR of the live records' hashes, per bucket.
        digests: Vec<u64>,
    },
    /// "These buckets differ: send me your records in them."
    ChildPull {
        /// Bucket indices.
        buckets: Vec<u16>,
    },
    /// Messages between the runtimes of two nodes on behalf of workers (calls, casts,
    /// replies, handed-over state). The core carries them and never looks inside:
    /// [`Node::handle_message`](crate::Node::handle_message) ignores them, the runtime
    /// decodes frames itself and handles these.
    App(AppMessage),
    /// "I am about to run these children (and singletons): does any run on your side?"
    /// A node that becomes an owner asks every live member before it starts anything, so
    /// that a view a moment behind (a join, a declaration, a heal) never runs two copies.
    /// Each claim is answered in a [`Message::ClaimReply`].
    Claim {
        /// Each child claimed, with the claim's round (echoed in the answer).
        claims: Vec<(crate::placement::ChildId, u64)>,
    },
    /// Answers to [`Message::Claim`]s.
    ClaimReply {
        /// The claimer answered. A transport may deliver a frame meant for a process that
        /// died to its successor at the same address, whose own counters started afresh:
        /// the receiver ignores answers that are not its own.
        claimer: NodeId,
        /// One answer per claim; an answer may come later than others of its message (it
        /// waits for an instance here to end).
        answers: Vec<ClaimAnswer>,
    },
    /// To a voter: "grant me, or renew, the lease of these exclusive children, each under
    /// the fencing token given". One message per voter carries every lease the sender
    /// holds or wants, so lease traffic grows with nodes, not with children.
    LeaseRequest {
        /// Echoed in each answer: the sender counts a grant from when it sent this.
        seq: u32,
        /// Each child, with the token proposed (a renewal proposes the token it holds).
        leases: Vec<(crate::placement::ChildId, u64)>,
    },
    /// A voter's answers to [`Message::LeaseRequest`]s. A request for a lease another
    /// holder has is answered once that lease is released or has run out.
    LeaseReply {
        /// The holder answered: as for [`Message::ClaimReply`], a receiver ignores answers
        /// meant for another process (a former incarnation of its name).
        holder: NodeId,
        /// The answers.
        answers: Vec<LeaseAnswer>,
    },
    /// To a voter: "I hold these leases no longer" (the instance stopped, or the claim was
    /// given up), so that the next owner need not wait for them to run out.
    LeaseRelease {
        /// Each child, with the token released.
        leases: Vec<(crate::placement::ChildId, u64)>,
    },
    /// A voter that starts without its state asks the other voters for the highest token
    /// they know, so that it never grants one that could repeat.
    TokenFloorQuery,
    /// The answer to [`Message::TokenFloorQuery`].
    TokenFloor {
        /// The highest token this voter granted or heard of for any child, or `None` if it
        /// is itself recovering and knows nothing yet.
        floor: Option<u64>,
        /// The token floor the voter started with (see `NodeBuilder::token_floor`).
        boot_floor: u64,
    },
    /// To a voter: "renew every lease you granted me; I count these many, with this
    /// digest". The renewal of all of a holder's leases at one voter in a message of a
    /// fixed size, so that renewal traffic grows with nodes, not with exclusive children.
    /// The voter renews only when its own running grants to the sender are exactly the set
    /// described; otherwise the holder falls back to a [`Message::LeaseRequest`] per lease.
    LeaseRenew {
        /// Echoed in the answer: the sender counts the renewal from when it sent this.
        seq: u32,
        /// How many leases the sender counts as granted by this voter.
        count: u32,
        /// XXH3-128 over those leases in id order: each child id's bytes, `0xFF`, then
        /// the token's 8 little-endian bytes.
        digest: u128,
    },
    /// A voter's answer to [`Message::LeaseRenew`].
    LeaseRenewed {
        /// The holder answered (as for [`Message::LeaseReply`]).
        holder: NodeId,
        /// The `seq` of the renewal answered.
        seq: u32,
        /// Every lease described was renewed; `false`: the sets differ, nothing was
        /// renewed, and the holder asks lease by lease.
        renewed: bool,
    },
}

/// A voter's answer to one lease of a [`Message::LeaseRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAnswer {
    /// The exclusive child.
    pub id: crate::placement::ChildId,
    /// The token the request proposed.
    pub token: u64,
    /// The `seq` of the request answered.
    pub seq: u32,
    /// What the voter says.
    pub verdict: LeaseVerdict,
}

/// What a voter answers to a lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseVerdict {
    /// Granted (or renewed) for `lease_duration` of the voter's clock from now.
    Granted,
    /// The token is not above the highest this voter has granted or promised for the
    /// child (given here): propose a larger one. A holder whose renewal gets this has lost
    /// the lease to a newer holder.
    Refused {
        /// The highest token the voter knows for the child.
        highest: u64,
    },
    /// The voter does not vote yet: it restarted and waits out one lease, or recovers the
    /// highest tokens from the other voters.
    NotVoting,
}

/// The answer to one claim of a [`Message::Claim`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimAnswer {
    /// The child claimed.
    pub id: crate::placement::ChildId,
    /// The claim's round.
    pub round: u64,
    /// What the answering node says.
    pub verdict: ClaimVerdict,
}

/// What a node answers to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimVerdict {
    /// Nothing of it runs here, and this node does not claim it.
    Free,
    /// An instance ran here and has ended; the state it handed over (if any) was sent
    /// before this answer, on the same connection.
    Released,
    /// It runs here, or this node claims it with precedence: the claimer's view is behind.
    /// The claimer waits and, if it still owns the child by then, claims again.
    Refused,
}

/// What the runtimes of two nodes say to each other on behalf of workers: see
/// [`Message::App`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AppMessage {
    /// A message for the worker that runs a child (or singleton).
    Deliver(Delivery),
    /// The answer to a call, sent straight to the caller's node.
    Reply {
        /// The caller's number for the call ([`CallRef::call`]).
        call: u64,
        /// The call's [`CallRef::token`], as the call carried it.
        token: u64,
        /// The worker's encoded reply, or why there is none.
        #[serde(with = "byte_strings::result")]
        result: Result<Vec<u8>, RemoteError>,
    },
    /// The state a worker handed over when its child moved here on purpose (or lost a
    /// conflict to the instance here). `None`: the new instance starts afresh.
    Handoff {
        /// The child.
        id: crate::placement::ChildId,
        /// The encoded state, if the old instance chose to hand it over.
        #[serde(with = "byte_strings::option")]
        state: Option<Vec<u8>>,
        /// Calls the old instance took in lately, per caller as ranges of call numbers
        /// (first, last): a caller that routes one of them again (it saw the old node leave
        /// before the answer arrived) must not get it handled twice. The answer the old
        /// instance sent still reaches the caller.
        seen: Vec<(NodeId, Vec<(u64, u64)>)>,
    },
}

/// A message for the worker that runs `to`, wherever that is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The child (or singleton) whose worker should get it.
    pub to: crate::placement::ChildId,
    /// Where the answer goes; `None` for a one-way message (a cast).
    pub reply_to: Option<CallRef>,
    /// The encoded message.
    #[serde(with = "byte_strings::vec")]
    pub payload: Vec<u8>,
    /// How many nodes passed it on already: a node that does not run `to` forwards it to
    /// the owner it knows, a bounded number of times.
    pub hops: u8,
    /// Passed on by the node `to` just moved away from, which delivers these before any
    /// that reach the new node directly (so that one sender's messages stay in order).
    pub from_previous_owner: bool,
}

/// Identifies a call for its answer (and, at the receiving node, against duplicates).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallRef {
    /// The calling node, which waits for the [`AppMessage::Reply`].
    pub caller: NodeId,
    /// The caller's number for the call.
    pub call: u64,
    /// The caller's secret for the call, which its answer must carry
    /// ([`AppMessage::Reply::token`]): a node the call never reached cannot answer it.
    pub token: u64,
}

/// Why a call got no reply from a worker. Sent over the wire, so it is plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The child's worker does not take messages (it is not an actor).
    #[error("the worker does not take messages")]
    NotAnActor,
    /// The worker could not decode the message as its call type.
    #[error("the worker could not decode the message: {0}")]
    BadMessage(String),
    /// The worker's handler failed.
    #[error("the worker's handler failed: {0}")]
    Failed(String),
    /// No node knows this name.
    #[error("no such name")]
    NoSuchName,
    /// The node does not run it (it is moving, or the node's view is behind): the caller
    /// routes the call again.
    #[error("not running here")]
    NotHere,
    /// The node holds as many messages for others as it may
    /// ([`MessagingConfig::max_held_bytes`](crate::messaging::MessagingConfig::max_held_bytes)):
    /// the call was not delivered.
    #[error("the worker's node is overloaded")]
    Overloaded,
    /// The worker's answer encodes to more than
    /// [`MAX_PAYLOAD_LEN`](crate::messaging::MAX_PAYLOAD_LEN) bytes: it cannot travel.
    #[error("the worker's answer is too large to send")]
    ReplyTooLarge,
}

/// A [`Message`] that could not be framed. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    Oversized(usize),
    /// The serializer failed (a bug: every message type is serializable).
    #[error("message could not be encoded: {0}")]
    Serialize(postcard::Error),
}

/// A frame that was refused. The frame is dropped whole; no state changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame holds no bytes.
    #[error("empty frame")]
    Empty,
    /// The frame is longer than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    Oversized(usize),
    /// The frame was written by another protocol version.
    #[error("frame has protocol version {got}, this node speaks {PROTOCOL_VERSION}")]
    WrongVersion {
        /// The version byte found.
        got: u8,
    },
    /// The frame ends before its message does.
    #[error("frame is truncated")]
    Truncated,
    /// The bytes after the version are not a valid message.
    #[error("frame is malformed: {0}")]
    Malformed(postcard::Error),
    /// A valid message is followed by extra bytes.
    #[error("frame has {0} trailing bytes after its message")]
    TrailingBytes(usize),
}

/// The capacity a frame's buffer starts with: calls, replies and gossip of a few members.
const SMALL_FRAME: usize = 128;

/// Encodes `message` as one frame: the version byte, then postcard.
///
/// # Errors
///
/// [`EncodeError::Oversized`] when the frame would exceed [`MAX_FRAME_LEN`].
pub fn encode_frame(message: &Message) -> Result<Vec<u8>, EncodeError> {
    // Room for the common small message up front: grown from one byte, a 40-byte call
    // would cost four reallocations.
    let mut buffer = Vec::with_capacity(SMALL_FRAME);
    encode_frame_onto(message, &mut buffer)?;
    Ok(buffer)
}

/// Appends `message`, encoded as one frame as [`encode_frame`] does, to `out`, and returns the
/// frame's length: a sender that keeps its frames in one buffer (a connection's outbox) pays
/// no allocation of its own per frame.
///
/// # Errors
///
/// As [`encode_frame`]; `out` is then as it was.
pub fn encode_frame_onto(message: &Message, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let start = out.len();
    out.push(PROTOCOL_VERSION);
    if let Err(error) = postcard::serialize_with_flavor(message, AppendTo(out)) {
        out.truncate(start);
        return Err(EncodeError::Serialize(error));
    }
    let len = out.len() - start;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(EncodeError::Oversized(len));
    }
    Ok(len)
}

/// The postcard output that appends to a `Vec` it borrows (postcard's own takes the `Vec` by
/// value, and gives nothing back on an error).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Decodes one frame written by [`encode_frame`].
///
/// # Errors
///
/// [`DecodeError`] says what is wrong with the frame; the caller drops it.
pub fn decode_frame(frame: &[u8]) -> Result<Message, DecodeError> {
    let (&version, body) = frame.split_first().ok_or(DecodeError::Empty)?;
    if frame.len() > MAX_FRAME_LEN {
        return Err(DecodeError::Oversized(frame.len()));
    }
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::WrongVersion { got: version });
    }
    let (message, rest) = postcard::take_from_bytes::<Message>(body).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        other => DecodeError::Malformed(other),
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(message)
}

/// Encodes a [`Hello`] (postcard, no version byte: the hello carries its own).
///
/// # Errors
///
/// [`EncodeError`] if the hello cannot be encoded.
pub fn encode_hello(hello: &Hello) -> Result<Vec<u8>, EncodeError> {
    postcard::to_allocvec(hello).map_err(EncodeError::Serialize)
}

/// Decodes a [`Hello`]; the caller then [`check`](Hello::check)s it.
///
/// # Errors
///
/// [`DecodeError`] when the bytes are not a hello.
pub fn decode_hello(bytes: &[u8]) -> Result<Hello, DecodeError> {
    if bytes.len() > MAX_FRAME_LEN {
        return Err(DecodeError::Oversized(bytes.len()));
    }
    let (hello, rest) = postcard::take_from_bytes::<Hello>(bytes).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        other => DecodeError::Malformed(other),
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    if hello.cluster.len() > MAX_CLUSTER_NAME_LEN {
        return Err(DecodeError::Malformed(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Incarnation, NodeName};
    use proptest::prelude::*;

    fn id(name: &str) -> NodeId {
        NodeId::new(NodeName::new(name).expect("valid"), Incarnation(3))
    }

    fn sample() -> Message {
        Message::Ping {
            seq: 9,
            target: id("b"),
            updates: vec![MemberUpdate {
                ended_ms_ago: 0,
                id: id("c"),
                addr: "127.0.0.1:7001".parse().expect("addr"),
                state: MemberState::Suspect,
                version: 2,
                meta: NodeMeta::default(),
            }],
            children: 7,
        }
    }

    #[test]
    fn frames_round_trip() {
        let frame = encode_frame(&sample()).expect("encode");
        assert_eq!(frame[0], PROTOCOL_VERSION);
        assert_eq!(decode_frame(&frame), Ok(sample()));
    }

    #[test]
    fn a_frame_appended_to_a_buffer_is_the_frame_alone_and_a_refused_one_leaves_it_as_it_was() {
        let mut out = b"before".to_vec();
        let len = encode_frame_onto(&sample(), &mut out).expect("encode");
        let alone = encode_frame(&sample()).expect("encode");
        assert_eq!((len, &out[6..]), (alone.len(), &alone[..]));
        assert_eq!(&out[..6], b"before");
        let oversized = Message::App(AppMessage::Reply {
            call: 1,
            token: 2,
            result: Ok(vec![0; MAX_FRAME_LEN]),
        });
        let before = out.clone();
        assert!(matches!(
            encode_frame_onto(&oversized, &mut out),
            Err(EncodeError::Oversized(_))
        ));
        assert_eq!(out, before);
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        let frame = encode_frame(&sample()).expect("encode");
        assert_eq!(decode_frame(&[]), Err(DecodeError::Empty));
        assert_eq!(
            decode_frame(&frame[..frame.len() - 1]),
            Err(DecodeError::Truncated)
        );
        let mut wrong_version = frame.clone();
        wrong_version[0] = PROTOCOL_VERSION + 1;
        assert_eq!(
            decode_frame(&wrong_version),
            Err(DecodeError::WrongVersion {
                got: PROTOCOL_VERSION + 1
            })
        );
        let mut trailing = frame.clone();
        trailing.push(0);
        assert_eq!(decode_frame(&trailing), Err(DecodeError::TrailingBytes(1)));
        let oversized = vec![PROTOCOL_VERSION; MAX_FRAME_LEN + 1];
        assert_eq!(
            decode_frame(&oversized),
            Err(DecodeError::Oversized(MAX_FRAME_LEN + 1))
        );
        // 0x7F is a complete varint naming a variant that does not exist.
        assert!(matches!(
            decode_frame(&[PROTOCOL_VERSION, 0x7F]),
            Err(DecodeError::Malformed(_))
        ));
        // 0xFF promises another varint byte that never comes.
        assert_eq!(
            decode_frame(&[PROTOCOL_VERSION, 0xFF]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn hellos_check_version_cluster_and_voters() {
        let voters: Vec<NodeName> = ["v1", "v2", "v3"]
            .into_iter()
            .map(|n| NodeName::new(n).expect("name"))
            .collect();
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster: "prod".into(),
            node: id("a"),
            addr: "127.0.0.1:7000".parse().expect("addr"),
            voters: voters.clone(),
        };
        let bytes = encode_hello(&hello).expect("encode");
        let back = decode_hello(&bytes).expect("decode");
        assert_eq!(back.check("prod", &voters), Ok(()));
        assert!(matches!(
            back.check("staging", &voters),
            Err(HelloError::WrongCluster { .. })
        ));
        let error = back.check("prod", &voters[..2]).expect_err("voters differ");
        assert!(matches!(error, HelloError::VotersDiffer { .. }));
        assert!(
            error.to_string().contains("v3"),
            "the error names both sets: {error}"
        );
        let old = Hello {
            protocol_version: 0,
            ..hello
        };
        assert_eq!(
            old.check("prod", &voters),
            Err(HelloError::WrongVersion { got: 0 })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes);
            let _ = decode_hello(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic_the_decoder(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut frame = encode_frame(&sample()).expect("encode");
            for (at, byte) in flips {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            let keep = cut.index(frame.len() + 1);
            let _ = decode_frame(&frame[..keep]);
        }
    }
}
