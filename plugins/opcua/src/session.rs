//! One OPC-UA session: connect (endpoint selection, certificate trust, identity), the task that
//! drives async-opcua's event loop, and how a lost connection is reported.
//!
//! One wait between attempts, the node's. async-opcua's own session retry is switched off
//! (`session_retry_limit(0)`: a failed connect is not tried again inside the library, so its
//! retry backoff never runs; and [`Session::disable_reconnects`]: a closed transport ends the
//! event loop instead of reconnecting in place). The [`Link`] then goes [`LinkState::Down`],
//! the next `read_batch` returns `NotConnected` (without any timing), the node's connector
//! actor waits its backoff and calls `connect`, and the connector builds a new session and
//! recreates the subscription and its monitored items.
//! A fresh session each time also sidesteps async-opcua 0.19's known bug where a session
//! reconnected in place stops delivering publish responses while keep-alives look healthy
//! ([`Session::trigger_publish_now`] is still called after every subscription is created).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use millwright_plugin_sdk::prelude::*;
use opcua::client::{ClientBuilder, IdentityToken, Password, Session, SessionPollResult};
use opcua::crypto::SecurityPolicy;
use opcua::types::{EndpointDescription, MessageSecurityMode};
use sha1::Digest as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{OpcUaConfig, SecurityConfig, TrustConfig, normalize_fingerprint};

/// The largest message the client accepts.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// The longest array the client decodes (bounds `max_notifications_per_publish`).
pub const MAX_ARRAY_LENGTH: usize = 100_000;

/// The application URI of the client certificate.
pub const CLIENT_APPLICATION_URI: &str = "urn:millwright:opcua-connector";

/// Whether a session is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// The event loop is opening the channel and the session.
    Connecting,
    /// Connected.
    Up,
    /// Gone, with the reason; a new [`Link`] is needed.
    Down(String),
}

/// A live session and the task that drives it. Dropping it closes the session's task.
pub struct Link {
    /// The session.
    pub session: Arc<Session>,
    /// Its state.
    pub state: watch::Receiver<LinkState>,
    driver: JoinHandle<()>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Link {
    /// The reason the link is down, if it is.
    pub fn down_reason(&self) -> Option<String> {
        match &*self.state.borrow() {
            LinkState::Down(r) => Some(r.clone()),
            _ => None,
        }
    }

    /// Closes the session politely (bounded), then stops the task.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.session.disconnect()).await;
    }
}

/// SHA-256 and SHA-1 of a DER certificate, lowercase hex.
pub fn fingerprints(der: &[u8]) -> (String, String) {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    (
        hex(&sha2::Sha256::digest(der)),
        hex(&sha1::Sha1::digest(der)),
    )
}

/// `ab:cd:...` for an operator.
pub fn colon_hex(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

fn tofu_file(cfg: &OpcUaConfig) -> std::path::PathBuf {
    let name: String = cfg
        .endpoint
        .trim_start_matches("opc.tcp://")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    cfg.pki_dir
        .join("trusted-servers")
        .join(format!("{name}.sha256"))
}

/// Checks the server certificate against the pin or the trust-on-first-use store.
///
/// # Errors
/// `Config` naming the fingerprint found, the one expected and the fix.
pub fn check_trust(cfg: &OpcUaConfig, der: &[u8], ctx: &Context) -> Result<(), ConnectorError> {
    let (sha256, sha1) = fingerprints(der);
    match cfg.trust {
        TrustConfig::Pinned => {
            let pin = cfg
                .server_fingerprint
                .as_deref()
                .map(normalize_fingerprint)
                .transpose()
                .map_err(|m| ConnectorError::Config(format!("server_fingerprint: {m}")))?
                .unwrap_or_default();
            if pin == sha256 || pin == sha1 {
                return Ok(());
            }
            Err(ConnectorError::Config(format!(
                "the server certificate of {} is not trusted: its SHA-256 fingerprint is {} but server_fingerprint pins {}; if this server is the right one, set server_fingerprint = \"{}\"",
                cfg.endpoint,
                colon_hex(&sha256),
                colon_hex(&pin),
                colon_hex(&sha256)
            )))
        }
        TrustConfig::TrustOnFirstUse => {
            let file = tofu_file(cfg);
            match std::fs::read_to_string(&file) {
                Ok(stored) => {
                    let stored = stored.trim().to_owned();
                    if stored == sha256 {
                        Ok(())
                    } else {
                        Err(ConnectorError::Config(format!(
                            "the server certificate of {} changed since it was first trusted: its SHA-256 fingerprint is {} but {} holds {}; if the server's certificate was renewed on purpose, delete that file (or pin the new one with trust = \"pinned\", server_fingerprint = \"{}\")",
                            cfg.endpoint,
                            colon_hex(&sha256),
                            file.display(),
                            colon_hex(&stored),
                            colon_hex(&sha256)
                        )))
                    }
                }
                Err(_) => {
                    if let Some(dir) = file.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            ConnectorError::Config(format!(
                                "pki_dir: cannot create {}: {e} (make it writable)",
                                dir.display()
                            ))
                        })?;
                    }
                    std::fs::write(&file, format!("{sha256}\n")).map_err(|e| {
                        ConnectorError::Config(format!(
                            "pki_dir: cannot write {}: {e} (make it writable)",
                            file.display()
                        ))
                    })?;
                    ctx.log(
                        Level::Warn,
                        "trusting the server certificate on first use",
                        &[
                            ("endpoint", &cfg.endpoint),
                            ("sha256", &colon_hex(&sha256)),
                            ("stored_in", &file.display()),
                        ],
                    );
                    Ok(())
                }
            }
        }
    }
}

/// `NotConnected` with the cause only: the connector names the endpoint once, where it
/// reports the failure.
fn not_connected(what: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::NotConnected(format!("{what}: {e}"))
}

/// Opens a session to the configured endpoint: GetEndpoints, pick the endpoint of the
/// configured policy (its URL replaced by the configured one), check the server certificate,
/// then create and activate the session.
///
/// # Errors
/// `NotConnected` for network failures, `Config` for a policy the server does not offer,
/// an untrusted certificate or rejected credentials.
pub async fn open(cfg: &OpcUaConfig, ctx: &Context) -> Result<Link, ConnectorError> {
    let timeout = cfg.request_timeout();
    let mut client = ClientBuilder::new()
        .application_name("Millwright OPC-UA connector")
        .application_uri(CLIENT_APPLICATION_URI)
        .product_uri("urn:millwright")
        .pki_dir(cfg.pki_dir.clone())
        .certificate_path("own/cert.der")
        .private_key_path("private/private.pem")
        .create_sample_keypair(cfg.security != SecurityConfig::None)
        // The connector checks the server certificate itself (pin or trust on first use).
        .trust_server_certs(true)
        .verify_server_certs(false)
        // The connector owns the reconnect: no retries inside async-opcua.
        .session_retry_limit(0)
        .request_timeout(timeout)
        .keep_alive_interval(Duration::from_secs(5))
        .max_failed_keep_alive_count(3)
        .session_name(format!("millwright/{}", ctx.instance()))
        .session_timeout(60_000)
        // Large subscriptions make large publish responses: 16 MiB in up to 257 chunks
        // (async-opcua's default is 320 KiB).
        .max_message_size(MAX_MESSAGE_SIZE)
        .max_chunk_count(MAX_MESSAGE_SIZE / 65_535 + 1)
        // A publish response carries up to max_notifications_per_publish items in one array
        // (async-opcua's default limit is 1,000 and drops the session past it).
        .max_array_length(MAX_ARRAY_LENGTH)
        .client()
        .map_err(|e| ConnectorError::Config(format!("pki_dir: {}", e.join("; "))))?;

    let endpoints = tokio::time::timeout(
        timeout,
        client.get_server_endpoints_from_url(cfg.endpoint.clone()),
    )
    .await
    .map_err(|_| not_connected("GetEndpoints", "no answer within request_timeout"))?
    .map_err(|e| not_connected("GetEndpoints failed", e))?;

    let (policy, mode) = match cfg.security {
        SecurityConfig::None => (SecurityPolicy::None, MessageSecurityMode::None),
        SecurityConfig::Basic256sha256 => (
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
        ),
    };
    let offered = |e: &EndpointDescription| {
        format!(
            "{} {:?}",
            SecurityPolicy::from_uri(e.security_policy_uri.as_ref()),
            e.security_mode
        )
    };
    let Some(mut endpoint) = endpoints
        .iter()
        .find(|e| e.security_mode == mode && e.security_policy_uri.as_ref() == policy.to_uri())
        .cloned()
    else {
        return Err(ConnectorError::Config(format!(
            "security: {} does not offer {policy} {mode:?} (it offers {}); set security to one it offers",
            cfg.endpoint,
            endpoints.iter().map(offered).collect::<Vec<_>>().join(", ")
        )));
    };
    // The configured address wins over what the server advertises (NAT, proxies, docker).
    endpoint.endpoint_url = cfg.endpoint.clone().into();

    if cfg.security != SecurityConfig::None {
        let der = endpoint
            .server_certificate
            .value
            .clone()
            .unwrap_or_default();
        if der.is_empty() {
            return Err(ConnectorError::Config(format!(
                "{} sent no server certificate for {policy}; use security = \"none\" or fix the server",
                cfg.endpoint
            )));
        }
        check_trust(cfg, &der, ctx)?;
    }

    let identity = match cfg.password()? {
        None => IdentityToken::Anonymous,
        Some((user, password)) => IdentityToken::UserName(user, Password::new(password)),
    };
    let (session, event_loop) = client
        .connect_to_endpoint_directly(endpoint, identity)
        .map_err(|e| not_connected("cannot create a session", e))?;
    session.disable_reconnects();

    let (state_tx, mut state) = watch::channel(LinkState::Connecting);
    let driver = tokio::spawn(async move {
        let stream = event_loop.enter();
        futures::pin_mut!(stream);
        loop {
            match stream.next().await {
                Some(Ok(SessionPollResult::Reconnected(_))) => {
                    state_tx.send_replace(LinkState::Up);
                }
                Some(Ok(SessionPollResult::ConnectionLost(code))) => {
                    state_tx.send_replace(LinkState::Down(format!("connection lost ({code})")));
                    break;
                }
                Some(Ok(SessionPollResult::ReconnectFailed(code))) => {
                    state_tx.send_replace(LinkState::Down(format!("connect failed ({code})")));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(code)) => {
                    state_tx.send_replace(LinkState::Down(format!("session ended ({code})")));
                    break;
                }
                None => {
                    // With reconnects disabled, a closed transport ends the stream.
                    state_tx.send_replace(LinkState::Down(
                        "connection closed by the server or the network".to_owned(),
                    ));
                    break;
                }
            }
        }
    });
    let link = Link {
        session,
        state: state.clone(),
        driver,
    };
    let up = tokio::time::timeout(
        timeout,
        state.wait_for(|s| !matches!(s, LinkState::Connecting)),
    )
    .await;
    match up {
        Err(_) => Err(not_connected(
            "the session did not open",
            "no answer within request_timeout",
        )),
        Ok(Err(_)) => Err(not_connected(
            "the session did not open",
            "its event loop ended",
        )),
        Ok(Ok(s)) => match &*s {
            LinkState::Up => Ok(()),
            LinkState::Down(reason) => {
                let reason = reason.clone();
                let config_problem = [
                    "BadUserAccessDenied",
                    "BadIdentityToken",
                    "BadSecurityPolicyRejected",
                    "BadCertificate",
                    "BadSecurityChecksFailed",
                ]
                .iter()
                .any(|b| reason.contains(b));
                if config_problem {
                    Err(ConnectorError::Config(format!(
                        "{}: the server refused the session: {reason} (check user, security and that the server trusts the client certificate in {}/own)",
                        cfg.endpoint,
                        cfg.pki_dir.display()
                    )))
                } else {
                    Err(not_connected("the session did not open", reason))
                }
            }
            LinkState::Connecting => unreachable!("waited for another state"),
        },
    }?;
    Ok(link)
}
