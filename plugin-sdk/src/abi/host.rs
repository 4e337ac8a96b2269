//! The host side of the in-process boundary: one plugin instance behind a checked header,
//! called without blocking.
//!
//! [`HostedInstance::request`] encodes the request, calls the header's `start`, and either
//! decodes the answer at once or awaits the plugin's [`Completion`] (a oneshot channel the
//! completion callback sends on). The future is cancel-safe: dropped while the plugin works,
//! the late answer is freed when it arrives. The node's `DylibTransport` wraps this with its
//! call timeout; a plugin's own tests use it to call their `cdylib` entry points as the node
//! does.

use std::ffi::c_void;
use std::sync::Arc;

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

// SAFETY: the plugin's instances are built to move between threads (their state is `Send`,
// their runtime is their own), and `&mut self` keeps one call at a time.
unsafe impl Send for HostedInstance {}

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

/// A plugin buffer on its way through a channel.
struct Answer(OwnedBuffer);

// SAFETY: an owned allocation; which thread frees it (through the plugin's `free`) does not
// matter.
unsafe impl Send for Answer {}

/// What a [`Completion`]'s `ctx` points to.
struct Pending {
    answer: oneshot::Sender<Answer>,
    free: extern "C" fn(OwnedBuffer),
}

extern "C" fn host_complete(ctx: *mut c_void, answer: OwnedBuffer) {
    // SAFETY: made by `Box::into_raw` in `request`, completed once (the plugin's promise).
    let pending = unsafe { Box::from_raw(ctx.cast::<Pending>()) };
    if let Err(Answer(unwanted)) = pending.answer.send(Answer(answer)) {
        // The caller gave up on the request.
        (pending.free)(unwanted);
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

    /// Sends one request and waits for its answer, without blocking the thread.
    ///
    /// # Errors
    /// [`CallError`] when the request or the answer do not encode.
    pub async fn request(&mut self, request: &Request) -> Result<Response, CallError> {
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
        let answer = if started.ready == 1 {
            // SAFETY: answered at once, so the plugin never calls the completion: ours again.
            drop(unsafe { Box::from_raw(pending) });
            started.answer
        } else {
            // The plugin calls the completion exactly once, also when it stops mid-request.
            rx.await.map_err(|_| CallError::Lost)?.0
        };
        // SAFETY: a live buffer the plugin returned; freed right after by the plugin's `free`.
        let decoded = codec::decode::<Response>(unsafe { answer.as_bytes() });
        (self.header.free)(answer);
        Ok(decoded?)
    }
}

impl Drop for HostedInstance {
    fn drop(&mut self) {
        (self.header.destroy)(self.raw);
    }
}
