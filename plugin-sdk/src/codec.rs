//! The one encoding of the messages that cross a plugin boundary: MessagePack (`rmp-serde`),
//! structs as maps with their field names.
//!
//! Both transports and both sides use it, through [`encode`], [`encode_into`] and [`decode`]
//! only: the in-process ABI's request and response buffers and its log and metric callbacks,
//! and every out-of-process frame after the handshake. What is read *before* the versions are
//! known stays JSON, so that any host and any plugin can read it and refuse a mismatch with a
//! clear message: the `cdylib`'s manifest and the stdio `Hello`/`Refused` handshake
//! ([`stdio::Handshake`](crate::stdio::Handshake)).
//!
//! Why MessagePack: it is self-describing, so the `serde_json::Value` payloads (which need
//! `deserialize_any`) round-trip, unlike postcard or bincode. Structs are maps (field names
//! included) so that `#[serde(default)]` and `skip_serializing_if` fields, and fields added by
//! a later ABI minor, work as they do in JSON. The format is not human-readable
//! (`is_human_readable()` is false), so an [`Envelope`](crate::event::Envelope) is one packed
//! record here (a `bin`: its id as 16 bytes, its times as integers, its strings length-prefixed,
//! its payload MessagePack), while its JSON (the bus, the disk queue, the HTTP API) is
//! unchanged.
//!
//! Internally tagged enums (`#[serde(tag = "...")]`) must not be used in these messages: serde
//! buffers their content and then deserializes it as human-readable, which breaks every type
//! that uses `is_human_readable`. The protocol's enums are externally tagged.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be written as MessagePack.
    #[error("cannot encode a plugin message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes are not the MessagePack of the expected message.
    #[error("cannot decode a plugin message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// Appends the encoding of `value` to `buf` (for a frame with a header, or a reused buffer).
///
/// # Errors
/// [`CodecError::Encode`] when a value refuses to serialize (a map with non-string keys is
/// fine here; a custom `Serialize` that fails is not).
pub fn encode_into<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<(), CodecError> {
    let mut ser = rmp_serde::Serializer::new(buf).with_struct_map();
    value.serialize(&mut ser)?;
    Ok(())
}

/// The encoding of `value`.
///
/// # Errors
/// As [`encode_into`].
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(256);
    encode_into(&mut buf, value)?;
    Ok(buf)
}

/// Decodes one message.
///
/// # Errors
/// [`CodecError::Decode`] when `bytes` are not the encoding of a `T` (JSON from a plugin of
/// ABI 1 is one such case: a host never gets that far, the version checks come first).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_not_json_and_not_human_readable() {
        struct Check(std::cell::Cell<Option<bool>>);
        impl Serialize for Check {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.set(Some(s.is_human_readable()));
                s.serialize_unit()
            }
        }
        let check = Check(std::cell::Cell::new(None));
        encode(&check).unwrap();
        assert_eq!(check.0.get(), Some(false));
        let bytes = encode(&serde_json::json!({"a": 1})).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_err());
    }

    #[test]
    fn json_bytes_do_not_decode() {
        let e = decode::<crate::protocol::Response>(br#"{"result":"done"}"#).unwrap_err();
        assert!(e.to_string().contains("cannot decode"), "{e}");
    }
}
