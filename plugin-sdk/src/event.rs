//! The event envelope: the one shape in which data crosses the bus.
//!
//! Every event carries a unique, time-ordered [`EventId`] (a ULID). The id doubles as NATS'
//! `Nats-Msg-Id` header so JetStream can de-duplicate redeliveries, and as the key of the
//! disk queue and the dead-letter queue.
//!
//! Three clocks are kept apart, as OPC-UA does: `source_time` (when the value was true at the
//! machine), `server_time` (when a server such as a PLC stamped it) and `receive_time` (when
//! Millwright received it). Only `receive_time` is always known.
//!
//! The JSON of an envelope (the bus wire format, the disk queue, the dead-letter queue, the HTTP
//! API) has the id as ULID text and the times as RFC 3339 text. Binary formats (the plugin
//! boundary's MessagePack, see [`codec`](crate::codec)) carry each envelope as one packed
//! record ([`packed`]): the id as its 128-bit value, the times as seconds and nanoseconds, no
//! field names, no text to format or parse per event.

mod packed;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A globally unique, lexicographically time-ordered event id (ULID, 26 characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(ulid::Ulid);

impl EventId {
    /// A new id for an event received now. Ids made on one thread are strictly increasing,
    /// even within one millisecond (a monotonic ULID generator per thread).
    pub fn new() -> Self {
        thread_local! {
            static GENERATOR: std::cell::RefCell<ulid::Generator> =
                const { std::cell::RefCell::new(ulid::Generator::new()) };
        }
        let id = GENERATOR
            .with(|g| g.borrow_mut().generate().ok())
            .unwrap_or_else(ulid::Ulid::generate);
        Self(id)
    }

    /// The id as its 128-bit value.
    pub fn as_u128(&self) -> u128 {
        self.0.0
    }

    /// The id with this 128-bit value (the inverse of [`as_u128`](Self::as_u128)).
    pub fn from_u128(value: u128) -> Self {
        Self(ulid::Ulid(value))
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The text was not a 26-character ULID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid event id {input:?}: expected a 26-character ULID such as 01ARZ3NDEKTSV4RRFFQ69G5FAV"
)]
pub struct ParseEventIdError {
    /// The text that failed to parse.
    pub input: String,
}

impl FromStr for EventId {
    type Err = ParseEventIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s)
            .map(Self)
            .map_err(|_| ParseEventIdError {
                input: s.to_owned(),
            })
    }
}

/// The 26-character ULID text in human-readable formats (JSON: the bus, the disk queue, the
/// HTTP API); its 128-bit value in binary ones (the plugin boundary's MessagePack, 16 bytes).
impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(&self.0)
        } else {
            serializer.serialize_u128(self.0.0)
        }
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            u128::deserialize(deserializer).map(Self::from_u128)
        }
    }
}

/// How far a value can be trusted, after OPC-UA's status code severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Quality {
    /// The value is valid.
    #[default]
    Good,
    /// The value may be stale or imprecise.
    Uncertain,
    /// The value is not usable (sensor failure, communication loss, ...).
    Bad,
}

/// One event as it travels through Millwright.
///
/// In human-readable formats (JSON) it is a map with the field names below, the id as ULID
/// text and the times as RFC 3339 text; unknown fields are refused. In binary formats (the
/// plugin boundary) it is one byte string, a packed record (see the `packed` module's layout):
/// the id as its 128-bit value, each time as seconds and nanoseconds since the Unix epoch, no
/// field names; a reader ignores bytes appended after the payload by a later ABI minor.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique id; also the NATS `Nats-Msg-Id` used for de-duplication.
    pub id: EventId,
    /// The component that produced the event (a connector instance name such as `press1`).
    pub source: String,
    /// The bus subject the event is published on, e.g. `mw.ev.press1.temperature`.
    pub subject: String,
    /// When the value was true at the machine, if the source says.
    pub source_time: Option<DateTime<Utc>>,
    /// When an upstream server stamped the value, if any.
    pub server_time: Option<DateTime<Utc>>,
    /// When Millwright received the value.
    pub receive_time: DateTime<Utc>,
    /// Coarse quality of the value.
    pub quality: Quality,
    /// The protocol's full status code, when it has one (OPC-UA's 32-bit `StatusCode`).
    pub status_code: Option<u32>,
    /// The value itself.
    pub payload: serde_json::Value,
}

/// The envelope's two encodings (see [`Envelope`]).
mod wire {
    use std::fmt;

    use chrono::{DateTime, Utc};
    use serde::de::{self, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Envelope, EventId, Quality};

    /// The JSON form, borrowed for writing.
    #[derive(Serialize)]
    #[serde(rename = "Envelope")]
    struct JsonRef<'a> {
        id: &'a EventId,
        source: &'a str,
        subject: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        source_time: Option<&'a DateTime<Utc>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        server_time: Option<&'a DateTime<Utc>>,
        receive_time: &'a DateTime<Utc>,
        quality: Quality,
        #[serde(skip_serializing_if = "Option::is_none")]
        status_code: Option<u32>,
        payload: &'a serde_json::Value,
    }

    /// The JSON form, owned for reading.
    #[derive(Deserialize)]
    #[serde(rename = "Envelope", deny_unknown_fields)]
    struct Json {
        id: EventId,
        source: String,
        subject: String,
        #[serde(default)]
        source_time: Option<DateTime<Utc>>,
        #[serde(default)]
        server_time: Option<DateTime<Utc>>,
        receive_time: DateTime<Utc>,
        #[serde(default)]
        quality: Quality,
        #[serde(default)]
        status_code: Option<u32>,
        payload: serde_json::Value,
    }

    impl Serialize for Envelope {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() {
                return JsonRef {
                    id: &self.id,
                    source: &self.source,
                    subject: &self.subject,
                    source_time: self.source_time.as_ref(),
                    server_time: self.server_time.as_ref(),
                    receive_time: &self.receive_time,
                    quality: self.quality,
                    status_code: self.status_code,
                    payload: &self.payload,
                }
                .serialize(s);
            }
            super::packed::with_packed(self, |record| s.serialize_bytes(record))
                .map_err(serde::ser::Error::custom)?
        }
    }

    impl<'de> Deserialize<'de> for Envelope {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            if d.is_human_readable() {
                let j = Json::deserialize(d)?;
                return Ok(Envelope {
                    id: j.id,
                    source: j.source,
                    subject: j.subject,
                    source_time: j.source_time,
                    server_time: j.server_time,
                    receive_time: j.receive_time,
                    quality: j.quality,
                    status_code: j.status_code,
                    payload: j.payload,
                });
            }
            d.deserialize_bytes(Packed)
        }
    }

    /// Reads the packed record of [`packed`](super::packed).
    struct Packed;

    impl<'de> Visitor<'de> for Packed {
        type Value = Envelope;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a packed envelope (bytes)")
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Envelope, E> {
            super::packed::unpack(bytes).map_err(E::custom)
        }
    }
}

impl Envelope {
    /// A new good-quality event received now, with a fresh id.
    pub fn new(
        source: impl Into<String>,
        subject: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            id: EventId::new(),
            source: source.into(),
            subject: subject.into(),
            source_time: None,
            server_time: None,
            receive_time: Utc::now(),
            quality: Quality::Good,
            status_code: None,
            payload,
        }
    }

    /// Sets the source time.
    pub fn with_source_time(mut self, t: DateTime<Utc>) -> Self {
        self.source_time = Some(t);
        self
    }

    /// Sets the quality.
    pub fn with_quality(mut self, q: Quality) -> Self {
        self.quality = q;
        self
    }

    /// Serializes the envelope as JSON bytes (the wire format on the bus).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serializing this type cannot fail: every field is a plain value or a JSON value.
        serde_json::to_vec(self).expect("envelope serialization is infallible")
    }

    /// Parses an envelope from JSON bytes.
    ///
    /// # Errors
    /// Returns the JSON error when the bytes are not an envelope.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_json() {
        let e = Envelope::new("press1", "mw.ev.press1.temp", serde_json::json!(21.5))
            .with_source_time(Utc::now())
            .with_quality(Quality::Uncertain);
        let back = Envelope::from_json_slice(&e.to_json_bytes()).unwrap();
        assert_eq!(e, back);
    }

    #[test]
    fn event_ids_are_unique_and_parse_back() {
        let a = EventId::new();
        let b = EventId::new();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<EventId>().unwrap(), a);
        assert!("not-a-ulid".parse::<EventId>().is_err());
    }

    fn sample() -> Envelope {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        Envelope {
            id: EventId::from_u128(0x0192_3456_789a_bcde_f012_3456_789a_bcde),
            source: "press1".into(),
            subject: "mw.ev.press1.temp".into(),
            source_time: Some(t("2026-12-01T16:10:10.123456789Z")),
            server_time: None,
            receive_time: t("2026-12-01T16:10:11.5Z"),
            quality: Quality::Uncertain,
            status_code: Some(0x4000_0000),
            payload: serde_json::json!({"v": 21.5, "n": [1, -2, u64::MAX], "s": "x", "b": null}),
        }
    }

    #[test]
    fn the_json_form_is_text_as_on_the_bus() {
        let json = String::from_utf8(sample().to_json_bytes()).unwrap();
        assert_eq!(
            json,
            r#"{"id":"01J8T5CY4TQKFF04HMASW9NF6Y","source":"press1","subject":"mw.ev.press1.temp","source_time":"2026-12-01T16:10:10.123456789Z","receive_time":"2026-12-01T16:10:11.500Z","quality":"uncertain","status_code":1073741824,"payload":{"b":null,"n":[1,-2,18446744073709551615],"s":"x","v":21.5}}"#
        );
        assert_eq!(
            Envelope::from_json_slice(json.as_bytes()).unwrap(),
            sample()
        );
    }

    #[test]
    fn the_binary_form_has_no_text_ids_or_times_and_round_trips() {
        let mut e = sample();
        let bytes = crate::codec::encode(&e).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("01J8T5CY4"), "no ULID text: {text}");
        assert!(!text.contains("2026-12"), "no RFC 3339 text: {text}");
        assert!(bytes.windows(16).any(|w| w == e.id.as_u128().to_le_bytes()));
        assert_eq!(crate::codec::decode::<Envelope>(&bytes).unwrap(), e);
        // The extremes chrono can hold, and absent times.
        e.source_time = Some(DateTime::<Utc>::MIN_UTC);
        e.server_time = Some(DateTime::<Utc>::MAX_UTC);
        e.receive_time = DateTime::from_timestamp(-1, 999_999_999).unwrap();
        let bytes = crate::codec::encode(&e).unwrap();
        assert_eq!(crate::codec::decode::<Envelope>(&bytes).unwrap(), e);
        e.source_time = None;
        e.server_time = None;
        e.status_code = None;
        let bytes = crate::codec::encode(&e).unwrap();
        assert_eq!(crate::codec::decode::<Envelope>(&bytes).unwrap(), e);
    }

    #[test]
    fn the_binary_form_is_one_packed_record_a_later_minor_may_extend() {
        let bytes = crate::codec::encode(&sample()).unwrap();
        assert_eq!(
            bytes[0], 0xc4,
            "one MessagePack bin 8, no array or field names"
        );
        assert_eq!(bytes[1] as usize, bytes.len() - 2);
        assert_eq!(bytes[2], 1, "layout version 1");
        assert!(!String::from_utf8_lossy(&bytes).contains("subject"));
        // Bytes appended after the payload are skipped.
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"later");
        longer[1] += 5;
        assert_eq!(crate::codec::decode::<Envelope>(&longer).unwrap(), sample());
        // A record cut short, or of another version, is refused with the reason.
        let mut shorter = bytes[..bytes.len() - 1].to_vec();
        shorter[1] -= 1;
        let e = crate::codec::decode::<Envelope>(&shorter).unwrap_err();
        assert!(e.to_string().contains("ends inside its payload"), "{e}");
        let mut other = bytes.clone();
        other[2] = 2;
        let e = crate::codec::decode::<Envelope>(&other).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
    }

    #[test]
    fn every_kind_of_payload_round_trips_through_the_binary_form() {
        use serde_json::json;
        let payloads = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(127),
            json!(128),
            json!(-1),
            json!(-32),
            json!(-33),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(21.5),
            json!(-0.0),
            json!(1e300),
            json!(f32::MAX as f64),
            json!("text with ünïcode"),
            json!(""),
            json!([]),
            json!({}),
            json!([1, "a", {"x": null, "y": [2.5, -7]}]),
            json!({"v": 21.5, "n": [1, -2, u64::MAX], "s": "x", "b": null}),
            json!("x".repeat(100_000)),
        ];
        for payload in payloads {
            let e = Envelope {
                payload: payload.clone(),
                ..sample()
            };
            let bytes = crate::codec::encode(&e).unwrap();
            let back = crate::codec::decode::<Envelope>(&bytes).unwrap();
            assert_eq!(back, e, "{payload}");
            // The same value as MessagePack decoded through serde alone.
            let plain: serde_json::Value =
                rmp_serde::from_slice(&rmp_serde::to_vec(&payload).unwrap()).unwrap();
            assert_eq!(back.payload, plain, "{payload}");
        }
        // Empty strings and a batch of them, as a source returns.
        let e = Envelope::new("", "", json!(1));
        let batch = vec![e.clone(), sample(), e];
        let bytes = crate::codec::encode(&batch).unwrap();
        assert_eq!(
            crate::codec::decode::<Vec<Envelope>>(&bytes).unwrap(),
            batch
        );
    }

    #[test]
    fn times_on_other_days_and_out_of_range_times_decode_right() {
        // The decoder keeps the last day's date: days alternating must not reuse it wrongly.
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let days = [
            t("2026-12-01T23:59:59.999999999Z"),
            t("2026-12-02T00:00:00Z"),
            t("2026-12-01T00:00:00.5Z"),
            t("1969-12-31T23:59:59Z"),
            t("1970-01-01T00:00:00Z"),
            DateTime::<Utc>::MAX_UTC,
            t("2026-12-01T12:00:00Z"),
        ];
        for receive_time in days {
            let e = Envelope {
                receive_time,
                ..sample()
            };
            let bytes = crate::codec::encode(&e).unwrap();
            assert_eq!(crate::codec::decode::<Envelope>(&bytes).unwrap(), e);
        }
        // Names need not be ASCII.
        let e = Envelope::new("Presse-Süd", "mw.ev.presse_süd.température", 1.into());
        let bytes = crate::codec::encode(&e).unwrap();
        assert_eq!(crate::codec::decode::<Envelope>(&bytes).unwrap(), e);
        // A time no calendar holds is refused, not wrapped and not a panic.
        let bytes = crate::codec::encode(&sample()).unwrap();
        let at = 2 + 3 + 16; // MessagePack bin 8 header, version, flags, quality, id.
        for (secs, nanos) in [(i64::MIN, 0), (i64::MAX, 0), (0, 2_000_000_000)] {
            let mut bad = bytes.clone();
            bad[at..at + 8].copy_from_slice(&secs.to_le_bytes());
            bad[at + 8..at + 12].copy_from_slice(&u32::to_le_bytes(nanos));
            let e = crate::codec::decode::<Envelope>(&bad).unwrap_err();
            assert!(e.to_string().contains("receive_time"), "{e}");
            assert!(e.to_string().contains("out of range"), "{e}");
        }
    }

    #[test]
    fn unknown_envelope_fields_are_rejected() {
        let mut v = serde_json::to_value(Envelope::new("s", "x", serde_json::json!(1))).unwrap();
        v["extra"] = serde_json::json!(true);
        assert!(serde_json::from_value::<Envelope>(v).is_err());
    }
}
