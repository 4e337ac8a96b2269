//! `sim`: simulated machines as a source plugin, for the demo, the tests and the benchmarks.
//!
//! Each instance is one machine: every `interval` it emits one sample per configured tag on
//! `<prefix>.ev.<instance>.<tag>` (a slow sine wave around a base value, with a little noise),
//! and acts out faults on a schedule from its [`SimConfig`] or on request:
//!
//! | fault | schedule | what the host sees |
//! |---|---|---|
//! | crash | `fail_every` after each start, or the `fail` call | `read_batch` fails `Fatal`: the supervisor restarts the instance |
//! | connection loss | `degrade_every`, for `degrade_for`, or the `degrade` call | reads and connects fail `NotConnected`: `degraded_connection`, backoff, recovery |
//! | hang | once, `hang_after` after start, for `hang_for`, or the `hang` call | the instance answers nothing (its reads produce nothing, calls and health checks wait): the node's next request to it (a call, a write, the health check when its data stops, a pause) gives up after the instance's `call_timeout` and restarts it |
//!
//! With `maintenance_every` it also asks for maintenance now and then: a work-order request on
//! `<prefix>.ev.<instance>.maintenance_request`, which a `cmms-http` sink turns into a work
//! order (or, in sandbox mode, a "would have written" record).
//!
//! Calls ([`Responder`]): `fail`, `degrade` (`{"for": "5s"}`, optional), `hang`
//! (`{"for": "5s"}`, optional), `recover` (ends a connection loss or a pending hang) and
//! `status`. On a node: `mw.rpc.<instance>.<method>` on the bus, or
//! `POST /connectors/<instance>/call/<method>`.
//!
//! A batch not acknowledged is returned again by the next read (at-least-once). `interval = "0s"`
//! makes every read return a full batch at once, which is what the plugin benchmarks read.
//!
//! The crate is also an example of one plugin built as a `cdylib` (`export_plugin!`, loaded
//! in process) and as an executable (`src/main.rs`, `stdio::serve`) from the same code.

pub mod config;
pub mod values;

use std::time::Duration;

use millwright_plugin_sdk::prelude::*;
use millwright_plugin_sdk::{export_plugin, plugin_vtable};
use tokio::time::Instant;

pub use config::SimConfig;

/// A simulated machine.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    started: Instant,
    /// When the next round of samples is due.
    next_due: Instant,
    /// Samples emitted so far (also the source of the noise).
    seq: u64,
    /// Batches handed out so far (their ack tokens).
    batches: u64,
    /// The last batch, until it is acknowledged.
    unacked: Option<SourceBatch>,
    /// A connection loss asked for by a call, until then.
    degraded_until: Option<Instant>,
    /// A crash asked for by a call.
    fail_next: bool,
    /// A hang asked for by a call (or the scheduled one, once due), and its length.
    hang_next: Option<Duration>,
    /// The hang in progress: until then the instance answers nothing (reads wait, calls and
    /// health checks wait too, so the node's call timeout gives up on them).
    hung_until: Option<Instant>,
    scheduled_hang_done: bool,
    /// When the next maintenance request is due.
    next_maintenance: Option<Instant>,
    maintenance_requests: u64,
}

/// Rounds more than this far behind are skipped, not caught up (after a hang, say).
const MAX_BACKLOG_ROUNDS: u32 = 10;

impl Plugin for Sim {
    type Config = SimConfig;
    const ID: &'static str = "sim";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "simulated machines: changing values, and crashes, connection losses and hangs on request";

    fn new(config: SimConfig, _ctx: &Context) -> Result<Self, ConnectorError> {
        config.check()?;
        let now = Instant::now();
        Ok(Sim {
            started: now,
            next_due: now,
            seq: 0,
            batches: 0,
            unacked: None,
            degraded_until: None,
            fail_next: false,
            hang_next: None,
            hung_until: None,
            scheduled_hang_done: false,
            next_maintenance: config.maintenance_every.map(|d| now + d),
            maintenance_requests: 0,
            config,
        })
    }
}

impl Sim {
    /// Waits out the hang in progress, if any.
    async fn hang(&mut self) {
        if let Some(until) = self.hung_until {
            tokio::time::sleep_until(until).await;
            self.hung_until = None;
        }
    }

    /// Why the machine is "unreachable" right now, if it is.
    fn connection_loss(&self, now: Instant) -> Option<String> {
        if self.degraded_until.is_some_and(|until| now < until) {
            return Some("simulated connection loss (asked for by a call)".to_owned());
        }
        let every = self.config.degrade_every?;
        let t = now.duration_since(self.started);
        if t < every {
            return None;
        }
        let into_cycle = (t - every).as_nanos() % every.as_nanos();
        (into_cycle < self.config.degrade_for.as_nanos()).then(|| {
            format!(
                "simulated connection loss (every {every:?} for {:?})",
                self.config.degrade_for
            )
        })
    }

    fn remaining(&self) -> Option<u64> {
        self.config.count.map(|c| c.saturating_sub(self.seq))
    }

    /// The samples due now, at most `max` (whole rounds, except when `max` is smaller than a
    /// round or the count ends mid-round).
    fn due_samples(&mut self, ctx: &Context, now: Instant, max: usize) -> Vec<Envelope> {
        let interval = self.config.interval;
        let tags = self.config.tags.len();
        let mut max = max.max(1);
        if let Some(left) = self.remaining() {
            max = max.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        if !interval.is_zero() && now > self.next_due + interval * MAX_BACKLOG_ROUNDS {
            self.next_due = now;
        }
        let t = now.duration_since(self.started).as_secs_f64();
        let mut events = Vec::with_capacity(max.min(1024));
        let mut tag = 0;
        while events.len() < max && (interval.is_zero() || self.next_due <= now) {
            let name = &self.config.tags[tag];
            let value = values::sample(ctx.instance(), name, t, self.seq);
            events.push(Envelope::new(
                ctx.instance(),
                ctx.event_subject(name),
                value.into(),
            ));
            self.seq += 1;
            tag += 1;
            if tag == tags {
                tag = 0;
                self.next_due += interval;
                if events.len() + tags > max && !interval.is_zero() {
                    break;
                }
            }
        }
        events
    }
}

impl Connector for Sim {
    async fn connect(&mut self, _ctx: &Context) -> Result<(), ConnectorError> {
        match self.connection_loss(Instant::now()) {
            Some(reason) => Err(ConnectorError::NotConnected(reason)),
            None => Ok(()),
        }
    }

    async fn health(&mut self, _ctx: &Context) -> Health {
        self.hang().await;
        match self.connection_loss(Instant::now()) {
            Some(reason) => Health::Degraded(reason),
            None => Health::Healthy,
        }
    }
}

impl Source for Sim {
    async fn read_batch(
        &mut self,
        ctx: &Context,
        max: usize,
    ) -> Result<SourceBatch, ConnectorError> {
        let now = Instant::now();
        if std::mem::take(&mut self.fail_next)
            || self
                .config
                .fail_every
                .is_some_and(|every| now.duration_since(self.started) >= every)
        {
            return Err(ConnectorError::Fatal("simulated crash".to_owned()));
        }
        if let Some(reason) = self.connection_loss(now) {
            return Err(ConnectorError::NotConnected(reason));
        }
        if !self.scheduled_hang_done
            && let Some(after) = self.config.hang_after
            && now.duration_since(self.started) >= after
        {
            self.scheduled_hang_done = true;
            self.hang_next = Some(self.config.hang_for);
        }
        if let Some(hang) = self.hang_next.take() {
            ctx.warn(format!("simulated hang for {hang:?}"));
            self.hung_until = Some(now + hang);
        }
        // Interrupted here (the node needs the instance), the hang goes on: the node's next
        // request waits for it too, until its call timeout gives up on the instance.
        self.hang().await;
        if let Some(batch) = &self.unacked {
            return Ok(batch.clone());
        }
        if self.remaining() == Some(0) {
            return Err(ConnectorError::EndOfInput);
        }
        if !self.config.interval.is_zero() && self.next_due > now {
            // Waits for the next round however long it is (an interrupt from the node ends the
            // wait; nothing is lost, the round is still due).
            let mut due = self.next_due;
            if let Some(m) = self.next_maintenance {
                due = due.min(m);
            }
            tokio::time::sleep_until(due).await;
        }
        let now = Instant::now();
        let mut events = self.due_samples(ctx, now, max);
        if let (Some(due), Some(every)) = (self.next_maintenance, self.config.maintenance_every)
            && due <= now
        {
            self.next_maintenance = Some(now + every);
            self.maintenance_requests += 1;
            let n = self.maintenance_requests;
            events.push(Envelope::new(
                ctx.instance(),
                ctx.event_subject("maintenance_request"),
                serde_json::json!({
                    "work_order": {
                        "title": format!("{}: scheduled maintenance #{n}", ctx.instance()),
                        "asset": ctx.instance(),
                        "priority": "normal",
                    }
                }),
            ));
        }
        if events.is_empty() {
            return Ok(SourceBatch::new(AckToken(self.batches), Vec::new()));
        }
        self.batches += 1;
        let batch = SourceBatch::new(AckToken(self.batches), events);
        self.unacked = Some(batch.clone());
        Ok(batch)
    }

    async fn ack(&mut self, _ctx: &Context, token: AckToken) -> Result<(), ConnectorError> {
        if self.unacked.as_ref().is_some_and(|b| b.token == token) {
            self.unacked = None;
        }
        Ok(())
    }
}

/// The argument of `degrade` and `hang`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ForArg {
    #[serde(
        default,
        rename = "for",
        with = "millwright_plugin_sdk::duration::option"
    )]
    duration: Option<Duration>,
}

impl Responder for Sim {
    async fn call(
        &mut self,
        ctx: &Context,
        method: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, ConnectorError> {
        let arg = || -> Result<ForArg, ConnectorError> {
            if payload.is_null() {
                return Ok(ForArg::default());
            }
            serde_json::from_value(payload.clone()).map_err(|e| {
                ConnectorError::Config(format!(
                    "{method}: {e} (expected nothing or {{\"for\": \"5s\"}})"
                ))
            })
        };
        self.hang().await;
        let now = Instant::now();
        match method {
            "fail" => self.fail_next = true,
            "degrade" => {
                let d = arg()?.duration.unwrap_or(self.config.degrade_for);
                self.degraded_until = Some(now + d);
            }
            "hang" => self.hang_next = Some(arg()?.duration.unwrap_or(self.config.hang_for)),
            "recover" => {
                self.degraded_until = None;
                self.hang_next = None;
            }
            "status" => {}
            other => {
                return Err(ConnectorError::Config(format!(
                    "unknown method {other:?} (sim answers fail, degrade, hang, recover, status)"
                )));
            }
        }
        if method != "status" {
            ctx.info(format!("simulated fault requested: {method}"));
        }
        Ok(serde_json::json!({
            "instance": ctx.instance(),
            "samples": self.seq,
            "connection_lost": self.connection_loss(now),
            "fail_pending": self.fail_next,
            "hang_pending": self.hang_next.map(|d| format!("{d:?}")),
        }))
    }
}

plugin_vtable!(pub SIM: Sim, source, responder);

/// Serves the plugin over stdin/stdout (the executable's `main`).
pub fn serve() -> std::process::ExitCode {
    millwright_plugin_sdk::stdio::serve(&SIM)
}

export_plugin!(&SIM, Sim);

#[cfg(test)]
mod tests;
