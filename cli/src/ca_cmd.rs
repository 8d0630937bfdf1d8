//! `agora ca`: the cluster's certificate authority (ECDSA P-256).

use agora_tls::ca::{self, Kind};
use anyhow::Result;
use std::path::PathBuf;

pub const WORKFLOW: &str = "\
The cluster CA signs every certificate the cluster trusts: the master's and
services' server certificates, each agent's certificate (mutual TLS: the
master admits only agents that present one, for the hostname they register
with), and client certificates.

Workflow:
  agora ca init                                   # once: ca.crt + ca.key (0600)
  agora ca issue --server master.example --san 10.0.0.1
  agora ca issue --agent node-1 --san 10.0.0.7    # one per agent: its --hostname, its API's address
  agora ca issue --server services.example        # the services REST API
  agora master   --tls-cert master.example.crt --tls-key master.example.key --tls-client-ca ca.crt
  agora agent    --master https://master.example:5050 --hostname node-1 \\
                 --tls-ca ca.crt --tls-cert node-1.crt --tls-key node-1.key
  agora services --master https://master.example:5050 --tls-ca ca.crt \\
                 --tls-cert services.example.crt --tls-key services.example.key
  agora --ca-cert ca.crt agent list --master https://master.example:5050

Renewal: issue a new certificate before the old one expires (leaf
certificates last 90 days by default, --days) and replace the files; the
daemons pick the new files up within seconds (or at once on SIGHUP) without
a restart. Keep ca.key offline or at least private: whoever has it can mint
agents.";

/// `$AGORA_HOME/ca` or `~/.local/share/agora/ca`.
pub fn default_dir() -> PathBuf {
    crate::util::default_data_root().join("ca")
}

#[derive(clap::Subcommand, Debug)]
pub enum CaCommand {
    /// Create the cluster CA (ca.crt, ca.key) in --dir. Refuses to overwrite one.
    Init {
        /// Where the CA lives. Default: $AGORA_HOME/ca or ~/.local/share/agora/ca.
        #[arg(long, env = "AGORA_CA_DIR", value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Validity of the CA certificate in days.
        #[arg(long, default_value_t = ca::CA_DAYS)]
        days: i64,
    },
    /// Issue a certificate signed by the CA: NAME.crt and NAME.key (0600).
    Issue(IssueArgs),
}

#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("kind").required(true).args(["server", "agent", "client"])
))]
pub struct IssueArgs {
    /// A server certificate (serverAuth) for NAME; also valid for localhost
    /// and 127.0.0.1.
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,
    /// An agent certificate (clientAuth + serverAuth) for the hostname the
    /// agent registers with (its --hostname).
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// A client certificate (clientAuth) for NAME.
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    /// More names the certificate is valid for (DNS names or IP addresses).
    #[arg(long = "san", value_name = "DNS_OR_IP")]
    pub sans: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = ca::LEAF_DAYS)]
    pub days: i64,
    /// Where the CA lives. Default: $AGORA_HOME/ca or ~/.local/share/agora/ca.
    #[arg(long, env = "AGORA_CA_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where NAME.crt and NAME.key are written. Default: the CA's directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Init { dir, days } => {
            let dir = dir.unwrap_or_else(default_dir);
            let crt = ca::init_dir(&dir, days)?;
            println!("cluster CA created: {}", crt.display());
            println!(
                "  key:  {} (keep it private)",
                dir.join(ca::CA_KEY).display()
            );
            println!(
                "next: agora ca issue --server <master host> --dir {}",
                dir.display()
            );
            Ok(())
        }
        CaCommand::Issue(a) => {
            let (kind, name) = match (a.server, a.agent, a.client) {
                (Some(n), None, None) => (Kind::Server, n),
                (None, Some(n), None) => (Kind::Agent, n),
                (None, None, Some(n)) => (Kind::Client, n),
                _ => anyhow::bail!("give exactly one of --server, --agent, --client"),
            };
            let dir = a.dir.unwrap_or_else(default_dir);
            let out = a.out.unwrap_or_else(|| dir.clone());
            std::fs::create_dir_all(&out)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
            let (crt, key) = ca::issue_to_dir(&dir, &out, kind, &name, &a.sans, a.days)?;
            println!(
                "{} certificate for {name} (valid {} days): {}",
                kind.as_str(),
                a.days,
                crt.display()
            );
            println!("  key: {}", key.display());
            Ok(())
        }
    }
}
