//! The API's answers as types: Marathon's shapes and field names under
//! `/v2`, the same plus Agora's own fields under `/v1`. The OpenAPI
//! document is generated from these types.

use crate::app::{AppDefinition, FieldError};
use crate::scheduler::{AppState, Deployment, Instance};
use agora_core::TaskState;
use serde::Serialize;
use utoipa::ToSchema;

/// An error: what was wrong and what to do.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub message: String,
}

/// An invalid definition: every problem, each at its JSON pointer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invalid {
    pub message: String,
    pub details: Vec<FieldError>,
}

/// The result of a health check of a task.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    pub task_id: String,
    pub alive: bool,
}

/// A task (Marathon's shape).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub app_id: String,
    /// The agent it runs on.
    pub slave_id: String,
    pub host: String,
    pub ports: Vec<u32>,
    /// `TASK_STAGING`, `TASK_RUNNING`, …
    pub state: String,
    /// ISO 8601, UTC.
    pub staged_at: String,
    /// ISO 8601, UTC; `null` until it runs.
    pub started_at: Option<String>,
    pub version: String,
    /// Empty until the agent reports a health verdict.
    pub health_check_results: Vec<HealthCheckResult>,
}

/// A task with Agora's own fields.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgoraTask {
    #[serde(flatten)]
    pub task: Task,
    /// `null`: no verdict (or no health check).
    pub healthy: Option<bool>,
    /// A kill was sent and the task has not ended yet.
    pub killing: bool,
    /// The last status message.
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentRef {
    pub id: String,
}

/// Live counters of an app (Marathon's).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub tasks_running: usize,
    pub tasks_staged: usize,
    pub tasks_healthy: usize,
    pub tasks_unhealthy: usize,
    pub deployments: Vec<DeploymentRef>,
}

/// The app's last failed instance (Marathon's `lastTaskFailure`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastTaskFailure {
    pub app_id: String,
    pub task_id: String,
    /// `TASK_FAILED`, `TASK_ERROR`, …
    pub state: String,
    /// Why, e.g. `secret /prod/db/password: not found: …`.
    pub message: String,
    pub host: String,
    pub slave_id: String,
    /// ISO 8601, UTC.
    pub timestamp: String,
    pub version: String,
}

fn last_task_failure(st: &AppState) -> Option<LastTaskFailure> {
    st.last_task_failure.as_ref().map(|f| LastTaskFailure {
        app_id: st.app.id.clone(),
        task_id: f.task_id.clone(),
        state: f.state.as_str().to_string(),
        message: f.message.clone(),
        host: f.host.clone(),
        slave_id: f.agent_id.clone(),
        timestamp: iso8601(f.timestamp),
        version: f.version.clone(),
    })
}

/// An app with its counters (Marathon's shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct App {
    #[serde(flatten)]
    pub definition: AppDefinition,
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(rename = "lastTaskFailure", skip_serializing_if = "Option::is_none")]
    pub last_task_failure: Option<LastTaskFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<Task>>,
}

/// An app with Agora's own fields: why instances are missing and the
/// current launch delay.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgoraApp {
    #[serde(flatten)]
    pub definition: AppDefinition,
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_task_failure: Option<LastTaskFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<AgoraTask>>,
    /// Why instances are missing, if they are.
    pub waiting: Option<String>,
    /// The crash-loop launch delay now, in seconds.
    pub launch_delay_seconds: f64,
    /// The version of each secret path this app version's tasks use
    /// (Agora's own: pinned when the version was created, moved by a
    /// secret rollout). Never values.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secret_versions: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppList {
    pub apps: Vec<App>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppEnvelope {
    pub app: App,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgoraAppList {
    pub apps: Vec<AgoraApp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgoraAppEnvelope {
    pub app: AgoraApp,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskEnvelope {
    pub task: Task,
}

/// What `DELETE /v2/apps/{appId}/tasks` answers (Marathon's shapes): the
/// tasks killed, or with `scale=true` the app's (unchanged) version.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TasksKilled {
    Tasks(TaskList),
    Scaled(DeploymentResult),
}

/// What `DELETE /v2/apps/{appId}/tasks/{taskId}` answers (Marathon's
/// shapes): the task killed, or with `scale=true` the app's version.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TaskKilled {
    Task(TaskEnvelope),
    Scaled(DeploymentResult),
}

/// What a change started (Marathon's shape): the deployment, if any, and
/// the app version.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentResult {
    /// `null` when nothing is rolled out (a scale, a delete).
    #[schema(required = true)]
    pub deployment_id: Option<String>,
    #[schema(required = true)]
    pub version: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepAction {
    pub action: String,
    pub app: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Step {
    pub actions: Vec<StepAction>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheckResult {
    pub name: String,
    pub task_id: String,
    pub ready: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentAction {
    pub action: String,
    pub app: String,
    pub readiness_check_results: Vec<ReadinessCheckResult>,
}

/// A deployment in progress (Marathon's shape).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInfo {
    pub id: String,
    pub version: String,
    pub affected_apps: Vec<String>,
    pub steps: Vec<Step>,
    pub current_actions: Vec<CurrentAction>,
    pub current_step: usize,
    pub total_steps: usize,
}

/// A deployment with Agora's progress: instances of the new and old
/// versions, the target, what it did so far and why it waits.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgoraDeployment {
    #[serde(flatten)]
    pub deployment: DeploymentInfo,
    pub new_instances: usize,
    pub old_instances: usize,
    pub target: u32,
    /// What it did so far (launches, kills).
    pub log: Vec<String>,
    pub waiting: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarathonConfig {
    pub master: String,
    /// The framework's role: `acceptedResourceRoles` may name it and `*`.
    pub mesos_role: String,
}

/// About the framework (Marathon's shape).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    pub name: String,
    pub version: String,
    pub framework_id: Option<String>,
    #[serde(rename = "marathon_config")]
    pub marathon_config: MarathonConfig,
}

/// About the framework, with Agora's own fields.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgoraInfo {
    pub framework_id: Option<String>,
    /// Subscribed to the master now.
    pub connected: bool,
    pub master: String,
}

/// Seconds since the epoch as ISO 8601 (UTC, milliseconds).
pub fn iso8601(t: f64) -> String {
    let t = if t.is_finite() { t.max(0.0) } else { 0.0 };
    let secs = t.floor() as i64;
    let ms = ((t - t.floor()) * 1000.0) as u32;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn task(i: &Instance) -> Task {
    Task {
        id: i.task_id.clone(),
        app_id: i.app_id.clone(),
        slave_id: i.agent_id.clone(),
        host: i.host.clone(),
        ports: i.ports.clone(),
        state: i.state.as_str().to_string(),
        staged_at: iso8601(i.staged_at),
        started_at: i.running_since.map(iso8601),
        version: i.version.clone(),
        health_check_results: i
            .healthy
            .map(|alive| HealthCheckResult {
                task_id: i.task_id.clone(),
                alive,
            })
            .into_iter()
            .collect(),
    }
}

pub fn agora_task(i: &Instance) -> AgoraTask {
    AgoraTask {
        task: task(i),
        healthy: i.healthy,
        killing: i.killing,
        message: i.message.clone(),
    }
}

pub fn counts(st: &AppState, mine: &[&Instance]) -> Counts {
    let live = |f: &dyn Fn(&Instance) -> bool| mine.iter().filter(|i| i.is_live() && f(i)).count();
    Counts {
        tasks_running: live(&|i| i.state == TaskState::Running),
        tasks_staged: live(&|i| i.state != TaskState::Running),
        tasks_healthy: live(&|i| i.healthy == Some(true)),
        tasks_unhealthy: live(&|i| i.healthy == Some(false)),
        deployments: st
            .deployment
            .iter()
            .map(|d| DeploymentRef { id: d.id.clone() })
            .collect(),
    }
}

pub fn app(st: &AppState, mine: &[&Instance], with_tasks: bool) -> App {
    App {
        definition: AppDefinition::from(&st.app),
        counts: counts(st, mine),
        last_task_failure: last_task_failure(st),
        tasks: with_tasks.then(|| mine.iter().map(|i| task(i)).collect()),
    }
}

pub fn agora_app(st: &AppState, mine: &[&Instance], with_tasks: bool) -> AgoraApp {
    AgoraApp {
        definition: AppDefinition::from(&st.app),
        counts: counts(st, mine),
        last_task_failure: last_task_failure(st),
        tasks: with_tasks.then(|| mine.iter().map(|i| agora_task(i)).collect()),
        waiting: st.waiting.clone(),
        launch_delay_seconds: st.delay,
        secret_versions: st.app.secret_versions.clone(),
    }
}

pub fn deployment(st: &AppState, d: &Deployment) -> DeploymentInfo {
    let id = st.app.id.clone();
    DeploymentInfo {
        id: d.id.clone(),
        version: d.version.clone(),
        affected_apps: vec![id.clone()],
        steps: vec![Step {
            actions: vec![StepAction {
                action: "RestartApplication".into(),
                app: id.clone(),
            }],
        }],
        current_actions: vec![CurrentAction {
            action: "RestartApplication".into(),
            app: id,
            readiness_check_results: Vec::new(),
        }],
        current_step: 1,
        total_steps: 1,
    }
}

pub fn agora_deployment(st: &AppState, d: &Deployment, mine: &[&Instance]) -> AgoraDeployment {
    let live = |new: bool| {
        mine.iter()
            .filter(|i| i.is_live() && (i.version == d.version) == new)
            .count()
    };
    AgoraDeployment {
        deployment: deployment(st, d),
        new_instances: live(true),
        old_instances: live(false),
        target: st.app.instances,
        log: d.steps.clone(),
        waiting: st.waiting.clone(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601_dates() {
        assert_eq!(super::iso8601(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso8601(951_782_400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(super::iso8601(1_767_225_599.0), "2025-12-31T23:59:59.000Z");
        assert_eq!(super::iso8601(f64::NAN), "1970-01-01T00:00:00.000Z");
    }
}
