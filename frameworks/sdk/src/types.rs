//! SDK-side types: validated offers and statuses, and a task builder.

use agora_core::{AgentId, OfferId, Resources, TaskId, TaskState};
use agora_proto::convert::{self, Invalid};
use agora_proto::pb;

/// An offer: the free resources of one agent, for us.
#[derive(Debug, Clone)]
pub struct Offer {
    pub id: OfferId,
    pub agent_id: AgentId,
    pub hostname: String,
    pub resources: Resources,
    pub attributes: Vec<(String, String)>,
    /// The agent's internal address: where its tasks' host ports are bound
    /// and reachable. `None` from agents that do not send one.
    pub address: Option<std::net::IpAddr>,
    /// The role the resources are reserved for; `*` when unreserved.
    pub role: String,
}

impl Offer {
    /// Where the offer's tasks are reached: the agent's internal address,
    /// or its hostname when it sent none.
    pub fn reach_host(&self) -> String {
        match self.address {
            Some(ip) => ip.to_string(),
            None => self.hostname.clone(),
        }
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl TryFrom<pb::Offer> for Offer {
    type Error = Invalid;
    fn try_from(o: pb::Offer) -> Result<Self, Invalid> {
        Ok(Offer {
            id: OfferId::new(o.offer_id),
            agent_id: convert::agent_id("offer.agent_id", &o.agent_id)?,
            hostname: o.hostname,
            resources: convert::resources("offer.resources", o.resources.as_ref())?,
            attributes: convert::attributes(&o.attributes)?,
            address: convert::address("offer.address", &o.address)?,
            role: if o.role.is_empty() {
                agora_core::info::DEFAULT_ROLE.to_string()
            } else {
                o.role
            },
        })
    }
}

/// A task status update.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub agent_id: AgentId,
    pub state: TaskState,
    pub message: String,
    pub reason: String,
    pub exit_code: Option<i32>,
    pub healthy: Option<bool>,
    /// Set when a readiness check passed.
    pub ready: Option<bool>,
    /// Non-empty when the update must be acknowledged.
    pub uuid: Vec<u8>,
}

impl TryFrom<pb::TaskStatus> for TaskStatus {
    type Error = Invalid;
    fn try_from(s: pb::TaskStatus) -> Result<Self, Invalid> {
        Ok(TaskStatus {
            state: s.task_state()?,
            task_id: TaskId::new(s.task_id),
            agent_id: AgentId::new(s.agent_id),
            message: s.message,
            reason: s.reason,
            exit_code: s.has_exit_code.then_some(s.exit_code),
            healthy: s.has_health.then_some(s.healthy),
            ready: s.has_ready.then_some(s.ready),
            uuid: s.uuid,
        })
    }
}

/// A task running `command` (a shell command) with `resources` in Mesos
/// syntax (`cpus:0.5;mem:128`). Fill in more fields on the returned
/// [`pb::TaskInfo`] as needed (env, container, labels).
pub fn task(
    id: &str,
    resources: &str,
    command: &str,
) -> Result<pb::TaskInfo, agora_core::ResourceError> {
    let r = Resources::parse(resources)?;
    Ok(pb::TaskInfo {
        task_id: id.to_string(),
        name: id.to_string(),
        resources: Some(pb::Resources::from(&r)),
        command: Some(pb::CommandInfo {
            value: command.to_string(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    })
}
