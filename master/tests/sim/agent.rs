//! A modelled agent: it checkpoints its tasks and its unacknowledged status
//! updates (only the head of each task's queue is in flight), survives
//! disconnections and restarts with them, re-registers reporting every task
//! it still has (live, or ended with an update not yet acknowledged), and
//! resends unacknowledged updates until they are acknowledged.

use super::Sim;
use agora_core::info::{AgentInfo, FrameworkInfo, TaskInfo, TaskSource, TaskStatus};
use agora_core::protocol::{AgentTask, MasterMessage, Register, StatusUpdate};
use agora_core::{AgentId, FrameworkId, Ranges, Resources, TaskId, TaskState};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub struct SimTask {
    pub info: TaskInfo,
    pub state: TaskState,
}

pub struct SimAgent {
    pub name: String,
    pub id: Option<AgentId>,
    pub conn: Option<super::ConnId>,
    pub resources: Resources,
    /// The role its resources are reserved for (`*`: unreserved); it may
    /// change when the agent restarts ([`change_role`]).
    pub role: String,
    /// The role of its last registration: what the master was told.
    pub registered_role: String,
    /// Messages both ways are lost and heartbeats stop; the master only
    /// notices by the agent timeout.
    pub partitioned: bool,
    /// Refused by the master (marked gone): it never comes back.
    pub dead: bool,
    pub tasks: BTreeMap<(FrameworkId, TaskId), SimTask>,
    pub frameworks: BTreeMap<FrameworkId, FrameworkInfo>,
    pub pending: BTreeMap<(FrameworkId, TaskId), VecDeque<TaskStatus>>,
    pub next_uuid: u64,
    pub last_resend: Option<Instant>,
}

impl SimAgent {
    pub fn new(n: usize, cpus: u32, mem: u64) -> Self {
        let resources = Resources::new(f64::from(cpus), mem, 1000)
            .expect("valid")
            .with_ports(Ranges::range(31000, 31009).expect("valid"));
        SimAgent {
            name: format!("agent{n}"),
            id: None,
            conn: None,
            resources,
            role: "*".into(),
            registered_role: "*".into(),
            partitioned: false,
            dead: false,
            tasks: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_uuid: 0,
            last_resend: None,
        }
    }

    /// Whether messages can pass between it and the master.
    pub fn reachable(&self) -> bool {
        self.conn.is_some() && !self.partitioned && !self.dead
    }

    /// Live tasks per framework.
    pub fn live(&self) -> impl Iterator<Item = (&FrameworkId, &TaskId)> {
        self.tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|((f, t), _)| (f, t))
    }

    /// A task changes state on this agent: an update is queued (checkpointed).
    pub fn set_state(&mut self, fid: &FrameworkId, tid: &TaskId, state: TaskState) {
        let Some(t) = self.tasks.get_mut(&(fid.clone(), tid.clone())) else {
            return;
        };
        if t.state.is_terminal() {
            return;
        }
        t.state = state;
        self.next_uuid += 1;
        let st = TaskStatus {
            agent_id: self.id.clone(),
            source: TaskSource::Agent,
            uuid: Some(self.next_uuid.to_be_bytes().to_vec()),
            ..TaskStatus::new(tid.clone(), state)
        };
        self.pending
            .entry((fid.clone(), tid.clone()))
            .or_default()
            .push_back(st);
    }

    /// The heads of every task's update queue.
    fn heads(&self) -> Vec<StatusUpdate> {
        self.pending
            .iter()
            .filter_map(|((f, _), q)| {
                q.front().map(|s| StatusUpdate {
                    framework_id: f.clone(),
                    status: s.clone(),
                })
            })
            .collect()
    }

    pub fn registration(&self) -> Register {
        Register {
            agent: AgentInfo {
                id: self.id.clone(),
                hostname: self.name.clone(),
                resources: self.resources.clone(),
                attributes: vec![],
                endpoint: String::new(),
                address: None,
                role: self.role.clone(),
            },
            tasks: self
                .tasks
                .iter()
                .map(|((f, _), t)| AgentTask {
                    framework_id: f.clone(),
                    task: t.info.clone(),
                    state: t.state,
                })
                .collect(),
            frameworks: self.frameworks.values().cloned().collect(),
        }
    }
}

/// (Re-)registers on a new stream.
pub fn connect(sim: &mut Sim, i: usize) -> Result<(), String> {
    if sim.agents[i].dead || sim.agents[i].conn.is_some() {
        return Ok(());
    }
    let c = sim.conn();
    let a = &mut sim.agents[i];
    a.conn = Some(c);
    a.partitioned = false;
    let reg = a.registration();
    a.registered_role = a.role.clone();
    let name = a.name.clone();
    sim.note(format!(
        "{name} registers on {c} with id {:?} in role {} reporting {} tasks",
        reg.agent.id,
        reg.agent.role,
        reg.tasks.len()
    ));
    let mut out = Vec::new();
    if let Err(e) = sim.m.register_agent(c, reg, sim.now, &mut out) {
        return Err(format!(
            "{name}: the master refused a valid registration: {e}"
        ));
    }
    sim.absorb(out)
}

/// The agent restarts with another role (`--role`/`--public` changed): its
/// tasks keep running and it re-registers at once.
pub fn change_role(sim: &mut Sim, i: usize, role: &str) -> Result<(), String> {
    if sim.agents[i].dead || sim.agents[i].role == role {
        return Ok(());
    }
    disconnect(sim, i)?;
    sim.note(format!("{} restarts in role {role}", sim.agents[i].name));
    sim.agents[i].role = role.to_string();
    connect(sim, i)
}

/// The agent's stream breaks (the master sees it close).
pub fn disconnect(sim: &mut Sim, i: usize) -> Result<(), String> {
    let Some(c) = sim.agents[i].conn.take() else {
        return Ok(());
    };
    sim.note(format!("{} disconnects", sim.agents[i].name));
    sim.streams.remove(&c);
    let mut out = Vec::new();
    sim.m.agent_closed(c, &mut out);
    sim.absorb(out)
}

/// Sends the heads of its update queues (if it can reach the master).
pub fn send_updates(sim: &mut Sim, i: usize) -> Result<(), String> {
    let a = &mut sim.agents[i];
    if !a.reachable() || a.id.is_none() {
        return Ok(());
    }
    let heads = a.heads();
    a.last_resend = Some(sim.now);
    if heads.is_empty() {
        return Ok(());
    }
    let c = a.conn.expect("reachable");
    let mut out = Vec::new();
    sim.m.status_updates(c, heads, sim.now, &mut out);
    sim.absorb(out)
}

/// Resends unacknowledged updates every 10 s (the agent's retry).
pub fn resend_if_due(sim: &mut Sim, i: usize) -> Result<(), String> {
    let due = sim.agents[i]
        .last_resend
        .is_none_or(|t| sim.now.saturating_duration_since(t) >= Duration::from_secs(10));
    if due {
        send_updates(sim, i)?;
    }
    Ok(())
}

/// A message from the master arrives.
pub fn on_message(sim: &mut Sim, i: usize, msg: MasterMessage) -> Result<(), String> {
    if sim.agents[i].partitioned {
        return Ok(()); // lost on the way
    }
    match msg {
        MasterMessage::Registered { agent_id, .. } => {
            let a = &mut sim.agents[i];
            if a.id.as_ref().is_some_and(|id| id != &agent_id) {
                return Err(format!(
                    "{} registered as {agent_id} but it is {:?}",
                    a.name, a.id
                ));
            }
            a.id = Some(agent_id);
            send_updates(sim, i)?;
        }
        MasterMessage::RunTasks { framework, tasks } => {
            let Some(fid) = framework.id.clone() else {
                return Err("RunTasks without a framework id".into());
            };
            let a = &mut sim.agents[i];
            a.frameworks.insert(fid.clone(), framework);
            for t in tasks {
                let key = (fid.clone(), t.id.clone());
                if a.tasks.contains_key(&key) {
                    return Err(format!("{}: task {} launched twice", a.name, t.id));
                }
                a.tasks.insert(
                    key,
                    SimTask {
                        info: t.clone(),
                        state: TaskState::Staging,
                    },
                );
                a.set_state(&fid, &t.id, TaskState::Running);
            }
            send_updates(sim, i)?;
        }
        MasterMessage::KillTask {
            framework_id,
            task_id,
        } => {
            sim.agents[i].set_state(&framework_id, &task_id, TaskState::Killed);
            send_updates(sim, i)?;
        }
        MasterMessage::ShutdownFramework(fid) => {
            let a = &mut sim.agents[i];
            let ids: Vec<TaskId> = a
                .live()
                .filter(|(f, _)| **f == fid)
                .map(|(_, t)| t.clone())
                .collect();
            for tid in ids {
                a.set_state(&fid, &tid, TaskState::Killed);
            }
            send_updates(sim, i)?;
        }
        MasterMessage::Acks(acks) => {
            let a = &mut sim.agents[i];
            for ack in acks {
                let key = (ack.framework_id.clone(), ack.task_id.clone());
                let Some(q) = a.pending.get_mut(&key) else {
                    continue;
                };
                if q.front().and_then(|s| s.uuid.as_ref()) == Some(&ack.uuid) {
                    q.pop_front();
                }
                if q.is_empty() {
                    a.pending.remove(&key);
                    if a.tasks.get(&key).is_some_and(|t| t.state.is_terminal()) {
                        a.tasks.remove(&key);
                    }
                }
            }
            send_updates(sim, i)?;
        }
        MasterMessage::Refused(why) => {
            let a = &mut sim.agents[i];
            a.dead = true;
            a.conn = None;
            let name = a.name.clone();
            sim.note(format!("{name} refused: {why}"));
        }
        MasterMessage::Pong => {}
    }
    Ok(())
}
