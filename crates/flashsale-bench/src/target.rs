//! The server a bench drives: by default a fresh embedded server that the bench starts as a child
//! process (its own data directory, a free port), or an existing one named by `--target`.
//! A child process keeps the client's and the server's CPU apart, so each can be measured.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use flashsale_server::secrets::{ADMIN_TOKEN_FILE, JWT_SECRET_FILE};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("starting the embedded server: {0}")]
    Spawn(std::io::Error),
    #[error("the embedded server did not print its address (it said {0:?})")]
    NoAddress(String),
    #[error("--target must look like http://HOST:PORT, got {0:?}")]
    BadUrl(String),
    #[error("resolving {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("{0}: give --{1}, or --data-dir holding the server's {2} file")]
    MissingSecret(&'static str, &'static str, &'static str),
}

/// A server started by the bench; stopped (SIGTERM) and its data removed on drop.
pub struct EmbeddedServer {
    child: Child,
    data_dir: PathBuf,
}

impl EmbeddedServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's peak resident memory so far, in bytes (Linux `VmHWM`).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The server's CPU time so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        process_cpu_seconds(self.pid())
    }
}

/// CPU time (user + system) of process `pid` so far, in seconds (Linux `/proc`).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Makes `command`'s process run on `cpu` only, from before its first instruction (so every
/// thread it starts inherits it).
fn pin_to(command: &mut Command, cpu: usize) -> Result<(), TargetError> {
    use std::os::unix::process::CommandExt;
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(TargetError::Spawn(std::io::Error::other(format!(
            "no CPU {cpu}"
        ))));
    }
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it (cpu < CPU_SETSIZE).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: between fork and exec the closure only makes one system call, which is
    // async-signal-safe, and touches no memory but the set copied into it.
    unsafe {
        command.pre_exec(move || {
            match libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    Ok(())
}

pub struct Target {
    pub address: SocketAddr,
    pub admin_token: String,
    pub jwt_secret: String,
    pub server: Option<EmbeddedServer>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Reads the `http://ADDR` a child process prints on its first line, then keeps draining its
/// output (a process must never write into a closed pipe).
pub(crate) fn read_address(child: &mut Child) -> Result<SocketAddr, TargetError> {
    let mut first_line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::new(stdout);
        let _ = reader.read_line(&mut first_line);
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    }
    first_line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .ok_or_else(|| TargetError::NoAddress(first_line.trim().to_owned()))
}

/// The bare baseline (`flashsale bare-responder`) on a free port; killed when dropped.
pub struct BareResponder {
    child: Child,
    pub address: SocketAddr,
}

impl BareResponder {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start() -> Result<Self, TargetError> {
        let executable = std::env::current_exe().map_err(TargetError::Spawn)?;
        let mut child = Command::new(executable)
            .args(["bare-responder", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(TargetError::Spawn)?;
        match read_address(&mut child) {
            Ok(address) => Ok(Self { child, address }),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }
}

impl Drop for BareResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target {
    /// Starts `flashsale serve` (this same executable) on a free port with a fresh data directory.
    /// The server inherits the environment, so `FLASHSALE_*` variables tune it. Without
    /// `buyer_limit` the per-buyer rate limit is off (load scenarios send many requests per
    /// buyer by design); with it, the server keeps its configured limit, as in production.
    /// With `config`, the server reads that settings file (`FLASHSALE_CONFIG`), e.g. event sinks.
    /// With `cpu`, the server and all its threads run on that CPU only.
    pub fn embedded(
        buyer_limit: bool,
        config: Option<&Path>,
        cpu: Option<usize>,
    ) -> Result<Self, TargetError> {
        let executable = std::env::current_exe().map_err(TargetError::Spawn)?;
        let data_dir = std::env::temp_dir().join(format!("flashsale-bench-{}", random_hex()));
        let (admin_token, jwt_secret) = (random_hex(), random_hex());
        let mut command = Command::new(executable);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--log", "warn"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--admin-token", &admin_token, "--jwt-secret", &jwt_secret])
            .args(["--expiry-sweep-interval-ms", "100"]);
        if !buyer_limit {
            command.args(["--buyer-requests-per-sec", "0"]);
        }
        if let Some(config) = config {
            command.env("FLASHSALE_CONFIG", config);
        }
        if let Some(cpu) = cpu {
            pin_to(&mut command, cpu)?;
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(TargetError::Spawn)?;
        let address = read_address(&mut child);
        let server = EmbeddedServer { child, data_dir };
        let address = address?;
        Ok(Self {
            address,
            admin_token,
            jwt_secret,
            server: Some(server),
        })
    }

    /// An existing server. Secrets come from the flags, else from its data directory.
    pub async fn existing(
        url: &str,
        admin_token: Option<String>,
        jwt_secret: Option<String>,
        data_dir: Option<&Path>,
    ) -> Result<Self, TargetError> {
        let authority = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| TargetError::BadUrl(url.to_owned()))?;
        let address = tokio::net::lookup_host(authority)
            .await
            .map_err(|error| TargetError::Resolve(authority.to_owned(), error))?
            .next()
            .ok_or_else(|| TargetError::BadUrl(url.to_owned()))?;
        let from_dir = |file: &str| {
            data_dir
                .and_then(|dir| std::fs::read_to_string(dir.join(file)).ok())
                .map(|text| text.trim().to_owned())
        };
        let admin_token = admin_token.or_else(|| from_dir(ADMIN_TOKEN_FILE)).ok_or(
            TargetError::MissingSecret("no admin token", "admin-token", ADMIN_TOKEN_FILE),
        )?;
        let jwt_secret =
            jwt_secret
                .or_else(|| from_dir(JWT_SECRET_FILE))
                .ok_or(TargetError::MissingSecret(
                    "no JWT secret",
                    "jwt-secret",
                    JWT_SECRET_FILE,
                ))?;
        Ok(Self {
            address,
            admin_token,
            jwt_secret,
            server: None,
        })
    }
}
