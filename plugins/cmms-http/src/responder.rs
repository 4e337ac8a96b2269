//! Request/reply: the methods `Responder::call` answers, their payloads, and the HTTP
//! requests they become.
//!
//! | method | payload | HTTP | answer |
//! |---|---|---|---|
//! | `list_work_orders` | `{"filters": {...}}` (optional) | `GET {base}{paths.work_orders}?filters` | the CMMS's JSON |
//! | `create_work_order` | `{"work_order": {...}, "idempotency_key": "..."}` (key optional) | `POST {base}{paths.work_orders}` | `{"sandbox": false, "status": 201, "work_order": <CMMS JSON>, "idempotency_key": ..., "attempts": 1}` |
//! | `get_asset` | `{"id": "P-1"}` (string or integer) | `GET {base}{paths.asset}` with `{id}` encoded | the CMMS's JSON |
//! | `list_assets` | `{"filters": {...}}` (optional) | `GET {base}{paths.assets}?filters` | the CMMS's JSON |
//!
//! Filter values are strings, numbers or booleans (an array repeats the parameter; `null`
//! leaves it out). In sandbox mode `create_work_order` answers `{"sandbox": true,
//! "would_write": {...}}` without sending anything.

use millwright_plugin_sdk::prelude::*;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client::{HttpCall, encode_segment};
use crate::config::Settings;

/// The methods, as named on the bus (`<prefix>.rpc.<instance>.<method>`).
pub const METHODS: [&str; 4] = [
    "list_work_orders",
    "create_work_order",
    "get_asset",
    "list_assets",
];

/// The payload of `list_work_orders` and `list_assets`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    /// Query parameters.
    #[serde(default)]
    filters: Map<String, Value>,
}

/// The payload of `get_asset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetAssetArgs {
    /// The asset's id.
    id: Value,
}

/// The payload of `create_work_order`, and of every event the sink writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The work order as the CMMS expects it (sent as the JSON body).
    pub work_order: Map<String, Value>,
    /// Sent in the idempotency header; makes the create safe to retry after a network error.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A parsed call.
#[derive(Debug)]
pub enum Request {
    /// A read.
    Read(HttpCall),
    /// A create.
    Create(CreateRequest),
}

fn bad_payload(method: &str, problem: impl std::fmt::Display, shape: &str) -> ConnectorError {
    ConnectorError::Config(format!(
        "{method}: bad payload: {problem}; expected {shape}"
    ))
}

fn args<T: for<'de> Deserialize<'de>>(
    method: &str,
    payload: Value,
    shape: &str,
) -> Result<T, ConnectorError> {
    // No payload at all means no arguments.
    let payload = if payload.is_null() {
        Value::Object(Map::new())
    } else {
        payload
    };
    serde_json::from_value(payload).map_err(|e| bad_payload(method, e, shape))
}

const LIST_SHAPE: &str = "{\"filters\": {\"status\": \"open\", ...}} or nothing";
/// What a create payload looks like, for error messages.
pub const CREATE_SHAPE: &str =
    "{\"work_order\": {...the CMMS's fields...}, \"idempotency_key\": \"optional\"}";
const GET_ASSET_SHAPE: &str = "{\"id\": \"P-1\"}";

/// Filters as query parameters.
fn query(
    method: &str,
    filters: Map<String, Value>,
) -> Result<Vec<(String, String)>, ConnectorError> {
    let mut out = Vec::new();
    for (key, value) in filters {
        let values = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        for v in values {
            let text = match v {
                Value::Null => continue,
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(bad_payload(
                        method,
                        format!(
                            "filter {key:?} is nested; filters are strings, numbers, booleans or arrays of them"
                        ),
                        LIST_SHAPE,
                    ));
                }
            };
            out.push((key.clone(), text));
        }
    }
    Ok(out)
}

fn get(op: &'static str, url: String, query: Vec<(String, String)>) -> HttpCall {
    HttpCall {
        op,
        method: Method::GET,
        url,
        query,
        body: None,
        idempotency_key: None,
        idempotency: Idempotency::Idempotent,
    }
}

/// Parses `method` and its `payload`.
///
/// # Errors
/// [`ConnectorError::Config`] naming the unknown method (and the known ones) or what is wrong
/// with the payload (and its expected shape).
pub fn parse(settings: &Settings, method: &str, payload: Value) -> Result<Request, ConnectorError> {
    let base = &settings.base;
    match method {
        "list_work_orders" => {
            let a: ListArgs = args(method, payload, LIST_SHAPE)?;
            Ok(Request::Read(get(
                "list_work_orders",
                format!("{base}{}", settings.paths.work_orders),
                query(method, a.filters)?,
            )))
        }
        "list_assets" => {
            let a: ListArgs = args(method, payload, LIST_SHAPE)?;
            Ok(Request::Read(get(
                "list_assets",
                format!("{base}{}", settings.paths.assets),
                query(method, a.filters)?,
            )))
        }
        "get_asset" => {
            let a: GetAssetArgs = args(method, payload, GET_ASSET_SHAPE)?;
            let id = match a.id {
                Value::String(s) if !s.is_empty() => s,
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(bad_payload(
                        method,
                        format!("id {other} is not a non-empty string or a number"),
                        GET_ASSET_SHAPE,
                    ));
                }
            };
            let path = settings.paths.asset.replace("{id}", &encode_segment(&id));
            Ok(Request::Read(get(
                "get_asset",
                format!("{base}{path}"),
                Vec::new(),
            )))
        }
        "create_work_order" => parse_create(method, payload).map(Request::Create),
        other => Err(ConnectorError::Config(format!(
            "unknown method {other:?}; cmms-http answers {}",
            METHODS.join(", ")
        ))),
    }
}

/// Parses a create payload (a call's or a sink event's).
///
/// # Errors
/// [`ConnectorError::Config`] saying what is wrong, prefixed by `what`.
pub fn parse_create(what: &str, payload: Value) -> Result<CreateRequest, ConnectorError> {
    let r: CreateRequest =
        serde_json::from_value(payload).map_err(|e| bad_payload(what, e, CREATE_SHAPE))?;
    if r.idempotency_key
        .as_deref()
        .is_some_and(|k| k.is_empty() || reqwest::header::HeaderValue::from_str(k).is_err())
    {
        return Err(bad_payload(
            what,
            "idempotency_key is empty or not valid in an HTTP header",
            CREATE_SHAPE,
        ));
    }
    Ok(r)
}

/// The `POST` that creates `request`'s work order, with `key` as its idempotency key.
pub fn create_call(settings: &Settings, request: &CreateRequest, key: Option<String>) -> HttpCall {
    HttpCall {
        op: "create_work_order",
        method: Method::POST,
        url: format!("{}{}", settings.base, settings.paths.work_orders),
        query: Vec::new(),
        body: Some(Value::Object(request.work_order.clone())),
        idempotency: if key.is_some() {
            Idempotency::Idempotent
        } else {
            Idempotency::NonIdempotent
        },
        idempotency_key: key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CmmsConfig;

    fn settings() -> Settings {
        let c: CmmsConfig =
            serde_json::from_value(serde_json::json!({"base_url": "http://h/api/"})).unwrap();
        Settings::from_config(&c).unwrap()
    }

    #[test]
    fn methods_become_requests() {
        let s = settings();
        let Request::Read(c) = parse(
            &s,
            "list_work_orders",
            serde_json::json!({"filters": {"status": "open", "priority": [1, 2], "x": null}}),
        )
        .unwrap() else {
            panic!("a read")
        };
        assert_eq!(c.url, "http://h/api/work_orders");
        assert_eq!(
            c.query,
            [
                ("priority".to_owned(), "1".to_owned()),
                ("priority".to_owned(), "2".to_owned()),
                ("status".to_owned(), "open".to_owned())
            ]
        );
        let Request::Read(c) = parse(&s, "get_asset", serde_json::json!({"id": "a/b"})).unwrap()
        else {
            panic!("a read")
        };
        assert_eq!(c.url, "http://h/api/assets/a%2Fb");
        assert!(matches!(
            parse(&s, "list_assets", Value::Null).unwrap(),
            Request::Read(HttpCall { ref url, .. }) if url == "http://h/api/assets"
        ));
        let Request::Create(r) = parse(
            &s,
            "create_work_order",
            serde_json::json!({"work_order": {"title": "t"}}),
        )
        .unwrap() else {
            panic!("a create")
        };
        let post = create_call(&s, &r, None);
        assert_eq!(post.idempotency, Idempotency::NonIdempotent);
        let post = create_call(&s, &r, Some("k1".into()));
        assert_eq!(post.idempotency, Idempotency::Idempotent);
    }

    #[test]
    fn unknown_methods_and_bad_payloads_say_which() {
        let s = settings();
        for (method, payload, needles) in [
            (
                "delete_everything",
                Value::Null,
                &["unknown method \"delete_everything\"", "get_asset"][..],
            ),
            (
                "get_asset",
                serde_json::json!({}),
                &["get_asset: bad payload", "missing field `id`", "{\"id\""],
            ),
            (
                "get_asset",
                serde_json::json!({"id": ""}),
                &["not a non-empty string"],
            ),
            (
                "list_assets",
                serde_json::json!({"filter": {}}),
                &["list_assets", "unknown field `filter`"],
            ),
            (
                "list_assets",
                serde_json::json!({"filters": {"a": {"b": 1}}}),
                &["filter \"a\" is nested"],
            ),
            (
                "create_work_order",
                serde_json::json!({"title": "t"}),
                &["create_work_order", "unknown field `title`", "work_order"],
            ),
            (
                "create_work_order",
                serde_json::json!({"work_order": 3}),
                &["create_work_order", "invalid type"],
            ),
            (
                "create_work_order",
                serde_json::json!({"work_order": {}, "idempotency_key": "a\nb"}),
                &["idempotency_key"],
            ),
        ] {
            let e = parse(&s, method, payload).unwrap_err();
            assert_eq!(e.kind(), "config");
            for n in needles {
                assert!(e.to_string().contains(n), "{e} lacks {n:?}");
            }
        }
    }
}
