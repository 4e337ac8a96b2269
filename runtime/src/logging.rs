//! Structured logs with `tracing`: human-readable lines or one JSON object per line, on stdout.
//!
//! The filter is `RUST_LOG` when set, else the config's `log.level`. In JSON, each line carries
//! `timestamp`, `level`, `target` and the event's fields flattened (`message`, `component`,
//! `step`, ...), so tests and log shippers can read them without parsing text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogConfig, LogFormat};

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter (from `RUST_LOG` or `log.level`) does not parse.
    #[error("invalid log filter {filter:?}: {source} (expected a level such as \"info\")")]
    Filter {
        /// The filter text.
        filter: String,
        /// The parse error.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
}

/// Installs the global subscriber. A second call in one process keeps the first subscriber
/// (tests boot several nodes in one process) and returns `Ok`.
///
/// # Errors
/// [`LogError::Filter`] when the filter does not parse.
pub fn init(config: &LogConfig) -> Result<(), LogError> {
    let filter_text = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| config.level.clone());
    let filter = EnvFilter::builder()
        .parse(&filter_text)
        .map_err(|source| LogError::Filter {
            filter: filter_text,
            source,
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(true);
    let result = match config.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    // An error here only means a subscriber is already installed, which is fine.
    if result.is_ok() {
        log_panics();
    }
    Ok(())
}

/// Routes panic messages through `tracing`, so they are structured like every other line (a
/// simulated machine told to fail panics on purpose; its supervisor restarts it).
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic payload)".to_owned());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        tracing::error!(panic = %message, %location, %thread, "panic");
    }));
}
