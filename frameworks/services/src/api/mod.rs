//! The REST API: a Marathon v2 subset (default port 8080) under `/v2`, with
//! Marathon's shapes and field names only, and Agora's own view (the same
//! plus why an app waits, its launch delay, tasks' health) under
//! `/v1`.
//!
//! `/v2/apps` (GET, POST), `/v2/apps/{appId}` (GET, PUT, DELETE),
//! `/v2/apps/{appId}/restart` (POST), `/v2/apps/{appId}/tasks` (GET,
//! DELETE), `/v2/apps/{appId}/tasks/{taskId}` (DELETE),
//! `/v2/tasks`, `/v2/deployments` (GET; DELETE `/{deploymentId}`),
//! `/v2/events`, `/v2/info`, `/ping`; `/v1/apps[/{appId}]`,
//! `/v1/deployments`, `/v1/info`; discovery (`endpoints.rs`):
//! `/v1/endpoints/watch`, `/v1/endpoints/acks`, `/v1/services[/{appId}]`; the OpenAPI document, generated
//! from the handlers and their types, at `/openapi.json`. Invalid
//! definitions get 422 with every problem listed; malformed JSON gets 400; a
//! method a path does not serve gets 405 with `Allow`.

mod autoscalers;
mod endpoints;
mod json;
mod kill;
mod openapi;

use crate::app::parse_app;
use crate::scheduler::{AppState, Instance};
use crate::service::{ApiError, Handle, Request, View};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get};
use json::*;
use kill::{kill_app_task, kill_app_tasks};
use tokio::sync::oneshot;

pub use openapi::document;

/// ISO 8601 (UTC) of Unix seconds.
pub fn json_iso8601(t: f64) -> String {
    json::iso8601(t)
}

#[derive(Clone)]
pub struct ApiState {
    pub handle: Handle,
    pub master: String,
    /// The framework's role (`--role`), shown as Marathon's `mesos_role`.
    pub role: String,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/v2/info", get(info))
        .route("/v2/apps", get(list_apps).post(create_app))
        .route("/v2/apps/{*rest}", any(app_route))
        .route("/v2/tasks", get(all_tasks))
        .route("/v2/deployments", get(deployments))
        .route("/v2/deployments/{deploymentId}", delete(cancel_deployment))
        .route("/v2/events", get(events))
        .route("/v1/apps", get(agora_apps))
        .route("/v1/apps/{*rest}", any(agora_app_route))
        .route("/v1/deployments", get(agora_deployments))
        .route("/v1/info", get(agora_info))
        .route("/v1/endpoints/watch", get(endpoints::watch))
        .route("/v1/endpoints/acks", axum::routing::post(endpoints::acks))
        .route("/v1/endpoints/load", axum::routing::post(autoscalers::load))
        .route("/v1/autoscalers", get(autoscalers::list_autoscalers))
        .route(
            "/v1/autoscalers/{*rest}",
            any(autoscalers::autoscaler_route),
        )
        .route("/metrics", get(autoscalers::metrics))
        .route("/v1/services", get(endpoints::services))
        .route("/v1/services/{*rest}", any(service_route))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such path; see /openapi.json") })
        .with_state(state)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        axum::Json(Message {
            message: message.into(),
        }),
    )
        .into_response()
}

/// 405 naming what the path serves.
fn not_allowed(allow: &'static str) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this path serves {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

fn api_error(e: ApiError) -> Response {
    let code = match e {
        ApiError::Invalid(details) => return invalid(details),
        ApiError::Exists(_) | ApiError::Autoscaled { .. } | ApiError::AutoscaledKill { .. } => {
            StatusCode::CONFLICT
        }
        ApiError::NoApp(_)
        | ApiError::NoTask { .. }
        | ApiError::NoDeployment(_)
        | ApiError::NoPolicy(_) => StatusCode::NOT_FOUND,
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

fn no_app(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("App '{id}' does not exist"))
}

fn mine<'a>(v: &'a View, id: &str) -> Vec<&'a Instance> {
    v.instances.iter().filter(|i| i.app_id == id).collect()
}

fn find<'a>(v: &'a View, id: &str) -> Option<&'a AppState> {
    v.apps.iter().find(|a| a.app.id == id)
}

#[utoipa::path(get, path = "/ping", tag = "marathon",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
async fn ping() -> &'static str {
    "pong\n"
}

#[utoipa::path(get, path = "/v2/info", tag = "marathon",
    responses((status = 200, body = Info), (status = 503, body = Message)))]
async fn info(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => axum::Json(Info {
            name: "agora-services".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framework_id: v.framework_id,
            marathon_config: MarathonConfig {
                master: s.master,
                mesos_role: s.role,
            },
        })
        .into_response(),
        Err(r) => r,
    }
}

#[utoipa::path(get, path = "/v1/info", tag = "agora",
    responses((status = 200, body = AgoraInfo), (status = 503, body = Message)))]
async fn agora_info(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => axum::Json(AgoraInfo {
            framework_id: v.framework_id,
            connected: v.connected,
            master: s.master,
        })
        .into_response(),
        Err(r) => r,
    }
}

#[utoipa::path(get, path = "/v2/apps", tag = "marathon",
    responses((status = 200, body = AppList), (status = 503, body = Message)))]
async fn list_apps(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => axum::Json(AppList {
            apps: v
                .apps
                .iter()
                .map(|a| app(a, &mine(&v, &a.app.id), false))
                .collect(),
        })
        .into_response(),
        Err(r) => r,
    }
}

#[utoipa::path(get, path = "/v1/apps", tag = "agora",
    responses((status = 200, body = AgoraAppList), (status = 503, body = Message)))]
async fn agora_apps(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => axum::Json(AgoraAppList {
            apps: v
                .apps
                .iter()
                .map(|a| agora_app(a, &mine(&v, &a.app.id), false))
                .collect(),
        })
        .into_response(),
        Err(r) => r,
    }
}

fn invalid(details: Vec<crate::app::FieldError>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(Invalid {
            message: "Object is not valid".into(),
            details,
        }),
    )
        .into_response()
}

/// Body → JSON (400) → validated app (422).
fn parse_body(body: &Bytes, id_from_path: Option<&str>) -> Result<crate::app::App, Box<Response>> {
    let mut v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}"))))?;
    if let (Some(id), Some(obj)) = (id_from_path, v.as_object_mut()) {
        obj.entry("id")
            .or_insert_with(|| serde_json::Value::String(id.to_string()));
    }
    parse_app(&v).map_err(|details| Box::new(invalid(details)))
}

#[utoipa::path(post, path = "/v2/apps", tag = "marathon",
    request_body(content = crate::app::AppDefinition, description = "A Marathon app definition"),
    responses(
        (status = 201, body = json::App, headers(("Location" = String, description = "the new app"))),
        (status = 400, description = "Malformed JSON", body = Message),
        (status = 409, description = "The app exists", body = Message),
        (status = 422, description = "Invalid definition: every problem listed", body = Invalid),
        (status = 503, description = "Stopping, or the change could not be stored", body = Message)))]
async fn create_app(State(s): State<ApiState>, body: Bytes) -> Response {
    let app = match parse_body(&body, None) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let id = app.id.clone();
    let app = match with_secret_pins(&s, app).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match ask(&s, |reply| Request::PutApp {
        app: Box::new(app),
        create: true,
        force_restart: false,
        force: false,
        reply,
    })
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return api_error(e),
        Err(r) => return r,
    }
    match view(&s).await {
        Ok(v) => match find(&v, &id) {
            Some(st) => (
                StatusCode::CREATED,
                [(header::LOCATION, format!("/v2/apps{id}"))],
                axum::Json(json::app(st, &mine(&v, &id), false)),
            )
                .into_response(),
            // Deleted in between by another request.
            None => no_app(&id),
        },
        Err(r) => r,
    }
}

/// What `/v2/apps/…` names: an app, or one of its sub-resources.
enum Target {
    App(String),
    Restart(String),
    Tasks(String),
    Task(String, String),
    /// A sub-resource Agora does not serve (e.g. `versions`).
    Unknown,
}

/// Splits `shop/web/tasks` into the app `/shop/web` and `tasks`. App ids
/// contain no reserved segment (`tasks`, `restart`, `versions`), so the
/// first one ends the app id.
fn target(rest: &str) -> Target {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some(p) = segs
        .iter()
        .position(|s| crate::app::RESERVED_ID_SEGMENTS.contains(s))
    else {
        return Target::App(format!("/{}", segs.join("/")));
    };
    let id = format!("/{}", segs[..p].join("/"));
    match (segs[p], &segs[p + 1..]) {
        ("restart", []) => Target::Restart(id),
        ("tasks", []) => Target::Tasks(id),
        ("tasks", [task]) => Target::Task(id, task.to_string()),
        _ => Target::Unknown,
    }
}

/// `/v2/apps/{appId}[/restart|/tasks[/{taskId}]]`: app ids contain
/// slashes, so one route takes them all and dispatches by method.
async fn app_route(
    State(s): State<ApiState>,
    method: Method,
    Path(rest): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Response {
    match (target(&rest), method) {
        (Target::App(id), Method::GET | Method::HEAD) => get_app(s, id).await,
        (Target::App(id), Method::PUT) => put_app(s, id, uri.query(), body).await,
        (Target::App(id), Method::DELETE) => delete_app(s, id).await,
        (Target::App(_), _) => not_allowed("GET, HEAD, PUT, DELETE"),
        (Target::Restart(id), Method::POST) => restart_app(s, id).await,
        (Target::Restart(_), _) => not_allowed("POST"),
        (Target::Tasks(id), Method::GET | Method::HEAD) => app_tasks(s, id).await,
        (Target::Tasks(id), Method::DELETE) => kill_app_tasks(s, id, &uri).await,
        (Target::Tasks(_), _) => not_allowed("GET, HEAD, DELETE"),
        (Target::Task(id, task), Method::DELETE) => kill_app_task(s, id, task, &uri).await,
        (Target::Task(..), _) => not_allowed("DELETE"),
        (Target::Unknown, _) => error(StatusCode::NOT_FOUND, "no such path; see /openapi.json"),
    }
}

async fn service_route(
    State(s): State<ApiState>,
    method: Method,
    Path(rest): Path<String>,
    uri: Uri,
) -> Response {
    match method {
        Method::GET | Method::HEAD => {
            let id = format!("/{}", rest.trim_matches('/'));
            endpoints::service(s, id, uri).await
        }
        _ => not_allowed("GET, HEAD"),
    }
}

async fn agora_app_route(
    State(s): State<ApiState>,
    method: Method,
    Path(rest): Path<String>,
) -> Response {
    match method {
        Method::GET | Method::HEAD => {
            let id = format!("/{}", rest.trim_matches('/'));
            agora_app_get(s, id).await
        }
        _ => not_allowed("GET, HEAD"),
    }
}

#[utoipa::path(get, path = "/v2/apps/{appId}", tag = "marathon",
    params(("appId" = String, Path, description = "The app id, e.g. `shop/web` (its slashes included)")),
    responses((status = 200, body = AppEnvelope), (status = 404, body = Message), (status = 503, body = Message)))]
async fn get_app(s: ApiState, id: String) -> Response {
    let v = match view(&s).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match find(&v, &id) {
        Some(st) => axum::Json(AppEnvelope {
            app: json::app(st, &mine(&v, &id), true),
        })
        .into_response(),
        None => no_app(&id),
    }
}

#[utoipa::path(get, path = "/v1/apps/{appId}", tag = "agora",
    params(("appId" = String, Path, description = "The app id, e.g. `shop/web` (its slashes included)")),
    responses((status = 200, body = AgoraAppEnvelope), (status = 404, body = Message), (status = 503, body = Message)))]
async fn agora_app_get(s: ApiState, id: String) -> Response {
    let v = match view(&s).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match find(&v, &id) {
        Some(st) => axum::Json(AgoraAppEnvelope {
            app: agora_app(st, &mine(&v, &id), true),
        })
        .into_response(),
        None => no_app(&id),
    }
}

#[utoipa::path(get, path = "/v2/apps/{appId}/tasks", tag = "marathon",
    params(("appId" = String, Path, description = "The app id")),
    responses((status = 200, body = TaskList), (status = 404, body = Message), (status = 503, body = Message)))]
async fn app_tasks(s: ApiState, id: String) -> Response {
    let v = match view(&s).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if find(&v, &id).is_none() {
        return no_app(&id);
    }
    axum::Json(TaskList {
        tasks: mine(&v, &id).into_iter().map(task).collect(),
    })
    .into_response()
}

/// `{"instances": N}` alone: a scale, not a new definition.
fn scale_only(raw: &serde_json::Value) -> Option<&serde_json::Value> {
    let obj = raw.as_object()?;
    if obj.keys().all(|k| k == "instances" || k == "id") {
        obj.get("instances")
    } else {
        None
    }
}

#[utoipa::path(put, path = "/v2/apps/{appId}", tag = "marathon",
    params(("appId" = String, Path, description = "The app id"),
        ("force" = Option<bool>, Query, description = "Change the instance count of an autoscaled app anyway: its policy is suspended until it is PUT again")),
    request_body(content = crate::app::AppDefinition,
        description = "A full definition (a new version: rolling deployment), or `{\"instances\": N}` alone (a scale)"),
    responses(
        (status = 200, body = DeploymentResult),
        (status = 400, description = "Malformed JSON", body = Message),
        (status = 400, description = "A bad force value", body = Message),
        (status = 404, description = "Scaling an app that does not exist", body = Message),
        (status = 409, description = "The app is autoscaled: change its policy, or force the scale (which suspends the policy)", body = Message),
        (status = 422, description = "Invalid definition: every problem listed", body = Invalid),
        (status = 503, body = Message)))]
async fn put_app(s: ApiState, id: String, query: Option<&str>, body: Bytes) -> Response {
    let force = match force(query) {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let raw: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}")),
    };
    if let Some(n) = scale_only(&raw) {
        let max = crate::app::MAX_INSTANCES;
        let Some(n) = n.as_u64().filter(|n| *n <= max) else {
            return invalid(vec![crate::app::FieldError {
                path: "/instances".into(),
                errors: vec![format!("must be a whole number between 0 and {max}")],
            }]);
        };
        return match ask(&s, |reply| Request::Scale {
            id: id.clone(),
            instances: n as u32,
            force,
            reply,
        })
        .await
        {
            Ok(Ok(())) => axum::Json(DeploymentResult {
                deployment_id: None,
                version: None,
            })
            .into_response(),
            Ok(Err(e)) => api_error(e),
            Err(r) => r,
        };
    }
    let app = match parse_body(&body, Some(&id)) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if app.id != id {
        return invalid(vec![crate::app::FieldError {
            path: "/id".into(),
            errors: vec![format!("differs from the path's {id}")],
        }]);
    }
    let app = match with_secret_pins(&s, app).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    deployment_answer(
        ask(&s, |reply| Request::PutApp {
            app: Box::new(app),
            create: false,
            force_restart: false,
            force,
            reply,
        })
        .await,
    )
}

fn deployment_answer(
    r: Result<Result<Option<crate::scheduler::Deployment>, ApiError>, Response>,
) -> Response {
    match r {
        Ok(Ok(d)) => axum::Json(DeploymentResult {
            deployment_id: d.as_ref().map(|d| d.id.clone()),
            version: d.map(|d| d.version),
        })
        .into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

#[utoipa::path(delete, path = "/v2/apps/{appId}", tag = "marathon",
    params(("appId" = String, Path, description = "The app id")),
    responses((status = 200, body = DeploymentResult), (status = 404, body = Message), (status = 503, body = Message)))]
async fn delete_app(s: ApiState, id: String) -> Response {
    match ask(&s, |reply| Request::DeleteApp {
        id: id.clone(),
        reply,
    })
    .await
    {
        Ok(Ok(())) => axum::Json(DeploymentResult {
            deployment_id: None,
            version: None,
        })
        .into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

#[utoipa::path(post, path = "/v2/apps/{appId}/restart", tag = "marathon",
    params(("appId" = String, Path, description = "The app id")),
    responses((status = 200, body = DeploymentResult), (status = 404, body = Message), (status = 503, body = Message)))]
async fn restart_app(s: ApiState, id: String) -> Response {
    // A restart is a deployment: it picks up the secrets' latest versions
    // (those put with --no-rollout included). When the master cannot tell,
    // the app keeps the versions it has.
    let paths = match view(&s).await {
        Ok(v) => find(&v, &id)
            .map(|a| a.app.secret_paths())
            .unwrap_or_default(),
        Err(r) => return r,
    };
    let secret_versions = if paths.is_empty() {
        None
    } else {
        match s.handle.secret_versions(paths).await {
            Ok(Ok(vs)) if vs.iter().all(|v| v.exists && v.latest > 0) => {
                Some(vs.into_iter().map(|v| (v.path, v.latest)).collect())
            }
            _ => None,
        }
    };
    deployment_answer(
        ask(&s, |reply| Request::Restart {
            id,
            secret_versions,
            reply,
        })
        .await,
    )
}

/// Checks an app's secret references with the master (each path must
/// exist: 422 naming it otherwise) and pins each to its latest version.
/// An app without secrets passes as it is.
async fn with_secret_pins(
    s: &ApiState,
    mut app: crate::app::App,
) -> Result<crate::app::App, Response> {
    use agora_sdk::SecretVersionsError as E;
    if app.secrets.is_empty() {
        return Ok(app);
    }
    let paths: Vec<String> = {
        let mut p: Vec<String> = app.secrets.values().cloned().collect();
        p.sort();
        p.dedup();
        p
    };
    let field = |path: &str, msg: String| crate::app::FieldError {
        path: path.into(),
        errors: vec![msg],
    };
    match s.handle.secret_versions(paths.clone()).await {
        Err(e) => Err(api_error(e)),
        Ok(Ok(versions)) => match crate::secrets::pins_for(&app, &versions) {
            Ok(pins) => {
                app.secret_versions = pins;
                Ok(app)
            }
            Err(errs) => Err(invalid(
                errs.into_iter().map(|(p, m)| field(&p, m)).collect(),
            )),
        },
        Ok(Err(E::NoStore(why))) => Err(invalid(vec![field(
            "/secrets",
            format!(
                "the master has no secret store, so secret references cannot be used ({why}): start the master with --secrets-key-file <file of 32 random bytes, mode 0600> (agora dev makes one)"
            ),
        )])),
        Ok(Err(E::Denied(why))) => Err(invalid(vec![field(
            "/secrets",
            format!(
                "the master does not let this framework read {}: {why}",
                paths.join(", ")
            ),
        )])),
        Ok(Err(E::Sdk(e))) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot check the app's secret references with the master: {e}; try again"),
        )),
    }
}

#[utoipa::path(get, path = "/v2/tasks", tag = "marathon",
    responses((status = 200, body = TaskList), (status = 503, body = Message)))]
async fn all_tasks(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => axum::Json(TaskList {
            tasks: v.instances.iter().map(task).collect(),
        })
        .into_response(),
        Err(r) => r,
    }
}

#[utoipa::path(get, path = "/v2/deployments", tag = "marathon",
    responses((status = 200, body = Vec<DeploymentInfo>), (status = 503, body = Message)))]
async fn deployments(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => axum::Json(
            v.apps
                .iter()
                .filter_map(|a| a.deployment.as_ref().map(|d| deployment(a, d)))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

#[utoipa::path(get, path = "/v1/deployments", tag = "agora",
    responses((status = 200, body = Vec<AgoraDeployment>), (status = 503, body = Message)))]
async fn agora_deployments(State(s): State<ApiState>) -> Response {
    match view(&s).await {
        Ok(v) => axum::Json(
            v.apps
                .iter()
                .filter_map(|a| {
                    a.deployment
                        .as_ref()
                        .map(|d| agora_deployment(a, d, &mine(&v, &a.app.id)))
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// `force=true|false` from a query string (anything else is an error).
fn force(q: Option<&str>) -> Result<bool, String> {
    let mut force = false;
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("force", "true") => force = true,
            ("force", "false") => force = false,
            ("force", other) => {
                return Err(format!("force must be true or false, got {other:?}"));
            }
            _ => {}
        }
    }
    Ok(force)
}

#[utoipa::path(delete, path = "/v2/deployments/{deploymentId}", tag = "marathon",
    params(("deploymentId" = String, Path, description = "The deployment id"),
        ("force" = Option<bool>, Query, description = "Stop where it is instead of rolling back")),
    responses(
        (status = 200, description = "Rolling back: the deployment that does it", body = DeploymentResult),
        (status = 202, description = "Stopped where it was (force)", body = Message),
        (status = 400, description = "A bad force value", body = Message),
        (status = 404, body = Message),
        (status = 503, body = Message)))]
async fn cancel_deployment(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let force = match force(q.as_deref()) {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match ask(&s, |reply| Request::CancelDeployment {
        id: id.clone(),
        force,
        reply,
    })
    .await
    {
        Ok(Ok(Some(d))) => axum::Json(DeploymentResult {
            deployment_id: Some(d.id),
            version: Some(d.version),
        })
        .into_response(),
        Ok(Ok(None)) => (
            StatusCode::ACCEPTED,
            axum::Json(Message {
                message: format!("deployment {id} stopped where it was"),
            }),
        )
            .into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

#[utoipa::path(get, path = "/v2/events", tag = "marathon",
    responses((status = 200, description = "Server-sent events: `event: <eventType>` with a JSON `data` line each",
        body = String, content_type = "text/event-stream")))]
async fn events(State(s): State<ApiState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = s.handle.events();
    let closing = s.handle.hub().closing();
    // Ends when the framework stops (a graceful shutdown waits for it).
    let stream = futures::stream::unfold((rx, closing), |(mut rx, mut closing)| async move {
        loop {
            let next = tokio::select! {
                n = rx.recv() => n,
                _ = closing.wait_for(|c| *c) => return None,
            };
            match next {
                Ok(v) => {
                    let kind = v["eventType"].as_str().unwrap_or("event").to_string();
                    let ev = Event::default().event(kind).data(v.to_string());
                    return Some((Ok::<_, std::convert::Infallible>(ev), (rx, closing)));
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

#[utoipa::path(get, path = "/openapi.json", tag = "agora",
    responses((status = 200, description = "This document", body = Object)))]
async fn openapi() -> Response {
    axum::Json(document()).into_response()
}
