//! Route tables built from a [`View`], and the [`Router`] that follows the
//! views, swaps the tables atomically and runs the drain protocol.
//!
//! - **edge** (L7, public): only ports labelled `expose: public`; by Host —
//!   each of the port's virtual hosts and the app's DNS name — and the
//!   longest matching path prefix. A virtual host equal to another app's
//!   DNS name is ignored: the name's owner always keeps it. Anything else is 404, so an internal
//!   app's virtual host is not served at the edge.
//! - **internal** (L7): `Host: <app dns name>` (e.g. `web.demo.agora`) →
//!   the app's first TCP port, any path; every app, public or not.
//! - **l4**: `servicePort` → the port's set, for the TCP listeners.
//!
//! Endpoints keep their balancer state (in-flight count, latency, ejection)
//! across tables: a [`Backend`] lives as long as its endpoint serves. When a
//! view no longer lists an endpoint as serving, its backend is retired; the
//! router reports `drained(V)` once no request is in flight to a backend
//! retired by `V` or earlier and, when it serves DNS, one TTL after
//! applying `V`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::endpoints::{EndpointKey, EndpointSet, EndpointState, LoadReport, View, dns_name};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::balance::{Backend, Balancer, EndpointId, OutlierPolicy};
use crate::load::{LoadConfig, PortLoad};

/// Where the router's acknowledgements go (the endpoint stream's
/// `POST /v1/endpoints/acks` in production).
pub trait Acks: Send + Sync + 'static {
    /// The router routes by version `v`.
    fn applied(&self, v: u64);
    /// Every request in flight to an endpoint draining or gone in `v` ended.
    fn drained(&self, v: u64);
}

/// Port label: the route's request timeout in seconds (e.g. `2.5`).
pub const TIMEOUT_LABEL: &str = "timeout";

/// How routes are built.
#[derive(Clone, Debug)]
pub struct RoutesConfig {
    /// The DNS zone (`agora`): `/demo/web` is `web.demo.agora`.
    pub domain: String,
    /// Request timeout for ports without a `timeout` label.
    pub request_timeout: Duration,
    pub outlier: OutlierPolicy,
    /// The TTL of the DNS answers this router hands out, when it serves
    /// DNS: `drained(V)` is then acknowledged no earlier than this long
    /// after `V` was applied, so that answers given before `V` expire
    /// before an instance it retired is killed. `None`: no DNS served.
    pub dns_ttl: Option<Duration>,
    /// Load measurement and holding for ports scaled to zero.
    pub load: LoadConfig,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        RoutesConfig {
            domain: "agora".into(),
            request_timeout: Duration::from_secs(60),
            outlier: OutlierPolicy::default(),
            dns_ttl: None,
            load: LoadConfig::default(),
        }
    }
}

/// One app port as routed: its serving endpoints and its settings.
#[derive(Debug)]
pub struct Route {
    pub key: EndpointKey,
    pub balancer: Balancer,
    /// Time allowed from sending the request to the response's head.
    pub timeout: Duration,
    /// The port's measurements and hold queue (kept across views).
    pub load: Arc<PortLoad>,
    /// The port may be scaled to zero: with no serving endpoint, new
    /// requests are held instead of refused.
    pub scale_to_zero: bool,
}

/// Path prefixes of one host, longest first, with their routes.
type Prefixes = Vec<(Box<str>, Arc<Route>)>;

/// Host → path prefixes (longest first) → route.
#[derive(Debug, Default)]
pub struct L7Table {
    hosts: HashMap<Box<str>, Prefixes>,
}

impl L7Table {
    /// The route for `host` (lower case, no port) and `path`: the longest
    /// prefix that matches whole segments (`/api` matches `/api` and
    /// `/api/x`, not `/apix`).
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let routes = self.hosts.get(host)?;
        routes
            .iter()
            .find(|(p, _)| prefix_matches(p, path))
            .map(|(_, r)| r)
    }

    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(|h| &**h)
    }

    /// Adds a route unless the host and prefix are taken (the first claim,
    /// in key order, wins; the framework refuses such conflicts anyway).
    fn add(&mut self, host: &str, prefix: &str, route: &Arc<Route>) {
        let list = self.hosts.entry(host.into()).or_default();
        if let Some((_, other)) = list.iter().find(|(p, _)| &**p == prefix) {
            tracing::warn!(
                host, prefix, kept = %other.key.app_id, ignored = %route.key.app_id,
                "two app ports claim the same host and path"
            );
            return;
        }
        list.push((prefix.into(), route.clone()));
        list.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" || prefix.is_empty() {
        return true;
    }
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
}

/// Normalises a host for lookups: lower case, no trailing dot.
pub fn normalize_host(h: &str) -> String {
    h.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Every table at one version.
#[derive(Debug, Default)]
pub struct Routes {
    pub version: u64,
    pub edge: L7Table,
    pub internal: L7Table,
    pub l4: HashMap<u16, Arc<Route>>,
}

/// Follows views, keeps the current [`Routes`] and tracks draining.
#[derive(Debug)]
pub struct Router {
    config: RoutesConfig,
    routes: watch::Sender<Arc<Routes>>,
    registry: Mutex<Registry>,
    drain: Arc<Notify>,
    epoch: Instant,
    /// Wakes the load reporter (a request was just held).
    load_wake: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Registry {
    live: HashMap<EndpointId, Arc<Backend>>,
    /// Every app port of the current view's measurements.
    ports: HashMap<EndpointKey, Arc<PortLoad>>,
    /// Retired backends with the version that retired them.
    retired: Vec<(u64, Arc<Backend>)>,
}

impl Router {
    pub fn new(config: RoutesConfig) -> Arc<Router> {
        Arc::new(Router {
            config,
            routes: watch::Sender::new(Arc::new(Routes::default())),
            registry: Mutex::default(),
            drain: Arc::new(Notify::new()),
            epoch: Instant::now(),
            load_wake: Arc::new(Notify::new()),
        })
    }

    pub fn config(&self) -> &RoutesConfig {
        &self.config
    }

    /// Notified when a request starts being held (the load reporter posts
    /// a report at once).
    pub fn load_wake(&self) -> Arc<Notify> {
        self.load_wake.clone()
    }

    /// The measurements of one app port of the current view.
    pub fn port_load(&self, key: &EndpointKey) -> Option<Arc<PortLoad>> {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.ports.get(key).cloned()
    }

    fn ports(&self) -> Vec<Arc<PortLoad>> {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut ports: Vec<Arc<PortLoad>> = reg.ports.values().cloned().collect();
        ports.sort_by(|a, b| a.key().cmp(b.key()));
        ports
    }

    /// What this router measured, for `POST /v1/endpoints/load`: every app
    /// port of the current view (zeros included: an idle port is a
    /// measurement too).
    pub fn load_report(&self, router_id: &str) -> LoadReport {
        let now = Instant::now();
        LoadReport {
            router: router_id.to_string(),
            window_ms: self.config.load.window.as_millis() as u64,
            sets: self.ports().iter().map(|p| p.set_load_at(now)).collect(),
        }
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        let ports = self.ports();
        let mut out = String::with_capacity(256 + ports.len() * 512);
        crate::load::write_metrics(ports.iter(), &mut out);
        out
    }

    /// The current routes (one read lock and one reference count).
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.borrow().clone()
    }

    /// Changes of routes (for the TCP listeners).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Routes>> {
        self.routes.subscribe()
    }

    /// Builds the routes of `view` and makes them current; endpoints no
    /// longer serving are retired. Requests already on their way keep
    /// their endpoint.
    pub fn apply(&self, view: &View) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut next: HashMap<EndpointId, Arc<Backend>> = HashMap::new();
        let mut ports: HashMap<EndpointKey, Arc<PortLoad>> = HashMap::new();
        // Ports that serve in this view (true), or are no longer scaled to
        // zero (false): their held requests go on.
        let mut serving: Vec<(Arc<PortLoad>, bool)> = Vec::new();
        let mut routes = Routes {
            version: view.version(),
            ..Routes::default()
        };
        let mut first_port: HashMap<&str, (u32, Arc<Route>)> = HashMap::new();
        // Every app's own DNS name: a virtual host equal to another app's
        // name is not routed (the name's owner wins, whatever the app-id
        // order), so a public app cannot take over another app's name.
        let names: HashMap<String, &str> = view
            .sets()
            .filter_map(|s| {
                dns_name(&s.key.app_id, &self.config.domain)
                    .map(|d| (normalize_host(&d), s.key.app_id.as_str()))
            })
            .collect();
        for set in view.sets() {
            let route = Arc::new(self.route(set, &mut reg, &mut next, &mut ports));
            // Serving, or no longer scaled to zero (its policy deleted or
            // given min ≥ 1): held requests look again now rather than
            // waiting out the hold timeout (then they get what any request
            // gets).
            if !route.balancer.is_empty() || !route.scale_to_zero {
                serving.push((route.load.clone(), !route.balancer.is_empty()));
            }
            let dns = dns_name(&set.key.app_id, &self.config.domain);
            if set.meta.public {
                let prefix = set.meta.path.as_deref().unwrap_or("/");
                for vhost in &set.meta.vhosts {
                    let h = normalize_host(vhost);
                    if h.is_empty() {
                        continue;
                    }
                    match names.get(&h) {
                        Some(owner) if *owner != set.key.app_id => {
                            tracing::warn!(host = %h, owner, ignored = %set.key.app_id,
                                "virtual host is another app's DNS name; not routed to this app");
                        }
                        // The app's own name: added below as its DNS name.
                        Some(_) => {}
                        None => routes.edge.add(&h, prefix, &route),
                    }
                }
                if let Some(d) = &dns {
                    routes.edge.add(d, prefix, &route);
                }
            }
            if dns.is_some() && set.meta.protocol != "udp" {
                match first_port.entry(&set.key.app_id) {
                    Entry::Occupied(mut o) => {
                        if o.get().0 > set.key.port_index {
                            o.insert((set.key.port_index, route.clone()));
                        }
                    }
                    Entry::Vacant(v) => {
                        v.insert((set.key.port_index, route.clone()));
                    }
                }
            }
            if let Some(sp) = set.meta.service_port
                && set.meta.protocol != "udp"
            {
                match u16::try_from(sp) {
                    Ok(p) if p != 0 => {
                        if let Some(other) = routes.l4.insert(p, route.clone()) {
                            tracing::warn!(service_port = p, kept = %route.key.app_id,
                                ignored = %other.key.app_id, "two app ports claim one servicePort");
                        }
                    }
                    _ => tracing::warn!(app = %set.key.app_id, service_port = sp,
                        "servicePort out of range; not routed"),
                }
            }
        }
        for (app, (_, route)) in first_port {
            if let Some(d) = dns_name(app, &self.config.domain) {
                routes.internal.add(&d, "/", &route);
            }
        }
        // Publish first, then retire: a request that still picks from the
        // old tables sees the retirement and picks again.
        self.routes.send_replace(Arc::new(routes));
        let old = std::mem::replace(&mut reg.live, next);
        for (_, b) in old {
            b.retire();
            reg.retired.push((view.version(), b));
        }
        // Ports not reused are gone from the view.
        let gone = std::mem::replace(&mut reg.ports, ports);
        drop(reg);
        // After the swap: a request held from now on sees the new routes
        // when it looks again (see PortLoad::hold).
        let now = Instant::now();
        for (p, served) in serving {
            p.release(now, served);
        }
        // Requests held for a port that is gone look again (and find no
        // route) instead of waiting for their timeout.
        for p in gone.values() {
            p.release(now, false);
        }
    }

    fn route(
        &self,
        set: &EndpointSet,
        reg: &mut Registry,
        next: &mut HashMap<EndpointId, Arc<Backend>>,
        ports: &mut HashMap<EndpointKey, Arc<PortLoad>>,
    ) -> Route {
        let load = ports
            .entry(set.key.clone())
            .or_insert_with(|| {
                reg.ports.remove(&set.key).unwrap_or_else(|| {
                    Arc::new(PortLoad::new(
                        set.key.clone(),
                        self.config.load.window,
                        self.epoch,
                        self.load_wake.clone(),
                    ))
                })
            })
            .clone();
        let mut backends = Vec::new();
        for e in &set.endpoints {
            if e.state != EndpointState::Serving {
                continue;
            }
            let Ok(port) = u16::try_from(e.port) else {
                continue;
            };
            let id = EndpointId {
                task_id: e.task_id.as_str().into(),
                host: e.host.as_str().into(),
                port,
            };
            let b = match next.entry(id.clone()) {
                Entry::Occupied(o) => o.get().clone(),
                Entry::Vacant(v) => {
                    let b = reg.live.remove(&id).unwrap_or_else(|| {
                        Arc::new(Backend::new(
                            id,
                            self.epoch,
                            self.config.outlier,
                            self.drain.clone(),
                        ))
                    });
                    v.insert(b).clone()
                }
            };
            backends.push(b);
        }
        let timeout = set
            .meta
            .labels
            .get(TIMEOUT_LABEL)
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|t| t.is_finite() && *t > 0.0 && *t <= 86_400.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(self.config.request_timeout);
        Route {
            key: set.key.clone(),
            balancer: Balancer::new(backends),
            timeout,
            load,
            scale_to_zero: set.meta.scale_to_zero,
        }
    }

    /// Whether no request is in flight to a retired endpoint. Retired
    /// endpoints found idle are forgotten (and their pooled connections
    /// closed).
    pub fn drained(&self) -> bool {
        self.busy_since().is_none()
    }

    /// The lowest version that retired an endpoint with a request (or an
    /// L4 connection) still in flight; `None` when every retired endpoint
    /// is idle. Retired endpoints found idle are forgotten.
    fn busy_since(&self) -> Option<u64> {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.retired.retain(|(_, b)| {
            if b.in_flight() == 0 {
                b.idle.clear();
                false
            } else {
                true
            }
        });
        reg.retired.iter().map(|(v, _)| *v).min()
    }

    /// Follows `views` until the sender is gone: applies each view,
    /// acknowledges `applied(V)` at once and `drained(V)` once every
    /// request to an endpoint retired by `V` or earlier has ended (a long
    /// request to an endpoint retired by `V` does not hold back later
    /// versions' acks beyond `V - 1`) and, when this router serves DNS, no
    /// earlier than one DNS TTL after `V` was applied.
    pub async fn follow(
        self: Arc<Self>,
        mut views: watch::Receiver<Arc<View>>,
        acks: Arc<dyn Acks>,
    ) {
        // Versions applied but not yet acknowledged drained, oldest first,
        // with the earliest instant each may be.
        let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
        let ttl = self.config.dns_ttl.unwrap_or(Duration::ZERO);
        let mut changed = true;
        loop {
            if changed {
                changed = false;
                let view = views.borrow_and_update().clone();
                self.apply(&view);
                let v = view.version();
                if v > 0 {
                    acks.applied(v);
                    if pending.back().is_some_and(|(last, _)| *last >= v) {
                        // A new stream restarted the versions: start over,
                        // counting every retirement as older than any
                        // version from now on.
                        pending.clear();
                        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
                        for (rv, _) in &mut reg.retired {
                            *rv = 0;
                        }
                    }
                    pending.push_back((v, Instant::now() + ttl));
                }
            }
            let mut next_deadline = None;
            if !pending.is_empty() {
                let busy = self.busy_since().unwrap_or(u64::MAX);
                let now = Instant::now();
                let mut ack = None;
                for (v, at) in &pending {
                    if *v >= busy {
                        break;
                    }
                    if *at > now {
                        next_deadline = Some(*at);
                        break;
                    }
                    ack = Some(*v);
                }
                if let Some(v) = ack {
                    acks.drained(v);
                    pending.retain(|(p, _)| *p > v);
                }
            }
            tokio::select! {
                r = views.changed() => match r {
                    Ok(()) => changed = true,
                    Err(_) => return,
                },
                _ = self.drain.notified(), if !pending.is_empty() => {}
                _ = tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now)),
                    if next_deadline.is_some() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
