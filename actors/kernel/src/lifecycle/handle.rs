//! [`Lifecycle`]: a component's handle on its own entry of the [`StatusBoard`].

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::board::StatusBoard;
use super::table::{Event, IllegalTransition, State};

/// A component's handle on its own state: every change goes to the board through the
/// transition table; the handle keeps only a copy of the last state the board returned (so
/// the hot path, data arriving while `active`, costs no lock) and the time of the last data
/// for the idle window.
///
/// Time comes from `tokio::time::Instant`, so tests can drive the idle window with paused
/// time.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    id: String,
    board: StatusBoard,
    state: State,
    idle_window: Duration,
    last_data: Option<Instant>,
}

impl Lifecycle {
    /// Registers `id` (of the given `kind`, e.g. `"connector"`) and brings it to `stopped`
    /// through the table, ready for [`Event::Start`]: a new component goes `to_be_created ->
    /// creating -> stopped`; one whose earlier incarnation ended without recording it (its
    /// supervisor had not yet) goes through [`Event::Exited`]; a `stopped` or `finished` one
    /// stays as it is. The entry keeps its restarts and errors across incarnations.
    pub fn begin(
        board: &StatusBoard,
        id: impl Into<String>,
        kind: &str,
        idle_window: Duration,
    ) -> Self {
        let id = id.into();
        board.register(&id, kind);
        let mut this = Self {
            state: board.fsm_state(&id).unwrap_or(State::ToBeCreated),
            id,
            board: board.clone(),
            idle_window,
            last_data: None,
        };
        let events: &[Event] = match this.state {
            State::ToBeCreated => &[Event::Create, Event::Created],
            State::Creating => &[Event::Created],
            State::Starting { .. }
            | State::Idle
            | State::Active
            | State::Degraded { .. }
            | State::Stopping => &[Event::Exited],
            _ => &[],
        };
        for event in events {
            let _ = this.apply(event.clone());
        }
        this
    }

    /// The component id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current state (as the board last returned it).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The board this handle writes to.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// Applies `event` through the board's table.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the table rejects it; nothing changes.
    pub fn apply(&mut self, event: Event) -> Result<(), IllegalTransition> {
        if event == Event::DataReceived {
            self.last_data = Some(Instant::now());
        }
        self.state = self.board.apply(&self.id, event)?;
        Ok(())
    }

    /// Records that data arrived: `idle -> active`; in other states it only records the time.
    pub fn record_data(&mut self) {
        self.last_data = Some(Instant::now());
        if matches!(self.state, State::Idle) {
            let _ = self.apply(Event::DataReceived);
        }
    }

    /// When the idle window since the last data ends, while the component is `active`
    /// (`None` otherwise): when [`tick`](Self::tick) would move it to `idle` if no data came.
    pub fn idle_due(&self) -> Option<Instant> {
        if !matches!(self.state, State::Active) {
            return None;
        }
        self.last_data.map(|t| t + self.idle_window)
    }

    /// Checks the idle window: `active -> idle` once no data arrived for the window. Call it
    /// from the component's own tick.
    pub fn tick(&mut self) {
        if !matches!(self.state, State::Active) {
            return;
        }
        let quiet = self
            .last_data
            .is_none_or(|t| t.elapsed() >= self.idle_window);
        if quiet {
            let _ = self.apply(Event::NoDataTimeout);
        }
    }

    /// Records an error message as the component's last error (it does not change state).
    pub fn record_error(&self, error: impl fmt::Display) {
        self.board.record_error(&self.id, error.to_string());
    }
}
