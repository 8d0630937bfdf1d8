//! Tasks: KILL (also while the agent is away), ACKNOWLEDGE, status updates
//! from agents, usage reports, and retiring tasks that ended.

use super::reconcile::Answer;
use super::{
    CallError, ConnId, Deferred, DeferredKind, MAX_DEFERRED, Map, Master, Output, reason, status,
};
use agora_core::lifecycle::AgentState;
use agora_core::protocol::{
    Acknowledge, Event, Kill, MasterMessage, StatusUpdate, TaskUsage, UpdateAck,
};
use agora_core::{FrameworkId, TaskId, TaskState};
use std::time::Instant;

impl Master {
    /// KILL. A kill for a task whose agent is away is remembered and sent
    /// when the agent re-registers; a kill for a task the master does not
    /// know yet (its agent has not re-registered since a master restart) is
    /// answered once the agent's fate is known.
    pub fn kill(
        &mut self,
        req: Kill,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), CallError> {
        let fid = req.framework_id;
        self.framework_for_call(&fid)?;
        let tid = req.task_id;
        let _span = tracing::info_span!("kill", framework_id = %fid, task_id = %tid).entered();
        if self.kill_live(&fid, &tid, out) {
            return Ok(());
        }
        // A kill naming an unreachable agent also waits: if the agent comes
        // back still running the task, it is killed then.
        let unreachable = req
            .agent_id
            .as_ref()
            .and_then(|a| self.agents.get(a))
            .is_some_and(|a| a.state == AgentState::Unreachable);
        let answer = if unreachable {
            Answer::Defer
        } else {
            self.unknown_task_answer(&fid, &tid, req.agent_id.as_ref())
        };
        match answer {
            Answer::Defer => {
                if self.deferred.len() < MAX_DEFERRED {
                    self.counters.kills_deferred += 1;
                    self.deferred.insert(Deferred {
                        framework: fid,
                        task: tid,
                        agent: req.agent_id,
                        kind: DeferredKind::Kill,
                    });
                }
            }
            Answer::Status(mut st) => {
                st.message = "kill of a task the master does not know".into();
                st.reason = reason::TASK_UNKNOWN.into();
                st.timestamp = self.wall(now);
                self.record_told_ended(&fid, &st);
                self.send_update(&fid, st, out);
            }
        }
        Ok(())
    }

    /// Kills a live task: sent to its agent now if it is connected, and
    /// again whenever the agent re-registers still running it. Returns false
    /// if the task is not live.
    pub(super) fn kill_live(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(t) = self
            .frameworks
            .get_mut(fid)
            .and_then(|f| f.tasks.get_mut(tid))
        else {
            return false;
        };
        t.kill_requested = true;
        let agent = t.agent.clone();
        let msg = MasterMessage::KillTask {
            framework_id: fid.clone(),
            task_id: tid.clone(),
        };
        if !self.to_agent(&agent, msg, out) {
            tracing::info!(task_id = %tid, agent_id = %agent, "kill deferred until the agent is back");
            self.counters.kills_deferred += 1;
        }
        true
    }

    /// An operator kills a task (found by id, optionally within one framework).
    pub fn operator_kill(
        &mut self,
        tid: &TaskId,
        framework: Option<&FrameworkId>,
        out: &mut Vec<Output>,
    ) -> Result<FrameworkId, CallError> {
        let fid = self.live_task_owner(tid, framework)?;
        tracing::info!(framework_id = %fid, task_id = %tid, "operator kill");
        self.kill_live(&fid, tid, out);
        Ok(fid)
    }

    /// The framework running live task `tid` (among `framework` if given).
    pub fn live_task_owner(
        &self,
        tid: &TaskId,
        framework: Option<&FrameworkId>,
    ) -> Result<FrameworkId, CallError> {
        let owners: Vec<FrameworkId> = self
            .frameworks
            .values()
            .filter(|f| framework.is_none_or(|want| &f.id == want))
            .filter(|f| f.tasks.contains_key(tid))
            .map(|f| f.id.clone())
            .collect();
        let fid = match owners.as_slice() {
            [one] => one.clone(),
            [] => return Err(CallError::NotFound(format!("no live task {tid}"))),
            _ => {
                return Err(agora_core::Invalid::new(
                    "framework",
                    format!("several frameworks have a task {tid}; name the framework"),
                )
                .into());
            }
        };
        Ok(fid)
    }

    /// ACKNOWLEDGE (a batch): forwarded to the agents holding the updates.
    /// An agent that is away re-sends its unacknowledged updates when it is
    /// back, and the framework acknowledges them again.
    pub fn acknowledge(
        &mut self,
        req: Acknowledge,
        out: &mut Vec<Output>,
    ) -> Result<(), CallError> {
        let fid = req.framework_id;
        self.framework_for_call(&fid)?;
        let mut per_agent: Map<ConnId, Vec<UpdateAck>> = Map::default();
        if let Some(fw) = self.frameworks.get_mut(&fid) {
            for ack in &req.acks {
                if let Some((agent, uuid)) = fw.unacked_terminal.get(&ack.task_id)
                    && agent == &ack.agent_id
                    && uuid.as_ref() == Some(&ack.uuid)
                {
                    fw.unacked_terminal.remove(&ack.task_id);
                }
            }
        }
        for ack in req.acks {
            self.counters.status_update_acks += 1;
            if let Some(conn) = self.agents.get(&ack.agent_id).and_then(|a| a.conn) {
                per_agent.entry(conn).or_default().push(UpdateAck {
                    framework_id: fid.clone(),
                    task_id: ack.task_id,
                    uuid: ack.uuid,
                });
            }
        }
        for (conn, acks) in per_agent {
            out.push(Output::ToAgent(conn, MasterMessage::Acks(acks)));
        }
        Ok(())
    }

    /// Status updates from the agent on `conn`.
    ///
    /// An update is forwarded to its framework (which acknowledges it to the
    /// agent) unless nobody can acknowledge it: its framework is unknown or
    /// torn down, or the task lives on another agent (a stale or misrouted
    /// report). Those the master acknowledges itself and drops.
    pub fn status_updates(
        &mut self,
        conn: ConnId,
        updates: Vec<StatusUpdate>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let Some(aid) = self.agent_conns.get(&conn).cloned() else {
            return;
        };
        if let Some(a) = self.agents.get_mut(&aid) {
            a.last_seen = now;
        }
        let mut self_acks = Vec::new();
        for u in updates {
            self.counters.status_updates += 1;
            let fid = u.framework_id;
            let mut st = u.status;
            let tid = st.task_id.clone();
            st.agent_id = Some(aid.clone());
            let ack = |acks: &mut Vec<UpdateAck>, st: &agora_core::info::TaskStatus| {
                if let Some(uuid) = &st.uuid {
                    acks.push(UpdateAck {
                        framework_id: fid.clone(),
                        task_id: tid.clone(),
                        uuid: uuid.clone(),
                    });
                }
            };
            if matches!(
                st.state,
                TaskState::Unknown | TaskState::Unreachable | TaskState::GoneByOperator
            ) {
                self.counters.status_updates_refused += 1;
                tracing::warn!(framework_id = %fid, task_id = %tid, agent_id = %aid, state = %st.state, "dropping a status update with a state only the master decides");
                ack(&mut self_acks, &st);
                continue;
            }
            let Some(fw) = self.frameworks.get_mut(&fid) else {
                // Unknown or torn down: nobody will acknowledge it.
                ack(&mut self_acks, &st);
                continue;
            };
            let misrouted = match fw.tasks.get(&tid) {
                Some(t) => t.agent != aid,
                None => fw
                    .completed
                    .iter()
                    .rev()
                    .find(|t| t.info.id == tid)
                    // (an empty agent: a record of an answer that named none)
                    .is_some_and(|t| t.agent != aid && !t.agent.as_str().is_empty()),
            };
            if misrouted {
                self.counters.status_updates_misrouted += 1;
                tracing::warn!(framework_id = %fid, task_id = %tid, agent_id = %aid, "dropping a status update for a task that lives on another agent");
                ack(&mut self_acks, &st);
                continue;
            }
            if st.state.is_terminal()
                && let Some(uuid) = &st.uuid
            {
                fw.unacked_terminal
                    .insert(tid.clone(), (aid.clone(), Some(uuid.clone())));
            }
            let mut became_terminal = false;
            if let Some(t) = fw.tasks.get_mut(&tid) {
                if t.state.can_transition(st.state) {
                    t.state = st.state;
                    t.status = st.clone();
                    became_terminal = st.state.is_terminal();
                } else {
                    tracing::debug!(task_id = %tid, from = %t.state, to = %st.state, "status update does not change the master's view");
                }
            }
            if let Some(conn) = fw.conn {
                out.push(Output::ToFramework(conn, Event::Update(st)));
            }
            if became_terminal {
                self.retire_task(&fid, &tid);
            }
        }
        if !self_acks.is_empty() {
            out.push(Output::ToAgent(conn, MasterMessage::Acks(self_acks)));
        }
    }

    /// A usage report from the agent on `conn`: the latest sample of each
    /// task is kept (for `/state`), and the samples are forwarded at once
    /// to the subscribed scheduler of the framework each task belongs to,
    /// one [`Event::Usage`] per framework with its own tasks only. Samples
    /// of tasks the master does not place on this agent are dropped; a
    /// framework that is not connected gets nothing (the next report is a
    /// second away). A sample whose CPU time or timestamp is not a finite,
    /// non-negative number is dropped too (schedulers divide by them).
    pub fn usage(
        &mut self,
        conn: ConnId,
        report: Vec<TaskUsage>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let Some(aid) = self.agent_conns.get(&conn).cloned() else {
            return;
        };
        if let Some(a) = self.agents.get_mut(&aid) {
            a.last_seen = now;
        }
        self.counters.usage_reports += 1;
        // Per framework, in the order the report names them.
        let mut by_framework: Vec<(FrameworkId, Vec<TaskUsage>)> = Vec::new();
        for u in report {
            let sane = |x: f64| x.is_finite() && x >= 0.0;
            if !sane(u.cpu_seconds) || !sane(u.timestamp) {
                continue;
            }
            let Some(t) = self
                .frameworks
                .get_mut(&u.framework_id)
                .and_then(|f| f.tasks.get_mut(&u.task_id))
            else {
                continue;
            };
            if t.agent != aid {
                continue;
            }
            t.usage = Some(u.clone());
            match by_framework.iter_mut().find(|(f, _)| *f == u.framework_id) {
                Some((_, v)) => v.push(u),
                None => by_framework.push((u.framework_id.clone(), vec![u])),
            }
        }
        for (fid, tasks) in by_framework {
            if let Some(conn) = self.frameworks.get(&fid).and_then(|f| f.conn) {
                self.counters.usage_events += 1;
                out.push(Output::ToFramework(conn, Event::Usage(tasks)));
            }
        }
    }

    /// Moves a task that reached a terminal state to the completed list and
    /// frees its resources (if its agent's resources are in the allocator).
    pub(super) fn retire_task(&mut self, fid: &FrameworkId, tid: &TaskId) {
        let Some(fw) = self.frameworks.get_mut(fid) else {
            return;
        };
        let Some(t) = fw.tasks.remove(tid) else {
            return;
        };
        let agent = t.agent.clone();
        let r = t.info.resources.clone();
        fw.completed.push_back(*t);
        if fw.completed.len() > self.cfg.completed_tasks_per_framework {
            fw.completed.pop_front();
        }
        let in_alloc = match self.agents.get_mut(&agent) {
            Some(a) => {
                a.tasks.remove(&(fid.clone(), tid.clone()));
                a.in_allocator
            }
            None => false,
        };
        if in_alloc {
            self.recover_pool(fid, &agent, &r, None);
        }
    }

    /// A master-decided `(state, reason, message)` for a task (agent lost,
    /// dropped launch): recorded, sent to the framework, and retired if terminal.
    pub(super) fn finish_task(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        (state, why, message): (TaskState, &str, &str),
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let ts = self.wall(now);
        let Some(t) = self
            .frameworks
            .get_mut(fid)
            .and_then(|f| f.tasks.get_mut(tid))
        else {
            return;
        };
        if !t.state.can_transition(state) {
            let err = agora_core::task::InvalidTransition {
                from: t.state,
                to: state,
            };
            self.illegal("task", &format!("{fid}/{tid}"), &err);
            return;
        }
        t.state = state;
        t.status = status(tid, &t.agent, state, why, message, ts);
        let st = t.status.clone();
        self.send_update(fid, st, out);
        if state.is_terminal() {
            self.retire_task(fid, tid);
        }
    }
}
