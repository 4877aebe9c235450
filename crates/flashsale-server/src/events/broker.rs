//! What the two broker sinks (`amqp.rs`, `nats.rs`) share: the bound on one delivery, the error
//! a bad setting is refused with, and their URLs with the credentials taken out (for `Debug` and
//! logs: a sink's settings are printed, its password never is).

use std::time::Duration;

/// How long one delivery may take, connecting included, before it is a `Retry`: long enough for
/// a broker that syncs to disk under load, short enough that a hung one never holds a sink.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A sink setting that cannot work; the server refuses to start with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct InvalidSinkSetting {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidSinkSetting {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// `url` (or a comma-separated list of them) with any password, or a user name that stands
/// alone (NATS reads it as a token), replaced by `redacted`; text that is no URL is not shown.
pub fn redacted_url(url: &str) -> String {
    url.split(',')
        .map(|one| match url::Url::parse(one.trim()) {
            Ok(mut parsed) => {
                if parsed.password().is_some() {
                    let _ = parsed.set_password(Some("redacted"));
                } else if !parsed.username().is_empty() {
                    let _ = parsed.set_username("redacted");
                }
                parsed.to_string()
            }
            Err(_) => "<not a URL>".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn passwords_and_tokens_never_show() {
        assert_eq!(
            redacted_url("amqp://shop:s3cret@rabbit.example:5672/%2f"),
            "amqp://shop:redacted@rabbit.example:5672/%2f"
        );
        assert_eq!(
            redacted_url("nats://t0ken@a.example:4222,nats://b.example:4222"),
            "nats://redacted@a.example:4222,nats://b.example:4222"
        );
        assert_eq!(
            redacted_url("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        let garbled = redacted_url("amqp//user:s3cret@host");
        assert!(!garbled.contains("s3cret"), "{garbled}");
    }
}
