//! `agora master`: flags > environment (AGORA_*) > config file > defaults.

use crate::util::{LogFormat, default_data_root, parse_duration};
use agora_master::MasterConfig;
use agora_master::actor::shutdown;
use agora_master::store::{MemoryRegistry, RedbRegistry, Registry};
use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct MasterArgs {
    /// Address to serve gRPC and HTTP on (one port for both).
    /// Use 0.0.0.0:5050 to accept agents and frameworks from other hosts.
    #[arg(long, env = "AGORA_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Address other components should use to reach this master
    /// (shown by /redirect). Defaults to the listen address.
    #[arg(long, env = "AGORA_ADVERTISE", value_name = "ADDR")]
    pub advertise: Option<String>,

    /// Directory for the agent registry (an embedded redb file).
    /// Default: $AGORA_HOME/master or ~/.local/share/agora/master.
    #[arg(long, env = "AGORA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Keep the registry in memory only (nothing survives a restart).
    #[arg(long, env = "AGORA_IN_MEMORY")]
    pub in_memory: bool,

    /// An agent silent for this long is marked unreachable and its tasks
    /// reported UNREACHABLE/LOST (Mesos waits 75s). [default: 10s]
    #[arg(long, env = "AGORA_AGENT_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub agent_timeout: Option<Duration>,

    /// After a master restart, how long an agent from the registry has to
    /// re-register before it is marked unreachable (Mesos: 10m). [default: 2m]
    #[arg(long, env = "AGORA_AGENT_REREGISTER_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub agent_reregister_timeout: Option<Duration>,

    /// How often agents heartbeat. [default: 2s]
    #[arg(long, env = "AGORA_AGENT_HEARTBEAT", value_parser = parse_duration, value_name = "DURATION")]
    pub agent_heartbeat: Option<Duration>,

    /// Rescind offers a framework holds longer than this; 0 disables. [default: 30s]
    #[arg(long, env = "AGORA_OFFER_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub offer_timeout: Option<Duration>,

    /// Period of the full allocation cycle (event-driven runs happen in between). [default: 1s]
    #[arg(long, env = "AGORA_ALLOCATION_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub allocation_interval: Option<Duration>,

    /// HEARTBEAT events to frameworks. [default: 15s]
    #[arg(long, env = "AGORA_FRAMEWORK_HEARTBEAT", value_parser = parse_duration, value_name = "DURATION")]
    pub framework_heartbeat: Option<Duration>,

    /// Decline filter used when a framework gives none. [default: 5s]
    #[arg(long, env = "AGORA_DEFAULT_REFUSE", value_parser = parse_duration, value_name = "DURATION")]
    pub default_refuse: Option<Duration>,

    /// Turn authentication on: bearer tokens on every API but /health,
    /// /metrics, /redirect and the agent link, and this ACL file (TOML, or
    /// JSON if it ends in .json) deciding what each principal may do.
    /// Reloaded when it changes and on SIGHUP. See docs/security.md.
    #[arg(long, env = "AGORA_ACLS", value_name = "FILE")]
    pub acls: Option<PathBuf>,

    /// With --acls: when no token exists yet, create one for principal
    /// `admin` and write it to this file (mode 0600).
    #[arg(long, env = "AGORA_BOOTSTRAP_TOKEN_FILE", value_name = "FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Enables the secret store: the 32-byte key (raw, or 64 hex characters)
    /// that seals secrets at rest. Must be mode 0600 (or stricter); create one
    /// with `openssl rand -hex 32 > FILE; chmod 600 FILE`. Without it the
    /// master has no secret store.
    #[arg(long, env = "AGORA_SECRETS_KEY_FILE", value_name = "FILE")]
    pub secrets_key_file: Option<PathBuf>,

    /// Versions kept per secret (older ones are dropped). [default: 10]
    #[arg(long, env = "AGORA_SECRET_VERSIONS", value_name = "N")]
    pub secret_versions: Option<usize>,

    /// Optional TOML file with the same settings (keys as the flags, with
    /// underscores: listen, data_dir, agent_timeout = "10s", …).
    #[arg(long, env = "AGORA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Serve gRPC and HTTP over TLS with this certificate (PEM, leaf
    /// first; `agora ca issue --server HOST`). Reloaded without a restart
    /// when the file changes or on SIGHUP.
    #[arg(long, env = "AGORA_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert.
    #[arg(long, env = "AGORA_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// The cluster CA (`ca.crt` of `agora ca init`): agents must present a
    /// certificate it issued for their hostname (mutual TLS). Required with
    /// --tls-cert; frameworks and operators connect without a certificate.
    #[arg(long, env = "AGORA_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// A certificate revocation list (`crl.pem` of `agora ca revoke`, signed
    /// by the --tls-client-ca CA): agent and client certificates it lists
    /// are refused at the handshake, and connections already made with them
    /// are closed when it is reloaded (on change, or SIGHUP). Re-issue it
    /// before its next update (`agora ca crl --renew`); an expired CRL is
    /// still enforced and logged as a warning. A broken one keeps the
    /// previous CRL.
    #[arg(
        long,
        env = "AGORA_TLS_CRL",
        value_name = "FILE",
        requires = "tls_client_ca"
    )]
    pub tls_crl: Option<PathBuf>,

    /// Serve plain gRPC and HTTP (no TLS, no agent authentication): only on
    /// a trusted network or for tests. Without it, the master refuses to
    /// start without --tls-cert.
    #[arg(long, env = "AGORA_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
}

/// The config file's shape.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    advertise: Option<String>,
    data_dir: Option<PathBuf>,
    in_memory: Option<bool>,
    agent_timeout: Option<String>,
    agent_reregister_timeout: Option<String>,
    agent_heartbeat: Option<String>,
    offer_timeout: Option<String>,
    allocation_interval: Option<String>,
    framework_heartbeat: Option<String>,
    default_refuse: Option<String>,
    acls: Option<PathBuf>,
    bootstrap_token_file: Option<PathBuf>,
    secrets_key_file: Option<PathBuf>,
    secret_versions: Option<usize>,
}

/// Fully resolved settings.
#[derive(Debug)]
pub struct Resolved {
    pub listen: String,
    pub data_dir: Option<PathBuf>,
    pub config: MasterConfig,
}

impl MasterArgs {
    pub fn resolve(&self) -> Result<Resolved> {
        let file: FileConfig = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("config file {} is not valid", p.display()))?
            }
            None => FileConfig::default(),
        };
        let dur = |flag: Option<Duration>,
                   file: &Option<String>,
                   key: &str,
                   default: Duration|
         -> Result<Duration> {
            if let Some(d) = flag {
                return Ok(d);
            }
            match file {
                Some(s) => {
                    parse_duration(s).map_err(|e| anyhow::anyhow!("config file key {key}: {e}"))
                }
                None => Ok(default),
            }
        };
        let d = MasterConfig::default();
        let listen = self
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:5050".to_string());
        let offer_timeout = dur(
            self.offer_timeout,
            &file.offer_timeout,
            "offer_timeout",
            Duration::from_secs(30),
        )?;
        let config = MasterConfig {
            agent_timeout: dur(
                self.agent_timeout,
                &file.agent_timeout,
                "agent_timeout",
                d.agent_timeout,
            )?,
            agent_reregister_timeout: dur(
                self.agent_reregister_timeout,
                &file.agent_reregister_timeout,
                "agent_reregister_timeout",
                d.agent_reregister_timeout,
            )?,
            agent_heartbeat_interval: dur(
                self.agent_heartbeat,
                &file.agent_heartbeat,
                "agent_heartbeat",
                d.agent_heartbeat_interval,
            )?,
            offer_timeout: (!offer_timeout.is_zero()).then_some(offer_timeout),
            allocation_interval: dur(
                self.allocation_interval,
                &file.allocation_interval,
                "allocation_interval",
                d.allocation_interval,
            )?,
            framework_heartbeat_interval: dur(
                self.framework_heartbeat,
                &file.framework_heartbeat,
                "framework_heartbeat",
                d.framework_heartbeat_interval,
            )?,
            default_refuse: dur(
                self.default_refuse,
                &file.default_refuse,
                "default_refuse",
                d.default_refuse,
            )?,
            advertise: self
                .advertise
                .clone()
                .or(file.advertise)
                .unwrap_or_else(|| listen.clone()),
            acls: self.acls.clone().or(file.acls),
            bootstrap_token_file: self
                .bootstrap_token_file
                .clone()
                .or(file.bootstrap_token_file),
            ..d
        };
        if config.bootstrap_token_file.is_some() && config.acls.is_none() {
            anyhow::bail!(
                "--bootstrap-token-file needs --acls: without an ACL file authentication is off and tokens are not used"
            );
        }
        if config.agent_heartbeat_interval >= config.agent_timeout {
            anyhow::bail!(
                "agent heartbeat ({:?}) must be shorter than the agent timeout ({:?})",
                config.agent_heartbeat_interval,
                config.agent_timeout
            );
        }
        let secret_versions = self
            .secret_versions
            .or(file.secret_versions)
            .unwrap_or(agora_master::secrets::DEFAULT_VERSIONS);
        if !(1..=1000).contains(&secret_versions) {
            anyhow::bail!(
                "--secret-versions {secret_versions}: keep between 1 and 1000 versions per secret"
            );
        }
        let config = MasterConfig {
            secrets: self
                .secrets_key_file
                .clone()
                .or(file.secrets_key_file)
                .map(|key_file| agora_master::secrets::SecretsConfig {
                    key_file,
                    versions: secret_versions,
                }),
            ..config
        };
        let in_memory = self.in_memory || file.in_memory.unwrap_or(false);
        let data_dir = if in_memory {
            None
        } else {
            Some(
                self.data_dir
                    .clone()
                    .or(file.data_dir)
                    .unwrap_or_else(|| default_data_root().join("master")),
            )
        };
        Ok(Resolved {
            listen,
            data_dir,
            config,
        })
    }
}

pub fn open_registry(data_dir: &Option<PathBuf>) -> Result<Box<dyn Registry>> {
    Ok(match data_dir {
        Some(dir) => Box::new(RedbRegistry::open(dir).with_context(|| {
            format!(
                "cannot open the registry in {} (is another master using it?)",
                dir.display()
            )
        })?),
        None => Box::new(MemoryRegistry::default()),
    })
}

/// The master's TLS, or `None` with --insecure; refuses plain text otherwise.
fn server_tls(args: &MasterArgs) -> Result<Option<agora_tls::ServerTls>> {
    let Some((cert, key)) = crate::tls::pair(&args.tls_cert, &args.tls_key)? else {
        if args.insecure {
            crate::tls::warn_insecure("agora master");
            return Ok(None);
        }
        let dir = crate::ca_cmd::default_dir();
        return Err(crate::tls::refuse_plain(
            "agora master",
            &format!(
                "agora ca issue --server <this host's name> [--san <its IP>]\n  \
                 agora master --tls-cert {d}/<name>.crt --tls-key {d}/<name>.key --tls-client-ca {d}/ca.crt",
                d = dir.display()
            ),
        ));
    };
    let Some(ca) = &args.tls_client_ca else {
        anyhow::bail!(
            "--tls-client-ca is required with --tls-cert: agents authenticate with certificates \
             of the cluster CA, so the master must know it (the ca.crt next to the ca.key that \
             issued them, by default {})",
            crate::ca_cmd::default_dir().join("ca.crt").display()
        );
    };
    crate::tls::load_server_crl(cert, key, Some(ca), args.tls_crl.as_deref()).map(Some)
}

pub async fn run(args: MasterArgs) -> Result<()> {
    crate::util::init_logging(args.log_format, "info");
    let tls = server_tls(&args)?;
    let r = args.resolve()?;
    // Secure by default: TLS alone does not say who may do what.
    if r.config.acls.is_none() {
        if !args.insecure {
            anyhow::bail!(
                "agora master refuses to start without an ACL file: without one, anyone who can \
                 reach the port may register frameworks, kill tasks and manage secrets.\n  \
                 Write one (see docs/security.md, \"The ACL file\") and pass --acls FILE \
                 (--bootstrap-token-file FILE gives you a first admin token),\n  \
                 or pass --insecure (AGORA_INSECURE=1) to run without authentication on a trusted network."
            );
        }
        if tls.is_some() {
            crate::tls::warn_insecure_auth("agora master");
        }
    }
    if let Some(s) = &r.config.secrets {
        // Refuse a bad key file before saying anything is listening.
        agora_master::secrets::crypto::Kek::load(&s.key_file)?;
    }
    let listener = tokio::net::TcpListener::bind(&r.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another master running? use --listen)",
                r.listen
            )
        })?;
    let registry = open_registry(&r.data_dir)?;
    let (trigger, shutdown) = shutdown::channel();
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "agora master {} listening on {addr} (gRPC + HTTP{})",
        r.config.master_id,
        if tls.is_some() {
            " over TLS, agents by certificate"
        } else {
            ", plain text"
        }
    );
    match &r.data_dir {
        Some(d) => eprintln!("  registry: {}", d.join("registry.redb").display()),
        None => eprintln!("  registry: in memory (nothing survives a restart)"),
    }
    match &r.config.secrets {
        Some(s) => eprintln!(
            "  secrets:  sealed with {} ({} versions kept{})",
            s.key_file.display(),
            s.versions,
            if r.data_dir.is_none() {
                "; in memory only: lost when the master stops"
            } else {
                ""
            }
        ),
        None => {
            eprintln!("  secrets:  none (start with --secrets-key-file FILE for a secret store)")
        }
    }
    eprintln!("  state:    {scheme}://{addr}/state   metrics: {scheme}://{addr}/metrics");
    match &r.config.acls {
        Some(f) => eprintln!("  auth:     bearer tokens, ACL file {}", f.display()),
        None => {
            eprintln!("  auth:     OFF (no --acls): every API is open to anyone who can reach it")
        }
    }
    let server = tokio::spawn(agora_master::serve_with_tls(
        listener, r.config, registry, shutdown, None, tls,
    ));
    tokio::select! {
        res = server => { res.context("master task panicked")??; }
        _ = crate::util_signal::terminated() => {
            eprintln!("shutting down");
            trigger.fire();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_config_file_which_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("agora-cfg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("master.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:6050\"\nagent_timeout = \"7s\"\noffer_timeout = \"0\"\nin_memory = true\n").unwrap();
        let args = MasterArgs {
            config: Some(file.clone()),
            agent_timeout: Some(Duration::from_secs(9)),
            ..Default::default()
        };
        let r = args.resolve().unwrap();
        assert_eq!(r.listen, "0.0.0.0:6050");
        assert_eq!(
            r.config.agent_timeout,
            Duration::from_secs(9),
            "the flag wins"
        );
        assert_eq!(r.config.offer_timeout, None, "0 disables the offer timeout");
        assert_eq!(
            r.config.allocation_interval,
            Duration::from_secs(1),
            "default"
        );
        assert!(r.data_dir.is_none());
        assert!(r.config.secrets.is_none());
        std::fs::write(
            &file,
            "secrets_key_file = \"/etc/agora/k\"\nsecret_versions = 3\n",
        )
        .unwrap();
        let r = MasterArgs {
            config: Some(file.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let s = r.config.secrets.unwrap();
        assert_eq!((s.key_file.to_str(), s.versions), (Some("/etc/agora/k"), 3));
        let err = MasterArgs {
            config: Some(file.clone()),
            secret_versions: Some(0),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("between 1 and 1000"), "{err}");

        std::fs::write(&file, "agent_timeot = \"7s\"\n").unwrap();
        let err = MasterArgs {
            config: Some(file.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("agent_timeot"), "{err:#}");
        std::fs::write(&file, "agent_heartbeat = \"20s\"\n").unwrap();
        let err = MasterArgs {
            config: Some(file),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.to_string().contains("shorter than the agent timeout"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
