//! What frameworks ask for and what agents and the master report: the domain
//! side of the wire messages. `agora-proto` builds these from protobuf at the
//! edge and refuses anything malformed (with the field named), so values here
//! are always valid: durations are finite and non-negative, ports fit in 16
//! bits, ids are well-formed.
//!
//! `Debug` never prints environment values: they may carry credentials.

use crate::{AgentId, FrameworkId, OfferId, Resources, TaskId, TaskState};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The role a framework subscribes with when it names none.
pub const DEFAULT_ROLE: &str = "*";

/// A framework as it describes itself at SUBSCRIBE.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkInfo {
    /// Empty on a first subscription; the master assigns one.
    pub id: Option<FrameworkId>,
    pub name: String,
    /// `*` when the framework names none.
    pub role: String,
    pub user: String,
    /// How long the master keeps its tasks after its scheduler disconnects.
    pub failover_timeout: Duration,
    /// Whether it understands UNREACHABLE/UNKNOWN (otherwise it sees LOST).
    pub partition_aware: bool,
    pub hostname: String,
    pub capabilities: Vec<String>,
}

/// An agent as it describes itself at (re-)registration.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentInfo {
    /// Empty on a first registration; the master assigns one.
    pub id: Option<AgentId>,
    pub hostname: String,
    pub resources: Resources,
    pub attributes: Vec<(String, String)>,
    /// Where the agent's own HTTP API answers, if it has one.
    pub endpoint: String,
    /// The agent's internal address (never a wildcard): its tasks' host
    /// ports are bound there and routers reach its instances there. `None`
    /// from agents that do not send one (then the hostname stands for it).
    pub address: Option<std::net::IpAddr>,
    /// The role all its resources are statically reserved for (Mesos
    /// `--default_role`); [`DEFAULT_ROLE`] (`*`) when unreserved.
    pub role: String,
}

/// What to run.
#[derive(Clone, PartialEq, Default)]
pub struct CommandInfo {
    /// A shell command, or the executable when `args` are given.
    pub value: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub shell: bool,
}

impl fmt::Debug for CommandInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("CommandInfo")
            .field("value", &self.value)
            .field("args", &self.args)
            .field("env_names", &env)
            .field("shell", &self.shell)
            .finish()
    }
}

/// A container image and its networking.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ContainerInfo {
    pub image: String,
    /// `host` or `bridge`.
    pub network: String,
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthProtocol {
    Http,
    Tcp,
    Command,
}

/// A check the agent runs next to the task (health or readiness).
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    pub protocol: HealthProtocol,
    /// HTTP: the path to GET (`/` when empty).
    pub path: String,
    /// HTTP/TCP: the host port to probe.
    pub port: u16,
    /// COMMAND: run inside the task's container.
    pub command: String,
    pub grace_period: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures after the grace period that make it unhealthy.
    pub max_consecutive_failures: u32,
    /// HTTP: the statuses that count as success; empty means 2xx and 3xx.
    pub ok_statuses: Vec<u16>,
}

/// Bounds on durations accepted from the network.
pub mod limits {
    use std::time::Duration;
    /// Longest health-check grace period or interval.
    pub const CHECK_PERIOD: Duration = Duration::from_secs(7 * 86_400);
    /// Longest health-check timeout.
    pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3_600);
    /// Longest kill grace period.
    pub const KILL_GRACE: Duration = Duration::from_secs(86_400);
    /// Longest framework failover timeout (about 31 years).
    pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(1_000_000_000);
    /// Longest decline filter (longer ones are shortened to this).
    pub const REFUSE: Duration = Duration::from_secs(365 * 86_400);
}

/// One task of a LAUNCH.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskInfo {
    pub id: TaskId,
    pub name: String,
    /// The agent it runs on; set by the master at launch.
    pub agent: Option<AgentId>,
    pub resources: Resources,
    pub command: Option<CommandInfo>,
    pub container: Option<ContainerInfo>,
    pub labels: BTreeMap<String, String>,
    pub kill_grace: Duration,
    pub health_checks: Vec<HealthCheck>,
    pub readiness_checks: Vec<HealthCheck>,
    /// Secrets the task uses, as references: the agent resolves them from
    /// the master at launch (values are never part of a task description).
    pub secrets: Vec<crate::secrets::SecretUse>,
}

impl TaskInfo {
    /// A task with only an id and resources (tests, simple frameworks).
    pub fn new(id: TaskId, resources: Resources) -> Self {
        TaskInfo {
            id,
            name: String::new(),
            agent: None,
            resources,
            command: None,
            container: None,
            labels: BTreeMap::new(),
            kill_grace: Duration::ZERO,
            health_checks: Vec::new(),
            readiness_checks: Vec::new(),
            secrets: Vec::new(),
        }
    }
}

/// Who produced a status update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TaskSource {
    #[default]
    Unspecified,
    Master,
    Agent,
    Executor,
}

/// A task's status as carried by an UPDATE.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub state: TaskState,
    pub agent_id: Option<AgentId>,
    pub message: String,
    /// A Mesos reason name, e.g. `REASON_RECONCILIATION`.
    pub reason: String,
    pub source: TaskSource,
    /// Present when the update must be acknowledged (agent-generated).
    pub uuid: Option<Vec<u8>>,
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
    pub healthy: Option<bool>,
    pub exit_code: Option<i32>,
    pub ready: Option<bool>,
}

impl TaskStatus {
    /// A status without payload, as the master writes them.
    pub fn new(task_id: TaskId, state: TaskState) -> Self {
        TaskStatus {
            task_id,
            state,
            agent_id: None,
            message: String::new(),
            reason: String::new(),
            source: TaskSource::Unspecified,
            uuid: None,
            timestamp: 0.0,
            healthy: None,
            exit_code: None,
            ready: None,
        }
    }
}

/// An offer as the master sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferInfo {
    pub id: OfferId,
    pub framework: FrameworkId,
    pub agent: AgentId,
    pub hostname: String,
    pub resources: Resources,
    pub attributes: Vec<(String, String)>,
    /// The agent's internal address ([`AgentInfo::address`]).
    pub address: Option<std::net::IpAddr>,
    /// The role the offered resources are reserved for; [`DEFAULT_ROLE`]
    /// (`*`) when they are unreserved.
    pub role: String,
}

/// The role that public agents reserve their resources for (Mesos and
/// DC/OS: `slave_public`); `agora agent --public` uses it.
pub const PUBLIC_ROLE: &str = "public";

/// How long declined (or unused) resources stay away from a framework.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Filters {
    /// `None`: the master's default (Mesos: 5 s).
    pub refuse: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_debug_hides_env_values() {
        let c = CommandInfo {
            value: "run".into(),
            env: vec![("DB_PASSWORD".into(), "hunter2".into())],
            ..Default::default()
        };
        let d = format!("{c:?}");
        assert!(d.contains("DB_PASSWORD"), "{d}");
        assert!(!d.contains("hunter2"), "{d}");
    }
}
