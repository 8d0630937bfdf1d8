//! HTTP endpoints (axum), served on the same port as gRPC:
//! `/health`, `/state`, `/metrics`, `/redirect` (and `/master/...` aliases);
//! the secret store's `/v1/secrets` routes live in `http_secrets.rs`.

use crate::actor::MasterHandle;
use crate::auth::{Caller, Gate, acl::Permission, http::require};
use crate::election::Contender;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Clone)]
pub struct HttpState {
    pub master: MasterHandle,
    pub metrics: Arc<Metrics>,
    pub contender: Arc<dyn Contender>,
    /// Authentication: every route but the open ones needs a token when on.
    pub gate: Gate,
    /// The secret store (`/v1/secrets`, see `http_secrets.rs`).
    pub secrets: crate::secrets::Secrets,
}

pub fn router(state: HttpState) -> Router {
    let gate = state.gate.clone();
    Router::new()
        .route("/health", get(health))
        .route("/master/health", get(health))
        .route("/state", get(state_json))
        .route("/master/state", get(state_json))
        .route("/metrics", get(metrics))
        .route("/redirect", get(redirect))
        .route("/master/redirect", get(redirect))
        .route("/tasks/{task_id}/kill", post(kill_task))
        .merge(crate::http_secrets::routes())
        .with_state(state)
        .merge(crate::auth::http::routes(gate.clone()))
        .layer(axum::middleware::from_fn_with_state(
            gate,
            crate::auth::http::authenticate,
        ))
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the master is shutting down\n",
    )
        .into_response()
}

async fn health(State(s): State<HttpState>) -> Response {
    match s.master.gauges().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(_) => unavailable(),
    }
}

async fn state_json(State(s): State<HttpState>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(r) = require(&caller, &Permission::ViewState) {
        return r;
    }
    match s.master.state().await {
        Ok(st) => axum::Json(st).into_response(),
        Err(_) => unavailable(),
    }
}

async fn metrics(State(s): State<HttpState>) -> Response {
    match s.master.gauges().await {
        Ok((g, runs)) => {
            let body = s.metrics.render(&g, &runs);
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                body,
            )
                .into_response()
        }
        Err(_) => unavailable(),
    }
}

#[derive(Deserialize)]
struct KillQuery {
    framework: Option<String>,
}

/// Operator kill: the task's agent is told to kill it; its framework sees
/// the TASK_KILLED update as usual.
async fn kill_task(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(task_id): Path<String>,
    Query(q): Query<KillQuery>,
) -> Response {
    use crate::state::CallError;
    let tid = match agora_proto::convert::task_id("task_id", &task_id) {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let framework = match q
        .framework
        .as_deref()
        .map(|f| agora_proto::convert::framework_id("framework", f))
    {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match s.master.operator_kill(tid, framework, caller).await {
        Ok(Ok(fid)) => (
            StatusCode::ACCEPTED,
            axum::Json(
                serde_json::json!({"task_id": task_id, "framework_id": fid.0, "status": "killing"}),
            ),
        )
            .into_response(),
        Ok(Err(e @ CallError::NotFound(_))) => {
            (StatusCode::NOT_FOUND, format!("{e}\n")).into_response()
        }
        Ok(Err(e @ CallError::PermissionDenied(_))) => {
            (StatusCode::FORBIDDEN, format!("forbidden: {e}\n")).into_response()
        }
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(_) => unavailable(),
    }
}

/// Mesos `/master/redirect`: 307 to the leader; a lone master names itself.
async fn redirect(State(s): State<HttpState>) -> Response {
    match s.contender.leader() {
        Some(addr) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("http://{addr}"))],
            format!("leader: {addr}\n"),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leader elected yet\n").into_response(),
    }
}
