//! Simulated machines: data sources with controllable health, for the demo and for tests.
//!
//! A [`Sim`] actor produces one changing value per tag every `interval` and publishes each as
//! an [`Envelope`] on `<prefix>.ev.<machine>.<tag>` through an [`EventSink`] (the bus today,
//! the broker later). Its [`Lifecycle`] shows on the node's status board: `idle` after start,
//! `active` while it publishes, back to `idle` when paused for the idle window, `degraded`
//! (with a reason) when told so or when a publish fails.
//!
//! It can act out faults, on a schedule from its [`SimSpec`] or on a [`SimCommand`]:
//! - **fail**: panic in its handler; ractor turns the panic into a failure and the supervisor
//!   restarts it;
//! - **hang**: stop answering its mailbox for `hang_for` (a watchdog's [`ping`] times out);
//! - **degrade** / **recover**: enter `degraded` with a reason, and leave it;
//! - **pause** / **resume**: stop and restart producing data (it turns `idle`).
//!
//! Its clock is `tokio::time`, so tests drive schedules with paused time.

mod values;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use millwright_plugin_sdk::event::Envelope;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::lifecycle::{Event, Lifecycle, State};
use crate::status::StatusBoard;

/// Where a sim's events go: the bus, or later the broker. Implementations must not block for
/// long; a slow sink slows only the sim that uses it.
pub trait EventSink: Send + Sync + 'static {
    /// Publishes one event.
    ///
    /// # Errors
    /// A description of why the event was not accepted.
    fn publish(&self, event: Envelope) -> BoxFuture<'_, Result<(), String>>;
}

/// The bus is a sink: events go straight to it (until the broker owns every publish).
impl EventSink for crate::bus::Bus {
    fn publish(&self, event: Envelope) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.publish_envelope(&event)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// One simulated machine's settings (the runtime builds it from `[sims.<name>]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimSpec {
    /// The machine's name: the event source and the `<connector>` token of its subjects.
    pub name: String,
    /// Time between two samples of every tag.
    pub interval: Duration,
    /// The tags, each with its full subject (`mw.ev.press1.temperature`).
    pub tags: Vec<(String, String)>,
    /// A healthy machine without data for this long turns `idle`.
    pub idle_window: Duration,
    /// Faults it acts out on its own.
    pub schedule: FaultSchedule,
}

/// Faults a sim acts out on a timer, measured from each (re)start.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultSchedule {
    /// Panic after running this long (so once per incarnation, every time).
    pub fail_every: Option<Duration>,
    /// Hang once after running this long.
    pub hang_after: Option<Duration>,
    /// How long a hang lasts (scheduled or commanded).
    pub hang_for: Duration,
    /// Degrade every this long ...
    pub degrade_every: Option<Duration>,
    /// ... for this long.
    pub degrade_for: Duration,
}

/// What a sim can be told to do at runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimCommand {
    /// Panic (the supervisor restarts it).
    Fail,
    /// Stop answering for the spec's `hang_for`.
    Hang,
    /// Enter `degraded` until told to recover.
    Degrade,
    /// Leave `degraded`.
    Recover,
    /// Stop producing data.
    Pause,
    /// Produce data again.
    Resume,
}

impl SimCommand {
    /// Every command, in documentation order.
    pub const ALL: [SimCommand; 6] = [
        SimCommand::Fail,
        SimCommand::Hang,
        SimCommand::Degrade,
        SimCommand::Recover,
        SimCommand::Pause,
        SimCommand::Resume,
    ];

    /// The command's name (`fail`, `hang`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            SimCommand::Fail => "fail",
            SimCommand::Hang => "hang",
            SimCommand::Degrade => "degrade",
            SimCommand::Recover => "recover",
            SimCommand::Pause => "pause",
            SimCommand::Resume => "resume",
        }
    }
}

impl fmt::Display for SimCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a sim command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sim command {0:?} (expected fail, hang, degrade, recover, pause or resume)")]
pub struct UnknownCommand(pub String);

impl FromStr for SimCommand {
    type Err = UnknownCommand;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SimCommand::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCommand(s.to_owned()))
    }
}

/// What a [`Sim`] understands.
#[derive(Debug)]
pub enum SimMsg {
    /// Time for the next sample (sent by the sim's own timer).
    Tick,
    /// Act out a command.
    Command(SimCommand),
    /// Answer with the current state (a liveness probe: a hung sim does not answer).
    Ping(RpcReplyPort<State>),
}

/// The simulated machine actor. Spawn it under a supervisor with [`SimArgs`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Sim;

/// What a sim starts with (cloned for every incarnation).
#[derive(Clone)]
pub struct SimArgs {
    /// Its settings.
    pub spec: Arc<SimSpec>,
    /// Its id on the status board (the supervisor's child name, e.g. `demo/sims/press1`).
    pub component_id: String,
    /// The node's status board.
    pub board: StatusBoard,
    /// Where its events go.
    pub sink: Arc<dyn EventSink>,
}

impl fmt::Debug for SimArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimArgs")
            .field("spec", &self.spec)
            .field("component_id", &self.component_id)
            .finish_non_exhaustive()
    }
}

/// A sim's running state (opaque).
pub struct SimState {
    args: SimArgs,
    lifecycle: Lifecycle,
    started: Instant,
    seq: u64,
    paused: bool,
    hung_once: bool,
    /// Why it is degraded, if it is.
    degraded: Option<Degradation>,
    next_scheduled_degrade: Option<Instant>,
}

impl fmt::Debug for SimState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimState")
            .field("component_id", &self.args.component_id)
            .field("state", self.lifecycle.state())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Degradation {
    /// Until this instant (a scheduled degradation).
    Scheduled(Instant),
    /// Until a `recover` command.
    Commanded,
    /// Until a publish succeeds again.
    Publish,
}

impl Actor for Sim {
    type Msg = SimMsg;
    type State = SimState;
    type Arguments = SimArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SimMsg>,
        args: SimArgs,
    ) -> Result<SimState, ActorProcessingErr> {
        let spec = args.spec.clone();
        let mut lifecycle = Lifecycle::register(
            &args.board,
            args.component_id.clone(),
            "sim",
            spec.idle_window,
        );
        for event in [
            Event::Create,
            Event::Created,
            Event::Start,
            Event::StartDone,
        ] {
            lifecycle.apply(event)?;
        }
        ractor::time::send_interval(spec.interval, myself.get_cell(), || SimMsg::Tick);
        let now = Instant::now();
        tracing::info!(component = %args.component_id, tags = spec.tags.len(), interval = ?spec.interval, "sim started");
        Ok(SimState {
            next_scheduled_degrade: spec.schedule.degrade_every.map(|d| now + d),
            args,
            lifecycle,
            started: now,
            seq: 0,
            paused: false,
            hung_once: false,
            degraded: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SimMsg>,
        state: &mut SimState,
    ) -> Result<(), ActorProcessingErr> {
        // A stop (not a crash) walks the FSM to `stopped`; a crash leaves its last state for
        // the supervisor to overwrite.
        if state.lifecycle.apply(Event::Stop).is_ok() {
            let _ = state.lifecycle.apply(Event::StopDone);
        }
        tracing::info!(component = %state.args.component_id, "sim stopped");
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SimMsg>,
        msg: SimMsg,
        state: &mut SimState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SimMsg::Tick => state.tick().await,
            SimMsg::Command(command) => state.command(command).await,
            SimMsg::Ping(reply) => {
                let _ = reply.send(state.lifecycle.state().clone());
            }
        }
        Ok(())
    }
}

impl SimState {
    async fn tick(&mut self) {
        let schedule = self.args.spec.schedule.clone();
        let up = self.started.elapsed();
        if let Some(every) = schedule.fail_every
            && up >= every
        {
            self.fault("fail");
            panic!(
                "simulated failure of {}: scheduled after {}",
                self.args.spec.name,
                humanize(every)
            );
        }
        if let Some(after) = schedule.hang_after
            && !self.hung_once
            && up >= after
        {
            self.hung_once = true;
            self.hang("scheduled").await;
        }
        self.scheduled_degradation();
        if self.paused {
            self.lifecycle.tick();
            return;
        }
        self.publish_sample().await;
        self.lifecycle.tick();
    }

    fn scheduled_degradation(&mut self) {
        let spec = self.args.spec.clone();
        let schedule = &spec.schedule;
        let now = Instant::now();
        if let Some(Degradation::Scheduled(until)) = self.degraded
            && now >= until
        {
            self.recover();
        }
        let (Some(due), Some(every)) = (self.next_scheduled_degrade, schedule.degrade_every) else {
            return;
        };
        if now < due {
            return;
        }
        self.next_scheduled_degrade = Some(due + every);
        if self.degraded.is_none() {
            let reason = format!(
                "simulated degradation: scheduled every {} for {}",
                humanize(every),
                humanize(schedule.degrade_for)
            );
            self.degrade(Degradation::Scheduled(now + schedule.degrade_for), reason);
        }
    }

    async fn publish_sample(&mut self) {
        self.seq += 1;
        let spec = self.args.spec.clone();
        let t = self.started.elapsed().as_secs_f64();
        let source_time = chrono::Utc::now();
        let mut failure = None;
        for (tag, subject) in &spec.tags {
            let value = values::sample(&spec.name, tag, t, self.seq);
            let event = Envelope::new(spec.name.clone(), subject.clone(), serde_json::json!(value))
                .with_source_time(source_time);
            let begun = std::time::Instant::now();
            let result = self.args.sink.publish(event).await;
            metrics::histogram!("mw_publish_duration_seconds", "source" => spec.name.clone())
                .record(begun.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    metrics::counter!("mw_events_published_total", "source" => spec.name.clone())
                        .increment(1);
                }
                Err(e) => {
                    metrics::counter!("mw_publish_errors_total", "source" => spec.name.clone())
                        .increment(1);
                    failure = Some(e);
                }
            }
        }
        match failure {
            None => {
                if self.degraded == Some(Degradation::Publish) {
                    self.recover();
                }
                self.lifecycle.record_data();
            }
            Some(e) => {
                tracing::warn!(component = %self.args.component_id, error = %e, "sim could not publish");
                if self.degraded.is_none() {
                    self.degrade(Degradation::Publish, format!("publish failed: {e}"));
                }
            }
        }
    }

    async fn command(&mut self, command: SimCommand) {
        tracing::info!(component = %self.args.component_id, %command, "sim command");
        match command {
            SimCommand::Fail => {
                self.fault("fail");
                panic!("simulated failure of {}: commanded", self.args.spec.name);
            }
            SimCommand::Hang => self.hang("commanded").await,
            SimCommand::Degrade => {
                self.degrade(
                    Degradation::Commanded,
                    "simulated degradation: commanded".to_owned(),
                );
            }
            SimCommand::Recover => self.recover(),
            SimCommand::Pause => self.paused = true,
            SimCommand::Resume => self.paused = false,
        }
    }

    fn degrade(&mut self, cause: Degradation, reason: String) {
        self.fault("degrade");
        let event = Event::Degrade {
            facet: None,
            reason,
        };
        if self.lifecycle.apply(event).is_ok() {
            self.degraded = Some(cause);
        }
    }

    fn recover(&mut self) {
        if self.degraded.take().is_some() {
            let _ = self.lifecycle.apply(Event::Recovered);
        }
    }

    async fn hang(&mut self, why: &str) {
        let d = self.args.spec.schedule.hang_for;
        self.fault("hang");
        tracing::warn!(component = %self.args.component_id, duration = %humanize(d), "sim hangs ({why})");
        tokio::time::sleep(d).await;
        tracing::info!(component = %self.args.component_id, "sim answers again");
    }

    fn fault(&self, fault: &'static str) {
        metrics::counter!("mw_sim_faults_total", "machine" => self.args.spec.name.clone(), "fault" => fault)
            .increment(1);
    }
}

/// `1s`, `250ms`: whole milliseconds, shortest form.
fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Why a sim could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No sim is registered under this name (unknown, or between a crash and its restart).
    #[error("sim {0}: not running (unknown machine, or restarting)")]
    NotRunning(String),
    /// The sim did not answer in time.
    #[error("sim {name}: no answer within {}", humanize(*timeout))]
    Timeout {
        /// The registry name.
        name: String,
        /// The time waited.
        timeout: Duration,
    },
}

fn lookup(registry_name: &str) -> Result<ActorRef<SimMsg>, SimError> {
    ractor::registry::where_is(registry_name)
        .map(ActorRef::<SimMsg>::from)
        .ok_or_else(|| SimError::NotRunning(registry_name.to_owned()))
}

/// Sends `command` to the sim registered as `registry_name` (its component id).
///
/// # Errors
/// [`SimError::NotRunning`] when no such sim runs.
///
/// # Panics
/// Never.
///
/// # Cancel safety
/// Cancel safe: the message is sent before the first await point returns.
pub async fn command(registry_name: &str, command: SimCommand) -> Result<(), SimError> {
    lookup(registry_name)?
        .cast(SimMsg::Command(command))
        .map_err(|_| SimError::NotRunning(registry_name.to_owned()))
}

/// Asks the sim registered as `registry_name` for its state, waiting at most `timeout`.
///
/// # Errors
/// [`SimError::NotRunning`] when no such sim runs, [`SimError::Timeout`] when it does not
/// answer in time (it hangs).
///
/// # Panics
/// Never.
///
/// # Cancel safety
/// Cancel safe: an unanswered ping is simply dropped.
pub async fn ping(registry_name: &str, timeout: Duration) -> Result<State, SimError> {
    let sim = lookup(registry_name)?;
    match sim.call(SimMsg::Ping, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(state)) => Ok(state),
        Ok(ractor::rpc::CallResult::Timeout) => Err(SimError::Timeout {
            name: registry_name.to_owned(),
            timeout,
        }),
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
            Err(SimError::NotRunning(registry_name.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests;
