//! `agora token create|list|revoke|whoami`: the master's bearer tokens
//! (`/v1/tokens`, `/v1/auth/whoami`; needs the `manage_tokens` permission,
//! whoami any valid token).

use crate::ops::{Common, NotFound, Output, table};
use crate::util::http_send;
use anyhow::{Result, anyhow, bail};
use serde_json::Value;

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for a principal. The token is printed once, alone on
    /// stdout (redirect it to a file: `> ops.token`); it cannot be shown again.
    Create {
        /// Who the token authenticates (the name the ACL file uses).
        #[arg(long)]
        principal: String,
        /// How long it is valid: 30d, 12h, 90m, or never.
        #[arg(long, default_value = "30d")]
        ttl: String,
        #[command(flatten)]
        common: Common,
    },
    /// List tokens (ids, principals, expiry; never the tokens).
    List(Common),
    /// Revoke a token (refused from the next request on).
    Revoke {
        /// The token's id (see `agora token list`).
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// The principal your token authenticates.
    Whoami(Common),
}

fn check(method: &str, path: &str, status: u16, body: &str) -> Result<()> {
    match status {
        200..=299 => Ok(()),
        404 => Err(NotFound(format!("{method} {path}: {}", body.trim())).into()),
        401 => bail!(
            "the master did not accept your credentials: {}\n(give a token with --token-file, AGORA_TOKEN or the client context file)",
            body.trim()
        ),
        _ => bail!("{method} {path} answered {status}: {}", body.trim()),
    }
}

fn when(v: &Value) -> String {
    match v.as_u64() {
        Some(t) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let (d, past) = if t >= now {
                (t - now, false)
            } else {
                (now - t, true)
            };
            let span = if d >= 86_400 {
                format!("{}d", d / 86_400)
            } else if d >= 3600 {
                format!("{}h", d / 3600)
            } else if d >= 60 {
                format!("{}m", d / 60)
            } else {
                format!("{d}s")
            };
            if past {
                format!("{span} ago")
            } else {
                format!("in {span}")
            }
        }
        None => "never".into(),
    }
}

pub async fn run(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create {
            principal,
            ttl,
            common,
        } => {
            let a = common.master_addr();
            let body = serde_json::json!({"principal": principal, "ttl": ttl}).to_string();
            let (status, text) = http_send("POST", &a, "/v1/tokens", Some(&body)).await?;
            check("POST", "/v1/tokens", status, &text)?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow!("the master's answer is not JSON: {e}"))?;
            if common.output == Output::Json {
                println!("{text}");
                return Ok(());
            }
            let token = v["token"]
                .as_str()
                .ok_or_else(|| anyhow!("the master's answer has no token"))?;
            eprintln!(
                "token {} for principal {} (expires: {}); shown once, store it now:",
                v["id"].as_str().unwrap_or("?"),
                v["principal"].as_str().unwrap_or("?"),
                when(&v["expires"])
            );
            println!("{token}");
            Ok(())
        }
        TokenCommand::List(common) => {
            let a = common.master_addr();
            let (status, text) = http_send("GET", &a, "/v1/tokens", None).await?;
            check("GET", "/v1/tokens", status, &text)?;
            if common.output == Output::Json {
                println!("{text}");
                return Ok(());
            }
            let v: Vec<Value> = serde_json::from_str(&text)
                .map_err(|e| anyhow!("the master's answer is not a JSON list: {e}"))?;
            let rows = v
                .iter()
                .map(|t| {
                    let status = if t["revoked"].is_u64() {
                        "revoked"
                    } else if when(&t["expires"]).ends_with("ago") {
                        "expired"
                    } else {
                        "active"
                    };
                    vec![
                        t["id"].as_str().unwrap_or("").to_string(),
                        t["principal"].as_str().unwrap_or("").to_string(),
                        when(&t["created"]),
                        when(&t["expires"]),
                        status.to_string(),
                    ]
                })
                .collect();
            table(&["ID", "PRINCIPAL", "CREATED", "EXPIRES", "STATUS"], rows);
            Ok(())
        }
        TokenCommand::Revoke { id, common } => {
            let a = common.master_addr();
            let path = format!("/v1/tokens/{id}");
            let (status, text) = http_send("DELETE", &a, &path, None).await?;
            check("DELETE", &path, status, &text)?;
            if common.output == Output::Json {
                println!("{text}");
            } else {
                println!("revoked {id}");
            }
            Ok(())
        }
        TokenCommand::Whoami(common) => {
            let a = common.master_addr();
            let (status, text) = http_send("GET", &a, "/v1/auth/whoami", None).await?;
            check("GET", "/v1/auth/whoami", status, &text)?;
            if common.output == Output::Json {
                println!("{text}");
                return Ok(());
            }
            let v: Value = serde_json::from_str(&text)?;
            match v["principal"].as_str() {
                Some(p) => println!("{p}{}", if v["admin"] == true { " (admin)" } else { "" }),
                None => println!("authentication is off on this master: everything is allowed"),
            }
            Ok(())
        }
    }
}
