//! JSON views served by `/state` (in the spirit of Mesos `/master/state`).

use agora_core::lifecycle::{AgentState, FrameworkState};
use agora_core::{Resources, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ResourcesView {
    pub cpus: f64,
    pub mem: u64,
    pub disk: u64,
    /// Mesos notation, e.g. `[31000-31005,31010]`.
    pub ports: String,
}

impl From<&Resources> for ResourcesView {
    fn from(r: &Resources) -> Self {
        ResourcesView {
            cpus: r.cpus(),
            mem: r.mem_mib,
            disk: r.disk_mib,
            ports: r.ports.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterResources {
    pub total: ResourcesView,
    pub used: ResourcesView,
    pub offered: ResourcesView,
}

fn unreserved() -> String {
    agora_core::info::DEFAULT_ROLE.to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    pub state: AgentState,
    pub endpoint: String,
    /// Its internal address (where its tasks' host ports are bound), if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// The role its resources are reserved for (`*`: unreserved).
    #[serde(default = "unreserved")]
    pub role: String,
    pub resources: ResourcesView,
    pub used_resources: ResourcesView,
    pub offered_resources: ResourcesView,
    pub task_count: usize,
    pub registered_time: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    pub framework_id: String,
    pub agent_id: String,
    pub state: TaskState,
    pub resources: ResourcesView,
    pub message: String,
    pub reason: String,
    pub labels: BTreeMap<String, String>,
    /// Last usage reported by the agent (CPU time, resident memory).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<UsageView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageView {
    pub cpu_seconds: f64,
    pub mem_rss_bytes: u64,
    pub timestamp: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameworkView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub state: FrameworkState,
    pub partition_aware: bool,
    pub failover_timeout_seconds: f64,
    pub suppressed: bool,
    pub dominant_share: f64,
    pub used_resources: ResourcesView,
    pub offers: usize,
    pub tasks: Vec<TaskView>,
    pub completed_tasks: Vec<TaskView>,
}

/// The body of `/state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub master_id: String,
    pub leader: String,
    pub start_time: f64,
    pub resources: ClusterResources,
    pub agents: Vec<AgentView>,
    pub frameworks: Vec<FrameworkView>,
    /// Torn-down frameworks, newest first (at most `max_completed_frameworks`).
    #[serde(default)]
    pub completed_frameworks: Vec<FrameworkView>,
    pub outstanding_offers: usize,
}

/// Point-in-time counts for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub agents: HashMap<AgentState, u64>,
    pub frameworks: HashMap<FrameworkState, u64>,
    pub tasks: HashMap<TaskState, u64>,
    pub outstanding_offers: usize,
    /// Reconciliation answers and kills waiting for an agent to re-register.
    pub deferred: usize,
    pub counters: crate::state::Counters,
}
