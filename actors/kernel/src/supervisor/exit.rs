//! Why a child exited, as a typed value: the one place that reads ractor's exit strings.
//!
//! ractor reports a child's end as a [`SupervisionEvent`]: `ActorFailed` for a panic or an
//! `Err` from any callback, `ActorTerminated` for a stop, with the reason `"killed"` when the
//! actor was killed (its `post_stop` did not run) and `"actor_task_cancelled"` when its task
//! was dropped. Supervision decisions use [`ExitKind`] and never look at those strings again.

use std::fmt;

use ractor::{ActorId, SupervisionEvent};

/// The reason ractor gives an actor that received `Signal::Kill`.
const KILLED: &str = "killed";
/// The reason ractor gives an actor whose task was cancelled (the runtime dropped it).
const CANCELLED: &str = "actor_task_cancelled";

/// How a child's incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    /// It stopped: `myself.stop(..)`, a stop from outside, or a drained mailbox. Final for a
    /// transient child.
    Normal {
        /// The stop reason, if one was given.
        reason: Option<String>,
    },
    /// It failed: a panic or an `Err` from a callback (`post_start`, `handle`, `post_stop`, ...).
    Abnormal(String),
    /// It was killed (`kill()`, or its task cancelled): abnormal, since it could not clean up.
    Killed,
    /// A restart failed before the child ran: the start function or the child's `pre_start`
    /// returned an error or panicked. Counts as a restart.
    StartFailed(String),
}

impl ExitKind {
    /// Whether a transient child is restarted after this exit.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, Self::Normal { .. })
    }

    /// The exiting actor and how it exited, for the events that end an actor
    /// (`ActorTerminated`, `ActorFailed`); `None` for the others.
    pub fn from_event(event: &SupervisionEvent) -> Option<(ActorId, ExitKind)> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                Some((cell.get_id(), Self::Abnormal(err.to_string())))
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let kind = match reason.as_deref() {
                    Some(KILLED | CANCELLED) => Self::Killed,
                    _ => Self::Normal {
                        reason: reason.clone(),
                    },
                };
                Some((cell.get_id(), kind))
            }
            _ => None,
        }
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal { reason: None } => f.write_str("exited normally"),
            Self::Normal { reason: Some(r) } => write!(f, "exited normally ({r})"),
            Self::Abnormal(e) => write!(f, "failed: {e}"),
            Self::Killed => f.write_str("killed"),
            Self::StartFailed(e) => write!(f, "failed to start: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normal_exits_are_normal() {
        assert!(!ExitKind::Normal { reason: None }.is_abnormal());
        assert!(ExitKind::Abnormal("boom".into()).is_abnormal());
        assert!(ExitKind::Killed.is_abnormal());
        assert!(ExitKind::StartFailed("boom".into()).is_abnormal());
    }

    #[test]
    fn display_is_lowercase_and_names_the_cause() {
        assert_eq!(
            ExitKind::Normal { reason: None }.to_string(),
            "exited normally"
        );
        assert_eq!(
            ExitKind::Normal {
                reason: Some("done".into())
            }
            .to_string(),
            "exited normally (done)"
        );
        assert_eq!(
            ExitKind::Abnormal("boom".into()).to_string(),
            "failed: boom"
        );
        assert_eq!(ExitKind::Killed.to_string(), "killed");
    }
}
