//! The scheduler and agent protocols in domain form: the calls the master
//! takes and the events and messages it sends. `agora-proto` converts these
//! to and from protobuf at the gRPC edge; the master never sees wire types.

use crate::info::{AgentInfo, Filters, FrameworkInfo, OfferInfo, TaskInfo, TaskStatus};
use crate::{AgentId, FrameworkId, OfferId, TaskId, TaskState};
use std::time::Duration;

// ----------------------------------------------------------- scheduler calls

/// ACCEPT: launch `tasks` from the pooled resources of `offer_ids` (one agent).
#[derive(Clone, Debug, PartialEq)]
pub struct Accept {
    pub framework_id: FrameworkId,
    pub offer_ids: Vec<OfferId>,
    pub tasks: Vec<TaskInfo>,
    pub filters: Filters,
}

/// DECLINE: give the offers back, filtered for `filters.refuse`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decline {
    pub framework_id: FrameworkId,
    pub offer_ids: Vec<OfferId>,
    pub filters: Filters,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kill {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub agent_id: Option<AgentId>,
}

/// One acknowledged status update.
#[derive(Clone, Debug, PartialEq)]
pub struct Ack {
    pub agent_id: AgentId,
    pub task_id: TaskId,
    pub uuid: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Acknowledge {
    pub framework_id: FrameworkId,
    pub acks: Vec<Ack>,
}

/// RECONCILE: explicit (listed tasks) or implicit (empty list).
#[derive(Clone, Debug, PartialEq)]
pub struct Reconcile {
    pub framework_id: FrameworkId,
    pub tasks: Vec<(TaskId, Option<AgentId>)>,
}

// ------------------------------------------------------------ scheduler events

/// An event on a framework's stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Subscribed {
        framework_id: FrameworkId,
        heartbeat_interval: Duration,
        master_id: String,
    },
    Offers(Vec<OfferInfo>),
    Rescind(OfferId),
    Update(TaskStatus),
    Error(String),
    Failure {
        agent_id: AgentId,
        message: String,
    },
    Heartbeat,
    /// Resource usage of the framework's live tasks, as their agents report
    /// it (the master forwards each report to the framework it concerns).
    Usage(Vec<TaskUsage>),
}

// ---------------------------------------------------------------- agent link

/// A task an agent reports when it re-registers.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentTask {
    pub framework_id: FrameworkId,
    pub task: TaskInfo,
    pub state: TaskState,
}

/// (Re-)registration of an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Register {
    pub agent: AgentInfo,
    /// Re-registration: the tasks the agent still has…
    pub tasks: Vec<AgentTask>,
    /// …and the frameworks they belong to.
    pub frameworks: Vec<FrameworkInfo>,
}

/// A status update forwarded by an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub framework_id: FrameworkId,
    pub status: TaskStatus,
}

/// Resource usage of one live task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskUsage {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub cpu_seconds: f64,
    pub mem_rss_bytes: u64,
    /// Memory the task needs now: usage minus inactive file cache (what
    /// Kubernetes calls the working set; 0 when the runtime cannot tell).
    pub mem_working_set_bytes: u64,
    /// When it was measured, in seconds since the Unix epoch.
    pub timestamp: f64,
}

/// An acknowledgement the master passes to the agent holding the update.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateAck {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub uuid: Vec<u8>,
}

/// What the master sends an agent.
#[derive(Clone, Debug, PartialEq)]
pub enum MasterMessage {
    Registered {
        agent_id: AgentId,
        heartbeat_interval: Duration,
        master_id: String,
    },
    RunTasks {
        framework: FrameworkInfo,
        tasks: Vec<TaskInfo>,
    },
    KillTask {
        framework_id: FrameworkId,
        task_id: TaskId,
    },
    Acks(Vec<UpdateAck>),
    ShutdownFramework(FrameworkId),
    Pong,
    Refused(String),
}
