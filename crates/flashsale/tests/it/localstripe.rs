//! A private localstripe (PyPI, pinned; a fake, stateful Stripe nobody here wrote) per test
//! server: installed once into `target/localstripe-venv` by `scripts/localstripe-venv`, started
//! by `scripts/localstripe-server.py` bound to 127.0.0.1 on a free port with its state in memory
//! only, and killed when the test drops it. The test acts as Stripe's other users do: the buyer
//! confirming an intent with a card, the shop's dashboard reading intents and refunds.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

use crate::harness::{http_client, HttpClient};

pub const SECRET_KEY: &str = "sk_test_flashsale";
pub const PUBLISHABLE_KEY: &str = "pk_test_flashsale";
pub const WEBHOOK_SECRET: &str = "whsec_flashsale_tests";

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, installed on first use (once per test process).
fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let output = std::process::Command::new(repository().join("scripts/localstripe-venv"))
            .output()
            .expect("scripts/localstripe-venv runs");
        assert!(
            output.status.success(),
            "installing localstripe failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    })
}

pub struct LocalStripe {
    pub addr: SocketAddr,
    client: HttpClient,
    child: std::process::Child,
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut encoded = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        encoded.append_pair(key, value);
    }
    encoded.finish()
}

impl LocalStripe {
    pub async fn start() -> Self {
        let (child, first) = tokio::task::spawn_blocking(|| {
            let mut child = std::process::Command::new(python())
                .arg(repository().join("scripts/localstripe-server.py"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("localstripe starts");
            let stdout = child.stdout.take().expect("its stdout");
            let mut first = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut first)
                .expect("localstripe prints its port");
            (child, first)
        })
        .await
        .expect("localstripe started");
        let port: u16 = first.trim().parse().expect("a port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stripe = Self {
            addr,
            client: http_client(),
            child,
        };
        // Bound before it prints; listening once its app runs.
        assert!(
            crate::harness::eventually(std::time::Duration::from_secs(20), || async {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await,
            "localstripe listens"
        );
        assert_eq!(
            stripe.call(Method::GET, "/v1/payment_intents", &[]).await.0,
            StatusCode::OK
        );
        stripe
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stripe.js's stand-in, which localstripe serves.
    pub fn js_url(&self) -> String {
        format!("http://{}/js.stripe.com/v3/", self.addr)
    }

    /// A form-encoded call with the secret key; the status and the JSON reply.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let encoded = self::form(form);
        let (uri, body) = if method == Method::GET && !encoded.is_empty() {
            (
                format!("http://{}{path}?{encoded}", self.addr),
                String::new(),
            )
        } else {
            (format!("http://{}{path}", self.addr), encoded)
        };
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {SECRET_KEY}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = self
            .client
            .request(request)
            .await
            .expect("localstripe answers");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Sends every event to `url`, signed with `secret` (one endpoint; localstripe never retries).
    pub async fn send_webhooks_to(&self, url: &str, secret: &str) {
        let (status, _) = self
            .call(
                Method::POST,
                "/_config/webhooks/flashsale",
                &[("url", url), ("secret", secret)],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    pub async fn intent(&self, intent_id: &str) -> Value {
        let (status, body) = self
            .call(
                Method::GET,
                &format!("/v1/payment_intents/{intent_id}"),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The buyer pays the intent with a test payment method (`pm_card_visa`, or a declining
    /// `pm_card_chargeCustomerFail`): the method is set first, then the intent confirmed
    /// (localstripe cannot take the method with the confirm). The confirm's status.
    pub async fn pay(&self, intent_id: &str, payment_method: &str) -> StatusCode {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/payment_intents/{intent_id}"),
                &[("payment_method", payment_method)],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        self.call(
            Method::POST,
            &format!("/v1/payment_intents/{intent_id}/confirm"),
            &[],
        )
        .await
        .0
    }

    /// Every refund localstripe made of the intent.
    pub async fn refunds_of(&self, intent_id: &str) -> Vec<Value> {
        let (status, body) = self
            .call(Method::GET, "/v1/refunds", &[("payment_intent", intent_id)])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }

    /// Every intent localstripe holds (its own records, for the money checks).
    pub async fn intents(&self) -> Vec<Value> {
        let (status, body) = self
            .call(Method::GET, "/v1/payment_intents", &[("limit", "100000")])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }
}

/// The settings a server needs to pay through `stripe` at `api_base`.
pub fn use_stripe(settings: &mut flashsale_server::config::Settings, api_base: &str, js_url: &str) {
    settings.payment_provider = flashsale_server::config::PaymentProviderKind::Stripe;
    settings.stripe_api_base = api_base.to_owned();
    settings.stripe_secret_key = Some(SECRET_KEY.into());
    settings.stripe_publishable_key = Some(PUBLISHABLE_KEY.into());
    settings.stripe_webhook_secret = Some(WEBHOOK_SECRET.into());
    settings.stripe_js_url = js_url.to_owned();
}
