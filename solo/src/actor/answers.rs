//! The way from a node's actors back to its driver: answers to calls, and the mail an
//! instance left unhandled when it ended.
//!
//! Bounded in bytes, as everything a peer can make grow: an answer is up to a megabyte, and
//! a thousand calls in a mailbox answered while the driver is busy would otherwise wait in
//! memory all at once. An actor takes its answer's size from a budget shared by the node's
//! actors before it sends it, and waits for room when the budget is spent (its next mail
//! waits with it); the driver gives the bytes back as it takes each answer. One answer
//! larger than the whole budget still passes, alone. The driver takes answers before any
//! other input but an instance's end, so the wait is short.
//!
//! An answer for a caller on another node skips the driver when it can: the actor queues
//! the reply on the caller's connection itself ([`DirectReply`]), one task hop and one
//! wake-up of the driver fewer per call. The messenger keeps nothing of a reply it sends to
//! another node (no journal entry, no count): all it would do is send the frame the actor
//! sends, or wait behind the messages to that node it could not send at first. So the
//! direct way is taken only while it holds no such backlog (as of its driver's last turn).
//! What cannot go that way (a caller on this node, an error answer, a backlog, a missing
//! connection, a full queue) goes through the driver as before, whose messenger retries it
//! or reports it.

use std::sync::Arc;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Semaphore, mpsc};

use super::{FromActor, Mail};
use solo_core::wire::{CallRef, RemoteError};

/// The bytes of answers the node's actors may have waiting for the driver.
pub(crate) const MAX_ANSWER_BYTES: usize = 16 << 20;
/// What an answer costs beyond its bytes (its envelope), so that their number is bounded too.
const ANSWER_OVERHEAD: usize = 128;

/// The way an actor sends a caller on another node its answer without the driver.
pub(crate) trait DirectReply: Send + Sync + 'static {
    /// Queues `answer` to the call `to` on the caller's connection, or gives it back when it
    /// cannot go that way now (then the driver sends it). `at_once`: the actor has no more
    /// mail waiting, so the reply is written now, by the actor's own thread, rather than
    /// left for the connection's writer task (whose batches help only while more replies
    /// follow).
    ///
    /// # Errors
    ///
    /// The call and its answer, untouched, when they must go through the driver.
    fn try_reply(
        &self,
        to: CallRef,
        answer: Vec<u8>,
        at_once: bool,
    ) -> Result<(), (CallRef, Vec<u8>)>;
}

/// A channel of [`FromActor`]s bounded by [`MAX_ANSWER_BYTES`]; with `direct`, answers to
/// callers on other nodes go straight to their connections when they can.
pub(crate) fn channel(direct: Option<Arc<dyn DirectReply>>) -> (AnswerSender, AnswerReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(MAX_ANSWER_BYTES));
    (
        AnswerSender {
            tx,
            budget: Arc::clone(&budget),
            direct,
        },
        AnswerReceiver { rx, budget },
    )
}

/// The part of the budget `reply` takes.
fn cost(reply: &FromActor) -> u32 {
    let bytes = match reply {
        FromActor::Answer { result, .. } => match result {
            Ok(answer) => answer.len(),
            Err(RemoteError::BadMessage(why) | RemoteError::Failed(why)) => why.len(),
            Err(_) => 0,
        },
        FromActor::Unhandled { mail, .. } => match mail {
            Mail::Call { payload, .. } | Mail::Cast { payload } => payload.len(),
            _ => 0,
        },
    };
    let cost = (bytes + ANSWER_OVERHEAD).min(MAX_ANSWER_BYTES);
    u32::try_from(cost).unwrap_or(u32::MAX)
}

/// The actors' end, one clone per instance.
#[derive(Clone)]
pub(crate) struct AnswerSender {
    tx: mpsc::UnboundedSender<FromActor>,
    budget: Arc<Semaphore>,
    direct: Option<Arc<dyn DirectReply>>,
}

impl std::fmt::Debug for AnswerSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerSender")
            .field("direct", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

impl AnswerSender {
    /// Sends `reply`: straight to a caller on another node when it can, else to the driver,
    /// waiting for room in the budget first. Once the driver is gone there is nobody to
    /// answer: the reply is dropped with it.
    ///
    /// `at_once`: the actor has no more mail waiting ([`DirectReply::try_reply`]).
    pub(crate) async fn send(&self, reply: FromActor, at_once: bool) {
        let reply = match (reply, &self.direct) {
            (
                FromActor::Answer {
                    to,
                    result: Ok(answer),
                },
                Some(direct),
            ) => match direct.try_reply(to, answer, at_once) {
                Ok(()) => return,
                Err((to, answer)) => FromActor::Answer {
                    to,
                    result: Ok(answer),
                },
            },
            (reply, _) => reply,
        };
        let Ok(permit) = self.budget.acquire_many(cost(&reply)).await else {
            return;
        };
        // The driver gives these back as it takes the reply out.
        permit.forget();
        let _ = self.tx.send(reply);
    }
}

/// The driver's end.
#[derive(Debug)]
pub(crate) struct AnswerReceiver {
    rx: mpsc::UnboundedReceiver<FromActor>,
    budget: Arc<Semaphore>,
}

impl AnswerReceiver {
    /// The next reply. Cancel safe, as `mpsc::UnboundedReceiver::recv`.
    pub(crate) async fn recv(&mut self) -> Option<FromActor> {
        let reply = self.rx.recv().await?;
        Some(self.taken(reply))
    }

    /// The next reply if one is waiting.
    pub(crate) fn try_recv(&mut self) -> Result<FromActor, TryRecvError> {
        let reply = self.rx.try_recv()?;
        Ok(self.taken(reply))
    }

    fn taken(&self, reply: FromActor) -> FromActor {
        self.budget.add_permits(cost(&reply) as usize);
        reply
    }
}

impl Drop for AnswerReceiver {
    fn drop(&mut self) {
        // Actors waiting for room would otherwise wait for ever.
        self.budget.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use solo_core::{Incarnation, NodeId, NodeName};

    use super::*;

    /// Takes answers to even-numbered calls, gives the others back.
    #[derive(Default)]
    struct EvenCallsOnly {
        taken: Mutex<Vec<(u64, Vec<u8>)>>,
    }

    impl DirectReply for EvenCallsOnly {
        fn try_reply(
            &self,
            to: CallRef,
            answer: Vec<u8>,
            _at_once: bool,
        ) -> Result<(), (CallRef, Vec<u8>)> {
            if to.call % 2 == 1 {
                return Err((to, answer));
            }
            self.taken
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((to.call, answer));
            Ok(())
        }
    }

    fn answer_to(call: u64, result: Result<Vec<u8>, RemoteError>) -> FromActor {
        FromActor::Answer {
            to: CallRef {
                caller: NodeId::new(NodeName::new("a").expect("name"), Incarnation(1)),
                call,
                token: 1,
            },
            result,
        }
    }

    #[tokio::test]
    async fn answers_the_direct_way_takes_skip_the_driver_and_the_rest_reach_it_unchanged() {
        let direct = Arc::new(EvenCallsOnly::default());
        let (tx, mut rx) = channel(Some(Arc::clone(&direct) as Arc<dyn DirectReply>));
        tx.send(answer_to(2, Ok(b"two".to_vec())), false).await;
        tx.send(answer_to(3, Ok(b"three".to_vec())), false).await;
        // An error answer is the messenger's to shape (cut to length): never sent directly.
        tx.send(answer_to(4, Err(RemoteError::Failed("no".into()))), false)
            .await;
        let taken = direct
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert_eq!(taken, vec![(2, b"two".to_vec())]);
        match rx.try_recv() {
            Ok(FromActor::Answer { to, result }) => {
                assert_eq!((to.call, result), (3, Ok(b"three".to_vec())));
            }
            other => panic!("expected the answer given back, got {other:?}"),
        }
        match rx.try_recv() {
            Ok(FromActor::Answer { to, result }) => {
                assert_eq!(
                    (to.call, result),
                    (4, Err(RemoteError::Failed("no".into())))
                );
            }
            other => panic!("expected the error answer, got {other:?}"),
        }
        assert!(rx.try_recv().is_err());
        assert_eq!(
            rx.budget.available_permits(),
            MAX_ANSWER_BYTES,
            "all given back"
        );
    }

    fn answer(len: usize) -> FromActor {
        FromActor::Answer {
            to: CallRef {
                caller: NodeId::new(NodeName::new("a").expect("name"), Incarnation(1)),
                call: 1,
                token: 1,
            },
            result: Ok(vec![0; len]),
        }
    }

    #[tokio::test]
    async fn an_actor_waits_for_room_while_the_budget_is_spent_and_goes_on_once_taken() {
        let (tx, mut rx) = channel(None);
        // Most of the budget in one answer, then one that does not fit beside it.
        tx.send(answer(MAX_ANSWER_BYTES - 1_000), false).await;
        let second = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(answer(10_000), false).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "waits for room");
        assert!(matches!(rx.try_recv(), Ok(FromActor::Answer { .. })));
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("room came")
            .expect("sent");
        assert!(matches!(rx.try_recv(), Ok(FromActor::Answer { .. })));
        // One larger than the whole budget passes alone.
        tx.send(answer(MAX_ANSWER_BYTES * 2), false).await;
        assert!(matches!(rx.try_recv(), Ok(FromActor::Answer { .. })));
    }

    #[tokio::test]
    async fn a_waiting_actor_is_let_go_when_the_driver_is_gone() {
        let (tx, rx) = channel(None);
        tx.send(answer(MAX_ANSWER_BYTES), false).await;
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(answer(1), false).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("let go")
            .expect("ends");
    }
}
