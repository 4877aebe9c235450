//! Connecting: the pool, the schema (created if missing, one node at a time), and a client
//! from the pool for each call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};

use super::{db_failed, failed, PostgresOptions, PostgresStore};
use crate::error_chain::describe;
use crate::store::StoreError;

/// Serializes schema set-up between nodes that start at the same moment.
const SCHEMA_LOCK: i64 = 0x666c_6173_6873_616c;

/// A valid SQL identifier or an error: the schema name is put into statements as is.
fn checked_schema(schema: &str) -> Result<&str, StoreError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(schema)
    } else {
        Err(StoreError::Failed(format!(
            "database schema {schema:?}: use lowercase letters, digits and _"
        )))
    }
}

impl PostgresStore {
    /// Connects, creates the schema and tables if missing, and checks the connection works.
    pub async fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        let schema = checked_schema(&options.schema)?;
        let crate::tls::PostgresTarget {
            mut config,
            connector,
            ..
        } = crate::tls::postgres_target(&options.url).map_err(failed)?;
        config.connect_timeout(options.connect_timeout);
        config.options(format!("-c search_path={schema}"));
        config.application_name("flashsale");
        let manager = Manager::from_config(
            config,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.connections_max.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(failed)?;
        let store = Self {
            pool,
            closed: Arc::new(AtomicBool::new(false)),
        };
        let mut client = store.client().await?;
        let transaction = client.transaction().await.map_err(db_failed)?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(db_failed)?;
        transaction
            .batch_execute(&format!(
                "SET LOCAL client_min_messages = warning; CREATE SCHEMA IF NOT EXISTS {schema}"
            ))
            .await
            .map_err(db_failed)?;
        transaction
            .batch_execute(include_str!("schema.sql"))
            .await
            .map_err(db_failed)?;
        transaction.commit().await.map_err(db_failed)?;
        Ok(store)
    }

    pub(super) async fn client(&self) -> Result<Object, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.pool
            .get()
            .await
            .map_err(|error| failed(format!("PostgreSQL connection: {}", describe(&error))))
    }
}
