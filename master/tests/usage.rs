//! Agents' usage reports reach the framework each task belongs to, at once,
//! and nobody else (the master's state machine, driven by the simulator's
//! agents and frameworks).

#[allow(dead_code)]
mod sim;

use agora_core::protocol::{Event, TaskUsage};
use agora_core::{FrameworkId, TaskId};
use agora_master::state::{ConnId, Output};
use sim::Sim;
use sim::agent::{self, SimAgent};
use sim::framework::{self, SimFramework};
use std::time::Duration;

/// One agent running one task of each of two frameworks, and a second
/// agent (joined later) running nothing.
fn two_frameworks_one_agent() -> Sim {
    let mut sim = Sim::new(11);
    sim.agents.push(SimAgent::new(0, 4, 2048));
    agent::connect(&mut sim, 0).unwrap();
    sim.complete_write().unwrap();
    for n in 0..2 {
        // Both in role `*` (the agent's resources are unreserved).
        let mut f = SimFramework::new(n, true, 1, Duration::from_secs(3600));
        f.role = "*".into();
        sim.fws.push(f);
        framework::subscribe(&mut sim, n).unwrap();
    }
    for _ in 0..20 {
        sim.deliver_all().unwrap();
        sim.tick(500).unwrap();
    }
    for f in &sim.fws {
        assert_eq!(f.tasks.len(), 1, "{:?}", sim.log);
    }
    sim.agents.push(SimAgent::new(1, 2, 1024));
    agent::connect(&mut sim, 1).unwrap();
    sim.complete_write().unwrap();
    sim.deliver_all().unwrap();
    sim
}

fn ids(sim: &Sim, i: usize) -> (FrameworkId, TaskId) {
    let f = &sim.fws[i];
    let tid = f.tasks.keys().next().unwrap().clone();
    (f.id.clone().unwrap(), tid)
}

fn sample(fid: &FrameworkId, tid: &TaskId, cpu: f64) -> TaskUsage {
    TaskUsage {
        framework_id: fid.clone(),
        task_id: tid.clone(),
        cpu_seconds: cpu,
        mem_rss_bytes: 64 << 20,
        mem_working_set_bytes: 48 << 20,
        timestamp: 1_800_000_000.5,
    }
}

/// The usage events in `out`, by framework stream.
fn usage_events(out: &[Output]) -> Vec<(ConnId, Vec<TaskUsage>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToFramework(c, Event::Usage(u)) => Some((*c, u.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_report_is_forwarded_to_each_tasks_own_framework_only() {
    let mut sim = two_frameworks_one_agent();
    let (f0, t0) = ids(&sim, 0);
    let (f1, t1) = ids(&sim, 1);
    let (c0, c1) = (sim.fws[0].conn.unwrap(), sim.fws[1].conn.unwrap());
    let a0 = sim.agents[0].conn.unwrap();
    let now = sim.now;

    // Both tasks in one report: one event per framework, each with its own task.
    let mut out = Vec::new();
    sim.m.usage(
        a0,
        vec![sample(&f0, &t0, 1.5), sample(&f1, &t1, 2.5)],
        now,
        &mut out,
    );
    assert_eq!(
        usage_events(&out),
        vec![
            (c0, vec![sample(&f0, &t0, 1.5)]),
            (c1, vec![sample(&f1, &t1, 2.5)]),
        ]
    );
    assert_eq!(out.len(), 2, "nothing else: {out:?}");
    // The latest sample is kept for /state as before.
    let state = sim.m.snapshot();
    let task = state
        .frameworks
        .iter()
        .flat_map(|f| f.tasks.iter())
        .find(|t| t.id == t0.0)
        .unwrap();
    assert_eq!(task.usage.as_ref().unwrap().cpu_seconds, 1.5);

    // A task of one framework named under the other's id: nobody gets it.
    assert!(!sim.fws[1].tasks.contains_key(&t0));
    let mut out = Vec::new();
    sim.m.usage(a0, vec![sample(&f1, &t0, 9.0)], now, &mut out);
    assert!(usage_events(&out).is_empty(), "{out:?}");

    // Numbers a scheduler cannot divide by: dropped.
    let mut out = Vec::new();
    let mut nan = sample(&f0, &t0, f64::NAN);
    let mut past = sample(&f1, &t1, 1.0);
    past.timestamp = -1.0;
    sim.m.usage(a0, vec![nan.clone(), past], now, &mut out);
    assert!(usage_events(&out).is_empty(), "{out:?}");
    nan.cpu_seconds = f64::INFINITY;
    sim.m.usage(a0, vec![nan], now, &mut out);
    assert!(usage_events(&out).is_empty(), "{out:?}");

    // The same tasks reported by an agent that does not run them: dropped.
    let a1 = sim.agents[1].conn.unwrap();
    let mut out = Vec::new();
    sim.m.usage(
        a1,
        vec![sample(&f0, &t0, 7.0), sample(&f1, &t1, 7.0)],
        now,
        &mut out,
    );
    assert!(usage_events(&out).is_empty(), "{out:?}");
    let state = sim.m.snapshot();
    let task = state
        .frameworks
        .iter()
        .flat_map(|f| f.tasks.iter())
        .find(|t| t.id == t0.0)
        .unwrap();
    assert_eq!(
        task.usage.as_ref().unwrap().cpu_seconds,
        1.5,
        "another agent's report changed the sample"
    );

    // A framework that is not connected gets nothing; the other still does.
    framework::disconnect(&mut sim, 1).unwrap();
    let mut out = Vec::new();
    sim.m.usage(
        a0,
        vec![sample(&f0, &t0, 3.0), sample(&f1, &t1, 3.0)],
        now,
        &mut out,
    );
    assert_eq!(usage_events(&out), vec![(c0, vec![sample(&f0, &t0, 3.0)])]);

    let c = &sim.m.counters;
    assert_eq!((c.usage_reports, c.usage_events), (6, 3));
}
