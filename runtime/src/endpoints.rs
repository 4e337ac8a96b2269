//! `<data_dir>/endpoints.json`: where a running node listens, for tools on the same machine.
//!
//! The node writes it once its listeners are bound (so port 0 resolves to the real port);
//! `millwright dlq` reads it to reach a node on the embedded bus. It is only trusted while the
//! lockfile names a live process: a node killed with SIGKILL leaves a stale one behind, which
//! the next boot overwrites.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the data dir.
pub const FILE_NAME: &str = "endpoints.json";

/// Where a node listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// The node's process id.
    pub pid: u32,
    /// The HTTP server (probes, health, control), as a local address to connect to.
    pub http: SocketAddr,
    /// The metrics exporter.
    pub metrics: SocketAddr,
}

/// The file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    /// I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an endpoints file.
    #[error("{path} is not readable: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A bound address as something to connect to: `0.0.0.0`/`::` become loopback.
fn connectable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

impl Endpoints {
    /// This process' endpoints.
    pub fn new(http: SocketAddr, metrics: SocketAddr) -> Self {
        Self {
            pid: std::process::id(),
            http: connectable(http),
            metrics: connectable(metrics),
        }
    }

    /// Writes the file (atomically: a temp file renamed over it).
    ///
    /// # Errors
    /// [`EndpointsError::Io`].
    pub fn write(&self, data_dir: &Path) -> Result<(), EndpointsError> {
        let path = data_dir.join(FILE_NAME);
        let tmp = data_dir.join(format!(".{FILE_NAME}.tmp"));
        let io = |source| EndpointsError::Io {
            path: path.clone(),
            source,
        };
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Reads the file.
    ///
    /// # Errors
    /// [`EndpointsError`] when it is missing or unreadable.
    pub fn read(data_dir: &Path) -> Result<Self, EndpointsError> {
        let path = data_dir.join(FILE_NAME);
        let text = std::fs::read(&path).map_err(|source| EndpointsError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| EndpointsError::Parse { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_turns_wildcard_addresses_into_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let e = Endpoints::new(
            "0.0.0.0:8080".parse().unwrap(),
            "127.0.0.1:9090".parse().unwrap(),
        );
        assert_eq!(e.http, "127.0.0.1:8080".parse().unwrap());
        e.write(dir.path()).unwrap();
        assert_eq!(Endpoints::read(dir.path()).unwrap(), e);
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = Endpoints::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains(FILE_NAME), "{err}");
    }
}
