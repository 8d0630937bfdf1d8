//! Marathon's task kill: `DELETE /v2/apps/{appId}/tasks[?host=&scale=]`
//! and `DELETE /v2/apps/{appId}/tasks/{taskId}[?scale=]`. Killed tasks are
//! replaced, unless `scale=true` lowers `instances` by the number killed.

use super::json::{DeploymentResult, TaskEnvelope, TaskKilled, TaskList, TasksKilled, task};
use super::{ApiState, Message, ask, error};
use crate::service::{Killed, Request};
use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The query of a task kill, checked: unknown parameters and values that
/// are not `true`/`false` are a 400, `wipe=true` (there are no persistent
/// volumes to wipe) a 422.
struct KillQuery {
    host: Option<String>,
    scale: bool,
}

/// A refused query: the code and what is wrong.
type Refused = (StatusCode, String);

fn kill_query(uri: &Uri, host_allowed: bool) -> Result<KillQuery, Refused> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let pairs: Vec<(String, String)> = Query::try_from_uri(uri)
        .map(|Query(p)| p)
        .map_err(|e| bad(format!("malformed query: {e}")))?;
    let mut q = KillQuery {
        host: None,
        scale: false,
    };
    let flag = |k: &str, v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(bad(format!("{k} must be true or false, got {other:?}"))),
    };
    for (k, v) in &pairs {
        match k.as_str() {
            "host" if host_allowed => q.host = Some(v.clone()),
            "scale" => q.scale = flag(k, v)?,
            // Marathon's force overrides a deployment's lock on the app;
            // Agora takes no such lock (a scale during a deployment is
            // applied to it), so there is nothing to force.
            "force" => {
                flag(k, v)?;
            }
            "wipe" => {
                if flag(k, v)? {
                    return Err((
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "wipe=true is not supported: Agora has no persistent volumes or reservations to wipe; kill without it".into(),
                    ));
                }
            }
            other => {
                let known = if host_allowed {
                    "host, scale, force, wipe"
                } else {
                    "scale, force, wipe"
                };
                return Err(bad(format!(
                    "unknown query parameter {other:?} (this path takes {known})"
                )));
            }
        }
    }
    Ok(q)
}

async fn kill(
    s: &ApiState,
    app_id: String,
    task: Option<String>,
    q: KillQuery,
) -> Result<Killed, Response> {
    match ask(s, |reply| Request::KillTasks {
        app_id,
        task,
        host: q.host,
        scale: q.scale,
        reply,
    })
    .await
    {
        Ok(Ok(k)) => Ok(k),
        Ok(Err(e)) => Err(super::api_error(e)),
        Err(r) => Err(r),
    }
}

fn scaled(k: &Killed) -> Option<DeploymentResult> {
    k.scaled_version.as_ref().map(|v| DeploymentResult {
        deployment_id: None,
        version: Some(v.clone()),
    })
}

#[utoipa::path(delete, path = "/v2/apps/{appId}/tasks", tag = "marathon",
    params(("appId" = String, Path, description = "The app id"),
        ("host" = Option<String>, Query, description = "Only the tasks on this host"),
        ("scale" = Option<bool>, Query, description = "Lower `instances` by the number of live tasks killed, so they are not replaced"),
        ("force" = Option<bool>, Query, description = "Accepted for Marathon clients: Agora takes no deployment lock to override"),
        ("wipe" = Option<bool>, Query, description = "Not supported (no persistent volumes): `true` is refused with 422")),
    responses(
        (status = 200, description = "`{\"tasks\": [...]}`: the tasks killed (replaced, unless `scale`); with `scale=true`, `{\"deploymentId\": null, \"version\"}`", body = TasksKilled),
        (status = 400, description = "An unknown query parameter or a value that is not true/false", body = Message),
        (status = 404, description = "No such app", body = Message),
        (status = 409, description = "scale=true on an autoscaled app (its autoscaler decides the count)", body = Message),
        (status = 422, description = "wipe=true", body = Message),
        (status = 503, description = "Stopping, or the change could not be stored (then nothing was killed)", body = Message)))]
pub(super) async fn kill_app_tasks(s: ApiState, app_id: String, uri: &Uri) -> Response {
    let q = match kill_query(uri, true) {
        Ok(q) => q,
        Err((code, m)) => return error(code, m),
    };
    match kill(&s, app_id, None, q).await {
        Ok(k) => axum::Json(match scaled(&k) {
            Some(d) => TasksKilled::Scaled(d),
            None => TasksKilled::Tasks(TaskList {
                tasks: k.tasks.iter().map(task).collect(),
            }),
        })
        .into_response(),
        Err(r) => r,
    }
}

#[utoipa::path(delete, path = "/v2/apps/{appId}/tasks/{taskId}", tag = "marathon",
    params(("appId" = String, Path, description = "The app id"),
        ("taskId" = String, Path, description = "The task id"),
        ("scale" = Option<bool>, Query, description = "Lower `instances` by one (if the task was live), so it is not replaced"),
        ("force" = Option<bool>, Query, description = "Accepted for Marathon clients: Agora takes no deployment lock to override"),
        ("wipe" = Option<bool>, Query, description = "Not supported (no persistent volumes): `true` is refused with 422")),
    responses(
        (status = 200, description = "`{\"task\": {...}}`: the task killed (replaced, unless `scale`); with `scale=true`, `{\"deploymentId\": null, \"version\"}`", body = TaskKilled),
        (status = 400, description = "An unknown query parameter or a value that is not true/false", body = Message),
        (status = 404, description = "No such app, or no such task of it (or it has ended)", body = Message),
        (status = 409, description = "scale=true on an autoscaled app (its autoscaler decides the count)", body = Message),
        (status = 422, description = "wipe=true", body = Message),
        (status = 503, description = "Stopping, or the change could not be stored (then nothing was killed)", body = Message)))]
pub(super) async fn kill_app_task(
    s: ApiState,
    app_id: String,
    task_id: String,
    uri: &Uri,
) -> Response {
    let q = match kill_query(uri, false) {
        Ok(q) => q,
        Err((code, m)) => return error(code, m),
    };
    match kill(&s, app_id, Some(task_id), q).await {
        Ok(k) => {
            if let Some(d) = scaled(&k) {
                return axum::Json(TaskKilled::Scaled(d)).into_response();
            }
            match k.tasks.first() {
                Some(t) => {
                    axum::Json(TaskKilled::Task(TaskEnvelope { task: task(t) })).into_response()
                }
                None => error(StatusCode::NOT_FOUND, "the task has ended"),
            }
        }
        Err(r) => r,
    }
}
