//! `agora router`: the router daemon. It follows the services framework's
//! endpoint stream and serves, from the same view: the cluster's DNS zone
//! (UDP and TCP), the edge L7 proxy (publicly exposed ports), the internal
//! L7 proxy (every app by its DNS name) and the L4 listeners (one per
//! `servicePort`, on the agent's internal address). The proxies acknowledge
//! the versions they route by (and have drained) through the feed.
//! `agora dev` runs the same stack in-process ([`Routers`]).
//!
//! Against a services API with tokens required, the router needs a bearer
//! token (global `--token-file`/`AGORA_TOKEN_FILE`, or `AGORA_TOKEN`, as
//! `agora services` takes its own): it is sent on the endpoint stream and
//! the acks, and never logged.

use crate::util::{LogFormat, parse_duration};
use agora_router::dns::{DnsConfig, DnsError};
use agora_router::feed::{BearerToken, Feed, FeedConfig};
use agora_router::load::LoadConfig;
use agora_router::load::report::ReportConfig;
use agora_router::proxy::{Exposure, Proxy, ProxyConfig};
use agora_router::routes::{Router, RoutesConfig};
use agora_router::tcp::{TcpConfig, TcpRouter};
use anyhow::{Context, Result, bail};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::task::JoinHandle;

#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Token: against a services API run with --require-tokens (agora dev --secure \
does), joining the drains and acking them need a bearer token: give the router one with \
--token-file FILE (or AGORA_TOKEN_FILE; AGORA_TOKEN holds the token itself), a token the master \
issued, e.g. `agora token create router > router.token`. Each router id is bound to the principal \
whose stream joined it first. Without a token such an API answers 401: the router logs it as an \
error and keeps retrying."
)]
pub struct RouterArgs {
    /// The services framework's API, whose endpoint stream feeds the router
    /// (`host:port`, `http://host:port` or `https://host:port`; a bare
    /// address is https with --tls-ca).
    #[arg(long, env = "AGORA_SERVICES", default_value = "127.0.0.1:8080")]
    pub services: String,
    /// Where the DNS server listens, UDP and TCP (`off`: no DNS); the
    /// agent's internal IP, never a wildcard.
    #[arg(long, default_value = "127.0.0.1:8053")]
    pub dns_listen: String,
    /// Edge L7 proxy (publicly exposed ports, by Host and path), e.g.
    /// `0.0.0.0:80` on a public agent. Default: off.
    #[arg(long)]
    pub edge_listen: Option<String>,
    /// Internal L7 proxy (every app by Host `<app>.<group>.<domain>`), on
    /// the agent's internal address, e.g. `10.0.0.5:80`. Default: off.
    #[arg(long)]
    pub internal_listen: Option<String>,
    /// The agent's internal address the L4 `servicePort` listeners bind
    /// (never 0.0.0.0). Default: off (no L4 listeners).
    #[arg(long)]
    pub internal_address: Option<IpAddr>,
    /// The DNS zone: app `/demo/web` answers at `web.demo.<domain>`.
    #[arg(long, default_value = "agora")]
    pub domain: String,
    /// TTL of the DNS answers (whole seconds, e.g. 1s, 5s).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub dns_ttl: Duration,
    #[command(flatten)]
    pub upstream: DnsUpstreamArgs,
    /// The cluster CA certificate (ca.crt) to verify an https services API
    /// with; a bare --services address then means https.
    #[arg(long, env = "AGORA_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This router's id in the endpoint stream and its acks
    /// (default: the host name and the process id).
    #[arg(long)]
    pub router_id: Option<String>,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Log format on stderr (AGORA_LOG sets the level, e.g. debug).
    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The admin listener, load measurement and holding (`agora router`).
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Admin listener: `GET /health` and `GET /metrics` (Prometheus text:
    /// requests, in flight, latency, held requests and cold starts per app
    /// port); `off` to disable.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    pub admin_address: String,
    /// Sliding window of the load numbers (requests per second, latency
    /// p50/p95) in the load reports posted to the services framework every
    /// second.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub load_window: Duration,
    /// Requests (L4: connections) held at once per app port that is scaled
    /// to zero and has no serving instance yet; more get 503 with
    /// `Retry-After: 1` (L4: the connection is closed).
    #[arg(long, default_value_t = 1000)]
    pub hold_max: usize,
    /// How long such a request is held at most while the app wakes; then
    /// 503 with `Retry-After: 1` (L4: closed).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub hold_timeout: Duration,
}

impl LoadArgs {
    /// The load settings (an error names the flag).
    pub fn setup(&self) -> Result<LoadSetup> {
        if self.load_window < Duration::from_secs(1) {
            bail!(
                "--load-window {:?}: give at least 1s (the window is cut in ten slots)",
                self.load_window
            );
        }
        if self.hold_timeout.is_zero() {
            bail!("--hold-timeout must be above 0 (use --hold-max 0 to hold nothing)");
        }
        Ok(LoadSetup {
            admin_listen: listen_opt(&self.admin_address),
            admin_flag: "--admin-address",
            load: LoadConfig {
                window: self.load_window,
                hold_max: self.hold_max,
                hold_timeout: self.hold_timeout,
            },
            reports: true,
        })
    }
}

/// The admin listener and load settings of a router stack.
#[derive(Clone, Debug)]
pub struct LoadSetup {
    /// Where `/health` and `/metrics` are served (`None`: nowhere).
    pub admin_listen: Option<String>,
    /// The flag that sets it, for error messages.
    pub admin_flag: &'static str,
    pub load: LoadConfig,
    /// Post load reports to the services framework (when a proxy or the
    /// L4 listeners run).
    pub reports: bool,
}

impl Default for LoadSetup {
    /// No admin listener; default window and holding; reports on.
    fn default() -> Self {
        LoadSetup {
            admin_listen: None,
            admin_flag: "--admin-address",
            load: LoadConfig::default(),
            reports: true,
        }
    }
}

/// Forwarding of names outside the zone (`agora router` and `agora dev`).
#[derive(clap::Args, Debug, Clone)]
pub struct DnsUpstreamArgs {
    /// Resolver that DNS names outside the zone are forwarded to:
    /// `IP[:PORT]` (port 53 by default), repeatable or comma-separated,
    /// tried in order. Without it such names are refused (REFUSED).
    #[arg(long = "dns-upstream", value_name = "IP[:PORT]")]
    pub dns_upstream: Vec<String>,
    /// Time the upstreams get for one forwarded query; then SERVFAIL.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub dns_upstream_timeout: Duration,
}

impl DnsUpstreamArgs {
    /// The upstreams' addresses (an error names the flag).
    pub fn upstreams(&self) -> Result<Vec<SocketAddr>> {
        if self.dns_upstream_timeout.is_zero() {
            bail!("--dns-upstream-timeout must be above 0");
        }
        agora_router::dns::forward::parse_upstreams(&self.dns_upstream)
            .map_err(|e| anyhow::anyhow!("--dns-upstream: {e}"))
    }
}

/// An `http://` URL to a host other than the loopback.
fn plain_remote(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest
        .rsplit_once(':')
        .map_or(rest, |(h, _)| h)
        .trim_matches(['[', ']']);
    !(host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

pub fn default_router_id() -> String {
    format!("{}-{}", crate::agent_cmd::hostname(), std::process::id())
}

/// `off` (or `none`, or empty) turns a listener off.
pub fn listen_opt(s: &str) -> Option<String> {
    match s.trim() {
        "" | "off" | "none" => None,
        a => Some(a.to_string()),
    }
}

/// What a router stack serves and where.
#[derive(Clone, Debug)]
pub struct RoutersSetup {
    pub services: String,
    pub router_id: String,
    pub domain: String,
    pub dns_ttl: Duration,
    /// Where names outside the zone are forwarded (empty: refused).
    pub dns_upstreams: Vec<SocketAddr>,
    pub dns_upstream_timeout: Duration,
    pub dns_listen: Option<String>,
    pub edge_listen: Option<String>,
    pub internal_listen: Option<String>,
    pub internal_address: Option<IpAddr>,
    /// The CA to verify an https services API with.
    pub services_tls: Option<std::sync::Arc<agora_tls::ClientConfig>>,
    /// The bearer token for the stream and the acks (redacted in Debug).
    pub token: Option<BearerToken>,
}

/// A running router stack: the feed, DNS, the proxies and the L4
/// listeners. Dropping it stops everything but the connections already
/// being served.
pub struct Routers {
    /// Lines describing every address served (for printing).
    pub lines: Vec<String>,
    pub dns: Option<SocketAddr>,
    pub edge: Option<SocketAddr>,
    pub internal: Option<SocketAddr>,
    _feed: Feed,
    dns_task: Option<JoinHandle<Result<(), DnsError>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Routers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(t) = &self.dns_task {
            t.abort();
        }
    }
}

async fn bind_tcp(addr: &str, what: &str, flag: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what}; use {flag})"))
}

/// The internal router must not listen on every interface: it serves
/// every app, internal ones included.
fn refuse_unspecified(ip: IpAddr, flag: &str) -> Result<()> {
    if ip.is_unspecified() {
        bail!(
            "{flag} {ip}: the internal router serves every app, internal ones included; give the agent's internal address, not a wildcard"
        );
    }
    Ok(())
}

impl Routers {
    /// Binds every listener first (any failure is an error naming the
    /// flag), then starts the feed and the servers; no admin listener,
    /// default load settings.
    pub async fn start(s: RoutersSetup, flags: &Flags) -> Result<Routers> {
        Routers::start_with(s, LoadSetup::default(), flags).await
    }

    /// [`Routers::start`] with an admin listener and load settings.
    pub async fn start_with(s: RoutersSetup, load: LoadSetup, flags: &Flags) -> Result<Routers> {
        let mut feed_cfg = FeedConfig::new(&s.services, &s.router_id)?;
        if feed_cfg.services.starts_with("https://") && s.services_tls.is_none() {
            bail!(
                "--services {} is https: give --tls-ca (the cluster's ca.crt) to verify it",
                feed_cfg.services
            );
        }
        feed_cfg.tls = s.services_tls.clone();
        feed_cfg.token = s.token.clone();
        let dns_cfg = DnsConfig::new(&s.domain, s.dns_ttl)?
            .with_upstreams(s.dns_upstreams.clone(), s.dns_upstream_timeout);
        let dns_sockets = match &s.dns_listen {
            None => None,
            Some(a) => {
                let udp = tokio::net::UdpSocket::bind(a).await.with_context(|| {
                    format!("cannot listen on {a} (udp; use {} or off)", flags.dns)
                })?;
                let tcp = bind_tcp(&udp.local_addr()?.to_string(), "dns, tcp", flags.dns).await?;
                let own = udp.local_addr()?;
                if own.ip().is_unspecified() {
                    bail!(
                        "{} {a}: the DNS server answers with every app's internal addresses (and forwards with --dns-upstream), so it must not listen on every interface; give the agent's internal IP (e.g. {} 10.0.0.5:53), not a wildcard",
                        flags.dns,
                        flags.dns
                    );
                }
                if let Some(up) = s.dns_upstreams.iter().find(|u| **u == own) {
                    bail!(
                        "--dns-upstream {up} is this DNS server's own address: names outside the zone would loop"
                    );
                }
                Some((udp, tcp))
            }
        };
        let edge = match &s.edge_listen {
            None => None,
            Some(a) => Some(bind_tcp(a, "edge router", flags.edge).await?),
        };
        let internal = match &s.internal_listen {
            None => None,
            Some(a) => {
                let l = bind_tcp(a, "internal router", flags.internal).await?;
                refuse_unspecified(l.local_addr()?.ip(), flags.internal)?;
                Some(l)
            }
        };
        if let Some(ip) = s.internal_address {
            refuse_unspecified(ip, flags.internal_address)?;
        }
        let admin = match &load.admin_listen {
            None => None,
            Some(a) => Some(bind_tcp(a, "router admin: /health, /metrics", load.admin_flag).await?),
        };

        let domain = s.domain.trim_matches('.').to_string();
        let mut lines = vec![format!(
            "  endpoints  {}/v1/endpoints/watch  (router id {})",
            feed_cfg.services, s.router_id
        )];
        let report_cfg = feed_cfg.clone();
        let feed = Feed::start(feed_cfg);
        let router = Router::new(RoutesConfig {
            domain: domain.clone(),
            // Serving DNS: the drain ack waits one TTL after each version.
            dns_ttl: dns_sockets.as_ref().map(|_| s.dns_ttl),
            load: load.load,
            ..RoutesConfig::default()
        });
        let mut tasks = vec![tokio::spawn(
            router.clone().follow(feed.views(), feed.acks()),
        )];
        // Load reports (best effort, on their own task): only a router that
        // proxies measures anything.
        let proxies = edge.is_some() || internal.is_some() || s.internal_address.is_some();
        if load.reports && proxies {
            lines.push(format!(
                "  load       {}{} every 1s  (window {:?}; requests for apps scaled to zero held up to {:?}, {} per app port)",
                report_cfg.services,
                agora_router::load::report::LOAD_PATH,
                load.load.window,
                load.load.hold_timeout,
                load.load.hold_max,
            ));
            tasks.push(tokio::spawn(agora_router::load::report::run(
                router.clone(),
                report_cfg,
                ReportConfig::default(),
            )));
        }
        if let Some(l) = admin {
            let a = l.local_addr()?;
            lines.push(format!(
                "  admin      http://{a}/metrics  (and /health: requests, latency, held requests per app port)"
            ));
            tasks.push(tokio::spawn(agora_router::admin::serve(l, router.clone())));
        }
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let mut dns_addr = None;
        let dns_task = match dns_sockets {
            None => None,
            Some((udp, tcp)) => {
                let a = udp.local_addr()?;
                dns_addr = Some(a);
                lines.push(format!(
                    "  dns        {a} (udp+tcp), zone {}, ttl {}s  — try: dig @{} -p {} web.demo.{domain}",
                    dns_cfg.origin,
                    dns_cfg.ttl,
                    a.ip(),
                    a.port()
                ));
                lines.push(if dns_cfg.upstreams.is_empty() {
                    "             other names: refused (--dns-upstream forwards them)".to_string()
                } else {
                    let ups: Vec<String> =
                        dns_cfg.upstreams.iter().map(|u| u.to_string()).collect();
                    format!(
                        "             other names: forwarded to {} (timeout {:?})",
                        ups.join(", "),
                        dns_cfg.upstream_timeout
                    )
                });
                Some(tokio::spawn(agora_router::dns::serve(
                    udp,
                    tcp,
                    dns_cfg,
                    feed.views(),
                    async move {
                        let _ = stop_rx.wait_for(|s| *s).await;
                    },
                )))
            }
        };
        let mut edge_addr = None;
        if let Some(l) = edge {
            let a = l.local_addr()?;
            edge_addr = Some(a);
            lines.push(format!(
                "  edge       http://{a}  (ports labelled expose=public, by Host: vhost or web.demo.{domain}, and path)"
            ));
            let proxy = Proxy::new(
                router.clone(),
                ProxyConfig {
                    exposure: Exposure::Edge,
                    ..ProxyConfig::default()
                },
            );
            tasks.push(tokio::spawn(proxy.serve(l)));
        }
        let mut internal_addr = None;
        if let Some(l) = internal {
            let a = l.local_addr()?;
            internal_addr = Some(a);
            lines.push(format!(
                "  internal   http://{a}  (internal L7: every app by Host web.demo.{domain})"
            ));
            let proxy = Proxy::new(
                router.clone(),
                ProxyConfig {
                    exposure: Exposure::Internal,
                    ..ProxyConfig::default()
                },
            );
            tasks.push(tokio::spawn(proxy.serve(l)));
        }
        if let Some(ip) = s.internal_address {
            lines.push(format!(
                "  l4         {ip}:<servicePort>  (one TCP listener per app port with a servicePort)"
            ));
            let l4 = TcpRouter::new(
                router.clone(),
                TcpConfig {
                    address: ip,
                    ..TcpConfig::default()
                },
            );
            let mut bound = l4.bound();
            tasks.push(tokio::spawn(l4.run()));
            tasks.push(tokio::spawn(async move {
                while bound.changed().await.is_ok() {
                    let ports: Vec<String> =
                        bound.borrow_and_update().iter().map(u16::to_string).collect();
                    tracing::info!(address = %ip, ports = %ports.join(","), "L4 servicePort listeners");
                }
            }));
        }
        Ok(Routers {
            lines,
            dns: dns_addr,
            edge: edge_addr,
            internal: internal_addr,
            _feed: feed,
            dns_task,
            stop,
            tasks,
        })
    }

    /// Waits for the DNS server to fail (it only ends on an error); never
    /// returns when DNS is off.
    pub async fn failed(&mut self) -> Result<()> {
        match &mut self.dns_task {
            Some(t) => {
                let r = t.await;
                self.dns_task = None;
                r.context("DNS server task panicked")??;
                bail!("the DNS server stopped")
            }
            None => std::future::pending().await,
        }
    }

    /// Stops the servers (DNS within 2 s); connections being served are
    /// left to finish on their own.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(t) = self.dns_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

/// The flags that set each listener, for error messages.
pub struct Flags {
    pub dns: &'static str,
    pub edge: &'static str,
    pub internal: &'static str,
    pub internal_address: &'static str,
}

pub const ROUTER_FLAGS: Flags = Flags {
    dns: "--dns-listen",
    edge: "--edge-listen",
    internal: "--internal-listen",
    internal_address: "--internal-address",
};

/// Ctrl-C or SIGTERM, with the handlers installed at once: a signal that
/// comes after the addresses are printed but before the future is polled
/// is not lost (nor does it kill the process with the default action).
pub fn stop_signals() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// The router's token for the services API: `--token`/`AGORA_TOKEN`, else
/// `--token-file`/`AGORA_TOKEN_FILE` (as `agora services` takes its own).
fn router_token(
    token: Option<String>,
    token_file: Option<&std::path::Path>,
) -> Result<Option<BearerToken>> {
    let t = match token.filter(|t| !t.trim().is_empty()) {
        Some(t) => BearerToken::new(&t).context("AGORA_TOKEN / --token")?,
        None => match token_file {
            Some(f) => {
                let t = crate::context::read_token_file(f)?;
                BearerToken::new(t.expose())
                    .with_context(|| format!("the token file {}", f.display()))?
            }
            None => return Ok(None),
        },
    };
    Ok(Some(t))
}

pub async fn run(
    args: RouterArgs,
    token: Option<String>,
    token_file: Option<std::path::PathBuf>,
) -> Result<()> {
    // hickory-server logs every query at info.
    crate::util::init_logging(args.log_format, "info,hickory_server=warn");
    let router_id = args.router_id.clone().unwrap_or_else(default_router_id);
    let services_tls = args.tls_ca.as_deref().map(crate::tls::client).transpose()?;
    let token = router_token(token, token_file.as_deref())?;
    let services = crate::tls::url_for(&args.services, services_tls.is_some(), "--services")?;
    if token.is_some() && plain_remote(&services) {
        eprintln!(
            "warning: --services {services} is plain http to another host: the router's token goes in clear text (use https with --tls-ca)"
        );
    }
    let setup = RoutersSetup {
        services,
        services_tls,
        token,
        router_id: router_id.clone(),
        domain: args.domain.clone(),
        dns_ttl: args.dns_ttl,
        dns_upstreams: args.upstream.upstreams()?,
        dns_upstream_timeout: args.upstream.dns_upstream_timeout,
        dns_listen: listen_opt(&args.dns_listen),
        edge_listen: args.edge_listen.as_deref().and_then(listen_opt),
        internal_listen: args.internal_listen.as_deref().and_then(listen_opt),
        internal_address: args.internal_address,
    };
    let load = args.load.setup()?;
    let stop = stop_signals()?;
    let mut routers = Routers::start_with(setup, load, &ROUTER_FLAGS).await?;
    println!("agora router {router_id} is running (Ctrl-C to stop)");
    for l in &routers.lines {
        println!("{l}");
    }
    if routers.dns.is_none()
        && routers.edge.is_none()
        && routers.internal.is_none()
        && args.internal_address.is_none()
    {
        eprintln!(
            "nothing to serve: DNS is off and no --edge-listen, --internal-listen or --internal-address is given"
        );
    }
    let failed = tokio::select! {
        r = routers.failed() => Some(r),
        _ = stop => None,
    };
    if let Some(r) = failed {
        return r;
    }
    println!("stopping");
    routers.stop().await;
    Ok(())
}
