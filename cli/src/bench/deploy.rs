//! `agora bench deploy`: deploy N instances of the workload image through
//! the services framework until all are healthy, and in the same run do the
//! same with Docker Swarm mode (`docker service create --replicas N` until
//! N/N running; swarm mode is left afterwards). If swarm mode cannot be
//! initialised, N `docker run -d` in sequence are the peer instead. Both
//! sides run `--rounds` times, alternating; the medians are compared (swarm's
//! time varies a lot from one service to the next).

use crate::util::http_send;
use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct DeployArgs {
    #[arg(long, default_value_t = 20)]
    pub instances: u32,
    #[arg(long, default_value = "agora-workload:latest")]
    pub image: String,
    /// Networking of both sides: `bridge` (each container's 8080 mapped to a
    /// host port: Agora's from the offer, swarm's picked by the engine in
    /// host publish mode) or `host` (every instance listens on its own host
    /// port: Agora's from the offer via PORT0, swarm's from the task slot).
    #[arg(long, value_enum, default_value = "bridge")]
    pub network: Network,
    /// Rounds (Agora, then the peer, each round); the medians are compared.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    Bridge,
    Host,
}

impl Network {
    fn name(self) -> &'static str {
        match self {
            Network::Bridge => "bridge",
            Network::Host => "host",
        }
    }
}

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("running the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub async fn run(args: DeployArgs) -> Result<()> {
    ensure!(args.instances > 0, "--instances must be > 0");
    ensure!(args.rounds > 0, "--rounds must be > 0");
    docker(&["image", "inspect", &args.image])
        .with_context(|| format!("image {} missing: run `bash images/build.sh`", args.image))?;
    let (mut agora_times, mut peer_times) = (Vec::new(), Vec::new());
    let mut peer = "swarm";
    for round in 1..=args.rounds {
        let a = agora(&args).await?;
        eprintln!(
            "round {round}/{}: Agora: {} instances healthy in {a:.2} s",
            args.rounds, args.instances
        );
        let p = if peer == "swarm" {
            match swarm(&args).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!(
                        "swarm mode unavailable ({e:#}); comparing with docker run -d in sequence"
                    );
                    peer = "docker-run";
                    docker_run(&args)?
                }
            }
        } else {
            docker_run(&args)?
        };
        eprintln!(
            "round {round}/{}: {peer}: {} running in {p:.2} s",
            args.rounds, args.instances
        );
        agora_times.push(a);
        peer_times.push(p);
    }
    let agora_s = super::quantile(&mut agora_times, 0.5);
    let peer_s = super::quantile(&mut peer_times, 0.5);
    let ratio = agora_s / peer_s;
    eprintln!(
        "median of {} round(s): Agora {agora_s:.2} s, {peer} {peer_s:.2} s; ratio {ratio:.2} (goal ≤ 0.5)",
        args.rounds
    );
    if args.json {
        println!(
            "{}",
            json!({"bench": "deploy", "instances": args.instances, "network": args.network.name(),
                "rounds": args.rounds, "agora_s": agora_s, "peer": peer, "peer_s": peer_s, "ratio": ratio})
        );
    }
    Ok(())
}

async fn agora(args: &DeployArgs) -> Result<f64> {
    let n = args.instances as usize;
    let resources = format!(
        "cpus:{};mem:{};ports:[20000-20999]",
        n as f64 * 0.1 + 1.0,
        n * 64 + 256
    );
    let cluster = super::LocalCluster::start("deploy", resources, &args.image).await?;
    let addr = cluster.master;
    let work = cluster.work.clone();
    let svc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let svc = svc_listener.local_addr()?.to_string();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let scfg = crate::services_cmd::config(&addr.to_string(), work.join("services"), "*");
    tokio::spawn(agora_services::serve(svc_listener, scfg, stop));
    // Wait until the framework is subscribed.
    let t_wait = Instant::now();
    loop {
        if let Ok((200, body)) = http_send("GET", &svc, "/v1/info", None).await
            && body.contains("\"connected\":true")
        {
            break;
        }
        ensure!(
            t_wait.elapsed() < Duration::from_secs(30),
            "the services framework did not connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut app = json!({
        "id": "/bench/web", "instances": n, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": args.image},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]},
        "networks": [{"mode": "container/bridge"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 30, "intervalSeconds": 0.2, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}]
    });
    if args.network == Network::Host {
        // Marathon's default: host networking, a host port per instance
        // from the offer (the workload listens on $PORT0).
        app["container"] = json!({"type": "DOCKER", "docker": {"image": args.image}});
        app["networks"] = json!([{"mode": "host"}]);
        app["portDefinitions"] = json!([{"port": 0, "name": "http"}]);
    }
    let t0 = Instant::now();
    let (code, body) = http_send("POST", &svc, "/v2/apps", Some(&app.to_string())).await?;
    ensure!(code == 201, "creating the app answered {code}: {body}");
    let mut all_running: Option<f64> = None;
    let result = loop {
        // Agora's view: Marathon's counters plus why instances wait.
        let (_, body) = http_send("GET", &svc, "/v1/apps/bench/web", None).await?;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if all_running.is_none() && v["app"]["tasksRunning"].as_u64() == Some(n as u64) {
            all_running = Some(t0.elapsed().as_secs_f64());
        }
        if v["app"]["tasksHealthy"].as_u64() == Some(n as u64) {
            if let Some(r) = all_running {
                eprintln!("Agora: all {n} running after {r:.2} s");
            }
            break Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > Duration::from_secs(300) {
            break Err(anyhow::anyhow!(
                "not healthy after 300 s: {}",
                v["app"]["waiting"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = stop_tx.send(true);
    cluster.stop().await;
    result
}

async fn swarm(args: &DeployArgs) -> Result<f64> {
    let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
    let we_started = state != "active";
    if we_started {
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    }
    let name = format!("agora-bench-{}", std::process::id());
    let n = args.instances.to_string();
    let mut create = vec![
        "service",
        "create",
        "-q",
        "--detach",
        "--name",
        &name,
        "--replicas",
        &n,
        "--limit-cpu",
        "0.1",
        "--limit-memory",
        "32m",
    ];
    match args.network {
        // Each replica's 8080 on a host port the engine picks, as Agora maps one.
        Network::Bridge => create.extend(["--publish", "mode=host,target=8080"]),
        // One port per replica: 21000 + the task's slot.
        Network::Host => create.extend([
            "--network",
            "host",
            "--env",
            "PORT=21{{printf \"%03s\" .Task.Slot}}",
        ]),
    }
    create.push(&args.image);
    let t0 = Instant::now();
    let created = docker(&create);
    let result = match created {
        Err(e) => Err(e),
        Ok(_) => loop {
            let r = docker(&[
                "service",
                "ls",
                "--filter",
                &format!("name={name}"),
                "--format",
                "{{.Replicas}}",
            ])
            .unwrap_or_default();
            if r == format!("{n}/{n}") {
                break Ok(t0.elapsed().as_secs_f64());
            }
            if t0.elapsed() > Duration::from_secs(120) {
                break Err(anyhow::anyhow!("swarm did not reach {n}/{n} ({r})"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        },
    };
    let _ = docker(&["service", "rm", &name]);
    // Wait until the service's containers are gone, so the engine is quiet
    // again when the bench returns (and before leaving swarm mode).
    let label = format!("label=com.docker.swarm.service.name={name}");
    let gone_by = Instant::now() + Duration::from_secs(60);
    while Instant::now() < gone_by {
        match docker(&["ps", "-aq", "--filter", &label]) {
            Ok(ids) if ids.trim().is_empty() => break,
            Err(_) => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    if we_started {
        let _ = docker(&["swarm", "leave", "--force"]);
    }
    result
}

fn docker_run(args: &DeployArgs) -> Result<f64> {
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for slot in 1..=args.instances {
        let port = format!("PORT={}", 21_000 + slot);
        let mut run = vec!["run", "-d", "--cpus", "0.1", "-m", "32m"];
        match args.network {
            Network::Bridge => run.extend(["-p", "8080"]),
            Network::Host => run.extend(["--network", "host", "-e", &port]),
        }
        run.push(&args.image);
        ids.push(docker(&run)?);
    }
    let s = t0.elapsed().as_secs_f64();
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    let _ = docker(&rm);
    Ok(s)
}
