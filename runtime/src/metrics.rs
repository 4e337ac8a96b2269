//! The Prometheus exporter on `:9090/metrics`, and the node-level metrics.
//!
//! The exporter is `metrics-exporter-prometheus` with its own HTTP listener (built with
//! `default-features = false` plus `http-listener`). Conventions: counters end in `_total`,
//! durations are in seconds and end in `_seconds`, every histogram has explicit buckets, and
//! label values come from config (component ids, machine names), never from data.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `mw_build_info` | gauge (1) | `version` | the running build |
//! | `mw_uptime_seconds` | gauge | | seconds since the node started |
//! | `mw_node_ready` | gauge | | 1 while `/ready` answers 200 |
//! | `mw_component_state` | gauge | `component`, `state` | 1 for the current state |
//! | `mw_component_observations` | gauge | `component` | outside observations now |
//! | `mw_component_illegal_transitions_total` | counter | | state changes the table refused |
//! | `mw_component_restarts_total` | counter | `component` | restarts by a supervisor |
//! | `mw_watchdog_unresponsive_total` | counter | `component` | pings that timed out |
//! | `mw_state_publish_errors_total` | counter | | state changes not published |
//!
//! The component metrics are written by the status board (`millwright_kernel::lifecycle`);
//! every other metric is listed in `docs/operations.md`.

use std::net::{SocketAddr, TcpListener};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Buckets of every `*_seconds` histogram: 50 µs to 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error(
        "metrics: cannot listen on {addr}: {reason} (set [metrics] listen or --metrics-port to a free port)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The exporter could not be built or installed.
    #[error("metrics: cannot start the exporter: {0}")]
    Build(#[from] BuildError),
}

static INSTALLED: OnceLock<SocketAddr> = OnceLock::new();

/// Installs the global recorder and starts the exporter's listener on `listen`; returns the
/// bound address. Port 0 is resolved to a free port first (the exporter does not report the
/// port it bound). Must be called inside a tokio runtime.
///
/// One process has one global recorder: a second call returns the first address (with a
/// warning when it differs), so tests can boot several nodes in one process.
///
/// # Errors
/// [`MetricsError::Listen`] when the address is taken, [`MetricsError::Build`] otherwise.
pub fn install(listen: SocketAddr) -> Result<SocketAddr, MetricsError> {
    if let Some(addr) = INSTALLED.get() {
        if *addr != listen && listen.port() != 0 {
            tracing::warn!(%addr, requested = %listen, "metrics exporter already running in this process; reusing it");
        }
        return Ok(*addr);
    }
    let addr = if listen.port() == 0 {
        let probe = TcpListener::bind(listen).map_err(|e| MetricsError::Listen {
            addr: listen,
            reason: e.to_string(),
        })?;
        probe.local_addr().map_err(|e| MetricsError::Listen {
            addr: listen,
            reason: e.to_string(),
        })?
    } else {
        listen
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)?
        .install()
        .map_err(|e| match e {
            BuildError::FailedToCreateHTTPListener(reason) => MetricsError::Listen { addr, reason },
            other => MetricsError::Build(other),
        })?;
    let addr = *INSTALLED.get_or_init(|| addr);
    describe();
    metrics::gauge!("mw_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let started = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            metrics::gauge!("mw_uptime_seconds").set(started.elapsed().as_secs_f64());
        }
    });
    Ok(addr)
}

/// Sets `mw_node_ready`.
pub fn set_ready(ready: bool) {
    metrics::gauge!("mw_node_ready").set(if ready { 1.0 } else { 0.0 });
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!("mw_build_info", "The running build (always 1).");
    describe_gauge!(
        "mw_uptime_seconds",
        Unit::Seconds,
        "Seconds since the node started."
    );
    describe_gauge!(
        "mw_node_ready",
        "1 while the node is ready (/ready answers 200)."
    );
    describe_gauge!(
        "mw_component_state",
        "1 for each component's current lifecycle state, 0 for states it left."
    );
    describe_counter!(
        "mw_component_restarts_total",
        "Restarts of a component by its supervisor."
    );
    describe_gauge!(
        "mw_component_observations",
        "Observations by outside judges (the watchdog) on a component; 0 when none."
    );
    describe_counter!(
        "mw_component_illegal_transitions_total",
        "State changes the transition table refused (a bug when not 0)."
    );
    describe_counter!(
        "mw_watchdog_unresponsive_total",
        "Liveness pings that timed out, by component."
    );
    describe_counter!(
        "mw_state_publish_errors_total",
        "State changes that could not be published on the bus."
    );
}
