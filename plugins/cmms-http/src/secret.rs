//! The CMMS credential: read from an environment variable or a file at connect, sent as a
//! sensitive header, and never shown.
//!
//! [`Secret`]'s `Debug` and `Display` print `***`, and [`Secret::scrub`] removes the secret
//! from any text the connector is about to log or return (a CMMS that echoes request headers
//! in an error body must not leak it into the node's logs).

use std::fmt;

use millwright_plugin_sdk::prelude::*;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};

use crate::config::{AuthConfig, AuthScheme};

/// A secret value; it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// `text` with every occurrence of the secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "***")
        }
    }

    /// Reads the secret `auth` points at.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] naming the variable or file and the fix.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn load(auth: &AuthConfig) -> Result<Self, ConnectorError> {
        let value = if let Some(var) = &auth.secret_env {
            std::env::var(var).map_err(|e| {
                ConnectorError::Config(format!(
                    "auth.secret_env: environment variable {var} is {}; export it with the \
                     CMMS credential, or use auth.secret_file",
                    match e {
                        std::env::VarError::NotPresent => "not set",
                        std::env::VarError::NotUnicode(_) => "not valid UTF-8",
                    }
                ))
            })?
        } else if let Some(path) = &auth.secret_file {
            tokio::fs::read_to_string(path).await.map_err(|e| {
                ConnectorError::Config(format!(
                    "auth.secret_file: cannot read {}: {e}; point it at a readable file that \
                     holds the CMMS credential",
                    path.display()
                ))
            })?
        } else {
            return Err(ConnectorError::Config(
                "auth: no secret source; set auth.secret_env or auth.secret_file".to_owned(),
            ));
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(ConnectorError::Config(
                "auth: the secret is empty; put the CMMS credential in the variable or file"
                    .to_owned(),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The header that carries this secret under `auth`'s scheme, marked sensitive (so that
    /// `Debug` of the request hides it too).
    ///
    /// # Errors
    /// [`ConnectorError::Config`] when the secret holds characters a header cannot.
    pub fn header(&self, auth: &AuthConfig) -> Result<(HeaderName, HeaderValue), ConnectorError> {
        let (name, value) = match auth.scheme {
            AuthScheme::Bearer => (AUTHORIZATION, format!("Bearer {}", self.0)),
            AuthScheme::ApiKey => (
                HeaderName::from_bytes(auth.header.as_bytes()).map_err(|_| {
                    ConnectorError::Config(format!(
                        "auth.header: {:?} is not an HTTP header name",
                        auth.header
                    ))
                })?,
                self.0.clone(),
            ),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            ConnectorError::Config(
                "auth: the secret holds characters an HTTP header cannot carry (control \
                 characters or non-ASCII); check the variable or file"
                    .to_owned(),
            )
        })?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_and_is_scrubbed_from_text() {
        let s = Secret::new("tok-123");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.scrub("echo: Bearer tok-123!"), "echo: Bearer ***!");
        let auth = AuthConfig {
            scheme: AuthScheme::Bearer,
            header: "X-API-Key".into(),
            secret_env: Some("X".into()),
            secret_file: None,
        };
        let (name, value) = s.header(&auth).unwrap();
        assert_eq!(name, AUTHORIZATION);
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("tok-123"));
    }

    #[tokio::test]
    async fn a_secret_is_read_from_an_environment_variable() {
        // Any variable this process already has (setting one would race other tests).
        let (var, value) = std::env::vars()
            .find(|(k, v)| {
                !k.is_empty() && !v.trim().is_empty() && v.bytes().all(|b| b.is_ascii_graphic())
            })
            .expect("the test process has some environment");
        let auth = AuthConfig {
            scheme: AuthScheme::ApiKey,
            header: "X-API-Key".into(),
            secret_env: Some(var),
            secret_file: None,
        };
        let secret = Secret::load(&auth).await.unwrap();
        assert_eq!(secret, Secret::new(value.trim()));
        let (name, header) = secret.header(&auth).unwrap();
        assert_eq!(name.as_str(), "x-api-key");
        assert_eq!(header.to_str().unwrap(), value.trim());
    }

    #[tokio::test]
    async fn a_missing_source_names_the_variable_or_file() {
        let auth = AuthConfig {
            scheme: AuthScheme::ApiKey,
            header: "X-API-Key".into(),
            secret_env: Some("MILLWRIGHT_CMMS_TEST_SURELY_UNSET".into()),
            secret_file: None,
        };
        let e = Secret::load(&auth).await.unwrap_err().to_string();
        assert!(
            e.contains("MILLWRIGHT_CMMS_TEST_SURELY_UNSET") && e.contains("not set"),
            "{e}"
        );
        let auth = AuthConfig {
            secret_env: None,
            secret_file: Some("/nonexistent/cmms-secret".into()),
            ..auth
        };
        let e = Secret::load(&auth).await.unwrap_err().to_string();
        assert!(e.contains("/nonexistent/cmms-secret"), "{e}");
    }
}
