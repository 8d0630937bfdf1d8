//! `agora secret put|list|show|rm|rotate-key`: the master's secret store
//! (`/v1/secrets`). Values are read from stdin or a file, never from the
//! command line (argv is visible to every user of the host), and are never
//! printed: the master answers with metadata only.
//!
//! Exit codes: 0 success, 1 error, 2 bad usage, 4 not found.

use crate::http::{http_send, http_send_raw};
use crate::ops::{self, Common, NotFound, Output};
use agora_core::secrets::{MAX_VALUE_LEN, SecretPath};
use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(clap::Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a new version of a secret. The value is read from stdin (until
    /// EOF, byte for byte: a trailing newline is part of it; use `printf`
    /// or `echo -n`) or from --from-file; never from the command line.
    /// Apps using the secret roll to the new version unless --no-rollout.
    Put {
        /// The secret's path, e.g. /prod/db/password.
        path: String,
        /// Read the value from this file instead of stdin.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Stage the new version: apps using the secret do not roll now
        /// (new tasks and pinned versions still see it).
        #[arg(long)]
        no_rollout: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List secrets (metadata only: versions, sizes, who uses them).
    List(Common),
    /// Show one secret's versions and the apps using it (never its value).
    Show {
        /// The secret's path, e.g. /prod/db/password.
        path: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a secret (every version). Refused while live tasks use it,
    /// unless --force.
    Rm {
        /// The secret's path, e.g. /prod/db/password.
        path: String,
        /// Delete even if live tasks use it (they keep their value; new
        /// launches that need it fail).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Re-wrap every secret's data key with a new key file (a path on the
    /// master's host, mode 0600), then restart the master with
    /// --secrets-key-file pointing at it.
    RotateKey {
        /// The new key file, on the master's host (absolute path).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

pub async fn run(cmd: SecretCommand) -> Result<()> {
    match cmd {
        SecretCommand::Put {
            path,
            from_file,
            no_rollout,
            common,
        } => put(&common, &path, from_file.as_deref(), no_rollout).await,
        SecretCommand::List(c) => list(&c).await,
        SecretCommand::Show { path, common } => show(&common, &path).await,
        SecretCommand::Rm {
            path,
            force,
            common,
        } => rm(&common, &path, force).await,
        SecretCommand::RotateKey {
            new_key_file,
            common,
        } => rotate(&common, &new_key_file).await,
    }
}

#[derive(Deserialize, Debug)]
struct Version {
    version: u64,
    created: f64,
    size: u64,
    rollout: bool,
}

#[derive(Deserialize, Debug)]
struct User {
    framework_id: String,
    framework_name: String,
    app: String,
    tasks: usize,
}

#[derive(Deserialize, Debug)]
struct Meta {
    path: String,
    version: u64,
    size: u64,
    updated: f64,
    rollout: u64,
    versions: Vec<Version>,
    #[serde(default)]
    used_by: Vec<User>,
}

fn secret_url(path: &str) -> Result<(SecretPath, String)> {
    let p = SecretPath::parse(path)?;
    let url = format!("/v1/secrets{p}");
    Ok((p, url))
}

/// Turns a non-2xx answer into the error the CLI reports (404: exit 4).
fn check(method: &str, what: &str, code: u16, body: &str) -> Result<()> {
    match code {
        200..=299 => Ok(()),
        404 => Err(NotFound(body.trim().to_string()).into()),
        _ => bail!(
            "{method} {what}: the master answered {code}: {}",
            body.trim()
        ),
    }
}

async fn send(c: &Common, method: &str, url: &str) -> Result<String> {
    let addr = c.master_addr();
    let (code, body) = http_send(method, &addr, url, None).await.map_err(|e| {
        anyhow!("cannot reach master at {addr}: {e:#}\nis `agora dev` (or `agora master`) running? set --master or AGORA_MASTER")
    })?;
    check(method, url, code, &body)?;
    Ok(body)
}

/// Reads at most 64 KiB + 1 bytes, so an oversized value is refused here.
fn read_value(mut r: impl Read, from: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    r.by_ref()
        .take(MAX_VALUE_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read the value from {from}"))?;
    if buf.len() > MAX_VALUE_LEN {
        bail!(
            "the value from {from} is larger than 64 KiB (65536 bytes), the most a secret may hold"
        );
    }
    if buf.is_empty() {
        bail!("the value from {from} is empty; a secret must hold at least one byte");
    }
    Ok(buf)
}

async fn put(c: &Common, path: &str, from_file: Option<&Path>, no_rollout: bool) -> Result<()> {
    use std::io::IsTerminal;
    let (p, mut url) = secret_url(path)?;
    let mut value = match from_file {
        Some(f) => {
            let file =
                std::fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?;
            read_value(file, &f.display().to_string())?
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("reading the value from stdin; end with Ctrl-D");
            }
            read_value(stdin.lock(), "stdin")?
        }
    };
    if no_rollout {
        url.push_str("?rollout=false");
    }
    let addr = c.master_addr();
    // Moved into the request (no second copy); the HTTP client drops it
    // after sending without zeroing it.
    let (code, body) = http_send_raw("PUT", &addr, &url, std::mem::take(&mut *value))
        .await
        .map_err(|e| {
            anyhow!("cannot reach master at {addr}: {e:#}\nis `agora dev` (or `agora master`) running? set --master or AGORA_MASTER")
        })?;
    drop(value);
    check("PUT", p.as_str(), code, &body)?;
    if c.output == Output::Json {
        println!("{}", body.trim());
        return Ok(());
    }
    let m: Meta = serde_json::from_str(&body)
        .context("the master's answer is not what this CLI expects (version mismatch?)")?;
    println!("stored {} version {} ({} bytes)", m.path, m.version, m.size);
    if no_rollout {
        println!(
            "staged: apps using it keep their current version until they restart or a later put rolls them"
        );
    } else if m.used_by.is_empty() {
        println!("no live task uses it");
    } else {
        for u in &m.used_by {
            println!(
                "rolling {} (framework {} {}, {} task{})",
                u.app,
                u.framework_name,
                u.framework_id,
                u.tasks,
                plural(u.tasks)
            );
        }
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn ago(epoch: f64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let s = (now - epoch).max(0.0) as u64;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn users(u: &[User]) -> String {
    if u.is_empty() {
        return "-".into();
    }
    u.iter()
        .map(|u| {
            format!(
                "{} ({}, {} task{})",
                u.app,
                u.framework_name,
                u.tasks,
                plural(u.tasks)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn list(c: &Common) -> Result<()> {
    let body = send(c, "GET", "/v1/secrets").await?;
    if c.output == Output::Json {
        println!("{}", body.trim());
        return Ok(());
    }
    let all: Vec<Meta> = serde_json::from_str(&body)
        .context("the master's answer is not what this CLI expects (version mismatch?)")?;
    ops::table(
        &["PATH", "VERSION", "SIZE", "UPDATED", "USED BY"],
        all.iter()
            .map(|m| {
                vec![
                    m.path.clone(),
                    m.version.to_string(),
                    m.size.to_string(),
                    ago(m.updated),
                    users(&m.used_by),
                ]
            })
            .collect(),
    );
    Ok(())
}

async fn show(c: &Common, path: &str) -> Result<()> {
    let (_, url) = secret_url(path)?;
    let body = send(c, "GET", &url).await?;
    if c.output == Output::Json {
        println!("{}", body.trim());
        return Ok(());
    }
    let m: Meta = serde_json::from_str(&body)
        .context("the master's answer is not what this CLI expects (version mismatch?)")?;
    println!("path      {}", m.path);
    println!(
        "latest    {} ({} bytes, {})",
        m.version,
        m.size,
        ago(m.updated)
    );
    println!(
        "rollout   {}",
        if m.rollout == 0 {
            "none kept".to_string()
        } else {
            format!("version {}", m.rollout)
        }
    );
    println!("used by   {}", users(&m.used_by));
    println!();
    ops::table(
        &["VERSION", "SIZE", "CREATED", "ROLLOUT"],
        m.versions
            .iter()
            .rev()
            .map(|v| {
                vec![
                    v.version.to_string(),
                    v.size.to_string(),
                    ago(v.created),
                    if v.rollout { "yes" } else { "staged" }.to_string(),
                ]
            })
            .collect(),
    );
    Ok(())
}

async fn rm(c: &Common, path: &str, force: bool) -> Result<()> {
    let (p, mut url) = secret_url(path)?;
    if force {
        url.push_str("?force=true");
    }
    let body = send(c, "DELETE", &url).await?;
    if c.output == Output::Json {
        println!("{}", body.trim());
    } else {
        println!("deleted {p}");
    }
    Ok(())
}

async fn rotate(c: &Common, new_key_file: &Path) -> Result<()> {
    let file = if new_key_file.is_absolute() {
        new_key_file.to_path_buf()
    } else {
        std::env::current_dir()?.join(new_key_file)
    };
    let req = serde_json::json!({ "new_key_file": file }).to_string();
    let addr = c.master_addr();
    let (code, body) = http_send("POST", &addr, "/v1/secrets-key/rotate", Some(&req))
        .await
        .map_err(|e| anyhow!("cannot reach master at {addr}: {e:#}"))?;
    check("POST", "/v1/secrets-key/rotate", code, &body)?;
    if c.output == Output::Json {
        println!("{}", body.trim());
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body)
        .context("the master's answer is not what this CLI expects (version mismatch?)")?;
    println!(
        "re-wrapped {} secret version{} from key id {} to key id {}",
        v["rewrapped"],
        plural(v["rewrapped"].as_u64().unwrap_or(0) as usize),
        v["old_key_id"].as_str().unwrap_or("?"),
        v["new_key_id"].as_str().unwrap_or("?"),
    );
    println!(
        "now restart the master with --secrets-key-file {} (the old key file no longer opens the store)",
        file.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bounded_and_not_empty() {
        assert_eq!(&read_value(&b"pw\n"[..], "stdin").unwrap()[..], b"pw\n");
        let e = read_value(&b""[..], "stdin").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let big = vec![b'x'; MAX_VALUE_LEN + 1];
        let e = read_value(&big[..], "f").unwrap_err();
        assert!(e.to_string().contains("64 KiB"), "{e}");
        assert_eq!(
            read_value(&big[..MAX_VALUE_LEN], "f").unwrap().len(),
            MAX_VALUE_LEN
        );
        assert!(secret_url("a/../b").is_err());
        assert_eq!(secret_url("db/pw").unwrap().1, "/v1/secrets/db/pw");
    }
}
