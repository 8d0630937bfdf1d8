//! `agora bench discovery`: how fast a health change reaches the DNS answer
//! and a router's endpoint view.
//!
//! In this process: a master, a hollow agent (host name `127.0.0.1`), the
//! services framework, a router's feed (`agora_router::feed`, a drain
//! participant) and the DNS server (`agora_router::dns`) on an ephemeral
//! loopback port. The app `/bench/web` has 2 instances, one port named
//! `http` and an HTTP health check probed by the agent every 100 ms against
//! a health target this bench serves on every port of the agent's range.
//!
//! One pair of changes:
//! 1. removal: the bench turns one serving instance's port unhealthy; the
//!    change starts when the target **answers the agent's probe with 503**
//!    (the agent reports unhealthy after that one failure); it ends when the
//!    SRV answer of `_http._tcp.web.bench.agora` no longer holds the port
//!    (DNS) and when the feed's view no longer lists the task as serving;
//! 2. addition: the framework kills the unhealthy instance and launches a
//!    replacement; the change starts when the target **answers the new
//!    instance's first probe with 200** and ends when its port is in the SRV
//!    answer (DNS) and the task is serving in the view.
//!
//! DNS is asked over UDP every 2 ms, so a figure is late by at most that.

use crate::http::http_send;
use agora_core::endpoints::{EndpointKey, View};
use anyhow::{Context, Result, bail, ensure};
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RData, RecordType};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

#[derive(clap::Args, Debug, Clone)]
pub struct DiscoveryArgs {
    /// Health changes to time (half removals, half additions).
    #[arg(long, default_value_t = 100)]
    pub changes: u32,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

const APP: &str = "/bench/web";
const SRV: &str = "_http._tcp.web.bench.agora.";
/// Ports of the hollow agent (each answered by the health target).
const PORTS: u16 = 8;
/// One pair of changes must be over within this.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
const FROM: &str = "the health target's answer to the agent's probe that changes the verdict (503: removal; 200 to a new instance's first probe: addition)";

/// One port of the health target: its verdict and when it first answered
/// 503 / 200 since it was last armed.
#[derive(Default)]
struct PortState {
    failing: bool,
    first_fail: Option<Instant>,
    first_ok: Option<Instant>,
}

type Target = Arc<Mutex<HashMap<u16, PortState>>>;

fn lock(t: &Target) -> std::sync::MutexGuard<'_, HashMap<u16, PortState>> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn run(args: DiscoveryArgs) -> Result<()> {
    ensure!(args.changes > 0, "--changes must be > 0");
    let (listeners, lo) = port_block().await?;
    let target: Target = Arc::new(Mutex::new(
        (lo..lo + PORTS)
            .map(|p| (p, PortState::default()))
            .collect(),
    ));
    let mut serve_tasks = Vec::new();
    for l in listeners {
        serve_tasks.push(tokio::spawn(health_target(l, target.clone())));
    }
    let resources = format!("cpus:4;mem:4096;ports:[{lo}-{}]", lo + PORTS - 1);
    let cluster = super::LocalCluster::start_with(
        "discovery",
        resources,
        "unused",
        crate::agent_cmd::RuntimeKind::Hollow,
        "127.0.0.1",
    )
    .await?;
    let svc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let svc = svc_listener.local_addr()?.to_string();
    let (stop_tx, stop) = watch::channel(false);
    let scfg = crate::services_cmd::config(
        &cluster.master.to_string(),
        cluster.work.join("services"),
        "*",
    );
    tokio::spawn(agora_services::serve(svc_listener, scfg, stop));
    let result = measure(&args, &svc, &target).await;
    let _ = stop_tx.send(true);
    cluster.stop().await;
    for t in serve_tasks {
        t.abort();
    }
    let (dns, view) = result?;
    report(&args, dns, view);
    Ok(())
}

fn report(args: &DiscoveryArgs, mut dns: Vec<f64>, mut view: Vec<f64>) {
    let q = super::quantile;
    let n = dns.len();
    let (d50, d99, dmax) = (q(&mut dns, 0.5), q(&mut dns, 0.99), q(&mut dns, 1.0));
    let (v50, v99) = (q(&mut view, 0.5), q(&mut view, 0.99));
    eprintln!(
        "discovery, {n} health changes: DNS answer p50 {d50:.1} ms, p99 {d99:.1} ms (max {dmax:.1}); router view p50 {v50:.1} ms, p99 {v99:.1} ms (goal: DNS p99 ≤ 100 ms; Mesos-DNS polls every 60 s); from {FROM}"
    );
    if args.json {
        println!(
            "{}",
            json!({"bench": "discovery", "changes": n, "from": FROM,
                "propagation_ms_p50": d50, "propagation_ms_p99": d99, "propagation_ms_max": dmax,
                "view_ms_p50": v50, "view_ms_p99": v99, "goal_p99_ms": 100})
        );
    }
}

/// `PORTS` consecutive loopback ports, all bound here (the health target).
async fn port_block() -> Result<(Vec<tokio::net::TcpListener>, u16)> {
    let seed = std::process::id();
    for attempt in 0..200u32 {
        let lo = 21000 + ((seed.wrapping_add(attempt * 7919)) % 1000) as u16 * 10;
        let mut ls = Vec::new();
        for p in lo..lo + PORTS {
            match tokio::net::TcpListener::bind(("127.0.0.1", p)).await {
                Ok(l) => ls.push(l),
                Err(_) => break,
            }
        }
        if ls.len() == PORTS as usize {
            return Ok((ls, lo));
        }
    }
    bail!("no block of {PORTS} free loopback ports")
}

/// Answers every request on one port with 200 or 503 (its verdict) and
/// records the first answer of each kind since the port was armed.
async fn health_target(l: tokio::net::TcpListener, target: Target) {
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            // Out of descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = 0;
            while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") && got < buf.len() {
                match s.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            let failing = {
                let mut t = lock(&target);
                let st = t.entry(port).or_default();
                let now = Some(Instant::now());
                if st.failing {
                    st.first_fail = st.first_fail.or(now);
                } else {
                    st.first_ok = st.first_ok.or(now);
                }
                st.failing
            };
            let status = if failing {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let head =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = s.write_all(head.as_bytes()).await;
        });
    }
}

/// One DNS query over UDP; the SRV answer's ports.
async fn srv_ports(
    sock: &tokio::net::UdpSocket,
    server: SocketAddr,
    id: u16,
) -> Result<BTreeSet<u16>> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(Name::from_ascii(SRV)?, RecordType::SRV));
    sock.send_to(&m.to_vec()?, server).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
            .await
            .context("no DNS answer within 2 s")??;
        let reply = Message::from_vec(&buf[..n])?;
        if reply.metadata.id != id {
            continue; // a late answer to an earlier query
        }
        return Ok(reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.port),
                _ => None,
            })
            .collect());
    }
}

/// The serving (task id, port) of the app's port 0 in `v`.
fn serving(v: &View) -> Vec<(String, u16)> {
    let key = EndpointKey {
        app_id: APP.into(),
        port_index: 0,
    };
    v.get(&key)
        .map(|s| {
            s.serving()
                .map(|e| (e.task_id.clone(), e.port as u16))
                .collect()
        })
        .unwrap_or_default()
}

/// When the DNS answer lost `gone`, then held two ports again.
async fn watch_dns(server: SocketAddr, gone: u16) -> Result<(Instant, Instant, BTreeSet<u16>)> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut id = 1u16;
    let mut removed = None;
    loop {
        id = id.wrapping_add(1);
        let ports = srv_ports(&sock, server, id).await?;
        let now = Instant::now();
        match removed {
            None if !ports.contains(&gone) => removed = Some(now),
            Some(r) if ports.len() == 2 => return Ok((r, now, ports)),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// When the view stopped listing `task` as serving, then listed a new
/// serving task (returned with its port).
async fn watch_view(
    mut views: watch::Receiver<Arc<View>>,
    task: String,
    before: Vec<String>,
) -> Result<(Instant, Instant, u16)> {
    let mut removed = None;
    loop {
        let s = serving(&views.borrow_and_update());
        let now = Instant::now();
        if removed.is_none() && !s.iter().any(|(t, _)| *t == task) {
            removed = Some(now);
        }
        if let Some(r) = removed
            && let Some((_, port)) = s.iter().find(|(t, _)| !before.contains(t))
        {
            return Ok((r, now, *port));
        }
        views.changed().await.context("the feed stopped")?;
    }
}

/// Whether the framework still knows task `id` (it forgets it once ended).
async fn task_known(svc: &str, id: &str) -> Result<bool> {
    let (code, body) = http_send("GET", svc, "/v1/apps/bench/web", None).await?;
    ensure!(
        code == 200,
        "GET /v1/apps/bench/web answered {code}: {body}"
    );
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v["app"]["tasks"]
        .as_array()
        .is_some_and(|ts| ts.iter().any(|t| t["id"] == id)))
}

async fn measure(args: &DiscoveryArgs, svc: &str, target: &Target) -> Result<(Vec<f64>, Vec<f64>)> {
    let t = Instant::now();
    while !matches!(http_send("GET", svc, "/v1/info", None).await, Ok((200, ref b)) if b.contains("\"connected\":true"))
    {
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the services framework did not connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let feed = agora_router::feed::Feed::start(agora_router::feed::FeedConfig::new(
        svc,
        "bench-discovery",
    )?);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dns = udp.local_addr()?;
    let (dns_stop, dns_stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = agora_router::dns::DnsConfig::new("agora", Duration::from_secs(1))?;
    let dns_task = tokio::spawn(agora_router::dns::serve(
        udp,
        tcp,
        cfg,
        feed.views(),
        async {
            let _ = dns_stopped.await;
        },
    ));
    let app = json!({
        "id": APP, "cmd": "serve", "instances": 2, "cpus": 0.1, "mem": 16,
        "portDefinitions": [{"port": 0, "name": "http"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 0, "intervalSeconds": 0.1, "timeoutSeconds": 1,
            "maxConsecutiveFailures": 1}]
    });
    let (code, body) = http_send("POST", svc, "/v2/apps", Some(&app.to_string())).await?;
    ensure!(code == 201, "creating the app answered {code}: {body}");
    let result = pairs(args, svc, target, &feed, dns).await;
    let _ = dns_stop.send(());
    let _ = dns_task.await;
    result
}

async fn pairs(
    args: &DiscoveryArgs,
    svc: &str,
    target: &Target,
    feed: &agora_router::feed::Feed,
    dns: SocketAddr,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let ms = |a: Instant, b: Option<Instant>| {
        b.map(|b| a.saturating_duration_since(b).as_secs_f64() * 1000.0)
    };
    let (mut dns_ms, mut view_ms) = (Vec::new(), Vec::new());
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut views = feed.views();
    for pair in 0..args.changes.div_ceil(2) {
        // Steady state: two instances serving, in the view and in DNS.
        let t = Instant::now();
        let now = loop {
            let s = serving(&views.borrow_and_update());
            let ports = srv_ports(&sock, dns, pair as u16).await.unwrap_or_default();
            if s.len() == 2 && ports.len() == 2 {
                break s;
            }
            ensure!(
                t.elapsed() < PAIR_TIMEOUT,
                "no steady state of 2 serving instances (view {s:?}, DNS {ports:?})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let (task, port) = now[0].clone();
        let before: Vec<String> = now.iter().map(|(t, _)| t.clone()).collect();
        let dns_w = tokio::spawn(watch_dns(dns, port));
        let view_w = tokio::spawn(watch_view(feed.views(), task.clone(), before));
        {
            let mut t = lock(target);
            let st = t.entry(port).or_default();
            st.failing = true;
            st.first_fail = None;
        }
        // Re-arm the port once the old task is gone, so that its probes
        // cannot be taken for a new instance's.
        let t = Instant::now();
        while task_known(svc, &task).await? {
            ensure!(t.elapsed() < PAIR_TIMEOUT, "task {task} was not replaced");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        {
            let mut t = lock(target);
            let st = t.entry(port).or_default();
            st.failing = false;
            st.first_ok = None;
        }
        let (dns_abort, view_abort) = (dns_w.abort_handle(), view_w.abort_handle());
        let watched = tokio::time::timeout(PAIR_TIMEOUT, async {
            Ok::<_, anyhow::Error>((dns_w.await??, view_w.await??))
        })
        .await
        .context("a change did not propagate within 30 s")
        .and_then(|r| r);
        dns_abort.abort();
        view_abort.abort();
        let ((d_rm, d_add, ports), (v_rm, v_add, new_port)) = watched?;
        ensure!(
            ports.contains(&new_port),
            "DNS {ports:?} lacks the new port {new_port}"
        );
        let (fail_at, ok_at) = {
            let t = lock(target);
            (
                t.get(&port).and_then(|s| s.first_fail),
                t.get(&new_port).and_then(|s| s.first_ok),
            )
        };
        let (Some(rm_d), Some(rm_v), Some(add_d), Some(add_v)) = (
            ms(d_rm, fail_at),
            ms(v_rm, fail_at),
            ms(d_add, ok_at),
            ms(v_add, ok_at),
        ) else {
            bail!("change {pair}: the health target saw no probe of port {port} or {new_port}");
        };
        dns_ms.extend([rm_d, add_d]);
        view_ms.extend([rm_v, add_v]);
    }
    dns_ms.truncate(args.changes as usize);
    view_ms.truncate(args.changes as usize);
    Ok((dns_ms, view_ms))
}
