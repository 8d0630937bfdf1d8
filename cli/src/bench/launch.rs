//! `agora bench launch`: time from ACCEPT to TASK_RUNNING per container
//! through Agora (in-process master and Docker agent, SDK framework over
//! gRPC on loopback), alternating with the engine's own create + start of
//! the same image through bollard. The ratio is Agora's overhead.

use crate::util::parse_duration;
use agora_core::TaskState;
use agora_sdk::{Client, Driver, FrameworkConfig, Offer, Scheduler, TaskStatus};
use anyhow::{Context, Result, bail, ensure};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(clap::Args, Debug, Clone)]
pub struct LaunchArgs {
    /// Containers launched by each side.
    #[arg(long, default_value_t = 20)]
    pub tasks: usize,
    /// Image both sides start (must exist locally: `bash images/build.sh`).
    #[arg(long, default_value = "agora-workload:latest")]
    pub image: String,
    /// Give up after this long.
    #[arg(long, value_parser = parse_duration, default_value = "300s")]
    pub timeout: Duration,
    /// Also launch each task a second time with a secret reference (one
    /// env variable resolved by the agent from the master at launch) and
    /// report what the secret costs (`secret_overhead_ms_p50`).
    #[arg(long)]
    pub secret: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// The secret `--secret` puts and references.
const BENCH_SECRET: &str = "/bench/launch/token";

enum Ev {
    Offers(Vec<Offer>),
    Update(TaskStatus),
    Client(Client),
}

struct Probe(mpsc::UnboundedSender<Ev>);

impl Scheduler for Probe {
    async fn subscribed(&mut self, client: &Client, _id: &agora_core::FrameworkId) {
        let _ = self.0.send(Ev::Client(client.clone()));
    }
    async fn offers(&mut self, _c: &Client, offers: Vec<Offer>) {
        let _ = self.0.send(Ev::Offers(offers));
    }
    async fn update(&mut self, _c: &Client, s: TaskStatus) {
        let _ = self.0.send(Ev::Update(s));
    }
}

pub async fn run(args: LaunchArgs) -> Result<()> {
    ensure!(args.tasks > 0, "--tasks must be > 0");
    let docker = Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await
        .context("the Docker engine does not answer")?;
    docker.inspect_image(&args.image).await.with_context(|| {
        format!(
            "image {} is missing: run `bash images/build.sh`",
            args.image
        )
    })?;

    // Master (in memory) and a Docker agent, in this process.
    let launched = if args.secret {
        2 * args.tasks
    } else {
        args.tasks
    };
    let resources = format!(
        "cpus:{};mem:{}",
        launched as f64 * 0.1 + 1.0,
        launched * 64 + 256
    );
    let cluster = super::LocalCluster::start("launch", resources, &args.image).await?;
    let addr = cluster.master;
    let result = async {
        if args.secret {
            put_bench_secret(&addr.to_string()).await?;
        }
        measure(&args, &docker, &format!("http://{addr}")).await
    }
    .await;

    // Clean up: the agent's containers and the raw ones.
    cluster.stop().await;
    let (agora, raw, raw_ids, with_secret, mut resolve) = result?;
    for id in raw_ids {
        let _ = docker
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }
    let agora_plain = agora.clone();
    let (mut a, mut d) = (agora, raw);
    let (a50, a99) = (super::quantile(&mut a, 0.5), super::quantile(&mut a, 0.99));
    let (d50, d99) = (super::quantile(&mut d, 0.5), super::quantile(&mut d, 0.99));
    let ratio = a50 / d50;
    eprintln!("ACCEPT → RUNNING through Agora: p50 {a50:.1} ms, p99 {a99:.1} ms");
    eprintln!("engine create + start (bollard): p50 {d50:.1} ms, p99 {d99:.1} ms");
    eprintln!("ratio p50 {ratio:.2} (goal ≤ 1.2)");
    let mut out = serde_json::json!({
        "bench": "launch", "tasks": args.tasks,
        "agora_ms_p50": a50, "agora_ms_p99": a99,
        "docker_ms_p50": d50, "docker_ms_p99": d99,
        "ratio_p50": ratio,
    });
    if args.secret {
        // Each secret launch is paired with a plain one next to it: the median of the paired differences is less noisy than the
        // difference of the medians (container starts vary by ±20 ms).
        let mut diffs: Vec<f64> = with_secret
            .iter()
            .zip(&agora_plain)
            .map(|(s, p)| s - p)
            .collect();
        let overhead = super::quantile(&mut diffs, 0.5);
        let mut s = with_secret;
        let (s50, s99) = (super::quantile(&mut s, 0.5), super::quantile(&mut s, 0.99));
        eprintln!(
            "ACCEPT → RUNNING with a secret reference: p50 {s50:.1} ms, p99 {s99:.1} ms; \
             secret overhead (median of paired differences) {overhead:.1} ms (goal ≤ 5 ms)"
        );
        out["agora_secret_ms_p50"] = s50.into();
        out["agora_secret_ms_p99"] = s99.into();
        out["secret_overhead_ms_p50"] = overhead.into();
        let (r50, r99) = (
            super::quantile(&mut resolve, 0.5),
            super::quantile(&mut resolve, 0.99),
        );
        eprintln!(
            "the step it adds, ResolveSecrets round trip alone: p50 {r50:.2} ms, p99 {r99:.2} ms"
        );
        out["secret_resolve_ms_p50"] = r50.into();
        out["secret_resolve_ms_p99"] = r99.into();
    }
    if args.json {
        println!("{out}");
    }
    Ok(())
}

/// Puts the secret the `--secret` tasks reference (a random value; the
/// bench never prints it).
async fn put_bench_secret(master: &str) -> Result<()> {
    let value = uuid::Uuid::new_v4().simple().to_string().into_bytes();
    let (status, body) =
        crate::http::http_send_raw("PUT", master, &format!("/v1/secrets{BENCH_SECRET}"), value)
            .await?;
    ensure!(
        (200..300).contains(&status),
        "putting the bench secret: HTTP {status}: {}",
        body.trim()
    );
    Ok(())
}

async fn measure(
    args: &LaunchArgs,
    docker: &Docker,
    master: &str,
) -> Result<(Vec<f64>, Vec<f64>, Vec<String>, Vec<f64>, Vec<f64>)> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut fcfg = FrameworkConfig::new(master, "bench-launch");
    fcfg.failover_timeout = Duration::ZERO;
    tokio::spawn(Driver::new(fcfg, Probe(tx)).with_stop(stop_rx).run());
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut next = async || -> Result<Ev> {
        tokio::time::timeout_at(deadline, rx.recv())
            .await
            .context("timed out")?
            .context("framework stopped")
    };
    let client = loop {
        if let Ev::Client(c) = next().await? {
            break c;
        }
    };
    let mut offer: Option<Offer> = None;
    let (mut agora, mut raw, mut raw_ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut with_secret = Vec::new();
    let mut resolve = Vec::new();
    let mut link = agora_proto::pb::agent_link_client::AgentLinkClient::connect(master.to_string())
        .await
        .context("connecting to the master's AgentLink")?;
    for i in 0..args.tasks {
        // Agora: ACCEPT → RUNNING (then the same with a secret reference,
        // alternating so both see the same machine).
        // The order alternates too: the second launch of a pair tends to
        // be faster (warm caches), which would bias the difference.
        let kinds: &[bool] = match (args.secret, i % 2) {
            (false, _) => &[false],
            (true, 0) => &[false, true],
            (true, _) => &[true, false],
        };
        for &secret in kinds {
            let o = match offer.take() {
                Some(o) => o,
                None => loop {
                    if let Ev::Offers(mut v) = next().await?
                        && let Some(o) = v.pop()
                    {
                        break o;
                    }
                },
            };
            let id = if secret {
                format!("launch-secret-{i}")
            } else {
                format!("launch-{i}")
            };
            let mut t = agora_sdk::task(&id, "cpus:0.1;mem:64", "")?;
            t.command = None;
            t.container = Some(agora_proto::pb::ContainerInfo {
                image: args.image.clone(),
                network: "bridge".into(),
                port_mappings: vec![],
            });
            if secret {
                t.secrets = vec![agora_proto::pb::SecretUse {
                    target: Some(agora_proto::pb::secret_use::Target::Env(
                        "BENCH_TOKEN".into(),
                    )),
                    path: BENCH_SECRET.into(),
                    version: 1,
                }];
            }
            let t0 = Instant::now();
            client
                .accept(std::slice::from_ref(&o.id), vec![t], Some(Duration::ZERO))
                .await?;
            loop {
                match next().await? {
                    Ev::Update(s) if s.task_id.as_str() == id && s.state == TaskState::Running => {
                        break;
                    }
                    Ev::Update(s) if s.task_id.as_str() == id && s.state.is_terminal() => {
                        bail!("{id} ended {}: {}", s.state, s.message)
                    }
                    Ev::Offers(mut v) => offer = v.pop().or(offer.take()),
                    _ => {}
                }
            }
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if secret {
                with_secret.push(ms);
                // The step a secret adds, alone: the agent's ResolveSecrets
                // round trip to the master (authorize, look up, decrypt).
                let req = agora_proto::pb::ResolveSecretsRequest {
                    agent_id: o.agent_id.as_str().into(),
                    framework_id: client.framework_id().map(|f| f.0).unwrap_or_default(),
                    task_id: id.clone(),
                };
                let t0 = Instant::now();
                link.resolve_secrets(req)
                    .await
                    .context("resolving the bench task's secret")?;
                resolve.push(t0.elapsed().as_secs_f64() * 1000.0);
            } else {
                agora.push(ms);
            }
        }

        // The engine alone: create + start the same image with the same limits.
        let body = ContainerCreateBody {
            image: Some(args.image.clone()),
            host_config: Some(HostConfig {
                nano_cpus: Some(100_000_000),
                memory: Some(64 << 20),
                memory_swap: Some(64 << 20),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t0 = Instant::now();
        let c = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(format!("agora-bench-raw-{}-{i}", std::process::id())),
                    platform: String::new(),
                }),
                body,
            )
            .await?;
        docker.start_container(&c.id, None).await?;
        raw.push(t0.elapsed().as_secs_f64() * 1000.0);
        raw_ids.push(c.id);
    }
    let _ = stop_tx.send(true);
    Ok((agora, raw, raw_ids, with_secret, resolve))
}
