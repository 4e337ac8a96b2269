//! Reaching a named actor: look it up in the registry by its stable name and call it with a
//! timeout. Every "ask the connector / the broker / a supervisor" goes through [`call`], so
//! there is one error type ([`ReachError`]) and one meaning for each outcome.
//!
//! Names are the supervision tree's stable ids (`<node>/connectors/press1`): they survive
//! restarts, so a caller holds a name, never an `ActorRef` that dies with an incarnation.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};

/// Why a named actor gave no answer. The name is in every variant, so the message stands on
/// its own in a log or an HTTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReachError {
    /// Nothing is registered under the name: unknown, or between a crash and its restart.
    #[error("{name}: not running (unknown, or restarting); try again")]
    NotRunning {
        /// The registry name.
        name: String,
    },
    /// It did not answer within the timeout (busy with a long request, or hung).
    #[error("{name}: no answer within {}", crate::supervisor::human(*timeout))]
    Timeout {
        /// The registry name.
        name: String,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// It stopped before it answered.
    #[error("{name}: stopped before it answered")]
    Stopped {
        /// The registry name.
        name: String,
    },
}

impl ReachError {
    /// The registry name the caller tried to reach.
    pub fn name(&self) -> &str {
        match self {
            Self::NotRunning { name } | Self::Timeout { name, .. } | Self::Stopped { name } => name,
        }
    }
}

/// The actor registered as `name`, typed by its message.
///
/// # Errors
/// [`ReachError::NotRunning`] when nothing is registered under `name`.
pub fn lookup<M: Message>(name: &str) -> Result<ActorRef<M>, ReachError> {
    ractor::registry::where_is(name)
        .map(ActorRef::from)
        .ok_or_else(|| ReachError::NotRunning {
            name: name.to_owned(),
        })
}

/// Calls the actor registered as `name` with the message `msg` builds around a reply port,
/// and waits at most `timeout` for the answer.
///
/// # Errors
/// [`ReachError`]: not registered, no answer in time, or stopped before answering.
///
/// # Cancel safety
/// Cancel safe for the caller: the message, once sent, is still handled (its answer dropped).
pub async fn call<M, T>(
    name: &str,
    timeout: Duration,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, ReachError>
where
    M: Message,
    T: Send + 'static,
{
    let actor: ActorRef<M> = lookup(name)?;
    call_ref(&actor, Some(timeout), msg).await
}

/// As [`call`], for an actor the caller already holds (its own child, say); `None` waits as
/// long as it takes.
///
/// # Errors
/// [`ReachError`], named after the actor's registry name (or its id when it has none).
///
/// # Cancel safety
/// Cancel safe for the caller, as [`call`].
pub async fn call_ref<M, T>(
    actor: &ActorRef<M>,
    timeout: Option<Duration>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, ReachError>
where
    M: Message,
    T: Send + 'static,
{
    let name = || {
        actor
            .get_name()
            .unwrap_or_else(|| actor.get_id().to_string())
    };
    match actor.call(msg, timeout).await {
        Ok(CallResult::Success(answer)) => Ok(answer),
        Ok(CallResult::Timeout) => Err(ReachError::Timeout {
            name: name(),
            timeout: timeout.unwrap_or_default(),
        }),
        Ok(CallResult::SenderError) => Err(ReachError::Stopped { name: name() }),
        // The mailbox was closed between the lookup and the send.
        Err(_) => Err(ReachError::NotRunning { name: name() }),
    }
}
