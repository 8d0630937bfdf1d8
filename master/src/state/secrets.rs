//! What the secret store asks the state: which live tasks reference a
//! secret (`used_by`), and the references of one task for `ResolveSecrets`.

use super::{CallError, Master};
use agora_core::secrets::{SecretPath, SecretUse};
use agora_core::{AgentId, FrameworkId, TaskId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The task label naming the app a task belongs to (services framework).
pub const APP_LABEL: &str = "agora.app_id";

/// Live tasks of one framework and app that reference a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretUser {
    pub path: String,
    pub framework_id: String,
    pub framework_name: String,
    /// The task label `agora.app_id`, or the task's name without it.
    pub app: String,
    pub tasks: usize,
}

/// One task's secret references, as the master holds them.
#[derive(Clone, Debug)]
pub struct TaskSecrets {
    pub secrets: Vec<SecretUse>,
    /// The principal the framework authenticated as, when known (set by
    /// the authentication layer; `None` until then).
    pub principal: Option<String>,
}

impl Master {
    /// Live tasks referencing `path` (every path when `None`), grouped by
    /// path, framework and app, sorted.
    pub fn secret_users(&self, path: Option<&SecretPath>) -> Vec<SecretUser> {
        let mut groups: BTreeMap<(String, String, String), (String, usize)> = BTreeMap::new();
        for f in self.frameworks.values() {
            for t in f.tasks.values() {
                let mut seen: Vec<&str> = Vec::new();
                for u in &t.info.secrets {
                    let p = u.secret.path.as_str();
                    if path.is_some_and(|want| want.as_str() != p) || seen.contains(&p) {
                        continue;
                    }
                    seen.push(p);
                    let app = t
                        .info
                        .labels
                        .get(APP_LABEL)
                        .cloned()
                        .unwrap_or_else(|| t.info.name.clone());
                    let e = groups
                        .entry((p.to_string(), f.id.0.clone(), app))
                        .or_insert_with(|| (f.info.name.clone(), 0));
                    e.1 += 1;
                }
            }
        }
        groups
            .into_iter()
            .map(
                |((path, framework_id, app), (framework_name, tasks))| SecretUser {
                    path,
                    framework_id,
                    framework_name,
                    app,
                    tasks,
                },
            )
            .collect()
    }

    /// The versions of `path` live tasks reference explicitly (not `0`,
    /// "latest"): the store keeps them beyond its last N.
    pub fn secret_versions_in_use(&self, path: &SecretPath) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .frameworks
            .values()
            .flat_map(|f| f.tasks.values())
            .flat_map(|t| t.info.secrets.iter())
            .filter(|u| u.secret.path == *path && u.secret.version != 0)
            .map(|u| u.secret.version)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The secret references of a live task, for the agent that runs it.
    /// Refused (with a message naming what did not match) unless the
    /// framework is known, the task is one of its live tasks, and the task
    /// is on `agent`.
    pub fn task_secrets(
        &self,
        agent: &AgentId,
        framework: &FrameworkId,
        task: &TaskId,
    ) -> Result<TaskSecrets, String> {
        let Some(f) = self.frameworks.get(framework) else {
            return Err(format!("framework {framework} is not known to this master"));
        };
        let Some(t) = f.tasks.get(task) else {
            return Err(format!(
                "task {task} is not a live task of framework {framework}"
            ));
        };
        if &t.agent != agent {
            return Err(format!(
                "task {task} of framework {framework} does not run on agent {agent}"
            ));
        }
        if t.adopted {
            // Its references are only what the agent reported: an agent
            // could otherwise claim a task to read any secret its
            // framework may read.
            return Err(format!(
                "task {task} of framework {framework} was not launched through this master \
                 (it was reported by its agent after a master restart); secrets are resolved \
                 only when a task is launched: relaunch it"
            ));
        }
        Ok(TaskSecrets {
            secrets: t.info.secrets.clone(),
            principal: f.principal.clone(),
        })
    }

    /// The host name an agent registered with (`None`: no such agent).
    pub fn agent_hostname(&self, id: &agora_core::AgentId) -> Option<String> {
        self.agents.get(id).map(|a| a.hostname.clone())
    }

    /// Whether a framework is subscribed (known and not torn down).
    pub fn framework_known(&self, id: &FrameworkId) -> Result<(), CallError> {
        if self.frameworks.contains_key(id) {
            Ok(())
        } else if self.is_completed(id) {
            Err(CallError::FrameworkCompleted(id.clone()))
        } else {
            Err(CallError::UnknownFramework(id.clone()))
        }
    }
}
