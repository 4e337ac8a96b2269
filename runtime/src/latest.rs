//! The latest value of every tag of this node's sources, for the status page (`GET /values`).
//!
//! The node subscribes to `<prefix>.ev.<source>.>` for each configured source (never to every
//! event on the bus, which on a shared NATS cluster would be everybody's data) and keeps the
//! last envelope per subject. The table is bounded by the config (sources x tags).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use millwright_bus::{Bus, BusError};
use millwright_kernel::supervisor::task::TaskLoop;
use millwright_plugin_sdk::event::Envelope;
use parking_lot::RwLock;
use serde::Serialize;

/// The latest value seen on one subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatestValue {
    /// The subject (`mw.ev.press1.temperature`).
    pub subject: String,
    /// The source (`press1`).
    pub source: String,
    /// The value.
    pub value: serde_json::Value,
    /// When it was received.
    pub receive_time: DateTime<Utc>,
    /// How many events arrived on this subject.
    pub count: u64,
}

/// The shared table. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LatestValues {
    inner: Arc<RwLock<BTreeMap<String, LatestValue>>>,
}

impl LatestValues {
    /// Every subject's latest value, ordered by subject.
    pub fn snapshot(&self) -> Vec<LatestValue> {
        self.inner.read().values().cloned().collect()
    }

    fn record(&self, env: Envelope) {
        let mut map = self.inner.write();
        let count = map.get(&env.subject).map_or(0, |v| v.count) + 1;
        map.insert(
            env.subject.clone(),
            LatestValue {
                subject: env.subject,
                source: env.source,
                value: env.payload,
                receive_time: env.receive_time,
                count,
            },
        );
    }

    /// Subscribes once to `subject` (the node's `<prefix>.ev.>`: one subscription whatever the
    /// number of connectors) and returns the loop that records every envelope whose source is
    /// one of `sources` (the node's connectors, so the table stays bounded whatever else is
    /// published there); the node runs it as its `latest` task.
    ///
    /// # Errors
    /// The bus' error when the subscription cannot be made.
    pub async fn follow(
        &self,
        bus: &Bus,
        subject: &str,
        sources: Arc<HashSet<String>>,
    ) -> Result<TaskLoop, BusError> {
        let mut sub = bus.subscribe(subject).await?;
        let table = self.clone();
        Ok(Box::pin(async move {
            while let Some(msg) = sub.next().await {
                if let Ok(env) = Envelope::from_json_slice(&msg.payload)
                    && sources.contains(&env.source)
                {
                    table.record(env);
                }
            }
            Err("latest values: the bus closed its subscription".to_owned())
        }))
    }
}
