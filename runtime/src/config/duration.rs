//! Durations in config files, written as humantime strings (`"500ms"`, `"5s"`, `"2m"`).
//!
//! Used through `#[serde(with = "duration")]` (or `duration::option` for optional keys). The
//! error names what was found and what a duration looks like, so the config diagnostics can
//! turn it into a hint.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};

/// What a duration looks like, shown in errors.
pub const EXPECTED: &str = "a duration such as \"500ms\" or \"5s\"";

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        humantime::parse_duration(s.trim()).map_err(|_| E::invalid_value(Unexpected::Str(s), &self))
    }
}

/// Deserializes a humantime duration string.
///
/// # Errors
/// An `invalid value` error when the text is not a duration, an `invalid type` error when the
/// value is not a string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

/// Optional durations (`#[serde(default, with = "duration::option")]`).
pub mod option {
    use super::*;

    /// Deserializes a present humantime duration string as `Some`.
    ///
    /// # Errors
    /// As [`super::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(with = "super")]
        d: Duration,
    }

    #[test]
    fn parses_humantime_and_rejects_nonsense() {
        let t: T = toml::from_str("d = \"1m 30s\"").unwrap();
        assert_eq!(t.d, Duration::from_secs(90));
        let e = toml::from_str::<T>("d = \"5 parsecs\"").unwrap_err();
        assert!(e.message().contains(EXPECTED), "{}", e.message());
        let e = toml::from_str::<T>("d = 5").unwrap_err();
        assert!(e.message().contains("invalid type"), "{}", e.message());
    }
}
