//! HTTP side of authentication: the middleware every master endpoint goes
//! through, and the token endpoints.
//!
//! | route | needs |
//! |---|---|
//! | `/health`, `/metrics`, `/redirect` (and `/master/` aliases) | nothing (no names or values: counts, the leader's address) |
//! | `POST /v1/tokens`, `GET /v1/tokens`, `DELETE /v1/tokens/{id}` | `manage_tokens` |
//! | `GET /v1/auth/whoami` | any valid token (answers the principal, `admin`, and `view_state` per the ACLs) |
//! | everything else | a valid token; the handler checks its permission |

use super::acl::{Denied, Permission};
use super::tokens::{AuthError, TokenError, parse_ttl};
use super::{Caller, Gate};
use axum::Router;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;

/// Paths anyone may reach.
pub const OPEN_PATHS: &[&str] = &[
    "/health",
    "/master/health",
    "/metrics",
    "/redirect",
    "/master/redirect",
];

/// 401 with `WWW-Authenticate: Bearer` and what was wrong.
pub fn unauthorized(e: &AuthError) -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, format!("unauthenticated: {e}\n")).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"agora\""),
    );
    r
}

/// 403 naming the permission.
pub fn forbidden(d: &Denied) -> Response {
    (StatusCode::FORBIDDEN, format!("forbidden: {d}\n")).into_response()
}

/// Checks `perm` for the caller; the error is the 403 to return.
#[allow(clippy::result_large_err)]
pub fn require(caller: &Caller, perm: &Permission<'_>) -> Result<(), Response> {
    caller.check(perm).map_err(|d| {
        tracing::info!(denied = %d, "refusing an HTTP request");
        forbidden(&d)
    })
}

/// The middleware: authenticates every request but the open paths and
/// puts the [`Caller`] in the request's extensions (handlers take
/// `Extension<Caller>`; without this layer they fail closed with 500).
pub async fn authenticate(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let open = OPEN_PATHS.contains(&req.uri().path());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let caller = match gate.authenticate(header) {
        Ok(c) => c,
        Err(_) if open => Caller::Unrestricted,
        Err(e) => {
            tracing::debug!(path = %req.uri().path(), error = %e, "refusing an unauthenticated request");
            return unauthorized(&e);
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The token and whoami endpoints.
pub fn routes(gate: Gate) -> Router {
    Router::new()
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/auth/whoami", get(whoami))
        .with_state(gate)
}

fn disabled() -> Response {
    (
        StatusCode::NOT_FOUND,
        "authentication is off on this master (it was started without --acls): there are no tokens to manage\n",
    )
        .into_response()
}

fn token_error(e: TokenError) -> Response {
    let code = match &e {
        TokenError::BadPrincipal(_) | TokenError::BadTtl(_) => StatusCode::UNPROCESSABLE_ENTITY,
        TokenError::NotFound(_) => StatusCode::NOT_FOUND,
        TokenError::Random | TokenError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if code == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "token operation failed");
    }
    (code, format!("{e}\n")).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    principal: String,
    /// `30d`, `12h`, `never`; default 30d.
    ttl: Option<String>,
}

async fn create_token(
    State(gate): State<Gate>,
    Extension(caller): Extension<Caller>,
    body: Result<axum::Json<CreateToken>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(auth) = gate.auth() else {
        return disabled();
    };
    if let Err(r) = require(&caller, &Permission::ManageTokens) {
        return r;
    }
    let axum::Json(body) = match body {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("expected {{\"principal\": \"ops\", \"ttl\": \"30d\"}}: {e}\n"),
            )
                .into_response();
        }
    };
    let ttl = match parse_ttl(body.ttl.as_deref().unwrap_or("30d")) {
        Ok(t) => t,
        Err(e) => return token_error(e),
    };
    match auth.tokens.create(&body.principal, ttl) {
        Ok((token, info)) => {
            tracing::info!(
                token_id = %info.id,
                principal = %info.principal,
                by = caller.principal().unwrap_or("-"),
                "token created"
            );
            let mut v = serde_json::to_value(&info).unwrap_or_default();
            v["token"] = serde_json::Value::String(token.expose().to_string());
            (StatusCode::CREATED, axum::Json(v)).into_response()
        }
        Err(e) => token_error(e),
    }
}

async fn list_tokens(State(gate): State<Gate>, Extension(caller): Extension<Caller>) -> Response {
    let Some(auth) = gate.auth() else {
        return disabled();
    };
    if let Err(r) = require(&caller, &Permission::ManageTokens) {
        return r;
    }
    axum::Json(auth.tokens.list()).into_response()
}

async fn revoke_token(
    State(gate): State<Gate>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Some(auth) = gate.auth() else {
        return disabled();
    };
    if let Err(r) = require(&caller, &Permission::ManageTokens) {
        return r;
    }
    match auth.tokens.revoke(&id) {
        Ok(info) => {
            tracing::info!(
                token_id = %info.id,
                principal = %info.principal,
                by = caller.principal().unwrap_or("-"),
                "token revoked"
            );
            axum::Json(info).into_response()
        }
        Err(e) => token_error(e),
    }
}

/// `{"principal", "admin", "auth_enabled", "view_state"}`: who the token
/// belongs to and whether the ACLs in force let it view state (the
/// master's `/state`; the agents' `/state` and task logs, which ask here).
async fn whoami(State(gate): State<Gate>, Extension(caller): Extension<Caller>) -> Response {
    axum::Json(serde_json::json!({
        "principal": caller.principal(),
        "admin": caller.is_admin(),
        "auth_enabled": gate.is_enabled(),
        "view_state": caller.allows(&Permission::ViewState),
    }))
    .into_response()
}
