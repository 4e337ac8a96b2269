//! Jittered exponential backoff between a child's restarts.
//!
//! The `n`-th consecutive restart of a child (counting from 0) waits
//! `min(max, min_backoff * 2^n) * (1 + jitter * r)` with `r` uniform in `[0, 1)`, so every
//! delay lies in `[base, base * (1 + jitter)]` and never exceeds `max * (1 + jitter)`.
//! A child that stayed up for `reset_after` starts again from `n = 0`.

use std::time::Duration;

/// The delay policy between restarts of one child.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The delay before the first restart (`n = 0`).
    pub min: Duration,
    /// The cap on the un-jittered delay.
    pub max: Duration,
    /// The relative jitter added on top: `0.2` adds up to 20 %. Negative or non-finite
    /// values count as 0.
    pub jitter: f64,
    /// A child that ran this long without failing starts its backoff again from `min`.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    /// 100 ms doubling to 30 s, 20 % jitter, reset after 30 s of stable running. With the
    /// default intensity (3 restarts in 5 s) a tight crash loop escalates within a second.
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(30),
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl BackoffPolicy {
    /// No delay at all: restarts happen as soon as the failure is seen.
    pub fn none() -> Self {
        Self {
            min: Duration::ZERO,
            max: Duration::ZERO,
            jitter: 0.0,
            reset_after: Duration::ZERO,
        }
    }

    /// The delay before the `n`-th consecutive restart without jitter:
    /// `min(max, min_backoff * 2^n)`.
    pub fn base(&self, n: u32) -> Duration {
        if self.min.is_zero() {
            return Duration::ZERO;
        }
        // 2^31 * min overflows any cap that matters; stop doubling long before that.
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.min
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The jittered delay before the `n`-th consecutive restart, for a unit random number
    /// `unit` in `[0, 1)` (values outside are clamped).
    pub fn delay_with(&self, n: u32, unit: f64) -> Duration {
        let base = self.base(n);
        let jitter = if self.jitter.is_finite() && self.jitter > 0.0 {
            self.jitter
        } else {
            0.0
        };
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let extra = base.as_secs_f64() * jitter * unit;
        Duration::try_from_secs_f64(extra).map_or(base, |e| base.saturating_add(e))
    }

    /// The jittered delay before the `n`-th consecutive restart, with a fresh random number.
    pub fn delay(&self, n: u32) -> Duration {
        self.delay_with(n, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn base_doubles_from_min_and_caps_at_max() {
        let p = BackoffPolicy {
            min: ms(100),
            max: ms(1000),
            jitter: 0.0,
            reset_after: ms(0),
        };
        let got: Vec<_> = (0..6).map(|n| p.base(n)).collect();
        assert_eq!(
            got,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(p.base(u32::MAX), ms(1000));
    }

    #[test]
    fn none_is_always_zero() {
        let p = BackoffPolicy::none();
        for n in [0, 1, 10, 1000] {
            assert_eq!(p.delay(n), Duration::ZERO);
        }
    }

    #[test]
    fn jitter_adds_at_most_its_fraction() {
        let p = BackoffPolicy {
            jitter: 0.5,
            ..BackoffPolicy::default()
        };
        assert_eq!(p.delay_with(0, 0.0), ms(100));
        assert_eq!(p.delay_with(0, 1.0), ms(150));
        assert_eq!(p.delay_with(1, 0.5), ms(250));
    }

    #[test]
    fn bad_jitter_and_unit_values_are_harmless() {
        for jitter in [f64::NAN, f64::INFINITY, -1.0] {
            let p = BackoffPolicy {
                jitter,
                ..BackoffPolicy::default()
            };
            assert_eq!(p.delay_with(0, 0.7), ms(100));
        }
        let p = BackoffPolicy::default();
        assert_eq!(p.delay_with(0, f64::NAN), ms(100));
        assert_eq!(p.delay_with(0, 7.0), ms(120));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn delays_stay_within_their_bounds(
            min_ms in 0u64..10_000,
            max_ms in 0u64..120_000,
            jitter in 0.0f64..2.0,
            n in 0u32..200,
            unit in 0.0f64..1.0,
        ) {
            let p = BackoffPolicy { min: ms(min_ms), max: ms(max_ms), jitter, reset_after: ms(0) };
            let expected_base = if min_ms == 0 {
                Duration::ZERO
            } else {
                ms(max_ms).min(ms(min_ms.saturating_mul(1u64 << n.min(40))))
            };
            prop_assert_eq!(p.base(n), expected_base);
            let d = p.delay_with(n, unit);
            // Within [base, base * (1 + jitter)] (1 µs of float slack) ...
            prop_assert!(d >= expected_base);
            let upper = expected_base.as_secs_f64() * (1.0 + jitter);
            prop_assert!(d.as_secs_f64() <= upper + 1e-6, "{:?} > {}", d, upper);
            // ... and capped at max * (1 + jitter).
            prop_assert!(d.as_secs_f64() <= ms(max_ms).as_secs_f64() * (1.0 + jitter) + 1e-6);
            // Never shorter for a later restart with the same draw.
            prop_assert!(p.delay_with(n + 1, unit) >= d);
        }
    }
}

/// A wait as an operator reads it: `250ms`, `1.7s`, `2m 5s` (no more precision than a person
/// can use).
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        let s = (ms + 500) / 1_000;
        match s % 60 {
            0 => format!("{}m", s / 60),
            rest => format!("{}m {rest}s", s / 60),
        }
    }
}

#[cfg(test)]
mod human_tests {
    use super::*;

    #[test]
    fn waits_read_as_a_person_would_say_them() {
        for (ms, text) in [
            (0, "0ms"),
            (250, "250ms"),
            (1_000, "1s"),
            (1_713, "1.7s"),
            (59_940, "59.9s"),
            (60_000, "1m"),
            (125_400, "2m 5s"),
        ] {
            assert_eq!(human(Duration::from_millis(ms)), text);
        }
    }
}
