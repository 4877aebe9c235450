//! The processes a chaos run owns so that it can hurt them: `flashsale serve` nodes (this same
//! executable) on fixed ports and data directories, so a node killed with SIGKILL comes back at
//! the same address with the same data; and, for a cluster, a private `redis-server` writing an
//! AOF fsynced at every write, killed and restarted from that file.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ChaosError;

/// A free loopback port (the kernel's pick, released for the process to bind).
pub fn free_port() -> Result<u16, ChaosError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(ChaosError::Io)?;
    Ok(listener.local_addr().map_err(ChaosError::Io)?.port())
}

fn kill_hard(child: &mut Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = child.wait();
}

pub struct Node {
    pub address: SocketAddr,
    data_dir: PathBuf,
    arguments: Vec<String>,
    environment: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    pub fn new(
        data_dir: PathBuf,
        arguments: Vec<String>,
        environment: Vec<(String, String)>,
    ) -> Result<Self, ChaosError> {
        Ok(Self {
            address: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            data_dir,
            arguments,
            environment,
            child: None,
        })
    }

    /// Starts the node and waits for its start-up announcement (it is listening then).
    pub async fn start(&mut self) -> Result<(), ChaosError> {
        let executable = std::env::current_exe().map_err(ChaosError::Io)?;
        let mut command = Command::new(executable);
        command
            .arg("serve")
            .args(["--listen", &self.address.to_string(), "--log", "error"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.arguments)
            .envs(
                self.environment
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().map_err(ChaosError::Io)?;
        let stdout = child.stdout.take();
        let announced = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            if let Some(stdout) = stdout {
                let mut reader = BufReader::new(stdout);
                let _ = reader.read_line(&mut line);
                // Keep draining: the server must never write into a closed pipe.
                std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            }
            line
        })
        .await
        .unwrap_or_default();
        if !announced.contains("http://") {
            kill_hard(&mut child);
            return Err(ChaosError::Start(format!(
                "node {} did not start (it said {:?})",
                self.address,
                announced.trim()
            )));
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_hard(&mut child);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A `redis-server` of the run's own: AOF on, fsync at every write, in a directory of its own.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start(dir: PathBuf) -> Result<Self, ChaosError> {
        std::fs::create_dir_all(&dir).map_err(ChaosError::Io)?;
        let mut redis = Self {
            port: free_port()?,
            dir,
            child: None,
        };
        redis.restart().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port and directory: the data comes back from the AOF.
    pub async fn restart(&mut self) -> Result<(), ChaosError> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| ChaosError::Start(format!("redis-server: {error}")))?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(client) = redis::Client::open(self.url().as_str()) {
                if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                    let loaded: redis::RedisResult<String> =
                        redis::cmd("PING").query_async(&mut connection).await;
                    if loaded.is_ok() {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ChaosError::Start("redis-server did not answer".into()))
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_hard(&mut child);
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of PostgreSQL that the run can pause: while paused, bytes stop flowing
/// both ways and new connections wait, as when the database host stalls or the network drops.
pub struct PausableProxy {
    pub port: u16,
    paused: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl PausableProxy {
    pub async fn start(upstream: String) -> Result<Self, ChaosError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(ChaosError::Io)?;
        let port = listener.local_addr().map_err(ChaosError::Io)?.port();
        let paused = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let flag = std::sync::Arc::clone(&paused);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, flag) = (upstream.clone(), flag.subscribe());
                tokio::spawn(async move {
                    let mut ready = flag.clone();
                    let _ = ready.wait_for(|paused| !*paused).await;
                    if let Ok(server) = tokio::net::TcpStream::connect(&upstream).await {
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            forward(client_read, server_write, flag.clone()),
                            forward(server_read, client_write, flag)
                        );
                    }
                });
            }
        });
        Ok(Self { port, paused, task })
    }

    pub fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }
}

impl Drop for PausableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 || paused.wait_for(|paused| !*paused).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// `postgres://user@host:port/db?…` with its host and port replaced by `127.0.0.1:port`, and the
/// original `host:port` (for the proxy to reach).
pub fn through_proxy(url: &str, port: u16) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (user, rest) = match rest.split_once('@') {
        Some((user, rest)) => (format!("{user}@"), rest),
        None => (String::new(), rest),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let upstream = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5432")
    };
    Some((
        format!("{scheme}://{user}127.0.0.1:{port}{}", &rest[end..]),
        upstream,
    ))
}
