//! Authentication (bearer tokens) and authorization (the ACL file).
//!
//! **The switch**: [`MasterConfig::acls`](crate::MasterConfig::acls). With
//! an ACL file, every HTTP endpoint but `/health`, `/metrics` and
//! `/redirect`, and every Scheduler call, needs `Authorization: Bearer
//! <token>`, and what the token's principal may do is decided by the ACL
//! file (deny by default). Without one ([`Gate::disabled`]: `agora dev`,
//! `--insecure`), everything stays open as before. AgentLink is not covered
//! here: agents authenticate with mutual TLS.
//!
//! - [`tokens`]: creation, hashed storage, verification, revocation.
//! - [`acl`]: the rules, their evaluation, reloading.
//! - [`http`]: the axum middleware and the `/v1/tokens`, `/v1/auth/whoami`
//!   endpoints.

pub mod acl;
pub mod http;
pub mod owners;
pub mod tokens;

use acl::{AclFile, Acls, Denied, Permission};
use agora_core::FrameworkId;
use agora_core::secrets::SecretPath;
use std::path::Path;
use std::sync::Arc;
use tokens::{AuthError, Token, Tokens};

/// Who is calling, as far as authorization is concerned.
#[derive(Clone, Debug)]
pub enum Caller {
    /// Authentication is off: everything is allowed.
    Unrestricted,
    /// An authenticated principal and the rules in force when it called.
    Principal { name: String, acls: Arc<Acls> },
}

impl Caller {
    /// A principal under fixed rules (tests, tools).
    pub fn principal_with(name: &str, acls: Arc<Acls>) -> Caller {
        Caller::Principal {
            name: name.to_string(),
            acls,
        }
    }

    /// The principal; `None` when authentication is off.
    pub fn principal(&self) -> Option<&str> {
        match self {
            Caller::Unrestricted => None,
            Caller::Principal { name, .. } => Some(name),
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Unrestricted => true,
            Caller::Principal { name, acls } => acls.is_admin(name),
        }
    }

    pub fn allows(&self, perm: &Permission<'_>) -> bool {
        match self {
            Caller::Unrestricted => true,
            Caller::Principal { name, acls } => acls.allows(name, perm),
        }
    }

    pub fn check(&self, perm: &Permission<'_>) -> Result<(), Denied> {
        match self {
            Caller::Unrestricted => Ok(()),
            Caller::Principal { name, acls } => acls.check(name, perm),
        }
    }

    /// Whether the caller may make a framework's scheduler calls (accept,
    /// decline, revive, suppress, acknowledge, reconcile, resubscribe):
    /// only the principal that registered it, or an admin.
    pub fn may_act_for(&self, framework: &FrameworkId, owner: Option<&str>) -> Result<(), Denied> {
        match self {
            Caller::Unrestricted => Ok(()),
            Caller::Principal { name, acls } => {
                if acls.is_admin(name) || owner == Some(name.as_str()) {
                    return Ok(());
                }
                Err(Denied {
                    principal: name.clone(),
                    what: match owner {
                        Some(o) => {
                            format!("act for framework {framework}, registered by principal {o}")
                        }
                        None => format!(
                            "act for framework {framework}, which no principal has registered since the master started"
                        ),
                    },
                    key: "framework_owner",
                })
            }
        }
    }
}

/// Tokens and ACLs of a master with authentication on.
#[derive(Debug)]
pub struct Auth {
    pub tokens: Tokens,
    pub acls: Arc<AclFile>,
    /// Which principal registered each framework (kept across restarts).
    pub owners: owners::FrameworkOwners,
}

/// The single switch every edge consults: disabled (everything open) or
/// enabled (tokens + ACLs). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Gate(Option<Arc<Auth>>);

impl Gate {
    pub fn disabled() -> Gate {
        Gate(None)
    }

    pub fn enabled(auth: Auth) -> Gate {
        Gate(Some(Arc::new(auth)))
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    pub fn auth(&self) -> Option<&Auth> {
        self.0.as_deref()
    }

    /// Authenticates an `Authorization` header value (HTTP or gRPC).
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Caller, AuthError> {
        let Some(auth) = &self.0 else {
            return Ok(Caller::Unrestricted);
        };
        let raw = header.ok_or(AuthError::Missing)?;
        let text = std::str::from_utf8(raw).map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = text.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let token = Token::new(token.trim());
        let name = auth.tokens.verify(&token)?;
        Ok(Caller::Principal {
            name,
            acls: auth.acls.current(),
        })
    }

    /// Authenticates a gRPC call from its `authorization` metadata.
    #[allow(clippy::result_large_err)]
    pub fn grpc_caller<T>(&self, req: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
        let header = req.metadata().get("authorization").map(|v| v.as_bytes());
        self.authenticate(header).map_err(|e| {
            tracing::debug!(error = %e, "refusing an unauthenticated scheduler call");
            tonic::Status::unauthenticated(e.to_string())
        })
    }

    /// Refuses a SUBSCRIBE naming a framework id that another principal
    /// registered (recorded across master restarts; an admin may).
    pub fn check_recorded_owner(
        &self,
        caller: &Caller,
        framework: &FrameworkId,
    ) -> Result<(), Denied> {
        let Some(auth) = &self.0 else {
            return Ok(());
        };
        match auth.owners.owner(framework.as_str()) {
            Some(owner) => caller.may_act_for(framework, Some(&owner)),
            None => Ok(()),
        }
    }

    /// Records the principal of a framework after its first SUBSCRIBE.
    pub async fn record_owner(&self, caller: &Caller, framework: &FrameworkId) {
        let (Some(auth), Some(p)) = (&self.0, caller.principal()) else {
            return;
        };
        if auth.owners.owner(framework.as_str()).is_some() {
            return;
        }
        let auth = auth.clone();
        let (f, p) = (framework.as_str().to_string(), p.to_string());
        let r = tokio::task::spawn_blocking(move || auth.owners.record(&f, &p)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(framework_id = %framework, error = %e, "cannot record the framework's principal; it is enforced in memory until the master restarts")
            }
            Err(e) => {
                tracing::error!(framework_id = %framework, error = %e, "recording the framework's principal failed")
            }
        }
    }

    /// The implementation of the secret store's `SecretPolicy` seam: may a
    /// task of a framework registered by `principal` read `path`? With
    /// authentication off, yes; with it on, a framework without a principal
    /// may not, and others as `read_secrets` says.
    pub fn may_read_secret(
        &self,
        principal: Option<&str>,
        path: &SecretPath,
    ) -> Result<(), String> {
        let Some(auth) = &self.0 else {
            return Ok(());
        };
        let perm = Permission::ReadSecret { path };
        match principal {
            Some(p) => auth
                .acls
                .current()
                .check(p, &perm)
                .map_err(|d| d.to_string()),
            None => Err(format!(
                "the framework has no authenticated principal, so it may not read secret {path} (permission: read_secrets)"
            )),
        }
    }
}

impl Gate {
    /// May `framework` (asked about by `caller`) learn about secret `path`
    /// at all? The same rule as a task of it reading the value: its
    /// recorded principal's `read_secrets`, else the caller's; an admin
    /// asking for a framework without a recorded principal may. Checked
    /// before the store is looked at, so that a refusal does not tell
    /// whether the path exists.
    pub fn may_framework_read_secret(
        &self,
        caller: &Caller,
        framework: &FrameworkId,
        path: &SecretPath,
    ) -> Result<(), String> {
        let Some(auth) = &self.0 else {
            return Ok(());
        };
        match auth.owners.owner(framework.as_str()) {
            Some(owner) => self.may_read_secret(Some(&owner), path),
            None if caller.is_admin() => Ok(()),
            None => self.may_read_secret(caller.principal(), path),
        }
    }
}

/// The secret store's [`SecretPolicy`](crate::secrets::SecretPolicy) with
/// authentication on: `read_secrets` for the principal that registered the
/// task's framework.
#[derive(Debug, Clone)]
pub struct AclSecretPolicy(pub Gate);

impl crate::secrets::SecretPolicy for AclSecretPolicy {
    fn may_read(
        &self,
        _framework: &FrameworkId,
        principal: Option<&str>,
        path: &SecretPath,
    ) -> Result<(), String> {
        self.0.may_read_secret(principal, path)
    }
}

/// Creates the first admin token when the store is empty and writes it to
/// `file` (created with mode 0600). Logs the path, never the token.
pub fn bootstrap(tokens: &Tokens, file: &Path) -> Result<bool, String> {
    if !tokens.is_empty() {
        tracing::info!(
            file = %file.display(),
            "tokens exist already: no bootstrap token created"
        );
        return Ok(false);
    }
    let (token, info) = tokens
        .create("admin", None)
        .map_err(|e| format!("cannot create the bootstrap token: {e}"))?;
    write_secret_file(file, format!("{}\n", token.expose()).as_bytes()).map_err(|e| {
        format!(
            "cannot write the bootstrap token to {}: {e}",
            file.display()
        )
    })?;
    tracing::warn!(
        file = %file.display(),
        token_id = %info.id,
        "created a bootstrap token for principal admin (no expiry): keep the file private, and revoke it once you have your own tokens"
    );
    Ok(true)
}

/// Writes `bytes` to `path`, readable by its owner only (mode 0600 from
/// creation: the content is never visible under a wider mode).
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        // An existing file keeps its mode when opened: narrow it first.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(acls: &str) -> Gate {
        Gate::enabled(Auth {
            tokens: Tokens::memory(),
            acls: Arc::new(AclFile::fixed(Acls::parse(acls, false).unwrap())),
            owners: owners::FrameworkOwners::memory(),
        })
    }

    #[test]
    fn headers_authenticate_or_say_why() {
        let g = gate("admins = [\"admin\"]");
        let tokens = &g.auth().unwrap().tokens;
        let (t, _) = tokens.create("ops", None).unwrap();
        let h = format!("Bearer {}", t.expose());
        assert_eq!(
            g.authenticate(Some(h.as_bytes())).unwrap().principal(),
            Some("ops")
        );
        let h = format!("bearer  {} ", t.expose());
        assert!(g.authenticate(Some(h.as_bytes())).is_ok());
        assert_eq!(g.authenticate(None).unwrap_err(), AuthError::Missing);
        let h = format!("Basic {}", t.expose());
        assert_eq!(
            g.authenticate(Some(h.as_bytes())).unwrap_err(),
            AuthError::Malformed
        );
        assert_eq!(
            g.authenticate(Some(
                b"Bearer agora_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            ))
            .unwrap_err(),
            AuthError::Unknown
        );
        assert!(Gate::disabled().authenticate(None).unwrap().is_admin());
    }

    #[test]
    fn only_the_owner_or_an_admin_acts_for_a_framework() {
        let acls = Arc::new(Acls::parse("admins = [\"admin\"]", false).unwrap());
        let f = FrameworkId::new("F1");
        let a = Caller::principal_with("a", acls.clone());
        assert!(a.may_act_for(&f, Some("a")).is_ok());
        let e = a.may_act_for(&f, Some("b")).unwrap_err();
        assert!(e.to_string().contains("registered by principal b"), "{e}");
        assert!(a.may_act_for(&f, None).is_err());
        assert!(
            Caller::principal_with("admin", acls)
                .may_act_for(&f, Some("b"))
                .is_ok()
        );
        assert!(Caller::Unrestricted.may_act_for(&f, Some("b")).is_ok());
    }

    #[test]
    fn secret_policy_follows_read_secrets() {
        let g = gate("[[read_secrets]]\nprincipals = [\"svc\"]\npaths = [\"/prod\"]\n");
        let p = SecretPath::parse("/prod/db").unwrap();
        assert!(g.may_read_secret(Some("svc"), &p).is_ok());
        let e = g.may_read_secret(Some("other"), &p).unwrap_err();
        assert!(e.contains("read secret /prod/db"), "{e}");
        assert!(g.may_read_secret(None, &p).is_err());
        assert!(Gate::disabled().may_read_secret(None, &p).is_ok());
    }

    #[test]
    fn bootstrap_writes_a_private_file_once() {
        let dir =
            std::env::temp_dir().join(format!("agora-boot-{}", uuid::Uuid::new_v4().simple()));
        let file = dir.join("admin.token");
        let t = Tokens::memory();
        assert!(bootstrap(&t, &file).unwrap());
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(t.verify(&Token::new(text.trim())).unwrap(), "admin");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!bootstrap(&t, &file).unwrap(), "not again");
        std::fs::remove_dir_all(dir).ok();
    }
}
