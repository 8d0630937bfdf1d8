//! The hierarchical DRF allocator: synchronous, IO-free, owned by one task.
//!
//! Inputs are agents (total resources), frameworks (role, suppressed or not),
//! role weights, decline filters, and the clock value passed in by the caller.
//! The output of [`Allocator::allocate`] is a list of allocations: *one
//! agent's whole free resources for one framework* — the master turns each
//! into an offer.
//!
//! Order (Mesos semantics): roles are sorted by weighted dominant share
//! (dominant share ÷ weight), then frameworks within the chosen role by their
//! own dominant share; the first framework that is active, not suppressed and
//! has no live decline filter covering the candidate resources gets the agent.
//! Shares count everything allocated — offered and in use. Sort keys live in
//! `BTreeSet`s updated in O(log n) after each allocation, so a full cycle over
//! N agents costs O(N log F) rather than re-sorting F frameworks per agent.

use crate::ids::{AgentId, FrameworkId};
use crate::resources::{Resources, Scalars};
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Smallest free bundle worth offering (Mesos default `cpus:0.01|mem:32`).
#[derive(Clone, Debug)]
pub struct MinAllocatable {
    pub cpus_milli: u64,
    pub mem_mib: u64,
}

impl Default for MinAllocatable {
    fn default() -> Self {
        MinAllocatable {
            cpus_milli: 10,
            mem_mib: 32,
        }
    }
}

impl MinAllocatable {
    fn allows(&self, r: &Resources) -> bool {
        r.cpus_milli >= self.cpus_milli || r.mem_mib >= self.mem_mib
    }
}

/// One decision: offer `resources` of `agent` to `framework`.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub framework: FrameworkId,
    pub agent: AgentId,
    pub resources: Resources,
}

/// Errors from allocator calls (callers pass ids the allocator must know).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AllocatorError {
    #[error("agent {0} is not known to the allocator")]
    UnknownAgent(AgentId),
    #[error("framework {0} is not known to the allocator")]
    UnknownFramework(FrameworkId),
    #[error("agent {0} is already known to the allocator")]
    DuplicateAgent(AgentId),
    #[error("framework {0} is already known to the allocator")]
    DuplicateFramework(FrameworkId),
    #[error("recovering {resources} on agent {agent} for {framework}: more than it holds there")]
    OverRecover {
        framework: FrameworkId,
        agent: AgentId,
        resources: Resources,
    },
    #[error("allocating {resources} on agent {agent}: more than is free there")]
    OverAllocate {
        agent: AgentId,
        resources: Resources,
    },
    #[error("role weight must be a finite number > 0, got {0}")]
    BadWeight(f64),
}

/// Sort key: weighted share, then a stable tie-break.
#[derive(Clone, Copy, Debug)]
struct Key(f64, usize);

impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Key {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

struct AgentSlot {
    id: AgentId,
    total: Resources,
    /// Sum of everything allocated on it (offered + used).
    allocated: Resources,
    /// Per framework slot: what it holds here.
    by_framework: Vec<(usize, Resources)>,
    active: bool,
}

impl AgentSlot {
    fn free(&self) -> Resources {
        self.total.saturating_sub(&self.allocated)
    }
}

struct Filter {
    refused: Resources,
    until: Instant,
}

struct FrameworkSlot {
    id: FrameworkId,
    role: usize,
    allocated: Scalars,
    active: bool,
    suppressed: bool,
    filters: HashMap<usize, Filter>,
    /// Current key in its role's order, when it is eligible for offers.
    key: Option<Key>,
}

struct RoleSlot {
    name: String,
    weight: f64,
    allocated: Scalars,
    order: BTreeSet<Key>,
    key: Option<Key>,
}

/// The allocator. See the module docs.
pub struct Allocator {
    agents: Vec<Option<AgentSlot>>,
    agent_index: HashMap<AgentId, usize>,
    free_agent_slots: Vec<usize>,
    frameworks: Vec<Option<FrameworkSlot>>,
    framework_index: HashMap<FrameworkId, usize>,
    free_framework_slots: Vec<usize>,
    roles: Vec<RoleSlot>,
    role_index: HashMap<String, usize>,
    role_order: BTreeSet<Key>,
    /// Total of active agents: the denominator of shares.
    total: Scalars,
    min: MinAllocatable,
    /// Rotates the agent visiting order between cycles.
    cursor: usize,
}

impl Default for Allocator {
    fn default() -> Self {
        Self::new(MinAllocatable::default())
    }
}

impl Allocator {
    pub fn new(min: MinAllocatable) -> Self {
        Allocator {
            agents: Vec::new(),
            agent_index: HashMap::new(),
            free_agent_slots: Vec::new(),
            frameworks: Vec::new(),
            framework_index: HashMap::new(),
            free_framework_slots: Vec::new(),
            roles: Vec::new(),
            role_index: HashMap::new(),
            role_order: BTreeSet::new(),
            total: Scalars::default(),
            min,
            cursor: 0,
        }
    }

    // ------------------------------------------------------------ agents

    /// Adds an agent. `used` lists resources already held by frameworks
    /// there (tasks that survived a master restart); those frameworks must be
    /// added first.
    pub fn add_agent(
        &mut self,
        id: AgentId,
        total: Resources,
        used: &[(FrameworkId, Resources)],
    ) -> Result<(), AllocatorError> {
        if self.agent_index.contains_key(&id) {
            return Err(AllocatorError::DuplicateAgent(id));
        }
        let slot = AgentSlot {
            id: id.clone(),
            total,
            allocated: Resources::default(),
            by_framework: Vec::new(),
            active: true,
        };
        let idx = match self.free_agent_slots.pop() {
            Some(i) => {
                self.agents[i] = Some(slot);
                i
            }
            None => {
                self.agents.push(Some(slot));
                self.agents.len() - 1
            }
        };
        self.agent_index.insert(id.clone(), idx);
        let scalars = self.agents[idx]
            .as_ref()
            .map(|a| a.total.scalars())
            .unwrap_or_default();
        self.total = self.total.plus(scalars);
        self.rekey_all();
        for (fw, r) in used {
            self.allocate_on(fw, &id, r)?;
        }
        Ok(())
    }

    /// Removes an agent and everything allocated on it.
    pub fn remove_agent(&mut self, id: &AgentId) -> Result<(), AllocatorError> {
        let idx = self
            .agent_index
            .remove(id)
            .ok_or_else(|| AllocatorError::UnknownAgent(id.clone()))?;
        let Some(slot) = self.agents[idx].take() else {
            return Err(AllocatorError::UnknownAgent(id.clone()));
        };
        self.free_agent_slots.push(idx);
        if slot.active {
            self.total = self.total.minus(slot.total.scalars());
        }
        for (fw, r) in &slot.by_framework {
            self.charge(*fw, r.scalars(), false);
        }
        for f in self.frameworks.iter_mut().flatten() {
            f.filters.remove(&idx);
        }
        self.rekey_all();
        Ok(())
    }

    /// Stops (or resumes) offering an agent's resources; a deactivated agent
    /// also leaves the share denominator.
    pub fn set_agent_active(&mut self, id: &AgentId, active: bool) -> Result<(), AllocatorError> {
        let idx = self.agent_idx(id)?;
        let Some(a) = self.agents[idx].as_mut() else {
            return Err(AllocatorError::UnknownAgent(id.clone()));
        };
        if a.active == active {
            return Ok(());
        }
        a.active = active;
        let s = a.total.scalars();
        self.total = if active {
            self.total.plus(s)
        } else {
            self.total.minus(s)
        };
        self.rekey_all();
        Ok(())
    }

    // -------------------------------------------------------- frameworks

    pub fn add_framework(
        &mut self,
        id: FrameworkId,
        role: &str,
        active: bool,
    ) -> Result<(), AllocatorError> {
        if self.framework_index.contains_key(&id) {
            return Err(AllocatorError::DuplicateFramework(id));
        }
        let role = self.role_slot(role);
        let slot = FrameworkSlot {
            id: id.clone(),
            role,
            allocated: Scalars::default(),
            active,
            suppressed: false,
            filters: HashMap::new(),
            key: None,
        };
        let idx = match self.free_framework_slots.pop() {
            Some(i) => {
                self.frameworks[i] = Some(slot);
                i
            }
            None => {
                self.frameworks.push(Some(slot));
                self.frameworks.len() - 1
            }
        };
        self.framework_index.insert(id, idx);
        self.rekey_framework(idx);
        Ok(())
    }

    /// Removes a framework; whatever it still held is returned to the pool.
    pub fn remove_framework(&mut self, id: &FrameworkId) -> Result<(), AllocatorError> {
        let idx = self.fw_idx(id)?;
        // Return its allocations on every agent.
        for a in self.agents.iter_mut().flatten() {
            if let Some(pos) = a.by_framework.iter().position(|(f, _)| *f == idx) {
                let (_, r) = a.by_framework.swap_remove(pos);
                a.allocated = a.allocated.saturating_sub(&r);
            }
        }
        let allocated = self.frameworks[idx]
            .as_ref()
            .map(|f| f.allocated)
            .unwrap_or_default();
        self.charge(idx, allocated, false);
        self.unkey_framework(idx);
        self.framework_index.remove(id);
        self.frameworks[idx] = None;
        self.free_framework_slots.push(idx);
        Ok(())
    }

    /// A disconnected framework keeps its allocation but gets no offers.
    pub fn set_framework_active(
        &mut self,
        id: &FrameworkId,
        active: bool,
    ) -> Result<(), AllocatorError> {
        let idx = self.fw_idx(id)?;
        if let Some(f) = self.frameworks[idx].as_mut() {
            f.active = active;
        }
        self.rekey_framework(idx);
        Ok(())
    }

    /// SUPPRESS: no more offers until REVIVE.
    pub fn suppress(&mut self, id: &FrameworkId) -> Result<(), AllocatorError> {
        let idx = self.fw_idx(id)?;
        if let Some(f) = self.frameworks[idx].as_mut() {
            f.suppressed = true;
        }
        self.rekey_framework(idx);
        Ok(())
    }

    /// REVIVE: clears every decline filter and un-suppresses.
    pub fn revive(&mut self, id: &FrameworkId) -> Result<(), AllocatorError> {
        let idx = self.fw_idx(id)?;
        if let Some(f) = self.frameworks[idx].as_mut() {
            f.suppressed = false;
            f.filters.clear();
        }
        self.rekey_framework(idx);
        Ok(())
    }

    pub fn is_suppressed(&self, id: &FrameworkId) -> bool {
        self.fw_idx(id)
            .ok()
            .and_then(|i| self.frameworks[i].as_ref())
            .is_some_and(|f| f.suppressed)
    }

    /// Sets a role's weight (default 1).
    pub fn set_weight(&mut self, role: &str, weight: f64) -> Result<(), AllocatorError> {
        if !weight.is_finite() || weight <= 0.0 {
            return Err(AllocatorError::BadWeight(weight));
        }
        let r = self.role_slot(role);
        self.roles[r].weight = weight;
        self.rekey_role(r);
        Ok(())
    }

    // --------------------------------------------------------- resources

    /// Returns resources (declined, unused part of an accept, finished task,
    /// rescinded offer). With `refuse_for`, the framework will not be offered
    /// a subset of them on that agent until the filter expires.
    pub fn recover(
        &mut self,
        framework: &FrameworkId,
        agent: &AgentId,
        resources: &Resources,
        refuse_for: Option<(Instant, Duration)>,
    ) -> Result<(), AllocatorError> {
        let fi = self.fw_idx(framework)?;
        let ai = self.agent_idx(agent)?;
        let Some(a) = self.agents[ai].as_mut() else {
            return Err(AllocatorError::UnknownAgent(agent.clone()));
        };
        let pos = a.by_framework.iter().position(|(f, _)| *f == fi);
        let over = || AllocatorError::OverRecover {
            framework: framework.clone(),
            agent: agent.clone(),
            resources: resources.clone(),
        };
        let Some(pos) = pos else {
            if resources.is_empty() {
                return Ok(());
            }
            return Err(over());
        };
        let held = &mut a.by_framework[pos].1;
        let rest = held.checked_sub(resources).ok_or_else(over)?;
        if rest.is_empty() {
            a.by_framework.swap_remove(pos);
        } else {
            *held = rest;
        }
        a.allocated = a.allocated.saturating_sub(resources);
        self.charge(fi, resources.scalars(), false);
        if let Some((now, d)) = refuse_for
            && !d.is_zero()
            && let Some(f) = self.frameworks[fi].as_mut()
        {
            f.filters.insert(
                ai,
                Filter {
                    refused: resources.clone(),
                    until: now + d,
                },
            );
        }
        Ok(())
    }

    /// Marks resources allocated outside an allocation cycle (tasks reported
    /// by an agent that re-registers).
    pub fn allocate_on(
        &mut self,
        framework: &FrameworkId,
        agent: &AgentId,
        resources: &Resources,
    ) -> Result<(), AllocatorError> {
        let fi = self.fw_idx(framework)?;
        let ai = self.agent_idx(agent)?;
        let Some(a) = self.agents[ai].as_mut() else {
            return Err(AllocatorError::UnknownAgent(agent.clone()));
        };
        if !a.free().contains(resources) {
            return Err(AllocatorError::OverAllocate {
                agent: agent.clone(),
                resources: resources.clone(),
            });
        }
        Self::hold(a, fi, resources);
        self.charge(fi, resources.scalars(), true);
        Ok(())
    }

    fn hold(a: &mut AgentSlot, fi: usize, r: &Resources) {
        a.allocated.add_assign(r);
        match a.by_framework.iter_mut().find(|(f, _)| *f == fi) {
            Some((_, held)) => held.add_assign(r),
            None => a.by_framework.push((fi, r.clone())),
        }
    }

    // -------------------------------------------------------- allocation

    /// Runs one allocation cycle over `agents` (all agents when `None`).
    pub fn allocate(&mut self, now: Instant, agents: Option<&[AgentId]>) -> Vec<Allocation> {
        let mut out = Vec::new();
        if self.role_order.is_empty() {
            return out;
        }
        let candidates: Vec<usize> = match agents {
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.agent_index.get(id).copied())
                .collect(),
            None => {
                let n = self.agents.len();
                if n == 0 {
                    return out;
                }
                self.cursor = (self.cursor + 7919) % n;
                (0..n).map(|i| (i + self.cursor) % n).collect()
            }
        };
        for ai in candidates {
            if self.role_order.is_empty() {
                break;
            }
            let free = match self.agents[ai].as_ref() {
                Some(a) if a.active => a.free(),
                _ => continue,
            };
            if !self.min.allows(&free) {
                continue;
            }
            let Some(fi) = self.pick(ai, &free, now) else {
                continue;
            };
            if let Some(a) = self.agents[ai].as_mut() {
                Self::hold(a, fi, &free);
            }
            self.charge(fi, free.scalars(), true);
            let (Some(f), Some(a)) = (self.frameworks[fi].as_ref(), self.agents[ai].as_ref())
            else {
                continue;
            };
            out.push(Allocation {
                framework: f.id.clone(),
                agent: a.id.clone(),
                resources: free,
            });
        }
        out
    }

    /// The first framework in DRF order that may take `free` of agent `ai`.
    fn pick(&mut self, ai: usize, free: &Resources, now: Instant) -> Option<usize> {
        for rk in &self.role_order {
            for fk in &self.roles[rk.1].order {
                let fi = fk.1;
                let Some(f) = self.frameworks[fi].as_mut() else {
                    continue;
                };
                if let Some(filter) = f.filters.get(&ai) {
                    if filter.until <= now {
                        f.filters.remove(&ai);
                    } else if filter.refused.contains(free) {
                        continue;
                    }
                }
                return Some(fi);
            }
        }
        None
    }

    // ------------------------------------------------------------ shares

    /// Adds (`grow`) or removes scalars from a framework and its role, and
    /// re-sorts both.
    fn charge(&mut self, fi: usize, s: Scalars, grow: bool) {
        let Some(f) = self.frameworks[fi].as_mut() else {
            return;
        };
        f.allocated = if grow {
            f.allocated.plus(s)
        } else {
            f.allocated.minus(s)
        };
        let r = f.role;
        let role = &mut self.roles[r];
        role.allocated = if grow {
            role.allocated.plus(s)
        } else {
            role.allocated.minus(s)
        };
        self.rekey_framework(fi);
        self.rekey_role(r);
    }

    fn unkey_framework(&mut self, fi: usize) {
        let Some(f) = self.frameworks[fi].as_mut() else {
            return;
        };
        if let Some(k) = f.key.take() {
            let r = f.role;
            self.roles[r].order.remove(&k);
            self.rekey_role(r);
        }
    }

    fn rekey_framework(&mut self, fi: usize) {
        self.unkey_framework(fi);
        let total = self.total;
        let Some(f) = self.frameworks[fi].as_mut() else {
            return;
        };
        if f.active && !f.suppressed {
            let k = Key(f.allocated.dominant_share(total), fi);
            f.key = Some(k);
            let r = f.role;
            self.roles[r].order.insert(k);
            self.rekey_role(r);
        }
    }

    fn rekey_role(&mut self, r: usize) {
        let total = self.total;
        let role = &mut self.roles[r];
        if let Some(k) = role.key.take() {
            self.role_order.remove(&k);
        }
        if !role.order.is_empty() {
            let k = Key(role.allocated.dominant_share(total) / role.weight, r);
            role.key = Some(k);
            self.role_order.insert(k);
        }
    }

    /// The cluster total changed: every share changes.
    fn rekey_all(&mut self) {
        for fi in 0..self.frameworks.len() {
            self.rekey_framework(fi);
        }
        for r in 0..self.roles.len() {
            self.rekey_role(r);
        }
    }

    fn role_slot(&mut self, role: &str) -> usize {
        if let Some(&r) = self.role_index.get(role) {
            return r;
        }
        self.roles.push(RoleSlot {
            name: role.to_string(),
            weight: 1.0,
            allocated: Scalars::default(),
            order: BTreeSet::new(),
            key: None,
        });
        let r = self.roles.len() - 1;
        self.role_index.insert(role.to_string(), r);
        r
    }

    fn agent_idx(&self, id: &AgentId) -> Result<usize, AllocatorError> {
        self.agent_index
            .get(id)
            .copied()
            .ok_or_else(|| AllocatorError::UnknownAgent(id.clone()))
    }

    fn fw_idx(&self, id: &FrameworkId) -> Result<usize, AllocatorError> {
        self.framework_index
            .get(id)
            .copied()
            .ok_or_else(|| AllocatorError::UnknownFramework(id.clone()))
    }

    // ------------------------------------------------------------- views

    /// Dominant share of a framework (unweighted), for tests and `/state`.
    pub fn framework_share(&self, id: &FrameworkId) -> Option<f64> {
        let f = self.frameworks[self.fw_idx(id).ok()?].as_ref()?;
        Some(f.allocated.dominant_share(self.total))
    }

    /// (total, allocated) of an agent.
    pub fn agent_resources(&self, id: &AgentId) -> Option<(Resources, Resources)> {
        let a = self.agents[self.agent_idx(id).ok()?].as_ref()?;
        Some((a.total.clone(), a.allocated.clone()))
    }

    /// What a framework holds on an agent.
    pub fn held(&self, framework: &FrameworkId, agent: &AgentId) -> Resources {
        let (Ok(fi), Ok(ai)) = (self.fw_idx(framework), self.agent_idx(agent)) else {
            return Resources::default();
        };
        self.agents[ai]
            .as_ref()
            .and_then(|a| a.by_framework.iter().find(|(f, _)| *f == fi))
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    }

    /// Role names with their weights.
    pub fn roles(&self) -> Vec<(String, f64)> {
        self.roles
            .iter()
            .map(|r| (r.name.clone(), r.weight))
            .collect()
    }

    /// Checks internal consistency; used by property tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut per_fw: HashMap<usize, Scalars> = HashMap::new();
        for a in self.agents.iter().flatten() {
            if !a.total.contains(&a.allocated) {
                return Err(format!(
                    "agent {}: allocated {} exceeds total {}",
                    a.id, a.allocated, a.total
                ));
            }
            let mut sum = Resources::default();
            for (i, (f, r)) in a.by_framework.iter().enumerate() {
                if sum.ports.intersects(&r.ports) {
                    return Err(format!("agent {}: port held by two frameworks", a.id));
                }
                if a.by_framework[..i].iter().any(|(g, _)| g == f) {
                    return Err(format!("agent {}: duplicate framework entry", a.id));
                }
                sum.add_assign(r);
                let e = per_fw.entry(*f).or_default();
                *e = e.plus(r.scalars());
            }
            if sum != a.allocated {
                return Err(format!(
                    "agent {}: allocated {} != sum of holdings {}",
                    a.id, a.allocated, sum
                ));
            }
        }
        for (i, f) in self.frameworks.iter().enumerate() {
            if let Some(f) = f
                && per_fw.get(&i).copied().unwrap_or_default() != f.allocated
            {
                return Err(format!("framework {}: share accounting drifted", f.id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpus: f64, mem: u64) -> Resources {
        Resources::new(cpus, mem, 0).unwrap()
    }

    fn cluster(agents: usize, cpus: f64, mem: u64) -> Allocator {
        let mut a = Allocator::default();
        for i in 0..agents {
            a.add_agent(AgentId::new(format!("a{i}")), res(cpus, mem), &[])
                .unwrap();
        }
        a
    }

    /// Frameworks that each take one `task` from every offer, decline the
    /// rest without a filter, and repeat until nothing fits any more.
    fn run_until_full(
        alloc: &mut Allocator,
        fws: &[FrameworkId],
        task: &Resources,
    ) -> HashMap<FrameworkId, u64> {
        let now = Instant::now();
        let mut launched: HashMap<FrameworkId, u64> = HashMap::new();
        for _ in 0..10_000 {
            let offers = alloc.allocate(now, None);
            if offers.is_empty() {
                break;
            }
            let mut progress = false;
            for o in offers {
                assert!(fws.contains(&o.framework));
                if o.resources.contains(task) {
                    let rest = o.resources.checked_sub(task).unwrap();
                    alloc.recover(&o.framework, &o.agent, &rest, None).unwrap();
                    *launched.entry(o.framework.clone()).or_default() += 1;
                    progress = true;
                } else {
                    // Decline with a long filter: this agent is full for us.
                    alloc
                        .recover(
                            &o.framework,
                            &o.agent,
                            &o.resources,
                            Some((now, Duration::from_secs(3600))),
                        )
                        .unwrap();
                }
            }
            alloc.check_invariants().unwrap();
            if !progress && alloc.allocate(now, None).is_empty() {
                break;
            }
        }
        launched
    }

    #[test]
    fn equal_weights_converge_to_equal_dominant_shares() {
        let mut alloc = cluster(10, 8.0, 8192);
        // f1 is CPU-heavy, f2 memory-heavy: DRF equalises *dominant* shares.
        alloc.add_framework("f1".into(), "r1", true).unwrap();
        alloc.add_framework("f2".into(), "r2", true).unwrap();
        let fws: Vec<FrameworkId> = vec!["f1".into(), "f2".into()];
        let t1 = res(1.0, 256); // dominant: cpu 1/80
        let now = Instant::now();
        let mut offers_seen = 0;
        // Drive with per-framework task shapes.
        for _ in 0..5000 {
            let offers = alloc.allocate(now, None);
            if offers.is_empty() {
                break;
            }
            for o in offers {
                offers_seen += 1;
                let task = if o.framework.as_str() == "f1" {
                    t1.clone()
                } else {
                    res(0.25, 1024)
                };
                if o.resources.contains(&task) {
                    let rest = o.resources.checked_sub(&task).unwrap();
                    alloc.recover(&o.framework, &o.agent, &rest, None).unwrap();
                } else {
                    alloc
                        .recover(
                            &o.framework,
                            &o.agent,
                            &o.resources,
                            Some((now, Duration::from_secs(3600))),
                        )
                        .unwrap();
                }
            }
        }
        assert!(offers_seen > 0);
        let s1 = alloc.framework_share(&fws[0]).unwrap();
        let s2 = alloc.framework_share(&fws[1]).unwrap();
        // One task's dominant share: f1 1/80 (cpu), f2 1024/81920 = 1/80 (mem).
        let one_task = 1.0 / 80.0;
        assert!(
            (s1 - s2).abs() <= one_task + 1e-9,
            "shares {s1} vs {s2} differ by more than one task ({one_task})"
        );
        assert!(s1 > 0.3, "cluster should be mostly used, got {s1}");
    }

    #[test]
    fn weight_two_gets_twice_the_share() {
        let mut alloc = cluster(20, 4.0, 4096);
        alloc.add_framework("heavy".into(), "gold", true).unwrap();
        alloc.add_framework("light".into(), "bronze", true).unwrap();
        alloc.set_weight("gold", 2.0).unwrap();
        let fws: Vec<FrameworkId> = vec!["heavy".into(), "light".into()];
        // Stop when the cluster is 60% used so capacity doesn't cap anyone.
        let task = res(0.5, 512);
        let now = Instant::now();
        let mut used = 0u64;
        let capacity = 20 * 8;
        while used < capacity * 6 / 10 {
            let offers = alloc.allocate(now, None);
            assert!(!offers.is_empty());
            // Only the first offer is used per cycle: a strict DRF sequence.
            let mut iter = offers.into_iter();
            let o = iter.next().unwrap();
            let rest = o.resources.checked_sub(&task).unwrap();
            alloc.recover(&o.framework, &o.agent, &rest, None).unwrap();
            used += 1;
            for o in iter {
                alloc
                    .recover(&o.framework, &o.agent, &o.resources, None)
                    .unwrap();
            }
        }
        let h = alloc.framework_share(&fws[0]).unwrap();
        let l = alloc.framework_share(&fws[1]).unwrap();
        let ratio = h / l;
        assert!(
            (ratio - 2.0).abs() < 0.15,
            "share ratio {ratio} (heavy {h}, light {l})"
        );
    }

    #[test]
    fn fills_cluster_and_respects_totals() {
        let mut alloc = cluster(5, 4.0, 4096);
        alloc.add_framework("a".into(), "*", true).unwrap();
        alloc.add_framework("b".into(), "*", true).unwrap();
        let launched = run_until_full(&mut alloc, &["a".into(), "b".into()], &res(1.0, 100));
        let total: u64 = launched.values().sum();
        assert_eq!(total, 20);
        assert_eq!(launched.get(&FrameworkId::from("a")), Some(&10));
    }

    #[test]
    fn decline_filter_blocks_subset_until_expiry() {
        let mut alloc = cluster(1, 4.0, 4096);
        alloc.add_framework("f".into(), "*", true).unwrap();
        let t0 = Instant::now();
        let o = alloc.allocate(t0, None).pop().unwrap();
        alloc
            .recover(
                &o.framework,
                &o.agent,
                &o.resources,
                Some((t0, Duration::from_secs(5))),
            )
            .unwrap();
        assert!(alloc.allocate(t0 + Duration::from_secs(4), None).is_empty());
        assert_eq!(alloc.allocate(t0 + Duration::from_secs(5), None).len(), 1);
    }

    #[test]
    fn filtered_framework_lets_the_next_one_have_the_agent() {
        let mut alloc = cluster(1, 4.0, 4096);
        alloc.add_framework("f".into(), "*", true).unwrap();
        alloc.add_framework("g".into(), "*", true).unwrap();
        let t0 = Instant::now();
        let o = alloc.allocate(t0, None).pop().unwrap();
        let first = o.framework.clone();
        alloc
            .recover(
                &o.framework,
                &o.agent,
                &o.resources,
                Some((t0, Duration::from_secs(5))),
            )
            .unwrap();
        let o2 = alloc.allocate(t0, None).pop().unwrap();
        assert_ne!(o2.framework, first);
    }

    #[test]
    fn suppress_and_revive() {
        let mut alloc = cluster(2, 4.0, 4096);
        alloc.add_framework("f".into(), "*", true).unwrap();
        alloc.suppress(&"f".into()).unwrap();
        let now = Instant::now();
        assert!(alloc.allocate(now, None).is_empty());
        alloc.revive(&"f".into()).unwrap();
        assert_eq!(alloc.allocate(now, None).len(), 2);
    }

    #[test]
    fn revive_clears_filters() {
        let mut alloc = cluster(1, 4.0, 4096);
        alloc.add_framework("f".into(), "*", true).unwrap();
        let t0 = Instant::now();
        let o = alloc.allocate(t0, None).pop().unwrap();
        alloc
            .recover(
                &o.framework,
                &o.agent,
                &o.resources,
                Some((t0, Duration::from_secs(500))),
            )
            .unwrap();
        assert!(alloc.allocate(t0, None).is_empty());
        alloc.revive(&"f".into()).unwrap();
        assert_eq!(alloc.allocate(t0, None).len(), 1);
    }

    #[test]
    fn inactive_agents_and_frameworks_get_nothing() {
        let mut alloc = cluster(2, 4.0, 4096);
        alloc.add_framework("f".into(), "*", true).unwrap();
        alloc.set_agent_active(&"a0".into(), false).unwrap();
        let now = Instant::now();
        let offers = alloc.allocate(now, None);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].agent.as_str(), "a1");
        alloc.set_framework_active(&"f".into(), false).unwrap();
        alloc
            .recover(&"f".into(), &"a1".into(), &offers[0].resources, None)
            .unwrap();
        assert!(alloc.allocate(now, None).is_empty());
    }

    #[test]
    fn recover_more_than_held_is_refused() {
        let mut alloc = cluster(1, 4.0, 4096);
        alloc.add_framework("f".into(), "*", true).unwrap();
        let o = alloc.allocate(Instant::now(), None).pop().unwrap();
        let too_much = o.resources.add(&res(1.0, 0));
        assert!(matches!(
            alloc.recover(&o.framework, &o.agent, &too_much, None),
            Err(AllocatorError::OverRecover { .. })
        ));
        alloc.check_invariants().unwrap();
    }

    #[test]
    fn remove_framework_frees_its_resources() {
        let mut alloc = cluster(3, 4.0, 4096);
        alloc.add_framework("f".into(), "*", true).unwrap();
        assert_eq!(alloc.allocate(Instant::now(), None).len(), 3);
        alloc.remove_framework(&"f".into()).unwrap();
        alloc.add_framework("g".into(), "*", true).unwrap();
        assert_eq!(alloc.allocate(Instant::now(), None).len(), 3);
        alloc.check_invariants().unwrap();
    }

    #[test]
    fn used_resources_survive_add_agent() {
        let mut alloc = Allocator::default();
        alloc.add_framework("f".into(), "*", true).unwrap();
        alloc
            .add_agent("a".into(), res(4.0, 4096), &[("f".into(), res(3.0, 1000))])
            .unwrap();
        let o = alloc.allocate(Instant::now(), None).pop().unwrap();
        assert_eq!(o.resources, res(1.0, 3096));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            AddAgent(u8, u16),
            RemoveAgent(u8),
            AddFramework(u8),
            RemoveFramework(u8),
            Allocate,
            /// Return part (numerator/4) of what a framework holds on an agent, maybe with a filter.
            Recover(u8, u8, u8, bool),
            Suppress(u8),
            Revive(u8),
            Deactivate(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (1u8..16, 64u16..4096).prop_map(|(c, m)| Op::AddAgent(c, m)),
                any::<u8>().prop_map(Op::RemoveAgent),
                any::<u8>().prop_map(Op::AddFramework),
                any::<u8>().prop_map(Op::RemoveFramework),
                Just(Op::Allocate),
                Just(Op::Allocate),
                (any::<u8>(), any::<u8>(), 0u8..5, any::<bool>())
                    .prop_map(|(f, a, n, fl)| Op::Recover(f, a, n, fl)),
                any::<u8>().prop_map(Op::Suppress),
                any::<u8>().prop_map(Op::Revive),
                any::<u8>().prop_map(Op::Deactivate),
            ]
        }

        proptest! {
            /// Whatever the sequence: accounting stays exact, nothing is
            /// allocated beyond an agent's total, no port goes to two
            /// frameworks, and every allocation is of free resources.
            #[test]
            fn accounting_holds_for_any_sequence(ops in prop::collection::vec(op(), 1..120)) {
                let mut a = Allocator::default();
                let mut agents: Vec<AgentId> = vec![];
                let mut fws: Vec<FrameworkId> = vec![];
                let now = Instant::now();
                let mut n = 0;
                for o in ops {
                    n += 1;
                    match o {
                        Op::AddAgent(c, m) => {
                            let id = AgentId::new(format!("a{n}"));
                            let r = Resources::new(f64::from(c), u64::from(m), 0).unwrap()
                                .with_ports(crate::resources::Ranges::range(1000, 1000 + u32::from(c)).unwrap());
                            a.add_agent(id.clone(), r, &[]).unwrap();
                            agents.push(id);
                        }
                        Op::RemoveAgent(i) if !agents.is_empty() => {
                            let id = agents.remove(i as usize % agents.len());
                            a.remove_agent(&id).unwrap();
                        }
                        Op::AddFramework(r) => {
                            let id = FrameworkId::new(format!("f{n}"));
                            a.add_framework(id.clone(), &format!("r{}", r % 3), true).unwrap();
                            fws.push(id);
                        }
                        Op::RemoveFramework(i) if !fws.is_empty() => {
                            let id = fws.remove(i as usize % fws.len());
                            a.remove_framework(&id).unwrap();
                        }
                        Op::Allocate => {
                            let before: Vec<(AgentId, Resources)> = agents.iter().map(|id| {
                                let (t, al) = a.agent_resources(id).unwrap();
                                (id.clone(), t.saturating_sub(&al))
                            }).collect();
                            let mut seen = std::collections::HashSet::new();
                            for al in a.allocate(now, None) {
                                prop_assert!(seen.insert(al.agent.clone()), "agent offered twice in a cycle");
                                let free = &before.iter().find(|(id, _)| *id == al.agent).unwrap().1;
                                prop_assert!(free.contains(&al.resources), "allocated {} of free {}", al.resources, free);
                            }
                        }
                        Op::Recover(f, ag, part, filter) if !fws.is_empty() && !agents.is_empty() => {
                            let fid = &fws[f as usize % fws.len()];
                            let aid = &agents[ag as usize % agents.len()];
                            let held = a.held(fid, aid);
                            let give = Resources {
                                cpus_milli: held.cpus_milli * u64::from(part) / 4,
                                mem_mib: held.mem_mib * u64::from(part) / 4,
                                disk_mib: 0,
                                ports: held.ports.take(u64::from(part)),
                            };
                            let refuse = filter.then_some((now, Duration::from_secs(5)));
                            a.recover(fid, aid, &give, refuse).unwrap();
                        }
                        Op::Suppress(f) if !fws.is_empty() => a.suppress(&fws[f as usize % fws.len()]).unwrap(),
                        Op::Revive(f) if !fws.is_empty() => a.revive(&fws[f as usize % fws.len()]).unwrap(),
                        Op::Deactivate(i) if !agents.is_empty() => {
                            let id = &agents[i as usize % agents.len()];
                            a.set_agent_active(id, i % 2 == 0).unwrap();
                        }
                        _ => {}
                    }
                    a.check_invariants().map_err(TestCaseError::fail)?;
                }
            }
        }
    }
}
