//! `agora services` (the daemon) and the operator commands on it:
//! `agora app deploy|list|show|endpoints|scale|autoscale|restart|destroy`,
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
    /// the routers' tokens (comma-separated, e.g. `router`); the same
    /// principals alone may post load reports (`/v1/endpoints/load`, which
    /// decide autoscaled instance counts). Others get 403.
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
    if cfg.api_tokens && cfg.drain_principals.is_empty() {
        tracing::warn!(
            "--require-tokens without --drain-principals: any valid token of the cluster may join the drains, ack them and post load reports (which decide instance counts); name your routers' principals with --drain-principals"
        );
    }
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
            let mut msg = String::from(if path.starts_with("/v1/autoscalers") {
                "the autoscaling policy is not valid:"
            } else {
                "the app definition is not valid:"
            });
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
        let mut app = v["app"].clone();
        // The autoscaler, when the app has one (Agora's own field).
        if let Ok(p) = call(c, "GET", &autoscaler_path(id), None).await
            && let Some(o) = app.as_object_mut()
        {
            o.insert("autoscaler".into(), p);
        }
        println!("{}", serde_json::to_string_pretty(&app)?);
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
    match call(c, "GET", &autoscaler_path(id), None).await {
        Ok(p) => {
            println!();
            print!("{}", autoscaler_text(&p, now_unix()));
        }
        Err(e) if e.is::<NotFound>() => {}
        Err(e) => println!("\nautoscaler: cannot read it: {e:#}"),
    }
    Ok(())
}

fn autoscaler_path(id: &str) -> String {
    format!("/v1/autoscalers/{}", id.trim_start_matches('/'))
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `60%`, `60` → 60; `0.6` stays 0.6 (a percent, as written).
fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    let v: f64 = t
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 60%)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{s:?}: a target must be above 0"));
    }
    Ok(v)
}

fn parse_positive(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{s:?}: a target must be above 0"));
    }
    Ok(v)
}

/// `agora app autoscale`: the policy's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct AutoscaleArgs {
    /// The app's id, e.g. /demo/web.
    pub id: String,
    /// Delete the policy: the app keeps the count it has and is scaled by
    /// hand again.
    #[arg(long, conflicts_with_all = ["min", "max", "cpu", "memory", "rps", "in_flight",
        "latency_p95", "idle_after", "scale_up_window", "scale_down_window", "tolerance"])]
    pub off: bool,
    /// Fewest instances (0: scale to zero when idle; needs --idle-after).
    #[arg(long, required_unless_present = "off")]
    pub min: Option<u32>,
    /// Most instances (at most 10000).
    #[arg(long, required_unless_present = "off")]
    pub max: Option<u32>,
    /// Target CPU use, percent of the app's requested cpus, averaged over
    /// serving instances: 60% or 60.
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT")]
    pub cpu: Option<f64>,
    /// Target memory use (working set), percent of the app's requested mem.
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT")]
    pub memory: Option<f64>,
    /// Target requests per second per serving instance (all routers).
    #[arg(long, value_parser = parse_positive, value_name = "N")]
    pub rps: Option<f64>,
    /// Target requests in flight per serving instance (all routers).
    #[arg(long, value_parser = parse_positive, value_name = "N")]
    pub in_flight: Option<f64>,
    /// Target latency p95 (the slowest router's): 150ms, 0.2s.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub latency_p95: Option<Duration>,
    /// With --min 0: go to zero instances after this long without a
    /// request (5m, 300s); the first request wakes the app.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_after: Option<Duration>,
    /// Scale-up stabilisation window (default 0s: at once).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub scale_up_window: Option<Duration>,
    /// Scale-down stabilisation window: the load must stay low this long
    /// (default 300s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub scale_down_window: Option<Duration>,
    /// No change while every metric is within this fraction of its target
    /// (default 0.1, i.e. 10 %).
    #[arg(long, value_name = "FRACTION")]
    pub tolerance: Option<f64>,
    #[command(flatten)]
    pub common: Common,
}

impl AutoscaleArgs {
    /// The policy JSON (`PUT /v1/autoscalers/{appId}`); the API checks it.
    pub fn policy(&self) -> Result<Value> {
        let mut targets = Vec::new();
        let mut add = |metric: &str, v: Option<f64>| {
            if let Some(v) = v {
                targets.push(serde_json::json!({"metric": metric, "value": v}));
            }
        };
        add("cpu", self.cpu);
        add("memory", self.memory);
        add("rps", self.rps);
        add("inFlight", self.in_flight);
        add(
            "latencyP95",
            self.latency_p95.map(|d| d.as_secs_f64() * 1000.0),
        );
        if targets.is_empty() {
            bail!(
                "give at least one target: --cpu 60%, --memory 70%, --rps 200, --in-flight 10 or --latency-p95 150ms"
            );
        }
        let mut p = serde_json::json!({
            "min": self.min.unwrap_or(1),
            "max": self.max.unwrap_or(1),
            "targets": targets,
        });
        let secs = |d: Duration| d.as_secs_f64().round() as u64;
        if let Some(d) = self.idle_after {
            p["idleAfterSeconds"] = secs(d).into();
        }
        if let Some(t) = self.tolerance {
            p["tolerance"] = t.into();
        }
        let mut behavior = serde_json::Map::new();
        if let Some(d) = self.scale_up_window {
            behavior.insert(
                "scaleUp".into(),
                serde_json::json!({"stabilizationWindowSeconds": secs(d)}),
            );
        }
        if let Some(d) = self.scale_down_window {
            behavior.insert(
                "scaleDown".into(),
                serde_json::json!({"stabilizationWindowSeconds": secs(d)}),
            );
        }
        if !behavior.is_empty() {
            p["behavior"] = Value::Object(behavior);
        }
        Ok(p)
    }
}

/// `agora app autoscale ID ...` (PUT) or `--off` (DELETE).
pub async fn autoscale(a: &AutoscaleArgs) -> Result<()> {
    let c = &a.common;
    let path = autoscaler_path(&a.id);
    if a.off {
        call(c, "DELETE", &path, None).await?;
        println!(
            "{}: autoscaling off; it keeps its instance count (agora app scale to change it)",
            a.id
        );
        return Ok(());
    }
    let body = a.policy()?.to_string();
    let v = call(c, "PUT", &path, Some(&body)).await?;
    if c.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", autoscaler_text(&v, now_unix()));
    Ok(())
}

/// A metric's value in its unit.
fn metric_value(metric: &str, v: &Value) -> String {
    let Some(x) = v.as_f64() else {
        return "-".into();
    };
    match metric {
        "cpu" | "memory" => format!("{x:.1}%"),
        "latencyP95" => format!("{x:.0}ms"),
        _ => format!("{x:.2}"),
    }
}

fn ago(now: f64, t: &Value) -> String {
    match t.as_f64() {
        Some(t) => format!("{:.1}s ago", (now - t).max(0.0)),
        None => "-".into(),
    }
}

/// A policy and its status (`GET /v1/autoscalers/{appId}`) as text.
pub fn autoscaler_text(v: &Value, now: f64) -> String {
    let p = &v["policy"];
    let st = &v["status"];
    let mut out = String::new();
    let targets: Vec<String> = p["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let m = t["metric"].as_str().unwrap_or("?");
            format!("{m} {}", metric_value(m, &t["value"]))
        })
        .collect();
    out.push_str(&format!(
        "autoscaler: min {}, max {}, targets {}",
        num(&p["min"]),
        num(&p["max"]),
        targets.join(", ")
    ));
    if let Some(i) = p["idleAfterSeconds"].as_u64() {
        out.push_str(&format!(", to zero after {i}s idle"));
    }
    out.push('\n');
    if st["suspended"].as_bool() == Some(true) {
        out.push_str(&format!(
            "SUSPENDED: {}\n",
            st["suspendedReason"]
                .as_str()
                .unwrap_or("a manual scale was forced")
        ));
    }
    out.push_str(&format!(
        "instances {} ({} ready, {} starting), desired {}{}\n",
        num(&st["instances"]),
        num(&st["ready"]),
        num(&st["notReady"]),
        num(&st["desired"]),
        if st["waking"].as_bool() == Some(true) {
            ", waking from zero"
        } else {
            ""
        }
    ));
    let rows: Vec<Vec<String>> = st["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let name = m["metric"].as_str().unwrap_or("?");
            vec![
                name.to_string(),
                metric_value(name, &m["value"]),
                metric_value(name, &m["target"]),
                ago(now, &m["measuredAt"]),
            ]
        })
        .collect();
    out.push_str(&crate::ops::render(
        &["METRIC", "VALUE", "TARGET", "MEASURED"],
        rows,
    ));
    out.push('\n');
    let d = &st["lastDecision"];
    if d.is_object() {
        out.push_str(&format!(
            "last decision ({}): {}\n",
            ago(now, &d["at"]),
            d["reason"].as_str().unwrap_or("-")
        ));
    }
    if let Some(c) = st["coldStartSeconds"].as_f64() {
        out.push_str(&format!("last cold start: {c:.2}s\n"));
    }
    out
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

pub async fn scale(c: &Common, id: &str, instances: u32, force: bool, wait: Wait) -> Result<()> {
    let path = if force {
        format!("{}?force=true", app_path(id))
    } else {
        app_path(id)
    };
    call(
        c,
        "PUT",
        &path,
        Some(&format!("{{\"instances\": {instances}}}")),
    )
    .await?;
    if force {
        println!(
            "(if {id} is autoscaled, its policy is suspended until `agora app autoscale {id} ...` sets it again)"
        );
    }
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

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        a: AutoscaleArgs,
    }

    fn args(argv: &[&str]) -> Result<AutoscaleArgs, clap::Error> {
        use clap::Parser;
        let mut all = vec!["agora", "/demo/web"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all).map(|c| c.a)
    }

    /// Issue 11: the flags become the policy JSON, in the API's units.
    #[test]
    fn autoscale_flags_make_the_policy() {
        let a = args(&[
            "--min",
            "0",
            "--max",
            "20",
            "--cpu",
            "60%",
            "--rps",
            "200",
            "--latency-p95",
            "150ms",
            "--memory",
            "70",
            "--in-flight",
            "10",
            "--idle-after",
            "5m",
            "--scale-down-window",
            "300s",
            "--scale-up-window",
            "0s",
            "--tolerance",
            "0.2",
        ])
        .unwrap();
        assert_eq!(
            a.policy().unwrap(),
            json!({"min": 0, "max": 20, "targets": [
                {"metric": "cpu", "value": 60.0}, {"metric": "memory", "value": 70.0},
                {"metric": "rps", "value": 200.0}, {"metric": "inFlight", "value": 10.0},
                {"metric": "latencyP95", "value": 150.0}],
                "idleAfterSeconds": 300, "tolerance": 0.2,
                "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0},
                    "scaleDown": {"stabilizationWindowSeconds": 300}}})
        );
        let none = args(&["--min", "1", "--max", "2"]).unwrap();
        assert!(none.policy().unwrap_err().to_string().contains("--cpu"));
        assert!(args(&["--off"]).unwrap().off);
        assert!(args(&["--off", "--min", "1"]).is_err());
        assert!(
            args(&["--cpu", "60%"]).is_err(),
            "--min and --max are needed"
        );
        assert!(args(&["--min", "1", "--max", "2", "--cpu", "-3"]).is_err());
    }

    #[test]
    fn autoscaler_status_shows_metrics_decision_and_suspension() {
        let v = json!({"appId": "/demo/web",
            "policy": {"min": 1, "max": 20, "targets": [{"metric": "cpu", "value": 60.0},
                {"metric": "latencyP95", "value": 150.0}]},
            "status": {"suspended": true, "suspendedReason": "a manual scale from 2 to 5 was forced",
                "instances": 5, "ready": 4, "notReady": 1, "desired": 5,
                "metrics": [{"metric": "cpu", "target": 60.0, "value": 72.25, "measuredAt": 99.5},
                    {"metric": "latencyP95", "target": 150.0, "value": null, "measuredAt": null}],
                "lastDecision": {"at": 90.0, "current": 4, "desired": 5, "direction": "up",
                    "reason": "scale 4 → 5: cpu 72.2% (target 60%)"},
                "lastRequestAt": null, "waking": false, "coldStartSeconds": 1.5}});
        let text = autoscaler_text(&v, 100.0);
        for want in [
            "min 1, max 20, targets cpu 60.0%, latencyP95 150ms",
            "SUSPENDED: a manual scale from 2 to 5 was forced",
            "instances 5 (4 ready, 1 starting), desired 5",
            "72.2%",
            "0.5s ago",
            "last decision (10.0s ago): scale 4 → 5: cpu 72.2% (target 60%)",
            "last cold start: 1.50s",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
    }

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
