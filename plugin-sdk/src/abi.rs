//! The in-process boundary: what a plugin `cdylib` exports and how the host calls it.
//!
//! Nothing Rust-ABI crosses it. A plugin library exports one `extern "C"` function,
//! [`ENTRY_SYMBOL`] (`millwright_plugin_entry_v2`: the ABI major is in the name, so a host never
//! even finds the entry of another major), which returns a pointer to a static, frozen
//! `#[repr(C)]` [`PluginHeader`]: a magic number, the ABI major and minor, the header's size,
//! the SDK and rustc versions, the target, the panic strategy, then `extern "C"` function
//! pointers. New function pointers are only ever appended; `header_size` tells the host which
//! ones a plugin has.
//!
//! Messages are the [`Request`]s and [`Response`]s of [`protocol`](crate::protocol), encoded
//! with [`codec`] (MessagePack; ABI 1 used JSON), and so are the log records and metric
//! updates of [`HostCallbacks`]; the manifest is JSON (the host reads it before it trusts the
//! plugin's versions). Buffers are owned by the side that allocated them and freed
//! by that side: a response buffer comes back to the plugin through [`PluginHeader::free`];
//! requests and callbacks only lend bytes for the duration of the call.
//!
//! Every entry point runs under `catch_unwind`. A panic inside a connector poisons the
//! instance (every later request is answered with [`ConnectorError::Fatal`]) and is reported as
//! `Fatal` itself, so the host's supervisor restarts the instance; it never unwinds into the
//! host. Each instance owns a current-thread tokio runtime (a `Handle` is not shareable across
//! dynamic libraries). Logs and metrics reach the host through [`HostCallbacks`].
//!
//! Export a plugin with [`export_plugin!`](crate::export_plugin).

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::codec;
use crate::connector::{ConnectorError, Plugin};
use crate::context::{Context, Host, LogRecord, MetricUpdate};
use crate::manifest::{self, Manifest};
use crate::protocol::{Adapter, Request, Response, VTable};

/// `"MWPLUGIN"`: the first field of every header.
pub const MAGIC: u64 = u64::from_be_bytes(*b"MWPLUGIN");
/// The exported entry function's name (the ABI major is part of it).
pub const ENTRY_SYMBOL: &str = "millwright_plugin_entry_v2";
/// The prefix of the entry symbol of any ABI major, for telling a user which major a
/// library was built for.
pub const ENTRY_SYMBOL_PREFIX: &str = "millwright_plugin_entry_v";
/// The rustc that built this SDK (and so the plugin linking it).
pub const RUSTC_VERSION: &str = env!("MW_RUSTC_VERSION");

/// Borrowed UTF-8 (or raw) bytes, valid for the duration of a call (or `'static` in the
/// header).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StrRef {
    /// First byte.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl StrRef {
    /// A reference to static text.
    pub const fn from_static(s: &'static str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// A reference to `bytes` (valid while they are).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// The bytes.
    ///
    /// # Safety
    /// `ptr` and `len` must describe live memory for `'a`.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees `ptr..ptr+len` is live for `'a`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The text, if it is UTF-8.
    ///
    /// # Safety
    /// As [`as_bytes`](Self::as_bytes).
    pub unsafe fn as_str<'a>(&self) -> Option<&'a str> {
        // SAFETY: forwarded to the caller.
        std::str::from_utf8(unsafe { self.as_bytes() }).ok()
    }
}

/// Bytes allocated by one side and handed to the other, which must give them back to the
/// allocating side's `free` (never drop them itself: the two sides may have different
/// allocators).
#[repr(C)]
#[derive(Debug)]
pub struct OwnedBuffer {
    /// First byte.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
    /// Capacity of the allocation.
    pub cap: usize,
}

impl OwnedBuffer {
    /// Hands a vector's allocation over.
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        Self {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// The bytes, for reading before the buffer is freed.
    ///
    /// # Safety
    /// The buffer must not have been freed.
    pub unsafe fn as_bytes(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the buffer is live (caller) and was made by `from_vec`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Takes the allocation back.
    ///
    /// # Safety
    /// Only on the side that made the buffer with [`from_vec`](Self::from_vec), once.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: made by `from_vec` on this side (caller), so the parts are a valid Vec's.
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) }
    }
}

/// What the host lends a plugin instance: where its logs and metrics go. The records are
/// [`LogRecord`] and [`MetricUpdate`] encoded with [`codec`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostCallbacks {
    /// The host's own pointer, passed back on every call.
    pub ctx: *const c_void,
    /// A log record from `instance`.
    pub log: extern "C" fn(ctx: *const c_void, instance: StrRef, record: StrRef),
    /// A metric update from `instance`.
    pub metric: extern "C" fn(ctx: *const c_void, instance: StrRef, update: StrRef),
}

/// The frozen header a plugin library exports. Fields are only ever appended.
#[repr(C)]
#[derive(Debug)]
pub struct PluginHeader {
    /// [`MAGIC`].
    pub magic: u64,
    /// The ABI major (also in the entry symbol's name).
    pub abi_major: u32,
    /// The ABI minor.
    pub abi_minor: u32,
    /// `size_of::<PluginHeader>()` as the plugin knows it.
    pub header_size: u32,
    /// 1 when built with `panic = "unwind"` (a panic can be caught), 0 for `abort`.
    pub panic_unwind: u32,
    /// The SDK version.
    pub sdk_version: StrRef,
    /// The rustc version.
    pub rustc_version: StrRef,
    /// `<arch>-<os>`.
    pub target: StrRef,
    /// The [`Manifest`] as JSON.
    pub manifest: extern "C" fn() -> OwnedBuffer,
    /// A new instance named `instance`, logging through `host` (which must outlive it); null
    /// if it could not be made.
    pub create: extern "C" fn(host: *const HostCallbacks, instance: StrRef) -> *mut c_void,
    /// One [`Request`] in, one [`Response`] out, both encoded with [`codec`].
    pub handle: extern "C" fn(instance: *mut c_void, request: StrRef) -> OwnedBuffer,
    /// Ends an instance.
    pub destroy: extern "C" fn(instance: *mut c_void),
    /// Frees a buffer this plugin returned.
    pub free: extern "C" fn(buffer: OwnedBuffer),
}

// SAFETY: the header is immutable static data: its pointers are to static text and functions.
unsafe impl Sync for PluginHeader {}

/// The signature of the entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginHeader;

/// The header every export uses (the macro fills in the functions).
pub const fn header(
    manifest: extern "C" fn() -> OwnedBuffer,
    create: extern "C" fn(*const HostCallbacks, StrRef) -> *mut c_void,
    handle: extern "C" fn(*mut c_void, StrRef) -> OwnedBuffer,
    destroy: extern "C" fn(*mut c_void),
) -> PluginHeader {
    PluginHeader {
        magic: MAGIC,
        abi_major: manifest::ABI_MAJOR,
        abi_minor: manifest::ABI_MINOR,
        header_size: std::mem::size_of::<PluginHeader>() as u32,
        panic_unwind: if cfg!(panic = "unwind") { 1 } else { 0 },
        sdk_version: StrRef::from_static(manifest::SDK_VERSION),
        rustc_version: StrRef::from_static(RUSTC_VERSION),
        target: StrRef::from_static(TARGET),
        manifest,
        create,
        handle,
        destroy,
        free,
    }
}

/// `<arch>-<os>` as a constant (what [`manifest::this_target`] returns).
const TARGET: &str = concat!(env!("MW_TARGET_ARCH"), "-", env!("MW_TARGET_OS"));

/// Frees a buffer made on this side.
pub extern "C" fn free(buffer: OwnedBuffer) {
    // SAFETY: buffers passed here were made by `OwnedBuffer::from_vec` in this library.
    drop(unsafe { buffer.into_vec() });
}

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

struct FfiHost(HostCallbacks);

// SAFETY: the host promises (see `PluginHeader::create`) that its callbacks may be called
// from any thread for as long as the instance lives.
unsafe impl Send for FfiHost {}
// SAFETY: as above.
unsafe impl Sync for FfiHost {}

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

/// One instance behind the boundary.
struct Instance<P: Plugin> {
    adapter: Adapter<P>,
    runtime: tokio::runtime::Runtime,
    poisoned: Option<String>,
    /// The size of the last response, to allocate the next one at once (no regrowth).
    last_len: usize,
    /// Cancels the instance's context when `destroy` drops it.
    _cancel: crate::context::CancelHandle,
}

/// The header's `create` for `P`.
///
/// # Safety
/// `host` must point to callbacks that outlive the instance.
pub unsafe fn create<P: Plugin>(
    vtable: &'static VTable<P>,
    host: *const HostCallbacks,
    instance: StrRef,
) -> *mut c_void {
    if host.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: the host lends the callbacks for the instance's life (caller).
    let callbacks = unsafe { *host };
    // SAFETY: the name is lent for the duration of this call.
    let name = unsafe { instance.as_str() }.unwrap_or("unnamed").to_owned();
    catch_unwind(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let (ctx, cancel) = Context::new(
            P::ID,
            &name,
            serde_json::Value::Null,
            Arc::new(FfiHost(callbacks)),
        );
        let instance = Instance {
            adapter: Adapter::new(vtable, ctx),
            runtime,
            poisoned: None,
            last_len: 0,
            _cancel: cancel,
        };
        Some(Box::into_raw(Box::new(instance)).cast::<c_void>())
    })
    .ok()
    .flatten()
    .unwrap_or(std::ptr::null_mut())
}

fn respond(response: &Response) -> OwnedBuffer {
    respond_sized(response, 0)
}

/// As [`respond`], into a buffer of at least `capacity` bytes.
fn respond_sized(response: &Response, capacity: usize) -> OwnedBuffer {
    let mut buf = Vec::with_capacity(capacity.max(256));
    let bytes = codec::encode_into(&mut buf, response)
        .map(|()| buf)
        .or_else(|e| {
            codec::encode(&Response::Error {
                error: ConnectorError::Fatal(format!("the plugin's answer cannot be encoded: {e}")),
            })
        });
    OwnedBuffer::from_vec(bytes.unwrap_or_default())
}

/// The header's `handle` for `P`.
///
/// # Safety
/// `instance` must come from [`create`] for the same `P` and not be destroyed; `request` is
/// lent for the call.
pub unsafe fn handle<P: Plugin>(instance: *mut c_void, request: StrRef) -> OwnedBuffer {
    if instance.is_null() {
        return respond(&Response::Error {
            error: ConnectorError::Fatal("no such instance".to_owned()),
        });
    }
    // SAFETY: made by `create::<P>` and alive (caller); the host calls one request at a time.
    let inst = unsafe { &mut *instance.cast::<Instance<P>>() };
    if let Some(why) = &inst.poisoned {
        return respond(&Response::Error {
            error: ConnectorError::Fatal(format!("instance poisoned by an earlier panic: {why}")),
        });
    }
    // SAFETY: lent for the duration of this call.
    let bytes = unsafe { request.as_bytes() };
    let request: Request = match codec::decode(bytes) {
        Ok(r) => r,
        Err(e) => {
            return respond(&Response::Error {
                error: ConnectorError::Fatal(format!("unreadable request: {e}")),
            });
        }
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        inst.runtime.block_on(inst.adapter.handle(request))
    }));
    match outcome {
        Ok(response) => {
            let buffer = respond_sized(&response, inst.last_len);
            // A little over the largest recent size, decaying slowly: batches (between small
            // acks) are encoded into one allocation each, without regrowth.
            inst.last_len = (buffer.len + buffer.len / 8).max(inst.last_len - inst.last_len / 16);
            buffer
        }
        Err(panic) => {
            let why = panic_message(panic.as_ref());
            inst.poisoned = Some(why.clone());
            respond(&Response::Error {
                error: ConnectorError::Fatal(format!("plugin {} panicked: {why}", P::ID)),
            })
        }
    }
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

/// Exports a plugin from a `cdylib`: `export_plugin!(VTABLE_STATIC, PluginType);`.
///
/// Generates the `extern "C"` entry symbol [`ENTRY_SYMBOL`] returning the static header.
#[macro_export]
macro_rules! export_plugin {
    ($vtable:expr, $ty:ty) => {
        /// The plugin's entry point (see `millwright_plugin_sdk::abi`).
        #[unsafe(no_mangle)]
        pub extern "C" fn millwright_plugin_entry_v2() -> *const $crate::abi::PluginHeader {
            extern "C" fn manifest() -> $crate::abi::OwnedBuffer {
                $crate::abi::manifest::<$ty>($vtable)
            }
            extern "C" fn create(
                host: *const $crate::abi::HostCallbacks,
                instance: $crate::abi::StrRef,
            ) -> *mut ::std::ffi::c_void {
                // SAFETY: the host honours `PluginHeader::create`'s contract.
                unsafe { $crate::abi::create::<$ty>($vtable, host, instance) }
            }
            extern "C" fn handle(
                instance: *mut ::std::ffi::c_void,
                request: $crate::abi::StrRef,
            ) -> $crate::abi::OwnedBuffer {
                // SAFETY: the host honours `PluginHeader::handle`'s contract.
                unsafe { $crate::abi::handle::<$ty>(instance, request) }
            }
            extern "C" fn destroy(instance: *mut ::std::ffi::c_void) {
                // SAFETY: the host honours `PluginHeader::destroy`'s contract.
                unsafe { $crate::abi::destroy::<$ty>(instance) }
            }
            static HEADER: $crate::abi::PluginHeader =
                $crate::abi::header(manifest, create, handle, destroy);
            &HEADER
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_symbol_names_the_abi_major() {
        assert_eq!(
            ENTRY_SYMBOL,
            format!("{ENTRY_SYMBOL_PREFIX}{}", manifest::ABI_MAJOR)
        );
    }
}
