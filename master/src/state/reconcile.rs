//! RECONCILE, with the Mesos rule for tasks the master cannot know yet.
//!
//! After a master restart, tasks are rebuilt from re-registering agents. For
//! a task the master does not know, the truthful answer depends on its agent:
//! - the agent was admitted (it is in the registry) but has not re-registered
//!   yet (`Recovered`): the master does not know, so it does not answer now.
//!   It remembers the question and answers once the agent is back (with the
//!   task's state if the agent reports it, TASK_UNKNOWN/LOST if not) or is
//!   declared unreachable (TASK_UNREACHABLE/LOST). Mesos stays silent and
//!   lets the framework retry; answering later is the same contract with no
//!   retry needed. When the question names no agent, it waits until no agent
//!   is still recovering;
//! - the agent is unreachable: TASK_UNREACHABLE (partition-aware frameworks)
//!   or TASK_LOST;
//! - the agent is gone: TASK_GONE or TASK_LOST;
//! - otherwise (the agent is here and does not have it, or is unknown):
//!   TASK_UNKNOWN or TASK_LOST.

use super::{CallError, Deferred, DeferredKind, MAX_DEFERRED, Master, Output, Task, reason};
use agora_core::info::{TaskSource, TaskStatus};
use agora_core::lifecycle::AgentState;
use agora_core::protocol::Reconcile;
use agora_core::{AgentId, FrameworkId, TaskId, TaskState};
use std::time::Instant;

/// What the master can say about a task it does not know.
pub(super) enum Answer {
    /// Nothing yet: its agent may still report it.
    Defer,
    Status(TaskStatus),
}

fn reconciled(s: &TaskStatus) -> TaskStatus {
    let mut s = s.clone();
    s.reason = reason::RECONCILIATION.into();
    s.uuid = None;
    s.source = TaskSource::Master;
    s
}

impl Master {
    /// RECONCILE: explicit (listed tasks) or implicit (empty list: every
    /// task the master knows as live).
    pub fn reconcile(
        &mut self,
        req: Reconcile,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), CallError> {
        let fid = req.framework_id;
        self.framework_for_call(&fid)?;
        let _span = tracing::info_span!("reconcile", framework_id = %fid, tasks = req.tasks.len())
            .entered();
        let mut updates = Vec::new();
        if req.tasks.is_empty() {
            if let Some(fw) = self.frameworks.get(&fid) {
                updates.extend(fw.tasks.values().map(|t| reconciled(&t.status)));
            }
        } else {
            for (tid, agent) in req.tasks {
                if let Some(s) = self.known_status(&fid, &tid) {
                    updates.push(s);
                    continue;
                }
                match self.unknown_task_answer(&fid, &tid, agent.as_ref()) {
                    Answer::Status(mut s) => {
                        s.timestamp = self.wall(now);
                        self.record_told_ended(&fid, &s);
                        updates.push(s);
                    }
                    Answer::Defer => {
                        if self.deferred.len() < MAX_DEFERRED {
                            self.counters.reconciliations_deferred += 1;
                            self.deferred.insert(Deferred {
                                framework: fid.clone(),
                                task: tid,
                                agent,
                                kind: DeferredKind::Reconcile,
                            });
                        }
                    }
                }
            }
        }
        for u in updates {
            self.send_update(&fid, u, out);
        }
        Ok(())
    }

    /// The latest status of a live or recently completed task.
    fn known_status(&self, fid: &FrameworkId, tid: &TaskId) -> Option<TaskStatus> {
        let fw = self.frameworks.get(fid)?;
        let t: &Task = fw
            .tasks
            .get(tid)
            .map(|t| &**t)
            .or_else(|| fw.completed.iter().rev().find(|t| &t.info.id == tid))?;
        Some(reconciled(&t.status))
    }

    fn any_recovering(&self) -> bool {
        self.agents
            .values()
            .any(|a| a.state == AgentState::Recovered)
    }

    /// The answer for a task the master does not know (see the module docs).
    pub(super) fn unknown_task_answer(
        &self,
        fid: &FrameworkId,
        tid: &TaskId,
        agent: Option<&AgentId>,
    ) -> Answer {
        let pa = self.partition_aware(fid);
        let agent_state = match agent {
            Some(a) => self.agents.get(a).map(|a| a.state),
            None if self.any_recovering() => return Answer::Defer,
            None => None,
        };
        let (state, why, message) = match agent_state {
            Some(AgentState::Recovered) => return Answer::Defer,
            Some(AgentState::Unreachable) => (
                if pa {
                    TaskState::Unreachable
                } else {
                    TaskState::Lost
                },
                reason::AGENT_UNREACHABLE,
                "the task's agent is unreachable",
            ),
            Some(AgentState::Gone) => (
                if pa { TaskState::Gone } else { TaskState::Lost },
                reason::AGENT_REMOVED,
                "the task's agent is gone",
            ),
            _ => (
                if pa {
                    TaskState::Unknown
                } else {
                    TaskState::Lost
                },
                reason::RECONCILIATION,
                "the master does not know this task",
            ),
        };
        Answer::Status(TaskStatus {
            agent_id: agent.cloned(),
            message: message.into(),
            reason: why.into(),
            source: TaskSource::Master,
            ..TaskStatus::new(tid.clone(), state)
        })
    }

    /// The framework is told a task it does not know has ended (TASK_LOST or
    /// TASK_GONE): remember it, so that if the task shows up after all (its
    /// agent returns, even as a stranger after being collected) it is killed
    /// rather than adopted — the framework has replaced it by then.
    pub(super) fn record_told_ended(&mut self, fid: &FrameworkId, st: &TaskStatus) {
        if !st.state.is_terminal() {
            return;
        }
        let keep = self.cfg.completed_tasks_per_framework;
        let Some(fw) = self.frameworks.get_mut(fid) else {
            return;
        };
        fw.completed.push_back(Task {
            info: agora_core::info::TaskInfo::new(st.task_id.clone(), Default::default()),
            // Where it was said to be, if the question named an agent.
            agent: st.agent_id.clone().unwrap_or_else(|| AgentId::new("")),
            state: st.state,
            status: st.clone(),
            usage: None,
            kill_requested: true,
            adopted: false,
        });
        while fw.completed.len() > keep {
            fw.completed.pop_front();
        }
    }

    /// Answers the deferred questions that can be answered now: those about
    /// `agent` (it just re-registered) and those naming no agent, or all of
    /// them (after timeouts).
    pub(super) fn answer_deferred(
        &mut self,
        agent: Option<&AgentId>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if self.deferred.is_empty() {
            return;
        }
        // Questions naming no agent wait until no agent is recovering.
        let recovering = self.deferred.iter().any(|d| d.agent.is_none()) && self.any_recovering();
        let ready: Vec<Deferred> = self
            .deferred
            .iter()
            .filter(|d| agent.is_none() || d.agent.is_none() || d.agent.as_ref() == agent)
            .filter(|d| match &d.agent {
                // Questions wait while the agent recovers; kills also while
                // it is unreachable.
                Some(a) => match self.agents.get(a).map(|a| a.state) {
                    Some(AgentState::Recovered) => false,
                    Some(AgentState::Unreachable) => d.kind != DeferredKind::Kill,
                    _ => true,
                },
                None => !recovering,
            })
            .cloned()
            .collect();
        for d in ready {
            self.deferred.remove(&d);
            let live = self
                .frameworks
                .get(&d.framework)
                .is_some_and(|f| f.tasks.contains_key(&d.task));
            if d.kind == DeferredKind::Kill && live {
                self.kill_live(&d.framework, &d.task, out);
                continue;
            }
            let answer = match self.known_status(&d.framework, &d.task) {
                Some(s) => s,
                None => match self.unknown_task_answer(&d.framework, &d.task, d.agent.as_ref()) {
                    Answer::Status(mut s) => {
                        s.timestamp = self.wall(now);
                        self.record_told_ended(&d.framework, &s);
                        s
                    }
                    // Cannot happen (filtered above); keep it for later.
                    Answer::Defer => {
                        self.deferred.insert(d);
                        continue;
                    }
                },
            };
            self.send_update(&d.framework, answer, out);
        }
    }
}
