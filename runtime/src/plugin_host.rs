//! The host side of the in-process plugin boundary: load a plugin `cdylib`, check it, and
//! give the connector actor a [`Transport`] to an instance of it.
//!
//! Loading ([`load`]), in this order, each refusal one sentence naming the file, the versions
//! found, the versions supported and the fix:
//!
//! 1. `dlopen` the file (not a shared library: [`PluginError::NotALibrary`]);
//! 2. find the entry symbol of *our* ABI major (`millwright_plugin_entry_v2`); if it is missing,
//!    look for another major's to say which one the plugin was built for
//!    ([`PluginError::WrongAbi`]), else [`PluginError::NoEntry`];
//! 3. read the static header (no plugin code beyond the entry function runs for this): magic,
//!    ABI minor, header size, target, panic strategy, SDK and rustc versions;
//! 4. only then call the plugin's `manifest` and parse it (JSON).
//!
//! Requests, responses, log records and metric updates cross as MessagePack
//! (`millwright_plugin_sdk::codec`); a plugin of ABI 1 (JSON messages) is refused at step 2.
//!
//! Libraries are never unloaded: code and statics of a plugin may be referenced by threads or
//! destructors the host cannot see, so a loaded library lives until the process exits.
//!
//! Each request blocks the calling thread while the plugin works (`block_in_place` on a
//! multi-threaded runtime, the blocking pool otherwise; the plugin runs its own runtime inside
//! the call); one request at a time per instance.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use millwright_actors::connector::{BoxFuture, NodeHost, Transport, TransportError};
use millwright_plugin_sdk::abi::{
    self, ENTRY_SYMBOL, ENTRY_SYMBOL_PREFIX, EntryFn, HostCallbacks, MAGIC, PluginHeader, StrRef,
};
use millwright_plugin_sdk::codec;
use millwright_plugin_sdk::context::{Host, LogRecord, MetricUpdate};
use millwright_plugin_sdk::manifest::{self, ABI_MAJOR, ABI_MINOR, Manifest, SDK_VERSION};
use millwright_plugin_sdk::protocol::{Request, Response};

/// Why a plugin library was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The file is not a loadable shared library.
    #[error(
        "{path}: not a plugin: cannot load it as a shared library ({reason}); give the path of a plugin's .so built with millwright-plugin-sdk"
    )]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// A shared library without a Millwright entry symbol.
    #[error(
        "{path}: not a plugin: it has no `{ENTRY_SYMBOL}` symbol; export the plugin with `millwright_plugin_sdk::export_plugin!`"
    )]
    NoEntry {
        /// The file.
        path: PathBuf,
    },
    /// A plugin built for another ABI major.
    #[error(
        "{path}: plugin built for plugin ABI {found}.x, but this node supports ABI {ABI_MAJOR}.0 to {ABI_MAJOR}.{ABI_MINOR} (SDK {SDK_VERSION}); rebuild the plugin against millwright-plugin-sdk {SDK_VERSION}"
    )]
    WrongAbi {
        /// The file.
        path: PathBuf,
        /// What the plugin was built for (`2`, or `2.1`).
        found: String,
    },
    /// The header does not fit (bad magic, another target, abort on panic, ...).
    #[error("{path}: {reason}")]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// One sentence with the versions and the fix.
        reason: String,
    },
}

/// A loaded, checked plugin library.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// What it says about itself.
    pub manifest: Manifest,
    /// The rustc that built it.
    pub rustc_version: String,
    header: &'static PluginHeader,
}

/// Loads and checks the plugin library at `path` (see the module docs).
///
/// # Errors
/// [`PluginError`], naming the file, the versions and the fix.
pub fn load(path: &Path) -> Result<LoadedPlugin, PluginError> {
    let path = path.to_path_buf();
    // SAFETY: loading a library runs its initialisers; a plugin library is trusted code by
    // the operator's choice of in-process mode.
    let library =
        unsafe { libloading::Library::new(&path) }.map_err(|e| PluginError::NotALibrary {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    // Never unloaded (see the module docs).
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol's type is fixed by the ABI whose major is in its name.
    let entry = match unsafe { library.get::<EntryFn>(ENTRY_SYMBOL) } {
        Ok(entry) => entry,
        Err(_) => {
            let other = (0..=9)
                .filter(|m| *m != ABI_MAJOR)
                // SAFETY: only looks the symbol up; it is not called.
                .find(|m| {
                    unsafe { library.get::<EntryFn>(format!("{ENTRY_SYMBOL_PREFIX}{m}").as_str()) }
                        .is_ok()
                });
            return Err(match other {
                Some(m) => PluginError::WrongAbi {
                    path,
                    found: m.to_string(),
                },
                None => PluginError::NoEntry { path },
            });
        }
    };
    // SAFETY: the entry function of our ABI major returns a pointer to a static header or null.
    let header = unsafe { entry() };
    // SAFETY: non-null headers are static data (checked for the magic before any other use).
    let Some(header) = (unsafe { header.as_ref() }) else {
        return Err(incompatible(
            &path,
            "its entry returned no header; rebuild it with millwright-plugin-sdk".to_owned(),
        ));
    };
    check_header(&path, header)?;
    let buffer = (header.manifest)();
    // SAFETY: a buffer the plugin just returned; freed right after.
    let manifest: Result<Manifest, _> = serde_json::from_slice(unsafe { buffer.as_bytes() });
    (header.free)(buffer);
    let manifest = manifest.map_err(|e| incompatible(&path, format!("its manifest is unreadable ({e}); rebuild it with millwright-plugin-sdk {SDK_VERSION}")))?;
    manifest
        .check_compatible()
        .map_err(|reason| incompatible(&path, reason))?;
    // SAFETY: static text in the header.
    let rustc_version = unsafe { header.rustc_version.as_str() }
        .unwrap_or("unknown")
        .to_owned();
    if rustc_version != abi::RUSTC_VERSION {
        tracing::warn!(plugin = %manifest.id, plugin_rustc = %rustc_version, node_rustc = abi::RUSTC_VERSION, "plugin built with another rustc; only the C ABI crosses the boundary, so it loads");
    }
    tracing::info!(plugin = %manifest.id, version = %manifest.version, path = %path.display(), "plugin loaded");
    Ok(LoadedPlugin {
        path,
        manifest,
        rustc_version,
        header,
    })
}

fn incompatible(path: &Path, reason: String) -> PluginError {
    PluginError::Incompatible {
        path: path.to_path_buf(),
        reason,
    }
}

fn check_header(path: &Path, h: &PluginHeader) -> Result<(), PluginError> {
    if h.magic != MAGIC {
        return Err(incompatible(
            path,
            format!(
                "not a plugin: its header has magic {:#x}, not {MAGIC:#x}; export the plugin with millwright_plugin_sdk::export_plugin!",
                h.magic
            ),
        ));
    }
    // SAFETY: static text in a header with the right magic.
    let sdk = unsafe { h.sdk_version.as_str() }.unwrap_or("?");
    if h.abi_major != ABI_MAJOR || !manifest::supports_minor(h.abi_minor) {
        return Err(PluginError::WrongAbi {
            path: path.to_path_buf(),
            found: format!("{}.{} (SDK {sdk})", h.abi_major, h.abi_minor),
        });
    }
    if (h.header_size as usize) < std::mem::size_of::<PluginHeader>() {
        return Err(incompatible(
            path,
            format!(
                "its header is {} bytes, smaller than the {} of ABI {ABI_MAJOR}.{ABI_MINOR}; rebuild it with millwright-plugin-sdk {SDK_VERSION}",
                h.header_size,
                std::mem::size_of::<PluginHeader>()
            ),
        ));
    }
    // SAFETY: as above.
    let target = unsafe { h.target.as_str() }.unwrap_or("?");
    let here = manifest::this_target();
    if target != here {
        return Err(incompatible(
            path,
            format!(
                "plugin built for {target}, but this node runs on {here}; build the plugin for {here}"
            ),
        ));
    }
    if h.panic_unwind != 1 {
        return Err(incompatible(path, "plugin built with panic = \"abort\": a panic would kill the node; build it with panic = \"unwind\", or run it out of process".to_owned()));
    }
    Ok(())
}

/// The node's callbacks for one instance: forwards to a [`NodeHost`].
struct Callbacks {
    raw: HostCallbacks,
    _host: Box<NodeHost>,
}

extern "C" fn host_log(ctx: *const c_void, instance: StrRef, record: StrRef) {
    // SAFETY: `ctx` is the `NodeHost` of a live `Callbacks`; the strings are lent for the call.
    let host = unsafe { &*ctx.cast::<NodeHost>() };
    let (instance, record) = unsafe { (instance.as_str().unwrap_or("?"), record.as_bytes()) };
    if let Ok(record) = codec::decode::<LogRecord>(record) {
        host.log(instance, record);
    }
}

extern "C" fn host_metric(ctx: *const c_void, instance: StrRef, update: StrRef) {
    // SAFETY: as in `host_log`.
    let host = unsafe { &*ctx.cast::<NodeHost>() };
    let (instance, update) = unsafe { (instance.as_str().unwrap_or("?"), update.as_bytes()) };
    if let Ok(update) = codec::decode::<MetricUpdate>(update) {
        host.metric(instance, update);
    }
}

struct Live {
    header: &'static PluginHeader,
    instance: *mut c_void,
    callbacks: Box<Callbacks>,
}

// SAFETY: the instance is used by one request at a time (the transport's `&mut self`), and
// the SDK's instances are built to move between threads (their state is `Send`).
unsafe impl Send for Live {}

impl Drop for Live {
    fn drop(&mut self) {
        (self.header.destroy)(self.instance);
        let _ = &self.callbacks;
    }
}

/// A [`Transport`] to one instance of an in-process plugin.
pub struct DylibTransport {
    live: Option<Live>,
    plugin: String,
}

impl std::fmt::Debug for DylibTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DylibTransport")
            .field("plugin", &self.plugin)
            .finish()
    }
}

impl DylibTransport {
    /// A new instance `instance` of `plugin`.
    ///
    /// # Errors
    /// [`TransportError::Gone`] when the plugin could not make the instance.
    pub fn new(plugin: &LoadedPlugin, instance: &str) -> Result<Self, TransportError> {
        let host = Box::new(NodeHost {
            plugin: plugin.manifest.id.clone(),
        });
        let callbacks = Box::new(Callbacks {
            raw: HostCallbacks {
                ctx: std::ptr::from_ref::<NodeHost>(&host).cast(),
                log: host_log,
                metric: host_metric,
            },
            _host: host,
        });
        let raw = (plugin.header.create)(&callbacks.raw, StrRef::from_bytes(instance.as_bytes()));
        if raw.is_null() {
            return Err(TransportError::Gone(format!(
                "plugin {} could not create instance {instance}",
                plugin.manifest.id
            )));
        }
        Ok(Self {
            live: Some(Live {
                header: plugin.header,
                instance: raw,
                callbacks,
            }),
            plugin: plugin.manifest.id.clone(),
        })
    }
}

impl Transport for DylibTransport {
    fn request(&mut self, request: Request) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(async move {
            let live = self
                .live
                .take()
                .ok_or_else(|| TransportError::Gone("an earlier call did not return".to_owned()))?;
            let body = codec::encode(&request)
                .map_err(|e| TransportError::Gone(format!("cannot encode the request: {e}")));
            let body = match body {
                Ok(body) => body,
                Err(e) => {
                    self.live = Some(live);
                    return Err(e);
                }
            };
            let call = move || {
                let buffer = (live.header.handle)(live.instance, StrRef::from_bytes(&body));
                // SAFETY: a buffer the plugin just returned; freed right after.
                let answer = codec::decode::<Response>(unsafe { buffer.as_bytes() });
                (live.header.free)(buffer);
                (live, answer)
            };
            // The call blocks this thread while the plugin works. On a multi-threaded runtime
            // `block_in_place` lets the other tasks move away, without the hand-off to the
            // blocking pool (tens of microseconds per call); elsewhere, the blocking pool.
            let multi_thread = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            let (live, answer) = if multi_thread {
                tokio::task::block_in_place(call)
            } else {
                tokio::task::spawn_blocking(call)
                    .await
                    .map_err(|e| TransportError::Gone(format!("the plugin call failed: {e}")))?
            };
            self.live = Some(live);
            answer.map_err(|e| TransportError::Gone(format!("unreadable answer: {e}")))
        })
    }
}

/// A factory for the connector actor: a new instance of `plugin` per incarnation.
pub fn transport_factory(
    plugin: Arc<LoadedPlugin>,
    instance: String,
) -> millwright_actors::connector::TransportFactory {
    Arc::new(move || -> Box<dyn Transport> {
        match DylibTransport::new(&plugin, &instance) {
            Ok(t) => Box::new(t),
            Err(e) => Box::new(Broken(e)),
        }
    })
}

/// A transport whose instance could not be made: every request fails, so the actor fails and
/// its supervisor backs off and retries.
struct Broken(TransportError);

impl Transport for Broken {
    fn request(&mut self, _: Request) -> BoxFuture<'_, Result<Response, TransportError>> {
        let e = self.0.clone();
        Box::pin(async move { Err(e) })
    }
}
