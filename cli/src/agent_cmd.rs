//! `agora agent`: runs an agent (or, with `list`, lists the master's agents).

use crate::util::{LogFormat, default_data_root, parse_duration};
use agora_agent::docker::DockerRuntime;
use agora_agent::runtime::ContainerRuntime;
use agora_agent::{AgentConfig, Connector};
use agora_core::Resources;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Containers through the Docker Engine API (needs a running dockerd).
    Docker,
    /// Commands as child processes in their own process groups, with cgroup
    /// limits where the host allows (no Docker needed).
    Process,
    /// Simulated tasks: STARTING at once, RUNNING after --hollow-start-delay; nothing runs.
    Hollow,
}

#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The master's address.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,

    /// Where the agent keeps its checkpoint (id, tasks, unacknowledged
    /// updates) so a restarted agent recovers its tasks.
    /// Default: $AGORA_HOME/agent or ~/.local/share/agora/agent.
    #[arg(long, env = "AGORA_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// Where tasks' file secrets go: a directory on a tmpfs (checked at
    /// start; the agent refuses anything else, so values never reach a
    /// disk). The agent keeps `<dir>/<agent id>/<framework>/<task>/`.
    /// Default: /dev/shm/agora-secrets (or /run/agora/secrets without /dev/shm).
    #[arg(long, env = "AGORA_SECRETS_DIR", value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Address of the agent's own HTTP API (logs, metrics, state).
    #[arg(long, env = "AGORA_AGENT_LISTEN", default_value = "127.0.0.1:5051")]
    pub listen: String,

    /// The agent's internal address: its tasks' host ports are bound there
    /// (Docker port bindings; process and host-network tasks get it as
    /// $HOST and must bind it), and routers reach its instances there.
    /// Never a wildcard. Default: the host of --listen.
    #[arg(long, env = "AGORA_INTERNAL_ADDRESS", value_name = "IP")]
    pub internal_address: Option<std::net::IpAddr>,

    /// Name this agent registers under. Default: the host name.
    #[arg(long, env = "AGORA_HOSTNAME")]
    pub hostname: Option<String>,

    /// Resources to offer, Mesos syntax (e.g. "cpus:4;mem:8192;disk:20000;ports:[31000-32000]").
    /// Default: detected from the host (CPUs, memory less 1 GiB, ports 31000-32000).
    #[arg(long, env = "AGORA_RESOURCES")]
    pub resources: Option<String>,

    /// Attributes, e.g. zone=a,rack=r1.
    #[arg(long, env = "AGORA_ATTRIBUTES", default_value = "")]
    pub attributes: String,

    /// Reserve all of this agent's resources for one role (Mesos
    /// `--default_role`): only frameworks of that role are offered them.
    /// `*` (the default) leaves them unreserved, offered to every role.
    #[arg(long, env = "AGORA_ROLE", default_value = "*", value_name = "ROLE")]
    pub role: String,

    /// A public agent (Mesos `slave_public`): reserves its resources for
    /// role `public` (same as `--role public`) and adds the attribute
    /// `public=true` unless --attributes sets `public`. Only apps with
    /// `acceptedResourceRoles: ["public"]` land there.
    #[arg(long, env = "AGORA_PUBLIC")]
    pub public: bool,

    /// Which runtime runs tasks.
    #[arg(long, env = "AGORA_RUNTIME", value_enum, default_value = "docker")]
    pub runtime: RuntimeKind,

    /// Docker runtime: image for tasks that name none.
    #[arg(
        long,
        env = "AGORA_DEFAULT_IMAGE",
        default_value = "agora-busybox:latest"
    )]
    pub default_image: String,

    /// How long a finished task's container (docker) or sandbox (process),
    /// and so its logs, is kept after the task's end was acknowledged.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub gc_delay: Duration,

    /// Hollow runtime: delay between STARTING and RUNNING.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub hollow_start_delay: Duration,

    /// How often task usage (CPU time, memory, working set) is sampled and
    /// sent to the master, which forwards it to each task's framework at
    /// once (autoscalers read it). At least 100ms. A sample that takes
    /// longer than this delays the next one (ticks are skipped, not queued).
    #[arg(long, value_parser = parse_usage_interval, default_value = "1s")]
    pub usage_interval: Duration,

    /// First retry delay for unacknowledged status updates (doubles up to 60s).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub status_retry: Duration,

    /// Log format on stderr (AGORA_LOG sets the level, e.g. debug).

    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub tls: crate::tls::AgentTlsArgs,

    /// Require a bearer token on the agent's API: `/state` and task logs
    /// need a token the master issued to a principal allowed to view state
    /// (the `view_state` ACL), checked with the master's /v1/auth/whoami
    /// (cached 5 s); /health and /metrics stay open. Default: on when the
    /// agent runs with TLS, off with --insecure. `--require-tokens=false`
    /// turns it off. Needs a master with --acls.
    #[arg(
        long,
        env = "AGORA_AGENT_REQUIRE_TOKENS",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub require_tokens: Option<bool>,
}

/// Whether the agent's API requires tokens: `--require-tokens[=BOOL]` when
/// given, else secure by default: on exactly when the agent runs with TLS
/// (`tls`) and without `--insecure`. A TLS agent belongs to a secured
/// cluster, whose master has ACLs to verify tokens with, and its task logs
/// can show secrets; a plain-text agent would receive tokens in clear text.
pub fn requires_tokens(args: &AgentArgs, tls: bool) -> bool {
    args.require_tokens.unwrap_or(tls && !args.tls.insecure)
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

/// The role an agent reserves its resources for, from `--role` and
/// `--public`; `--public` also adds the attribute `public=true` unless the
/// operator set `public` already.
pub fn agent_role(
    role: &str,
    public: bool,
    attributes: &mut Vec<(String, String)>,
) -> Result<String> {
    use agora_core::info::{DEFAULT_ROLE, PUBLIC_ROLE};
    let role = role.trim();
    let role = if role.is_empty() { DEFAULT_ROLE } else { role };
    if role != DEFAULT_ROLE {
        agora_core::ids::validate_id("--role", role).map_err(anyhow::Error::msg)?;
    }
    if !public {
        return Ok(role.to_string());
    }
    if role != DEFAULT_ROLE && role != PUBLIC_ROLE {
        bail!(
            "--public reserves the agent's resources for role {PUBLIC_ROLE:?}, but --role says {role:?}: \
             give one of them (--public is the same as --role {PUBLIC_ROLE} plus the attribute public=true)"
        );
    }
    if !attributes.iter().any(|(k, _)| k == "public") {
        attributes.push(("public".into(), "true".into()));
    }
    Ok(PUBLIC_ROLE.to_string())
}

pub fn master_url(m: &str) -> String {
    if m.starts_with("http://") || m.starts_with("https://") {
        m.to_string()
    } else {
        format!("http://{m}")
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Host resources: all CPUs, memory less 1 GiB (at least half), disk of the
/// work dir's file system less 10 % , ports 31000-32000.
pub fn detect_resources(work_dir: &std::path::Path) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u64;
    let mem_total_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(2048);
    let mem = mem_total_mib.saturating_sub(1024).max(mem_total_mib / 2);
    let disk = nix::sys::statvfs::statvfs(work_dir)
        .map(|s| s.blocks_available() * s.fragment_size() / (1 << 20) * 9 / 10)
        .unwrap_or(10_000);
    Resources {
        cpus_milli: cpus * 1000,
        mem_mib: mem,
        disk_mib: disk,
        ports: agora_core::Ranges::range(31000, 32000).unwrap_or_default(),
    }
}

/// `--secrets-dir` when not given: a tmpfs every Linux host has.
pub fn default_secrets_dir() -> PathBuf {
    if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm/agora-secrets")
    } else {
        PathBuf::from("/run/agora/secrets")
    }
}

impl AgentArgs {
    pub fn work_dir(&self) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| default_data_root().join("agent"))
    }

    pub fn config(&self, endpoint: String) -> Result<AgentConfig> {
        let work_dir = self.work_dir();
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("cannot create the work dir {}", work_dir.display()))?;
        let work_dir = work_dir.canonicalize()?;
        let resources = match &self.resources {
            Some(r) => Resources::parse(r).context("--resources")?,
            None => detect_resources(&work_dir),
        };
        let mut attributes = parse_attributes(&self.attributes).context("--attributes")?;
        let role = agent_role(&self.role, self.public, &mut attributes)?;
        Ok(AgentConfig {
            hostname: self.hostname.clone().unwrap_or_else(hostname),
            resources,
            attributes,
            role,
            status_retry_min: self.status_retry,
            usage_interval: self.usage_interval,
            work_dir: (self.runtime != RuntimeKind::Hollow).then_some(work_dir),
            secrets_dir: Some(self.secrets_dir.clone().unwrap_or_else(default_secrets_dir)),
            endpoint,
            ..AgentConfig::default()
        })
    }
}

/// A started agent with its runtime and HTTP API.
pub struct RunningAgent {
    pub handle: agora_agent::AgentHandle,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub docker: Option<DockerRuntime>,
    pub join: tokio::task::JoinHandle<Result<(), agora_agent::agent::AgentError>>,
    pub http_addr: std::net::SocketAddr,
    /// The internal address its tasks' host ports are bound to.
    pub address: std::net::IpAddr,
}

/// The agent's internal address: `--internal-address`, else the host of
/// the address its API listens on (`listen`). Never a wildcard, and it must
/// be an address of this host (bindable).
pub fn internal_address(
    flag: Option<std::net::IpAddr>,
    listen: std::net::SocketAddr,
    master: &str,
) -> Result<std::net::IpAddr> {
    let ip = match flag {
        Some(ip) if ip.is_unspecified() => bail!(
            "--internal-address {ip} is a wildcard: host ports bound there would be reachable on every interface of this host; give the agent's internal IP (e.g. --internal-address 10.0.0.7)"
        ),
        Some(ip) => ip,
        None if listen.ip().is_unspecified() => bail!(
            "the agent's --listen {listen} is a wildcard, so it cannot stand for the internal address its tasks' host ports are bound to; give that address with --internal-address IP (e.g. 10.0.0.7)"
        ),
        None if listen.ip().is_loopback() && !master_is_local(master) => bail!(
            "the agent's internal address would be {} (the host of --listen {listen}), but the master {master} is on another host: routers there could not reach this agent's tasks (and would reach whatever answers on their own loopback); give this host's internal IP with --internal-address IP (e.g. 10.0.0.7)",
            listen.ip()
        ),
        None => listen.ip(),
    };
    std::net::TcpListener::bind((ip, 0)).with_context(|| {
        format!("--internal-address {ip}: not an address of this host (cannot bind it)")
    })?;
    Ok(ip)
}

/// Whether the master's address (`host:port`, optionally with a scheme) is
/// on this host (loopback, or an address this host can bind). A name that
/// does not resolve counts as remote. (A blocking lookup, once at start.)
pub fn master_is_local(master: &str) -> bool {
    use std::net::ToSocketAddrs;
    let rest = master.split_once("://").map_or(master, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority.parse::<std::net::SocketAddr>().is_ok()
        || authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:5050")
    };
    match with_port.to_socket_addrs() {
        Ok(addrs) => {
            // Loopback, or an address of this host (the master runs here:
            // routers on this host reach the agent's loopback too).
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty()
                && addrs.iter().all(|a| {
                    a.ip().is_loopback() || std::net::TcpListener::bind((a.ip(), 0)).is_ok()
                })
        }
        Err(_) => false,
    }
}

/// The agent's TLS files (mutual TLS to the master), from its flags.
fn client_tls(args: &AgentArgs) -> Result<Option<agora_tls::ClientTlsFiles>> {
    let t = &args.tls;
    match (crate::tls::pair(&t.tls_cert, &t.tls_key)?, &t.tls_ca) {
        (Some((c, k)), Some(ca)) => Ok(Some(agora_tls::ClientTlsFiles {
            ca: ca.clone(),
            identity: Some((c.to_owned(), k.to_owned())),
        })),
        (Some(_), None) => bail!(
            "--tls-cert needs --tls-ca: the cluster CA certificate (ca.crt) to verify the master with"
        ),
        (None, Some(_)) => bail!(
            "--tls-ca needs --tls-cert and --tls-key: the master admits only agents with a \
             certificate of the cluster CA (`agora ca issue --agent HOSTNAME`)"
        ),
        (None, None) => Ok(None),
    }
}

/// The master's URL for this agent (https with TLS flags).
pub fn agent_master_url(args: &AgentArgs) -> Result<String> {
    let tls = client_tls(args)?.is_some();
    let url = crate::tls::url_for(&args.master, tls, "--master")?;
    if !tls && url.starts_with("https://") {
        bail!(
            "--master {url} is https: give --tls-ca, --tls-cert and --tls-key \
             (the cluster CA and this agent's certificate, see `agora ca --help`)"
        );
    }
    Ok(url)
}

/// Starts an agent with the chosen runtime and serves its HTTP API.
pub async fn start(args: &AgentArgs, runtime_kind: RuntimeKind) -> Result<RunningAgent> {
    let client_tls = client_tls(args)?;
    let master = agent_master_url(args)?;
    // The agent's API is served with the same certificate.
    let server_tls = match client_tls.as_ref().and_then(|f| f.identity.as_ref()) {
        Some((c, k)) => Some(crate::tls::load_server(c, k, None)?),
        None => None,
    };
    // Tokens on the API are verified with the master this agent registers
    // with, trusting the cluster CA (no client certificate needed there).
    let tokens = if requires_tokens(args, client_tls.is_some()) {
        let tls = match &client_tls {
            Some(f) => Some(crate::tls::client(&f.ca)?),
            None => None,
        };
        Some(agora_agent::api_auth::verifier(&master, tls))
    } else {
        None
    };
    if let Some(ip) = args.internal_address {
        // Before anything is bound: a wildcard is refused whatever --listen is.
        internal_address(Some(ip), std::net::SocketAddr::new(ip, 0), &args.master)?;
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (another agent running? use --listen)",
                args.listen
            )
        })?;
    let http_addr = listener.local_addr()?;
    let host_ip = internal_address(args.internal_address, http_addr, &args.master)?;
    let scheme = if server_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut cfg = args.config(format!("{scheme}://{http_addr}"))?;
    if let Some((cert, _)) = client_tls.as_ref().and_then(|f| f.identity.as_ref()) {
        if let Err(e) = agora_tls::cert_names(cert, &cfg.hostname) {
            tracing::warn!(
                hostname = %cfg.hostname,
                error = %e,
                "the master will refuse this agent: its certificate does not name the hostname it registers with"
            );
        }
        let api_host = http_addr.ip().to_string();
        if agora_tls::cert_names(cert, &api_host).is_err() {
            tracing::warn!(
                address = %api_host,
                "the agent's certificate does not name the address its API is advertised at: \
                 clients (agora task logs) will refuse it; issue it with --san {api_host}"
            );
        }
    }
    cfg.address = Some(host_ip);
    if runtime_kind == RuntimeKind::Hollow {
        cfg.work_dir = None;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (runtime, docker): (Arc<dyn ContainerRuntime>, Option<DockerRuntime>) = match runtime_kind {
        RuntimeKind::Docker => {
            let scope = cfg
                .work_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "agora".into());
            let d = DockerRuntime::connect(tx, scope, Some(args.default_image.clone()))
                .await?
                .with_gc_delay(args.gc_delay)
                .with_host_ip(host_ip);
            (Arc::new(d.clone()), Some(d))
        }
        RuntimeKind::Process => {
            let dir = cfg.work_dir.clone().unwrap_or_else(|| args.work_dir());
            (
                Arc::new(
                    agora_agent::process::ProcessRuntime::new(tx, &dir)
                        .with_gc_delay(args.gc_delay)
                        .with_host_ip(host_ip),
                ),
                None,
            )
        }
        RuntimeKind::Hollow => (
            Arc::new(agora_agent::HollowRuntime::new(tx, args.hollow_start_delay)),
            None,
        ),
    };
    let (handle, join) = agora_agent::spawn(
        cfg,
        runtime.clone(),
        rx,
        match client_tls {
            Some(files) => Connector::Tls {
                address: master,
                files,
            },
            None => Connector::Address(master),
        },
    );
    let state = agora_agent::http::HttpState {
        agent: handle.clone(),
        runtime: runtime.clone(),
        tokens,
    };
    tokio::spawn(async move {
        let served = match server_tls {
            Some(tls) => agora_agent::http::serve_tls(listener, state, tls).await,
            None => agora_agent::http::serve(listener, state).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "agent HTTP API stopped");
        }
    });
    Ok(RunningAgent {
        handle,
        runtime,
        docker,
        join,
        http_addr,
        address: host_ip,
    })
}

pub async fn run(args: AgentArgs) -> Result<()> {
    crate::util::init_logging(args.log_format, "info");
    if client_tls(&args)?.is_none() {
        if !args.tls.insecure {
            let d = crate::ca_cmd::default_dir();
            return Err(crate::tls::refuse_plain(
                "agora agent",
                &format!(
                    "agora ca issue --agent <this agent's --hostname> --san <its --listen IP>\n  \
                     agora agent --master https://MASTER:5050 --tls-ca {d}/ca.crt \
                     --tls-cert {d}/<hostname>.crt --tls-key {d}/<hostname>.key",
                    d = d.display()
                ),
            ));
        }
        crate::tls::warn_insecure("agora agent");
    }
    let agent = start(&args, args.runtime).await?;
    let tls = args.tls.tls_cert.is_some();
    let tokens = requires_tokens(&args, tls);
    eprintln!(
        "agora agent ({} runtime) → master {}; API {}://{} ({}); internal address {}; work dir {}",
        agent.runtime.name(),
        agent_master_url(&args)?,
        if tls { "https" } else { "http" },
        agent.http_addr,
        if tokens {
            "tokens required"
        } else {
            "open: no tokens"
        },
        agent.address,
        args.work_dir().display()
    );
    if tls && !tokens {
        eprintln!(
            "WARNING: the agent's API (task logs, /state) needs no token (--require-tokens=false): \
             anyone who can reach {} can read every task's output.",
            agent.http_addr
        );
        tracing::warn!("the agent's API requires no tokens (--require-tokens=false)");
    }
    tokio::select! {
        r = agent.join => { r.context("agent task panicked")?.context("agent stopped")?; }
        _ = crate::util_signal::terminated() => {
            agent.handle.control(agora_agent::Control::Stop);
            eprintln!("agent stopped; its tasks keep running and are recovered on restart");
        }
    }
    Ok(())
}

/// `--usage-interval`: a duration of at least
/// [`agora_agent::agent::MIN_USAGE_INTERVAL`].
fn parse_usage_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let min = agora_agent::agent::MIN_USAGE_INTERVAL;
    if d < min {
        return Err(format!(
            "{s:?} is too short: usage is sampled at most every {}ms (try 1s, the default)",
            min.as_millis()
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[test]
    fn usage_is_sampled_every_second_by_default_and_the_flag_changes_it() {
        use clap::Parser;
        let a = Cli::try_parse_from(["agora"]).unwrap().agent;
        assert_eq!(a.usage_interval, Duration::from_secs(1));
        let a = Cli::try_parse_from(["agora", "--usage-interval", "250ms"])
            .unwrap()
            .agent;
        assert_eq!(a.usage_interval, Duration::from_millis(250));
        for bad in ["0s", "50ms", "soon"] {
            let e = Cli::try_parse_from(["agora", "--usage-interval", bad])
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"))
                .to_string();
            assert!(e.contains("--usage-interval"), "{bad}: {e}");
        }
        let e = Cli::try_parse_from(["agora", "--usage-interval", "0s"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("at most every 100ms"), "{e}");
    }

    #[test]
    fn a_loopback_internal_address_is_implicit_only_with_a_local_master() {
        let lo: std::net::SocketAddr = "127.0.0.1:5051".parse().unwrap();
        for m in [
            "127.0.0.1:5050",
            "localhost:5050",
            "http://127.0.0.1:5050",
            "[::1]:5050",
        ] {
            assert!(master_is_local(m), "{m}");
            let ip = internal_address(None, lo, m).unwrap();
            assert!(ip.is_loopback());
        }
        for m in [
            "10.0.0.5:5050",
            "http://192.0.2.7:5050",
            "no-such-host.invalid:5050",
        ] {
            assert!(!master_is_local(m), "{m}");
            let err = internal_address(None, lo, m).unwrap_err().to_string();
            assert!(err.contains("--internal-address"), "{m}: {err}");
            assert!(err.contains("on another host"), "{m}: {err}");
        }
        // Given explicitly, loopback is the operator's choice.
        assert!(internal_address(Some(lo.ip()), lo, "10.0.0.5:5050").is_ok());
    }

    fn role(role: &str, public: bool, attrs: &str) -> Result<(String, Vec<(String, String)>)> {
        let mut a = parse_attributes(attrs)?;
        let r = agent_role(role, public, &mut a)?;
        Ok((r, a))
    }

    fn parse(flags: &[&str]) -> AgentArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: AgentArgs,
        }
        let mut argv = vec!["agent"];
        argv.extend_from_slice(flags);
        P::try_parse_from(argv).unwrap().a
    }

    #[test]
    fn tokens_are_required_by_default_with_tls_and_not_with_insecure() {
        // The flags' environment variables would change the defaults.
        for v in ["AGORA_AGENT_REQUIRE_TOKENS", "AGORA_INSECURE"] {
            assert!(std::env::var_os(v).is_none(), "{v} is set");
        }
        assert!(requires_tokens(&parse(&[]), true), "TLS: on by default");
        assert!(!requires_tokens(&parse(&["--insecure"]), false));
        assert!(requires_tokens(&parse(&["--require-tokens"]), false));
        assert!(requires_tokens(
            &parse(&["--insecure", "--require-tokens=true"]),
            false
        ));
        assert!(!requires_tokens(&parse(&["--require-tokens=false"]), true));
        assert!(!requires_tokens(&parse(&["--require-tokens=no"]), true));
    }

    #[test]
    fn public_reserves_for_role_public_and_adds_the_attribute() {
        let (r, a) = role("*", true, "zone=a").unwrap();
        assert_eq!(r, "public");
        assert_eq!(
            a,
            vec![
                ("zone".into(), "a".into()),
                ("public".into(), "true".into())
            ]
        );
        // The operator's own `public=` wins.
        let (r, a) = role("public", true, "public=edge").unwrap();
        assert_eq!(r, "public");
        assert_eq!(a, vec![("public".into(), "edge".into())]);
    }

    #[test]
    fn role_without_public_adds_no_attribute() {
        assert_eq!(role("*", false, "").unwrap(), ("*".into(), vec![]));
        assert_eq!(role("", false, "").unwrap(), ("*".into(), vec![]));
        assert_eq!(role("batch", false, "").unwrap(), ("batch".into(), vec![]));
    }

    #[test]
    fn public_with_another_role_or_a_bad_role_is_refused() {
        let e = role("batch", true, "").unwrap_err().to_string();
        assert!(e.contains("--public") && e.contains("--role"), "{e}");
        let e = role("a b", false, "").unwrap_err().to_string();
        assert!(e.contains("--role"), "{e}");
    }
}
