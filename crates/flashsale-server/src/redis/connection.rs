//! The one connection a node keeps to Redis: a multiplexed connection every task pipelines
//! over, the client for the pub/sub listener, and the key layout. The gate, the waiting line,
//! the order queue and the clock all run on it.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Client;

use super::keys::RedisKeys;
use crate::gate::GateError;

#[derive(Clone)]
pub struct RedisOptions {
    pub url: String,
    pub key_prefix: String,
    /// Longest wait for a connection or a reply.
    pub response_timeout: Duration,
    /// The CA a `rediss://` server's certificate is checked against, instead of the system's.
    pub tls_ca_file: Option<PathBuf>,
}

/// The URL may carry a password: `Debug` leaves it out, as `Settings` does.
impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisOptions")
            .field("url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("response_timeout", &self.response_timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct Redis {
    client: Client,
    manager: ConnectionManager,
    keys: RedisKeys,
}

impl Redis {
    pub async fn connect(options: &RedisOptions) -> Result<Self, GateError> {
        let client = crate::tls::redis_client(&options.url, options.tls_ca_file.as_deref())
            .map_err(|error| GateError::Unavailable(error.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.response_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(super::gate::unavailable)?;
        Ok(Self {
            client,
            manager,
            keys: RedisKeys::new(&options.key_prefix),
        })
    }

    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    /// A handle on the multiplexed connection (cheap: clones share it).
    pub fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// The client, for connections of their own (pub/sub).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The server's persistence and eviction settings; `None` when the server refuses
    /// `CONFIG GET` (some managed services rename it).
    pub async fn durability(&self) -> Option<RedisDurability> {
        let mut connection = self.manager();
        let mut values = Vec::with_capacity(3);
        for name in ["appendonly", "appendfsync", "maxmemory-policy"] {
            let reply: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut connection)
                .await
                .ok()?;
            values.push(reply.get(1)?.clone());
        }
        let [appendonly, appendfsync, maxmemory_policy] = <[String; 3]>::try_from(values).ok()?;
        Some(RedisDurability {
            appendonly,
            appendfsync,
            maxmemory_policy,
        })
    }
}

/// How Redis keeps its data, as far as acknowledged orders depend on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisDurability {
    pub appendonly: String,
    pub appendfsync: String,
    pub maxmemory_policy: String,
}

impl RedisDurability {
    /// What makes Redis able to lose an acknowledged order, one sentence each: a reply that
    /// comes before the write is on disk, or an eviction of a key (a holding, a queued order).
    pub fn risks(&self) -> Vec<String> {
        let mut risks = Vec::new();
        if self.appendonly != "yes" {
            risks.push(format!(
                "appendonly is {} (set: appendonly yes)",
                self.appendonly
            ));
        }
        if self.appendfsync != "always" {
            risks.push(format!(
                "appendfsync is {} (set: appendfsync always)",
                self.appendfsync
            ));
        }
        if self.maxmemory_policy != "noeviction" {
            risks.push(format!(
                "maxmemory-policy is {} (set: maxmemory-policy noeviction)",
                self.maxmemory_policy
            ));
        }
        risks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_the_password_out() {
        let options = RedisOptions {
            url: "redis://flashsale:hunter2-secret@redis.internal:6379/".into(),
            key_prefix: "shop".into(),
            response_timeout: Duration::from_secs(1),
            tls_ca_file: None,
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("shop"), "{shown}");
    }
}
