//! The in-process boundary: what a plugin `cdylib` exports and how the host calls it.
//!
//! Nothing Rust-ABI crosses it. A plugin library exports one static, frozen `#[repr(C)]`
//! [`PluginHeader`] under the data symbol [`HEADER_SYMBOL`] (`millwright_plugin_header_v4`:
//! the ABI major is in the name, so a host never even finds the header of another major): a
//! magic number, the ABI major and minor, the header's size, the SDK and rustc versions, the
//! target, the panic strategy, then `extern "C"` function pointers. The host reads and checks
//! all of it before it calls any plugin code (the header is data, not a function). New
//! function pointers are only ever appended; `header_size` tells the host which ones a plugin
//! has.
//!
//! Messages are the [`Request`](crate::protocol::Request)s and
//! [`Response`](crate::protocol::Response)s of [`protocol`](crate::protocol), encoded with
//! [`codec`](crate::codec) (MessagePack; ABI 1 used JSON), and so are the log records and
//! metric updates of [`HostCallbacks`]; the manifest is JSON (the host reads it before it
//! trusts the plugin's versions). Buffers are owned by the side that allocated them and freed by
//! that side: an answer comes back to the plugin through [`PluginHeader::free`]; requests and
//! callbacks only lend bytes for the duration of the call.
//!
//! # Calls never block the host
//!
//! [`PluginHeader::start`] hands a request over and returns at once (since ABI 3; ABI 2's `handle`
//! blocked the calling thread for the whole request). The plugin polls the request's future
//! once, on the caller's thread, inside its library's runtime's context:
//!
//! - if it is done (a source with events ready, an ack, most calls), the answer comes back in
//!   [`Started`] and no thread is woken: the cost of a call is the encoding and the poll;
//! - if it has to wait (for a peer, a timer, a lock), the plugin moves the future to its own
//!   runtime and returns "pending"; when it finishes, the plugin calls the host's
//!   [`Completion`] with the answer, from its runtime's thread.
//!
//! So a plugin that waits never holds a thread of the node, and the host can give up on a call
//! that takes too long (the node's `call_timeout`) and restart the instance, as it does out of
//! process. What a plugin must not do is block a thread without awaiting (a synchronous
//! `std::thread::sleep` or blocking I/O in an `async fn`): its first poll runs on the node's
//! thread. Use `tokio::task::spawn_blocking` for blocking work, as in any async code.
//!
//! Every entry point and every poll runs under `catch_unwind`. A panic inside a connector
//! poisons the instance (every later request is answered with
//! [`ConnectorError::Fatal`](crate::connector::ConnectorError::Fatal)) and is reported as
//! `Fatal` itself, so the host's supervisor restarts the instance; it never unwinds into the
//! host. All instances of a library share one tokio runtime with a few worker threads (the
//! cores, 2 to 8, or `MILLWRIGHT_PLUGIN_THREADS`; a `Handle` is not shareable across dynamic
//! libraries, so the runtime is the library's, not the node's), which runs the instances'
//! waiting requests and spawned tasks between calls: threads do not grow with instances.
//! Logs and metrics reach the host through [`HostCallbacks`].
//!
//! # Reads wait for data
//!
//! A source's read (ABI 4) waits until the source has data: an idle instance costs one
//! pending future and no crossing at all. When the host needs the instance meanwhile (a call,
//! a write, a pause, the close), it calls [`PluginHeader::interrupt`], the read answers
//! [`Response::Interrupted`](crate::protocol::Response::Interrupted) at once, and the host
//! sends its request.
//!
//! The plugin side is [`export_plugin!`](crate::export_plugin) (over [`plugin_side`]); the
//! host side is [`host::HostedInstance`], which the node and the plugins' own tests use.

pub mod host;
#[doc(hidden)]
pub mod plugin_side;

use std::ffi::c_void;

use crate::manifest;

/// `"MWPLUGIN"`: the first field of every header.
pub const MAGIC: u64 = u64::from_be_bytes(*b"MWPLUGIN");
/// The exported header's symbol (the ABI major is part of it).
pub const HEADER_SYMBOL: &str = "millwright_plugin_header_v4";
/// The prefix of the header symbol of any ABI major from 3 on, for telling a user which major
/// a library was built for.
pub const HEADER_SYMBOL_PREFIX: &str = "millwright_plugin_header_v";
/// The prefix of the entry *function* that ABI 1 and 2 exported instead of a header symbol
/// (`millwright_plugin_entry_v2`), recognised only to name the major in a refusal.
pub const LEGACY_ENTRY_PREFIX: &str = "millwright_plugin_entry_v";
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
/// [`LogRecord`](crate::context::LogRecord) and [`MetricUpdate`](crate::context::MetricUpdate)
/// encoded with [`codec`](crate::codec).
///
/// The plugin may call `log` and `metric` from any thread until it calls `release`, which it
/// does exactly once for every `create` it was given these callbacks in (also when `create`
/// fails), after its last use of `ctx`: that can be after `destroy`, while the instance's last
/// tasks wind down.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostCallbacks {
    /// The host's own pointer, passed back on every call.
    pub ctx: *const c_void,
    /// A log record from `instance`.
    pub log: extern "C" fn(ctx: *const c_void, instance: StrRef, record: StrRef),
    /// A metric update from `instance`.
    pub metric: extern "C" fn(ctx: *const c_void, instance: StrRef, update: StrRef),
    /// The plugin will not use `ctx` again.
    pub release: extern "C" fn(ctx: *const c_void),
}

/// Where a plugin delivers the answer to a request that had to wait: `complete(ctx, answer)`,
/// exactly once, from any thread. The answer is the plugin's buffer (give it back to
/// [`PluginHeader::free`]).
#[repr(C)]
#[derive(Debug)]
pub struct Completion {
    /// The host's pointer for this one request.
    pub ctx: *mut c_void,
    /// The answer, a [`Response`](crate::protocol::Response) encoded with
    /// [`codec`](crate::codec).
    pub complete: extern "C" fn(ctx: *mut c_void, answer: OwnedBuffer),
}

/// What [`PluginHeader::start`] returns.
#[repr(C)]
#[derive(Debug)]
pub struct Started {
    /// 1: the answer is in `answer` and the [`Completion`] will never be called. 0: `answer`
    /// is empty and the completion will be called exactly once.
    pub ready: u32,
    /// The answer when `ready` is 1 (give it back to [`PluginHeader::free`]).
    pub answer: OwnedBuffer,
}

impl Started {
    /// Answered at once.
    pub fn ready(answer: OwnedBuffer) -> Self {
        Self { ready: 1, answer }
    }

    /// The answer will come through the completion.
    pub fn pending() -> Self {
        Self {
            ready: 0,
            answer: OwnedBuffer::from_vec(Vec::new()),
        }
    }
}

/// The frozen header a plugin library exports as [`HEADER_SYMBOL`]. Fields are only ever
/// appended.
#[repr(C)]
#[derive(Debug)]
pub struct PluginHeader {
    /// [`MAGIC`].
    pub magic: u64,
    /// The ABI major (also in the symbol's name).
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
    /// The [`Manifest`](crate::manifest::Manifest) as JSON.
    pub manifest: extern "C" fn() -> OwnedBuffer,
    /// A new instance named `instance`, logging through `host` (see [`HostCallbacks`] for how
    /// long the plugin uses it); null if it could not be made.
    pub create: extern "C" fn(host: *const HostCallbacks, instance: StrRef) -> *mut c_void,
    /// Starts one request (encoded with [`codec`](crate::codec)) and returns without
    /// blocking: the answer at once, or later through `completion` (see [`Started`]). One
    /// request at a time per instance: the host starts the next after the previous answered,
    /// after it interrupted a waiting read (`interrupt`), or after it gave up on it; a later
    /// request then waits for the earlier one inside the plugin.
    pub start:
        extern "C" fn(instance: *mut c_void, request: StrRef, completion: Completion) -> Started,
    /// Ends an instance without waiting for it: its requests still running are dropped at
    /// their next await (each answered through its completion with an error); the shared
    /// runtime goes on for the library's other instances.
    pub destroy: extern "C" fn(instance: *mut c_void),
    /// Ends the instance's latest read if it still waits for data (ABI 4): it answers
    /// [`Response::Interrupted`](crate::protocol::Response::Interrupted) through its
    /// completion, and the host can send its next request. Never blocks; does nothing when no
    /// read waits.
    pub interrupt: extern "C" fn(instance: *mut c_void),
    /// Frees a buffer this plugin returned.
    pub free: extern "C" fn(buffer: OwnedBuffer),
}

// SAFETY: the header is immutable static data: its pointers are to static text and functions.
unsafe impl Sync for PluginHeader {}

/// The header every export uses (the macro fills in the functions).
pub const fn header(
    manifest: extern "C" fn() -> OwnedBuffer,
    create: extern "C" fn(*const HostCallbacks, StrRef) -> *mut c_void,
    start: extern "C" fn(*mut c_void, StrRef, Completion) -> Started,
    destroy: extern "C" fn(*mut c_void),
    interrupt: extern "C" fn(*mut c_void),
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
        start,
        destroy,
        free,
        interrupt,
    }
}

/// `<arch>-<os>` as a constant (what [`manifest::this_target`] returns).
const TARGET: &str = concat!(env!("MW_TARGET_ARCH"), "-", env!("MW_TARGET_OS"));

/// Frees a buffer made on this side.
pub extern "C" fn free(buffer: OwnedBuffer) {
    // SAFETY: buffers passed here were made by `OwnedBuffer::from_vec` in this library.
    drop(unsafe { buffer.into_vec() });
}

/// Exports a plugin from a `cdylib`: `export_plugin!(VTABLE_STATIC, PluginType);`.
///
/// Generates the static header [`HEADER_SYMBOL`] (`millwright_plugin_header_v4`), whose
/// functions are [`plugin_side`]'s for the plugin type.
#[macro_export]
macro_rules! export_plugin {
    ($vtable:expr, $ty:ty) => {
        #[doc(hidden)]
        mod __millwright_plugin_export {
            use super::*;

            pub(super) extern "C" fn manifest() -> $crate::abi::OwnedBuffer {
                $crate::abi::plugin_side::manifest::<$ty>($vtable)
            }
            pub(super) extern "C" fn create(
                host: *const $crate::abi::HostCallbacks,
                instance: $crate::abi::StrRef,
            ) -> *mut ::std::ffi::c_void {
                // SAFETY: the host honours `PluginHeader::create`'s contract.
                unsafe { $crate::abi::plugin_side::create::<$ty>($vtable, host, instance) }
            }
            pub(super) extern "C" fn start(
                instance: *mut ::std::ffi::c_void,
                request: $crate::abi::StrRef,
                completion: $crate::abi::Completion,
            ) -> $crate::abi::Started {
                // SAFETY: the host honours `PluginHeader::start`'s contract.
                unsafe { $crate::abi::plugin_side::start::<$ty>(instance, request, completion) }
            }
            pub(super) extern "C" fn destroy(instance: *mut ::std::ffi::c_void) {
                // SAFETY: the host honours `PluginHeader::destroy`'s contract.
                unsafe { $crate::abi::plugin_side::destroy::<$ty>(instance) }
            }
            pub(super) extern "C" fn interrupt(instance: *mut ::std::ffi::c_void) {
                // SAFETY: the host honours `PluginHeader::interrupt`'s contract.
                unsafe { $crate::abi::plugin_side::interrupt::<$ty>(instance) }
            }
        }

        /// The plugin's header (see `millwright_plugin_sdk::abi`).
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals, reason = "the ABI's symbol name")]
        pub static millwright_plugin_header_v4: $crate::abi::PluginHeader = $crate::abi::header(
            __millwright_plugin_export::manifest,
            __millwright_plugin_export::create,
            __millwright_plugin_export::start,
            __millwright_plugin_export::destroy,
            __millwright_plugin_export::interrupt,
        );
    };
}

#[cfg(test)]
mod tests;
