//! The client context file and the CLI's credentials.
//!
//! `$AGORA_HOME/context.json` when `AGORA_HOME` is set, else
//! `$XDG_CONFIG_HOME/agora/context.json` or `~/.config/agora/context.json`:
//!
//! ```json
//! {"master": "127.0.0.1:5050", "token_file": "/home/me/.config/agora/admin.token", "ca_cert": "/home/me/.config/agora/ca.pem"}
//! ```
//!
//! Every key is optional. `master` is used when `--master`/`AGORA_MASTER`
//! is not given; `token_file` when neither `--token`/`AGORA_TOKEN` nor
//! `--token-file`/`AGORA_TOKEN_FILE` is; `ca_cert` is for TLS. The CLI reads
//! the file automatically; `agora dev --secure` writes it.

use agora_master::auth::tokens::Token;
use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// Where the context file is looked for.
pub fn context_path() -> Option<PathBuf> {
    if let Ok(h) = std::env::var("AGORA_HOME")
        && !h.is_empty()
    {
        return Some(PathBuf::from(h).join("context.json"));
    }
    if let Ok(x) = std::env::var("XDG_CONFIG_HOME")
        && !x.is_empty()
    {
        return Some(PathBuf::from(x).join("agora/context.json"));
    }
    std::env::var("HOME")
        .ok()
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/agora/context.json"))
}

impl ClientContext {
    /// Reads the context at `path`; a missing file is an empty context.
    pub fn load_from(path: &Path) -> Result<ClientContext> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "the client context file {} is not valid (keys: master, token_file, ca_cert)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientContext::default()),
            Err(e) => Err(e)
                .with_context(|| format!("cannot read the client context file {}", path.display())),
        }
    }

    /// The context from the default place (empty if there is none).
    pub fn load() -> Result<ClientContext> {
        match context_path() {
            Some(p) => Self::load_from(&p),
            None => Ok(ClientContext::default()),
        }
    }

    /// Writes the context (mode 0600), for `agora dev --secure` (which the
    /// TLS work adds; until then only tests call it).
    #[allow(dead_code)]
    pub fn save_to(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        agora_master::auth::write_secret_file(path, format!("{text}\n").as_bytes())
            .with_context(|| format!("cannot write the client context file {}", path.display()))
    }
}

/// Reads a token from a file (surrounding whitespace trimmed). Warns when
/// others may read the file.
pub fn read_token_file(path: &Path) -> Result<Token> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    #[cfg(unix)]
    if let Ok(m) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if m.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: the token file {} is readable by other users; chmod 600 it",
                path.display()
            );
        }
    }
    let token = Token::new(text.trim());
    if token.expose().is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

/// Credentials from the command line, environment or context file, in
/// that order. `None`: send no token.
pub fn resolve_token(
    token: Option<&str>,
    token_file: Option<&Path>,
    ctx: &ClientContext,
) -> Result<Option<Token>> {
    if let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some(Token::new(t)));
    }
    if let Some(f) = token_file {
        return read_token_file(f).map(Some);
    }
    if let Some(f) = &ctx.token_file {
        return read_token_file(f)
            .with_context(|| "(named by token_file in the client context file)")
            .map(Some);
    }
    Ok(None)
}

static MASTER_FROM_CONTEXT: OnceLock<String> = OnceLock::new();

/// Records the context's master for commands given no `--master`.
pub fn set_master_from_context(master: String) {
    let _ = MASTER_FROM_CONTEXT.set(master);
}

/// The master to talk to: the context's when `--master` was left at its
/// default (see `main`), else `given`.
pub fn master_or(given: &str) -> String {
    MASTER_FROM_CONTEXT
        .get()
        .cloned()
        .unwrap_or_else(|| given.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_round_trips_and_credentials_have_an_order() {
        let dir = std::env::temp_dir().join(format!("agora-ctx-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("context.json");
        assert_eq!(
            ClientContext::load_from(&path).unwrap(),
            ClientContext::default()
        );
        let tf = dir.join("t.token");
        agora_master::auth::write_secret_file(&tf, b"agora_from_file\n").unwrap();
        let ctx = ClientContext {
            master: Some("10.0.0.1:5050".into()),
            token_file: Some(tf.clone()),
            ca_cert: None,
        };
        ctx.save_to(&path).unwrap();
        let back = ClientContext::load_from(&path).unwrap();
        assert_eq!(back, ctx);
        let t = resolve_token(None, None, &back).unwrap().unwrap();
        assert_eq!(t.expose(), "agora_from_file");
        let t = resolve_token(Some("agora_flag"), Some(&tf), &back)
            .unwrap()
            .unwrap();
        assert_eq!(t.expose(), "agora_flag");
        assert!(
            resolve_token(None, None, &ClientContext::default())
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, "{\"mastr\": 1}").unwrap();
        let e = ClientContext::load_from(&path).unwrap_err();
        assert!(format!("{e:#}").contains("mastr"), "{e:#}");
        std::fs::remove_dir_all(dir).ok();
    }
}
