//! The plugin side of the in-process boundary: what the functions of the header that
//! [`export_plugin!`](crate::export_plugin) generates do.
//!
//! An instance is an [`Adapter`] behind an async mutex, a poison flag and its reads'
//! interrupts; all instances of the library share one tokio runtime (`RUNTIME`, a few
//! worker threads). [`start`] decodes the request, builds the future that locks the adapter
//! and handles the request, and polls it once on the caller's thread inside the runtime's
//! context (so timers, I/O and `tokio::spawn` reach the shared runtime). Done: the answer is
//! returned. Not done: the future is spawned on the runtime, which polls it from then on, and
//! its answer goes to the host's [`Completion`]. A read waits until the source has data;
//! [`interrupt`] ends it early. The mutex keeps one request at a time even when the host gave
//! up on an earlier one that is still running.

use std::ffi::c_void;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};

use super::{Completion, HostCallbacks, OwnedBuffer, Started, StrRef};
use crate::codec;
use crate::connector::{ConnectorError, Plugin};
use crate::context::{CancelHandle, Context, Host, LogRecord, MetricUpdate};
use crate::interrupt::ReadInterrupts;
use crate::manifest::Manifest;
use crate::protocol::{Adapter, Request, Response, VTable};

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The manifest of `P`, as the header's `manifest` returns it.
pub fn manifest<P: Plugin>(vtable: &'static VTable<P>) -> OwnedBuffer {
    let json = catch_unwind(|| serde_json::to_vec(&Manifest::of(vtable)).unwrap_or_default())
        .unwrap_or_default();
    OwnedBuffer::from_vec(json)
}

/// The host's callbacks, released when the last [`Context`] holding them goes.
struct FfiHost(HostCallbacks);

// SAFETY: the host promises (see `HostCallbacks`) that its callbacks may be called from any
// thread until `release`.
unsafe impl Send for FfiHost {}
// SAFETY: as above.
unsafe impl Sync for FfiHost {}

impl Drop for FfiHost {
    fn drop(&mut self) {
        (self.0.release)(self.0.ctx);
    }
}

impl Host for FfiHost {
    fn log(&self, instance: &str, record: LogRecord) {
        let Ok(bytes) = codec::encode(&record) else {
            return;
        };
        (self.0.log)(
            self.0.ctx,
            StrRef::from_bytes(instance.as_bytes()),
            StrRef::from_bytes(&bytes),
        );
    }

    fn metric(&self, instance: &str, update: MetricUpdate) {
        let Ok(bytes) = codec::encode(&update) else {
            return;
        };
        (self.0.metric)(
            self.0.ctx,
            StrRef::from_bytes(instance.as_bytes()),
            StrRef::from_bytes(&bytes),
        );
    }
}

/// The tokio runtime every instance of this library shares, built by the first `create`:
/// [`worker_threads`] workers and at most 16 blocking threads (started only when used). A
/// tokio `Handle` cannot cross into another library (each links its own tokio), so the
/// library's instances share this one runtime rather than the node's; the threads do not grow
/// with the instances.
static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

/// The environment variable that sets how many worker threads each plugin library's shared
/// runtime has (default: the cores, at least 2 and at most 8).
pub const THREADS_ENV: &str = "MILLWRIGHT_PLUGIN_THREADS";

/// The shared runtime's worker threads: [`THREADS_ENV`], else the cores clamped to 2..=8 (two
/// at least, so that one instance that blocks a thread does not stop the others).
pub fn worker_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=256).contains(n))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8)
        })
}

fn shared_runtime(plugin: &str) -> Option<&'static tokio::runtime::Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(worker_threads())
                .max_blocking_threads(16)
                .thread_name(format!("mw-plugin-{plugin}"))
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
}

/// One instance behind the boundary: what it holds is its connector (in the adapter), its
/// context, the bookkeeping of its reads, and the abort handles of its requests that wait.
struct Instance<P: Plugin> {
    /// `Some` until `destroy`. Locked by each request for its whole run.
    adapter: Option<Arc<tokio::sync::Mutex<Adapter<P>>>>,
    /// Set by the first panic: every later request is refused.
    poisoned: Arc<OnceLock<String>>,
    /// About the size of recent answers, to allocate the next one at once (no regrowth).
    answer_size: Arc<AtomicUsize>,
    /// The id of the last read started (reads are numbered from 1).
    reads: AtomicU64,
    /// Where `interrupt` ends the waiting read.
    interrupts: ReadInterrupts,
    /// The requests that wait on the shared runtime (finished ones are pruned as new ones
    /// come), aborted by `destroy`.
    waiting: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Cancels the instance's context when `destroy` drops it.
    cancel: Option<CancelHandle>,
}

impl<P: Plugin> Drop for Instance<P> {
    fn drop(&mut self) {
        drop(self.cancel.take());
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        for task in waiting {
            // Dropped at its next await, answering its completion with an error.
            task.abort();
        }
        if let Some(runtime) = RUNTIME.get().and_then(Option::as_ref) {
            // The adapter (unless a running request still holds it) is dropped inside the
            // runtime's context: a connector's sockets and timers deregister there.
            let _entered = runtime.enter();
            drop(self.adapter.take());
        }
    }
}

/// The header's `create` for `P`.
///
/// # Safety
/// `host` must point to callbacks valid until the plugin calls their `release`.
pub unsafe fn create<P: Plugin>(
    vtable: &'static VTable<P>,
    host: *const HostCallbacks,
    instance: StrRef,
) -> *mut c_void {
    if host.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: the host lends the callbacks until `release` (caller). Wrapped first, so that
    // `release` is called even when building the instance fails.
    let host: Arc<dyn Host> = Arc::new(FfiHost(unsafe { *host }));
    // SAFETY: the name is lent for the duration of this call.
    let name = unsafe { instance.as_str() }.unwrap_or("unnamed").to_owned();
    catch_unwind(AssertUnwindSafe(move || {
        shared_runtime(P::ID)?;
        let (ctx, cancel) = Context::new(P::ID, &name, serde_json::Value::Null, host);
        let instance = Instance {
            adapter: Some(Arc::new(tokio::sync::Mutex::new(Adapter::new(vtable, ctx)))),
            poisoned: Arc::new(OnceLock::new()),
            answer_size: Arc::new(AtomicUsize::new(0)),
            reads: AtomicU64::new(0),
            interrupts: ReadInterrupts::new(),
            waiting: Mutex::new(Vec::new()),
            cancel: Some(cancel),
        };
        Some(Box::into_raw(Box::new(instance)).cast::<c_void>())
    }))
    .ok()
    .flatten()
    .unwrap_or(std::ptr::null_mut())
}

fn error(error: ConnectorError) -> Response {
    Response::Error { error }
}

/// `response` encoded into a buffer of about the recent answers' size.
fn encode_answer(response: &Response, recent: &AtomicUsize) -> OwnedBuffer {
    let capacity = recent.load(Ordering::Relaxed);
    let mut buf = Vec::with_capacity(capacity.max(256));
    let bytes = codec::encode_into(&mut buf, response)
        .map(|()| buf)
        .or_else(|e| {
            codec::encode(&error(ConnectorError::Fatal(format!(
                "the plugin's answer cannot be encoded: {e}"
            ))))
        })
        .unwrap_or_default();
    // A little over the largest recent size, decaying slowly: batches (between small acks)
    // are encoded into one allocation each, without regrowth.
    let len = bytes.len();
    recent.store(
        (len + len / 8).max(capacity - capacity / 16),
        Ordering::Relaxed,
    );
    OwnedBuffer::from_vec(bytes)
}

/// A request's future, with panics turned into a `Fatal` answer that poisons the instance.
struct Guarded<F> {
    inner: Pin<Box<F>>,
    poisoned: Arc<OnceLock<String>>,
    plugin: &'static str,
}

impl<F: Future<Output = Response>> Future for Guarded<F> {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Response> {
        let this = &mut *self;
        match catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                let why = panic_message(panic.as_ref());
                let _ = this.poisoned.set(why.clone());
                Poll::Ready(error(ConnectorError::Fatal(format!(
                    "plugin {} panicked: {why}",
                    this.plugin
                ))))
            }
        }
    }
}

/// Calls the host's completion once: with the answer, or (dropped unanswered, as when the
/// instance is destroyed mid-request) with an error.
struct CompletionGuard(Option<Completion>);

// SAFETY: the host promises a completion may be called from any thread (see `Completion`).
unsafe impl Send for CompletionGuard {}

impl CompletionGuard {
    fn complete(mut self, answer: OwnedBuffer) {
        if let Some(c) = self.0.take() {
            (c.complete)(c.ctx, answer);
        }
    }
}

impl Drop for CompletionGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let answer = encode_answer(
                &error(ConnectorError::Fatal(
                    "the plugin instance was stopped before it answered".to_owned(),
                )),
                &AtomicUsize::new(0),
            );
            (c.complete)(c.ctx, answer);
        }
    }
}

/// The header's `start` for `P`.
///
/// # Safety
/// `instance` must come from [`create`] for the same `P` and not be destroyed; `request` is
/// lent for the call.
pub unsafe fn start<P: Plugin>(
    instance: *mut c_void,
    request: StrRef,
    completion: Completion,
) -> Started {
    // Nothing after the completion is handed to the spawned task can panic, so a caught panic
    // always means "not started": answered here, the completion never called.
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded to the caller.
        unsafe { start_request::<P>(instance, request, completion) }
    }))
    .unwrap_or_else(|panic| {
        let why = panic_message(panic.as_ref());
        Started::ready(encode_answer(
            &error(ConnectorError::Fatal(format!(
                "plugin {} panicked: {why}",
                P::ID
            ))),
            &AtomicUsize::new(0),
        ))
    })
}

/// [`start`] without its `catch_unwind`.
///
/// # Safety
/// As [`start`].
unsafe fn start_request<P: Plugin>(
    instance: *mut c_void,
    request: StrRef,
    completion: Completion,
) -> Started {
    let refuse = |e: ConnectorError| Started::ready(encode_answer(&error(e), &AtomicUsize::new(0)));
    if instance.is_null() {
        return refuse(ConnectorError::Fatal("no such instance".to_owned()));
    }
    // SAFETY: made by `create::<P>` and alive (caller); everything used here is shared
    // immutably (the adapter is behind its mutex).
    let inst = unsafe { &*instance.cast::<Instance<P>>() };
    if let Some(why) = inst.poisoned.get() {
        return refuse(ConnectorError::Fatal(format!(
            "instance poisoned by an earlier panic: {why}"
        )));
    }
    let (Some(runtime), Some(adapter)) =
        (RUNTIME.get().and_then(Option::as_ref), inst.adapter.clone())
    else {
        return refuse(ConnectorError::Fatal("the instance is stopping".to_owned()));
    };
    // SAFETY: lent for the duration of this call.
    let request: Request = match codec::decode(unsafe { request.as_bytes() }) {
        Ok(r) => r,
        Err(e) => return refuse(ConnectorError::Fatal(format!("unreadable request: {e}"))),
    };
    let ticket = request.is_read().then(|| {
        let id = inst.reads.fetch_add(1, Ordering::Relaxed) + 1;
        inst.interrupts.ticket(id)
    });
    let mut work = Guarded {
        inner: Box::pin(async move { adapter.lock_owned().await.serve(request, ticket).await }),
        poisoned: inst.poisoned.clone(),
        plugin: P::ID,
    };
    let first_poll = {
        let _entered = runtime.enter();
        Pin::new(&mut work).poll(&mut std::task::Context::from_waker(Waker::noop()))
    };
    match first_poll {
        Poll::Ready(answer) => Started::ready(encode_answer(&answer, &inst.answer_size)),
        Poll::Pending => {
            // The runtime polls it again at once with a real waker, so nothing that happened
            // since the first poll is missed.
            let done = CompletionGuard(Some(completion));
            let recent = inst.answer_size.clone();
            let task = runtime.spawn(async move {
                let answer = work.await;
                done.complete(encode_answer(&answer, &recent));
            });
            let mut waiting = inst.waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.retain(|t| !t.is_finished());
            waiting.push(task.abort_handle());
            Started::pending()
        }
    }
}

/// The header's `interrupt` for `P`: ends the instance's latest read if it still waits (or
/// as soon as it starts), which then answers `Interrupted`.
///
/// # Safety
/// `instance` must come from [`create`] for the same `P` and not be destroyed.
pub unsafe fn interrupt<P: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: made by `create::<P>` and alive (caller); only shared state is used.
    let inst = unsafe { &*instance.cast::<Instance<P>>() };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        inst.interrupts
            .interrupt(inst.reads.load(Ordering::Relaxed));
    }));
}

/// The header's `destroy` for `P`.
///
/// # Safety
/// `instance` must come from [`create`] for the same `P`, once.
pub unsafe fn destroy<P: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: made by `create::<P>` (caller), destroyed once.
    let inst = unsafe { Box::from_raw(instance.cast::<Instance<P>>()) };
    // A connector that panics while being dropped must not unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(inst)));
}
