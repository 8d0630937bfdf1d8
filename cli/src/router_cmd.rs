//! `agora router`: the router daemon. It follows the services framework's
//! endpoint stream and serves the cluster's DNS zone from it (UDP and TCP).
//! The HTTP and TCP proxies join it here (see the `proxies` mark below).

use crate::util::{LogFormat, parse_duration};
use anyhow::{Context, Result};
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct RouterArgs {
    /// The services framework's API, whose endpoint stream feeds the router
    /// (`host:port` or `http://host:port`).
    #[arg(long, env = "AGORA_SERVICES", default_value = "http://127.0.0.1:8080")]
    pub services: String,
    /// Where the DNS server listens, UDP and TCP.
    #[arg(long, default_value = "127.0.0.1:8053")]
    pub dns_listen: String,
    /// The DNS zone: app `/demo/web` answers at `web.demo.<domain>`.
    #[arg(long, default_value = "agora")]
    pub domain: String,
    /// TTL of the DNS answers (whole seconds, e.g. 1s, 5s).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub dns_ttl: Duration,
    /// This router's id in the endpoint stream and its acks
    /// (default: the host name and the process id).
    #[arg(long)]
    pub router_id: Option<String>,
    /// Log format on stderr (AGORA_LOG sets the level, e.g. debug).
    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

pub fn default_router_id() -> String {
    format!("{}-{}", crate::agent_cmd::hostname(), std::process::id())
}

pub async fn run(args: RouterArgs) -> Result<()> {
    // hickory-server logs every query at info.
    crate::util::init_logging(args.log_format, "info,hickory_server=warn");
    let router_id = args.router_id.clone().unwrap_or_else(default_router_id);
    let feed_cfg = agora_router::feed::FeedConfig::new(&args.services, &router_id)?;
    let dns_cfg = agora_router::dns::DnsConfig::new(&args.domain, args.dns_ttl)?;
    let udp = tokio::net::UdpSocket::bind(&args.dns_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (udp; use --dns-listen)",
                args.dns_listen
            )
        })?;
    let tcp = tokio::net::TcpListener::bind(udp.local_addr()?)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (tcp; use --dns-listen)",
                args.dns_listen
            )
        })?;
    let dns_addr = udp.local_addr()?;
    eprintln!(
        "agora router {router_id}: endpoints from {}/v1/endpoints/watch",
        feed_cfg.services
    );
    eprintln!(
        "agora router: DNS zone {} on {dns_addr} (udp+tcp), ttl {}s — try: dig @{} -p {} web.demo.{}",
        dns_cfg.origin,
        dns_cfg.ttl,
        dns_addr.ip(),
        dns_addr.port(),
        args.domain.trim_matches('.')
    );
    let feed = agora_router::feed::Feed::start(feed_cfg);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let dns = tokio::spawn(agora_router::dns::serve(
        udp,
        tcp,
        dns_cfg,
        feed.views(),
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    // proxies: the edge and internal routers start here, from `feed.views()`,
    // acknowledging through `feed.ack(applied, drained)`.
    tokio::pin!(dns);
    tokio::select! {
        r = &mut dns => { r.context("DNS server task panicked")??; }
        _ = crate::util_signal::terminated() => {
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(2), dns).await;
        }
    }
    drop(feed);
    Ok(())
}
