//! The L4 router: one TCP listener per `servicePort`, on the internal
//! address. Each connection goes to a serving endpoint picked by the same
//! balancer as the L7 proxy and bytes are copied both ways.
//!
//! Listeners follow the routes: a new `servicePort` gets a listener, a
//! vanished one loses it. Open connections are never touched by that; they
//! run on their own tasks and count as in flight to their endpoint (the
//! drain protocol waits for them, within the app's `drainSeconds`).
//!
//! A port scaled to zero (`scale_to_zero`, no serving endpoint) holds an
//! accepted connection, reading nothing from it, until a view gives the port
//! a serving endpoint; beyond the port's hold bound or after the hold
//! timeout the connection is closed (see [`crate::load`]). Each connection
//! counts as one request, in flight while it is open.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::balance::Backend;
use crate::load::{Kind, RequestLoad};
use crate::proxy::pool::tcp_connect;
use crate::routes::{Router, Routes};

/// Where and how the L4 router listens and connects.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// The agent's internal address; never a public one.
    pub address: IpAddr,
    pub connect_timeout: Duration,
    /// Instances tried for one connection when connecting fails.
    pub max_attempts: usize,
    /// Connections at once over every port; above it, new ones wait in
    /// the listen backlogs.
    pub max_connections: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            address: IpAddr::from([127, 0, 0, 1]),
            connect_timeout: Duration::from_secs(1),
            max_attempts: 3,
            max_connections: 20_000,
        }
    }
}

/// The L4 router.
#[derive(Debug)]
pub struct TcpRouter {
    router: Arc<Router>,
    config: TcpConfig,
    connections: Arc<Semaphore>,
    bound: watch::Sender<BTreeSet<u16>>,
}

/// The listener tasks; dropping it closes every listener (not the
/// connections).
#[derive(Default)]
struct Listeners(HashMap<u16, JoinHandle<()>>);

impl Drop for Listeners {
    fn drop(&mut self) {
        for (_, h) in self.0.drain() {
            h.abort();
        }
    }
}

impl TcpRouter {
    pub fn new(router: Arc<Router>, config: TcpConfig) -> Arc<TcpRouter> {
        Arc::new(TcpRouter {
            router,
            connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
            config,
            bound: watch::Sender::new(BTreeSet::new()),
        })
    }

    /// The service ports listened on now, as they change.
    pub fn bound(&self) -> watch::Receiver<BTreeSet<u16>> {
        self.bound.subscribe()
    }

    /// Keeps one listener per service port of the current routes until
    /// this future is dropped. A port that cannot be bound is tried again
    /// every second (and logged).
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.router.subscribe();
        let mut listeners = Listeners::default();
        loop {
            let routes = changes.borrow_and_update().clone();
            let failed = self.reconcile(&routes, &mut listeners).await;
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(1)), if failed => {}
            }
        }
    }

    /// Opens listeners for new service ports and closes those of vanished
    /// ones. Returns whether some port could not be bound.
    async fn reconcile(self: &Arc<Self>, routes: &Routes, ls: &mut Listeners) -> bool {
        ls.0.retain(|port, h| {
            let keep = routes.l4.contains_key(port) && !h.is_finished();
            if !keep {
                h.abort();
                tracing::info!(service_port = port, "L4 listener closed");
            }
            keep
        });
        let mut failed = false;
        for &port in routes.l4.keys() {
            if ls.0.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(self.config.address, port);
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(%addr, "L4 listener open");
                    let me = self.clone();
                    ls.0.insert(port, tokio::spawn(me.accept(l, port)));
                }
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot listen on service port");
                    failed = true;
                }
            }
        }
        let ports: BTreeSet<u16> = ls.0.keys().copied().collect();
        self.bound.send_if_modified(|b| {
            let changed = *b != ports;
            *b = ports;
            changed
        });
        failed
    }

    async fn accept(self: Arc<Self>, listener: TcpListener, port: u16) {
        loop {
            let Ok(permit) = self.connections.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(service_port = port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.connection(stream, port, peer).await;
                drop(permit);
            });
        }
    }

    async fn connection(&self, mut client: TcpStream, port: u16, peer: SocketAddr) {
        let _ = client.set_nodelay(true);
        if !self.hold(port, peer).await {
            return;
        }
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        for _ in 0..self.config.max_attempts.max(1) {
            let routes = self.router.routes();
            let Some(route) = routes.l4.get(&port) else {
                return;
            };
            let Some(guard) = route.balancer.pick(&tried) else {
                break;
            };
            let backend = guard.backend().clone();
            let started = Instant::now();
            match tcp_connect(&backend, self.config.connect_timeout).await {
                Ok(mut upstream) => {
                    let now = Instant::now();
                    backend.success(now - started, now);
                    let load = RequestLoad::begin(&route.load, Kind::L4);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        tracing::debug!(service_port = port, error = %e, "L4 connection ended");
                    }
                    drop(load);
                    drop(guard);
                    return;
                }
                Err(e) => {
                    tracing::debug!(service_port = port, task = %backend.id().task_id, error = %e,
                        "L4 connect failed; trying another instance");
                    backend.failure(Instant::now());
                    tried.push(backend);
                }
            }
        }
        tracing::debug!(service_port = port, client = %peer, "no endpoint for L4 connection");
    }

    /// Holds a connection to a port with no serving endpoint (scaled to
    /// zero) until it has one. False: the connection is to be closed (no
    /// such port any more, the hold bound reached or the hold timed out).
    async fn hold(&self, port: u16, peer: SocketAddr) -> bool {
        let cfg = self.router.config().load;
        let deadline = Instant::now() + cfg.hold_timeout;
        loop {
            let routes = self.router.routes();
            let Some(route) = routes.l4.get(&port) else {
                return false;
            };
            if !route.balancer.is_empty() || !route.scale_to_zero {
                return true;
            }
            let mut held = match route.load.hold(cfg.hold_max) {
                Ok(h) => h,
                Err(_) => {
                    tracing::debug!(service_port = port, client = %peer,
                        "too many connections held for an app at zero; closing");
                    return false;
                }
            };
            // Look again after queueing: a view that gave the port an
            // endpoint just before released the queue without us.
            let routes = self.router.routes();
            match routes.l4.get(&port) {
                None => return false,
                Some(r) if !r.balancer.is_empty() || !r.scale_to_zero => return true,
                Some(_) => {}
            }
            if held.released(deadline).await.is_err() {
                tracing::debug!(service_port = port, client = %peer,
                    "no instance served within the hold timeout; closing");
                return false;
            }
            // Released: look at the routes again (at the top).
        }
    }
}
