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
pub trait Transport: Send + 'static {
    /// Sends one request and waits for its response.
    fn request(&mut self, request: Request) -> BoxFuture<'_, Result<Response, TransportError>>;
}

/// A connector linked into the node, called through the SDK's adapter on the actor's own task.
/// A panic in the connector is a panic of the actor, which its supervisor restarts.
#[derive(Debug)]
pub struct StaticTransport<P: Plugin> {
    adapter: Adapter<P>,
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
            adapter: Adapter::new(vtable, ctx),
            _cancel: cancel,
        }
    }
}

impl<P: Plugin> Transport for StaticTransport<P> {
    fn request(&mut self, request: Request) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(async move { Ok(self.adapter.handle(request).await) })
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
