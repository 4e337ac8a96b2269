//! `millwright dlq`: list, show, replay and purge the dead-letter queue of a node.
//!
//! The command finds the node from its config. When a node holds the data dir (its lockfile
//! names a live process) the command goes to that node: over the control subject
//! `<prefix>.ctl.<node>.dlq` when the node runs on NATS (and NATS answers), else over
//! `POST /control/dlq` at the HTTP address the node recorded in `<data_dir>/endpoints.json`. When no node runs, it opens
//! the stores in the data dir itself. Either way the result is the same.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgGroup, Subcommand};
use millwright_broker::dlq_admin::{self, DlqCommand, DlqReply, Target};
use millwright_bus::{Bus, Headers, NatsOptions, SubjectScheme};
use millwright_plugin_sdk::event::EventId;

use crate::components;
use crate::components::broker::{DLQ_TIMEOUT, DLQ_VERB};
use crate::config::Config;
use crate::control::ControlReply;
use crate::endpoints::Endpoints;
use crate::lockfile::Lockfile;

/// Arguments of `millwright dlq`.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqArgs {
    /// The node's config file (it names the data dir, the bus and the HTTP address).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Overrides `node.data_dir`.
    #[arg(long, env = "MILLWRIGHT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Prints the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub action: DlqAction,
}

/// `millwright dlq` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DlqAction {
    /// Lists dead letters, oldest first.
    List {
        /// How many to show at most.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Shows one dead letter in full: the event, its attempts and last error.
    Show {
        /// The event id.
        id: EventId,
    },
    /// Sends dead letters again: back into the broker's disk queue, out of the DLQ.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
    Replay {
        /// The event id.
        id: Option<EventId>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Deletes dead letters for good.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
    Purge {
        /// The event id.
        id: Option<EventId>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

impl DlqAction {
    fn command(&self) -> DlqCommand {
        let target = |id: &Option<EventId>| id.map_or(Target::All, Target::One);
        match self {
            Self::List { limit } => DlqCommand::List { limit: *limit },
            Self::Show { id } => DlqCommand::Show { id: *id },
            Self::Replay { id, .. } => DlqCommand::Replay { target: target(id) },
            Self::Purge { id, .. } => DlqCommand::Purge { target: target(id) },
        }
    }
}

/// Runs `millwright dlq`. Exit codes: 0 done, 1 the command failed, 2 bad config.
pub fn run(args: DlqArgs) -> ExitCode {
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &args.data_dir {
        config.node.data_dir = dir.clone();
    }
    let command = args.action.command();
    let result = match Lockfile::holder(&config.node.data_dir) {
        Some(pid) => online(&config, &command, pid),
        None => {
            let options = components::broker_options(&config);
            dlq_admin::execute_offline(
                &command,
                &config.node.data_dir,
                &options.queue_dir,
                options.queue,
            )
            .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(reply) => {
            print(&reply, args.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn online(config: &Config, command: &DlqCommand, pid: i32) -> Result<DlqReply, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let body = serde_json::to_vec(command).map_err(|e| e.to_string())?;
        let answer = match &config.bus.nats_url {
            // Over the control subject; when NATS itself is what is down, through the node's
            // HTTP port instead.
            Some(url) => match over_nats(config, url, body.clone()).await {
                Ok(answer) => answer,
                Err(nats) => over_http(&config.node.data_dir, pid, body)
                    .await
                    .map_err(|http| format!("{nats}; and over HTTP: {http}"))?,
            },
            None => over_http(&config.node.data_dir, pid, body).await?,
        };
        let reply: ControlReply = serde_json::from_slice(&answer)
            .map_err(|e| format!("the node sent an unreadable answer: {e}"))?;
        match (reply.ok, reply.reply, reply.error) {
            (true, Some(v), _) => serde_json::from_value(v)
                .map_err(|e| format!("the node sent an unreadable answer: {e}")),
            (_, _, Some(e)) => Err(e),
            _ => Err("the node sent an empty answer".to_owned()),
        }
    })
}

async fn over_nats(config: &Config, url: &str, body: Vec<u8>) -> Result<Bytes, String> {
    let mut opts = NatsOptions::new(url);
    opts.name = "millwright-dlq".to_owned();
    opts.connect_timeout = Duration::from_secs(3);
    let bus = Bus::connect_nats(opts).await.map_err(|e| e.to_string())?;
    let scheme = SubjectScheme::new(config.bus.prefix.clone()).map_err(|e| e.to_string())?;
    let subject = scheme.control(&config.node.name, DLQ_VERB);
    let msg = bus
        .request(&subject, Headers::new(), Bytes::from(body), DLQ_TIMEOUT)
        .await
        .map_err(|e| format!("node {} did not answer on {subject}: {e}", config.node.name))?;
    Ok(msg.payload)
}

async fn over_http(data_dir: &Path, pid: i32, body: Vec<u8>) -> Result<Bytes, String> {
    let endpoints = Endpoints::read(data_dir)
        .map_err(|e| format!("a node (pid {pid}) holds {} but {e}", data_dir.display()))?;
    let url = format!("http://{}/control/dlq", endpoints.http);
    let response = reqwest::Client::builder()
        .timeout(DLQ_TIMEOUT + Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("node (pid {pid}) did not answer at {url}: {e}"))?;
    let ok = response.status().is_success();
    let text = response.bytes().await.map_err(|e| e.to_string())?;
    if ok {
        // The HTTP route answers with the bare reply; wrap it like the bus does.
        let reply: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| format!("unreadable answer: {e}"))?;
        let wrapped = ControlReply {
            ok: true,
            error: None,
            reply: Some(reply),
        };
        Ok(Bytes::from(
            serde_json::to_vec(&wrapped).unwrap_or_default(),
        ))
    } else {
        Ok(text)
    }
}

fn print(reply: &DlqReply, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(reply).unwrap_or_default()
        );
        return;
    }
    match reply {
        DlqReply::Letters { total, letters } => {
            println!("{total} dead letter(s)");
            if !letters.is_empty() {
                println!(
                    "{:<26}  {:<8}  {:<20}  {:<32}  last error",
                    "id", "attempts", "dead at", "subject"
                );
            }
            for l in letters {
                println!(
                    "{:<26}  {:<8}  {:<20}  {:<32}  {}",
                    l.id(),
                    l.attempts,
                    l.dead_at.format("%Y-%m-%d %H:%M:%S"),
                    l.envelope.subject,
                    l.last_error
                );
            }
        }
        DlqReply::Letter { letter } => {
            println!(
                "{}",
                serde_json::to_string_pretty(letter).unwrap_or_default()
            );
        }
        DlqReply::Replayed { count } => println!(
            "replayed {count} event(s) into the disk queue; the broker delivers them as NATS takes them"
        ),
        DlqReply::Purged { count } => println!("purged {count} dead letter(s)"),
    }
}
