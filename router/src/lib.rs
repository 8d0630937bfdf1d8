//! Agora's routers and DNS server.
//!
//! They follow the services framework's endpoint stream (see
//! `docs/discovery.md`) over HTTP and keep an
//! [`agora_core::endpoints::View`]; they never link a framework or the
//! master. Modules:
//!
//! - [`routes`]: route tables built from a view (edge, internal L7, L4) and
//!   the [`routes::Router`] that swaps them and runs the drain protocol;
//! - [`balance`]: power of two choices over least outstanding requests,
//!   latency EWMA, passive outlier ejection;
//! - [`proxy`]: the L7 reverse proxy (edge and internal);
//! - [`tcp`]: the L4 router, one listener per `servicePort`.
//!
//! `docs/routing.md` describes the model.

pub mod balance;
pub mod proxy;
pub mod routes;
pub mod tcp;
