//! The Millwright node: configuration, boot and shutdown, probes, metrics and the CLI.
//!
//! `main.rs` only parses the command line and calls [`cli::run`]; everything else lives here so
//! tests can boot a whole node in-process ([`node::Node::start`]) as well as run the binary.
//!
//! - [`cli`]: `millwright run CONFIG`, `millwright check CONFIG`, exit codes;
//! - [`config`]: the TOML config, its validation and located error messages;
//! - [`node`]: boot in order, and the running node's handles;
//! - [`component`]: the one interface every kind of component plugs in through;
//! - [`components`]: the one list of the kinds of components, and the supervision tree;
//! - [`shutdown`]: signals and the ordered graceful shutdown;
//! - [`lockfile`]: the single-instance lock in the data directory;
//! - [`http`]: `/live`, `/ready`, `/health`, the status page and control endpoints;
//! - [`metrics`]: the Prometheus exporter and node metrics;
//! - [`logging`]: human or JSON logs with `tracing`;
//! - [`control`]: the components' control verbs over the bus;
//! - [`dlq_cli`]: `millwright dlq list|show|replay|purge`, on a running or stopped node;
//! - [`endpoints`]: `<data_dir>/endpoints.json`, where a running node listens;
//! - [`latest`]: the latest value per tag of this node's sources (`/values`);
//! - [`watchdog`]: detects components that stop answering;
//! - [`state_feed`]: republishes state changes on `<prefix>.state.<node>.<component>`;
//! - [`phase`]: starting, ready, stopping;
//! - [`plugin_host`]: loading and checking plugin `cdylib`s, and the transport to their
//!   instances;
//! - [`plugin_process`]: plugins out of process: spawn, handshake, frames, heartbeats;
//! - [`plugins`]: the node's connectors: load, check, validate config, prepare transports;
//! - [`plugin_cli`]: `millwright plugin inspect | list | new`;
//! - [`plugin_template`]: the crate `plugin new` writes.

pub mod cli;
pub mod component;
pub mod components;
pub mod config;
pub mod connector_bridge;
pub mod control;
pub mod dlq_cli;
pub mod endpoints;
pub mod http;
pub mod latest;
pub mod lockfile;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod phase;
pub mod plugin_cli;
pub mod plugin_host;
pub mod plugin_process;
pub mod plugin_template;
pub mod plugins;
pub mod shutdown;
pub mod state_feed;
pub mod watchdog;

pub use node::{Node, NodeError};
