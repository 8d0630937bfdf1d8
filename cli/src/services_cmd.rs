//! `agora services` (the daemon) and the operator commands on it:
//! `agora app deploy|list|show|scale|restart|destroy`,
//! `agora deployment list|rollback`.

use crate::ops::{NotFound, Output, table};
use crate::util::{LogFormat, default_data_root, http_send};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct ServicesArgs {
    /// The master.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Address of the REST API (Marathon v2 subset).
    #[arg(long, env = "AGORA_SERVICES_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where apps, deployments and the framework id are stored.
    /// Default: $AGORA_HOME/services or ~/.local/share/agora/services.
    #[arg(long, env = "AGORA_SERVICES_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Role the framework's resources are accounted to.
    #[arg(long, default_value = "*")]
    pub role: String,
    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

pub fn config(master: &str, data_dir: PathBuf, role: &str) -> agora_services::ServicesConfig {
    agora_services::ServicesConfig {
        master: crate::agent_cmd::master_url(master),
        data_dir,
        name: "agora-services".into(),
        role: role.into(),
        failover_timeout: Duration::from_secs(7 * 24 * 3600),
    }
}

pub async fn run(args: ServicesArgs) -> Result<()> {
    crate::util::init_logging(args.log_format, "info");
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_root().join("services"));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (already running? use --listen)",
                args.listen
            )
        })?;
    eprintln!(
        "agora services: REST API http://{} → master {}",
        listener.local_addr()?,
        args.master
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let cfg = config(&args.master, data_dir, &args.role);
    let server = tokio::spawn(agora_services::serve(listener, cfg, stop));
    tokio::select! {
        r = server => { r.context("services task panicked")??; }
        _ = crate::util_signal::terminated() => { let _ = stop_tx.send(true); }
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The services framework's API (host:port).
    #[arg(
        long,
        env = "AGORA_SERVICES",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub services: String,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        global = true
    )]
    pub output: Output,
}

async fn call(c: &Common, method: &str, path: &str, body: Option<&str>) -> Result<Value> {
    let (code, text) = http_send(method, &c.services, path, body).await.map_err(|e| {
        anyhow!("cannot reach the services framework at {}: {e:#}\nis `agora dev` (or `agora services`) running? set --services or AGORA_SERVICES", c.services)
    })?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    match code {
        200..=299 => Ok(v),
        404 => Err(NotFound(v["message"].as_str().unwrap_or(&text).to_string()).into()),
        422 => {
            let mut msg = String::from("the app definition is not valid:");
            for d in v["details"].as_array().into_iter().flatten() {
                for e in d["errors"].as_array().into_iter().flatten() {
                    msg.push_str(&format!(
                        "\n  {}: {}",
                        d["path"].as_str().unwrap_or("?"),
                        e.as_str().unwrap_or("?")
                    ));
                }
            }
            bail!(msg)
        }
        _ => bail!(
            "{method} {path} answered {code}: {}",
            v["message"].as_str().unwrap_or(&text)
        ),
    }
}

fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

/// Agora's view of an app: Marathon's fields plus `waiting`,
/// `launchDelaySeconds` and tasks' `healthy` (`/v2` has Marathon's only).
fn agora_app_path(id: &str) -> String {
    format!("/agora/v1/apps/{}", id.trim_start_matches('/'))
}

pub async fn deploy(c: &Common, file: &PathBuf, wait: bool, timeout: Duration) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let def: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    let id = def["id"]
        .as_str()
        .map(|s| format!("/{}", s.trim_start_matches('/')));
    // Create, or replace when it exists.
    let created = match call(c, "POST", "/v2/apps", Some(&text)).await {
        Ok(v) => v,
        Err(e) if e.to_string().contains("already exists") => {
            let id = id
                .clone()
                .ok_or_else(|| anyhow!("the definition has no id"))?;
            call(c, "PUT", &app_path(&id), Some(&text)).await?
        }
        Err(e) => return Err(e),
    };
    let id = id
        .or_else(|| created["id"].as_str().map(str::to_string))
        .unwrap_or_default();
    println!("deploying {id}");
    if wait {
        wait_for(c, &id, timeout).await?;
    }
    Ok(())
}

/// Shows progress until the app has its instances and no deployment, or
/// says why it is stuck.
async fn wait_for(c: &Common, id: &str, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    let mut last = String::new();
    loop {
        let v = call(c, "GET", &agora_app_path(id), None).await?;
        let app = &v["app"];
        let want = app["instances"].as_u64().unwrap_or(0);
        let running = app["tasksRunning"].as_u64().unwrap_or(0);
        let healthy = app["tasksHealthy"].as_u64().unwrap_or(0);
        let checks = app["healthChecks"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let ready = if checks { healthy } else { running };
        let deploying = app["deployments"].as_array().is_some_and(|d| !d.is_empty());
        let waiting = app["waiting"].as_str().unwrap_or("");
        let bar_len = 30usize;
        let filled = if want == 0 {
            bar_len
        } else {
            (ready.min(want) as usize * bar_len) / want as usize
        };
        let line = format!(
            "[{}{}] {ready}/{want} {}{}",
            "#".repeat(filled),
            "-".repeat(bar_len - filled),
            if checks { "healthy" } else { "running" },
            if waiting.is_empty() {
                String::new()
            } else {
                format!(" — {waiting}")
            }
        );
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if ready >= want && !deploying && app["tasksStaged"].as_u64().unwrap_or(0) == 0 {
            println!("{id}: {ready}/{want} ready");
            return Ok(());
        }
        if t0.elapsed() > timeout {
            bail!(
                "{id} is not ready after {timeout:?}: {}",
                if waiting.is_empty() {
                    "still deploying"
                } else {
                    waiting
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn list(c: &Common) -> Result<()> {
    let v = call(c, "GET", "/agora/v1/apps", None).await?;
    if c.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v["apps"])?);
        return Ok(());
    }
    let rows = v["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                a["id"].as_str().unwrap_or("").to_string(),
                format!("{}/{}", a["tasksRunning"], a["instances"]),
                a["tasksHealthy"].to_string(),
                format!("{} cpu, {} MiB", a["cpus"], a["mem"]),
                if a["deployments"].as_array().is_some_and(|d| !d.is_empty()) {
                    "deploying".into()
                } else {
                    "".into()
                },
                a["waiting"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "RUNNING",
            "HEALTHY",
            "RESOURCES",
            "DEPLOYMENT",
            "WAITING",
        ],
        rows,
    );
    Ok(())
}

pub async fn show(c: &Common, id: &str) -> Result<()> {
    let v = call(c, "GET", &agora_app_path(id), None).await?;
    if c.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v["app"])?);
        return Ok(());
    }
    let a = &v["app"];
    println!(
        "{}  {}/{} running, {} healthy, version {}",
        a["id"].as_str().unwrap_or(""),
        a["tasksRunning"],
        a["instances"],
        a["tasksHealthy"],
        a["version"].as_str().unwrap_or("")
    );
    if let Some(w) = a["waiting"].as_str() {
        println!("waiting: {w}");
    }
    let rows = a["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                t["id"].as_str().unwrap_or("").to_string(),
                t["host"].as_str().unwrap_or("").to_string(),
                t["state"].as_str().unwrap_or("").to_string(),
                t["healthy"].to_string(),
                t["ports"].to_string(),
            ]
        })
        .collect();
    table(&["TASK", "HOST", "STATE", "HEALTHY", "PORTS"], rows);
    Ok(())
}

pub async fn scale(c: &Common, id: &str, instances: u32) -> Result<()> {
    call(
        c,
        "PUT",
        &app_path(id),
        Some(&format!("{{\"instances\": {instances}}}")),
    )
    .await?;
    println!("scaling {id} to {instances}");
    Ok(())
}

pub async fn restart(c: &Common, id: &str) -> Result<()> {
    let v = call(c, "POST", &format!("{}/restart", app_path(id)), None).await?;
    println!(
        "restarting {id} (deployment {})",
        v["deploymentId"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub async fn destroy(c: &Common, id: &str) -> Result<()> {
    call(c, "DELETE", &app_path(id), None).await?;
    println!("destroying {id}");
    Ok(())
}

pub async fn deployment_list(c: &Common) -> Result<()> {
    let v = call(c, "GET", "/agora/v1/deployments", None).await?;
    if c.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let act = d;
            vec![
                d["id"].as_str().unwrap_or("").to_string(),
                d["affectedApps"][0].as_str().unwrap_or("").to_string(),
                format!(
                    "{} new / {} old / target {}",
                    act["newInstances"], act["oldInstances"], act["target"]
                ),
                d["waiting"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(&["ID", "APP", "PROGRESS", "WAITING"], rows);
    Ok(())
}

pub async fn rollback(c: &Common, id: &str, force: bool) -> Result<()> {
    let path = format!(
        "/v2/deployments/{id}{}",
        if force { "?force=true" } else { "" }
    );
    call(c, "DELETE", &path, None).await?;
    println!(
        "{} deployment {id}",
        if force { "stopped" } else { "rolling back" }
    );
    Ok(())
}
