//! Workers: the user's code that solo keeps running, and the tasks that run them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use solo_core::{ChildId, ChildSpec, Exit, NodeId};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;

use crate::Event;
use crate::actor::{Actor, HandoffDone, Mail, Mailbox, RemoteReply, run_actor};

/// What a worker returns when it fails: any error.
pub type WorkerError = Box<dyn std::error::Error + Send + Sync>;

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

/// What a running worker knows about itself, and how it hears that it should stop.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    id: ChildId,
    instance: u64,
    kind: String,
    args: Arc<[u8]>,
    node: NodeId,
    shutdown: watch::Receiver<bool>,
}

impl WorkerContext {
    /// The child (or singleton) this worker belongs to.
    pub fn id(&self) -> &ChildId {
        &self.id
    }

    /// Which run of the child this is; a restart or a move gives a new instance.
    pub fn instance(&self) -> u64 {
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
}

/// An instance's end, reported to the driver once every worker task has finished.
#[derive(Debug)]
pub(crate) struct Exited {
    pub(crate) id: ChildId,
    pub(crate) instance: u64,
    pub(crate) exit: Exit,
}

/// A running instance: how to stop it, and its mailbox if its first worker is an actor.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) instance: u64,
    stop: watch::Sender<bool>,
    /// Why the driver stopped it, for the `WorkerStopped` event.
    pub(crate) stop_reason: Option<String>,
    /// Where its messages go; `None` if it takes none.
    pub(crate) mailbox: Option<mpsc::UnboundedSender<Mail>>,
}

impl Instance {
    pub(crate) fn stop(&mut self, reason: String) {
        self.stop_reason.get_or_insert(reason);
        let _ = self.stop.send(true);
    }

    /// Records why it is ending without stopping it yet (it is handing over first).
    pub(crate) fn ending(&mut self, reason: String) {
        self.stop_reason.get_or_insert(reason);
    }
}

/// Everything an instance needs from its node.
pub(crate) struct Spawner {
    pub(crate) registry: Registry,
    pub(crate) node: NodeId,
    pub(crate) exits: mpsc::UnboundedSender<Exited>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) grace: Duration,
    pub(crate) handoffs: mpsc::UnboundedSender<HandoffDone>,
    pub(crate) replies: mpsc::UnboundedSender<RemoteReply>,
    /// Spawn on the current `LocalSet` (simulation; see [`spawn_task`]).
    pub(crate) local_tasks: bool,
}

/// Spawns `task` on the runtime, or on the current `LocalSet` when `local`: a simulated host
/// (turmoil) runs in a `LocalSet`, which drops its tasks in spawn order when the host
/// crashes, so that a seed replays exactly.
pub(crate) fn spawn_task<F>(local: bool, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if local {
        tokio::task::spawn_local(task);
    } else {
        tokio::spawn(task);
    }
}

impl Spawner {
    /// Starts every worker of `spec` as instance `instance`. The group lives and dies
    /// together: the first worker to end stops the others, and its exit is the instance's.
    pub(crate) fn spawn(&self, spec: ChildSpec, instance: u64) -> Instance {
        let (stop, shutdown) = watch::channel(false);
        // The first worker of the group gets the child's messages, if it is an actor.
        let (mail_tx, mut mailbox) = match spec
            .workers
            .first()
            .and_then(|w| self.registry.kinds.get(&w.kind))
        {
            Some(Kind::Actor(_)) => {
                let (tx, rx) = mpsc::unbounded_channel();
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
        spawn_task(local, async move {
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
                        let _ = events.send(Event::WorkerStarted {
                            id: started_id,
                            instance,
                        });
                    });
                    run.await
                };
                if local {
                    tasks.spawn_local(task);
                } else {
                    tasks.spawn(task);
                }
            }
            let exit = if let Some(why) = unknown {
                Exit::Failed(why)
            } else {
                match tasks.join_next().await {
                    None | Some(Ok(Ok(()))) => Exit::Normal,
                    Some(Ok(Err(error))) => Exit::Failed(error.to_string()),
                    Some(Err(join)) if join.is_panic() => Exit::Failed(panic_message(join)),
                    Some(Err(_)) => Exit::Failed("cancelled".into()),
                }
            };
            let _ = stopper.send(true);
            let drained =
                tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                    .await;
            if drained.is_err() {
                tracing::warn!(child = %id, instance, "workers ignored shutdown; aborting");
                tasks.shutdown().await;
            }
            let _ = exits.send(Exited { id, instance, exit });
        });
        Instance {
            instance,
            stop,
            stop_reason: None,
            mailbox: mail_tx,
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
