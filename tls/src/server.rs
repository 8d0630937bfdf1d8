//! The server side: a config built from files, swapped atomically when the
//! files change or on SIGHUP.

use crate::{TlsError, load_certs, load_key, provider};
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

/// How often the files are checked for changes.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Where a server's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM CA certificates whose client certificates are accepted (mutual
    /// TLS). Clients may still connect without a certificate; a certificate
    /// that does not verify against these fails the handshake.
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        if let Some(ca) = &self.client_ca {
            v.push(ca);
        }
        v
    }
}

/// A file's identity for change detection.
type Stamp = Vec<(Option<SystemTime>, u64)>;

fn stamp(files: &ServerTlsFiles) -> Stamp {
    files
        .paths()
        .into_iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => (m.modified().ok(), m.len()),
            Err(_) => (None, 0),
        })
        .collect()
}

struct Loaded {
    config: Arc<ServerConfig>,
    /// The client CA certificates (for the agent role check).
    client_ca: Vec<CertificateDer<'static>>,
    stamp: Stamp,
}

struct Inner {
    files: ServerTlsFiles,
    current: RwLock<Arc<Loaded>>,
    /// The stamp of the last attempt that failed (logged once per change).
    failed: RwLock<Option<Stamp>>,
}

/// A server TLS config that follows its files. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

fn build(files: &ServerTlsFiles) -> Result<Loaded, TlsError> {
    // Stamp first: a change that lands while we read is seen next time.
    let stamp = stamp(files);
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let (builder, client_ca) = match &files.client_ca {
        Some(path) => {
            let cas = load_certs(path)?;
            let mut roots = RootCertStore::empty();
            for c in &cas {
                roots.add(c.clone()).map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            (builder.with_client_cert_verifier(verifier), cas)
        }
        None => (builder.with_no_client_auth(), Vec::new()),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            message: e.to_string(),
        })?;
    // gRPC (h2) and plain HTTP (http/1.1) on the same port.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        client_ca,
        stamp,
    })
}

impl ServerTls {
    /// Loads the files once; fails if they do not make a usable config.
    /// Call [`ServerTls::watch`] to follow later changes.
    pub fn load(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let loaded = build(&files)?;
        Ok(ServerTls {
            inner: Arc::new(Inner {
                files,
                current: RwLock::new(Arc::new(loaded)),
                failed: RwLock::new(None),
            }),
        })
    }

    pub fn files(&self) -> &ServerTlsFiles {
        &self.inner.files
    }

    /// The config new connections use now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.loaded().config.clone()
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether client certificates are verified (a client CA is configured).
    pub fn verifies_clients(&self) -> bool {
        self.inner.files.client_ca.is_some()
    }

    /// The client CA certificates in force (empty without mutual TLS).
    pub fn client_ca(&self) -> Vec<CertificateDer<'static>> {
        self.loaded().client_ca.clone()
    }

    pub(crate) fn client_anchors(&self) -> Result<Vec<TrustAnchor<'static>>, TlsError> {
        self.loaded()
            .client_ca
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| TlsError::Config(format!("client CA: {e}")))
            })
            .collect()
    }

    /// Rebuilds the config from the files. On error the old config stays in
    /// force and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = build(&self.inner.files)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        *self.inner.failed.write().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// Reloads if a file changed since the config in force (or since the
    /// last failed attempt) was read. Returns whether a new config is in
    /// force; logs (once per change) when the new files are unusable.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.inner.files);
        if now == self.loaded().stamp {
            return false;
        }
        if self
            .inner
            .failed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            == Some(&now)
        {
            return false;
        }
        self.reload_logged("files changed")
    }

    fn reload_logged(&self, why: &str) -> bool {
        // The files as they were before this attempt: a change that lands
        // while it runs (the key written just after the certificate) must
        // not be recorded as the failed state, or it is never retried.
        let before = stamp(&self.inner.files);
        match self.reload() {
            Ok(()) => {
                tracing::info!(cert = %self.inner.files.cert.display(), reason = why, "TLS certificate reloaded");
                true
            }
            Err(e) => {
                *self.inner.failed.write().unwrap_or_else(|p| p.into_inner()) = Some(before);
                tracing::error!(
                    error = %e,
                    reason = why,
                    "TLS reload failed; still serving the previous certificate (fix the files, or send SIGHUP to retry)"
                );
                false
            }
        }
    }

    /// Follows the files: checks them every `interval` and reloads on
    /// SIGHUP. Stops when every clone of `self` is dropped.
    pub fn watch(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                let Some(inner) = weak.upgrade() else { return };
                let tls = ServerTls { inner };
                if forced {
                    tls.reload_logged("SIGHUP");
                } else {
                    tls.reload_if_changed();
                }
            }
        })
    }
}
