//! TLS flags shared by the daemons, and secure-by-default startup: outside
//! `agora dev`, a daemon without TLS material refuses to start unless
//! `--insecure` (AGORA_INSECURE=1) says plain text is intended.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `agora agent`'s TLS flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentTlsArgs {
    /// The cluster CA certificate (`ca.crt` from `agora ca init`): verifies
    /// the master.
    #[arg(long, env = "AGORA_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This agent's certificate (`agora ca issue --agent HOSTNAME`): shown
    /// to the master (mutual TLS) and served by the agent's own API.
    /// Re-read on every reconnection and, for the API, when it changes.
    #[arg(long, env = "AGORA_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert.
    #[arg(long, env = "AGORA_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Run without TLS (plain gRPC and HTTP): only on a trusted network or
    /// for tests. Without it, the agent refuses to start without TLS flags.
    #[arg(long, env = "AGORA_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
}

/// The directory `agora ca` uses by default, for messages.
fn ca_dir() -> PathBuf {
    crate::ca_cmd::default_dir()
}

/// Loads a server certificate and follows its files (reload on change and
/// on SIGHUP).
pub fn load_server(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<agora_tls::ServerTls> {
    load_server_crl(cert, key, client_ca, None)
}

/// [`load_server`] with a CRL (`--tls-crl`): client certificates it lists
/// are refused; it reloads with the other files.
pub fn load_server_crl(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    crl: Option<&Path>,
) -> Result<agora_tls::ServerTls> {
    let tls = agora_tls::ServerTls::load(agora_tls::ServerTlsFiles {
        cert: cert.to_owned(),
        key: key.to_owned(),
        client_ca: client_ca.map(Path::to_owned),
        crl: crl.map(Path::to_owned),
    })
    .context("cannot load the TLS certificate")?;
    tls.watch(agora_tls::DEFAULT_RELOAD_INTERVAL);
    Ok(tls)
}

/// `--tls-cert` and `--tls-key` come together.
pub fn pair<'a>(
    cert: &'a Option<PathBuf>,
    key: &'a Option<PathBuf>,
) -> Result<Option<(&'a Path, &'a Path)>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (Some(_), None) => bail!("--tls-cert needs --tls-key (the certificate's private key)"),
        (None, Some(_)) => bail!("--tls-key needs --tls-cert (the certificate it belongs to)"),
        (None, None) => Ok(None),
    }
}

/// The loud warning of `--insecure`.
pub fn warn_insecure(daemon: &str) {
    eprintln!(
        "WARNING: {daemon} runs WITHOUT TLS (--insecure): traffic, including secrets, is plain text \
         and anyone who can reach its port is trusted. Use it only on a trusted network or for tests."
    );
    tracing::warn!(daemon, "running without TLS (--insecure)");
}

/// The loud warning of `--insecure` with TLS but no ACL file.
pub fn warn_insecure_auth(daemon: &str) {
    eprintln!(
        "WARNING: {daemon} runs WITHOUT authentication (--insecure, no --acls): anyone who can \
         reach its port may act as any framework or operator."
    );
    tracing::warn!(
        daemon,
        "running without authentication (--insecure, no --acls)"
    );
}

/// The error when a daemon has no TLS material and no `--insecure`.
pub fn refuse_plain(daemon: &str, how: &str) -> anyhow::Error {
    let dir = ca_dir();
    anyhow::anyhow!(
        "{daemon} refuses to start without TLS. Create the cluster CA once and issue a certificate:\n  \
         agora ca init                     (writes {ca}/ca.crt and ca.key)\n  \
         {how}\n\
         or pass --insecure (AGORA_INSECURE=1) to run in plain text on a trusted network.",
        ca = dir.display(),
    )
}

/// An `https://` URL for a bare `host:port` when TLS is used; an explicit
/// `http://` with TLS flags is refused (it would silently skip TLS).
pub fn url_for(addr: &str, tls: bool, flag: &str) -> Result<String> {
    let addr = addr.trim_end_matches('/');
    if addr.starts_with("https://") {
        return Ok(addr.to_string());
    }
    if let Some(rest) = addr.strip_prefix("http://") {
        if tls {
            bail!("{flag} {addr} is plain http, but TLS flags are given: use https://{rest}");
        }
        return Ok(addr.to_string());
    }
    Ok(format!("{}://{addr}", if tls { "https" } else { "http" }))
}

/// A client config trusting `ca` (no client certificate).
pub fn client(ca: &Path) -> Result<Arc<agora_tls::ClientConfig>> {
    agora_tls::client_config(ca, None)
        .map(Arc::new)
        .with_context(|| format!("--tls-ca {}", ca.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_tls() {
        assert_eq!(
            url_for("m:5050", true, "--master").unwrap(),
            "https://m:5050"
        );
        assert_eq!(
            url_for("m:5050", false, "--master").unwrap(),
            "http://m:5050"
        );
        assert_eq!(
            url_for("https://m:5050/", false, "--master").unwrap(),
            "https://m:5050"
        );
        let e = url_for("http://m:5050", true, "--master").unwrap_err();
        assert!(e.to_string().contains("use https://m:5050"), "{e}");
    }

    #[test]
    fn refusal_names_the_flags_and_commands() {
        let e = refuse_plain("agora master", "agora ca issue --server HOST").to_string();
        for s in [
            "agora ca init",
            "agora ca issue --server",
            "--insecure",
            "AGORA_INSECURE=1",
        ] {
            assert!(e.contains(s), "{s} in {e}");
        }
        assert!(pair(&Some("a".into()), &None).is_err());
        assert!(pair(&None, &None).unwrap().is_none());
    }
}
