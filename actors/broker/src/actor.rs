//! The broker actor: takes submissions from the intake, delivers them or queues them, drains
//! the disk queue, moves hopeless events to the DLQ, and answers DLQ commands.
//!
//! Messages, all handled one at a time (so the disk queue and the breaker have one owner):
//!
//! - `Deliver`: a batch of submissions from the intake pump. Direct to NATS when the queue is
//!   empty, the connection is up, the stream is ready and the breaker admits; otherwise (and
//!   for every event NATS did not confirm) appended to the disk queue. Each submission is
//!   answered once all its events are durable.
//! - `Drain`: one round of at most `max_batch` events from the head of the disk queue;
//!   schedules the next round at once while events remain and NATS takes them, or after the
//!   breaker's window when it does not.
//! - `Connection`: the bus connection went up or down. Down trips the breaker at once (no
//!   waiting for five timeouts when the server is plainly gone); up resets it and drains.
//! - `Tick`: group-commit deadline of the disk queue, the idle window, gauges.
//! - `Dlq`, `Stats`: operator commands and a snapshot for tests and the CLI.
//!
//! The intake pump is a task that takes up to `max_batch` events' worth of submissions from the
//! bounded intake and `call`s `Deliver`, waiting for the answer before it takes more: the
//! actor's mailbox never holds more than one batch from the pump. A submission that was taken
//! but not answered when the actor dies is answered with [`BrokerError::Stopped`] (its
//! acknowledgement channel is dropped), so the producer sends it again.
//!
//! On a graceful stop, submissions still in the intake are appended to the disk queue and
//! acknowledged, and the queue is synced: they are delivered after the next boot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use millwright_plugin_sdk::circuit_breaker::CircuitBreaker;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use millwright_bus::{Bus, ConnectionState};
use millwright_kernel::lifecycle::{Event, Lifecycle, State, StatusBoard};
use millwright_kernel::reach::{self, ReachError};
use millwright_storage::dead_letter::{DeadLetter, DeadLetterQueue};
use millwright_storage::disk_queue::{DiskQueue, SyncPolicy};

use crate::delivery::{Delivery, Failure, Outgoing};
use crate::dlq_admin::{self, DlqCommand, DlqReply};
use crate::{BrokerError, BrokerOptions, DeliveryMode, Intake, Receipt, StreamError, Submission};

/// The broker actor. Spawn it with [`BrokerArgs`]; producers use the
/// [`BrokerHandle`](super::BrokerHandle) made with the same intake.
#[derive(Debug, Clone, Copy, Default)]
pub struct Broker;

/// What a broker incarnation starts from (cloned for every restart).
#[derive(Debug, Clone)]
pub struct BrokerArgs {
    /// Its options.
    pub options: BrokerOptions,
    /// The intake shared with the handles.
    pub intake: Arc<Intake>,
    /// The bus it publishes on.
    pub bus: Bus,
    /// The node's status board.
    pub board: StatusBoard,
    /// Its component id (`<node>/broker`), also its registry name.
    pub component_id: String,
}

/// The broker's messages.
#[derive(Debug)]
pub enum BrokerMsg {
    /// Submissions from the intake pump.
    Deliver(Vec<Submission>, RpcReplyPort<()>),
    /// Deliver one round from the disk queue.
    Drain,
    /// The bus connection changed.
    Connection(ConnectionState),
    /// Periodic housekeeping.
    Tick,
    /// An operator's DLQ command; the error is a message for the operator.
    Dlq(DlqCommand, RpcReplyPort<Result<DlqReply, String>>),
    /// A snapshot of counters and state.
    Stats(RpcReplyPort<BrokerStats>),
}

/// A snapshot of the broker, for tests, the CLI and health pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStats {
    /// `core` or `jetstream`.
    pub mode: DeliveryMode,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Whether the bus connection is up.
    pub connected: bool,
    /// Whether the JetStream stream is checked (always true in core mode).
    pub stream_ready: bool,
    /// Events in the disk queue.
    pub queue_depth: u64,
    /// Bytes of the disk queue's segments.
    pub queue_bytes: u64,
    /// Events shed at the disk queue's cap since boot.
    pub shed: u64,
    /// Events in the DLQ.
    pub dead_letters: u64,
    /// Events delivered directly since boot.
    pub delivered: u64,
    /// Events appended to the disk queue since boot.
    pub queued: u64,
    /// Events delivered from the disk queue since boot.
    pub drained: u64,
    /// Events moved to the DLQ since boot.
    pub dead_lettered: u64,
}

#[derive(Debug, Clone)]
struct Attempts {
    count: u32,
    last_error: String,
    first_failed_at: DateTime<Utc>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    delivered: u64,
    queued: u64,
    drained: u64,
    dead_lettered: u64,
}

/// One incarnation's state.
#[derive(Debug)]
pub struct BrokerState {
    args: BrokerArgs,
    delivery: Delivery,
    breaker: CircuitBreaker,
    queue: DiskQueue,
    dlq: DeadLetterQueue,
    dlq_size: u64,
    /// Event-specific failures per queued sequence number (in memory: a restart forgets them,
    /// which only grants more attempts).
    attempts: HashMap<u64, Attempts>,
    lifecycle: Lifecycle,
    connected: bool,
    stream_ready: bool,
    /// Why delivery is impaired, when it is; shown as the degraded reason.
    impaired: Option<String>,
    drain_scheduled: bool,
    counters: Counters,
    tasks: Vec<JoinHandle<()>>,
    pump: Option<JoinHandle<()>>,
}

/// Runs blocking disk work without stalling other tasks on a multi-threaded runtime.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn outcome(outcome: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("mw_broker_events_total", "outcome" => outcome).increment(n);
    }
}

impl Actor for Broker {
    type Msg = BrokerMsg;
    type State = BrokerState;
    type Arguments = BrokerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BrokerMsg>,
        args: BrokerArgs,
    ) -> Result<BrokerState, ActorProcessingErr> {
        let opts = &args.options;
        let mut lifecycle =
            Lifecycle::begin(&args.board, &args.component_id, "broker", opts.idle_window);
        let _ = lifecycle.apply(Event::Start);

        let (queue, report) = blocking(|| DiskQueue::open(&opts.queue_dir, opts.queue.clone()))
            .map_err(|e| format!("broker cannot open its disk queue: {e}"))?;
        if !report.is_clean() {
            let quarantined: Vec<String> = report
                .quarantined_to()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let msg = format!(
                "disk queue recovery found {} corrupt region(s) and {} torn tail byte(s); \
                 quarantined to {:?}; recovered {} event(s)",
                report.corrupt.len(),
                report.torn_tail_bytes(),
                quarantined,
                report.recovered
            );
            tracing::error!(component = %args.component_id, "{msg}");
            lifecycle.record_error(&msg);
        }
        let dlq = blocking(|| DeadLetterQueue::open(&opts.dlq_dir))
            .map_err(|e| format!("broker cannot open its dead-letter store: {e}"))?;
        let dlq_size = dlq.len().unwrap_or(0);
        metrics::gauge!("mw_broker_dlq_size").set(dlq_size as f64);

        let delivery = Delivery::new(
            opts.mode,
            args.bus.clone(),
            opts.stream.name.clone(),
            opts.ack_timeout,
            opts.max_batch * 2,
        );
        // Watch first, then read: a connection made in between is not missed.
        let mut watch = args.bus.watch_connection();
        let connected = *watch.borrow_and_update() == ConnectionState::Connected;
        let mut state = BrokerState {
            breaker: CircuitBreaker::new(opts.breaker),
            stream_ready: opts.mode == DeliveryMode::Core,
            delivery,
            queue,
            dlq,
            dlq_size,
            attempts: HashMap::new(),
            lifecycle,
            connected,
            impaired: None,
            drain_scheduled: false,
            counters: Counters::default(),
            tasks: Vec::new(),
            pump: None,
            args,
        };
        if state.connected {
            if state.args.options.mode == DeliveryMode::Jetstream {
                let _ = state.ensure_stream().await;
            }
        } else {
            state.impaired =
                Some("nats not connected yet; events go to the disk queue until it is".to_owned());
        }

        let pump = spawn_pump(&myself, &state.args);
        if let Some(previous) = state.args.intake.pump.lock().replace(pump.abort_handle()) {
            previous.abort();
        }
        state.pump = Some(pump);
        state.tasks.push(spawn_connection_watch(&myself, watch));
        let tick = match state.args.options.queue.sync {
            SyncPolicy::Interval(d) => d.clamp(Duration::from_millis(10), Duration::from_secs(1)),
            _ => Duration::from_millis(250),
        };
        state
            .tasks
            .push(myself.send_interval(tick, || BrokerMsg::Tick));

        let _ = state.lifecycle.apply(Event::StartDone);
        state.refresh_health();
        tracing::info!(
            component = %state.args.component_id,
            mode = %state.args.options.mode,
            queued = state.queue.len(),
            dead_letters = state.dlq_size,
            connected = state.connected,
            "broker started"
        );
        if !state.queue.is_empty() {
            state.schedule_drain(&myself, Duration::ZERO);
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<BrokerMsg>,
        state: &mut BrokerState,
    ) -> Result<(), ActorProcessingErr> {
        let _ = state.lifecycle.apply(Event::Stop);
        if let Some(pump) = state.pump.take() {
            pump.abort();
            let _ = pump.await;
        }
        for t in state.tasks.drain(..) {
            t.abort();
        }
        // What producers handed over but the broker had not taken yet goes to the disk queue.
        let mut left = Vec::new();
        if let Ok(mut rx) = state.args.intake.rx.clone().try_lock_owned() {
            while let Ok(s) = rx.try_recv() {
                left.push(s);
            }
        }
        let flushed: usize = left.iter().map(|s| s.events.len()).sum();
        if !left.is_empty() {
            let all: Vec<Outgoing> = left
                .iter()
                .flat_map(|s| s.events.iter().map(Outgoing::from_envelope))
                .collect();
            let appended = state.append(&all).is_ok();
            for s in left {
                let _ = s.ack.send(if appended {
                    Ok(Receipt {
                        delivered: 0,
                        queued: s.events.len(),
                    })
                } else {
                    Err(BrokerError::Stopped)
                });
            }
        }
        if let Err(e) = blocking(|| state.queue.sync()) {
            tracing::error!(error = %e, "broker could not sync its disk queue at shutdown");
        }
        tracing::info!(
            component = %state.args.component_id,
            flushed_to_queue = flushed,
            queued = state.queue.len(),
            "broker stopped"
        );
        let _ = state.lifecycle.apply(Event::StopDone);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<BrokerMsg>,
        msg: BrokerMsg,
        state: &mut BrokerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BrokerMsg::Deliver(subs, done) => {
                state.deliver(&myself, subs).await;
                let _ = done.send(());
            }
            BrokerMsg::Drain => state.drain(&myself).await,
            BrokerMsg::Connection(c) => state.connection(&myself, c).await,
            BrokerMsg::Tick => state.tick(&myself).await,
            BrokerMsg::Dlq(command, reply) => {
                let _ = reply.send(state.dlq_command(&myself, &command));
            }
            BrokerMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
        }
        Ok(())
    }
}

fn spawn_pump(myself: &ActorRef<BrokerMsg>, args: &BrokerArgs) -> JoinHandle<()> {
    let rx = args.intake.rx.clone();
    let me = myself.clone();
    let max = args.options.max_batch.max(1);
    tokio::spawn(async move {
        let mut rx = rx.lock_owned().await;
        while let Some(first) = rx.recv().await {
            let mut events = first.events.len();
            let mut batch = vec![first];
            while events < max {
                match rx.try_recv() {
                    Ok(s) => {
                        events += s.events.len();
                        batch.push(s);
                    }
                    Err(_) => break,
                }
            }
            if me
                .call(|port| BrokerMsg::Deliver(batch, port), None)
                .await
                .is_err()
            {
                break;
            }
        }
    })
}

fn spawn_connection_watch(
    myself: &ActorRef<BrokerMsg>,
    mut watch: tokio::sync::watch::Receiver<ConnectionState>,
) -> JoinHandle<()> {
    let me = myself.clone();
    tokio::spawn(async move {
        while watch.changed().await.is_ok() {
            let state = *watch.borrow_and_update();
            if me.cast(BrokerMsg::Connection(state)).is_err() {
                break;
            }
        }
    })
}

impl BrokerState {
    fn direct_allowed(&mut self) -> bool {
        self.queue.is_empty() && self.connected && self.stream_ready && self.breaker.allow().is_ok()
    }

    async fn deliver(&mut self, myself: &ActorRef<BrokerMsg>, subs: Vec<Submission>) {
        // A call with an event too large for a queue segment is refused whole, up front: it
        // could never be made durable here, and it must not fail the calls batched with it.
        let max = self.queue.options().max_payload();
        let mut accepted = Vec::with_capacity(subs.len());
        let mut outgoing: Vec<Outgoing> = Vec::new();
        for s in subs {
            let start = outgoing.len();
            outgoing.extend(s.events.iter().map(Outgoing::from_envelope));
            if let Some(big) = outgoing[start..]
                .iter()
                .find(|o| o.record_len() as u64 > max)
            {
                let reason = format!(
                    "event {} is {} bytes, more than the largest the disk queue holds ({max}); \
                     raise broker.queue_segment_bytes or send smaller events",
                    big.id,
                    big.record_len()
                );
                outgoing.truncate(start);
                outcome("rejected", s.events.len() as u64);
                let _ = s.ack.send(Err(BrokerError::NotDurable { reason }));
            } else {
                accepted.push(s);
            }
        }
        let subs = accepted;
        // Per event: true when delivered, false when it must be queued.
        let mut delivered = vec![false; outgoing.len()];
        let mut event_failures: Vec<(usize, String)> = Vec::new();
        if !outgoing.is_empty() && self.direct_allowed() {
            let results = self.delivery.deliver(&outgoing).await;
            let mut connection_failure = None;
            let mut reached_nats = false;
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(()) => {
                        delivered[i] = true;
                        reached_nats = true;
                    }
                    Err(Failure::Event(reason)) => {
                        reached_nats = true;
                        event_failures.push((i, reason));
                    }
                    Err(Failure::Rejected(reason)) => event_failures.push((i, reason)),
                    Err(f @ (Failure::Connection(_) | Failure::StreamMissing(_))) => {
                        connection_failure.get_or_insert(f);
                    }
                }
            }
            match connection_failure {
                Some(f) => self.on_connection_failure(&f),
                None if reached_nats => self.on_nats_success(),
                None => {}
            }
        }
        let to_queue: Vec<usize> = (0..outgoing.len()).filter(|&i| !delivered[i]).collect();
        let mut queue_error = None;
        if !to_queue.is_empty() {
            let records: Vec<Outgoing> = to_queue.iter().map(|&i| outgoing[i].clone()).collect();
            match self.append(&records) {
                Ok(seqs) => {
                    // An event refused on the direct path has had its first attempt.
                    for (i, reason) in event_failures {
                        let pos = to_queue
                            .binary_search(&i)
                            .expect("refused events are queued");
                        self.attempts.insert(
                            seqs.start + pos as u64,
                            Attempts {
                                count: 1,
                                last_error: reason,
                                first_failed_at: Utc::now(),
                            },
                        );
                    }
                    self.schedule_drain(myself, Duration::ZERO);
                }
                Err(e) => queue_error = Some(e),
            }
        }
        let n_delivered = delivered.iter().filter(|d| **d).count();
        let n_queued = if queue_error.is_none() {
            to_queue.len()
        } else {
            0
        };
        self.counters.delivered += n_delivered as u64;
        self.counters.queued += n_queued as u64;
        outcome("delivered", n_delivered as u64);
        outcome("queued", n_queued as u64);
        if n_delivered + n_queued > 0 {
            self.lifecycle.record_data();
        }
        let mut at = 0;
        for s in subs {
            let range = at..at + s.events.len();
            at = range.end;
            let result = match &queue_error {
                Some(reason) if range.clone().any(|i| !delivered[i]) => {
                    outcome("rejected", s.events.len() as u64);
                    Err(BrokerError::NotDurable {
                        reason: reason.clone(),
                    })
                }
                _ => {
                    let d = range.clone().filter(|&i| delivered[i]).count();
                    Ok(Receipt {
                        delivered: d,
                        queued: range.len() - d,
                    })
                }
            };
            let path = match &result {
                Ok(r) if r.queued == 0 => "direct",
                Ok(_) => "queued",
                Err(_) => "rejected",
            };
            metrics::histogram!("mw_broker_publish_duration_seconds", "path" => path)
                .record(s.received.elapsed().as_secs_f64());
            let _ = s.ack.send(result);
        }
    }

    /// Appends events to the disk queue; their sequence numbers.
    fn append(&mut self, events: &[Outgoing]) -> Result<std::ops::Range<u64>, String> {
        let records: Vec<Vec<u8>> = events.iter().map(Outgoing::to_record).collect();
        blocking(|| self.queue.append_batch(&records)).map_err(|e| {
            tracing::error!(error = %e, events = events.len(), "broker could not queue events");
            e.to_string()
        })
    }

    async fn drain(&mut self, myself: &ActorRef<BrokerMsg>) {
        self.drain_scheduled = false;
        if self.queue.is_empty() {
            self.refresh_health();
            return;
        }
        if !self.connected {
            return; // `Connection(Connected)` schedules the next round.
        }
        if !self.stream_ready {
            let retry = match self.ensure_stream().await {
                Ok(()) => None,
                Err(e) if e.is_retryable() => Some(Duration::from_secs(1)),
                // A conflict needs an operator: check again now and then, quietly.
                Err(_) => Some(Duration::from_secs(30)),
            };
            if let Some(wait) = retry {
                self.schedule_drain(myself, wait);
                return;
            }
        }
        if let Err(open) = self.breaker.allow() {
            self.schedule_drain(myself, open.retry_in.max(Duration::from_millis(10)));
            return;
        }
        let max = self.args.options.max_batch.max(1);
        let records = match blocking(|| self.queue.peek(max)) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "broker cannot read its disk queue; retrying in 1s");
                self.lifecycle.record_error(&e);
                self.schedule_drain(myself, Duration::from_secs(1));
                return;
            }
        };
        // Each record in order, with its index in `batch` (None: unreadable).
        let mut batch = Vec::with_capacity(records.len());
        let mut order = Vec::with_capacity(records.len());
        for r in &records {
            match Outgoing::from_record(&r.payload) {
                Ok(o) => {
                    order.push((r.seq, Some(batch.len())));
                    batch.push(o);
                }
                Err(e) => {
                    // A checksummed record that does not parse was written by something else;
                    // it can never be delivered, so it is skipped loudly, not left blocking.
                    tracing::error!(seq = r.seq, error = %e, "broker skips an unreadable disk queue record");
                    metrics::counter!("mw_broker_unreadable_records_total").increment(1);
                    order.push((r.seq, None));
                }
            }
        }
        let mut results = self.delivery.deliver(&batch).await.into_iter();

        let mut done_through = None;
        let mut connection_failure = None;
        let mut retry_after = None;
        let mut drained = 0u64;
        let mut dead = 0u64;
        // Walk in sequence order; stop at the first event that is not done, so the head only
        // ever moves past events that are delivered or dead-lettered.
        for (seq, index) in order {
            let Some(i) = index else {
                done_through = Some(seq);
                continue;
            };
            let ev = &batch[i];
            match results.next().expect("one result per event") {
                Ok(()) => {
                    self.attempts.remove(&seq);
                    drained += 1;
                    done_through = Some(seq);
                }
                Err(f @ (Failure::Connection(_) | Failure::StreamMissing(_))) => {
                    connection_failure = Some(f);
                    break;
                }
                Err(f @ (Failure::Event(_) | Failure::Rejected(_))) => {
                    // A rejected event can never be published: no retries.
                    let max_attempts = match f {
                        Failure::Rejected(_) => 1,
                        _ => self.args.options.max_attempts.max(1),
                    };
                    let (Failure::Event(reason) | Failure::Rejected(reason)) = f else {
                        unreachable!("matched above")
                    };
                    let a = self.attempts.entry(seq).or_insert_with(|| Attempts {
                        count: 0,
                        last_error: String::new(),
                        first_failed_at: Utc::now(),
                    });
                    a.count += 1;
                    a.last_error = reason;
                    if a.count < max_attempts {
                        tracing::warn!(
                            event = %ev.id,
                            subject = %ev.subject,
                            attempt = a.count,
                            max_attempts,
                            error = %a.last_error,
                            "nats refused an event; it will be retried"
                        );
                        retry_after = Some(Duration::from_millis(200) * a.count);
                        break;
                    }
                    let a = self.attempts.remove(&seq).expect("just inserted");
                    if self.dead_letter(ev, &a) {
                        dead += 1;
                        done_through = Some(seq);
                    } else {
                        retry_after = Some(Duration::from_secs(1));
                        break;
                    }
                }
            }
        }
        if let Some(seq) = done_through
            && let Err(e) = blocking(|| self.queue.ack_through(seq))
        {
            tracing::error!(error = %e, "broker cannot move the disk queue head");
            self.lifecycle.record_error(&e);
        }
        self.counters.drained += drained;
        self.counters.dead_lettered += dead;
        outcome("drained", drained);
        outcome("dead_lettered", dead);
        match connection_failure {
            Some(f) => {
                self.on_connection_failure(&f);
                let wait = match self.breaker.allow() {
                    Ok(()) => {
                        // Still closed (fewer failures than the threshold): report this probe
                        // as nothing and try again shortly.
                        Duration::from_millis(250)
                    }
                    Err(open) => open.retry_in,
                };
                self.schedule_drain(myself, wait.max(Duration::from_millis(10)));
            }
            None => {
                if !batch.is_empty() {
                    self.on_nats_success();
                }
                if self.queue.is_empty() {
                    // Drained: health follows the connection, not a breaker still counting
                    // its half-open successes.
                    self.clear_impaired_if_connected();
                }
                if let Some(wait) = retry_after {
                    self.schedule_drain(myself, wait);
                } else if !self.queue.is_empty() {
                    self.schedule_drain(myself, Duration::ZERO);
                } else {
                    tracing::info!(
                        drained = self.counters.drained,
                        "broker drained its disk queue"
                    );
                }
            }
        }
        self.refresh_health();
    }

    /// Moves an event to the DLQ; false when the store failed (the event stays queued).
    fn dead_letter(&mut self, ev: &Outgoing, a: &Attempts) -> bool {
        let envelope = match ev.envelope() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(event = %ev.id, error = %e, "dead event is not an envelope; dropped");
                return true;
            }
        };
        let letter = DeadLetter {
            envelope,
            attempts: a.count,
            last_error: a.last_error.clone(),
            first_failed_at: a.first_failed_at,
            dead_at: Utc::now(),
        };
        match blocking(|| self.dlq.put(&letter)) {
            Ok(()) => {
                self.dlq_size = self.dlq.len().unwrap_or(self.dlq_size + 1);
                metrics::gauge!("mw_broker_dlq_size").set(self.dlq_size as f64);
                tracing::error!(
                    event = %ev.id,
                    subject = %ev.subject,
                    attempts = a.count,
                    error = %a.last_error,
                    "event moved to the dead-letter queue (inspect with `millwright dlq show {}`)",
                    ev.id
                );
                true
            }
            Err(e) => {
                tracing::error!(event = %ev.id, error = %e, "cannot write the dead-letter queue");
                false
            }
        }
    }

    async fn connection(&mut self, myself: &ActorRef<BrokerMsg>, c: ConnectionState) {
        let up = c == ConnectionState::Connected;
        if up == self.connected {
            return;
        }
        self.connected = up;
        if up {
            tracing::info!("broker: nats is back; draining the disk queue");
            self.breaker.reset();
            self.impaired = None;
            if !self.stream_ready {
                let _ = self.ensure_stream().await;
            }
            // Drain now, even if a drain was scheduled for the end of a long open window.
            self.drain_scheduled = false;
            self.schedule_drain(myself, Duration::ZERO);
        } else {
            if self.args.options.mode == DeliveryMode::Jetstream {
                // The server that comes back may have lost the stream: check it again.
                self.stream_ready = false;
            }
            self.breaker.trip();
            self.impaired = Some(format!(
                "nats {c}; events go to the disk queue until it is back"
            ));
            tracing::warn!("broker: nats {c}; events go to the disk queue");
        }
        self.refresh_health();
    }

    fn on_connection_failure(&mut self, failure: &Failure) {
        let (Failure::Connection(reason) | Failure::StreamMissing(reason)) = failure else {
            return;
        };
        if matches!(failure, Failure::StreamMissing(_)) {
            // Create it again before the next round (after a server lost its store, or an
            // operator deleted it).
            self.stream_ready = false;
        }
        self.breaker.on_failure();
        if self.impaired.is_none() {
            tracing::warn!(error = %reason, "broker: nats publish failed; events go to the disk queue");
        }
        self.impaired = Some(format!(
            "nats publish failed: {reason}; events go to the disk queue"
        ));
        self.refresh_health();
    }

    fn on_nats_success(&mut self) {
        self.breaker.on_success();
        if matches!(
            self.breaker.state(),
            millwright_plugin_sdk::circuit_breaker::BreakerState::Closed
        ) {
            self.clear_impaired_if_connected();
        }
    }

    fn clear_impaired_if_connected(&mut self) {
        if self.connected && self.stream_ready {
            self.impaired = None;
        }
    }

    async fn ensure_stream(&mut self) -> Result<(), StreamError> {
        let Some(js) = self.delivery.jetstream() else {
            let e = StreamError::Unavailable {
                stream: self.args.options.stream.name.clone(),
                reason: "jetstream mode needs a NATS bus (set [bus] nats_url)".to_owned(),
            };
            self.impaired = Some(e.to_string());
            return Err(e);
        };
        match js.ensure_stream(&self.args.options.stream).await {
            Ok(()) => {
                self.stream_ready = true;
                self.impaired = None;
                Ok(())
            }
            Err(e) => {
                let reason = format!("{e}; events go to the disk queue");
                if !e.is_retryable() && self.impaired.as_deref() != Some(reason.as_str()) {
                    tracing::error!(error = %e, "broker cannot use its jetstream stream; events stay in the disk queue");
                    self.lifecycle.record_error(&e);
                }
                self.impaired = Some(reason);
                Err(e)
            }
        }
    }

    async fn tick(&mut self, myself: &ActorRef<BrokerMsg>) {
        // A connection change the watch did not report (it keeps only the latest value).
        let now = self.args.bus.connection_state();
        if (now == ConnectionState::Connected) != self.connected {
            self.connection(myself, now).await;
        }
        if let Err(e) = blocking(|| self.queue.maybe_sync(std::time::Instant::now())) {
            tracing::error!(error = %e, "broker disk queue sync failed");
            self.lifecycle.record_error(&e);
        }
        self.lifecycle.tick();
        if !self.queue.is_empty() && !self.drain_scheduled && self.connected {
            self.schedule_drain(myself, Duration::ZERO);
        }
        self.refresh_health();
    }

    fn schedule_drain(&mut self, myself: &ActorRef<BrokerMsg>, after: Duration) {
        if self.drain_scheduled {
            return;
        }
        self.drain_scheduled = true;
        if after.is_zero() {
            let _ = myself.cast(BrokerMsg::Drain);
        } else {
            myself.send_after(after, || BrokerMsg::Drain);
        }
    }

    /// Publishes the breaker gauge and keeps the lifecycle's degraded state in step with
    /// `impaired`.
    fn refresh_health(&mut self) {
        let current = self.breaker.state().name();
        for s in ["closed", "open", "half_open"] {
            metrics::gauge!("mw_broker_breaker_state", "state" => s).set(if s == current {
                1.0
            } else {
                0.0
            });
        }
        match (&self.impaired, self.lifecycle.state()) {
            (Some(reason), State::Degraded { reason: shown, .. }) if reason == shown => {}
            (Some(reason), _) => {
                let _ = self.lifecycle.apply(Event::Degrade {
                    facet: Some("connection".to_owned()),
                    reason: reason.clone(),
                });
            }
            (None, State::Degraded { .. }) => {
                let _ = self.lifecycle.apply(Event::Recovered);
            }
            (None, _) => {}
        }
    }

    fn dlq_command(
        &mut self,
        myself: &ActorRef<BrokerMsg>,
        command: &DlqCommand,
    ) -> Result<DlqReply, String> {
        let reply = blocking(|| dlq_admin::execute(command, &self.dlq, Some(&mut self.queue)))
            .map_err(|e| e.to_string());
        self.dlq_size = self.dlq.len().unwrap_or(self.dlq_size);
        metrics::gauge!("mw_broker_dlq_size").set(self.dlq_size as f64);
        if let Ok(DlqReply::Replayed { count }) = &reply {
            tracing::info!(count, "dead letters replayed into the disk queue");
            if *count > 0 {
                self.schedule_drain(myself, Duration::ZERO);
            }
        }
        reply
    }

    fn stats(&self) -> BrokerStats {
        BrokerStats {
            mode: self.args.options.mode,
            breaker: self.breaker.state().name().to_owned(),
            connected: self.connected,
            stream_ready: self.stream_ready,
            queue_depth: self.queue.len(),
            queue_bytes: self.queue.bytes(),
            shed: self.queue.shed_total(),
            dead_letters: self.dlq_size,
            delivered: self.counters.delivered,
            queued: self.counters.queued,
            drained: self.counters.drained,
            dead_lettered: self.counters.dead_lettered,
        }
    }
}

/// Why a call to the broker got no answer, or a failed one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerCallError {
    /// The broker could not be reached (restarting, the node stopping, no answer in time).
    #[error("broker {0}")]
    Reach(#[from] ReachError),
    /// It answered with an error.
    #[error("{0}")]
    Failed(String),
}

/// Runs a DLQ command on the broker registered as `registry_name`.
///
/// # Errors
/// [`BrokerCallError`]: not running, no answer within `timeout`, or the command failed.
///
/// # Cancel safety
/// Cancel safe as far as the caller goes; a command already delivered still runs.
pub async fn dlq(
    registry_name: &str,
    command: DlqCommand,
    timeout: Duration,
) -> Result<DlqReply, BrokerCallError> {
    reach::call(registry_name, timeout, |port| BrokerMsg::Dlq(command, port))
        .await?
        .map_err(BrokerCallError::Failed)
}

/// A snapshot of the broker registered as `registry_name`.
///
/// # Errors
/// [`BrokerCallError::Reach`]: not running, or no answer in time.
///
/// # Cancel safety
/// Cancel safe.
pub async fn stats(registry_name: &str, timeout: Duration) -> Result<BrokerStats, BrokerCallError> {
    Ok(reach::call(registry_name, timeout, BrokerMsg::Stats).await?)
}

/// Spawns an unsupervised broker registered as `component_id` (tests, benchmarks, tools; the
/// node spawns it under its root supervisor instead): the producers' handle and the actor.
///
/// # Errors
/// The spawn error (a name already taken, a disk queue that cannot be opened).
///
/// # Cancel safety
/// Cancel safe until the actor is spawned.
pub async fn spawn(
    component_id: &str,
    options: BrokerOptions,
    bus: Bus,
    board: StatusBoard,
) -> Result<(super::BrokerHandle, ActorRef<BrokerMsg>), ractor::SpawnErr> {
    let (handle, intake) = super::BrokerHandle::new(&options);
    let args = BrokerArgs {
        options,
        intake,
        bus,
        board,
        component_id: component_id.to_owned(),
    };
    let (actor, _) = Actor::spawn(Some(component_id.to_owned()), Broker, args).await?;
    Ok((handle, actor))
}
