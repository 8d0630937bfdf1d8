//! The invariants: after every step, for every master-generated update, and
//! after the cluster settles.

use super::{Sim, agent, framework, task_resources};
use agora_core::info::TaskSource;
use agora_core::lifecycle::{AgentState, FrameworkState};
use agora_core::protocol::Event;
use agora_core::{FrameworkId, TaskId, TaskState};
use std::collections::BTreeSet;

/// The master never tells a framework that a task ended, or that it does
/// not know it, while the task runs on an agent the master has not given
/// up on (an agent it still counts as registered, even one that has not
/// re-registered since a master restart).
pub fn truthful_update(sim: &Sim, ev: &Event) -> Result<(), String> {
    let Event::Update(st) = ev else {
        return Ok(());
    };
    if st.source != TaskSource::Master
        || !(st.state.is_terminal() || st.state == TaskState::Unknown)
    {
        return Ok(());
    }
    for a in &sim.agents {
        for (fid, tid) in a.live() {
            if tid != &st.task_id {
                continue;
            }
            if sim.m.framework_state(fid) == Some(FrameworkState::Completed) {
                continue;
            }
            let Some(aid) = &a.id else { continue };
            let master_view = sim.m.agent_state(aid);
            if matches!(master_view, Some(AgentState::Unreachable) | None) {
                continue;
            }
            // The master decided the task is dead and kills it on sight.
            if sim.m.kill_decided(fid, tid) {
                continue;
            }
            return Err(format!(
                "the master told framework {fid} that task {tid} is {} ({}: {}) while it runs on {} ({aid}), which the master sees as {master_view:?}",
                st.state, st.reason, st.message, a.name
            ));
        }
    }
    Ok(())
}

/// Once the master told a framework a task ended (a terminal state), it
/// never reports that task adopted again — records what it tells.
/// (TASK_UNKNOWN is not terminal: "the master does not know it", and it may
/// show up later, as in Mesos.)
pub fn never_revived(sim: &mut Sim, conn: super::ConnId, ev: &Event) -> Result<(), String> {
    let Event::Update(st) = ev else {
        return Ok(());
    };
    let Some(fid) = sim
        .fws
        .iter()
        .find(|f| f.conn == Some(conn))
        .and_then(|f| f.id.clone())
    else {
        return Ok(());
    };
    let key = (fid, st.task_id.clone());
    if st.source == TaskSource::Master && st.state.is_terminal() {
        let what = format!("{} ({}: {})", st.state, st.reason, st.message);
        sim.told_ended.insert(key, what);
    } else if st.source == TaskSource::Master
        && st.reason == "REASON_AGENT_REREGISTERED"
        && !st.state.is_terminal()
        && let Some(told) = sim.told_ended.get(&key)
    {
        return Err(format!(
            "the master reported task {} of {} as {} (adopted) after telling its framework it was {told}",
            key.1, key.0, st.state
        ));
    }
    Ok(())
}

/// Whether resources reserved for `reserved` may go to a framework of `role`.
fn may_use(reserved: &str, role: &str) -> bool {
    reserved == "*" || reserved == role
}

/// Every offer sent says the role its agent registered with, and a
/// framework is never offered resources reserved for another role.
pub fn offers_respect_reservations(
    sim: &Sim,
    conn: super::ConnId,
    offers: &[agora_core::info::OfferInfo],
) -> Result<(), String> {
    let Some(f) = sim.fws.iter().find(|f| f.conn == Some(conn)) else {
        return Ok(());
    };
    for o in offers {
        let Some(a) = sim.agents.iter().find(|a| a.name == o.hostname) else {
            return Err(format!("offer {} of an unknown agent {}", o.id, o.hostname));
        };
        if o.role != a.registered_role {
            return Err(format!(
                "offer {} of {} says role {:?}, the agent registered with {:?}",
                o.id, a.name, o.role, a.registered_role
            ));
        }
        if !may_use(&a.registered_role, &f.role) {
            return Err(format!(
                "offer {} of {} (reserved for {:?}) went to {} of role {:?}",
                o.id, a.name, a.registered_role, f.name, f.role
            ));
        }
    }
    Ok(())
}

/// After every step: the master's own invariants, and streams agree.
pub fn after_step(sim: &Sim) -> Result<(), String> {
    sim.m.check_invariants()?;
    for f in &sim.fws {
        let Some(id) = &f.id else { continue };
        // No outstanding offer of resources reserved for another role (an
        // agent that changed role has its old offers rescinded).
        for (oid, _, _) in sim.m.outstanding_offers(id) {
            let host = sim.offer_hosts.get(&oid);
            let Some(a) = sim.agents.iter().find(|a| Some(&a.name) == host) else {
                return Err(format!(
                    "outstanding offer {oid} of {} was never sent",
                    f.name
                ));
            };
            if !may_use(&a.registered_role, &f.role) {
                return Err(format!(
                    "offer {oid} of {} (now reserved for {:?}) is outstanding for {} of role {:?}",
                    a.name, a.registered_role, f.name, f.role
                ));
            }
        }
        let master_conn = sim.m.framework_conn(id);
        if let Some(c) = master_conn {
            let sent = sim.sent_offers.get(&c);
            for (oid, _, _) in sim.m.outstanding_offers(id) {
                if !sent.is_some_and(|s| s.contains(&oid)) {
                    return Err(format!(
                        "offer {oid} of {} is outstanding but was not sent on its current stream {c}",
                        f.name
                    ));
                }
            }
            let open = sim.streams.get(&c).is_some_and(|s| !s.closing);
            if !open || f.conn != Some(c) {
                return Err(format!(
                    "the master sends {} on stream {c}, which the scheduler does not hold (it holds {:?})",
                    f.name, f.conn
                ));
            }
        }
        if let Some(c) = f.conn
            && sim.streams.get(&c).is_some_and(|s| !s.closing)
            && master_conn != Some(c)
        {
            return Err(format!(
                "{} holds open stream {c} but the master has {master_conn:?}",
                f.name
            ));
        }
    }
    Ok(())
}

/// Heals every fault and runs the cluster until it settles.
pub fn settle(sim: &mut Sim) -> Result<(), String> {
    sim.note("--- settle");
    for i in 0..sim.agents.len() {
        if sim.agents[i].partitioned {
            agent::disconnect(sim, i)?;
            sim.agents[i].partitioned = false;
        }
    }
    // Long enough for filters, offers, agent timeouts and collection; then
    // a week passes (frameworks the master only knows from agents' reports
    // after a restart, and that never come back, reach their failover
    // timeout); then it settles again.
    for round in 0..140 {
        if (60..68).contains(&round) {
            sim.tick(86_400_000)?;
        }
        while !sim.pending_writes.is_empty() {
            sim.complete_write()?;
        }
        for i in 0..sim.agents.len() {
            agent::connect(sim, i)?;
        }
        for i in 0..sim.fws.len() {
            framework::subscribe(sim, i)?;
        }
        sim.deliver_all()?;
        sim.tick(500)?;
        if round % 10 == 9 {
            for i in 0..sim.fws.len() {
                framework::periodic(sim, i, round % 20 == 19)?;
            }
        }
    }
    sim.deliver_all()?;
    settled(sim)
}

/// What every party must agree on once nothing is failing.
fn settled(sim: &Sim) -> Result<(), String> {
    for a in &sim.agents {
        if a.dead {
            continue;
        }
        if !a.pending.is_empty() {
            return Err(format!(
                "{} still has unacknowledged updates: {:?}",
                a.name,
                a.pending.keys().collect::<Vec<_>>()
            ));
        }
    }
    // Instances each role can place: unreserved agents and its own.
    let unit = task_resources();
    let capacity_for = |role: &str| -> usize {
        sim.agents
            .iter()
            .filter(|a| !a.dead && may_use(&a.registered_role, role))
            .map(|a| {
                let by_cpu = (a.resources.cpus_milli / unit.cpus_milli) as usize;
                let by_mem = (a.resources.mem_mib / unit.mem_mib) as usize;
                by_cpu.min(by_mem).min(a.resources.ports.count() as usize)
            })
            .sum()
    };
    let wanted: usize = sim
        .fws
        .iter()
        .filter(|f| !f.completed)
        .map(|f| f.target)
        .sum();
    for f in &sim.fws {
        let Some(id) = &f.id else { continue };
        let on_agents = running_on_agents(sim, id);
        let in_master: BTreeSet<TaskId> = sim
            .m
            .live_tasks(id)
            .into_iter()
            .map(|(t, _, _)| t)
            .collect();
        if f.completed {
            if !on_agents.is_empty() || !in_master.is_empty() {
                return Err(format!(
                    "{} was torn down but tasks remain: agents {on_agents:?}, master {in_master:?}",
                    f.name
                ));
            }
            continue;
        }
        if sim.m.framework_state(id) != Some(FrameworkState::Connected) {
            return Err(format!(
                "{} is {:?} after settling",
                f.name,
                sim.m.framework_state(id)
            ));
        }
        let believed: BTreeSet<TaskId> = f.tasks.keys().cloned().collect();
        if believed != in_master || in_master != on_agents {
            return Err(format!(
                "{} disagrees about its tasks: scheduler {believed:?}, master {in_master:?}, agents {on_agents:?}",
                f.name
            ));
        }
        if !f.killing.is_empty() {
            return Err(format!("{} still waits for kills: {:?}", f.name, f.killing));
        }
        if on_agents.len() > f.target {
            return Err(format!(
                "{} runs {} instances for a target of {}",
                f.name,
                on_agents.len(),
                f.target
            ));
        }
        // Room for everybody's instances among the agents it may use: it
        // must have reached its target.
        let capacity = capacity_for(&f.role);
        if capacity >= wanted && on_agents.len() < f.target {
            return Err(format!(
                "{} runs {} of {} instances although the cluster has room for {capacity} (suppressed: {})",
                f.name,
                on_agents.len(),
                f.target,
                sim.m.is_suppressed(id)
            ));
        }
    }
    Ok(())
}

fn running_on_agents(sim: &Sim, fid: &FrameworkId) -> BTreeSet<TaskId> {
    sim.agents
        .iter()
        .filter(|a| !a.dead)
        .flat_map(|a| a.live())
        .filter(|(f, _)| *f == fid)
        .map(|(_, t)| t.clone())
        .collect()
}
