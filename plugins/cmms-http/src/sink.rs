//! The sink: every event written is a create-work-order request.
//!
//! An event's payload has the shape of the `create_work_order` payload
//! (`{"work_order": {...}, "idempotency_key": "..."}`); with `auto_idempotency_keys` the
//! event's id is the idempotency key, so a batch the node delivers again does not create the
//! work orders twice (when the CMMS de-duplicates on the key).
//!
//! Results are per event: a bad payload is a `config` error for that event only. When the
//! CMMS is unreachable (an error worth retrying: `not_connected`, `transient`, `back_off`),
//! the rest of the batch is not attempted and gets the same error, so one outage does not
//! cost every event its own round of retries; when nothing at all was written, the whole call
//! fails with that error instead (the host retries the batch). In sandbox mode nothing is
//! sent: every well-formed event succeeds and is published as a would-write record.

use millwright_plugin_sdk::prelude::*;

use crate::responder::parse_create;
use crate::{CmmsHttp, Origin};

impl Sink for CmmsHttp {
    async fn write_batch(
        &mut self,
        ctx: &Context,
        events: Vec<Envelope>,
    ) -> Result<Vec<WriteResult>, ConnectorError> {
        let total = events.len();
        let mut results: Vec<WriteResult> = Vec::with_capacity(total);
        let mut written = 0usize;
        for event in events {
            let what = format!("event {} on {}", event.id, event.subject);
            let result = match parse_create(&what, event.payload) {
                Ok(request) => self.create(ctx, request, Origin::Event(&event.id)).await,
                Err(e) => Err(e),
            };
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            ctx.counter("cmms_sink_events_total", &[("outcome", outcome)], 1);
            match result {
                Ok(_) => {
                    written += 1;
                    results.push(Ok(()));
                }
                Err(e) if e.is_retryable() => {
                    if written == 0 {
                        return Err(e);
                    }
                    let rest = total - results.len();
                    results.extend(std::iter::repeat_n(Err(e), rest));
                    break;
                }
                Err(e) => results.push(Err(e)),
            }
        }
        Ok(results)
    }
}
