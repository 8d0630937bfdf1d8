//! `agora bench deploy`: deploy N instances of the workload image through
//! the services framework until all are healthy, and in the same run do the
//! same with Docker Swarm mode (`docker service create --replicas N` until
//! N/N running; swarm mode is left afterwards). If swarm mode cannot be
//! initialised, N `docker run -d` in sequence are the peer instead.

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
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
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
    docker(&["image", "inspect", &args.image])
        .with_context(|| format!("image {} missing: run `bash images/build.sh`", args.image))?;
    let agora_s = agora(&args).await?;
    eprintln!(
        "Agora: {} instances healthy in {agora_s:.2} s",
        args.instances
    );
    let (peer, peer_s) = match swarm(&args).await {
        Ok(s) => ("swarm", s),
        Err(e) => {
            eprintln!("swarm mode unavailable ({e:#}); comparing with docker run -d in sequence");
            ("docker-run", docker_run(&args)?)
        }
    };
    let ratio = agora_s / peer_s;
    eprintln!(
        "{peer}: {} running in {peer_s:.2} s; ratio {ratio:.2} (goal ≤ 0.5)",
        args.instances
    );
    if args.json {
        println!(
            "{}",
            json!({"bench": "deploy", "instances": args.instances, "agora_s": agora_s, "peer": peer, "peer_s": peer_s, "ratio": ratio})
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
        if let Ok((200, body)) = http_send("GET", &svc, "/v2/info", None).await
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
    let app = json!({
        "id": "/bench/web", "instances": n, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": args.image},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]},
        "networks": [{"mode": "container/bridge"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 30, "intervalSeconds": 0.2, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}]
    });
    let t0 = Instant::now();
    let (code, body) = http_send("POST", &svc, "/v2/apps", Some(&app.to_string())).await?;
    ensure!(code == 201, "creating the app answered {code}: {body}");
    let result = loop {
        let (_, body) = http_send("GET", &svc, "/v2/apps/bench/web", None).await?;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["app"]["tasksHealthy"].as_u64() == Some(n as u64) {
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
    let t0 = Instant::now();
    let created = docker(&[
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
        &args.image,
    ]);
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
            if t0.elapsed() > Duration::from_secs(300) {
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
    for _ in 0..args.instances {
        ids.push(docker(&[
            "run",
            "-d",
            "--cpus",
            "0.1",
            "-m",
            "32m",
            &args.image,
        ])?);
    }
    let s = t0.elapsed().as_secs_f64();
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    let _ = docker(&rm);
    Ok(s)
}
