//! The NATS backend (async-nats), configured for an industrial node.
//!
//! - The connection has a name (shown by `nats server report connections`).
//! - It reconnects forever, with jittered exponential backoff (first retry at once, then
//!   `reconnect_delay_min` doubling up to `reconnect_delay_max`).
//! - It pings the server every `ping_interval` (2 s by default); after two unanswered pings
//!   the client drops the connection and reconnects, so a hung server (or a cut cable, which
//!   TCP alone notices only after minutes) is noticed within a few seconds.
//! - A connection event callback logs every event, keeps the metrics `mw_bus_connected` and
//!   `mw_bus_disconnects_total`, and publishes the [`ConnectionState`] on a watch channel.
//! - Publishing is the client's own send path with as little around it as possible: subjects
//!   seen before come validated from a cache, shared instead of copied, and the returned future
//!   is a single hand-written state machine (`benches/benches/bus_nats.rs` measures it against
//!   raw async-nats).
//! - Publishing and requests fail fast with [`BusError::Disconnected`] while the connection is
//!   down, instead of queueing inside the client: the broker then puts the event in its disk
//!   queue. Subscriptions, in contrast, are kept and restored by the client on reconnect.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_nats::client::traits::Publisher;
use async_nats::connection::State;
use async_nats::message::OutboundMessage;
use async_nats::{
    ClientError, ConnectOptions, Event, PublishErrorKind, RequestErrorKind, ServerAddr,
};
use bytes::Bytes;
use futures::{Stream as _, StreamExt};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::subject::{
    PreparedSubject, validate_publish_subject, validate_queue_group, validate_subscribe_subject,
};
use super::{BusError, ConnectionState, Headers, Message};

/// Cached publish subjects beyond this are all forgotten at once.
const MAX_CACHED_SUBJECTS: usize = 16_384;

/// At most one slow-consumer warning per connection in this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// How a node authenticates to NATS. `Debug` never prints secrets.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No authentication.
    #[default]
    None,
    /// A token (`--auth` on the server).
    Token(String),
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// The contents of a `.creds` file (JWT and NKey seed); the runtime reads the file.
    Credentials(String),
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Self::Credentials(_) => f.write_str("Credentials(<redacted>)"),
        }
    }
}

/// Settings of the NATS backend. Start from [`NatsOptions::new`] and change what you need.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URL, or several separated by commas (`nats://10.0.0.5:4222,nats://10.0.0.6:4222`).
    pub url: String,
    /// Connection name the server shows for this client (default `millwright`).
    pub name: String,
    /// Limit for establishing one connection, handshake included (default 5 s).
    pub connect_timeout: Duration,
    /// Interval between pings; two unanswered pings drop the connection (default 2 s).
    pub ping_interval: Duration,
    /// Delay before the second reconnect attempt; the first is immediate (default 100 ms).
    pub reconnect_delay_min: Duration,
    /// Longest delay between reconnect attempts (default 5 s). Attempts never stop.
    pub reconnect_delay_max: Duration,
    /// Messages one subscription may hold before the client drops new ones (default 65 536).
    pub subscription_capacity: usize,
    /// How long a publish, request or flush may wait for room in the client's outgoing queue
    /// (default 5 s); past it the call fails with [`BusError::Disconnected`].
    pub publish_timeout: Duration,
    /// When `true`, [`Bus::connect_nats`](super::Bus::connect_nats) returns at once even if
    /// no server is reachable yet, and the client keeps trying in the background (default
    /// `false`: an unreachable server is an error, which names the URL).
    pub retry_on_initial_connect: bool,
    /// Authentication.
    pub auth: NatsAuth,
}

impl NatsOptions {
    /// Defaults for an industrial node, connecting to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: "millwright".to_owned(),
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(2),
            reconnect_delay_min: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_secs(5),
            subscription_capacity: super::embedded::DEFAULT_SUBSCRIPTION_CAPACITY,
            publish_timeout: Duration::from_secs(5),
            retry_on_initial_connect: false,
            auth: NatsAuth::None,
        }
    }

    /// Sets the connection name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the ping interval.
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    fn addrs(&self) -> Result<Vec<ServerAddr>, BusError> {
        let bad = |reason: String| BusError::InvalidUrl {
            url: self.url.clone(),
            reason,
        };
        let addrs = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse::<ServerAddr>()
                    .map_err(|e| bad(format!("{u:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            return Err(bad("no server URL given".to_owned()));
        }
        Ok(addrs)
    }
}

/// The reconnect delay for the `attempt`-th consecutive attempt (1-based): immediate, then
/// `min * 2^(attempt-2)` capped at `max`, each with up to ±20 % jitter.
fn reconnect_delay(attempt: usize, min: Duration, max: Duration) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(30);
    let base = min.saturating_mul(1 << exp).min(max);
    let jitter = 0.8 + 0.4 * rand::random::<f64>();
    base.mul_f64(jitter)
}

#[derive(Debug)]
struct Shared {
    name: String,
    /// Publish subjects seen before, validated and shared (see [`Nats::subject`]).
    subjects: RwLock<foldhash::HashMap<Box<str>, async_nats::Subject>>,
    state: watch::Sender<ConnectionState>,
    slow_consumer_drops: AtomicU64,
    /// Connections established so far: a change between two reads means the client
    /// reconnected in between (and what it had buffered for the old socket may be lost).
    connects: AtomicU64,
    last_slow_warn: Mutex<Option<Instant>>,
}

impl Shared {
    fn set_state(&self, state: ConnectionState) {
        self.state.send_replace(state);
        metrics::gauge!("mw_bus_connected").set(if state == ConnectionState::Connected {
            1.0
        } else {
            0.0
        });
    }

    fn on_event(&self, event: Event) {
        let name = self.name.as_str();
        match event {
            Event::Connected => {
                self.connects.fetch_add(1, Ordering::SeqCst);
                tracing::info!(connection = name, "connected to nats");
                self.set_state(ConnectionState::Connected);
            }
            Event::Disconnected => {
                tracing::warn!(
                    connection = name,
                    "disconnected from nats; reconnecting with backoff until it is back"
                );
                metrics::counter!("mw_bus_disconnects_total").increment(1);
                self.set_state(ConnectionState::Disconnected);
            }
            Event::Closed => {
                tracing::warn!(
                    connection = name,
                    "nats connection closed; it will not reconnect"
                );
                self.set_state(ConnectionState::Closed);
            }
            Event::LameDuckMode => tracing::warn!(
                connection = name,
                "nats server entered lame duck mode: it will shut down soon; the client will reconnect"
            ),
            Event::Draining => tracing::info!(connection = name, "nats connection draining"),
            Event::SlowConsumer(sid) => {
                let dropped = self.slow_consumer_drops.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::counter!("mw_bus_dropped_total", "reason" => "slow_consumer").increment(1);
                let mut last = self.last_slow_warn.lock();
                if last.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
                    *last = Some(Instant::now());
                    tracing::warn!(
                        connection = name,
                        sid,
                        dropped,
                        "nats subscriber is too slow: its queue is full, so messages for it are \
                         dropped (consume faster, or raise subscription_capacity)"
                    );
                }
            }
            Event::ServerError(e) => {
                tracing::error!(connection = name, error = %e, "nats server reported an error");
            }
            Event::ClientError(ClientError::MaxReconnects) => {
                tracing::error!(connection = name, "nats client gave up reconnecting")
            }
            Event::ClientError(e) => {
                tracing::warn!(connection = name, error = %e, "nats client error");
            }
        }
    }
}

/// The NATS backend. Clones share one connection.
#[derive(Debug, Clone)]
pub(crate) struct Nats {
    client: async_nats::Client,
    shared: Arc<Shared>,
    publish_timeout: Duration,
}

fn nats_error(operation: &'static str, source: impl Into<async_nats::Error>) -> BusError {
    BusError::Nats {
        operation,
        source: source.into(),
    }
}

impl Nats {
    pub(crate) async fn connect(opts: NatsOptions) -> Result<Self, BusError> {
        let addrs = opts.addrs()?;
        let (state, _) = watch::channel(ConnectionState::Disconnected);
        let shared = Arc::new(Shared {
            name: opts.name.clone(),
            subjects: RwLock::default(),
            state,
            slow_consumer_drops: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            last_slow_warn: Mutex::new(None),
        });
        let (min, max) = (opts.reconnect_delay_min, opts.reconnect_delay_max);
        let events = Arc::clone(&shared);
        let mut options = match &opts.auth {
            NatsAuth::None => ConnectOptions::new(),
            NatsAuth::Token(t) => ConnectOptions::with_token(t.clone()),
            NatsAuth::UserPassword { user, password } => {
                ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Credentials(creds) => {
                ConnectOptions::with_credentials(creds).map_err(|e| BusError::InvalidUrl {
                    url: opts.url.clone(),
                    reason: format!("the NATS credentials are not a valid .creds file: {e}"),
                })?
            }
        }
        .name(&opts.name)
        .connection_timeout(opts.connect_timeout)
        .ping_interval(opts.ping_interval)
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempt| reconnect_delay(attempt, min, max))
        .subscription_capacity(opts.subscription_capacity.max(1))
        // We validate subjects ourselves, the same way for both backends.
        .skip_subject_validation(true)
        .event_callback(move |event| {
            events.on_event(event);
            std::future::ready(())
        });
        if opts.retry_on_initial_connect {
            options = options.retry_on_initial_connect();
        }
        let client = options
            .connect(addrs)
            .await
            .map_err(|source| BusError::Connect {
                url: opts.url.clone(),
                source,
            })?;
        if client.connection_state() == State::Connected {
            shared.set_state(ConnectionState::Connected);
        }
        Ok(Self {
            client,
            shared,
            publish_timeout: opts.publish_timeout,
        })
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub(crate) fn connection_state(&self) -> ConnectionState {
        match self.client.connection_state() {
            State::Connected => ConnectionState::Connected,
            State::Pending | State::Disconnected => {
                if *self.shared.state.borrow() == ConnectionState::Closed {
                    ConnectionState::Closed
                } else {
                    ConnectionState::Disconnected
                }
            }
        }
    }

    pub(crate) fn watch_connection(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    pub(crate) fn slow_consumer_drops(&self) -> u64 {
        self.shared.slow_consumer_drops.load(Ordering::Relaxed)
    }

    pub(crate) fn connection_epoch(&self) -> u64 {
        // A connection made before `connect` returned reports no event; count it as epoch 1.
        self.shared.connects.load(Ordering::SeqCst)
    }

    #[inline]
    fn ensure_connected(&self, operation: &'static str, subject: &str) -> Result<(), BusError> {
        if self.client.connection_state() == State::Connected {
            Ok(())
        } else {
            Err(BusError::Disconnected {
                operation,
                subject: subject.to_owned(),
            })
        }
    }

    /// Runs `fut`, failing with [`BusError::Disconnected`] if it takes longer than
    /// `publish_timeout`.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        subject: &str,
        fut: impl Future<Output = T>,
    ) -> Result<T, BusError> {
        tokio::time::timeout(self.publish_timeout, fut)
            .await
            .map_err(|_| BusError::Disconnected {
                operation,
                subject: subject.to_owned(),
            })
    }

    /// Publishes without the layers of nested `async fn` futures: the returned future holds
    /// the client's send future and, only if that does not complete on its first poll, a boxed
    /// timer. Checks happen here; nothing is sent until the future is polled.
    #[inline]
    pub(crate) fn publish(
        &self,
        msg: Message,
    ) -> NatsPublish<'_, impl Future<Output = Result<(), async_nats::PublishError>> + Send + '_>
    {
        match self.prepare(msg) {
            Err(e) => NatsPublish::failed(e),
            Ok((out, size)) => self.send(out, size),
        }
    }

    /// Publishes on a subject validated in advance: no validation, no subject allocation.
    #[inline]
    pub(crate) fn publish_prepared(
        &self,
        subject: &PreparedSubject,
        headers: Headers,
        payload: Bytes,
    ) -> NatsPublish<'_, impl Future<Output = Result<(), async_nats::PublishError>> + Send + '_>
    {
        if let Err(e) = self.ensure_connected("publish", subject.as_str()) {
            return NatsPublish::failed(e);
        }
        let size = payload.len() + headers.wire_len();
        let max = self.client.max_payload();
        if max > 0 && size > max {
            return NatsPublish::failed(BusError::PayloadTooLarge {
                subject: subject.as_str().to_owned(),
                size,
                max,
            });
        }
        let out = OutboundMessage {
            subject: subject.nats().clone(),
            reply: None,
            headers: (!headers.is_empty()).then(|| headers.into_nats()),
            payload,
        };
        self.send(out, size)
    }

    #[inline]
    fn send(
        &self,
        out: OutboundMessage,
        size: usize,
    ) -> NatsPublish<'_, impl Future<Output = Result<(), async_nats::PublishError>> + Send + '_>
    {
        NatsPublish {
            state: PublishState::Sending {
                fut: Publisher::publish_message(&self.client, out),
                timer: None,
                timeout: self.publish_timeout,
                size,
                client: &self.client,
            },
        }
    }

    /// The shared, validated form of a publish subject: from the cache when it was seen before
    /// (no validation, and the caller's `String` is freed here instead of on the client's
    /// thread), else validated and, unless it is a one-off reply inbox, cached.
    #[inline]
    fn subject(&self, subject: String) -> Result<async_nats::Subject, BusError> {
        if let Some(s) = self.shared.subjects.read().get(subject.as_str()) {
            return Ok(s.clone());
        }
        let prepared = PreparedSubject::new(subject)?;
        if !prepared.as_str().starts_with("_INBOX.") {
            let mut cache = self.shared.subjects.write();
            if cache.len() >= MAX_CACHED_SUBJECTS {
                cache.clear();
            }
            cache.insert(prepared.as_str().into(), prepared.nats().clone());
        }
        Ok(prepared.nats().clone())
    }

    #[inline]
    fn prepare(&self, msg: Message) -> Result<(OutboundMessage, usize), BusError> {
        if let Some(reply) = &msg.reply {
            validate_publish_subject(reply)?;
        }
        self.ensure_connected("publish", &msg.subject)?;
        let size = msg.wire_len();
        let max = self.client.max_payload();
        if max > 0 && size > max {
            validate_publish_subject(&msg.subject)?;
            return Err(BusError::PayloadTooLarge {
                subject: msg.subject,
                size,
                max,
            });
        }
        let out = OutboundMessage {
            subject: self.subject(msg.subject)?,
            reply: msg.reply.map(async_nats::Subject::from),
            headers: (!msg.headers.is_empty()).then(|| msg.headers.into_nats()),
            payload: msg.payload,
        };
        Ok((out, size))
    }

    pub(crate) async fn subscribe(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<async_nats::Subscriber, BusError> {
        validate_subscribe_subject(subject)?;
        let sub = match group {
            None => self.client.subscribe(subject.to_owned()).await,
            Some(g) => {
                validate_queue_group(g)?;
                self.client
                    .queue_subscribe(subject.to_owned(), g.to_owned())
                    .await
            }
        };
        sub.map_err(|e| nats_error("subscribe", e))
    }

    pub(crate) async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        validate_publish_subject(subject)?;
        self.ensure_connected("request", subject)?;
        let size = payload.len() + headers.wire_len();
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if !headers.is_empty() {
            request = request.headers(headers.into_nats());
        }
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(m) => Ok(m.into()),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::TimedOut => BusError::Timeout {
                    subject: subject.to_owned(),
                    timeout,
                },
                RequestErrorKind::NoResponders => BusError::NoResponders {
                    subject: subject.to_owned(),
                },
                RequestErrorKind::MaxPayloadExceeded => BusError::PayloadTooLarge {
                    subject: subject.to_owned(),
                    size,
                    max: self.client.max_payload(),
                },
                _ => nats_error("request", e),
            }),
        }
    }

    /// A round trip through the server. async-nats' own `flush` only empties the client's
    /// socket buffer; it does not wait for the server. Echoing a message to a fresh inbox does:
    /// the server handles a connection's operations in order, so once the echo is back, it has
    /// processed every subscription and publish sent before it.
    pub(crate) async fn flush(&self) -> Result<(), BusError> {
        self.ensure_connected("flush", "")?;
        let round_trip = async {
            let inbox = self.client.new_inbox();
            let mut echo = self
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| nats_error("flush", e))?;
            self.client
                .publish(inbox, Bytes::new())
                .await
                .map_err(|e| nats_error("flush", e))?;
            match echo.next().await {
                Some(_) => Ok(()),
                None => Err(BusError::Disconnected {
                    operation: "flush",
                    subject: String::new(),
                }),
            }
        };
        self.bounded("flush", "", round_trip).await?
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Nats::publish`].
    #[derive(Debug)]
    pub(crate) struct NatsPublish<'a, F> {
        #[pin]
        state: PublishState<'a, F>,
    }
}

pin_project_lite::pin_project! {
    #[project = PublishStateProj]
    #[derive(Debug)]
    enum PublishState<'a, F> {
        Failed { error: Option<BusError> },
        Sending {
            // The subject is not kept: a copy per message would cost an allocation, and
            // it is needed only in the rare errors after the message was handed over (the
            // client closed, or its queue stayed full for `publish_timeout`).
            #[pin]
            fut: F,
            timer: Option<Pin<Box<tokio::time::Sleep>>>,
            timeout: Duration,
            size: usize,
            client: &'a async_nats::Client,
        },
    }
}

impl<F> NatsPublish<'_, F> {
    fn failed(error: BusError) -> Self {
        Self {
            state: PublishState::Failed { error: Some(error) },
        }
    }
}

impl<F> Future for NatsPublish<'_, F>
where
    F: Future<Output = Result<(), async_nats::PublishError>>,
{
    type Output = Result<(), BusError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            PublishStateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("NatsPublish polled after completion"))),
            PublishStateProj::Sending {
                fut,
                timer,
                timeout,
                size,
                client,
            } => {
                if let Poll::Ready(result) = fut.poll(cx) {
                    return Poll::Ready(match result {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                            Err(BusError::PayloadTooLarge {
                                subject: String::new(),
                                size: *size,
                                max: client.max_payload(),
                            })
                        }
                        Err(e) if e.kind() == PublishErrorKind::Send => {
                            Err(BusError::Disconnected {
                                operation: "publish",
                                subject: String::new(),
                            })
                        }
                        Err(e) => Err(nats_error("publish", e)),
                    });
                }
                // The client's queue is full: arm the timer (only now, so the common case
                // costs no timer registration).
                let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(BusError::Disconnected {
                        operation: "publish",
                        subject: String::new(),
                    })),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// One NATS subscription; the client unsubscribes when it is dropped.
#[derive(Debug)]
pub(crate) struct NatsSubscription(pub(crate) async_nats::Subscriber);

impl NatsSubscription {
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|m| m.map(Message::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_is_immediate_then_doubles_to_the_cap_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(reconnect_delay(1, min, max), Duration::ZERO);
        for _ in 0..100 {
            let d2 = reconnect_delay(2, min, max);
            assert!((80..=120).contains(&d2.as_millis()), "{d2:?}");
            let d4 = reconnect_delay(4, min, max);
            assert!((320..=480).contains(&d4.as_millis()), "{d4:?}");
            let d_big = reconnect_delay(1000, min, max);
            assert!((4000..=6000).contains(&d_big.as_millis()), "{d_big:?}");
        }
    }

    #[test]
    fn urls_are_parsed_and_bad_ones_named() {
        let opts = NatsOptions::new("nats://127.0.0.1:4222, nats://127.0.0.1:4223");
        assert_eq!(opts.addrs().unwrap().len(), 2);
        for bad in ["", " , ", "http://[::1"] {
            let err = NatsOptions::new(bad).addrs().unwrap_err();
            assert!(matches!(err, BusError::InvalidUrl { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn auth_debug_redacts_secrets() {
        let auth = NatsAuth::UserPassword {
            user: "op".into(),
            password: "hunter2".into(),
        };
        let text = format!("{auth:?} {:?}", NatsAuth::Token("s3cret".into()));
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(text.contains("op"));
    }
}
