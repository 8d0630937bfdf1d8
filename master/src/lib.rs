//! The Agora master: pools agents' resources and offers them to frameworks.
//!
//! # Layout
//! - [`state`]: the synchronous state machine (agents, frameworks, offers,
//!   tasks, the DRF allocator); inputs are method calls, side effects are
//!   returned as [`state::Output`] values.
//! - [`actor`]: the one task that owns the state, fed by a channel.
//! - [`grpc`]: the `Scheduler` and `AgentLink` gRPC services.
//! - [`http`]: `/health`, `/state`, `/metrics`, `/redirect`.
//! - [`store`]: the agent registry (redb on disk, or memory).
//! - [`secrets`]: the secret store (sealed at rest; `/v1/secrets`, `ResolveSecrets`).
//! - [`election`]: the leader-election seam (standalone for now).
//! - [`auth`]: bearer tokens and the ACL file (on with `MasterConfig::acls`).
//! - [`server`]: wires it all onto one listener.

pub mod actor;
pub mod auth;
pub mod config;
pub mod election;
pub mod grpc;
pub mod http;
pub mod http_secrets;
pub mod metrics;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod view;

pub use config::MasterConfig;
pub use server::{MasterServer, serve, serve_with_tls};
