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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use millwright_connect::{BoxFuture, NodeHost, Transport, TransportError};
use millwright_plugin_sdk::context::Host;
use millwright_plugin_sdk::manifest::{ABI_MAJOR, ABI_MINOR, Manifest};
use millwright_plugin_sdk::protocol::{Request, Response};
use millwright_plugin_sdk::stdio::{self, Frame, HEARTBEAT_INTERVAL, Handshake};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

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

/// A running plugin process: frames go out through the writer task, responses come back
/// through the reader task to the request that waits for them (by id).
struct Link {
    _child: Child,
    /// Encoded frames, written to the process' stdin in this order by the writer task.
    frames: mpsc::UnboundedSender<Vec<u8>>,
    /// The requests waiting for their response, by id.
    waiting: Waiting,
    /// Why the process stopped serving, once it did.
    gone: Arc<Mutex<Option<String>>>,
}

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    /// Sends request `id` and returns where its response will come.
    fn send(
        &self,
        id: u64,
        request: Request,
    ) -> Result<oneshot::Receiver<Response>, TransportError> {
        if let Some(why) = lock(&self.gone).clone() {
            return Err(gone(why));
        }
        let mut frame = Vec::new();
        stdio::encode_frame(&mut frame, &Frame::Request { id, request }).map_err(gone)?;
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id, tx);
        self.frames
            .send(frame)
            .map_err(|_| gone("the plugin process is gone"))?;
        Ok(rx)
    }

    fn why_gone(&self) -> String {
        lock(&self.gone)
            .clone()
            .unwrap_or_else(|| "the plugin process exited".to_owned())
    }
}

/// A [`Transport`] to an out-of-process instance; starts the process on first use.
pub struct ProcessTransport {
    spec: ProcessSpec,
    link: Arc<tokio::sync::Mutex<Option<Link>>>,
    manifest: Arc<OnceLock<Manifest>>,
    next_id: u64,
    /// The id of the last read sent (what `interrupt` names).
    last_read: u64,
}

impl std::fmt::Debug for ProcessTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessTransport")
            .field("program", &self.spec.program)
            .field("instance", &self.spec.instance)
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
            link: Arc::new(tokio::sync::Mutex::new(None)),
            manifest: Arc::new(OnceLock::new()),
            next_id: 0,
            last_read: 0,
        }
    }

    /// The manifest the process sent in its `Hello`, once it started.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.get()
    }
}

/// Starts the process and shakes hands.
async fn start(
    spec: &ProcessSpec,
    manifest_slot: &OnceLock<Manifest>,
) -> Result<Link, TransportError> {
    let mut child = Command::new(&spec.program)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C in the terminal reaches only the node, which
        // then stops its plugins in order (it does not die under the node mid-shutdown).
        .process_group(0)
        .spawn()
        .map_err(|e| gone(format!("cannot start {}: {e}", spec.program.display())))?;
    let mut stdin = child.stdin.take().ok_or_else(|| gone("no stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| gone("no stdout"))?;
    let mut stdout = BufReader::with_capacity(64 << 10, stdout);
    let stderr = child.stderr.take().ok_or_else(|| gone("no stderr"))?;
    let instance = spec.instance.clone();
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
            instance: Some(spec.instance.clone()),
            manifest: None,
        },
    )
    .map_err(gone)?;
    stdin.write_all(&out).await.map_err(gone)?;
    let hello = tokio::time::timeout(spec.call_timeout, read_handshake(&mut stdout))
        .await
        .map_err(|_| TransportError::Timeout(spec.call_timeout))?;
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
                spec.program.display()
            )));
        }
        Ok(Some(Handshake::Refused { reason })) => return Err(gone(reason)),
        Ok(None) => {
            return Err(gone(format!(
                "{} exited without answering the handshake; is it a Millwright plugin?",
                spec.program.display()
            )));
        }
        Err(e) => {
            return Err(gone(format!(
                "{} did not answer the handshake ({e}); is it a Millwright plugin of \
                 protocol {ABI_MAJOR}.x?",
                spec.program.display()
            )));
        }
    };
    let waiting: Waiting = Arc::default();
    let why: Arc<Mutex<Option<String>>> = Arc::default();
    let host = NodeHost {
        plugin: manifest.id.clone(),
    };
    tracing::info!(plugin = %manifest.id, instance = %spec.instance, pid = child.id(), "plugin process started");
    let _ = manifest_slot.set(manifest);
    // The writer: frames in the order the requests were made, one write each.
    let (frames, mut to_write) = mpsc::unbounded_channel::<Vec<u8>>();
    let (writer_waiting, writer_why) = (waiting.clone(), why.clone());
    tokio::spawn(async move {
        while let Some(frame) = to_write.recv().await {
            if let Err(e) = stdin.write_all(&frame).await {
                fail_all(
                    &writer_waiting,
                    &writer_why,
                    format!("the plugin process is gone ({e})"),
                );
                return;
            }
        }
    });
    // The reader: responses to whoever waits for them, logs and metrics to the node, and
    // silence (no heartbeat) as the end of the process.
    let (reader_waiting, reader_why) = (waiting.clone(), why.clone());
    let instance = spec.instance.clone();
    tokio::spawn(async move {
        let silence = HEARTBEAT_INTERVAL * MISSED_BEATS;
        let mut body = Vec::with_capacity(64 << 10);
        let why = loop {
            let frame = match tokio::time::timeout(silence, read_body(&mut stdout, &mut body)).await
            {
                Err(_) => break format!("no heartbeat for {silence:?}"),
                Ok(Ok(true)) => match stdio::decode_frame(&body) {
                    Ok(frame) => frame,
                    Err(e) => {
                        tracing::warn!(instance = %instance, "unreadable frame from the plugin: {e}");
                        break format!("unreadable frame from the plugin: {e}");
                    }
                },
                Ok(Ok(false)) => break "the plugin process exited".to_owned(),
                Ok(Err(e)) => break format!("the plugin process is gone ({e})"),
            };
            if body.capacity() > LARGE_BUFFER {
                body = Vec::new();
            }
            match frame {
                Frame::Response { id, response } => {
                    if let Some(waiter) = lock(&reader_waiting).remove(&id) {
                        let _ = waiter.send(response);
                    }
                }
                Frame::Log { record } => host.log(&instance, record),
                Frame::Metric { update } => host.metric(&instance, update),
                Frame::Heartbeat | Frame::Request { .. } | Frame::Interrupt { .. } => {}
            }
        };
        fail_all(&reader_waiting, &reader_why, why);
    });
    Ok(Link {
        _child: child,
        frames,
        waiting,
        gone: why,
    })
}

/// The process stopped serving: every waiting request fails with `why`.
fn fail_all(waiting: &Waiting, gone: &Mutex<Option<String>>, why: String) {
    lock(gone).get_or_insert(why);
    lock(waiting).clear();
}

impl Transport for ProcessTransport {
    fn start(&mut self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let mut link = self.link.lock().await;
            if link.is_none() {
                *link = Some(start(&self.spec, &self.manifest).await?);
            }
            Ok(())
        })
    }

    fn request(
        &mut self,
        request: Request,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        self.next_id += 1;
        let id = self.next_id;
        let read = request.is_read();
        if read {
            self.last_read = id;
        }
        let timeout = self.spec.call_timeout;
        // Sent now when the process runs (so frames go out in call order); otherwise the
        // future starts the process first.
        let mut request = Some(request);
        let sent = match self.link.try_lock() {
            Ok(link) => match (link.as_ref(), request.take()) {
                (Some(l), Some(r)) => Some(l.send(id, r)),
                (_, r) => {
                    request = r;
                    None
                }
            },
            Err(_) => None,
        };
        let (link, spec, manifest) = (self.link.clone(), self.spec.clone(), self.manifest.clone());
        Box::pin(async move {
            let rx = match sent {
                Some(sent) => sent,
                None => {
                    let mut guard = link.lock().await;
                    if guard.is_none() {
                        *guard = Some(start(&spec, &manifest).await?);
                    }
                    match (guard.as_ref(), request) {
                        (Some(l), Some(r)) => l.send(id, r),
                        _ => Err(gone("the plugin process did not start")),
                    }
                }
            };
            let outcome = match rx {
                Err(e) => Err(e),
                // A read waits for data as long as the source has none (the process' heartbeats
                // and exit are watched by the reader meanwhile).
                Ok(rx) if read => rx.await.map_err(|_| TransportError::Gone(String::new())),
                Ok(rx) => match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(_)) => Err(TransportError::Gone(String::new())),
                    Err(_) => Err(TransportError::Timeout(timeout)),
                },
            };
            match outcome {
                Ok(response) => Ok(response),
                Err(e) => {
                    // A failed process is not reused: the next request starts a new one.
                    let dead = link.lock().await.take();
                    Err(match (e, dead) {
                        (TransportError::Gone(why), Some(dead)) if why.is_empty() => {
                            gone(dead.why_gone())
                        }
                        (TransportError::Gone(why), None) if why.is_empty() => {
                            gone("the plugin process exited")
                        }
                        (e, _) => e,
                    })
                }
            }
        })
    }

    fn interrupt(&mut self) {
        if let Ok(link) = self.link.try_lock()
            && let Some(link) = link.as_ref()
        {
            let mut frame = Vec::new();
            if stdio::encode_frame(&mut frame, &Frame::Interrupt { id: self.last_read }).is_ok() {
                let _ = link.frames.send(frame);
            }
        }
    }
}

/// A factory for the connector actor: a fresh process per incarnation.
pub fn transport_factory(spec: ProcessSpec) -> millwright_connect::TransportFactory {
    Arc::new(move || -> Box<dyn Transport> { Box::new(ProcessTransport::new(spec.clone())) })
}
