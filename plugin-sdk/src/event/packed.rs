//! The envelope's binary form: one packed record, carried as a single byte string of the binary
//! serde format (a MessagePack `bin` at the plugin boundary, see [`codec`](crate::codec)).
//!
//! Why not serde's field-by-field form: a source batch is mostly envelopes, and decoding nine
//! serde elements per envelope (a 128-bit id, two strings, three optional time tuples, an enum,
//! an option, a JSON value) cost about three times what the strings' allocations do. A packed
//! record is read with a few bounds checks and copies; only a payload that is not a scalar goes
//! through serde.
//!
//! Layout (integers little-endian), version 1:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, 1 |
//! | 1 | flags: bit 0 `source_time`, bit 1 `server_time`, bit 2 `status_code` present |
//! | 1 | quality: 0 good, 1 uncertain, 2 bad |
//! | 16 | id, its 128-bit value |
//! | 12 | `receive_time`: i64 seconds and u32 nanoseconds since the Unix epoch |
//! | 12 | `source_time`, when its flag is set |
//! | 12 | `server_time`, when its flag is set |
//! | 4 | `status_code`, when its flag is set |
//! | 4 + n | `source`: u32 length, UTF-8 |
//! | 4 + n | `subject`: u32 length, UTF-8 |
//! | 4 + n | `payload`: u32 length, the JSON value as MessagePack |
//!
//! A reader ignores bytes after the payload (a later ABI minor may append fields there) and
//! refuses another version, naming it.

use std::cell::RefCell;

use chrono::{DateTime, Utc};

use super::{Envelope, EventId, Quality};

/// The layout version written and read.
const VERSION: u8 = 1;
const HAS_SOURCE_TIME: u8 = 1;
const HAS_SERVER_TIME: u8 = 2;
const HAS_STATUS_CODE: u8 = 4;

thread_local! {
    /// The record being written (reused: one allocation per thread, not per envelope).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn put_time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    out.extend_from_slice(&t.timestamp().to_le_bytes());
    out.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Calls `f` with the packed record of `e`.
///
/// # Errors
/// When the payload cannot be written as MessagePack (it always can: it is JSON).
pub(super) fn with_packed<T>(
    e: &Envelope,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T, rmp_serde::encode::Error> {
    SCRATCH.with(|scratch| {
        // A payload nested in a payload never holds an envelope, so this never re-enters; if it
        // ever did, a fresh buffer keeps it correct.
        let mut own = Vec::new();
        let mut guard = scratch.try_borrow_mut().ok();
        let out = guard.as_deref_mut().unwrap_or(&mut own);
        out.clear();
        let flags = if e.source_time.is_some() {
            HAS_SOURCE_TIME
        } else {
            0
        } | if e.server_time.is_some() {
            HAS_SERVER_TIME
        } else {
            0
        } | if e.status_code.is_some() {
            HAS_STATUS_CODE
        } else {
            0
        };
        let quality = match e.quality {
            Quality::Good => 0,
            Quality::Uncertain => 1,
            Quality::Bad => 2,
        };
        out.extend_from_slice(&[VERSION, flags, quality]);
        out.extend_from_slice(&e.id.as_u128().to_le_bytes());
        put_time(out, &e.receive_time);
        if let Some(t) = &e.source_time {
            put_time(out, t);
        }
        if let Some(t) = &e.server_time {
            put_time(out, t);
        }
        if let Some(code) = e.status_code {
            out.extend_from_slice(&code.to_le_bytes());
        }
        put_str(out, &e.source);
        put_str(out, &e.subject);
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        rmp_serde::encode::write(out, &e.payload)?;
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(f(out))
    })
}

/// The time `secs` and `nanos` after the Unix epoch. The events of a batch fall on one day, so
/// the day's date (the costly part of the conversion) is kept from the last call.
fn time(secs: i64, nanos: u32) -> Option<DateTime<Utc>> {
    use chrono::{NaiveDate, NaiveTime};
    thread_local! {
        static LAST_DAY: std::cell::Cell<Option<(i64, NaiveDate)>> = const { std::cell::Cell::new(None) };
    }
    let day = secs.div_euclid(86_400);
    let of_day = u32::try_from(secs.rem_euclid(86_400)).ok()?;
    let date = match LAST_DAY.get() {
        Some((last, date)) if last == day => date,
        _ => {
            let date = DateTime::from_timestamp(day.checked_mul(86_400)?, 0)?.date_naive();
            LAST_DAY.set(Some((day, date)));
            date
        }
    };
    let time = NaiveTime::from_num_seconds_from_midnight_opt(of_day, nanos)?;
    Some(date.and_time(time).and_utc())
}

/// Reads a packed record.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "a packed envelope ends inside its {what} ({} of {n} bytes left)",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn time(&mut self, what: &str) -> Result<DateTime<Utc>, String> {
        let secs = i64::from_le_bytes(self.array(what)?);
        let nanos = u32::from_le_bytes(self.array(what)?);
        time(secs, nanos).ok_or_else(|| format!("{what} {secs}.{nanos:09} is out of range"))
    }

    fn sized(&mut self, what: &str) -> Result<&'a [u8], String> {
        let len = u32::from_le_bytes(self.array(what)?) as usize;
        self.take(len, what)
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let bytes = self.sized(what)?;
        // Subjects and names are ASCII: checked a word at a time, no decoding.
        if bytes.is_ascii() {
            // SAFETY: ASCII is UTF-8.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) }.to_owned());
        }
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| format!("{what} is not UTF-8: {e}"))
    }
}

/// The envelope in `bytes`.
///
/// # Errors
/// One sentence: a truncated record, another version, bad UTF-8, a time out of range, a
/// payload that is not MessagePack.
pub(super) fn unpack(bytes: &[u8]) -> Result<Envelope, String> {
    let mut r = Reader { bytes };
    let [version, flags, quality] = r.array("header")?;
    if version != VERSION {
        return Err(format!(
            "a packed envelope of version {version}, but this SDK reads version {VERSION}; \
             rebuild the plugin against the node's millwright-plugin-sdk"
        ));
    }
    let quality = match quality {
        0 => Quality::Good,
        1 => Quality::Uncertain,
        2 => Quality::Bad,
        q => return Err(format!("quality {q} is none of 0 (good), 1, 2")),
    };
    let id = EventId::from_u128(u128::from_le_bytes(r.array("id")?));
    let receive_time = r.time("receive_time")?;
    let source_time = (flags & HAS_SOURCE_TIME != 0)
        .then(|| r.time("source_time"))
        .transpose()?;
    let server_time = (flags & HAS_SERVER_TIME != 0)
        .then(|| r.time("server_time"))
        .transpose()?;
    let status_code = (flags & HAS_STATUS_CODE != 0)
        .then(|| r.array("status_code").map(u32::from_le_bytes))
        .transpose()?;
    let source = r.string("source")?;
    let subject = r.string("subject")?;
    let payload = payload(r.sized("payload")?)?;
    // Whatever follows was appended by a later minor.
    Ok(Envelope {
        id,
        source,
        subject,
        source_time,
        server_time,
        receive_time,
        quality,
        status_code,
        payload,
    })
}

/// A MessagePack JSON value: scalars read here, anything else through serde.
fn payload(bytes: &[u8]) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let be8 = |b: &[u8]| -> Option<[u8; 8]> { b.get(1..9)?.try_into().ok() };
    let scalar = match bytes {
        [0xc0] => Some(Value::Null),
        [0xc2] => Some(Value::Bool(false)),
        [0xc3] => Some(Value::Bool(true)),
        [b @ 0x00..=0x7f] => Some(Value::from(*b)),
        [b @ 0xe0..=0xff] => Some(Value::from(*b as i8)),
        [0xcb, ..] if bytes.len() == 9 => be8(bytes).map(|b| Value::from(f64::from_be_bytes(b))),
        [0xcf, ..] if bytes.len() == 9 => be8(bytes).map(|b| Value::from(u64::from_be_bytes(b))),
        [0xd3, ..] if bytes.len() == 9 => be8(bytes).map(|b| Value::from(i64::from_be_bytes(b))),
        _ => None,
    };
    match scalar {
        Some(v) => Ok(v),
        None => rmp_serde::from_slice(bytes).map_err(|e| format!("payload: {e}")),
    }
}
