//! Support for Millwright's black-box tests: real `nats-server` processes, polling helpers,
//! ports and paths. Written once here, used by every test in `tests/tests/` (and by benches).
//!
//! - [`NatsServer`]: a real nats-server on a free loopback port, with JetStream and a
//!   throw-away store; restart it on the same port, SIGKILL it, freeze it, and it is killed
//!   and its store deleted when dropped.
//! - [`wait_until`] / [`wait_for`]: poll a condition with a deadline instead of sleeping.
//! - [`next_within`]: the next item of a stream, or `None` after a timeout.
//! - [`fault_proxy::FaultProxy`]: a loopback TCP proxy the test switches between passing,
//!   blackholing and refusing, to cut a network path without touching either end.
//! - [`free_port`], [`workspace_root`].
//!
//! Timeouts passed to these helpers only cost time when a test fails, so make them generous
//! (the CI machine has two loaded cores) and keep the assertions tight.

pub mod fault_proxy;
mod nats_server;
mod wait;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

pub use nats_server::{NatsServer, NatsServerBuilder, find_nats_server};
pub use wait::{WaitTimedOut, next_within, wait_for, wait_until};

/// The workspace root (the folder with the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it; the listener is
/// closed again). Prefer letting a server pick its own port when it can report it.
///
/// # Panics
/// When the OS has no free port to give, which a test cannot recover from.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS has no free loopback port")
}

/// Builds the `plugins/testkit` plugin (`cargo build -p millwright-plugin-testkit`, in release
/// when `release`) and returns its `(cdylib, executable)`. Tests and benches that load a real
/// plugin call this once; cargo makes the second call a no-op.
///
/// # Panics
/// When the build fails or the files are not where cargo puts them.
pub fn build_testkit(release: bool) -> (PathBuf, PathBuf) {
    build_plugin("testkit", release)
}

/// Builds the plugin crate `millwright-plugin-<name>` (in release when `release`) and returns
/// its `(cdylib, executable)`, which land beside the `millwright` binary of the same profile
/// (where a node looks a plugin name up).
///
/// # Panics
/// When the build fails or the files are not where cargo puts them.
pub fn build_plugin(name: &str, release: bool) -> (PathBuf, PathBuf) {
    let root = workspace_root();
    let package = format!("millwright-plugin-{name}");
    let mut args = vec!["build", "--locked", "-p", &package];
    if release {
        args.push("--release");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(&args)
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the {name} plugin builds");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join(if release { "release" } else { "debug" });
    let paths = (
        dir.join(format!(
            "libmillwright_plugin_{}.so",
            name.replace('-', "_")
        )),
        dir.join(&package),
    );
    assert!(paths.0.is_file() && paths.1.is_file(), "{paths:?} exist");
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_has_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
