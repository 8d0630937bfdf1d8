//! The agent's HTTP API (default port 5051): `/health`, `/state` (its tasks),
//! `/metrics` (Prometheus text with per-task CPU time and memory), and
//! `/tasks/{task_id}/logs?follow=true[&framework=ID]` streaming the task's
//! output. With [`HttpState::tokens`] (`agora agent --require-tokens`),
//! everything but `/health` and `/metrics` needs a bearer token of a
//! principal allowed to view state (see [`crate::api_auth`]).

use crate::agent::AgentHandle;
use crate::runtime::ContainerRuntime;
use agora_core::{FrameworkId, TaskId};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;

#[derive(Clone)]
pub struct HttpState {
    pub agent: AgentHandle,
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Require bearer tokens, verified with the master
    /// ([`crate::api_auth::verifier`]); `None`: the API is open.
    pub tokens: Option<agora_authn::Verifier>,
}

pub fn router(state: HttpState) -> Router {
    let tokens = state.tokens.clone();
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/state", get(state_json))
        .route("/metrics", get(metrics))
        .route("/tasks/{task_id}/logs", get(logs))
        .with_state(state);
    match tokens {
        Some(v) => app.layer(axum::middleware::from_fn_with_state(
            v,
            crate::api_auth::require_view_state,
        )),
        None => app,
    }
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: HttpState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// Serves the API over TLS (the agent's own certificate, which carries
/// serverAuth for this) until the process ends.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: HttpState,
    tls: agora_tls::ServerTls,
) -> std::io::Result<()> {
    let listener = agora_tls::TlsListener::new(listener, Some(tls));
    axum::serve(listener, router(state)).await
}

async fn state_json(State(s): State<HttpState>) -> Response {
    axum::Json(serde_json::json!({
        "agent_id": s.agent.agent_id().map(|a| a.0),
        "runtime": s.runtime.name(),
        "tasks": s.agent.tasks(),
    }))
    .into_response()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let tasks = s.agent.tasks();
    let usage = s.runtime.usage().await;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP agora_agent_tasks Tasks on this agent by state."
    );
    let _ = writeln!(out, "# TYPE agora_agent_tasks gauge");
    let mut by_state = std::collections::BTreeMap::new();
    for t in &tasks {
        *by_state.entry(t.state.as_str()).or_insert(0u64) += 1;
    }
    for (st, n) in by_state {
        let _ = writeln!(out, "agora_agent_tasks{{state=\"{st}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP agora_agent_task_cpu_seconds_total CPU time used by a task."
    );
    let _ = writeln!(out, "# TYPE agora_agent_task_cpu_seconds_total counter");
    for u in &usage {
        let _ = writeln!(
            out,
            "agora_agent_task_cpu_seconds_total{{framework_id=\"{}\",task_id=\"{}\"}} {}",
            escape(&u.framework_id),
            escape(&u.task_id),
            u.cpu_seconds
        );
    }
    let _ = writeln!(
        out,
        "# HELP agora_agent_task_memory_rss_bytes Resident memory of a task."
    );
    let _ = writeln!(out, "# TYPE agora_agent_task_memory_rss_bytes gauge");
    for u in &usage {
        let _ = writeln!(
            out,
            "agora_agent_task_memory_rss_bytes{{framework_id=\"{}\",task_id=\"{}\"}} {}",
            escape(&u.framework_id),
            escape(&u.task_id),
            u.mem_rss_bytes
        );
    }
    let _ = writeln!(
        out,
        "# HELP agora_agent_task_memory_working_set_bytes Memory a task needs now: its usage less the inactive file cache (cgroup), or its resident memory where the runtime has no cgroup for it."
    );
    let _ = writeln!(
        out,
        "# TYPE agora_agent_task_memory_working_set_bytes gauge"
    );
    for u in &usage {
        let _ = writeln!(
            out,
            "agora_agent_task_memory_working_set_bytes{{framework_id=\"{}\",task_id=\"{}\"}} {}",
            escape(&u.framework_id),
            escape(&u.task_id),
            u.mem_working_set_bytes
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
    framework: Option<String>,
}

async fn logs(
    State(s): State<HttpState>,
    Path(task_id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    // Ids name sandbox directories: anything malformed is refused here.
    let ids = agora_core::ids::validate_id("task id", &task_id).and_then(|()| match &q.framework {
        Some(f) => agora_core::ids::validate_id("framework id", f),
        None => Ok(()),
    });
    if let Err(e) = ids {
        return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
    }
    let tasks = s.agent.tasks();
    let matching: Vec<_> = tasks
        .iter()
        .filter(|t| {
            t.task_id == task_id && q.framework.as_ref().is_none_or(|f| &t.framework_id == f)
        })
        .collect();
    let fw = match matching.as_slice() {
        [one] => one.framework_id.clone(),
        [] => match &q.framework {
            // Finished tasks leave the list once acknowledged; the runtime may still have logs.
            Some(f) => f.clone(),
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    format!("task {task_id} is not on this agent (add ?framework=ID for finished tasks)\n"),
                )
                    .into_response();
            }
        },
        _ => {
            return (
                StatusCode::CONFLICT,
                format!("several frameworks have a task {task_id}; add ?framework=ID\n"),
            )
                .into_response();
        }
    };
    let mut stream = s
        .runtime
        .logs(&FrameworkId::new(fw), &TaskId::new(task_id), q.follow);
    // Surface an immediate error as a status code rather than a broken body.
    let first = stream.next().await;
    let head: Vec<Result<Bytes, std::io::Error>> = match first {
        Some(Err(e)) => return (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
        Some(Ok(b)) => vec![Ok(Bytes::from(b))],
        None => vec![],
    };
    let rest = stream.map(|r| r.map(Bytes::from).map_err(std::io::Error::other));
    let body = Body::from_stream(futures::stream::iter(head).chain(rest));
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}
