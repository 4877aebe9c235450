//! The admin token and the JWT secret. When configuration gives none, each is generated on first
//! start and kept in the data directory, readable by its owner only, so restarts reuse it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const ADMIN_TOKEN_FILE: &str = "admin_token";
pub const JWT_SECRET_FILE: &str = "jwt_secret";
/// An embedded server's installation id (its events' `source`), made like the secrets.
pub const INSTALLATION_ID_FILE: &str = "installation_id";
/// An embedded server's admission-log signing key (the seed of its Ed25519 key, in hex).
pub const QUEUE_LOG_KEY_FILE: &str = "queue_log_key";

/// A secret and where it came from.
pub struct Resolved {
    pub value: String,
    /// Set when the secret was made just now and written to this file.
    pub generated: Option<PathBuf>,
}

pub fn ensure_data_dir(data_dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(buffer.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// The configured secret if any, else the one stored in `data_dir/file`, else a new one.
pub fn resolve(configured: Option<&str>, data_dir: &Path, file: &str) -> std::io::Result<Resolved> {
    if let Some(value) = configured.filter(|value| !value.is_empty()) {
        return Ok(Resolved {
            value: value.to_owned(),
            generated: None,
        });
    }
    let path = data_dir.join(file);
    match fs::read_to_string(&path) {
        Ok(stored) if !stored.trim().is_empty() => {
            return Ok(Resolved {
                value: stored.trim().to_owned(),
                generated: None,
            })
        }
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    ensure_data_dir(data_dir)?;
    let value = random_hex(32)?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    out.write_all(value.as_bytes())?;
    out.sync_all()?;
    Ok(Resolved {
        value,
        generated: Some(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_generated_secret_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve(None, dir.path(), ADMIN_TOKEN_FILE).unwrap();
        let path = first.generated.clone().expect("generated");
        assert_eq!(first.value.len(), 64);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = resolve(None, dir.path(), ADMIN_TOKEN_FILE).unwrap();
        assert_eq!(second.value, first.value);
        assert!(second.generated.is_none());
    }

    #[test]
    fn configuration_wins() {
        let dir = tempfile::tempdir().unwrap();
        let resolved = resolve(Some("given"), dir.path(), JWT_SECRET_FILE).unwrap();
        assert_eq!(resolved.value, "given");
        assert!(!dir.path().join(JWT_SECRET_FILE).exists());
    }
}
