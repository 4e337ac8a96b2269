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

use crate::lifecycle::{State, aggregate};

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
    /// The own state of each composite component (a supervisor); what the board shows for it
    /// is [`aggregate`] of that and its direct children's states.
    composites: RwLock<BTreeMap<String, State>>,
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
                composites: RwLock::new(BTreeMap::new()),
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

    /// Registers `id` as a composite component: its direct children are the ids under
    /// `id/` (one more segment), and the state shown for it is the [`aggregate`] of its own
    /// state (the part named `self`) and theirs. A supervisor is one: a degraded child shows as
    /// `degraded_<child>` on its supervisor, and on up the tree.
    pub fn register_composite(&self, id: &str, kind: &str) {
        self.register(id, kind);
        self.inner
            .composites
            .write()
            .entry(id.to_owned())
            .or_insert(State::ToBeCreated);
    }

    /// Sets the state of `id` (registering it as kind `unknown` if needed). For a composite
    /// this is its own part; every composite above `id` is recomputed.
    pub fn set_state(&self, id: &str, state: State) {
        self.register(id, "unknown");
        let own_reason = state.reason().map(str::to_owned);
        let shown = {
            let mut composites = self.inner.composites.write();
            match composites.get_mut(id) {
                Some(own) => {
                    *own = state;
                    None
                }
                None => Some(state),
            }
        };
        match shown {
            Some(state) => self.show(id, state, own_reason),
            None => self.recompute(id, own_reason),
        }
        // Every composite ancestor, innermost first.
        let mut at = id;
        while let Some((parent, _)) = at.rsplit_once('/') {
            if self.inner.composites.read().contains_key(parent) {
                self.recompute(parent, None);
            }
            at = parent;
        }
    }

    /// Shows the aggregate of composite `id`'s own state and its direct children's.
    fn recompute(&self, id: &str, own_reason: Option<String>) {
        let Some(own) = self.inner.composites.read().get(id).cloned() else {
            return;
        };
        let prefix = format!("{id}/");
        let children: Vec<(String, State)> = self
            .inner
            .components
            .read()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            // Only children that report their own state (registered with a kind): a plain
            // worker the board knows only from its restarts says nothing about its health.
            .filter(|(_, v)| v.kind != "unknown")
            .map(|(k, v)| (k[prefix.len()..].to_owned(), v.state.clone()))
            .collect();
        let state = if own.is_healthy() {
            aggregate(
                std::iter::once(("self", &own))
                    .chain(children.iter().map(|(n, s)| (n.as_str(), s))),
            )
        } else {
            // Degraded itself (restarting a child), starting, stopping or stopped: the
            // composite's own state says more than its children's.
            own
        };
        self.show(id, state, own_reason);
    }

    /// Puts `state` on the board for `id` and tells observers. `own_reason` (the component's
    /// own degraded reason) becomes its last error; an aggregated reason does not.
    fn show(&self, id: &str, state: State, own_reason: Option<String>) {
        let mut map = self.inner.components.write();
        let Some(entry) = map.get_mut(id) else { return };
        if let Some(reason) = own_reason {
            entry.last_error = Some(reason);
        }
        if entry.state == state {
            return;
        }
        let previous = std::mem::replace(&mut entry.state, state);
        entry.state_name = entry.state.name();
        entry.since = Utc::now();
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
        self.inner.composites.write().remove(id);
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

    fn degraded(reason: &str) -> State {
        State::Degraded {
            facet: None,
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn a_composite_shows_the_aggregate_of_itself_and_its_children_up_the_tree() {
        let board = StatusBoard::new();
        board.register_composite("n", "supervisor");
        board.register_composite("n/sims", "supervisor");
        board.set_state("n", State::Active);
        board.set_state("n/sims", State::Active);
        for m in ["n/sims/m1", "n/sims/m2"] {
            board.register(m, "sim");
            board.set_state(m, State::Idle);
        }
        // A worker known only from its restarts does not count.
        board.record_restart("n/sims/plain", "boom");
        assert_eq!(board.get("n/sims").unwrap().state, State::Active);

        board.set_state("n/sims/m2", degraded("probe timeout"));
        let sims = board.get("n/sims").unwrap();
        assert_eq!(sims.state_name, "degraded_m2");
        assert_eq!(sims.state.reason(), Some("m2 degraded: probe timeout"));
        assert_eq!(
            sims.last_error, None,
            "a child's reason is not the composite's error"
        );
        assert_eq!(
            board.get("n").unwrap().state_name,
            "degraded_sims",
            "and up the tree"
        );

        board.set_state("n/sims/m2", State::Idle);
        assert_eq!(board.get("n/sims").unwrap().state, State::Active);
        assert_eq!(board.get("n").unwrap().state, State::Active);

        // Its own trouble comes first, and is its last error.
        board.set_state("n/sims/m1", degraded("x"));
        board.set_state("n/sims", degraded("restarting child m1"));
        let sims = board.get("n/sims").unwrap();
        assert_eq!(sims.state.reason(), Some("restarting child m1"));
        assert_eq!(sims.last_error.as_deref(), Some("restarting child m1"));
    }

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
