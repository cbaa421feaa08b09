//! Actors: workers with a mailbox that can be called, cast to and moved with their state.
//!
//! A plain [`Worker`](crate::Worker) is one async function; an [`Actor`] is a value with
//! handlers, in the style of an OTP `GenServer` and Swarm's handoff callbacks. Its message
//! types are associated types, serialized with postcard, so both ends are typed and nothing
//! crosses the wire as `Any`. A separate trait (rather than more methods on `Worker`) keeps
//! the one-closure worker as short as it was.

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use solo_core::messaging::MAX_STATE_LEN;
use solo_core::wire::{CallRef, RemoteError};
use solo_core::{ChildId, InstanceId, NodeId};
use tokio::sync::mpsc;

use crate::worker::{WorkerContext, WorkerError};
use crate::{Cluster, Error};

mod answers;

pub(crate) use answers::{AnswerReceiver, AnswerSender, DirectReply, channel as answer_channel};

/// A worker with a mailbox: solo routes [`Cluster::call`] and [`Cluster::send`] to the one
/// node that runs it, and hands its state over when it moves on purpose.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use solo::{Actor, Handoff, WorkerContext, WorkerError};
///
/// struct Counter(u64);
///
/// #[derive(Serialize, Deserialize)]
/// enum Op { Get, Add(u64) }
///
/// impl Actor for Counter {
///     type Call = Op;
///     type Reply = u64;
///     type Cast = u64;
///     type State = u64;
///
///     async fn start(_: &WorkerContext, handed_over: Option<u64>) -> Result<Self, WorkerError> {
///         Ok(Counter(handed_over.unwrap_or(0)))
///     }
///     async fn handle_call(&mut self, op: Op, _: &WorkerContext) -> Result<u64, WorkerError> {
///         if let Op::Add(n) = op { self.0 += n; }
///         Ok(self.0)
///     }
///     async fn handle_cast(&mut self, n: u64, _: &WorkerContext) -> Result<(), WorkerError> {
///         self.0 += n;
///         Ok(())
///     }
///     async fn begin_handoff(&mut self, _: &WorkerContext) -> Handoff<u64> {
///         Handoff::Resume(self.0)
///     }
/// }
/// ```
///
/// Messages are handled one at a time, in the order they arrived. A handler that returns an
/// error (or panics) ends the instance as a failure, which the child's restart policy
/// handles; the caller whose call failed gets [`CallError::Failed`].
pub trait Actor: Sized + Send + 'static {
    /// The requests it answers ([`Cluster::call`]).
    type Call: Serialize + DeserializeOwned + Send + 'static;
    /// Its answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// The one-way messages it takes ([`Cluster::send`]).
    type Cast: Serialize + DeserializeOwned + Send + 'static;
    /// What it hands over when it moves ([`begin_handoff`](Actor::begin_handoff)).
    type State: Serialize + DeserializeOwned + Send + 'static;

    /// If set, [`handle_tick`](Actor::handle_tick) runs this often, between messages (like
    /// a `GenServer`'s timeout message). Default: never.
    const TICK: Option<Duration> = None;

    /// Runs every [`TICK`](Actor::TICK). By default, nothing.
    fn handle_tick(
        &mut self,
        ctx: &WorkerContext,
    ) -> impl Future<Output = Result<(), WorkerError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Starts an instance. `handed_over` is the state the previous instance handed over
    /// (Swarm's `end_handoff`), or `None` for a fresh start. Messages that arrived while the
    /// state was on its way are handled after this returns, in order.
    fn start(
        ctx: &WorkerContext,
        handed_over: Option<Self::State>,
    ) -> impl Future<Output = Result<Self, WorkerError>> + Send;

    /// Answers a call.
    fn handle_call(
        &mut self,
        call: Self::Call,
        ctx: &WorkerContext,
    ) -> impl Future<Output = Result<Self::Reply, WorkerError>> + Send;

    /// Handles a one-way message. By default, ignores it.
    fn handle_cast(
        &mut self,
        cast: Self::Cast,
        ctx: &WorkerContext,
    ) -> impl Future<Output = Result<(), WorkerError>> + Send {
        let _ = (cast, ctx);
        async { Ok(()) }
    }

    /// The child is moving to another node on purpose (a rebalance after a join, a draining
    /// or leaving node) or lost a conflict after a healed partition: say what to hand over.
    /// Every message that arrived before is handled first; messages arriving after go to the
    /// new instance. By default, [`Handoff::Restart`].
    ///
    /// A state moves in one frame: encoded, it may be at most
    /// [`MAX_STATE_LEN`](solo_core::messaging::MAX_STATE_LEN) bytes (892 KiB). One
    /// that is larger, or does not encode, cannot move: the handoff fails with a
    /// [`HandoffError`], reported as [`Event::HandoffFailed`](crate::Event::HandoffFailed),
    /// and the new instance starts without a state. Keep larger state in a store and hand
    /// over a key.
    fn begin_handoff(
        &mut self,
        ctx: &WorkerContext,
    ) -> impl Future<Output = Handoff<Self::State>> + Send {
        let _ = ctx;
        async { Handoff::Restart }
    }

    /// Another instance of this child ran during a partition and lost to this one when it
    /// healed, or handed its state over while the nodes' views were in flux and it reached
    /// this instance after its start, or not from the node its start named: `theirs` is
    /// that state (no state is dropped for arriving late). By default, keeps this
    /// instance's own state.
    fn resolve_conflict(
        &mut self,
        theirs: Self::State,
        ctx: &WorkerContext,
    ) -> impl Future<Output = ()> + Send {
        let _ = (theirs, ctx);
        async {}
    }
}

/// What [`Actor::begin_handoff`] answers (Swarm's vocabulary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handoff<S> {
    /// The new instance starts afresh.
    Restart,
    /// The new instance starts with this state.
    Resume(S),
    /// As `Restart`. (Swarm's `:ignore` leaves the old process running; solo cannot, since
    /// the child would then run twice, so the old instance stops either way.)
    Ignore,
}

/// Why an actor's state could not be handed over ([`Actor::begin_handoff`]); see
/// [`Event::HandoffFailed`](crate::Event::HandoffFailed). The new instance starts without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// The state encodes to `len` bytes, more than a handoff carries (`max`,
    /// [`MAX_STATE_LEN`](solo_core::messaging::MAX_STATE_LEN)).
    #[error("the state is {len} bytes encoded, more than the {max} a handoff carries")]
    StateTooLarge {
        /// Its encoded length.
        len: usize,
        /// The most a handoff carries.
        max: usize,
    },
    /// The state does not encode (postcard's error).
    #[error("the state does not encode: {0}")]
    Encode(String),
}

/// Why a [`Cluster::call`] or [`Cluster::send`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No child or singleton of this name exists in the cluster (as this node knows it).
    #[error("no child or singleton is named {0}")]
    NoSuchName(ChildId),
    /// No answer within the timeout. The call may still be handled.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The child's worker is not an [`Actor`]: it takes no messages.
    #[error("the worker does not take messages")]
    NotAnActor,
    /// The message does not encode (postcard's error, here, before anything was sent).
    #[error("the message does not encode: {0}")]
    Encode(String),
    /// The actor could not decode the message as its `Call` or `Cast` type: the two ends
    /// disagree on the message type (a rolling deploy that changed it, or the wrong actor).
    #[error("the actor could not decode the message: {0}")]
    BadMessage(String),
    /// The reply could not be decoded as the expected type.
    #[error("bad reply: {0}")]
    BadReply(String),
    /// The worker's handler failed (the instance ended).
    #[error("the handler failed: {0}")]
    Failed(String),
    /// This node has left the cluster.
    #[error("this node has left the cluster")]
    Closed,
    /// This node, or the worker's, holds as many calls or bytes for others as it may
    /// (`max_pending_calls`, `max_held_bytes` of the core's messaging): nothing was
    /// delivered. Try again later.
    #[error("overloaded: too many calls or bytes in flight")]
    Overloaded,
    /// The way to the actor is full for now (its mailbox, or what waits for room to its
    /// node): nothing was sent. [`Cluster::send`] waits instead; only
    /// [`Cluster::try_send`] returns this.
    #[error("the actor's mailbox, or the way to it, is full")]
    Full,
    /// The message encodes to more than
    /// [`MAX_PAYLOAD_LEN`](solo_core::messaging::MAX_PAYLOAD_LEN) bytes: nothing was sent.
    #[error("the message is too large to send")]
    TooLarge,
    /// The worker's answer encodes to more than
    /// [`MAX_PAYLOAD_LEN`](solo_core::messaging::MAX_PAYLOAD_LEN) bytes: the call was
    /// handled, its answer could not travel.
    #[error("the answer is too large to send")]
    ReplyTooLarge,
}

impl From<Error> for CallError {
    fn from(error: Error) -> Self {
        // A call's requests to the driver fail only when the node has left.
        match error {
            Error::Closed => CallError::Closed,
            other => CallError::Failed(other.to_string()),
        }
    }
}

/// A typed handle on a named actor anywhere in the cluster, from [`Cluster::actor_ref`].
#[derive(Debug, Clone)]
pub struct ActorRef<A> {
    cluster: Cluster,
    name: ChildId,
    actor: PhantomData<fn() -> A>,
}

impl<A: Actor> ActorRef<A> {
    pub(crate) fn new(cluster: Cluster, name: ChildId) -> Self {
        Self {
            cluster,
            name,
            actor: PhantomData,
        }
    }

    /// The name it reaches.
    pub fn name(&self) -> &ChildId {
        &self.name
    }

    /// Calls the actor and waits for its reply, at most `timeout` (see [`Cluster::call`]).
    ///
    /// # Errors
    ///
    /// [`CallError`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may leave the call delivered: the actor may
    /// still handle it, and its answer is discarded.
    pub async fn call(&self, call: &A::Call, timeout: Duration) -> Result<A::Reply, CallError> {
        self.cluster.call(&self.name, call, timeout).await
    }

    /// Sends the actor a one-way message, waiting for room (see [`Cluster::send`]).
    ///
    /// # Cancel safety
    ///
    /// As [`Cluster::send`]'s.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub async fn send(&self, cast: &A::Cast) -> Result<(), CallError> {
        self.cluster.send(&self.name, cast).await
    }

    /// Sends the actor a one-way message if there is room now (see [`Cluster::try_send`]).
    ///
    /// # Errors
    ///
    /// [`CallError::Full`] when the way to the actor is full, or another [`CallError`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may or may not have sent the message; once
    /// taken, it goes.
    pub async fn try_send(&self, cast: &A::Cast) -> Result<(), CallError> {
        self.cluster.try_send(&self.name, cast).await
    }

    /// Where it runs now, as this node sees it.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if this node left.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a query; dropping the future only forgoes the answer.
    pub async fn whereis(&self) -> Result<Option<NodeId>, Error> {
        self.cluster.whereis(&self.name).await
    }
}

// ----- the runtime side ---------------------------------------------------------------------

/// What the driver puts in an actor's mailbox, in order: the core decides it.
pub(crate) use solo_core::messaging::Mail;

/// An instance's answer to [`Mail::BeginHandoff`].
#[derive(Debug)]
pub(crate) struct HandoffDone {
    pub(crate) id: ChildId,
    pub(crate) instance: InstanceId,
    pub(crate) state: Option<Vec<u8>>,
    /// Why the state it meant to hand over stays behind.
    pub(crate) failed: Option<HandoffError>,
}

/// What an actor instance hands back to its driver.
#[derive(Debug)]
pub(crate) enum FromActor {
    /// An answer to a call, which the driver hands to its caller (here or on another node).
    Answer {
        to: CallRef,
        result: Result<Vec<u8>, RemoteError>,
    },
    /// A call or cast still in the mailbox when the instance ended: the driver routes it
    /// again, to wherever the name runs next.
    Unhandled { id: ChildId, mail: Mail },
}

/// The channels an actor instance talks to its driver through.
pub(crate) struct Mailbox {
    pub(crate) mail: mpsc::Receiver<Mail>,
    pub(crate) handoffs: mpsc::UnboundedSender<HandoffDone>,
    pub(crate) replies: AnswerSender,
}

async fn answer(to: CallRef, result: Result<Vec<u8>, RemoteError>, replies: &AnswerSender) {
    replies.send(FromActor::Answer { to, result }, false).await;
}

/// Runs one instance of actor `A` on its mailbox until it ends. Calls and casts still
/// queued when it ends (it failed, or was stopped) go back to the driver, which routes them
/// again: to the restarted instance, the new owner, or (a call) a `NoSuchName` if the child
/// is gone.
pub(crate) async fn run_actor<A: Actor>(
    ctx: WorkerContext,
    mailbox: Mailbox,
) -> Result<(), WorkerError> {
    let Mailbox {
        mut mail,
        handoffs,
        replies,
    } = mailbox;
    let result = serve::<A>(&ctx, &mut mail, &handoffs, &replies).await;
    mail.close();
    while let Ok(left) = mail.try_recv() {
        if matches!(left, Mail::Call { .. } | Mail::Cast { .. }) {
            replies
                .send(
                    FromActor::Unhandled {
                        id: ctx.id().clone(),
                        mail: left,
                    },
                    false,
                )
                .await;
        }
    }
    result
}

async fn serve<A: Actor>(
    ctx: &WorkerContext,
    mail: &mut mpsc::Receiver<Mail>,
    handoffs: &mpsc::UnboundedSender<HandoffDone>,
    replies: &AnswerSender,
) -> Result<(), WorkerError> {
    let shutdown = ctx.shutdown();
    tokio::pin!(shutdown);
    let handed_over = loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            next = mail.recv() => match next {
                Some(Mail::Begin(state)) => break state,
                None => return Ok(()),
                // The driver sends `Begin` first; anything else is a bug, answered politely.
                Some(Mail::Call { reply, .. }) => {
                    answer(reply, Err(RemoteError::Failed("not started".into())), replies).await;
                }
                Some(_) => {}
            },
        }
    };
    let state = match handed_over {
        Some(bytes) => match postcard::from_bytes::<A::State>(&bytes) {
            Ok(state) => Some(state),
            Err(error) => {
                tracing::warn!(child = %ctx.id(), %error, "handed-over state does not decode; starting afresh");
                None
            }
        },
        None => None,
    };
    let lease_lost = ctx.lease_lost();
    tokio::pin!(lease_lost);
    let mut actor = A::start(ctx, state).await?;
    let mut ticks = A::TICK.map(|every| {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    loop {
        let tick = async {
            match ticks.as_mut() {
                Some(ticks) => {
                    ticks.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            () = &mut lease_lost => return Ok(()),
            next = mail.recv() => next,
            () = tick => {
                if !ctx.lease_valid() {
                    return Ok(());
                }
                actor.handle_tick(ctx).await?;
                continue;
            }
        };
        // An exclusive actor whose lease ended (a pause, a partition) handles nothing more,
        // not even what it already took: another node may own the child now.
        if !ctx.lease_valid() {
            if let Some(Mail::Call { reply, .. }) = next {
                answer(reply, Err(RemoteError::NotHere), replies).await;
            }
            return Ok(());
        }
        match next {
            None => return Ok(()),
            Some(Mail::Call { payload, reply }) => {
                let call = match postcard::from_bytes::<A::Call>(&payload) {
                    Ok(call) => call,
                    Err(error) => {
                        answer(
                            reply,
                            Err(RemoteError::BadMessage(error.to_string())),
                            replies,
                        )
                        .await;
                        continue;
                    }
                };
                match actor.handle_call(call, ctx).await {
                    Ok(value) => {
                        let encoded = postcard::to_allocvec(&value).map_err(|e| {
                            RemoteError::Failed(format!("reply does not encode: {e}"))
                        });
                        // With no more mail waiting, the reply is written at once.
                        let at_once = mail.is_empty();
                        replies
                            .send(
                                FromActor::Answer {
                                    to: reply,
                                    result: encoded,
                                },
                                at_once,
                            )
                            .await;
                    }
                    Err(error) => {
                        answer(reply, Err(RemoteError::Failed(error.to_string())), replies).await;
                        return Err(error);
                    }
                }
            }
            Some(Mail::Cast { payload }) => match postcard::from_bytes::<A::Cast>(&payload) {
                Ok(cast) => actor.handle_cast(cast, ctx).await?,
                Err(error) => {
                    tracing::debug!(child = %ctx.id(), %error, "a cast does not decode; dropped");
                }
            },
            Some(Mail::Conflict(bytes)) => match postcard::from_bytes::<A::State>(&bytes) {
                Ok(theirs) => actor.resolve_conflict(theirs, ctx).await,
                Err(error) => {
                    tracing::warn!(child = %ctx.id(), %error, "a loser's state does not decode; kept ours");
                }
            },
            Some(Mail::BeginHandoff) => {
                let answer = actor.begin_handoff(ctx).await;
                let outcome = match &answer {
                    Handoff::Resume(_) => "resume",
                    Handoff::Restart => "restart",
                    Handoff::Ignore => "ignore",
                };
                let encoded = match answer {
                    Handoff::Resume(state) => match postcard::to_allocvec(&state) {
                        Ok(bytes) if bytes.len() > MAX_STATE_LEN => {
                            Err(HandoffError::StateTooLarge {
                                len: bytes.len(),
                                max: MAX_STATE_LEN,
                            })
                        }
                        Ok(bytes) => Ok(Some(bytes)),
                        Err(error) => Err(HandoffError::Encode(error.to_string())),
                    },
                    Handoff::Restart | Handoff::Ignore => Ok(None),
                };
                let (state, failed) = match encoded {
                    Ok(state) => {
                        crate::telemetry::handoff(outcome);
                        (state, None)
                    }
                    Err(error) => {
                        crate::telemetry::handoff("failed");
                        tracing::warn!(child = %ctx.id(), %error, "the handoff failed; the new instance starts without a state");
                        (None, Some(error))
                    }
                };
                let _ = handoffs.send(HandoffDone {
                    id: ctx.id().clone(),
                    instance: ctx.instance(),
                    state,
                    failed,
                });
                return Ok(());
            }
            // `Begin` comes once, first; nothing else is sent.
            Some(_) => {}
        }
    }
}
