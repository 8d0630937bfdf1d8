//! `agora agent`: runs an agent. This build has the hollow runtime (tasks are
//! simulated, nothing is executed); container runtimes plug into the same
//! `ContainerRuntime` trait.

use crate::util::{LogFormat, parse_duration};
use agora_agent::{AgentConfig, Connector};
use agora_core::Resources;
use anyhow::{Context, Result, bail};
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Simulated tasks: STARTING at once, RUNNING after --hollow-start-delay.
    Hollow,
}

#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The master's address.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,

    /// Name this agent registers under.
    #[arg(long, env = "AGORA_HOSTNAME")]
    pub hostname: Option<String>,

    /// Resources to offer, Mesos syntax.
    #[arg(
        long,
        env = "AGORA_RESOURCES",
        default_value = "cpus:4;mem:8192;disk:20000;ports:[31000-32000]"
    )]
    pub resources: String,

    /// Attributes, e.g. zone=a,public=true.
    #[arg(long, env = "AGORA_ATTRIBUTES", default_value = "")]
    pub attributes: String,

    /// Which runtime runs tasks.
    #[arg(long, value_enum, default_value = "hollow")]
    pub runtime: RuntimeKind,

    /// Hollow runtime: delay between STARTING and RUNNING.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub hollow_start_delay: Duration,

    /// First retry delay for unacknowledged status updates (doubles up to 60s).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub status_retry: Duration,

    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

pub fn parse_attributes(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("attribute {part:?} must look like name=value");
        };
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

pub fn master_url(m: &str) -> String {
    if m.starts_with("http://") || m.starts_with("https://") {
        m.to_string()
    } else {
        format!("http://{m}")
    }
}

impl AgentArgs {
    pub fn config(&self) -> Result<AgentConfig> {
        let resources = Resources::parse(&self.resources).context("--resources")?;
        Ok(AgentConfig {
            hostname: self.hostname.clone().unwrap_or_else(hostname),
            resources,
            attributes: parse_attributes(&self.attributes).context("--attributes")?,
            status_retry_min: self.status_retry,
            ..AgentConfig::default()
        })
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub async fn run(args: AgentArgs) -> Result<()> {
    crate::util::init_logging(args.log_format, "info");
    let cfg = args.config()?;
    let url = master_url(&args.master);
    eprintln!(
        "agora agent ({:?} runtime) offering {} to master {url}",
        args.runtime, cfg.resources
    );
    let (handle, _rt, join) =
        agora_agent::spawn_hollow(cfg, Connector::Address(url), args.hollow_start_delay);
    tokio::select! {
        r = join => { r.context("agent task panicked")?.context("agent stopped")?; }
        _ = crate::util_signal::terminated() => {
            handle.control(agora_agent::Control::Stop);
            eprintln!("agent stopped (tasks left as they are)");
        }
    }
    Ok(())
}
