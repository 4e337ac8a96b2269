//! `testkit`: a source plugin built as a `cdylib`, for the plugin host's tests.
//!
//! It emits `count` events `0..count` on `mw.ev.<instance>.seq`, resuming after the last
//! acknowledged value on every connect, and panics inside `read_batch` when it reaches
//! `panic_at` (to prove a panic stays inside the plugin). It is also the smallest example of a
//! plugin exported with `export_plugin!`.

use millwright_plugin_sdk::prelude::*;
use millwright_plugin_sdk::{export_plugin, plugin_vtable};

/// `testkit`'s config.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestkitConfig {
    /// How many events to emit.
    pub count: u64,
    /// Panic in the read that reaches this value. Absent: never.
    #[serde(default)]
    pub panic_at: Option<u64>,
}

/// The plugin.
#[derive(Debug)]
pub struct Testkit {
    config: TestkitConfig,
    acked: u64,
    next: u64,
}

impl Plugin for Testkit {
    type Config = TestkitConfig;
    const ID: &'static str = "testkit";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "counts, and panics on request (a test plugin)";

    fn new(config: TestkitConfig, _ctx: &Context) -> Result<Self, ConnectorError> {
        Ok(Self {
            config,
            acked: 0,
            next: 0,
        })
    }
}

impl Connector for Testkit {
    async fn connect(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        self.next = self.acked;
        ctx.info("testkit connected");
        Ok(())
    }
}

impl Source for Testkit {
    async fn read_batch(
        &mut self,
        ctx: &Context,
        max: usize,
    ) -> Result<SourceBatch, ConnectorError> {
        if self.config.panic_at.is_some_and(|at| self.next >= at) {
            panic!("testkit told to panic at {}", self.next);
        }
        if self.next >= self.config.count {
            return Err(ConnectorError::EndOfInput);
        }
        let end = (self.next + max as u64).min(self.config.count);
        let subject = format!("mw.ev.{}.seq", ctx.instance());
        let events = (self.next..end)
            .map(|v| Envelope::new(ctx.instance(), subject.clone(), v.into()))
            .collect();
        ctx.counter("reads_total", &[], 1);
        self.next = end;
        Ok(SourceBatch::new(AckToken(end), events))
    }

    async fn ack(&mut self, _ctx: &Context, token: AckToken) -> Result<(), ConnectorError> {
        self.acked = self.acked.max(token.0);
        Ok(())
    }
}

plugin_vtable!(TESTKIT: Testkit, source);
export_plugin!(&TESTKIT, Testkit);
