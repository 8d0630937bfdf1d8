//! Frameworks: SUBSCRIBE (first time, failover, after a master restart),
//! disconnection, TEARDOWN, REVIVE and SUPPRESS.

use super::{CallError, ConnId, Framework, Map, Master, Output, Set, Task, reason, status};
use agora_core::info::FrameworkInfo;
use agora_core::lifecycle::{FrameworkEvent, FrameworkState};
use agora_core::protocol::{Event, MasterMessage};
use agora_core::{AgentId, FrameworkId, Invalid, TaskState};
use std::collections::VecDeque;
use std::time::Instant;

impl Master {
    /// SUBSCRIBE on a new stream `conn`.
    ///
    /// Everything is validated before anything changes: a refused SUBSCRIBE
    /// leaves the framework (and its current stream, if any) as it was. A
    /// subscription un-suppresses the framework (Mesos v1: a subscribing
    /// framework is not suppressed unless it says so).
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        mut info: FrameworkInfo,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<FrameworkId, CallError> {
        let _span = tracing::info_span!("subscribe", conn).entered();
        // ---- validate
        if let Some(id) = &info.id {
            if self.completed_frameworks.iter().any(|f| &f.id == id) {
                return Err(CallError::FrameworkCompleted(id.clone()));
            }
            if let Some(fw) = self.frameworks.get(id)
                && info.role != fw.info.role
            {
                return Err(Invalid::new(
                    "framework.role",
                    format!(
                        "cannot change role from {:?} to {:?} on resubscription",
                        fw.info.role, info.role
                    ),
                )
                .into());
            }
        }
        let id = match info.id.clone() {
            Some(id) => id,
            None => FrameworkId::new(self.next_id("F")),
        };
        info.id = Some(id.clone());

        // ---- apply
        // Offers made to the previous stream go (it is told, if still open).
        self.rescind_framework_offers(&id, out);
        match self.frameworks.get_mut(&id) {
            Some(fw) => {
                // Failover (or reconnection): the old stream, if any, is told and closed.
                if let Some(old) = fw.conn.take() {
                    self.framework_conns.remove(&old);
                    out.push(Output::ToFramework(
                        old,
                        Event::Error(
                            "framework failed over: another scheduler subscribed with this id"
                                .into(),
                        ),
                    ));
                    out.push(Output::CloseFramework(old));
                }
                let step = fw.state.on(FrameworkEvent::Subscribed);
                fw.conn = Some(conn);
                fw.disconnected_at = None;
                fw.info = info;
                fw.last_heartbeat = now;
                match step {
                    Ok(s) => fw.state = s,
                    Err(e) => self.illegal("framework", id.as_str(), &e),
                }
                if let Err(e) = self.allocator.set_framework_active(&id, true) {
                    tracing::error!(framework_id = %id, error = %e, "allocator does not know the framework");
                }
            }
            None => {
                self.allocator
                    .add_framework(id.clone(), &info.role, true)
                    .map_err(|e| CallError::NotFound(e.to_string()))?;
                self.frameworks.insert(
                    id.clone(),
                    Framework {
                        id: id.clone(),
                        info,
                        state: FrameworkState::Connected,
                        conn: Some(conn),
                        disconnected_at: None,
                        tasks: Map::default(),
                        completed: VecDeque::new(),
                        unacked_terminal: Map::default(),
                        offers: Set::default(),
                        last_heartbeat: now,
                        principal: None,
                    },
                );
            }
        }
        let _ = self.allocator.revive(&id);
        self.counters.frameworks_subscribed += 1;
        self.framework_conns.insert(conn, id.clone());
        out.push(Output::ToFramework(
            conn,
            Event::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval: self.cfg.framework_heartbeat_interval,
                master_id: self.cfg.master_id.clone(),
            },
        ));
        self.full_allocation_due = true;
        tracing::info!(framework_id = %id, "framework subscribed");
        Ok(id)
    }

    /// A framework's event stream ended.
    pub fn framework_closed(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Output>) {
        let Some(id) = self.framework_conns.remove(&conn) else {
            return;
        };
        let Some(fw) = self.frameworks.get_mut(&id) else {
            return;
        };
        if fw.conn != Some(conn) {
            return;
        }
        fw.conn = None;
        fw.disconnected_at = Some(now);
        let step = fw.state.on(FrameworkEvent::StreamClosed);
        let timeout = fw.info.failover_timeout;
        match step {
            Ok(s) => fw.state = s,
            Err(e) => self.illegal("framework", id.as_str(), &e),
        }
        let _ = self.allocator.set_framework_active(&id, false);
        tracing::info!(framework_id = %id, failover_timeout = ?timeout, "framework disconnected");
        self.rescind_framework_offers(&id, out);
    }

    /// The framework a call names, if it may make calls (subscribed, with a stream).
    pub(super) fn framework_for_call(&self, id: &FrameworkId) -> Result<(), CallError> {
        match self.frameworks.get(id) {
            Some(f) if f.conn.is_some() => Ok(()),
            Some(_) => Err(CallError::UnknownFramework(id.clone())),
            None if self.completed_frameworks.iter().any(|f| &f.id == id) => {
                Err(CallError::FrameworkCompleted(id.clone()))
            }
            None => Err(CallError::UnknownFramework(id.clone())),
        }
    }

    /// TEARDOWN: kill every task of the framework and forget it.
    pub fn teardown(
        &mut self,
        id: &FrameworkId,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), CallError> {
        self.framework_for_call(id)?;
        self.remove_framework(
            id,
            FrameworkEvent::Teardown,
            "framework requested teardown",
            now,
            out,
        );
        Ok(())
    }

    /// Removes a framework: its offers are rescinded, its tasks killed on
    /// their agents and recorded as KILLED, and it joins the bounded list of
    /// completed frameworks.
    pub(super) fn remove_framework(
        &mut self,
        id: &FrameworkId,
        ev: FrameworkEvent,
        why: &str,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        self.rescind_framework_offers(id, out);
        let ts = self.wall(now);
        let Some(mut fw) = self.frameworks.remove(id) else {
            return;
        };
        let _span = tracing::info_span!("remove_framework", framework_id = %id).entered();
        tracing::info!(why, tasks = fw.tasks.len(), "removing framework");
        match fw.state.on(ev) {
            Ok(s) => fw.state = s,
            Err(e) => {
                fw.state = FrameworkState::Completed;
                self.illegal("framework", id.as_str(), &e);
            }
        }
        if let Some(conn) = fw.conn.take() {
            self.framework_conns.remove(&conn);
            out.push(Output::CloseFramework(conn));
        }
        let mut agents_to_notify: Set<AgentId> = Set::default();
        let tasks: Vec<Task> = fw.tasks.drain().map(|(_, t)| *t).collect();
        for mut t in tasks {
            agents_to_notify.insert(t.agent.clone());
            if let Some(a) = self.agents.get_mut(&t.agent) {
                a.tasks.remove(&(id.clone(), t.info.id.clone()));
            }
            t.state = TaskState::Killed;
            t.status = status(
                &t.info.id,
                &t.agent,
                TaskState::Killed,
                reason::FRAMEWORK_REMOVED,
                why,
                ts,
            );
            fw.completed.push_back(t);
        }
        while fw.completed.len() > self.cfg.completed_tasks_per_framework {
            fw.completed.pop_front();
        }
        self.deferred.retain(|d| &d.framework != id);
        for a in agents_to_notify {
            if !self.to_agent(&a, MasterMessage::ShutdownFramework(id.clone()), out)
                && let Some(agent) = self.agents.get_mut(&a)
            {
                // Sent when it is back (its tasks of this framework are killed then).
                agent.shutdowns.insert(id.clone());
            }
            self.dirty.insert(a);
        }
        let _ = self.allocator.remove_framework(id);
        self.counters.frameworks_removed += 1;
        self.completed_frameworks.push_back(fw);
        while self.completed_frameworks.len() > self.cfg.max_completed_frameworks {
            self.completed_frameworks.pop_front();
        }
    }

    /// REVIVE: clears the framework's filters and un-suppresses it.
    pub fn revive(&mut self, id: &FrameworkId) -> Result<(), CallError> {
        self.framework_for_call(id)?;
        let _ = self.allocator.revive(id);
        self.full_allocation_due = true;
        Ok(())
    }

    /// SUPPRESS: no offers until REVIVE (or a new SUBSCRIBE).
    pub fn suppress(&mut self, id: &FrameworkId) -> Result<(), CallError> {
        self.framework_for_call(id)?;
        let _ = self.allocator.suppress(id);
        Ok(())
    }

    /// Frameworks an agent knows but this master does not (after a master
    /// restart): known as Recovered until their schedulers resubscribe or
    /// their failover timeout passes.
    pub(super) fn recover_frameworks(&mut self, infos: &[FrameworkInfo], now: Instant) {
        for fi in infos {
            let Some(fid) = fi.id.clone() else { continue };
            if self.frameworks.contains_key(&fid)
                || self.completed_frameworks.iter().any(|f| f.id == fid)
            {
                continue;
            }
            if self
                .allocator
                .add_framework(fid.clone(), &fi.role, false)
                .is_err()
            {
                continue;
            }
            tracing::info!(framework_id = %fid, "framework recovered from an agent's report");
            self.frameworks.insert(
                fid.clone(),
                Framework {
                    id: fid,
                    info: fi.clone(),
                    state: FrameworkState::Recovered,
                    conn: None,
                    disconnected_at: Some(now),
                    tasks: Map::default(),
                    completed: VecDeque::new(),
                    offers: Set::default(),
                    last_heartbeat: now,
                    unacked_terminal: Map::default(),
                    principal: None,
                },
            );
        }
    }

    /// The principal that registered a framework: `None` if the master does
    /// not know the framework, `Some(None)` if it has no principal yet.
    pub fn framework_principal(&self, id: &FrameworkId) -> Option<Option<&str>> {
        self.frameworks.get(id).map(|f| f.principal.as_deref())
    }

    /// The role a known framework is registered in.
    pub fn framework_role(&self, id: &FrameworkId) -> Option<&str> {
        self.frameworks.get(id).map(|f| f.info.role.as_str())
    }

    /// Binds a framework to the principal that subscribed it (after a
    /// successful SUBSCRIBE; the binding lives as long as the framework).
    pub fn bind_framework_principal(&mut self, id: &FrameworkId, principal: Option<&str>) {
        if let (Some(f), Some(p)) = (self.frameworks.get_mut(id), principal)
            && f.principal.is_none()
        {
            f.principal = Some(p.to_string());
        }
    }

    /// Whether a framework id belongs to a torn-down framework.
    pub(super) fn is_completed(&self, id: &FrameworkId) -> bool {
        self.completed_frameworks.iter().any(|f| &f.id == id)
    }
}
