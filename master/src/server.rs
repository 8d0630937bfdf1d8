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
use tokio_stream::wrappers::TcpListenerStream;

/// A running master.
pub struct MasterServer {
    pub handle: MasterHandle,
    pub local_addr: std::net::SocketAddr,
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
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretError),
    #[error("{0}")]
    Config(String),
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

/// Serves gRPC (Scheduler, AgentLink) and HTTP on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    mut cfg: MasterConfig,
    registry: Box<dyn Registry>,
    shutdown: Shutdown,
    started: Option<tokio::sync::oneshot::Sender<MasterServer>>,
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
    let secrets = open_secrets(&cfg, registry.as_ref())?;
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
        secrets: secrets.clone(),
    });
    let routes = tonic::service::Routes::from(http)
        .add_service(pb::scheduler_server::SchedulerServer::new(
            SchedulerService {
                master: handle.clone(),
                secrets: secrets.clone(),
            },
        ))
        .add_service(pb::agent_link_server::AgentLinkServer::new(
            AgentLinkService {
                master: handle.clone(),
                secrets,
            },
        ));
    if let Some(tx) = started {
        let _ = tx.send(MasterServer {
            handle: handle.clone(),
            local_addr,
        });
    }
    let mut stop = shutdown.clone();
    // Tonic applies TCP_NODELAY only to listeners it binds itself; without it
    // small gRPC messages wait ~40 ms for delayed ACKs.
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
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
