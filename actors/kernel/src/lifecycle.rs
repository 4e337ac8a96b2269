//! The lifecycle state machine shared by every managed component (after UMH Core).
//!
//! A component moves through *lifecycle* states (`to_be_created`, `creating`, `removing`,
//! `removed`) around its *operational* states (`stopped`, `starting`, `idle`, `active`,
//! `degraded`, `stopping`). `idle` means healthy with no data for the idle window (30 s by
//! default); `active` means data is flowing; `degraded` always carries a reason.
//!
//! Transitions are driven by [`Event`]s and checked against one table in [`State::next`]: an
//! event that makes no sense in the current state is rejected with [`IllegalTransition`] and
//! the state does not change.
//!
//! Composite components (a connector = connection + flow) derive their state from their parts
//! with [`aggregate`], which yields states such as `starting_connection` or
//! `degraded_connection`.
//!
//! A component holds a [`Lifecycle`], which owns its [`Fsm`] and reports every change to the
//! node's [`StatusBoard`](crate::status::StatusBoard), from where health, metrics and the bus
//! observe it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::status::StatusBoard;

/// The default idle window: a healthy component with no data for this long is `idle`.
pub const DEFAULT_IDLE_WINDOW: Duration = Duration::from_secs(30);

/// The state of a managed component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Declared in config, not yet built.
    ToBeCreated,
    /// Being built (resources allocated, actor spawned).
    Creating,
    /// Built, not running.
    Stopped,
    /// Running its start sequence; `phase` names the part being waited for (`connection`).
    Starting {
        /// The part the component is waiting for, if it has parts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<String>,
    },
    /// Healthy, no data within the idle window.
    Idle,
    /// Healthy, data flowing.
    Active,
    /// Running but impaired; `facet` names the impaired part (`connection`), `reason` says why.
    Degraded {
        /// The impaired part, if the component has parts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        facet: Option<String>,
        /// Why, for an operator: `"connection degraded: probe timeout after 30s"`.
        reason: String,
    },
    /// Shutting down gracefully.
    Stopping,
    /// Being removed from the node.
    Removing,
    /// Gone; kept only so observers see the end.
    Removed,
}

/// What happened to a component; the input of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start building the component (`to_be_created -> creating`).
    Create,
    /// Building finished (`creating -> stopped`).
    Created,
    /// Start running (`stopped -> starting`).
    Start,
    /// The start sequence moved on to waiting for `phase` (`starting -> starting_<phase>`).
    StartPhase(String),
    /// The start sequence finished (`starting -> idle`).
    StartDone,
    /// The start sequence failed (`starting -> stopped`).
    StartFailed(String),
    /// Data was received (`idle -> active`; keeps `active`; recorded while `degraded`).
    DataReceived,
    /// No data for the idle window (`active -> idle`).
    NoDataTimeout,
    /// A part became unhealthy (`starting|idle|active|degraded -> degraded`).
    Degrade {
        /// The impaired part, if any.
        facet: Option<String>,
        /// Why.
        reason: String,
    },
    /// Health came back (`degraded -> idle`).
    Recovered,
    /// Begin a graceful stop (`starting|idle|active|degraded -> stopping`).
    Stop,
    /// The stop finished (`stopping -> stopped`).
    StopDone,
    /// Begin removal (`stopped|to_be_created -> removing`).
    Remove,
    /// Removal finished (`removing -> removed`).
    RemoveDone,
}

/// An event that the current state does not accept; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: event {event:?} in state {from}")]
pub struct IllegalTransition {
    /// The state the component was in (and still is).
    pub from: State,
    /// The rejected event.
    pub event: Event,
}

impl State {
    /// The state after `event`, or the rejection. This is the whole transition table.
    ///
    /// # Errors
    /// [`IllegalTransition`] when `event` is not accepted in `self`.
    pub fn next(&self, event: &Event) -> Result<State, IllegalTransition> {
        use State as S;
        let next = match (self, event) {
            (S::ToBeCreated, Event::Create) => S::Creating,
            (S::Creating, Event::Created) => S::Stopped,
            (S::Stopped, Event::Start) => S::Starting { phase: None },
            (S::Starting { .. }, Event::StartPhase(p)) => S::Starting {
                phase: Some(p.clone()),
            },
            (S::Starting { .. }, Event::StartDone) => S::Idle,
            (S::Starting { .. }, Event::StartFailed(_)) => S::Stopped,
            (S::Idle | S::Active, Event::DataReceived) => S::Active,
            (S::Degraded { .. }, Event::DataReceived) => self.clone(),
            (S::Active, Event::NoDataTimeout) => S::Idle,
            (S::Idle, Event::NoDataTimeout) => S::Idle,
            (
                S::Starting { .. } | S::Idle | S::Active | S::Degraded { .. },
                Event::Degrade { facet, reason },
            ) => S::Degraded {
                facet: facet.clone(),
                reason: reason.clone(),
            },
            (S::Degraded { .. }, Event::Recovered) => S::Idle,
            (S::Starting { .. } | S::Idle | S::Active | S::Degraded { .. }, Event::Stop) => {
                S::Stopping
            }
            (S::Stopping, Event::StopDone) => S::Stopped,
            (S::Stopped | S::ToBeCreated, Event::Remove) => S::Removing,
            (S::Removing, Event::RemoveDone) => S::Removed,
            _ => {
                return Err(IllegalTransition {
                    from: self.clone(),
                    event: event.clone(),
                });
            }
        };
        Ok(next)
    }

    /// The state's name as shown on health, metrics and the bus: `idle`,
    /// `starting_connection`, `degraded_connection`, ...
    pub fn name(&self) -> String {
        match self {
            State::Starting { phase: Some(p) } => format!("starting_{p}"),
            State::Degraded { facet: Some(f), .. } => format!("degraded_{f}"),
            other => other.base_name().to_owned(),
        }
    }

    /// The state's name without its phase or facet: one of a fixed set, safe as a metric label.
    pub fn base_name(&self) -> &'static str {
        match self {
            State::ToBeCreated => "to_be_created",
            State::Creating => "creating",
            State::Stopped => "stopped",
            State::Starting { .. } => "starting",
            State::Idle => "idle",
            State::Active => "active",
            State::Degraded { .. } => "degraded",
            State::Stopping => "stopping",
            State::Removing => "removing",
            State::Removed => "removed",
        }
    }

    /// Every base name, in lifecycle order (for exporting one gauge per state).
    pub const BASE_NAMES: [&'static str; 10] = [
        "to_be_created",
        "creating",
        "stopped",
        "starting",
        "idle",
        "active",
        "degraded",
        "stopping",
        "removing",
        "removed",
    ];

    /// The degradation reason, if degraded.
    pub fn reason(&self) -> Option<&str> {
        match self {
            State::Degraded { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Whether the component is up and serving (`idle`, `active` or `degraded`).
    pub fn is_running(&self) -> bool {
        matches!(self, State::Idle | State::Active | State::Degraded { .. })
    }

    /// Whether the component is healthy (`idle` or `active`).
    pub fn is_healthy(&self) -> bool {
        matches!(self, State::Idle | State::Active)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Derives a composite component's state from its parts, given in priority order
/// (e.g. `[("connection", ..), ("flow", ..)]`).
///
/// The first rule that matches wins: any part stopping → `stopping`; any part starting →
/// `starting_<first such part>`; any part degraded → `degraded_<first such part>` with
/// `"<part> degraded: <reason>"`; all parts stopped → `stopped`; any part active → `active`;
/// all parts removed → `removed`; otherwise `idle`.
pub fn aggregate<'a, I>(parts: I) -> State
where
    I: IntoIterator<Item = (&'a str, &'a State)>,
{
    let parts: Vec<(&str, &State)> = parts.into_iter().collect();
    if parts.is_empty() {
        return State::Stopped;
    }
    if parts
        .iter()
        .any(|(_, s)| matches!(s, State::Stopping | State::Removing))
    {
        return State::Stopping;
    }
    if let Some((name, _)) = parts.iter().find(|(_, s)| {
        matches!(
            s,
            State::Starting { .. } | State::Creating | State::ToBeCreated
        )
    }) {
        return State::Starting {
            phase: Some((*name).to_owned()),
        };
    }
    if let Some((name, s)) = parts
        .iter()
        .find(|(_, s)| matches!(s, State::Degraded { .. }))
    {
        let reason = s.reason().unwrap_or_default();
        return State::Degraded {
            facet: Some((*name).to_owned()),
            reason: format!("{name} degraded: {reason}"),
        };
    }
    if parts.iter().all(|(_, s)| matches!(s, State::Removed)) {
        return State::Removed;
    }
    if parts
        .iter()
        .any(|(_, s)| matches!(s, State::Stopped | State::Removed))
    {
        // Some parts run and some do not: the composite cannot serve.
        if parts
            .iter()
            .all(|(_, s)| matches!(s, State::Stopped | State::Removed))
        {
            return State::Stopped;
        }
        let (name, _) = parts
            .iter()
            .find(|(_, s)| matches!(s, State::Stopped | State::Removed))
            .expect("some part is stopped or removed");
        return State::Degraded {
            facet: Some((*name).to_owned()),
            reason: format!("{name} degraded: not running"),
        };
    }
    if parts.iter().any(|(_, s)| matches!(s, State::Active)) {
        return State::Active;
    }
    State::Idle
}

/// A state machine with the idle/active window: feed it events, data and clock ticks.
///
/// Time comes from `tokio::time::Instant`, so tests can drive it with paused time.
#[derive(Debug, Clone)]
pub struct Fsm {
    state: State,
    idle_window: Duration,
    last_data: Option<Instant>,
}

impl Fsm {
    /// A machine in `to_be_created` with the given idle window.
    pub fn new(idle_window: Duration) -> Self {
        Self {
            state: State::ToBeCreated,
            idle_window,
            last_data: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The configured idle window.
    pub fn idle_window(&self) -> Duration {
        self.idle_window
    }

    /// Applies `event`. Returns `Ok(true)` when the state changed.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the event is not accepted; the state is unchanged.
    pub fn apply(&mut self, event: Event) -> Result<bool, IllegalTransition> {
        if event == Event::DataReceived {
            self.last_data = Some(Instant::now());
        }
        let next = self.state.next(&event)?;
        let changed = next != self.state;
        self.state = next;
        Ok(changed)
    }

    /// Records that data arrived: `idle -> active`. Outside running states it only records the
    /// time. Returns whether the state changed.
    pub fn record_data(&mut self) -> bool {
        self.last_data = Some(Instant::now());
        if matches!(self.state, State::Idle) {
            self.state = State::Active;
            return true;
        }
        false
    }

    /// Checks the idle window: `active -> idle` once no data arrived for the window.
    /// Call it periodically (a component's tick). Returns whether the state changed.
    pub fn tick(&mut self) -> bool {
        if !matches!(self.state, State::Active) {
            return false;
        }
        let quiet = self
            .last_data
            .is_none_or(|t| t.elapsed() >= self.idle_window);
        if quiet {
            self.state = State::Idle;
        }
        quiet
    }
}

/// A component's handle on its own state: an [`Fsm`] whose every change is reported to the
/// node's [`StatusBoard`] under the component's id.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    id: String,
    fsm: Fsm,
    board: StatusBoard,
}

impl Lifecycle {
    /// Registers `id` (of the given `kind`, e.g. `"sim"`) on the board in `to_be_created`.
    pub fn register(
        board: &StatusBoard,
        id: impl Into<String>,
        kind: &str,
        idle_window: Duration,
    ) -> Self {
        let id = id.into();
        board.register(&id, kind);
        Self {
            id,
            fsm: Fsm::new(idle_window),
            board: board.clone(),
        }
    }

    /// The component id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current state.
    pub fn state(&self) -> &State {
        self.fsm.state()
    }

    /// Applies `event` and publishes the change.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the event is not accepted; nothing is published.
    pub fn apply(&mut self, event: Event) -> Result<(), IllegalTransition> {
        if self.fsm.apply(event)? {
            self.board.set_state(&self.id, self.fsm.state().clone());
        }
        Ok(())
    }

    /// Puts the machine back in `stopped`, whatever it was in, and publishes it. An actor
    /// calls this when it (re)starts, since a crashed incarnation left its last state behind.
    pub fn reset_to_stopped(&mut self) {
        self.fsm = Fsm {
            state: State::Stopped,
            last_data: None,
            ..self.fsm.clone()
        };
        self.board.set_state(&self.id, State::Stopped);
    }

    /// Records data (`idle -> active`), publishing a change.
    pub fn record_data(&mut self) {
        if self.fsm.record_data() {
            self.board.set_state(&self.id, self.fsm.state().clone());
        }
    }

    /// Checks the idle window, publishing a change.
    pub fn tick(&mut self) {
        if self.fsm.tick() {
            self.board.set_state(&self.id, self.fsm.state().clone());
        }
    }

    /// Records an error message as the component's last error (it does not change state).
    pub fn record_error(&self, error: impl fmt::Display) {
        self.board.record_error(&self.id, error.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> Fsm {
        let mut f = Fsm::new(Duration::from_secs(30));
        for e in [
            Event::Create,
            Event::Created,
            Event::Start,
            Event::StartDone,
        ] {
            f.apply(e).unwrap();
        }
        assert_eq!(f.state(), &State::Idle);
        f
    }

    #[test]
    fn full_lifecycle_walks_every_state() {
        let mut f = running();
        f.apply(Event::DataReceived).unwrap();
        assert_eq!(f.state(), &State::Active);
        f.apply(Event::Degrade {
            facet: Some("connection".into()),
            reason: "probe timeout".into(),
        })
        .unwrap();
        assert_eq!(f.state().name(), "degraded_connection");
        assert_eq!(f.state().reason(), Some("probe timeout"));
        f.apply(Event::Recovered).unwrap();
        assert_eq!(f.state(), &State::Idle);
        f.apply(Event::Stop).unwrap();
        f.apply(Event::StopDone).unwrap();
        f.apply(Event::Remove).unwrap();
        f.apply(Event::RemoveDone).unwrap();
        assert_eq!(f.state(), &State::Removed);
    }

    #[test]
    fn illegal_transitions_are_rejected_and_leave_state_unchanged() {
        let mut f = Fsm::new(DEFAULT_IDLE_WINDOW);
        let err = f.apply(Event::DataReceived).unwrap_err();
        assert_eq!(err.from, State::ToBeCreated);
        assert_eq!(f.state(), &State::ToBeCreated);

        let mut f = running();
        assert!(f.apply(Event::StartDone).is_err());
        assert!(f.apply(Event::Recovered).is_err());
        assert!(
            f.apply(Event::Remove).is_err(),
            "a running component must stop before removal"
        );
        assert_eq!(f.state(), &State::Idle);
    }

    #[test]
    fn start_failure_returns_to_stopped_and_phases_are_named() {
        let mut f = Fsm::new(DEFAULT_IDLE_WINDOW);
        for e in [Event::Create, Event::Created, Event::Start] {
            f.apply(e).unwrap();
        }
        f.apply(Event::StartPhase("connection".into())).unwrap();
        assert_eq!(f.state().name(), "starting_connection");
        f.apply(Event::StartFailed("refused".into())).unwrap();
        assert_eq!(f.state(), &State::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn active_falls_back_to_idle_after_the_window_only() {
        let mut f = Fsm::new(Duration::from_secs(30));
        for e in [
            Event::Create,
            Event::Created,
            Event::Start,
            Event::StartDone,
        ] {
            f.apply(e).unwrap();
        }
        assert!(f.record_data());
        assert_eq!(f.state(), &State::Active);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!f.tick());
        assert_eq!(f.state(), &State::Active);
        f.record_data();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!f.tick(), "new data restarts the window");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(f.tick());
        assert_eq!(f.state(), &State::Idle);
    }

    #[test]
    fn aggregate_follows_priority_rules() {
        let deg = State::Degraded {
            facet: None,
            reason: "probe timeout".into(),
        };
        let starting = State::Starting { phase: None };
        assert_eq!(
            aggregate([("connection", &starting), ("flow", &State::Stopped)]).name(),
            "starting_connection"
        );
        let s = aggregate([("connection", &deg), ("flow", &State::Active)]);
        assert_eq!(s.name(), "degraded_connection");
        assert_eq!(s.reason(), Some("connection degraded: probe timeout"));
        assert_eq!(
            aggregate([("connection", &State::Idle), ("flow", &State::Active)]),
            State::Active
        );
        assert_eq!(
            aggregate([("connection", &State::Idle), ("flow", &State::Idle)]),
            State::Idle
        );
        assert_eq!(
            aggregate([("connection", &State::Stopped), ("flow", &State::Stopped)]),
            State::Stopped
        );
        assert_eq!(
            aggregate([("connection", &State::Idle), ("flow", &State::Stopped)]).name(),
            "degraded_flow"
        );
        assert_eq!(
            aggregate([("connection", &State::Stopping), ("flow", &deg)]),
            State::Stopping
        );
        // The part that is gone is named, not the healthy one.
        assert_eq!(
            aggregate([("connection", &State::Idle), ("flow", &State::Removed)]).name(),
            "degraded_flow"
        );
    }

    #[test]
    fn state_serializes_with_its_tag() {
        let s = State::Degraded {
            facet: Some("connection".into()),
            reason: "x".into(),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["state"], "degraded");
        assert_eq!(v["facet"], "connection");
        assert_eq!(serde_json::from_value::<State>(v).unwrap(), s);
    }
}
