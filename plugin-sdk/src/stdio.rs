//! The out-of-process transport: a plugin executable serving one instance over its stdin and
//! stdout, with the same [`protocol`](crate::protocol) messages as every other transport.
//!
//! Each message is a [`Frame`]: a 4-byte big-endian length, then that many bytes of JSON.
//! The host writes to the plugin's stdin and reads its stdout; the plugin's stderr is its own
//! (the host logs it).
//!
//! 1. **Hello.** The host sends `Hello` with its protocol version; the plugin answers `Hello`
//!    with its own and its manifest, or `Refused` (and exits) when the majors differ.
//! 2. **Requests.** The host sends `Request { id, request }`; the plugin answers `Response {
//!    id, response }`. One request at a time. Between them the plugin may send `Log` and
//!    `Metric` frames (its context's output).
//! 3. **Heartbeats.** The plugin sends `Heartbeat` every [`HEARTBEAT_INTERVAL`] from a thread
//!    of its own, so the host tells a plugin that is busy (heartbeats, no answer yet) from one
//!    that hangs or is gone (no heartbeats); the host also bounds every call by a timeout.
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

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connector::Plugin;
use crate::context::{Context, Host, LogRecord, MetricUpdate};
use crate::manifest::{ABI_MAJOR, ABI_MINOR, Manifest};
use crate::protocol::{Adapter, Request, Response, VTable};

/// How often a plugin process says it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// The largest frame either side accepts (a frame is one batch, not a stream).
pub const MAX_FRAME: usize = 64 << 20;

/// One message on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "frame", rename_all = "snake_case")]
pub enum Frame {
    /// The handshake, both ways.
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
}

/// Writes one frame.
///
/// # Errors
/// The writer's error.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let body = serde_json::to_vec(frame).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame too large"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of input.
///
/// # Errors
/// The reader's error, a frame over [`MAX_FRAME`], or one that is not a [`Frame`].
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "frame of {len} bytes, more than {MAX_FRAME}"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

type SharedOut = Arc<Mutex<BufWriter<io::Stdout>>>;

struct StdioHost(SharedOut);

impl StdioHost {
    fn send(&self, frame: &Frame) {
        if let Ok(mut out) = self.0.lock() {
            let _ = write_frame(&mut *out, frame);
        }
    }
}

impl Host for StdioHost {
    fn log(&self, _instance: &str, record: LogRecord) {
        self.send(&Frame::Log { record });
    }
    fn metric(&self, _instance: &str, update: MetricUpdate) {
        self.send(&Frame::Metric { update });
    }
}

/// Serves plugin `P` on stdin/stdout until the host closes stdin; returns the process' exit
/// status (0 after a clean end, 2 after a refused handshake, 1 on an I/O error).
pub fn serve<P: Plugin>(vtable: &'static VTable<P>) -> std::process::ExitCode {
    match serve_inner(vtable) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("plugin {}: {e}", P::ID);
            std::process::ExitCode::from(1)
        }
    }
}

fn serve_inner<P: Plugin>(vtable: &'static VTable<P>) -> io::Result<u8> {
    let mut input = BufReader::new(io::stdin().lock());
    let out: SharedOut = Arc::new(Mutex::new(BufWriter::new(io::stdout())));
    let send = |frame: &Frame| -> io::Result<()> {
        let mut o = out
            .lock()
            .map_err(|_| io::Error::other("stdout lock poisoned"))?;
        write_frame(&mut *o, frame)
    };
    let Some(Frame::Hello {
        major, instance, ..
    }) = read_frame(&mut input)?
    else {
        return Err(io::Error::other("the host did not start with Hello"));
    };
    if major != ABI_MAJOR {
        send(&Frame::Refused {
            reason: format!(
                "plugin {} {} speaks plugin protocol {ABI_MAJOR}.{ABI_MINOR}, the host {major}.x; \
                 rebuild the plugin against the host's millwright-plugin-sdk",
                P::ID,
                P::VERSION
            ),
        })?;
        return Ok(2);
    }
    send(&Frame::Hello {
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
            if write_frame(&mut *o, &Frame::Heartbeat).is_err() {
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
    while let Some(frame) = read_frame(&mut input)? {
        let Frame::Request { id, request } = frame else {
            continue;
        };
        let close = matches!(request, Request::Close);
        let response = runtime.block_on(adapter.handle(request));
        send(&Frame::Response { id, response })?;
        if close {
            break;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        let frames = [
            Frame::Hello {
                major: 1,
                minor: 0,
                instance: Some("i".into()),
                manifest: None,
            },
            Frame::Request {
                id: 7,
                request: Request::ReadBatch { max: 3 },
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
    fn oversized_or_garbage_frames_are_errors_not_panics() {
        let mut r: &[u8] = &u32::MAX.to_be_bytes();
        assert!(read_frame(&mut r).is_err());
        let mut buf = 5u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"nope!");
        assert!(read_frame(&mut buf.as_slice()).is_err());
        let mut cut: &[u8] = &[0, 0, 0, 9, b'{'];
        assert!(read_frame(&mut cut).is_err(), "a frame cut short");
    }
}
