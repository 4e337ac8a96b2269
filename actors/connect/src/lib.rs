//! The connector actor: one supervised actor per connector instance, driving a plugin through
//! the [`protocol`](millwright_plugin_sdk::protocol) messages and publishing what a source
//! reads through the broker.
//!
//! The plugin is reached through a [`Transport`]: [`StaticTransport`] here (the connector is
//! linked into the node and called through the SDK's `Adapter`); the runtime adds the
//! in-process `cdylib` ABI and the out-of-process executable, which carry the same messages.
//!
//! A source instance runs this loop, one step per `Step` message (so pings and stops are
//! handled between steps):
//!
//! ```text
//! open ─► connect ──ok──► read_batch ─► broker.publish_batch ─► ack ─┐
//!            ▲  │                │ empty: wait poll_interval      │
//!            │  └─ NotConnected/ │ NotConnected: reconnect         │
//!            │     Transient:    │ EndOfInput: stop normally (a    │
//!            │     backoff,      │   sink/responder stops reading) │
//!            │                   │ Fatal / panic: the actor fails, │
//!            │     degraded_     │   the supervisor restarts it    │
//!            └──── connection ◄──┘                                 ▼
//!                                                            next read
//! ```
//!
//! A batch is acknowledged to the plugin only after the broker's receipt; a batch the broker
//! refused is published again (the same events, the same ids) before anything new is read, so
//! nothing is skipped. A batch read but not acknowledged when the instance dies is read again
//! by the next incarnation (the plugin's `ack` is what moves its position): at-least-once.
//!
//! A sink or a responder is driven by messages instead of the loop: [`ConnectorMsg::Write`]
//! hands a batch to `write_batch`, [`ConnectorMsg::Call`] a request to `call`, between the
//! source's steps (one request at a time reaches the plugin). Both answer `NotConnected` while
//! the instance is not connected; a `NotConnected` or `Transient` failure of the whole call
//! sends the instance back to reconnecting (as a failed read does), a `Fatal` one restarts it.
//! The runtime's connector bridge feeds them from the bus (`runtime/src/connector_bridge.rs`).
//!
//! States on the board: `starting_connection` while the first connect is tried,
//! `degraded_connection` (with the error) while reconnecting, `idle`/`active` by data.

mod transport;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use millwright_plugin_sdk::connector::{AckToken, ConnectorError, Kind, SourceBatch, WriteResult};
use millwright_plugin_sdk::event::Envelope;
use millwright_plugin_sdk::protocol::{Request, Response};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use millwright_broker::BrokerHandle;
use millwright_kernel::lifecycle::StatusBoard;
use millwright_kernel::lifecycle::{BusyMark, Event, Lifecycle, State};
use millwright_kernel::reach::{self, ReachError};
use millwright_kernel::supervisor::BackoffPolicy;
pub use transport::{BoxFuture, NodeHost, StaticTransport, Transport, TransportError};

/// One connector instance's settings (the runtime builds it from the config).
#[derive(Debug, Clone)]
pub struct ConnectorSpec {
    /// The instance's name (`press1`).
    pub instance: String,
    /// The plugin's id (`opcua`).
    pub plugin: String,
    /// The instance's config, validated against the plugin's schema.
    pub config: serde_json::Value,
    /// The shapes the plugin offers (from its manifest): the read loop runs only for a
    /// [`Kind::Source`].
    pub kinds: Vec<Kind>,
    /// The node's subject prefix (`mw`), handed to the plugin at `open`.
    pub subject_prefix: String,
    /// Most events per `read_batch`.
    pub max_batch: usize,
    /// Wait after an empty batch before reading again.
    pub poll_interval: Duration,
    /// Between connection attempts (attempt n waits `backoff.delay(n)`).
    pub backoff: BackoffPolicy,
    /// Wait before publishing a batch again that the broker did not acknowledge.
    pub republish_delay: Duration,
    /// The instance is `idle` after this long without data.
    pub idle_window: Duration,
}

/// Makes the transport of one incarnation (called again on every restart).
pub type TransportFactory = Arc<dyn Fn() -> Box<dyn Transport> + Send + Sync>;

/// What a connector incarnation starts from.
#[derive(Clone)]
pub struct ConnectorArgs {
    /// Its settings.
    pub spec: Arc<ConnectorSpec>,
    /// Its status-board id and registry name.
    pub component_id: String,
    /// The node's board.
    pub board: StatusBoard,
    /// Where its events go.
    pub broker: BrokerHandle,
    /// How to reach the plugin.
    pub transport: TransportFactory,
}

impl std::fmt::Debug for ConnectorArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorArgs")
            .field("spec", &self.spec)
            .field("component_id", &self.component_id)
            .finish()
    }
}

/// The connector actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectorActor;

/// Its messages.
#[derive(Debug)]
pub enum ConnectorMsg {
    /// Run the next step of the loop.
    Step,
    /// The read in flight (by its number) answered.
    ReadDone(u64, Result<Response, TransportError>),
    /// The idle window since the last data may be over: check.
    IdleCheck,
    /// Liveness: answered between steps with the current state.
    Ping(RpcReplyPort<State>),
    /// Stop reading from the source (the node's shutdown stops intake): answered once no read
    /// is in progress; no read starts after it. Writes and calls are still served.
    Pause(RpcReplyPort<()>),
    /// Write a batch to a sink: one result per event, or an error for the whole batch.
    Write(
        Vec<Envelope>,
        RpcReplyPort<Result<Vec<WriteResult>, ConnectorError>>,
    ),
    /// Call a responder's `method` with a JSON payload.
    Call(
        String,
        serde_json::Value,
        RpcReplyPort<Result<serde_json::Value, ConnectorError>>,
    ),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Connect,
    /// Connected: a source reads; a sink or responder waits for messages.
    Ready,
    /// The config cannot work: nothing to do until it changes.
    Parked,
}

/// One incarnation's state.
pub struct ConnectorState {
    args: ConnectorArgs,
    transport: Box<dyn Transport>,
    lifecycle: Lifecycle,
    phase: Phase,
    attempts: u32,
    /// A batch read but not yet acknowledged by the broker.
    pending: Option<SourceBatch>,
    /// The token of the last batch the broker acknowledged, not yet acknowledged to the plugin:
    /// it rides on the next read (`AckThenRead`), or is sent alone at stop.
    published: Option<AckToken>,
    /// A `Step` is queued or scheduled (so a failed write does not start a second loop).
    step_scheduled: bool,
    /// The source reached its end of input (an instance that is also a sink or a responder
    /// keeps running without reading).
    source_done: bool,
    /// Intake stopped (the node is shutting down): no more reads.
    paused: bool,
    /// Events this incarnation read and the broker acknowledged.
    published_events: u64,
    /// The number of the read in flight (it waits in the plugin until there is data).
    reading: Option<u64>,
    /// Reads started so far (numbers the reads, so a stale answer is recognised).
    reads: u64,
    /// The read in flight was interrupted (so its `Interrupted` answer is expected).
    interrupted: bool,
    /// Pauses waiting for the read in flight to end.
    pausing: Vec<RpcReplyPort<()>>,
    /// An `IdleCheck` is scheduled.
    idle_check_scheduled: bool,
    /// Marks how long the current message keeps the actor busy (the watchdog reads it).
    busy: BusyMark,
}

impl std::fmt::Debug for ConnectorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorState")
            .field("component_id", &self.args.component_id)
            .field("phase", &self.phase)
            .finish()
    }
}

impl Actor for ConnectorActor {
    type Msg = ConnectorMsg;
    type State = ConnectorState;
    type Arguments = ConnectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConnectorMsg>,
        args: ConnectorArgs,
    ) -> Result<ConnectorState, ActorProcessingErr> {
        let mut lifecycle = Lifecycle::begin(
            &args.board,
            args.component_id.clone(),
            "connector",
            args.spec.idle_window,
        );
        lifecycle.apply(Event::Start)?;
        lifecycle.apply(Event::StartPhase("connection".to_owned()))?;
        let transport = (args.transport)();
        myself.cast(ConnectorMsg::Step)?;
        tracing::info!(component = %args.component_id, plugin = %args.spec.plugin, "connector starting");
        Ok(ConnectorState {
            busy: args.board.busy_mark(&args.component_id),
            args,
            transport,
            lifecycle,
            phase: Phase::Open,
            attempts: 0,
            pending: None,
            published: None,
            step_scheduled: true,
            source_done: false,
            paused: false,
            published_events: 0,
            reading: None,
            reads: 0,
            interrupted: false,
            pausing: Vec::new(),
            idle_check_scheduled: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConnectorMsg>,
        state: &mut ConnectorState,
    ) -> Result<(), ActorProcessingErr> {
        let _ = state.lifecycle.apply(Event::Stop);
        // A read that waits for data is ended, so the ack and the close below can run.
        state.interrupt_read();
        if state.phase != Phase::Open {
            if let Some(token) = state.published.take() {
                let ack = state.transport.request(Request::Ack { token });
                match tokio::time::timeout(Duration::from_secs(5), ack).await {
                    Ok(Ok(Response::Done)) => {}
                    outcome => {
                        tracing::warn!(component = %state.args.component_id, ?outcome, "the last published batch could not be acknowledged; the source reads it again on its next start");
                    }
                }
            }
            let close = state.transport.request(Request::Close);
            if tokio::time::timeout(Duration::from_secs(5), close)
                .await
                .is_err()
            {
                tracing::warn!(component = %state.args.component_id, "plugin did not close within 5s");
            }
        }
        // A source that ran to its end is finished, not stopped: it is not restarted and does
        // not count against its supervisor's health.
        let kinds = &state.args.spec.kinds;
        let only_a_source = !kinds.contains(&Kind::Sink) && !kinds.contains(&Kind::Responder);
        let end = if state.source_done && only_a_source {
            Event::Finish
        } else {
            Event::StopDone
        };
        let _ = state.lifecycle.apply(end);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnectorMsg>,
        msg: ConnectorMsg,
        state: &mut ConnectorState,
    ) -> Result<(), ActorProcessingErr> {
        // Read by the watchdog's sweep: how long this message keeps the actor busy.
        let busy = state.busy.clone();
        let _busy = busy.enter();
        match msg {
            ConnectorMsg::Step => {
                state.step_scheduled = false;
                state.step(&myself).await
            }
            ConnectorMsg::ReadDone(read, _) if state.reading != Some(read) => Ok(()),
            ConnectorMsg::ReadDone(_, answer) => {
                state.reading = None;
                state.interrupted = false;
                let next = state.read_done(answer).await;
                for reply in state.pausing.drain(..) {
                    let _ = reply.send(());
                }
                state.schedule(&myself, Some(next?))
            }
            ConnectorMsg::IdleCheck => {
                state.idle_check_scheduled = false;
                state.idle_check(&myself).await
            }
            ConnectorMsg::Ping(reply) => {
                let _ = reply.send(state.lifecycle.state().clone());
                Ok(())
            }
            ConnectorMsg::Pause(reply) => {
                if !state.paused {
                    state.paused = true;
                    tracing::info!(
                        component = %state.args.component_id,
                        published = state.published_events,
                        "source paused: no more reads"
                    );
                }
                if state.reading.is_some() {
                    // Answered once the read in flight has ended (and what it read is
                    // published): no read is in progress after the answer.
                    state.interrupt_read();
                    state.pausing.push(reply);
                } else {
                    let _ = reply.send(());
                }
                Ok(())
            }
            // A request whose caller gave up (timed out) is not run late.
            ConnectorMsg::Write(_, reply) if reply.is_closed() => Ok(()),
            ConnectorMsg::Call(_, _, reply) if reply.is_closed() => Ok(()),
            ConnectorMsg::Write(events, reply) => {
                state.interrupt_read();
                let handled = state.write(events).await;
                state.reply(&myself, reply, handled)
            }
            ConnectorMsg::Call(method, payload, reply) => {
                state.interrupt_read();
                let handled = state.respond(method, payload).await;
                state.reply(&myself, reply, handled)
            }
        }
    }
}

/// How a write or a call ended: an answer for the caller (and what the loop does next), or a
/// failure of the instance, whose error the caller gets before the actor fails.
enum Handled<T> {
    Answer(Result<T, ConnectorError>, Option<Next>),
    Failed(ConnectorError, ActorProcessingErr),
}

impl<T> Handled<T> {
    /// The plugin answered `error` for the whole request.
    fn plugin_error(state: &mut ConnectorState, error: ConnectorError) -> Self {
        match state.call_failed(&error) {
            Ok(next) => Handled::Answer(Err(error), next),
            Err(e) => Handled::Failed(error, e),
        }
    }

    /// The transport failed (the plugin crashed, hung or answered nonsense): the caller may try
    /// again with the next incarnation.
    fn transport_failed(e: ActorProcessingErr) -> Self {
        Handled::Failed(
            ConnectorError::Transient(format!("the plugin failed during the request: {e}")),
            e,
        )
    }
}

/// What one step decided.
enum Next {
    Now,
    After(Duration),
    Park,
    Stop,
}

impl ConnectorState {
    async fn step(&mut self, myself: &ActorRef<ConnectorMsg>) -> Result<(), ActorProcessingErr> {
        let next = match self.phase {
            Phase::Open => self.open().await?,
            Phase::Connect => self.connect().await?,
            Phase::Ready
                if self.args.spec.kinds.contains(&Kind::Source)
                    && !self.source_done
                    && !self.paused =>
            {
                if self.reading.is_some() {
                    Next::Park
                } else if let Some(batch) = self.pending.take() {
                    self.publish(batch).await?
                } else {
                    self.start_read(myself)
                }
            }
            Phase::Ready | Phase::Parked => Next::Park,
        };
        self.schedule(myself, Some(next))
    }

    /// Gives a write's or a call's outcome to its caller, then goes on (an answer) or fails the
    /// actor (the caller hears the error first).
    fn reply<T>(
        &mut self,
        myself: &ActorRef<ConnectorMsg>,
        reply: RpcReplyPort<Result<T, ConnectorError>>,
        handled: Handled<T>,
    ) -> Result<(), ActorProcessingErr> {
        match handled {
            Handled::Answer(answer, next) => {
                let _ = reply.send(answer);
                self.schedule(myself, next)
            }
            Handled::Failed(error, e) => {
                let _ = reply.send(Err(error));
                Err(e)
            }
        }
    }

    /// Queues the next step, unless one is queued already.
    fn schedule(
        &mut self,
        myself: &ActorRef<ConnectorMsg>,
        next: Option<Next>,
    ) -> Result<(), ActorProcessingErr> {
        self.lifecycle.tick();
        if !self.idle_check_scheduled
            && let Some(due) = self.lifecycle.idle_due()
        {
            // One timer per idle window while data flows; none while the source is quiet.
            self.idle_check_scheduled = true;
            let wait = due.saturating_duration_since(tokio::time::Instant::now());
            myself.send_after(wait, || ConnectorMsg::IdleCheck);
        }
        let Some(next) = next else { return Ok(()) };
        if self.step_scheduled && !matches!(next, Next::Stop) {
            return Ok(());
        }
        match next {
            Next::Now => {
                self.step_scheduled = true;
                myself.cast(ConnectorMsg::Step)?;
            }
            Next::After(d) => {
                self.step_scheduled = true;
                myself.send_after(d, || ConnectorMsg::Step);
            }
            Next::Park => {}
            Next::Stop => myself.stop(Some("end of input".to_owned())),
        }
        Ok(())
    }

    /// Not connected yet (or again): what a write or a call answers meanwhile.
    fn not_ready(&self) -> Option<ConnectorError> {
        match self.phase {
            Phase::Ready => None,
            Phase::Parked => Some(ConnectorError::Config(format!(
                "connector {} cannot run with its config (see /health)",
                self.args.spec.instance
            ))),
            Phase::Open | Phase::Connect => Some(ConnectorError::NotConnected(format!(
                "connector {} is connecting",
                self.args.spec.instance
            ))),
        }
    }

    /// A whole-request failure of a write or a call: the caller gets the error. Only a lost
    /// connection sends the instance back to reconnecting, and only `Fatal` (and variants added
    /// later) restarts it; `Config`, `Transient`, `BackOff` and `EndOfInput` concern this
    /// request alone.
    fn call_failed(&mut self, error: &ConnectorError) -> Result<Option<Next>, ActorProcessingErr> {
        match error {
            ConnectorError::NotConnected(_) => self.failed(error.clone()).map(Some),
            ConnectorError::Config(_)
            | ConnectorError::Transient(_)
            | ConnectorError::BackOff(_)
            | ConnectorError::EndOfInput => Ok(None),
            _ => self.failed(error.clone()).map(Some),
        }
    }

    async fn write(&mut self, events: Vec<Envelope>) -> Handled<Vec<WriteResult>> {
        if let Some(e) = self.not_ready() {
            return Handled::Answer(Err(e), None);
        }
        let n = events.len();
        let response = match self.call(Request::WriteBatch { events }).await {
            Ok(r) => r,
            Err(e) => return Handled::transport_failed(e),
        };
        match response {
            Response::Written { results } if results.len() == n => {
                let failed = results.iter().filter(|r| r.is_err()).count();
                let id = self.args.component_id.clone();
                metrics::counter!("mw_connector_written_total", "component" => id)
                    .increment((n - failed) as u64);
                self.lifecycle.record_data();
                Handled::Answer(Ok(results), None)
            }
            Response::Written { results } => Handled::transport_failed(
                format!(
                    "plugin {} answered {} results for {n} events",
                    self.args.spec.plugin,
                    results.len()
                )
                .into(),
            ),
            Response::Error { error } => Handled::plugin_error(self, error),
            other => Handled::transport_failed(unexpected(&other)),
        }
    }

    async fn respond(
        &mut self,
        method: String,
        payload: serde_json::Value,
    ) -> Handled<serde_json::Value> {
        if let Some(e) = self.not_ready() {
            return Handled::Answer(Err(e), None);
        }
        metrics::counter!("mw_connector_calls_total", "component" => self.args.component_id.clone())
            .increment(1);
        match self.call(Request::Call { method, payload }).await {
            Ok(Response::Reply { payload }) => Handled::Answer(Ok(payload), None),
            Ok(Response::Error { error }) => Handled::plugin_error(self, error),
            Ok(other) => Handled::transport_failed(unexpected(&other)),
            Err(e) => Handled::transport_failed(e),
        }
    }

    async fn call(&mut self, request: Request) -> Result<Response, ActorProcessingErr> {
        self.transport
            .request(request)
            .await
            .map_err(|e| format!("plugin {}: {e}", self.args.spec.plugin).into())
    }

    async fn open(&mut self) -> Result<Next, ActorProcessingErr> {
        self.transport
            .start()
            .await
            .map_err(|e| -> ActorProcessingErr {
                format!("plugin {}: {e}", self.args.spec.plugin).into()
            })?;
        let request = Request::Open {
            config: self.args.spec.config.clone(),
            subject_prefix: self.args.spec.subject_prefix.clone(),
        };
        match self.call(request).await? {
            Response::Done => {
                self.phase = Phase::Connect;
                Ok(Next::Now)
            }
            Response::Error { error } => self.failed(error),
            other => Err(unexpected(&other)),
        }
    }

    async fn connect(&mut self) -> Result<Next, ActorProcessingErr> {
        match self.call(Request::Connect).await? {
            Response::Done => {
                if self.attempts > 0 {
                    tracing::info!(component = %self.args.component_id, attempts = self.attempts, "connector reconnected");
                }
                self.attempts = 0;
                self.phase = Phase::Ready;
                match self.lifecycle.state() {
                    State::Starting { .. } => self.lifecycle.apply(Event::StartDone)?,
                    State::Degraded { .. } => self.lifecycle.apply(Event::Recovered)?,
                    _ => {}
                }
                Ok(Next::Now)
            }
            Response::Error { error } => self.failed(error),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts the next read, which waits in the plugin until the source has data; its answer
    /// comes back as [`ConnectorMsg::ReadDone`], so pings, calls, writes and pauses are served
    /// meanwhile.
    fn start_read(&mut self, myself: &ActorRef<ConnectorMsg>) -> Next {
        let max = self.args.spec.max_batch.max(1);
        let request = match self.published.take() {
            Some(token) => Request::AckThenRead { token, max },
            None => Request::ReadBatch { max },
        };
        self.reads += 1;
        let read = self.reads;
        self.reading = Some(read);
        let answer = self.transport.request(request);
        let me = myself.clone();
        tokio::spawn(async move {
            let _ = me.cast(ConnectorMsg::ReadDone(read, answer.await));
        });
        Next::Park
    }

    /// The idle window since the last data is over: the instance goes `idle`, and, since a
    /// quiet source and a hung plugin look the same until asked, it is asked for its health
    /// once (bounded by the call timeout: no answer restarts it). Nothing periodic: a source
    /// that stays quiet is not asked again.
    async fn idle_check(
        &mut self,
        myself: &ActorRef<ConnectorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let was_active = matches!(self.lifecycle.state(), State::Active);
        self.lifecycle.tick();
        if was_active && matches!(self.lifecycle.state(), State::Idle) && self.phase == Phase::Ready
        {
            self.interrupt_read();
            self.call(Request::Health).await?;
        }
        self.schedule(myself, None)
    }

    /// Ends the read in flight if it waits for data (its answer still comes as `ReadDone`).
    fn interrupt_read(&mut self) {
        if self.reading.is_some() && !self.interrupted {
            self.interrupted = true;
            self.transport.interrupt();
        }
    }

    /// What the read's answer means for the loop.
    async fn read_done(
        &mut self,
        answer: Result<Response, TransportError>,
    ) -> Result<Next, ActorProcessingErr> {
        let answer = answer.map_err(|e| -> ActorProcessingErr {
            format!("plugin {}: {e}", self.args.spec.plugin).into()
        })?;
        match answer {
            Response::Batch { batch } if batch.events.is_empty() => {
                // A source that cannot wait for data asks to be polled this way.
                Ok(Next::After(self.args.spec.poll_interval))
            }
            Response::Batch { batch } => self.publish(batch).await,
            Response::Interrupted => Ok(Next::Now),
            Response::Error { error } => self.failed(error),
            other => Err(unexpected(&other)),
        }
    }

    /// Publishes a batch read from the source through the broker; acknowledged to the plugin
    /// with the next read once the broker has it.
    async fn publish(&mut self, batch: SourceBatch) -> Result<Next, ActorProcessingErr> {
        let n = batch.events.len();
        tracing::debug!(component = %self.args.component_id, events = n, "source read");
        match self.args.broker.publish_batch(batch.events.clone()).await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(component = %self.args.component_id, error = %e, events = n, "broker did not acknowledge a batch; publishing it again");
                self.pending = Some(batch);
                return Ok(Next::After(self.args.spec.republish_delay));
            }
        }
        self.lifecycle.record_data();
        self.published_events += n as u64;
        metrics::counter!("mw_connector_events_total", "component" => self.args.component_id.clone())
            .increment(n as u64);
        // Acknowledged with the next read (one crossing per batch), or at stop.
        self.published = Some(batch.token);
        Ok(Next::Now)
    }

    /// What a connector error means for the loop (see [`ConnectorError`]'s table).
    fn failed(&mut self, error: ConnectorError) -> Result<Next, ActorProcessingErr> {
        let id = &self.args.component_id;
        metrics::counter!("mw_connector_errors_total", "component" => id.clone(), "kind" => error.kind())
            .increment(1);
        match error {
            ConnectorError::NotConnected(_) | ConnectorError::Transient(_) => {
                self.attempts += 1;
                let wait = self.args.spec.backoff.delay(self.attempts);
                let reason = format!(
                    "{error}; retrying in {} (attempt {})",
                    millwright_kernel::supervisor::human(wait),
                    self.attempts
                );
                tracing::warn!(component = %id, error = %error, attempt = self.attempts, ?wait, "connector failed; backing off");
                self.lifecycle.record_error(&error);
                let _ = self.lifecycle.apply(Event::Degrade {
                    facet: Some("connection".to_owned()),
                    reason,
                });
                if self.phase != Phase::Open {
                    self.phase = Phase::Connect;
                }
                Ok(Next::After(wait))
            }
            ConnectorError::BackOff(wait) => Ok(Next::After(wait)),
            ConnectorError::Config(_) => {
                tracing::error!(component = %id, error = %error, "connector cannot run with its config; fix it and reload");
                self.lifecycle.record_error(&error);
                let _ = self.lifecycle.apply(Event::Degrade {
                    facet: Some("config".to_owned()),
                    reason: error.to_string(),
                });
                self.phase = Phase::Parked;
                Ok(Next::Park)
            }
            ConnectorError::EndOfInput => {
                tracing::info!(component = %id, "source reached its end of input");
                let kinds = &self.args.spec.kinds;
                if kinds.contains(&Kind::Sink) || kinds.contains(&Kind::Responder) {
                    // The instance still writes or answers; only its read loop ends, and no
                    // more data flows from it.
                    self.source_done = true;
                    if matches!(self.lifecycle.state(), State::Active) {
                        let _ = self.lifecycle.apply(Event::NoDataTimeout);
                    }
                    Ok(Next::Park)
                } else {
                    self.source_done = true;
                    Ok(Next::Stop)
                }
            }
            // Fatal, and variants added later: let the supervisor restart the instance.
            other => Err(format!("connector {id}: {other}").into()),
        }
    }
}

fn unexpected(response: &Response) -> ActorProcessingErr {
    format!("plugin answered {response:?}, which does not fit the request").into()
}

/// Why a message to a connector instance got no answer from its plugin.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The instance could not be reached (not running, no answer in time).
    #[error("connector {0}")]
    Reach(#[from] ReachError),
    /// The plugin answered with an error.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
}

/// Asks the connector registered as `registry_name` for its state (the watchdog's probe).
///
/// # Errors
/// [`ReachError::NotRunning`] or [`ReachError::Timeout`].
///
/// # Cancel safety
/// Cancel safe: an unanswered ping is simply dropped.
pub async fn ping(registry_name: &str, timeout: Duration) -> Result<State, ReachError> {
    reach::call(registry_name, timeout, ConnectorMsg::Ping).await
}

/// Tells the connector registered as `registry_name` to read no more from its source, and
/// waits until no read is in progress (the node's stop-intake step).
///
/// # Errors
/// [`ReachError`]: not running (nothing to pause), or no answer in time.
///
/// # Cancel safety
/// Cancel safe: the instance pauses whether or not the caller waits.
pub async fn pause(registry_name: &str, timeout: Duration) -> Result<(), ReachError> {
    reach::call(registry_name, timeout, ConnectorMsg::Pause).await
}

/// Writes `events` to the sink registered as `registry_name`: one result per event.
///
/// # Errors
/// [`CallError`]; [`CallError::Connector`] when nothing was written.
///
/// # Cancel safety
/// Not cancel safe: the write may happen after the future is dropped.
pub async fn write(
    registry_name: &str,
    events: Vec<Envelope>,
    timeout: Duration,
) -> Result<Vec<WriteResult>, CallError> {
    Ok(reach::call(registry_name, timeout, |r| ConnectorMsg::Write(events, r)).await??)
}

/// Calls `method` of the responder registered as `registry_name`.
///
/// # Errors
/// [`CallError`].
///
/// # Cancel safety
/// Not cancel safe: the call may happen after the future is dropped.
pub async fn call(
    registry_name: &str,
    method: &str,
    payload: serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, CallError> {
    let method = method.to_owned();
    Ok(reach::call(registry_name, timeout, |r| {
        ConnectorMsg::Call(method, payload, r)
    })
    .await??)
}
