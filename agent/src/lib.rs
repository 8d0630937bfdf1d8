//! The Agora agent.
//!
//! # Layout
//! - [`runtime`]: the [`runtime::ContainerRuntime`] trait and its events.
//! - [`hollow`]: a runtime that runs nothing (tests, scale benchmarks).
//! - [`agent`]: registration, heartbeats, launches/kills, at-least-once
//!   status updates, checkpoint and recovery; one task per agent.
//! - [`docker`], [`process`]: the real runtimes; [`sandbox`]: where the
//!   process runtime keeps a task's files.
//! - [`health`]: health and readiness checks run next to the task.
//! - [`http`]: the agent's own HTTP API (state, metrics, logs);
//!   [`api_auth`]: the bearer tokens it requires with `--require-tokens`.

pub mod agent;
pub mod api_auth;
pub mod docker;
pub mod health;
pub mod hollow;
pub mod http;
pub mod http_client;
pub mod process;
pub mod runtime;
pub mod sandbox;
pub mod secrets;

pub use agent::{AgentConfig, AgentHandle, Connector, Control, spawn};
pub use hollow::HollowRuntime;

use std::sync::Arc;
use std::time::Duration;

/// Starts a hollow agent (runtime + agent) in one call.
pub fn spawn_hollow(
    cfg: AgentConfig,
    connector: Connector,
    start_delay: Duration,
) -> (
    AgentHandle,
    HollowRuntime,
    tokio::task::JoinHandle<Result<(), agent::AgentError>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let runtime = HollowRuntime::new(tx, start_delay);
    let (handle, join) = spawn(cfg, Arc::new(runtime.clone()), rx, connector);
    (handle, runtime, join)
}
