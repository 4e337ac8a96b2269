//! The source side: node resolution, the subscription (or polling reads) and the buffer of
//! samples that `read_batch` drains.
//!
//! Every sample becomes an [`Envelope`] on `<prefix>.ev.<instance>.<tag>` whose payload is the
//! value as JSON, with the full 32-bit status code, a [`Quality`] from its severity, and the
//! source, server and receive times.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use millwright_plugin_sdk::prelude::*;
use opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore, Session};
use opcua::types::{
    AttributeId, BrowsePath, DataChangeFilter, DataChangeNotification, DataChangeTrigger,
    DataValue, DeadbandType, ExtensionObject, MonitoredItemCreateRequest, MonitoringMode, NodeId,
    NotificationMessage, ObjectId, ReadValueId, StatusCode, TimestampsToReturn, Variant,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::{NodeRef, OpcUaConfig};

/// Samples received and not yet read, shared with the subscription callback.
#[derive(Debug)]
pub struct Samples {
    queue: Mutex<VecDeque<Envelope>>,
    notify: Notify,
    cap: usize,
    shed: AtomicU64,
    /// When the last publish response (data or keep-alive) arrived.
    last_publish: Mutex<Instant>,
}

impl Samples {
    /// An empty buffer holding at most `cap` samples.
    pub fn new(cap: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            cap: cap.max(1),
            shed: AtomicU64::new(0),
            last_publish: Mutex::new(Instant::now()),
        }
    }

    /// Adds samples, dropping the oldest past the cap.
    pub fn push(&self, items: impl IntoIterator<Item = Envelope>) {
        let mut q = self.queue.lock();
        let mut shed = 0;
        for e in items {
            if q.len() >= self.cap {
                q.pop_front();
                shed += 1;
            }
            q.push_back(e);
        }
        drop(q);
        if shed > 0 {
            self.shed.fetch_add(shed, Ordering::Relaxed);
        }
        self.notify.notify_one();
    }

    /// Puts samples read but not acknowledged back at the front, in order.
    pub fn requeue(&self, items: Vec<Envelope>) {
        let mut q = self.queue.lock();
        for e in items.into_iter().rev() {
            q.push_front(e);
        }
    }

    /// Takes up to `max` samples.
    pub fn take(&self, max: usize) -> Vec<Envelope> {
        let mut q = self.queue.lock();
        let n = max.min(q.len());
        q.drain(..n).collect()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.queue.lock().is_empty()
    }

    /// Waits until samples may be there (or `wait` passes).
    pub async fn wait(&self, wait: Duration) {
        if !self.is_empty() {
            return;
        }
        let _ = tokio::time::timeout(wait, self.notify.notified()).await;
    }

    /// Samples dropped at the cap since the last call.
    pub fn take_shed(&self) -> u64 {
        self.shed.swap(0, Ordering::Relaxed)
    }

    /// Records a publish response.
    pub fn touch(&self) {
        *self.last_publish.lock() = Instant::now();
    }

    /// How long since the last publish response.
    pub fn since_publish(&self) -> Duration {
        self.last_publish.lock().elapsed()
    }
}

/// What a sample needs to become an envelope.
#[derive(Debug, Clone)]
pub struct Tags {
    /// The instance (the envelope's source).
    pub source: Arc<str>,
    /// The subject per node, in config order.
    pub subjects: Arc<Vec<String>>,
}

/// Maps an OPC-UA status code to a coarse quality by its severity bits.
pub fn quality(status: StatusCode) -> Quality {
    if status.is_good() {
        Quality::Good
    } else if status.is_uncertain() {
        Quality::Uncertain
    } else {
        Quality::Bad
    }
}

/// An OPC-UA value as JSON: numbers, booleans and strings as themselves, arrays as arrays,
/// date-times as RFC 3339, byte strings as hex, anything else as its text form.
pub fn to_json(v: &Variant) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Variant::Empty => J::Null,
        Variant::Boolean(b) => J::Bool(*b),
        Variant::SByte(x) => (*x).into(),
        Variant::Byte(x) => (*x).into(),
        Variant::Int16(x) => (*x).into(),
        Variant::UInt16(x) => (*x).into(),
        Variant::Int32(x) => (*x).into(),
        Variant::UInt32(x) => (*x).into(),
        Variant::Int64(x) => (*x).into(),
        Variant::UInt64(x) => (*x).into(),
        Variant::Float(x) => serde_json::Number::from_f64(f64::from(*x)).map_or(J::Null, J::Number),
        Variant::Double(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Variant::String(s) => s.value().clone().map_or(J::Null, J::String),
        Variant::DateTime(d) => J::String(d.as_chrono().to_rfc3339()),
        Variant::StatusCode(s) => s.bits().into(),
        Variant::ByteString(b) => b.value.as_ref().map_or(J::Null, |b| {
            J::String(b.iter().map(|x| format!("{x:02x}")).collect())
        }),
        Variant::LocalizedText(t) => J::String(t.text.to_string()),
        Variant::QualifiedName(q) => J::String(q.name.to_string()),
        Variant::NodeId(n) => J::String(n.to_string()),
        Variant::Array(a) => J::Array(a.values.iter().map(to_json).collect()),
        other => J::String(format!("{other}")),
    }
}

/// A data value as an envelope on `subject`.
pub fn envelope(source: &str, subject: &str, dv: &DataValue) -> Envelope {
    let status = dv.status.unwrap_or(StatusCode::Good);
    let mut e = Envelope::new(
        source,
        subject,
        dv.value.as_ref().map_or(serde_json::Value::Null, to_json),
    )
    .with_quality(quality(status));
    e.status_code = Some(status.bits());
    e.source_time = dv.source_timestamp.map(|t| t.as_chrono());
    e.server_time = dv.server_timestamp.map(|t| t.as_chrono());
    e.receive_time = Utc::now();
    e
}

/// The subscription callback: data changes become envelopes; every publish response (data
/// or keep-alive) feeds the watchdog.
#[derive(Debug)]
pub struct Feed {
    /// Where samples go.
    pub samples: Arc<Samples>,
    /// Subjects by client handle - 1.
    pub tags: Tags,
}

impl OnSubscriptionNotificationCore for Feed {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        self.samples.touch();
        let Some(data) = notification.notification_data else {
            return;
        };
        let mut out = Vec::new();
        for obj in data {
            let Some(change) = obj.into_inner_as::<DataChangeNotification>() else {
                continue;
            };
            for item in change.monitored_items.into_iter().flatten() {
                let idx = item.client_handle.wrapping_sub(1) as usize;
                if let Some(subject) = self.tags.subjects.get(idx) {
                    out.push(envelope(&self.tags.source, subject, &item.value));
                }
            }
        }
        if !out.is_empty() {
            self.samples.push(out);
        }
    }
}

/// Resolves the configured nodes to node ids (browse paths with one
/// TranslateBrowsePathsToNodeIds call).
///
/// # Errors
/// `Config` naming a browse path that does not resolve; `Transient` when the call fails.
pub async fn resolve(
    session: &Session,
    cfg: &OpcUaConfig,
    refs: &[NodeRef],
) -> Result<Vec<NodeId>, ConnectorError> {
    let paths: Vec<(usize, BrowsePath)> = refs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            NodeRef::Path(_, p) => Some((
                i,
                BrowsePath {
                    starting_node: ObjectId::ObjectsFolder.into(),
                    relative_path: p.clone(),
                },
            )),
            NodeRef::Id(_) => None,
        })
        .collect();
    let mut out: Vec<NodeId> = refs
        .iter()
        .map(|r| match r {
            NodeRef::Id(id) => id.clone(),
            NodeRef::Path(..) => NodeId::null(),
        })
        .collect();
    if paths.is_empty() {
        return Ok(out);
    }
    let results = session
        .translate_browse_paths_to_node_ids(
            &paths.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        )
        .await
        .map_err(|e| ConnectorError::Transient(format!("TranslateBrowsePathsToNodeIds: {e}")))?;
    for ((i, _), r) in paths.iter().zip(results) {
        let target = r
            .targets
            .as_ref()
            .and_then(|t| t.first())
            .filter(|_| r.status_code.is_good());
        let Some(t) = target else {
            let text = match &refs[*i] {
                NodeRef::Path(text, _) => text.clone(),
                NodeRef::Id(_) => String::new(),
            };
            return Err(ConnectorError::Config(format!(
                "nodes[{i}].browse_path: {text:?} does not resolve on {} ({}); browse the server (call method browse) and fix the path",
                cfg.endpoint, r.status_code
            )));
        };
        out[*i] = t.target_id.node_id.clone();
    }
    Ok(out)
}

/// The filter of every monitored item: a change of status alone (a node going Bad with its
/// value unchanged) is reported, as is a change of value (beyond the deadband, if any).
///
/// Always sent, never left null: the spec makes a null filter mean `StatusValue`, but
/// async-opcua 0.19's server compares only the values for a null filter, so a node going Bad
/// with an unchanged value was never reported by it.
pub fn data_change_filter(absolute: Option<f64>, percent: Option<f64>) -> DataChangeFilter {
    let (kind, value) = match (absolute, percent) {
        (Some(v), _) => (DeadbandType::Absolute, v),
        (None, Some(v)) => (DeadbandType::Percent, v),
        (None, None) => (DeadbandType::None, 0.0),
    };
    DataChangeFilter {
        trigger: DataChangeTrigger::StatusValue,
        deadband_type: kind as u32,
        deadband_value: value,
    }
}

/// Creates the subscription and one monitored item per node, then asks for a publish at once.
///
/// # Errors
/// `Transient` when a service call fails; `Config` when the server refuses an item (a
/// node that does not exist, a deadband it does not support).
pub async fn subscribe(
    session: &Session,
    cfg: &OpcUaConfig,
    nodes: &[NodeId],
    feed: Feed,
) -> Result<u32, ConnectorError> {
    let publishing = cfg.publishing_interval.max(Duration::from_millis(1));
    // Keep-alives at least three times per watchdog period, so that a quiet subscription
    // (nodes that do not change, deadbands) never trips it.
    let keep_alive_count = if cfg.watchdog_timeout.is_zero() {
        10
    } else {
        (cfg.watchdog_timeout.as_millis() / 3 / publishing.as_millis()).clamp(1, 100) as u32
    };
    let lifetime_count = (keep_alive_count * 3).max(30);
    let id = session
        .create_subscription(
            publishing,
            lifetime_count,
            keep_alive_count,
            cfg.max_notifications_per_publish,
            0,
            true,
            feed,
        )
        .await
        .map_err(|e| ConnectorError::Transient(format!("CreateSubscription: {e}")))?;
    let items: Vec<MonitoredItemCreateRequest> = nodes
        .iter()
        .zip(&cfg.nodes)
        .enumerate()
        .map(|(i, (node, nc))| {
            let mut req: MonitoredItemCreateRequest = node.clone().into();
            req.monitoring_mode = MonitoringMode::Reporting;
            req.requested_parameters.client_handle = i as u32 + 1;
            req.requested_parameters.sampling_interval = nc
                .sampling_interval
                .unwrap_or(cfg.sampling_interval)
                .as_secs_f64()
                * 1000.0;
            req.requested_parameters.queue_size = cfg.queue_size.max(1);
            req.requested_parameters.discard_oldest = true;
            req.requested_parameters.filter = ExtensionObject::from_message(data_change_filter(
                nc.deadband_absolute,
                nc.deadband_percent,
            ));
            req
        })
        .collect();
    let mut created = Vec::with_capacity(items.len());
    // Chunked: servers limit the operations per call.
    for chunk in items.chunks(1000) {
        created.extend(
            session
                .create_monitored_items(id, TimestampsToReturn::Both, chunk.to_vec())
                .await
                .map_err(|e| ConnectorError::Transient(format!("CreateMonitoredItems: {e}")))?,
        );
    }
    for (i, r) in created.iter().enumerate() {
        if !r.result.status_code.is_good() {
            return Err(ConnectorError::Config(format!(
                "nodes[{i}] (tag {:?}, {}): the server refused the monitored item: {}; check the node id and the deadband",
                cfg.nodes[i].tag, nodes[i], r.result.status_code
            )));
        }
    }
    // async-opcua 0.19 may not send publish requests on a new session until told to.
    session.trigger_publish_now();
    Ok(id)
}

/// A Read request for the `Value` attribute of each of `nodes`.
pub(crate) fn value_reads(nodes: &[NodeId]) -> Vec<ReadValueId> {
    nodes
        .iter()
        .map(|n| ReadValueId {
            node_id: n.clone(),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        })
        .collect()
}

/// One Read of every node (polling mode).
///
/// # Errors
/// `NotConnected` when the read fails (the connector reconnects).
pub async fn poll(
    session: &Session,
    nodes: &[NodeId],
    tags: &Tags,
    timeout: Duration,
) -> Result<Vec<Envelope>, ConnectorError> {
    let ids = value_reads(nodes);
    let values = tokio::time::timeout(timeout, session.read(&ids, TimestampsToReturn::Both, 0.0))
        .await
        .map_err(|_| ConnectorError::NotConnected("Read: no answer within request_timeout".into()))?
        .map_err(|e| ConnectorError::NotConnected(format!("Read failed: {e}")))?;
    Ok(values
        .iter()
        .zip(tags.subjects.iter())
        .map(|(dv, subject)| envelope(&tags.source, subject, dv))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_follows_the_severity_bits() {
        assert_eq!(quality(StatusCode::Good), Quality::Good);
        assert_eq!(
            quality(StatusCode::UncertainLastUsableValue),
            Quality::Uncertain
        );
        assert_eq!(quality(StatusCode::BadSensorFailure), Quality::Bad);
    }

    #[test]
    fn an_envelope_carries_the_full_status_and_both_times() {
        let now = opcua::types::DateTime::now();
        let dv = DataValue {
            value: Some(Variant::Double(1.5)),
            status: Some(StatusCode::BadSensorFailure),
            source_timestamp: Some(now),
            server_timestamp: Some(now),
            ..Default::default()
        };
        let e = envelope("p1", "mw.ev.p1.t", &dv);
        assert_eq!(e.payload, serde_json::json!(1.5));
        assert_eq!(e.status_code, Some(StatusCode::BadSensorFailure.bits()));
        assert_eq!(e.quality, Quality::Bad);
        assert!(e.source_time.is_some() && e.server_time.is_some());
    }

    #[test]
    fn every_item_reports_a_change_of_status_alone() {
        let f = data_change_filter(None, None);
        assert_eq!(f.trigger, DataChangeTrigger::StatusValue);
        assert_eq!(f.deadband_type, DeadbandType::None as u32);
        let f = data_change_filter(Some(0.5), None);
        assert_eq!(f.trigger, DataChangeTrigger::StatusValue);
        assert_eq!(
            (f.deadband_type, f.deadband_value),
            (DeadbandType::Absolute as u32, 0.5)
        );
        let f = data_change_filter(None, Some(2.0));
        assert_eq!(f.deadband_type, DeadbandType::Percent as u32);
    }

    #[test]
    fn the_buffer_sheds_the_oldest_at_its_cap_and_counts() {
        let s = Samples::new(2);
        s.push((0..3).map(|i| Envelope::new("x", "y", i.into())));
        assert_eq!(s.take_shed(), 1);
        let got = s.take(10);
        assert_eq!(got[0].payload, 1);
        s.requeue(got);
        assert_eq!(s.take(1)[0].payload, 1, "requeued at the front, in order");
    }
}
