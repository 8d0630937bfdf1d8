//! Discovery over HTTP (see docs/discovery.md, the contract):
//! `GET /v1/endpoints/watch[?since=V][&router=ID]` — the endpoint stream
//! (SSE: a snapshot or the missed updates, then one `update` per version,
//! `: ping` every 15 s; a subscriber that falls [`SUBSCRIBER_QUEUE`]
//! updates behind is disconnected); `POST /v1/endpoints/acks` — a drain
//! participant's acknowledgements; `GET /v1/services[/{appId}]` — the
//! Consul-like view, with `?index=V&wait=30s` long-polls.
//!
//! With tokens required, `router=` and acks need a token (`api_auth`), and
//! a participant is bound to the principal whose stream joined it: another
//! principal's stream or ack for that id is 403.

use super::json::Message;
use super::{ApiState, error, no_app, view};
use crate::api_auth::Principal;
use crate::endpoints::{Bound, SUBSCRIBER_QUEUE, Start};
use agora_core::endpoints::{EndpointSet, EndpointState, dns_name};
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::ToSchema;

/// The DNS zone names are given in.
pub const DOMAIN: &str = "agora";
/// How often an idle stream carries a `: ping` comment.
pub const PING: Duration = Duration::from_secs(15);
/// Longest long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

type Pairs = Vec<(String, String)>;

/// A bad query: what is wrong (answered 400).
struct Bad(String);

impl Bad {
    fn answer(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.0)
    }
}

fn query(uri: &Uri, known: &[&str]) -> Result<Pairs, Bad> {
    let Query(pairs): Query<Pairs> =
        Query::try_from_uri(uri).map_err(|e| Bad(format!("malformed query: {e}")))?;
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(Bad(format!(
            "unknown query parameter {k:?} (this path takes {})",
            known.join(", ")
        )));
    }
    Ok(pairs)
}

fn version_param(pairs: &Pairs, key: &str) -> Result<Option<u64>, Bad> {
    match pairs.iter().find(|(k, _)| k == key) {
        None => Ok(None),
        Some((_, v)) => v
            .parse()
            .map(Some)
            .map_err(|_| Bad(format!("{key} must be a version number, got {v:?}"))),
    }
}

fn event<T: Serialize>(kind: &str, v: &T) -> Event {
    Event::default()
        .event(kind)
        .data(serde_json::to_string(v).unwrap_or_default())
}

#[utoipa::path(get, path = "/v1/endpoints/watch", tag = "agora",
    params(("since" = Option<u64>, Query, description = "The last version the subscriber applied: the updates after it come first when they are still kept, else a snapshot"),
        ("router" = Option<String>, Query, description = "Makes the subscriber a drain participant while the stream is open")),
    responses((status = 200, description = "Server-sent events: `snapshot` (`{version, sets}`) or the missed `update`s, then one `update` (`{version, changes}`) per version; `: ping` every 15 s",
        body = String, content_type = "text/event-stream"),
        (status = 400, description = "An unknown parameter or a bad value", body = Message),
        (status = 401, description = "With tokens required: `router=` without a valid bearer token", body = String, content_type = "text/plain"),
        (status = 403, description = "The router id is bound to another principal (the one whose stream joined it)", body = Message)))]
pub(super) async fn watch(
    State(s): State<ApiState>,
    principal: Option<Extension<Principal>>,
    uri: Uri,
) -> Response {
    let pairs = match query(&uri, &["since", "router"]) {
        Ok(p) => p,
        Err(b) => return b.answer(),
    };
    let since = match version_param(&pairs, "since") {
        Ok(v) => v,
        Err(b) => return b.answer(),
    };
    let router = pairs.iter().find(|(k, _)| k == "router").map(|(_, v)| v);
    if router.is_some_and(|r| r.is_empty() || r.len() > 256) {
        return error(
            StatusCode::BAD_REQUEST,
            "router must be a non-empty id of at most 256 bytes",
        );
    }
    let hub = s.handle.hub().clone();
    // A participant from before its first event: a drain waits for it.
    let who = principal.as_ref().map(|p| p.0.0.as_str());
    let joined = match router.map(|r| hub.join_as(r, who)).transpose() {
        Ok(j) => j,
        Err(b) => return bound(b),
    };
    let (start, rx) = hub.subscribe(since);
    let (first, last): (Vec<Event>, u64) = match start {
        Start::Snapshot(snap) => (vec![event("snapshot", &snap)], snap.version),
        Start::Updates(us) => {
            let last = us.last().map(|u| u.version).or(since).unwrap_or(0);
            (us.iter().map(|u| event("update", u)).collect(), last)
        }
    };
    let closing = hub.closing();
    let state = (rx, joined, last, closing);
    let rest = futures::stream::unfold(state, |(mut rx, joined, last, mut closing)| async move {
        loop {
            let next = tokio::select! {
                n = rx.recv() => n,
                _ = closing.wait_for(|c| *c) => return None,
            };
            match next {
                // Already in the snapshot or the missed updates.
                Ok(u) if u.version <= last => continue,
                Ok(u) => {
                    let v = u.version;
                    return Some((event("update", &*u), (rx, joined, v, closing)));
                }
                // Too slow: the queue is bounded, so it is disconnected
                // (it reconnects with `since`). It stays a drain
                // participant meanwhile (its last view still routes).
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(
                        missed = n,
                        queue = SUBSCRIBER_QUEUE,
                        "endpoint subscriber too slow; disconnected"
                    );
                    return None;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures::StreamExt;
    let stream = futures::stream::iter(first)
        .chain(rest)
        .map(Ok::<_, std::convert::Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(PING).text("ping"))
        .into_response()
}

/// 403: the participant belongs to another principal.
fn bound(b: Bound) -> Response {
    tracing::warn!(router = %b.router, principal = %b.principal,
        "refused a drain participant's stream or ack from another principal than the one that joined it");
    error(StatusCode::FORBIDDEN, b.to_string())
}

/// A drain participant's acknowledgement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub router: String,
    /// The router routes by this version.
    #[serde(default)]
    pub applied: Option<u64>,
    /// Every request it had in flight to an endpoint draining or gone in
    /// this version has finished.
    #[serde(default)]
    pub drained: Option<u64>,
}

#[utoipa::path(post, path = "/v1/endpoints/acks", tag = "agora",
    request_body(content = Ack, description = "`{router, applied?, drained?}`"),
    responses((status = 204, description = "Recorded (ignored when the router is no drain participant)"),
        (status = 400, description = "Malformed JSON", body = Message),
        (status = 401, description = "With tokens required: no valid bearer token", body = String, content_type = "text/plain"),
        (status = 403, description = "The router is a drain participant bound to another principal (the one whose stream joined it)", body = Message),
        (status = 422, description = "Not an acknowledgement", body = Message)))]
pub(super) async fn acks(
    State(s): State<ApiState>,
    principal: Option<Extension<Principal>>,
    body: Bytes,
) -> Response {
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}")),
    };
    let a: Ack = match serde_json::from_value(v) {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("an acknowledgement is {{\"router\", \"applied\", \"drained\"}}: {e}"),
            );
        }
    };
    // Versions are JSON int64s (as the OpenAPI document says): a larger
    // number is no version this framework can have published.
    if [a.applied, a.drained]
        .iter()
        .flatten()
        .any(|v| *v > i64::MAX as u64)
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("applied and drained are versions: at most {}", i64::MAX),
        );
    }
    let who = principal.as_ref().map(|p| p.0.0.as_str());
    match s.handle.hub().ack_as(&a.router, who, a.applied, a.drained) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(b) => bound(b),
    }
}

/// One port of a service.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub index: u32,
    pub name: Option<String>,
    pub protocol: String,
    pub service_port: Option<u32>,
    /// `public` (edge routers serve it) or `internal`.
    pub expose: String,
    pub vhosts: Vec<String>,
    pub path: Option<String>,
}

/// An app as discovery sees it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub id: String,
    /// `null` when the id cannot be a DNS name (a segment with a dot).
    pub dns_name: Option<String>,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceList {
    pub services: Vec<Service>,
}

/// One instance taking (or draining) traffic.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstance {
    pub task_id: String,
    /// The agent's address its ports are bound on.
    pub address: String,
    /// Host ports by port name (the index for an unnamed port).
    pub ports: BTreeMap<String, u32>,
    /// `serving` or `draining`.
    pub state: String,
    /// The last health verdict (`null`: none, or no health check).
    pub healthy: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceDetail {
    #[serde(flatten)]
    pub service: Service,
    pub instances: Vec<ServiceInstance>,
}

fn ports_of(sets: &[EndpointSet]) -> Vec<ServicePort> {
    sets.iter()
        .map(|s| ServicePort {
            index: s.key.port_index,
            name: s.meta.name.clone(),
            protocol: s.meta.protocol.clone(),
            service_port: s.meta.service_port,
            expose: if s.meta.public { "public" } else { "internal" }.into(),
            vhosts: s.meta.vhosts.clone(),
            path: s.meta.path.clone(),
        })
        .collect()
}

/// `index` and `wait` of a long-poll: waits until the version is above
/// `index` or `wait` passes.
async fn long_poll(s: &ApiState, uri: &Uri) -> Result<(), Response> {
    let pairs = query(uri, &["index", "wait"]).map_err(Bad::answer)?;
    let index = version_param(&pairs, "index").map_err(Bad::answer)?;
    let wait = match pairs.iter().find(|(k, _)| k == "wait") {
        None => Duration::from_secs(30),
        Some((_, w)) => parse_wait(w).ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                format!("wait must be a duration like 30s, 500ms or 5m (at most 5m), got {w:?}"),
            )
        })?,
    };
    let Some(index) = index else {
        return Ok(());
    };
    let mut rx = s.handle.hub().version();
    let _ = tokio::time::timeout(wait, rx.wait_for(|v| *v > index)).await;
    Ok(())
}

/// `30s`, `500ms`, `5m` or a number of seconds; at most [`MAX_WAIT`].
fn parse_wait(w: &str) -> Option<Duration> {
    let (num, unit) = match w.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => w.split_at(i),
        None => (w, "s"),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs <= MAX_WAIT.as_secs_f64()).then(|| Duration::from_secs_f64(secs))
}

fn with_index(r: impl IntoResponse, version: u64) -> Response {
    let mut r = r.into_response();
    r.headers_mut()
        .insert("x-agora-index", HeaderValue::from(version));
    r
}

#[utoipa::path(get, path = "/v1/services", tag = "agora",
    params(("index" = Option<u64>, Query, description = "Long-poll: answer once the version is above this"),
        ("wait" = Option<String>, Query, description = "Longest long-poll (default 30s, at most 5m)")),
    responses((status = 200, body = ServiceList, headers(("X-Agora-Index" = u64, description = "The endpoint version answered"))),
        (status = 400, body = Message), (status = 503, body = Message)))]
pub(super) async fn services(State(s): State<ApiState>, uri: Uri) -> Response {
    if let Err(r) = long_poll(&s, &uri).await {
        return r;
    }
    let v = match view(&s).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let snap = s.handle.hub().snapshot();
    let mut by_app: BTreeMap<&str, Vec<EndpointSet>> = BTreeMap::new();
    for set in &snap.sets {
        by_app
            .entry(set.key.app_id.as_str())
            .or_default()
            .push(set.clone());
    }
    let services = v
        .apps
        .iter()
        .map(|a| Service {
            id: a.app.id.clone(),
            dns_name: dns_name(&a.app.id, DOMAIN),
            ports: ports_of(by_app.get(a.app.id.as_str()).map_or(&[], |v| v)),
        })
        .collect();
    with_index(axum::Json(ServiceList { services }), snap.version)
}

#[utoipa::path(get, path = "/v1/services/{appId}", tag = "agora",
    params(("appId" = String, Path, description = "The app id, e.g. `demo/web` (its slashes included)"),
        ("index" = Option<u64>, Query, description = "Long-poll: answer once the version is above this"),
        ("wait" = Option<String>, Query, description = "Longest long-poll (default 30s, at most 5m)")),
    responses((status = 200, body = ServiceDetail, headers(("X-Agora-Index" = u64, description = "The endpoint version answered"))),
        (status = 400, body = Message), (status = 404, body = Message), (status = 503, body = Message)))]
pub(super) async fn service(s: ApiState, id: String, uri: Uri) -> Response {
    if let Err(r) = long_poll(&s, &uri).await {
        return r;
    }
    let v = match view(&s).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !v.apps.iter().any(|a| a.app.id == id) {
        return no_app(&id);
    }
    let (version, sets) = s.handle.hub().app(&id);
    let health: std::collections::HashMap<&str, Option<bool>> = v
        .instances
        .iter()
        .filter(|i| i.app_id == id)
        .map(|i| (i.task_id.as_str(), i.healthy))
        .collect();
    let mut instances: BTreeMap<String, ServiceInstance> = BTreeMap::new();
    for set in &sets {
        let port = set
            .meta
            .name
            .clone()
            .unwrap_or_else(|| set.key.port_index.to_string());
        for e in &set.endpoints {
            let i = instances
                .entry(e.task_id.clone())
                .or_insert_with(|| ServiceInstance {
                    task_id: e.task_id.clone(),
                    address: e.host.clone(),
                    ports: BTreeMap::new(),
                    state: match e.state {
                        EndpointState::Serving => "serving",
                        EndpointState::Draining => "draining",
                    }
                    .into(),
                    healthy: health.get(e.task_id.as_str()).copied().flatten(),
                });
            i.ports.insert(port.clone(), e.port);
        }
    }
    let detail = ServiceDetail {
        service: Service {
            id: id.clone(),
            dns_name: dns_name(&id, DOMAIN),
            ports: ports_of(&sets),
        },
        instances: instances.into_values().collect(),
    };
    with_index(axum::Json(detail), version)
}

#[cfg(test)]
mod tests {
    #[test]
    fn waits_parse_and_are_bounded() {
        use std::time::Duration;
        assert_eq!(super::parse_wait("30s"), Some(Duration::from_secs(30)));
        assert_eq!(super::parse_wait("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(super::parse_wait("5m"), Some(Duration::from_secs(300)));
        assert_eq!(super::parse_wait("2"), Some(Duration::from_secs(2)));
        assert_eq!(super::parse_wait("6m"), None);
        assert_eq!(super::parse_wait("-1s"), None);
        assert_eq!(super::parse_wait("1h"), None);
        assert_eq!(super::parse_wait(""), None);
    }
}
