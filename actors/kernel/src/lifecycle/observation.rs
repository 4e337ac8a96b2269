//! Observations: what an outside judge says about a component, beside its own state.
//!
//! A component's [`State`] is written only through the transition table, by the component
//! and its supervisor. Others who judge it from outside (the node's liveness watchdog; machine
//! monitors, the host monitor and cluster fencing) do not touch that state: they record an
//! [`Observation`] (`not answering: no reply to a liveness ping within 5s`, from `watchdog`,
//! since 12:00:01) and clear it when it no longer holds. Each source holds at most one
//! observation per component.
//!
//! The component's [`Health`] folds both together by one rule ([`Health::fold`]):
//!
//! | FSM state | observations | health |
//! |---|---|---|
//! | `idle`, `active`, `finished` | none | `healthy` |
//! | `idle`, `active` | at least one | `degraded` |
//! | `degraded` | any | `degraded` |
//! | any other (`starting`, `stopped`, ...) | any | `down` |
//!
//! A supervisor folds its children the same way: a child with an observation counts as
//! `degraded` (with the observation as the reason) in the supervisor's aggregate state.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::table::State;

/// One outside judge's finding about a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// Who observed it (`watchdog`): one observation per source and component.
    pub source: String,
    /// What was observed, for an operator: `not answering: no reply to a liveness ping
    /// within 5s`.
    pub condition: String,
    /// Since when it holds.
    pub since: DateTime<Utc>,
}

impl Observation {
    /// An observation by `source` that holds from now.
    pub fn new(source: impl Into<String>, condition: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            condition: condition.into(),
            since: Utc::now(),
        }
    }
}

/// A component's health: its FSM state and its observations folded by one rule (see the
/// module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Running (or finished) and nobody observes a problem.
    Healthy,
    /// Running, but degraded by its own account or by an outside judge's.
    Degraded,
    /// Not running: starting, stopping, stopped or not yet created.
    Down,
}

impl Health {
    /// The rule: see the table in the module docs.
    pub fn fold(state: &State, observations: &[Observation]) -> Self {
        match state {
            State::Finished => Self::Healthy,
            State::Idle | State::Active if observations.is_empty() => Self::Healthy,
            State::Idle | State::Active | State::Degraded { .. } => Self::Degraded,
            _ => Self::Down,
        }
    }

    /// The name shown on health, metrics and the bus.
    pub fn name(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fold_rule_matches_its_table() {
        let seen = [Observation::new("watchdog", "not answering")];
        let degraded = State::Degraded {
            facet: None,
            reason: "x".into(),
        };
        for (state, observations, health) in [
            (State::Idle, &[][..], Health::Healthy),
            (State::Active, &[][..], Health::Healthy),
            (State::Finished, &seen[..], Health::Healthy),
            (State::Idle, &seen[..], Health::Degraded),
            (State::Active, &seen[..], Health::Degraded),
            (degraded.clone(), &[][..], Health::Degraded),
            (degraded, &seen[..], Health::Degraded),
            (State::Starting { phase: None }, &[][..], Health::Down),
            (State::Stopped, &seen[..], Health::Down),
            (State::ToBeCreated, &[][..], Health::Down),
        ] {
            assert_eq!(Health::fold(&state, observations), health, "{state}");
        }
    }
}
