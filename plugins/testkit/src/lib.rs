//! `testkit`: a source plugin built as a `cdylib`, for the plugin host's tests.
//!
//! It emits `count` events `0..count` on `mw.ev.<instance>.seq`, resuming after the last
//! acknowledged value on every connect (kept in `state_file` when given, so a new process
//! resumes too), and misbehaves on request inside `read_batch`: `panic_at` panics (a panic
//! must stay inside the plugin), `abort_at` aborts the process and `hang_at` stops answering
//! (both must kill only an out-of-process plugin). Each fault happens once per `state_file`.
//! As a sink it appends what it is given to `sink_file`; as a responder it answers `echo`,
//! `position` and `fail`.
//! It is also the smallest example of a plugin exported with `export_plugin!` (a `cdylib`) and
//! served by `stdio::serve` (the executable, `src/main.rs`), from the same code.

use millwright_plugin_sdk::prelude::*;
use millwright_plugin_sdk::{export_plugin, plugin_vtable};

/// `testkit`'s config.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestkitConfig {
    /// How many events to emit (0: the source ends at once; the sink and responder still run).
    #[serde(default)]
    pub count: u64,
    /// Panic in the read that reaches this value. Absent: never.
    #[serde(default)]
    pub panic_at: Option<u64>,
    /// Abort the process in the read that reaches this value (once per `state_file`).
    #[serde(default)]
    pub abort_at: Option<u64>,
    /// Stop answering in the read that reaches this value (once per `state_file`): the thread
    /// is blocked, as by a plugin stuck in a system call.
    #[serde(default)]
    pub hang_at: Option<u64>,
    /// Wait (awaiting, as for a peer that does not answer) in the read that reaches this value,
    /// for `stall_ms`, or for ever when that is absent (once per `state_file`; every such read
    /// without one).
    #[serde(default)]
    pub stall_at: Option<u64>,
    /// How long a `stall_at` read waits, in milliseconds. Absent: for ever.
    #[serde(default)]
    pub stall_ms: Option<u64>,
    /// Where the acknowledged position and the faults done are kept across processes.
    #[serde(default)]
    pub state_file: Option<std::path::PathBuf>,
    /// As a sink: append the payload of every written event to this file, one JSON line each.
    /// An event whose payload is `"reject"` is refused for good (a per-event `fatal` error),
    /// one whose payload is `"transient-once"` is refused with a `transient` error the first
    /// time its id is seen and written the next.
    #[serde(default)]
    pub sink_file: Option<std::path::PathBuf>,
}

/// What survives a process: acknowledged through, and whether the one-shot faults happened.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Persisted {
    acked: u64,
    aborted: bool,
    hung: bool,
    stalled: bool,
}

impl TestkitConfig {
    fn load(&self) -> Persisted {
        self.state_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn store(&self, p: &Persisted) {
        if let Some(path) = &self.state_file {
            let _ = std::fs::write(path, serde_json::to_vec(p).unwrap_or_default());
        }
    }
}

/// The plugin.
#[derive(Debug)]
pub struct Testkit {
    config: TestkitConfig,
    acked: u64,
    next: u64,
    refused_once: std::collections::HashSet<EventId>,
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
            refused_once: Default::default(),
        })
    }
}

impl Connector for Testkit {
    async fn connect(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        self.acked = self.acked.max(self.config.load().acked);
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
        let mut persisted = self.config.load();
        if self.config.abort_at.is_some_and(|at| self.next >= at) && !persisted.aborted {
            persisted.aborted = true;
            self.config.store(&persisted);
            eprintln!("testkit aborting at {}", self.next);
            std::process::abort();
        }
        if self.config.hang_at.is_some_and(|at| self.next >= at) && !persisted.hung {
            persisted.hung = true;
            self.config.store(&persisted);
            eprintln!("testkit hanging at {}", self.next);
            loop {
                std::thread::park();
            }
        }
        if self.config.stall_at.is_some_and(|at| self.next >= at) && !persisted.stalled {
            persisted.stalled = self.config.state_file.is_some();
            self.config.store(&persisted);
            ctx.info("testkit stalling");
            match self.config.stall_ms {
                Some(ms) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
                None => std::future::pending().await,
            }
        }
        if self.next >= self.config.count {
            return Err(ConnectorError::EndOfInput);
        }
        let end = (self.next + max as u64).min(self.config.count);
        let subject = ctx.event_subject("seq");
        let events = (self.next..end)
            .map(|v| Envelope::new(ctx.instance(), subject.clone(), v.into()))
            .collect();
        ctx.counter("reads_total", &[], 1);
        self.next = end;
        Ok(SourceBatch::new(AckToken(end), events))
    }

    async fn ack(&mut self, _ctx: &Context, token: AckToken) -> Result<(), ConnectorError> {
        self.acked = self.acked.max(token.0);
        let mut persisted = self.config.load();
        persisted.acked = self.acked;
        self.config.store(&persisted);
        Ok(())
    }
}

impl Sink for Testkit {
    async fn write_batch(
        &mut self,
        _ctx: &Context,
        events: Vec<Envelope>,
    ) -> Result<Vec<WriteResult>, ConnectorError> {
        use std::io::Write as _;
        let Some(path) = &self.config.sink_file else {
            return Err(ConnectorError::Config(
                "sink_file: not set (testkit needs it to act as a sink)".to_owned(),
            ));
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ConnectorError::Transient(format!("{}: {e}", path.display())))?;
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            if event.payload == "reject" {
                results.push(Err(ConnectorError::Fatal("told to reject".to_owned())));
                continue;
            }
            if event.payload == "transient-once" && self.refused_once.insert(event.id) {
                results.push(Err(ConnectorError::Transient(
                    "told to refuse once".to_owned(),
                )));
                continue;
            }
            writeln!(file, "{}", event.payload)
                .map_err(|e| ConnectorError::Transient(format!("{}: {e}", path.display())))?;
            results.push(Ok(()));
        }
        Ok(results)
    }
}

impl Responder for Testkit {
    /// `echo` answers its payload; `position` the acknowledged position; `fail` a transient
    /// error; anything else a config error.
    async fn call(
        &mut self,
        _ctx: &Context,
        method: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, ConnectorError> {
        match method {
            "echo" => Ok(payload),
            "position" => Ok(serde_json::json!({ "acked": self.acked, "next": self.next })),
            "fail" => Err(ConnectorError::Transient("told to fail".to_owned())),
            other => Err(ConnectorError::Config(format!(
                "unknown method {other:?} (testkit answers echo, position, fail)"
            ))),
        }
    }
}

plugin_vtable!(pub TESTKIT: Testkit, source, sink, responder);

/// Serves the plugin out of process (the executable's `main`).
pub fn serve() -> std::process::ExitCode {
    millwright_plugin_sdk::stdio::serve(&TESTKIT)
}
export_plugin!(&TESTKIT, Testkit);
