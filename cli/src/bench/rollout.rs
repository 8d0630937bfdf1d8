//! `agora bench rollout`: steady HTTP load through the edge router while
//! the services framework restarts an app (a rolling replacement of every
//! instance), counting the requests that fail.
//!
//! In this process: a master (in memory), a Docker agent (host name
//! `127.0.0.1`, real containers of `agora-workload`, the images built with
//! `images/build.sh --if-missing` when the engine lacks them, like `agora
//! dev`), the services framework and a router stack (`agora router`'s,
//! a drain participant) serving the edge on an ephemeral loopback port.
//!
//! 1. Deploys `/bench/web`: `--instances` (3) containers, bridge
//!    networking, one port `http` labelled `expose=public`, an HTTP health
//!    check and a readiness check on `/health`; waits until every instance
//!    answers through the edge (`Host: web.bench.agora`).
//! 2. Starts `--concurrency` clients, each one keep-alive HTTP/1.1
//!    connection to the edge, sending `GET /sleep?ms=20` (the workload
//!    answers after `--request-ms`, so requests are in flight when an
//!    instance goes; `GET /` with 0) back to back. A request fails
//!    when it gets no response (connect, send or read error, 10 s timeout)
//!    or a non-2xx status. **No request is retried**; after a connection
//!    error the client opens a new connection for its next request.
//! 3. `POST /v2/apps/bench/web/restart` and waits until that deployment is
//!    gone from `/v2/deployments`; restarts again until at least
//!    `--min-requests` were made by the time a deployment finished.
//! 4. Stops the load, destroys the app, stops everything and removes the
//!    agent's containers — on errors and on Ctrl-C too.
//!
//! Exit status: 0 whatever `failed` is, unless `--strict` (then 1 when a
//! request failed); the figures are printed in every case.

use crate::http::http_send;
use anyhow::{Context, Result, bail, ensure};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct RolloutArgs {
    /// Instances of the app (each a container).
    #[arg(long, default_value_t = 3)]
    pub instances: u32,
    /// Clients, each one keep-alive HTTP/1.1 connection to the edge.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u32,
    /// Restart again until at least this many requests were made when a
    /// restart's deployment finishes.
    #[arg(long, default_value_t = 5000)]
    pub min_requests: u64,
    /// How long the workload takes to answer each request (`GET
    /// /sleep?ms=N`, no CPU), so that requests are in flight when an
    /// instance is killed; 0: `GET /` (answered at once).
    #[arg(long, default_value_t = 20)]
    pub request_ms: u32,
    /// The app's `drainSeconds` label (how long an old instance drains at
    /// most before it is killed). Default: the framework's (5 s). `0`
    /// kills old instances at once, without draining: the control run.
    #[arg(long)]
    pub drain_seconds: Option<u32>,
    /// Roll the app by changing a secret it uses (a new version put through
    /// the master's `/v1/secrets`, as `agora secret put` does) instead of
    /// `app restart`; after each rollout every instance must see the new
    /// value (`GET /hash?env=TOKEN` through the edge).
    #[arg(long)]
    pub secret: bool,
    /// The workload image (answers `GET /`, `GET /sleep` and `GET /health`).
    #[arg(long, default_value = "agora-workload:latest")]
    pub image: String,
    /// Give up (an error, after cleaning up) when the whole run takes longer.
    #[arg(long, value_parser = crate::util::parse_duration, default_value = "600s")]
    pub timeout: Duration,
    /// Exit with status 1 when a request failed (the figures are printed
    /// either way).
    #[arg(long)]
    pub strict: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

pub(super) const APP: &str = "/bench/web";
pub(super) const HOST: &str = "web.bench.agora";
/// Ports the agent offers (host ports of the containers).
const PORTS: u16 = 40;
/// One request (connect included) must be answered within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct error kinds reported.
const ERROR_KINDS: usize = 8;

/// What the clients counted.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) requests: AtomicU64,
    pub(super) failed: AtomicU64,
    /// Error kind → count (at most [`ERROR_KINDS`] kinds kept; the
    /// others only counted in `failed`).
    pub(super) errors: Mutex<BTreeMap<String, u64>>,
    /// Latency of each successful request, ms (one vector per client,
    /// merged at the end).
    pub(super) latencies: Mutex<Vec<f64>>,
}

impl Stats {
    pub(super) fn fail(&self, kind: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.contains_key(&kind) || e.len() < ERROR_KINDS {
            *e.entry(kind).or_default() += 1;
        }
    }
}

/// The figures of one run.
#[derive(Debug)]
struct Figures {
    requests: u64,
    failed: u64,
    restarts: usize,
    duration_s: f64,
    restart_s: Vec<f64>,
    errors: BTreeMap<String, u64>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

pub async fn run(args: RolloutArgs) -> Result<()> {
    ensure!(args.instances > 0, "--instances must be > 0");
    ensure!(args.concurrency > 0, "--concurrency must be > 0");
    let stack = EdgeStack::start("rollout", &args.image, args.instances as usize).await?;
    let master = stack.cluster.master.to_string();
    let outcome = match stack.edge() {
        Err(e) => Err(e),
        Ok(edge) => bounded(args.timeout, measure(&args, &stack.svc, edge, &master)).await,
    };
    eprintln!("cleaning up: destroying {APP}, stopping the cluster, removing its containers");
    destroy(&stack.svc).await;
    stack.stop().await;

    let f = outcome?;
    report(&args, &f);
    if args.strict && f.failed > 0 {
        bail!(
            "--strict: {} of {} requests failed during {} restart(s)",
            f.failed,
            f.requests,
            f.restarts
        );
    }
    Ok(())
}

/// What `bench rollout` and `bench autoscale` run in this process: a master
/// (in memory), a Docker agent (host name `127.0.0.1`, resources for
/// `instances` containers and a block of [`PORTS`] host ports), the
/// services framework, and a router stack (a drain participant posting
/// load reports) serving the edge on an ephemeral loopback port.
pub(super) struct EdgeStack {
    pub(super) cluster: super::LocalCluster,
    /// The services framework's REST API (`host:port`).
    pub(super) svc: String,
    /// Removes the agent's containers on every path (see [`ContainerGuard`]).
    guard: ContainerGuard,
    svc_stop: tokio::sync::watch::Sender<bool>,
    services: tokio::task::JoinHandle<()>,
    routers: Result<crate::router_cmd::Routers>,
}

impl EdgeStack {
    /// `bench`: the bench's name (work dir, router id, messages).
    pub(super) async fn start(bench: &str, image: &str, instances: usize) -> Result<EdgeStack> {
        ensure!(
            agora_agent::docker::DockerRuntime::available().await,
            "the Docker engine does not answer: bench {bench} runs real containers (start dockerd, or check DOCKER_HOST)"
        );
        crate::dev::demo_images(image).await;
        let missing = agora_agent::docker::DockerRuntime::missing_images(&[image]).await;
        ensure!(
            missing.is_empty(),
            "image {image} is not on this engine (nothing is pulled): run `bash images/build.sh`"
        );
        let lo = port_block()?;
        let resources = format!(
            "cpus:{};mem:{};ports:[{lo}-{}]",
            instances as f64 * 0.2 + 1.0,
            instances * 64 + 256,
            lo + PORTS - 1
        );
        let cluster = super::LocalCluster::start_with(
            bench,
            resources,
            image,
            crate::agent_cmd::RuntimeKind::Docker,
            "127.0.0.1",
        )
        .await?;
        // If this process unwinds before `cluster.stop()`, the containers
        // are removed by the engine's CLI (same scope label as the agent's).
        let guard = ContainerGuard {
            scope: cluster.work.join("agent").display().to_string(),
        };
        let svc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let svc = svc_listener.local_addr()?.to_string();
        let (svc_stop, svc_stop_rx) = tokio::sync::watch::channel(false);
        let scfg = crate::services_cmd::config(
            &cluster.master.to_string(),
            cluster.work.join("services"),
            "*",
        );
        let services = tokio::spawn(async move {
            if let Err(e) = agora_services::serve(svc_listener, scfg, svc_stop_rx).await {
                eprintln!("the services framework stopped: {e:#}");
            }
        });
        let routers = crate::router_cmd::Routers::start(
            crate::router_cmd::RoutersSetup {
                services: svc.clone(),
                router_id: format!("bench-{bench}-{}", std::process::id()),
                domain: "agora".into(),
                dns_ttl: Duration::from_secs(1),
                dns_upstreams: Vec::new(),
                dns_upstream_timeout: agora_router::dns::DEFAULT_UPSTREAM_TIMEOUT,
                dns_listen: None,
                edge_listen: Some("127.0.0.1:0".into()),
                internal_listen: None,
                internal_address: None,
                services_tls: None,
                token: None,
            },
            &crate::router_cmd::ROUTER_FLAGS,
        )
        .await;
        Ok(EdgeStack {
            cluster,
            svc,
            guard,
            svc_stop,
            services,
            routers,
        })
    }

    /// The edge router's address (an error when the routers did not start).
    pub(super) fn edge(&self) -> Result<SocketAddr> {
        match &self.routers {
            Err(e) => Err(anyhow::anyhow!("starting the edge router: {e:#}")),
            Ok(r) => r
                .edge
                .ok_or_else(|| anyhow::anyhow!("the edge router has no address")),
        }
    }

    /// Stops the routers, the framework and the cluster, and removes the
    /// agent's containers (the label sweep runs on every path: a container
    /// created by a launch still in flight when the agent stopped would
    /// otherwise be left).
    pub(super) async fn stop(self) {
        if let Ok(r) = self.routers {
            r.stop().await;
        }
        let _ = self.svc_stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.services).await;
        self.cluster.stop().await;
        drop(self.guard);
    }
}

/// Runs `measure` until `timeout`, or until Ctrl-C/SIGTERM (an error then).
pub(super) async fn bounded<T>(
    timeout: Duration,
    measure: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = tokio::time::timeout(timeout, measure) => match r {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("the bench did not finish within --timeout {timeout:?}")),
        },
        _ = crate::util_signal::terminated() => Err(anyhow::anyhow!("interrupted (Ctrl-C or SIGTERM)")),
    }
}

/// Removes the agent's containers with the docker CLI when dropped: after
/// the cluster stopped, and on a panic between start and stop.
struct ContainerGuard {
    scope: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let filter = format!("label={}={}", agora_agent::docker::LABEL_SCOPE, self.scope);
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// A block of `PORTS` consecutive loopback ports free now (the agent's
/// range; the engine binds them for the containers).
fn port_block() -> Result<u16> {
    let seed = std::process::id();
    for attempt in 0..200u32 {
        let lo = 32000 + ((seed.wrapping_add(attempt * 7919)) % 150) as u16 * 50;
        let free = (lo..lo + PORTS).all(|p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok());
        if free {
            return Ok(lo);
        }
    }
    bail!("no block of {PORTS} free ports between 32000 and 39999")
}

/// The app: bridge networking, the workload's 8080 on a host port,
/// published at the edge; health and readiness on `/health`.
fn app(args: &RolloutArgs) -> Value {
    let mut app = json!({
        "id": APP, "instances": args.instances, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": args.image},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http",
                "labels": {"expose": "public"}}]},
        "networks": [{"mode": "container/bridge"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 30, "intervalSeconds": 0.5, "timeoutSeconds": 1,
            "maxConsecutiveFailures": 3}],
        "readinessChecks": [{"name": "ready", "protocol": "HTTP", "path": "/health",
            "portName": "http", "intervalSeconds": 0.2, "timeoutSeconds": 1}]
    });
    if let Some(d) = args.drain_seconds {
        app["labels"] = json!({"drainSeconds": d.to_string()});
    }
    if args.secret {
        app["secrets"] = json!({"tok": {"source": SECRET}});
        app["env"] = json!({"TOKEN": {"secret": "tok"}});
    }
    app
}

/// The secret `--secret` changes.
const SECRET: &str = "/bench/rollout/token";

/// Puts round `n`'s value of [`SECRET`] (rollout requested); returns the
/// SHA-256 (hex) instances must report for it.
async fn put_secret(master: &str, n: u32) -> Result<String> {
    let value = format!("round-{n}-{}", uuid::Uuid::new_v4().simple());
    let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let (code, body) = crate::http::http_send_raw(
        "PUT",
        master,
        &format!("/v1/secrets{SECRET}"),
        value.into_bytes(),
    )
    .await?;
    ensure!(code == 200, "putting {SECRET} answered {code}: {body}");
    Ok(hash)
}

/// The ids of the app's deployments now.
async fn deployments_of_app(svc: &str) -> Result<Vec<String>> {
    let (code, body) = http_send("GET", svc, "/v2/deployments", None).await?;
    ensure!(code == 200, "GET /v2/deployments answered {code}: {body}");
    let v: Value = serde_json::from_str(&body).context("/v2/deployments")?;
    Ok(v.as_array()
        .map(|ds| {
            ds.iter()
                .filter_map(|d| d["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// The deployment the secret's new version started (the framework polls
/// the master's versions every second).
async fn new_deployment(svc: &str, before: &[String]) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(id) = deployments_of_app(svc)
            .await?
            .into_iter()
            .find(|d| !before.contains(d))
        {
            return Ok(id);
        }
        ensure!(
            Instant::now() < deadline,
            "no deployment of {APP} within 30 s of putting a new version of {SECRET}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After the rollout, every instance answers with the new value's hash
/// (asked through the edge, enough times to reach each instance).
async fn every_instance_sees(args: &RolloutArgs, edge: SocketAddr, hash: &str) -> Result<()> {
    let mut sender = None;
    for _ in 0..(4 * args.instances) {
        let got = get(edge, "/hash?env=TOKEN", &mut sender)
            .await
            .map_err(|e| anyhow::anyhow!("GET /hash?env=TOKEN through the edge: {e}"))?;
        ensure!(
            got.trim() == hash,
            "an instance reports {} after the rollout, not the new value's hash {hash}",
            got.trim()
        );
    }
    Ok(())
}

/// What the clients ask for.
fn request_path(args: &RolloutArgs) -> String {
    match args.request_ms {
        0 => "/".into(),
        ms => format!("/sleep?ms={ms}"),
    }
}

async fn measure(args: &RolloutArgs, svc: &str, edge: SocketAddr, master: &str) -> Result<Figures> {
    let t = Instant::now();
    while !matches!(http_send("GET", svc, "/v1/info", None).await, Ok((200, ref b)) if b.contains("\"connected\":true"))
    {
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the services framework did not connect to the master within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut secret_round = 0;
    if args.secret {
        put_secret(master, secret_round).await?;
    }
    let (code, body) = http_send("POST", svc, "/v2/apps", Some(&app(args).to_string())).await?;
    ensure!(code == 201, "creating {APP} answered {code}: {body}");
    let t = Instant::now();
    serving_through_edge(args, svc, edge).await?;
    eprintln!(
        "{} instances of {APP} serve through the edge ({edge}) after {:.1} s",
        args.instances,
        t.elapsed().as_secs_f64()
    );

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Dropped (and so aborted) with this future, on errors and Ctrl-C too.
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        clients.spawn(client(
            edge,
            request_path(args),
            stats.clone(),
            stop.clone(),
        ));
    }
    let t_load = Instant::now();
    let mut restart_s = Vec::new();
    loop {
        let t = Instant::now();
        let id = if args.secret {
            secret_round += 1;
            let before = deployments_of_app(svc).await?;
            let hash = put_secret(master, secret_round).await?;
            let id = new_deployment(svc, &before).await?;
            wait_deployment(svc, &id).await?;
            every_instance_sees(args, edge, &hash).await?;
            id
        } else {
            let id = restart(svc).await?;
            wait_deployment(svc, &id).await?;
            id
        };
        let s = t.elapsed().as_secs_f64();
        restart_s.push(s);
        let made = stats.requests.load(Ordering::Relaxed);
        eprintln!(
            "{} {}: deployment {id} finished in {s:.2} s; {made} requests so far, {} failed",
            if args.secret {
                "secret rollout"
            } else {
                "restart"
            },
            restart_s.len(),
            stats.failed.load(Ordering::Relaxed)
        );
        if made >= args.min_requests {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Requests in flight finish (each within REQUEST_TIMEOUT).
    while clients.join_next().await.is_some() {}
    let duration_s = t_load.elapsed().as_secs_f64();
    let mut lat = std::mem::take(&mut *stats.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    let q = super::quantile;
    Ok(Figures {
        requests: stats.requests.load(Ordering::Relaxed),
        failed: stats.failed.load(Ordering::Relaxed),
        restarts: restart_s.len(),
        duration_s,
        restart_s,
        errors: std::mem::take(&mut *stats.errors.lock().unwrap_or_else(|p| p.into_inner())),
        p50_ms: q(&mut lat, 0.5),
        p99_ms: q(&mut lat, 0.99),
        max_ms: q(&mut lat, 1.0),
    })
}

/// Waits until the framework reports every instance healthy and each one
/// has answered a request through the edge.
async fn serving_through_edge(args: &RolloutArgs, svc: &str, edge: SocketAddr) -> Result<()> {
    let n = u64::from(args.instances);
    let deadline = Instant::now() + Duration::from_secs(180);
    let path = format!("/v1/apps{APP}");
    loop {
        let (_, body) = http_send("GET", svc, &path, None).await?;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if v["app"]["tasksHealthy"].as_u64() == Some(n) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{APP} not healthy after 180 s: {}",
            v["app"]["waiting"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut sender = None;
    let mut last = String::new();
    while (seen.len() as u64) < n {
        ensure!(
            Instant::now() < deadline,
            "through the edge, only {} of {n} instances answered within 180 s (last: {last})",
            seen.len()
        );
        match get(edge, &request_path(args), &mut sender).await {
            Ok(body) => {
                if let Some(task) = body
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("task="))
                {
                    seen.insert(task.to_string());
                }
            }
            // The workload's own 404 (the router's says "no route").
            Err(e) if e == "status 404: not found" => bail!(
                "{} answers 404 to {}: the image predates GET /sleep; rebuild it with `bash images/build.sh` (or use --request-ms 0)",
                args.image,
                request_path(args)
            ),
            Err(e) => {
                last = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

/// One load client: requests back to back on one keep-alive connection
/// until `stop`; never retries a request.
async fn client(edge: SocketAddr, path: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut sender = None;
    let mut lat = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let r = get(edge, &path, &mut sender).await;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
            Err(kind) => {
                stats.fail(kind);
                // A refused connect would otherwise spin.
                if sender.is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    stats
        .latencies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(lat);
}

pub(super) type Sender = SendRequest<Empty<Bytes>>;

/// Opens a connection to the edge (HTTP/1.1, Nagle off).
async fn connect(edge: SocketAddr) -> Result<Sender, String> {
    let s = tokio::net::TcpStream::connect(edge)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = s.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `GET path` with `Host: web.bench.agora` through the edge on `sender` (a
/// new connection when there is none or it was closed): the body of a 2xx
/// answer, or the kind of failure (the connection is then dropped).
pub(super) async fn get(
    edge: SocketAddr,
    path: &str,
    sender: &mut Option<Sender>,
) -> Result<String, String> {
    let r = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut s = match sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => connect(edge).await?,
        };
        s.ready().await.map_err(|e| format!("connection: {e}"))?;
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, HOST)
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let resp = s
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "status {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body).trim()
            ));
        }
        *sender = Some(s);
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
    .await;
    match r {
        Ok(r) => r,
        Err(_) => {
            *sender = None;
            Err(format!("no answer within {REQUEST_TIMEOUT:?}"))
        }
    }
}

/// `POST /v2/apps/bench/web/restart`: the deployment's id.
async fn restart(svc: &str) -> Result<String> {
    let (code, body) = http_send("POST", svc, &format!("/v2/apps{APP}/restart"), None).await?;
    ensure!(code == 200, "restarting {APP} answered {code}: {body}");
    let v: Value = serde_json::from_str(&body).context("the restart's answer")?;
    v["deploymentId"]
        .as_str()
        .map(String::from)
        .with_context(|| format!("the restart's answer has no deploymentId: {body}"))
}

/// Waits until deployment `id` is no longer listed (finished).
async fn wait_deployment(svc: &str, id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, body) = http_send("GET", svc, "/v2/deployments", None).await?;
        ensure!(code == 200, "GET /v2/deployments answered {code}: {body}");
        let v: Value = serde_json::from_str(&body).context("/v2/deployments")?;
        let running = v
            .as_array()
            .is_some_and(|ds| ds.iter().any(|d| d["id"] == id));
        if !running {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "deployment {id} still running after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Destroys the app and waits (at most 30 s) until its instances are gone.
pub(super) async fn destroy(svc: &str) {
    let path = format!("/v2/apps{APP}");
    if !matches!(http_send("DELETE", svc, &path, None).await, Ok((200, _))) {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match http_send("GET", svc, &path, None).await {
            Ok((404, _)) | Err(_) => return,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn report(args: &RolloutArgs, f: &Figures) {
    let rps = f.requests as f64 / f.duration_s.max(1e-9);
    let restart_s: Vec<String> = f.restart_s.iter().map(|s| format!("{s:.2}")).collect();
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    let rows = [
        ("requests", f.requests.to_string()),
        ("failed", format!("{} (goal 0)", f.failed)),
        ("restarts", f.restarts.to_string()),
        ("restart_s", restart_s.join(", ")),
        ("duration_s", format!("{:.2}", f.duration_s)),
        ("rps", format!("{rps:.0}")),
        (
            "latency_ms",
            format!(
                "p50 {:.2}, p99 {:.2}, max {:.2}",
                f.p50_ms, f.p99_ms, f.max_ms
            ),
        ),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    for (kind, count) in &f.errors {
        t.add_row(vec!["error".to_string(), format!("{count} × {kind}")]);
    }
    let drain = match args.drain_seconds {
        Some(d) => format!("drainSeconds {d}"),
        None => "drainSeconds default (5)".into(),
    };
    eprintln!(
        "rollout: {} instances, {} clients through the edge router ({} ms per request), `app restart` × {}, {drain}",
        args.instances, args.concurrency, args.request_ms, f.restarts
    );
    eprintln!("{t}");
    if args.json {
        let errors: Vec<Value> = f
            .errors
            .iter()
            .map(|(k, c)| json!({"kind": k, "count": c}))
            .collect();
        println!(
            "{}",
            json!({"bench": "rollout", "instances": args.instances, "concurrency": args.concurrency,
                "request_ms": args.request_ms, "drain_seconds": args.drain_seconds,
                "requests": f.requests, "failed": f.failed, "restarts": f.restarts,
                "duration_s": f.duration_s, "rps": rps, "restart_s": f.restart_s,
                "latency_ms_p50": f.p50_ms, "latency_ms_p99": f.p99_ms, "latency_ms_max": f.max_ms,
                "errors": errors, "goal_failed": 0})
        );
    }
}
