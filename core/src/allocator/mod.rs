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
//! Shares count everything allocated — offered and in use.
//!
//! # Layout
//! - this file: the public API and the allocation cycle.
//! - `order`: sort keys. Roles and frameworks sit in sorted trees keyed by
//!   share, updated in O(log n) after each decision, so a cycle over N agents
//!   costs O(N log F) rather than re-sorting F frameworks per agent.
//! - `filters`: decline filters per agent, with a cached bitset of the
//!   frameworks they cover, so a framework filtered on an agent is skipped
//!   with one bit test and an agent every framework has filtered is skipped
//!   without visiting the frameworks one by one.
//! - `views`: read-only views and the consistency checks (every cached share
//!   and sort key equals a recomputation from the holdings); in tests, a
//!   from-scratch DRF pick that every optimised pick is compared with.
//! - `tests`, `props`: unit and property tests.

mod filters;
mod order;
mod views;

use crate::ids::{AgentId, FrameworkId};
use crate::resources::{Resources, Scalars};
use filters::{AgentFilters, Bits};
use order::Key;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

struct AgentSlot {
    id: AgentId,
    total: Resources,
    /// Sum of everything allocated on it (offered + used).
    allocated: Resources,
    /// Per framework slot: what it holds here.
    by_framework: Vec<(usize, Resources)>,
    active: bool,
    /// Decline filters of frameworks on this agent.
    filters: AgentFilters,
    /// The role its resources are statically reserved for (Mesos
    /// `--default_role`): only frameworks of that role are offered them.
    /// `None`: unreserved (`*`), offered to every role.
    reserved: Option<Box<str>>,
}

impl AgentSlot {
    fn free(&self) -> Resources {
        self.total.saturating_sub(&self.allocated)
    }
}

struct FrameworkSlot {
    id: FrameworkId,
    role: usize,
    allocated: Scalars,
    active: bool,
    suppressed: bool,
    /// Whether it may have filters on some agent (cleared by REVIVE).
    has_filters: bool,
    /// Current key in its role's order, when it is eligible for offers.
    key: Option<Key>,
}

struct RoleSlot {
    /// Empty while the slot is free.
    name: String,
    weight: f64,
    allocated: Scalars,
    order: BTreeSet<Key>,
    key: Option<Key>,
    /// Frameworks in the role (eligible or not). A role with none and the
    /// default weight is forgotten, so roles do not pile up.
    members: usize,
}

/// Filters asked for longer than this are capped (an `Instant` cannot hold
/// an unbounded time).
const LONGEST_FILTER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Up to this many unfiltered candidates, an agent's pick takes the least of
/// them directly; with more, it walks the DRF order first (one bit test per
/// framework), for at most half as many steps as there are candidates.
const SCAN_BUDGET: usize = 32;

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
    free_role_slots: Vec<usize>,
    /// Roles with an eligible framework, by weighted share; the value is the
    /// role's framework when it has exactly one (the walk then need not
    /// visit the role).
    role_order: BTreeMap<Key, Option<usize>>,
    /// Framework slots that have a key (active and not suppressed).
    eligible: Bits,
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
            free_role_slots: Vec::new(),
            roles: Vec::new(),
            role_index: HashMap::new(),
            role_order: BTreeMap::new(),
            eligible: Bits::default(),
            total: Scalars::default(),
            min,
            cursor: 0,
        }
    }

    // ------------------------------------------------------------ agents

    /// Adds an unreserved agent. `used` lists resources already held by
    /// frameworks there (tasks that survived a master restart); those
    /// frameworks must be added first.
    pub fn add_agent(
        &mut self,
        id: AgentId,
        total: Resources,
        used: &[(FrameworkId, Resources)],
    ) -> Result<(), AllocatorError> {
        self.add_agent_reserved(id, None, total, used)
    }

    /// Adds an agent whose resources are all reserved for `role` (`None` or
    /// `*`: unreserved). Reserved resources are offered only to frameworks
    /// of that role (Mesos static reservation); `used` may name frameworks of
    /// any role (tasks an agent reports after its role changed keep running).
    pub fn add_agent_reserved(
        &mut self,
        id: AgentId,
        role: Option<&str>,
        total: Resources,
        used: &[(FrameworkId, Resources)],
    ) -> Result<(), AllocatorError> {
        if self.agent_index.contains_key(&id) {
            return Err(AllocatorError::DuplicateAgent(id));
        }
        // All or nothing: check that every framework is known and that the
        // used resources fit (no port twice) before changing anything.
        let mut sum = Resources::default();
        for (fw, r) in used {
            self.fw_idx(fw)?;
            if sum.ports.intersects(&r.ports) || !total.contains(&sum.add(r)) {
                return Err(AllocatorError::OverAllocate {
                    agent: id,
                    resources: r.clone(),
                });
            }
            sum.add_assign(r);
        }
        let scalars = total.scalars();
        let slot = AgentSlot {
            id: id.clone(),
            total,
            allocated: Resources::default(),
            by_framework: Vec::new(),
            active: true,
            filters: AgentFilters::default(),
            reserved: role
                .filter(|r| *r != crate::info::DEFAULT_ROLE && !r.is_empty())
                .map(Box::from),
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
        // Its filters leave with the slot.
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
        self.roles[role].members += 1;
        let slot = FrameworkSlot {
            id: id.clone(),
            role,
            allocated: Scalars::default(),
            active,
            suppressed: false,
            has_filters: false,
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
        let has_filters = self.frameworks[idx].as_ref().is_some_and(|f| f.has_filters);
        // Return its allocations on every agent; drop its filters (the slot
        // will be reused by another framework).
        for a in self.agents.iter_mut().flatten() {
            if let Some(pos) = a.by_framework.iter().position(|(f, _)| *f == idx) {
                let (_, r) = a.by_framework.swap_remove(pos);
                a.allocated = a.allocated.saturating_sub(&r);
            }
            if has_filters {
                a.filters.remove_framework(idx);
            }
        }
        let allocated = self.frameworks[idx]
            .as_ref()
            .map(|f| f.allocated)
            .unwrap_or_default();
        self.charge(idx, allocated, false);
        self.unkey_framework(idx);
        self.framework_index.remove(id);
        let role = self.frameworks[idx].take().map(|f| f.role);
        self.free_framework_slots.push(idx);
        if let Some(r) = role {
            self.release_role(r);
        }
        Ok(())
    }

    /// A framework left role `r`: forget the role if nothing needs it.
    fn release_role(&mut self, r: usize) {
        let role = &mut self.roles[r];
        role.members = role.members.saturating_sub(1);
        if role.members == 0 && role.weight == 1.0 && role.key.is_none() && role.order.is_empty() {
            self.role_index.remove(&role.name);
            role.name.clear();
            role.allocated = Scalars::default();
            self.free_role_slots.push(r);
        }
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
        let mut had_filters = false;
        if let Some(f) = self.frameworks[idx].as_mut() {
            f.suppressed = false;
            had_filters = std::mem::take(&mut f.has_filters);
        }
        if had_filters {
            for a in self.agents.iter_mut().flatten() {
                a.filters.remove_framework(idx);
            }
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
    /// a subset of them on that agent until the filter expires (Mesos'
    /// refused-resources filter). The filter is added to those the framework
    /// already has there: a shorter or smaller one never weakens them, and
    /// returning nothing (an ACCEPT that used every offered resource) filters
    /// nothing.
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
        if let Some((now, d)) = refuse_for
            && !d.is_zero()
            && !resources.is_empty()
        {
            let until = now
                .checked_add(d.min(LONGEST_FILTER))
                .unwrap_or(now + LONGEST_FILTER);
            let (total, allocated) = (&a.total, &a.allocated);
            a.filters
                .add(fi, resources, until, || total.saturating_sub(allocated));
            if let Some(f) = self.frameworks[fi].as_mut() {
                f.has_filters = true;
            }
        }
        self.charge(fi, resources.scalars(), false);
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
        match agents {
            Some(ids) => {
                for id in ids {
                    if let Some(&ai) = self.agent_index.get(id) {
                        self.allocate_agent(ai, now, &mut out);
                    }
                }
            }
            None => {
                let n = self.agents.len();
                if n == 0 {
                    return out;
                }
                self.cursor = (self.cursor + 7919) % n;
                out.reserve(n);
                for i in 0..n {
                    if self.role_order.is_empty() {
                        break;
                    }
                    self.allocate_agent((i + self.cursor) % n, now, &mut out);
                }
            }
        }
        out
    }

    /// Offers agent `ai`'s free resources to the first framework that may
    /// take them, if any.
    fn allocate_agent(&mut self, ai: usize, now: Instant, out: &mut Vec<Allocation>) {
        let (free, reserved) = match self.agents[ai].as_ref() {
            Some(a) if a.active => (a.free(), a.reserved.as_deref()),
            _ => return,
        };
        // Reserved for a role: that role's slot, or nobody when no framework
        // of the role is known.
        let reserved = match reserved {
            None => None,
            Some(name) => match self.role_index.get(name) {
                Some(&r) => Some(r),
                None => return,
            },
        };
        if !self.min.allows(&free) {
            return;
        }
        let picked = match reserved {
            None => self.pick(ai, &free, now),
            Some(r) => self.pick_in_role(ai, r, &free, now),
        };
        #[cfg(test)]
        assert_eq!(
            picked,
            self.pick_reference(ai, &free, now),
            "the optimised pick differs from the reference"
        );
        let Some(fi) = picked else {
            return;
        };
        let Some(a) = self.agents[ai].as_mut() else {
            return;
        };
        // allocated + (total - allocated) = total: no union to compute.
        a.allocated = a.total.clone();
        match a.by_framework.iter_mut().find(|(f, _)| *f == fi) {
            Some((_, held)) => held.add_assign(&free),
            None => a.by_framework.push((fi, free.clone())),
        }
        let agent = a.id.clone();
        self.charge(fi, free.scalars(), true);
        if let Some(f) = self.frameworks[fi].as_ref() {
            out.push(Allocation {
                framework: f.id.clone(),
                agent,
                resources: free,
            });
        }
    }

    /// The first framework in DRF order that may take `free` of agent `ai`:
    /// eligible (it has a key) and not covered by a live filter there.
    fn pick(&mut self, ai: usize, free: &Resources, now: Instant) -> Option<usize> {
        let a = self.agents[ai].as_mut()?;
        if a.filters.is_empty() {
            let (rk, _) = self.role_order.first_key_value()?;
            return self.roles[rk.1].order.first().map(|k| k.1);
        }
        let covered = a.filters.covered(free, now);
        let candidates = self.eligible.count_and_not(covered);
        if candidates == 0 {
            return None;
        }
        // Few candidates: the least of them, directly (below). Many: walk
        // the DRF order, one bit test per framework, for as long as that is
        // cheaper than looking at every candidate. Filters tend to gather at
        // the head of the order (the frameworks with the least share are
        // offered everything first, and decline what they do not need), so
        // the walk usually ends a few dozen steps in.
        if candidates > SCAN_BUDGET {
            let budget = candidates / 2;
            let mut steps = 0;
            for (rk, single) in &self.role_order {
                match *single {
                    Some(fi) => {
                        if !covered.get(fi) {
                            return Some(fi);
                        }
                        steps += 1;
                    }
                    None => {
                        for fk in &self.roles[rk.1].order {
                            if !covered.get(fk.1) {
                                return Some(fk.1);
                            }
                            steps += 1;
                            if steps >= budget {
                                break;
                            }
                        }
                    }
                }
                if steps >= budget {
                    break;
                }
            }
        }
        // The least (role key, framework key) among the unfiltered eligible
        // frameworks: the same answer as the walk, in O(F / 64 + candidates).
        let frameworks = &self.frameworks;
        let roles = &self.roles;
        self.eligible
            .iter_and_not(covered)
            .filter_map(|fi| {
                let f = frameworks[fi].as_ref()?;
                Some((roles[f.role].key?, f.key?, fi))
            })
            .min_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)))
            .map(|(_, _, fi)| fi)
    }

    /// The first framework of role `r`, in its DRF order, that may take
    /// `free` of agent `ai` (reserved for `r`): other roles are never asked.
    fn pick_in_role(
        &mut self,
        ai: usize,
        r: usize,
        free: &Resources,
        now: Instant,
    ) -> Option<usize> {
        let a = self.agents[ai].as_mut()?;
        let order = &self.roles[r].order;
        if a.filters.is_empty() {
            return order.first().map(|k| k.1);
        }
        let covered = a.filters.covered(free, now);
        order.iter().map(|k| k.1).find(|fi| !covered.get(*fi))
    }

    fn role_slot(&mut self, role: &str) -> usize {
        if let Some(&r) = self.role_index.get(role) {
            return r;
        }
        let slot = RoleSlot {
            name: role.to_string(),
            weight: 1.0,
            allocated: Scalars::default(),
            order: BTreeSet::new(),
            key: None,
            members: 0,
        };
        let r = match self.free_role_slots.pop() {
            Some(r) => {
                self.roles[r] = slot;
                r
            }
            None => {
                self.roles.push(slot);
                self.roles.len() - 1
            }
        };
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
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
