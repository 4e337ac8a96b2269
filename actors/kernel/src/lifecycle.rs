//! Component state: the lifecycle state machine every managed component shares (after UMH
//! Core), and the one board that owns every component's state on a node.
//!
//! A component moves through *lifecycle* states (`to_be_created`, `creating`, `removing`,
//! `removed`) around its *operational* states (`stopped`, `starting`, `idle`, `active`,
//! `degraded`, `stopping`, and `finished` for one that ran to its end). `idle` means healthy
//! with no data for the idle window (30 s by default); `active` means data is flowing;
//! `degraded` always carries a reason.
//!
//! - [`table`]: [`State`], [`Event`] and [`State::next`], the single source of truth for what
//!   is legal; [`aggregate`] for composites;
//! - [`board`]: the [`StatusBoard`], the one owner of every component's state; its state
//!   changes only through [`StatusBoard::apply`], which runs the table;
//! - [`handle`]: [`Lifecycle`], a component's handle on its own entry;
//! - [`busy`]: [`BusyMark`], how long a component has been inside one handler, which the
//!   watchdog reads in one sweep instead of pinging every component;
//! - [`observation`]: what outside judges (the watchdog; any monitor that judges a component
//!   from outside) record beside the state, and the one rule that folds both into [`Health`].
//!
//! Dependencies inside the module point one way: `handle -> board -> {table, observation}`.

pub mod board;
pub mod busy;
pub mod handle;
pub mod observation;
pub mod table;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use board::{ComponentStatus, StateChange, StatusBoard};
pub use busy::BusyMark;
pub use handle::Lifecycle;
pub use observation::{Health, Observation};
pub use table::{Event, IllegalTransition, State, aggregate};

/// The default idle window: a healthy component with no data for this long is `idle`.
pub const DEFAULT_IDLE_WINDOW: Duration = Duration::from_secs(30);
