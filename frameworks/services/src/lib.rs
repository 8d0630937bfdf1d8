//! The long-running services framework (in the spirit of Marathon): apps
//! with a REST API, placement with constraints, scaling, replacement with
//! backoff, rolling deployments, persistence.
//!
//! # Layout
//! - [`app`]: app definitions (Marathon field names and defaults) and their
//!   validation, which lists every problem at once (`app/parse.rs`);
//! - [`scheduler`]: the synchronous core deciding launches, kills, declines:
//!   `mod.rs` (state, status updates, ticks), `index.rs` (per-app indexes
//!   and change tracking), `placement.rs` (offers, constraints, why an app
//!   waits), `task.rs` (building a task), `deployment.rs` (rolling steps,
//!   converge), `ops.rs` (rollback, task kill, checkpoints to undo a change
//!   that could not be stored);
//! - [`store`]: redb persistence of apps, instances and the framework id;
//! - [`service`]: the actor owning the core, fed by the SDK and the API,
//!   storing bursts of changes before acting on them (`link.rs`: its seams
//!   to the master and the SDK; `requests.rs`: API changes, each stored
//!   before it is acted on, undone if it cannot be);
//! - [`endpoints`]: the endpoint hub: the published endpoint sets shared
//!   with the API, the drain participants and their acknowledgements (the
//!   sets themselves and draining: `scheduler/endpoints.rs`; service ports
//!   and virtual hosts: `scheduler/service_ports.rs`);
//! - [`api_auth`]: bearer tokens on the REST API, verified by the master;
//! - [`secrets`]: the secret versions apps pin, and when a new one rolls
//!   them;
//! - [`autoscale`]: autoscaling policies (stored), the live numbers their
//!   decisions are made from (usage from the agents, load reports from the
//!   routers) and their status; the decisions are `agora_core::autoscale`'s,
//!   made and applied once a second by the actor (`service/autoscale.rs`);
//! - [`api`]: the REST API (`kill.rs`: Marathon's task kill; `endpoints.rs`:
//!   the endpoint stream, acks, load reports and the discovery API;
//!   `autoscalers.rs`: autoscaling policies and `/metrics`).

pub mod api;
pub mod api_auth;
pub mod app;
pub mod autoscale;
pub mod endpoints;
pub mod scheduler;
pub mod secrets;
pub mod service;
pub mod store;
mod upgrade;

pub use service::{ServicesConfig, start};

/// Runs the framework and serves its API on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: ServicesConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), store::StoreError> {
    serve_tls(listener, cfg, stop, None).await
}

/// [`serve`], with the API over TLS when `tls` is given.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    cfg: ServicesConfig,
    stop: tokio::sync::watch::Receiver<bool>,
    tls: Option<agora_tls::ServerTls>,
) -> Result<(), store::StoreError> {
    let listener = agora_tls::TlsListener::new(listener, tls);
    let master = cfg.master.clone();
    let role = cfg.role.clone();
    let api_auth = cfg.api_tokens.then(|| {
        api_auth::ApiAuth::new(&cfg.master, cfg.master_tls.clone())
            .with_drain_principals(cfg.drain_principals.clone())
    });
    let (handle, join) = start(cfg, stop.clone())?;
    let hub = handle.hub().clone();
    let mut app = api::router(api::ApiState {
        handle,
        master,
        role,
    });
    if let Some(a) = api_auth {
        app = app.layer(axum::middleware::from_fn_with_state(
            a,
            api_auth::require_token,
        ));
    }
    let mut s = stop.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        while !*s.borrow() {
            if s.changed().await.is_err() {
                break;
            }
        }
        // Endpoint streams never end by themselves.
        hub.close();
    });
    if let Err(e) = server.await {
        tracing::error!(error = %e, "services API stopped");
    }
    join.abort();
    Ok(())
}
