//! The host side of the out-of-process plugin transport: spawn the plugin executable, shake
//! hands, and carry requests as frames (see `millwright_plugin_sdk::stdio`).
//!
//! Each instance is its own process, started lazily by the first request of a connector
//! incarnation and killed when the incarnation ends (`kill_on_drop`). It runs in a process
//! group of its own, so a terminal's Ctrl-C (sent to the foreground group) reaches only the
//! node, which stops it in order; if the node dies, the plugin sees its stdin close and exits.
//! A process that exits,
//! aborts, stops answering within the call timeout, or stops sending heartbeats fails the call
//! with a [`TransportError`]: the connector actor fails, its supervisor restarts it with
//! backoff, and the next incarnation starts a fresh process. The plugin's stderr goes to the
//! node's log.
//!
//! The handshake is JSON, every frame after it MessagePack (`millwright_plugin_sdk::codec`):
//! a plugin of another protocol major, JSON-speaking protocol 1 included, is refused at the
//! handshake with both versions named. Each frame is one `write` of one buffer (reused per
//! instance); the plugin's stdout is read through a buffer by a task of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use millwright_connect::{BoxFuture, NodeHost, Transport, TransportError};
use millwright_plugin_sdk::context::Host;
use millwright_plugin_sdk::manifest::{ABI_MAJOR, ABI_MINOR, Manifest};
use millwright_plugin_sdk::protocol::{Request, Response};
use millwright_plugin_sdk::stdio::{self, Frame, HEARTBEAT_INTERVAL, Handshake};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Heartbeats missed before a plugin process counts as hung.
const MISSED_BEATS: u32 = 6;
/// A frame buffer grown past this by a large batch is given back after it.
const LARGE_BUFFER: usize = 1 << 20;

/// How to start one out-of-process instance.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The plugin executable.
    pub program: PathBuf,
    /// The instance's name.
    pub instance: String,
    /// The longest one request may take.
    pub call_timeout: Duration,
}

struct Running {
    _child: Child,
    stdin: ChildStdin,
    /// The encode buffer of the frames to the plugin.
    out: Vec<u8>,
    frames: mpsc::Receiver<Frame>,
    last_beat: Arc<AtomicU64>,
    started: Instant,
    manifest: Manifest,
}

/// A [`Transport`] to an out-of-process instance; starts the process on first use.
pub struct ProcessTransport {
    spec: ProcessSpec,
    running: Option<Running>,
    next_id: u64,
}

impl std::fmt::Debug for ProcessTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessTransport")
            .field("program", &self.spec.program)
            .field("instance", &self.spec.instance)
            .field("running", &self.running.is_some())
            .finish()
    }
}

/// Reads one length-prefixed body into `body`; `Ok(false)` at a clean end of input.
async fn read_body(r: &mut (impl AsyncRead + Unpin), body: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = stdio::body_len(len)?;
    body.clear();
    body.resize(len, 0);
    r.read_exact(body).await?;
    Ok(true)
}

async fn read_handshake(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Handshake>> {
    let mut body = Vec::new();
    if !read_body(r, &mut body).await? {
        return Ok(None);
    }
    stdio::decode_handshake(&body).map(Some)
}

fn gone(e: impl std::fmt::Display) -> TransportError {
    TransportError::Gone(e.to_string())
}

impl ProcessTransport {
    /// A transport that will start `spec.program` on its first request.
    pub fn new(spec: ProcessSpec) -> Self {
        Self {
            spec,
            running: None,
            next_id: 0,
        }
    }

    /// The manifest the running process sent in its `Hello`, if it runs.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.running.as_ref().map(|r| &r.manifest)
    }

    async fn start(&mut self) -> Result<(), TransportError> {
        let mut child = Command::new(&self.spec.program)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C in the terminal reaches only the node, which
            // then stops its plugins in order (it does not die under the node mid-shutdown).
            .process_group(0)
            .spawn()
            .map_err(|e| gone(format!("cannot start {}: {e}", self.spec.program.display())))?;
        let mut stdin = child.stdin.take().ok_or_else(|| gone("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| gone("no stdout"))?;
        let mut stdout = BufReader::with_capacity(64 << 10, stdout);
        let stderr = child.stderr.take().ok_or_else(|| gone("no stderr"))?;
        let instance = self.spec.instance.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(instance = %instance, "plugin stderr: {line}");
            }
        });
        let mut out = Vec::with_capacity(4 << 10);
        stdio::encode_handshake(
            &mut out,
            &Handshake::Hello {
                major: ABI_MAJOR,
                minor: ABI_MINOR,
                instance: Some(self.spec.instance.clone()),
                manifest: None,
            },
        )
        .map_err(gone)?;
        stdin.write_all(&out).await.map_err(gone)?;
        let hello = tokio::time::timeout(self.spec.call_timeout, read_handshake(&mut stdout))
            .await
            .map_err(|_| TransportError::Timeout(self.spec.call_timeout))?;
        let manifest = match hello {
            Ok(Some(Handshake::Hello {
                major,
                minor,
                manifest: Some(manifest),
                ..
            })) if major == ABI_MAJOR && millwright_plugin_sdk::manifest::supports_minor(minor) => {
                *manifest
            }
            Ok(Some(Handshake::Hello { major, minor, .. })) => {
                return Err(gone(format!(
                    "{} speaks plugin protocol {major}.{minor}; this node supports \
                     {ABI_MAJOR}.0 to {ABI_MAJOR}.{ABI_MINOR}; rebuild the plugin",
                    self.spec.program.display()
                )));
            }
            Ok(Some(Handshake::Refused { reason })) => return Err(gone(reason)),
            Ok(None) => {
                return Err(gone(format!(
                    "{} exited without answering the handshake; is it a Millwright plugin?",
                    self.spec.program.display()
                )));
            }
            Err(e) => {
                return Err(gone(format!(
                    "{} did not answer the handshake ({e}); is it a Millwright plugin of \
                     protocol {ABI_MAJOR}.x?",
                    self.spec.program.display()
                )));
            }
        };
        let (tx, frames) = mpsc::channel(64);
        let last_beat = Arc::new(AtomicU64::new(0));
        let beat = last_beat.clone();
        let started = Instant::now();
        let host = NodeHost {
            plugin: manifest.id.clone(),
        };
        let instance = self.spec.instance.clone();
        tokio::spawn(async move {
            let mut body = Vec::with_capacity(64 << 10);
            while let Ok(true) = read_body(&mut stdout, &mut body).await {
                let frame = match stdio::decode_frame(&body) {
                    Ok(frame) => frame,
                    Err(e) => {
                        tracing::warn!(instance = %instance, "unreadable frame from the plugin: {e}");
                        break;
                    }
                };
                if body.capacity() > LARGE_BUFFER {
                    body = Vec::new();
                }
                match frame {
                    Frame::Heartbeat => {
                        beat.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                    Frame::Log { record } => host.log(&instance, record),
                    Frame::Metric { update } => host.metric(&instance, update),
                    other => {
                        if tx.send(other).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        tracing::info!(plugin = %manifest.id, instance = %self.spec.instance, pid = child.id(), "plugin process started");
        self.running = Some(Running {
            _child: child,
            stdin,
            out,
            frames,
            last_beat,
            started,
            manifest,
        });
        Ok(())
    }

    async fn call(&mut self, request: Request) -> Result<Response, TransportError> {
        if self.running.is_none() {
            self.start().await?;
        }
        self.next_id += 1;
        let id = self.next_id;
        let timeout = self.spec.call_timeout;
        let running = self.running.as_mut().expect("started above");
        stdio::encode_frame(&mut running.out, &Frame::Request { id, request }).map_err(gone)?;
        running
            .stdin
            .write_all(&running.out)
            .await
            .map_err(|e| gone(format!("the plugin process is gone ({e})")))?;
        if running.out.capacity() > LARGE_BUFFER {
            running.out = Vec::new();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let silence = HEARTBEAT_INTERVAL * MISSED_BEATS;
        loop {
            let wait = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(HEARTBEAT_INTERVAL);
            match tokio::time::timeout(wait, running.frames.recv()).await {
                Ok(Some(Frame::Response { id: got, response })) if got == id => {
                    return Ok(response);
                }
                Ok(Some(_)) => continue,
                Ok(None) => return Err(gone("the plugin process exited")),
                Err(_) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(TransportError::Timeout(timeout));
                    }
                    let since_beat =
                        running
                            .started
                            .elapsed()
                            .saturating_sub(Duration::from_millis(
                                running.last_beat.load(Ordering::Relaxed),
                            ));
                    if since_beat > silence {
                        return Err(gone(format!("no heartbeat for {since_beat:?}")));
                    }
                }
            }
        }
    }
}

impl Transport for ProcessTransport {
    fn request(&mut self, request: Request) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(async move {
            let result = self.call(request).await;
            if result.is_err() {
                // A failed process is not reused: the next incarnation starts a new one.
                self.running = None;
            }
            result
        })
    }
}

/// A factory for the connector actor: a fresh process per incarnation.
pub fn transport_factory(spec: ProcessSpec) -> millwright_connect::TransportFactory {
    Arc::new(move || -> Box<dyn Transport> { Box::new(ProcessTransport::new(spec.clone())) })
}
