//! `agora bench autoscale`: a load step through the edge router against an
//! app with an rps target, then steady noisy load, the load stopping, and a
//! cold start from zero instances.
//!
//! In this process, as `bench rollout`: a master (in memory), a Docker
//! agent (real containers of `agora-workload`), the services framework and
//! a router stack serving the edge on an ephemeral loopback port (it posts
//! load reports to the framework every second, as `agora router` does).
//!
//! 1. Deploys `/bench/web` with one instance (health and readiness checks
//!    on `/health`, published at the edge). Scales it to two by hand and
//!    back, timing the new instance from the scale to TASK_RUNNING
//!    (`launch_to_running_s`) and to serving (`launch_to_serving_s`); the
//!    cold-start goal is 1.5 × (`launch_to_running_s` + the app's 0.5 s
//!    health interval). Then puts the policy: `min 1`, `max
//!    --max`, `rps --rps-target` per instance, scale-down window
//!    `--scale-down-window`.
//! 2. Light load (`--rps-target` ÷ 2) for `--baseline`: nothing may change.
//! 3. The step: `--rps` requests per second (`GET /sleep?ms=--request-ms`,
//!    paced open-loop over `--workers` keep-alive connections).
//!    `decision_s`: step → the first decision to scale up (the framework's
//!    `lastDecision`). `capacity_s`: step → every instance the autoscaler
//!    wants serving (healthy, ready, in the endpoint sets the router
//!    follows).
//! 4. Steady load at `--rps` with ±10 % noise (a new factor every second)
//!    for `--steady`. `flaps`: direction changes of the instance count from
//!    the step to the end of the steady phase (up then down, or down then
//!    up); `steady_changes`: any change of the count during the steady
//!    phase.
//! 5. The load stops: `scale_down_s` is the time until the app is back at
//!    one instance (the window plus the drain).
//! 6. The policy is put again with `min 0` and `idleAfterSeconds
//!    --idle-after`; once no instance is left, one `GET /` through the edge:
//!    `cold_start_s` is that request's time to its 200 (the router holds it
//!    while the framework wakes the app).
//!
//! Every request counts: `failed` is any request without a 2xx answer (no
//! retries). Exit status 0 whatever the figures, unless `--strict`: then
//! 1 when a request failed, `flaps` or `steady_changes` is not 0, fewer
//! instances answered under steady load than the autoscaler started
//! (`instances_answering_steady`: the traffic spread to the new ones), the
//! steady p95 latency the clients saw is above the policy's `latencyP95`
//! target (`--latency-p95-target`), or the cold start did not answer 200. The timing goals (`decision_s` ≤ 3,
//! `cold_start_s` ≤ 1.5 × (`launch_to_running_s` + 0.5 s)) are reported, not
//! enforced: a loaded CI machine is no place for timed assertions. The
//! timeline (one point a second: offered load, instances, ready, the rps
//! per instance the framework computed) is in the JSON.

use super::rollout::{APP, EdgeStack, Stats, bounded, destroy, get};
use crate::http::http_send;
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct AutoscaleArgs {
    /// Offered load after the step, requests per second (open loop).
    #[arg(long, default_value_t = 50.0)]
    pub rps: f64,
    /// The policy's target: requests per second per instance.
    #[arg(long, default_value_t = 20.0)]
    pub rps_target: f64,
    /// The policy's `max`.
    #[arg(long, default_value_t = 5)]
    pub max: u32,
    /// The policy's second target: latency p95 at the routers (ms). Under
    /// steady load the p95 the clients see must be below it (--strict).
    #[arg(long, default_value_t = 250.0)]
    pub latency_p95_target: f64,
    /// How long each request takes at the workload (`GET /sleep?ms=N`).
    #[arg(long, default_value_t = 20)]
    pub request_ms: u32,
    /// Keep-alive connections the paced requests are sent over.
    #[arg(long, default_value_t = 32)]
    pub workers: u32,
    /// Light load (half the target) before the step.
    #[arg(long, value_parser = crate::util::parse_duration, default_value = "10s")]
    pub baseline: Duration,
    /// Steady noisy load once the capacity is there.
    #[arg(long, value_parser = crate::util::parse_duration, default_value = "60s")]
    pub steady: Duration,
    /// The policy's scale-down stabilisation window (the default policy's
    /// is 300 s; shorter here so that a run takes minutes).
    #[arg(long, value_parser = crate::util::parse_duration, default_value = "20s")]
    pub scale_down_window: Duration,
    /// The policy's `idleAfterSeconds` for the scale-to-zero phase.
    #[arg(long, value_parser = crate::util::parse_duration, default_value = "5s")]
    pub idle_after: Duration,
    /// Seed of the load noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The workload image (answers `GET /`, `GET /sleep`, `GET /health`).
    #[arg(long, default_value = "agora-workload:latest")]
    pub image: String,
    /// Give up (an error, after cleaning up) when the whole run takes longer.
    #[arg(long, value_parser = crate::util::parse_duration, default_value = "900s")]
    pub timeout: Duration,
    /// Exit with status 1 when a request failed, the count flapped or
    /// changed under steady load, the traffic did not reach every instance,
    /// the steady p95 latency was above the target, or the cold start
    /// failed.
    #[arg(long)]
    pub strict: bool,
    /// Print one JSON object (the figures and the timeline) as the last line.
    #[arg(long)]
    pub json: bool,
}

/// One sample of the app's autoscaler status.
#[derive(Debug, Clone, serde::Serialize)]
struct Point {
    /// Seconds since the policy was put.
    t: f64,
    /// The load offered then (requests per second).
    offered_rps: f64,
    instances: u32,
    ready: u32,
    desired: Option<u32>,
    /// The rps per instance the framework computed from the routers'
    /// reports.
    rps_per_instance: Option<f64>,
}

/// The app's health check interval (seconds): a cold start waits for the
/// first passing check.
const HEALTH_INTERVAL_S: f64 = 0.5;

#[derive(Debug, Default, serde::Serialize)]
struct Figures {
    /// One instance, scale request → TASK_RUNNING (what `bench launch`
    /// times, plus the framework's part).
    launch_to_running_s: f64,
    /// The same instance → healthy and ready.
    launch_to_serving_s: f64,
    decision_s: f64,
    capacity_s: f64,
    instances_after_step: u32,
    flaps: u32,
    steady_changes: u32,
    scale_down_s: f64,
    cold_start_s: f64,
    /// The framework's own record of the cold start (wake → serving).
    cold_start_framework_s: Option<f64>,
    cold_start_status: u16,
    requests: u64,
    failed: u64,
    errors: std::collections::BTreeMap<String, u64>,
    latency_ms_p50_steady: f64,
    latency_ms_p95_steady: f64,
    /// Distinct instances that answered under steady load (the traffic
    /// spread to the new instances).
    instances_answering_steady: u32,
    last_decision: String,
    /// Status polls of the timeline that failed, and the last error.
    sampler_errors: u32,
    sampler_last_error: String,
    timeline: Vec<Point>,
}

pub async fn run(args: AutoscaleArgs) -> Result<()> {
    ensure!(
        args.rps.is_finite() && args.rps > 0.0,
        "--rps must be above 0"
    );
    ensure!(
        args.rps_target.is_finite() && args.rps_target > 0.0,
        "--rps-target must be above 0"
    );
    ensure!(
        args.max >= 2,
        "--max must be at least 2 (the step scales up)"
    );
    ensure!(args.workers > 0, "--workers must be above 0");
    let stack = EdgeStack::start("autoscale", &args.image, args.max as usize + 1).await?;
    let outcome = match stack.edge() {
        Err(e) => Err(e),
        Ok(edge) => bounded(args.timeout, measure(&args, &stack.svc, edge)).await,
    };
    eprintln!("cleaning up: destroying {APP}, stopping the cluster, removing its containers");
    let _ = http_send("DELETE", &stack.svc, &format!("/v1/autoscalers{APP}"), None).await;
    destroy(&stack.svc).await;
    stack.stop().await;

    let f = outcome?;
    report(&args, &f);
    if args.strict {
        let mut why = Vec::new();
        if f.failed > 0 {
            why.push(format!("{} of {} requests failed", f.failed, f.requests));
        }
        if f.flaps > 0 {
            why.push(format!("{} flap(s)", f.flaps));
        }
        if f.steady_changes > 0 {
            why.push(format!(
                "{} change(s) of the instance count under steady load",
                f.steady_changes
            ));
        }
        if f.instances_answering_steady < f.instances_after_step {
            why.push(format!(
                "only {} of {} instances answered under steady load (traffic did not spread)",
                f.instances_answering_steady, f.instances_after_step
            ));
        }
        if f.latency_ms_p95_steady > args.latency_p95_target {
            why.push(format!(
                "p95 latency under steady load {:.1} ms is above the target {} ms",
                f.latency_ms_p95_steady, args.latency_p95_target
            ));
        }
        if f.cold_start_status != 200 {
            why.push(format!(
                "the cold start answered {} (0: no answer)",
                f.cold_start_status
            ));
        }
        if !why.is_empty() {
            bail!("--strict: {}", why.join("; "));
        }
    }
    Ok(())
}

/// The app: one instance, bridge networking, published at the edge;
/// health and readiness on `/health`.
fn app(args: &AutoscaleArgs) -> Value {
    json!({
        "id": APP, "instances": 1, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": args.image},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http",
                "labels": {"expose": "public"}}]},
        "networks": [{"mode": "container/bridge"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 30, "intervalSeconds": 0.5, "timeoutSeconds": 1,
            "maxConsecutiveFailures": 3}],
        "readinessChecks": [{"name": "ready", "protocol": "HTTP", "path": "/health",
            "portName": "http", "intervalSeconds": 0.2, "timeoutSeconds": 1}]
    })
}

fn policy(args: &AutoscaleArgs, min: u32, idle_after: Option<Duration>) -> Value {
    let mut p = json!({
        "min": min, "max": args.max,
        "targets": [{"metric": "rps", "value": args.rps_target},
                    {"metric": "latencyP95", "value": args.latency_p95_target}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": args.scale_down_window.as_secs()}}
    });
    if let Some(i) = idle_after {
        p["idleAfterSeconds"] = json!(i.as_secs().max(1));
    }
    p
}

async fn put_policy(svc: &str, p: &Value) -> Result<()> {
    let (code, body) = http_send(
        "PUT",
        svc,
        &format!("/v1/autoscalers{APP}"),
        Some(&p.to_string()),
    )
    .await?;
    ensure!(
        code == 200 || code == 201,
        "PUT /v1/autoscalers{APP} answered {code}: {body}"
    );
    Ok(())
}

/// The app's autoscaler status (`status` of `GET /v1/autoscalers/{id}`).
async fn status(svc: &str) -> Result<Value> {
    let (code, body) = http_send("GET", svc, &format!("/v1/autoscalers{APP}"), None).await?;
    ensure!(
        code == 200,
        "GET /v1/autoscalers{APP} answered {code}: {body}"
    );
    let v: Value = serde_json::from_str(&body).context("the autoscaler's status")?;
    Ok(v["status"].clone())
}

/// Waits until the app has `n` instances, all of them healthy.
async fn healthy(svc: &str, n: u64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let path = format!("/v1/apps{APP}");
    loop {
        let (_, body) = http_send("GET", svc, &path, None).await?;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if v["app"]["tasksHealthy"].as_u64() == Some(n)
            && v["app"]["tasksRunning"].as_u64() == Some(n)
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{APP} does not have {n} healthy instances after {within:?}: {}",
            v["app"]["waiting"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` instances run; the seconds it took.
async fn running(svc: &str, n: u64, within: Duration) -> Result<f64> {
    let t = Instant::now();
    let path = format!("/v1/apps{APP}");
    loop {
        let (_, body) = http_send("GET", svc, &path, None).await?;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if v["app"]["tasksRunning"].as_u64() >= Some(n) {
            return Ok(t.elapsed().as_secs_f64());
        }
        ensure!(
            t.elapsed() < within,
            "{APP} does not have {n} running instances after {within:?}: {}",
            v["app"]["waiting"]
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn scale(svc: &str, n: u32) -> Result<()> {
    let (code, body) = http_send(
        "PUT",
        svc,
        &format!("/v2/apps{APP}"),
        Some(&format!("{{\"instances\": {n}}}")),
    )
    .await?;
    ensure!(code == 200, "scaling {APP} to {n} answered {code}: {body}");
    Ok(())
}

/// Paced open-loop load: a pacer hands out one ticket per request at the
/// rate in `rate` (f64 bits), `--workers` clients send one request per
/// ticket on their keep-alive connection. Tickets wait (bounded) when every
/// client is busy.
struct Load {
    rate: Arc<AtomicU64>,
    noise: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    /// Latencies of successful requests while `steady` is set.
    steady: Arc<AtomicBool>,
    steady_lat: Arc<Mutex<Vec<f64>>>,
    /// Task ids that answered while `steady` is set.
    steady_seen: Arc<Mutex<std::collections::BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(args: &AutoscaleArgs, edge: SocketAddr) -> Load {
        let rate = Arc::new(AtomicU64::new(0f64.to_bits()));
        let noise = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let steady = Arc::new(AtomicBool::new(false));
        let steady_lat = Arc::new(Mutex::new(Vec::new()));
        let steady_seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let (tx, rx) = tokio::sync::mpsc::channel::<()>(10_000);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut tasks = Vec::new();
        {
            let (rate, noise, stop) = (rate.clone(), noise.clone(), stop.clone());
            let mut seed = args.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut owed = 0.0f64;
                let mut factor = 1.0f64;
                let mut last = Instant::now();
                let mut factor_at = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    if factor_at.elapsed() >= Duration::from_secs(1) {
                        factor_at = Instant::now();
                        factor = if noise.load(Ordering::Relaxed) {
                            seed = seed
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
                            0.9 + 0.2 * u
                        } else {
                            1.0
                        };
                    }
                    let dt = last.elapsed().as_secs_f64();
                    last = Instant::now();
                    owed += f64::from_bits(rate.load(Ordering::Relaxed)) * factor * dt;
                    while owed >= 1.0 {
                        owed -= 1.0;
                        if tx.try_send(()).is_err() {
                            break;
                        }
                    }
                }
            }));
        }
        let path = format!("/sleep?ms={}", args.request_ms);
        for _ in 0..args.workers {
            let (rx, stats, stop, path) = (rx.clone(), stats.clone(), stop.clone(), path.clone());
            let (steady, steady_lat) = (steady.clone(), steady_lat.clone());
            let steady_seen = steady_seen.clone();
            tasks.push(tokio::spawn(async move {
                let mut sender = None;
                loop {
                    let ticket = { rx.lock().await.recv().await };
                    if ticket.is_none() || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let t = Instant::now();
                    let r = get(edge, &path, &mut sender).await;
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(body) => {
                            if steady.load(Ordering::Relaxed) {
                                steady_lat
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(t.elapsed().as_secs_f64() * 1000.0);
                                if let Some(task) = body
                                    .split_whitespace()
                                    .find_map(|w| w.strip_prefix("task="))
                                {
                                    let mut seen =
                                        steady_seen.lock().unwrap_or_else(|p| p.into_inner());
                                    if !seen.contains(task) {
                                        seen.insert(task.to_string());
                                    }
                                }
                            }
                        }
                        Err(kind) => stats.fail(kind),
                    }
                }
            }));
        }
        Load {
            rate,
            noise,
            stop,
            stats,
            steady,
            steady_lat,
            steady_seen,
            tasks,
        }
    }

    fn set_rate(&self, rps: f64) {
        self.rate.store(rps.to_bits(), Ordering::Relaxed);
    }

    async fn stop(self) -> Arc<Stats> {
        self.set_rate(0.0);
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            // A request in flight finishes (each has its own timeout).
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        self.stats
    }
}

/// Samples the autoscaler's status every 250 ms into the timeline.
struct Sampler {
    points: Arc<Mutex<Vec<Point>>>,
    /// Polls that failed (count, the last error): a gap in the timeline.
    errors: Arc<Mutex<(u32, String)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(svc: String, rate: Arc<AtomicU64>, t0: Instant) -> Sampler {
        let points = Arc::new(Mutex::new(Vec::new()));
        let p = points.clone();
        let errors = Arc::new(Mutex::new((0u32, String::new())));
        let errs = errors.clone();
        let task = tokio::spawn(async move {
            loop {
                // Bounded: one slow answer must not end the record.
                let answer = tokio::time::timeout(Duration::from_secs(2), status(&svc)).await;
                if let Ok(Ok(s)) = answer {
                    let rps = s["metrics"].as_array().and_then(|ms| {
                        ms.iter()
                            .find(|m| m["metric"] == "rps")
                            .and_then(|m| m["value"].as_f64())
                    });
                    let point = Point {
                        t: t0.elapsed().as_secs_f64(),
                        offered_rps: f64::from_bits(rate.load(Ordering::Relaxed)),
                        instances: s["instances"].as_u64().unwrap_or(0) as u32,
                        ready: s["ready"].as_u64().unwrap_or(0) as u32,
                        desired: s["desired"].as_u64().map(|d| d as u32),
                        rps_per_instance: rps,
                    };
                    p.lock().unwrap_or_else(|e| e.into_inner()).push(point);
                } else {
                    let why = match answer {
                        Err(_) => "no answer within 2 s".to_string(),
                        Ok(Err(e)) => format!("{e:#}"),
                        Ok(Ok(_)) => String::new(),
                    };
                    let mut e = errs.lock().unwrap_or_else(|e| e.into_inner());
                    e.0 += 1;
                    e.1 = why;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Sampler {
            points,
            errors,
            task,
        }
    }

    fn points(&self) -> Vec<Point> {
        self.points
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn stop(self) -> (Vec<Point>, (u32, String)) {
        self.task.abort();
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.points(), errors)
    }
}

/// Direction changes of the instance count over the points.
fn flaps(points: &[Point]) -> u32 {
    let mut last_dir = 0i8;
    let mut flaps = 0;
    for w in points.windows(2) {
        let d = match w[1].instances.cmp(&w[0].instances) {
            std::cmp::Ordering::Greater => 1,
            std::cmp::Ordering::Less => -1,
            std::cmp::Ordering::Equal => continue,
        };
        if last_dir != 0 && d != last_dir {
            flaps += 1;
        }
        last_dir = d;
    }
    flaps
}

async fn measure(args: &AutoscaleArgs, svc: &str, edge: SocketAddr) -> Result<Figures> {
    let mut f = Figures::default();
    let (code, body) = http_send("POST", svc, "/v2/apps", Some(&app(args).to_string())).await?;
    ensure!(code == 201, "deploying {APP} answered {code}: {body}");
    healthy(svc, 1, Duration::from_secs(180)).await?;
    eprintln!("{APP} serves; timing one instance from a manual scale to serving");
    let t = Instant::now();
    scale(svc, 2).await?;
    f.launch_to_running_s = running(svc, 2, Duration::from_secs(120)).await?;
    healthy(svc, 2, Duration::from_secs(120)).await?;
    f.launch_to_serving_s = t.elapsed().as_secs_f64();
    scale(svc, 1).await?;
    healthy(svc, 1, Duration::from_secs(120)).await?;

    put_policy(svc, &policy(args, 1, None)).await?;
    let t0 = Instant::now();
    let load = Load::start(args, edge);
    let sampler = Sampler::start(svc.to_string(), load.rate.clone(), t0);

    eprintln!(
        "baseline: {:.0} rps for {:?}",
        args.rps_target / 2.0,
        args.baseline
    );
    load.set_rate(args.rps_target / 2.0);
    tokio::time::sleep(args.baseline).await;

    eprintln!("step: {:.0} rps", args.rps);
    let step_at = Instant::now();
    let step_t = t0.elapsed().as_secs_f64();
    load.set_rate(args.rps);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(svc).await?;
        let d = &s["lastDecision"];
        if d["direction"] == "up" {
            f.decision_s = step_at.elapsed().as_secs_f64();
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no scale-up decision within 120 s of the step: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Capacity: the count the autoscaler wants, all of it serving, and
    // still wanted a moment later (a scale-up in several steps is not
    // done at its first step).
    let mut since: Option<(Instant, u32)> = None;
    loop {
        let s = status(svc).await?;
        let inst = s["instances"].as_u64().unwrap_or(0) as u32;
        let ready = s["ready"].as_u64().unwrap_or(0) as u32;
        let settled = inst > 1 && ready == inst && s["desired"].as_u64() == Some(inst.into());
        match (settled, since) {
            (true, Some((at, n))) if n == inst => {
                if at.elapsed() >= Duration::from_secs(3) {
                    break;
                }
            }
            (true, _) => {
                since = Some((Instant::now(), inst));
                f.capacity_s = step_at.elapsed().as_secs_f64();
                f.instances_after_step = inst;
            }
            (false, _) => since = None,
        }
        ensure!(
            Instant::now() < deadline,
            "the scale-up did not settle within 120 s of the step: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!(
        "steady: {:.0} rps ±10 % for {:?} at {} instances",
        args.rps, args.steady, f.instances_after_step
    );
    load.noise.store(true, Ordering::Relaxed);
    load.steady.store(true, Ordering::Relaxed);
    let steady_from = t0.elapsed().as_secs_f64();
    tokio::time::sleep(args.steady).await;
    let steady_to = t0.elapsed().as_secs_f64();
    load.steady.store(false, Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *load.steady_lat.lock().unwrap_or_else(|p| p.into_inner()));
    f.latency_ms_p50_steady = super::quantile(&mut lat, 0.5);
    f.latency_ms_p95_steady = super::quantile(&mut lat, 0.95);
    f.instances_answering_steady = load
        .steady_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len() as u32;

    eprintln!(
        "load stops; waiting for the scale-down (window {:?})",
        args.scale_down_window
    );
    let stopped_at = Instant::now();
    let stats = load.stop().await;
    let deadline = Instant::now() + args.scale_down_window + Duration::from_secs(120);
    loop {
        let s = status(svc).await?;
        if s["instances"].as_u64() == Some(1) && s["ready"].as_u64() == Some(1) {
            f.scale_down_s = stopped_at.elapsed().as_secs_f64();
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not back at one instance within the window + 120 s: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!("scale to zero: idleAfterSeconds {:?}", args.idle_after);
    put_policy(svc, &policy(args, 0, Some(args.idle_after))).await?;
    let deadline = Instant::now() + args.idle_after + Duration::from_secs(120);
    loop {
        let s = status(svc).await?;
        if s["instances"].as_u64() == Some(0) && s["ready"].as_u64() == Some(0) {
            // The running instance drains and goes; wait until no task is
            // left, so that the request below really starts one.
            let (_, body) = http_send("GET", svc, &format!("/v1/apps{APP}"), None).await?;
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            if v["app"]["tasksRunning"].as_u64() == Some(0) {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "not at zero instances within idleAfter + 120 s: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("at zero; one request through the edge");
    let t = Instant::now();
    let mut sender = None;
    match get(edge, "/", &mut sender).await {
        Ok(_) => f.cold_start_status = 200,
        Err(e) => {
            eprintln!("the cold-start request failed: {e}");
            f.cold_start_status = e
                .strip_prefix("status ")
                .and_then(|r| r.split(':').next())
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        }
    }
    f.cold_start_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = status(svc).await?;
    f.cold_start_framework_s = s["coldStartSeconds"].as_f64();
    f.last_decision = s["lastDecision"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let (points, (errors, last_error)) = sampler.stop();
    f.sampler_errors = errors;
    f.sampler_last_error = last_error;
    let run: Vec<Point> = points
        .iter()
        .filter(|p| p.t >= step_t && p.t <= steady_to)
        .cloned()
        .collect();
    f.flaps = flaps(&run);
    let steady: Vec<&Point> = points
        .iter()
        .filter(|p| p.t >= steady_from && p.t <= steady_to)
        .collect();
    f.steady_changes = steady
        .windows(2)
        .filter(|w| w[0].instances != w[1].instances)
        .count() as u32;
    f.requests = stats.requests.load(Ordering::Relaxed) + 1;
    f.failed = stats.failed.load(Ordering::Relaxed) + u64::from(f.cold_start_status != 200);
    f.errors = stats
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // One point per second is enough for the record.
    let mut last = -1.0;
    f.timeline = points
        .into_iter()
        .filter(|p| {
            let keep = p.t - last >= 1.0;
            if keep {
                last = p.t;
            }
            keep
        })
        .collect();
    Ok(f)
}

fn report(args: &AutoscaleArgs, f: &Figures) {
    // The goal: 1.5 × (launch p50 + one health interval).
    let goal_cold = 1.5 * (f.launch_to_running_s + HEALTH_INTERVAL_S);
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(vec!["figure", "value", "goal"]);
    let rows: Vec<(String, String, String)> = vec![
        (
            "decision_s".into(),
            format!("{:.2}", f.decision_s),
            "≤ 3 (HPA ≥ 15)".into(),
        ),
        (
            "capacity_s".into(),
            format!("{:.2}", f.capacity_s),
            "-".into(),
        ),
        (
            "instances_after_step".into(),
            f.instances_after_step.to_string(),
            format!("ceil({} ÷ {})", args.rps, args.rps_target),
        ),
        ("flaps".into(), f.flaps.to_string(), "0".into()),
        (
            "steady_changes".into(),
            f.steady_changes.to_string(),
            "0".into(),
        ),
        (
            "scale_down_s".into(),
            format!("{:.2}", f.scale_down_s),
            format!("≈ window {:?} + drain", args.scale_down_window),
        ),
        (
            "launch_to_running_s".into(),
            format!("{:.2}", f.launch_to_running_s),
            "-".into(),
        ),
        (
            "launch_to_serving_s".into(),
            format!("{:.2}", f.launch_to_serving_s),
            "-".into(),
        ),
        (
            "cold_start_s".into(),
            format!("{:.2}", f.cold_start_s),
            format!(
                "≤ {goal_cold:.2} (1.5 × (launch_to_running_s + {HEALTH_INTERVAL_S} s health interval))"
            ),
        ),
        ("requests".into(), f.requests.to_string(), "-".into()),
        ("failed".into(), f.failed.to_string(), "0".into()),
        (
            "instances_answering_steady".into(),
            f.instances_answering_steady.to_string(),
            format!("≥ {}", f.instances_after_step),
        ),
        (
            "latency_ms_p95_steady".into(),
            format!("{:.1}", f.latency_ms_p95_steady),
            format!("≤ {} (latencyP95 target)", args.latency_p95_target),
        ),
    ];
    for (a, b, c) in rows {
        t.add_row(vec![a, b, c]);
    }
    println!("{t}");
    if !f.errors.is_empty() {
        println!("errors: {:?}", f.errors);
    }
    println!("last decision: {}", f.last_decision);
    println!("timeline (every 5 s): t, offered rps, instances, ready, rps per instance");
    let mut next = 0.0;
    for p in &f.timeline {
        if p.t >= next {
            next = p.t + 5.0;
            println!(
                "  {:>6.1}s  {:>6.1}  {:>2}  {:>2}  {}",
                p.t,
                p.offered_rps,
                p.instances,
                p.ready,
                p.rps_per_instance
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    if args.json {
        let mut v = serde_json::to_value(f).unwrap_or_default();
        v["bench"] = json!("autoscale");
        v["cold_start_goal_s"] = json!(goal_cold);
        println!("{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(instances: u32) -> Point {
        Point {
            t: 0.0,
            offered_rps: 0.0,
            instances,
            ready: instances,
            desired: None,
            rps_per_instance: None,
        }
    }

    #[test]
    fn flaps_count_direction_changes_only() {
        let s = |v: &[u32]| v.iter().map(|&i| p(i)).collect::<Vec<_>>();
        assert_eq!(flaps(&s(&[1, 2, 3, 3, 3])), 0);
        assert_eq!(flaps(&s(&[1, 3, 3, 2])), 1);
        assert_eq!(flaps(&s(&[1, 3, 2, 3, 2])), 3);
        assert_eq!(flaps(&s(&[3, 2, 2, 1])), 0);
        assert_eq!(flaps(&s(&[])), 0);
    }
}
