//! Scheduler calls and events; agent-link messages. Conversions take the
//! wire value by value and move its strings and buffers.

use super::{
    Invalid, agent_info, filters, framework_info, offer_ids, own_agent_id, own_framework_id,
    own_task_id, task_info, task_state, task_status,
};
use crate::pb;
use agora_core::AgentId;
use agora_core::protocol::{
    Accept, Ack, Acknowledge, AgentTask, Decline, Event, Kill, MasterMessage, Reconcile, Register,
    StatusUpdate, TaskUsage,
};

fn opt_agent(field: &str, v: String) -> Result<Option<AgentId>, Invalid> {
    if v.is_empty() {
        Ok(None)
    } else {
        own_agent_id(field, v).map(Some)
    }
}

// ------------------------------------------------------------ scheduler calls

impl TryFrom<pb::AcceptRequest> for Accept {
    type Error = Invalid;
    fn try_from(r: pb::AcceptRequest) -> Result<Self, Invalid> {
        let mut tasks = Vec::new();
        for (i, op) in r.operations.into_iter().enumerate() {
            match op.operation {
                Some(pb::operation::Operation::Launch(l)) => {
                    tasks.reserve(l.tasks.len());
                    for (j, t) in l.tasks.into_iter().enumerate() {
                        tasks.push(task_info(&format!("operations[{i}].launch.tasks[{j}]"), t)?);
                    }
                }
                None => {
                    return Err(Invalid::new(
                        format!("operations[{i}]"),
                        "names no operation",
                    ));
                }
            }
        }
        Ok(Accept {
            framework_id: own_framework_id("framework_id", r.framework_id)?,
            offer_ids: offer_ids("offer_ids", r.offer_ids)?,
            tasks,
            filters: filters(r.filters.as_ref())?,
        })
    }
}

impl TryFrom<pb::DeclineRequest> for Decline {
    type Error = Invalid;
    fn try_from(r: pb::DeclineRequest) -> Result<Self, Invalid> {
        Ok(Decline {
            framework_id: own_framework_id("framework_id", r.framework_id)?,
            offer_ids: offer_ids("offer_ids", r.offer_ids)?,
            filters: filters(r.filters.as_ref())?,
        })
    }
}

impl TryFrom<pb::KillRequest> for Kill {
    type Error = Invalid;
    fn try_from(r: pb::KillRequest) -> Result<Self, Invalid> {
        Ok(Kill {
            framework_id: own_framework_id("framework_id", r.framework_id)?,
            task_id: own_task_id("task_id", r.task_id)?,
            agent_id: opt_agent("agent_id", r.agent_id)?,
        })
    }
}

impl TryFrom<pb::AcknowledgeRequest> for Acknowledge {
    type Error = Invalid;
    fn try_from(r: pb::AcknowledgeRequest) -> Result<Self, Invalid> {
        let mut acks = Vec::with_capacity(r.acknowledgements.len());
        for a in r.acknowledgements {
            if a.uuid.is_empty() {
                return Err(Invalid::new("acknowledgements.uuid", "is empty"));
            }
            acks.push(Ack {
                agent_id: own_agent_id("acknowledgements.agent_id", a.agent_id)?,
                task_id: own_task_id("acknowledgements.task_id", a.task_id)?,
                uuid: a.uuid,
            });
        }
        Ok(Acknowledge {
            framework_id: own_framework_id("framework_id", r.framework_id)?,
            acks,
        })
    }
}

impl TryFrom<pb::ReconcileRequest> for Reconcile {
    type Error = Invalid;
    fn try_from(r: pb::ReconcileRequest) -> Result<Self, Invalid> {
        let mut tasks = Vec::with_capacity(r.tasks.len());
        for t in r.tasks {
            tasks.push((
                own_task_id("tasks.task_id", t.task_id)?,
                opt_agent("tasks.agent_id", t.agent_id)?,
            ));
        }
        Ok(Reconcile {
            framework_id: own_framework_id("framework_id", r.framework_id)?,
            tasks,
        })
    }
}

impl From<Event> for pb::Event {
    fn from(e: Event) -> Self {
        use pb::event::Event as E;
        let ev = match e {
            Event::Subscribed {
                framework_id,
                heartbeat_interval,
                master_id,
            } => E::Subscribed(pb::Subscribed {
                framework_id: framework_id.0,
                heartbeat_interval_seconds: heartbeat_interval.as_secs_f64(),
                master_id,
            }),
            Event::Offers(offers) => E::Offers(pb::Offers {
                offers: offers.into_iter().map(Into::into).collect(),
            }),
            Event::Rescind(id) => E::Rescind(pb::Rescind { offer_id: id.0 }),
            Event::Update(s) => E::Update(pb::Update {
                status: Some(s.into()),
            }),
            Event::Error(message) => E::Error(pb::Error { message }),
            Event::Failure { agent_id, message } => E::Failure(pb::Failure {
                agent_id: agent_id.0,
                message,
            }),
            Event::Heartbeat => E::Heartbeat(pb::Heartbeat {}),
            Event::Usage(tasks) => E::Usage(pb::UsageReport {
                tasks: tasks.into_iter().map(Into::into).collect(),
            }),
        };
        pb::Event { event: Some(ev) }
    }
}

// ----------------------------------------------------------------- agent link

impl TryFrom<pb::Register> for Register {
    type Error = Invalid;
    fn try_from(r: pb::Register) -> Result<Self, Invalid> {
        let agent = r
            .agent
            .ok_or_else(|| Invalid::new("register.agent", "is missing"))?;
        let mut tasks = Vec::with_capacity(r.tasks.len());
        for (i, at) in r.tasks.into_iter().enumerate() {
            let t = at
                .task
                .ok_or_else(|| Invalid::new(format!("tasks[{i}].task"), "is missing"))?;
            tasks.push(AgentTask {
                framework_id: own_framework_id(
                    &format!("tasks[{i}].framework_id"),
                    at.framework_id,
                )?,
                task: task_info(&format!("tasks[{i}].task"), t)?,
                state: task_state(&format!("tasks[{i}].state"), at.state)?,
            });
        }
        let frameworks = r
            .frameworks
            .into_iter()
            .enumerate()
            .map(|(i, f)| framework_info(&format!("frameworks[{i}]"), f))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Register {
            agent: agent_info("agent", agent)?,
            tasks,
            frameworks,
        })
    }
}

impl TryFrom<pb::StatusUpdate> for StatusUpdate {
    type Error = Invalid;
    fn try_from(u: pb::StatusUpdate) -> Result<Self, Invalid> {
        let s = u
            .status
            .ok_or_else(|| Invalid::new("update.status", "is missing"))?;
        Ok(StatusUpdate {
            framework_id: own_framework_id("update.framework_id", u.framework_id)?,
            status: task_status("update.status", s)?,
        })
    }
}

impl TryFrom<pb::TaskUsage> for TaskUsage {
    type Error = Invalid;
    fn try_from(u: pb::TaskUsage) -> Result<Self, Invalid> {
        if !u.cpu_seconds.is_finite() || u.cpu_seconds < 0.0 {
            return Err(Invalid::new(
                "usage.cpu_seconds",
                "is not a finite, non-negative number",
            ));
        }
        if !u.timestamp.is_finite() {
            return Err(Invalid::new("usage.timestamp", "is not a finite number"));
        }
        Ok(TaskUsage {
            framework_id: own_framework_id("usage.framework_id", u.framework_id)?,
            task_id: own_task_id("usage.task_id", u.task_id)?,
            cpu_seconds: u.cpu_seconds,
            mem_rss_bytes: u.mem_rss_bytes,
            mem_working_set_bytes: u.mem_working_set_bytes,
            timestamp: u.timestamp,
        })
    }
}

impl From<TaskUsage> for pb::TaskUsage {
    fn from(u: TaskUsage) -> Self {
        pb::TaskUsage {
            framework_id: u.framework_id.0,
            task_id: u.task_id.0,
            cpu_seconds: u.cpu_seconds,
            mem_rss_bytes: u.mem_rss_bytes,
            timestamp: u.timestamp,
            mem_working_set_bytes: u.mem_working_set_bytes,
        }
    }
}

impl From<MasterMessage> for pb::MasterMessage {
    fn from(m: MasterMessage) -> Self {
        use pb::master_message::Message as M;
        let msg = match m {
            MasterMessage::Registered {
                agent_id,
                heartbeat_interval,
                master_id,
            } => M::Registered(pb::Registered {
                agent_id: agent_id.0,
                heartbeat_interval_seconds: heartbeat_interval.as_secs_f64(),
                master_id,
            }),
            MasterMessage::RunTasks { framework, tasks } => M::RunTasks(pb::RunTasks {
                framework: Some(framework.into()),
                tasks: tasks.into_iter().map(Into::into).collect(),
            }),
            MasterMessage::KillTask {
                framework_id,
                task_id,
            } => M::KillTask(pb::KillTask {
                framework_id: framework_id.0,
                task_id: task_id.0,
            }),
            MasterMessage::Acks(acks) => M::Acks(pb::UpdateAcks {
                acks: acks
                    .into_iter()
                    .map(|a| pb::UpdateAck {
                        framework_id: a.framework_id.0,
                        task_id: a.task_id.0,
                        uuid: a.uuid,
                    })
                    .collect(),
            }),
            MasterMessage::ShutdownFramework(f) => {
                M::ShutdownFramework(pb::ShutdownFramework { framework_id: f.0 })
            }
            MasterMessage::Pong => M::Pong(pb::Pong {}),
            MasterMessage::Refused(message) => M::Refused(pb::Refused { message }),
        };
        pb::MasterMessage { message: Some(msg) }
    }
}
