//! Seeded simulation of the master with failing agents, frameworks and
//! master restarts (see `sim/mod.rs`), plus scripted histories for the bugs
//! the simulator was extended to find.
//!
//! - `AGORA_SIM_SEEDS=n`: how many seeded runs (default 1,600, in 4 shards);
//! - `AGORA_SIM_SEED=s`: replay one run;
//! - `AGORA_SIM_STEPS=n`: steps per run (default 160).

mod sim;

use agora_core::info::{Filters, TaskInfo, TaskSource, TaskStatus};
use agora_core::lifecycle::{AgentState, FrameworkState};
use agora_core::protocol::{Accept, Event, StatusUpdate};
use agora_core::{TaskId, TaskState};
use agora_master::state::Output;
use sim::agent::{self, SimAgent};
use sim::framework::{self, SimFramework};
use sim::{Sim, check};
use std::time::Duration;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn add_agent(sim: &mut Sim) -> Result<(), String> {
    let n = sim.agents.len();
    let cpus = 2 + sim.rng.below(3) as u32;
    let mem = 512 + 256 * sim.rng.below(4) as u64;
    let mut a = SimAgent::new(n, cpus, mem);
    // Half of them reserved for one of the frameworks' roles.
    if sim.rng.chance(50) {
        a.role = sim::ROLES[sim.rng.below(sim::ROLES.len())].into();
    }
    sim.agents.push(a);
    agent::connect(sim, n)
}

fn add_framework(sim: &mut Sim) -> Result<(), String> {
    let n = sim.fws.len();
    let pa = sim.rng.chance(50);
    let target = 1 + sim.rng.below(5);
    // Some fail over quickly (and get torn down when away too long).
    let failover = if sim.rng.chance(25) {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(7 * 86_400)
    };
    sim.fws.push(SimFramework::new(n, pa, target, failover));
    framework::subscribe(sim, n)
}

/// One random event.
fn step(sim: &mut Sim) -> Result<(), String> {
    let na = sim.agents.len();
    let nf = sim.fws.len();
    let a = sim.rng.below(na.max(1));
    let f = sim.rng.below(nf.max(1));
    match sim.rng.below(100) {
        0..=3 if na < 6 => add_agent(sim),
        4..=5 if nf < 3 => add_framework(sim),
        0..=19 => {
            let ms = 100 + sim.rng.below(2900) as u64;
            sim.tick(ms)
        }
        20..=44 => {
            let conns: Vec<_> = sim.streams.keys().copied().collect();
            if conns.is_empty() {
                return Ok(());
            }
            let c = conns[sim.rng.below(conns.len())];
            let n = 1 + sim.rng.below(5);
            sim.deliver(c, n)
        }
        45..=49 => sim.deliver_all(),
        50..=52 => sim.complete_write(),
        53..=54 if na > 0 => agent::disconnect(sim, a),
        55..=58 if na > 0 => agent::connect(sim, a),
        59 if na > 0 => {
            if sim.agents[a].conn.is_some() && !sim.agents[a].partitioned {
                let name = sim.agents[a].name.clone();
                sim.note(format!("{name} is partitioned"));
                sim.agents[a].partitioned = true;
            }
            Ok(())
        }
        60..=61 if na > 0 => {
            if sim.agents[a].partitioned {
                agent::disconnect(sim, a)?;
                sim.agents[a].partitioned = false;
                agent::connect(sim, a)?;
            }
            Ok(())
        }
        62..=65 if na > 0 => {
            // A task ends on its own (wherever the agent is).
            let live: Vec<_> = sim.agents[a]
                .live()
                .map(|(f, t)| (f.clone(), t.clone()))
                .collect();
            if live.is_empty() {
                return Ok(());
            }
            let (fid, tid) = live[sim.rng.below(live.len())].clone();
            let state = if sim.rng.chance(50) {
                TaskState::Finished
            } else {
                TaskState::Failed
            };
            let name = sim.agents[a].name.clone();
            sim.note(format!("{tid} on {name} ends {state}"));
            sim.agents[a].set_state(&fid, &tid, state);
            agent::send_updates(sim, a)
        }
        66 if na > 0 => {
            // An agent that is away loses a task (checkpoint lost).
            if sim.agents[a].conn.is_none() {
                let keys: Vec<_> = sim.agents[a].tasks.keys().cloned().collect();
                if !keys.is_empty() {
                    let k = keys[sim.rng.below(keys.len())].clone();
                    let name = sim.agents[a].name.clone();
                    sim.note(format!("{name} loses {}", k.1));
                    sim.agents[a].tasks.remove(&k);
                    sim.agents[a].pending.remove(&k);
                }
            }
            Ok(())
        }
        67 => sim.restart_master(),
        68..=69 if nf > 0 => framework::disconnect(sim, f),
        70..=74 if nf > 0 => framework::subscribe(sim, f),
        75 if nf > 0 => {
            if sim.rng.chance(50) {
                framework::bad_resubscribe(sim, f)
            } else {
                framework::failover(sim, f)
            }
        }
        76..=77 if nf > 0 => {
            let explicit = sim.rng.chance(50);
            framework::periodic(sim, f, explicit)
        }
        78..=79 if nf > 0 => {
            let tasks: Vec<TaskId> = sim.fws[f].tasks.keys().cloned().collect();
            if tasks.is_empty() {
                return Ok(());
            }
            let t = tasks[sim.rng.below(tasks.len())].clone();
            framework::kill(sim, f, t)
        }
        80..=81 if nf > 0 => {
            let target = sim.rng.below(6);
            framework::scale(sim, f, target)
        }
        82 if nf > 0 => framework::set_suppressed(sim, f, true),
        83 if nf > 0 => framework::set_suppressed(sim, f, false),
        84 if nf > 0 && sim.rng.chance(20) => framework::teardown(sim, f),
        85 => sim.tick(60_000),
        86 if na > 0 && sim.rng.chance(30) => {
            // An agent restarts reserved for another role (or unreserved).
            let role = sim::ROLES[sim.rng.below(sim::ROLES.len())];
            agent::change_role(sim, a, role)
        }
        _ => sim.tick(200),
    }
}

/// One seeded run; on failure, the simulation (for its log) and the violation.
fn run(seed: u64, steps: u64) -> (Sim, Result<(), String>) {
    let mut sim = Sim::new(seed);
    let r = (|| {
        add_agent(&mut sim)?;
        add_agent(&mut sim)?;
        add_framework(&mut sim)?;
        sim.complete_write()?;
        sim.complete_write()?;
        for _ in 0..steps {
            step(&mut sim)?;
        }
        check::settle(&mut sim)
    })();
    (sim, r)
}

fn report(seed: u64, sim: &Sim, e: &str) -> String {
    let tail: Vec<&String> = sim.log.iter().rev().take(60).collect();
    let mut s = format!(
        "simulation seed {seed} failed: {e}\nreplay: AGORA_SIM_SEED={seed} cargo nextest run -p agora-master --test simulation seeded_histories_keep_every_invariant_0\nlast events (newest first):\n"
    );
    for l in tail {
        s.push_str("  ");
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Runs seeds `shard, shard + SHARDS, ...` (or the one `AGORA_SIM_SEED`).
fn run_shard(shard: u64) {
    let steps = env_u64("AGORA_SIM_STEPS", 160);
    let total = env_u64("AGORA_SIM_SEEDS", 1600);
    let seeds: Vec<u64> = match std::env::var("AGORA_SIM_SEED") {
        Ok(s) if shard == 0 => vec![s.parse().expect("AGORA_SIM_SEED is a number")],
        Ok(_) => return,
        Err(_) => (shard..total).step_by(SHARDS as usize).collect(),
    };
    let verbose = std::env::var("AGORA_SIM_VERBOSE").is_ok();
    let mut restarts = 0;
    let n = seeds.len();
    for seed in seeds {
        let t = std::time::Instant::now();
        let (sim, r) = run(seed, steps);
        if verbose {
            eprintln!("seed {seed}: {:?}", t.elapsed());
        }
        if let Err(e) = r {
            panic!("{}", report(seed, &sim, &e));
        }
        restarts += sim.master_restarts;
    }
    assert!(n < 50 || restarts > 0, "no run restarted the master");
}

/// Seeds are spread over a few tests so they run in parallel.
const SHARDS: u64 = 4;

#[test]
fn seeded_histories_keep_every_invariant_0() {
    run_shard(0);
}
#[test]
fn seeded_histories_keep_every_invariant_1() {
    run_shard(1);
}
#[test]
fn seeded_histories_keep_every_invariant_2() {
    run_shard(2);
}
#[test]
fn seeded_histories_keep_every_invariant_3() {
    run_shard(3);
}

// ------------------------------------------------------------ scripted

/// A cluster with one agent and one framework of `target` instances, settled.
fn small(pa: bool, target: usize) -> Sim {
    let mut sim = Sim::new(7);
    sim.agents.push(SimAgent::new(0, 4, 2048));
    agent::connect(&mut sim, 0).unwrap();
    sim.complete_write().unwrap();
    sim.fws
        .push(SimFramework::new(0, pa, target, Duration::from_secs(3600)));
    framework::subscribe(&mut sim, 0).unwrap();
    for _ in 0..10 {
        sim.deliver_all().unwrap();
        sim.tick(500).unwrap();
    }
    assert_eq!(sim.fws[0].tasks.len(), target, "{:?}", sim.log);
    sim
}

fn task_ids(sim: &Sim) -> Vec<TaskId> {
    sim.fws[0].tasks.keys().cloned().collect()
}

/// Bug 1: after a master restart the framework comes back before the
/// agent. The master must not call the agent's tasks LOST/UNKNOWN (the
/// framework would replace them and later kill the originals); it answers
/// once the agent is back, and reports the adopted tasks.
#[test]
fn master_restart_with_the_framework_back_first_keeps_every_instance() {
    for pa in [true, false] {
        let mut sim = small(pa, 3);
        let before = task_ids(&sim);
        sim.restart_master().unwrap();
        framework::subscribe(&mut sim, 0).unwrap();
        // The framework reconciles (explicitly, naming the agent) before the agent is back.
        sim.deliver_all().unwrap();
        sim.tick(300).unwrap();
        sim.deliver_all().unwrap();
        assert_eq!(task_ids(&sim), before, "instances replaced early (pa={pa})");
        agent::connect(&mut sim, 0).unwrap();
        for _ in 0..20 {
            sim.deliver_all().unwrap();
            sim.tick(500).unwrap();
        }
        assert_eq!(
            task_ids(&sim),
            before,
            "originals killed or replaced (pa={pa})"
        );
        let on_agent: Vec<TaskId> = sim.agents[0].live().map(|(_, t)| t.clone()).collect();
        assert_eq!(on_agent, before, "pa={pa}");
        check::settle(&mut sim).unwrap();
    }
}

/// Bug 2: a task that ended while its agent was away is retired at
/// re-registration without giving its resources back twice.
#[test]
fn a_task_that_ended_while_its_agent_was_away_is_not_counted_twice() {
    let mut sim = small(true, 2);
    agent::disconnect(&mut sim, 0).unwrap();
    let (fid, tid) = {
        let (f, t) = sim.agents[0].live().next().unwrap();
        (f.clone(), t.clone())
    };
    sim.agents[0].set_state(&fid, &tid, TaskState::Finished);
    // Re-registration reports FINISHED; every step checks exact accounting.
    agent::connect(&mut sim, 0).unwrap();
    assert_eq!(sim.m.task_state(&fid, &tid), Some(TaskState::Finished));
    // The agent's own FINISHED update follows and must not free anything again.
    agent::send_updates(&mut sim, 0).unwrap();
    sim.deliver_all().unwrap();
    sim.m.check_invariants().unwrap();
    check::settle(&mut sim).unwrap();
}

/// Bug 3: a refused resubscription leaves the framework connected on its
/// stream, receiving offers, exactly as before.
#[test]
fn a_refused_resubscription_changes_nothing() {
    let mut sim = small(true, 1);
    framework::bad_resubscribe(&mut sim, 0).unwrap();
    let id = sim.fws[0].id.clone().unwrap();
    assert_eq!(sim.m.framework_state(&id), Some(FrameworkState::Connected));
    assert_eq!(sim.m.framework_conn(&id), sim.fws[0].conn);
}

/// Bug 4: SUBSCRIBE un-suppresses (Mesos v1), so a scheduler that
/// suppressed before failing over gets offers without reviving.
#[test]
fn subscribe_unsuppresses() {
    let mut sim = small(true, 1);
    framework::set_suppressed(&mut sim, 0, true).unwrap();
    let id = sim.fws[0].id.clone().unwrap();
    assert!(sim.m.is_suppressed(&id));
    framework::disconnect(&mut sim, 0).unwrap();
    framework::subscribe(&mut sim, 0).unwrap();
    assert!(!sim.m.is_suppressed(&id));
}

/// Bug 5: a kill for a task whose agent is away is delivered when the
/// agent re-registers (the scheduler does not retry).
#[test]
fn a_kill_while_the_agent_is_away_is_delivered_when_it_returns() {
    let mut sim = small(true, 2);
    agent::disconnect(&mut sim, 0).unwrap();
    let victim = task_ids(&sim).pop().unwrap();
    framework::scale(&mut sim, 0, 1).unwrap();
    assert!(sim.fws[0].killing.contains(&victim));
    agent::connect(&mut sim, 0).unwrap();
    sim.deliver_all().unwrap();
    sim.deliver_all().unwrap();
    assert!(
        !sim.agents[0].live().any(|(_, t)| t == &victim),
        "the kill was lost"
    );
    check::settle(&mut sim).unwrap();
}

/// After a master restart, a kill of a task the master has not seen yet
/// (its agent is recovering) is carried out when the agent is back.
#[test]
fn a_kill_during_master_recovery_is_carried_out() {
    let mut sim = small(true, 2);
    sim.restart_master().unwrap();
    framework::subscribe(&mut sim, 0).unwrap();
    sim.deliver_all().unwrap();
    let victim = task_ids(&sim).pop().unwrap();
    framework::scale(&mut sim, 0, 1).unwrap();
    assert!(sim.fws[0].killing.contains(&victim));
    agent::connect(&mut sim, 0).unwrap();
    sim.deliver_all().unwrap();
    sim.deliver_all().unwrap();
    assert!(!sim.agents[0].live().any(|(_, t)| t == &victim));
    check::settle(&mut sim).unwrap();
}

/// Bug 8: a status update about a task that lives on another agent is
/// dropped (and acknowledged to its sender), not forwarded.
#[test]
fn an_update_for_a_task_on_another_agent_is_dropped_and_acknowledged() {
    let mut sim = small(true, 1);
    sim.agents.push(SimAgent::new(1, 2, 1024));
    agent::connect(&mut sim, 1).unwrap();
    sim.complete_write().unwrap();
    sim.deliver_all().unwrap();
    let fid = sim.fws[0].id.clone().unwrap();
    let tid = task_ids(&sim)[0].clone();
    let conn = sim.agents[1].conn.unwrap();
    let mut out = Vec::new();
    let st = TaskStatus {
        uuid: Some(vec![9]),
        source: TaskSource::Agent,
        ..TaskStatus::new(tid.clone(), TaskState::Failed)
    };
    sim.m.status_updates(
        conn,
        vec![StatusUpdate {
            framework_id: fid.clone(),
            status: st,
        }],
        sim.now,
        &mut out,
    );
    let forwarded = out
        .iter()
        .any(|o| matches!(o, Output::ToFramework(_, Event::Update(_))));
    assert!(!forwarded, "{out:?}");
    let acked = out.iter().any(|o| {
        matches!(o, Output::ToAgent(c, agora_core::protocol::MasterMessage::Acks(a)) if *c == conn && a.len() == 1)
    });
    assert!(acked, "{out:?}");
    assert_eq!(sim.m.task_state(&fid, &tid), Some(TaskState::Running));
    assert_eq!(sim.m.counters.status_updates_misrouted, 1);
}

/// Bug 10: 1,000 short-lived frameworks leave the master's memory and
/// `/state` bounded.
#[test]
fn short_lived_frameworks_leave_memory_bounded() {
    let mut sim = Sim::new(3);
    sim.agents.push(SimAgent::new(0, 4, 4096));
    agent::connect(&mut sim, 0).unwrap();
    sim.complete_write().unwrap();
    sim.deliver_all().unwrap();
    let mut sizes = Vec::new();
    for n in 0..1000 {
        sim.fws
            .push(SimFramework::new(n, n % 2 == 0, 1, Duration::ZERO));
        framework::subscribe(&mut sim, n).unwrap();
        sim.deliver_all().unwrap();
        sim.tick(10).unwrap();
        sim.deliver_all().unwrap();
        framework::teardown(&mut sim, n).unwrap();
        sim.deliver_all().unwrap();
        if n % 100 == 99 {
            let state = serde_json::to_vec(&sim.m.snapshot()).unwrap();
            sizes.push((sim.m.sizes(), state.len()));
        }
    }
    let (live, completed, _) = sim.m.sizes();
    assert_eq!(live, 0);
    assert_eq!(completed, sim.cfg.max_completed_frameworks);
    // /state does not grow once the completed list is full.
    let last = sizes.last().unwrap().1;
    assert!(
        sizes
            .iter()
            .skip(1)
            .all(|(_, s)| *s == last || s.abs_diff(last) < last / 10),
        "{sizes:?}"
    );
    assert!(last < 64 * 1024, "/state is {last} bytes");
}

/// Agents unreachable past `agent_gc_after` leave memory and the registry;
/// their partition-aware tasks become TASK_GONE.
#[test]
fn long_unreachable_agents_are_collected() {
    let mut sim = small(true, 2);
    sim.agents[0].partitioned = true;
    sim.tick(6_000).unwrap();
    let aid = sim.agents[0].id.clone().unwrap();
    assert_eq!(sim.m.agent_state(&aid), Some(AgentState::Unreachable));
    let fid = sim.fws[0].id.clone().unwrap();
    let tid = task_ids(&sim)[0].clone();
    assert_eq!(sim.m.task_state(&fid, &tid), Some(TaskState::Unreachable));
    sim.tick(sim.cfg.agent_gc_after.as_millis() as u64).unwrap();
    assert_eq!(sim.m.agent_state(&aid), None);
    assert_eq!(sim.m.task_state(&fid, &tid), Some(TaskState::Gone));
    use agora_master::store::Registry;
    assert!(sim.registry.load().unwrap().iter().all(|a| a.id != aid));
    // It comes back as a stranger: its old tasks are killed, the framework
    // keeps its replacements.
    check::settle(&mut sim).unwrap();
}

#[test]
fn task_ids_stay_unique_per_framework() {
    let mut sim = small(true, 0);
    let fid = sim.fws[0].id.clone().unwrap();
    framework::set_suppressed(&mut sim, 0, false).unwrap();
    sim.tick(1000).unwrap();
    let (oid, _, _) = sim.m.outstanding_offers(&fid).remove(0);
    let t = TaskInfo::new(TaskId::new("a"), sim::task_resources());
    let mut out = vec![];
    sim.m
        .accept(
            Accept {
                framework_id: fid.clone(),
                offer_ids: vec![oid],
                tasks: vec![t.clone(), t],
                filters: Filters::default(),
            },
            sim.now,
            &mut out,
        )
        .unwrap();
    let errors: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::ToFramework(_, Event::Update(s)) => Some(s.message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("used twice"), "{}", errors[0]);
    assert_eq!(
        sim.m.task_state(&fid, &TaskId::new("a")),
        Some(TaskState::Staging)
    );
}

/// Bug 1, second half: a task adopted from a re-registering agent is
/// reported to its framework, even one that did not ask about it.
#[test]
fn adopted_tasks_are_reported_to_their_framework() {
    let mut sim = small(true, 2);
    let fid = sim.fws[0].id.clone().unwrap();
    sim.restart_master().unwrap();
    framework::subscribe(&mut sim, 0).unwrap();
    let conn = sim.fws[0].conn.unwrap();
    let c = sim.conn();
    sim.agents[0].conn = Some(c);
    let reg = sim.agents[0].registration();
    let mut out = Vec::new();
    sim.m.register_agent(c, reg, sim.now, &mut out).unwrap();
    let mut reported: Vec<TaskId> = out
        .iter()
        .filter_map(|o| match o {
            Output::ToFramework(to, Event::Update(s))
                if *to == conn && s.reason == "REASON_AGENT_REREGISTERED" =>
            {
                assert_eq!(s.state, TaskState::Running);
                Some(s.task_id.clone())
            }
            _ => None,
        })
        .collect();
    reported.sort();
    assert_eq!(reported, task_ids(&sim));
    for t in task_ids(&sim) {
        assert_eq!(sim.m.task_state(&fid, &t), Some(TaskState::Running));
    }
}

/// A task id stays in use until the terminal update of its task is
/// acknowledged (Mesos semantics): a relaunch before that would reach an
/// agent that still holds the old task, which drops it.
#[test]
fn a_task_id_is_reusable_only_once_its_terminal_update_is_acknowledged() {
    let mut sim = small(true, 1);
    let fid = sim.fws[0].id.clone().unwrap();
    let tid = task_ids(&sim)[0].clone();
    sim.agents[0].set_state(&fid, &tid, TaskState::Finished);
    agent::send_updates(&mut sim, 0).unwrap();
    // The FINISHED update waits, unacknowledged, on the framework's stream.
    framework::scale(&mut sim, 0, 0).unwrap();
    framework::set_suppressed(&mut sim, 0, false).unwrap();
    sim.tick(1000).unwrap();
    let relaunch = |sim: &mut Sim| {
        let offers = sim.m.outstanding_offers(&fid);
        assert!(
            !offers.is_empty(),
            "no offer: {:?} {:?}",
            sim.m.snapshot().agents,
            sim.log
        );
        let (oid, _, _) = offers[0].clone();
        let mut out = vec![];
        sim.m
            .accept(
                Accept {
                    framework_id: fid.clone(),
                    offer_ids: vec![oid],
                    tasks: vec![TaskInfo::new(tid.clone(), sim::task_resources())],
                    filters: Filters::default(),
                },
                sim.now,
                &mut out,
            )
            .unwrap();
        out.iter()
            .find_map(|o| match o {
                Output::ToFramework(_, Event::Update(s)) if s.task_id == tid => {
                    Some(s.message.clone())
                }
                _ => None,
            })
            .unwrap_or_default()
    };
    let refused = relaunch(&mut sim);
    assert!(refused.contains("not acknowledged"), "{refused}");
    // The framework acknowledges FINISHED: the id is free again.
    sim.deliver_all().unwrap();
    framework::set_suppressed(&mut sim, 0, false).unwrap();
    sim.tick(1000).unwrap();
    assert_eq!(relaunch(&mut sim), "", "the relaunch should be accepted");
    assert_eq!(sim.m.task_state(&fid, &tid), Some(TaskState::Staging));
}

/// After a master restart, agents known from the registry get the
/// re-registration timeout (not the agent timeout) to come back: agents
/// reconnect with back-off, and calling them unreachable too early makes
/// frameworks replace tasks that still run.
#[test]
fn recovered_agents_get_the_reregistration_timeout() {
    let mut sim = small(true, 2);
    let aid = sim.agents[0].id.clone().unwrap();
    sim.restart_master().unwrap();
    sim.tick(sim.cfg.agent_timeout.as_millis() as u64 + 1000)
        .unwrap();
    assert_eq!(sim.m.agent_state(&aid), Some(AgentState::Recovered));
    sim.tick(sim.cfg.agent_reregister_timeout.as_millis() as u64)
        .unwrap();
    assert_eq!(sim.m.agent_state(&aid), Some(AgentState::Unreachable));
}

/// A re-registration reporting the same task twice, or two tasks on one
/// port, is refused before anything changes (the allocator could not
/// account for it).
#[test]
fn inconsistent_reregistrations_are_refused() {
    let mut sim = small(true, 2);
    agent::disconnect(&mut sim, 0).unwrap();
    let good = sim.agents[0].registration();
    let mut twice = good.clone();
    twice.tasks.push(twice.tasks[0].clone());
    let mut shared_port = good.clone();
    let port = shared_port.tasks[0].task.resources.ports.clone();
    shared_port.tasks[1].task.resources.ports = port;
    for (reg, field) in [
        (twice, "register.tasks[2]"),
        (shared_port, "register.tasks[1].resources.ports"),
    ] {
        let c = sim.conn();
        let mut out = Vec::new();
        let e = sim.m.register_agent(c, reg, sim.now, &mut out).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(out.is_empty(), "{out:?}");
        sim.m.check_invariants().unwrap();
    }
    let mut unknown = good.clone();
    unknown.tasks[0].state = TaskState::Unknown;
    let c = sim.conn();
    let e = sim
        .m
        .register_agent(c, unknown, sim.now, &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.field, "register.tasks[0].state");
    agent::connect(&mut sim, 0).unwrap();
    check::settle(&mut sim).unwrap();
}

/// An agent cannot report a state only the master decides: such an update
/// is dropped, acknowledged, and counted.
#[test]
fn updates_with_master_only_states_are_dropped() {
    let mut sim = small(true, 1);
    let fid = sim.fws[0].id.clone().unwrap();
    let tid = task_ids(&sim)[0].clone();
    let conn = sim.agents[0].conn.unwrap();
    let mut out = Vec::new();
    let st = TaskStatus {
        uuid: Some(vec![7]),
        source: TaskSource::Agent,
        ..TaskStatus::new(tid.clone(), TaskState::Unreachable)
    };
    sim.m.status_updates(
        conn,
        vec![StatusUpdate {
            framework_id: fid.clone(),
            status: st,
        }],
        sim.now,
        &mut out,
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::ToFramework(..))),
        "{out:?}"
    );
    assert_eq!(sim.m.counters.status_updates_refused, 1);
    assert_eq!(sim.m.task_state(&fid, &tid), Some(TaskState::Running));
}

/// A framework torn down while one of its agents is away stays dead even
/// once it has left the bounded list of completed frameworks: when the
/// agent is back its tasks are killed, not adopted by a recovered framework.
#[test]
fn a_torn_down_framework_is_not_recovered_from_an_agent_report() {
    let mut sim = small(true, 2);
    let fid = sim.fws[0].id.clone().unwrap();
    agent::disconnect(&mut sim, 0).unwrap();
    framework::teardown(&mut sim, 0).unwrap();
    // Enough other teardowns to push it out of the completed list.
    for n in 1..=sim.cfg.max_completed_frameworks + 1 {
        sim.fws
            .push(SimFramework::new(n, true, 0, Duration::from_secs(60)));
        framework::subscribe(&mut sim, n).unwrap();
        sim.deliver_all().unwrap();
        framework::teardown(&mut sim, n).unwrap();
    }
    assert_eq!(
        sim.m.framework_state(&fid),
        None,
        "evicted from the completed list"
    );
    agent::connect(&mut sim, 0).unwrap();
    sim.deliver_all().unwrap();
    assert_eq!(
        sim.m.framework_state(&fid),
        None,
        "recovered from the agent's report"
    );
    assert_eq!(sim.agents[0].live().count(), 0, "its tasks must be killed");
    check::settle(&mut sim).unwrap();
}

/// A first registration whose stream closes before its admission is
/// durable is forgotten (it registers afresh), not kept as a recovering
/// agent that holds up answers and lingers in the registry.
#[test]
fn an_agent_gone_before_its_admission_is_forgotten() {
    let mut sim = Sim::new(5);
    sim.agents.push(SimAgent::new(0, 2, 1024));
    agent::connect(&mut sim, 0).unwrap();
    let (_, _, before) = sim.m.sizes();
    assert_eq!(before, 1);
    agent::disconnect(&mut sim, 0).unwrap();
    sim.complete_write().unwrap();
    let (_, _, after) = sim.m.sizes();
    assert_eq!(after, 0);
    use agora_master::store::Registry;
    assert!(sim.registry.load().unwrap().is_empty());
    agent::connect(&mut sim, 0).unwrap();
    sim.complete_write().unwrap();
    sim.deliver_all().unwrap();
    assert!(sim.agents[0].id.is_some());
}

/// Completed tasks are bounded per framework.
#[test]
fn completed_tasks_are_bounded_per_framework() {
    let mut sim = small(true, 4);
    let fid = sim.fws[0].id.clone().unwrap();
    let keep = sim.cfg.completed_tasks_per_framework;
    for _ in 0..(keep / 4 + 5) {
        let live: Vec<_> = sim.agents[0]
            .live()
            .map(|(f, t)| (f.clone(), t.clone()))
            .collect();
        for (f, t) in live {
            sim.agents[0].set_state(&f, &t, TaskState::Finished);
        }
        agent::send_updates(&mut sim, 0).unwrap();
        for _ in 0..4 {
            sim.deliver_all().unwrap();
            sim.tick(1000).unwrap();
        }
    }
    let st = sim.m.snapshot();
    let fw = st.frameworks.iter().find(|f| f.id == fid.0).unwrap();
    assert_eq!(fw.completed_tasks.len(), keep);
}

/// An agent marked unreachable stays unreachable across a master restart
/// (the registry says so), with the time it became so.
#[test]
fn unreachable_agents_stay_unreachable_across_a_restart() {
    let mut sim = small(false, 1);
    let aid = sim.agents[0].id.clone().unwrap();
    sim.agents[0].partitioned = true;
    sim.tick(sim.cfg.agent_timeout.as_millis() as u64 + 500)
        .unwrap();
    assert_eq!(sim.m.agent_state(&aid), Some(AgentState::Unreachable));
    sim.tick(sim.cfg.agent_gc_after.as_millis() as u64 / 2)
        .unwrap();
    sim.restart_master().unwrap();
    assert_eq!(sim.m.agent_state(&aid), Some(AgentState::Unreachable));
    // Collected on time: the age counts from when it became unreachable.
    sim.tick(sim.cfg.agent_gc_after.as_millis() as u64 / 2 + 1000)
        .unwrap();
    assert_eq!(sim.m.agent_state(&aid), None);
}

/// An agent restarted in another role is accepted: its tasks keep running
/// with their framework (of another role), its offers go to the new role's
/// frameworks only from then on, and a restarted master knows the role
/// from its registry.
#[test]
fn an_agent_reregistering_in_another_role_keeps_its_tasks_and_offers_follow_the_role() {
    let mut sim = small(true, 2);
    assert_eq!(sim.fws[0].role, "*");
    let before = task_ids(&sim);
    let aid = sim.agents[0].id.clone().unwrap();
    assert_eq!(sim.m.agent_role(&aid), Some(("*".into(), None)));
    // A framework of role `web` (fw1), satisfied with nothing for now.
    sim.fws
        .push(SimFramework::new(1, true, 0, Duration::from_secs(3600)));
    assert_eq!(sim.fws[1].role, "web");
    framework::subscribe(&mut sim, 1).unwrap();

    agent::change_role(&mut sim, 0, "web").unwrap();
    assert_eq!(
        sim.m.agent_role(&aid),
        Some(("web".into(), Some("web".into())))
    );
    // fw0 (role `*`) now wants more, fw1 (role `web`) too: only fw1 is
    // offered the agent (checked after every step), and launches there.
    framework::scale(&mut sim, 0, 3).unwrap();
    framework::scale(&mut sim, 1, 2).unwrap();
    for _ in 0..20 {
        sim.deliver_all().unwrap();
        sim.tick(500).unwrap();
    }
    assert_eq!(task_ids(&sim), before, "fw0 keeps its tasks, gets no more");
    assert_eq!(sim.fws[1].tasks.len(), 2, "{:?}", sim.log);
    let fw0 = sim.fws[0].id.clone().unwrap();
    assert!(sim.m.outstanding_offers(&fw0).is_empty());

    sim.restart_master().unwrap();
    assert_eq!(sim.m.agent_role(&aid).map(|r| r.0), Some("web".into()));
    check::settle(&mut sim).unwrap();
    assert_eq!(task_ids(&sim), before);
}

/// Defence in depth: an ACCEPT of an offer whose agent is reserved for
/// another role is refused (offers never carry such resources; the test
/// hook changes the agent's role behind the offer's back).
#[test]
fn an_accept_of_resources_reserved_for_another_role_is_refused() {
    let mut sim = small(true, 0);
    let fid = sim.fws[0].id.clone().unwrap();
    framework::set_suppressed(&mut sim, 0, false).unwrap();
    sim.tick(1000).unwrap();
    let (oid, aid, _) = sim.m.outstanding_offers(&fid).remove(0);
    sim.m.test_only_set_agent_role(&aid, "web");
    let mut out = vec![];
    let r = sim.m.accept(
        Accept {
            framework_id: fid.clone(),
            offer_ids: vec![oid],
            tasks: vec![TaskInfo::new(TaskId::new("t"), sim::task_resources())],
            filters: Filters::default(),
        },
        sim.now,
        &mut out,
    );
    let e = r.expect_err("launched on resources reserved for another role");
    let msg = e.to_string();
    assert!(
        msg.contains("reserved for role \"web\"") && msg.contains("of role \"*\""),
        "{msg}"
    );
    let errors: Vec<TaskState> = out
        .iter()
        .filter_map(|o| match o {
            Output::ToFramework(_, Event::Update(s)) => Some(s.state),
            _ => None,
        })
        .collect();
    assert_eq!(errors, vec![TaskState::Error]);
    assert_eq!(sim.m.task_state(&fid, &TaskId::new("t")), None);
}
