//! Brokers of a test's own, on free ports with their data in a temporary directory, so that a
//! test can kill one (SIGKILL: no shutdown, nothing flushed on the way out) and start it again
//! on the same data: Debian's `nats-server -js`, and a RabbitMQ node of its own (its own node
//! name, ports, Mnesia directory, configuration and Erlang cookie; no plugins).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::eventually;
use crate::services::unique_name;

/// A port free on every interface and outside the kernel's ephemeral range (32768 and up
/// here), where the machine's many client sockets cannot take it between the look and the
/// broker's bind (RabbitMQ checks its distribution port on every interface).
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (rand_below(12_000) as u16);
        let free = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
}

/// A number below `bound`, different on every call (std's hasher keys are random).
fn rand_below(bound: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % bound
}

/// Kills the process group `child` leads (the broker and whatever it started).
fn kill_group(child: &mut Child) {
    let group = i32::try_from(child.id()).expect("pid");
    // SAFETY: a plain system call on a process group this test started and leads.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    let _ = child.wait();
}

pub struct PrivateNats {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateNats {
    pub async fn start() -> Self {
        let mut nats = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        nats.launch().await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port and store).
    pub async fn launch(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("nats-server starts (Debian package nats-server)");
        self.child = Some(child);
        let url = self.url();
        let up = eventually(Duration::from_secs(20), || async {
            // Listing streams needs JetStream to answer (its account query does not parse
            // what a 2.9 server says, so it cannot be the probe).
            match async_nats::connect(url.as_str()).await {
                Ok(client) => {
                    let jetstream = async_nats::jetstream::new(client);
                    let mut names = jetstream.stream_names();
                    !matches!(
                        futures_util::StreamExt::next(&mut names).await,
                        Some(Err(_))
                    )
                }
                Err(_) => false,
            }
        })
        .await;
        assert!(up, "the private nats-server serves JetStream");
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Debian installs the server's own script here; `/usr/sbin/rabbitmq-server` would switch to
/// the `rabbitmq` user, who cannot write the test's directory.
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

pub struct PrivateRabbit {
    port: u16,
    dist_port: u16,
    node: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRabbit {
    pub async fn start() -> Self {
        let port = free_port();
        let mut dist_port = free_port();
        while dist_port == port {
            dist_port = free_port();
        }
        let mut rabbit = Self {
            port,
            dist_port,
            node: format!("{}@localhost", unique_name("rabbit")),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        rabbit.write_configuration();
        rabbit.launch().await;
        rabbit
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Its own files, so that nothing of the machine's node (its listener on 5672, its plugins
    /// and their ports) is read.
    fn write_configuration(&self) {
        let write = |name: &str, text: String| {
            std::fs::write(self.path(name), text).expect("RabbitMQ configuration");
        };
        write("enabled_plugins", "[].\n".into());
        write(
            "rabbitmq.conf",
            format!("listeners.tcp.1 = 127.0.0.1:{}\n", self.port),
        );
        write(
            "rabbitmq-env.conf",
            "ERL_EPMD_ADDRESS=127.0.0.1\n\
             export ERL_FLAGS=\"-kernel inet_dist_use_interface {127,0,0,1}\"\n"
                .into(),
        );
    }

    /// Starts the node (again, on the same ports and Mnesia directory) and waits until it takes
    /// AMQP connections.
    pub async fn launch(&mut self) {
        let log = std::fs::File::create(self.path("server.log")).expect("log file");
        let child = Command::new(RABBITMQ_SERVER)
            .env("HOME", self.dir.path())
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env("RABBITMQ_PID_FILE", self.path("pid"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.path("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", self.path("rabbitmq-env.conf"))
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .expect("rabbitmq-server starts (Debian package rabbitmq-server)");
        self.child = Some(child);
        let url = self.url();
        let up = eventually(Duration::from_secs(120), || async {
            // Bounded: a connection taken while the node is still booting may never be answered.
            let connecting =
                lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
            match tokio::time::timeout(Duration::from_secs(2), connecting).await {
                Ok(Ok(connection)) => {
                    let _ = connection.close(200, "up".into()).await;
                    true
                }
                _ => false,
            }
        })
        .await;
        let log = std::fs::read_to_string(self.path("server.log")).unwrap_or_default();
        assert!(
            up,
            "the private RabbitMQ node takes connections; its log:\n{log}"
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill();
    }
}
