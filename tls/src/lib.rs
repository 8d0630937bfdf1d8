//! TLS for Agora's daemons and clients (one concern: transport security).
//!
//! - [`ServerTls`]: a rustls server config (ring provider) built from PEM
//!   files, reloaded without a restart when the files change (mtimes polled)
//!   or on SIGHUP; a broken new file keeps the old config and logs an error.
//!   With a client CA, clients *may* present a certificate (mutual TLS for
//!   agents); one that does not verify against the CA fails the handshake.
//!   With a CRL file ([`ServerTlsFiles::crl`]) a revoked client certificate
//!   fails the handshake too, and connections made with a certificate that a
//!   reloaded CRL revokes are closed.
//! - [`incoming`] / [`TlsListener`]: accept loops for tonic
//!   (`serve_with_incoming`, [`Conn`] implements `Connected` and exposes the
//!   peer certificates as [`ConnInfo`]) and for axum (`axum::serve`).
//! - [`client_config`] and [`Connector`]: clients for `https://` addresses
//!   (tonic channels and hyper clients), with an optional client certificate.
//! - [`AgentIdentity`]: the checks the master applies to an agent's
//!   certificate (role and name).
//! - `ca` (feature `ca`): the cluster CA and the certificates it issues.

mod client;
mod conn;
pub mod crl;
mod error;
mod identity;
mod pem;
mod server;

pub use client::{ClientIo, ClientTlsFiles, Connector, channel, channel_lazy, client_config};
pub use conn::{Conn, ConnInfo, Incoming, RevocationWatch, TlsListener, incoming};
pub use error::TlsError;
pub use identity::{AgentIdentity, PeerError, cert_names};
pub use pem::{load_certs, load_key, pem_encode};
pub use server::{DEFAULT_RELOAD_INTERVAL, ServerTls, ServerTlsFiles};

/// The rustls crypto provider every Agora config uses (ring; never aws-lc).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

pub use rustls::ClientConfig;

#[cfg(feature = "ca")]
pub mod ca;
