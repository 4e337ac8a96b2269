//! Tests of the retry policy: presets, backoff bounds, `Retry-After` parsing, classification,
//! the decision table and the retry loop under paused time.

use std::cell::Cell;
use std::error::Error as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::circuit_breaker::BreakerOpen;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// A policy without jitter, so waits are exact.
fn exact(policy: RetryPolicy) -> RetryPolicy {
    RetryPolicy {
        jitter: 0.0,
        ..policy
    }
}

fn refused(retry_after: Option<Duration>) -> RetryClass {
    RetryClass::Refused { retry_after }
}

// ---- presets and backoff ----

#[test]
fn presets_match_the_design_defaults() {
    let cmms = RetryPolicy::cmms_http();
    assert_eq!(
        (cmms.max_retries, cmms.base, cmms.max),
        (3, 500 * MS, 8 * S)
    );
    assert!(cmms.retry_server_errors);

    let llm = RetryPolicy::llm_rate_limited();
    assert_eq!((llm.max_retries + 1, llm.base, llm.max), (5, S, 60 * S));
    assert!(!llm.retry_server_errors);

    let server = RetryPolicy::server_errors();
    assert_eq!(
        (server.max_retries + 1, server.base, server.max),
        (3, S, 30 * S)
    );
    assert!(server.retry_server_errors);

    for p in [cmms, llm, server, RetryPolicy::default()] {
        assert_eq!(p.long_retry_after, LongRetryAfter::GiveUp);
        assert_eq!(p.jitter, 0.2);
    }
}

#[test]
fn backoff_doubles_from_base_to_the_cap() {
    let p = RetryPolicy::cmms_http();
    let waits: Vec<Duration> = (0..7).map(|n| p.backoff(n)).collect();
    let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
    assert_eq!(p.backoff(31), 8 * S, "2^31 * base overflows nothing");
    assert_eq!(p.backoff(32), 8 * S, "a shift past 31 is the cap");
    assert_eq!(p.backoff(u32::MAX), 8 * S);
}

#[test]
fn base_above_max_waits_max() {
    let p = RetryPolicy {
        base: 10 * S,
        max: 3 * S,
        ..RetryPolicy::default()
    };
    assert_eq!(p.backoff(0), 3 * S);
}

#[test]
fn zero_negative_and_nan_jitter_give_the_exact_backoff() {
    for jitter in [0.0, -0.5, f64::NAN] {
        let p = RetryPolicy {
            jitter,
            ..RetryPolicy::default()
        };
        for n in 0..6 {
            assert_eq!(p.delay(n), p.backoff(n), "jitter {jitter}");
        }
    }
}

#[test]
fn jitter_spreads_the_waits() {
    let p = RetryPolicy::default();
    let waits: std::collections::HashSet<Duration> = (0..100).map(|_| p.delay(2)).collect();
    // 100 draws from a continuous range: a handful of distinct values at the very least.
    assert!(
        waits.len() > 10,
        "jitter produced {} distinct waits",
        waits.len()
    );
}

#[test]
fn jitter_above_one_is_clamped_to_one() {
    let p = RetryPolicy {
        jitter: 5.0,
        ..RetryPolicy::default()
    };
    for _ in 0..200 {
        let d = p.delay(0);
        assert!(d >= 500 * MS && d <= 1000 * MS, "{d:?}");
    }
}

proptest! {
    #[test]
    fn delay_stays_within_the_backoff_bounds(
        base_ms in 0u64..100_000,
        max_ms in 0u64..1_000_000,
        jitter in 0.0f64..=1.0,
        n in 0u32..80,
    ) {
        let p = RetryPolicy {
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(max_ms),
            jitter,
            ..RetryPolicy::default()
        };
        // The bound computed independently of `backoff`, in integer milliseconds.
        let doubled = 2u128.checked_pow(n).and_then(|f| f.checked_mul(u128::from(base_ms)));
        let low_ms = doubled.map_or(u128::from(max_ms), |d| d.min(u128::from(max_ms)));
        let low = Duration::from_millis(u64::try_from(low_ms).unwrap());
        prop_assert_eq!(p.backoff(n), low);
        let d = p.delay(n);
        prop_assert!(d >= low, "{:?} < {:?}", d, low);
        let high = low.as_secs_f64() * (1.0 + jitter);
        prop_assert!(d.as_secs_f64() <= high + 1e-9, "{:?} > {}", d, high);
    }
}

// ---- Retry-After ----

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// 2015-10-21T07:28:00Z, the RFC's example date.
const OCT_21_2015: u64 = 1_445_412_480;

#[test]
fn retry_after_in_seconds() {
    let now = at(OCT_21_2015);
    assert_eq!(parse_retry_after_at("120", now), Some(120 * S));
    assert_eq!(parse_retry_after_at(" 7 ", now), Some(7 * S));
    assert_eq!(parse_retry_after_at("0", now), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after_at("99999999999999999999999", now),
        Some(Duration::from_secs(u64::MAX)),
        "too large for u64: saturates rather than being ignored"
    );
}

#[test]
fn retry_after_as_an_http_date_in_the_future() {
    let now = at(OCT_21_2015 - 90);
    for form in [
        "Wed, 21 Oct 2015 07:28:00 GMT",     // IMF-fixdate
        "Wednesday, 21-Oct-15 07:28:00 GMT", // RFC 850
        "Wed Oct 21 07:28:00 2015",          // asctime
    ] {
        assert_eq!(parse_retry_after_at(form, now), Some(90 * S), "{form}");
    }
}

#[test]
fn retry_after_as_an_http_date_in_the_past_is_zero() {
    let now = at(OCT_21_2015 + 3600);
    assert_eq!(
        parse_retry_after_at("Wed, 21 Oct 2015 07:28:00 GMT", now),
        Some(Duration::ZERO)
    );
}

#[test]
fn retry_after_garbage_is_none() {
    let now = at(OCT_21_2015);
    for garbage in [
        "",
        "   ",
        "-1",
        "+5",
        "1.5",
        "soon",
        "12 s",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "2015-10-21T07:28:00Z",
    ] {
        assert_eq!(parse_retry_after_at(garbage, now), None, "{garbage:?}");
    }
}

#[test]
fn retry_after_against_the_system_clock() {
    let future = httpdate::fmt_http_date(SystemTime::now() + 3600 * S);
    let d = parse_retry_after(&future).expect("a valid date");
    assert!(d > 3590 * S && d <= 3600 * S, "{d:?}");
}

// ---- classification ----

#[test]
fn http_status_classification_table() {
    let plain = RetryPolicy::default();
    let opted_in = RetryPolicy {
        retry_server_errors: true,
        ..RetryPolicy::default()
    };
    let transient = RetryClass::NETWORK;
    let cases: [(u16, RetryClass, RetryClass); 12] = [
        (429, refused(None), refused(None)),
        (503, refused(None), refused(None)),
        (500, RetryClass::Fatal, transient),
        (502, RetryClass::Fatal, transient),
        (504, RetryClass::Fatal, transient),
        (599, RetryClass::Fatal, transient),
        (400, RetryClass::Fatal, RetryClass::Fatal),
        (401, RetryClass::Fatal, RetryClass::Fatal),
        (404, RetryClass::Fatal, RetryClass::Fatal),
        (408, RetryClass::Fatal, RetryClass::Fatal),
        (200, RetryClass::Fatal, RetryClass::Fatal),
        (301, RetryClass::Fatal, RetryClass::Fatal),
    ];
    for (status, without, with) in cases {
        assert_eq!(
            plain.classify_http_status(status, None),
            without,
            "{status}"
        );
        assert_eq!(
            opted_in.classify_http_status(status, None),
            with,
            "{status} opted in"
        );
    }
}

#[test]
fn classification_carries_retry_after() {
    let p = RetryPolicy::server_errors();
    assert_eq!(
        p.classify_http_status(429, Some("30")),
        refused(Some(30 * S))
    );
    assert_eq!(
        p.classify_http_status(503, Some("0")),
        refused(Some(Duration::ZERO))
    );
    assert_eq!(
        p.classify_http_status(502, Some("4")),
        RetryClass::Transient {
            retry_after: Some(4 * S)
        }
    );
    assert_eq!(p.classify_http_status(429, Some("later")), refused(None));
    assert_eq!(p.classify_http_status(404, Some("30")), RetryClass::Fatal);
    assert_eq!(
        p.classify_http_status(429, Some("30")).retry_after(),
        Some(30 * S)
    );
    assert_eq!(RetryClass::Fatal.retry_after(), None);
}

#[test]
fn an_open_breaker_is_a_refusal_with_its_window() {
    let class = RetryClass::from(BreakerOpen { retry_in: 3 * S });
    assert_eq!(class, refused(Some(3 * S)));
}

#[test]
fn http_method_idempotency() {
    for m in ["GET", "get", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
        assert_eq!(
            Idempotency::of_http_method(m),
            Idempotency::Idempotent,
            "{m}"
        );
    }
    for m in ["POST", "post", "PATCH", "CONNECT", "FROB", ""] {
        assert_eq!(
            Idempotency::of_http_method(m),
            Idempotency::NonIdempotent,
            "{m}"
        );
    }
}

// ---- the decision table ----

#[test]
fn next_retry_decision_table() {
    use Idempotency::{Idempotent, NonIdempotent};
    let p = exact(RetryPolicy::cmms_http());
    let network = RetryClass::NETWORK;
    // Fatal errors fail fast whatever the idempotency.
    assert_eq!(
        p.next_retry(1, RetryClass::Fatal, Idempotent),
        Err(GiveUp::Fatal)
    );
    assert_eq!(
        p.next_retry(1, RetryClass::Fatal, NonIdempotent),
        Err(GiveUp::Fatal)
    );
    // A timeout or connection error: retried when idempotent...
    assert_eq!(p.next_retry(1, network, Idempotent), Ok(500 * MS));
    // ...but a POST after a connection error fails fast: it may have been processed.
    assert_eq!(
        p.next_retry(1, network, NonIdempotent),
        Err(GiveUp::NotIdempotent)
    );
    assert_eq!(
        p.next_retry(1, p.classify_http_status(502, None), NonIdempotent),
        Err(GiveUp::NotIdempotent)
    );
    // A 429 or 503 was refused before processing: a POST may be retried.
    assert_eq!(p.next_retry(1, refused(None), NonIdempotent), Ok(500 * MS));
    assert_eq!(p.next_retry(2, refused(None), NonIdempotent), Ok(S));
    // Retries run out after max_retries.
    assert_eq!(
        p.next_retry(4, refused(None), Idempotent),
        Err(GiveUp::Exhausted { max_retries: 3 })
    );
    assert_eq!(p.next_retry(3, network, Idempotent), Ok(2 * S));
    assert_eq!(
        p.next_retry(4, network, Idempotent),
        Err(GiveUp::Exhausted { max_retries: 3 })
    );
}

#[test]
fn retry_after_replaces_the_backoff_up_to_max() {
    let p = RetryPolicy::cmms_http();
    // Honoured exactly (no jitter), shorter or longer than the backoff.
    assert_eq!(
        p.next_retry(3, refused(Some(100 * MS)), Idempotency::Idempotent),
        Ok(100 * MS)
    );
    assert_eq!(
        p.next_retry(1, refused(Some(7 * S)), Idempotency::Idempotent),
        Ok(7 * S)
    );
    assert_eq!(
        p.next_retry(1, refused(Some(8 * S)), Idempotency::Idempotent),
        Ok(8 * S),
        "max itself is honoured"
    );
}

#[test]
fn a_retry_after_longer_than_max_gives_up_or_is_capped() {
    let give_up = RetryPolicy::cmms_http();
    assert_eq!(
        give_up.next_retry(1, refused(Some(9 * S)), Idempotency::Idempotent),
        Err(GiveUp::RetryAfterTooLong {
            retry_after: 9 * S,
            max: 8 * S
        })
    );
    let cap = RetryPolicy {
        long_retry_after: LongRetryAfter::Cap,
        ..RetryPolicy::cmms_http()
    };
    assert_eq!(
        cap.next_retry(1, refused(Some(9 * S)), Idempotency::Idempotent),
        Ok(8 * S)
    );
    // Exhaustion still wins over a server's hint.
    assert_eq!(
        cap.next_retry(4, refused(Some(S)), Idempotency::Idempotent),
        Err(GiveUp::Exhausted { max_retries: 3 })
    );
}

// ---- the retry loop under paused time ----

/// Runs `retry` with an operation that fails with `errors` in turn, then succeeds; returns the
/// result, the number of calls and the (paused) time it took.
async fn run(
    policy: &RetryPolicy,
    idempotency: Idempotency,
    errors: &[RetryClass],
) -> (Result<u32, RetryError<RetryClass>>, u32, Duration) {
    let calls = Cell::new(0u32);
    let start = Instant::now();
    let result = retry(
        policy,
        idempotency,
        |e: &RetryClass| *e,
        || {
            let n = calls.get();
            calls.set(n + 1);
            let outcome = errors.get(n as usize).map_or(Ok(n + 1), |e| Err(*e));
            async move { outcome }
        },
    )
    .await;
    (result, calls.get(), start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn cmms_preset_makes_four_attempts_over_three_and_a_half_seconds() {
    let p = exact(RetryPolicy::cmms_http());
    let (result, calls, elapsed) =
        run(&p, Idempotency::Idempotent, &[RetryClass::NETWORK; 10]).await;
    let err = result.unwrap_err();
    assert_eq!((calls, err.attempts), (4, 4));
    assert_eq!(err.reason, GiveUp::Exhausted { max_retries: 3 });
    assert_eq!(elapsed, 3500 * MS, "0.5 + 1 + 2 s");
}

#[tokio::test(start_paused = true)]
async fn llm_preset_makes_five_attempts_over_fifteen_seconds() {
    let p = exact(RetryPolicy::llm_rate_limited());
    let (result, calls, elapsed) = run(&p, Idempotency::NonIdempotent, &[refused(None); 10]).await;
    assert_eq!(result.unwrap_err().attempts, 5);
    assert_eq!(calls, 5);
    assert_eq!(elapsed, 15 * S, "1 + 2 + 4 + 8 s");
}

#[tokio::test(start_paused = true)]
async fn server_errors_preset_makes_three_attempts_over_three_seconds() {
    let p = exact(RetryPolicy::server_errors());
    let class = p.classify_http_status(500, None);
    let (result, calls, elapsed) = run(&p, Idempotency::Idempotent, &[class; 10]).await;
    assert_eq!((result.unwrap_err().attempts, calls), (3, 3));
    assert_eq!(elapsed, 3 * S, "1 + 2 s");
}

#[tokio::test(start_paused = true)]
async fn jittered_total_delay_stays_within_bounds() {
    let p = RetryPolicy::cmms_http();
    for _ in 0..20 {
        let (_, calls, elapsed) =
            run(&p, Idempotency::Idempotent, &[RetryClass::NETWORK; 10]).await;
        assert_eq!(calls, 4);
        assert!(elapsed >= 3500 * MS && elapsed <= 4200 * MS, "{elapsed:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn success_after_failures_returns_the_value_early() {
    let p = exact(RetryPolicy::cmms_http());
    let (result, calls, elapsed) = run(
        &p,
        Idempotency::Idempotent,
        &[RetryClass::NETWORK, refused(None)],
    )
    .await;
    assert_eq!(result.unwrap(), 3);
    assert_eq!(calls, 3);
    assert_eq!(elapsed, 1500 * MS);
}

#[tokio::test(start_paused = true)]
async fn first_success_makes_one_call_and_waits_nothing() {
    let (result, calls, elapsed) = run(&RetryPolicy::default(), Idempotency::Idempotent, &[]).await;
    assert_eq!((result.unwrap(), calls, elapsed), (1, 1, Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn fatal_error_fails_fast() {
    let p = RetryPolicy::cmms_http();
    let (result, calls, elapsed) = run(
        &p,
        Idempotency::Idempotent,
        &[p.classify_http_status(404, None)],
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(
        (err.attempts, err.reason, calls, elapsed),
        (1, GiveUp::Fatal, 1, Duration::ZERO)
    );
    assert_eq!(err.into_inner(), RetryClass::Fatal);
}

#[tokio::test(start_paused = true)]
async fn post_after_a_connection_error_fails_fast_but_after_a_429_is_retried() {
    let p = exact(RetryPolicy::cmms_http());
    let post = Idempotency::of_http_method("POST");
    let (result, calls, _) = run(&p, post, &[RetryClass::NETWORK]).await;
    assert_eq!(result.unwrap_err().reason, GiveUp::NotIdempotent);
    assert_eq!(calls, 1);

    let (result, calls, elapsed) = run(&p, post, &[p.classify_http_status(429, Some("2"))]).await;
    assert_eq!(result.unwrap(), 2);
    assert_eq!(
        (calls, elapsed),
        (2, 2 * S),
        "the server's 2 s, not the 0.5 s backoff"
    );

    // Marked safe (an idempotency key), the POST is retried after a connection error.
    let (result, calls, _) = run(&p, Idempotency::Idempotent, &[RetryClass::NETWORK]).await;
    assert_eq!((result.unwrap(), calls), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_surfaces_without_waiting() {
    let p = RetryPolicy::llm_rate_limited();
    let class = p.classify_http_status(429, Some("300"));
    let (result, calls, elapsed) = run(&p, Idempotency::Idempotent, &[class]).await;
    let err = result.unwrap_err();
    assert_eq!(
        err.reason,
        GiveUp::RetryAfterTooLong {
            retry_after: 300 * S,
            max: 60 * S
        }
    );
    assert_eq!((calls, elapsed), (1, Duration::ZERO));

    let cap = RetryPolicy {
        long_retry_after: LongRetryAfter::Cap,
        ..p
    };
    let (result, calls, elapsed) = run(&cap, Idempotency::Idempotent, &[class]).await;
    assert_eq!((result.unwrap(), calls, elapsed), (2, 2, 60 * S));
}

#[tokio::test(start_paused = true)]
async fn zero_retries_means_one_attempt() {
    let p = RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    };
    let (result, calls, _) = run(&p, Idempotency::Idempotent, &[refused(None)]).await;
    assert_eq!(
        result.unwrap_err().reason,
        GiveUp::Exhausted { max_retries: 0 }
    );
    assert_eq!(calls, 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_loop_starts_no_further_attempt() {
    let p = exact(RetryPolicy::cmms_http());
    let calls = Cell::new(0u32);
    let looping = retry(
        &p,
        Idempotency::Idempotent,
        |_: &()| RetryClass::NETWORK,
        || {
            calls.set(calls.get() + 1);
            async { Err::<(), ()>(()) }
        },
    );
    // The first retry waits 0.5 s, the second 1 s: cancel during the second wait.
    assert!(tokio::time::timeout(1000 * MS, looping).await.is_err());
    assert_eq!(calls.get(), 2);
    tokio::time::advance(60 * S).await;
    assert_eq!(calls.get(), 2);
}

#[test]
fn retry_error_message_and_source() {
    let err = RetryError {
        attempts: 4,
        reason: GiveUp::Exhausted { max_retries: 3 },
        last: std::io::Error::other("connection reset"),
    };
    assert_eq!(
        err.to_string(),
        "gave up after 4 attempt(s): no retries left (at most 3)"
    );
    assert_eq!(
        err.source().map(ToString::to_string).as_deref(),
        Some("connection reset")
    );
    let long = GiveUp::RetryAfterTooLong {
        retry_after: 300 * S,
        max: 60 * S,
    };
    assert_eq!(
        long.to_string(),
        "the server asked to retry after 300s, longer than the policy's 60s"
    );
}
