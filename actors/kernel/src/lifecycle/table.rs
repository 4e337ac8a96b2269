//! The transition table: every [`State`], every [`Event`], and [`State::next`], the one
//! function that says which event is legal in which state and where it leads.
//!
//! Composite components (a supervisor and its children, a connector's connection and flow)
//! show the [`aggregate`] of their parts, which yields states such as `starting_connection`
//! or `degraded_connection`.

use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// Ran to its end (a source that reached the end of its input): healthy, not restarted,
    /// and not counted against its supervisor's health.
    Finished,
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
    /// The component ran to its end (`starting|idle|active|degraded|stopping -> finished`).
    Finish,
    /// The component's actor ended without stopping in order (a crash, a kill), recorded by
    /// its supervisor (`starting|idle|active|degraded|stopping -> stopped`; a no-op in
    /// `stopped` and `finished`).
    Exited,
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
            (
                S::Starting { .. } | S::Idle | S::Active | S::Degraded { .. } | S::Stopping,
                Event::Finish,
            ) => S::Finished,
            (
                S::Starting { .. } | S::Idle | S::Active | S::Degraded { .. } | S::Stopping,
                Event::Exited,
            ) => S::Stopped,
            (S::Stopped | S::Finished, Event::Exited) => self.clone(),
            (S::Finished, Event::Start) => S::Starting { phase: None },
            (S::Stopped | S::Finished | S::ToBeCreated, Event::Remove) => S::Removing,
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
            State::Finished => "finished",
            State::Removing => "removing",
            State::Removed => "removed",
        }
    }

    /// Every base name, in lifecycle order (for exporting one gauge per state).
    pub const BASE_NAMES: [&'static str; 11] = [
        "to_be_created",
        "creating",
        "stopped",
        "starting",
        "idle",
        "active",
        "degraded",
        "stopping",
        "finished",
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

    /// Whether the component is healthy (`idle`, `active`, or `finished`: it ran to its end).
    pub fn is_healthy(&self) -> bool {
        matches!(self, State::Idle | State::Active | State::Finished)
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
/// all parts removed → `removed`; otherwise `idle`. Parts that are `finished` are left out
/// (all of them finished → `finished`).
pub fn aggregate<'a, I>(parts: I) -> State
where
    I: IntoIterator<Item = (&'a str, &'a State)>,
{
    let all: Vec<(&str, &State)> = parts.into_iter().collect();
    if all.is_empty() {
        return State::Stopped;
    }
    // A part that ran to its end says nothing about the whole's health.
    let parts: Vec<(&str, &State)> = all
        .iter()
        .copied()
        .filter(|(_, s)| !matches!(s, State::Finished))
        .collect();
    if parts.is_empty() {
        return State::Finished;
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
