//! Agora's routers and DNS server.
//!
//! They follow the services framework's endpoint stream (see
//! `docs/discovery.md`) over HTTP and keep an
//! [`agora_core::endpoints::View`]; they never link a framework or the
//! master. Modules:
//!
//! - [`feed`]: the endpoint stream client (SSE), publishing the current view
//!   on a watch channel, and the acks the proxies post back;
//! - [`dns`]: the authoritative DNS server for the cluster's zone (`agora.`),
//!   answering from the latest view;
//! - [`routes`]: route tables built from a view (edge, internal L7, L4) and
//!   the [`routes::Router`] that swaps them and runs the drain protocol;
//! - [`balance`]: power of two choices over least outstanding requests,
//!   latency EWMA, passive outlier ejection;
//! - [`proxy`]: the L7 reverse proxy (edge and internal);
//! - [`tcp`]: the L4 router, one listener per `servicePort`;
//! - [`load`]: requests per second, in flight and latency per app port,
//!   holding requests for ports scaled to zero, the load reports posted to
//!   the framework and the Prometheus text of the admin listener ([`admin`]).
//!
//! `docs/discovery.md` and `docs/routing.md` describe the model.

pub mod admin;
pub mod balance;
pub mod dns;
pub mod feed;
pub mod load;
pub mod proxy;
pub mod routes;
pub mod tcp;
