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
//! - [`api`]: the REST API (`kill.rs`: Marathon's task kill).

pub mod api;
pub mod app;
pub mod endpoints;
pub mod scheduler;
pub mod service;
pub mod store;

pub use service::{ServicesConfig, start};

/// Runs the framework and serves its API on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: ServicesConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), store::StoreError> {
    let master = cfg.master.clone();
    let (handle, join) = start(cfg, stop.clone())?;
    let app = api::router(api::ApiState { handle, master });
    let mut s = stop.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        while !*s.borrow() {
            if s.changed().await.is_err() {
                return;
            }
        }
    });
    if let Err(e) = server.await {
        tracing::error!(error = %e, "services API stopped");
    }
    join.abort();
    Ok(())
}
