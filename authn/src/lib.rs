//! Verifying bearer tokens with the master, for the APIs that are not the
//! master's own: the services framework's REST API and the agent's API.
//!
//! [`Verifier::verify`] sends the request's `Authorization` header to the
//! master's `GET /v1/auth/whoami` and reads the answer: the principal,
//! whether it is an admin, and whether the ACLs let it view state
//! (`view_state`). The master answers 401 for a missing, malformed, unknown,
//! expired or revoked token; that answer is passed on as
//! [`VerifyError::Refused`] with the master's reason. A master that cannot
//! be reached, or that has authentication off (it would vouch for any
//! header), is [`VerifyError::Unavailable`] / [`VerifyError::AuthOff`]:
//! never a pass.
//!
//! A valid answer is cached for [`CACHE_FOR`] under the SHA-256 of the
//! header (the token itself is kept nowhere), so a revoked token, or an ACL
//! change, reaches the API within that time. Refusals are not cached.

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a verified token is trusted without asking the master again.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// Most cached answers (expired ones are dropped first when full).
const CACHE_MAX: usize = 10_000;
/// How long connecting to the master may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the master's answer (head, then body) may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest whoami answer read (a real one is about 100 bytes): a
/// wrong `--master`, or something in between, cannot make every request
/// buffer an arbitrary body.
const MAX_ANSWER: usize = 64 * 1024;

/// Who a verified token belongs to, as the master says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub principal: String,
    /// Listed in the ACL file's `admins`.
    pub admin: bool,
    /// The ACLs grant `view_state` (the master's `/state`, the agent's
    /// `/state` and task logs); always true for admins. False when the
    /// master does not say (a master older than this field).
    pub view_state: bool,
}

/// Why a token was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The master refused the token; its reason (never the token).
    #[error("the master refused the token: {0}")]
    Refused(String),
    /// The master could not be asked, or gave an answer that is not one.
    #[error("cannot verify the token with the master at {master}: {reason}")]
    Unavailable { master: String, reason: String },
    /// The master has authentication off, so it cannot vouch for a token.
    #[error(
        "cannot verify the token: the master at {master} has authentication off (start it with --acls, or {hint})"
    )]
    AuthOff { master: String, hint: &'static str },
}

impl VerifyError {
    /// The HTTP status to answer with: 401 for a refused token, 503 when
    /// the token could not be verified.
    pub fn status(&self) -> u16 {
        match self {
            VerifyError::Refused(_) => 401,
            VerifyError::Unavailable { .. } | VerifyError::AuthOff { .. } => 503,
        }
    }
}

/// Verified answers: SHA-256 of the header → (identity, when verified).
type Cache = Arc<Mutex<HashMap<[u8; 32], (Identity, Instant)>>>;

/// Verifies tokens with one master. Cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct Verifier {
    /// The master's base URL (`http://host:port` or `https://host:port`).
    master: String,
    client: Client<agora_tls::Connector, Empty<Bytes>>,
    cache: Cache,
    auth_off_hint: &'static str,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("master", &self.master)
            .finish()
    }
}

impl Verifier {
    /// `master`: its base URL; `tls`: the cluster CA, for an `https://` master.
    pub fn new(master: &str, tls: Option<Arc<agora_tls::ClientConfig>>) -> Verifier {
        let c = agora_tls::Connector::http1(tls).connect_timeout(CONNECT_TIMEOUT);
        Verifier {
            master: master.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build(c),
            cache: Arc::default(),
            auth_off_hint: "run this API without --require-tokens",
        }
    }

    /// What [`VerifyError::AuthOff`] tells the operator to do besides
    /// starting the master with `--acls` (e.g. the flag that turns tokens
    /// off on this API).
    pub fn with_auth_off_hint(mut self, hint: &'static str) -> Verifier {
        self.auth_off_hint = hint;
        self
    }

    /// The master's base URL.
    pub fn master(&self) -> &str {
        &self.master
    }

    fn unavailable(&self, reason: &dyn std::fmt::Display) -> VerifyError {
        tracing::warn!(master = %self.master, error = %reason, "cannot verify a token with the master");
        VerifyError::Unavailable {
            master: self.master.clone(),
            reason: reason.to_string(),
        }
    }

    /// Who `authorization` (the request's whole `Authorization` header)
    /// authenticates, according to the master.
    pub async fn verify(&self, authorization: &HeaderValue) -> Result<Identity, VerifyError> {
        let key = {
            let d = ring::digest::digest(&ring::digest::SHA256, authorization.as_bytes());
            let mut k = [0u8; 32];
            k.copy_from_slice(d.as_ref());
            k
        };
        if let Ok(c) = self.cache.lock()
            && let Some((id, at)) = c.get(&key)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(id.clone());
        }
        let uri = format!("{}/v1/auth/whoami", self.master);
        let mut header = authorization.clone();
        header.set_sensitive(true);
        let req = hyper::Request::get(&uri)
            .header(AUTHORIZATION, header)
            .body(Empty::new())
            .map_err(|e| self.unavailable(&format!("{uri} is not a valid URL: {e}")))?;
        let resp = match tokio::time::timeout(ANSWER_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.unavailable(&e)),
            Err(_) => return Err(self.unavailable(&"no answer within 10 s")),
        };
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER).collect();
        let body = match tokio::time::timeout(ANSWER_TIMEOUT, body).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(self.unavailable(&format!(
                    "its whoami answer ({status}) is larger than {MAX_ANSWER} bytes: is --master the master?"
                )));
            }
            Ok(Err(e)) => return Err(self.unavailable(&e)),
            Err(_) => return Err(self.unavailable(&"no answer within 10 s")),
        };
        let text = String::from_utf8_lossy(&body);
        match status.as_u16() {
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                    self.unavailable(&format!("its whoami answer is not JSON: {e}"))
                })?;
                // A master without --acls answers 200 for any header (no
                // principal): it cannot vouch for a token, so refuse.
                let Some(principal) = v["principal"]
                    .as_str()
                    .filter(|_| v["auth_enabled"] == serde_json::Value::Bool(true))
                    .map(str::to_string)
                else {
                    tracing::error!(master = %self.master, "the master has authentication off: it cannot verify API tokens");
                    return Err(VerifyError::AuthOff {
                        master: self.master.clone(),
                        hint: self.auth_off_hint,
                    });
                };
                let admin = v["admin"].as_bool().unwrap_or(false);
                let id = Identity {
                    principal,
                    admin,
                    view_state: admin || v["view_state"].as_bool().unwrap_or(false),
                };
                if let Ok(mut c) = self.cache.lock() {
                    if c.len() >= CACHE_MAX {
                        c.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
                        if c.len() >= CACHE_MAX {
                            c.clear();
                        }
                    }
                    c.insert(key, (id.clone(), Instant::now()));
                }
                Ok(id)
            }
            401 => Err(VerifyError::Refused(text.trim().to_string())),
            code => Err(self.unavailable(&format!("the master answered {code}: {}", text.trim()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stand-in master: `Bearer ops` may view state, `Bearer dev` may
    /// not, `Bearer root` is an admin, anything else is 401.
    async fn fake_master(calls: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new().route(
            "/v1/auth/whoami",
            axum::routing::get(move |h: axum::http::HeaderMap| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let ok = |p: &str, admin: bool, view: bool| {
                        (
                            axum::http::StatusCode::OK,
                            format!(
                                r#"{{"principal":"{p}","admin":{admin},"auth_enabled":true,"view_state":{view}}}"#
                            ),
                        )
                    };
                    match h.get(AUTHORIZATION).map(|v| v.as_bytes()) {
                        Some(b"Bearer ops") => ok("ops", false, true),
                        Some(b"Bearer dev") => ok("dev", false, false),
                        Some(b"Bearer root") => ok("root", true, false),
                        _ => (
                            axum::http::StatusCode::UNAUTHORIZED,
                            "unauthenticated: token abc was revoked\n".to_string(),
                        ),
                    }
                }
            }),
        );
        serve(app).await
    }

    async fn serve(app: axum::Router) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        format!("http://{addr}")
    }

    fn h(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[tokio::test]
    async fn the_masters_answer_gives_principal_and_view_state_and_is_cached() {
        let calls = Arc::new(AtomicUsize::new(0));
        let v = Verifier::new(&fake_master(calls.clone()).await, None);
        let ops = v.verify(&h("Bearer ops")).await.unwrap();
        assert_eq!(
            ops,
            Identity {
                principal: "ops".into(),
                admin: false,
                view_state: true
            }
        );
        let dev = v.verify(&h("Bearer dev")).await.unwrap();
        assert_eq!((dev.principal.as_str(), dev.view_state), ("dev", false));
        let root = v.verify(&h("Bearer root")).await.unwrap();
        assert!(root.admin && root.view_state, "admins view state: {root:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Cached: the same headers are not sent again.
        v.clone().verify(&h("Bearer ops")).await.unwrap();
        v.verify(&h("Bearer dev")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Refusals carry the master's reason and are not cached.
        let e = v.verify(&h("Bearer bad")).await.unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(e.to_string().contains("was revoked"), "{e}");
        v.verify(&h("Bearer bad")).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn an_unreachable_master_or_one_with_authentication_off_is_503() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = Verifier::new(&format!("http://{closed}"), None)
            .verify(&h("Bearer ops"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), 503);
        assert!(
            e.to_string().starts_with(&format!(
                "cannot verify the token with the master at http://{closed}"
            )),
            "{e}"
        );
        // What a master without --acls answers for any header.
        let off = serve(axum::Router::new().route(
            "/v1/auth/whoami",
            axum::routing::get(|| async {
                r#"{"principal":null,"admin":true,"auth_enabled":false,"view_state":true}"#
            }),
        ))
        .await;
        let e = Verifier::new(&off, None)
            .with_auth_off_hint("run the agent with --require-tokens=false")
            .verify(&h("Bearer ops"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), 503);
        let msg = e.to_string();
        assert!(msg.contains("authentication off"), "{msg}");
        assert!(msg.contains("--require-tokens=false"), "{msg}");
        // Anything but 200 or 401 is not an answer either.
        let broken = serve(axum::Router::new().route(
            "/v1/auth/whoami",
            axum::routing::get(|| async { (axum::http::StatusCode::BAD_GATEWAY, "upstream") }),
        ))
        .await;
        let e = Verifier::new(&broken, None)
            .verify(&h("Bearer ops"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), 503);
        assert!(e.to_string().contains("the master answered 502"), "{e}");
    }

    /// An answer larger than [`MAX_ANSWER`] is not read whole: 503, never
    /// a pass, even when it is valid JSON vouching for the token.
    #[tokio::test]
    async fn an_oversized_answer_is_refused() {
        let big = serve(axum::Router::new().route(
            "/v1/auth/whoami",
            axum::routing::get(|| async {
                let pad = " ".repeat(4 << 20);
                format!(
                    r#"{{"principal":"ops","admin":true,"auth_enabled":true,"view_state":true}}{pad}"#
                )
            }),
        ))
        .await;
        let e = Verifier::new(&big, None)
            .verify(&h("Bearer ops"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), 503, "{e}");
        assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
    }

    #[test]
    fn debug_shows_only_the_master() {
        let v = Verifier::new("https://m:5050/", None);
        assert_eq!(format!("{v:?}"), "Verifier { master: \"https://m:5050\" }");
    }
}
