//! The command line: `millwright run CONFIG`, `millwright check CONFIG` and
//! `millwright dlq --config CONFIG list|show|replay|purge`, `millwright plugin inspect FILE`
//! and `millwright plugin list --config CONFIG`.
//!
//! Exit codes: 0 success (including a graceful shutdown on SIGTERM/SIGINT), 1 the node failed
//! (could not start, or its root supervisor gave up), 2 invalid config or usage, 130 a second
//! signal cut a graceful shutdown short.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, ConfigError, LogFormat};
use crate::node::Node;
use crate::{logging, shutdown};

/// Millwright: a supervised actor runtime for industrial connectivity.
#[derive(Debug, Parser)]
#[command(name = "millwright", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a node until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Validates a config file and loads its plugins as boot does, without starting anything.
    Check {
        /// The config file (TOML).
        config: PathBuf,
    },
    /// Lists, shows, replays or purges the dead-letter queue (of a running or stopped node).
    Dlq(crate::dlq_cli::DlqArgs),
    /// Inspects a plugin file, or lists the plugins a running node loaded.
    #[command(subcommand)]
    Plugin(crate::plugin_cli::PluginCommand),
}

/// Arguments of `millwright run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The config file (TOML).
    pub config: PathBuf,
    /// Overrides the port of `http.listen` (0 picks a free port, logged at start).
    #[arg(long, env = "MILLWRIGHT_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Overrides the port of `metrics.listen` (0 picks a free port, logged at start).
    #[arg(long, env = "MILLWRIGHT_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Overrides `node.data_dir`.
    #[arg(long, env = "MILLWRIGHT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Overrides `log.format`.
    #[arg(long, env = "MILLWRIGHT_LOG_FORMAT")]
    pub log_format: Option<LogFormatArg>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl RunArgs {
    /// Applies the overrides to `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(port) = self.http_port {
            config.http.listen.set_port(port);
        }
        if let Some(port) = self.metrics_port {
            config.metrics.listen.set_port(port);
        }
        if let Some(dir) = &self.data_dir {
            config.node.data_dir = dir.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = match format {
                LogFormatArg::Human => LogFormat::Human,
                LogFormatArg::Json => LogFormat::Json,
            };
        }
    }
}

/// Runs the parsed command line; the binary's whole `main`.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run(args) => run_node(args),
        Command::Dlq(args) => crate::dlq_cli::run(args),
        Command::Plugin(command) => crate::plugin_cli::run(command),
    }
}

/// `millwright check`: everything boot checks before it starts anything (the config, then
/// every connector's plugin, manifest and config, through [`crate::plugins::check`]), each
/// problem of the file reported with its key path, line and fix; no instance is made.
fn check(path: &std::path::Path) -> ExitCode {
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(source) => {
            eprintln!("error: {}", ConfigError::Read { file, source });
            return ExitCode::from(2);
        }
    };
    let (config, mut problems) = Config::parse_all(&file, &text);
    if let Some(config) = &config {
        // Out-of-process plugins are started for their handshake, as at boot.
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (_, refused) = runtime.block_on(crate::plugins::check(&config.connectors));
        problems.extend(refused.iter().map(|e| e.diagnostic(&file, &text)));
    }
    // File order; a problem without a line (none is expected) last.
    problems.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
    match config {
        Some(config) if problems.is_empty() => {
            let bus = match &config.bus.nats_url {
                Some(url) => format!("NATS at {url}"),
                None => "embedded bus".to_owned(),
            };
            println!(
                "{}: ok (node {}, {} connectors, {bus})",
                path.display(),
                config.node.name,
                config.connectors.len(),
            );
            ExitCode::SUCCESS
        }
        _ => {
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            ExitCode::from(2)
        }
    }
}

fn run_node(args: RunArgs) -> ExitCode {
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    args.apply(&mut config);
    if let Err(e) = logging::init(&config.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("millwright")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        // Caught from here on: a SIGTERM while the node boots shuts it down gracefully once
        // it is up, instead of killing it half-built.
        let signals = match shutdown::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let node = match Node::start(config).await {
            Ok(node) => node,
            Err(e) => {
                tracing::error!(error = %e, "node failed to start");
                return ExitCode::FAILURE;
            }
        };
        exit_on_second_signal();
        match shutdown::run_until(node, signals).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "node stopped");
                ExitCode::FAILURE
            }
        }
    });
    // Detached tasks (exporter, timers) must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// The first SIGTERM/SIGINT starts a graceful shutdown; a second one ends the process at
/// once with status 130.
fn exit_on_second_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        for seen in 1.. {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            if seen >= 2 {
                tracing::error!("second signal during shutdown: exiting now");
                std::process::exit(130);
            }
        }
    });
}
