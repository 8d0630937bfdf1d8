//! Runs a master on an already-bound listener until the shutdown signal.

use crate::actor::{self, MasterHandle, shutdown::Shutdown};
use crate::config::MasterConfig;
use crate::election::{Contender, Standalone};
use crate::grpc::{AgentLinkService, SchedulerService};
use crate::http::{HttpState, router};
use crate::metrics::Metrics;
use crate::state::Master;
use crate::store::Registry;
use agora_proto::pb;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A running master.
pub struct MasterServer {
    pub handle: MasterHandle,
    pub local_addr: std::net::SocketAddr,
    /// Authentication in force (tests mint tokens through it).
    pub gate: crate::auth::Gate,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Election(#[from] crate::election::ElectionError),
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Auth(String),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretError),
    #[error("{0}")]
    Config(String),
}

/// The authentication gate `cfg` asks for: disabled without an ACL file;
/// otherwise tokens (in the registry's database when it has one) and the
/// ACL file, polled for changes, plus the bootstrap token if asked for.
fn open_gate(cfg: &MasterConfig, registry: &dyn Registry) -> Result<crate::auth::Gate, ServeError> {
    use crate::auth::{Auth, Gate, acl::AclFile, tokens};
    let Some(acl_path) = &cfg.acls else {
        tracing::warn!(
            "authentication is OFF: no ACL file (--acls), every API is open to anyone who can reach it"
        );
        return Ok(Gate::disabled());
    };
    let acls = Arc::new(AclFile::load(acl_path).map_err(ServeError::Auth)?);
    let store: Box<dyn tokens::TokenStore> = match registry.shared_database() {
        Some(db) => {
            Box::new(tokens::RedbTokenStore::open(db).map_err(|e| ServeError::Auth(e.to_string()))?)
        }
        None => Box::new(tokens::MemoryTokenStore::default()),
    };
    let tokens = tokens::Tokens::open(store).map_err(|e| ServeError::Auth(e.to_string()))?;
    let owners = match registry.shared_database() {
        Some(db) => crate::auth::owners::FrameworkOwners::open(Box::new(
            crate::auth::owners::RedbOwnerStore::open(db)
                .map_err(|e| ServeError::Auth(e.to_string()))?,
        ))
        .map_err(|e| ServeError::Auth(e.to_string()))?,
        None => crate::auth::owners::FrameworkOwners::memory(),
    };
    if let Some(file) = &cfg.bootstrap_token_file {
        crate::auth::bootstrap(&tokens, file).map_err(ServeError::Auth)?;
    }
    acls.clone().watch(cfg.acl_poll_interval);
    tracing::info!(acls = %acl_path.display(), "authentication is on: bearer tokens and ACLs");
    Ok(Gate::enabled(Auth {
        tokens,
        acls,
        owners,
    }))
}

/// Opens the secret store the configuration asks for, on the registry's backend.
fn open_secrets(
    cfg: &MasterConfig,
    registry: &dyn Registry,
) -> Result<crate::secrets::Secrets, ServeError> {
    let Some(sc) = &cfg.secrets else {
        return Ok(crate::secrets::Secrets {
            store: None,
            policy: cfg.secret_policy.clone(),
        });
    };
    let backend = registry.secret_registry().ok_or_else(|| {
        ServeError::Config(
            "this registry cannot hold secrets; start without --secrets-key-file".into(),
        )
    })?;
    let store = crate::secrets::SecretStore::open_with_file(backend, &sc.key_file, sc.versions)?;
    tracing::info!(
        key_id = %store.key_id(),
        secrets = store.list().len(),
        versions_kept = sc.versions,
        "secret store open"
    );
    Ok(crate::secrets::Secrets {
        store: Some(std::sync::Arc::new(store)),
        policy: cfg.secret_policy.clone(),
    })
}

/// Serves gRPC (Scheduler, AgentLink) and HTTP on `listener` until
/// `shutdown`, in plain text (`agora dev`, `--insecure`, tests).
pub async fn serve(
    listener: TcpListener,
    cfg: MasterConfig,
    registry: Box<dyn Registry>,
    shutdown: Shutdown,
    started: Option<tokio::sync::oneshot::Sender<MasterServer>>,
) -> Result<(), ServeError> {
    serve_with_tls(listener, cfg, registry, shutdown, started, None).await
}

/// [`serve`], over TLS when `tls` is given (gRPC and HTTP on the same port,
/// ALPN h2 and http/1.1). AgentLink then requires an agent certificate of
/// the client CA whose name matches the hostname the agent registers with
/// (see [`AgentLinkService`]).
pub async fn serve_with_tls(
    listener: TcpListener,
    mut cfg: MasterConfig,
    registry: Box<dyn Registry>,
    shutdown: Shutdown,
    started: Option<tokio::sync::oneshot::Sender<MasterServer>>,
    tls: Option<agora_tls::ServerTls>,
) -> Result<(), ServeError> {
    let local_addr = listener.local_addr()?;
    if cfg.advertise.is_empty() || cfg.advertise.ends_with(":0") {
        cfg.advertise = local_addr.to_string();
    }
    let contender: Arc<dyn Contender> = Arc::new(Standalone {
        address: cfg.advertise.clone(),
    });
    contender.elect().await?;
    let agents = registry.load()?;
    let gate = open_gate(&cfg, registry.as_ref())?;
    let mut secrets = open_secrets(&cfg, registry.as_ref())?;
    if gate.is_enabled() {
        // With authentication on, the ACL file's `read_secrets` decides.
        secrets.policy = crate::secrets::SharedSecretPolicy(Arc::new(
            crate::auth::AclSecretPolicy(gate.clone()),
        ));
    }
    tracing::info!(
        master_id = %cfg.master_id,
        address = %local_addr,
        known_agents = agents.len(),
        "master elected (standalone) and serving"
    );
    let now = tokio::time::Instant::now().into_std();
    let master = Master::new(cfg, agents, now);
    let handle = actor::spawn(master, registry, shutdown.clone());
    let metrics = Arc::new(Metrics::new());
    let http = router(HttpState {
        master: handle.clone(),
        metrics,
        contender,
        gate: gate.clone(),
        secrets: secrets.clone(),
    });
    let routes = tonic::service::Routes::from(http)
        .add_service(pb::scheduler_server::SchedulerServer::new(
            SchedulerService {
                master: handle.clone(),
                gate: gate.clone(),
                secrets: secrets.clone(),
            },
        ))
        .add_service(pb::agent_link_server::AgentLinkServer::new(
            AgentLinkService {
                master: handle.clone(),
                secrets,
                tls: tls.clone(),
            },
        ));
    if let Some(tx) = started {
        let _ = tx.send(MasterServer {
            handle: handle.clone(),
            local_addr,
            gate,
        });
    }
    let mut stop = shutdown.clone();
    // Sets TCP_NODELAY (tonic applies it only to listeners it binds itself;
    // without it small gRPC messages wait ~40 ms for delayed ACKs) and runs
    // the TLS handshakes; handlers see the peer in `agora_tls::ConnInfo`.
    let incoming = agora_tls::incoming(listener, tls);
    tonic::transport::Server::builder()
        .accept_http1(true)
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(100_000))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .initial_connection_window_size(Some(4 << 20))
        .initial_stream_window_size(Some(1 << 20))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
        .await?;
    Ok(())
}
