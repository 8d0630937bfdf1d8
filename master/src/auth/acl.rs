//! The ACL file: who may do what, in the spirit of Mesos ACLs. Deny by
//! default: a principal may do only what a rule grants (or everything if
//! it is listed in `admins`). See `docs/security.md` for the reference.
//!
//! ```toml
//! admins = ["admin"]
//!
//! [[register_frameworks]]
//! principals = ["services"]
//! roles = ["*", "public"]
//!
//! [[launch_tasks]]
//! principals = ["services"]
//! roles = "any"
//!
//! [[kill_tasks]]                 # their own frameworks' tasks: always
//! principals = ["ops"]
//! framework_principals = "any"
//!
//! [[read_secrets]]               # checked for the framework's principal
//! principals = ["services"]
//! paths = ["/prod"]
//! ```

use agora_core::FrameworkId;
use agora_core::secrets::SecretPath;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The rules `agora dev --secure` starts with: `admin` has everything; the
/// services framework (principal `services`) registers in any role,
/// launches, and reads every secret. Other principals get nothing until
/// the file is edited (it is reloaded on change).
pub const DEV_SECURE_ACLS: &str = r#"# Written by `agora dev --secure`; edit freely (reloaded on change).
admins = ["admin"]

[[register_frameworks]]
principals = ["services"]
roles = "any"

[[launch_tasks]]
principals = ["services"]
roles = "any"

[[read_secrets]]
principals = ["services"]
paths = ["/"]
"#;

/// A rule's set: the word `"any"`, or a list of names.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Match {
    Keyword(String),
    List(Vec<String>),
}

impl Match {
    fn any(&self) -> bool {
        matches!(self, Match::Keyword(k) if k == "any")
    }
    fn contains(&self, x: &str) -> bool {
        match self {
            Match::Keyword(_) => self.any(),
            Match::List(l) => l.iter().any(|v| v == x),
        }
    }
    fn check(&self, key: &str) -> Result<(), String> {
        match self {
            Match::Keyword(k) if k != "any" => Err(format!(
                "{key} = {k:?}: write \"any\" or a list such as [\"{k}\"]"
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRule {
    pub principals: Match,
    pub roles: Match,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameworkRule {
    pub principals: Match,
    /// Whose frameworks: the principals that registered them.
    pub framework_principals: Match,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    pub principals: Match,
    /// Secret path prefixes (segment-wise; `/` is every path), or "any".
    pub paths: Match,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalRule {
    pub principals: Match,
}

/// The parsed ACL file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acls {
    /// Principals allowed everything.
    #[serde(default)]
    pub admins: Vec<String>,
    #[serde(default)]
    pub register_frameworks: Vec<RoleRule>,
    #[serde(default)]
    pub launch_tasks: Vec<RoleRule>,
    #[serde(default)]
    pub kill_tasks: Vec<FrameworkRule>,
    #[serde(default)]
    pub teardown_frameworks: Vec<FrameworkRule>,
    #[serde(default)]
    pub read_secrets: Vec<PathRule>,
    #[serde(default)]
    pub manage_secrets: Vec<PathRule>,
    #[serde(default)]
    pub manage_tokens: Vec<PrincipalRule>,
    #[serde(default)]
    pub view_state: Vec<PrincipalRule>,
}

/// What a caller asks to do.
#[derive(Clone, Copy, Debug)]
pub enum Permission<'a> {
    /// SUBSCRIBE in a role.
    RegisterFramework {
        role: &'a str,
    },
    /// ACCEPT with LAUNCH for a framework of this role.
    LaunchTasks {
        role: &'a str,
    },
    /// Kill a task of `framework`, registered by `owner` (own: always).
    KillTasks {
        framework: &'a FrameworkId,
        owner: Option<&'a str>,
    },
    /// Tear down `framework`, registered by `owner` (own: always).
    TeardownFramework {
        framework: &'a FrameworkId,
        owner: Option<&'a str>,
    },
    /// A task of the caller's framework reads this secret.
    ReadSecret {
        path: &'a SecretPath,
    },
    /// Put, list, show or delete secrets at this path (`None`: the list).
    ManageSecrets {
        path: Option<&'a SecretPath>,
    },
    ManageTokens,
    ViewState,
}

impl Permission<'_> {
    /// The ACL file key that grants it.
    pub fn key(&self) -> &'static str {
        match self {
            Permission::RegisterFramework { .. } => "register_frameworks",
            Permission::LaunchTasks { .. } => "launch_tasks",
            Permission::KillTasks { .. } => "kill_tasks",
            Permission::TeardownFramework { .. } => "teardown_frameworks",
            Permission::ReadSecret { .. } => "read_secrets",
            Permission::ManageSecrets { .. } => "manage_secrets",
            Permission::ManageTokens => "manage_tokens",
            Permission::ViewState => "view_state",
        }
    }

    fn describe(&self) -> String {
        let owner = |o: Option<&str>| match o {
            Some(p) => format!(" (registered by principal {p})"),
            None => String::new(),
        };
        match self {
            Permission::RegisterFramework { role } => {
                format!("register frameworks in role {role:?}")
            }
            Permission::LaunchTasks { role } => format!("launch tasks in role {role:?}"),
            Permission::KillTasks {
                framework,
                owner: o,
            } => {
                format!("kill tasks of framework {framework}{}", owner(*o))
            }
            Permission::TeardownFramework {
                framework,
                owner: o,
            } => {
                format!("tear down framework {framework}{}", owner(*o))
            }
            Permission::ReadSecret { path } => format!("read secret {path}"),
            Permission::ManageSecrets { path: Some(p) } => format!("manage secret {p}"),
            Permission::ManageSecrets { path: None } => "list secrets".to_string(),
            Permission::ManageTokens => "manage tokens".to_string(),
            Permission::ViewState => "view the cluster state".to_string(),
        }
    }
}

/// A refusal: names the principal, what it asked, and the ACL key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal {principal} may not {what} (permission: {key})")]
pub struct Denied {
    pub principal: String,
    pub what: String,
    pub key: &'static str,
}

impl Denied {
    pub fn new(principal: &str, perm: &Permission<'_>) -> Denied {
        Denied {
            principal: principal.to_string(),
            what: perm.describe(),
            key: perm.key(),
        }
    }
}

fn path_matches(paths: &Match, path: &SecretPath) -> bool {
    match paths {
        Match::Keyword(_) => paths.any(),
        Match::List(l) => l.iter().any(|p| path.is_under(p)),
    }
}

impl Acls {
    /// Parses TOML (or JSON when `json`), then checks every value.
    pub fn parse(text: &str, json: bool) -> Result<Acls, String> {
        let acls: Acls = if json {
            serde_json::from_str(text).map_err(|e| e.to_string())?
        } else {
            toml::from_str(text).map_err(|e| e.to_string())?
        };
        acls.validate()?;
        Ok(acls)
    }

    fn validate(&self) -> Result<(), String> {
        let principal = |key: &str, p: &str| {
            if crate::auth::tokens::valid_principal(p) {
                Ok(())
            } else {
                Err(format!(
                    "{key}: {p:?} is not a valid principal (1 to 64 letters, digits, `.`, `_`, `-`)"
                ))
            }
        };
        for a in &self.admins {
            principal("admins", a)?;
        }
        let principals = |key: &str, m: &Match| -> Result<(), String> {
            m.check(&format!("{key}.principals"))?;
            if let Match::List(l) = m {
                for p in l {
                    principal(key, p)?;
                }
            }
            Ok(())
        };
        for (key, rules) in [
            ("register_frameworks", &self.register_frameworks),
            ("launch_tasks", &self.launch_tasks),
        ] {
            for r in rules {
                principals(key, &r.principals)?;
                r.roles.check(&format!("{key}.roles"))?;
            }
        }
        for (key, rules) in [
            ("kill_tasks", &self.kill_tasks),
            ("teardown_frameworks", &self.teardown_frameworks),
        ] {
            for r in rules {
                principals(key, &r.principals)?;
                principals(&format!("{key}.framework"), &r.framework_principals)?;
            }
        }
        for (key, rules) in [
            ("read_secrets", &self.read_secrets),
            ("manage_secrets", &self.manage_secrets),
        ] {
            for r in rules {
                principals(key, &r.principals)?;
                r.paths.check(&format!("{key}.paths"))?;
                if let Match::List(l) = &r.paths {
                    for p in l {
                        if p != "/" {
                            SecretPath::parse(p).map_err(|e| format!("{key}.paths: {e}"))?;
                        }
                    }
                }
            }
        }
        for (key, rules) in [
            ("manage_tokens", &self.manage_tokens),
            ("view_state", &self.view_state),
        ] {
            for r in rules {
                principals(key, &r.principals)?;
            }
        }
        Ok(())
    }

    pub fn is_admin(&self, principal: &str) -> bool {
        self.admins.iter().any(|a| a == principal)
    }

    /// Whether `principal` may do `perm`.
    pub fn allows(&self, principal: &str, perm: &Permission<'_>) -> bool {
        if self.is_admin(principal) {
            return true;
        }
        let who = |m: &Match| m.contains(principal);
        match perm {
            Permission::RegisterFramework { role } => self
                .register_frameworks
                .iter()
                .any(|r| who(&r.principals) && r.roles.contains(role)),
            Permission::LaunchTasks { role } => self
                .launch_tasks
                .iter()
                .any(|r| who(&r.principals) && r.roles.contains(role)),
            Permission::KillTasks { owner, .. } => {
                *owner == Some(principal)
                    || self.kill_tasks.iter().any(|r| {
                        who(&r.principals)
                            && framework_owner_matches(&r.framework_principals, *owner)
                    })
            }
            Permission::TeardownFramework { owner, .. } => {
                *owner == Some(principal)
                    || self.teardown_frameworks.iter().any(|r| {
                        who(&r.principals)
                            && framework_owner_matches(&r.framework_principals, *owner)
                    })
            }
            Permission::ReadSecret { path } => self
                .read_secrets
                .iter()
                .any(|r| who(&r.principals) && path_matches(&r.paths, path)),
            Permission::ManageSecrets { path: Some(path) } => self
                .manage_secrets
                .iter()
                .any(|r| who(&r.principals) && path_matches(&r.paths, path)),
            Permission::ManageSecrets { path: None } => {
                self.manage_secrets.iter().any(|r| who(&r.principals))
            }
            Permission::ManageTokens => self.manage_tokens.iter().any(|r| who(&r.principals)),
            Permission::ViewState => self.view_state.iter().any(|r| who(&r.principals)),
        }
    }

    pub fn check(&self, principal: &str, perm: &Permission<'_>) -> Result<(), Denied> {
        if self.allows(principal, perm) {
            Ok(())
        } else {
            Err(Denied::new(principal, perm))
        }
    }
}

/// A framework registered while nobody was authenticated has no owner:
/// only an `"any"` rule covers it.
fn framework_owner_matches(m: &Match, owner: Option<&str>) -> bool {
    match owner {
        Some(o) => m.contains(o),
        None => m.any(),
    }
}

/// The ACL file loaded from disk, replaced atomically when it changes.
pub struct AclFile {
    path: PathBuf,
    current: RwLock<(Arc<Acls>, Option<SystemTime>)>,
}

impl fmt::Debug for AclFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclFile").field("path", &self.path).finish()
    }
}

fn read_file(path: &Path) -> Result<(Acls, Option<SystemTime>), String> {
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("cannot read ACL file {}: {e}", path.display()))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read ACL file {}: {e}", path.display()))?;
    let json = path.extension().is_some_and(|e| e == "json");
    let acls = Acls::parse(&text, json)
        .map_err(|e| format!("ACL file {} is not valid: {e}", path.display()))?;
    Ok((acls, Some(mtime)))
}

impl AclFile {
    /// Loads the file (TOML; JSON when it ends in `.json`).
    pub fn load(path: &Path) -> Result<AclFile, String> {
        let (acls, mtime) = read_file(path)?;
        Ok(AclFile {
            path: path.to_path_buf(),
            current: RwLock::new((Arc::new(acls), mtime)),
        })
    }

    /// A fixed set of rules (tests; no file behind it).
    pub fn fixed(acls: Acls) -> AclFile {
        AclFile {
            path: PathBuf::new(),
            current: RwLock::new((Arc::new(acls), None)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rules now in force.
    pub fn current(&self) -> Arc<Acls> {
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        }
    }

    /// Re-reads the file. A bad file keeps the rules in force; the error
    /// says why.
    pub fn reload(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let (acls, mtime) = read_file(&self.path)?;
        if let Ok(mut g) = self.current.write() {
            *g = (Arc::new(acls), mtime);
        }
        Ok(())
    }

    /// Reloads if the file's modification time changed since the last load.
    /// Returns whether new rules are in force.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        if self.path.as_os_str().is_empty() {
            return Ok(false);
        }
        let now = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let seen = self.current.read().ok().and_then(|g| g.1);
        if now.is_some() && now == seen {
            return Ok(false);
        }
        match self.reload() {
            Ok(()) => Ok(true),
            Err(e) => {
                // Remember this mtime so a bad file is reported once, not
                // every poll.
                if let Ok(mut g) = self.current.write() {
                    g.1 = now;
                }
                Err(e)
            }
        }
    }

    /// Polls the file every `every` and reloads on SIGHUP, until the
    /// returned task is aborted, every other holder of the rules is gone,
    /// or the runtime stops.
    pub fn watch(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let forced = {
                    let hup_recv = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = tick.tick() => false,
                        _ = hup_recv => true,
                    }
                };
                #[cfg(not(unix))]
                let forced = {
                    tick.tick().await;
                    false
                };
                // Nobody but this task holds the rules: the master is gone.
                if Arc::strong_count(&self) == 1 {
                    return;
                }
                let r = if forced {
                    self.reload().map(|()| true)
                } else {
                    self.reload_if_changed()
                };
                match r {
                    Ok(true) => tracing::info!(
                        file = %self.path.display(),
                        sighup = forced,
                        "ACL file reloaded"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        error = %e,
                        "keeping the ACLs in force: the new ACL file could not be used"
                    ),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
admins = ["admin"]

[[register_frameworks]]
principals = ["services"]
roles = ["*", "public"]

[[launch_tasks]]
principals = ["services"]
roles = "any"

[[kill_tasks]]
principals = ["ops"]
framework_principals = ["services"]

[[teardown_frameworks]]
principals = ["ops"]
framework_principals = "any"

[[read_secrets]]
principals = ["services"]
paths = ["/prod/db"]

[[manage_secrets]]
principals = ["ops"]
paths = ["/"]

[[manage_tokens]]
principals = ["ops"]

[[view_state]]
principals = "any"
"#;

    fn fid(s: &str) -> FrameworkId {
        FrameworkId::new(s)
    }

    #[test]
    fn rules_grant_and_everything_else_is_denied() {
        let a = Acls::parse(EXAMPLE, false).unwrap();
        let reg = |r| Permission::RegisterFramework { role: r };
        assert!(a.allows("services", &reg("*")));
        assert!(a.allows("services", &reg("public")));
        let d = a.check("services", &reg("prod")).unwrap_err();
        assert_eq!(
            d.to_string(),
            "principal services may not register frameworks in role \"prod\" (permission: register_frameworks)"
        );
        assert!(!a.allows("ops", &reg("*")), "deny by default");
        assert!(a.allows("services", &Permission::LaunchTasks { role: "anything" }));
        assert!(!a.allows("batch", &Permission::LaunchTasks { role: "*" }));
        // Admins have everything.
        assert!(a.allows("admin", &reg("prod")));
        assert!(a.allows("admin", &Permission::ManageTokens));
        // Unknown principals get nothing but what "any" grants.
        assert!(!a.allows("nobody", &Permission::ManageTokens));
        assert!(a.allows("nobody", &Permission::ViewState));
    }

    #[test]
    fn kill_and_teardown_own_always_others_by_rule() {
        let a = Acls::parse(EXAMPLE, false).unwrap();
        let f = fid("F1");
        let kill = |owner| Permission::KillTasks {
            framework: &f,
            owner,
        };
        assert!(a.allows("batch", &kill(Some("batch"))), "own framework");
        assert!(!a.allows("batch", &kill(Some("services"))));
        assert!(a.allows("ops", &kill(Some("services"))));
        assert!(!a.allows("ops", &kill(Some("batch"))), "not listed");
        assert!(
            !a.allows("ops", &kill(None)),
            "an unowned framework needs \"any\""
        );
        let e = a.check("batch", &kill(Some("services"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "principal batch may not kill tasks of framework F1 (registered by principal services) (permission: kill_tasks)"
        );
        let down = |owner| Permission::TeardownFramework {
            framework: &f,
            owner,
        };
        assert!(a.allows("ops", &down(Some("batch"))));
        assert!(a.allows("ops", &down(None)));
        assert!(!a.allows("services", &down(Some("batch"))));
    }

    #[test]
    fn secret_prefixes_are_segment_wise() {
        let a = Acls::parse(EXAMPLE, false).unwrap();
        let p = |s| SecretPath::parse(s).unwrap();
        let read = |s: &SecretPath| a.allows("services", &Permission::ReadSecret { path: s });
        assert!(read(&p("/prod/db")));
        assert!(read(&p("/prod/db/password")));
        assert!(!read(&p("/prod/dbx")));
        assert!(!read(&p("/prod/cache")));
        assert!(!a.allows(
            "ops",
            &Permission::ReadSecret {
                path: &p("/prod/db")
            }
        ));
        assert!(a.allows(
            "ops",
            &Permission::ManageSecrets {
                path: Some(&p("/x/y"))
            }
        ));
        assert!(a.allows("ops", &Permission::ManageSecrets { path: None }));
        assert!(!a.allows("services", &Permission::ManageSecrets { path: None }));
    }

    #[test]
    fn the_dev_secure_rules_parse_and_grant_what_they_say() {
        let a = Acls::parse(DEV_SECURE_ACLS, false).unwrap();
        assert!(a.allows("admin", &Permission::ManageTokens));
        assert!(a.allows(
            "services",
            &Permission::RegisterFramework { role: "public" }
        ));
        let p = SecretPath::parse("/any/thing").unwrap();
        assert!(a.allows("services", &Permission::ReadSecret { path: &p }));
        assert!(!a.allows("services", &Permission::ManageTokens));
        assert!(!a.allows("other", &Permission::ViewState));
    }

    #[test]
    fn json_works_and_bad_files_say_why() {
        let a = Acls::parse(
            r#"{"admins": ["root"], "view_state": [{"principals": ["ops"]}]}"#,
            true,
        )
        .unwrap();
        assert!(a.allows("root", &Permission::ManageTokens));
        assert!(a.allows("ops", &Permission::ViewState));
        for (bad, why) in [
            ("admin = [\"x\"]", "admin"),
            ("admins = [\"a b\"]", "not a valid principal"),
            ("[[view_state]]\nprincipals = \"all\"", "write \"any\""),
            (
                "[[read_secrets]]\nprincipals = [\"a\"]\npaths = [\"/a//b\"]",
                "empty segment",
            ),
            (
                "[[kill_tasks]]\nprincipals = [\"a\"]",
                "framework_principals",
            ),
        ] {
            let e = Acls::parse(bad, false).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn reload_keeps_old_rules_when_the_new_file_is_bad() {
        let dir = std::env::temp_dir().join(format!("agora-acl-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acls.toml");
        std::fs::write(&path, "[[view_state]]\nprincipals = [\"ops\"]\n").unwrap();
        let f = AclFile::load(&path).unwrap();
        assert!(f.current().allows("ops", &Permission::ViewState));
        assert!(!f.reload_if_changed().unwrap(), "unchanged");
        std::fs::write(&path, "[[view_state]]\nprincipals = [\"dev\"]\n").unwrap();
        f.reload().unwrap();
        assert!(!f.current().allows("ops", &Permission::ViewState));
        assert!(f.current().allows("dev", &Permission::ViewState));
        std::fs::write(&path, "[[view_state]\n").unwrap();
        assert!(f.reload().unwrap_err().contains("not valid"));
        assert!(
            f.current().allows("dev", &Permission::ViewState),
            "old rules kept"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn the_watcher_picks_up_a_changed_file() {
        let dir =
            std::env::temp_dir().join(format!("agora-aclw-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acls.json");
        std::fs::write(&path, r#"{"view_state": [{"principals": ["a"]}]}"#).unwrap();
        let f = Arc::new(AclFile::load(&path).unwrap());
        let task = f.clone().watch(Duration::from_millis(20));
        // Some file systems keep whole-second mtimes: make the change visible.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        std::fs::write(&path, r#"{"view_state": [{"principals": ["b"]}]}"#).unwrap();
        let mut changed = false;
        for _ in 0..200 {
            if f.current().allows("b", &Permission::ViewState) {
                changed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        assert!(changed, "the new rules were not picked up");
        assert!(!f.current().allows("a", &Permission::ViewState));
        std::fs::remove_dir_all(dir).ok();
    }
}
