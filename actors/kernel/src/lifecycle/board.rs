//! The status board: the one owner of every component's state on a node.
//!
//! Each component (connector, supervisor, broker, ...) has one entry keyed by its stable id:
//! its FSM [`State`], since when, its [`Observation`]s and [`Health`], how many times it was
//! restarted, and its last error.
//!
//! **Writers.** The state changes only through [`StatusBoard::apply`], which runs the
//! transition table ([`State::next`]); an event the table rejects changes nothing, is counted
//! in `mw_component_illegal_transitions_total` and logged. The component writes through its
//! [`Lifecycle`](super::Lifecycle) handle; its supervisor writes its own state and records a
//! child's abnormal end ([`Event::Exited`]). Outside judges only [`observe`](StatusBoard::observe)
//! and [`clear_observation`](StatusBoard::clear_observation).
//!
//! **Readers.** The health endpoint (a [`snapshot`](StatusBoard::snapshot)), the metrics
//! (updated on every write) and the bus (a [`subscribe`](StatusBoard::subscribe)d stream of
//! [`StateChange`]s that the runtime republishes on `mw.state.<node>.<component>`).
//!
//! **Composites.** A supervisor is registered as a composite: what the board shows for it is
//! the [`aggregate`] of its own FSM state and its direct children's (the ids one segment below
//! its own), each child folded with its observations; a degraded child shows as
//! `degraded_<child>` on its supervisor, and on up the tree.
//!
//! The board is cheap to clone and safe to share: one lock around a small map, held only for
//! the duration of an update, never across an `.await`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::broadcast;

use super::observation::{Health, Observation};
use super::table::{Event, IllegalTransition, State, aggregate};

/// How many state changes a slow observer may lag behind before it misses some.
const CHANGE_BUFFER: usize = 1024;

/// The kind recorded for an id the board learns of only from a restart or an error: it says
/// nothing about its health and is left out of its supervisor's aggregate.
const UNKNOWN_KIND: &str = "unknown";

/// What the board knows of one component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentStatus {
    /// Stable id (survives restarts), e.g. `plant/connectors/press1`.
    pub id: String,
    /// What kind of component this is (`connector`, `supervisor`, `broker`, ...).
    pub kind: String,
    /// The state shown: the FSM state, or for a composite the aggregate of its own and its
    /// children's.
    #[serde(flatten)]
    pub state: State,
    /// The state's display name (`degraded_connection`).
    pub state_name: String,
    /// When the shown state was entered.
    pub since: DateTime<Utc>,
    /// The shown state and the observations folded by the one rule of [`Health::fold`].
    pub health: Health,
    /// What outside judges observe about it, one per source.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<Observation>,
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
    /// The state name before the change (`None` for a new component). Equal to the current
    /// one when only the observations changed.
    pub previous: Option<String>,
}

#[derive(Debug)]
struct Entry {
    status: ComponentStatus,
    /// The FSM state: what the table moves. For a leaf it is also what is shown.
    own: State,
    composite: bool,
    /// Every FSM state this entry went through, when the board records history.
    history: Option<Vec<State>>,
    /// For a composite: its direct children by the class of their folded state, kept up to
    /// date on every change (built on first use), so its aggregate costs a few lookups
    /// instead of a walk over all its children (a supervisor of 10,000 connectors).
    children: Option<ChildIndex>,
}

/// A composite's direct children (by name, below it) grouped by [`class`] of their folded
/// state; `aggregate` over the first child of each class, in name order, is the aggregate
/// over all of them (its rules are "any", "all" and "the first by name" over unions of these
/// classes).
#[derive(Debug, Default)]
struct ChildIndex {
    class_of: std::collections::HashMap<String, u8>,
    by_class: BTreeMap<u8, std::collections::BTreeSet<String>>,
}

impl ChildIndex {
    fn set(&mut self, name: &str, class: Option<u8>) {
        let old = match class {
            Some(c) => self.class_of.insert(name.to_owned(), c),
            None => self.class_of.remove(name),
        };
        if old == class {
            return;
        }
        if let Some(old) = old
            && let Some(names) = self.by_class.get_mut(&old)
        {
            names.remove(name);
            if names.is_empty() {
                self.by_class.remove(&old);
            }
        }
        if let Some(c) = class {
            self.by_class.entry(c).or_default().insert(name.to_owned());
        }
    }

    /// The first child (by name) of each class present.
    fn representatives(&self) -> impl Iterator<Item = &str> {
        self.by_class
            .values()
            .filter_map(|names| names.first().map(String::as_str))
    }
}

/// The class of a child's folded state, as `aggregate` tells states apart.
fn class(state: &State) -> u8 {
    match state {
        State::Starting { .. } | State::Creating | State::ToBeCreated => 0,
        State::Degraded { .. } => 1,
        State::Stopping => 2,
        State::Removing => 3,
        State::Stopped => 4,
        State::Removed => 5,
        State::Active => 6,
        State::Idle => 7,
        State::Finished => 8,
    }
}

#[derive(Debug)]
struct Inner {
    entries: RwLock<BTreeMap<String, Entry>>,
    /// One busy mark per component id (kept across incarnations), made on first use.
    busy: std::sync::Mutex<std::collections::HashMap<String, super::busy::BusyMark>>,
    changes: broadcast::Sender<StateChange>,
    record_history: bool,
    rejected: AtomicU64,
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

/// What changed under the lock, emitted (metrics, broadcast) after it is released.
struct Shown {
    status: ComponentStatus,
    previous: Option<State>,
}

impl StatusBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// An empty board that also keeps every FSM state each component went through (see
    /// [`history`](Self::history)): for tests that check paths through the table.
    pub fn recording() -> Self {
        Self::build(true)
    }

    fn build(record_history: bool) -> Self {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Self {
            inner: Arc::new(Inner {
                entries: RwLock::new(BTreeMap::new()),
                busy: std::sync::Mutex::default(),
                changes,
                record_history,
                rejected: AtomicU64::new(0),
            }),
        }
    }

    /// Adds `id` in `to_be_created`, or keeps the existing entry (state, restarts, errors)
    /// when the id is already known: a restarted component keeps its identity. An entry first
    /// known only from a restart takes the kind given here.
    pub fn register(&self, id: &str, kind: &str) {
        self.register_entry(id, kind, false);
    }

    /// Registers `id` as a composite component (a supervisor): the state shown for it is the
    /// [`aggregate`] of its own FSM state (the part named `self`) and its direct children's.
    pub fn register_composite(&self, id: &str, kind: &str) {
        self.register_entry(id, kind, true);
    }

    fn register_entry(&self, id: &str, kind: &str, composite: bool) {
        let mut map = self.inner.entries.write();
        if let Some(entry) = map.get_mut(id) {
            entry.composite |= composite;
            if entry.status.kind == UNKNOWN_KIND {
                entry.status.kind = kind.to_owned();
                // It now counts in its parent's aggregate (from the parent's next change).
                Self::reindex(&mut map, id);
            }
            return;
        }
        let state = State::ToBeCreated;
        let status = ComponentStatus {
            id: id.to_owned(),
            kind: kind.to_owned(),
            state_name: state.name(),
            health: Health::fold(&state, &[]),
            state: state.clone(),
            since: Utc::now(),
            observations: Vec::new(),
            restarts: 0,
            last_restart: None,
            last_error: None,
        };
        map.insert(
            id.to_owned(),
            Entry {
                status: status.clone(),
                own: state.clone(),
                composite,
                history: self.inner.record_history.then(|| vec![state]),
                children: None,
            },
        );
        let mut shown = vec![Shown {
            status,
            previous: None,
        }];
        if kind != UNKNOWN_KIND {
            Self::recompute_ancestors(&mut map, id, &mut shown);
        }
        drop(map);
        self.emit(shown);
    }

    /// Applies `event` to the FSM state of `id` through the transition table, and shows the
    /// result (and every composite above it). Returns the new FSM state.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the table rejects the event, or `id` is not registered; the
    /// state is unchanged, the rejection counted and logged.
    pub fn apply(&self, id: &str, event: Event) -> Result<State, IllegalTransition> {
        let mut map = self.inner.entries.write();
        let Some(entry) = map.get_mut(id) else {
            drop(map);
            return Err(self.reject(
                id,
                IllegalTransition {
                    from: State::ToBeCreated,
                    event,
                },
            ));
        };
        let next = match entry.own.next(&event) {
            Ok(next) => next,
            Err(e) => {
                drop(map);
                return Err(self.reject(id, e));
            }
        };
        if next == entry.own {
            return Ok(next);
        }
        if let Some(reason) = next.reason() {
            entry.status.last_error = Some(reason.to_owned());
        }
        entry.own = next.clone();
        if let Some(history) = &mut entry.history {
            history.push(next.clone());
        }
        let composite = entry.composite;
        let mut shown = Vec::new();
        if composite {
            Self::recompute(&mut map, id, &mut shown);
        } else {
            let entry = map.get_mut(id).expect("present");
            Self::show(entry, next.clone(), &mut shown);
        }
        Self::recompute_ancestors(&mut map, id, &mut shown);
        drop(map);
        self.emit(shown);
        Ok(next)
    }

    fn reject(&self, id: &str, e: IllegalTransition) -> IllegalTransition {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mw_component_illegal_transitions_total").increment(1);
        tracing::warn!(component = %id, error = %e, "state change refused by the transition table");
        e
    }

    /// Records `observation` on `id`, replacing the one from the same source. It never
    /// changes the FSM state; it changes the component's health and its supervisor's
    /// aggregate (see [`Health::fold`]).
    pub fn observe(&self, id: &str, observation: Observation) {
        let mut map = self.inner.entries.write();
        let Some(entry) = map.get_mut(id) else { return };
        let observations = &mut entry.status.observations;
        match observations
            .iter_mut()
            .find(|o| o.source == observation.source)
        {
            Some(o) if o.condition == observation.condition => return,
            Some(o) => *o = observation,
            None => observations.push(observation),
        }
        let mut shown = Vec::new();
        Self::reshow(entry, &mut shown);
        Self::recompute_ancestors(&mut map, id, &mut shown);
        drop(map);
        self.emit(shown);
    }

    /// Clears what `source` observed on `id`, if anything.
    pub fn clear_observation(&self, id: &str, source: &str) {
        let mut map = self.inner.entries.write();
        let Some(entry) = map.get_mut(id) else { return };
        let before = entry.status.observations.len();
        entry.status.observations.retain(|o| o.source != source);
        if entry.status.observations.len() == before {
            return;
        }
        let mut shown = Vec::new();
        Self::reshow(entry, &mut shown);
        Self::recompute_ancestors(&mut map, id, &mut shown);
        drop(map);
        self.emit(shown);
    }

    /// Re-announces an entry whose observations changed (its state did not).
    fn reshow(entry: &mut Entry, shown: &mut Vec<Shown>) {
        let status = &mut entry.status;
        status.health = Health::fold(&status.state, &status.observations);
        shown.push(Shown {
            status: status.clone(),
            previous: Some(status.state.clone()),
        });
    }

    /// Shows the aggregate of composite `id`'s own state and its direct children's.
    fn recompute(map: &mut BTreeMap<String, Entry>, id: &str, shown: &mut Vec<Shown>) {
        let Some(own) = map.get(id).filter(|e| e.composite).map(|e| e.own.clone()) else {
            return;
        };
        let state = if own.is_healthy() {
            let prefix = format!("{id}/");
            if map.get(id).is_some_and(|e| e.children.is_none()) {
                // Built once by a walk over the children; kept up to date after.
                let mut index = ChildIndex::default();
                for (k, e) in map
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .filter(|(k, _)| !k[prefix.len()..].contains('/'))
                {
                    index.set(&k[prefix.len()..], child_class(e));
                }
                map.get_mut(id).expect("present").children = Some(index);
            }
            let index = map
                .get(id)
                .and_then(|e| e.children.as_ref())
                .expect("built above");
            let mut children: Vec<(String, State)> = index
                .representatives()
                .filter_map(|name| {
                    let e = map.get(&format!("{prefix}{name}"))?;
                    Some((name.to_owned(), folded(e)))
                })
                .collect();
            children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            aggregate(
                std::iter::once(("self", &own))
                    .chain(children.iter().map(|(n, s)| (n.as_str(), s))),
            )
        } else {
            // Degraded itself (restarting a child), starting, stopping or stopped: the
            // composite's own state says more than its children's.
            own
        };
        let entry = map.get_mut(id).expect("present");
        Self::show(entry, state, shown);
    }

    /// Every composite ancestor of `id`, innermost first.
    fn recompute_ancestors(map: &mut BTreeMap<String, Entry>, id: &str, shown: &mut Vec<Shown>) {
        let mut at = id;
        while let Some((parent, _)) = at.rsplit_once('/') {
            Self::reindex(map, at);
            Self::recompute(map, parent, shown);
            at = parent;
        }
    }

    /// Files `id` under the class of its folded state in its parent's child index (out of it
    /// when it is gone or says nothing about its health).
    fn reindex(map: &mut BTreeMap<String, Entry>, id: &str) {
        let Some((parent, name)) = id.rsplit_once('/') else {
            return;
        };
        let class = map.get(id).and_then(child_class);
        if let Some(index) = map.get_mut(parent).and_then(|p| p.children.as_mut()) {
            index.set(name, class);
        }
    }

    /// Puts `state` on the board as what `entry` shows.
    fn show(entry: &mut Entry, state: State, shown: &mut Vec<Shown>) {
        let status = &mut entry.status;
        if status.state == state {
            return;
        }
        let previous = std::mem::replace(&mut status.state, state);
        status.health = Health::fold(&status.state, &status.observations);
        status.state_name = status.state.name();
        status.since = Utc::now();
        shown.push(Shown {
            status: status.clone(),
            previous: Some(previous),
        });
    }

    /// Exports and broadcasts what changed.
    fn emit(&self, shown: Vec<Shown>) {
        for Shown { status, previous } in shown {
            export_state(&status, previous.as_ref());
            if let Some(prev) = &previous
                && *prev != status.state
            {
                tracing::debug!(component = %status.id, from = %prev, to = %status.state, "state change");
            }
            let _ = self.inner.changes.send(StateChange {
                previous: previous.map(|p| p.name()),
                status,
            });
        }
    }

    /// Counts a restart of `id` and records why.
    pub fn record_restart(&self, id: &str, reason: &str) {
        self.register(id, UNKNOWN_KIND);
        let mut map = self.inner.entries.write();
        let Some(entry) = map.get_mut(id) else { return };
        entry.status.restarts += 1;
        entry.status.last_restart = Some(Utc::now());
        entry.status.last_error = Some(reason.to_owned());
        drop(map);
        metrics::counter!("mw_component_restarts_total", "component" => id.to_owned()).increment(1);
    }

    /// Records `error` as the last error of `id`.
    pub fn record_error(&self, id: &str, error: String) {
        if let Some(entry) = self.inner.entries.write().get_mut(id) {
            entry.status.last_error = Some(error);
        }
    }

    /// The [`BusyMark`](super::busy::BusyMark) of `id`: the same one for every incarnation,
    /// so a judge that took it once keeps reading the live one.
    pub fn busy_mark(&self, id: &str) -> super::busy::BusyMark {
        let mut marks = self.inner.busy.lock().unwrap_or_else(|p| p.into_inner());
        marks.entry(id.to_owned()).or_default().clone()
    }

    /// Removes `id` from the board (after it reached `removed`), and its busy mark.
    pub fn forget(&self, id: &str) {
        self.inner
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let mut map = self.inner.entries.write();
        map.remove(id);
        Self::reindex(&mut map, id);
    }

    /// The status of one component.
    pub fn get(&self, id: &str) -> Option<ComponentStatus> {
        self.inner.entries.read().get(id).map(|e| e.status.clone())
    }

    /// The FSM state of one component (for a composite, its own part, not the aggregate).
    pub fn fsm_state(&self, id: &str) -> Option<State> {
        self.inner.entries.read().get(id).map(|e| e.own.clone())
    }

    /// Every component's status, ordered by id.
    pub fn snapshot(&self) -> Vec<ComponentStatus> {
        self.inner
            .entries
            .read()
            .values()
            .map(|e| e.status.clone())
            .collect()
    }

    /// Every FSM state `id` went through, first to last, on a [`recording`](Self::recording)
    /// board (`None` otherwise, or for an unknown id).
    pub fn history(&self, id: &str) -> Option<Vec<State>> {
        self.inner
            .entries
            .read()
            .get(id)
            .and_then(|e| e.history.clone())
    }

    /// How many events the transition table refused on this board.
    pub fn rejected_transitions(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// A stream of every change from now on. A receiver that lags more than 1024 changes
    /// behind gets `RecvError::Lagged` and should re-read a [`snapshot`](Self::snapshot).
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.inner.changes.subscribe()
    }
}

/// A child's state as its supervisor counts it: an observation on a running child makes it
/// degraded with the observation as the reason.
/// A child's class in its parent's index: `None` for one that does not report its own state
/// (a plain worker the board knows only from its restarts says nothing about its health).
fn child_class(entry: &Entry) -> Option<u8> {
    (entry.status.kind != UNKNOWN_KIND).then(|| class(&folded(entry)))
}

fn folded(entry: &Entry) -> State {
    let status = &entry.status;
    match (&status.state, status.observations.first()) {
        (State::Idle | State::Active, Some(o)) => State::Degraded {
            facet: None,
            reason: o.condition.clone(),
        },
        (state, _) => state.clone(),
    }
}

/// Exports the state as `mw_component_state{component, state} = 1` for the current base
/// state and 0 for the previous one, so a PromQL `== 1` selects the current state; and
/// `mw_component_observations{component}`, the number of outside observations it has.
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
    metrics::gauge!("mw_component_observations", "component" => status.id.clone())
        .set(status.observations.len() as f64);
}
