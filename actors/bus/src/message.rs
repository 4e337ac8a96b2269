//! Bus messages and their headers.
//!
//! [`Message`] is the same type on both backends. [`Headers`] are multi-valued (a name may
//! carry several values, kept in insertion order) and wrap async-nats' `HeaderMap`, so the
//! NATS backend hands them to the client without conversion. Unlike `HeaderMap`, whose
//! inserts panic on a bad name, every fallible operation here returns a [`HeaderError`].
//!
//! Values are trimmed of surrounding whitespace on insert, because NATS trims them on the
//! wire: a value reads back the same from either backend.

use std::fmt;
use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

/// The header carrying an event's id, which JetStream uses to de-duplicate.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// A header name or value that NATS cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The name is empty, not printable ASCII, or contains `:`.
    #[error(
        "invalid header name {name:?}: use printable ASCII without ':' (such as \"X-Trace-Id\")"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The value contains a line break.
    #[error("invalid value for header {name:?}: a header value cannot contain '\\r' or '\\n'")]
    InvalidValue {
        /// The header whose value was rejected.
        name: String,
    },
}

/// Multi-valued message headers.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(HeaderMap);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut entries: Vec<(&str, Vec<&str>)> = self
            .0
            .iter()
            .map(|(k, vs)| (k.as_ref(), vs.iter().map(HeaderValue::as_str).collect()))
            .collect();
        entries.sort_unstable();
        f.debug_map().entries(entries).finish()
    }
}

fn parse_name(name: &str) -> Result<HeaderName, HeaderError> {
    if name.is_empty() {
        return Err(HeaderError::InvalidName {
            name: String::new(),
        });
    }
    HeaderName::from_str(name).map_err(|_| HeaderError::InvalidName {
        name: name.to_owned(),
    })
}

fn parse_value(name: &str, value: &str) -> Result<HeaderValue, HeaderError> {
    HeaderValue::from_str(value.trim()).map_err(|_| HeaderError::InvalidValue {
        name: name.to_owned(),
    })
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to the single value `value`, replacing any values it had.
    ///
    /// # Errors
    /// [`HeaderError`] when the name or value cannot be carried by NATS.
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        let v = parse_value(name, value)?;
        self.0.insert(parse_name(name)?, v);
        Ok(())
    }

    /// Adds `value` to the values of `name`, after the existing ones.
    ///
    /// # Errors
    /// [`HeaderError`] when the name or value cannot be carried by NATS.
    pub fn append(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        let v = parse_value(name, value)?;
        self.0.append(parse_name(name)?, v);
        Ok(())
    }

    /// Builder form of [`append`](Self::append).
    ///
    /// # Errors
    /// [`HeaderError`] when the name or value cannot be carried by NATS.
    pub fn with(mut self, name: &str, value: &str) -> Result<Self, HeaderError> {
        self.append(name, value)?;
        Ok(self)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = HeaderName::from_str(name).ok()?;
        self.0.get(name).map(HeaderValue::as_str)
    }

    /// Every value of `name`, in insertion order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let values: Vec<&'a str> = match HeaderName::from_str(name) {
            Ok(n) => self.0.get_all(n).map(HeaderValue::as_str).collect(),
            Err(_) => Vec::new(),
        };
        values.into_iter()
    }

    /// Every `(name, value)` pair; names in no particular order, each name's values in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_ref(), v.as_str())))
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many distinct names there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Roughly how many bytes the headers take on the wire (NATS counts them against the
    /// maximum payload).
    pub(crate) fn wire_len(&self) -> usize {
        if self.0.is_empty() {
            return 0;
        }
        // "NATS/1.0\r\n" ... "\r\n", and "name: value\r\n" per value.
        12 + self
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
    }

    /// The async-nats form (no conversion cost).
    pub fn into_nats(self) -> HeaderMap {
        self.0
    }

    /// The async-nats form, borrowed.
    pub fn as_nats(&self) -> &HeaderMap {
        &self.0
    }
}

impl From<HeaderMap> for Headers {
    fn from(map: HeaderMap) -> Self {
        Self(map)
    }
}

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The (literal) subject it was published on.
    pub subject: String,
    /// Where a reply goes, when the message is a request.
    pub reply: Option<String>,
    /// Headers; empty for most messages.
    pub headers: Headers,
    /// The body.
    pub payload: Bytes,
}

impl Message {
    /// A message without headers or reply subject.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: subject.into(),
            reply: None,
            headers: Headers::new(),
            payload: payload.into(),
        }
    }

    /// Replaces the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the reply subject.
    pub fn with_reply(mut self, reply: impl Into<String>) -> Self {
        self.reply = Some(reply.into());
        self
    }

    /// The bytes NATS counts against its maximum payload: body plus headers.
    pub(crate) fn wire_len(&self) -> usize {
        self.payload.len() + self.headers.wire_len()
    }
}

impl From<async_nats::Message> for Message {
    fn from(m: async_nats::Message) -> Self {
        Self {
            subject: m.subject.into_string(),
            reply: m.reply.map(async_nats::Subject::into_string),
            headers: m.headers.map(Headers).unwrap_or_default(),
            payload: m.payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_multi_valued_and_ordered_per_name() {
        let mut h = Headers::new();
        h.append("X-A", "1").unwrap();
        h.append("X-A", "2").unwrap();
        h.insert("X-B", " spaced ").unwrap();
        assert_eq!(h.get("X-A"), Some("1"));
        assert_eq!(h.get_all("X-A").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(
            h.get("X-B"),
            Some("spaced"),
            "values are trimmed like NATS does"
        );
        assert_eq!(h.get("missing"), None);
        assert_eq!(h.get("bad:name"), None);
        assert_eq!(h.get_all("bad name").count(), 0);
        assert_eq!(h.len(), 2);
        h.insert("X-A", "3").unwrap();
        assert_eq!(h.get_all("X-A").collect::<Vec<_>>(), ["3"]);
        let mut pairs: Vec<_> = h.iter().collect();
        pairs.sort_unstable();
        assert_eq!(pairs, [("X-A", "3"), ("X-B", "spaced")]);
    }

    #[test]
    fn bad_header_names_and_values_are_errors_not_panics() {
        let mut h = Headers::new();
        for bad in ["", "a:b", "a b", "é", "a\nb"] {
            assert_eq!(
                h.insert(bad, "v"),
                Err(HeaderError::InvalidName { name: bad.into() }),
                "{bad:?}"
            );
        }
        assert!(matches!(
            h.append("X", "a\r\nb"),
            Err(HeaderError::InvalidValue { .. })
        ));
        assert!(h.is_empty());
    }

    #[test]
    fn equality_ignores_name_order() {
        let a = Headers::new()
            .with("A", "1")
            .unwrap()
            .with("B", "2")
            .unwrap();
        let b = Headers::new()
            .with("B", "2")
            .unwrap()
            .with("A", "1")
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), r#"{"A": ["1"], "B": ["2"]}"#);
    }
}
