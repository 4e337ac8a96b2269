//! Tests of the breaker's state machine: every transition, the window's growth, the counters,
//! the shared handle's `call`, and a property test against the documented rules.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

const S: Duration = Duration::from_secs(1);

fn breaker() -> CircuitBreaker {
    CircuitBreaker::new(BreakerConfig::default())
}

/// Fails `n` admitted calls at `now`.
fn fail(b: &mut CircuitBreaker, n: u32, now: Instant) {
    for _ in 0..n {
        b.allow_at(now).expect("admitted while failing");
        b.on_failure_at(now);
    }
}

/// Opens `b` at `t0`, then fails one probe after each window, returning when it opened last.
fn open_and_fail_probes(b: &mut CircuitBreaker, t0: Instant, probes: u32) -> Instant {
    fail(b, 5, t0);
    let mut now = t0;
    for _ in 0..probes {
        let BreakerState::Open { until } = b.state() else {
            panic!("expected open, got {:?}", b.state());
        };
        now = until;
        b.allow_at(now)
            .expect("probe admitted once the window passed");
        b.on_failure_at(now);
    }
    now
}

#[test]
fn defaults_match_the_design() {
    let c = BreakerConfig::default();
    assert_eq!(c.failure_threshold, 5);
    assert_eq!(c.success_threshold, 2);
    assert_eq!(c.open_base, 10 * S);
    assert_eq!(c.open_max, 120 * S);
    assert_eq!(c.half_open_max_probes, 1);
}

#[test]
fn closed_admits_and_opens_after_five_consecutive_failures() {
    let t0 = Instant::now();
    let mut b = breaker();
    fail(&mut b, 4, t0);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.stats().consecutive_failures, 4);
    b.allow_at(t0).expect("still closed after 4 failures");
    b.on_failure_at(t0);
    assert_eq!(b.state(), BreakerState::Open { until: t0 + 10 * S });
    assert_eq!(b.stats().opens, 1);
    assert_eq!(b.stats().open_window, 10 * S);
}

#[test]
fn a_success_resets_the_consecutive_failure_count() {
    let t0 = Instant::now();
    let mut b = breaker();
    fail(&mut b, 4, t0);
    b.on_success();
    assert_eq!(b.stats().consecutive_failures, 0);
    fail(&mut b, 4, t0);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "4 + 4 failures are not 5 consecutive"
    );
    fail(&mut b, 1, t0);
    assert!(matches!(b.state(), BreakerState::Open { .. }));
}

#[test]
fn open_rejects_until_the_window_passes() {
    let t0 = Instant::now();
    let mut b = breaker();
    fail(&mut b, 5, t0);
    assert_eq!(b.allow_at(t0), Err(BreakerOpen { retry_in: 10 * S }));
    let almost = t0 + 10 * S - Duration::from_millis(1);
    assert_eq!(
        b.allow_at(almost),
        Err(BreakerOpen {
            retry_in: Duration::from_millis(1)
        })
    );
    assert_eq!(b.stats().rejections, 2);
    assert!(matches!(b.state(), BreakerState::Open { .. }));
    b.allow_at(t0 + 10 * S)
        .expect("the window has passed: a probe");
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[test]
fn half_open_admits_one_probe_at_a_time() {
    let t0 = Instant::now();
    let t1 = t0 + 10 * S;
    let mut b = breaker();
    fail(&mut b, 5, t0);
    b.allow_at(t1).expect("first probe");
    let second = b.allow_at(t1 + S).unwrap_err();
    assert_eq!(
        second.retry_in,
        9 * S,
        "the slot frees when the probe times out"
    );
    b.on_success();
    assert_eq!(
        b.state(),
        BreakerState::HalfOpen,
        "one success is not enough"
    );
    b.allow_at(t1 + S)
        .expect("the slot was freed by the report");
}

#[test]
fn two_successful_probes_close_the_breaker() {
    let t0 = Instant::now();
    let t1 = t0 + 10 * S;
    let mut b = breaker();
    fail(&mut b, 5, t0);
    for _ in 0..2 {
        b.allow_at(t1).expect("probe");
        b.on_success();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.stats().consecutive_failures, 0);
    // Closed again: five new failures open it, for the base window again.
    fail(&mut b, 5, t1);
    assert_eq!(b.state(), BreakerState::Open { until: t1 + 10 * S });
}

#[test]
fn a_half_open_failure_reopens_with_a_doubled_window_up_to_the_cap() {
    let t0 = Instant::now();
    let mut b = breaker();
    let mut windows = Vec::new();
    fail(&mut b, 5, t0);
    windows.push(b.stats().open_window);
    for probes in 1..=6 {
        let mut b2 = breaker();
        let at = open_and_fail_probes(&mut b2, t0, probes);
        let w = b2.stats().open_window;
        assert_eq!(b2.state(), BreakerState::Open { until: at + w });
        windows.push(w);
    }
    let secs: Vec<u64> = windows.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [10, 20, 40, 80, 120, 120, 120]);
}

#[test]
fn a_probe_success_then_failure_still_reopens_and_escalates() {
    let t0 = Instant::now();
    let t1 = t0 + 10 * S;
    let mut b = breaker();
    fail(&mut b, 5, t0);
    b.allow_at(t1).unwrap();
    b.on_success();
    b.allow_at(t1).unwrap();
    b.on_failure_at(t1);
    assert_eq!(b.state(), BreakerState::Open { until: t1 + 20 * S });
}

#[test]
fn a_lost_probe_is_replaced_after_the_probe_timeout() {
    let t0 = Instant::now();
    let t1 = t0 + 10 * S;
    let mut b = breaker();
    fail(&mut b, 5, t0);
    b.allow_at(t1).expect("probe that will never report");
    assert!(b.allow_at(t1 + 9 * S).is_err());
    b.allow_at(t1 + 10 * S)
        .expect("the lost probe's slot is reused");
    assert!(b.allow_at(t1 + 10 * S).is_err(), "and only one slot");
}

#[test]
fn late_reports_while_open_are_ignored() {
    let t0 = Instant::now();
    let mut b = breaker();
    fail(&mut b, 5, t0);
    let before = b.state();
    b.on_success();
    b.on_failure_at(t0 + S);
    assert_eq!(b.state(), before);
    assert_eq!(b.stats().opens, 1);
}

#[test]
fn trip_opens_from_every_state() {
    let t0 = Instant::now();
    // Closed -> Open for the base window.
    let mut b = breaker();
    b.trip_at(t0);
    assert_eq!(b.state(), BreakerState::Open { until: t0 + 10 * S });
    // Open -> Open: the current window restarts from now.
    b.trip_at(t0 + 5 * S);
    assert_eq!(b.state(), BreakerState::Open { until: t0 + 15 * S });
    // HalfOpen -> Open with a doubled window.
    b.allow_at(t0 + 15 * S).unwrap();
    b.trip_at(t0 + 16 * S);
    assert_eq!(b.state(), BreakerState::Open { until: t0 + 36 * S });
    assert_eq!(b.stats().opens, 3);
}

#[test]
fn reset_closes_from_every_state_and_restarts_the_window() {
    let t0 = Instant::now();
    let mut b = breaker();
    fail(&mut b, 3, t0);
    b.reset();
    assert_eq!(b.stats().consecutive_failures, 0);
    // From open (escalated to 40 s).
    open_and_fail_probes(&mut b, t0, 2);
    assert_eq!(b.stats().open_window, 40 * S);
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    b.allow_at(t0).expect("closed admits");
    // From half-open.
    fail(&mut b, 5, t0);
    b.allow_at(t0 + 10 * S).unwrap();
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    // The next open uses the base window again; counters survive the reset.
    fail(&mut b, 5, t0);
    assert_eq!(b.stats().open_window, 10 * S);
    assert_eq!(b.stats().opens, 5);
}

#[test]
fn configuration_is_honoured_and_zero_thresholds_count_as_one() {
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(BreakerConfig {
        failure_threshold: 0,
        success_threshold: 0,
        open_base: 3 * S,
        open_max: 5 * S,
        half_open_max_probes: 2,
        probe_timeout: S,
    });
    b.allow_at(t0).unwrap();
    b.on_failure_at(t0);
    assert_eq!(b.state(), BreakerState::Open { until: t0 + 3 * S });
    let t1 = t0 + 3 * S;
    b.allow_at(t1).expect("probe 1");
    b.allow_at(t1).expect("probe 2");
    assert!(b.allow_at(t1).is_err(), "two probe slots");
    b.on_failure_at(t1);
    assert_eq!(
        b.state(),
        BreakerState::Open { until: t1 + 5 * S },
        "6 s capped at 5 s"
    );
    b.allow_at(t1 + 5 * S).unwrap();
    b.on_success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn open_base_above_open_max_is_capped_and_huge_windows_do_not_panic() {
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(BreakerConfig {
        open_base: 60 * S,
        open_max: 30 * S,
        ..BreakerConfig::default()
    });
    fail(&mut b, 5, t0);
    assert_eq!(b.state(), BreakerState::Open { until: t0 + 30 * S });

    let mut b = CircuitBreaker::new(BreakerConfig {
        open_base: Duration::MAX,
        open_max: Duration::MAX,
        ..BreakerConfig::default()
    });
    fail(&mut b, 5, t0);
    let err = b.allow_at(t0 + 3600 * S).unwrap_err();
    assert!(err.retry_in > 3600 * 24 * 365 * S, "{err:?}");
}

#[test]
fn state_names_are_stable() {
    let names = [
        BreakerState::Closed.name(),
        BreakerState::Open {
            until: Instant::now(),
        }
        .name(),
        BreakerState::HalfOpen.name(),
    ];
    assert_eq!(names, ["closed", "open", "half_open"]);
}

#[test]
fn breaker_open_message_is_lowercase_and_says_when() {
    let e = BreakerOpen { retry_in: 10 * S };
    assert_eq!(e.to_string(), "circuit breaker is open: retry in 10s");
}

// ---- SharedCircuitBreaker ----

fn io_err() -> std::io::Error {
    std::io::Error::other("down")
}

#[tokio::test(start_paused = true)]
async fn shared_breaker_follows_the_same_machine_under_paused_time() {
    let b = SharedCircuitBreaker::default();
    let clone = b.clone();
    for _ in 0..5 {
        b.allow().unwrap();
        clone.on_failure();
    }
    let err = b.allow().unwrap_err();
    assert_eq!(err.retry_in, 10 * S);
    tokio::time::advance(10 * S).await;
    b.allow().expect("probe after the window");
    assert_eq!(clone.state(), BreakerState::HalfOpen);
    b.on_success();
    b.allow().unwrap();
    b.on_success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(clone.stats().opens, 1);
    assert_eq!(clone.stats().rejections, 1);
}

#[tokio::test(start_paused = true)]
async fn shared_fast_path_still_counts_failures_after_a_success() {
    let b = SharedCircuitBreaker::default();
    // failures, success (resets through the lock), then failures again.
    for _ in 0..4 {
        b.on_failure();
    }
    b.on_success();
    assert_eq!(b.stats().consecutive_failures, 0);
    for _ in 0..4 {
        b.on_failure();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    b.on_failure();
    assert!(matches!(b.state(), BreakerState::Open { .. }));
    assert!(b.allow().is_err(), "the fast path must see the open state");
    b.reset();
    b.allow().expect("reset reopens the fast path");
    b.trip();
    assert!(b.allow().is_err(), "trip closes the fast path");
}

#[tokio::test(start_paused = true)]
async fn call_reports_outcomes_and_does_not_poll_when_open() {
    let b = SharedCircuitBreaker::default();
    // Errors that are not failures (the dependency answered) count as successes.
    for _ in 0..10 {
        let r: Result<(), _> = b.call(async { Err(io_err()) }, |_| false).await;
        assert!(matches!(r, Err(BreakerError::Inner(_))));
    }
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..5 {
        let r: Result<(), _> = b.call(async { Err(io_err()) }, |_| true).await;
        assert!(r.unwrap_err().into_inner().is_some());
    }
    let mut polled = false;
    let r: Result<(), BreakerError<std::io::Error>> = b
        .call(
            async {
                polled = true;
                Ok(())
            },
            |_| true,
        )
        .await;
    assert!(matches!(r, Err(BreakerError::Open(BreakerOpen { retry_in })) if retry_in == 10 * S));
    assert!(!polled, "a rejected call's future is never polled");
    tokio::time::advance(10 * S).await;
    for _ in 0..2 {
        let r: Result<u8, BreakerError<std::io::Error>> = b.call(async { Ok(7) }, |_| true).await;
        assert_eq!(r.unwrap(), 7);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_its_slot() {
    let b = SharedCircuitBreaker::default();
    b.trip();
    tokio::time::advance(10 * S).await;
    let probe = b.call(std::future::pending::<Result<(), std::io::Error>>(), |_| {
        true
    });
    // Poll the probe once so it is admitted, then cancel it by timing out.
    let timed_out = tokio::time::timeout(S, probe).await;
    assert!(timed_out.is_err());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b.allow()
        .expect("the cancelled probe freed its slot before the probe timeout");
}

#[test]
fn from_plain_breaker_keeps_its_state() {
    let t0 = Instant::now();
    let mut plain = breaker();
    fail(&mut plain, 5, t0);
    let shared = SharedCircuitBreaker::from(plain);
    assert!(matches!(shared.state(), BreakerState::Open { .. }));
    assert!(shared.allow().is_err(), "the fast path starts guarded");
}

#[test]
fn shared_breaker_is_send_sync_and_usable_from_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SharedCircuitBreaker>();
    let b = SharedCircuitBreaker::new(BreakerConfig {
        failure_threshold: 400,
        ..BreakerConfig::default()
    });
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..100 {
                    b.allow().unwrap();
                    b.on_failure();
                }
            });
        }
    });
    assert!(
        matches!(b.state(), BreakerState::Open { .. }),
        "400 failures from 4 threads, none lost"
    );
}

// ---- property test: random operations against the documented rules ----

#[derive(Debug, Clone)]
enum Op {
    Allow,
    Success,
    Failure,
    Trip,
    Reset,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Allow),
        3 => Just(Op::Success),
        3 => Just(Op::Failure),
        1 => Just(Op::Trip),
        1 => Just(Op::Reset),
        3 => (0u64..40_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #[test]
    fn every_transition_follows_the_rules(ops in proptest::collection::vec(op(), 1..200)) {
        let config = BreakerConfig::default();
        let mut b = CircuitBreaker::new(config);
        let mut now = Instant::now();
        // What the rules say the breaker must have seen, tracked independently.
        let mut failures_while_closed = 0u32;
        let mut successes_while_half_open = 0u32;
        let mut opens = 0u64;
        for op in ops {
            let before = b.state();
            let window_before = b.stats().open_window;
            match op {
                Op::Advance(ms) => now += Duration::from_millis(ms),
                Op::Allow => {
                    let r = b.allow_at(now);
                    match before {
                        BreakerState::Closed => prop_assert!(r.is_ok()),
                        BreakerState::Open { until } if now < until => {
                            prop_assert_eq!(r, Err(BreakerOpen { retry_in: until - now }));
                        }
                        BreakerState::Open { .. } => {
                            prop_assert!(r.is_ok());
                            prop_assert_eq!(b.state(), BreakerState::HalfOpen);
                            successes_while_half_open = 0;
                        }
                        BreakerState::HalfOpen => {
                            if let Err(e) = r {
                                prop_assert!(e.retry_in <= config.probe_timeout);
                            }
                        }
                    }
                }
                Op::Success => {
                    b.on_success();
                    match before {
                        BreakerState::Closed => failures_while_closed = 0,
                        BreakerState::HalfOpen => {
                            successes_while_half_open += 1;
                            let expected = if successes_while_half_open >= 2 {
                                failures_while_closed = 0;
                                BreakerState::Closed
                            } else {
                                BreakerState::HalfOpen
                            };
                            prop_assert_eq!(b.state(), expected);
                        }
                        BreakerState::Open { .. } => prop_assert_eq!(b.state(), before),
                    }
                }
                Op::Failure => {
                    b.on_failure_at(now);
                    match before {
                        BreakerState::Closed => {
                            failures_while_closed += 1;
                            if failures_while_closed >= 5 {
                                opens += 1;
                                failures_while_closed = 0;
                                prop_assert_eq!(b.state(), BreakerState::Open { until: now + config.open_base });
                            } else {
                                prop_assert_eq!(b.state(), BreakerState::Closed);
                            }
                        }
                        BreakerState::HalfOpen => {
                            opens += 1;
                            let w = (window_before * 2).min(config.open_max);
                            prop_assert_eq!(b.state(), BreakerState::Open { until: now + w });
                        }
                        BreakerState::Open { .. } => prop_assert_eq!(b.state(), before),
                    }
                }
                Op::Trip => {
                    b.trip_at(now);
                    opens += 1;
                    failures_while_closed = 0;
                    let reopened = matches!(b.state(), BreakerState::Open { until } if until > now);
                    prop_assert!(reopened, "trip must open");
                }
                Op::Reset => {
                    b.reset();
                    failures_while_closed = 0;
                    prop_assert_eq!(b.state(), BreakerState::Closed);
                }
            }
            let stats = b.stats();
            prop_assert_eq!(stats.opens, opens);
            prop_assert_eq!(stats.consecutive_failures, failures_while_closed);
            if stats.opens > 0 {
                prop_assert!(stats.open_window >= config.open_base);
                prop_assert!(stats.open_window <= config.open_max);
            }
        }
    }
}
