//! TLS to PostgreSQL and Redis, with rustls on the `ring` provider (no system OpenSSL).
//!
//! PostgreSQL follows libpq's `sslmode`: `disable` never encrypts; `prefer` (the default) and
//! `require` encrypt without checking the certificate (as libpq does, unless `sslrootcert` is
//! given, which makes `require` check the chain); `verify-ca` checks the chain, `verify-full` the
//! chain and the host name. The chain is checked against `sslrootcert` (a PEM file) or the
//! system's roots. Redis encrypts when the URL says `rediss://`, against the system's roots or
//! the configured CA file; `rediss://…#insecure` skips the check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslmode must be disable, prefer, require, verify-ca or verify-full, not {0:?}")]
    UnknownSslMode(String),
    #[error("{0}")]
    UnreadableOptions(String),
    #[error("root certificates {path}: {reason}")]
    Roots { path: String, reason: String },
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
}

/// How much of the server's certificate is checked (libpq's `sslmode` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, TlsError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(TlsError::UnknownSslMode(other.to_owned())),
        }
    }

    /// The mode tokio-postgres understands: it knows whether to encrypt, not what to check.
    fn for_driver(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// Makes `ring` the process's provider, for the crates (redis) that build their own configs.
pub fn install_default_provider() {
    // An error only says a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    install_default_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A database URL (URL or key=value form) split into what tokio-postgres reads and what the
/// TLS connector needs to know.
pub struct PostgresTarget {
    pub config: tokio_postgres::Config,
    pub connector: MakeRustlsConnect,
    pub ssl_mode: SslMode,
}

pub fn postgres_target(url: &str) -> Result<PostgresTarget, TlsError> {
    let (driver_url, options) = split_tls_options(url)?;
    let ssl_mode = match &options.ssl_mode {
        Some(mode) => SslMode::parse(mode)?,
        None => SslMode::Prefer,
    };
    let mut config: tokio_postgres::Config =
        driver_url.parse().map_err(|error: tokio_postgres::Error| {
            TlsError::UnreadableOptions(format!("database URL: {error}"))
        })?;
    config.ssl_mode(ssl_mode.for_driver());
    let check = match ssl_mode {
        SslMode::Disable | SslMode::Prefer => Check::Nothing,
        SslMode::Require if options.root_cert.is_none() => Check::Nothing,
        SslMode::Require | SslMode::VerifyCa => Check::Chain,
        SslMode::VerifyFull => Check::ChainAndName,
    };
    let connector = MakeRustlsConnect::new(client_config(check, options.root_cert.as_deref())?);
    Ok(PostgresTarget {
        config,
        connector,
        ssl_mode,
    })
}

#[derive(Default)]
struct TlsOptions {
    ssl_mode: Option<String>,
    root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of the URL: tokio-postgres refuses `verify-*` and
/// `sslrootcert`, and the connector, not the driver, is what checks certificates.
fn split_tls_options(url: &str) -> Result<(String, TlsOptions), TlsError> {
    let mut options = TlsOptions::default();
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            options.ssl_mode = Some(value.to_owned());
            true
        }
        "sslrootcert" => {
            options.root_cert = Some(PathBuf::from(value));
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), options));
        };
        let mut kept = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if !take(&key, &value) {
                kept.append_pair(&key, &value);
            }
        }
        let kept = kept.finish();
        let driver_url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{kept}")
        };
        Ok((driver_url, options))
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            match pair.split_once('=') {
                Some((key, value)) if !value.starts_with('\'') => {
                    if !take(key.trim(), value.trim()) {
                        kept.push(pair);
                    }
                }
                Some((key, _)) if matches!(key.trim(), "sslmode" | "sslrootcert") => {
                    return Err(TlsError::UnreadableOptions(format!(
                        "database URL: write {key} without quotes"
                    )))
                }
                _ => kept.push(pair),
            }
        }
        Ok((kept.join(" "), options))
    }
}

#[derive(Clone, Copy)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// A TLS client that checks the server's chain and name against the system's roots (a webhook
/// sink's `https://` URL).
pub fn https_client_config() -> Result<ClientConfig, TlsError> {
    let mut config = client_config(Check::ChainAndName, None)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn client_config(check: Check, root_cert: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let config = match check {
        Check::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly { provider }))
            .with_no_client_auth(),
        Check::Chain | Check::ChainAndName => {
            let roots = Arc::new(root_store(root_cert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|error| TlsError::Settings(rustls::Error::General(error.to_string())))?;
            let verifier: Arc<dyn ServerCertVerifier> = match check {
                Check::ChainAndName => webpki,
                _ => Arc::new(ChainOnly { webpki }),
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(config)
}

fn root_store(root_cert: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let unreadable = |reason: String| TlsError::Roots {
                path: path.display().to_string(),
                reason,
            };
            for certificate in CertificateDer::pem_file_iter(path)
                .map_err(|error| unreadable(error.to_string()))?
            {
                let certificate = certificate.map_err(|error| unreadable(error.to_string()))?;
                roots
                    .add(certificate)
                    .map_err(|error| unreadable(error.to_string()))?;
            }
            if roots.is_empty() {
                return Err(unreadable("no certificate in the file".into()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(TlsError::Roots {
                    path: "(the system's)".into(),
                    reason: "none found; give sslrootcert".into(),
                });
            }
        }
    }
    Ok(roots)
}

/// libpq's `prefer`/`require`: the link is encrypted, the peer is not authenticated. The
/// handshake's signatures are still checked, so the session key belongs to the certificate sent.
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain must lead to a trusted root; the name is not compared.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A Redis client for the URL: `rediss://` is checked against the system's roots, or against
/// the CA file when one is configured (which then requires `rediss://`).
pub fn redis_client(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, TlsError> {
    install_default_provider();
    let client = match ca_file {
        None => redis::Client::open(url),
        Some(path) => {
            let root_cert = std::fs::read(path).map_err(|error| TlsError::Roots {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
        }
    };
    client.map_err(|error| TlsError::UnreadableOptions(format!("Redis URL: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_leave_the_url_and_the_rest_stays() {
        let (url, options) = split_tls_options(
            "postgres://u@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(options.ssl_mode.as_deref(), Some("verify-full"));
        assert_eq!(options.root_cert, Some(PathBuf::from("/tmp/ca.pem")));

        let (url, options) = split_tls_options("host=h user=u sslmode=require dbname=d").unwrap();
        assert_eq!(url, "host=h user=u dbname=d");
        assert_eq!(options.ssl_mode.as_deref(), Some("require"));

        let (url, options) = split_tls_options("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(options.ssl_mode.as_deref(), Some("disable"));
    }

    #[test]
    fn an_unknown_sslmode_is_refused_by_name() {
        let error = postgres_target("postgres://u@h/db?sslmode=verify")
            .err()
            .unwrap();
        assert!(error.to_string().contains("verify-full"), "{error}");
    }

    #[test]
    fn a_missing_root_file_is_refused_with_its_path() {
        let error =
            postgres_target("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")
                .err()
                .unwrap();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }
}
