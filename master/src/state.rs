//! The master's state machine: synchronous, no IO.
//!
//! Every input (a scheduler call, an agent message, a stream closing, a
//! timer tick) is a method taking `now`; side effects come back as
//! [`Output`] values that the actor ([`crate::actor`]) performs: sending on
//! a framework's or agent's stream, persisting to the registry. This keeps
//! every rule of the offer loop testable without sockets or clocks.

use crate::config::MasterConfig;
use crate::store::{RegisteredAgent, RegistryOp};
use agora_core::allocator::{Allocation, Allocator};
use agora_core::lifecycle::{
    AgentEvent, AgentState, FrameworkEvent, FrameworkState, OfferEvent, OfferState,
};
use agora_core::{AgentId, FrameworkId, OfferId, Resources, TaskId, TaskState};
use agora_proto::convert::{self, Invalid};
use agora_proto::pb;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Identifies one open stream (a framework's event stream or an agent link).
pub type ConnId = u64;

/// Reasons carried in master-generated status updates (Mesos names).
pub mod reason {
    pub const RECONCILIATION: &str = "REASON_RECONCILIATION";
    pub const AGENT_REMOVED: &str = "REASON_AGENT_REMOVED";
    pub const AGENT_UNREACHABLE: &str = "REASON_AGENT_UNREACHABLE";
    pub const AGENT_REREGISTERED: &str = "REASON_AGENT_REREGISTERED";
    pub const INVALID_OFFERS: &str = "REASON_INVALID_OFFERS";
    pub const TASK_INVALID: &str = "REASON_TASK_INVALID";
    pub const FRAMEWORK_REMOVED: &str = "REASON_FRAMEWORK_REMOVED";
    pub const TASK_UNKNOWN: &str = "REASON_TASK_UNKNOWN";
}

/// A side effect for the actor to perform.
#[derive(Debug)]
pub enum Output {
    ToFramework(ConnId, pb::Event),
    /// Ends a framework's event stream (after sending what was queued).
    CloseFramework(ConnId),
    ToAgent(ConnId, pb::MasterMessage),
    CloseAgent(ConnId),
    /// Persist; once durable, feed `then` back (if any) via [`Master::persisted`].
    Persist(RegistryOp, Option<Pending>),
}

/// Work waiting for the registry.
#[derive(Debug, Clone)]
pub enum Pending {
    AdmitAgent { conn: ConnId, agent: AgentId },
}

/// A refused scheduler call; the gRPC handler chooses the status code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("framework {0} is not subscribed: subscribe first (or again after a master failover)")]
    UnknownFramework(FrameworkId),
    #[error("framework {0} was torn down; subscribe again without a framework id")]
    FrameworkCompleted(FrameworkId),
    #[error("{0}")]
    InvalidOffers(String),
    #[error("{0}")]
    NotFound(String),
}

#[derive(Debug)]
struct Task {
    info: pb::TaskInfo,
    agent: AgentId,
    resources: Resources,
    state: TaskState,
    status: pb::TaskStatus,
    usage: Option<pb::TaskUsage>,
}

#[derive(Debug)]
struct Framework {
    id: FrameworkId,
    info: pb::FrameworkInfo,
    state: FrameworkState,
    conn: Option<ConnId>,
    disconnected_at: Option<Instant>,
    failover_timeout: Duration,
    tasks: HashMap<TaskId, Task>,
    completed: VecDeque<Task>,
    offers: HashSet<OfferId>,
    last_heartbeat: Instant,
}

#[derive(Debug)]
struct Agent {
    id: AgentId,
    hostname: String,
    resources: Resources,
    attributes: Vec<(String, String)>,
    endpoint: String,
    state: AgentState,
    conn: Option<ConnId>,
    last_seen: Instant,
    /// Tasks the master believes are on it.
    tasks: HashSet<(FrameworkId, TaskId)>,
    offers: HashSet<OfferId>,
    in_allocator: bool,
    registered_at: Option<SystemTime>,
}

#[derive(Debug)]
struct Offer {
    framework: FrameworkId,
    agent: AgentId,
    resources: Resources,
    created: Instant,
    state: OfferState,
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub offers_sent: u64,
    pub offers_declined: u64,
    pub offers_accepted: u64,
    pub offers_rescinded: u64,
    pub tasks_launched: u64,
    pub task_errors: u64,
    pub status_updates: u64,
    pub status_update_acks: u64,
    pub invalid_calls: u64,
    pub agents_registered: u64,
    pub agents_reregistered: u64,
    pub agents_unreachable: u64,
    pub frameworks_subscribed: u64,
    pub allocation_runs: u64,
}

/// The master's state. See the module docs.
pub struct Master {
    cfg: MasterConfig,
    allocator: Allocator,
    agents: HashMap<AgentId, Agent>,
    agent_conns: HashMap<ConnId, AgentId>,
    frameworks: HashMap<FrameworkId, Framework>,
    framework_conns: HashMap<ConnId, FrameworkId>,
    offers: HashMap<OfferId, Offer>,
    /// Agents whose free resources changed since the last allocation.
    dirty: BTreeSet<AgentId>,
    full_allocation_due: bool,
    next_full_allocation: Instant,
    seq: u64,
    started: SystemTime,
    pub counters: Counters,
    /// Durations of allocation runs (seconds), drained by the actor into the histogram.
    pub allocation_runs: Vec<f64>,
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn event(e: pb::event::Event) -> pb::Event {
    pb::Event { event: Some(e) }
}

fn to_agent(m: pb::master_message::Message) -> pb::MasterMessage {
    pb::MasterMessage { message: Some(m) }
}

fn status(
    task: &TaskId,
    agent: &AgentId,
    state: TaskState,
    reason: &str,
    message: impl Into<String>,
) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: task.0.clone(),
        state: pb::TaskState::from(state) as i32,
        agent_id: agent.0.clone(),
        message: message.into(),
        reason: reason.to_string(),
        source: pb::TaskSource::SourceMaster as i32,
        timestamp: now_epoch(),
        ..Default::default()
    }
}

impl Master {
    /// A master that remembers the agents of `registry` (they must re-register).
    pub fn new(cfg: MasterConfig, registry: Vec<RegisteredAgent>, now: Instant) -> Self {
        let mut m = Master {
            next_full_allocation: now,
            cfg,
            allocator: Allocator::default(),
            agents: HashMap::new(),
            agent_conns: HashMap::new(),
            frameworks: HashMap::new(),
            framework_conns: HashMap::new(),
            offers: HashMap::new(),
            dirty: BTreeSet::new(),
            full_allocation_due: true,
            seq: 0,
            started: SystemTime::now(),
            counters: Counters::default(),
            allocation_runs: Vec::new(),
        };
        for r in registry {
            let state = if r.unreachable_since.is_some() {
                AgentState::Unreachable
            } else {
                AgentState::Recovered
            };
            m.agents.insert(
                r.id.clone(),
                Agent {
                    id: r.id,
                    hostname: r.hostname,
                    resources: r.resources,
                    attributes: r.attributes,
                    endpoint: String::new(),
                    state,
                    conn: None,
                    last_seen: now,
                    tasks: HashSet::new(),
                    offers: HashSet::new(),
                    in_allocator: false,
                    registered_at: None,
                },
            );
        }
        m
    }

    pub fn config(&self) -> &MasterConfig {
        &self.cfg
    }

    fn next_id(&mut self, kind: &str) -> String {
        self.seq += 1;
        format!("{}-{}{}", self.cfg.master_id, kind, self.seq)
    }

    // ================================================================ frameworks

    /// SUBSCRIBE on a new stream `conn`.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        mut info: pb::FrameworkInfo,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<FrameworkId, CallError> {
        if info.role.is_empty() {
            info.role = "*".into();
        }
        if info.role != "*" {
            convert::id_field("framework.role", &info.role)?;
        }
        if info.name.len() > 1024 {
            return Err(Invalid::new("framework.name", "at most 1024 bytes").into());
        }
        let ft = info.failover_timeout_seconds;
        if !ft.is_finite() || !(0.0..=1e9).contains(&ft) {
            return Err(Invalid::new(
                "framework.failover_timeout_seconds",
                format!("{ft} is not a number of seconds between 0 and 1e9"),
            )
            .into());
        }
        let failover_timeout = Duration::from_secs_f64(ft);
        let id = if info.framework_id.is_empty() {
            FrameworkId::new(self.next_id("F"))
        } else {
            convert::framework_id("framework.framework_id", &info.framework_id)?
        };
        info.framework_id = id.0.clone();
        self.counters.frameworks_subscribed += 1;

        match self.frameworks.get_mut(&id) {
            Some(fw) if fw.state == FrameworkState::Completed => {
                return Err(CallError::FrameworkCompleted(id));
            }
            Some(fw) => {
                // Failover (or reconnection): the old stream, if any, is told and closed.
                if let Some(old) = fw.conn.take() {
                    self.framework_conns.remove(&old);
                    out.push(Output::ToFramework(
                        old,
                        event(pb::event::Event::Error(pb::Error {
                            message:
                                "framework failed over: another scheduler subscribed with this id"
                                    .into(),
                        })),
                    ));
                    out.push(Output::CloseFramework(old));
                }
                if info.role != fw.info.role {
                    return Err(Invalid::new(
                        "framework.role",
                        format!(
                            "cannot change role from {:?} to {:?} on resubscription",
                            fw.info.role, info.role
                        ),
                    )
                    .into());
                }
                fw.state = fw.state.on(FrameworkEvent::Subscribed).unwrap_or(fw.state);
                fw.conn = Some(conn);
                fw.disconnected_at = None;
                fw.failover_timeout = failover_timeout;
                fw.info = info;
                fw.last_heartbeat = now;
                let _ = self.allocator.set_framework_active(&id, true);
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
                        failover_timeout,
                        tasks: HashMap::new(),
                        completed: VecDeque::new(),
                        offers: HashSet::new(),
                        last_heartbeat: now,
                    },
                );
            }
        }
        self.rescind_framework_offers(&id, out);
        self.framework_conns.insert(conn, id.clone());
        out.push(Output::ToFramework(
            conn,
            event(pb::event::Event::Subscribed(pb::Subscribed {
                framework_id: id.0.clone(),
                heartbeat_interval_seconds: self.cfg.framework_heartbeat_interval.as_secs_f64(),
                master_id: self.cfg.master_id.clone(),
            })),
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
        fw.state = fw
            .state
            .on(FrameworkEvent::StreamClosed)
            .unwrap_or(fw.state);
        fw.disconnected_at = Some(now);
        let _ = self.allocator.set_framework_active(&id, false);
        tracing::info!(framework_id = %id, failover_timeout = ?fw.failover_timeout, "framework disconnected");
        self.rescind_framework_offers(&id, out);
    }

    fn framework_for_call(&self, id: &str) -> Result<FrameworkId, CallError> {
        let id = convert::framework_id("framework_id", id)?;
        match self.frameworks.get(&id) {
            None => Err(CallError::UnknownFramework(id)),
            Some(f) if f.state == FrameworkState::Completed => {
                Err(CallError::FrameworkCompleted(id))
            }
            Some(f) if f.conn.is_none() => Err(CallError::UnknownFramework(id)),
            Some(_) => Ok(id),
        }
    }

    /// TEARDOWN: kill every task of the framework and forget it.
    pub fn teardown(&mut self, framework_id: &str, out: &mut Vec<Output>) -> Result<(), CallError> {
        let id = self.framework_for_call(framework_id)?;
        self.remove_framework(&id, "framework requested teardown", out);
        Ok(())
    }

    fn remove_framework(&mut self, id: &FrameworkId, why: &str, out: &mut Vec<Output>) {
        self.rescind_framework_offers(id, out);
        let Some(fw) = self.frameworks.get_mut(id) else {
            return;
        };
        tracing::info!(framework_id = %id, why, "removing framework");
        fw.state = FrameworkState::Completed;
        if let Some(conn) = fw.conn.take() {
            self.framework_conns.remove(&conn);
            out.push(Output::CloseFramework(conn));
        }
        let mut agents_to_notify: HashSet<AgentId> = HashSet::new();
        let tasks: Vec<TaskId> = fw.tasks.keys().cloned().collect();
        for tid in tasks {
            if let Some(mut t) = fw.tasks.remove(&tid) {
                agents_to_notify.insert(t.agent.clone());
                if let Some(a) = self.agents.get_mut(&t.agent) {
                    a.tasks.remove(&(id.clone(), tid.clone()));
                }
                t.state = TaskState::Killed;
                t.status = status(
                    &tid,
                    &t.agent,
                    TaskState::Killed,
                    reason::FRAMEWORK_REMOVED,
                    why,
                );
                fw.completed.push_back(t);
            }
        }
        while fw.completed.len() > self.cfg.completed_tasks_per_framework {
            fw.completed.pop_front();
        }
        for a in agents_to_notify {
            if let Some(conn) = self.agents.get(&a).and_then(|a| a.conn) {
                out.push(Output::ToAgent(
                    conn,
                    to_agent(pb::master_message::Message::ShutdownFramework(
                        pb::ShutdownFramework {
                            framework_id: id.0.clone(),
                        },
                    )),
                ));
            }
            self.dirty.insert(a);
        }
        let _ = self.allocator.remove_framework(id);
    }

    /// REVIVE.
    pub fn revive(&mut self, framework_id: &str) -> Result<(), CallError> {
        let id = self.framework_for_call(framework_id)?;
        let _ = self.allocator.revive(&id);
        self.full_allocation_due = true;
        Ok(())
    }

    /// SUPPRESS.
    pub fn suppress(&mut self, framework_id: &str) -> Result<(), CallError> {
        let id = self.framework_for_call(framework_id)?;
        let _ = self.allocator.suppress(&id);
        Ok(())
    }

    fn refuse_duration(&self, f: Option<&pb::Filters>) -> Result<Duration, CallError> {
        match f {
            Some(f) if f.has_refuse_seconds => {
                let s = f.refuse_seconds;
                if s.is_nan() {
                    return Err(Invalid::new("filters.refuse_seconds", "is not a number").into());
                }
                if s < 0.0 {
                    Ok(self.cfg.default_refuse)
                } else {
                    // Capped at a year; Duration would panic on absurd values.
                    Ok(Duration::from_secs_f64(s.min(365.0 * 86400.0)))
                }
            }
            _ => Ok(self.cfg.default_refuse),
        }
    }

    /// DECLINE: the offers' resources return with a filter.
    pub fn decline(&mut self, req: pb::DeclineRequest, now: Instant) -> Result<(), CallError> {
        let fid = self.framework_for_call(&req.framework_id)?;
        let refuse = self.refuse_duration(req.filters.as_ref())?;
        let mut unknown = Vec::new();
        for oid in req.offer_ids {
            let oid = OfferId::new(oid);
            match self.take_offer(&oid, &fid, OfferEvent::Decline) {
                Ok(o) => {
                    self.counters.offers_declined += 1;
                    let _ =
                        self.allocator
                            .recover(&fid, &o.agent, &o.resources, Some((now, refuse)));
                    self.dirty.insert(o.agent);
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
        let Some(o) = self.offers.get(oid) else {
            return Err(format!(
                "offer {oid} is not outstanding (unknown, already used, or rescinded)"
            ));
        };
        if &o.framework != fid {
            return Err(format!("offer {oid} was made to another framework"));
        }
        let Some(mut o) = self.offers.remove(oid) else {
            return Err(format!("offer {oid} is not outstanding"));
        };
        o.state = match o.state.on(ev) {
            Ok(s) => s,
            Err(e) => return Err(e.to_string()),
        };
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
    /// (id, uniqueness, resources left in the pooled offers); a bad task gets
    /// TASK_ERROR naming the problem and the others launch. Whatever is left
    /// unused returns to the pool with the framework's filter.
    pub fn accept(
        &mut self,
        req: pb::AcceptRequest,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), CallError> {
        let fid = self.framework_for_call(&req.framework_id)?;
        let refuse = self.refuse_duration(req.filters.as_ref())?;
        let tasks: Vec<pb::TaskInfo> = req
            .operations
            .into_iter()
            .filter_map(|op| match op.operation {
                Some(pb::operation::Operation::Launch(l)) => Some(l.tasks),
                None => None,
            })
            .flatten()
            .collect();

        // --- offers
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        let mut agent: Option<AgentId> = None;
        for oid in &req.offer_ids {
            if !seen.insert(oid.clone()) {
                problems.push(format!("offer {oid} appears twice"));
                continue;
            }
            match self.offers.get(&OfferId::new(oid.as_str())) {
                None => problems.push(format!(
                    "offer {oid} is not outstanding (unknown, already used, or rescinded)"
                )),
                Some(o) if o.framework != fid => {
                    problems.push(format!("offer {oid} was made to another framework"))
                }
                Some(o) => match &agent {
                    Some(a) if a != &o.agent => problems.push(format!(
                        "offers span agents {a} and {}: one ACCEPT uses offers of one agent",
                        o.agent
                    )),
                    _ => agent = Some(o.agent.clone()),
                },
            }
        }
        if req.offer_ids.is_empty() {
            problems.push("ACCEPT names no offer".into());
        }
        // Take every offer that is ours and outstanding: an offer serves one ACCEPT.
        let mut taken = Vec::new();
        for oid in seen {
            if let Ok(o) = self.take_offer(&OfferId::new(oid), &fid, OfferEvent::Accept) {
                taken.push(o);
            }
        }
        if !problems.is_empty() {
            self.counters.invalid_calls += 1;
            let msg = problems.join("; ");
            for o in &taken {
                self.recover_pool(&fid, &o.agent, &o.resources, None);
            }
            for t in &tasks {
                self.counters.task_errors += 1;
                self.send_master_update(
                    &fid,
                    status(
                        &TaskId::new(t.task_id.as_str()),
                        &AgentId::new(t.agent_id.as_str()),
                        TaskState::Error,
                        reason::INVALID_OFFERS,
                        format!("task not launched: {msg}"),
                    ),
                    out,
                );
            }
            return Err(CallError::InvalidOffers(msg));
        }
        let Some(agent_id) = agent else {
            return Err(CallError::InvalidOffers("no usable offer".into()));
        };
        let mut pool = Resources::default();
        for o in &taken {
            pool.add_assign(&o.resources);
        }
        self.counters.offers_accepted += req.offer_ids.len() as u64;

        // --- tasks
        let mut remaining = pool;
        let mut launch = Vec::new();
        let mut ids_in_call = HashSet::new();
        for mut t in tasks {
            let tid_raw = t.task_id.clone();
            let check = (|| -> Result<(TaskId, Resources), String> {
                let tid = convert::task_id("task_id", &tid_raw).map_err(|e| e.to_string())?;
                if !ids_in_call.insert(tid.clone()) {
                    return Err(format!("task id {tid} is used twice in this ACCEPT"));
                }
                let fw = self.frameworks.get(&fid).ok_or("framework vanished")?;
                if fw.tasks.contains_key(&tid) {
                    return Err(format!(
                        "task id {tid} is already in use by a live task of this framework"
                    ));
                }
                if !t.agent_id.is_empty() && t.agent_id != agent_id.0 {
                    return Err(format!(
                        "task names agent {} but the offers are for agent {agent_id}",
                        t.agent_id
                    ));
                }
                let r = convert::resources("task.resources", t.resources.as_ref())
                    .map_err(|e| e.to_string())?;
                if r.cpus_milli == 0 && r.mem_mib == 0 {
                    return Err("task asks for no cpus and no memory".into());
                }
                if t.kill_grace_seconds.is_nan() || t.kill_grace_seconds < 0.0 {
                    return Err("kill_grace_seconds must be >= 0".into());
                }
                if !remaining.contains(&r) {
                    return Err(format!(
                        "task asks for {r} but only {remaining} remains of the accepted offers"
                    ));
                }
                Ok((tid, r))
            })();
            match check {
                Ok((tid, r)) => {
                    remaining = remaining.checked_sub(&r).unwrap_or_default();
                    t.agent_id = agent_id.0.clone();
                    let st = pb::TaskStatus {
                        task_id: tid.0.clone(),
                        state: pb::TaskState::TaskStaging as i32,
                        agent_id: agent_id.0.clone(),
                        source: pb::TaskSource::SourceMaster as i32,
                        timestamp: now_epoch(),
                        ..Default::default()
                    };
                    if let Some(fw) = self.frameworks.get_mut(&fid) {
                        fw.tasks.insert(
                            tid.clone(),
                            Task {
                                info: t.clone(),
                                agent: agent_id.clone(),
                                resources: r,
                                state: TaskState::Staging,
                                status: st,
                                usage: None,
                            },
                        );
                    }
                    if let Some(a) = self.agents.get_mut(&agent_id) {
                        a.tasks.insert((fid.clone(), tid));
                    }
                    self.counters.tasks_launched += 1;
                    launch.push(t);
                }
                Err(msg) => {
                    self.counters.task_errors += 1;
                    tracing::debug!(framework_id = %fid, task_id = %tid_raw, %msg, "task refused");
                    self.send_master_update(
                        &fid,
                        status(
                            &TaskId::new(tid_raw.as_str()),
                            &agent_id,
                            TaskState::Error,
                            reason::TASK_INVALID,
                            msg,
                        ),
                        out,
                    );
                }
            }
        }
        self.recover_pool(&fid, &agent_id, &remaining, Some((now, refuse)));
        if !launch.is_empty() {
            let conn = self.agents.get(&agent_id).and_then(|a| a.conn);
            let info = self.frameworks.get(&fid).map(|f| f.info.clone());
            match conn {
                Some(conn) => out.push(Output::ToAgent(
                    conn,
                    to_agent(pb::master_message::Message::RunTasks(pb::RunTasks {
                        framework: info,
                        tasks: launch,
                    })),
                )),
                None => {
                    // Cannot happen while offers are rescinded on disconnect; be safe.
                    for t in launch {
                        let tid = TaskId::new(t.task_id.as_str());
                        self.finish_task(
                            &fid,
                            &tid,
                            TaskState::Dropped,
                            reason::AGENT_REMOVED,
                            "agent disconnected before the launch reached it",
                            out,
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn recover_pool(
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

    /// KILL.
    pub fn kill(&mut self, req: pb::KillRequest, out: &mut Vec<Output>) -> Result<(), CallError> {
        let fid = self.framework_for_call(&req.framework_id)?;
        let tid = convert::task_id("task_id", &req.task_id)?;
        let Some(task) = self.frameworks.get(&fid).and_then(|f| f.tasks.get(&tid)) else {
            let pa = self.partition_aware(&fid);
            let st = if pa {
                TaskState::Unknown
            } else {
                TaskState::Lost
            };
            self.send_master_update(
                &fid,
                status(
                    &tid,
                    &AgentId::new(req.agent_id.as_str()),
                    st,
                    reason::TASK_UNKNOWN,
                    "kill of a task the master does not know",
                ),
                out,
            );
            return Ok(());
        };
        let agent = task.agent.clone();
        match self.agents.get(&agent) {
            Some(a) if a.conn.is_some() => {
                let conn = a.conn.unwrap_or_default();
                out.push(Output::ToAgent(
                    conn,
                    to_agent(pb::master_message::Message::KillTask(pb::KillTask {
                        framework_id: fid.0.clone(),
                        task_id: tid.0.clone(),
                    })),
                ));
            }
            _ => {
                // Agent away: the kill is re-sent when it re-registers
                // (tasks of killed frameworks are shut down then).
                tracing::info!(task_id = %tid, agent_id = %agent, "kill requested while agent is away");
            }
        }
        Ok(())
    }

    /// An operator kills a task (found by id, optionally within one framework).
    pub fn operator_kill(
        &mut self,
        task_id: &str,
        framework: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<FrameworkId, CallError> {
        let tid = convert::task_id("task_id", task_id)?;
        let owners: Vec<FrameworkId> = self
            .frameworks
            .values()
            .filter(|f| framework.is_none_or(|want| f.id.0 == want))
            .filter(|f| f.tasks.contains_key(&tid))
            .map(|f| f.id.clone())
            .collect();
        let fid = match owners.as_slice() {
            [one] => one.clone(),
            [] => return Err(CallError::NotFound(format!("no live task {tid}"))),
            _ => {
                return Err(Invalid::new(
                    "framework",
                    format!("several frameworks have a task {tid}; name the framework"),
                )
                .into());
            }
        };
        let Some(agent) = self
            .frameworks
            .get(&fid)
            .and_then(|f| f.tasks.get(&tid))
            .map(|t| t.agent.clone())
        else {
            return Err(CallError::NotFound(format!("no live task {tid}")));
        };
        match self.agents.get(&agent).and_then(|a| a.conn) {
            Some(conn) => {
                tracing::info!(framework_id = %fid, task_id = %tid, "operator kill");
                out.push(Output::ToAgent(
                    conn,
                    to_agent(pb::master_message::Message::KillTask(pb::KillTask {
                        framework_id: fid.0.clone(),
                        task_id: tid.0.clone(),
                    })),
                ));
                Ok(fid)
            }
            None => Err(CallError::NotFound(format!(
                "task {tid} is on agent {agent}, which is not connected; retry when it is back"
            ))),
        }
    }

    /// ACKNOWLEDGE (a batch): forwarded to the agents holding the updates.
    pub fn acknowledge(
        &mut self,
        req: pb::AcknowledgeRequest,
        out: &mut Vec<Output>,
    ) -> Result<(), CallError> {
        let fid = self.framework_for_call(&req.framework_id)?;
        let mut per_agent: HashMap<ConnId, Vec<pb::UpdateAck>> = HashMap::new();
        for ack in req.acknowledgements {
            if ack.uuid.is_empty() {
                return Err(Invalid::new("acknowledgements.uuid", "is empty").into());
            }
            let aid = convert::agent_id("acknowledgements.agent_id", &ack.agent_id)?;
            convert::task_id("acknowledgements.task_id", &ack.task_id)?;
            self.counters.status_update_acks += 1;
            if let Some(conn) = self.agents.get(&aid).and_then(|a| a.conn) {
                per_agent.entry(conn).or_default().push(pb::UpdateAck {
                    framework_id: fid.0.clone(),
                    task_id: ack.task_id,
                    uuid: ack.uuid,
                });
            }
        }
        for (conn, acks) in per_agent {
            out.push(Output::ToAgent(
                conn,
                to_agent(pb::master_message::Message::Acks(pb::UpdateAcks { acks })),
            ));
        }
        Ok(())
    }

    /// RECONCILE: explicit (listed tasks) or implicit (empty list).
    pub fn reconcile(
        &mut self,
        req: pb::ReconcileRequest,
        out: &mut Vec<Output>,
    ) -> Result<(), CallError> {
        let fid = self.framework_for_call(&req.framework_id)?;
        let pa = self.partition_aware(&fid);
        let Some(fw) = self.frameworks.get(&fid) else {
            return Err(CallError::UnknownFramework(fid));
        };
        let mut updates = Vec::new();
        if req.tasks.is_empty() {
            for t in fw.tasks.values() {
                updates.push(reconciled(&t.status));
            }
        } else {
            for rt in &req.tasks {
                let tid = convert::task_id("tasks.task_id", &rt.task_id)?;
                if let Some(t) = fw.tasks.get(&tid) {
                    updates.push(reconciled(&t.status));
                } else if let Some(t) = fw.completed.iter().rev().find(|t| t.info.task_id == tid.0)
                {
                    updates.push(reconciled(&t.status));
                } else {
                    let st = if pa {
                        TaskState::Unknown
                    } else {
                        TaskState::Lost
                    };
                    updates.push(status(
                        &tid,
                        &AgentId::new(rt.agent_id.as_str()),
                        st,
                        reason::RECONCILIATION,
                        "the master does not know this task",
                    ));
                }
            }
        }
        for u in updates {
            self.send_master_update(&fid, u, out);
        }
        Ok(())
    }

    fn partition_aware(&self, fid: &FrameworkId) -> bool {
        self.frameworks
            .get(fid)
            .is_some_and(|f| f.info.partition_aware)
    }

    fn send_master_update(&mut self, fid: &FrameworkId, st: pb::TaskStatus, out: &mut Vec<Output>) {
        if let Some(conn) = self.frameworks.get(fid).and_then(|f| f.conn) {
            out.push(Output::ToFramework(
                conn,
                event(pb::event::Event::Update(pb::Update { status: Some(st) })),
            ));
        }
    }

    fn rescind_framework_offers(&mut self, fid: &FrameworkId, out: &mut Vec<Output>) {
        let ids: Vec<OfferId> = self
            .frameworks
            .get(fid)
            .map(|f| f.offers.iter().cloned().collect())
            .unwrap_or_default();
        for oid in ids {
            self.rescind(&oid, out);
        }
    }

    fn rescind(&mut self, oid: &OfferId, out: &mut Vec<Output>) {
        let Some(o) = self.offers.get(oid) else {
            return;
        };
        let fid = o.framework.clone();
        let Ok(o) = self.take_offer(oid, &fid, OfferEvent::Rescind) else {
            return;
        };
        self.counters.offers_rescinded += 1;
        if let Some(conn) = self.frameworks.get(&fid).and_then(|f| f.conn) {
            out.push(Output::ToFramework(
                conn,
                event(pb::event::Event::Rescind(pb::Rescind {
                    offer_id: oid.0.clone(),
                })),
            ));
        }
        if self.agents.get(&o.agent).is_some_and(|a| a.in_allocator) {
            self.recover_pool(&fid, &o.agent, &o.resources, None);
        }
    }

    // ==================================================================== agents

    /// An agent (re-)registers on stream `conn`.
    pub fn register_agent(
        &mut self,
        conn: ConnId,
        reg: pb::Register,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), Invalid> {
        let info = reg
            .agent
            .ok_or_else(|| Invalid::new("register.agent", "is missing"))?;
        let resources = convert::resources("agent.resources", info.resources.as_ref())?;
        let attributes = convert::attributes(&info.attributes)?;
        if info.hostname.is_empty() || info.hostname.len() > 255 {
            return Err(Invalid::new("agent.hostname", "must be 1 to 255 bytes"));
        }
        if info.agent_id.is_empty() {
            // First registration: admit durably, then answer.
            let id = AgentId::new(self.next_id("S"));
            self.agents.insert(
                id.clone(),
                Agent {
                    id: id.clone(),
                    hostname: info.hostname.clone(),
                    resources: resources.clone(),
                    attributes: attributes.clone(),
                    endpoint: info.endpoint.clone(),
                    state: AgentState::Recovered,
                    conn: Some(conn),
                    last_seen: now,
                    tasks: HashSet::new(),
                    offers: HashSet::new(),
                    in_allocator: false,
                    registered_at: None,
                },
            );
            self.agent_conns.insert(conn, id.clone());
            self.counters.agents_registered += 1;
            out.push(Output::Persist(
                RegistryOp::Admit(RegisteredAgent {
                    id: id.clone(),
                    hostname: info.hostname,
                    resources,
                    attributes,
                    unreachable_since: None,
                }),
                Some(Pending::AdmitAgent { conn, agent: id }),
            ));
            return Ok(());
        }

        let id = convert::agent_id("agent.agent_id", &info.agent_id)?;
        // Validate the reported tasks before touching any state.
        let mut reported = Vec::new();
        for at in &reg.tasks {
            let t = at
                .task
                .as_ref()
                .ok_or_else(|| Invalid::new("tasks.task", "is missing"))?;
            let fid = convert::framework_id("tasks.framework_id", &at.framework_id)?;
            let tid = convert::task_id("tasks.task.task_id", &t.task_id)?;
            let st = convert::task_state("tasks.state", at.state)?;
            let r = convert::resources("tasks.task.resources", t.resources.as_ref())?;
            reported.push((fid, tid, st, r, t.clone()));
        }
        let mut total_reported = Resources::default();
        for (_, _, st, r, _) in &reported {
            if st.holds_resources() {
                total_reported.add_assign(r);
            }
        }
        if !resources.contains(&total_reported) {
            return Err(Invalid::new(
                "register.tasks",
                format!("tasks use {total_reported}, more than the agent's {resources}"),
            ));
        }
        if let Some(a) = self.agents.get(&id)
            && a.state == AgentState::Gone
        {
            out.push(Output::ToAgent(
                conn,
                to_agent(pb::master_message::Message::Refused(pb::Refused {
                    message: format!("agent {id} was marked gone; start it with a fresh work dir"),
                })),
            ));
            out.push(Output::CloseAgent(conn));
            return Ok(());
        }
        let known = self.agents.contains_key(&id);
        if !known {
            // Unknown to this master's registry (e.g. registry lost): admit it again.
            out.push(Output::Persist(
                RegistryOp::Admit(RegisteredAgent {
                    id: id.clone(),
                    hostname: info.hostname.clone(),
                    resources: resources.clone(),
                    attributes: attributes.clone(),
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
        // Frameworks the agent knows but we don't (master restart): recovered.
        for fi in &reg.frameworks {
            let Ok(fid) = convert::framework_id("frameworks.framework_id", &fi.framework_id) else {
                continue;
            };
            if self.frameworks.contains_key(&fid) {
                continue;
            }
            let mut info = fi.clone();
            if info.role.is_empty() {
                info.role = "*".into();
            }
            if self
                .allocator
                .add_framework(fid.clone(), &info.role, false)
                .is_ok()
            {
                let ft = fi.failover_timeout_seconds;
                self.frameworks.insert(
                    fid.clone(),
                    Framework {
                        id: fid.clone(),
                        failover_timeout: if ft.is_finite() && ft >= 0.0 {
                            Duration::from_secs_f64(ft.min(1e9))
                        } else {
                            Duration::ZERO
                        },
                        info,
                        state: FrameworkState::Recovered,
                        conn: None,
                        disconnected_at: Some(now),
                        tasks: HashMap::new(),
                        completed: VecDeque::new(),
                        offers: HashSet::new(),
                        last_heartbeat: now,
                    },
                );
            }
        }

        // Replace any previous connection of this agent.
        if let Some(old) = self.agents.get(&id).and_then(|a| a.conn)
            && old != conn
        {
            self.agent_conns.remove(&old);
            out.push(Output::CloseAgent(old));
        }
        // Offers on it are stale either way.
        let offer_ids: Vec<OfferId> = self
            .agents
            .get(&id)
            .map(|a| a.offers.iter().cloned().collect())
            .unwrap_or_default();
        for oid in offer_ids {
            self.rescind(&oid, out);
        }
        if self.agents.get(&id).is_some_and(|a| a.in_allocator) {
            let _ = self.allocator.remove_agent(&id);
        }

        let agent = self.agents.entry(id.clone()).or_insert_with(|| Agent {
            id: id.clone(),
            hostname: String::new(),
            resources: Resources::default(),
            attributes: Vec::new(),
            endpoint: String::new(),
            state: AgentState::Recovered,
            conn: None,
            last_seen: now,
            tasks: HashSet::new(),
            offers: HashSet::new(),
            in_allocator: false,
            registered_at: None,
        });
        agent.hostname = info.hostname;
        agent.resources = resources.clone();
        agent.attributes = attributes;
        agent.endpoint = info.endpoint;
        agent.state = agent
            .state
            .on(AgentEvent::Registered)
            .unwrap_or(AgentState::Active);
        agent.conn = Some(conn);
        agent.last_seen = now;
        agent.registered_at = Some(SystemTime::now());
        let previous: HashSet<(FrameworkId, TaskId)> = std::mem::take(&mut agent.tasks);
        self.agent_conns.insert(conn, id.clone());
        self.counters.agents_reregistered += 1;

        // Reconcile tasks: the agent is the truth for what runs on it.
        let mut reported_keys = HashSet::new();
        let mut used: Vec<(FrameworkId, Resources)> = Vec::new();
        let mut kills = Vec::new();
        for (fid, tid, st, r, tinfo) in reported {
            reported_keys.insert((fid.clone(), tid.clone()));
            let Some(fw) = self.frameworks.get_mut(&fid) else {
                kills.push((fid, tid));
                continue;
            };
            if fw.state == FrameworkState::Completed {
                kills.push((fid, tid));
                continue;
            }
            if !st.holds_resources() {
                continue;
            }
            let pa = fw.info.partition_aware;
            match fw.tasks.get_mut(&tid) {
                Some(t) => {
                    let changed = t.state != st;
                    if t.state.can_transition(st) {
                        t.state = st;
                    }
                    t.status.state = pb::TaskState::from(t.state) as i32;
                    if changed {
                        let mut s = t.status.clone();
                        s.reason = reason::AGENT_REREGISTERED.into();
                        s.message = "agent re-registered".into();
                        s.uuid.clear();
                        s.source = pb::TaskSource::SourceMaster as i32;
                        if let Some(conn) = fw.conn {
                            out.push(Output::ToFramework(
                                conn,
                                event(pb::event::Event::Update(pb::Update { status: Some(s) })),
                            ));
                        }
                    }
                }
                None => {
                    // A task we marked LOST (non-partition-aware) must not come back.
                    let was_lost = fw.completed.iter().any(|c| c.info.task_id == tid.0);
                    if was_lost && !pa {
                        kills.push((fid, tid));
                        continue;
                    }
                    fw.tasks.insert(
                        tid.clone(),
                        Task {
                            info: tinfo,
                            agent: id.clone(),
                            resources: r.clone(),
                            state: st,
                            status: pb::TaskStatus {
                                task_id: tid.0.clone(),
                                state: pb::TaskState::from(st) as i32,
                                agent_id: id.0.clone(),
                                source: pb::TaskSource::SourceAgent as i32,
                                reason: reason::AGENT_REREGISTERED.into(),
                                timestamp: now_epoch(),
                                ..Default::default()
                            },
                            usage: None,
                        },
                    );
                }
            }
            if let Some(a) = self.agents.get_mut(&id) {
                a.tasks.insert((fid.clone(), tid.clone()));
            }
            used.push((fid, r));
        }
        // Tasks we thought were there but the agent doesn't report: gone.
        for (fid, tid) in previous {
            if reported_keys.contains(&(fid.clone(), tid.clone())) {
                continue;
            }
            let pa = self.partition_aware(&fid);
            let st = if pa {
                TaskState::Dropped
            } else {
                TaskState::Lost
            };
            self.finish_task(
                &fid,
                &tid,
                st,
                reason::AGENT_REREGISTERED,
                "task was not found on the agent when it re-registered",
                out,
            );
        }
        if let Err(e) = self.allocator.add_agent(id.clone(), resources, &used) {
            tracing::error!(agent_id = %id, error = %e, "allocator refused re-registered agent");
        }
        if let Some(a) = self.agents.get_mut(&id) {
            a.in_allocator = true;
        }
        for (fid, tid) in kills {
            out.push(Output::ToAgent(
                conn,
                to_agent(pb::master_message::Message::KillTask(pb::KillTask {
                    framework_id: fid.0,
                    task_id: tid.0,
                })),
            ));
        }
        out.push(Output::ToAgent(
            conn,
            to_agent(pb::master_message::Message::Registered(pb::Registered {
                agent_id: id.0.clone(),
                heartbeat_interval_seconds: self.cfg.agent_heartbeat_interval.as_secs_f64(),
                master_id: self.cfg.master_id.clone(),
            })),
        ));
        self.dirty.insert(id.clone());
        tracing::info!(agent_id = %id, "agent re-registered");
        Ok(())
    }

    /// A registry write finished.
    pub fn persisted(&mut self, pending: Pending, now: Instant, out: &mut Vec<Output>) {
        match pending {
            Pending::AdmitAgent { conn, agent } => {
                let Some(a) = self.agents.get_mut(&agent) else {
                    return;
                };
                if a.conn != Some(conn) {
                    // It went away while we were persisting; it will re-register.
                    return;
                }
                a.state = a
                    .state
                    .on(AgentEvent::Registered)
                    .unwrap_or(AgentState::Active);
                a.last_seen = now;
                a.registered_at = Some(SystemTime::now());
                let resources = a.resources.clone();
                if !a.in_allocator {
                    if let Err(e) = self.allocator.add_agent(agent.clone(), resources, &[]) {
                        tracing::error!(agent_id = %agent, error = %e, "allocator refused agent");
                    }
                    a.in_allocator = true;
                }
                out.push(Output::ToAgent(
                    conn,
                    to_agent(pb::master_message::Message::Registered(pb::Registered {
                        agent_id: agent.0.clone(),
                        heartbeat_interval_seconds: self.cfg.agent_heartbeat_interval.as_secs_f64(),
                        master_id: self.cfg.master_id.clone(),
                    })),
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
            out.push(Output::ToAgent(
                conn,
                to_agent(pb::master_message::Message::Pong(pb::Pong {})),
            ));
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
        a.state = a.state.on(AgentEvent::StreamClosed).unwrap_or(a.state);
        let offers: Vec<OfferId> = a.offers.iter().cloned().collect();
        tracing::info!(agent_id = %id, "agent disconnected");
        for oid in offers {
            self.rescind(&oid, out);
        }
        if self.agents.get(&id).is_some_and(|a| a.in_allocator) {
            let _ = self.allocator.set_agent_active(&id, false);
        }
    }

    /// Status updates from the agent on `conn`.
    pub fn status_updates(
        &mut self,
        conn: ConnId,
        updates: Vec<pb::StatusUpdate>,
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
            let Some(mut st) = u.status else { continue };
            let (Ok(fid), Ok(tid), Ok(state)) = (
                convert::framework_id("framework_id", &u.framework_id),
                convert::task_id("status.task_id", &st.task_id),
                st.task_state(),
            ) else {
                tracing::warn!(agent_id = %aid, "dropping malformed status update");
                continue;
            };
            st.agent_id = aid.0.clone();
            let Some(fw) = self.frameworks.get_mut(&fid) else {
                // Framework unknown here: nobody will ack; ack it ourselves.
                if !st.uuid.is_empty() {
                    self_acks.push(pb::UpdateAck {
                        framework_id: fid.0,
                        task_id: tid.0,
                        uuid: st.uuid,
                    });
                }
                continue;
            };
            if fw.state == FrameworkState::Completed {
                if !st.uuid.is_empty() {
                    self_acks.push(pb::UpdateAck {
                        framework_id: fid.0,
                        task_id: tid.0,
                        uuid: st.uuid,
                    });
                }
                continue;
            }
            let mut became_terminal = false;
            if let Some(t) = fw.tasks.get_mut(&tid)
                && t.agent == aid
                && t.state.can_transition(state)
            {
                t.state = state;
                t.status = st.clone();
                became_terminal = state.is_terminal();
            }
            if let Some(conn) = fw.conn {
                out.push(Output::ToFramework(
                    conn,
                    event(pb::event::Event::Update(pb::Update { status: Some(st) })),
                ));
            }
            if became_terminal {
                self.retire_task(&fid, &tid);
            }
        }
        if !self_acks.is_empty() {
            out.push(Output::ToAgent(
                conn,
                to_agent(pb::master_message::Message::Acks(pb::UpdateAcks {
                    acks: self_acks,
                })),
            ));
        }
    }

    /// A usage report from the agent on `conn`.
    pub fn usage(&mut self, conn: ConnId, report: pb::UsageReport, now: Instant) {
        let Some(aid) = self.agent_conns.get(&conn).cloned() else {
            return;
        };
        if let Some(a) = self.agents.get_mut(&aid) {
            a.last_seen = now;
        }
        for u in report.tasks {
            let fid = FrameworkId::new(u.framework_id.as_str());
            let tid = TaskId::new(u.task_id.as_str());
            if let Some(t) = self
                .frameworks
                .get_mut(&fid)
                .and_then(|f| f.tasks.get_mut(&tid))
                && t.agent == aid
                && u.cpu_seconds.is_finite()
            {
                t.usage = Some(u);
            }
        }
    }

    /// Moves a task that reached a terminal state to the completed list and
    /// frees its resources.
    fn retire_task(&mut self, fid: &FrameworkId, tid: &TaskId) {
        let Some(fw) = self.frameworks.get_mut(fid) else {
            return;
        };
        let Some(t) = fw.tasks.remove(tid) else {
            return;
        };
        let agent = t.agent.clone();
        let r = t.resources.clone();
        fw.completed.push_back(t);
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

    /// Master-decided terminal state for a task (agent lost, dropped launch).
    fn finish_task(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        state: TaskState,
        why: &str,
        message: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(t) = self
            .frameworks
            .get_mut(fid)
            .and_then(|f| f.tasks.get_mut(tid))
        else {
            return;
        };
        if !t.state.can_transition(state) {
            return;
        }
        t.state = state;
        t.status = status(tid, &t.agent, state, why, message);
        let st = t.status.clone();
        self.send_master_update(fid, st, out);
        if state.is_terminal() {
            self.retire_task(fid, tid);
        }
    }

    fn mark_unreachable(&mut self, id: &AgentId, out: &mut Vec<Output>) {
        let Some(a) = self.agents.get_mut(id) else {
            return;
        };
        let Ok(next) = a.state.on(AgentEvent::TimedOut) else {
            return;
        };
        a.state = next;
        if let Some(conn) = a.conn.take() {
            self.agent_conns.remove(&conn);
            out.push(Output::CloseAgent(conn));
        }
        self.counters.agents_unreachable += 1;
        tracing::warn!(agent_id = %id, "agent unreachable");
        let offers: Vec<OfferId> = a.offers.iter().cloned().collect();
        let tasks: Vec<(FrameworkId, TaskId)> = a.tasks.iter().cloned().collect();
        for oid in offers {
            self.rescind(&oid, out);
        }
        for (fid, tid) in tasks {
            let pa = self.partition_aware(&fid);
            if pa {
                self.finish_task(
                    &fid,
                    &tid,
                    TaskState::Unreachable,
                    reason::AGENT_UNREACHABLE,
                    "agent is unreachable",
                    out,
                );
            } else {
                self.finish_task(
                    &fid,
                    &tid,
                    TaskState::Lost,
                    reason::AGENT_UNREACHABLE,
                    "agent is unreachable; the task is considered lost",
                    out,
                );
                if let Some(a) = self.agents.get_mut(id) {
                    a.tasks.remove(&(fid, tid));
                }
            }
        }
        if self.agents.get(id).is_some_and(|a| a.in_allocator) {
            let _ = self.allocator.remove_agent(id);
        }
        if let Some(a) = self.agents.get_mut(id) {
            a.in_allocator = false;
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        out.push(Output::Persist(
            RegistryOp::MarkUnreachable(id.clone(), t),
            None,
        ));
        let fws: Vec<ConnId> = self.frameworks.values().filter_map(|f| f.conn).collect();
        for conn in fws {
            out.push(Output::ToFramework(
                conn,
                event(pb::event::Event::Failure(pb::Failure {
                    agent_id: id.0.clone(),
                    message: "agent unreachable".into(),
                })),
            ));
        }
    }

    // ===================================================================== timers

    /// Periodic work: agent and framework timeouts, offer expiry, heartbeats,
    /// the full allocation cycle.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        let timeout = self.cfg.agent_timeout;
        let silent: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| {
                matches!(
                    a.state,
                    AgentState::Active | AgentState::Disconnected | AgentState::Recovered
                ) && now.saturating_duration_since(a.last_seen) >= timeout
            })
            .map(|a| a.id.clone())
            .collect();
        for id in silent {
            self.mark_unreachable(&id, out);
        }

        if let Some(ot) = self.cfg.offer_timeout {
            let expired: Vec<OfferId> = self
                .offers
                .iter()
                .filter(|(_, o)| now.saturating_duration_since(o.created) >= ot)
                .map(|(id, _)| id.clone())
                .collect();
            for oid in expired {
                tracing::debug!(offer_id = %oid, "offer timed out");
                self.rescind(&oid, out);
            }
        }

        let gone: Vec<FrameworkId> = self
            .frameworks
            .values()
            .filter(|f| {
                matches!(
                    f.state,
                    FrameworkState::Disconnected | FrameworkState::Recovered
                ) && f
                    .disconnected_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= f.failover_timeout)
            })
            .map(|f| f.id.clone())
            .collect();
        for id in gone {
            self.remove_framework(&id, "failover timeout expired", out);
        }

        let hb = self.cfg.framework_heartbeat_interval;
        for f in self.frameworks.values_mut() {
            if let Some(conn) = f.conn
                && now.saturating_duration_since(f.last_heartbeat) >= hb
            {
                f.last_heartbeat = now;
                out.push(Output::ToFramework(
                    conn,
                    event(pb::event::Event::Heartbeat(pb::Heartbeat {})),
                ));
            }
        }

        if now >= self.next_full_allocation {
            self.full_allocation_due = true;
        }
    }

    /// Runs allocation if anything is due: a full cycle on the interval (or
    /// after REVIVE/SUBSCRIBE), otherwise only agents whose resources changed.
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
        let mut per_fw: HashMap<FrameworkId, Vec<pb::Offer>> = HashMap::new();
        for a in allocations {
            let oid = OfferId::new(self.next_id("O"));
            let Some(agent) = self.agents.get_mut(&a.agent) else {
                continue;
            };
            agent.offers.insert(oid.clone());
            let wire = pb::Offer {
                offer_id: oid.0.clone(),
                framework_id: a.framework.0.clone(),
                agent_id: a.agent.0.clone(),
                hostname: agent.hostname.clone(),
                resources: Some(pb::Resources::from(&a.resources)),
                attributes: agent
                    .attributes
                    .iter()
                    .map(|(n, v)| pb::Attribute {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
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
            per_fw.entry(a.framework).or_default().push(wire);
        }
        for (fid, offers) in per_fw {
            tracing::debug!(framework_id = %fid, offers = offers.len(), "offers");
            self.counters.offers_sent += offers.len() as u64;
            let Some(conn) = self.frameworks.get(&fid).and_then(|f| f.conn) else {
                continue;
            };
            for chunk in offers.chunks(self.cfg.max_offers_per_event.max(1)) {
                out.push(Output::ToFramework(
                    conn,
                    event(pb::event::Event::Offers(pb::Offers {
                        offers: chunk.to_vec(),
                    })),
                ));
            }
        }
    }

    // ====================================================================== views

    /// A JSON-ready snapshot for `/state`.
    pub fn snapshot(&self) -> crate::view::State {
        use crate::view::*;
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
                        a_used.add_assign(&t.resources);
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
                    attributes: a.attributes.iter().cloned().collect(),
                    resources: ResourcesView::from(&a.resources),
                    used_resources: ResourcesView::from(&a_used),
                    offered_resources: ResourcesView::from(&a_offered),
                    task_count: a.tasks.len(),
                    registered_time: a
                        .registered_at
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs_f64()),
                }
            })
            .collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        let mut frameworks: Vec<FrameworkView> = self
            .frameworks
            .values()
            .map(|f| {
                let mut f_used = Resources::default();
                let tasks: Vec<TaskView> = f
                    .tasks
                    .values()
                    .map(|t| {
                        f_used.add_assign(&t.resources);
                        task_view(&f.id, t)
                    })
                    .collect();
                FrameworkView {
                    id: f.id.0.clone(),
                    name: f.info.name.clone(),
                    role: f.info.role.clone(),
                    state: f.state,
                    partition_aware: f.info.partition_aware,
                    failover_timeout_seconds: f.failover_timeout.as_secs_f64(),
                    suppressed: self.allocator.is_suppressed(&f.id),
                    dominant_share: self.allocator.framework_share(&f.id).unwrap_or(0.0),
                    used_resources: ResourcesView::from(&f_used),
                    offers: f.offers.len(),
                    tasks,
                    completed_tasks: f.completed.iter().map(|t| task_view(&f.id, t)).collect(),
                }
            })
            .collect();
        frameworks.sort_by(|a, b| a.id.cmp(&b.id));
        State {
            master_id: self.cfg.master_id.clone(),
            leader: self.cfg.advertise.clone(),
            start_time: self
                .started
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            resources: ClusterResources {
                total: ResourcesView::from(&total),
                used: ResourcesView::from(&used),
                offered: ResourcesView::from(&offered),
            },
            agents,
            frameworks,
            outstanding_offers: self.offers.len(),
        }
    }

    /// Gauges for `/metrics`.
    pub fn gauges(&self) -> crate::view::Gauges {
        let mut g = crate::view::Gauges::default();
        for a in self.agents.values() {
            *g.agents.entry(a.state).or_default() += 1;
        }
        for f in self.frameworks.values() {
            *g.frameworks.entry(f.state).or_default() += 1;
            for t in f.tasks.values() {
                *g.tasks.entry(t.state).or_default() += 1;
            }
        }
        g.outstanding_offers = self.offers.len();
        g.counters = self.counters.clone();
        g
    }

    /// Checks the invariants the property tests rely on; returns the first
    /// violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.allocator.check_invariants()?;
        for (oid, o) in &self.offers {
            let a = self
                .agents
                .get(&o.agent)
                .ok_or(format!("offer {oid} on unknown agent"))?;
            if !a.offers.contains(oid) || a.state != AgentState::Active {
                return Err(format!(
                    "offer {oid} on inactive agent {} or unindexed",
                    o.agent
                ));
            }
            if o.state != OfferState::Outstanding {
                return Err(format!("offer {oid} in map but not outstanding"));
            }
        }
        for a in self.agents.values() {
            let mut sum = Resources::default();
            for oid in &a.offers {
                let o = self
                    .offers
                    .get(oid)
                    .ok_or(format!("agent {} indexes dead offer {oid}", a.id))?;
                if sum.ports.intersects(&o.resources.ports) {
                    return Err(format!("agent {}: a port is in two offers", a.id));
                }
                sum.add_assign(&o.resources);
            }
            for (fid, tid) in &a.tasks {
                let t = self
                    .frameworks
                    .get(fid)
                    .and_then(|f| f.tasks.get(tid))
                    .ok_or(format!("agent {} indexes unknown task {tid}", a.id))?;
                if sum.ports.intersects(&t.resources.ports) {
                    return Err(format!(
                        "agent {}: task {tid} port also offered or used",
                        a.id
                    ));
                }
                sum.add_assign(&t.resources);
            }
            if a.in_allocator && !a.resources.contains(&sum) {
                return Err(format!(
                    "agent {}: offered + used {sum} exceeds total {}",
                    a.id, a.resources
                ));
            }
            if a.in_allocator {
                let (_, alloc) = self
                    .allocator
                    .agent_resources(&a.id)
                    .ok_or(format!("agent {} missing in allocator", a.id))?;
                if alloc != sum {
                    return Err(format!(
                        "agent {}: allocator holds {alloc} but offers+tasks are {sum}",
                        a.id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Outstanding offer ids of a framework (tests).
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

    /// Live task resources of a framework (tests).
    pub fn task_state(&self, fid: &FrameworkId, tid: &TaskId) -> Option<TaskState> {
        let f = self.frameworks.get(fid)?;
        f.tasks.get(tid).map(|t| t.state).or_else(|| {
            f.completed
                .iter()
                .rev()
                .find(|t| t.info.task_id == tid.0)
                .map(|t| t.state)
        })
    }
}

fn reconciled(s: &pb::TaskStatus) -> pb::TaskStatus {
    let mut s = s.clone();
    s.reason = reason::RECONCILIATION.into();
    s.uuid.clear();
    s.source = pb::TaskSource::SourceMaster as i32;
    s
}

fn task_view(fid: &FrameworkId, t: &Task) -> crate::view::TaskView {
    crate::view::TaskView {
        id: t.info.task_id.clone(),
        name: t.info.name.clone(),
        framework_id: fid.0.clone(),
        agent_id: t.agent.0.clone(),
        state: t.state,
        resources: crate::view::ResourcesView::from(&t.resources),
        message: t.status.message.clone(),
        reason: t.status.reason.clone(),
        labels: t.info.labels.clone().into_iter().collect(),
        usage: t.usage.as_ref().map(|u| crate::view::UsageView {
            cpu_seconds: u.cpu_seconds,
            mem_rss_bytes: u.mem_rss_bytes,
            timestamp: u.timestamp,
        }),
    }
}
