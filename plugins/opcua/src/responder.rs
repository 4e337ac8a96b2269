//! Request/reply: the `write`, `read` and `browse` call methods (subject
//! `<prefix>.rpc.<instance>.<method>` on the node's bus).
//!
//! - `write` `{"node": "ns=2;s=Press.Setpoint", "value": 55.0, "type"?: "double"}` →
//!   `{"node", "status", "status_code"}`. Without `type` the value is converted to the node's
//!   current value type (read first), so `5` writes an Int32 to an Int32 node.
//! - `read` `{"nodes": ["ns=2;s=Press.Temperature", ...]}` → `{"values": [{"node", "value",
//!   "status", "status_code", "quality", "source_time", "server_time"}]}`.
//! - `browse` `{"node"?: "i=85"}` (default: the Objects folder) → `{"node", "references":
//!   [{"node_id", "browse_name", "display_name", "node_class", "reference_type_id",
//!   "is_forward"}]}` (hierarchical references, forward, at most 1,000).

use std::time::Duration;

use millwright_plugin_sdk::prelude::*;
use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, DataValue, NodeId, ReferenceTypeId,
    TimestampsToReturn, Variant, WriteValue,
};
use serde_json::{Value, json};

use crate::source::{quality, to_json};

fn bad(method: &str, msg: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Config(format!("call {method}: {msg}"))
}

fn node_arg(method: &str, v: Option<&Value>, key: &str) -> Result<NodeId, ConnectorError> {
    let text = v.and_then(Value::as_str).ok_or_else(|| {
        bad(
            method,
            format!(
                "\"{key}\" is missing or not a string (expected e.g. \"ns=2;s=Press.Setpoint\")"
            ),
        )
    })?;
    text.parse()
        .map_err(|_| bad(method, format!("{key} {text:?} is not a node id")))
}

fn transient(what: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Transient(format!("{what}: {e}"))
}

/// The type names `write` accepts, as the variant's name.
fn type_name(v: &Variant) -> Option<&'static str> {
    Some(match v {
        Variant::Boolean(_) => "boolean",
        Variant::SByte(_) => "sbyte",
        Variant::Byte(_) => "byte",
        Variant::Int16(_) => "int16",
        Variant::UInt16(_) => "uint16",
        Variant::Int32(_) => "int32",
        Variant::UInt32(_) => "uint32",
        Variant::Int64(_) => "int64",
        Variant::UInt64(_) => "uint64",
        Variant::Float(_) => "float",
        Variant::Double(_) => "double",
        Variant::String(_) => "string",
        _ => return None,
    })
}

/// Converts a JSON value to a variant of type `ty`.
///
/// # Errors
/// A message naming the value and the type.
pub fn to_variant(value: &Value, ty: &str) -> Result<Variant, String> {
    let fail = || format!("{value} cannot be written as {ty}");
    let int = || value.as_i64().ok_or_else(fail);
    let uint = || value.as_u64().ok_or_else(fail);
    let float = || value.as_f64().ok_or_else(fail);
    Ok(match ty {
        "boolean" => Variant::Boolean(value.as_bool().ok_or_else(fail)?),
        "sbyte" => Variant::SByte(i8::try_from(int()?).map_err(|_| fail())?),
        "byte" => Variant::Byte(u8::try_from(uint()?).map_err(|_| fail())?),
        "int16" => Variant::Int16(i16::try_from(int()?).map_err(|_| fail())?),
        "uint16" => Variant::UInt16(u16::try_from(uint()?).map_err(|_| fail())?),
        "int32" => Variant::Int32(i32::try_from(int()?).map_err(|_| fail())?),
        "uint32" => Variant::UInt32(u32::try_from(uint()?).map_err(|_| fail())?),
        "int64" => Variant::Int64(int()?),
        "uint64" => Variant::UInt64(uint()?),
        "float" => Variant::Float(float()? as f32),
        "double" => Variant::Double(float()?),
        "string" => Variant::String(value.as_str().ok_or_else(fail)?.into()),
        other => {
            return Err(format!(
                "type {other:?} is not supported (use boolean, sbyte, byte, int16, uint16, int32, uint32, int64, uint64, float, double or string)"
            ));
        }
    })
}

fn infer(value: &Value) -> Option<&'static str> {
    match value {
        Value::Bool(_) => Some("boolean"),
        Value::Number(n) if n.is_i64() => Some("int64"),
        Value::Number(_) => Some("double"),
        Value::String(_) => Some("string"),
        _ => None,
    }
}

fn data_value_json(node: &NodeId, dv: &DataValue) -> Value {
    let status = dv.status();
    json!({
        "node": node.to_string(),
        "value": dv.value.as_ref().map_or(Value::Null, to_json),
        "status": status.to_string(),
        "status_code": status.bits(),
        "quality": quality(status),
        "source_time": dv.source_timestamp.map(|t| t.as_chrono().to_rfc3339()),
        "server_time": dv.server_timestamp.map(|t| t.as_chrono().to_rfc3339()),
    })
}

async fn read_values(
    session: &Session,
    nodes: &[NodeId],
    timeout: Duration,
) -> Result<Vec<DataValue>, ConnectorError> {
    let ids = crate::source::value_reads(nodes);
    tokio::time::timeout(timeout, session.read(&ids, TimestampsToReturn::Both, 0.0))
        .await
        .map_err(|_| transient("Read", "timed out"))?
        .map_err(|e| transient("Read", e))
}

/// Answers one call.
///
/// # Errors
/// `Config` for an unknown method or a bad payload; `Transient` when the service call fails.
pub async fn call(
    session: &Session,
    method: &str,
    payload: Value,
    timeout: Duration,
) -> Result<Value, ConnectorError> {
    match method {
        "write" => {
            let node = node_arg(method, payload.get("node"), "node")?;
            let value = payload
                .get("value")
                .ok_or_else(|| bad(method, "\"value\" is missing"))?;
            let ty = match payload.get("type").and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                None => {
                    let current =
                        read_values(session, std::slice::from_ref(&node), timeout).await?;
                    current
                        .first()
                        .and_then(|dv| dv.value.as_ref())
                        .and_then(type_name)
                        .or_else(|| infer(value))
                        .ok_or_else(|| {
                            bad(
                                method,
                                format!("cannot tell the type of {value}; give \"type\""),
                            )
                        })?
                        .to_owned()
                }
            };
            let variant = to_variant(value, &ty).map_err(|m| bad(method, m))?;
            let write = WriteValue {
                node_id: node.clone(),
                attribute_id: AttributeId::Value as u32,
                value: DataValue {
                    value: Some(variant),
                    ..Default::default()
                },
                ..Default::default()
            };
            let results = tokio::time::timeout(timeout, session.write(&[write]))
                .await
                .map_err(|_| transient("Write", "timed out"))?
                .map_err(|e| transient("Write", e))?;
            let status = results.first().copied().unwrap_or_default();
            Ok(json!({
                "node": node.to_string(),
                "status": status.to_string(),
                "status_code": status.bits(),
            }))
        }
        "read" => {
            let list = payload
                .get("nodes")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(method, "\"nodes\" is missing or not an array of node ids"))?;
            let nodes = list
                .iter()
                .map(|v| node_arg(method, Some(v), "nodes[]"))
                .collect::<Result<Vec<_>, _>>()?;
            let values = read_values(session, &nodes, timeout).await?;
            Ok(json!({
                "values": nodes.iter().zip(&values).map(|(n, dv)| data_value_json(n, dv)).collect::<Vec<_>>()
            }))
        }
        "browse" => {
            let node = match payload.get("node") {
                None | Some(Value::Null) => NodeId::from(opcua::types::ObjectId::ObjectsFolder),
                v => node_arg(method, v, "node")?,
            };
            let desc = BrowseDescription {
                node_id: node.clone(),
                browse_direction: BrowseDirection::Forward,
                reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                include_subtypes: true,
                node_class_mask: 0,
                result_mask: 0x3f,
            };
            let results = tokio::time::timeout(timeout, session.browse(&[desc], 1000, None))
                .await
                .map_err(|_| transient("Browse", "timed out"))?
                .map_err(|e| transient("Browse", e))?;
            let result = results
                .into_iter()
                .next()
                .ok_or_else(|| transient("Browse", "no result"))?;
            if !result.status_code.is_good() {
                return Err(bad(
                    method,
                    format!("{node} cannot be browsed: {}", result.status_code),
                ));
            }
            let refs: Vec<Value> = result
                .references
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    json!({
                        "node_id": r.node_id.node_id.to_string(),
                        "browse_name": format!("{}:{}", r.browse_name.namespace_index, r.browse_name.name),
                        "display_name": r.display_name.text.to_string(),
                        "node_class": format!("{:?}", r.node_class),
                        "reference_type_id": r.reference_type_id.to_string(),
                        "is_forward": r.is_forward,
                    })
                })
                .collect();
            Ok(json!({"node": node.to_string(), "references": refs}))
        }
        other => Err(ConnectorError::Config(format!(
            "unknown call method {other:?} (the opcua connector answers write, read and browse)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_convert_to_the_requested_type_or_say_why_not() {
        assert_eq!(to_variant(&json!(5), "int32").unwrap(), Variant::Int32(5));
        assert_eq!(
            to_variant(&json!(1.5), "double").unwrap(),
            Variant::Double(1.5)
        );
        assert!(
            to_variant(&json!(300), "byte")
                .unwrap_err()
                .contains("byte")
        );
        assert!(
            to_variant(&json!(1), "decimal")
                .unwrap_err()
                .contains("not supported")
        );
    }
}
