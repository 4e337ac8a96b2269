//! Runs the real `millwright` binary for black-box tests: writes a config, starts
//! `millwright run` on free ports with JSON logs, finds the bound ports in the `listening`
//! log line, and offers HTTP, signal and log helpers. A node still running when its handle is
//! dropped is killed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millwright_tests::{wait_for, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// Generous: only costs time when a test fails.
pub const BOOT: Duration = Duration::from_secs(30);
/// Generous wait for a state to show.
pub const SETTLE: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_millwright")
}

/// A config for a test node named `name` with `data_dir`, on loopback and ports 0.
/// `extra` is appended (connectors such as [`two_sims`], overrides).
pub fn config(name: &str, data_dir: &Path, extra: &str) -> String {
    format!(
        r#"[node]
name = "{name}"
data_dir = "{dir}"
idle_window = "2s"
shutdown_grace = "10s"

[http]
listen = "127.0.0.1:0"

[metrics]
listen = "127.0.0.1:0"

[log]
format = "json"
level = "info"

[watchdog]
interval = "200ms"
timeout = "500ms"

[supervision]
max_restarts = 10
max_window = "10s"
min_backoff = "50ms"
max_backoff = "500ms"

{extra}
"#,
        dir = data_dir.display()
    )
}

/// Builds `plugins/sim` once per test process; its `(library, executable)`.
pub fn sim_plugin() -> &'static (PathBuf, PathBuf) {
    static PATHS: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| millwright_tests::build_plugin("sim", false))
}

/// A `[connectors.<name>]` section running the `sim` plugin in process, with `settings` added
/// to the connector's table (`call_timeout = "1s"`) and `config` as its plugin config (`interval
/// = "100ms"`, `tags = [...]`).
pub fn sim(name: &str, settings: &str, config: &str) -> String {
    format!(
        "\n[connectors.{name}]\nplugin = \"{lib}\"\n{settings}\n\n[connectors.{name}.config]\n{config}\n",
        lib = sim_plugin().0.display()
    )
}

/// As [`sim`], out of process (the plugin's executable).
pub fn sim_out_of_process(name: &str, settings: &str, config: &str) -> String {
    format!(
        "\n[connectors.{name}]\nplugin = \"{exe}\"\nmode = \"out_of_process\"\n{settings}\n\n\
         [connectors.{name}.config]\n{config}\n",
        exe = sim_plugin().1.display()
    )
}

/// Two fast simulated machines, `m1` (`temperature`, `pressure`) and `m2` (`speed`): `sim`
/// plugin connectors in process, one round of samples every 100 ms.
pub fn two_sims() -> String {
    sim(
        "m1",
        "",
        "interval = \"100ms\"\ntags = [\"temperature\", \"pressure\"]",
    ) + &sim("m2", "", "interval = \"100ms\"\ntags = [\"speed\"]")
}

/// A running `millwright run` process.
pub struct NodeProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub config_path: PathBuf,
    client: reqwest::Client,
}

impl NodeProcess {
    /// Writes `config` to `dir/node.toml` and starts the binary; returns once the bound
    /// ports are logged.
    pub async fn start(dir: &Path, config: &str) -> NodeProcess {
        Self::start_named(dir, "node.toml", config).await
    }

    /// As [`start`](Self::start), with the config file named `file`.
    pub async fn start_named(dir: &Path, file: &str, config: &str) -> NodeProcess {
        Self::start_full(dir, file, config, |_| {}).await
    }

    /// As [`start`](Self::start), with `adjust` applied to the command first (a process group).
    pub async fn start_with(
        dir: &Path,
        config: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> NodeProcess {
        Self::start_full(dir, "node.toml", config, adjust).await
    }

    async fn start_full(
        dir: &Path,
        file: &str,
        config: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> NodeProcess {
        let config_path = dir.join(file);
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new(binary());
        adjust(&mut command);
        let mut child = command
            .arg("run")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("MILLWRIGHT_PLUGIN_PATH")
            .env_remove("MILLWRIGHT_HTTP_PORT")
            .env_remove("MILLWRIGHT_METRICS_PORT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the millwright binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut node = NodeProcess {
            child,
            lines,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
            config_path,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        let listening = wait_for(BOOT, || {
            let found = node.find_log("listening");
            async move { found }
        })
        .await
        .unwrap_or_else(|e| panic!("no `listening` line: {e}; output:\n{}", node.output()));
        node.http = addr_field(&listening, "http_addr");
        node.metrics = addr_field(&listening, "metrics_addr");
        node
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Every JSON log line so far.
    pub fn logs(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The JSON log lines printed since `cursor` (a count of lines), moving it past them: for
    /// a test that watches a long log without parsing it all again on every poll.
    pub fn logs_since(&self, cursor: &mut usize) -> Vec<Value> {
        let lines = self.lines.lock().unwrap();
        let new: Vec<Value> = lines[(*cursor).min(lines.len())..]
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        *cursor = lines.len();
        new
    }

    /// The first JSON log line with this message.
    pub fn find_log(&self, message: &str) -> Option<Value> {
        self.logs()
            .into_iter()
            .find(|v| v["message"].as_str() == Some(message))
    }

    /// GET `path` on the HTTP port: status and body.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = self
            .client
            .get(format!("http://{}{path}", self.http))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }

    /// POST `path` on the HTTP port: status and JSON body.
    pub async fn post(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .post(format!("http://{}{path}", self.http))
            .send()
            .await
            .expect("the node answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST a JSON body to `path`: status and JSON answer, or the transport error (a node
    /// that is being killed may not answer).
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let r = self
            .client
            .post(format!("http://{}{path}", self.http))
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// Calls `method` of connector `instance` (`POST /connectors/<instance>/call/<method>`)
    /// with `body` (`null`: none): status and reply body.
    pub async fn call(&self, instance: &str, method: &str, body: &Value) -> (u16, Value) {
        self.post_json(&format!("/connectors/{instance}/call/{method}"), body)
            .await
            .unwrap_or_else(|e| panic!("{instance}.{method}: the node answers: {e}"))
    }

    /// `/broker` as JSON.
    pub async fn broker(&self) -> Option<Value> {
        let (code, body) = self.get("/broker").await?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `/health` as JSON (whatever the status code).
    pub async fn health(&self) -> Option<Value> {
        let (_, body) = self.get("/health").await?;
        serde_json::from_str(&body).ok()
    }

    /// One component of `/health`, by id.
    pub async fn component(&self, id: &str) -> Option<Value> {
        let h = self.health().await?;
        h["components"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
    }

    /// The metrics text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .expect("the exporter answers")
            .text()
            .await
            .unwrap()
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&self) {
        wait_until(BOOT, || async {
            matches!(self.get("/ready").await, Some((200, _)))
        })
        .await
        .unwrap_or_else(|e| panic!("node not ready: {e}; output:\n{}", self.output()));
    }

    /// Waits until component `id` satisfies `pred` on `/health`; returns it.
    pub async fn wait_component(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let last = Mutex::new(None);
        let found = wait_for(SETTLE, || async {
            let c = self.component(id).await;
            *last.lock().unwrap() = c.clone();
            c.filter(|c| pred(c))
        })
        .await;
        found.unwrap_or_else(|e| {
            panic!(
                "{id}: {what}: {e}; last seen: {:?}; output:\n{}",
                last.lock().unwrap(),
                self.output()
            )
        })
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        let status = wait_for(timeout, || {
            let s = child.try_wait().ok().flatten();
            async move { s }
        })
        .await;
        match status {
            Ok(s) => s,
            Err(e) => panic!("node did not exit: {e}; output:\n{}", self.output()),
        }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses an `ip:port` log field; `0.0.0.0` becomes loopback.
fn addr_field(line: &Value, field: &str) -> SocketAddr {
    let mut addr: SocketAddr = line[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {line}"))
        .parse()
        .unwrap();
    if addr.ip().is_unspecified() {
        addr.set_ip([127, 0, 0, 1].into());
    }
    addr
}

/// Builds `plugins/testkit` once per test process; its `(library, executable)`.
pub fn testkit() -> &'static (PathBuf, PathBuf) {
    static PATHS: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| millwright_tests::build_testkit(false))
}

/// A broker actor named `id` on `bus`, keeping its files in `dir`; its handle.
pub async fn spawn_broker(
    id: &str,
    dir: &Path,
    bus: &millwright_bus::Bus,
    board: &millwright_kernel::lifecycle::StatusBoard,
) -> millwright_broker::BrokerHandle {
    let options = millwright_broker::BrokerOptions::new(dir);
    millwright_broker::actor::spawn(id, options, bus.clone(), board.clone())
        .await
        .expect("the broker starts")
        .0
}

/// Runs a supervised connector actor reading 300 values from `testkit` with `fault` set at 100
/// (`abort_at`, `hang_at`, `stall_at`, ...), through the transport `transport(instance)` makes,
/// until every value arrived on the bus; how many times each value arrived, and how many times
/// the instance was restarted.
pub async fn run_with_fault(
    fault: &str,
    instance: &str,
    transport: impl Fn(&str) -> millwright_connect::TransportFactory,
) -> (std::collections::HashMap<u64, u32>, u64) {
    use millwright_connect::{ConnectorActor, ConnectorArgs, ConnectorSpec};
    use millwright_kernel::supervisor::{
        BackoffPolicy, ChildSpec, RestartIntensity, Strategy, Supervisor, SupervisorSpec,
        child_name,
    };
    let dir = tempfile::tempdir().unwrap();
    let bus = millwright_bus::Bus::embedded();
    let mut sub = bus.subscribe(&format!("mw.ev.{instance}.>")).await.unwrap();
    let board = millwright_kernel::lifecycle::StatusBoard::new();
    let broker_id = format!("{instance}-node/broker");
    let broker = spawn_broker(&broker_id, &dir.path().join("broker"), &bus, &board).await;
    let total = 300u64;
    let config = serde_json::json!({
        "count": total,
        fault: 100,
        "state_file": dir.path().join("state.json"),
    });
    let connector = Arc::new(ConnectorSpec {
        instance: instance.to_owned(),
        plugin: "testkit".into(),
        config,
        subject_prefix: "mw".into(),
        kinds: vec![millwright_plugin_sdk::connector::Kind::Source],
        max_batch: 50,
        poll_interval: Duration::from_millis(10),
        backoff: BackoffPolicy::default(),
        republish_delay: Duration::from_millis(10),
        // A source whose data stops is asked for its health after this window: how a plugin
        // that stopped answering mid-read is found (a read itself may wait for data forever).
        idle_window: Duration::from_secs(1),
    });
    let factory = transport(instance);
    let (b, bo) = (board.clone(), broker.clone());
    let id = instance.to_owned();
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(RestartIntensity::new(5, Duration::from_secs(30)))
        .backoff(BackoffPolicy {
            min: Duration::from_millis(50),
            max: Duration::from_millis(200),
            ..BackoffPolicy::default()
        })
        .child(ChildSpec::worker(instance, move |supervisor| {
            let component_id = child_name(&supervisor, &id);
            let args = ConnectorArgs {
                spec: connector.clone(),
                component_id: component_id.clone(),
                board: b.clone(),
                broker: bo.clone(),
                transport: factory.clone(),
            };
            Box::pin(async move {
                let (a, _) = ractor::Actor::spawn_linked(
                    Some(component_id),
                    ConnectorActor,
                    args,
                    supervisor,
                )
                .await?;
                Ok(a.get_cell())
            })
        }));
    let node = format!("{instance}-node");
    Supervisor::spawn(node.clone(), sup, board.clone())
        .await
        .unwrap();
    let mut counts = std::collections::HashMap::new();
    while counts.len() < total as usize {
        let msg = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{fault}: only {} of {total} values arrived", counts.len()))
            .unwrap();
        let env = millwright_plugin_sdk::event::Envelope::from_json_slice(&msg.payload).unwrap();
        *counts.entry(env.payload.as_u64().unwrap()).or_insert(0) += 1;
    }
    let restarts = board
        .get(&format!("{node}/{instance}"))
        .map(|c| c.restarts)
        .unwrap_or(0);
    (counts, restarts)
}

/// Compiles C `source` into the shared library `dir/lib<name>.so` (for files that look like
/// plugins but are not, or are of another ABI); its path.
pub fn c_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let so = dir.join(format!("lib{name}.so"));
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .output()
        .expect("a C compiler (cc) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    so
}
