//! The host side of the in-process boundary: one plugin instance behind a checked header,
//! called without blocking.
//!
//! [`HostedInstance::start`] encodes the request, calls the header's `start`, and returns an
//! [`AnswerFuture`] that either holds the answer already or awaits the plugin's
//! [`Completion`] (a oneshot channel the completion callback sends on). The future owns what
//! it needs and is cancel-safe: dropped while the plugin works, the late answer is freed when
//! it arrives (the plugin's buffer is given back to its `free` on every path).
//! [`HostedInstance::interrupt`] ends a read that waits for data. The node's `DylibTransport` wraps this with its
//! call timeout; a plugin's own tests use it to call their `cdylib` entry points as the node
//! does.

use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::oneshot;

use super::{Completion, HostCallbacks, OwnedBuffer, PluginHeader, StrRef};
use crate::codec::{self, CodecError};
use crate::context::{Host, LogRecord, MetricUpdate};
use crate::protocol::{Request, Response};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The request could not be encoded, or the answer decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The plugin broke its promise to call the completion (it cannot drop it otherwise).
    #[error("the plugin dropped the request without an answer")]
    Lost,
}

/// One instance of an in-process plugin, destroyed when dropped.
#[derive(Debug)]
pub struct HostedInstance {
    header: &'static PluginHeader,
    raw: *mut c_void,
}

// SAFETY: the plugin's instances are built to move between threads and to be started and
// interrupted from any thread (their state is `Send`, shared parts are behind locks).
unsafe impl Send for HostedInstance {}
// SAFETY: as above: `start` and `interrupt` take `&self` and the plugin synchronises them.
unsafe impl Sync for HostedInstance {}

/// The host's end of the callbacks: the [`Host`] logs and metrics go to.
type HostBox = Arc<dyn Host>;

extern "C" fn host_log(ctx: *const c_void, instance: StrRef, record: StrRef) {
    // SAFETY: `ctx` is a live `HostBox` (the plugin has not released it); the strings are lent
    // for the call.
    let host = unsafe { &*ctx.cast::<HostBox>() };
    let (instance, record) = unsafe { (instance.as_str().unwrap_or("?"), record.as_bytes()) };
    if let Ok(record) = codec::decode::<LogRecord>(record) {
        host.log(instance, record);
    }
}

extern "C" fn host_metric(ctx: *const c_void, instance: StrRef, update: StrRef) {
    // SAFETY: as in `host_log`.
    let host = unsafe { &*ctx.cast::<HostBox>() };
    let (instance, update) = unsafe { (instance.as_str().unwrap_or("?"), update.as_bytes()) };
    if let Ok(update) = codec::decode::<MetricUpdate>(update) {
        host.metric(instance, update);
    }
}

extern "C" fn host_release(ctx: *const c_void) {
    // SAFETY: made by `Box::into_raw` in `HostedInstance::create`, released once (the plugin's
    // promise in `HostCallbacks`).
    drop(unsafe { Box::from_raw(ctx.cast::<HostBox>().cast_mut()) });
}

/// A plugin buffer, given back to the plugin's `free` when dropped: read or not (an answer
/// that arrives after its caller gave up is freed where the channel drops it).
struct Answer {
    buffer: Option<OwnedBuffer>,
    free: extern "C" fn(OwnedBuffer),
}

// SAFETY: an owned allocation; which thread frees it (through the plugin's `free`) does not
// matter.
unsafe impl Send for Answer {}

impl Answer {
    fn decode(self) -> Result<Response, CodecError> {
        let bytes = self.buffer.as_ref().map(|b| {
            // SAFETY: a live buffer the plugin returned, freed only when `self` drops below.
            unsafe { b.as_bytes() }
        });
        codec::decode::<Response>(bytes.unwrap_or_default())
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            (self.free)(buffer);
        }
    }
}

/// What a [`Completion`]'s `ctx` points to.
struct Pending {
    answer: oneshot::Sender<Answer>,
    free: extern "C" fn(OwnedBuffer),
}

extern "C" fn host_complete(ctx: *mut c_void, answer: OwnedBuffer) {
    // SAFETY: made by `Box::into_raw` in `start`, completed once (the plugin's promise).
    let pending = unsafe { Box::from_raw(ctx.cast::<Pending>()) };
    // Unwanted (the caller gave up): dropped here, which frees it.
    let _ = pending.answer.send(Answer {
        buffer: Some(answer),
        free: pending.free,
    });
}

/// The answer to one started request: already there, or on its way through the plugin's
/// completion. Owns what it needs (it does not borrow the instance), so it may be awaited on
/// another task; dropped unawaited, the answer is freed when it comes.
#[derive(Debug)]
pub struct AnswerFuture(AnswerState);

enum AnswerState {
    Ready(Option<Answer>),
    Waiting(oneshot::Receiver<Answer>),
}

impl std::fmt::Debug for AnswerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ready(_) => "Ready",
            Self::Waiting(_) => "Waiting",
        })
    }
}

impl Future for AnswerFuture {
    type Output = Result<Response, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            AnswerState::Ready(answer) => match answer.take() {
                Some(answer) => Poll::Ready(answer.decode().map_err(CallError::from)),
                None => Poll::Ready(Err(CallError::Lost)),
            },
            AnswerState::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(answer)) => Poll::Ready(answer.decode().map_err(CallError::from)),
                // The plugin calls the completion exactly once, also when it stops
                // mid-request: a dropped sender is a broken promise.
                Poll::Ready(Err(_)) => Poll::Ready(Err(CallError::Lost)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl HostedInstance {
    /// A new instance `instance` of the plugin with `header`, its logs and metrics going to
    /// `host`; `None` if the plugin could not make it.
    ///
    /// # Safety
    /// `header` must be the header of a loaded plugin library that is never unloaded, already
    /// checked (magic, ABI, size, target, panic strategy), as the node's loader does.
    pub unsafe fn create(
        header: &'static PluginHeader,
        host: Arc<dyn Host>,
        instance: &str,
    ) -> Option<Self> {
        let callbacks = HostCallbacks {
            ctx: Box::into_raw(Box::new(host)).cast_const().cast(),
            log: host_log,
            metric: host_metric,
            release: host_release,
        };
        // The plugin copies the callbacks and releases `ctx` when it is done with it, also
        // when it fails to make the instance.
        let raw = (header.create)(&callbacks, StrRef::from_bytes(instance.as_bytes()));
        (!raw.is_null()).then_some(Self { header, raw })
    }

    /// Starts one request now (the plugin polls it once on this thread) and returns its
    /// answer to await, which does not borrow the instance. A read waits until the source
    /// has data or [`interrupt`](Self::interrupt) ends it.
    ///
    /// # Errors
    /// [`CallError::Codec`] when the request does not encode.
    pub fn start(&self, request: &Request) -> Result<AnswerFuture, CallError> {
        let body = codec::encode(request)?;
        let (tx, rx) = oneshot::channel();
        let pending = Box::into_raw(Box::new(Pending {
            answer: tx,
            free: self.header.free,
        }));
        let started = (self.header.start)(
            self.raw,
            StrRef::from_bytes(&body),
            Completion {
                ctx: pending.cast(),
                complete: host_complete,
            },
        );
        let answer = Answer {
            buffer: Some(started.answer),
            free: self.header.free,
        };
        Ok(AnswerFuture(if started.ready == 1 {
            // SAFETY: answered at once, so the plugin never calls the completion: ours again.
            drop(unsafe { Box::from_raw(pending) });
            AnswerState::Ready(Some(answer))
        } else {
            // The empty buffer of a pending start is the plugin's too.
            drop(answer);
            AnswerState::Waiting(rx)
        }))
    }

    /// Ends the instance's waiting read (it answers `Interrupted`); nothing when none waits.
    pub fn interrupt(&self) {
        (self.header.interrupt)(self.raw);
    }

    /// Sends one request and waits for its answer, without blocking the thread.
    ///
    /// # Errors
    /// [`CallError`] when the request or the answer do not encode.
    pub async fn request(&self, request: &Request) -> Result<Response, CallError> {
        self.start(request)?.await
    }
}

impl Drop for HostedInstance {
    fn drop(&mut self) {
        (self.header.destroy)(self.raw);
    }
}
