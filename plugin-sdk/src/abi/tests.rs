//! The boundary's contract, with a plugin exported in this test binary and called through
//! [`HostedInstance`]: answers at once or through the completion, a waiting request holds no
//! host thread, spawned tasks run between requests, a panic poisons the instance, a request
//! given up on still holds the instance, `destroy` mid-request answers the completion, and
//! `release` comes exactly once.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::json;

use super::host::HostedInstance;
use super::{Completion, HEADER_SYMBOL, HostCallbacks, OwnedBuffer, PluginHeader, StrRef};
use crate::codec;
use crate::connector::{
    AckToken, Connector, ConnectorError, Plugin, Responder, Source, SourceBatch,
};
use crate::event::Envelope;
use crate::context::{Context, Host, LogRecord, MetricUpdate};
use crate::protocol::{Request, Response};

/// Answers `echo` at once; `sleep` after `{"ms": n}`; `forever` never; `later` at once, with a
/// task that logs afterwards; `panic` by panicking. As a source, it has data only after a
/// `put` call (its read waits until then).
struct Waiter {
    put: Vec<serde_json::Value>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct WaiterConfig {}

impl Plugin for Waiter {
    type Config = WaiterConfig;
    const ID: &'static str = "waiter";
    const VERSION: &'static str = "0.0.0";
    const DESCRIPTION: &'static str = "waits on request";

    fn new(_: WaiterConfig, _: &Context) -> Result<Self, ConnectorError> {
        Ok(Self { put: Vec::new() })
    }
}

impl Connector for Waiter {
    async fn connect(&mut self, _: &Context) -> Result<(), ConnectorError> {
        Ok(())
    }
}

impl Responder for Waiter {
    async fn call(
        &mut self,
        ctx: &Context,
        method: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, ConnectorError> {
        match method {
            "echo" => Ok(payload),
            "put" => {
                self.put.push(payload);
                Ok(json!("put"))
            }
            "sleep" => {
                tokio::time::sleep(Duration::from_millis(payload["ms"].as_u64().unwrap_or(0)))
                    .await;
                Ok(json!("slept"))
            }
            "forever" => {
                // Logs from a task that outlives the request (and the instance, for a while).
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ctx.info("still here");
                });
                std::future::pending().await
            }
            "later" => {
                // Answers at once; the task it spawns logs on its own, between calls.
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    ctx.info("later");
                });
                Ok(json!("spawned"))
            }
            "panic" => panic!("told to panic"),
            other => Err(ConnectorError::Config(format!("no method {other}"))),
        }
    }
}

impl Source for Waiter {
    async fn read_batch(
        &mut self,
        ctx: &Context,
        _: usize,
    ) -> Result<SourceBatch, ConnectorError> {
        if self.put.is_empty() {
            // No data: wait (until interrupted).
            std::future::pending::<()>().await;
        }
        let events = std::mem::take(&mut self.put)
            .into_iter()
            .map(|v| Envelope::new(ctx.instance(), ctx.event_subject("put"), v))
            .collect();
        Ok(SourceBatch::new(AckToken(1), events))
    }

    async fn ack(&mut self, _: &Context, _: AckToken) -> Result<(), ConnectorError> {
        Ok(())
    }
}

crate::plugin_vtable!(WAITER: Waiter, source, responder);
crate::export_plugin!(&WAITER, Waiter);

/// Counts logs and whether the plugin released the host.
#[derive(Default)]
struct Counting {
    logs: AtomicUsize,
}

impl Host for Counting {
    fn log(&self, _: &str, _: LogRecord) {
        self.logs.fetch_add(1, Ordering::SeqCst);
    }

    fn metric(&self, _: &str, _: MetricUpdate) {}
}

fn header() -> &'static PluginHeader {
    &millwright_plugin_header_v4
}

async fn instance(host: Arc<Counting>) -> HostedInstance {
    // SAFETY: this binary's own header, never unloaded.
    let i = unsafe { HostedInstance::create(header(), host, "w") }.expect("an instance");
    for r in [Request::open(json!({})), Request::Connect] {
        assert_eq!(i.request(&r).await.unwrap(), Response::Done);
    }
    i
}

fn call(method: &str, payload: serde_json::Value) -> Request {
    Request::Call {
        method: method.into(),
        payload,
    }
}

#[test]
fn the_symbol_is_the_header_and_names_the_abi_major() {
    assert_eq!(HEADER_SYMBOL, "millwright_plugin_header_v4");
    assert_eq!(
        HEADER_SYMBOL,
        format!(
            "{}{}",
            super::HEADER_SYMBOL_PREFIX,
            crate::manifest::ABI_MAJOR
        )
    );
    assert_eq!(header().magic, super::MAGIC);
    assert_eq!(
        header().header_size as usize,
        std::mem::size_of::<PluginHeader>()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_ready_request_answers_at_once_and_a_waiting_one_through_the_completion() {
    let host = Arc::new(Counting::default());
    let w = instance(host.clone()).await;
    let echo = w.request(&call("echo", json!([1, 2]))).await.unwrap();
    assert_eq!(
        echo,
        Response::Reply {
            payload: json!([1, 2])
        }
    );

    // The only thread of this runtime stays free while the plugin waits on its own.
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::task::yield_now().await;
            t.fetch_add(1, Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    let slept = w.request(&call("sleep", json!({"ms": 100}))).await.unwrap();
    ticker.abort();
    assert_eq!(
        slept,
        Response::Reply {
            payload: json!("slept")
        }
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(
        ticks.load(Ordering::Relaxed) > 100,
        "the host thread ran other tasks"
    );
    let unknown = w.request(&call("nope", json!(null))).await.unwrap();
    assert!(matches!(
        unknown,
        Response::Error {
            error: ConnectorError::Config(_)
        }
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn the_instance_runtime_runs_spawned_tasks_between_requests() {
    let host = Arc::new(Counting::default());
    let w = instance(host.clone()).await;
    let answer = w.request(&call("later", json!(null))).await.unwrap();
    assert_eq!(
        answer,
        Response::Reply {
            payload: json!("spawned")
        }
    );
    // No request is running now; the task still gets to log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.logs.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the spawned task never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_poisons_the_instance_only() {
    let w = instance(Arc::new(Counting::default())).await;
    let Response::Error { error } = w.request(&call("panic", json!(null))).await.unwrap() else {
        panic!("an error")
    };
    assert!(
        matches!(&error, ConnectorError::Fatal(m) if m.contains("waiter panicked: told to panic")),
        "{error:?}"
    );
    let Response::Error { error } = w.request(&call("echo", json!(1))).await.unwrap() else {
        panic!("an error")
    };
    assert!(
        matches!(&error, ConnectorError::Fatal(m) if m.contains("poisoned")),
        "{error:?}"
    );
    let other = instance(Arc::new(Counting::default())).await;
    assert_eq!(
        other.request(&call("echo", json!(1))).await.unwrap(),
        Response::Reply { payload: json!(1) }
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_given_up_on_keeps_the_instance_busy_and_destroy_releases_the_host_once() {
    let host = Arc::new(Counting::default());
    let w = instance(host.clone()).await;
    // A request the host gives up on: the future is dropped, the plugin goes on waiting.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        w.request(&call("forever", json!(null))),
    )
    .await;
    assert!(gave_up.is_err());
    // A later request queues behind it inside the plugin (one at a time).
    let queued = tokio::time::timeout(
        Duration::from_millis(100),
        w.request(&call("echo", json!(1))),
    )
    .await;
    assert!(queued.is_err());
    assert!(
        Arc::strong_count(&host) >= 2,
        "the plugin still holds the host"
    );
    // The task the request spawned logs through the callbacks on the plugin's own thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.logs.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the spawned task never logged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(w);
    // Destroy does not wait; the plugin releases the host once its last task is gone.
    while Arc::strong_count(&host) > 1 {
        assert!(
            Instant::now() < deadline,
            "the plugin never released the host"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(Arc::strong_count(&host), 1, "released exactly once");
    assert_eq!(
        host.logs.load(Ordering::SeqCst),
        1,
        "the task the request spawned logged through the callbacks"
    );
}

extern "C" fn no_log(_: *const c_void, _: StrRef, _: StrRef) {}
extern "C" fn no_release(_: *const c_void) {}

/// A completion that sends the decoded answer on the channel its `ctx` boxes.
extern "C" fn send_answer(ctx: *mut c_void, answer: OwnedBuffer) {
    // SAFETY: boxed by `raw_start`, completed once.
    let tx = unsafe { Box::from_raw(ctx.cast::<mpsc::Sender<Response>>()) };
    // SAFETY: the plugin's live buffer, freed right after.
    let response = codec::decode(unsafe { answer.as_bytes() }).unwrap();
    (header().free)(answer);
    let _ = tx.send(response);
}

/// Starts `request` on `raw` with a completion that answers on the returned channel (or the
/// answer itself when it was ready).
fn raw_start(raw: *mut c_void, request: &Request) -> Result<Response, mpsc::Receiver<Response>> {
    let (tx, rx) = mpsc::channel();
    let ctx = Box::into_raw(Box::new(tx)).cast::<c_void>();
    let body = codec::encode(request).unwrap();
    let started = (header().start)(
        raw,
        StrRef::from_bytes(&body),
        Completion {
            ctx,
            complete: send_answer,
        },
    );
    if started.ready == 1 {
        // SAFETY: not called when ready: ours to free.
        drop(unsafe { Box::from_raw(ctx.cast::<mpsc::Sender<Response>>()) });
        // SAFETY: the plugin's live buffer, freed right after.
        let response = codec::decode(unsafe { started.answer.as_bytes() }).unwrap();
        (header().free)(started.answer);
        Ok(response)
    } else {
        Err(rx)
    }
}

#[test]
fn destroying_an_instance_answers_its_waiting_request_through_the_completion() {
    let callbacks = HostCallbacks {
        ctx: std::ptr::null(),
        log: no_log,
        metric: no_log,
        release: no_release,
    };
    let raw = (header().create)(&callbacks, StrRef::from_static("raw"));
    assert!(!raw.is_null());
    assert_eq!(
        raw_start(raw, &Request::open(json!({}))).unwrap(),
        Response::Done
    );
    assert_eq!(raw_start(raw, &Request::Connect).unwrap(), Response::Done);
    let waiting = raw_start(raw, &call("forever", json!(null))).expect_err("it waits");
    assert!(waiting.try_recv().is_err(), "not answered yet");
    (header().destroy)(raw);
    let answer = waiting
        .recv_timeout(Duration::from_secs(10))
        .expect("destroy answers the waiting request");
    let Response::Error { error } = answer else {
        panic!("an error, got {answer:?}")
    };
    assert!(
        matches!(&error, ConnectorError::Fatal(m) if m.contains("stopped before it answered")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_read_waits_for_data_and_an_interrupt_lets_the_call_behind_it_run() {
    let w = instance(Arc::new(Counting::default())).await;
    let read = w.start(&Request::ReadBatch { max: 10 }).unwrap();
    tokio::pin!(read);
    assert!(
        futures_poll_once(read.as_mut()).await.is_none(),
        "no data: the read waits"
    );
    // A call started behind it waits for the instance (one request at a time)...
    let put = w.start(&call("put", json!(7))).unwrap();
    tokio::pin!(put);
    assert!(futures_poll_once(put.as_mut()).await.is_none());
    // ... until the node interrupts the read, which answers at once with nothing read.
    w.interrupt();
    assert_eq!(read.await.unwrap(), Response::Interrupted);
    assert_eq!(put.await.unwrap(), Response::Reply { payload: json!("put") });
    // The next read finds the data the call brought, without waiting.
    let Response::Batch { batch } = w.request(&Request::ReadBatch { max: 10 }).await.unwrap() else {
        panic!("a batch")
    };
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].payload, json!(7));
    // An interrupt with no read waiting changes nothing for the next read.
    w.interrupt();
    let read = w.start(&Request::ReadBatch { max: 10 }).unwrap();
    tokio::pin!(read);
    assert!(futures_poll_once(read.as_mut()).await.is_none(), "waits again");
}

#[test]
fn instances_share_the_librarys_runtime_threads() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut waiting = Vec::new();
        for _ in 0..300 {
            let w = instance(Arc::new(Counting::default())).await;
            // Each has a read that waits on the shared runtime.
            let read = w.start(&Request::ReadBatch { max: 1 }).unwrap();
            waiting.push((w, read));
        }
        let threads = plugin_threads();
        assert!(
            threads <= super::plugin_side::worker_threads() + 16,
            "300 instances, {threads} plugin threads"
        );
        assert!(threads >= 1, "the shared runtime runs");
        // Destroying them ends their waiting reads with an error answer.
        let (w, read) = waiting.pop().unwrap();
        drop(w);
        assert!(matches!(read.await, Ok(Response::Error { .. })));
    });
}

/// Threads of this process named after the waiter plugin's runtime.
fn plugin_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("mw-plugin-waite"))
        .count()
}

/// Polls `f` once: `Some` if it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}
