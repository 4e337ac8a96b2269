//! A supervised task: an async loop (a bus subscription, a periodic probe) run as a child of a
//! supervisor, so nothing a node runs lives outside the supervision tree.
//!
//! [`ChildSpec::task`](super::ChildSpec::task) takes a *setup* function run once per
//! incarnation. Setup finishes inside the child's start (so a subscription made there exists
//! before the next sibling starts) and returns the loop. The loop runs on a tokio task owned by
//! the child's actor: when it ends with an error (or panics) the actor fails and the supervisor
//! restarts it by its policy; when the supervisor stops the child, the loop is aborted. A loop
//! that ends with `Ok` stops the child normally, and a task child is transient: it is done.

use std::sync::Arc;

use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

/// What a task's loop returns: `Err` is a failure its supervisor sees.
pub type TaskResult = Result<(), String>;

/// The loop a setup returns.
pub type TaskLoop = BoxFuture<'static, TaskResult>;

/// Runs once per incarnation: prepares (subscribes, opens) and returns the loop, or fails the
/// start.
pub type TaskSetup = dyn Fn() -> BoxFuture<'static, Result<TaskLoop, String>> + Send + Sync;

/// The actor that owns one incarnation of a task.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskActor;

/// Messages of a [`TaskActor`].
#[derive(Debug)]
pub enum TaskMsg {
    /// The loop ended (sent by the loop's own wrapper).
    Ended(TaskResult),
}

/// The running loop of one incarnation.
#[derive(Debug)]
pub struct TaskState {
    handle: Option<JoinHandle<()>>,
}

impl Actor for TaskActor {
    type Msg = TaskMsg;
    type State = TaskState;
    type Arguments = Arc<TaskSetup>;

    async fn pre_start(
        &self,
        myself: ActorRef<TaskMsg>,
        setup: Arc<TaskSetup>,
    ) -> Result<TaskState, ActorProcessingErr> {
        let body = setup().await?;
        let handle = tokio::spawn(async move {
            let result = match tokio::spawn(body).await {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(format!("task panicked: {e}")),
                Err(_) => return,
            };
            let _ = myself.cast(TaskMsg::Ended(result));
        });
        Ok(TaskState {
            handle: Some(handle),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskMsg>,
        msg: TaskMsg,
        _state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TaskMsg::Ended(Ok(())) => {
                myself.stop(Some("task finished".to_owned()));
                Ok(())
            }
            TaskMsg::Ended(Err(e)) => Err(e.into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TaskMsg>,
        state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(handle) = state.handle.take() {
            handle.abort();
        }
        Ok(())
    }
}
