//! Autoscaling on the API: `PUT/GET/DELETE /v1/autoscalers/{appId}`,
//! `GET /v1/autoscalers` (policies and their status), `POST
//! /v1/endpoints/load` (routers' load reports) and `GET /metrics` (the
//! autoscalers' numbers, Prometheus text). See docs/autoscaling.md.

use super::json::{Invalid, Message};
use super::{ApiState, api_error, ask, error, invalid};
use crate::autoscale::{AutoscalerList, AutoscalerView, parse_policy};
use crate::service::MAX_POLICY_INSTANCES;
use crate::service::{ApiError, Request};
use agora_core::endpoints::LoadReport;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Longest router id a load report may carry.
const MAX_ROUTER_ID: usize = 256;

/// `/v1/autoscalers/{appId}`: app ids contain slashes, so one route takes
/// them all and dispatches by method.
pub(super) async fn autoscaler_route(
    State(s): State<ApiState>,
    method: Method,
    Path(rest): Path<String>,
    body: Bytes,
) -> Response {
    let id = format!("/{}", rest.trim_matches('/'));
    match method {
        Method::GET | Method::HEAD => get_autoscaler(s, id).await,
        Method::PUT => put_autoscaler(s, id, body).await,
        Method::DELETE => delete_autoscaler(s, id).await,
        _ => super::not_allowed("GET, HEAD, PUT, DELETE"),
    }
}

#[utoipa::path(get, path = "/v1/autoscalers", tag = "agora",
    responses((status = 200, description = "Every autoscaling policy with its status", body = AutoscalerList),
        (status = 503, body = Message)))]
pub(super) async fn list_autoscalers(State(s): State<ApiState>) -> Response {
    match ask(&s, |reply| Request::Policies {
        app_id: None,
        reply,
    })
    .await
    {
        Ok(autoscalers) => axum::Json(AutoscalerList { autoscalers }).into_response(),
        Err(r) => r,
    }
}

#[utoipa::path(get, path = "/v1/autoscalers/{appId}", tag = "agora",
    params(("appId" = String, Path, description = "The app id, e.g. `demo/web` (its slashes included)")),
    responses((status = 200, description = "The policy and its status: current metrics, desired count, last decision and why, suspended or not", body = AutoscalerView),
        (status = 404, description = "The app has no autoscaling policy", body = Message),
        (status = 503, body = Message)))]
pub(super) async fn get_autoscaler(s: ApiState, id: String) -> Response {
    match ask(&s, |reply| Request::Policies {
        app_id: Some(id.clone()),
        reply,
    })
    .await
    {
        Ok(mut v) if !v.is_empty() => axum::Json(v.remove(0)).into_response(),
        Ok(_) => api_error(ApiError::NoPolicy(id)),
        Err(r) => r,
    }
}

#[utoipa::path(put, path = "/v1/autoscalers/{appId}", tag = "agora",
    params(("appId" = String, Path, description = "The app id, e.g. `demo/web` (its slashes included)")),
    request_body(content = Object, description = "A policy: `{min, max, targets: [{metric, value}], behavior?, idleAfterSeconds?, tolerance?}` (docs/autoscaling.md)"),
    responses((status = 200, description = "Stored and in effect (a suspended policy acts again)", body = AutoscalerView),
        (status = 400, description = "Malformed JSON", body = Message),
        (status = 422, description = "Invalid policy, or no such app: every problem, each naming its field (`appId` for the app)", body = Invalid),
        (status = 503, description = "Stopping, or the policy could not be stored", body = Message)))]
pub(super) async fn put_autoscaler(s: ApiState, id: String, body: Bytes) -> Response {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return error(StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}"));
    }
    let policy = match parse_policy(&body, MAX_POLICY_INSTANCES) {
        Ok(p) => p,
        Err(errs) => {
            let mut details: Vec<crate::app::FieldError> = errs
                .into_iter()
                .map(|(path, m)| crate::app::FieldError {
                    path,
                    errors: vec![m],
                })
                .collect();
            // Every problem at once: the app too.
            if let Ok(v) = super::view(&s).await
                && super::find(&v, &id).is_none()
            {
                details.insert(0, no_such_app(&id));
            }
            return invalid(details);
        }
    };
    match ask(&s, |reply| Request::PutPolicy {
        app_id: id.clone(),
        policy: Box::new(policy),
        reply,
    })
    .await
    {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

fn no_such_app(id: &str) -> crate::app::FieldError {
    crate::app::FieldError {
        path: "appId".into(),
        errors: vec![format!(
            "app {id} does not exist: deploy it first (agora app deploy), then give it a policy"
        )],
    }
}

#[utoipa::path(delete, path = "/v1/autoscalers/{appId}", tag = "agora",
    params(("appId" = String, Path, description = "The app id, e.g. `demo/web` (its slashes included)")),
    responses((status = 204, description = "Deleted: the app keeps its instance count and is scaled by hand again"),
        (status = 404, description = "The app has no autoscaling policy", body = Message),
        (status = 503, body = Message)))]
pub(super) async fn delete_autoscaler(s: ApiState, id: String) -> Response {
    match ask(&s, |reply| Request::DeletePolicy {
        app_id: id.clone(),
        reply,
    })
    .await
    {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

#[utoipa::path(post, path = "/v1/endpoints/load", tag = "agora",
    request_body(content = Object, description = "A router's load report: `{router, window_ms, sets: [{key: {app_id, port_index}, requests, rps, in_flight, latency_p50_ms?, latency_p95_ms?, held?}]}`"),
    responses((status = 204, description = "Recorded; an app at zero instances the router holds requests for is woken at once"),
        (status = 400, description = "Malformed JSON", body = Message),
        (status = 422, description = "Not a load report", body = Message),
        (status = 503, body = Message)))]
pub(super) async fn load(State(s): State<ApiState>, body: Bytes) -> Response {
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}")),
    };
    let report: LoadReport = match serde_json::from_value(v) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("a load report is {{\"router\", \"window_ms\", \"sets\"}}: {e}"),
            );
        }
    };
    if report.router.is_empty() || report.router.len() > MAX_ROUTER_ID {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("router must be a router id of 1 to {MAX_ROUTER_ID} bytes"),
        );
    }
    match s
        .handle
        .request(Request::Load {
            report: Box::new(report),
        })
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => api_error(e),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "agora",
    responses((status = 200, description = "The autoscalers' numbers in Prometheus' text format (`agora_services_autoscaler_*`)",
        body = String, content_type = "text/plain"),
        (status = 503, body = Message)))]
pub(super) async fn metrics(State(s): State<ApiState>) -> Response {
    match ask(&s, |reply| Request::Metrics { reply }).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(r) => r,
    }
}
