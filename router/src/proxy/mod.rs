//! The L7 reverse proxy: HTTP/1.1 and HTTP/2 from clients (hyper-util's
//! auto server), HTTP/1.1 with keep-alive pools to backends.
//!
//! Per request: route by Host and path (404 when nothing matches), refuse
//! when over the in-flight bound (503 with `Retry-After`), pick an endpoint
//! (502 when there is none), get a connection (connect timeout; a failed
//! connect moves on to another instance) and send. A request that could not
//! be written to the connection is retried on another instance; one that
//! was written is never resent: a failure after that is a 502, no response
//! head within the route's timeout a 504. Upgrades (WebSocket) are passed
//! through as a byte tunnel.
//!
//! A port scaled to zero (`scale_to_zero`, no serving endpoint) holds the
//! request instead (its body unread) until a view gives the port a serving
//! endpoint, then it goes on as any other; beyond the port's hold bound or
//! after the hold timeout: 503 with `Retry-After` (see [`crate::load`]).
//! Every request sent on is measured ([`RequestLoad`]).

pub(crate) mod h1;
pub(crate) mod headers;
pub(crate) mod pool;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::balance::{Backend, InFlight};
use crate::load::{Kind, RequestLoad};
use crate::routes::{L7Table, Route, Router, Routes, normalize_host};
pub use h1::BackendError;
use h1::{Conn, SendError};
pub use pool::{BodyError, ConnectError, ProxyBody, Upstream};
use pool::{Lease, checkout};

/// Which routes a proxy serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// The edge router: publicly exposed ports only.
    Edge,
    /// The internal router: every app by its DNS name.
    Internal,
}

/// Limits and timeouts of a proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub exposure: Exposure,
    /// TCP connect to a backend (a failed or slow connect moves on to
    /// another instance).
    pub connect_timeout: Duration,
    /// Instances tried for one request when connecting fails.
    pub max_attempts: usize,
    /// Requests waiting for a backend's response head at once; above it,
    /// 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// Client connections at once; above it, new ones wait in the
    /// listen backlog.
    pub max_connections: usize,
    /// HTTP/2 streams per client connection.
    pub max_streams: u32,
    /// How long an idle backend connection is kept for reuse.
    pub idle_timeout: Duration,
    /// Idle connections kept per backend.
    pub max_idle_per_backend: usize,
    /// `Retry-After` seconds on overload.
    pub retry_after: u32,
    /// `X-Forwarded-Proto` sent to backends.
    pub forwarded_proto: &'static str,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            exposure: Exposure::Edge,
            connect_timeout: Duration::from_secs(1),
            max_attempts: 3,
            max_in_flight: 10_000,
            max_connections: 20_000,
            max_streams: 256,
            idle_timeout: Duration::from_secs(30),
            max_idle_per_backend: 512,
            retry_after: 1,
            forwarded_proto: "http",
        }
    }
}

/// An L7 proxy over a [`Router`]'s routes.
#[derive(Debug)]
pub struct Proxy {
    router: Arc<Router>,
    config: ProxyConfig,
    in_flight: AtomicUsize,
    connections: Arc<Semaphore>,
    proto: HeaderValue,
    retry_after: HeaderValue,
}

/// A client connection's facts, computed once per connection.
struct Peer {
    ip: HeaderValue,
}

/// One request counted against `max_in_flight`.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Proxy {
    pub fn new(router: Arc<Router>, config: ProxyConfig) -> Arc<Proxy> {
        Arc::new(Proxy {
            router,
            in_flight: AtomicUsize::new(0),
            connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
            proto: HeaderValue::from_static(config.forwarded_proto),
            retry_after: HeaderValue::from(config.retry_after),
            config,
        })
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Serves client connections from `listener` until the task is dropped.
    /// Connections already accepted keep going on their own tasks.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.config.max_streams);
        loop {
            let Ok(permit) = self.connections.clone().acquire_owned().await else {
                return;
            };
            let (stream, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: pause, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let peer = Arc::new(Peer::new(addr));
                let svc = hyper::service::service_fn(move |req| {
                    let proxy = proxy.clone();
                    let peer = peer.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, &peer).await) }
                });
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(error = %e, client = %addr, "client connection ended");
                }
                drop(permit);
            });
        }
    }

    fn kind(&self) -> Kind {
        match self.config.exposure {
            Exposure::Edge => Kind::Edge,
            Exposure::Internal => Kind::Internal,
        }
    }

    /// 503 with `Retry-After`.
    fn unavailable(&self, text: &'static str) -> Response<ProxyBody> {
        let mut r = answer(StatusCode::SERVICE_UNAVAILABLE, text);
        r.headers_mut()
            .insert(header::RETRY_AFTER, self.retry_after.clone());
        r
    }

    /// Holds a request for a port with no serving endpoint until a view
    /// gives it one (then `routes` and `route` are the new ones), the hold
    /// bound is reached or the hold times out (503 with `Retry-After`).
    async fn hold(
        &self,
        host: &str,
        path: &str,
        routes: &mut Arc<Routes>,
        route: &mut Arc<Route>,
    ) -> Result<(), Response<ProxyBody>> {
        let cfg = self.router.config().load;
        let deadline = Instant::now() + cfg.hold_timeout;
        loop {
            let mut held = match route.load.hold(cfg.hold_max) {
                Ok(h) => h,
                Err(_) => {
                    return Err(self.unavailable(
                        "the app is starting and too many requests wait for it; retry shortly\n",
                    ));
                }
            };
            // Look again after queueing: a view that gave the port an
            // endpoint just before released the queue without us.
            let mut waited = false;
            loop {
                *routes = self.router.routes();
                match self.table(routes).lookup(host, path) {
                    Some(r) => *route = r.clone(),
                    None => return Err(answer(StatusCode::NOT_FOUND, "no route\n")),
                }
                if !route.balancer.is_empty() || !route.scale_to_zero {
                    return Ok(());
                }
                if waited {
                    break;
                }
                if held.released(deadline).await.is_err() {
                    return Err(self.unavailable(
                        "the app did not start within the hold timeout; retry shortly\n",
                    ));
                }
                waited = true;
            }
            // Released, yet no endpoint (the port changed again): queue anew.
        }
    }

    fn table<'a>(&self, routes: &'a Routes) -> &'a L7Table {
        match self.config.exposure {
            Exposure::Edge => &routes.edge,
            Exposure::Internal => &routes.internal,
        }
    }

    async fn handle(&self, mut req: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        if req.method() == http::Method::CONNECT {
            // Neither a forward proxy nor HTTP/2 extended CONNECT.
            return answer(StatusCode::METHOD_NOT_ALLOWED, "CONNECT not supported\n");
        }
        let Some(host_value) = headers::request_host(&req) else {
            return answer(StatusCode::BAD_REQUEST, "no Host\n");
        };
        let Ok(host_raw) = host_value.to_str() else {
            return answer(StatusCode::BAD_REQUEST, "bad Host\n");
        };
        let host = headers::host_only(host_raw);
        let host_lc;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) || host.ends_with('.') {
            host_lc = normalize_host(host);
            host_lc.as_str()
        } else {
            host
        };
        let mut routes = self.router.routes();
        let Some(mut route) = self.table(&routes).lookup(host, req.uri().path()).cloned() else {
            return answer(StatusCode::NOT_FOUND, "no route\n");
        };
        if route.balancer.is_empty()
            && route.scale_to_zero
            && let Err(r) = self
                .hold(host, req.uri().path(), &mut routes, &mut route)
                .await
        {
            return r;
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.config.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return self.unavailable("overloaded\n");
        }
        let _admitted = Admitted(&self.in_flight);
        let mut load = RequestLoad::begin(&route.load, self.kind());
        let upgrade = headers::wants_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        headers::to_backend(&mut req, host_value.clone(), &peer.ip, &self.proto, upgrade);

        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut attempts = 0;
        let mut req = Some(req);
        while attempts < self.config.max_attempts.max(1) {
            let guard = match route.balancer.pick(&tried) {
                Some(g) => g,
                None => {
                    // The routes may have changed under us: look once more.
                    let fresh = self.router.routes();
                    if Arc::ptr_eq(&fresh, &routes) || !tried.is_empty() {
                        break;
                    }
                    routes = fresh;
                    let path = req.as_ref().map(|r| r.uri().path()).unwrap_or("/");
                    match self.table(&routes).lookup(host, path) {
                        Some(r) => route = r.clone(),
                        None => return answer(StatusCode::NOT_FOUND, "no route\n"),
                    }
                    continue;
                }
            };
            attempts += 1;
            let backend = guard.backend().clone();
            let conn = match checkout(
                &backend,
                self.config.idle_timeout,
                self.config.connect_timeout,
            )
            .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, task = %backend.id().task_id, "backend connect failed; trying another");
                    backend.failure(Instant::now());
                    tried.push(backend);
                    continue;
                }
            };
            let started = Instant::now();
            let Some(r) = req.take() else { break };
            let sent = tokio::time::timeout(route.timeout, h1::send(conn, r)).await;
            let (mut resp, exchange) = match sent {
                Err(_) => {
                    backend.failure(Instant::now());
                    return answer(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n");
                }
                Ok(Err(SendError::NotSent(r, e))) => {
                    // Not one byte written (the connection closed first):
                    // safe to send elsewhere.
                    tracing::debug!(error = %e, task = %backend.id().task_id, "request not sent; trying another");
                    req = Some(*r);
                    continue;
                }
                Ok(Err(SendError::Failed(e))) => {
                    tracing::debug!(error = %e, task = %backend.id().task_id, "backend failed after the request was sent");
                    backend.failure(Instant::now());
                    return answer(StatusCode::BAD_GATEWAY, "backend failed\n");
                }
                Ok(Ok(r)) => r,
            };
            let now = Instant::now();
            load.head(now);
            match resp.status() {
                StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => {
                    backend.failure(now);
                }
                _ => backend.success(now - started, now),
            }
            headers::to_client(&mut resp);
            let (parts, ()) = resp.into_parts();
            if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                return match client_upgrade {
                    Some(client) => tunnel(parts, client, exchange.into_conn(), (guard, load)),
                    None => answer(StatusCode::BAD_GATEWAY, "unexpected upgrade\n"),
                };
            }
            let lease = Lease {
                guard,
                load,
                max_idle: self.config.max_idle_per_backend,
                idle_timeout: self.config.idle_timeout,
            };
            return Response::from_parts(parts, ProxyBody::upstream(exchange, lease));
        }
        answer(StatusCode::BAD_GATEWAY, "no endpoint available\n")
    }
}

impl Peer {
    fn new(addr: SocketAddr) -> Peer {
        let ip = addr.ip().to_canonical().to_string();
        Peer {
            ip: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown")),
        }
    }
}

/// Passes a `101 Switching Protocols` on and copies bytes both ways once
/// the client's side has upgraded; the request stays in flight until the
/// tunnel closes.
fn tunnel(
    parts: http::response::Parts,
    client: hyper::upgrade::OnUpgrade,
    backend: Conn,
    guard: (InFlight, RequestLoad),
) -> Response<ProxyBody> {
    tokio::spawn(async move {
        match client.await {
            Ok(c) => {
                let mut c = TokioIo::new(c);
                let (mut b, early) = backend.into_parts();
                // Bytes the backend sent right after its 101 head.
                let sent = if early.is_empty() {
                    Ok(())
                } else {
                    c.write_all(&early).await
                };
                let copied = match sent {
                    Ok(()) => tokio::io::copy_bidirectional(&mut c, &mut b)
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = copied {
                    tracing::debug!(error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "client upgrade failed"),
        }
        drop(guard);
    });
    Response::from_parts(parts, ProxyBody::empty())
}

fn answer(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::text(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
