//! The JetStream stream the broker publishes into in `jetstream` mode.
//!
//! At boot (and after every reconnect until it succeeds) the broker makes sure the stream
//! exists: it creates it when it is missing, and checks it when it is there. A stream that
//! exists with settings that break the broker's guarantees (it does not capture the event
//! subjects, or keeps no de-duplication window) is a [`StreamError::Conflict`] naming the
//! setting, what was found, what is needed and the fix; the broker never changes an existing
//! stream behind an operator's back.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// The stream the broker publishes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name (default `MW_EVENTS`).
    pub name: String,
    /// Subjects it captures (default `mw.ev.>`).
    pub subjects: Vec<String>,
    /// How long the server remembers message ids to drop duplicates (default 2 min); must
    /// cover the longest time a publish can be retried after its first try.
    pub duplicate_window: Duration,
    /// How long the stream keeps events (default 7 days; zero keeps them forever).
    pub max_age: Duration,
    /// Replicas in a cluster (default 1).
    pub replicas: usize,
}

impl Default for StreamSpec {
    fn default() -> Self {
        Self {
            name: "MW_EVENTS".to_owned(),
            subjects: vec!["mw.ev.>".to_owned()],
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
        }
    }
}

/// Why the stream could not be made ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream exists with a setting the broker cannot work with.
    #[error(
        "jetstream stream {stream}: {setting} is {found} but the broker needs {expected} \
         ({fix})"
    )]
    Conflict {
        /// The stream.
        stream: String,
        /// The setting.
        setting: &'static str,
        /// What the server has.
        found: String,
        /// What the broker needs.
        expected: String,
        /// How to fix it.
        fix: String,
    },
    /// The server did not answer, or JetStream is not enabled; the broker retries.
    #[error("jetstream stream {stream} is not available yet: {reason}")]
    Unavailable {
        /// The stream.
        stream: String,
        /// The client's error.
        reason: String,
    },
}

impl StreamError {
    /// Whether retrying later can help (a conflict needs an operator).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Creates the stream when it is missing and checks it when it exists.
///
/// # Errors
/// [`StreamError::Conflict`] when an existing stream does not fit; [`StreamError::Unavailable`]
/// when the server cannot be asked.
///
/// # Cancel safety
/// Cancel safe: at worst a stream is created and the answer lost; the next call checks it.
pub async fn ensure(js: &jetstream::Context, spec: &StreamSpec) -> Result<(), StreamError> {
    let unavailable = |e: &dyn std::fmt::Display| StreamError::Unavailable {
        stream: spec.name.clone(),
        reason: e.to_string(),
    };
    match js.get_stream(&spec.name).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|e| unavailable(&e))?;
            check(spec, &info.config)
        }
        Err(e) if is_not_found(&e) => {
            let config = stream::Config {
                name: spec.name.clone(),
                subjects: spec.subjects.clone(),
                duplicate_window: spec.duplicate_window,
                max_age: spec.max_age,
                num_replicas: spec.replicas.max(1),
                storage: stream::StorageType::File,
                ..Default::default()
            };
            match js.create_stream(config).await {
                Ok(_) => {
                    tracing::info!(stream = %spec.name, subjects = ?spec.subjects, "jetstream stream created");
                    Ok(())
                }
                Err(e) => Err(unavailable(&e)),
            }
        }
        Err(e) => Err(unavailable(&e)),
    }
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Checks an existing stream's config against the spec.
fn check(spec: &StreamSpec, found: &stream::Config) -> Result<(), StreamError> {
    let conflict = |setting, found: String, expected: String, fix: String| StreamError::Conflict {
        stream: spec.name.clone(),
        setting,
        found,
        expected,
        fix,
    };
    let missing: Vec<&String> = spec
        .subjects
        .iter()
        .filter(|s| !found.subjects.contains(s))
        .collect();
    if !missing.is_empty() {
        return Err(conflict(
            "subjects",
            format!("{:?}", found.subjects),
            format!("it to include {missing:?}"),
            format!(
                "add the subjects with `nats stream edit {}`, or set [broker] stream to another name",
                spec.name
            ),
        ));
    }
    if found.duplicate_window.is_zero() {
        return Err(conflict(
            "duplicate_window",
            "0s".to_owned(),
            format!("{:?}", spec.duplicate_window),
            "set a duplicate window so retried publishes are de-duplicated".to_owned(),
        ));
    }
    if found.duplicate_window < spec.duplicate_window {
        tracing::warn!(
            stream = %spec.name,
            found = ?found.duplicate_window,
            wanted = ?spec.duplicate_window,
            "jetstream stream keeps message ids for less than the configured duplicate window; \
             a publish retried after that may be stored twice"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(subjects: &[&str], window: Duration) -> stream::Config {
        stream::Config {
            name: "MW_EVENTS".to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            duplicate_window: window,
            ..Default::default()
        }
    }

    #[test]
    fn a_stream_that_captures_the_subjects_fits() {
        let spec = StreamSpec::default();
        assert_eq!(
            check(
                &spec,
                &config(&["mw.ev.>", "other.>"], spec.duplicate_window)
            ),
            Ok(())
        );
    }

    #[test]
    fn a_stream_without_the_event_subjects_is_a_conflict_naming_the_fix() {
        let spec = StreamSpec::default();
        let err = check(&spec, &config(&["orders.>"], spec.duplicate_window)).unwrap_err();
        let text = err.to_string();
        assert!(!err.is_retryable());
        assert!(text.contains("MW_EVENTS"), "{text}");
        assert!(text.contains("subjects"), "{text}");
        assert!(text.contains("orders.>"), "{text}");
        assert!(text.contains("nats stream edit"), "{text}");
    }

    #[test]
    fn a_stream_without_a_duplicate_window_is_a_conflict() {
        let spec = StreamSpec::default();
        let err = check(&spec, &config(&["mw.ev.>"], Duration::ZERO)).unwrap_err();
        assert!(err.to_string().contains("duplicate_window"), "{err}");
    }
}
