//! The typed errors a connector returns, and what the host does with each.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a connector call failed. The host's connector actor decides from the variant, never
/// from the message: the message is for the operator.
///
/// | variant | what the host does |
/// |---|---|
/// | `NotConnected` | `degraded_connection`; reconnects with the connector's backoff |
/// | `BackOff(d)` | waits `d` (at least) before the next call; no state change |
/// | `Config` | the instance cannot run as configured: it stops, and stays stopped until the config changes |
/// | `Transient` | retries the call with backoff; `degraded` after repeated failures |
/// | `Fatal` | the instance is restarted by its supervisor (counted against its restart intensity) |
/// | `EndOfInput` | a source has nothing more, ever: the instance stops normally (not restarted if transient) |
///
/// The enum is `#[non_exhaustive]`: match with a `_` arm; new variants may come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConnectorError {
    /// The connection is down (or was never made).
    #[error("not connected: {0}")]
    NotConnected(String),
    /// The peer asked to slow down (a 429, a server busy signal): wait at least this long.
    #[error("backing off for {0:?}")]
    BackOff(#[serde(with = "millis")] Duration),
    /// The configuration cannot work; the message names the key and the fix.
    #[error("invalid config: {0}")]
    Config(String),
    /// A failure that may pass (a timeout, a dropped request).
    #[error("transient failure: {0}")]
    Transient(String),
    /// The instance is broken and must be restarted.
    #[error("fatal: {0}")]
    Fatal(String),
    /// A source has no more data, ever (a finite file, a replay that ended).
    #[error("end of input")]
    EndOfInput,
}

impl ConnectorError {
    /// A stable lowercase name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotConnected(_) => "not_connected",
            Self::BackOff(_) => "back_off",
            Self::Config(_) => "config",
            Self::Transient(_) => "transient",
            Self::Fatal(_) => "fatal",
            Self::EndOfInput => "end_of_input",
        }
    }

    /// Whether calling again (after a delay) can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::NotConnected(_) | Self::BackOff(_) | Self::Transient(_)
        )
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_the_boundary_as_tagged_json() {
        for e in [
            ConnectorError::NotConnected("refused".into()),
            ConnectorError::BackOff(Duration::from_millis(1500)),
            ConnectorError::Config("endpoint: not a URL".into()),
            ConnectorError::Transient("timeout".into()),
            ConnectorError::Fatal("poisoned".into()),
            ConnectorError::EndOfInput,
        ] {
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["kind"], e.kind());
            assert_eq!(serde_json::from_value::<ConnectorError>(json).unwrap(), e);
        }
        let back_off = serde_json::to_value(ConnectorError::BackOff(Duration::from_secs(2)));
        assert_eq!(back_off.unwrap()["detail"], 2000);
    }

    #[test]
    fn only_passing_failures_are_retryable() {
        assert!(ConnectorError::Transient("x".into()).is_retryable());
        assert!(ConnectorError::BackOff(Duration::ZERO).is_retryable());
        assert!(!ConnectorError::Config("x".into()).is_retryable());
        assert!(!ConnectorError::Fatal("x".into()).is_retryable());
        assert!(!ConnectorError::EndOfInput.is_retryable());
    }
}
