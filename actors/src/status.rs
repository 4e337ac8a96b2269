//! The status board: the node-wide view of every managed component.
//!
//! Each component (connector, supervisor, broker, ...) has one entry keyed by its stable id:
//! its [`State`], since when, how many times it was restarted, and its last error. Writers are
//! the components themselves (through [`Lifecycle`](crate::lifecycle::Lifecycle)) and the
//! supervisors (restarts). Readers are the health endpoint (a [`snapshot`](StatusBoard::snapshot)),
//! the metrics (updated on every write) and the bus (a [`subscribe`](StatusBoard::subscribe)d
//! stream of [`StateChange`]s that the runtime republishes on `mw.state.<node>.<component>`).
//!
//! The board is cheap to clone and safe to share: one lock around a small map, held only for
//! the duration of a field update, never across an `.await`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::lifecycle::State;

/// How many state changes a slow observer may lag behind before it misses some.
const CHANGE_BUFFER: usize = 1024;

/// What the board knows of one component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentStatus {
    /// Stable id (survives restarts), e.g. `sims/press1`.
    pub id: String,
    /// What kind of component this is (`sim`, `supervisor`, `broker`, ...).
    pub kind: String,
    /// Current state.
    #[serde(flatten)]
    pub state: State,
    /// The state's display name (`degraded_connection`).
    pub state_name: String,
    /// When the current state was entered.
    pub since: DateTime<Utc>,
    /// Restarts since the node started.
    pub restarts: u64,
    /// When the last restart happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<DateTime<Utc>>,
    /// The last error reported, for an operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One change on the board, as observers receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateChange {
    /// The component's status after the change.
    pub status: ComponentStatus,
    /// The state name before the change (`None` for a new component).
    pub previous: Option<String>,
}

#[derive(Debug)]
struct Inner {
    components: RwLock<BTreeMap<String, ComponentStatus>>,
    changes: broadcast::Sender<StateChange>,
}

/// The shared board. Clone it freely; all clones see the same entries.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    inner: Arc<Inner>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusBoard {
    /// An empty board.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Self {
            inner: Arc::new(Inner {
                components: RwLock::new(BTreeMap::new()),
                changes,
            }),
        }
    }

    /// Adds `id` in `to_be_created`, or keeps the existing entry (restarts, errors) when the id
    /// is already known: a restarted component keeps its identity.
    pub fn register(&self, id: &str, kind: &str) {
        let mut map = self.inner.components.write();
        if map.contains_key(id) {
            return;
        }
        let status = ComponentStatus {
            id: id.to_owned(),
            kind: kind.to_owned(),
            state: State::ToBeCreated,
            state_name: State::ToBeCreated.name(),
            since: Utc::now(),
            restarts: 0,
            last_restart: None,
            last_error: None,
        };
        map.insert(id.to_owned(), status.clone());
        drop(map);
        export_state(&status, None);
        let _ = self.inner.changes.send(StateChange {
            status,
            previous: None,
        });
    }

    /// Sets the state of `id` (registering it as kind `unknown` if needed).
    pub fn set_state(&self, id: &str, state: State) {
        self.register(id, "unknown");
        let mut map = self.inner.components.write();
        let Some(entry) = map.get_mut(id) else { return };
        if entry.state == state {
            return;
        }
        let previous = std::mem::replace(&mut entry.state, state);
        entry.state_name = entry.state.name();
        entry.since = Utc::now();
        if let Some(reason) = entry.state.reason() {
            entry.last_error = Some(reason.to_owned());
        }
        let status = entry.clone();
        drop(map);
        export_state(&status, Some(&previous));
        tracing::debug!(component = %id, from = %previous, to = %status.state, "state change");
        let _ = self.inner.changes.send(StateChange {
            status,
            previous: Some(previous.name()),
        });
    }

    /// Counts a restart of `id` and records why.
    pub fn record_restart(&self, id: &str, reason: &str) {
        self.register(id, "unknown");
        let mut map = self.inner.components.write();
        let Some(entry) = map.get_mut(id) else { return };
        entry.restarts += 1;
        entry.last_restart = Some(Utc::now());
        entry.last_error = Some(reason.to_owned());
        drop(map);
        metrics::counter!("mw_component_restarts_total", "component" => id.to_owned()).increment(1);
    }

    /// Records `error` as the last error of `id`.
    pub fn record_error(&self, id: &str, error: String) {
        if let Some(entry) = self.inner.components.write().get_mut(id) {
            entry.last_error = Some(error);
        }
    }

    /// Removes `id` from the board (after it reached `removed`).
    pub fn forget(&self, id: &str) {
        self.inner.components.write().remove(id);
    }

    /// The status of one component.
    pub fn get(&self, id: &str) -> Option<ComponentStatus> {
        self.inner.components.read().get(id).cloned()
    }

    /// Every component's status, ordered by id.
    pub fn snapshot(&self) -> Vec<ComponentStatus> {
        self.inner.components.read().values().cloned().collect()
    }

    /// A stream of every change from now on. A receiver that lags more than 1024 changes
    /// behind gets `RecvError::Lagged` and should re-read a [`snapshot`](Self::snapshot).
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.inner.changes.subscribe()
    }
}

/// Exports the state as `mw_component_state{component, state} = 1` for the current base
/// state and 0 for the previous one, so a PromQL `== 1` selects the current state.
fn export_state(status: &ComponentStatus, previous: Option<&State>) {
    if let Some(prev) = previous
        && prev.base_name() != status.state.base_name()
    {
        metrics::gauge!(
            "mw_component_state",
            "component" => status.id.clone(),
            "state" => prev.base_name()
        )
        .set(0.0);
    }
    metrics::gauge!(
        "mw_component_state",
        "component" => status.id.clone(),
        "state" => status.state.base_name()
    )
    .set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_and_errors_survive_re_registration() {
        let board = StatusBoard::new();
        board.register("sims/press1", "sim");
        board.set_state("sims/press1", State::Idle);
        board.record_restart("sims/press1", "panicked: boom");
        board.register("sims/press1", "sim");
        let s = board.get("sims/press1").unwrap();
        assert_eq!(s.restarts, 1);
        assert_eq!(s.last_error.as_deref(), Some("panicked: boom"));
        assert_eq!(s.state, State::Idle);
    }

    #[tokio::test]
    async fn changes_are_broadcast_with_previous_state() {
        let board = StatusBoard::new();
        let mut rx = board.subscribe();
        board.register("a", "sim");
        board.set_state(
            "a",
            State::Degraded {
                facet: None,
                reason: "slow".into(),
            },
        );
        let first = rx.recv().await.unwrap();
        assert_eq!(first.previous, None);
        let second = rx.recv().await.unwrap();
        assert_eq!(second.previous.as_deref(), Some("to_be_created"));
        assert_eq!(second.status.state_name, "degraded");
        assert_eq!(second.status.last_error.as_deref(), Some("slow"));
    }

    #[test]
    fn setting_the_same_state_is_not_a_change() {
        let board = StatusBoard::new();
        board.set_state("a", State::Idle);
        let mut rx = board.subscribe();
        board.set_state("a", State::Idle);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn snapshot_serializes_state_fields_flat() {
        let board = StatusBoard::new();
        board.register("a", "sim");
        let v = serde_json::to_value(board.snapshot()).unwrap();
        assert_eq!(v[0]["id"], "a");
        assert_eq!(v[0]["state"], "to_be_created");
        assert_eq!(v[0]["restarts"], 0);
    }
}
