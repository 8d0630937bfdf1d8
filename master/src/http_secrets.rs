//! The secret store's HTTP API (metadata only; values go in, never out):
//!
//! - `PUT /v1/secrets/{path}`: the raw request body is the value (1 byte to
//!   64 KiB); `?rollout=false` stages it (apps using it do not roll).
//! - `GET /v1/secrets`, `GET /v1/secrets/{path}`: metadata and `used_by`.
//! - `DELETE /v1/secrets/{path}`: 409 while live tasks use it, unless
//!   `?force=true`.
//! - `POST /v1/secrets-key/rotate` `{"new_key_file": "/path"}`: re-wraps
//!   every data key with the key in that file (read on the master's host).
//!
//! Errors are text naming what was wrong; status codes are chosen here.
//!
//! With authentication on, each route needs `manage_secrets` for its path
//! (the list shows only the paths the caller may manage; key rotation is
//! for admins): 403 naming the permission otherwise.

use crate::actor::{MasterHandle, SecretsQuery};
use crate::auth::Caller;
use crate::auth::acl::Permission;
use crate::http::HttpState;
use crate::secrets::crypto::Kek;
use crate::secrets::{NO_STORE, SecretError, SecretMeta, SecretStore};
use crate::state::SecretUser;
use agora_core::secrets::{MAX_VALUE_LEN, SecretPath, SecretValue};
use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;

/// The routes, to merge into the master's router.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/secrets", get(list))
        .route(
            "/v1/secrets/{*path}",
            get(show).put(put).delete(delete_secret),
        )
        .route("/v1/secrets-key/rotate", post(rotate))
}

/// A refused request: status and a message (never a value).
pub struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn refuse(code: StatusCode, msg: impl std::fmt::Display) -> Refusal {
    Refusal(code, msg.to_string())
}

fn stopped() -> Refusal {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "the master is shutting down",
    )
}

fn store(s: &HttpState) -> Result<Arc<SecretStore>, Refusal> {
    s.secrets
        .store
        .clone()
        .ok_or_else(|| refuse(StatusCode::SERVICE_UNAVAILABLE, NO_STORE))
}

fn parse_path(raw: &str) -> Result<SecretPath, Refusal> {
    SecretPath::parse(raw).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))
}

/// 403 naming the permission unless the caller may manage `path`.
fn may_manage(caller: &Caller, path: Option<&SecretPath>) -> Result<(), Refusal> {
    caller
        .check(&Permission::ManageSecrets { path })
        .map_err(|d| {
            tracing::info!(denied = %d, "refusing a secrets request");
            refuse(StatusCode::FORBIDDEN, format!("forbidden: {d}"))
        })
}

impl From<SecretError> for Refusal {
    fn from(e: SecretError) -> Refusal {
        let code = match &e {
            SecretError::Unknown(_) | SecretError::VersionNotKept { .. } => StatusCode::NOT_FOUND,
            SecretError::Empty => StatusCode::UNPROCESSABLE_ENTITY,
            SecretError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            SecretError::Key(_) | SecretError::WrongKey { .. } => StatusCode::BAD_REQUEST,
            SecretError::Crypto(_) | SecretError::Store(_) => {
                tracing::error!(error = %e, "secret store failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        refuse(code, e)
    }
}

/// Runs a blocking store call (it writes the registry durably) off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SecretError> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the secret store call failed unexpectedly; see the master's log",
        )),
    }
}

async fn users(
    master: &MasterHandle,
    path: Option<SecretPath>,
) -> Result<Vec<SecretUser>, Refusal> {
    master
        .secrets_query(|reply| SecretsQuery::Users(path, reply))
        .await
        .map_err(|_| stopped())
}

fn with_users(m: &SecretMeta, users: &[SecretUser]) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    let used: Vec<_> = users.iter().filter(|u| u.path == m.path).collect();
    v["used_by"] = serde_json::to_value(used).unwrap_or_default();
    v
}

#[derive(Deserialize)]
struct PutQuery {
    rollout: Option<bool>,
}

async fn put(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    Query(q): Query<PutQuery>,
    body: Body,
) -> Result<Response, Refusal> {
    let path = parse_path(&raw)?;
    may_manage(&caller, Some(&path))?;
    let store = store(&s)?;
    let bytes = match axum::body::to_bytes(body, MAX_VALUE_LEN).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            return Err(if too_large {
                refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the value is larger than 64 KiB (65536 bytes), the most a secret may hold",
                )
            } else {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            });
        }
    };
    // Unique after to_bytes: converted without a copy, zeroed on drop.
    let value = SecretValue::new(Vec::from(bytes));
    let rollout = q.rollout.unwrap_or(true);
    let p = path.clone();
    let q = path.clone();
    let in_use = s
        .master
        .secrets_query(move |reply| crate::actor::SecretsQuery::VersionsInUse(q, reply))
        .await
        .map_err(|_| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the master is shutting down",
            )
        })?;
    let meta = blocking(move || store.put_keeping(&p, &value, rollout, &in_use)).await?;
    tracing::info!(path = %meta.path, version = meta.version, rollout, "secret stored");
    let u = users(&s.master, Some(path)).await?;
    Ok(axum::Json(with_users(&meta, &u)).into_response())
}

async fn list(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Refusal> {
    may_manage(&caller, None)?;
    let mut all = store(&s)?.list();
    all.retain(|m| {
        SecretPath::parse(&m.path)
            .is_ok_and(|p| caller.allows(&Permission::ManageSecrets { path: Some(&p) }))
    });
    let u = users(&s.master, None).await?;
    Ok(axum::Json(all.iter().map(|m| with_users(m, &u)).collect::<Vec<_>>()).into_response())
}

async fn show(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Response, Refusal> {
    let path = parse_path(&raw)?;
    may_manage(&caller, Some(&path))?;
    let store = store(&s)?;
    let meta = store
        .get(&path)
        .ok_or_else(|| SecretError::Unknown(path.to_string()))?;
    let u = users(&s.master, Some(path)).await?;
    Ok(axum::Json(with_users(&meta, &u)).into_response())
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

fn describe(users: &[SecretUser]) -> String {
    users
        .iter()
        .map(|u| {
            format!(
                "{} of framework {} ({}): {} task{}",
                u.app,
                u.framework_name,
                u.framework_id,
                u.tasks,
                if u.tasks == 1 { "" } else { "s" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn delete_secret(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, Refusal> {
    let path = parse_path(&raw)?;
    may_manage(&caller, Some(&path))?;
    let store = store(&s)?;
    if store.get(&path).is_none() {
        return Err(SecretError::Unknown(path.to_string()).into());
    }
    let used = users(&s.master, Some(path.clone())).await?;
    if !used.is_empty() && !q.force {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!(
                "secret {path} is used by live tasks: {}; stop or update them first, or delete anyway with force=true (`agora secret rm --force`): running tasks keep their value, new launches fail",
                describe(&used)
            ),
        ));
    }
    let p = path.clone();
    let m = blocking(move || store.delete(&p)).await?;
    tracing::info!(path = %path, forced = !used.is_empty(), "secret deleted");
    let mut v = with_users(&m, &used);
    v["deleted"] = true.into();
    Ok(axum::Json(v).into_response())
}

#[derive(Deserialize)]
struct RotateBody {
    new_key_file: String,
}

async fn rotate(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    if !caller.is_admin() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "forbidden: principal {} may not rotate the secrets key (permission: admins)",
                caller.principal().unwrap_or("-")
            ),
        ));
    }
    let store = store(&s)?;
    let req: RotateBody = serde_json::from_slice(&body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON {{\"new_key_file\": \"/path/on/the/master\"}}: {e}"),
        )
    })?;
    let file = std::path::PathBuf::from(&req.new_key_file);
    if !file.is_absolute() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "new_key_file {} must be an absolute path on the master's host",
                req.new_key_file
            ),
        ));
    }
    let shown = req.new_key_file.clone();
    let r = blocking(move || {
        let kek = Kek::load(&file)?;
        if kek.id() == store.key_id() {
            return Err(SecretError::Key(crate::secrets::crypto::KeyError::Io {
                path: shown,
                message:
                    "it holds the key already in use; generate a new one (openssl rand -hex 32)"
                        .into(),
            }));
        }
        store.rotate_key(kek)
    })
    .await?;
    tracing::warn!(old_key_id = %r.old_key_id, new_key_id = %r.new_key_id, rewrapped = r.rewrapped, "secret store key rotated");
    let mut v = serde_json::to_value(&r).unwrap_or_default();
    v["message"] = format!(
        "the secret store is now sealed with key id {}: restart the master with --secrets-key-file {} (the old key file no longer opens it)",
        r.new_key_id, req.new_key_file
    )
    .into();
    Ok(axum::Json(v).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{Secrets, store::MemorySecrets};
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn app(with_store: bool) -> (Router, Option<Arc<SecretStore>>) {
        let (_t, shutdown) = crate::actor::shutdown::channel();
        std::mem::forget(_t);
        let now = tokio::time::Instant::now().into_std();
        let master = crate::state::Master::new(crate::MasterConfig::default(), vec![], now);
        let handle = crate::actor::spawn(
            master,
            Box::new(crate::store::MemoryRegistry::default()),
            shutdown,
        );
        let store = with_store.then(|| {
            Arc::new(
                SecretStore::open(
                    Arc::new(MemorySecrets::default()),
                    Kek::generate().unwrap(),
                    2,
                    "k",
                )
                .unwrap(),
            )
        });
        let state = HttpState {
            master: handle,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            contender: Arc::new(crate::election::Standalone {
                address: "x".into(),
            }),
            secrets: Secrets {
                store: store.clone(),
                policy: Default::default(),
            },
            gate: Default::default(),
        };
        (crate::http::router(state), store)
    }

    async fn call(r: &Router, method: &str, uri: &str, body: Vec<u8>) -> (u16, String) {
        let resp = r
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let code = resp.status().as_u16();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&b).into_owned())
    }

    #[tokio::test]
    async fn put_list_show_delete_answer_metadata_only() {
        let (r, store) = app(true).await;
        let (code, body) = call(&r, "PUT", "/v1/secrets/prod/db", b"s3cr3t-canary".to_vec()).await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["path"], "/prod/db");
        assert_eq!(v["version"], 1);
        assert_eq!(v["size"], 13);
        assert_eq!(v["rollout"], 1);
        assert_eq!(v["used_by"], serde_json::json!([]));
        let (code, body) = call(
            &r,
            "PUT",
            "/v1/secrets/prod/db?rollout=false",
            b"s3cr3t-canary-2".to_vec(),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["version"].as_u64(), v["rollout"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(v["versions"][1]["rollout"], false);
        call(&r, "PUT", "/v1/secrets/other", b"x".to_vec()).await;

        let (code, list) = call(&r, "GET", "/v1/secrets", vec![]).await;
        assert_eq!(code, 200);
        let l: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0]["path"], "/other");
        let (code, one) = call(&r, "GET", "/v1/secrets/prod/db", vec![]).await;
        assert_eq!(code, 200);
        for b in [&body, &list, &one] {
            assert!(!b.contains("canary"), "a value leaked: {b}");
        }
        let (code, e) = call(&r, "GET", "/v1/secrets/nope", vec![]).await;
        assert_eq!((code, e.as_str()), (404, "secret /nope does not exist\n"));
        let (code, e) = call(&r, "GET", "/v1/secrets/a/../b", vec![]).await;
        assert_eq!(code, 400, "{e}");
        assert!(e.contains("invalid secret path"), "{e}");

        let (code, e) = call(&r, "PUT", "/v1/secrets/empty", vec![]).await;
        assert_eq!(code, 422, "{e}");
        let (code, e) = call(&r, "PUT", "/v1/secrets/big", vec![b'a'; MAX_VALUE_LEN + 1]).await;
        assert_eq!(code, 413, "{e}");
        assert!(e.contains("64 KiB"), "{e}");
        let (code, _) = call(&r, "PUT", "/v1/secrets/max", vec![b'a'; MAX_VALUE_LEN]).await;
        assert_eq!(code, 200);

        // Nothing uses it: deleted without force.
        let (code, body) = call(&r, "DELETE", "/v1/secrets/prod/db", vec![]).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"deleted\":true"), "{body}");
        let (code, _) = call(&r, "DELETE", "/v1/secrets/prod/db", vec![]).await;
        assert_eq!(code, 404);
        assert!(
            store
                .unwrap()
                .get(&SecretPath::parse("/prod/db").unwrap())
                .is_none()
        );
    }

    #[tokio::test]
    async fn rotation_reads_a_key_file_on_the_master() {
        let (r, store) = app(true).await;
        let store = store.unwrap();
        call(&r, "PUT", "/v1/secrets/a", b"alpha".to_vec()).await;
        let old = store.key_id();
        let dir = std::env::temp_dir().join(format!("agora-rot-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("new.key");
        std::fs::write(&f, [9u8; 32]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let body = serde_json::json!({"new_key_file": f})
            .to_string()
            .into_bytes();
        let (code, e) = call(&r, "POST", "/v1/secrets-key/rotate", body.clone()).await;
        assert_eq!(code, 400);
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (code, out) = call(&r, "POST", "/v1/secrets-key/rotate", body.clone()).await;
        assert_eq!(code, 200, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["old_key_id"], old.as_str());
        assert_eq!(v["new_key_id"], store.key_id().as_str());
        assert_eq!(v["rewrapped"], 1);
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("restart the master")
        );
        let (code, e) = call(&r, "POST", "/v1/secrets-key/rotate", body).await;
        assert_eq!(code, 400, "the key in use is refused: {e}");
        let (_, v) = store.resolve(&SecretPath::parse("/a").unwrap(), 0).unwrap();
        assert_eq!(v.expose(), b"alpha");
        let (code, _) = call(&r, "POST", "/v1/secrets-key/rotate", b"{}".to_vec()).await;
        assert_eq!(code, 400);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn without_a_store_the_api_says_how_to_get_one() {
        let (r, _) = app(false).await;
        for (m, u) in [
            ("GET", "/v1/secrets"),
            ("PUT", "/v1/secrets/a"),
            ("GET", "/v1/secrets/a"),
            ("DELETE", "/v1/secrets/a"),
            ("POST", "/v1/secrets-key/rotate"),
        ] {
            let (code, e) = call(&r, m, u, b"v".to_vec()).await;
            assert_eq!(code, 503, "{m} {u}");
            assert_eq!(e, format!("{NO_STORE}\n"));
        }
    }
}
