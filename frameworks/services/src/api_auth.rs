//! Bearer tokens on the services REST API, verified by the master.
//!
//! With `ServicesConfig::api_tokens`, every request but the open ones
//! (`/ping`, `/openapi.json`, and the discovery data DNS serves anyway:
//! `/v1/services*` and `GET /v1/endpoints/watch` *without* `router=`) needs
//! `Authorization: Bearer <token>`. That includes a watch with `router=`
//! (it makes the caller a drain participant) and `POST /v1/endpoints/acks`
//! (it tells the framework a router drained), and `POST /v1/endpoints/load`
//! (routers' load reports decide instance counts and wake apps at zero):
//! the principal authenticated
//! is passed to the handlers as a [`Principal`] request extension, and a
//! drain participant is bound to the principal that joined it
//! (`crate::endpoints`). With `ServicesConfig::drain_principals` (`agora
//! services --drain-principals`), only those principals may make these
//! requests (403 for others). The token must be one the master issued, checked with the master's
//! `GET /v1/auth/whoami` (the master answers 401 for a missing, unknown,
//! expired or revoked token, and this API passes that answer on). The
//! verification is [`agora_authn::Verifier`], shared with the agent's API:
//! a valid answer is cached for [`CACHE_FOR`] under the SHA-256 of the
//! header, so a revoked token keeps working here for at most that long.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub use agora_authn::CACHE_FOR;

/// Requests anyone may make: health, schema, and the discovery data DNS
/// serves anyway (`/v1/services*`, the endpoint stream of a plain
/// subscriber). Joining the drains (`watch?router=`) and acking them are
/// not open: they decide when old instances are killed; nor are load
/// reports (`/v1/endpoints/load`): they decide instance counts.
fn open(uri: &axum::http::Uri) -> bool {
    let path = uri.path();
    match path {
        "/ping" | "/openapi.json" | "/v1/services" => true,
        // Parsed as the handler parses it (a `router` key however encoded);
        // a query it cannot parse is not open (the handler answers 400).
        "/v1/endpoints/watch" => axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .is_ok_and(|q| !q.0.iter().any(|(k, _)| k == "router")),
        _ => path.starts_with("/v1/services/"),
    }
}

/// Requests that make the caller a drain participant or speak for one:
/// `POST /v1/endpoints/acks` and a watch with `router=` (any other path
/// under `/v1/endpoints/` too, e.g. the routers' load reports).
fn drain_request(uri: &axum::http::Uri) -> bool {
    let path = uri.path();
    path.starts_with("/v1/endpoints/") && !open(uri)
}

/// The principal a request was authenticated as: a request extension set
/// by [`require_token`] (absent on open requests and without tokens).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

/// Verifies tokens with the master.
#[derive(Clone)]
pub struct ApiAuth {
    verifier: agora_authn::Verifier,
    /// The principals that may join the drains and ack them (empty: any
    /// principal with a valid token).
    drain_principals: Arc<Vec<String>>,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("master", &self.verifier.master())
            .field("drain_principals", &self.drain_principals)
            .finish()
    }
}

fn refuse(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    let mut r = (code, format!("{msg}\n")).into_response();
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"agora\""),
        );
    }
    r
}

impl ApiAuth {
    /// `tls`: the cluster CA, for an `https://` master.
    pub fn new(master: &str, tls: Option<Arc<agora_tls::ClientConfig>>) -> ApiAuth {
        ApiAuth {
            verifier: agora_authn::Verifier::new(master, tls),
            drain_principals: Arc::default(),
        }
    }

    /// Only `principals` may join the drains (`watch?router=`) and ack them
    /// (`agora services --drain-principals`); empty: any principal with a
    /// valid token. Without it, any token of the cluster could claim a
    /// router's id (free after a restart) and ack drains it never made.
    pub fn with_drain_principals(mut self, principals: Vec<String>) -> ApiAuth {
        self.drain_principals = Arc::new(principals);
        self
    }

    /// The principal `authorization` authenticates, or the answer to send.
    pub async fn verify(&self, authorization: &HeaderValue) -> Result<String, Response> {
        match self.verifier.verify(authorization).await {
            Ok(id) => Ok(id.principal),
            Err(e) => Err(refuse(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                e,
            )),
        }
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn require_token(State(auth): State<ApiAuth>, mut req: Request, next: Next) -> Response {
    if open(req.uri()) {
        return next.run(req).await;
    }
    let Some(h) = req.headers().get(header::AUTHORIZATION).cloned() else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "no bearer token: send `Authorization: Bearer <token>` with a token the master issued (agora CLI: --token-file, AGORA_TOKEN or the client context file)",
        );
    };
    match auth.verify(&h).await {
        Ok(principal)
            if drain_request(req.uri())
                && !auth.drain_principals.is_empty()
                && !auth.drain_principals.contains(&principal) =>
        {
            tracing::warn!(principal, path = %req.uri().path(),
                "refused a drain participant's request: principal not in --drain-principals");
            refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: principal {principal} may not join the drains or ack them (only {}: agora services --drain-principals); give the router a token of one of those principals (--token-file)",
                    auth.drain_principals.join(", ")
                ),
            )
        }
        Ok(principal) => {
            tracing::debug!(principal, path = %req.uri().path(), "authenticated API request");
            req.extensions_mut().insert(Principal(principal));
            next.run(req).await
        }
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stand-in master: `Bearer good` is principal ops, anything else 401.
    async fn fake_master(calls: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new().route(
            "/v1/auth/whoami",
            axum::routing::get(move |h: axum::http::HeaderMap| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    match h.get(header::AUTHORIZATION).map(|v| v.as_bytes()) {
                        Some(b"Bearer good") => (
                            StatusCode::OK,
                            r#"{"principal":"ops","admin":false,"auth_enabled":true}"#.to_string(),
                        ),
                        _ => (
                            StatusCode::UNAUTHORIZED,
                            "unauthenticated: token abc was revoked\n".to_string(),
                        ),
                    }
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        format!("http://{addr}")
    }

    async fn call(app: &axum::Router, path: &str, auth: Option<&str>) -> (u16, String) {
        use tower::ServiceExt;
        let mut r = axum::http::Request::get(path);
        if let Some(a) = auth {
            r = r.header(header::AUTHORIZATION, a);
        }
        let resp = app
            .clone()
            .oneshot(r.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let code = resp.status().as_u16();
        let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&b).into_owned())
    }

    #[tokio::test]
    async fn tokens_are_checked_with_the_master_and_cached() {
        let calls = Arc::new(AtomicUsize::new(0));
        let master = fake_master(calls.clone()).await;
        let app = axum::Router::new()
            .route("/v2/apps", axum::routing::get(|| async { "apps" }))
            .route("/ping", axum::routing::get(|| async { "pong" }))
            .route(
                "/v1/endpoints/watch",
                axum::routing::get(|| async { "feed" }),
            )
            .layer(axum::middleware::from_fn_with_state(
                ApiAuth::new(&master, None),
                require_token,
            ));
        assert_eq!(call(&app, "/ping", None).await.0, 200);
        assert_eq!(call(&app, "/v1/endpoints/watch", None).await.0, 200);
        let (code, body) = call(&app, "/v2/apps", None).await;
        assert_eq!(code, 401);
        assert!(body.contains("no bearer token"), "{body}");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let (code, body) = call(&app, "/v2/apps", Some("Bearer bad")).await;
        assert_eq!(code, 401);
        assert!(body.contains("was revoked"), "the master's reason: {body}");
        let (code, body) = call(&app, "/v2/apps", Some("Bearer good")).await;
        assert_eq!((code, body.as_str()), (200, "apps"));
        let before = calls.load(Ordering::SeqCst);
        assert_eq!(call(&app, "/v2/apps", Some("Bearer good")).await.0, 200);
        assert_eq!(calls.load(Ordering::SeqCst), before, "cached");
        // Refusals are not cached.
        assert_eq!(call(&app, "/v2/apps", Some("Bearer bad")).await.0, 401);
        assert_eq!(calls.load(Ordering::SeqCst), before + 1);
    }

    #[tokio::test]
    async fn a_master_with_authentication_off_is_503_not_a_pass() {
        // What a master without --acls answers for any header.
        let app = axum::Router::new().route(
            "/v1/auth/whoami",
            axum::routing::get(|| async {
                r#"{"principal":null,"admin":true,"auth_enabled":false}"#
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        let app = axum::Router::new()
            .route("/v2/apps", axum::routing::get(|| async { "apps" }))
            .layer(axum::middleware::from_fn_with_state(
                ApiAuth::new(&format!("http://{addr}"), None),
                require_token,
            ));
        let (code, body) = call(&app, "/v2/apps", Some("Bearer anything")).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("authentication off"), "{body}");
    }

    #[tokio::test]
    async fn an_unreachable_master_is_503_not_a_pass() {
        let app = axum::Router::new()
            .route("/v2/apps", axum::routing::get(|| async { "apps" }))
            .layer(axum::middleware::from_fn_with_state(
                ApiAuth::new("http://127.0.0.1:9", None),
                require_token,
            ));
        let (code, body) = call(&app, "/v2/apps", Some("Bearer good")).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("cannot verify the token"), "{body}");
    }

    /// Issue 11: load reports decide instance counts and wake apps, so
    /// unlike the rest of `/v1/endpoints/` they need a token.
    #[tokio::test]
    async fn load_reports_need_a_token() {
        let calls = Arc::new(AtomicUsize::new(0));
        let master = fake_master(calls).await;
        let app = axum::Router::new()
            .route(
                "/v1/endpoints/load",
                axum::routing::get(|| async { "load" }),
            )
            .route(
                "/v1/endpoints/watch",
                axum::routing::get(|| async { "feed" }),
            )
            .layer(axum::middleware::from_fn_with_state(
                ApiAuth::new(&master, None),
                require_token,
            ));
        assert_eq!(call(&app, "/v1/endpoints/watch", None).await.0, 200);
        assert_eq!(call(&app, "/v1/endpoints/load", None).await.0, 401);
        assert_eq!(
            call(&app, "/v1/endpoints/load", Some("Bearer bad")).await.0,
            401
        );
        let (code, body) = call(&app, "/v1/endpoints/load", Some("Bearer good")).await;
        assert_eq!((code, body.as_str()), (200, "load"));
    }
}
