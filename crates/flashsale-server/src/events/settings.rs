//! The `[events]` table of the settings file: the sinks events are delivered to, any number,
//! each with a `name` and a `kind`:
//!
//! ```toml
//! [[events.sinks]]
//! name = "shop"
//! kind = "webhook"
//! url = "https://shop.example/flashsale-events"
//! secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
//! retry_hours = 24
//! ```
//!
//! Every rule is checked at start (`check`): an unknown kind, a missing or malformed secret, a
//! bad URL or number stops the server with the sink's name and the reason. An unreachable URL is
//! not an error: the sink waits for it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest a sink's name may be (it labels metrics and the console).
pub const SINK_NAME_LENGTH_MAX: usize = 64;
pub const RETRY_HOURS_DEFAULT: u32 = 24;
pub const RETRY_HOURS_MAX: u32 = 24 * 365;
pub const TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// A delivery that takes longer than this is given up (and retried); the lease of a cluster
/// node is kept well above it.
pub const TIMEOUT_MS_MAX: u64 = 60_000;

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
pub struct EventsSettings {
    #[serde(default)]
    pub sinks: Vec<SinkSettings>,
}

/// One `[[events.sinks]]` entry as written; `check` turns it into a `SinkConfig`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    /// Names the sink in metrics, the console and its cursors (keep it when editing a sink, or
    /// its events are delivered again from the first one retained).
    pub name: String,
    /// `webhook`, `amqp` or `nats`.
    pub kind: String,
    /// webhook: where to POST; amqp: `amqp://…`; nats: `nats://…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// webhook: the Standard Webhooks secret, `whsec_` then base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How long one event is retried before it is set aside (dead-lettered); default 24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_hours: Option<u32>,
    /// Longest one delivery may take, in ms; default 5,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// amqp: the durable topic exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// nats: the subjects' prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_prefix: Option<String>,
}

impl fmt::Debug for SinkSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A URL may carry credentials (amqp://user:password@…), a secret is one.
        let redact = |value: &Option<String>| value.as_ref().map(|_| "<redacted>");
        f.debug_struct("SinkSettings")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &redact(&self.url))
            .field("secret", &redact(&self.secret))
            .field("retry_hours", &self.retry_hours)
            .field("timeout_ms", &self.timeout_ms)
            .field("exchange", &self.exchange)
            .field("subject_prefix", &self.subject_prefix)
            .finish()
    }
}

/// What a sink is, checked.
#[derive(Clone, PartialEq, Eq)]
pub enum SinkKind {
    Webhook {
        url: url::Url,
        /// The secret's bytes (the base64 after `whsec_`, decoded).
        secret: Vec<u8>,
    },
    Amqp {
        url: String,
        exchange: String,
    },
    Nats {
        url: String,
        subject_prefix: String,
    },
}

impl SinkKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Amqp { .. } => "amqp",
            Self::Nats { .. } => "nats",
        }
    }
}

/// A sink's settings, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
    pub retry_hours: u32,
    pub timeout: std::time::Duration,
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkConfig")
            .field("name", &self.name)
            .field("kind", &self.kind.name())
            .field("retry_hours", &self.retry_hours)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a sink's settings are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("events sink {name:?}: {reason}")]
pub struct SinkSettingsError {
    pub name: String,
    pub reason: String,
}

fn required<'a>(value: &'a Option<String>, field: &str, kind: &str) -> Result<&'a str, String> {
    match value.as_deref().map(str::trim) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(format!("a {kind} sink needs {field}")),
    }
}

fn forbidden(value: &Option<String>, field: &str, kind: &str) -> Result<(), String> {
    match value {
        Some(_) => Err(format!("{field} is not a setting of a {kind} sink")),
        None => Ok(()),
    }
}

/// The secret's bytes: Standard Webhooks' `whsec_` then base64 of at least 24 bytes.
fn webhook_secret(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let Some(encoded) = text.strip_prefix("whsec_") else {
        return Err("secret must start with whsec_ (Standard Webhooks)".into());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "secret: the text after whsec_ must be base64".to_owned())?;
    if bytes.len() < 24 {
        return Err(format!(
            "secret is {} bytes: at least 24 (e.g. whsec_ and `head -c 32 /dev/urandom | base64`)",
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn check_one(sink: &SinkSettings) -> Result<SinkConfig, String> {
    let name = sink.name.trim();
    if name.is_empty() || name.len() > SINK_NAME_LENGTH_MAX {
        return Err(format!(
            "name must be 1 to {SINK_NAME_LENGTH_MAX} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("name may hold only letters, digits, '-', '_' and '.'".into());
    }
    let retry_hours = sink.retry_hours.unwrap_or(RETRY_HOURS_DEFAULT);
    if !(1..=RETRY_HOURS_MAX).contains(&retry_hours) {
        return Err(format!("retry_hours must be 1 to {RETRY_HOURS_MAX}"));
    }
    let timeout_ms = sink.timeout_ms.unwrap_or(TIMEOUT_MS_DEFAULT);
    if !(1..=TIMEOUT_MS_MAX).contains(&timeout_ms) {
        return Err(format!("timeout_ms must be 1 to {TIMEOUT_MS_MAX}"));
    }
    let kind = match sink.kind.as_str() {
        "webhook" => {
            forbidden(&sink.exchange, "exchange", "webhook")?;
            forbidden(&sink.subject_prefix, "subject_prefix", "webhook")?;
            let url_text = required(&sink.url, "url", "webhook")?;
            let url = url::Url::parse(url_text).map_err(|error| format!("url: {error}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err("url must be an http:// or https:// URL with a host".into());
            }
            let secret =
                webhook_secret(required(&sink.secret, "secret = \"whsec_…\"", "webhook")?)?;
            SinkKind::Webhook { url, secret }
        }
        "amqp" => {
            forbidden(&sink.secret, "secret", "amqp")?;
            forbidden(&sink.subject_prefix, "subject_prefix", "amqp")?;
            SinkKind::Amqp {
                url: required(&sink.url, "url", "amqp")?.to_owned(),
                exchange: required(&sink.exchange, "exchange", "amqp")?.to_owned(),
            }
        }
        "nats" => {
            forbidden(&sink.secret, "secret", "nats")?;
            forbidden(&sink.exchange, "exchange", "nats")?;
            SinkKind::Nats {
                url: required(&sink.url, "url", "nats")?.to_owned(),
                subject_prefix: required(&sink.subject_prefix, "subject_prefix", "nats")?
                    .to_owned(),
            }
        }
        other => {
            return Err(format!(
                "unknown kind {other:?}: use \"webhook\", \"amqp\" or \"nats\""
            ))
        }
    };
    Ok(SinkConfig {
        name: name.to_owned(),
        kind,
        retry_hours,
        timeout: std::time::Duration::from_millis(timeout_ms),
    })
}

/// Checks every sink; the first one refused stops the server.
pub fn check(settings: &EventsSettings) -> Result<Vec<SinkConfig>, SinkSettingsError> {
    let mut configs: Vec<SinkConfig> = Vec::with_capacity(settings.sinks.len());
    for sink in &settings.sinks {
        let config = check_one(sink).map_err(|reason| SinkSettingsError {
            name: sink.name.clone(),
            reason,
        })?;
        if configs.iter().any(|other| other.name == config.name) {
            return Err(SinkSettingsError {
                name: config.name,
                reason: "two sinks have this name".into(),
            });
        }
        configs.push(config);
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> SinkSettings {
        SinkSettings {
            name: "shop".into(),
            kind: "webhook".into(),
            url: Some("http://127.0.0.1:9/hook".into()),
            secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            ..SinkSettings::default()
        }
    }

    fn refused(sink: SinkSettings) -> String {
        check(&EventsSettings { sinks: vec![sink] })
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_webhook_with_its_defaults() {
        let configs = check(&EventsSettings {
            sinks: vec![webhook()],
        })
        .unwrap();
        assert_eq!(configs[0].retry_hours, 24);
        assert_eq!(configs[0].timeout.as_millis(), 5_000);
        let SinkKind::Webhook { secret, url } = &configs[0].kind else {
            panic!("a webhook");
        };
        assert_eq!(secret.len(), 24);
        assert_eq!(url.as_str(), "http://127.0.0.1:9/hook");
    }

    #[test]
    fn each_bad_setting_is_named_with_its_sink() {
        let cases = [
            (
                SinkSettings {
                    kind: "kafka".into(),
                    ..webhook()
                },
                "unknown kind \"kafka\"",
            ),
            (
                SinkSettings {
                    secret: None,
                    ..webhook()
                },
                "needs secret",
            ),
            (
                SinkSettings {
                    secret: Some("hunter2".into()),
                    ..webhook()
                },
                "whsec_",
            ),
            (
                SinkSettings {
                    secret: Some("whsec_!!!".into()),
                    ..webhook()
                },
                "base64",
            ),
            (
                SinkSettings {
                    secret: Some("whsec_c2hvcnQ=".into()),
                    ..webhook()
                },
                "at least 24",
            ),
            (
                SinkSettings {
                    url: Some("ftp://x/".into()),
                    ..webhook()
                },
                "http:// or https://",
            ),
            (
                SinkSettings {
                    url: None,
                    ..webhook()
                },
                "needs url",
            ),
            (
                SinkSettings {
                    retry_hours: Some(0),
                    ..webhook()
                },
                "retry_hours",
            ),
            (
                SinkSettings {
                    exchange: Some("x".into()),
                    ..webhook()
                },
                "exchange is not a setting",
            ),
            (
                SinkSettings {
                    name: "a b".into(),
                    ..webhook()
                },
                "name may hold",
            ),
            (
                SinkSettings {
                    kind: "amqp".into(),
                    secret: None,
                    ..webhook()
                },
                "needs exchange",
            ),
        ];
        for (sink, reason) in cases {
            let error = refused(sink);
            assert!(error.contains(reason), "{error} lacks {reason}");
            assert!(error.starts_with("events sink"), "{error}");
        }
        let twice = check(&EventsSettings {
            sinks: vec![webhook(), webhook()],
        })
        .unwrap_err();
        assert!(twice.reason.contains("two sinks"));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let text = format!("{:?}", webhook());
        assert!(!text.contains("whsec_"), "{text}");
    }
}
