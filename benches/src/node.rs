//! A release `millwright` node as a child process: the bench writes its config (embedded bus,
//! HTTP and metrics on free loopback ports, JSON logs to a file), starts it, times its
//! readiness and its exit after SIGTERM, and reads its endpoints.
//!
//! The bench builds nothing: it runs `target/release/millwright` (or `$MW_BENCH_NODE`) and the
//! plugins beside it, so build them first:
//! `cargo build --release -p millwright-runtime -p millwright-plugin-sim`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::http;

/// The command that builds what the node benches run.
pub const BUILD_HINT: &str = "cargo build --release -p millwright-runtime -p millwright-plugin-sim";

/// Timeout of one request to the node's endpoints.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The release node binary: `$MW_BENCH_NODE`, else `millwright` in the release folder of
/// `$CARGO_TARGET_DIR` (or the workspace's `target`).
///
/// # Panics
/// When the binary or the `sim` plugin beside it is missing, with the command that builds
/// them.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("MW_BENCH_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| millwright_tests::workspace_root().join("target"))
                .join("release")
                .join("millwright")
        });
    assert!(
        path.is_file(),
        "{}: no node binary (build it first: {BUILD_HINT}; or set MW_BENCH_NODE)",
        path.display()
    );
    let sim = path.with_file_name("libmillwright_plugin_sim.so");
    assert!(
        sim.is_file(),
        "{}: no sim plugin beside the node (build it first: {BUILD_HINT})",
        sim.display()
    );
    path
}

/// A `[connectors.<name>]` section running the `sim` plugin in process (looked up by name
/// beside the node), with `settings` added to the connector's table (`call_timeout = "1s"`)
/// and `config` as the plugin's inline table (`interval = "1s", tags = ["a"]`).
pub fn sim(name: &str, settings: &str, config: &str) -> String {
    format!("\n[connectors.{name}]\nplugin = \"sim\"\n{settings}\nconfig = {{ {config} }}\n")
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    child: Child,
    spawned: Instant,
    exited: Option<ExitStatus>,
    /// Its HTTP endpoint.
    pub http: SocketAddr,
    /// Its metrics endpoint.
    pub metrics: SocketAddr,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Node {
    /// Writes a config to `dir/node.toml` (node `name`, data in `dir/data`, embedded bus,
    /// free loopback ports, JSON logs at `info`) followed by `extra` (sections such as
    /// `[supervision]` and connectors), and starts the node on it.
    ///
    /// # Panics
    /// When the config cannot be written or the binary cannot be started.
    pub fn start(dir: &Path, name: &str, extra: &str) -> Node {
        let http = SocketAddr::from(([127, 0, 0, 1], millwright_tests::free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], millwright_tests::free_port()));
        let config = format!(
            "[node]\nname = \"{name}\"\ndata_dir = \"{data}\"\n\n[http]\nlisten = \"{http}\"\n\n\
             [metrics]\nlisten = \"{metrics}\"\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n\
             {extra}\n",
            data = dir.join("data").display(),
        );
        let path = dir.join("node.toml");
        std::fs::write(&path, config).expect("the config is written");
        let log = dir.join("node.log");
        let out = File::create(&log).expect("the log file is created");
        let err = out.try_clone().expect("the log file is shared");
        let spawned = Instant::now();
        let child = Command::new(binary())
            .arg("run")
            .arg(&path)
            .env_remove("RUST_LOG")
            .env_remove("MILLWRIGHT_PLUGIN_PATH")
            .env_remove("MILLWRIGHT_HTTP_PORT")
            .env_remove("MILLWRIGHT_METRICS_PORT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the millwright binary starts");
        Node {
            child,
            spawned,
            exited: None,
            http,
            metrics,
            log,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_none()
    }

    /// Polls `/ready` every 20 ms until it answers 200: the time from spawn to that answer;
    /// `None` when `timeout` passed first or the node exited.
    pub fn wait_ready(&mut self, timeout: Duration) -> Option<Duration> {
        while self.spawned.elapsed() < timeout {
            if !self.is_running() {
                return None;
            }
            let poll = Instant::now();
            if let Ok(r) = http::get(self.http, "/ready", Duration::from_secs(1))
                && r.status == 200
            {
                return Some(self.spawned.elapsed());
            }
            crate::pause(Duration::from_millis(20).saturating_sub(poll.elapsed()));
        }
        None
    }

    /// `GET path` on its HTTP endpoint.
    ///
    /// # Errors
    /// The node did not answer.
    pub fn get(&self, path: &str) -> std::io::Result<http::Response> {
        http::get(self.http, path, REQUEST_TIMEOUT)
    }

    /// `POST /connectors/<instance>/call/<method>` with `body`, waiting up to `timeout`.
    ///
    /// # Errors
    /// The node did not answer.
    pub fn call(
        &self,
        instance: &str,
        method: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> std::io::Result<http::Response> {
        http::post_json(
            self.http,
            &format!("/connectors/{instance}/call/{method}"),
            Some(body),
            timeout,
        )
    }

    /// Events the broker moved since boot (`delivered` plus `drained` of `/broker`).
    ///
    /// # Errors
    /// The node did not answer or the answer is not the broker's JSON.
    pub fn events_moved(&self) -> std::io::Result<u64> {
        let r = self.get("/broker")?;
        let v: serde_json::Value = serde_json::from_str(&r.body)?;
        match (v["delivered"].as_u64(), v["drained"].as_u64()) {
            (Some(d), Some(q)) => Ok(d + q),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("/broker: {}", r.body),
            )),
        }
    }

    /// The metrics text.
    ///
    /// # Errors
    /// The exporter did not answer.
    pub fn metrics_text(&self) -> std::io::Result<String> {
        Ok(http::get(self.metrics, "/metrics", REQUEST_TIMEOUT)?.body)
    }

    /// Sends SIGTERM and waits for the exit: the time it took and the exit status; `None`
    /// when it still ran after `timeout` (it is killed then).
    pub fn stop(&mut self, timeout: Duration) -> Option<(Duration, ExitStatus)> {
        if !self.is_running() {
            return None;
        }
        let sent = Instant::now();
        // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        while sent.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return Some((sent.elapsed(), status));
            }
            crate::pause(Duration::from_millis(5));
        }
        self.kill();
        None
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// The last `lines` lines of its output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sum of every series of metric `name` in Prometheus text `text` (all label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_every_label_set_of_that_metric_only() {
        let text = "# TYPE mw_x_total counter\nmw_x_total{a=\"1\"} 2\nmw_x_total{a=\"2\"} 3.5\n\
                    mw_x_total_other 100\nmw_x_total 1\n";
        assert_eq!(metric_sum(text, "mw_x_total"), 6.5);
        assert_eq!(metric_sum(text, "mw_y"), 0.0);
    }
}
