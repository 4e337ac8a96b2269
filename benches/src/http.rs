//! Blocking HTTP/1.0 requests on loopback: the benches poll `/ready`, read `/broker` and
//! `/metrics` and post connector calls without a runtime of their own in the measuring
//! process. HTTP/1.0 keeps the answer simple to read: the server closes the connection after
//! a body that is not chunked.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response: status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// `GET path` on `addr`, giving up after `timeout` (connect, and each read or write).
///
/// # Errors
/// The connection failed, timed out or the answer is not HTTP.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    request(addr, "GET", path, None, timeout)
}

/// `POST path` on `addr` with a JSON `body` (`None`: empty), giving up after `timeout`.
///
/// # Errors
/// As [`get`].
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> io::Result<Response> {
    request(addr, "POST", path, body, timeout)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {text:.80}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}
