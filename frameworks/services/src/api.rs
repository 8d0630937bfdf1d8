//! The REST API (Marathon v2 subset, default port 8080).
//!
//! `/v2/apps` (GET, POST), `/v2/apps/{id}` (GET, PUT, DELETE),
//! `/v2/apps/{id}/restart`, `/v2/apps/{id}/tasks`, `/v2/tasks`,
//! `/v2/deployments` (GET, DELETE `/{id}`), `/v2/info`, `/ping`,
//! `/openapi.json`. Invalid definitions get 422 with every problem listed;
//! malformed JSON gets 400.

use crate::app::{App, parse_app};
use crate::scheduler::{AppState, Instance};
use crate::service::{ApiError, Handle, Request, View};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

#[derive(Clone)]
pub struct ApiState {
    pub handle: Handle,
    pub master: String,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong\n" }))
        .route("/v2/info", get(info))
        .route("/v2/apps", get(list_apps).post(create_app))
        .route(
            "/v2/apps/{*rest}",
            get(app_get).put(app_put).delete(app_delete).post(app_post),
        )
        .route("/v2/tasks", get(all_tasks))
        .route("/v2/deployments", get(deployments))
        .route(
            "/v2/deployments/{id}",
            axum::routing::delete(cancel_deployment),
        )
        .route("/v2/events", get(events))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, axum::Json(json!({"message": message.into()}))).into_response()
}

fn api_error(e: ApiError) -> Response {
    let code = match e {
        ApiError::Exists(_) => StatusCode::CONFLICT,
        ApiError::NoApp(_) | ApiError::NoDeployment(_) => StatusCode::NOT_FOUND,
        ApiError::Stopped | ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, e.to_string())
}

async fn ask<T>(
    s: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> Request,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    s.handle.request(make(tx)).await.map_err(api_error)?;
    rx.await.map_err(|_| api_error(ApiError::Stopped))
}

async fn view(s: &ApiState) -> Result<View, Response> {
    s.handle.view().await.map_err(api_error)
}

fn task_json(i: &Instance) -> Value {
    json!({
        "id": i.task_id,
        "appId": i.app_id,
        "agentId": i.agent_id,
        "host": i.host,
        "ports": i.ports,
        "state": i.state.as_str(),
        "healthy": i.healthy,
        "version": i.version,
        "stagedAt": i.staged_at,
        "startedAt": i.running_since,
        "message": i.message,
        "killing": i.killing,
    })
}

fn app_json(st: &AppState, instances: &[Instance], with_tasks: bool) -> Value {
    let mine: Vec<&Instance> = instances.iter().filter(|i| i.app_id == st.app.id).collect();
    let live = |f: &dyn Fn(&Instance) -> bool| mine.iter().filter(|i| i.is_live() && f(i)).count();
    let mut v = st.app.to_marathon();
    v["tasksRunning"] = json!(live(&|i| i.state == agora_core::TaskState::Running));
    v["tasksStaged"] = json!(live(&|i| i.state != agora_core::TaskState::Running));
    v["tasksHealthy"] = json!(live(&|i| i.healthy == Some(true)));
    v["tasksUnhealthy"] = json!(live(&|i| i.healthy == Some(false)));
    v["deployments"] = json!(
        st.deployment
            .iter()
            .map(|d| json!({"id": d.id}))
            .collect::<Vec<_>>()
    );
    // Agora extensions: why instances are missing, and the backoff delay.
    v["waiting"] = json!(st.waiting);
    v["launchDelaySeconds"] = json!(st.delay);
    if with_tasks {
        v["tasks"] = json!(mine.iter().map(|i| task_json(i)).collect::<Vec<_>>());
    }
    v
}

async fn info(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => axum::Json(json!({
            "name": "agora-services",
            "version": env!("CARGO_PKG_VERSION"),
            "frameworkId": v.framework_id,
            "connected": v.connected,
            "master": s.master,
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn list_apps(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => axum::Json(json!({"apps": v.apps.iter().map(|a| app_json(a, &v.instances, false)).collect::<Vec<_>>()})).into_response(),
        Err(r) => r,
    }
}

/// Body → JSON (400) → validated app (422).
fn parse_body(body: &Bytes, id_from_path: Option<&str>) -> Result<App, Box<Response>> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}"))))?;
    if let (Some(id), Some(obj)) = (id_from_path, v.as_object_mut()) {
        obj.entry("id")
            .or_insert_with(|| Value::String(id.to_string()));
    }
    parse_app(&v).map_err(|details| {
        Box::new(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"message": "Object is not valid", "details": details})),
            )
                .into_response(),
        )
    })
}

async fn create_app(State(s): State<ApiState>, body: Bytes) -> Response {
    let app = match parse_body(&body, None) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let id = app.id.clone();
    match ask(&s, |reply| Request::PutApp {
        app: Box::new(app),
        create: true,
        force_restart: false,
        reply,
    })
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return api_error(e),
        Err(r) => return r,
    }
    match view(&s).await {
        Ok(v) => match v.apps.iter().find(|a| a.app.id == id) {
            Some(st) => (
                StatusCode::CREATED,
                [(header::LOCATION, format!("/v2/apps{id}"))],
                axum::Json(app_json(st, &v.instances, false)),
            )
                .into_response(),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "the app vanished"),
        },
        Err(r) => r,
    }
}

/// Splits `/shop/web/tasks` into (`/shop/web`, Some("tasks")).
fn split(rest: &str) -> (String, Option<&'static str>) {
    let rest = format!("/{}", rest.trim_matches('/'));
    for suffix in ["restart", "tasks"] {
        if let Some(id) = rest.strip_suffix(&format!("/{suffix}")) {
            return (
                id.to_string(),
                Some(if suffix == "restart" {
                    "restart"
                } else {
                    "tasks"
                }),
            );
        }
    }
    (rest, None)
}

async fn app_get(State(s): State<ApiState>, Path(rest): Path<String>) -> Response {
    let (id, sub) = split(&rest);
    let v = match view(&s).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(st) = v.apps.iter().find(|a| a.app.id == id) else {
        return error(StatusCode::NOT_FOUND, format!("App '{id}' does not exist"));
    };
    match sub {
        Some("tasks") => axum::Json(json!({"tasks": v.instances.iter().filter(|i| i.app_id == id).map(task_json).collect::<Vec<_>>()})).into_response(),
        None => axum::Json(json!({"app": app_json(st, &v.instances, true)})).into_response(),
        Some(_) => error(StatusCode::METHOD_NOT_ALLOWED, "use POST for restart"),
    }
}

#[derive(Deserialize, Default)]
struct Force {
    #[serde(default)]
    force: bool,
}

async fn app_put(State(s): State<ApiState>, Path(rest): Path<String>, body: Bytes) -> Response {
    let (id, sub) = split(&rest);
    if sub.is_some() {
        return error(StatusCode::METHOD_NOT_ALLOWED, "PUT applies to an app");
    }
    let raw: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}")),
    };
    // `{"instances": N}` alone is a scale.
    if let Some(obj) = raw.as_object()
        && obj.keys().all(|k| k == "instances" || k == "id")
        && let Some(n) = obj.get("instances")
    {
        let Some(n) = n.as_u64().filter(|n| *n <= 10_000) else {
            return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"message": "Object is not valid", "details": [{"path": "/instances", "errors": ["must be a whole number between 0 and 10000"]}]}))).into_response();
        };
        return match ask(&s, |reply| Request::Scale {
            id: id.clone(),
            instances: n as u32,
            reply,
        })
        .await
        {
            Ok(Ok(())) => axum::Json(json!({"id": id, "instances": n})).into_response(),
            Ok(Err(e)) => api_error(e),
            Err(r) => r,
        };
    }
    let app = match parse_body(&body, Some(&id)) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if app.id != id {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the body's id {} differs from the path's {id}", app.id),
        );
    }
    match ask(&s, |reply| Request::PutApp { app: Box::new(app), create: false, force_restart: false, reply }).await {
        Ok(Ok(d)) => axum::Json(json!({"deploymentId": d.as_ref().map(|d| d.id.clone()), "version": d.map(|d| d.version)})).into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

async fn app_delete(State(s): State<ApiState>, Path(rest): Path<String>) -> Response {
    let (id, _) = split(&rest);
    match ask(&s, |reply| Request::DeleteApp {
        id: id.clone(),
        reply,
    })
    .await
    {
        Ok(Ok(())) => axum::Json(json!({"id": id, "deleted": true})).into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

async fn app_post(State(s): State<ApiState>, Path(rest): Path<String>) -> Response {
    let (id, sub) = split(&rest);
    if sub != Some("restart") {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST /v2/apps/{id}/restart restarts an app; create apps with POST /v2/apps",
        );
    }
    let v = match view(&s).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(app) = v
        .apps
        .iter()
        .find(|a| a.app.id == id)
        .map(|a| a.app.clone())
    else {
        return error(StatusCode::NOT_FOUND, format!("App '{id}' does not exist"));
    };
    match ask(&s, |reply| Request::PutApp { app: Box::new(app), create: false, force_restart: true, reply }).await {
        Ok(Ok(d)) => axum::Json(json!({"deploymentId": d.as_ref().map(|d| d.id.clone()), "version": d.map(|d| d.version)})).into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

async fn all_tasks(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => {
            axum::Json(json!({"tasks": v.instances.iter().map(task_json).collect::<Vec<_>>()}))
                .into_response()
        }
        Err(r) => r,
    }
}

async fn deployments(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => {
            let list: Vec<Value> = v
                .apps
                .iter()
                .filter_map(|a| a.deployment.as_ref().map(|d| (a, d)))
                .map(|(a, d)| {
                    let new = v.instances.iter().filter(|i| i.app_id == a.app.id && i.is_live() && i.version == d.version).count();
                    let old = v.instances.iter().filter(|i| i.app_id == a.app.id && i.is_live() && i.version != d.version).count();
                    json!({
                        "id": d.id,
                        "version": d.version,
                        "affectedApps": [a.app.id],
                        "steps": d.steps,
                        "currentStep": d.steps.len(),
                        "totalSteps": d.steps.len() + old + a.app.instances as usize - new.min(a.app.instances as usize),
                        "currentActions": [{"action": "RestartApplication", "app": a.app.id,
                            "readinessCheckResults": [], "newInstances": new, "oldInstances": old, "target": a.app.instances}],
                        "waiting": a.waiting,
                    })
                })
                .collect();
            axum::Json(list).into_response()
        }
        Err(r) => r,
    }
}

async fn cancel_deployment(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<Force>,
) -> Response {
    match ask(&s, |reply| Request::CancelDeployment {
        id: id.clone(),
        force: q.force,
        reply,
    })
    .await
    {
        Ok(Ok(Some(d))) => {
            axum::Json(json!({"deploymentId": d.id, "version": d.version, "rolledBack": id}))
                .into_response()
        }
        Ok(Ok(None)) => (StatusCode::ACCEPTED, axum::Json(json!({"stopped": id}))).into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

/// Server-sent events: one `event: <eventType>` with a JSON `data` line each.
async fn events(State(s): State<ApiState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = s.handle.events();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => {
                    let kind = v["eventType"].as_str().unwrap_or("event").to_string();
                    let ev = Event::default().event(kind).data(v.to_string());
                    return Some((Ok::<_, std::convert::Infallible>(ev), rx));
                }
                // A slow reader missed some: keep going with the newest.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn openapi(_headers: HeaderMap) -> Response {
    let op =
        |summary: &str| json!({"summary": summary, "responses": {"200": {"description": "OK"}}});
    axum::Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "Agora services framework", "version": env!("CARGO_PKG_VERSION"),
                 "description": "A Marathon v2 compatible subset: apps, tasks, deployments."},
        "paths": {
            "/v2/apps": {"get": op("List apps"), "post": {"summary": "Create an app", "responses": {
                "201": {"description": "Created"}, "400": {"description": "Malformed JSON"},
                "409": {"description": "The app exists"}, "422": {"description": "Invalid definition: every problem listed"}}}},
            "/v2/apps/{appId}": {"get": op("Show an app with counters and tasks"), "put": op("Replace or scale an app"), "delete": op("Destroy an app")},
            "/v2/apps/{appId}/restart": {"post": op("Replace every instance")},
            "/v2/apps/{appId}/tasks": {"get": op("An app's tasks")},
            "/v2/tasks": {"get": op("All tasks")},
            "/v2/deployments": {"get": op("Deployments in progress")},
            "/v2/deployments/{deploymentId}": {"delete": op("Roll back (or with ?force=true, stop) a deployment")},
            "/v2/info": {"get": op("Framework information")},
            "/v2/events": {"get": {"summary": "Server-sent events: status updates, health changes, deployment steps",
                "responses": {"200": {"description": "text/event-stream"}}}},
            "/ping": {"get": op("Liveness")},
        }
    }))
    .into_response()
}
