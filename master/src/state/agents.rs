//! Agents: first registration (admitted durably before it is answered),
//! re-registration (the agent is the truth for what runs on it), heartbeats,
//! disconnection, and agents that fall silent.

use super::{Agent, ConnId, Master, Output, Pending, Set, Task, reason};
use crate::store::{RegisteredAgent, RegistryOp};
use agora_core::info::{TaskSource, TaskStatus};
use agora_core::lifecycle::{AgentEvent, AgentState, FrameworkState};
use agora_core::protocol::{Event, MasterMessage, Register};
use agora_core::{AgentId, FrameworkId, Invalid, Resources, TaskId, TaskState};
use std::time::Instant;

impl Master {
    /// An agent (re-)registers on stream `conn`.
    pub fn register_agent(
        &mut self,
        conn: ConnId,
        reg: Register,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), Invalid> {
        let info = reg.agent;
        let Some(id) = info.id.clone() else {
            // First registration: admit durably, then answer.
            let id = AgentId::new(self.next_id("S"));
            let mut a = Agent::new(id.clone(), AgentState::Recovered, now);
            a.hostname = info.hostname.clone();
            a.resources = info.resources.clone();
            a.attributes = info.attributes.clone();
            a.endpoint = info.endpoint;
            a.address = info.address;
            a.role = info.role.clone();
            a.conn = Some(conn);
            self.agents.insert(id.clone(), a);
            self.agent_conns.insert(conn, id.clone());
            self.counters.agents_registered += 1;
            out.push(Output::Persist(
                RegistryOp::Admit(RegisteredAgent {
                    id: id.clone(),
                    hostname: info.hostname,
                    resources: info.resources,
                    attributes: info.attributes,
                    role: info.role,
                    unreachable_since: None,
                }),
                Some(Pending::AdmitAgent { conn, agent: id }),
            ));
            return Ok(());
        };
        let _span = tracing::info_span!("reregister", agent_id = %id).entered();
        // ---- validate before touching any state
        let mut total_reported = Resources::default();
        let mut seen = Set::default();
        for (i, t) in reg.tasks.iter().enumerate() {
            if !seen.insert((&t.framework_id, &t.task.id)) {
                return Err(Invalid::new(
                    format!("register.tasks[{i}]"),
                    format!(
                        "task {} of framework {} is reported twice",
                        t.task.id, t.framework_id
                    ),
                ));
            }
            if matches!(
                t.state,
                TaskState::Unknown | TaskState::Unreachable | TaskState::GoneByOperator
            ) {
                return Err(Invalid::new(
                    format!("register.tasks[{i}].state"),
                    format!(
                        "{} is decided by the master; an agent cannot report it",
                        t.state
                    ),
                ));
            }
            if t.state.holds_resources() {
                if total_reported.ports.intersects(&t.task.resources.ports) {
                    return Err(Invalid::new(
                        format!("register.tasks[{i}].resources.ports"),
                        format!("task {} uses a port another reported task uses", t.task.id),
                    ));
                }
                total_reported.add_assign(&t.task.resources);
            }
        }
        if !info.resources.contains(&total_reported) {
            return Err(Invalid::new(
                "register.tasks",
                format!(
                    "tasks use {total_reported}, more than the agent's {}",
                    info.resources
                ),
            ));
        }
        if self
            .agents
            .get(&id)
            .is_some_and(|a| a.state == AgentState::Gone)
        {
            out.push(Output::ToAgent(
                conn,
                MasterMessage::Refused(format!(
                    "agent {id} was marked gone; start it with a fresh work dir"
                )),
            ));
            out.push(Output::CloseAgent(conn));
            return Ok(());
        }

        // ---- registry
        let known = self.agents.contains_key(&id);
        // A known agent whose role changed (restarted with another `--role`
        // or `--public`): accepted, unlike Mesos, which refuses changed
        // resources. Its tasks keep running (their frameworks hold them
        // whatever the role); new offers follow the new role. The registry
        // keeps the new role so a restarted master shows it.
        let role_changed = self.agents.get(&id).is_some_and(|a| a.role != info.role);
        if role_changed {
            tracing::info!(agent_id = %id, role = %info.role, "agent re-registered with another role");
        }
        if !known || role_changed {
            // Unknown to this master's registry (e.g. registry lost): admit it again.
            out.push(Output::Persist(
                RegistryOp::Admit(RegisteredAgent {
                    id: id.clone(),
                    hostname: info.hostname.clone(),
                    resources: info.resources.clone(),
                    attributes: info.attributes.clone(),
                    role: info.role.clone(),
                    unreachable_since: None,
                }),
                None,
            ));
        }
        let was_unreachable = self
            .agents
            .get(&id)
            .is_some_and(|a| a.state == AgentState::Unreachable);
        if was_unreachable {
            out.push(Output::Persist(RegistryOp::MarkReachable(id.clone()), None));
        }
        // Frameworks torn down while it was away are not recovered from its report.
        let torn_down: std::collections::BTreeSet<FrameworkId> = self
            .agents
            .get(&id)
            .map(|a| a.shutdowns.clone())
            .unwrap_or_default();
        let wall = self.wall(now);
        let frameworks: Vec<_> = reg
            .frameworks
            .into_iter()
            .filter(|f| f.id.as_ref().is_none_or(|fid| !torn_down.contains(fid)))
            .collect();
        self.recover_frameworks(&frameworks, now);

        // ---- the agent record: old stream, offers and allocator slot go
        if let Some(old) = self.agents.get(&id).and_then(|a| a.conn)
            && old != conn
        {
            self.agent_conns.remove(&old);
            out.push(Output::CloseAgent(old));
        }
        self.rescind_agent_offers(&id, out);
        if self.agents.get(&id).is_some_and(|a| a.in_allocator) {
            let _ = self.allocator.remove_agent(&id);
        }
        let agent = self
            .agents
            .entry(id.clone())
            .or_insert_with(|| Agent::new(id.clone(), AgentState::Recovered, now));
        agent.in_allocator = false;
        agent.hostname = info.hostname;
        agent.resources = info.resources.clone();
        agent.attributes = info.attributes;
        agent.endpoint = info.endpoint;
        agent.address = info.address;
        agent.role = info.role.clone();
        agent.conn = Some(conn);
        agent.last_seen = now;
        agent.unreachable_at = None;
        agent.registered_at = Some(wall);
        let shutdowns = std::mem::take(&mut agent.shutdowns);
        let step = agent.state.on(AgentEvent::Registered);
        let previous: Set<(FrameworkId, TaskId)> = std::mem::take(&mut agent.tasks);
        match step {
            Ok(s) => agent.state = s,
            Err(e) => self.illegal("agent", id.as_str(), &e),
        }
        self.agent_conns.insert(conn, id.clone());
        self.counters.agents_reregistered += 1;

        // ---- tasks: the agent is the truth for what runs on it
        let ts = self.wall(now);
        let mut reported = Set::default();
        let mut used: Vec<(FrameworkId, Resources)> = Vec::new();
        let mut kills: Vec<(FrameworkId, TaskId)> = Vec::new();
        for at in reg.tasks {
            let fid = at.framework_id;
            let tid = at.task.id.clone();
            let st = at.state;
            reported.insert((fid.clone(), tid.clone()));
            if shutdowns.contains(&fid) {
                // Its framework was torn down while the agent was away.
                kills.push((fid, tid));
                continue;
            }
            let Some(fw) = self.frameworks.get_mut(&fid) else {
                // Torn down, or never known: nobody wants it.
                kills.push((fid, tid));
                continue;
            };
            if fw.state == FrameworkState::Completed {
                kills.push((fid, tid));
                continue;
            }
            let pa = fw.info.partition_aware;
            if !st.holds_resources() {
                // It ended while the agent was away. Retire it without
                // touching the allocator (the agent is re-added without it);
                // the agent's own terminal update follows and is forwarded.
                // The agent still holds that update: the id stays in use
                // until it is acknowledged.
                fw.unacked_terminal
                    .entry(tid.clone())
                    .or_insert_with(|| (id.clone(), None));
                let status = TaskStatus {
                    agent_id: Some(id.clone()),
                    reason: reason::AGENT_REREGISTERED.into(),
                    source: TaskSource::Agent,
                    timestamp: ts,
                    ..TaskStatus::new(tid.clone(), st)
                };
                let t = match fw.tasks.remove(&tid) {
                    Some(mut t) if t.agent == id => {
                        t.state = st;
                        t.status = status;
                        *t
                    }
                    Some(other) => {
                        // Live on another agent: this report is stale.
                        fw.tasks.insert(tid, other);
                        continue;
                    }
                    None => Task {
                        info: at.task,
                        agent: id.clone(),
                        state: st,
                        status,
                        usage: None,
                        kill_requested: false,
                        adopted: false,
                    },
                };
                fw.completed.push_back(t);
                if fw.completed.len() > self.cfg.completed_tasks_per_framework {
                    fw.completed.pop_front();
                }
                continue;
            }
            let adopted = match fw.tasks.get_mut(&tid) {
                Some(t) if t.agent != id => {
                    // The same task id lives on another agent: this copy is stale.
                    kills.push((fid, tid));
                    continue;
                }
                Some(t) => {
                    if t.kill_requested {
                        // Asked for while it was away, or lost on the way.
                        kills.push((fid.clone(), tid.clone()));
                    }
                    if t.state != st && t.state.can_transition(st) {
                        t.state = st;
                        t.status.state = st;
                        t.status.reason = reason::AGENT_REREGISTERED.into();
                        t.status.message = "agent re-registered".into();
                        t.status.uuid = None;
                        t.status.source = TaskSource::Master;
                        t.status.timestamp = ts;
                        Some(t.status.clone())
                    } else {
                        None
                    }
                }
                None => {
                    if let Some(done) = fw.completed.iter_mut().rev().find(|c| c.info.id == tid) {
                        // The framework was told this task ended: it must not come back.
                        done.kill_requested = true;
                        kills.push((fid, tid));
                        continue;
                    }
                    if was_unreachable && !pa {
                        // Not partition-aware: its tasks on an unreachable
                        // agent were (or would have been) reported LOST.
                        // Recorded as such, so it stays dead if the kill is lost.
                        fw.completed.push_back(Task {
                            status: TaskStatus {
                                agent_id: Some(id.clone()),
                                message: "the task's agent was unreachable; the task is considered lost and is killed".into(),
                                reason: reason::AGENT_REREGISTERED.into(),
                                source: TaskSource::Master,
                                timestamp: ts,
                                ..TaskStatus::new(tid.clone(), TaskState::Lost)
                            },
                            info: at.task,
                            agent: id.clone(),
                            state: TaskState::Lost,
                            usage: None,
                            kill_requested: true,
                        adopted: false,
                        });
                        if fw.completed.len() > self.cfg.completed_tasks_per_framework {
                            fw.completed.pop_front();
                        }
                        kills.push((fid, tid));
                        continue;
                    }
                    let status = TaskStatus {
                        agent_id: Some(id.clone()),
                        message: "task adopted from its re-registering agent".into(),
                        reason: reason::AGENT_REREGISTERED.into(),
                        source: TaskSource::Master,
                        timestamp: ts,
                        ..TaskStatus::new(tid.clone(), st)
                    };
                    tracing::info!(framework_id = %fid, task_id = %tid, state = %st, "task adopted");
                    fw.tasks.insert(
                        tid.clone(),
                        Box::new(Task {
                            info: at.task,
                            agent: id.clone(),
                            state: st,
                            status: status.clone(),
                            usage: None,
                            kill_requested: false,
                            adopted: true,
                        }),
                    );
                    Some(status)
                }
            };
            if let Some(s) = adopted
                && let Some(c) = fw.conn
            {
                out.push(Output::ToFramework(c, Event::Update(s)));
            }
            let r = fw
                .tasks
                .get(&tid)
                .map(|t| t.info.resources.clone())
                .unwrap_or_default();
            if let Some(a) = self.agents.get_mut(&id) {
                a.tasks.insert((fid.clone(), tid));
            }
            used.push((fid, r));
        }
        // Tasks we thought were there but the agent does not report: gone.
        for (fid, tid) in previous {
            if reported.contains(&(fid.clone(), tid.clone())) {
                continue;
            }
            let st = if self.partition_aware(&fid) {
                TaskState::Dropped
            } else {
                TaskState::Lost
            };
            self.finish_task(
                &fid,
                &tid,
                (
                    st,
                    reason::AGENT_REREGISTERED,
                    "task was not found on the agent when it re-registered",
                ),
                now,
                out,
            );
        }
        match self.allocator.add_agent_reserved(
            id.clone(),
            Some(info.role.as_str()),
            info.resources,
            &used,
        ) {
            Ok(()) => {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.in_allocator = true;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "allocator refused re-registered agent");
            }
        }
        for fid in shutdowns {
            out.push(Output::ToAgent(conn, MasterMessage::ShutdownFramework(fid)));
        }
        kills.sort();
        kills.dedup();
        for (framework_id, task_id) in kills {
            out.push(Output::ToAgent(
                conn,
                MasterMessage::KillTask {
                    framework_id,
                    task_id,
                },
            ));
        }
        out.push(Output::ToAgent(
            conn,
            MasterMessage::Registered {
                agent_id: id.clone(),
                heartbeat_interval: self.cfg.agent_heartbeat_interval,
                master_id: self.cfg.master_id.clone(),
            },
        ));
        self.dirty.insert(id.clone());
        tracing::info!("agent re-registered");
        self.answer_deferred(Some(&id), now, out);
        Ok(())
    }

    /// A registry write finished.
    pub fn persisted(&mut self, pending: Pending, now: Instant, out: &mut Vec<Output>) {
        match pending {
            Pending::AdmitAgent { conn, agent } => {
                let wall = self.wall(now);
                let Some(a) = self.agents.get_mut(&agent) else {
                    return;
                };
                if a.conn != Some(conn) {
                    // It went away while we were persisting; it will re-register.
                    return;
                }
                let step = a.state.on(AgentEvent::Registered);
                a.last_seen = now;
                a.registered_at = Some(wall);
                let resources = a.resources.clone();
                let role = a.role.clone();
                let add = !a.in_allocator;
                a.in_allocator = true;
                match step {
                    Ok(s) => a.state = s,
                    Err(e) => self.illegal("agent", agent.as_str(), &e),
                }
                if add
                    && let Err(e) = self.allocator.add_agent_reserved(
                        agent.clone(),
                        Some(role.as_str()),
                        resources,
                        &[],
                    )
                {
                    tracing::error!(agent_id = %agent, error = %e, "allocator refused agent");
                }
                out.push(Output::ToAgent(
                    conn,
                    MasterMessage::Registered {
                        agent_id: agent.clone(),
                        heartbeat_interval: self.cfg.agent_heartbeat_interval,
                        master_id: self.cfg.master_id.clone(),
                    },
                ));
                self.dirty.insert(agent.clone());
                tracing::info!(agent_id = %agent, "agent registered");
            }
        }
    }

    /// The agent on `conn` is alive.
    pub fn agent_heartbeat(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Output>) {
        if let Some(a) = self
            .agent_conns
            .get(&conn)
            .and_then(|id| self.agents.get_mut(id))
        {
            a.last_seen = now;
            out.push(Output::ToAgent(conn, MasterMessage::Pong));
        }
    }

    /// The agent's stream ended: stop offering it; tasks wait for the timeout.
    pub fn agent_closed(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        let Some(id) = self.agent_conns.remove(&conn) else {
            return;
        };
        let Some(a) = self.agents.get_mut(&id) else {
            return;
        };
        if a.conn != Some(conn) {
            return;
        }
        a.conn = None;
        if a.state == AgentState::Recovered && a.registered_at.is_none() && !a.in_allocator {
            // A first registration whose stream closed before its admission
            // was durable: the agent never learned its id and will register
            // afresh. Forget it rather than wait for it until it is collected.
            tracing::info!(agent_id = %id, "agent left before its admission completed; forgetting it");
            self.agents.remove(&id);
            out.push(Output::Persist(RegistryOp::Remove(id), None));
            return;
        }
        let step = a.state.on(AgentEvent::StreamClosed);
        match step {
            Ok(s) => a.state = s,
            Err(e) => self.illegal("agent", id.as_str(), &e),
        }
        tracing::info!(agent_id = %id, "agent disconnected");
        self.rescind_agent_offers(&id, out);
        if self.agents.get(&id).is_some_and(|a| a.in_allocator) {
            let _ = self.allocator.set_agent_active(&id, false);
        }
    }

    /// No heartbeat within the agent timeout: its tasks are UNREACHABLE
    /// (partition-aware frameworks) or LOST, its resources leave the pool.
    pub(super) fn mark_unreachable(&mut self, id: &AgentId, now: Instant, out: &mut Vec<Output>) {
        let Some(a) = self.agents.get_mut(id) else {
            return;
        };
        let next = match a.state.on(AgentEvent::TimedOut) {
            Ok(s) => s,
            Err(e) => {
                self.illegal("agent", id.as_str(), &e);
                return;
            }
        };
        let _span = tracing::info_span!("agent_unreachable", agent_id = %id).entered();
        a.state = next;
        a.unreachable_at = Some(now);
        if let Some(conn) = a.conn.take() {
            self.agent_conns.remove(&conn);
            out.push(Output::CloseAgent(conn));
        }
        self.counters.agents_unreachable += 1;
        tracing::warn!("agent unreachable");
        let tasks: Vec<(FrameworkId, TaskId)> = a.tasks.iter().cloned().collect();
        self.rescind_agent_offers(id, out);
        for (fid, tid) in tasks {
            if self.partition_aware(&fid) {
                self.finish_task(
                    &fid,
                    &tid,
                    (
                        TaskState::Unreachable,
                        reason::AGENT_UNREACHABLE,
                        "agent is unreachable",
                    ),
                    now,
                    out,
                );
            } else {
                self.finish_task(
                    &fid,
                    &tid,
                    (
                        TaskState::Lost,
                        reason::AGENT_UNREACHABLE,
                        "agent is unreachable; the task is considered lost",
                    ),
                    now,
                    out,
                );
            }
        }
        if self.agents.get(id).is_some_and(|a| a.in_allocator) {
            let _ = self.allocator.remove_agent(id);
        }
        if let Some(a) = self.agents.get_mut(id) {
            a.in_allocator = false;
        }
        self.persist_unreachable(id, now, out);
        let fws: Vec<ConnId> = self.frameworks.values().filter_map(|f| f.conn).collect();
        for conn in fws {
            out.push(Output::ToFramework(
                conn,
                Event::Failure {
                    agent_id: id.clone(),
                    message: "agent unreachable".into(),
                },
            ));
        }
        self.answer_deferred(Some(id), now, out);
    }

    /// An agent unreachable for longer than `agent_gc_after` is gone for
    /// good: its remaining (partition-aware) tasks become TASK_GONE, and it
    /// leaves memory and the registry. If it ever comes back it is a stranger
    /// (admitted again; tasks its frameworks were told are gone are killed).
    pub(super) fn remove_agent(&mut self, id: &AgentId, now: Instant, out: &mut Vec<Output>) {
        let tasks: Vec<(FrameworkId, TaskId)> = self
            .agents
            .get(id)
            .map(|a| a.tasks.iter().cloned().collect())
            .unwrap_or_default();
        tracing::info!(agent_id = %id, tasks = tasks.len(), "removing an agent unreachable for too long");
        for (fid, tid) in tasks {
            self.finish_task(
                &fid,
                &tid,
                (
                    TaskState::Gone,
                    reason::AGENT_REMOVED,
                    "the task's agent was unreachable for too long and is considered gone",
                ),
                now,
                out,
            );
        }
        if self.agents.get(id).is_some_and(|a| a.in_allocator) {
            let _ = self.allocator.remove_agent(id);
        }
        // Updates held by an agent that is gone will never be acknowledged.
        for fw in self.frameworks.values_mut() {
            fw.unacked_terminal.retain(|_, (agent, _)| agent != id);
        }
        self.agents.remove(id);
        self.dirty.remove(id);
        self.counters.agents_removed += 1;
        out.push(Output::Persist(RegistryOp::Remove(id.clone()), None));
        self.answer_deferred(Some(id), now, out);
    }
}
