//! `agora dev`: an all-in-one local cluster (master + agent) on an embedded
//! store, for trying Agora out.

use crate::agent_cmd::hostname;
use crate::master_cmd::{MasterArgs, open_registry};
use crate::util::{LogFormat, default_data_root, parse_duration};
use agora_agent::{AgentConfig, Connector};
use agora_core::Resources;
use agora_master::actor::tokio_util_shutdown;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// Master address (gRPC + HTTP).
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: String,

    /// Where state is kept. Default: $AGORA_HOME/dev or ~/.local/share/agora/dev.
    #[arg(long, env = "AGORA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Resources of the local agent (Mesos syntax).
    #[arg(long, default_value = "cpus:4;mem:8192;disk:20000;ports:[31000-32000]")]
    pub resources: String,

    /// Hollow runtime: delay between STARTING and RUNNING.
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    pub hollow_start_delay: Duration,

    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

pub async fn run(args: DevArgs) -> Result<()> {
    crate::util::init_logging(args.log_format, "info,agora_master=info");
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_root().join("dev"));
    let master_args = MasterArgs {
        listen: Some(args.listen.clone()),
        data_dir: Some(data_dir.join("master")),
        ..Default::default()
    };
    let r = master_args.resolve()?;
    let listener = tokio::net::TcpListener::bind(&r.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is `agora dev` already running? use --listen)",
                r.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let registry = open_registry(&r.data_dir)?;
    let (trigger, shutdown) = tokio_util_shutdown::channel();
    let server = tokio::spawn(agora_master::serve(
        listener, r.config, registry, shutdown, None,
    ));

    let cfg = AgentConfig {
        hostname: hostname(),
        resources: Resources::parse(&args.resources).context("--resources")?,
        ..AgentConfig::default()
    };
    let (agent, _rt, _join) = agora_agent::spawn_hollow(
        cfg,
        Connector::Address(format!("http://{addr}")),
        args.hollow_start_delay,
    );
    let agent_id = tokio::time::timeout(Duration::from_secs(15), agent.registered())
        .await
        .context("the local agent did not register within 15s")?;

    println!("agora dev is running (Ctrl-C to stop)");
    println!("  master     {addr}  (gRPC: frameworks and agents)");
    println!("  state      http://{addr}/state");
    println!("  metrics    http://{addr}/metrics");
    println!("  health     http://{addr}/health");
    println!("  agent      {agent_id} (hollow runtime: tasks are simulated, no containers yet)");
    println!("  data dir   {}", data_dir.display());
    println!(
        "try: cargo run --example keep_n -p agora-sdk -- --master http://{addr} --instances 3"
    );

    tokio::select! {
        res = server => { res.context("master task panicked")??; }
        _ = crate::util_signal::terminated() => {
            println!("stopping");
            agent.control(agora_agent::Control::Stop);
            trigger.fire();
        }
    }
    Ok(())
}
