//! Operating the dead-letter queue: list, show, replay and purge.
//!
//! The same [`DlqCommand`]s run in two places, with the same results:
//!
//! - on a **running** node, inside the broker actor ([`BrokerMsg::Dlq`](super::BrokerMsg::Dlq)),
//!   reached over the control subject `<prefix>.ctl.<node>.dlq` or `:8080/control/dlq`;
//! - on a **stopped** node's data dir, with [`execute_offline`] (what `millwright dlq` does
//!   when no node holds the data dir).
//!
//! Replaying an event appends it to the disk queue again, unchanged (same id, so JetStream
//! de-duplicates a replay that races a late success), *then* removes it from the DLQ: a crash
//! in between replays it twice, never loses it.

use std::path::Path;

use millwright_plugin_sdk::event::EventId;
use serde::{Deserialize, Serialize};

use millwright_storage::dead_letter::{DeadLetter, DeadLetterError, DeadLetterQueue};
use millwright_storage::disk_queue::{DiskQueue, DiskQueueError, DiskQueueOptions};

use crate::delivery::Outgoing;

/// Which dead letters a replay or purge applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every dead letter.
    All,
    /// The one with this id.
    One(EventId),
}

/// An operator's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DlqCommand {
    /// The oldest `limit` dead letters and the total.
    List {
        /// How many to return at most.
        limit: usize,
    },
    /// One dead letter, in full.
    Show {
        /// Its event id.
        id: EventId,
    },
    /// Send again: back into the disk queue, out of the DLQ.
    Replay {
        /// Which.
        target: Target,
    },
    /// Delete for good.
    Purge {
        /// Which.
        target: Target,
    },
}

/// The answer to a [`DlqCommand`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum DlqReply {
    /// For `list`.
    Letters {
        /// Dead letters in the store.
        total: u64,
        /// The oldest ones, up to the limit.
        letters: Vec<DeadLetter>,
    },
    /// For `show`.
    Letter {
        /// The dead letter.
        letter: DeadLetter,
    },
    /// For `replay`: how many went back into the disk queue.
    Replayed {
        /// Count.
        count: u64,
    },
    /// For `purge`: how many were deleted.
    Purged {
        /// Count.
        count: u64,
    },
}

/// Why a DLQ command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqAdminError {
    /// No dead letter has this id.
    #[error("no dead letter with id {0} (run `millwright dlq list` to see the ids)")]
    NotFound(EventId),
    /// The DLQ store failed.
    #[error(transparent)]
    Store(#[from] DeadLetterError),
    /// The disk queue failed (replay).
    #[error(transparent)]
    Queue(#[from] DiskQueueError),
}

/// Runs `command` against the stores. `queue` is needed for replays only.
///
/// # Errors
/// [`DlqAdminError::NotFound`] for an unknown id; store and queue errors as they come.
pub fn execute(
    command: &DlqCommand,
    dlq: &DeadLetterQueue,
    queue: Option<&mut DiskQueue>,
) -> Result<DlqReply, DlqAdminError> {
    match command {
        DlqCommand::List { limit } => Ok(DlqReply::Letters {
            total: dlq.len()?,
            letters: dlq.list(*limit)?,
        }),
        DlqCommand::Show { id } => dlq
            .get(id)?
            .map(|letter| DlqReply::Letter { letter })
            .ok_or(DlqAdminError::NotFound(*id)),
        DlqCommand::Replay { target } => {
            let letters = selected(dlq, target)?;
            let queue = queue.expect("a replay is given the disk queue");
            for letter in &letters {
                queue.append(&Outgoing::from_envelope(&letter.envelope).to_record())?;
            }
            queue.sync()?;
            for letter in &letters {
                dlq.remove(&letter.id())?;
            }
            Ok(DlqReply::Replayed {
                count: letters.len() as u64,
            })
        }
        DlqCommand::Purge { target } => {
            let count = match target {
                Target::All => dlq.purge_all()?,
                Target::One(id) => {
                    dlq.remove(id)?.ok_or(DlqAdminError::NotFound(*id))?;
                    1
                }
            };
            Ok(DlqReply::Purged { count })
        }
    }
}

fn selected(dlq: &DeadLetterQueue, target: &Target) -> Result<Vec<DeadLetter>, DlqAdminError> {
    match target {
        Target::All => Ok(dlq.list(usize::MAX)?),
        Target::One(id) => Ok(vec![dlq.get(id)?.ok_or(DlqAdminError::NotFound(*id))?]),
    }
}

/// Runs `command` on a stopped node's stores: the DLQ in `data_dir` and, for a replay, the
/// disk queue in `queue_dir`. The caller makes sure no node runs on them (the runtime checks
/// the node's lockfile).
///
/// # Errors
/// As [`execute`], and the errors of opening the stores.
pub fn execute_offline(
    command: &DlqCommand,
    data_dir: &Path,
    queue_dir: &Path,
    queue_options: DiskQueueOptions,
) -> Result<DlqReply, DlqAdminError> {
    let dlq = DeadLetterQueue::open(data_dir)?;
    if matches!(command, DlqCommand::Replay { .. }) {
        let (mut queue, _report) = DiskQueue::open(queue_dir, queue_options)?;
        let reply = execute(command, &dlq, Some(&mut queue));
        queue.close()?;
        reply
    } else {
        execute(command, &dlq, None)
    }
}
