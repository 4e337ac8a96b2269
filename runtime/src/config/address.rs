//! Listen addresses in config files: `"ip:port"` strings such as `"0.0.0.0:8080"`.
//!
//! Used through `#[serde(with = "address")]`; errors say what an address looks like.

use std::fmt;
use std::net::SocketAddr;

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Serializer;
use serde::de::{self, Deserializer, Unexpected, Visitor};

/// What an address looks like, shown in errors.
pub const EXPECTED: &str = "an address such as \"0.0.0.0:8080\" or \"127.0.0.1:9090\" (IP and port; port 0 picks a free one)";

struct AddressVisitor;

impl Visitor<'_> for AddressVisitor {
    type Value = SocketAddr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<SocketAddr, E> {
        s.trim()
            .parse()
            .map_err(|_| E::invalid_value(Unexpected::Str(s), &self))
    }
}

/// Deserializes an `ip:port` string.
///
/// # Errors
/// An `invalid value` error when the text is not an address, an `invalid type` error when the
/// value is not a string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    d.deserialize_str(AddressVisitor)
}

/// Serializes an address as `ip:port`.
///
/// # Errors
/// The serializer's error.
pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(a)
}

/// The JSON Schema of an address key (`#[schemars(with = "address::Listen")]`).
#[derive(Debug)]
pub struct Listen;

impl JsonSchema for Listen {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "ListenAddress".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "ip:port", "examples": ["0.0.0.0:8080"] })
    }
}
