//! TLS to PostgreSQL and Redis when the URL asks for it: encrypted links, certificates checked
//! as asked, and refused with a clear error when they do not check out.
//!
//! The machine's PostgreSQL serves TLS with its own self-signed certificate (Debian's
//! "snakeoil", issued to `localhost`); the Redis tests start a private `redis-server` on a TLS
//! port, with a CA and a certificate made here by the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;

use flashsale_server::tls::postgres_target;
use serde_json::json;

use crate::cluster::PrivateRedis;
use crate::harness::TestServer;
use crate::services::{database_url, ClusterBackends};

/// The parts of the test database URL, to write the same target with other hosts and options.
struct Database {
    user: String,
    port: u16,
    name: String,
    /// The server's certificate file (the server is on this machine).
    certificate: PathBuf,
}

impl Database {
    async fn find() -> Option<Self> {
        let url = database_url()?;
        let config: tokio_postgres::Config = url.parse().expect("test database URL parses");
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("test database answers");
        tokio::spawn(connection);
        let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        assert_eq!(ssl, "on", "the test PostgreSQL must serve TLS (ssl = on)");
        let certificate: String = client
            .query_one("SHOW ssl_cert_file", &[])
            .await
            .unwrap()
            .get(0);
        Some(Self {
            user: config.get_user().unwrap_or("postgres").to_owned(),
            port: config.get_ports().first().copied().unwrap_or(5432),
            name: config.get_dbname().unwrap_or("postgres").to_owned(),
            certificate: PathBuf::from(certificate),
        })
    }

    fn url(&self, host: &str, options: &str) -> String {
        format!(
            "postgres://{}@{host}:{}/{}?{options}",
            self.user, self.port, self.name
        )
    }

    fn root(&self) -> String {
        url::form_urlencoded::byte_serialize(self.certificate.display().to_string().as_bytes())
            .collect()
    }
}

/// Connects as the store does and says whether the link is encrypted.
async fn encrypted(url: &str) -> Result<bool, String> {
    let target = postgres_target(url).map_err(|error| error.to_string())?;
    let (client, connection) = target
        .config
        .connect(target.connector)
        .await
        .map_err(|error| flashsale_server::error_chain::describe(&error))?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|error| error.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn postgres_links_are_encrypted_and_checked_as_sslmode_asks() {
    let Some(database) = Database::find().await else {
        return;
    };
    let root = database.root();
    assert_eq!(
        encrypted(&database.url("127.0.0.1", "sslmode=disable")).await,
        Ok(false)
    );
    // libpq's default and `require`: encrypted, the certificate not checked.
    assert_eq!(encrypted(&database.url("127.0.0.1", "")).await, Ok(true));
    assert_eq!(
        encrypted(&database.url("127.0.0.1", "sslmode=require")).await,
        Ok(true)
    );
    // The certificate is issued to localhost by itself.
    assert_eq!(
        encrypted(&database.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={root}")
        ))
        .await,
        Ok(true)
    );
    assert_eq!(
        encrypted(&database.url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={root}")
        ))
        .await,
        Ok(true)
    );
    let wrong_name = encrypted(&database.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    ))
    .await;
    assert!(
        matches!(&wrong_name, Err(error) if error.contains("not valid for name")),
        "{wrong_name:?}"
    );
}

/// A CA and a certificate it issued to localhost and 127.0.0.1, made with `openssl`.
struct Certificates {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
}

impl Certificates {
    fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let names = path("names.ext");
        std::fs::write(&names, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir.path(),
            &[
                &[
                    "req",
                    "-x509",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=flashsale test CA",
                ][..],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem"][..],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[
                &["req", "-subj", "/CN=localhost"][..],
                &ec[..],
                &["-keyout", "server.key", "-out", "server.csr"][..],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "names.ext",
                "-out",
                "server.pem",
            ],
        );
        Self {
            ca: path("ca.pem"),
            server: path("server.pem"),
            server_key: path("server.key"),
            _dir: dir,
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command runs (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A node reaches Redis over `rediss://` (checked against the configured CA) and PostgreSQL with
/// `sslmode=verify-full`, and sells; without the CA, or with PostgreSQL's name wrong, it refuses
/// to start and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sells_over_tls_to_redis_and_postgres() {
    let Some(backends) = ClusterBackends::new() else {
        return;
    };
    let Some(database) = Database::find().await else {
        return;
    };
    let certificates = Certificates::make();
    let redis = PrivateRedis::start_tls(&certificates.server, &certificates.server_key).await;
    let redis_url = format!("rediss://localhost:{}/", redis.port());
    let database_url = |host: &str| {
        database.url(
            host,
            &format!("sslmode=verify-full&sslrootcert={}", database.root()),
        )
    };

    let refusal = |change: &dyn Fn(&mut flashsale_server::config::Settings)| {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = crate::harness::test_settings(dir.path());
        backends.configure(&mut settings);
        settings.redis_url = Some(redis_url.clone());
        settings.redis_tls_ca_file = Some(certificates.ca.clone());
        settings.database_url = Some(database_url("localhost"));
        change(&mut settings);
        async move {
            match flashsale_server::app::App::build(&settings).await {
                Ok(_) => panic!("a node started with {settings:?}"),
                Err(error) => format!("{error:#}"),
            }
        }
    };
    let unknown_ca = refusal(&|settings| settings.redis_tls_ca_file = None).await;
    assert!(unknown_ca.contains("UnknownIssuer"), "{unknown_ca}");
    let wrong_name = refusal(&|settings| {
        settings.database_url = Some(database_url("127.0.0.1"));
    })
    .await;
    assert!(wrong_name.contains("not valid for name"), "{wrong_name}");

    // The URL may waive the check (`#insecure`): encrypted, not authenticated.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::harness::test_settings(dir.path());
    backends.configure(&mut settings);
    settings.redis_url = Some(format!("{redis_url}#insecure"));
    settings.database_url = Some(database_url("localhost"));
    assert!(flashsale_server::app::App::build(&settings).await.is_ok());

    let server = TestServer::start_cluster_with(2, |settings| {
        backends.configure(settings);
        settings.redis_url = Some(redis_url.clone());
        settings.redis_tls_ca_file = Some(certificates.ca.clone());
        settings.database_url = Some(database_url("localhost"));
    })
    .await
    .expect("cluster starts over TLS");
    let sale_id = server.create_sale(json!({ "stock": 3 })).await;
    let replies = server
        .purchase_all(&sale_id, crate::harness::users("tls", 5))
        .await;
    let tally = crate::harness::tally(&replies);
    assert_eq!(tally.get(&(201, String::new())), Some(&3), "{tally:?}");
    server.assert_consistent(&sale_id).await;
    server.stop().await;
}
