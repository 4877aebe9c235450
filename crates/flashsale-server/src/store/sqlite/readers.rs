//! A small pool of read-only connections. WAL lets them read while the writer commits; each read
//! runs on tokio's blocking pool so that no runtime thread waits on the disk.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::store::StoreError;

pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Bounds the connections open at once (and so the blocking threads reads can occupy).
    permits: Semaphore,
}

fn failed(error: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(error.to_string())
}

impl ReadPool {
    pub fn new(path: PathBuf, connections_max: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(connections_max.max(1)),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(connection)
    }

    pub async fn read<T, F>(self: &Arc<Self>, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(failed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let idle = pool.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
            let connection = match idle {
                Some(connection) => connection,
                None => pool.open().map_err(failed)?,
            };
            let result = query(&connection).map_err(failed);
            if let Ok(mut idle) = pool.idle.lock() {
                idle.push(connection);
            }
            result
        })
        .await
        .map_err(failed)?
    }
}
