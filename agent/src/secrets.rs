//! A task's secrets on its agent: resolved from the master at launch
//! (`AgentLink.ResolveSecrets`), handed to the runtime as environment
//! variables and files, never written anywhere else.
//!
//! - Values live in [`SecretValue`]s (zeroed on drop, redacted `Debug`);
//!   [`TaskSecrets`], which a [`crate::runtime::LaunchSpec`] carries, shows
//!   only names and lengths.
//! - Files go to a **tmpfs** directory of the agent ([`SecretsDir`],
//!   `--secrets-dir`, checked with `statfs` at start), one directory per
//!   task (mode 0700), one file per secret (mode 0400). Docker bind-mounts
//!   the file read-only at its container path; the process runtime links
//!   the sandbox path to it. Nothing on disk holds a value. A task's
//!   directory is removed when the task ends, and at agent start for every
//!   task that is not live.
//! - The checkpoint holds the task description only: references.

use crate::runtime::BoxFuture;
use agora_core::secrets::{SecretTarget, SecretValue};
use agora_core::{AgentId, FrameworkId, TaskId};
use agora_proto::pb;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Reason of a task that failed because its secrets could not be resolved
/// or delivered (as Mesos names it).
pub const REASON_SECRET_FAILED: &str = "REASON_SECRET_GENERATION_FAILED";

/// One secret as the master returned it.
#[derive(Debug)]
pub struct Resolved {
    pub path: String,
    pub requested_version: u64,
    pub version: u64,
    pub value: SecretValue,
}

/// Where the agent gets a task's secret values: the master over the
/// agent's own connection in production, a fake in tests.
pub trait SecretResolver: Send + Sync + 'static {
    fn resolve(
        &self,
        agent: &AgentId,
        framework: &FrameworkId,
        task: &TaskId,
    ) -> BoxFuture<'_, Result<Vec<Resolved>, tonic::Status>>;
}

/// The master, over the channel the agent's `Attach` stream uses (so
/// whatever secures that connection secures this call).
pub struct ChannelResolver(pub tonic::transport::Channel);

impl SecretResolver for ChannelResolver {
    fn resolve(
        &self,
        agent: &AgentId,
        framework: &FrameworkId,
        task: &TaskId,
    ) -> BoxFuture<'_, Result<Vec<Resolved>, tonic::Status>> {
        let req = pb::ResolveSecretsRequest {
            agent_id: agent.0.clone(),
            framework_id: framework.0.clone(),
            task_id: task.0.clone(),
        };
        let mut client = pb::agent_link_client::AgentLinkClient::new(self.0.clone())
            .max_decoding_message_size(8 << 20);
        Box::pin(async move {
            let resp = client.resolve_secrets(req).await?.into_inner();
            // The bytes move into SecretValues (no copy is left behind);
            // the response itself is never logged.
            Ok(resp
                .secrets
                .into_iter()
                .map(|mut s| Resolved {
                    value: SecretValue::new(std::mem::take(&mut s.value)),
                    path: s.path,
                    requested_version: s.requested_version,
                    version: s.version,
                })
                .collect())
        })
    }
}

/// A secret file of a task: where the task sees it, and the tmpfs file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// Absolute inside a container; relative to the sandbox for a process.
    pub target: String,
    /// The file on the agent's tmpfs (mode 0400).
    pub host_path: PathBuf,
}

/// What a runtime gets of a task's secrets. `Debug` shows names, paths
/// and lengths only.
#[derive(Debug, Default)]
pub struct TaskSecrets {
    /// Environment variables (valid UTF-8 without NUL, checked).
    pub env: Vec<(String, SecretValue)>,
    pub files: Vec<SecretFile>,
}

impl TaskSecrets {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.files.is_empty()
    }
}

/// Whether an error from the master is worth asking again.
fn transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::ResourceExhausted
    )
}

fn code_words(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::NotFound => "not found",
        tonic::Code::Unimplemented | tonic::Code::FailedPrecondition => {
            "the master has no secret store"
        }
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::InvalidArgument => "invalid request",
        c if transient(c) => "the master cannot be reached",
        _ => "refused",
    }
}

/// Asks `resolver` for the task's secrets, retrying transient errors with
/// backoff for at most about `budget`. The error names the paths and the
/// reason, never a value.
pub async fn resolve_with_retry(
    resolver: &dyn SecretResolver,
    agent: &AgentId,
    framework: &FrameworkId,
    task: &TaskId,
    paths: &[String],
    budget: Duration,
) -> Result<Vec<Resolved>, String> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    let what = if paths.len() == 1 {
        format!("secret {}", paths[0])
    } else {
        format!("secrets {}", paths.join(", "))
    };
    loop {
        match resolver.resolve(agent, framework, task).await {
            Ok(r) => return Ok(r),
            Err(s) => {
                let retry = transient(s.code()) && start.elapsed() + delay <= budget;
                if !retry {
                    let tried = if transient(s.code()) {
                        format!(" (tried for {} s)", start.elapsed().as_secs())
                    } else {
                        String::new()
                    };
                    // The master's refusals name the path and the reason
                    // (`secret /p: permission denied: ...`): kept as they
                    // are; anything else is prefixed with the paths.
                    let m = s.message();
                    if !transient(s.code()) && paths.iter().any(|p| m.contains(p.as_str())) {
                        return Err(m.to_string());
                    }
                    return Err(format!("{what}: {}: {m}{tried}", code_words(s.code())));
                }
                tracing::debug!(code = ?s.code(), "resolving secrets failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The agent's tmpfs directory for secret files.
#[derive(Debug, Clone)]
pub struct SecretsDir {
    root: PathBuf,
}

/// `statfs` magic of tmpfs.
#[cfg(target_os = "linux")]
fn is_tmpfs(path: &Path) -> Result<bool, String> {
    let st =
        nix::sys::statfs::statfs(path).map_err(|e| format!("statfs {}: {e}", path.display()))?;
    Ok(st.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

#[cfg(not(target_os = "linux"))]
fn is_tmpfs(_path: &Path) -> Result<bool, String> {
    Ok(false)
}

impl SecretsDir {
    /// Creates `root` (mode 0700) and checks that it is on tmpfs: secret
    /// files must never reach a disk. The error says what to do.
    pub fn open(root: &Path) -> Result<SecretsDir, String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(root).map_err(|e| {
            format!(
                "cannot create the secrets directory {}: {e}; give --secrets-dir a directory on a tmpfs the agent may write (e.g. under /dev/shm or /run)",
                root.display()
            )
        })?;
        match is_tmpfs(root)? {
            true => {}
            false => {
                return Err(format!(
                    "the secrets directory {} is not on a tmpfs: secret files would reach a disk; give --secrets-dir a directory on a tmpfs (e.g. /dev/shm/agora-secrets, or mount one: mount -t tmpfs -o mode=0700 tmpfs {})",
                    root.display(),
                    root.display()
                ));
            }
        }
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private (0700): {e}", root.display()))?;
        Ok(SecretsDir {
            root: root.to_path_buf(),
        })
    }

    /// Without the tmpfs check (tests on a plain directory).
    #[cfg(test)]
    pub fn unchecked(root: &Path) -> SecretsDir {
        std::fs::create_dir_all(root).unwrap();
        SecretsDir {
            root: root.to_path_buf(),
        }
    }

    /// The directory of one agent under this one (`<root>/<agent id>`).
    pub fn for_agent(&self, agent: &AgentId) -> SecretsDir {
        SecretsDir {
            root: agent_dir(&self.root, agent),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The task's directory (one per framework and task, never shared).
    pub fn task_dir(&self, framework: &FrameworkId, task: &TaskId) -> PathBuf {
        crate::sandbox::dir(&self.root, framework.as_str(), task.as_str())
    }

    /// Writes the task's file secrets: a fresh directory (0700), one file
    /// per secret (0400), named by position. Returns where each went.
    pub fn write(
        &self,
        framework: &FrameworkId,
        task: &TaskId,
        files: &[(String, &SecretValue)],
    ) -> Result<Vec<SecretFile>, String> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = self.task_dir(framework, task);
        // A relaunch of the same task id starts clean.
        let _ = crate::sandbox::remove(&self.root, &dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut out = Vec::new();
        for (i, (target, value)) in files.iter().enumerate() {
            let path = dir.join(format!("secret-{i}"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            f.write_all(value.expose())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            out.push(SecretFile {
                target: target.clone(),
                host_path: path,
            });
        }
        Ok(out)
    }

    /// Removes the task's secret files (the task ended).
    pub fn remove(&self, framework: &FrameworkId, task: &TaskId) {
        let dir = self.task_dir(framework, task);
        if dir.exists()
            && let Err(e) = crate::sandbox::remove(&self.root, &dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a task's secret files");
        }
    }

    /// Removes the secret files of every task but `live` (agent start).
    /// Returns how many task directories went.
    pub fn sweep(&self, live: &[(FrameworkId, TaskId)]) -> usize {
        let keep: HashSet<PathBuf> = live.iter().map(|(f, t)| self.task_dir(f, t)).collect();
        sweep_dir(&self.root, &keep)
    }
}

/// Task directories are prefix-free (see `sandbox`): a directory that is
/// neither a live task's nor on the way to one holds no live files.
fn sweep_dir(dir: &Path, keep: &HashSet<PathBuf>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let p = e.path();
        if keep.contains(&p) {
            continue;
        }
        if keep.iter().any(|k| k.starts_with(&p)) {
            n += sweep_dir(&p, keep);
        } else {
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => n += 1,
                Err(err) => {
                    tracing::warn!(path = %p.display(), error = %err, "cannot remove stale secret files")
                }
            }
        }
    }
    n
}

/// Where the agent `agent` keeps its tasks' secret files under the
/// secrets directory `base` (`--secrets-dir`).
pub fn agent_dir(base: &Path, agent: &AgentId) -> PathBuf {
    let mut root = base.to_path_buf();
    for n in crate::sandbox::names(agent.as_str()) {
        root.push(n);
    }
    root
}

/// Resolves and prepares a task's secrets: asks the master, checks the
/// answer covers every reference of the task, writes the file secrets.
/// The error is the task's failure message (paths and reasons only).
pub async fn prepare(
    resolver: Option<Arc<dyn SecretResolver>>,
    dir: Option<&SecretsDir>,
    agent: &AgentId,
    framework: &FrameworkId,
    task: &agora_core::info::TaskInfo,
    budget: Duration,
) -> Result<TaskSecrets, String> {
    let mut paths: Vec<String> = task
        .secrets
        .iter()
        .map(|u| u.secret.path.as_str().to_string())
        .collect();
    paths.sort();
    paths.dedup();
    let Some(resolver) = resolver else {
        return Err(format!(
            "secrets {}: the agent is not connected to the master",
            paths.join(", ")
        ));
    };
    let has_files = task
        .secrets
        .iter()
        .any(|u| matches!(u.target, SecretTarget::File(_)));
    if has_files && dir.is_none() {
        return Err(format!(
            "secrets {}: this agent has no secrets directory for file secrets (start it with --secrets-dir on a tmpfs)",
            paths.join(", ")
        ));
    }
    let mut resolved = resolve_with_retry(
        resolver.as_ref(),
        agent,
        framework,
        &task.id,
        &paths,
        budget,
    )
    .await?;
    let mut out = TaskSecrets::default();
    let mut files: Vec<(String, usize)> = Vec::new();
    let mut values: Vec<SecretValue> = Vec::new();
    for u in &task.secrets {
        let path = u.secret.path.as_str();
        // The master answers each (path, requested version) once: a
        // reference takes the entry asked with its own version, so "latest"
        // and a pin of the same path never swap values.
        let exact = resolved
            .iter()
            .position(|r| r.path == path && r.requested_version == u.secret.version);
        let Some(i) = exact.or_else(|| {
            (u.secret.version == 0)
                .then(|| resolved.iter().position(|r| r.path == path))
                .flatten()
        }) else {
            return Err(format!(
                "secret {path}: the master's answer lacks version {} of it",
                u.secret.version
            ));
        };
        if u.secret.version != 0 && resolved[i].version != u.secret.version {
            return Err(format!(
                "secret {path}: asked for version {}, the master returned version {}",
                u.secret.version, resolved[i].version
            ));
        }
        let value = SecretValue::new(resolved[i].value.expose().to_vec());
        match &u.target {
            SecretTarget::Env(name) => {
                let ok =
                    std::str::from_utf8(value.expose()).is_ok() && !value.expose().contains(&0);
                if !ok {
                    return Err(format!(
                        "secret {path}: its value is not text without NUL bytes, so it cannot be the environment variable {name}; use it as a file"
                    ));
                }
                out.env.push((name.clone(), value));
            }
            SecretTarget::File(target) => {
                files.push((target.clone(), values.len()));
                values.push(value);
            }
        }
    }
    resolved.clear();
    if !files.is_empty()
        && let Some(dir) = dir
    {
        let list: Vec<(String, &SecretValue)> = files
            .iter()
            .map(|(t, i)| (t.clone(), &values[*i]))
            .collect();
        out.files = dir
            .write(framework, &task.id, &list)
            .map_err(|e| format!("secret files: {e}"))?;
    }
    Ok(out)
}
