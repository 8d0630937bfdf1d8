//! Agora's routers and DNS server.
//!
//! They follow the services framework's endpoint stream (see
//! `docs/discovery.md`) over HTTP and keep an
//! [`agora_core::endpoints::View`]; they never link a framework or the
//! master.
//!
//! # Layout
//! - [`feed`]: the endpoint stream client (SSE), publishing the current view
//!   on a watch channel, and the acks the proxies post back.
//! - [`dns`]: the authoritative DNS server for the cluster's zone (`agora.`),
//!   answering from the latest view.

pub mod dns;
pub mod feed;
