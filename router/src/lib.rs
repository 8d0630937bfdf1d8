//! Agora's routers and DNS server.
//!
//! They follow the services framework's endpoint stream (see
//! `docs/discovery.md`) over HTTP and keep an
//! [`agora_core::endpoints::View`]; they never link a framework or the
//! master. Modules:
//! (filled in as issue 9 is built)
