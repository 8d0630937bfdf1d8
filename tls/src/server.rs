//! The server side: a config built from files, swapped atomically when the
//! files change or on SIGHUP.

use crate::crl::{LoadedCrl, is_revoked, load_crls};
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
    /// PEM certificate revocation lists (`crl.pem` of `agora ca revoke`),
    /// each signed by one of the client CAs: a client certificate listed
    /// there fails the handshake, and connections made with it before the
    /// list was loaded are closed. Needs `client_ca`. A client CA without a
    /// CRL in the file is not checked for revocation. A CRL past its next
    /// update stays in force (logged as a warning).
    pub crl: Option<PathBuf>,
}

impl ServerTlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        if let Some(ca) = &self.client_ca {
            v.push(ca);
        }
        if let Some(crl) = &self.crl {
            v.push(crl);
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
    /// The CRLs in force (empty without `crl`).
    crls: Vec<LoadedCrl>,
    stamp: Stamp,
}

pub(crate) struct Inner {
    files: ServerTlsFiles,
    current: RwLock<Arc<Loaded>>,
    /// The stamp of the last attempt that failed (logged once per change).
    failed: RwLock<Option<Stamp>>,
    /// Bumped whenever a new config is in force: connections re-check
    /// their client certificate against the new CRLs.
    generation: tokio::sync::watch::Sender<u64>,
    /// When an expired CRL was last warned about.
    expiry_warned: std::sync::Mutex<Option<std::time::Instant>>,
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
    let (builder, client_ca, crls) = match &files.client_ca {
        Some(path) => {
            let cas = load_certs(path)?;
            let mut roots = RootCertStore::empty();
            for c in &cas {
                roots.add(c.clone()).map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            }
            let crls = match &files.crl {
                Some(crl) => load_crls(crl, &cas)?,
                None => Vec::new(),
            };
            // Revocation: a certificate listed in its CA's CRL is refused;
            // a CA without a CRL in the file is not checked (unknown status
            // allowed: e.g. a second CA during a CA rotation); an expired
            // CRL is still applied (the default: ignore nextUpdate), so a
            // forgotten renewal does not lock every agent out.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .with_crls(crls.iter().map(|c| c.der.clone()))
                .allow_unknown_revocation_status()
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            (builder.with_client_cert_verifier(verifier), cas, crls)
        }
        None => {
            if let Some(crl) = &files.crl {
                return Err(TlsError::Crl {
                    path: crl.clone(),
                    message: "a CRL needs a client CA (--tls-client-ca): only client \
                              certificates are checked against it"
                        .into(),
                });
            }
            (builder.with_no_client_auth(), Vec::new(), Vec::new())
        }
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
        crls,
        stamp,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ServerTls {
    /// Loads the files once; fails if they do not make a usable config.
    /// Call [`ServerTls::watch`] to follow later changes.
    pub fn load(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let loaded = build(&files)?;
        let tls = ServerTls {
            inner: Arc::new(Inner {
                files,
                current: RwLock::new(Arc::new(loaded)),
                failed: RwLock::new(None),
                generation: tokio::sync::watch::Sender::new(0),
                expiry_warned: std::sync::Mutex::new(None),
            }),
        };
        tls.warn_expired_crl();
        Ok(tls)
    }

    /// Whether a client certificate (leaf) is revoked by the CRLs in force.
    pub fn is_revoked(&self, leaf: &CertificateDer<'_>) -> bool {
        is_revoked(&self.loaded().crls, leaf)
    }

    /// The CRLs in force: (thisUpdate, nextUpdate) in Unix seconds.
    pub fn crl_times(&self) -> Vec<(i64, Option<i64>)> {
        self.loaded()
            .crls
            .iter()
            .map(|c| (c.this_update, c.next_update))
            .collect()
    }

    /// Changes whenever a new config is in force.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &Weak<Inner>) -> Option<ServerTls> {
        weak.upgrade().map(|inner| ServerTls { inner })
    }

    /// Logs (at most daily) when a CRL in force is past its next update.
    fn warn_expired_crl(&self) {
        let now = unix_now();
        let loaded = self.loaded();
        let Some(next) = loaded
            .crls
            .iter()
            .filter_map(|c| c.next_update)
            .filter(|&n| n <= now)
            .min()
        else {
            return;
        };
        let mut warned = self
            .inner
            .expiry_warned
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if warned.is_some_and(|t| t.elapsed() < Duration::from_secs(86_400)) {
            return;
        }
        *warned = Some(std::time::Instant::now());
        tracing::warn!(
            crl = %self.inner.files.crl.as_deref().unwrap_or(Path::new("")).display(),
            next_update = %crate::crl::rfc3339(next),
            "the CRL is past its next update; it is still enforced, but re-issue it \
             (`agora ca crl --renew` in the CA directory, then copy crl.pem here)"
        );
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
        self.inner.generation.send_modify(|g| *g += 1);
        *self
            .inner
            .expiry_warned
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.warn_expired_crl();
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
                tls.warn_expired_crl();
            }
        })
    }
}
