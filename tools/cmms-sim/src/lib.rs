//! `cmms-sim`: a small in-memory CMMS (computerised maintenance management system) with the
//! REST API the `cmms-http` connector speaks by default, for the demo and for tests that want
//! a whole CMMS rather than a scripted reply.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/api/work_orders` | every work order, filtered by any query parameter that matches a field (`?status=open`) |
//! | POST | `/api/work_orders` | 201 with the stored work order (`id` `WO-<n>`, `status` `open` unless given, `created_at`) |
//! | GET | `/api/assets` | every asset |
//! | GET | `/api/assets/{id}` | one asset, 404 when unknown |
//!
//! A POST with an `Idempotency-Key` header seen before answers the work order it created then,
//! without storing another. [`CmmsSim::posts`] counts the POSTs received (a sandbox test
//! asserts it stays 0).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct Store {
    work_orders: Vec<Value>,
    by_key: std::collections::HashMap<String, usize>,
    assets: Vec<Value>,
}

#[derive(Debug, Clone, Default)]
struct Shared {
    store: Arc<Mutex<Store>>,
    posts: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

/// A running CMMS; stops when dropped.
#[derive(Debug)]
pub struct CmmsSim {
    addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

impl CmmsSim {
    /// Serves on `addr` (port 0 picks one) with one asset per name in `assets`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr, assets: &[&str]) -> std::io::Result<CmmsSim> {
        let shared = Shared::default();
        shared.store.lock().assets = assets
            .iter()
            .map(|a| json!({ "id": a, "name": a, "kind": "machine", "location": "hall 1" }))
            .collect();
        let app = Router::new()
            .route(
                "/api/work_orders",
                get(list_work_orders).post(create_work_order),
            )
            .route("/api/assets", get(list_assets))
            .route("/api/assets/{id}", get(get_asset))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(CmmsSim { addr, shared, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL for the connector's `base_url` (`http://127.0.0.1:8089/api`).
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Every work order stored, in order.
    pub fn work_orders(&self) -> Vec<Value> {
        self.shared.store.lock().work_orders.clone()
    }

    /// POSTs received (whether or not they stored a work order).
    pub fn posts(&self) -> u64 {
        self.shared.posts.load(Ordering::SeqCst)
    }

    /// Requests received.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for CmmsSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn list_work_orders(
    State(s): State<Shared>,
    Query(filters): Query<std::collections::HashMap<String, String>>,
) -> Json<Vec<Value>> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let store = s.store.lock();
    Json(
        store
            .work_orders
            .iter()
            .filter(|wo| {
                filters.iter().all(|(k, v)| match &wo[k] {
                    Value::String(s) => s == v,
                    other => serde_json::from_str::<Value>(v).is_ok_and(|parsed| parsed == *other),
                })
            })
            .cloned()
            .collect(),
    )
}

async fn create_work_order(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    s.posts.fetch_add(1, Ordering::SeqCst);
    let Value::Object(mut fields) = body else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "a work order is a JSON object" })),
        )
            .into_response();
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut store = s.store.lock();
    if let Some(i) = key.as_ref().and_then(|k| store.by_key.get(k)) {
        return (StatusCode::OK, Json(store.work_orders[*i].clone())).into_response();
    }
    let n = store.work_orders.len() + 1;
    fields.insert("id".into(), json!(format!("WO-{n}")));
    fields.entry("status").or_insert(json!("open"));
    fields.insert("created_at".into(), json!(chrono::Utc::now()));
    let wo = Value::Object(fields);
    store.work_orders.push(wo.clone());
    if let Some(k) = key {
        store.by_key.insert(k, n - 1);
    }
    (StatusCode::CREATED, Json(wo)).into_response()
}

async fn list_assets(State(s): State<Shared>) -> Json<Vec<Value>> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    Json(s.store.lock().assets.clone())
}

async fn get_asset(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let store = s.store.lock();
    match store.assets.iter().find(|a| a["id"] == id.as_str()) {
        Some(a) => Json(a.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no asset {id:?}") })),
        )
            .into_response(),
    }
}
