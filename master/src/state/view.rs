//! What the state looks like from outside: `/state`, gauges for
//! `/metrics`, read accessors for tests, and the invariant checker the
//! simulator runs after every step.

use super::{Framework, Map, Master, Task};
use crate::view::*;
use agora_core::lifecycle::{AgentState, FrameworkState, OfferState};
use agora_core::{AgentId, FrameworkId, OfferId, Resources, TaskId, TaskState};

fn task_view(fid: &FrameworkId, t: &Task) -> TaskView {
    TaskView {
        id: t.info.id.0.clone(),
        name: t.info.name.clone(),
        framework_id: fid.0.clone(),
        agent_id: t.agent.0.clone(),
        state: t.state,
        resources: ResourcesView::from(&t.info.resources),
        message: t.status.message.clone(),
        reason: t.status.reason.clone(),
        labels: t.info.labels.clone(),
        usage: t.usage.as_ref().map(|u| UsageView {
            cpu_seconds: u.cpu_seconds,
            mem_rss_bytes: u.mem_rss_bytes,
            timestamp: u.timestamp,
        }),
    }
}

impl Master {
    fn framework_view(&self, f: &Framework) -> FrameworkView {
        let mut f_used = Resources::default();
        let tasks: Vec<TaskView> = f
            .tasks
            .values()
            .map(|t| {
                f_used.add_assign(&t.info.resources);
                task_view(&f.id, t)
            })
            .collect();
        FrameworkView {
            id: f.id.0.clone(),
            name: f.info.name.clone(),
            role: f.info.role.clone(),
            state: f.state,
            partition_aware: f.info.partition_aware,
            failover_timeout_seconds: f.info.failover_timeout.as_secs_f64(),
            suppressed: self.allocator.is_suppressed(&f.id),
            dominant_share: self.allocator.framework_share(&f.id).unwrap_or(0.0),
            used_resources: ResourcesView::from(&f_used),
            offers: f.offers.len(),
            tasks,
            completed_tasks: f.completed.iter().map(|t| task_view(&f.id, t)).collect(),
        }
    }

    /// A JSON-ready snapshot for `/state`.
    pub fn snapshot(&self) -> State {
        let mut total = Resources::default();
        let mut used = Resources::default();
        let mut offered = Resources::default();
        let mut agents: Vec<AgentView> = self
            .agents
            .values()
            .map(|a| {
                let mut a_used = Resources::default();
                for (fid, tid) in &a.tasks {
                    if let Some(t) = self.frameworks.get(fid).and_then(|f| f.tasks.get(tid)) {
                        a_used.add_assign(&t.info.resources);
                    }
                }
                let mut a_offered = Resources::default();
                for oid in &a.offers {
                    if let Some(o) = self.offers.get(oid) {
                        a_offered.add_assign(&o.resources);
                    }
                }
                if a.state == AgentState::Active {
                    total.add_assign(&a.resources);
                    used.add_assign(&a_used);
                    offered.add_assign(&a_offered);
                }
                AgentView {
                    id: a.id.0.clone(),
                    hostname: a.hostname.clone(),
                    state: a.state,
                    endpoint: a.endpoint.clone(),
                    address: a.address.map(|ip| ip.to_string()),
                    attributes: a.attributes.iter().cloned().collect(),
                    role: a.role.clone(),
                    resources: ResourcesView::from(&a.resources),
                    used_resources: ResourcesView::from(&a_used),
                    offered_resources: ResourcesView::from(&a_offered),
                    task_count: a.tasks.len(),
                    registered_time: a.registered_at,
                }
            })
            .collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        let mut frameworks: Vec<FrameworkView> = self
            .frameworks
            .values()
            .map(|f| self.framework_view(f))
            .collect();
        frameworks.sort_by(|a, b| a.id.cmp(&b.id));
        let completed_frameworks = self
            .completed_frameworks
            .iter()
            .rev()
            .map(|f| self.framework_view(f))
            .collect();
        State {
            master_id: self.cfg.master_id.clone(),
            leader: self.cfg.advertise.clone(),
            start_time: self.started_epoch,
            resources: ClusterResources {
                total: ResourcesView::from(&total),
                used: ResourcesView::from(&used),
                offered: ResourcesView::from(&offered),
            },
            agents,
            frameworks,
            completed_frameworks,
            outstanding_offers: self.offers.len(),
        }
    }

    /// Gauges for `/metrics`.
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges::default();
        for a in self.agents.values() {
            *g.agents.entry(a.state).or_default() += 1;
        }
        for f in self.frameworks.values() {
            *g.frameworks.entry(f.state).or_default() += 1;
            for t in f.tasks.values() {
                *g.tasks.entry(t.state).or_default() += 1;
            }
        }
        *g.frameworks.entry(FrameworkState::Completed).or_default() +=
            self.completed_frameworks.len() as u64;
        g.outstanding_offers = self.offers.len();
        g.deferred = self.deferred.len();
        g.counters = self.counters.clone();
        g
    }

    /// Checks the invariants the simulator relies on; returns the first
    /// violation found.
    ///
    /// - every offer is outstanding, on an active agent, for a framework
    ///   that knows it, and indexed on both sides;
    /// - frameworks' tasks and agents' task indexes are the same set;
    /// - exact accounting: for every agent in the allocator and every
    ///   framework, what the allocator says the framework holds there equals
    ///   its outstanding offers plus its live tasks there, and no port is
    ///   held twice; the agent's total covers it all;
    /// - streams: a connected framework has exactly one stream and a
    ///   disconnected one none; the same for agents;
    /// - memory stays bounded (completed frameworks and tasks).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.allocator.check_invariants()?;
        let mut held: Map<(FrameworkId, AgentId), Resources> = Map::default();
        for (oid, o) in &self.offers {
            let a = self
                .agents
                .get(&o.agent)
                .ok_or(format!("offer {oid} on unknown agent"))?;
            if !a.offers.contains(oid) || a.state != AgentState::Active {
                return Err(format!(
                    "offer {oid} on inactive agent {} ({:?}) or unindexed",
                    o.agent, a.state
                ));
            }
            if o.state != OfferState::Outstanding {
                return Err(format!("offer {oid} in map but not outstanding"));
            }
            let f = self
                .frameworks
                .get(&o.framework)
                .ok_or(format!("offer {oid} for unknown framework {}", o.framework))?;
            if !f.offers.contains(oid) {
                return Err(format!("offer {oid} not indexed by its framework"));
            }
            held.entry((o.framework.clone(), o.agent.clone()))
                .or_default()
                .add_assign(&o.resources);
        }
        for f in self.frameworks.values() {
            if f.state == FrameworkState::Completed {
                return Err(format!("completed framework {} still live", f.id));
            }
            match (f.state, f.conn) {
                (FrameworkState::Connected, Some(c)) => {
                    if self.framework_conns.get(&c) != Some(&f.id) {
                        return Err(format!("framework {} stream {c} not indexed", f.id));
                    }
                }
                (FrameworkState::Connected, None) => {
                    return Err(format!("framework {} connected without a stream", f.id));
                }
                (_, Some(c)) => {
                    return Err(format!(
                        "framework {} is {:?} but has stream {c}",
                        f.id, f.state
                    ));
                }
                (_, None) => {}
            }
            for oid in &f.offers {
                if !self.offers.contains_key(oid) {
                    return Err(format!("framework {} indexes dead offer {oid}", f.id));
                }
            }
            for (tid, t) in &f.tasks {
                if !t.state.holds_resources() {
                    return Err(format!("task {tid} is {} but live", t.state));
                }
                let a = self
                    .agents
                    .get(&t.agent)
                    .ok_or(format!("task {tid} on unknown agent {}", t.agent))?;
                if !a.tasks.contains(&(f.id.clone(), tid.clone())) {
                    return Err(format!("task {tid} not indexed by agent {}", t.agent));
                }
                held.entry((f.id.clone(), t.agent.clone()))
                    .or_default()
                    .add_assign(&t.info.resources);
            }
            if f.completed.len() > self.cfg.completed_tasks_per_framework {
                return Err(format!("framework {} keeps too many completed tasks", f.id));
            }
        }
        for (c, id) in &self.framework_conns {
            if self.frameworks.get(id).and_then(|f| f.conn) != Some(*c) {
                return Err(format!(
                    "stream {c} indexed for framework {id} that lost it"
                ));
            }
        }
        if self.completed_frameworks.len() > self.cfg.max_completed_frameworks {
            return Err("too many completed frameworks kept".into());
        }
        for a in self.agents.values() {
            for (fid, tid) in &a.tasks {
                let ok = self
                    .frameworks
                    .get(fid)
                    .and_then(|f| f.tasks.get(tid))
                    .is_some_and(|t| t.agent == a.id);
                if !ok {
                    return Err(format!(
                        "agent {} indexes task {fid}/{tid} it does not hold",
                        a.id
                    ));
                }
            }
            match a.conn {
                Some(c) if self.agent_conns.get(&c) != Some(&a.id) => {
                    return Err(format!("agent {} stream {c} not indexed", a.id));
                }
                None if a.state == AgentState::Active => {
                    return Err(format!("agent {} active without a stream", a.id));
                }
                _ => {}
            }
            let should_be_in = matches!(a.state, AgentState::Active | AgentState::Disconnected);
            if a.in_allocator != should_be_in {
                return Err(format!(
                    "agent {} is {:?} but in_allocator = {}",
                    a.id, a.state, a.in_allocator
                ));
            }
            if !a.in_allocator {
                if !a.offers.is_empty() {
                    return Err(format!("agent {} outside the allocator has offers", a.id));
                }
                continue;
            }
            let (_, alloc) = self
                .allocator
                .agent_resources(&a.id)
                .ok_or(format!("agent {} missing in allocator", a.id))?;
            let mut sum = Resources::default();
            let mut fws: Vec<&FrameworkId> = held
                .keys()
                .filter(|(_, ag)| ag == &a.id)
                .map(|(f, _)| f)
                .collect();
            fws.sort();
            for fid in fws {
                let want = &held[&(fid.clone(), a.id.clone())];
                let got = self.allocator.held(fid, &a.id);
                if &got != want {
                    return Err(format!(
                        "agent {}: allocator says framework {fid} holds {got} but its offers + tasks are {want}",
                        a.id
                    ));
                }
                if sum.ports.intersects(&want.ports) {
                    return Err(format!("agent {}: a port is held twice", a.id));
                }
                sum.add_assign(want);
            }
            if alloc != sum {
                return Err(format!(
                    "agent {}: allocator holds {alloc} but offers + tasks are {sum}",
                    a.id
                ));
            }
            if !a.resources.contains(&sum) {
                return Err(format!(
                    "agent {}: offered + used {sum} exceeds total {}",
                    a.id, a.resources
                ));
            }
        }
        for (c, id) in &self.agent_conns {
            if self.agents.get(id).and_then(|a| a.conn) != Some(*c) {
                return Err(format!("stream {c} indexed for agent {id} that lost it"));
            }
        }
        Ok(())
    }

    /// Outstanding offers of a framework (tests).
    pub fn outstanding_offers(&self, fid: &FrameworkId) -> Vec<(OfferId, AgentId, Resources)> {
        let mut v: Vec<_> = self
            .offers
            .iter()
            .filter(|(_, o)| &o.framework == fid)
            .map(|(id, o)| (id.clone(), o.agent.clone(), o.resources.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// A task's state, live or completed (tests).
    pub fn task_state(&self, fid: &FrameworkId, tid: &TaskId) -> Option<TaskState> {
        let f = self.frameworks.get(fid).or_else(|| {
            self.completed_frameworks
                .iter()
                .rev()
                .find(|f| &f.id == fid)
        })?;
        f.tasks.get(tid).map(|t| t.state).or_else(|| {
            f.completed
                .iter()
                .rev()
                .find(|t| &t.info.id == tid)
                .map(|t| t.state)
        })
    }

    /// Whether the master decided to kill this task (a kill was asked for, or
    /// it was recorded as ended and is killed wherever it shows up) (tests).
    pub fn kill_decided(&self, fid: &FrameworkId, tid: &TaskId) -> bool {
        let Some(f) = self.frameworks.get(fid) else {
            return false;
        };
        f.tasks
            .get(tid)
            .map(|t| t.kill_requested)
            .unwrap_or_else(|| {
                f.completed
                    .iter()
                    .rev()
                    .find(|t| &t.info.id == tid)
                    .is_some_and(|t| t.kill_requested)
            })
    }

    /// Live tasks of a framework with their agents and states (tests).
    pub fn live_tasks(&self, fid: &FrameworkId) -> Vec<(TaskId, AgentId, TaskState)> {
        let mut v: Vec<_> = self
            .frameworks
            .get(fid)
            .map(|f| {
                f.tasks
                    .iter()
                    .map(|(id, t)| (id.clone(), t.agent.clone(), t.state))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// An agent's lifecycle state (tests).
    pub fn agent_state(&self, id: &AgentId) -> Option<AgentState> {
        self.agents.get(id).map(|a| a.state)
    }

    /// The role an agent's resources are reserved for, as the master and
    /// its allocator hold it (`*`: unreserved) (tests).
    pub fn agent_role(&self, id: &AgentId) -> Option<(String, Option<String>)> {
        let a = self.agents.get(id)?;
        Some((
            a.role.clone(),
            self.allocator.agent_role(id).map(str::to_string),
        ))
    }

    /// Test hook for the ACCEPT defence: changes an agent's role in the
    /// master's record only, leaving its offers outstanding, as a bug
    /// elsewhere would. Never called outside tests.
    #[doc(hidden)]
    pub fn test_only_set_agent_role(&mut self, id: &AgentId, role: &str) {
        if let Some(a) = self.agents.get_mut(id) {
            a.role = role.to_string();
        }
    }

    /// A framework's lifecycle state, `Completed` once torn down and still
    /// remembered (tests).
    pub fn framework_state(&self, id: &FrameworkId) -> Option<FrameworkState> {
        self.frameworks
            .get(id)
            .map(|f| f.state)
            .or_else(|| self.is_completed(id).then_some(FrameworkState::Completed))
    }

    /// The stream a framework is connected on (tests).
    pub fn framework_conn(&self, id: &FrameworkId) -> Option<super::ConnId> {
        self.frameworks.get(id).and_then(|f| f.conn)
    }

    /// Whether the allocator would offer to this framework (tests).
    pub fn is_suppressed(&self, id: &FrameworkId) -> bool {
        self.allocator.is_suppressed(id)
    }

    /// How many frameworks and agents the master keeps in memory (tests).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.frameworks.len(),
            self.completed_frameworks.len(),
            self.agents.len(),
        )
    }
}
