//! Offers: allocation cycles, OFFERS, ACCEPT (LAUNCH), DECLINE and rescinds.
//! While an offer is outstanding its resources count as allocated to its
//! framework; every path that ends an offer returns exactly what it holds.

use super::{CallError, Map, Master, Offer, Output, Set, Task, reason, status};
use agora_core::allocator::Allocation;
use agora_core::info::{DEFAULT_ROLE, Filters, OfferInfo, TaskInfo, TaskSource, TaskStatus};
use agora_core::lifecycle::{OfferEvent, OfferState};
use agora_core::protocol::{Accept, Decline, Event, MasterMessage};
use agora_core::{AgentId, FrameworkId, OfferId, Resources, TaskId, TaskState};
use std::time::{Duration, Instant};

impl Master {
    fn refuse_for(&self, f: &Filters) -> Duration {
        f.refuse.unwrap_or(self.cfg.default_refuse)
    }

    /// DECLINE: the offers' resources return with a filter.
    pub fn decline(&mut self, req: Decline, now: Instant) -> Result<(), CallError> {
        let fid = req.framework_id;
        self.framework_for_call(&fid)?;
        let refuse = self.refuse_for(&req.filters);
        let mut unknown = Vec::new();
        for oid in req.offer_ids {
            match self.take_offer(&oid, &fid, OfferEvent::Decline) {
                Ok(o) => {
                    self.counters.offers_declined += 1;
                    self.recover_pool(&fid, &o.agent, &o.resources, Some((now, refuse)));
                }
                Err(e) => unknown.push(e),
            }
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            self.counters.invalid_calls += 1;
            Err(CallError::InvalidOffers(unknown.join("; ")))
        }
    }

    /// Removes an outstanding offer for `fid`, or says why it cannot be used.
    fn take_offer(
        &mut self,
        oid: &OfferId,
        fid: &FrameworkId,
        ev: OfferEvent,
    ) -> Result<Offer, String> {
        match self.offers.get(oid) {
            None => {
                return Err(format!(
                    "offer {oid} is not outstanding (unknown, already used, or rescinded)"
                ));
            }
            Some(o) if &o.framework != fid => {
                return Err(format!("offer {oid} was made to another framework"));
            }
            Some(_) => {}
        }
        let Some(mut o) = self.offers.remove(oid) else {
            return Err(format!("offer {oid} is not outstanding"));
        };
        match o.state.on(ev) {
            Ok(s) => o.state = s,
            Err(e) => self.illegal("offer", oid.as_str(), &e),
        }
        if let Some(f) = self.frameworks.get_mut(fid) {
            f.offers.remove(oid);
        }
        if let Some(a) = self.agents.get_mut(&o.agent) {
            a.offers.remove(oid);
        }
        Ok(o)
    }

    /// ACCEPT with LAUNCH operations.
    ///
    /// Offers are validated first (outstanding, ours, one agent, no repeats);
    /// if any is bad nothing launches, every task gets TASK_ERROR and the
    /// good offers' resources go back. Otherwise each task is checked in turn
    /// (uniqueness, agent, resources left in the pooled offers); a bad task
    /// gets TASK_ERROR naming the problem and the others launch. Whatever is
    /// left unused returns to the pool with the framework's filter.
    pub fn accept(
        &mut self,
        req: Accept,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), CallError> {
        let fid = req.framework_id;
        self.framework_for_call(&fid)?;
        let _span = tracing::info_span!("accept", framework_id = %fid).entered();
        let refuse = self.refuse_for(&req.filters);
        let ts = self.wall(now);

        // --- offers
        let mut problems = Vec::new();
        let mut seen = Set::default();
        let mut agent: Option<AgentId> = None;
        for oid in &req.offer_ids {
            if !seen.insert(oid.clone()) {
                problems.push(format!("offer {oid} appears twice"));
                continue;
            }
            match self.offers.get(oid) {
                None => problems.push(format!(
                    "offer {oid} is not outstanding (unknown, already used, or rescinded)"
                )),
                Some(o) if o.framework != fid => {
                    problems.push(format!("offer {oid} was made to another framework"))
                }
                Some(o) => {
                    // Defence in depth: offers never carry resources reserved
                    // for another role, but an ACCEPT must not launch on them
                    // either if one ever did.
                    if let Some(problem) = self.reserved_elsewhere(&fid, &o.agent) {
                        problems.push(format!("offer {oid}: {problem}"));
                    }
                    match &agent {
                        Some(a) if a != &o.agent => problems.push(format!(
                            "offers span agents {a} and {}: one ACCEPT uses offers of one agent",
                            o.agent
                        )),
                        _ => agent = Some(o.agent.clone()),
                    }
                }
            }
        }
        if req.offer_ids.is_empty() {
            problems.push("ACCEPT names no offer".into());
        }
        // Take every offer that is ours and outstanding: an offer serves one ACCEPT.
        let mut taken = Vec::new();
        for oid in seen {
            if let Ok(o) = self.take_offer(&oid, &fid, OfferEvent::Accept) {
                taken.push(o);
            }
        }
        if !problems.is_empty() {
            self.counters.invalid_calls += 1;
            let msg = problems.join("; ");
            for o in &taken {
                self.recover_pool(&fid, &o.agent, &o.resources, None);
            }
            for t in &req.tasks {
                self.counters.task_errors += 1;
                let st = TaskStatus {
                    agent_id: t.agent.clone(),
                    message: format!("task not launched: {msg}"),
                    reason: reason::INVALID_OFFERS.into(),
                    source: TaskSource::Master,
                    timestamp: ts,
                    ..TaskStatus::new(t.id.clone(), TaskState::Error)
                };
                self.send_update(&fid, st, out);
            }
            return Err(CallError::InvalidOffers(msg));
        }
        let Some(agent_id) = agent else {
            return Err(CallError::InvalidOffers("no usable offer".into()));
        };
        let mut remaining = Resources::default();
        for o in &taken {
            remaining.add_assign(&o.resources);
        }
        self.counters.offers_accepted += req.offer_ids.len() as u64;

        // --- tasks
        let mut launch = Vec::new();
        let mut ids_in_call = Set::default();
        for mut t in req.tasks {
            match self.check_task(&fid, &agent_id, &t, &remaining, &mut ids_in_call) {
                Ok(()) => {
                    remaining = remaining.checked_sub(&t.resources).unwrap_or_default();
                    t.agent = Some(agent_id.clone());
                    let st = TaskStatus {
                        agent_id: Some(agent_id.clone()),
                        source: TaskSource::Master,
                        timestamp: ts,
                        ..TaskStatus::new(t.id.clone(), TaskState::Staging)
                    };
                    if let Some(fw) = self.frameworks.get_mut(&fid) {
                        fw.tasks.insert(
                            t.id.clone(),
                            Box::new(Task {
                                info: t.clone(),
                                agent: agent_id.clone(),
                                state: TaskState::Staging,
                                status: st,
                                usage: None,
                                kill_requested: false,
                                adopted: false,
                            }),
                        );
                    }
                    if let Some(a) = self.agents.get_mut(&agent_id) {
                        a.tasks.insert((fid.clone(), t.id.clone()));
                    }
                    self.counters.tasks_launched += 1;
                    launch.push(t);
                }
                Err(msg) => {
                    self.counters.task_errors += 1;
                    tracing::debug!(task_id = %t.id, %msg, "task refused");
                    let st = status(
                        &t.id,
                        &agent_id,
                        TaskState::Error,
                        reason::TASK_INVALID,
                        msg,
                        ts,
                    );
                    self.send_update(&fid, st, out);
                }
            }
        }
        self.recover_pool(&fid, &agent_id, &remaining, Some((now, refuse)));
        if !launch.is_empty() {
            let conn = self.agents.get(&agent_id).and_then(|a| a.conn);
            let info = self.frameworks.get(&fid).map(|f| f.info.clone());
            if let (Some(conn), Some(framework)) = (conn, info) {
                out.push(Output::ToAgent(
                    conn,
                    MasterMessage::RunTasks {
                        framework,
                        tasks: launch,
                    },
                ));
            } else {
                // Offers are rescinded when an agent disconnects, so this
                // cannot happen; if it does, say so rather than lose tasks.
                for t in launch {
                    self.finish_task(
                        &fid,
                        &t.id,
                        (
                            TaskState::Dropped,
                            reason::AGENT_REMOVED,
                            "agent disconnected before the launch reached it",
                        ),
                        now,
                        out,
                    );
                }
            }
        }
        Ok(())
    }

    /// Why a task of an ACCEPT cannot launch (semantic checks; the wire
    /// format was checked at the edge).
    fn check_task(
        &self,
        fid: &FrameworkId,
        agent: &AgentId,
        t: &TaskInfo,
        remaining: &Resources,
        ids_in_call: &mut Set<TaskId>,
    ) -> Result<(), String> {
        if !ids_in_call.insert(t.id.clone()) {
            return Err(format!("task id {} is used twice in this ACCEPT", t.id));
        }
        let fw = self.frameworks.get(fid).ok_or("framework vanished")?;
        if fw.tasks.contains_key(&t.id) {
            return Err(format!(
                "task id {} is already in use by a live task of this framework",
                t.id
            ));
        }
        if fw.unacked_terminal.contains_key(&t.id) {
            return Err(format!(
                "task id {} is still in use: the terminal update of the task that had it is not acknowledged yet (acknowledge it, or use another id)",
                t.id
            ));
        }
        if let Some(a) = &t.agent
            && a != agent
        {
            return Err(format!(
                "task names agent {a} but the offers are for agent {agent}"
            ));
        }
        let r = &t.resources;
        if r.cpus_milli == 0 && r.mem_mib == 0 {
            return Err("task asks for no cpus and no memory".into());
        }
        if !remaining.contains(r) {
            return Err(format!(
                "task asks for {r} but only {remaining} remains of the accepted offers"
            ));
        }
        Ok(())
    }

    /// Returns resources held by `fid` on `agent` to the pool.
    pub(super) fn recover_pool(
        &mut self,
        fid: &FrameworkId,
        agent: &AgentId,
        r: &Resources,
        filter: Option<(Instant, Duration)>,
    ) {
        if let Err(e) = self.allocator.recover(fid, agent, r, filter) {
            tracing::error!(framework_id = %fid, agent_id = %agent, error = %e, "allocator accounting error");
        }
        self.dirty.insert(agent.clone());
    }

    pub(super) fn rescind_framework_offers(&mut self, fid: &FrameworkId, out: &mut Vec<Output>) {
        let ids: Vec<OfferId> = self
            .frameworks
            .get(fid)
            .map(|f| f.offers.iter().cloned().collect())
            .unwrap_or_default();
        for oid in ids {
            self.rescind(&oid, out);
        }
    }

    pub(super) fn rescind_agent_offers(&mut self, agent: &AgentId, out: &mut Vec<Output>) {
        let ids: Vec<OfferId> = self
            .agents
            .get(agent)
            .map(|a| a.offers.iter().cloned().collect())
            .unwrap_or_default();
        for oid in ids {
            self.rescind(&oid, out);
        }
    }

    pub(super) fn rescind(&mut self, oid: &OfferId, out: &mut Vec<Output>) {
        let Some(o) = self.offers.get(oid) else {
            return;
        };
        let fid = o.framework.clone();
        let Ok(o) = self.take_offer(oid, &fid, OfferEvent::Rescind) else {
            return;
        };
        self.counters.offers_rescinded += 1;
        if let Some(conn) = self.frameworks.get(&fid).and_then(|f| f.conn) {
            out.push(Output::ToFramework(conn, Event::Rescind(oid.clone())));
        }
        if self.agents.get(&o.agent).is_some_and(|a| a.in_allocator) {
            self.recover_pool(&fid, &o.agent, &o.resources, None);
        }
    }

    /// Runs allocation if anything is due: a full cycle on the interval (or
    /// after REVIVE/SUBSCRIBE), otherwise only agents whose resources changed.
    /// Why framework `fid` may not use agent `agent`'s resources, when they
    /// are reserved for a role other than the framework's.
    pub(super) fn reserved_elsewhere(&self, fid: &FrameworkId, agent: &AgentId) -> Option<String> {
        let reserved = &self.agents.get(agent)?.role;
        let role = &self.frameworks.get(fid)?.info.role;
        (reserved != DEFAULT_ROLE && reserved != role).then(|| {
            format!(
                "agent {agent}'s resources are reserved for role {reserved:?}, and framework {fid} is of role {role:?}"
            )
        })
    }

    pub fn allocate(&mut self, now: Instant, out: &mut Vec<Output>) {
        if !self.full_allocation_due && self.dirty.is_empty() {
            return;
        }
        let started = Instant::now();
        let allocations = if self.full_allocation_due {
            self.full_allocation_due = false;
            self.next_full_allocation = now + self.cfg.allocation_interval;
            self.dirty.clear();
            self.allocator.allocate(now, None)
        } else {
            let ids: Vec<AgentId> = std::mem::take(&mut self.dirty).into_iter().collect();
            self.allocator.allocate(now, Some(&ids))
        };
        self.counters.allocation_runs += 1;
        self.allocation_runs.push(started.elapsed().as_secs_f64());
        self.make_offers(allocations, now, out);
    }

    fn make_offers(&mut self, allocations: Vec<Allocation>, now: Instant, out: &mut Vec<Output>) {
        let mut per_fw: Map<FrameworkId, Vec<OfferInfo>> = Map::default();
        for a in allocations {
            let oid = OfferId::new(self.next_id("O"));
            let Some(agent) = self.agents.get_mut(&a.agent) else {
                continue;
            };
            agent.offers.insert(oid.clone());
            let info = OfferInfo {
                id: oid.clone(),
                framework: a.framework.clone(),
                agent: a.agent.clone(),
                hostname: agent.hostname.clone(),
                resources: a.resources.clone(),
                attributes: agent.attributes.clone(),
                address: agent.address,
                role: agent.role.clone(),
            };
            if let Some(f) = self.frameworks.get_mut(&a.framework) {
                f.offers.insert(oid.clone());
            }
            self.offers.insert(
                oid,
                Offer {
                    framework: a.framework.clone(),
                    agent: a.agent,
                    resources: a.resources,
                    created: now,
                    state: OfferState::Outstanding,
                },
            );
            per_fw.entry(a.framework).or_default().push(info);
        }
        for (fid, offers) in per_fw {
            tracing::debug!(framework_id = %fid, offers = offers.len(), "offers");
            self.counters.offers_sent += offers.len() as u64;
            let Some(conn) = self.frameworks.get(&fid).and_then(|f| f.conn) else {
                continue;
            };
            for chunk in offers.chunks(self.cfg.max_offers_per_event.max(1)) {
                out.push(Output::ToFramework(conn, Event::Offers(chunk.to_vec())));
            }
        }
    }
}
