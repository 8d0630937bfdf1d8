//! `agora dev`: an all-in-one local cluster (master + agent + services) on
//! an embedded store, for trying Agora out. With the Docker runtime it builds
//! the demo images first if the engine lacks them (nothing is pulled).

use crate::agent_cmd::{AgentArgs, RuntimeKind};
use crate::master_cmd::{MasterArgs, open_registry};
use crate::util::{LogFormat, default_data_root, parse_duration};
use agora_agent::docker::DockerRuntime;
use agora_master::actor::shutdown;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// Master address (gRPC + HTTP).
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: String,

    /// Services framework REST API address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub services_listen: String,

    /// Agent HTTP API address (logs, metrics).
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub agent_listen: String,

    /// Where state is kept. Default: $AGORA_HOME/dev or ~/.local/share/agora/dev.
    #[arg(long, env = "AGORA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Resources of the local agent (Mesos syntax). Default: detected from the host.
    #[arg(long)]
    pub resources: Option<String>,

    /// Runtime of the local agent. Default: docker if the engine answers, else process.
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeKind>,

    /// Image for tasks that name none (docker runtime).
    #[arg(long, default_value = "agora-busybox:latest")]
    pub default_image: String,

    /// Leave the tasks (containers, or processes with the process runtime) running when stopping.
    #[arg(long)]
    pub keep: bool,

    /// Log format on stderr (AGORA_LOG sets the level, e.g. debug).

    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Hollow runtime: delay between STARTING and RUNNING.
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    pub hollow_start_delay: Duration,

    /// Edge router (publicly exposed ports, by Host and path); `off` to disable.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub edge_listen: String,

    /// DNS server for the cluster's zone (UDP and TCP); `off` to disable.
    #[arg(long, default_value = "127.0.0.1:8053")]
    pub dns_listen: String,

    /// Internal L7 router (every app by Host `<app>.<group>.<domain>`); `off` to disable.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub internal_listen: String,

    /// The routers' admin listener: `GET /health` and `GET /metrics`
    /// (requests, latency, held requests per app port); `off` to disable.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub router_admin_address: String,

    /// Address of the L4 `servicePort` listeners; `off` to disable.
    #[arg(long, default_value = "127.0.0.1")]
    pub internal_address: String,

    /// The DNS zone: app `/demo/web` answers at `web.demo.<domain>`.
    #[arg(long, default_value = "agora")]
    pub domain: String,

    #[command(flatten)]
    pub upstream: crate::router_cmd::DnsUpstreamArgs,

    /// Start the secured setup in one command: a cluster CA and
    /// certificates (under the data dir), TLS on the master with mutual TLS
    /// for the agent, an ACL file, bearer tokens (an admin token for you, one
    /// for the services framework) and a client context file that the CLI
    /// reads automatically. The services REST API then requires a token too.
    #[arg(long)]
    pub secure: bool,
}

/// What `--secure` prepared (all under the data dir; created once, reused).
struct Secure {
    ca_cert: PathBuf,
    /// The CA's CRL (re-issued at every start; `agora ca revoke` adds to it).
    crl: PathBuf,
    master_cert: PathBuf,
    master_key: PathBuf,
    agent_cert: PathBuf,
    agent_key: PathBuf,
    acls: PathBuf,
    admin_token: PathBuf,
    services_token: PathBuf,
    /// The routers' token (principal `router`: no rights on the master;
    /// the services API lets it join the drains and ack them).
    router_token: PathBuf,
}

/// The principal of the routers' token under `agora dev --secure`.
const ROUTER_PRINCIPAL: &str = "router";

impl Secure {
    /// The CA, certificates and ACL file: created when missing, else reused.
    fn prepare(data_dir: &std::path::Path, agent_host: &str) -> Result<Secure> {
        use agora_tls::ca;
        let dir = data_dir.join("ca");
        let ca_cert = dir.join("ca.crt");
        if !ca_cert.exists() {
            ca::init_dir(&dir, 3650).context("creating the dev cluster CA")?;
        }
        let crl = ca::renew_crl(&dir, ca::CRL_DAYS).context("writing the dev CRL")?;
        let issue = |sub: &str, kind: ca::Kind, name: &str| -> Result<(PathBuf, PathBuf)> {
            let out = dir.join(sub);
            let file = name.replace(['/', '\\'], "_");
            let (crt, key) = (
                out.join(format!("{file}.crt")),
                out.join(format!("{file}.key")),
            );
            if crt.exists() && key.exists() {
                return Ok((crt, key));
            }
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            ca::issue_to_dir(&dir, &out, kind, name, &["127.0.0.1".to_string()], 365)
                .with_context(|| format!("issuing the dev {sub} certificate"))
        };
        let (master_cert, master_key) = issue("master", ca::Kind::Server, "localhost")?;
        let (agent_cert, agent_key) = issue("agent", ca::Kind::Agent, agent_host)?;
        let acls = data_dir.join("master").join("acls.toml");
        if !acls.exists() {
            std::fs::write(&acls, agora_master::auth::acl::DEV_SECURE_ACLS)
                .with_context(|| format!("cannot write {}", acls.display()))?;
        }
        Ok(Secure {
            ca_cert,
            crl,
            master_cert,
            master_key,
            agent_cert,
            agent_key,
            acls,
            admin_token: data_dir.join("admin.token"),
            services_token: data_dir.join("services.token"),
            router_token: data_dir.join("router.token"),
        })
    }

    /// The services framework's token: minted once through the running
    /// master's token store and kept (0600) in the data dir.
    fn services_token(
        &self,
        gate: &agora_master::auth::Gate,
    ) -> Result<agora_core::secrets::SecretValue> {
        if self.services_token.exists() {
            let t = crate::context::read_token_file(&self.services_token)?;
            return Ok(agora_core::secrets::SecretValue::new(
                t.expose().as_bytes().to_vec(),
            ));
        }
        let auth = gate
            .auth()
            .context("the master started without authentication")?;
        let (token, _) = auth
            .tokens
            .create("services", None)
            .map_err(|e| anyhow::anyhow!("minting the services framework's token: {e}"))?;
        agora_master::auth::write_secret_file(
            &self.services_token,
            format!("{}\n", token.expose()).as_bytes(),
        )
        .with_context(|| format!("cannot write {}", self.services_token.display()))?;
        Ok(agora_core::secrets::SecretValue::new(
            token.expose().as_bytes().to_vec(),
        ))
    }
}

impl Secure {
    /// The routers' token: minted once (principal `router`) through the
    /// running master's token store and kept (0600) in the data dir.
    fn router_token(
        &self,
        gate: &agora_master::auth::Gate,
    ) -> Result<agora_router::feed::BearerToken> {
        let token = if self.router_token.exists() {
            crate::context::read_token_file(&self.router_token)?
        } else {
            let auth = gate
                .auth()
                .context("the master started without authentication")?;
            let (token, _) = auth
                .tokens
                .create(ROUTER_PRINCIPAL, None)
                .map_err(|e| anyhow::anyhow!("minting the routers' token: {e}"))?;
            agora_master::auth::write_secret_file(
                &self.router_token,
                format!("{}\n", token.expose()).as_bytes(),
            )
            .with_context(|| format!("cannot write {}", self.router_token.display()))?;
            token
        };
        agora_router::feed::BearerToken::new(token.expose())
            .with_context(|| format!("the token file {}", self.router_token.display()))
    }
}

const DEV_FLAGS: crate::router_cmd::Flags = crate::router_cmd::Flags {
    dns: "--dns-listen",
    edge: "--edge-listen",
    internal: "--internal-listen",
    internal_address: "--internal-address",
};

pub async fn run(args: DevArgs) -> Result<()> {
    // hickory-server logs every DNS query at info.
    crate::util::init_logging(args.log_format, "info,hickory_server=warn");
    let dns_upstreams = args.upstream.upstreams()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_root().join("dev"));
    // The secret store's key: created once (mode 0600 from the start), never rewritten.
    let key_file = data_dir.join("master").join("secrets.key");
    std::fs::create_dir_all(data_dir.join("master"))
        .with_context(|| format!("cannot create {}", data_dir.join("master").display()))?;
    agora_master::secrets::crypto::Kek::create_file(&key_file)?;
    let agent_host = crate::agent_cmd::hostname();
    let secure = if args.secure {
        Some(Secure::prepare(&data_dir, &agent_host)?)
    } else {
        None
    };
    let master_args = MasterArgs {
        listen: Some(args.listen.clone()),
        data_dir: Some(data_dir.join("master")),
        secrets_key_file: Some(key_file.clone()),
        acls: secure.as_ref().map(|s| s.acls.clone()),
        bootstrap_token_file: secure.as_ref().map(|s| s.admin_token.clone()),
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
    let (trigger, shutdown) = shutdown::channel();
    let tls = match &secure {
        Some(sec) => Some(crate::tls::load_server_crl(
            &sec.master_cert,
            &sec.master_key,
            Some(&sec.ca_cert),
            Some(&sec.crl),
        )?),
        None => None,
    };
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(agora_master::serve_with_tls(
        listener,
        r.config,
        registry,
        shutdown,
        Some(started_tx),
        tls,
    ));
    let started = started_rx
        .await
        .context("the master stopped while starting (see the log above)")?;
    let scheme = if secure.is_some() { "https" } else { "http" };

    let runtime = match args.runtime {
        Some(k) => k,
        None if DockerRuntime::available().await => RuntimeKind::Docker,
        None => {
            eprintln!(
                "the Docker engine does not answer: using the process runtime (tasks run as local processes; apps that need a container image cannot start)"
            );
            RuntimeKind::Process
        }
    };
    if runtime == RuntimeKind::Docker {
        demo_images(&args.default_image).await;
    }
    let internal_address = match crate::router_cmd::listen_opt(&args.internal_address) {
        None => None,
        Some(a) => Some(
            a.parse::<std::net::IpAddr>()
                .with_context(|| format!("--internal-address {a}: not an IP address"))?,
        ),
    };
    let agent_args = AgentArgs {
        master: format!("{scheme}://{addr}"),
        tls: match &secure {
            Some(sec) => crate::tls::AgentTlsArgs {
                tls_ca: Some(sec.ca_cert.clone()),
                tls_cert: Some(sec.agent_cert.clone()),
                tls_key: Some(sec.agent_key.clone()),
                insecure: false,
            },
            None => Default::default(),
        },
        secrets_dir: None,
        work_dir: Some(data_dir.join("agent")),
        listen: args.agent_listen.clone(),
        // The agent's tasks bind their host ports where the L4 listeners
        // are (127.0.0.1 by default, and with them off): the routers reach
        // the instances there, and nothing is bound on a wildcard.
        internal_address: Some(internal_address.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())),
        hostname: None,
        resources: args.resources.clone(),
        attributes: String::new(),
        role: "*".into(),
        public: false,
        runtime,
        default_image: args.default_image.clone(),
        hollow_start_delay: args.hollow_start_delay,
        gc_delay: Duration::from_secs(600),
        usage_interval: agora_agent::agent::DEFAULT_USAGE_INTERVAL,
        status_retry: Duration::from_secs(2),
        log_format: args.log_format,
        // --secure: task logs and the agent's /state need a token (the
        // context's admin token works); plain dev stays open.
        require_tokens: Some(secure.is_some()),
    };
    let agent = crate::agent_cmd::start(&agent_args, runtime).await?;
    let agent_id = tokio::time::timeout(Duration::from_secs(15), agent.handle.registered())
        .await
        .context("the local agent did not register within 15s")?;

    let services_listener = tokio::net::TcpListener::bind(&args.services_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (use --services-listen)",
                args.services_listen
            )
        })?;
    let services_addr = services_listener.local_addr()?;
    let (services_stop, services_stop_rx) = tokio::sync::watch::channel(false);
    let mut services_cfg = crate::services_cmd::config(
        &format!("{scheme}://{addr}"),
        data_dir.join("services"),
        "*",
    );
    let mut context_written = None;
    if let Some(sec) = &secure {
        services_cfg.master_tls = Some(crate::tls::client(&sec.ca_cert)?);
        services_cfg.master_token = Some(std::sync::Arc::new(sec.services_token(&started.gate)?));
        services_cfg.api_tokens = true;
        // Only the routers (their token's principal) join and ack the drains.
        services_cfg.drain_principals = vec![ROUTER_PRINCIPAL.to_string()];
        // The CLI reads this by itself: `agora task list` just works.
        if let Some(path) = crate::context::context_path() {
            let ctx = crate::context::ClientContext {
                master: Some(format!("https://{addr}")),
                token_file: Some(sec.admin_token.clone()),
                ca_cert: Some(sec.ca_cert.clone()),
            };
            ctx.save_to(&path)?;
            context_written = Some(path);
        }
    }
    let services = tokio::spawn(agora_services::serve(
        services_listener,
        services_cfg,
        services_stop_rx,
    ));

    // The routers follow this services framework's endpoint stream; until
    // it answers, the feed retries (one warning, then debug).
    let mut routers = crate::router_cmd::Routers::start_with(
        crate::router_cmd::RoutersSetup {
            services: services_addr.to_string(),
            router_id: crate::router_cmd::default_router_id(),
            domain: args.domain.clone(),
            dns_ttl: Duration::from_secs(1),
            dns_upstreams,
            dns_upstream_timeout: args.upstream.dns_upstream_timeout,
            dns_listen: crate::router_cmd::listen_opt(&args.dns_listen),
            edge_listen: crate::router_cmd::listen_opt(&args.edge_listen),
            internal_listen: crate::router_cmd::listen_opt(&args.internal_listen),
            internal_address,
            services_tls: None,
            // The services API requires tokens with --secure.
            token: secure
                .as_ref()
                .map(|sec| sec.router_token(&started.gate))
                .transpose()?,
        },
        crate::router_cmd::LoadSetup {
            admin_listen: crate::router_cmd::listen_opt(&args.router_admin_address),
            admin_flag: "--router-admin-address",
            ..crate::router_cmd::LoadSetup::default()
        },
        &DEV_FLAGS,
    )
    .await?;

    // Before anything is printed: a Ctrl-C from then on stops dev cleanly.
    let stop = crate::router_cmd::stop_signals()?;
    println!("agora dev is running (Ctrl-C to stop)");
    println!("  master     {scheme}://{addr}  (gRPC for frameworks and agents; HTTP below)");
    println!("  state      {scheme}://{addr}/state");
    println!("  metrics    {scheme}://{addr}/metrics");
    println!(
        "  agent      {agent_id}, {} runtime, API {scheme}://{}{}, host ports on {}",
        agent.runtime.name(),
        agent.http_addr,
        if secure.is_some() {
            " (tokens required)"
        } else {
            ""
        },
        agent.address
    );
    println!(
        "  services   http://{services_addr}  (REST API: /v2/apps, /v2/tasks, /v2/deployments)"
    );
    for l in &routers.lines {
        println!("{l}");
    }
    println!("  data dir   {}", data_dir.display());
    println!(
        "  secrets    sealed with {}  (agora secret put|list|show|rm)",
        key_file.display()
    );
    if let Some(sec) = &secure {
        println!(
            "  secure     TLS with the CA {} (the agent attaches with mutual TLS)",
            sec.ca_cert.display()
        );
        println!(
            "             revoke a certificate: agora ca revoke --dir {} CERT (the master reloads {})",
            sec.ca_cert
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .display(),
            sec.crl.display()
        );
        println!(
            "             ACLs {} (reloaded on change); admin token in {}",
            sec.acls.display(),
            sec.admin_token.display()
        );
        match &context_written {
            Some(p) => println!(
                "             client context {} (the CLI uses it: master, token, CA)",
                p.display()
            ),
            None => println!(
                "             no client context written (set AGORA_HOME or HOME); use --master https://{addr} --ca-cert {} --token-file {}",
                sec.ca_cert.display(),
                sec.admin_token.display()
            ),
        }
    }
    println!(
        "try:  agora app deploy -f examples/web.json --wait   |   agora app list   |   agora task list"
    );
    println!(
        "      cargo run -p agora-sdk --example keep_n -- --instances 3 --command 'echo hello; sleep 30'"
    );

    let mut failed = None;
    tokio::select! {
        res = server => {
            res.context("master task panicked")??;
            return Ok(());
        }
        r = routers.failed() => failed = Some(r),
        _ = stop => {}
    }
    println!("stopping");
    routers.stop().await;
    let _ = services_stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), services).await;
    agent.handle.control(agora_agent::Control::Stop);
    // Docker: the agent's containers are removed; process: its
    // tasks' processes (whole groups and cgroups) are killed.
    let what = match agent.runtime.name() {
        "docker" => "container(s)",
        _ => "task process(es)",
    };
    if args.keep {
        println!("leaving tasks running (--keep)");
    } else {
        let n = agent.runtime.stop_all().await;
        println!("stopped {n} {what}");
        // Their secret files (on the agent's tmpfs) go with them.
        let secrets =
            agora_agent::secrets::agent_dir(&crate::agent_cmd::default_secrets_dir(), &agent_id);
        if let Err(e) = std::fs::remove_dir_all(&secrets)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!(
                "cannot remove the tasks' secret files in {}: {e}",
                secrets.display()
            );
        }
    }
    if let Some(p) = &context_written {
        // It points at this (now stopped) master: a later plain `agora dev`
        // must not have the CLI speak https to it.
        match std::fs::remove_file(p) {
            Ok(()) => println!("removed the client context {}", p.display()),
            Err(e) => eprintln!("cannot remove the client context {}: {e}", p.display()),
        }
    }
    trigger.fire();
    failed.unwrap_or(Ok(()))
}

/// The images the README's demo and the default task image need.
const DEMO_IMAGE: &str = "agora-workload:latest";

/// `images/build.sh` of the source tree this binary was built from, or of
/// the current directory.
fn build_script() -> Option<PathBuf> {
    [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../images/build.sh"),
        PathBuf::from("images/build.sh"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .map(|p| p.canonicalize().unwrap_or(p))
}

/// Builds the demo images if the engine lacks them (with the source tree's
/// `images/build.sh --if-missing`, which holds a lock so that concurrent
/// builds happen once), saying so; or says how to build them.
pub(crate) async fn demo_images(default_image: &str) {
    let missing = DockerRuntime::missing_images(&[DEMO_IMAGE, default_image]).await;
    if missing.is_empty() {
        return;
    }
    let local: Vec<&String> = missing
        .iter()
        .filter(|m| m.as_str() == DEMO_IMAGE || m.as_str() == "agora-busybox:latest")
        .collect();
    let others: Vec<&String> = missing.iter().filter(|m| !local.contains(m)).collect();
    if !others.is_empty() {
        eprintln!(
            "image(s) {} not on this engine (nothing is pulled): load or build them before launching tasks that use them",
            others
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if local.is_empty() {
        return;
    }
    let names = local
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let Some(script) = build_script() else {
        eprintln!(
            "image(s) {names} not on this engine (nothing is pulled): run `bash images/build.sh` in the Agora source tree before deploying the examples"
        );
        return;
    };
    eprintln!(
        "image(s) {names} not on this engine (nothing is pulled): building them now with `bash {} --if-missing` (about a minute the first time)",
        script.display()
    );
    let status = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("--if-missing")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => eprintln!("built {names}"),
        Ok(s) => eprintln!(
            "building the images failed ({s}); the examples cannot start until `bash {}` succeeds",
            script.display()
        ),
        Err(e) => eprintln!("cannot run {}: {e}", script.display()),
    }
}
