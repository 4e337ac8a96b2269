//! `cmms-http`: a connector to a CMMS (computerised maintenance management system) over its
//! REST API: list and create work orders, read assets.
//!
//! It offers three shapes (`plugin_vtable!(pub CMMS: CmmsHttp, source, sink, responder)`):
//!
//! - **responder**: `list_work_orders`, `create_work_order`, `get_asset`, `list_assets` (see
//!   [`responder`] for the payloads and answers); the node serves them on
//!   `<prefix>.rpc.<instance>.<method>`;
//! - **sink**: every event written is a create-work-order request (the `create_work_order`
//!   payload), with one result per event (see [`sink`]);
//! - **source**: what the connector publishes: in sandbox mode the creates it did *not* send,
//!   on `<prefix>.ev.<instance>.would_write`; otherwise (with `publish_created`) every work
//!   order created, on `<prefix>.ev.<instance>.work_order.created` (see [`outbox`]).
//!
//! Every HTTP request goes through the design's CMMS retry policy (`min(0.5 s * 2^n, 8 s)`, 3
//! retries, `Retry-After` honoured, other 4xx fail fast, a `POST` not repeated after a network
//! error unless it carries an idempotency key) and one circuit breaker per instance, whose
//! state `health` reports (see [`client`]). The credential is read from an environment
//! variable or a file and never logged ([`secret`]).
//!
//! HTTP semantics: [RFC 9110](https://www.rfc-editor.org/rfc/rfc9110) (`Retry-After` in
//! section 10.2.3, idempotent methods in 9.2.2); idempotency keys after the IETF draft
//! [`Idempotency-Key` header](https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/).
//! Operator docs: `docs/connectors/cmms-http.md`.

pub mod client;
pub mod config;
pub mod outbox;
pub mod responder;
pub mod secret;
pub mod sink;

use millwright_plugin_sdk::prelude::*;
use millwright_plugin_sdk::{export_plugin, plugin_vtable};
use serde_json::{Value, json};

use crate::client::CmmsClient;
use crate::config::{CmmsConfig, Settings};
use crate::outbox::Outbox;
use crate::responder::{CreateRequest, Request};
use crate::secret::Secret;

/// The tag of sandbox writes: `<prefix>.ev.<instance>.would_write`.
pub const WOULD_WRITE_TAG: &str = "would_write";
/// The tag of created work orders: `<prefix>.ev.<instance>.work_order.created`.
pub const CREATED_TAG: &str = "work_order.created";

/// Where a create came from.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    /// A `create_work_order` call.
    Call,
    /// A sink event, with its id.
    Event(&'a EventId),
}

impl Origin<'_> {
    fn name(&self) -> &'static str {
        match self {
            Origin::Call => "call",
            Origin::Event(_) => "sink",
        }
    }

    fn event_id(&self) -> Value {
        match self {
            Origin::Call => Value::Null,
            Origin::Event(id) => Value::String(id.to_string()),
        }
    }
}

/// The plugin: one CMMS instance.
#[derive(Debug)]
pub struct CmmsHttp {
    settings: Settings,
    /// Built at connect (it needs the secret).
    client: Option<CmmsClient>,
    /// One breaker per instance, kept across reconnects.
    breaker: SharedCircuitBreaker,
    outbox: Outbox,
    /// Outbox events dropped at capacity, ever.
    shed: u64,
}

impl Plugin for CmmsHttp {
    type Config = CmmsConfig;
    const ID: &'static str = "cmms-http";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "CMMS over HTTP: list and create work orders, read assets; retries, breaker, sandbox mode";

    fn new(config: CmmsConfig, _ctx: &Context) -> Result<Self, ConnectorError> {
        let settings = Settings::from_config(&config)?;
        Ok(Self {
            breaker: SharedCircuitBreaker::new(settings.breaker),
            outbox: Outbox::new(settings.outbox_capacity),
            settings,
            client: None,
            shed: 0,
        })
    }
}

impl CmmsHttp {
    /// The client, built on first use if `connect` was not called.
    async fn client(&mut self, ctx: &Context) -> Result<&mut CmmsClient, ConnectorError> {
        if self.client.is_none() {
            self.build_client(ctx).await?;
        }
        self.client
            .as_mut()
            .ok_or_else(|| ConnectorError::NotConnected("connect first".to_owned()))
    }

    async fn build_client(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        let secret = match &self.settings.auth {
            Some(auth) => Some(Secret::load(auth).await?),
            None => None,
        };
        let client = CmmsClient::new(self.settings.clone(), secret, self.breaker.clone())?;
        ctx.log(
            Level::Info,
            "cmms-http ready",
            &[
                ("base_url", &self.settings.base),
                ("sandbox", &self.settings.sandbox),
                (
                    "auth",
                    &self
                        .settings
                        .auth
                        .as_ref()
                        .map_or("none", |a| match a.scheme {
                            config::AuthScheme::Bearer => "bearer",
                            config::AuthScheme::ApiKey => "api_key",
                        }),
                ),
            ],
        );
        self.client = Some(client);
        Ok(())
    }

    fn publish(&mut self, ctx: &Context, tag: &str, payload: Value) {
        let event = Envelope::new(ctx.instance(), ctx.event_subject(tag), payload);
        if let Some(dropped) = self.outbox.push(event) {
            self.shed += 1;
            ctx.counter("cmms_outbox_dropped_total", &[], 1);
            if self.shed == 1 || self.shed.is_multiple_of(1000) {
                ctx.log(
                    Level::Warn,
                    "cmms-http outbox full: dropped the oldest event (is the node reading this \
                     instance as a source?)",
                    &[
                        ("subject", &dropped.subject),
                        ("capacity", &self.settings.outbox_capacity),
                        ("dropped_total", &self.shed),
                    ],
                );
            }
        }
        ctx.gauge("cmms_outbox_events", &[], self.outbox.len() as f64);
    }

    /// Creates a work order (or, in sandbox mode, records that it would have).
    async fn create(
        &mut self,
        ctx: &Context,
        request: CreateRequest,
        origin: Origin<'_>,
    ) -> Result<Value, ConnectorError> {
        let key = request.idempotency_key.clone().or_else(|| {
            self.settings.auto_idempotency_keys.then(|| match origin {
                Origin::Event(id) => id.to_string(),
                Origin::Call => EventId::new().to_string(),
            })
        });
        let call = responder::create_call(&self.settings, &request, key.clone());
        if self.settings.sandbox {
            let would_write = json!({
                "method": "POST",
                "url": call.url,
                "idempotency_key": key,
                "body": call.body,
                "origin": origin.name(),
                "event_id": origin.event_id(),
            });
            let body = client::excerpt(&serde_json::to_string(&call.body).unwrap_or_default());
            // The secret is never part of the record; scrub in case a payload echoes it.
            let body = match &self.client {
                Some(c) => c.scrub(&body),
                None => body,
            };
            ctx.log(
                Level::Info,
                "sandbox: would create a work order (not sent)",
                &[
                    ("http", &format!("POST {}", call.url)),
                    ("origin", &origin.name()),
                    ("idempotency_key", &key.as_deref().unwrap_or("-")),
                    ("body", &body),
                ],
            );
            ctx.counter("cmms_sandbox_writes_total", &[], 1);
            self.publish(ctx, WOULD_WRITE_TAG, would_write.clone());
            return Ok(json!({"sandbox": true, "would_write": would_write}));
        }
        let answer = self.client(ctx).await?.send(ctx, &call).await?;
        ctx.counter("cmms_work_orders_created_total", &[], 1);
        if self.settings.publish_created {
            self.publish(
                ctx,
                CREATED_TAG,
                json!({
                    "status": answer.status,
                    "work_order": answer.body,
                    "idempotency_key": key,
                    "origin": origin.name(),
                    "event_id": origin.event_id(),
                }),
            );
        }
        Ok(json!({
            "sandbox": false,
            "status": answer.status,
            "work_order": answer.body,
            "idempotency_key": key,
            "attempts": answer.attempts,
        }))
    }
}

impl Connector for CmmsHttp {
    /// Reads the secret and builds the HTTP client; makes no request (a CMMS that is down
    /// shows in the first call and in `health`). Unacknowledged outbox events are handed out
    /// again.
    async fn connect(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        self.outbox.rewind();
        self.build_client(ctx).await
    }

    async fn close(&mut self, ctx: &Context) {
        self.client = None;
        ctx.info("cmms-http closed");
    }

    /// One `GET` of `paths.assets`, retried like any read.
    async fn connection_test(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        let Request::Read(call) = responder::parse(&self.settings, "list_assets", Value::Null)?
        else {
            return Ok(());
        };
        self.client(ctx).await?.send(ctx, &call).await.map(|_| ())
    }

    /// `unhealthy` while the breaker is open, `degraded` while it probes or after a failed
    /// request, `healthy` otherwise.
    async fn health(&mut self, _ctx: &Context) -> Health {
        match &self.client {
            Some(c) => c.health(),
            None => Health::Degraded("not connected yet".to_owned()),
        }
    }
}

impl Responder for CmmsHttp {
    async fn call(
        &mut self,
        ctx: &Context,
        method: &str,
        payload: Value,
    ) -> Result<Value, ConnectorError> {
        let result = match responder::parse(&self.settings, method, payload) {
            Ok(Request::Read(call)) => match self.client(ctx).await {
                Ok(client) => client.send(ctx, &call).await.map(|a| a.body),
                Err(e) => Err(e),
            },
            Ok(Request::Create(request)) => self.create(ctx, request, Origin::Call).await,
            Err(e) => Err(e),
        };
        let method_label = responder::METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("unknown");
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        ctx.counter(
            "cmms_calls_total",
            &[("method", method_label), ("outcome", outcome)],
            1,
        );
        result
    }
}

impl Source for CmmsHttp {
    /// The outbox's next events. With none, the read waits: only this instance's own calls
    /// and writes fill the outbox, and each of them interrupts the read first (the host reads
    /// again after it), so an idle CMMS connector costs nothing.
    async fn read_batch(
        &mut self,
        ctx: &Context,
        max: usize,
    ) -> Result<SourceBatch, ConnectorError> {
        let batch = self.outbox.read(max);
        if batch.events.is_empty() {
            std::future::pending::<()>().await;
        }
        if !batch.events.is_empty() {
            ctx.counter("cmms_published_total", &[], batch.events.len() as u64);
        }
        Ok(batch)
    }

    async fn ack(&mut self, ctx: &Context, token: AckToken) -> Result<(), ConnectorError> {
        self.outbox.ack(token);
        ctx.gauge("cmms_outbox_events", &[], self.outbox.len() as f64);
        Ok(())
    }
}

plugin_vtable!(pub CMMS: CmmsHttp, source, sink, responder);

/// Serves the plugin out of process (the executable's `main`).
pub fn serve() -> std::process::ExitCode {
    millwright_plugin_sdk::stdio::serve(&CMMS)
}

export_plugin!(&CMMS, CmmsHttp);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use millwright_plugin_sdk::context::{Host, LogRecord, MetricUpdate};

    use super::*;

    struct Quiet;

    impl Host for Quiet {
        fn log(&self, _: &str, _: LogRecord) {}
        fn metric(&self, _: &str, _: MetricUpdate) {}
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_secret() {
        let secret = format!("dbg-secret-{}", EventId::new());
        let path = std::env::temp_dir().join(format!("cmms-http-dbg-{}", EventId::new()));
        std::fs::write(&path, &secret).unwrap();
        let config: CmmsConfig = serde_json::from_value(json!({
            "base_url": "http://127.0.0.1:9/api",
            "auth": {"scheme": "api_key", "secret_file": path},
        }))
        .unwrap();
        let (ctx, _cancel) = Context::new("cmms-http", "t", Value::Null, Arc::new(Quiet));
        let mut plugin = CmmsHttp::new(config, &ctx).unwrap();
        plugin.connect(&ctx).await.unwrap();
        let shown = format!("{plugin:?} {plugin:#?}");
        let _ = std::fs::remove_file(&path);
        assert!(shown.contains("Secret(***)"), "{shown}");
        assert!(
            shown.contains("Sensitive"),
            "the header is marked sensitive: {shown}"
        );
        assert!(!shown.contains(&secret), "{shown}");
    }
}
