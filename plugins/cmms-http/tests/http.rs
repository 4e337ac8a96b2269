//! The connector against a real HTTP server on loopback, driven through the SDK's `TestHost`:
//! retries and their delays, fail-fast answers, timeouts, a server that is down, the
//! idempotency rule for `POST`, the circuit breaker, secrets kept out of the logs, sandbox
//! mode, the sink and the source.
//!
//! These tests use real time (real sockets, real timeouts); bounds are generous because the
//! machines they run on are shared. Nothing sleeps to sequence: the client's own retries do
//! the waiting, and the server timestamps what it receives.

mod support;

use std::time::{Duration, Instant};

use millwright_plugin_sdk::prelude::*;
use serde_json::json;
use support::{Cmms, Dropper, Reply, call, closed_port, counter, gaps, log_text, open};

const MS: Duration = Duration::from_millis(1);

/// A config for `base_url` with fast retries (for tests about what, not when).
fn fast(base_url: &str) -> serde_json::Value {
    json!({
        "base_url": base_url,
        "retry": {"base": "10ms", "max": "50ms"},
    })
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
    let cmms = Cmms::start(
        vec![Reply::RetryAfter(429, "1")],
        Reply::Json(200, json!([{"id": "WO-1"}])),
    )
    .await;
    let mut host = open(json!({"base_url": cmms.base_url()})).await;
    let answer = call(
        &mut host,
        "list_work_orders",
        json!({"filters": {"status": "open", "asset_id": "P 1"}}),
    )
    .await
    .unwrap();
    assert_eq!(answer, json!([{"id": "WO-1"}]));
    let hits = cmms.hits();
    assert_eq!(hits.len(), 2, "one 429, one retry");
    assert_eq!(hits[1].path, "/api/work_orders");
    let query = hits[1].query.as_deref().unwrap_or("");
    assert!(
        query.contains("status=open") && query.contains("asset_id=P+1"),
        "{query}"
    );
    // The policy's own first wait is 0.5-0.6 s: waiting at least 1 s shows Retry-After won.
    let gap = gaps(&hits)[0];
    eprintln!("measured wait after 429 with Retry-After: 1: {gap:?}");
    assert!(
        gap >= 990 * MS && gap < 3000 * MS,
        "Retry-After: 1 honoured, waited {gap:?}"
    );
    assert_eq!(counter(&host, "cmms_retries_total", &[]), 1.0);
    assert_eq!(
        counter(
            &host,
            "cmms_requests_total",
            &[("method", "list_work_orders"), ("outcome", "rate_limited")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_429_asking_for_longer_than_the_cap_backs_off_at_once() {
    let cmms = Cmms::always(Reply::RetryAfter(429, "120")).await;
    let mut host = open(json!({"base_url": cmms.base_url()})).await;
    let started = Instant::now();
    let err = call(&mut host, "list_assets", json!({})).await.unwrap_err();
    assert_eq!(err, ConnectorError::BackOff(Duration::from_secs(120)));
    assert_eq!(
        cmms.hits().len(),
        1,
        "no retry sooner than the server asked"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_503_then_success_retries_with_the_cmms_backoff() {
    let cmms = Cmms::start(
        vec![Reply::Text(503, "busy"), Reply::Text(503, "busy")],
        Reply::Json(200, json!({"id": "P-1"})),
    )
    .await;
    let mut host = open(json!({"base_url": cmms.base_url()})).await;
    let answer = call(&mut host, "get_asset", json!({"id": "P-1"}))
        .await
        .unwrap();
    assert_eq!(answer, json!({"id": "P-1"}));
    let hits = cmms.hits();
    assert_eq!(hits.len(), 3, "two 503s, then the answer");
    let g = gaps(&hits);
    // min(0.5 s * 2^n, 8 s) with up to 20 % jitter: 0.5-0.6 s, then 1.0-1.2 s (+ slack).
    assert!(
        g[0] >= 490 * MS && g[0] < 1100 * MS,
        "first wait {:?}",
        g[0]
    );
    assert!(
        g[1] >= 990 * MS && g[1] < 1900 * MS,
        "second wait {:?}",
        g[1]
    );
    eprintln!("measured 503 retry waits: {g:?}");
    assert_eq!(counter(&host, "cmms_retries_total", &[]), 2.0);
}

#[tokio::test]
async fn a_500_is_retried_for_reads_then_reaches_the_caller_with_status_and_body() {
    let cmms = Cmms::always(Reply::Text(500, "database on fire")).await;
    let mut host = open(json!({"base_url": cmms.base_url()})).await;
    let started = Instant::now();
    let err = call(&mut host, "list_assets", json!(null))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let ConnectorError::Transient(message) = &err else {
        panic!("a 500 is transient: {err:?}")
    };
    for needle in ["500", "database on fire", "4 attempts", "GET http://"] {
        assert!(message.contains(needle), "{message} lacks {needle:?}");
    }
    assert_eq!(cmms.hits().len(), 4, "1 attempt + 3 retries");
    // 0.5 + 1 + 2 s of backoff (each up to 20 % longer).
    assert!(
        elapsed >= 3400 * MS && elapsed < 9000 * MS,
        "3 retries took {elapsed:?}"
    );
    eprintln!(
        "measured 500 retry waits: {:?}, whole call {elapsed:?}",
        gaps(&cmms.hits())
    );
}

#[tokio::test]
async fn a_500_on_a_create_without_a_key_is_not_retried() {
    let cmms = Cmms::always(Reply::Text(500, "oops")).await;
    let mut host = open(fast(&cmms.base_url())).await;
    let err = call(
        &mut host,
        "create_work_order",
        json!({"work_order": {"title": "leak"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), "transient");
    assert!(
        err.to_string().contains("not retried") && err.to_string().contains("idempotency_key"),
        "{err}"
    );
    assert_eq!(cmms.count("POST"), 1, "a 500 may have created it");
}

#[tokio::test]
async fn a_404_fails_fast_after_one_attempt() {
    let cmms = Cmms::always(Reply::Json(404, json!({"error": "no such asset"}))).await;
    let mut host = open(json!({"base_url": cmms.base_url()})).await;
    let started = Instant::now();
    let err = call(&mut host, "get_asset", json!({"id": "X/9"}))
        .await
        .unwrap_err();
    let ConnectorError::Config(message) = &err else {
        panic!("a 404 is the caller's problem: {err:?}")
    };
    assert!(
        message.contains("404") && message.contains("no such asset"),
        "{message}"
    );
    let hits = cmms.hits();
    assert_eq!(hits.len(), 1, "no retry of a 404");
    assert_eq!(hits[0].path, "/api/assets/X%2F9");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        host.health().await,
        Health::Healthy,
        "a 404 shows the CMMS is up"
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried_then_fails() {
    let cmms = Cmms::always(Reply::Hang).await;
    let mut host = open(json!({
        "base_url": cmms.base_url(),
        "request_timeout": "300ms",
        "retry": {"max_retries": 1, "base": "50ms"},
    }))
    .await;
    let started = Instant::now();
    let err = call(&mut host, "list_work_orders", json!({}))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), "transient", "{err}");
    assert!(err.to_string().contains("request_timeout (300ms)"), "{err}");
    assert_eq!(cmms.hits().len(), 2, "a timed-out GET is retried");
    assert!(
        elapsed >= 600 * MS && elapsed < 5000 * MS,
        "two 300 ms timeouts took {elapsed:?}"
    );
    assert_eq!(
        counter(&host, "cmms_requests_total", &[("outcome", "timeout")]),
        2.0
    );
    assert!(matches!(host.health().await, Health::Degraded(r) if r.contains("request_timeout")));
}

#[tokio::test]
async fn retries_stop_at_the_call_deadline() {
    let cmms = Cmms::always(Reply::Hang).await;
    let mut host = open(json!({
        "base_url": cmms.base_url(),
        "request_timeout": "2s",
        "call_deadline": "3s",
    }))
    .await;
    let started = Instant::now();
    let err = call(&mut host, "list_assets", json!({})).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), "transient", "{err}");
    eprintln!("measured call against a hung server, call_deadline 3s: {elapsed:?}");
    // 2 s timeout, a 0.5-0.6 s wait, then a last attempt cut to what is left of the 3 s.
    assert_eq!(cmms.hits().len(), 2);
    assert!(
        elapsed >= 2900 * MS && elapsed < 4500 * MS,
        "the call kept to its deadline: {elapsed:?}"
    );
    assert!(log_text(&host).contains("call_deadline would pass"));
}

#[tokio::test]
async fn a_server_that_is_down_is_not_connected_and_creates_are_retried() {
    let addr = closed_port().await;
    let mut config = fast(&format!("http://{addr}/api"));
    // Keep the breaker out of the way: this test is about the retry rule.
    config["breaker"] = json!({"failure_threshold": 100});
    let mut host = open(config).await;
    let err = call(&mut host, "list_assets", json!({})).await.unwrap_err();
    assert_eq!(err.kind(), "not_connected", "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert_eq!(
        counter(
            &host,
            "cmms_requests_total",
            &[("outcome", "connect_error")]
        ),
        4.0
    );
    // Nothing was sent, so even a create without a key is safe to retry.
    let err = call(
        &mut host,
        "create_work_order",
        json!({"work_order": {"title": "t"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), "not_connected", "{err}");
    assert_eq!(
        counter(
            &host,
            "cmms_requests_total",
            &[
                ("method", "create_work_order"),
                ("outcome", "connect_error")
            ]
        ),
        4.0
    );
    // A sink batch that could write nothing fails as a whole, for the host to retry.
    let events = vec![Envelope::new(
        "t",
        "mw.cmd.cmms.work_orders",
        json!({"work_order": {"title": "t"}}),
    )];
    let err = host.write_batch(events).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn https_goes_through_rustls() {
    // A plain-HTTP server behind an https:// URL: the TLS handshake (rustls, ring) fails, which
    // shows TLS is wired in without OpenSSL and without a global crypto provider.
    let cmms = Cmms::always(Reply::Json(200, json!([]))).await;
    let mut config = fast(&format!("https://{}/api", cmms.addr));
    config["breaker"] = json!({"failure_threshold": 100});
    let mut host = open(config).await;
    let err = call(&mut host, "list_assets", json!({})).await.unwrap_err();
    eprintln!("https to a plain-HTTP server: {err}");
    assert_eq!(err.kind(), "not_connected", "{err}");
    assert!(err.to_string().contains("https://"), "{err}");
    assert!(
        err.to_string().contains("InvalidContentType"),
        "rustls' own error: {err}"
    );
    assert!(cmms.hits().is_empty(), "no request got through");
}

#[tokio::test]
async fn a_post_is_not_retried_after_a_network_error_unless_it_has_a_key() {
    let server = Dropper::start().await;
    let mut host = open(fast(&server.base_url())).await;
    let err = call(
        &mut host,
        "create_work_order",
        json!({"work_order": {"title": "pump 3 leaks"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), "transient", "{err}");
    assert!(err.to_string().contains("not retried"), "{err}");
    assert_eq!(server.requests().len(), 1, "sent once, never again");
    assert!(server.requests()[0].starts_with("POST /api/work_orders"));

    let err = call(
        &mut host,
        "create_work_order",
        json!({"work_order": {"title": "pump 3 leaks"}, "idempotency_key": "wo-42"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), "transient", "{err}");
    let keyed: Vec<String> = server.requests()[1..].to_vec();
    assert_eq!(keyed.len(), 4, "with a key: 1 attempt + 3 retries");
    assert!(
        keyed
            .iter()
            .all(|r| r.to_ascii_lowercase().contains("idempotency-key: wo-42")),
        "{keyed:?}"
    );
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_health_says_so() {
    let cmms = Cmms::always(Reply::Text(502, "bad gateway")).await;
    let mut host = open(json!({
        "base_url": cmms.base_url(),
        "retry": {"max_retries": 0},
        "breaker": {"failure_threshold": 3, "open_base": "30s"},
    }))
    .await;
    for _ in 0..3 {
        let err = call(&mut host, "list_assets", json!({})).await.unwrap_err();
        assert_eq!(err.kind(), "transient", "{err}");
    }
    assert_eq!(cmms.hits().len(), 3);
    let err = call(&mut host, "list_assets", json!({})).await.unwrap_err();
    let ConnectorError::BackOff(wait) = err else {
        panic!("an open breaker backs off: {err:?}")
    };
    assert!(
        wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    assert_eq!(cmms.hits().len(), 3, "the open breaker sent nothing");
    let Health::Unhealthy(reason) = host.health().await else {
        panic!("an open breaker is unhealthy")
    };
    assert!(
        reason.contains("circuit breaker open") && reason.contains("502"),
        "{reason}"
    );
    let last_state = host
        .recorded()
        .metrics
        .iter()
        .rev()
        .find(|m| m.name == "cmms_breaker_state")
        .map(|m| m.value);
    assert_eq!(last_state, Some(2.0), "the gauge shows open");
    // Sink writes are refused the same way, without reaching the server.
    let err = host
        .write_batch(vec![Envelope::new(
            "t",
            "mw.cmd.cmms.work_orders",
            json!({"work_order": {}}),
        )])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "back_off");
    assert_eq!(cmms.hits().len(), 3);
}

fn secret_file(secret: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "cmms-http-test-secret-{}-{}",
        std::process::id(),
        EventId::new()
    ));
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

#[tokio::test]
async fn the_secret_is_sent_but_never_logged_or_returned() {
    let secret = format!("s3cr3t-{}", EventId::new());
    let path = secret_file(&secret);
    let cmms = Cmms::start(
        vec![Reply::EchoAuth(401), Reply::EchoAuth(500)],
        Reply::Json(200, json!([])),
    )
    .await;
    let mut config = fast(&cmms.base_url());
    config["auth"] = json!({"scheme": "bearer", "secret_file": path});
    let mut host = open(config.clone()).await;
    let denied = call(&mut host, "list_assets", json!({})).await.unwrap_err();
    assert_eq!(denied.kind(), "config", "{denied}");
    assert!(denied.to_string().contains("401") && denied.to_string().contains("auth"));
    // The 500 echoes the header too, and is retried (logged) before the 200.
    call(&mut host, "list_work_orders", json!({}))
        .await
        .unwrap();
    let hits = cmms.hits();
    assert_eq!(hits.len(), 3);
    assert_eq!(
        hits[0].header("authorization").as_deref(),
        Some(format!("Bearer {secret}").as_str()),
        "the credential is sent"
    );

    // The API key scheme (from a second file), and sandbox writes. (Reading from an
    // environment variable is unit-tested in `secret.rs`: setting one here would race the
    // other tests of this process under `cargo test`.)
    let key_path = secret_file(&secret);
    let mut config = fast(&cmms.base_url());
    config["auth"] = json!({"scheme": "api_key", "header": "X-API-Key", "secret_file": key_path});
    config["sandbox"] = json!(true);
    let mut keyed = open(config).await;
    call(&mut keyed, "get_asset", json!({"id": 7}))
        .await
        .unwrap();
    assert_eq!(
        cmms.hits()[3].header("x-api-key").as_deref(),
        Some(secret.as_str())
    );
    call(
        &mut keyed,
        "create_work_order",
        json!({"work_order": {"title": "t"}}),
    )
    .await
    .unwrap();
    let published = keyed.read_batch(10).await.unwrap();
    assert_eq!(published.events.len(), 1);

    for (name, text) in [
        ("bearer logs", log_text(&host)),
        ("api key logs", log_text(&keyed)),
        ("error", denied.to_string()),
        ("published", serde_json::to_string(&published).unwrap()),
        ("metrics", format!("{:?}", host.recorded().metrics)),
    ] {
        assert!(!text.is_empty(), "{name}: nothing recorded");
        assert!(!text.contains(&secret), "{name} leaks the secret: {text}");
    }
    assert!(
        log_text(&host).contains("Bearer ***"),
        "the echoed header is scrubbed, not dropped: {}",
        log_text(&host)
    );
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(key_path);
}

#[tokio::test]
async fn sandbox_mode_sends_no_write_but_still_reads() {
    let cmms = Cmms::always(Reply::Json(200, json!([{"id": "WO-1"}]))).await;
    let mut host = open(json!({"base_url": cmms.base_url(), "sandbox": true})).await;
    let answer = call(
        &mut host,
        "create_work_order",
        json!({"work_order": {"title": "replace bearing", "asset_id": "P-1"}, "idempotency_key": "k1"}),
    )
    .await
    .unwrap();
    assert_eq!(answer["sandbox"], true);
    assert_eq!(answer["would_write"]["body"]["title"], "replace bearing");
    let events: Vec<Envelope> = (0..2)
        .map(|i| {
            Envelope::new(
                "rules",
                "mw.cmd.cmms.work_orders",
                json!({"work_order": {"title": format!("auto {i}")}}),
            )
        })
        .collect();
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(host.write_batch(events).await.unwrap(), [Ok(()), Ok(())]);
    // Reads still reach the CMMS.
    let listed = call(&mut host, "list_work_orders", json!({}))
        .await
        .unwrap();
    assert_eq!(listed, json!([{"id": "WO-1"}]));
    assert_eq!(cmms.count("GET"), 1, "the read was sent");
    assert_eq!(
        host.request(millwright_plugin_sdk::protocol::Request::ConnectionTest)
            .await,
        millwright_plugin_sdk::protocol::Response::Done,
        "the connection test reads too"
    );
    assert_eq!(cmms.count("GET"), 2);
    assert_eq!(cmms.hits()[1].path, "/api/assets");
    assert_eq!(cmms.count("POST"), 0, "no write reached the server");

    let batch = host.read_batch(10).await.unwrap();
    assert_eq!(batch.events.len(), 3);
    assert!(
        batch
            .events
            .iter()
            .all(|e| e.subject == "mw.ev.cmms1.would_write" && e.source == "cmms1")
    );
    let first = &batch.events[0].payload;
    assert_eq!(first["method"], "POST");
    assert_eq!(first["url"], format!("{}/work_orders", cmms.base_url()));
    assert_eq!(first["idempotency_key"], "k1");
    assert_eq!(first["origin"], "call");
    assert_eq!(batch.events[1].payload["event_id"], ids[0].as_str());
    assert_eq!(batch.events[2].payload["body"]["title"], "auto 1");
    assert!(log_text(&host).contains("sandbox: would create a work order"));
    assert_eq!(counter(&host, "cmms_sandbox_writes_total", &[]), 3.0);
    // Not acknowledged, then a reconnect: handed out again; acknowledged: gone.
    host.connect().await.unwrap();
    let again = host.read_batch(10).await.unwrap();
    assert_eq!(again.events.len(), 3);
    host.ack(again.token).await.unwrap();
    assert_eq!(cmms.count("POST"), 0);
    // Nothing left: the read waits for the next event (a node interrupts it when it needs the
    // instance) instead of returning an empty batch to be polled.
    let waiting = tokio::time::timeout(std::time::Duration::from_millis(300), host.read_batch(10));
    assert!(waiting.await.is_err(), "an empty outbox: the read waits");
}

#[tokio::test]
async fn creates_are_sent_and_published_outside_sandbox_mode() {
    let cmms = Cmms::always(Reply::Json(201, json!({"id": "WO-7"}))).await;
    let mut host = open(json!({
        "base_url": cmms.base_url(),
        "auto_idempotency_keys": true,
    }))
    .await;
    let answer = call(
        &mut host,
        "create_work_order",
        json!({"work_order": {"title": "t", "priority": 2}, "idempotency_key": "mine"}),
    )
    .await
    .unwrap();
    assert_eq!(
        answer,
        json!({"sandbox": false, "status": 201, "work_order": {"id": "WO-7"},
               "idempotency_key": "mine", "attempts": 1})
    );
    let post = &cmms.hits()[0];
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/api/work_orders")
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&post.body).unwrap(),
        json!({"title": "t", "priority": 2})
    );
    assert_eq!(post.header("idempotency-key").as_deref(), Some("mine"));
    assert_eq!(
        post.header("content-type").as_deref(),
        Some("application/json")
    );

    let good = Envelope::new(
        "r",
        "mw.cmd.cmms.work_orders",
        json!({"work_order": {"title": "a"}}),
    );
    let bad = Envelope::new(
        "r",
        "mw.cmd.cmms.work_orders",
        json!({"title": "no wrapper"}),
    );
    let good_id = good.id.to_string();
    let results = host.write_batch(vec![good, bad]).await.unwrap();
    assert_eq!(results[0], Ok(()));
    let Err(ConnectorError::Config(m)) = &results[1] else {
        panic!("a bad event is its own config error: {results:?}")
    };
    assert!(
        m.contains("unknown field `title`") && m.contains("work_order"),
        "{m}"
    );
    assert_eq!(cmms.count("POST"), 2, "the bad event was not sent");
    assert_eq!(
        cmms.hits()[1].header("idempotency-key").as_deref(),
        Some(good_id.as_str()),
        "auto keys use the event id"
    );

    let batch = host.read_batch(10).await.unwrap();
    let subjects: Vec<&str> = batch.events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "mw.ev.cmms1.work_order.created",
            "mw.ev.cmms1.work_order.created"
        ]
    );
    assert_eq!(batch.events[1].payload["work_order"]["id"], "WO-7");
    assert_eq!(batch.events[1].payload["event_id"], good_id.as_str());
}

#[tokio::test]
async fn the_manifest_offers_three_shapes_and_ships_the_schema() {
    let cmms = Cmms::always(Reply::Json(200, json!([]))).await;
    let host = open(json!({"base_url": cmms.base_url()})).await;
    let m = host.manifest();
    assert_eq!(m.id, "cmms-http");
    assert_eq!(m.kinds, [Kind::Source, Kind::Sink, Kind::Responder]);
    let props = &m.config_schema["properties"];
    assert!(
        props["base_url"]["description"]
            .as_str()
            .unwrap()
            .contains("base URL")
    );
    assert_eq!(props["request_timeout"]["default"], "5s");
    assert_eq!(props["sandbox"]["default"], false);
    assert_eq!(m.check_compatible(), Ok(()));
    let err = millwright_plugin_sdk::harness::TestHost::open(
        &millwright_plugin_cmms_http::CMMS,
        "x",
        json!({"base_url": "nope"}),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("base_url"), "{err}");
}
