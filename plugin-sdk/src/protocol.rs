//! The messages between a host and a plugin instance, and the [`Adapter`] that turns them
//! into calls on the connector traits.
//!
//! Every transport speaks exactly these messages: the test harness calls the adapter directly,
//! the in-process ABI passes them as owned byte buffers, the out-of-process transport as
//! length-prefixed frames, both encoded with [`codec`](crate::codec) (MessagePack). One request
//! at a time per instance; each gets one response. Batches cross once per batch, not per event.
//! A read waits until the source has data; the host ends a waiting read with an interrupt (see
//! [`interrupt`](crate::interrupt)) when it needs the instance, and the read answers
//! [`Response::Interrupted`].
//!
//! The enums are externally tagged (`{"read_batch": {"max": 64}}`, `"connect"`), not internally
//! tagged: see [`codec`](crate::codec) for why.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::connector::{AckToken, ConnectorError, Health, Kind, Plugin, SourceBatch, WriteResult};
use crate::context::Context;
use crate::event::Envelope;
use crate::interrupt::ReadTicket;
use crate::retired;

/// A request from the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Build the instance from its (validated) config: the first request.
    Open {
        /// The instance's config, as the user wrote it.
        config: serde_json::Value,
        /// The node's subject prefix (`mw`), for [`Context::event_subject`].
        #[serde(default = "default_subject_prefix")]
        subject_prefix: String,
    },
    /// [`Connector::connect`](crate::connector::Connector::connect).
    Connect,
    /// [`Source::read_batch`](crate::connector::Source::read_batch).
    ReadBatch {
        /// Most events to return.
        max: usize,
    },
    /// [`Source::ack`](crate::connector::Source::ack).
    Ack {
        /// The batch's token.
        token: AckToken,
    },
    /// [`Source::ack`](crate::connector::Source::ack) and, if it worked,
    /// [`Source::read_batch`](crate::connector::Source::read_batch): one crossing of the
    /// boundary per batch instead of two (the connector actor acknowledges a published batch
    /// with its next read). An error is the ack's (nothing was read) or the read's; either way
    /// the host goes on as after a failed ack: whatever was not acknowledged is read again.
    AckThenRead {
        /// The published batch's token.
        token: AckToken,
        /// Most events to return.
        max: usize,
    },
    /// [`Sink::write_batch`](crate::connector::Sink::write_batch).
    WriteBatch {
        /// The events.
        events: Vec<Envelope>,
    },
    /// [`Responder::call`](crate::connector::Responder::call).
    Call {
        /// The method.
        method: String,
        /// Its argument.
        payload: serde_json::Value,
    },
    /// [`Connector::connection_test`](crate::connector::Connector::connection_test).
    ConnectionTest,
    /// [`Connector::health`](crate::connector::Connector::health).
    Health,
    /// [`Connector::close`](crate::connector::Connector::close); the instance is gone after.
    Close,
}

fn default_subject_prefix() -> String {
    crate::context::DEFAULT_SUBJECT_PREFIX.to_owned()
}

impl Request {
    /// Whether this request reads from the source (`read_batch`, `ack_then_read`): it waits
    /// until there is data, and the host may interrupt it.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Request::ReadBatch { .. } | Request::AckThenRead { .. }
        )
    }

    /// The `open` request with the default subject prefix (`mw`).
    pub fn open(config: serde_json::Value) -> Self {
        Request::Open {
            config,
            subject_prefix: default_subject_prefix(),
        }
    }
}

/// The answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Done, nothing to return (`open`, `connect`, `ack`, `connection_test`, `close`).
    Done,
    /// A source batch.
    Batch {
        /// The batch.
        batch: SourceBatch,
    },
    /// One outcome per written event.
    Written {
        /// In order.
        results: Vec<WriteResult>,
    },
    /// A call's answer.
    Reply {
        /// The JSON answer.
        payload: serde_json::Value,
    },
    /// The connector's health.
    Health {
        /// It.
        health: Health,
    },
    /// The call failed.
    Error {
        /// Why.
        error: ConnectorError,
    },
    /// A read the host interrupted before it had data: nothing was read (an `ack_then_read`'s
    /// ack was done).
    Interrupted,
}

/// A boxed, sendable future (what the vtable's entries return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connector call the adapter can make, bound to one plugin type.
pub type Call<P, A, R> = for<'a> fn(&'a mut P, &'a Context, A) -> BoxFuture<'a, R>;

/// `Sink::write_batch` as a vtable entry.
pub type WriteBatchCall<P> = Call<P, Vec<Envelope>, Result<Vec<WriteResult>, ConnectorError>>;
/// `Responder::call` as a vtable entry.
pub type RespondCall<P> =
    Call<P, (String, serde_json::Value), Result<serde_json::Value, ConnectorError>>;

/// How the adapter reaches one plugin type's trait methods: built by [`plugin_vtable!`], one
/// `static` per plugin. `None` for a shape the plugin does not offer.
#[allow(missing_debug_implementations)]
pub struct VTable<P: Plugin> {
    /// The shapes offered.
    pub kinds: &'static [Kind],
    /// `Connector::connect`.
    pub connect: Call<P, (), Result<(), ConnectorError>>,
    /// `Connector::close`.
    pub close: Call<P, (), ()>,
    /// `Connector::connection_test`.
    pub connection_test: Call<P, (), Result<(), ConnectorError>>,
    /// `Connector::health`.
    pub health: Call<P, (), Health>,
    /// `Source::read_batch`.
    pub read_batch: Option<Call<P, usize, Result<SourceBatch, ConnectorError>>>,
    /// `Source::ack`.
    pub ack: Option<Call<P, AckToken, Result<(), ConnectorError>>>,
    /// `Sink::write_batch`.
    pub write_batch: Option<WriteBatchCall<P>>,
    /// `Responder::call`.
    pub call: Option<RespondCall<P>>,
}

/// Builds the [`VTable`] of a plugin as a `static`: `plugin_vtable!(NAME: Type, source,
/// responder);` with any of `source`, `sink`, `responder` (`pub NAME` to export it).
#[macro_export]
macro_rules! plugin_vtable {
    ($vis:vis $name:ident : $ty:ty $(, $kind:ident)* $(,)?) => {
        $vis static $name: $crate::protocol::VTable<$ty> = $crate::protocol::VTable {
            kinds: &[$($crate::plugin_vtable!(@kind $kind)),*],
            connect: |p, ctx, ()| ::std::boxed::Box::pin($crate::connector::Connector::connect(p, ctx)),
            close: |p, ctx, ()| ::std::boxed::Box::pin($crate::connector::Connector::close(p, ctx)),
            connection_test: |p, ctx, ()| {
                ::std::boxed::Box::pin($crate::connector::Connector::connection_test(p, ctx))
            },
            health: |p, ctx, ()| ::std::boxed::Box::pin($crate::connector::Connector::health(p, ctx)),
            read_batch: $crate::plugin_vtable!(@pick source [$($kind)*]
                |p, ctx, max| ::std::boxed::Box::pin($crate::connector::Source::read_batch(p, ctx, max))),
            ack: $crate::plugin_vtable!(@pick source [$($kind)*]
                |p, ctx, token| ::std::boxed::Box::pin($crate::connector::Source::ack(p, ctx, token))),
            write_batch: $crate::plugin_vtable!(@pick sink [$($kind)*]
                |p, ctx, events| ::std::boxed::Box::pin($crate::connector::Sink::write_batch(p, ctx, events))),
            call: $crate::plugin_vtable!(@pick responder [$($kind)*]
                |p, ctx, (method, payload): (::std::string::String, $crate::__serde_json::Value)| {
                    ::std::boxed::Box::pin(async move {
                        $crate::connector::Responder::call(p, ctx, &method, payload).await
                    })
                }),
        };
    };
    (@kind source) => { $crate::connector::Kind::Source };
    (@kind sink) => { $crate::connector::Kind::Sink };
    (@kind responder) => { $crate::connector::Kind::Responder };
    (@pick $want:ident [] $f:expr) => { None };
    (@pick source [source $($rest:ident)*] $f:expr) => { Some($f) };
    (@pick sink [sink $($rest:ident)*] $f:expr) => { Some($f) };
    (@pick responder [responder $($rest:ident)*] $f:expr) => { Some($f) };
    (@pick $want:ident [$other:ident $($rest:ident)*] $f:expr) => {
        $crate::plugin_vtable!(@pick $want [$($rest)*] $f)
    };
}

/// One plugin instance behind the message interface: every transport's far end.
pub struct Adapter<P: Plugin> {
    vtable: &'static VTable<P>,
    ctx: Context,
    instance: Option<P>,
}

impl<P: Plugin> std::fmt::Debug for Adapter<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("plugin", &P::ID)
            .field("open", &self.instance.is_some())
            .finish()
    }
}

fn unsupported(what: &str, id: &str) -> Response {
    Response::Error {
        error: ConnectorError::Config(format!("plugin {id} is not a {what}")),
    }
}

impl<P: Plugin> Adapter<P> {
    /// An adapter for an instance with this context; it is built by the first `Open`.
    pub fn new(vtable: &'static VTable<P>, ctx: Context) -> Self {
        Self {
            vtable,
            ctx,
            instance: None,
        }
    }

    /// The instance's context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Handles one request; a read waits until the source has data (see [`serve`](Self::serve)
    /// for a read the host can interrupt).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future may leave the connector mid-call; the host then
    /// treats the instance as poisoned and restarts it.
    pub async fn handle(&mut self, request: Request) -> Response {
        self.serve(request, None).await
    }

    /// Handles one request; a read (`read_batch`, or the read of `ack_then_read`) with a
    /// `ticket` answers [`Response::Interrupted`] as soon as the ticket's read is interrupted
    /// (dropping the source's read future at its await).
    ///
    /// # Cancel safety
    /// As [`handle`](Self::handle).
    pub async fn serve(&mut self, request: Request, ticket: Option<ReadTicket>) -> Response {
        let done = |r: Result<(), ConnectorError>| match r {
            Ok(()) => Response::Done,
            Err(error) => Response::Error { error },
        };
        if let Request::Open {
            config,
            subject_prefix,
        } = request
        {
            self.ctx = self.ctx.opened(config.clone(), &subject_prefix);
            // A renamed or removed key is refused with what to write instead, before serde
            // would call it merely unknown.
            let schema = serde_json::to_value(schemars::schema_for!(P::Config));
            if let Err(refused) = retired::check(&schema.unwrap_or_default(), &config) {
                return Response::Error {
                    error: ConnectorError::Config(refused.to_string()),
                };
            }
            return match serde_path_to_error::deserialize::<_, P::Config>(config) {
                Ok(config) => match P::new(config, &self.ctx) {
                    Ok(p) => {
                        self.instance = Some(p);
                        Response::Done
                    }
                    Err(error) => Response::Error { error },
                },
                Err(e) => Response::Error {
                    error: ConnectorError::Config(match e.path().to_string().as_str() {
                        "." => e.into_inner().to_string(),
                        path => format!("{path}: {}", e.into_inner()),
                    }),
                },
            };
        }
        let vt = self.vtable;
        let Some(p) = self.instance.as_mut() else {
            return Response::Error {
                error: ConnectorError::Fatal(format!("plugin {}: {request:?} before open", P::ID)),
            };
        };
        let ctx = &self.ctx;
        match request {
            Request::Open { .. } => unreachable!("handled above"),
            Request::Connect => done((vt.connect)(p, ctx, ()).await),
            Request::ConnectionTest => done((vt.connection_test)(p, ctx, ()).await),
            Request::Health => Response::Health {
                health: (vt.health)(p, ctx, ()).await,
            },
            Request::Close => {
                (vt.close)(p, ctx, ()).await;
                self.instance = None;
                Response::Done
            }
            Request::ReadBatch { max } => match vt.read_batch {
                Some(f) => interruptible(f(p, ctx, max), ticket).await,
                None => unsupported("source", P::ID),
            },
            Request::Ack { token } => match vt.ack {
                Some(f) => done(f(p, ctx, token).await),
                None => unsupported("source", P::ID),
            },
            Request::AckThenRead { token, max } => match (vt.ack, vt.read_batch) {
                (Some(ack), Some(read)) => match ack(p, ctx, token).await {
                    Ok(()) => interruptible(read(p, ctx, max), ticket).await,
                    Err(error) => Response::Error { error },
                },
                _ => unsupported("source", P::ID),
            },
            Request::WriteBatch { events } => match vt.write_batch {
                Some(f) => match f(p, ctx, events).await {
                    Ok(results) => Response::Written { results },
                    Err(error) => Response::Error { error },
                },
                None => unsupported("sink", P::ID),
            },
            Request::Call { method, payload } => match vt.call {
                Some(f) => match f(p, ctx, (method, payload)).await {
                    Ok(payload) => Response::Reply { payload },
                    Err(error) => Response::Error { error },
                },
                None => unsupported("responder", P::ID),
            },
        }
    }
}

/// A source's read, ended early (the future dropped at its await) when `ticket`'s read is
/// interrupted.
async fn interruptible(
    read: BoxFuture<'_, Result<SourceBatch, ConnectorError>>,
    ticket: Option<ReadTicket>,
) -> Response {
    let answer = |r: Result<SourceBatch, ConnectorError>| match r {
        Ok(batch) => Response::Batch { batch },
        Err(error) => Response::Error { error },
    };
    let Some(ticket) = ticket else {
        return answer(read.await);
    };
    let Some(interrupted) = ticket.arm() else {
        return Response::Interrupted;
    };
    let response = tokio::select! {
        biased;
        // A dropped sender (the interrupts gone with the host's side) is not an interrupt.
        Ok(()) = interrupted => Response::Interrupted,
        r = read => answer(r),
    };
    ticket.disarm();
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::codec;
    use crate::event::Quality;

    fn events() -> Vec<Envelope> {
        vec![
            Envelope::new(
                "press1",
                "mw.ev.press1.t",
                serde_json::json!({"v": 1.5, "ok": true}),
            )
            .with_source_time(chrono::Utc::now())
            .with_quality(Quality::Bad),
            Envelope::new(
                "press1",
                "mw.ev.press1.n",
                serde_json::json!([1, -1, "x", null]),
            ),
        ]
    }

    fn errors() -> Vec<ConnectorError> {
        vec![
            ConnectorError::NotConnected("refused".into()),
            ConnectorError::BackOff(Duration::from_millis(1500)),
            ConnectorError::Config("`port`: expected a number".into()),
            ConnectorError::Transient("timeout".into()),
            ConnectorError::Fatal("panicked".into()),
            ConnectorError::EndOfInput,
        ]
    }

    fn round_trip<T>(value: &T)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let bytes = codec::encode(value).unwrap();
        let back: T = codec::decode(&bytes)
            .unwrap_or_else(|e| panic!("{value:?} does not decode from its encoding: {e}"));
        assert_eq!(&back, value);
    }

    #[test]
    fn every_request_round_trips() {
        let requests = [
            Request::open(serde_json::json!({"count": 3, "nested": {"a": [1.25, "b"]}})),
            Request::Open {
                config: serde_json::Value::Null,
                subject_prefix: "site1".into(),
            },
            Request::Connect,
            Request::ReadBatch { max: 64 },
            Request::ReadBatch { max: usize::MAX },
            Request::Ack {
                token: AckToken(u64::MAX),
            },
            Request::AckThenRead {
                token: AckToken(3),
                max: 64,
            },
            Request::WriteBatch { events: events() },
            Request::WriteBatch { events: vec![] },
            Request::Call {
                method: "read_tag".into(),
                payload: serde_json::json!({"tag": "t1"}),
            },
            Request::ConnectionTest,
            Request::Health,
            Request::Close,
        ];
        for r in &requests {
            round_trip(r);
        }
    }

    #[tokio::test]
    async fn ack_then_read_acknowledges_then_reads_the_next_batch() {
        use crate::harness::{TestHost, VEC_SOURCE};
        let values = serde_json::json!({"values": [1, 2, 3, 4, 5]});
        let mut host = TestHost::open(VEC_SOURCE, "v", values).await.unwrap();
        let values = |r: Response| match r {
            Response::Batch { batch } => (
                batch.token,
                batch
                    .events
                    .into_iter()
                    .map(|e| e.payload)
                    .collect::<Vec<_>>(),
            ),
            other => panic!("a batch, got {other:?}"),
        };
        // The read's error, after the ack (of nothing yet) worked.
        let early = Request::AckThenRead {
            token: AckToken(0),
            max: 2,
        };
        assert!(matches!(
            host.request(early).await,
            Response::Error {
                error: ConnectorError::NotConnected(_)
            }
        ));
        assert_eq!(host.request(Request::Connect).await, Response::Done);
        let (token, first) = values(host.request(Request::ReadBatch { max: 2 }).await);
        assert_eq!(first, [1, 2]);
        let (_, second) = values(host.request(Request::AckThenRead { token, max: 2 }).await);
        assert_eq!(second, [3, 4]);
        // A reconnect starts after what was acknowledged: 1 and 2 were, 3 and 4 not.
        assert_eq!(host.request(Request::Connect).await, Response::Done);
        let (_, again) = values(host.request(Request::ReadBatch { max: 10 }).await);
        assert_eq!(again, [3, 4, 5]);
    }

    #[test]
    fn every_response_round_trips() {
        let mut responses = vec![
            Response::Done,
            Response::Batch {
                batch: SourceBatch::new(AckToken(7), events()),
            },
            Response::Batch {
                batch: SourceBatch::new(AckToken(0), vec![]),
            },
            Response::Written {
                results: vec![
                    Ok(()),
                    Err(ConnectorError::Transient("busy".into())),
                    Ok(()),
                ],
            },
            Response::Reply {
                payload: serde_json::json!({"value": -3}),
            },
            Response::Health {
                health: Health::Healthy,
            },
            Response::Health {
                health: Health::Degraded("lagging 3 s".into()),
            },
            Response::Health {
                health: Health::Unhealthy("PLC unreachable".into()),
            },
        ];
        responses.extend(errors().into_iter().map(|error| Response::Error { error }));
        for r in &responses {
            round_trip(r);
        }
    }

    #[test]
    fn a_message_is_not_read_as_another() {
        let bytes = codec::encode(&Request::Connect).unwrap();
        assert!(codec::decode::<Response>(&bytes).is_err());
        let bytes = codec::encode(&Response::Done).unwrap();
        assert!(codec::decode::<Request>(&bytes).is_err());
        assert!(
            codec::decode::<Request>(&[0xc1]).is_err(),
            "a reserved marker"
        );
        assert!(codec::decode::<Request>(&[]).is_err(), "nothing");
    }
}
