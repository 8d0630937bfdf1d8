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

Revocation: `agora ca revoke CERT.crt` (or `--serial HEX` for a lost
certificate) records it in revoked.txt and writes crl.pem, signed by the CA;
pass it to the master with --tls-crl. The master re-reads it within seconds
(or on SIGHUP): the certificate's handshakes are refused and its open
connections closed. `agora ca crl` lists what is revoked. A CRL lasts 30
days (--crl-days): re-issue it before then with `agora ca crl --renew` (or
any revoke) and copy it to the master; an expired CRL is still enforced by
the master, which logs a warning.

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
    /// Revoke a certificate: record its serial (revoked.txt) and write a new
    /// CRL (crl.pem, for the master's --tls-crl). Revoking twice is harmless.
    Revoke(RevokeArgs),
    /// Show what is revoked and the CRL's dates; --renew re-issues the CRL.
    Crl(CrlArgs),
}

#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("what").required(true).args(["cert", "serial"])
))]
pub struct RevokeArgs {
    /// The certificate to revoke (PEM, issued by this CA).
    #[arg(value_name = "CERT")]
    pub cert: Option<PathBuf>,
    /// The serial number (hex, e.g. 3a:4b:5c or 3a4b5c; `openssl x509
    /// -serial`) of a certificate you no longer have.
    #[arg(long, value_name = "HEX")]
    pub serial: Option<String>,
    #[command(flatten)]
    pub crl: CrlDirArgs,
}

#[derive(clap::Args, Debug)]
pub struct CrlDirArgs {
    /// Where the CA lives. Default: $AGORA_HOME/ca or ~/.local/share/agora/ca.
    #[arg(
        long,
        visible_alias = "ca-dir",
        env = "AGORA_CA_DIR",
        value_name = "DIR"
    )]
    pub dir: Option<PathBuf>,
    /// Days until the new CRL's next update: re-issue it before then
    /// (`agora ca crl --renew`). The master keeps enforcing an expired CRL
    /// and logs a warning; other verifiers may refuse it.
    #[arg(long, default_value_t = ca::CRL_DAYS, value_name = "DAYS")]
    pub crl_days: i64,
}

#[derive(clap::Args, Debug)]
pub struct CrlArgs {
    /// Re-issue crl.pem from the recorded revocations (an empty CRL when
    /// none), valid for --crl-days.
    #[arg(long)]
    pub renew: bool,
    #[command(flatten)]
    pub crl: CrlDirArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: crate::ops::Output,
}

#[derive(serde::Serialize)]
struct CrlView {
    crl: Option<String>,
    this_update: Option<String>,
    next_update: Option<String>,
    expired: bool,
    revoked: Vec<RevokedView>,
}

#[derive(serde::Serialize)]
struct RevokedView {
    serial: String,
    kind: String,
    name: String,
    revoked_at: String,
}

fn crl_view(dir: &std::path::Path) -> Result<CrlView> {
    use agora_tls::crl::rfc3339;
    let revoked = ca::read_revoked(dir)?
        .into_iter()
        .map(|r| RevokedView {
            serial: r.serial,
            kind: r.kind,
            name: r.name,
            revoked_at: rfc3339(r.revoked_at),
        })
        .collect();
    let path = dir.join(ca::CRL);
    let times = if path.exists() {
        let t = agora_tls::crl::crl_file_times(&path)
            .map_err(|e| anyhow::anyhow!("{e} (re-issue it: agora ca crl --renew)"))?;
        t.first().copied()
    } else {
        None
    };
    let now = time_now();
    Ok(CrlView {
        crl: times.map(|_| path.display().to_string()),
        this_update: times.map(|(t, _)| rfc3339(t)),
        next_update: times.and_then(|(_, n)| n).map(rfc3339),
        expired: times.and_then(|(_, n)| n).is_some_and(|n| n <= now),
        revoked,
    })
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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
        CaCommand::Revoke(a) => {
            let dir = a.crl.dir.unwrap_or_else(default_dir);
            let target = match (a.cert, a.serial) {
                (Some(c), None) => ca::RevokeTarget::Cert(c),
                (None, Some(s)) => ca::RevokeTarget::Serial(s),
                _ => anyhow::bail!("give either CERT or --serial HEX, not both"),
            };
            let out = ca::revoke_in_dir(&dir, &target, a.crl.crl_days)?;
            let e = &out.entry;
            let what = if e.name == "-" {
                "by serial".to_string()
            } else {
                format!("{} {}", e.kind, e.name)
            };
            if out.already {
                println!("already revoked: serial {} ({what})", e.serial);
            } else {
                println!("revoked: serial {} ({what})", e.serial);
            }
            println!(
                "CRL written: {} (next update in {} days)",
                out.crl.display(),
                a.crl.crl_days
            );
            println!(
                "the master applies it when its --tls-crl file changes: copy it there if it is \
                 not this file; connections made with the certificate are closed"
            );
            Ok(())
        }
        CaCommand::Crl(a) => {
            let dir = a.crl.dir.unwrap_or_else(default_dir);
            if a.renew {
                let p = ca::renew_crl(&dir, a.crl.crl_days)?;
                if a.output == crate::ops::Output::Table {
                    println!(
                        "CRL re-issued: {} (next update in {} days)",
                        p.display(),
                        a.crl.crl_days
                    );
                }
            }
            let v = crl_view(&dir)?;
            if a.output == crate::ops::Output::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            match (&v.crl, &v.next_update) {
                (Some(p), Some(n)) => println!(
                    "CRL {p}: issued {}, next update {n}{}",
                    v.this_update.as_deref().unwrap_or("?"),
                    if v.expired {
                        " (EXPIRED: re-issue it with `agora ca crl --renew`)"
                    } else {
                        ""
                    }
                ),
                (Some(p), None) => println!("CRL {p}: no next update"),
                (None, _) => println!(
                    "no CRL in {} yet (`agora ca revoke` or `agora ca crl --renew` writes one)",
                    dir.display()
                ),
            }
            if v.revoked.is_empty() {
                println!("no certificates revoked");
                return Ok(());
            }
            crate::ops::table(
                &["SERIAL", "KIND", "NAME", "REVOKED"],
                v.revoked
                    .into_iter()
                    .map(|r| vec![r.serial, r.kind, r.name, r.revoked_at])
                    .collect(),
            );
            Ok(())
        }
    }
}
