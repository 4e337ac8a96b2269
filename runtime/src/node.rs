//! A running node: boot in order, serve, and shut down in order.
//!
//! Boot ([`Node::start`]):
//! 1. take the single-instance lock in `node.data_dir` (displacing an older instance);
//! 2. start the metrics exporter and the HTTP server (`/live` answers, `/ready` says 503);
//! 3. open the bus (NATS when `bus.nats_url` is set, else embedded) and start the state feed;
//! 4. spawn the root supervisor over every component's children ([`crate::components`]), then
//!    the watchdog and the control task (children of the root too), and turn ready.
//!
//! The bound addresses are logged once as `listening` with `http_addr` and `metrics_addr`
//! fields, so a test that asked for port 0 can find them.
//!
//! Shutdown is in [`crate::shutdown`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use millwright_broker::{BrokerHandle, BrokerOptions, DeliveryMode, StreamError};
use millwright_bus::jetstream::JetStream;
use millwright_bus::{Bus, BusError, ConnectionState, NatsOptions, SubjectScheme};
use millwright_kernel::lifecycle::StatusBoard;
use millwright_kernel::supervisor::{Supervisor, SupervisorMsg};
use ractor::{ActorRef, SpawnErr};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::component::BuildContext;
use crate::components;
use crate::config::Config;
use crate::http::{self, HttpError, HttpState};
use crate::latest::LatestValues;
use crate::lockfile::{LockError, Lockfile};
use crate::metrics::{self, MetricsError};
use crate::phase::{Phase, PhaseCell};
use crate::state_feed::StateFeed;

/// Why a node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory is held by an instance that could not be stopped.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The metrics exporter could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The bus could not be opened.
    #[error("bus: {0} (check [bus] nats_url, or remove it to use the embedded bus)")]
    Bus(#[from] BusError),
    /// A connector's plugin or config was refused.
    #[error("{file}: {source}")]
    Plugins {
        /// The config file.
        file: String,
        /// Why.
        #[source]
        source: Box<crate::plugins::PreparePluginError>,
    },
    /// The JetStream stream exists with settings the broker cannot work with.
    #[error("{0}")]
    Stream(#[source] StreamError),
    /// The supervision tree could not be built.
    #[error("cannot start the supervision tree: {0}")]
    Tree(#[source] SpawnErr),
    /// The root supervisor gave up (restart intensity exceeded all the way up).
    #[error("the root supervisor failed; the node stops (see the preceding errors for the cause)")]
    RootFailed,
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
}

/// A running node. Stop it with [`shutdown`](Node::shutdown) (or
/// [`run_until_signal`](crate::shutdown::run_until_signal)).
#[derive(Debug)]
pub struct Node {
    pub(crate) config: Arc<Config>,
    pub(crate) board: StatusBoard,
    pub(crate) bus: Bus,
    pub(crate) broker: BrokerHandle,
    pub(crate) phase: PhaseCell,
    pub(crate) http_addr: SocketAddr,
    pub(crate) metrics_addr: SocketAddr,
    pub(crate) root: ActorRef<SupervisorMsg>,
    pub(crate) root_done: oneshot::Receiver<()>,
    pub(crate) state_feed: StateFeed,
    /// What the components were built from (shutdown asks them to stop intake).
    pub(crate) ctx: BuildContext,
    pub(crate) http_stop: oneshot::Sender<()>,
    pub(crate) http_task: JoinHandle<()>,
    pub(crate) lock: Lockfile,
    pub(crate) started: Instant,
}

impl Node {
    /// Boots a node from a validated config (see the module docs for the order).
    ///
    /// # Errors
    /// [`NodeError`] naming the step that failed; what was already started is stopped again
    /// (the lock is released on drop).
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        let started = Instant::now();
        let config = Arc::new(config);
        let name = config.node.name.clone();
        tracing::info!(node = %name, version = env!("CARGO_PKG_VERSION"), "node starting");

        let lock = Lockfile::acquire(&config.node.data_dir).await?;

        let metrics_addr = metrics::install(config.metrics.listen)?;
        let phase = PhaseCell::new();
        phase.set(Phase::Starting);
        let board = StatusBoard::new();

        let latest = LatestValues::default();
        // Plugins are loaded and checked, and every connector's config validated against its
        // plugin's schema, before anything runs.
        let connectors = Arc::new(crate::plugins::prepare(&config.connectors).await.map_err(
            |source| NodeError::Plugins {
                file: config.file.clone().unwrap_or_else(|| "config".to_owned()),
                source,
            },
        )?);
        // The broker's intake exists before the broker actor: producers (and `/events`) that
        // come first wait in it, bounded.
        let broker_options = components::broker_options(&config);
        let (broker, intake) = BrokerHandle::new(&broker_options);

        let listener = http::bind(config.http.listen).await?;
        let http_addr = listener.local_addr().map_err(|source| HttpError::Listen {
            addr: config.http.listen,
            source,
        })?;
        let (http_stop, http_stopped) = oneshot::channel::<()>();
        let http_state = HttpState {
            node: name.clone(),
            board: board.clone(),
            phase: phase.clone(),
            started,
            latest: latest.clone(),
            broker: broker.clone(),
            events_prefix: format!("{}.ev.", config.bus.prefix),
            plugins: Arc::new(connectors.iter().map(|c| c.info()).collect()),
        };
        let routes = components::BUILTIN
            .iter()
            .fold(http::router(), |r, c| r.merge(c.routes()));
        let http_task = http::serve(listener, routes.with_state(http_state), async move {
            let _ = http_stopped.await;
        });
        tracing::info!(%http_addr, %metrics_addr, "listening");
        if let Err(e) =
            crate::endpoints::Endpoints::new(http_addr, metrics_addr).write(&config.node.data_dir)
        {
            tracing::warn!(error = %e, "cannot record the node's endpoints; `millwright dlq` will not find it");
        }

        let bus = match &config.bus.nats_url {
            Some(url) => {
                let mut opts = NatsOptions::new(url.clone());
                opts.name = format!("millwright-{name}");
                // A plant node starts even when NATS is away: the broker keeps events in its
                // disk queue until the client connects.
                opts.retry_on_initial_connect = true;
                Bus::connect_nats(opts).await?
            }
            None => Bus::embedded(),
        };
        tracing::info!(backend = %bus.backend(), connection = %bus.connection_state(), "bus open");
        check_stream(&bus, &broker_options).await?;
        let scheme = SubjectScheme::new(config.bus.prefix.clone())?;
        let state_feed = StateFeed::spawn(&board, bus.clone(), scheme.clone(), name.clone());

        let ctx = BuildContext {
            config: config.clone(),
            board: board.clone(),
            bus: bus.clone(),
            scheme: scheme.clone(),
            broker_options,
            broker: broker.clone(),
            intake,
            connectors: connectors.clone(),
            latest,
        };
        let (root, root_handle) = Supervisor::spawn(
            components::root_name(&name),
            components::root_spec(&ctx),
            board.clone(),
        )
        .await
        .map_err(NodeError::Tree)?;
        let (root_done_tx, root_done) = oneshot::channel();
        tokio::spawn(async move {
            let _ = root_handle.await;
            let _ = root_done_tx.send(());
        });
        tracing::info!(
            components = components::BUILTIN.len(),
            connectors = connectors.len(),
            "supervision tree up"
        );

        phase.set(Phase::Ready);
        tracing::info!(
            node = %name,
            %http_addr,
            %metrics_addr,
            boot_ms = started.elapsed().as_millis() as u64,
            "node ready"
        );
        Ok(Node {
            config,
            board,
            bus,
            broker,
            phase,
            http_addr,
            metrics_addr,
            root,
            root_done,
            state_feed,
            ctx,
            http_stop,
            http_task,
            lock,
            started,
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.config.node.name
    }

    /// The config it runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The address the HTTP server is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address the metrics exporter is bound to.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The node's status board.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// The node's bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Producers' handle on the node's broker.
    pub fn broker(&self) -> &BrokerHandle {
        &self.broker
    }

    /// The node's phase.
    pub fn phase(&self) -> Phase {
        self.phase.get()
    }
}

/// In `jetstream` mode with NATS reachable at boot, creates or checks the stream, so that a
/// stream that conflicts stops the node with a clear error instead of filling the disk queue.
/// When NATS is not reachable yet the broker checks it once it connects.
async fn check_stream(bus: &Bus, options: &BrokerOptions) -> Result<(), NodeError> {
    if options.mode != DeliveryMode::Jetstream {
        return Ok(());
    }
    let Some(js) = JetStream::new(bus, options.ack_timeout, 1) else {
        return Ok(());
    };
    if bus.connection_state() != ConnectionState::Connected {
        tracing::warn!("nats is not reachable yet; the broker checks the stream once it connects");
        return Ok(());
    }
    match js.ensure_stream(&options.stream).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_retryable() => {
            tracing::warn!(error = %e, "jetstream stream not checked at boot; the broker retries");
            Ok(())
        }
        Err(e) => Err(NodeError::Stream(e)),
    }
}
