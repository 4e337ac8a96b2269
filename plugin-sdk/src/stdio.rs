//! The out-of-process transport: a plugin executable serving one instance over its stdin and
//! stdout, with the same [`protocol`](crate::protocol) messages as every other transport.
//!
//! Each message is a 4-byte big-endian length, then that many bytes. The host writes to the
//! plugin's stdin and reads its stdout; the plugin's stderr is its own (the host logs it).
//!
//! 1. **Hello.** The host sends [`Handshake::Hello`] with its protocol version; the plugin
//!    answers `Hello` with its own and its manifest, or [`Handshake::Refused`] (and exits) when
//!    the majors differ. The handshake is JSON, in the same shape in every protocol version, so
//!    a host and a plugin of different majors still read each other's versions and say which.
//! 2. **Requests.** After the handshake every message is a [`Frame`] encoded with
//!    [`codec`](crate::codec) (MessagePack; protocol 1 used JSON). The host sends `Request {
//!    id, request }`; the plugin answers `Response { id, response }`. One request at a time,
//!    except that a read waits until the source has data: the host ends a waiting read with
//!    `Interrupt { id }` (protocol 4) when it needs the instance, the read answers
//!    `interrupted`, and the requests sent meanwhile are served in order. Between them the
//!    plugin may send `Log` and `Metric` frames (its context's output).
//! 3. **Heartbeats.** The plugin sends `Heartbeat` every [`HEARTBEAT_INTERVAL`] from a thread
//!    of its own, so the host tells a plugin that is busy (heartbeats, no answer yet) from one
//!    that hangs or is gone (no heartbeats); the host also bounds every call by a timeout.
//!
//! Each frame is written with one `write` (length and body in one buffer) and no other flush.
//!
//! A crash, an abort or a hang kills only the plugin's process: the host's supervisor starts a
//! new one, and batches that were read but not acknowledged are read again.
//!
//! A plugin crate serves this from a two-line `main` (see `plugins/testkit/src/main.rs`):
//!
//! ```text
//! fn main() {
//!     millwright_plugin_sdk::stdio::serve(&MY_PLUGIN);
//! }
//! ```

use std::io::{self, BufRead, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::connector::Plugin;
use crate::context::{Context, Host, LogRecord, MetricUpdate};
use crate::interrupt::ReadInterrupts;
use crate::manifest::{ABI_MAJOR, ABI_MINOR, Manifest};
use crate::protocol::{Adapter, Request, Response, VTable};

/// How often a plugin process says it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// The largest frame either side accepts (a frame is one batch, not a stream).
pub const MAX_FRAME: usize = 64 << 20;

/// The handshake, JSON in every protocol version (`{"frame":"hello","major":2,...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "frame", rename_all = "snake_case")]
pub enum Handshake {
    /// Both ways: the sender's protocol version.
    Hello {
        /// Protocol major (the ABI major).
        major: u32,
        /// Protocol minor.
        minor: u32,
        /// The instance's name (host → plugin).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
        /// The plugin's manifest (plugin → host).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest: Option<Box<Manifest>>,
    },
    /// The plugin cannot talk to this host; it exits after sending it.
    Refused {
        /// One sentence with the versions and the fix.
        reason: String,
    },
}

/// One message after the handshake, encoded with [`codec`](crate::codec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// A request (host → plugin).
    Request {
        /// Echoed in the response.
        id: u64,
        /// The request.
        request: Request,
    },
    /// A response (plugin → host).
    Response {
        /// The request's id.
        id: u64,
        /// The response.
        response: Response,
    },
    /// A log line of the instance (plugin → host).
    Log {
        /// The record.
        record: LogRecord,
    },
    /// A metric update of the instance (plugin → host).
    Metric {
        /// The update.
        update: MetricUpdate,
    },
    /// The plugin process is alive (plugin → host).
    Heartbeat,
    /// End the read of request `id` if it waits for data, or as soon as it starts (host →
    /// plugin, protocol 4): it answers `interrupted`. Sent while the read is outstanding,
    /// so that the host can send its next request.
    Interrupt {
        /// The read request's id.
        id: u64,
    },
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Sets `buf` to one length-prefixed message made by `body` (which appends to it).
fn prefixed(
    buf: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    body(buf)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "frame of {len} bytes, more than {MAX_FRAME}"
        )));
    }
    let len = u32::try_from(len).map_err(|_| io::Error::other("frame too large"))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Sets `buf` to `frame`, length prefix included, ready for one write.
///
/// # Errors
/// The frame cannot be encoded, or is over [`MAX_FRAME`].
pub fn encode_frame(buf: &mut Vec<u8>, frame: &Frame) -> io::Result<()> {
    prefixed(buf, |b| {
        codec::encode_into(b, frame).map_err(io::Error::other)
    })
}

/// Sets `buf` to `handshake` (JSON), length prefix included.
///
/// # Errors
/// As [`encode_frame`].
pub fn encode_handshake(buf: &mut Vec<u8>, handshake: &Handshake) -> io::Result<()> {
    prefixed(buf, |b| {
        serde_json::to_writer(b, handshake).map_err(io::Error::other)
    })
}

/// The body length a 4-byte prefix announces.
///
/// # Errors
/// A length over [`MAX_FRAME`].
pub fn body_len(prefix: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(invalid(format!(
            "frame of {len} bytes, more than {MAX_FRAME}"
        )));
    }
    Ok(len)
}

/// Decodes a frame's body.
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] when it is not a [`Frame`].
pub fn decode_frame(body: &[u8]) -> io::Result<Frame> {
    codec::decode(body).map_err(invalid)
}

/// Decodes a handshake's body.
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] when it is not the JSON of a [`Handshake`].
pub fn decode_handshake(body: &[u8]) -> io::Result<Handshake> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("not a plugin handshake: {e}")))
}

/// Writes one frame with one write.
///
/// # Errors
/// The writer's error, or the frame's (see [`encode_frame`]).
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let mut buf = Vec::new();
    encode_frame(&mut buf, frame)?;
    w.write_all(&buf)?;
    w.flush()
}

/// Writes the handshake.
///
/// # Errors
/// As [`write_frame`].
pub fn write_handshake(w: &mut impl Write, handshake: &Handshake) -> io::Result<()> {
    let mut buf = Vec::new();
    encode_handshake(&mut buf, handshake)?;
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one length-prefixed body into `body`; `Ok(false)` at a clean end of input.
fn read_body(r: &mut impl Read, body: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = body_len(len)?;
    body.clear();
    body.resize(len, 0);
    r.read_exact(body)?;
    Ok(true)
}

/// Reads one frame; `Ok(None)` at a clean end of input.
///
/// # Errors
/// The reader's error, a frame over [`MAX_FRAME`], or one that is not a [`Frame`].
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut body = Vec::new();
    if !read_body(r, &mut body)? {
        return Ok(None);
    }
    decode_frame(&body).map(Some)
}

/// Reads the handshake; `Ok(None)` at a clean end of input.
///
/// # Errors
/// As [`read_frame`], for a [`Handshake`].
pub fn read_handshake(r: &mut impl Read) -> io::Result<Option<Handshake>> {
    let mut body = Vec::new();
    if !read_body(r, &mut body)? {
        return Ok(None);
    }
    decode_handshake(&body).map(Some)
}

/// Where the plugin's frames go: one encode buffer, one write per frame.
struct Out<W> {
    w: W,
    buf: Vec<u8>,
}

impl<W: Write> Out<W> {
    fn send(&mut self, frame: &Frame) -> io::Result<()> {
        encode_frame(&mut self.buf, frame)?;
        self.w.write_all(&self.buf)?;
        self.w.flush()
    }

    fn handshake(&mut self, handshake: &Handshake) -> io::Result<()> {
        encode_handshake(&mut self.buf, handshake)?;
        self.w.write_all(&self.buf)?;
        self.w.flush()
    }
}

type SharedOut<W> = Arc<Mutex<Out<W>>>;

struct StdioHost<W>(SharedOut<W>);

impl<W: Write> StdioHost<W> {
    fn send(&self, frame: &Frame) {
        if let Ok(mut out) = self.0.lock() {
            let _ = out.send(frame);
        }
    }
}

impl<W: Write + Send + 'static> Host for StdioHost<W> {
    fn log(&self, _instance: &str, record: LogRecord) {
        self.send(&Frame::Log { record });
    }
    fn metric(&self, _instance: &str, update: MetricUpdate) {
        self.send(&Frame::Metric { update });
    }
}

/// The process' stdout without std's line buffering (which would split a binary frame at
/// every newline byte into several writes): a duplicate of the descriptor, written directly.
fn raw_stdout() -> io::Result<Box<dyn Write + Send>> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Box::new(std::fs::File::from(fd)))
    }
    #[cfg(not(unix))]
    {
        Ok(Box::new(io::BufWriter::new(io::stdout())))
    }
}

/// Serves plugin `P` on stdin/stdout until the host closes stdin; returns the process' exit
/// status (0 after a clean end, 2 after a refused handshake, 1 on an I/O error).
pub fn serve<P: Plugin>(vtable: &'static VTable<P>) -> std::process::ExitCode {
    let served =
        raw_stdout().and_then(|out| serve_on(vtable, io::BufReader::new(io::stdin()), out));
    match served {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("plugin {}: {e}", P::ID);
            std::process::ExitCode::from(1)
        }
    }
}

fn lock<W>(out: &SharedOut<W>) -> io::Result<std::sync::MutexGuard<'_, Out<W>>> {
    out.lock()
        .map_err(|_| io::Error::other("stdout lock poisoned"))
}

/// [`serve`] on any input and output (the process' own, or a test's).
fn serve_on<P: Plugin, W: Write + Send + 'static>(
    vtable: &'static VTable<P>,
    mut input: impl BufRead + Send + 'static,
    output: W,
) -> io::Result<u8> {
    let out: SharedOut<W> = Arc::new(Mutex::new(Out {
        w: output,
        buf: Vec::with_capacity(64 << 10),
    }));
    let hello = match read_handshake(&mut input) {
        Ok(Some(hello)) => hello,
        Ok(None) => return Err(io::Error::other("the host closed stdin before Hello")),
        Err(e) => {
            return Err(io::Error::other(format!(
                "the host did not start with a Hello this plugin can read ({e}); this plugin \
                 speaks plugin protocol {ABI_MAJOR}.{ABI_MINOR}"
            )));
        }
    };
    let Handshake::Hello {
        major, instance, ..
    } = hello
    else {
        return Err(io::Error::other("the host did not start with Hello"));
    };
    if major != ABI_MAJOR {
        lock(&out)?.handshake(&Handshake::Refused {
            reason: format!(
                "plugin {} {} speaks plugin protocol {ABI_MAJOR}.{ABI_MINOR}, the host {major}.x; \
                 rebuild the plugin against the host's millwright-plugin-sdk",
                P::ID,
                P::VERSION
            ),
        })?;
        return Ok(2);
    }
    lock(&out)?.handshake(&Handshake::Hello {
        major: ABI_MAJOR,
        minor: ABI_MINOR,
        instance: None,
        manifest: Some(Box::new(Manifest::of(vtable))),
    })?;
    let beat = out.clone();
    // A plain thread, not a task: it must keep beating while the connector blocks the
    // runtime's only thread (which is the point: the host tells busy from gone).
    std::thread::spawn(move || {
        loop {
            #[allow(
                clippy::disallowed_methods,
                reason = "a dedicated thread, not a tokio worker"
            )]
            std::thread::sleep(HEARTBEAT_INTERVAL);
            let Ok(mut o) = beat.lock() else { return };
            if o.send(&Frame::Heartbeat).is_err() {
                return;
            }
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let name = instance.unwrap_or_else(|| "unnamed".to_owned());
    let (ctx, _cancel) = Context::new(
        P::ID,
        &name,
        serde_json::Value::Null,
        Arc::new(StdioHost(out.clone())),
    );
    let mut adapter = Adapter::new(vtable, ctx);
    // Frames are read on a thread of their own, so that an `Interrupt` reaches a read that
    // waits for data while requests queue behind it.
    let interrupts = ReadInterrupts::new();
    let (requests, mut queued) = tokio::sync::mpsc::unbounded_channel::<(u64, Request)>();
    let reader_interrupts = interrupts.clone();
    let reader = std::thread::spawn(move || -> io::Result<()> {
        let mut body = Vec::with_capacity(64 << 10);
        while read_body(&mut input, &mut body)? {
            let sent = match decode_frame(&body)? {
                Frame::Request { id, request } => requests.send((id, request)).is_ok(),
                Frame::Interrupt { id } => {
                    reader_interrupts.interrupt(id);
                    true
                }
                _ => true,
            };
            if !sent {
                break;
            }
        }
        Ok(())
    });
    let closed = runtime.block_on(async {
        while let Some((id, request)) = queued.recv().await {
            let close = matches!(request, Request::Close);
            let ticket = request.is_read().then(|| interrupts.ticket(id));
            let response = adapter.serve(request, ticket).await;
            lock(&out)?.send(&Frame::Response { id, response })?;
            if close {
                return Ok::<bool, io::Error>(true);
            }
        }
        Ok(false)
    })?;
    if !closed {
        // The host closed stdin (or sent something unreadable): the reader's outcome is ours.
        reader
            .join()
            .map_err(|_| io::Error::other("the frame reader panicked"))??;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::AckToken;
    use crate::harness::VEC_SOURCE;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        let frames = [
            Frame::Request {
                id: 7,
                request: Request::ReadBatch { max: 3 },
            },
            Frame::Response {
                id: 7,
                response: Response::Done,
            },
            Frame::Log {
                record: LogRecord {
                    level: crate::context::Level::Warn,
                    message: "m".into(),
                    fields: vec![("k".into(), "v".into())],
                },
            },
            Frame::Metric {
                update: MetricUpdate {
                    kind: crate::context::MetricKind::Counter,
                    name: "reads_total".into(),
                    labels: vec![],
                    value: 1.0,
                },
            },
            Frame::Heartbeat,
        ];
        for f in &frames {
            write_frame(&mut buf, f).unwrap();
        }
        let mut r = buf.as_slice();
        for f in &frames {
            assert_eq!(read_frame(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r).unwrap(), None, "a clean end");
    }

    #[test]
    fn the_handshake_is_the_json_of_protocol_1() {
        let mut buf = Vec::new();
        let hello = Handshake::Hello {
            major: 2,
            minor: 0,
            instance: Some("i".into()),
            manifest: None,
        };
        write_handshake(&mut buf, &hello).unwrap();
        let body = &buf[4..];
        assert_eq!(
            std::str::from_utf8(body).unwrap(),
            r#"{"frame":"hello","major":2,"minor":0,"instance":"i"}"#
        );
        assert_eq!(read_handshake(&mut buf.as_slice()).unwrap(), Some(hello));
        assert!(read_frame(&mut buf.as_slice()).is_err(), "not a frame");
    }

    #[test]
    fn oversized_or_garbage_frames_are_errors_not_panics() {
        let mut r: &[u8] = &u32::MAX.to_be_bytes();
        assert!(read_frame(&mut r).is_err());
        let mut buf = 5u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"nope!");
        assert!(read_frame(&mut buf.as_slice()).is_err());
        assert!(read_handshake(&mut buf.as_slice()).is_err());
        let mut cut: &[u8] = &[0, 0, 0, 9, 0x81];
        assert!(read_frame(&mut cut).is_err(), "a frame cut short");
    }

    /// A `Write` the test reads back after the plugin side is done.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_host_of_another_major_is_refused_in_json_naming_both_versions() {
        // What a host of protocol 1 sends.
        let mut input = Vec::new();
        let v1_hello = br#"{"frame":"hello","major":1,"minor":0,"instance":"old"}"#;
        input.extend_from_slice(&(v1_hello.len() as u32).to_be_bytes());
        input.extend_from_slice(v1_hello);
        let out = Shared::default();
        let code = serve_on(VEC_SOURCE, io::Cursor::new(input), out.clone()).unwrap();
        assert_eq!(code, 2);
        let written = out.0.lock().unwrap().clone();
        let Some(Handshake::Refused { reason }) = read_handshake(&mut written.as_slice()).unwrap()
        else {
            panic!("a refusal")
        };
        assert!(reason.contains("speaks plugin protocol 4.0"), "{reason}");
        assert!(reason.contains("the host 1.x"), "{reason}");
        assert!(reason.contains("rebuild the plugin"), "{reason}");
    }

    #[test]
    fn a_session_over_frames_serves_requests() {
        let mut input = Vec::new();
        let mut buf = Vec::new();
        encode_handshake(
            &mut buf,
            &Handshake::Hello {
                major: ABI_MAJOR,
                minor: ABI_MINOR,
                instance: Some("v1".into()),
                manifest: None,
            },
        )
        .unwrap();
        input.extend_from_slice(&buf);
        let requests = [
            Request::open(serde_json::json!({"values": [1, 2, 3]})),
            Request::Connect,
            Request::ReadBatch { max: 10 },
            Request::Close,
        ];
        for (id, request) in requests.into_iter().enumerate() {
            let frame = Frame::Request {
                id: id as u64,
                request,
            };
            encode_frame(&mut buf, &frame).unwrap();
            input.extend_from_slice(&buf);
        }
        let out = Shared::default();
        assert_eq!(
            serve_on(VEC_SOURCE, io::Cursor::new(input), out.clone()).unwrap(),
            0
        );
        let written = out.0.lock().unwrap().clone();
        let mut r = written.as_slice();
        let Some(Handshake::Hello {
            major, manifest, ..
        }) = read_handshake(&mut r).unwrap()
        else {
            panic!("a hello")
        };
        assert_eq!(major, ABI_MAJOR);
        assert_eq!(manifest.unwrap().id, "vec");
        let mut responses = Vec::new();
        while let Some(frame) = read_frame(&mut r).unwrap() {
            if let Frame::Response { id, response } = frame {
                responses.push((id, response));
            }
        }
        assert_eq!(responses.len(), 4, "{responses:?}");
        assert_eq!(responses[1], (1, Response::Done));
        let (2, Response::Batch { batch }) = &responses[2] else {
            panic!("a batch: {responses:?}")
        };
        assert_eq!(batch.events.len(), 3);
        assert_eq!(batch.events[2].payload, 3);
        assert_ne!(batch.token, AckToken(u64::MAX));
    }
}
