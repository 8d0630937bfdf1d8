//! Bearer tokens on the agent's API (`agora agent --require-tokens`).
//!
//! | route | needs |
//! |---|---|
//! | `/health`, `/metrics` | nothing (health, and gauges and counters for Prometheus; unlike the master's, the per-task series name framework and task ids, which `/state` shows only with `view_state`) |
//! | `/state`, `/tasks/{id}/logs`, any other path | a token the master issued, of a principal the ACLs grant `view_state` |
//!
//! The token is checked with the master the agent is registered with
//! ([`agora_authn::Verifier`]: its `GET /v1/auth/whoami`, a valid answer
//! cached 5 s). Answers: 401 (with `WWW-Authenticate: Bearer`) without a
//! token or when the master refuses it, with the master's reason; 403
//! naming the `view_state` permission when the principal lacks it; 503 when
//! the master cannot be asked or has authentication off — never a pass.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Paths anyone may reach.
pub const OPEN_PATHS: &[&str] = &["/health", "/metrics"];

/// What [`agora_authn::VerifyError::AuthOff`] suggests besides `--acls`.
pub const AUTH_OFF_HINT: &str = "run the agent with --require-tokens=false";

/// The verifier for the agent's API: asks `master` (its base URL; `tls`:
/// the cluster CA for an `https://` master).
pub fn verifier(
    master: &str,
    tls: Option<std::sync::Arc<agora_tls::ClientConfig>>,
) -> agora_authn::Verifier {
    agora_authn::Verifier::new(master, tls).with_auth_off_hint(AUTH_OFF_HINT)
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

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn require_view_state(
    State(verifier): State<agora_authn::Verifier>,
    req: Request,
    next: Next,
) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let Some(h) = req.headers().get(header::AUTHORIZATION).cloned() else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "no bearer token: this agent's API needs `Authorization: Bearer <token>` with a token the master issued (agora CLI: --token-file, AGORA_TOKEN or the client context file)",
        );
    };
    match verifier.verify(&h).await {
        Ok(id) if id.view_state => {
            tracing::debug!(principal = %id.principal, path = %req.uri().path(), "authenticated API request");
            next.run(req).await
        }
        Ok(id) => {
            tracing::info!(principal = %id.principal, path = %req.uri().path(), "refusing an API request: no view_state");
            refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: principal {} may not view this agent's state and task logs (permission: view_state; grant it with a [[view_state]] rule in the master's ACL file)",
                    id.principal
                ),
            )
        }
        Err(e) => refuse(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            e,
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::http::{HttpState, router};
    use crate::runtime::{BoxFuture, ContainerRuntime, LaunchSpec, LogStream};
    use agora_core::{FrameworkId, TaskId};
    use axum::http::{StatusCode, header};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A runtime whose every task logged `hello from <task>`.
    struct Logs;

    impl ContainerRuntime for Logs {
        fn name(&self) -> &'static str {
            "logs"
        }
        fn launch(&self, _spec: LaunchSpec) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn kill(&self, _: &FrameworkId, _: &TaskId, _: Duration) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn logs(&self, _: &FrameworkId, task: &TaskId, _: bool) -> LogStream {
            let line = format!("hello from {task}\n").into_bytes();
            Box::pin(futures::stream::once(async move { Ok(line) }))
        }
    }

    /// A stand-in master: `Bearer ops` may view state, `Bearer dev` may
    /// not, anything else is 401 with the master's reason.
    async fn fake_master(calls: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new().route(
            "/v1/auth/whoami",
            axum::routing::get(move |h: axum::http::HeaderMap| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let ok = |p: &str, view: bool| {
                        (
                            StatusCode::OK,
                            format!(
                                r#"{{"principal":"{p}","admin":false,"auth_enabled":true,"view_state":{view}}}"#
                            ),
                        )
                    };
                    match h.get(header::AUTHORIZATION).map(|v| v.as_bytes()) {
                        Some(b"Bearer ops") => ok("ops", true),
                        Some(b"Bearer dev") => ok("dev", false),
                        _ => (
                            StatusCode::UNAUTHORIZED,
                            "unauthenticated: token 0123456789ab was revoked\n".to_string(),
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

    /// The agent's API router over [`Logs`], verifying with `master`
    /// (`None`: tokens not required). The agent itself never reaches a
    /// master (nothing listens on port 9).
    fn api(master: Option<&str>) -> axum::Router {
        let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let runtime: Arc<dyn ContainerRuntime> = Arc::new(Logs);
        let (agent, _join) = crate::spawn(
            crate::AgentConfig::default(),
            runtime.clone(),
            rx,
            crate::Connector::Address("http://127.0.0.1:9".into()),
        );
        router(HttpState {
            agent,
            runtime,
            tokens: master.map(|m| super::verifier(m, None)),
        })
    }

    async fn call(
        app: &axum::Router,
        path: &str,
        auth: Option<&str>,
    ) -> (u16, Option<String>, String) {
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
        let www = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, www, String::from_utf8_lossy(&b).into_owned())
    }

    const LOGS: &str = "/tasks/t1/logs?framework=f1";

    #[tokio::test]
    async fn state_and_logs_need_a_token_of_a_principal_with_view_state() {
        let calls = Arc::new(AtomicUsize::new(0));
        let master = fake_master(calls.clone()).await;
        let app = api(Some(&master));
        for path in ["/state", LOGS, "/no-such-path"] {
            let (code, www, body) = call(&app, path, None).await;
            assert_eq!(code, 401, "{path}: {body}");
            assert_eq!(www.as_deref(), Some("Bearer realm=\"agora\""), "{path}");
            assert!(body.contains("no bearer token"), "{path}: {body}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no token, no question");
        let (code, www, body) = call(&app, LOGS, Some("Bearer forged")).await;
        assert_eq!(code, 401, "{body}");
        assert!(www.is_some());
        assert!(body.contains("was revoked"), "the master's reason: {body}");
        for path in ["/state", LOGS] {
            let (code, _, body) = call(&app, path, Some("Bearer dev")).await;
            assert_eq!(code, 403, "{path}: {body}");
            assert!(body.contains("principal dev"), "{body}");
            assert!(body.contains("(permission: view_state"), "{body}");
        }
        let (code, _, body) = call(&app, LOGS, Some("Bearer ops")).await;
        assert_eq!((code, body.as_str()), (200, "hello from t1\n"));
        let (code, _, body) = call(&app, "/state", Some("Bearer ops")).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"runtime\":\"logs\""), "{body}");
        // Health and metrics stay open, whatever the header says.
        for auth in [None, Some("Bearer forged")] {
            assert_eq!(call(&app, "/health", auth).await.0, 200);
            let (code, _, body) = call(&app, "/metrics", auth).await;
            assert_eq!(code, 200, "{body}");
            assert!(body.contains("agora_agent_tasks"), "{body}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_master_is_503_not_a_pass() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let app = api(Some(&format!("http://{closed}")));
        for path in ["/state", LOGS] {
            let (code, _, body) = call(&app, path, Some("Bearer ops")).await;
            assert_eq!(code, 503, "{path}: {body}");
            assert!(
                body.contains(&format!(
                    "cannot verify the token with the master at http://{closed}"
                )),
                "{body}"
            );
        }
        assert_eq!(call(&app, "/health", None).await.0, 200);
    }

    #[tokio::test]
    async fn without_require_tokens_the_api_is_open() {
        let app = api(None);
        let (code, _, body) = call(&app, LOGS, None).await;
        assert_eq!((code, body.as_str()), (200, "hello from t1\n"));
        assert_eq!(call(&app, "/state", None).await.0, 200);
    }
}
