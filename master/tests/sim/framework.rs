//! A modelled scheduler, written to the Mesos contract: it keeps `target`
//! instances, launches from offers while short, declines otherwise and
//! suppresses when satisfied (a fresh SUBSCRIBE means "not suppressed"), revives
//! when short again, acknowledges every update, reconciles after every
//! subscription and now and then, replaces instances it is told ended, and
//! kills running tasks it does not know. It repeats a kill only after a new
//! SUBSCRIBE (a restarted master cannot know kills sent to its predecessor):
//! the master must not lose a kill while its agent is away or partitioned.

use super::{Sim, task_resources};
use agora_core::info::{Filters, FrameworkInfo, OfferInfo, TaskInfo};
use agora_core::protocol::{Accept, Ack, Acknowledge, Decline, Event, Kill, Reconcile};
use agora_core::{AgentId, FrameworkId, OfferId, TaskId, TaskState};
use agora_master::state::{CallError, ConnId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub struct SimFramework {
    pub name: String,
    pub role: String,
    pub pa: bool,
    pub failover: Duration,
    pub id: Option<FrameworkId>,
    pub conn: Option<ConnId>,
    /// SUBSCRIBED received on `conn`.
    pub subscribed: bool,
    pub target: usize,
    /// Tasks it believes live, with their agents.
    pub tasks: BTreeMap<TaskId, (AgentId, TaskState)>,
    pub killing: BTreeSet<TaskId>,
    pub offers: BTreeMap<OfferId, OfferInfo>,
    pub suppressed: bool,
    /// Torn down (by itself, or its failover timeout passed): it stops.
    pub completed: bool,
    pub seq: u64,
}

impl SimFramework {
    pub fn new(n: usize, pa: bool, target: usize, failover: Duration) -> Self {
        SimFramework {
            name: format!("fw{n}"),
            role: super::ROLES[n % super::ROLES.len()].into(),
            pa,
            failover,
            id: None,
            conn: None,
            subscribed: false,
            target,
            tasks: BTreeMap::new(),
            killing: BTreeSet::new(),
            offers: BTreeMap::new(),
            suppressed: false,
            completed: false,
            seq: 0,
        }
    }

    pub fn lost_stream(&mut self) {
        self.conn = None;
        self.subscribed = false;
        self.offers.clear();
    }

    fn live(&self) -> usize {
        self.tasks.len() - self.killing.len()
    }

    pub fn info(&self, role: &str) -> FrameworkInfo {
        FrameworkInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            role: role.to_string(),
            user: String::new(),
            failover_timeout: self.failover,
            partition_aware: self.pa,
            hostname: String::new(),
            capabilities: vec![],
        }
    }
}

/// SUBSCRIBE on a new stream (first time or failover).
pub fn subscribe(sim: &mut Sim, i: usize) -> Result<(), String> {
    if sim.fws[i].completed || sim.fws[i].conn.is_some() {
        return Ok(());
    }
    let c = sim.conn();
    let info = sim.fws[i].info(&sim.fws[i].role.clone());
    let mut out = Vec::new();
    match sim.m.subscribe(c, info, sim.now, &mut out) {
        Ok(id) => {
            let f = &mut sim.fws[i];
            if f.id.as_ref().is_some_and(|old| old != &id) {
                return Err(format!("{} resubscribed but got a new id {id}", f.name));
            }
            f.id = Some(id);
            f.conn = Some(c);
            let name = f.name.clone();
            sim.note(format!("{name} subscribes on {c}"));
            sim.absorb(out)
        }
        Err(CallError::FrameworkCompleted(_)) => {
            sim.streams.remove(&c);
            let f = &mut sim.fws[i];
            f.completed = true;
            f.tasks.clear();
            f.killing.clear();
            let name = f.name.clone();
            sim.note(format!("{name} learns it was torn down"));
            sim.absorb(out)
        }
        Err(e) => Err(format!("a valid SUBSCRIBE was refused: {e}")),
    }
}

/// A second instance of the scheduler subscribes while the first is still
/// connected (failover): the old stream gets an ERROR and is closed.
pub fn failover(sim: &mut Sim, i: usize) -> Result<(), String> {
    if sim.fws[i].completed || sim.fws[i].conn.is_none() || sim.fws[i].id.is_none() {
        return Ok(());
    }
    let old = sim.fws[i].conn;
    sim.fws[i].lost_stream();
    let name = sim.fws[i].name.clone();
    sim.note(format!("{name} fails over from {old:?} while connected"));
    subscribe(sim, i)
}

/// A SUBSCRIBE the master must refuse (a role change) changes nothing.
pub fn bad_resubscribe(sim: &mut Sim, i: usize) -> Result<(), String> {
    let Some(id) = sim.fws[i].id.clone() else {
        return Ok(());
    };
    // A master that does not know the framework (it restarted) has nothing
    // to compare the role with.
    if sim.fws[i].completed || sim.m.framework_state(&id).is_none() {
        return Ok(());
    }
    let before = (
        sim.m.framework_conn(&id),
        sim.m.framework_state(&id),
        sim.m.is_suppressed(&id),
        sim.m.live_tasks(&id),
    );
    let c = sim.conn();
    let info = sim.fws[i].info("another-role");
    let mut out = Vec::new();
    let r = sim.m.subscribe(c, info, sim.now, &mut out);
    sim.streams.remove(&c);
    if r.is_ok() {
        return Err("a SUBSCRIBE changing the role was accepted".into());
    }
    if !out.is_empty() {
        return Err(format!("a refused SUBSCRIBE had effects: {out:?}"));
    }
    let after = (
        sim.m.framework_conn(&id),
        sim.m.framework_state(&id),
        sim.m.is_suppressed(&id),
        sim.m.live_tasks(&id),
    );
    if before != after {
        return Err(format!(
            "a refused SUBSCRIBE changed the framework: {before:?} -> {after:?}"
        ));
    }
    sim.absorb(out)
}

/// The scheduler's stream breaks (the master sees it close).
pub fn disconnect(sim: &mut Sim, i: usize) -> Result<(), String> {
    let Some(c) = sim.fws[i].conn else {
        return Ok(());
    };
    sim.fws[i].lost_stream();
    sim.streams.remove(&c);
    let name = sim.fws[i].name.clone();
    sim.note(format!("{name} disconnects"));
    let mut out = Vec::new();
    sim.m.framework_closed(c, sim.now, &mut out);
    sim.absorb(out)
}

fn ready(sim: &Sim, i: usize) -> Option<FrameworkId> {
    let f = &sim.fws[i];
    (f.subscribed && !f.completed)
        .then(|| f.id.clone())
        .flatten()
}

/// Its periodic loop: reconcile (explicitly or implicitly), then converge.
pub fn periodic(sim: &mut Sim, i: usize, explicit: bool) -> Result<(), String> {
    reconcile(sim, i, explicit)?;
    converge(sim, i)
}

pub fn reconcile(sim: &mut Sim, i: usize, explicit: bool) -> Result<(), String> {
    let Some(fid) = ready(sim, i) else {
        return Ok(());
    };
    // Sometimes without the agent (allowed, and answered differently).
    let name_agents = sim.rng.chance(70);
    let tasks = if explicit {
        sim.fws[i]
            .tasks
            .iter()
            .map(|(t, (a, _))| (t.clone(), name_agents.then(|| a.clone())))
            .collect()
    } else {
        vec![]
    };
    let mut out = Vec::new();
    let _ = sim.m.reconcile(
        Reconcile {
            framework_id: fid,
            tasks,
        },
        sim.now,
        &mut out,
    );
    sim.absorb(out)
}

pub fn kill(sim: &mut Sim, i: usize, tid: TaskId) -> Result<(), String> {
    let Some(fid) = ready(sim, i) else {
        return Ok(());
    };
    let agent = sim.fws[i]
        .tasks
        .get(&tid)
        .map(|(a, _)| a.clone())
        .filter(|_| sim.rng.chance(70));
    sim.fws[i].killing.insert(tid.clone());
    let name = sim.fws[i].name.clone();
    sim.note(format!("{name} kills {tid}"));
    let mut out = Vec::new();
    let _ = sim.m.kill(
        Kill {
            framework_id: fid,
            task_id: tid,
            agent_id: agent,
        },
        sim.now,
        &mut out,
    );
    sim.absorb(out)
}

pub fn set_suppressed(sim: &mut Sim, i: usize, suppress: bool) -> Result<(), String> {
    let Some(fid) = ready(sim, i) else {
        return Ok(());
    };
    let r = if suppress {
        sim.m.suppress(&fid)
    } else {
        sim.m.revive(&fid)
    };
    if r.is_ok() {
        sim.fws[i].suppressed = suppress;
    }
    sim.allocate()
}

pub fn teardown(sim: &mut Sim, i: usize) -> Result<(), String> {
    let Some(fid) = ready(sim, i) else {
        return Ok(());
    };
    let mut out = Vec::new();
    if sim.m.teardown(&fid, sim.now, &mut out).is_ok() {
        let f = &mut sim.fws[i];
        f.completed = true;
        f.tasks.clear();
        f.killing.clear();
        f.offers.clear();
        let name = f.name.clone();
        sim.note(format!("{name} tears itself down"));
    }
    sim.absorb(out)
}

/// Changes the instance count; extra instances are killed.
pub fn scale(sim: &mut Sim, i: usize, target: usize) -> Result<(), String> {
    sim.fws[i].target = target;
    converge(sim, i)
}

/// Kills instances beyond the target; revives when short and suppressed.
fn converge(sim: &mut Sim, i: usize) -> Result<(), String> {
    if ready(sim, i).is_none() {
        return Ok(());
    }
    let extra = sim.fws[i].live().saturating_sub(sim.fws[i].target);
    let victims: Vec<TaskId> = sim.fws[i]
        .tasks
        .keys()
        .filter(|t| !sim.fws[i].killing.contains(*t))
        .rev()
        .take(extra)
        .cloned()
        .collect();
    for t in victims {
        kill(sim, i, t)?;
    }
    let f = &sim.fws[i];
    if f.suppressed && f.live() < f.target {
        set_suppressed(sim, i, false)?;
    }
    Ok(())
}

/// Uses or declines every offer it holds.
fn act(sim: &mut Sim, i: usize) -> Result<(), String> {
    let Some(fid) = ready(sim, i) else {
        return Ok(());
    };
    let offers: Vec<OfferInfo> = std::mem::take(&mut sim.fws[i].offers)
        .into_values()
        .collect();
    let unit = task_resources();
    for o in offers {
        let f = &sim.fws[i];
        let mut want = f.target.saturating_sub(f.live());
        let mut free = o.resources.clone();
        let mut tasks = Vec::new();
        while want > 0 && free.ports.count() > 0 {
            let mut r = unit.clone();
            r.ports = free.ports.take(1);
            if !free.contains(&r) {
                break;
            }
            free = free.checked_sub(&r).expect("contained");
            let f = &mut sim.fws[i];
            f.seq += 1;
            let tid = TaskId::new(format!("{}-t{}", f.name, f.seq));
            tasks.push(TaskInfo::new(tid, r));
            want -= 1;
        }
        let mut out = Vec::new();
        if tasks.is_empty() {
            let refuse = [0u64, 1, 5][sim.rng.below(3)];
            let _ = sim.m.decline(
                Decline {
                    framework_id: fid.clone(),
                    offer_ids: vec![o.id.clone()],
                    filters: Filters {
                        refuse: Some(Duration::from_secs(refuse)),
                    },
                },
                sim.now,
            );
        } else {
            for t in &tasks {
                sim.fws[i]
                    .tasks
                    .insert(t.id.clone(), (o.agent.clone(), TaskState::Staging));
            }
            let _ = sim.m.accept(
                Accept {
                    framework_id: fid.clone(),
                    offer_ids: vec![o.id.clone()],
                    tasks,
                    filters: Filters::default(),
                },
                sim.now,
                &mut out,
            );
        }
        sim.absorb(out)?;
    }
    let f = &sim.fws[i];
    if f.live() >= f.target && !f.suppressed && sim.rng.chance(70) {
        set_suppressed(sim, i, true)?;
    }
    Ok(())
}

/// An event arrives on the framework's stream.
pub fn on_event(sim: &mut Sim, i: usize, ev: Event) -> Result<(), String> {
    match ev {
        Event::Subscribed { framework_id, .. } => {
            let f = &mut sim.fws[i];
            if f.id.as_ref() != Some(&framework_id) {
                return Err(format!("SUBSCRIBED names {framework_id}, not {:?}", f.id));
            }
            f.subscribed = true;
            f.suppressed = false;
            f.offers.clear();
            reconcile(sim, i, true)?;
            reconcile(sim, i, false)?;
            // A new master may never have heard of kills sent to the old
            // one: ask again (the only retry this scheduler makes).
            let killing: Vec<TaskId> = sim.fws[i].killing.iter().cloned().collect();
            for t in killing {
                kill(sim, i, t)?;
            }
            converge(sim, i)?;
        }
        Event::Offers(offers) => {
            for o in offers {
                sim.fws[i].offers.insert(o.id.clone(), o);
            }
            act(sim, i)?;
        }
        Event::Rescind(oid) => {
            sim.fws[i].offers.remove(&oid);
        }
        Event::Update(st) => {
            let Some(fid) = sim.fws[i].id.clone() else {
                return Ok(());
            };
            if let (Some(uuid), Some(agent)) = (&st.uuid, &st.agent_id) {
                let mut out = Vec::new();
                let _ = sim.m.acknowledge(
                    Acknowledge {
                        framework_id: fid.clone(),
                        acks: vec![Ack {
                            agent_id: agent.clone(),
                            task_id: st.task_id.clone(),
                            uuid: uuid.clone(),
                        }],
                    },
                    &mut out,
                );
                sim.absorb(out)?;
            }
            let live = !st.state.is_terminal() && st.state != TaskState::Unknown;
            let f = &mut sim.fws[i];
            if f.completed {
                return Ok(());
            }
            match (f.tasks.contains_key(&st.task_id), live) {
                (true, true) => {
                    let e = f.tasks.get_mut(&st.task_id).expect("present");
                    e.1 = st.state;
                    if let Some(a) = st.agent_id.clone() {
                        e.0 = a;
                    }
                }
                (true, false) => {
                    f.tasks.remove(&st.task_id);
                    f.killing.remove(&st.task_id);
                }
                (false, true) => {
                    // Running, but not ours (any more): kill it.
                    let tid = st.task_id.clone();
                    let agent = st.agent_id.clone();
                    let name = f.name.clone();
                    sim.note(format!("{name} kills unknown task {tid}"));
                    let mut out = Vec::new();
                    let _ = sim.m.kill(
                        Kill {
                            framework_id: fid,
                            task_id: tid,
                            agent_id: agent,
                        },
                        sim.now,
                        &mut out,
                    );
                    sim.absorb(out)?;
                }
                (false, false) => {}
            }
            converge(sim, i)?;
        }
        Event::Error(_) | Event::Failure { .. } | Event::Heartbeat | Event::Usage(_) => {}
    }
    Ok(())
}
