//! The host side of the in-process plugin boundary: load a plugin `cdylib`, check it, and
//! give the connector actor a [`Transport`] to an instance of it.
//!
//! Loading ([`load`]), in this order, each refusal one sentence naming the file, the versions
//! found, the versions supported and the fix:
//!
//! 1. `dlopen` the file (not a shared library: [`PluginError::NotALibrary`]);
//! 2. find the header symbol of *our* ABI major (`millwright_plugin_header_v4`); if it is
//!    missing, look for another major's (or the entry function of ABI 1 and 2) to say which one
//!    the plugin was built for ([`PluginError::WrongAbi`]), else [`PluginError::NoEntry`];
//! 3. read the static header, which is data: no plugin code runs before these checks pass:
//!    magic, ABI minor, header size, target, panic strategy, SDK and rustc versions;
//! 4. only then call the plugin's `manifest` (its first code to run, under `catch_unwind`) and
//!    parse it (JSON).
//!
//! Requests, responses, log records and metric updates cross as MessagePack
//! (`millwright_plugin_sdk::codec`); plugins of ABI 1 (JSON messages) and 2 (a blocking
//! `handle`) are refused at step 2.
//!
//! Libraries are never unloaded: code and statics of a plugin may be referenced by threads or
//! destructors the host cannot see, so a loaded library lives until the process exits.
//!
//! Requests do not block the node's threads ([`HostedInstance`]): the plugin answers at once
//! when it can, and otherwise finishes on its library's shared runtime and calls back. A read
//! waits until the source has data (no timeout; the connector actor interrupts it when it needs
//! the instance); any other request that takes longer than the connector's `call_timeout` fails
//! with [`TransportError::Timeout`], so the supervisor restarts the instance, in process as out
//! of process; one request at a time per instance.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use millwright_connect::{BoxFuture, NodeHost, Transport, TransportError};
use millwright_plugin_sdk::abi::host::HostedInstance;
use millwright_plugin_sdk::abi::{
    self, HEADER_SYMBOL, HEADER_SYMBOL_PREFIX, LEGACY_ENTRY_PREFIX, MAGIC, PluginHeader,
};
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
        "{path}: not a plugin: it has no `{HEADER_SYMBOL}` symbol; export the plugin with `millwright_plugin_sdk::export_plugin!`"
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
    // SAFETY: only the symbol's address is taken: the header is static data, nothing runs.
    let header = match unsafe { library.get::<*const PluginHeader>(HEADER_SYMBOL) } {
        Ok(symbol) => *symbol,
        Err(_) => {
            let other = (0..=9).filter(|m| *m != ABI_MAJOR).find(|m| {
                [HEADER_SYMBOL_PREFIX, LEGACY_ENTRY_PREFIX]
                    .iter()
                    .any(|prefix| {
                        // SAFETY: only looks the symbol up; it is neither read nor called.
                        unsafe { library.get::<*const ()>(format!("{prefix}{m}").as_str()) }.is_ok()
                    })
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
    // SAFETY: the symbol of our ABI major is a static header (checked for the magic before any
    // other use).
    let Some(header) = (unsafe { header.as_ref() }) else {
        return Err(incompatible(
            &path,
            "its header symbol is null; rebuild it with millwright-plugin-sdk".to_owned(),
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

/// A [`Transport`] to one instance of an in-process plugin.
pub struct DylibTransport {
    instance: HostedInstance,
    plugin: String,
    call_timeout: Duration,
}

impl std::fmt::Debug for DylibTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DylibTransport")
            .field("plugin", &self.plugin)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl DylibTransport {
    /// A new instance `instance` of `plugin`, whose requests may each take `call_timeout`.
    ///
    /// # Errors
    /// [`TransportError::Gone`] when the plugin could not make the instance.
    pub fn new(
        plugin: &LoadedPlugin,
        instance: &str,
        call_timeout: Duration,
    ) -> Result<Self, TransportError> {
        let host = Arc::new(NodeHost {
            plugin: plugin.manifest.id.clone(),
        });
        // SAFETY: `load` checked the header, and its library is never unloaded.
        let hosted = unsafe { HostedInstance::create(plugin.header, host, instance) };
        let instance = hosted.ok_or_else(|| {
            TransportError::Gone(format!(
                "plugin {} could not create instance {instance}",
                plugin.manifest.id
            ))
        })?;
        Ok(Self {
            instance,
            plugin: plugin.manifest.id.clone(),
            call_timeout,
        })
    }
}

impl Transport for DylibTransport {
    fn request(
        &mut self,
        request: Request,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        // Started here (the plugin polls it once on this thread): requests start in call order.
        let started = self.instance.start(&request);
        let read = request.is_read();
        let timeout = self.call_timeout;
        Box::pin(async move {
            let answer = started.map_err(|e| TransportError::Gone(e.to_string()))?;
            if read {
                // A read waits for data as long as the source has none; the actor interrupts
                // it when it needs the instance (and that request's timeout covers both).
                return answer
                    .await
                    .map_err(|e| TransportError::Gone(e.to_string()));
            }
            // A request the plugin answers at once never reaches the timer.
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(TransportError::Gone(e.to_string())),
                Err(_) => Err(TransportError::Timeout(timeout)),
            }
        })
    }

    fn interrupt(&mut self) {
        self.instance.interrupt();
    }
}

/// A factory for the connector actor: a new instance of `plugin` per incarnation, each request
/// of which may take `call_timeout`.
pub fn transport_factory(
    plugin: Arc<LoadedPlugin>,
    instance: String,
    call_timeout: Duration,
) -> millwright_connect::TransportFactory {
    Arc::new(move || -> Box<dyn Transport> {
        match DylibTransport::new(&plugin, &instance, call_timeout) {
            Ok(t) => Box::new(t),
            Err(e) => Box::new(Broken(e)),
        }
    })
}

/// A transport whose instance could not be made: every request fails, so the actor fails and
/// its supervisor backs off and retries.
struct Broken(TransportError);

impl Transport for Broken {
    fn request(&mut self, _: Request) -> BoxFuture<'static, Result<Response, TransportError>> {
        let e = self.0.clone();
        Box::pin(async move { Err(e) })
    }

    fn interrupt(&mut self) {}
}
