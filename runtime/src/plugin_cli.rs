//! `millwright plugin inspect FILE`, `millwright plugin list --config CONFIG` and
//! `millwright plugin new NAME`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::{Config, PluginMode};
use crate::endpoints::Endpoints;
use crate::lockfile::Lockfile;
use crate::plugins::{self, PluginInfo};

/// `millwright plugin` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum PluginCommand {
    /// Prints a plugin's manifest: id, version, SDK and ABI, target, shapes, config schema.
    Inspect {
        /// The plugin: a `.so` (in process) or an executable (with `--out-of-process`).
        file: PathBuf,
        /// The file is an executable to start, not a library to load.
        #[arg(long)]
        out_of_process: bool,
        /// Prints the whole manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lists the plugins a running node loaded, with their modes and versions.
    List {
        /// The node's config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Writes a new plugin crate (a source with a config, a test, a cdylib and an executable)
    /// that builds and passes its own test.
    New {
        /// The plugin's name: lowercase letters, digits and `-` (`acme-press`).
        name: String,
        /// Where to create the crate's folder (default: the current directory).
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// The plugin-sdk to depend on (default: the one this millwright was built from).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
}

/// Runs `millwright plugin`. Exit codes: 0 done, 1 refused or unreachable, 2 bad config.
pub fn run(command: PluginCommand) -> ExitCode {
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
    match command {
        PluginCommand::Inspect {
            file,
            out_of_process,
            json,
        } => {
            let mode = if out_of_process {
                PluginMode::OutOfProcess
            } else {
                PluginMode::InProcess
            };
            match runtime.block_on(plugins::inspect(&file, mode)) {
                Ok((m, _)) if json => {
                    println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok((m, _)) => {
                    println!("{}: plugin {} {}", file.display(), m.id, m.version);
                    println!("  {}", m.description);
                    println!(
                        "  sdk {}, abi {}.{}, target {}",
                        m.sdk_version, m.abi_major, m.abi_minor, m.target
                    );
                    let kinds: Vec<String> = m
                        .kinds
                        .iter()
                        .map(|k| {
                            serde_json::to_value(k)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default()
                        })
                        .collect();
                    println!("  shapes: {}", kinds.join(", "));
                    println!(
                        "  config schema:\n{}",
                        serde_json::to_string_pretty(&m.config_schema).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        PluginCommand::New {
            name,
            path,
            sdk_path,
        } => match crate::plugin_template::write(&name, &path, sdk_path.as_deref()) {
            Ok(dir) => {
                println!("created plugin {name} in {}", dir.display());
                println!("  cd {} && cargo test", dir.display());
                println!(
                    "  then: millwright plugin inspect {}/target/debug/lib{}.so",
                    dir.display(),
                    name.replace('-', "_")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        PluginCommand::List { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(list(&config)) {
                Ok(list) => {
                    if list.is_empty() {
                        println!("node {} runs no plugins", config.node.name);
                    }
                    for p in list {
                        println!(
                            "{:<16} {} {} ({}, sdk {}, abi {}) {}",
                            p.instance, p.plugin, p.version, p.mode, p.sdk_version, p.abi, p.path
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn list(config: &Config) -> Result<Vec<PluginInfo>, String> {
    let dir = &config.node.data_dir;
    let Some(pid) = Lockfile::holder(dir) else {
        return Err(format!(
            "no node runs on {} (start it with `millwright run`)",
            dir.display()
        ));
    };
    let endpoints = Endpoints::read(dir).map_err(|e| format!("a node (pid {pid}) runs but {e}"))?;
    let url = format!("http://{}/plugins", endpoints.http);
    let response = reqwest::get(&url)
        .await
        .map_err(|e| format!("node (pid {pid}) did not answer at {url}: {e}"))?;
    response
        .json()
        .await
        .map_err(|e| format!("unreadable answer from {url}: {e}"))
}
