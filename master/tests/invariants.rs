//! Property tests: random sequences of agent, framework and offer events
//! against the master's state machine, checking after every step that
//! - no resource is offered to two frameworks at once (ports disjoint,
//!   offered + used ≤ total on every agent, allocator accounting exact);
//! - every launched task's resources came from an accepted outstanding offer;
//! - a rescinded, declined or used offer cannot be accepted;
//! - a foreign offer cannot be accepted.

use agora_core::{FrameworkId, Resources, TaskId};
use agora_master::MasterConfig;
use agora_master::state::{ConnId, Master, Output, Pending};
use agora_proto::pb;
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Step {
    AddAgent {
        cpus: u8,
        mem: u16,
        ports: u8,
    },
    Subscribe {
        partition_aware: bool,
    },
    Tick {
        ms: u16,
    },
    Accept {
        fw: u8,
        offer: u8,
        tasks: Vec<(u8, u16, u8)>,
    },
    AcceptDead {
        fw: u8,
    },
    AcceptForeign {
        fw: u8,
    },
    Decline {
        fw: u8,
        offer: u8,
        refuse_s: u8,
    },
    FinishTask {
        task: u8,
    },
    CloseAgent {
        agent: u8,
    },
    ReconnectAgent {
        agent: u8,
    },
    CloseFramework {
        fw: u8,
    },
    Suppress {
        fw: u8,
    },
    Revive {
        fw: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (1u8..8, 256u16..4096, 0u8..5).prop_map(|(cpus, mem, ports)| Step::AddAgent { cpus, mem, ports }),
        1 => any::<bool>().prop_map(|partition_aware| Step::Subscribe { partition_aware }),
        4 => (0u16..3000).prop_map(|ms| Step::Tick { ms }),
        6 => (any::<u8>(), any::<u8>(), prop::collection::vec((1u8..40, 1u16..2048, 0u8..3), 0..4))
            .prop_map(|(fw, offer, tasks)| Step::Accept { fw, offer, tasks }),
        1 => any::<u8>().prop_map(|fw| Step::AcceptDead { fw }),
        1 => any::<u8>().prop_map(|fw| Step::AcceptForeign { fw }),
        2 => (any::<u8>(), any::<u8>(), 0u8..10).prop_map(|(fw, offer, refuse_s)| Step::Decline { fw, offer, refuse_s }),
        3 => any::<u8>().prop_map(|task| Step::FinishTask { task }),
        1 => any::<u8>().prop_map(|agent| Step::CloseAgent { agent }),
        1 => any::<u8>().prop_map(|agent| Step::ReconnectAgent { agent }),
        1 => any::<u8>().prop_map(|fw| Step::CloseFramework { fw }),
        1 => any::<u8>().prop_map(|fw| Step::Suppress { fw }),
        1 => any::<u8>().prop_map(|fw| Step::Revive { fw }),
    ]
}

struct SimAgent {
    id: Option<String>,
    conn: Option<ConnId>,
    info: pb::AgentInfo,
    /// What the agent would report on re-registration.
    tasks: HashMap<(String, String), pb::TaskInfo>,
}

struct Sim {
    m: Master,
    now: Instant,
    next_conn: ConnId,
    agents: Vec<SimAgent>,
    fws: Vec<(FrameworkId, ConnId)>,
    closed: std::collections::HashSet<usize>,
    /// Offer id → (framework, agent id, resources) as sent in OFFERS events.
    offers_seen: HashMap<String, (String, String, Resources)>,
    dead_offers: Vec<String>,
    running: Vec<(String, String, String)>, // (framework, task, agent)
    task_seq: u64,
}

impl Sim {
    fn new() -> Self {
        let now = Instant::now();
        let cfg = MasterConfig {
            master_id: "m".into(),
            agent_timeout: Duration::from_secs(5),
            offer_timeout: Some(Duration::from_secs(8)),
            ..MasterConfig::default()
        };
        Sim {
            m: Master::new(cfg, vec![], now),
            now,
            next_conn: 1,
            agents: vec![],
            fws: vec![],
            closed: Default::default(),
            offers_seen: HashMap::new(),
            dead_offers: vec![],
            running: vec![],
            task_seq: 0,
        }
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    /// Performs outputs the way the actor would, recording what we need.
    fn absorb(&mut self, out: Vec<Output>) -> Result<(), TestCaseError> {
        let mut queue = out;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for o in queue {
                match o {
                    Output::Persist(_, Some(p)) => {
                        let Pending::AdmitAgent { .. } = &p;
                        self.m.persisted(p, self.now, &mut next);
                    }
                    Output::ToAgent(conn, msg) => match msg.message {
                        Some(pb::master_message::Message::Registered(r)) => {
                            if let Some(a) = self.agents.iter_mut().find(|a| a.conn == Some(conn)) {
                                a.id = Some(r.agent_id);
                            }
                        }
                        Some(pb::master_message::Message::RunTasks(run)) => {
                            let fid = run.framework.map(|f| f.framework_id).unwrap_or_default();
                            if let Some(a) = self.agents.iter_mut().find(|a| a.conn == Some(conn)) {
                                for t in run.tasks {
                                    a.tasks.insert((fid.clone(), t.task_id.clone()), t.clone());
                                    self.running.push((
                                        fid.clone(),
                                        t.task_id.clone(),
                                        t.agent_id.clone(),
                                    ));
                                }
                            }
                        }
                        _ => {}
                    },
                    Output::ToFramework(_, ev) => match ev.event {
                        Some(pb::event::Event::Offers(o)) => {
                            for of in o.offers {
                                let r =
                                    agora_proto::convert::resources("offer", of.resources.as_ref())
                                        .unwrap();
                                self.offers_seen
                                    .insert(of.offer_id, (of.framework_id, of.agent_id, r));
                            }
                        }
                        Some(pb::event::Event::Rescind(r)) => {
                            self.offers_seen.remove(&r.offer_id);
                            self.dead_offers.push(r.offer_id);
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
            queue = next;
        }
        self.m.check_invariants().map_err(TestCaseError::fail)?;
        Ok(())
    }

    fn offer_of(&self, fw: usize, pick: u8) -> Option<(String, String, Resources)> {
        let fid = &self.fws.get(fw)?.0;
        let mut mine: Vec<_> = self
            .offers_seen
            .iter()
            .filter(|(_, (f, _, _))| f == &fid.0)
            .map(|(id, (_, a, r))| (id.clone(), a.clone(), r.clone()))
            .collect();
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        if mine.is_empty() {
            return None;
        }
        let i = pick as usize % mine.len();
        Some(mine[i].clone())
    }

    fn run(&mut self, s: Step) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        match s {
            Step::AddAgent { cpus, mem, ports } => {
                let conn = self.conn();
                let mut r = Resources::new(f64::from(cpus), u64::from(mem), 100).unwrap();
                if ports > 0 {
                    r.ports =
                        agora_core::Ranges::range(31000, 31000 + u32::from(ports) * 2).unwrap();
                }
                let info = pb::AgentInfo {
                    hostname: format!("h{}", self.agents.len()),
                    resources: Some((&r).into()),
                    ..Default::default()
                };
                self.agents.push(SimAgent {
                    id: None,
                    conn: Some(conn),
                    info: info.clone(),
                    tasks: HashMap::new(),
                });
                self.m
                    .register_agent(
                        conn,
                        pb::Register {
                            agent: Some(info),
                            tasks: vec![],
                            frameworks: vec![],
                        },
                        self.now,
                        &mut out,
                    )
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Step::Subscribe { partition_aware } => {
                let conn = self.conn();
                let info = pb::FrameworkInfo {
                    name: "f".into(),
                    failover_timeout_seconds: 3.0,
                    partition_aware,
                    ..Default::default()
                };
                let id = self.m.subscribe(conn, info, self.now, &mut out).unwrap();
                self.fws.push((id, conn));
            }
            Step::Tick { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                // Live agents heartbeat unless closed.
                for a in &self.agents {
                    if let Some(c) = a.conn {
                        self.m.agent_heartbeat(c, self.now, &mut out);
                    }
                }
                self.m.tick(self.now, &mut out);
                self.m.allocate(self.now, &mut out);
            }
            Step::Accept { fw, offer, tasks } => {
                if self.fws.is_empty() {
                    return Ok(());
                }
                let fw = fw as usize % self.fws.len();
                if self.closed.contains(&fw) {
                    let req = pb::AcceptRequest {
                        framework_id: self.fws[fw].0.0.clone(),
                        ..Default::default()
                    };
                    prop_assert!(
                        self.m.accept(req, self.now, &mut out).is_err(),
                        "closed framework accepted"
                    );
                    return self.absorb(out);
                }
                let Some((oid, agent, offered)) = self.offer_of(fw, offer) else {
                    return Ok(());
                };
                let fid = self.fws[fw].0.clone();
                let mut infos = Vec::new();
                for (c, m, p) in tasks {
                    self.task_seq += 1;
                    let mut r = Resources::new(f64::from(c) / 10.0, u64::from(m), 0).unwrap();
                    if p > 0 {
                        r.ports = offered.ports.take(u64::from(p));
                    }
                    infos.push(pb::TaskInfo {
                        task_id: format!("t{}", self.task_seq),
                        resources: Some((&r).into()),
                        ..Default::default()
                    });
                }
                let before = self.running.len();
                let req = pb::AcceptRequest {
                    framework_id: fid.0.clone(),
                    offer_ids: vec![oid.clone()],
                    operations: vec![pb::Operation {
                        operation: Some(pb::operation::Operation::Launch(pb::Launch {
                            tasks: infos,
                        })),
                    }],
                    filters: None,
                };
                self.m
                    .accept(req, self.now, &mut out)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.offers_seen.remove(&oid);
                self.dead_offers.push(oid);
                self.absorb(std::mem::take(&mut out))?;
                // Launched tasks fit in the accepted offer, on its agent.
                let mut sum = Resources::default();
                for (_, tid, a) in &self.running[before..] {
                    prop_assert_eq!(a, &agent);
                    let t = self
                        .agents
                        .iter()
                        .flat_map(|a| a.tasks.iter())
                        .find(|((f, t), _)| f == &fid.0 && t == tid)
                        .unwrap()
                        .1;
                    let r = agora_proto::convert::resources("t", t.resources.as_ref()).unwrap();
                    prop_assert!(!sum.ports.intersects(&r.ports));
                    sum.add_assign(&r);
                }
                prop_assert!(
                    offered.contains(&sum),
                    "launched {} from offer {}",
                    sum,
                    offered
                );
            }
            Step::AcceptDead { fw } => {
                if self.fws.is_empty() || self.dead_offers.is_empty() {
                    return Ok(());
                }
                let fw = fw as usize % self.fws.len();
                let oid = self.dead_offers[fw % self.dead_offers.len()].clone();
                let before = self.running.len();
                let req = pb::AcceptRequest {
                    framework_id: self.fws[fw].0.0.clone(),
                    offer_ids: vec![oid],
                    operations: vec![pb::Operation {
                        operation: Some(pb::operation::Operation::Launch(pb::Launch {
                            tasks: vec![pb::TaskInfo {
                                task_id: "dead".into(),
                                resources: Some((&Resources::new(0.1, 1, 0).unwrap()).into()),
                                ..Default::default()
                            }],
                        })),
                    }],
                    filters: None,
                };
                prop_assert!(self.m.accept(req, self.now, &mut out).is_err());
                self.absorb(std::mem::take(&mut out))?;
                prop_assert_eq!(self.running.len(), before);
            }
            Step::AcceptForeign { fw } => {
                if self.fws.len() < 2 {
                    return Ok(());
                }
                let fw = fw as usize % self.fws.len();
                let other = (fw + 1) % self.fws.len();
                let Some((oid, _, _)) = self.offer_of(other, 0) else {
                    return Ok(());
                };
                let before = self.running.len();
                let req = pb::AcceptRequest {
                    framework_id: self.fws[fw].0.0.clone(),
                    offer_ids: vec![oid.clone()],
                    operations: vec![],
                    filters: None,
                };
                prop_assert!(self.m.accept(req, self.now, &mut out).is_err());
                self.absorb(std::mem::take(&mut out))?;
                prop_assert_eq!(self.running.len(), before);
                // The owner can still use it.
                prop_assert!(
                    self.offers_seen.contains_key(&oid) || self.dead_offers.contains(&oid)
                );
            }
            Step::Decline {
                fw,
                offer,
                refuse_s,
            } => {
                if self.fws.is_empty() {
                    return Ok(());
                }
                let fw = fw as usize % self.fws.len();
                if self.closed.contains(&fw) {
                    return Ok(());
                }
                let Some((oid, _, _)) = self.offer_of(fw, offer) else {
                    return Ok(());
                };
                let req = pb::DeclineRequest {
                    framework_id: self.fws[fw].0.0.clone(),
                    offer_ids: vec![oid.clone()],
                    filters: Some(pb::Filters {
                        refuse_seconds: f64::from(refuse_s),
                        has_refuse_seconds: true,
                    }),
                };
                self.m
                    .decline(req, self.now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.offers_seen.remove(&oid);
                self.dead_offers.push(oid);
            }
            Step::FinishTask { task } => {
                if self.running.is_empty() {
                    return Ok(());
                }
                let (fid, tid, agent) = self.running.remove(task as usize % self.running.len());
                let Some(a) = self
                    .agents
                    .iter_mut()
                    .find(|a| a.id.as_deref() == Some(agent.as_str()))
                else {
                    return Ok(());
                };
                a.tasks.remove(&(fid.clone(), tid.clone()));
                if let Some(conn) = a.conn {
                    let st = pb::TaskStatus {
                        task_id: tid,
                        state: pb::TaskState::TaskFinished as i32,
                        uuid: vec![1, 2, 3],
                        ..Default::default()
                    };
                    self.m.status_updates(
                        conn,
                        vec![pb::StatusUpdate {
                            framework_id: fid,
                            status: Some(st),
                        }],
                        self.now,
                        &mut out,
                    );
                }
            }
            Step::CloseAgent { agent } => {
                if self.agents.is_empty() {
                    return Ok(());
                }
                let i = agent as usize % self.agents.len();
                if let Some(c) = self.agents[i].conn.take() {
                    self.m.agent_closed(c, &mut out);
                }
            }
            Step::ReconnectAgent { agent } => {
                if self.agents.is_empty() {
                    return Ok(());
                }
                let i = agent as usize % self.agents.len();
                if self.agents[i].conn.is_some() || self.agents[i].id.is_none() {
                    return Ok(());
                }
                let conn = self.conn();
                let a = &mut self.agents[i];
                a.conn = Some(conn);
                let mut info = a.info.clone();
                info.agent_id = a.id.clone().unwrap_or_default();
                let tasks = a
                    .tasks
                    .iter()
                    .map(|((f, _), t)| pb::AgentTask {
                        task: Some(t.clone()),
                        framework_id: f.clone(),
                        state: pb::TaskState::TaskRunning as i32,
                    })
                    .collect();
                self.m
                    .register_agent(
                        conn,
                        pb::Register {
                            agent: Some(info),
                            tasks,
                            frameworks: vec![],
                        },
                        self.now,
                        &mut out,
                    )
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Step::CloseFramework { fw } => {
                if self.fws.is_empty() {
                    return Ok(());
                }
                let i = fw as usize % self.fws.len();
                let (fid, conn) = self.fws[i].clone();
                self.m.framework_closed(conn, self.now, &mut out);
                self.closed.insert(i);
                // A closed stream hears no RESCIND: its offers are simply gone.
                let gone: Vec<String> = self
                    .offers_seen
                    .iter()
                    .filter(|(_, (f, _, _))| f == &fid.0)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    self.offers_seen.remove(&k);
                    self.dead_offers.push(k);
                }
            }
            Step::Suppress { fw } => {
                if let Some((id, _)) = self.fws.get(fw as usize % self.fws.len().max(1)) {
                    let _ = self.m.suppress(&id.0);
                }
            }
            Step::Revive { fw } => {
                if let Some((id, _)) = self.fws.get(fw as usize % self.fws.len().max(1)) {
                    let _ = self.m.revive(&id.0);
                }
            }
        }
        self.m.allocate(self.now, &mut out);
        self.absorb(out)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn offer_loop_invariants_hold(steps in prop::collection::vec(step(), 1..80)) {
        let mut sim = Sim::new();
        // Always start with something to allocate.
        sim.run(Step::AddAgent { cpus: 4, mem: 2048, ports: 2 })?;
        sim.run(Step::Subscribe { partition_aware: true })?;
        sim.run(Step::Subscribe { partition_aware: false })?;
        for s in steps {
            sim.run(s)?;
        }
        // Drain: everything finishes, nothing leaks.
        while !sim.running.is_empty() {
            sim.run(Step::FinishTask { task: 0 })?;
        }
        sim.run(Step::Tick { ms: 1 })?;
    }
}

#[test]
fn task_ids_stay_unique_per_framework() {
    let mut sim = Sim::new();
    sim.run(Step::AddAgent {
        cpus: 8,
        mem: 4096,
        ports: 0,
    })
    .unwrap();
    sim.run(Step::Subscribe {
        partition_aware: true,
    })
    .unwrap();
    let fid = sim.fws[0].0.clone();
    let (oid, _, _) = sim.offer_of(0, 0).unwrap();
    let t = |id: &str| pb::TaskInfo {
        task_id: id.into(),
        resources: Some((&Resources::new(1.0, 10, 0).unwrap()).into()),
        ..Default::default()
    };
    let mut out = vec![];
    let req = pb::AcceptRequest {
        framework_id: fid.0.clone(),
        offer_ids: vec![oid],
        operations: vec![pb::Operation {
            operation: Some(pb::operation::Operation::Launch(pb::Launch {
                tasks: vec![t("a"), t("a")],
            })),
        }],
        filters: None,
    };
    sim.m.accept(req, sim.now, &mut out).unwrap();
    let errors: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::ToFramework(
                _,
                pb::Event {
                    event: Some(pb::event::Event::Update(u)),
                },
            ) => u.status.as_ref().map(|s| s.message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("used twice"), "{}", errors[0]);
    sim.absorb(out).unwrap();
    assert_eq!(
        sim.m.task_state(&fid, &TaskId::new("a")),
        Some(agora_core::TaskState::Staging)
    );
}
