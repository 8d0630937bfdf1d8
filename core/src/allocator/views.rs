//! Read-only views of the allocator and its consistency checks.

use super::Allocator;
use crate::ids::{AgentId, FrameworkId};
use crate::resources::{Resources, Scalars};
use std::collections::HashMap;

impl Allocator {
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

    /// The role an agent's resources are reserved for (`None`: unreserved,
    /// or an unknown agent).
    pub fn agent_role(&self, id: &AgentId) -> Option<&str> {
        self.agents[self.agent_idx(id).ok()?]
            .as_ref()?
            .reserved
            .as_deref()
    }

    /// Role names with their weights.
    pub fn roles(&self) -> Vec<(String, f64)> {
        self.roles
            .iter()
            .filter(|r| !r.name.is_empty())
            .map(|r| (r.name.clone(), r.weight))
            .collect()
    }

    /// Checks internal consistency; used by property tests. Besides the
    /// accounting (holdings sum up, nothing above an agent's total, no port
    /// held twice), every cached value must equal a recomputation: the share
    /// denominator, each framework's and role's allocation, each sort key,
    /// the sorted sets and the set of eligible frameworks.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut per_fw: HashMap<usize, Scalars> = HashMap::new();
        let mut total = Scalars::default();
        for a in self.agents.iter().flatten() {
            if a.active {
                total = total.plus(a.total.scalars());
            }
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
                if self.frameworks.get(*f).is_none_or(Option::is_none) {
                    return Err(format!("agent {}: holding of a removed framework", a.id));
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
            for fi in a.filters.frameworks() {
                if !self.frameworks.get(fi).is_some_and(|f| f.is_some()) {
                    return Err(format!("agent {}: filter of a removed framework", a.id));
                }
            }
        }
        if total != self.total {
            return Err(format!(
                "cluster total {:?} != sum of active agents {:?}",
                self.total, total
            ));
        }
        let mut per_role = vec![Scalars::default(); self.roles.len()];
        let mut members = vec![0usize; self.roles.len()];
        let mut all_members = vec![0usize; self.roles.len()];
        for (i, f) in self.frameworks.iter().enumerate() {
            let Some(f) = f else {
                if self.eligible.get(i) {
                    return Err(format!("empty framework slot {i} marked eligible"));
                }
                continue;
            };
            all_members[f.role] += 1;
            if per_fw.get(&i).copied().unwrap_or_default() != f.allocated {
                return Err(format!("framework {}: share accounting drifted", f.id));
            }
            per_role[f.role] = per_role[f.role].plus(f.allocated);
            let want = self.framework_key(i);
            if f.key != want {
                return Err(format!(
                    "framework {}: cached key {:?}, recomputed {:?}",
                    f.id, f.key, want
                ));
            }
            if self.eligible.get(i) != want.is_some() {
                return Err(format!("framework {}: eligibility bit is stale", f.id));
            }
            if let Some(k) = want {
                members[f.role] += 1;
                if !self.roles[f.role].order.contains(&k) {
                    return Err(format!("framework {}: missing from its role's order", f.id));
                }
            }
        }
        let mut keyed_roles = 0;
        for (r, role) in self.roles.iter().enumerate() {
            if role.members != all_members[r] {
                return Err(format!(
                    "role {:?}: counts {} members, has {}",
                    role.name, role.members, all_members[r]
                ));
            }
            let indexed = self.role_index.get(&role.name) == Some(&r);
            if role.name.is_empty() == indexed {
                return Err(format!(
                    "role slot {r} ({:?}): free and indexed disagree",
                    role.name
                ));
            }
            if per_role[r] != role.allocated {
                return Err(format!("role {}: allocation drifted", role.name));
            }
            if role.order.len() != members[r] {
                return Err(format!(
                    "role {}: {} keys in its order for {} eligible frameworks",
                    role.name,
                    role.order.len(),
                    members[r]
                ));
            }
            let want = self.role_key(r);
            if role.key != want {
                return Err(format!(
                    "role {}: cached key {:?}, recomputed {:?}",
                    role.name, role.key, want
                ));
            }
            if let Some(k) = want {
                keyed_roles += 1;
                let single = match role.order.len() {
                    1 => role.order.first().map(|k| k.1),
                    _ => None,
                };
                match self.role_order.get(&k) {
                    None => {
                        return Err(format!("role {}: missing from the role order", role.name));
                    }
                    Some(v) if *v != single => {
                        return Err(format!(
                            "role {}: cached single framework {v:?}, actual {single:?}",
                            role.name
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        if self.role_order.len() != keyed_roles {
            return Err("role order holds stale keys".into());
        }
        Ok(())
    }
}

#[cfg(test)]
impl Allocator {
    /// The framework DRF would give `free` of agent `ai`, computed from
    /// scratch: shares summed from the holdings, filters checked one by one,
    /// the order found by sorting. The optimised pick must agree.
    pub(super) fn pick_reference(
        &self,
        ai: usize,
        free: &Resources,
        now: std::time::Instant,
    ) -> Option<usize> {
        let mut total = Scalars::default();
        let mut per_fw: HashMap<usize, Scalars> = HashMap::new();
        for a in self.agents.iter().flatten() {
            if a.active {
                total = total.plus(a.total.scalars());
            }
            for (f, r) in &a.by_framework {
                let e = per_fw.entry(*f).or_default();
                *e = e.plus(r.scalars());
            }
        }
        let mut per_role = vec![Scalars::default(); self.roles.len()];
        for (i, f) in self.frameworks.iter().enumerate() {
            if let Some(f) = f {
                let s = per_fw.get(&i).copied().unwrap_or_default();
                per_role[f.role] = per_role[f.role].plus(s);
            }
        }
        let agent = self.agents[ai].as_ref()?;
        self.frameworks
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((i, f.as_ref()?)))
            .filter(|(_, f)| f.active && !f.suppressed)
            .filter(|(_, f)| {
                agent
                    .reserved
                    .as_deref()
                    .is_none_or(|r| self.roles[f.role].name == r)
            })
            .filter(|(i, _)| !agent.filters.covers_uncached(*i, free, now))
            .map(|(i, f)| {
                let role = &self.roles[f.role];
                let rk = super::Key(per_role[f.role].dominant_share(total) / role.weight, f.role);
                let s = per_fw.get(&i).copied().unwrap_or_default();
                (rk, super::Key(s.dominant_share(total), i), i)
            })
            .min_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)))
            .map(|(_, _, i)| i)
    }

    /// Every agent's cached filter coverage equals the stored filters'
    /// answer at `now` (checked on a copy, so the cache is not refreshed).
    pub(super) fn check_filter_cache(&self, now: std::time::Instant) -> Result<(), String> {
        for a in self.agents.iter().flatten() {
            let free = a.free();
            let mut copy = a.filters.clone();
            let covered = copy.covered(&free, now);
            for fi in 0..self.frameworks.len() {
                let want = a.filters.covers_uncached(fi, &free, now);
                if covered.get(fi) != want {
                    return Err(format!(
                        "agent {}: cached coverage of framework slot {fi} is {}, filters say {want}",
                        a.id,
                        covered.get(fi)
                    ));
                }
            }
        }
        Ok(())
    }
}
