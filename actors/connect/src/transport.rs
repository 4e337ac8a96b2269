//! How the connector actor reaches its plugin: one request, one response.
//!
//! Every transport carries the SDK's [`Request`]/[`Response`] messages. A [`TransportError`]
//! means the *transport* failed (a plugin process died, a call timed out, a plugin library
//! panicked): the actor fails and its supervisor restarts the instance. A connector's own
//! failures travel inside [`Response::Error`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use millwright_plugin_sdk::connector::Plugin;
use millwright_plugin_sdk::context::{
    CancelHandle, Context, Host, Level, LogRecord, MetricKind, MetricUpdate,
};
use millwright_plugin_sdk::interrupt::ReadInterrupts;
use millwright_plugin_sdk::protocol::{Adapter, Request, Response, VTable};

/// The transport failed; the instance must be restarted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The plugin did not answer within its call timeout.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The plugin went away (its process exited, it panicked across the boundary).
    #[error("plugin gone: {0}")]
    Gone(String),
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One plugin instance's end of the wire.
///
/// A request is started when [`request`](Transport::request) is called, in call order, and
/// its answer is a future that does not borrow the transport, so the connector actor can keep
/// a read in flight (it waits until the source has data) while it handles other messages.
/// Every request but a read is bounded by the instance's call timeout; a read is bounded by
/// nothing (an idle source costs nothing) until the actor [interrupts](Transport::interrupt)
/// it, after which the next request's timeout covers it too (that request queues behind it).
pub trait Transport: Send + 'static {
    /// Gets the transport ready (starts a plugin process); called once, before the first
    /// request. Default: nothing to do.
    fn start(&mut self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }

    /// Starts one request and returns its response to await.
    fn request(&mut self, request: Request)
    -> BoxFuture<'static, Result<Response, TransportError>>;

    /// Ends the read in flight if it waits for data: it answers [`Response::Interrupted`].
    /// Does nothing when no read is in flight.
    fn interrupt(&mut self);
}

/// A connector linked into the node, called through the SDK's adapter on the task that awaits
/// the answer. A panic in the connector is a panic of that task: the request fails and the
/// actor's supervisor restarts the instance.
#[derive(Debug)]
pub struct StaticTransport<P: Plugin> {
    adapter: Arc<tokio::sync::Mutex<Adapter<P>>>,
    interrupts: ReadInterrupts,
    /// The id of the last read started.
    reads: u64,
    /// Cancels the instance's context when the transport (the incarnation) goes.
    _cancel: CancelHandle,
}

impl<P: Plugin> StaticTransport<P> {
    /// Instance `instance` of plugin `P` with `config`, logging and measuring through the
    /// node.
    pub fn new(vtable: &'static VTable<P>, instance: &str, config: serde_json::Value) -> Self {
        let (ctx, cancel) = Context::new(
            P::ID,
            instance,
            config,
            Arc::new(NodeHost {
                plugin: P::ID.to_owned(),
            }),
        );
        Self {
            adapter: Arc::new(tokio::sync::Mutex::new(Adapter::new(vtable, ctx))),
            interrupts: ReadInterrupts::new(),
            reads: 0,
            _cancel: cancel,
        }
    }
}

impl<P: Plugin> Transport for StaticTransport<P> {
    fn request(
        &mut self,
        request: Request,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        let ticket = request.is_read().then(|| {
            self.reads += 1;
            self.interrupts.ticket(self.reads)
        });
        // Locked in call order (the mutex is fair), so requests run in the order they came.
        let adapter = self.adapter.clone().lock_owned();
        Box::pin(async move {
            let mut adapter = adapter.await;
            let served = tokio::spawn(async move { adapter.serve(request, ticket).await });
            served.await.map_err(|e| {
                TransportError::Gone(if e.is_panic() {
                    "the connector panicked".to_owned()
                } else {
                    e.to_string()
                })
            })
        })
    }

    fn interrupt(&mut self) {
        self.interrupts.interrupt(self.reads);
    }
}

/// The node as a plugin's [`Host`]: logs go to `tracing` and metrics to the `metrics`
/// recorder, labelled with the plugin and the instance.
#[derive(Debug, Clone)]
pub struct NodeHost {
    /// The plugin's id.
    pub plugin: String,
}

impl Host for NodeHost {
    fn log(&self, instance: &str, record: LogRecord) {
        let fields = record
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let plugin = self.plugin.as_str();
        match record.level {
            Level::Error => tracing::error!(plugin, instance, %fields, "{}", record.message),
            Level::Warn => tracing::warn!(plugin, instance, %fields, "{}", record.message),
            Level::Info => tracing::info!(plugin, instance, %fields, "{}", record.message),
            Level::Debug => tracing::debug!(plugin, instance, %fields, "{}", record.message),
            Level::Trace => tracing::trace!(plugin, instance, %fields, "{}", record.message),
        }
    }

    fn metric(&self, instance: &str, update: MetricUpdate) {
        let name = format!("mw_plugin_{}", update.name);
        let mut labels = vec![
            ("plugin".to_owned(), self.plugin.clone()),
            ("instance".to_owned(), instance.to_owned()),
        ];
        labels.extend(update.labels);
        let labels: Vec<metrics::Label> = labels
            .into_iter()
            .map(|(k, v)| metrics::Label::new(k, v))
            .collect();
        match update.kind {
            MetricKind::Counter => metrics::counter!(name, labels).increment(update.value as u64),
            MetricKind::Gauge => metrics::gauge!(name, labels).set(update.value),
            MetricKind::Histogram => metrics::histogram!(name, labels).record(update.value),
        }
    }
}
