//! `agora services` (the daemon) and the operator commands on it:
//! `agora app deploy|list|show|endpoints|scale|restart|destroy`,
//! `agora deployment list|rollback`.

use crate::ops::{NotFound, Output, table};
use crate::util::{LogFormat, default_data_root, http_send, parse_duration};
use crate::wait::{AppProgress, Step, until};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Log format on stderr (AGORA_LOG sets the level, e.g. debug).
    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Range apps' service ports (`servicePort` 0) are assigned from.
    #[arg(long, value_parser = parse_port_range, default_value = "10000-20000")]
    pub service_ports: (u32, u32),
    /// The cluster CA certificate (ca.crt) to verify an https master with;
    /// a bare --master address then means https.
    #[arg(long, env = "AGORA_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Serve the REST API over TLS with this certificate (`agora ca issue
    /// --server HOST`); reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "AGORA_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, env = "AGORA_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve the REST API in plain HTTP: only on a trusted network or for
    /// tests. Without it, the daemon refuses to start without --tls-cert.
    #[arg(long, env = "AGORA_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// File holding the framework's bearer token for the master (needed
    /// when the master runs with --acls; AGORA_TOKEN works too).
    #[arg(long, env = "AGORA_MASTER_TOKEN_FILE", value_name = "FILE")]
    pub master_token_file: Option<PathBuf>,
    /// Require a bearer token on the REST API (checked with the master's
    /// /v1/auth/whoami, cached 5 s); /ping, /openapi.json and the discovery
    /// routes the router reads stay open. Needs a master with --acls.
    #[arg(long, env = "AGORA_SERVICES_REQUIRE_TOKENS")]
    pub require_tokens: bool,
    /// With --require-tokens: the only principals that may join the drains
    /// (`/v1/endpoints/watch?router=`) and ack them, i.e. the principals of
    /// the routers' tokens (comma-separated, e.g. `router`). Others get 403.
    /// Without it any valid token of the cluster may, and could claim a
    /// router's id (free after a restart) and ack drains for it.
    #[arg(
        long,
        env = "AGORA_SERVICES_DRAIN_PRINCIPALS",
        value_name = "PRINCIPALS",
        value_delimiter = ','
    )]
    pub drain_principals: Vec<String>,
}

/// `--drain-principals`, checked: names, and only with `--require-tokens`
/// (without tokens there is no principal to check).
fn drain_principals(args: &ServicesArgs) -> Result<Vec<String>> {
    let names: Vec<String> = args
        .drain_principals
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if !names.is_empty() && !args.require_tokens {
        bail!(
            "--drain-principals needs --require-tokens (without tokens the API knows no principals)"
        );
    }
    Ok(names)
}

/// `FIRST-LAST`, two port numbers 1-65535, FIRST ≤ LAST.
fn parse_port_range(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a port range like 10000-20000");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u32 = a.trim().parse().map_err(|_| bad())?;
    let b: u32 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || b > 65_535 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

pub fn config(master: &str, data_dir: PathBuf, role: &str) -> agora_services::ServicesConfig {
    agora_services::ServicesConfig {
        master: crate::agent_cmd::master_url(master),
        data_dir,
        name: "agora-services".into(),
        role: role.into(),
        failover_timeout: Duration::from_secs(7 * 24 * 3600),
        service_ports: agora_services::scheduler::DEFAULT_SERVICE_PORTS,
        master_tls: None,
        master_token: None,
        api_tokens: false,
        drain_principals: Vec::new(),
    }
}

/// The framework's token: `--master-token-file`, else `--token`/`AGORA_TOKEN`,
/// else `--token-file`.
fn master_token(
    args: &ServicesArgs,
    token: Option<String>,
    token_file: Option<PathBuf>,
) -> Result<Option<std::sync::Arc<agora_core::secrets::SecretValue>>> {
    let file = args.master_token_file.clone().or(token_file);
    let t = if let Some(t) = token.filter(|t| !t.trim().is_empty()) {
        Some(agora_master::auth::tokens::Token::new(t.trim()))
    } else {
        file.as_deref()
            .map(crate::context::read_token_file)
            .transpose()?
    };
    Ok(t.map(|t| {
        std::sync::Arc::new(agora_core::secrets::SecretValue::new(
            t.expose().as_bytes().to_vec(),
        ))
    }))
}

pub async fn run(
    args: ServicesArgs,
    token: Option<String>,
    token_file: Option<PathBuf>,
) -> Result<()> {
    crate::util::init_logging(args.log_format, "info");
    let server_tls = match crate::tls::pair(&args.tls_cert, &args.tls_key)? {
        Some((c, k)) => Some(crate::tls::load_server(c, k, None)?),
        None if args.insecure => {
            crate::tls::warn_insecure("agora services");
            None
        }
        None => {
            let d = crate::ca_cmd::default_dir();
            return Err(crate::tls::refuse_plain(
                "agora services",
                &format!(
                    "agora ca issue --server <this host's name>\n  \
                     agora services --master https://MASTER:5050 --tls-ca {d}/ca.crt \
                     --tls-cert {d}/<name>.crt --tls-key {d}/<name>.key",
                    d = d.display()
                ),
            ));
        }
    };
    let master = crate::tls::url_for(&args.master, args.tls_ca.is_some(), "--master")?;
    let master_tls = match &args.tls_ca {
        Some(ca) => Some(crate::tls::client(ca)?),
        None if master.starts_with("https://") => {
            bail!("--master {master} is https: give --tls-ca (the cluster's ca.crt) to verify it")
        }
        None => None,
    };
    let master_token = master_token(&args, token, token_file)?;
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
        "agora services: REST API {}://{} → master {master}",
        if server_tls.is_some() {
            "https"
        } else {
            "http"
        },
        listener.local_addr()?,
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut cfg = config(&args.master, data_dir, &args.role);
    cfg.master = master;
    cfg.master_tls = master_tls;
    cfg.service_ports = args.service_ports;
    cfg.master_token = master_token;
    cfg.api_tokens = args.require_tokens;
    cfg.drain_principals = drain_principals(&args)?;
    let server = tokio::spawn(agora_services::serve_tls(listener, cfg, stop, server_tls));
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

/// `--wait` and `--timeout`, shared by the commands that change an app.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Wait {
    /// Wait until it is done, showing progress (exit code 5 if --timeout
    /// passes first; the change goes on regardless).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (e.g. 90s, 5m).
    #[arg(long, value_parser = parse_duration, default_value = "5m", requires = "wait")]
    pub timeout: Duration,
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
    format!("/v1/apps/{}", id.trim_start_matches('/'))
}

pub async fn deploy(c: &Common, file: &PathBuf, wait: Wait) -> Result<()> {
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
    if wait.wait {
        wait_for(c, &id, wait.timeout).await?;
    }
    Ok(())
}

/// Waits (with progress) until the app has its instances ready, no more
/// than that running and no deployment in progress.
pub async fn wait_for(c: &Common, id: &str, timeout: Duration) -> Result<()> {
    let done = until(id, timeout, async || {
        let v = call(c, "GET", &agora_app_path(id), None).await?;
        let a = AppProgress::of(&v["app"]);
        Ok(if a.done() {
            Step::Done(a)
        } else {
            Step::Pending {
                done: a.ready,
                total: a.want,
                message: a.message(),
            }
        })
    })
    .await?;
    println!(
        "{id}: {}/{} {}",
        done.ready,
        done.want,
        if done.checks { "healthy" } else { "running" }
    );
    Ok(())
}

/// The live (not yet ended) tasks of app `id`.
async fn live_tasks(c: &Common, id: &str) -> Result<u64> {
    let v = call(c, "GET", "/v2/tasks", None).await?;
    let id = id.trim_start_matches('/');
    let live = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["appId"].as_str().map(|a| a.trim_start_matches('/')) == Some(id))
        .filter(|t| {
            let state = t["state"].as_str().unwrap_or("");
            !agora_core::task::ALL_TASK_STATES
                .iter()
                .any(|s| s.as_str() == state && s.is_terminal())
        })
        .count();
    Ok(live as u64)
}

pub async fn list(c: &Common) -> Result<()> {
    let v = call(c, "GET", "/v1/apps", None).await?;
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
                format!("{}/{}", num(&a["tasksRunning"]), num(&a["instances"])),
                if has_checks(a) {
                    num(&a["tasksHealthy"])
                } else {
                    "-".into()
                },
                format!("{} cpu, {} MiB", num(&a["cpus"]), num(&a["mem"])),
                if a["deployments"].as_array().is_some_and(|d| !d.is_empty()) {
                    "deploying".into()
                } else {
                    "-".into()
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
        "{}  {}/{} running, {}, version {}",
        a["id"].as_str().unwrap_or(""),
        num(&a["tasksRunning"]),
        num(&a["instances"]),
        if has_checks(a) {
            format!("{} healthy", num(&a["tasksHealthy"]))
        } else {
            "no health checks".into()
        },
        a["version"].as_str().unwrap_or("-")
    );
    if let Some(w) = a["waiting"].as_str().filter(|w| !w.is_empty()) {
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
                health(&t["healthy"]),
                ports(&t["ports"]),
            ]
        })
        .collect();
    table(&["TASK", "HOST", "STATE", "HEALTHY", "PORTS"], rows);
    Ok(())
}

/// `agora app endpoints ID`: the discovery view of an app.
pub async fn endpoints(c: &Common, id: &str) -> Result<()> {
    let v = call(
        c,
        "GET",
        &format!("/v1/services/{}", id.trim_start_matches('/')),
        None,
    )
    .await?;
    if c.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let (head, rows) = endpoint_rows(&v);
    println!("{head}");
    table(&["TASK", "ADDRESS", "PORTS", "STATE", "HEALTHY"], rows);
    Ok(())
}

/// The summary line (DNS name, service ports, exposure) and the table rows
/// of `GET /v1/services/{id}`.
fn endpoint_rows(v: &Value) -> (String, Vec<Vec<String>>) {
    let ports: Vec<String> = v["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let name = p["name"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| num(&p["index"]));
            let mut s = format!("{name}: service port {}", num(&p["servicePort"]));
            s.push_str(&format!(", {}", p["expose"].as_str().unwrap_or("internal")));
            let vhosts: Vec<&str> = p["vhosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str())
                .collect();
            if !vhosts.is_empty() {
                s.push_str(&format!(
                    " ({}{})",
                    vhosts.join(","),
                    p["path"].as_str().unwrap_or("")
                ));
            }
            s
        })
        .collect();
    let head = format!(
        "{}  {}{}",
        v["id"].as_str().unwrap_or(""),
        v["dnsName"].as_str().unwrap_or("(no DNS name)"),
        if ports.is_empty() {
            "  no ports".to_string()
        } else {
            format!("  {}", ports.join("; "))
        }
    );
    let rows = v["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let ports: Vec<String> = i["ports"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, p)| format!("{k}={}", num(p)))
                .collect();
            vec![
                i["taskId"].as_str().unwrap_or("").to_string(),
                i["address"].as_str().unwrap_or("").to_string(),
                if ports.is_empty() {
                    "-".into()
                } else {
                    ports.join(",")
                },
                i["state"].as_str().unwrap_or("").to_string(),
                health(&i["healthy"]),
            ]
        })
        .collect();
    (head, rows)
}

/// A number from the API (`32`, not `32.0`), or `-` when absent.
fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
        Some(_) => v.to_string(),
        None => "-".into(),
    }
}

fn has_checks(app: &Value) -> bool {
    app["healthChecks"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

/// Host ports as `31000,31001`, or `-`.
fn ports(v: &Value) -> String {
    let list: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p.to_string())
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

/// A task's health for a table: `-` when it has no health check (or no
/// verdict yet), never `null`.
fn health(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "healthy".into(),
        Some(false) => "unhealthy".into(),
        None => "-".into(),
    }
}

pub async fn scale(c: &Common, id: &str, instances: u32, wait: Wait) -> Result<()> {
    call(
        c,
        "PUT",
        &app_path(id),
        Some(&format!("{{\"instances\": {instances}}}")),
    )
    .await?;
    println!("scaling {id} to {instances}");
    if wait.wait {
        wait_for(c, id, wait.timeout).await?;
    }
    Ok(())
}

pub async fn restart(c: &Common, id: &str, wait: Wait) -> Result<()> {
    let v = call(c, "POST", &format!("{}/restart", app_path(id)), None).await?;
    println!(
        "restarting {id} (deployment {})",
        v["deploymentId"].as_str().unwrap_or("?")
    );
    if wait.wait {
        wait_for(c, id, wait.timeout).await?;
    }
    Ok(())
}

pub async fn destroy(c: &Common, id: &str, wait: Wait) -> Result<()> {
    let before = if wait.wait {
        live_tasks(c, id).await?
    } else {
        0
    };
    call(c, "DELETE", &app_path(id), None).await?;
    println!("destroying {id}");
    if !wait.wait {
        return Ok(());
    }
    until(id, wait.timeout, async || {
        let app_gone = match call(c, "GET", &app_path(id), None).await {
            Err(e) if e.downcast_ref::<NotFound>().is_some() => true,
            Err(e) => return Err(e),
            Ok(_) => false,
        };
        let live = live_tasks(c, id).await?;
        Ok(if app_gone && live == 0 {
            Step::Done(())
        } else {
            Step::Pending {
                done: before.saturating_sub(live),
                total: before.max(live),
                message: "instances stopped".into(),
            }
        })
    })
    .await?;
    println!("{id}: gone, every instance stopped");
    Ok(())
}

pub async fn deployment_list(c: &Common) -> Result<()> {
    let v = call(c, "GET", "/v1/deployments", None).await?;
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

pub async fn rollback(c: &Common, id: &str, force: bool, wait: Wait) -> Result<()> {
    // The app it concerns, to follow the rollback.
    let app = if wait.wait && !force {
        let list = call(c, "GET", "/v2/deployments", None).await?;
        list.as_array()
            .into_iter()
            .flatten()
            .find(|d| d["id"].as_str() == Some(id))
            .and_then(|d| d["affectedApps"][0].as_str())
            .map(str::to_string)
    } else {
        None
    };
    let path = format!(
        "/v2/deployments/{id}{}",
        if force { "?force=true" } else { "" }
    );
    let v = call(c, "DELETE", &path, None).await?;
    if force {
        println!("stopped deployment {id} where it was");
        return Ok(());
    }
    println!(
        "rolling back deployment {id} (deployment {})",
        v["deploymentId"].as_str().unwrap_or("?")
    );
    if let Some(app) = app {
        wait_for(c, &app, wait.timeout).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_show_the_name_service_ports_and_instances() {
        let v = json!({"id": "/demo/web", "dnsName": "web.demo.agora",
            "ports": [{"index": 0, "name": "http", "servicePort": 10000, "expose": "public",
                "vhosts": ["web.example.com"], "path": "/api"},
                {"index": 1, "name": null, "servicePort": 10001, "expose": "internal", "vhosts": [], "path": null}],
            "instances": [{"taskId": "t1", "address": "h1", "ports": {"http": 31000, "1": 31001},
                "state": "draining", "healthy": null}]});
        let (head, rows) = endpoint_rows(&v);
        assert_eq!(
            head,
            "/demo/web  web.demo.agora  http: service port 10000, public (web.example.com/api); 1: service port 10001, internal"
        );
        assert_eq!(
            rows,
            vec![vec!["t1", "h1", "1=31001,http=31000", "draining", "-"]]
        );
        assert_eq!(parse_port_range("10000-20000"), Ok((10_000, 20_000)));
        assert!(parse_port_range("20000-10000").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("10000").is_err());
    }

    #[test]
    fn drain_principals_need_require_tokens() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            s: ServicesArgs,
        }
        let parse = |a: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(
                std::iter::once("services").chain(a.iter().copied()),
            )
            .unwrap()
            .s
        };
        let a = parse(&["--require-tokens", "--drain-principals", "router, edge"]);
        assert_eq!(drain_principals(&a).unwrap(), ["router", "edge"]);
        assert!(drain_principals(&parse(&[])).unwrap().is_empty());
        let e = drain_principals(&parse(&["--drain-principals", "router"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --require-tokens"), "{e}");
    }

    #[test]
    fn absent_values_show_as_a_dash_never_null() {
        assert_eq!(health(&json!(null)), "-");
        assert_eq!(health(&json!(true)), "healthy");
        assert_eq!(health(&json!(false)), "unhealthy");
        assert_eq!(ports(&json!(null)), "-");
        assert_eq!(ports(&json!([31000, 31001])), "31000,31001");
        assert_eq!(num(&json!(null)), "-");
        assert_eq!(num(&json!(3)), "3");
        assert_eq!(num(&json!(32.0)), "32");
        assert_eq!(num(&json!(0.25)), "0.25");
    }
}
