//! Workers: the user's code that solo keeps running, and the tasks that run them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use solo_core::{ChildId, ChildSpec, Exit, Fence, InstanceId, NodeId, StopReason};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;

use crate::Event;
use crate::actor::{Actor, AnswerSender, HandoffDone, Mail, Mailbox, run_actor};

/// What a worker returns when it fails: any error.
pub type WorkerError = Box<dyn std::error::Error + Send + Sync>;

/// Why an instance of a child ended on this node, in [`Event::WorkerStopped`].
///
/// Its [`Display`](std::fmt::Display) text is what `solo-node --json` prints as the
/// `reason` of a `worker_stopped` event: `moved to NODE`, `moved`, `no eligible node`,
/// `terminated`, `leaving`, `superseded`, `lease lost`, `replaced`, `exited`, `failed: WHY`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerStopReason {
    /// Another node owns the child now (a join, a healed partition, a draining node); an
    /// actor's state went to it, if it was known.
    Moved {
        /// The new owner, if one was known.
        to: Option<NodeId>,
    },
    /// No node may run the child at the moment: none has its role, or all are draining.
    NoEligibleNode,
    /// [`Supervisor::terminate_child`](crate::Supervisor::terminate_child) ended it.
    Terminated,
    /// This node left the cluster ([`Cluster::leave`](crate::Cluster::leave)).
    Leaving,
    /// A newer process took this node's name, so this one stopped everything at once.
    Superseded,
    /// An [`Exclusive`](solo_core::Mode::Exclusive) child's lease was lost.
    LeaseLost,
    /// A newer instance of the same child started here and replaced it.
    Replaced,
    /// Its worker returned `Ok(())` without being asked to stop.
    Exited,
    /// Its worker returned an error or panicked; the text says which.
    Failed(String),
    /// A reason this version of the facade has no name for (the core's list grew).
    Other(String),
}

impl From<&StopReason> for WorkerStopReason {
    fn from(reason: &StopReason) -> Self {
        match reason {
            StopReason::Moved { to } => Self::Moved { to: to.clone() },
            StopReason::NoEligibleNode => Self::NoEligibleNode,
            StopReason::Terminated => Self::Terminated,
            StopReason::Leaving => Self::Leaving,
            StopReason::Superseded => Self::Superseded,
            StopReason::LeaseLost { .. } => Self::LeaseLost,
            other => Self::Other(format!("{other:?}")),
        }
    }
}

impl std::fmt::Display for WorkerStopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Moved { to: Some(to) } => write!(f, "moved to {to}"),
            Self::Moved { to: None } => f.write_str("moved"),
            Self::NoEligibleNode => f.write_str("no eligible node"),
            Self::Terminated => f.write_str("terminated"),
            Self::Leaving => f.write_str("leaving"),
            Self::Superseded => f.write_str("superseded"),
            Self::LeaseLost => f.write_str("lease lost"),
            Self::Replaced => f.write_str("replaced"),
            Self::Exited => f.write_str("exited"),
            Self::Failed(why) => write!(f, "failed: {why}"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

/// A unit of work solo keeps running somewhere in the cluster.
///
/// Any `Fn(WorkerContext) -> impl Future<Output = Result<(), WorkerError>>` closure is a
/// worker, so most workers are one `async move` block:
///
/// ```
/// use solo::{WorkerContext, WorkerError};
///
/// async fn ticker(ctx: WorkerContext) -> Result<(), WorkerError> {
///     loop {
///         tokio::select! {
///             _ = ctx.shutdown() => return Ok(()),
///             _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
///                 println!("{} is alive", ctx.id());
///             }
///         }
///     }
/// }
/// # let _ = ticker;
/// ```
///
/// A worker that returns `Ok` exited normally, one that returns `Err` or panics failed; the
/// child's restart policy decides what happens next. A failure never takes the node down.
pub trait Worker: Send + Sync + 'static {
    /// Runs one instance until it ends or [`WorkerContext::shutdown`] resolves.
    fn run(
        &self,
        ctx: WorkerContext,
    ) -> impl Future<Output = Result<(), WorkerError>> + Send + 'static;
}

impl<F, Fut> Worker for F
where
    F: Fn(WorkerContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), WorkerError>> + Send + 'static,
{
    fn run(
        &self,
        ctx: WorkerContext,
    ) -> impl Future<Output = Result<(), WorkerError>> + Send + 'static {
        self(ctx)
    }
}

type BoxedRun = Pin<Box<dyn Future<Output = Result<(), WorkerError>> + Send>>;

/// A [`Worker`] behind a pointer, so that factories of different types share one table.
trait ErasedWorker: Send + Sync {
    fn run_boxed(&self, ctx: WorkerContext) -> BoxedRun;
}

impl<W: Worker> ErasedWorker for W {
    fn run_boxed(&self, ctx: WorkerContext) -> BoxedRun {
        Box::pin(self.run(ctx))
    }
}

/// An [`Actor`] type behind a pointer.
trait ErasedActor: Send + Sync {
    fn run_boxed(&self, ctx: WorkerContext, mailbox: Mailbox) -> BoxedRun;
}

struct ActorKind<A>(std::marker::PhantomData<fn() -> A>);

impl<A: Actor> ErasedActor for ActorKind<A> {
    fn run_boxed(&self, ctx: WorkerContext, mailbox: Mailbox) -> BoxedRun {
        Box::pin(run_actor::<A>(ctx, mailbox))
    }
}

/// A registered worker kind.
#[derive(Clone)]
enum Kind {
    Plain(Arc<dyn ErasedWorker>),
    Actor(Arc<dyn ErasedActor>),
}

/// The worker kinds this node can run, by name.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    kinds: HashMap<String, Kind>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    pub(crate) fn insert(&mut self, kind: String, worker: impl Worker) {
        self.kinds.insert(kind, Kind::Plain(Arc::new(worker)));
    }

    pub(crate) fn insert_actor<A: Actor>(&mut self, kind: String) {
        self.kinds.insert(
            kind,
            Kind::Actor(Arc::new(ActorKind::<A>(std::marker::PhantomData))),
        );
    }
}

/// The lease an exclusive instance runs under, as its node last heard of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseView {
    token: u64,
    valid_until: tokio::time::Instant,
    lost: bool,
}

/// What a running worker knows about itself, and how it hears that it should stop.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    id: ChildId,
    instance: InstanceId,
    kind: String,
    args: Arc<[u8]>,
    node: NodeId,
    shutdown: watch::Receiver<bool>,
    lease: Option<watch::Receiver<LeaseView>>,
}

impl WorkerContext {
    /// The child (or singleton) this worker belongs to.
    pub fn id(&self) -> &ChildId {
        &self.id
    }

    /// Which run of the child this is: a restart or a move gives a new instance.
    ///
    /// Instance ids are unique among the instances this node process started (of every
    /// child), not a count of one child's runs: compare them for equality, don't read gaps.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// The worker kind it was started as.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The arguments from its spec.
    pub fn args(&self) -> &[u8] {
        &self.args
    }

    /// The node it runs on.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Resolves once the worker should stop: the child moved, was terminated, or the node
    /// is leaving. Return soon after; a worker still running after the shutdown grace period
    /// is aborted.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: use it in `tokio::select!` as often as needed.
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shutdown.clone();
        async move {
            // A closed channel means the node is gone: stop as well.
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    }

    /// Whether the worker has been asked to stop.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The fencing token of the lease this instance of an
    /// [`Exclusive`](solo_core::Mode::Exclusive) child runs under: greater than every token
    /// granted before for this child, across owner changes, restarts and partitions. Pass
    /// it with every write to an external system and have that system reject a token lower
    /// than the highest it has seen: then even a paused process that wakes after its lease
    /// ended cannot do harm. `None` for an `Available` child.
    pub fn fencing_token(&self) -> Option<u64> {
        self.lease.as_ref().map(|lease| lease.borrow().token)
    }

    /// When this instance's lease ends, on tokio's clock (renewals move it later), for an
    /// exclusive child; `None` for an `Available` one. The runtime aborts the instance
    /// there if it has not stopped.
    pub fn lease_deadline(&self) -> Option<tokio::time::Instant> {
        self.lease.as_ref().map(|lease| lease.borrow().valid_until)
    }

    /// Whether this instance may act as the child's one owner right now: for an exclusive
    /// child, its lease is neither lost nor past its end, read against the clock now (a
    /// process that was paused past its lease sees `false` at once, before anything else
    /// tells it). Always `true` for an `Available` child. Check it before every effect
    /// outside the process, and send the [`fencing_token`](Self::fencing_token) along.
    pub fn lease_valid(&self) -> bool {
        self.lease.as_ref().is_none_or(|lease| {
            let view = *lease.borrow();
            !view.lost && tokio::time::Instant::now() < view.valid_until
        })
    }

    /// Resolves once this instance's lease is lost: its node could not renew it (it is cut
    /// off from a majority of the voters, or was paused), or its end passed. Stop before
    /// [`lease_deadline`](Self::lease_deadline): the runtime aborts the instance there.
    /// [`shutdown`](Self::shutdown) resolves too, a moment later. Never resolves for an
    /// `Available` child.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: use it in `tokio::select!` as often as needed.
    pub fn lease_lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let lease = self.lease.clone();
        async move {
            match lease {
                Some(lease) => lease_end(lease, true).await,
                None => std::future::pending().await,
            }
        }
    }
}

/// Resolves once the lease's end has passed (or, with `or_lost`, once it is marked lost),
/// following renewals. A closed channel (the instance is gone) counts as the end.
async fn lease_end(mut lease: watch::Receiver<LeaseView>, or_lost: bool) {
    loop {
        let view = *lease.borrow_and_update();
        if or_lost && view.lost {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(view.valid_until) => {
                if lease.borrow().valid_until <= tokio::time::Instant::now() {
                    return;
                }
            }
            changed = lease.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// An instance's end, reported to the driver once every worker task has finished.
#[derive(Debug)]
pub(crate) struct Exited {
    pub(crate) id: ChildId,
    pub(crate) instance: InstanceId,
    pub(crate) exit: Exit,
}

/// A running instance: how to stop it, and its mailbox if its first worker is an actor.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) instance: InstanceId,
    /// The task that owns the group's worker tasks: aborting it aborts them all.
    group: tokio::task::AbortHandle,
    stop: watch::Sender<bool>,
    /// Why the driver stopped it, for the `WorkerStopped` event.
    pub(crate) stop_reason: Option<WorkerStopReason>,
    /// Where its messages go; `None` if it takes none.
    pub(crate) mailbox: Option<mpsc::Sender<Mail>>,
    /// The lease it runs under, for an exclusive child.
    lease: Option<watch::Sender<LeaseView>>,
    /// When the driver started it, by the wall clock (for [`Cluster::status`](crate::Cluster::status)).
    pub(crate) started_at: std::time::SystemTime,
}

impl Instance {
    /// Its lease was renewed: it may run until `valid_until`.
    pub(crate) fn extend_lease(&self, valid_until: std::time::Instant) {
        if let Some(lease) = &self.lease {
            let valid_until = tokio::time::Instant::from_std(valid_until);
            lease.send_modify(|view| view.valid_until = view.valid_until.max(valid_until));
        }
    }

    /// Its lease is lost: [`WorkerContext::lease_lost`] resolves.
    pub(crate) fn lose_lease(&self) {
        if let Some(lease) = &self.lease {
            lease.send_modify(|view| view.lost = true);
        }
    }

    /// Ends it at once, as a crash of the process would: no shutdown signal, no grace, no
    /// `WorkerStopped` event.
    pub(crate) fn kill(&self) {
        self.group.abort();
    }

    pub(crate) fn stop(&mut self, reason: WorkerStopReason) {
        self.stop_reason.get_or_insert(reason);
        let _ = self.stop.send(true);
    }

    /// Records why it is ending without stopping it yet (it is handing over first).
    pub(crate) fn ending(&mut self, reason: WorkerStopReason) {
        self.stop_reason.get_or_insert(reason);
    }
}

/// The places of a mailbox kept for [`Mail::Begin`], [`Mail::BeginHandoff`] and
/// [`Mail::Conflict`]: calls and casts leave them free.
pub(crate) const CONTROL_MAIL_PLACES: usize = 4;

/// Everything an instance needs from its node.
pub(crate) struct Spawner {
    pub(crate) registry: Registry,
    pub(crate) node: NodeId,
    pub(crate) exits: mpsc::UnboundedSender<Exited>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) grace: Duration,
    pub(crate) handoffs: mpsc::UnboundedSender<HandoffDone>,
    pub(crate) replies: AnswerSender,
    /// How many calls and casts an actor's mailbox holds.
    pub(crate) mailbox_capacity: usize,
    /// Spawn on the current `LocalSet` (simulation; see [`spawn_task`]).
    pub(crate) local_tasks: bool,
}

/// Spawns `task` on the runtime, or on the current `LocalSet` when `local`: a simulated host
/// (turmoil) runs in a `LocalSet`, which drops its tasks in spawn order when the host
/// crashes, so that a seed replays exactly.
pub(crate) fn spawn_task<F>(local: bool, task: F) -> tokio::task::AbortHandle
where
    F: Future<Output = ()> + Send + 'static,
{
    if local {
        tokio::task::spawn_local(task).abort_handle()
    } else {
        tokio::spawn(task).abort_handle()
    }
}

impl Spawner {
    /// Starts every worker of `spec` as instance `instance`. The group lives and dies
    /// together: the first worker to end stops the others, and its exit is the instance's.
    ///
    /// An exclusive instance runs under `fence`: it is aborted at the lease's end (moved by
    /// [`Instance::extend_lease`]) unless it stopped first.
    pub(crate) fn spawn(
        &self,
        spec: ChildSpec,
        instance: InstanceId,
        fence: Option<Fence>,
    ) -> Instance {
        let (stop, shutdown) = watch::channel(false);
        let lease = fence.map(|fence| {
            watch::channel(LeaseView {
                token: fence.token,
                valid_until: tokio::time::Instant::from_std(fence.valid_until),
                lost: false,
            })
        });
        let (lease_tx, lease_rx) = match lease {
            Some((tx, rx)) => (Some(tx), Some(rx)),
            None => (None, None),
        };
        let token = fence.map(|f| f.token);
        // The first worker of the group gets the child's messages, if it is an actor.
        let (mail_tx, mut mailbox) = match spec
            .workers
            .first()
            .and_then(|w| self.registry.kinds.get(&w.kind))
        {
            Some(Kind::Actor(_)) => {
                // The places beyond the capacity are kept for the runtime's own mail (its
                // start, a handoff request), which must never find the mailbox full.
                let (tx, rx) = mpsc::channel(self.mailbox_capacity + CONTROL_MAIL_PLACES);
                let mailbox = Mailbox {
                    mail: rx,
                    handoffs: self.handoffs.clone(),
                    replies: self.replies.clone(),
                };
                (Some(tx), Some(mailbox))
            }
            _ => (None, None),
        };
        let registry = self.registry.clone();
        let node = self.node.clone();
        let exits = self.exits.clone();
        let events = self.events.clone();
        let grace = self.grace;
        let stopper = stop.clone();
        let local = self.local_tasks;
        let group = spawn_task(local, async move {
            let id = spec.id.clone();
            let mut tasks = JoinSet::new();
            let mut unknown = None;
            // `WorkerStarted` goes out from inside the first worker task of the group to run,
            // so that it means "running", not merely "spawned".
            let announced = Arc::new(std::sync::Once::new());
            for worker in spec.workers {
                let Some(factory) = registry.kinds.get(&worker.kind) else {
                    unknown = Some(format!(
                        "no worker kind {:?} is registered on this node",
                        worker.kind
                    ));
                    break;
                };
                let ctx = WorkerContext {
                    id: id.clone(),
                    instance,
                    kind: worker.kind,
                    args: worker.args.into(),
                    node: node.clone(),
                    shutdown: shutdown.clone(),
                    lease: lease_rx.clone(),
                };
                let run = match factory {
                    Kind::Plain(worker) => worker.run_boxed(ctx),
                    Kind::Actor(actor) => match mailbox.take() {
                        Some(mailbox) => actor.run_boxed(ctx, mailbox),
                        None => {
                            // Only the first worker has the mailbox; a later actor in the
                            // group would never get a message.
                            unknown = Some(format!(
                                "worker kind {:?} is an actor but not its group's first worker",
                                ctx.kind()
                            ));
                            break;
                        }
                    },
                };
                let (announced, events, started_id) =
                    (Arc::clone(&announced), events.clone(), id.clone());
                let task = async move {
                    announced.call_once(|| {
                        let started = Event::WorkerStarted {
                            id: started_id,
                            instance,
                            token,
                        };
                        crate::telemetry::trace(&started);
                        let _ = events.send(started);
                    });
                    run.await
                };
                if local {
                    tasks.spawn_local(task);
                } else {
                    tasks.spawn(task);
                }
            }
            let lease_over = async {
                match lease_rx {
                    Some(lease) => lease_end(lease, false).await,
                    None => std::future::pending().await,
                }
            };
            let exit = if let Some(why) = unknown {
                Exit::Failed(why)
            } else {
                tokio::select! {
                    ended = tasks.join_next() => match ended {
                        None | Some(Ok(Ok(()))) => Exit::Normal,
                        Some(Ok(Err(error))) => Exit::Failed(error.to_string()),
                        Some(Err(join)) if join.is_panic() => Exit::Failed(panic_message(join)),
                        Some(Err(_)) => Exit::Failed("cancelled".into()),
                    },
                    () = lease_over => {
                        // Not one more poll past the lease: another node may own it now.
                        tracing::warn!(child = %id, %instance, "lease ran out; aborting the instance");
                        tasks.abort_all();
                        Exit::Failed("the lease ran out".into())
                    }
                }
            };
            let _ = stopper.send(true);
            let drained =
                tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                    .await;
            if drained.is_err() {
                tracing::warn!(child = %id, %instance, "workers ignored shutdown; aborting");
                tasks.shutdown().await;
            }
            let _ = exits.send(Exited { id, instance, exit });
        });
        Instance {
            instance,
            group,
            stop,
            stop_reason: None,
            mailbox: mail_tx,
            lease: lease_tx,
            started_at: std::time::SystemTime::now(),
        }
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".into());
    format!("panicked: {text}")
}
