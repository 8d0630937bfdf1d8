//! The control plane over real gRPC on loopback: one master, hollow agents,
//! SDK frameworks.

use agora_core::TaskState;
use agora_sdk::{Offer, TaskStatus};
use agora_tests::{Cluster, Ev, Fw, fw_config, task, test_config};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

fn offer_on<'a>(offers: &'a [Offer], agent: &agora_core::AgentId) -> Option<&'a Offer> {
    offers.iter().find(|o| &o.agent_id == agent)
}

/// Waits until one offer per listed agent has been seen, returning them.
async fn offers_for(fw: &mut Fw, n: usize) -> Vec<Offer> {
    let mut seen: Vec<Offer> = Vec::new();
    while seen.len() < n {
        for o in fw.offers().await.expect("offers") {
            if !seen.iter().any(|s| s.agent_id == o.agent_id) {
                seen.push(o);
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_run_kill_finish_with_two_frameworks() {
    let c = Cluster::start(test_config()).await.unwrap();
    // Frameworks first, so DRF shares the agents between them as they join.
    let mut f1 = Fw::start(fw_config(&c, "one")).await.unwrap();
    let mut f2 = Fw::start(fw_config(&c, "two")).await.unwrap();
    let a1 = c
        .agent(
            "a1",
            "cpus:4;mem:1024;ports:[31000-31009]",
            &[("zone", "a")],
        )
        .await
        .unwrap();
    let _a2 = c
        .agent("a2", "cpus:4;mem:1024", &[("zone", "b")])
        .await
        .unwrap();
    let _a3 = c.agent("a3", "cpus:4;mem:1024", &[]).await.unwrap();

    let o1 = f1.offers().await.unwrap();
    let o2 = f2.offers().await.unwrap();
    assert!(
        !o1.is_empty() && !o2.is_empty(),
        "DRF should give both frameworks offers"
    );
    for o in o1.iter().chain(o2.iter()) {
        assert!(
            !o2.iter().any(|p| p.id != o.id
                && p.agent_id == o.agent_id
                && o1.iter().any(|q| q.id == o.id)),
            "agent {} offered to both frameworks at once",
            o.agent_id
        );
    }

    let first = &o1[0];
    assert!(first.attribute("zone").is_some() || first.agent_id != a1.id);
    let mut serve = task("serve", "cpus:1;mem:128;ports:[31000-31000]", "serve");
    if first.agent_id != a1.id {
        serve = task("serve", "cpus:1;mem:128", "serve");
    }
    f1.client
        .launch(
            first,
            vec![serve, task("short", "cpus:0.5;mem:64", "sleep 0.3")],
        )
        .await
        .unwrap();
    f1.update("serve", TaskState::Starting).await.unwrap();
    f1.update("serve", TaskState::Running).await.unwrap();
    f1.update("short", TaskState::Finished).await.unwrap();

    f2.client
        .launch(&o2[0], vec![task("crash", "cpus:1;mem:64", "exit 3")])
        .await
        .unwrap();
    let failed = f2.update("crash", TaskState::Failed).await.unwrap();
    assert_eq!(failed.exit_code, Some(3));

    f1.client.kill(&"serve".into(), None).await.unwrap();
    f1.update("serve", TaskState::Killed).await.unwrap();

    // /state agrees: nothing live, both frameworks subscribed, agents active.
    let st = c.state().await.unwrap();
    assert_eq!(st.agents.len(), 3);
    assert_eq!(st.frameworks.len(), 2);
    assert!(st.frameworks.iter().all(|f| f.tasks.is_empty()));
    let done: Vec<_> = st
        .frameworks
        .iter()
        .flat_map(|f| f.completed_tasks.iter())
        .map(|t| (t.id.clone(), t.state))
        .collect();
    assert!(
        done.contains(&("serve".into(), TaskState::Killed)),
        "{done:?}"
    );
    assert!(
        done.contains(&("short".into(), TaskState::Finished)),
        "{done:?}"
    );
    assert!(
        done.contains(&("crash".into(), TaskState::Failed)),
        "{done:?}"
    );
    assert_eq!(st.resources.used.cpus, 0.0);

    let (code, metrics) = c.get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("agora_master_tasks_launched_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("agora_master_allocation_run_seconds_bucket"));
    let (code, _) = c.get("/health").await.unwrap();
    assert_eq!(code, 200);
    let (code, _) = c.get("/redirect").await.unwrap();
    assert_eq!(code, 307);
}

/// A kill that reaches the agent while the task is still starting (no
/// container to signal yet) is not lost: the task is killed once it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_starting_is_carried_out_once_the_task_runs() {
    let c = Cluster::start(test_config()).await.unwrap();
    let agent = c
        .agent_with_start_delay("slow", "cpus:2;mem:512", &[], Duration::from_millis(700))
        .await
        .unwrap();
    let mut f = Fw::start(fw_config(&c, "impatient")).await.unwrap();
    let o = f.offers().await.unwrap();
    f.client
        .launch(&o[0], vec![task("t", "cpus:1;mem:64", "serve")])
        .await
        .unwrap();
    f.update("t", TaskState::Starting).await.unwrap();
    f.client.kill(&"t".into(), None).await.unwrap();
    let killed = f.update("t", TaskState::Killed).await.unwrap();
    assert_eq!(killed.agent_id, agent.id);
    assert_eq!(
        agent.runtime.live_tasks(),
        0,
        "the task must not keep running"
    );
}

/// Health checks run on the agent and stop with it: a stopped agent's
/// checkers do not go on probing (whatever takes the port next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_report_through_the_master_and_stop_with_the_agent() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let probed = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = probed.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = listener.accept().await {
            p.fetch_add(1, Ordering::SeqCst);
        }
    });
    let c = Cluster::start(test_config()).await.unwrap();
    let agent = c.agent("a1", "cpus:2;mem:512", &[]).await.unwrap();
    let mut f = Fw::start(fw_config(&c, "checked")).await.unwrap();
    let o = f.offers().await.unwrap();
    let mut t = task("t", "cpus:1;mem:64", "serve");
    t.health_checks = vec![agora_proto::pb::HealthCheck {
        protocol: agora_proto::pb::health_check::Protocol::Tcp as i32,
        port: u32::from(port),
        interval_seconds: 0.05,
        timeout_seconds: 1.0,
        max_consecutive_failures: 3,
        ..Default::default()
    }];
    f.client.launch(&o[0], vec![t]).await.unwrap();
    let healthy = f
        .wait(Duration::from_secs(10), |e| match e {
            Ev::Update(s) if s.healthy == Some(true) => Some(s.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(healthy.state, TaskState::Running);

    agent.handle.control(agora_agent::Control::Stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_stop = probed.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        probed.load(Ordering::SeqCst),
        after_stop,
        "a stopped agent's health checker still probes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_acknowledgement_leads_to_redelivery() {
    let c = Cluster::start(test_config()).await.unwrap();
    c.agent("a1", "cpus:2;mem:512", &[]).await.unwrap();
    let mut cfg = fw_config(&c, "manual-ack");
    cfg.auto_acknowledge = false;
    let mut f = Fw::start(cfg).await.unwrap();
    let o = f.offers().await.unwrap();
    f.client
        .launch(&o[0], vec![task("t", "cpus:1;mem:64", "serve")])
        .await
        .unwrap();

    // STARTING arrives and is not acknowledged: it comes again, same uuid,
    // and RUNNING is held back behind it (one update in flight per task).
    let first = f.update("t", TaskState::Starting).await.unwrap();
    assert!(!first.uuid.is_empty());
    let again = f.update("t", TaskState::Starting).await.unwrap();
    assert_eq!(
        again.uuid, first.uuid,
        "redelivery must carry the same uuid"
    );
    f.client.acknowledge(&again).await.unwrap();
    let running = f.update("t", TaskState::Running).await.unwrap();
    f.client.acknowledge(&running).await.unwrap();
    // Once acknowledged, nothing is re-sent.
    let later = f.drain(Duration::from_millis(1200)).await;
    let resent: Vec<&TaskStatus> = later
        .iter()
        .filter_map(|e| match e {
            Ev::Update(s) if !s.uuid.is_empty() => Some(s),
            _ => None,
        })
        .collect();
    assert!(
        resent.is_empty(),
        "acknowledged updates were re-sent: {resent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_and_implicit_reconciliation() {
    let c = Cluster::start(test_config()).await.unwrap();
    c.agent("a1", "cpus:4;mem:512", &[]).await.unwrap();
    let mut f = Fw::start(fw_config(&c, "rec")).await.unwrap();
    let o = f.offers().await.unwrap();
    f.client
        .launch(
            &o[0],
            vec![
                task("x", "cpus:1;mem:64", "serve"),
                task("y", "cpus:1;mem:64", "serve"),
            ],
        )
        .await
        .unwrap();
    f.update("x", TaskState::Running).await.unwrap();
    f.update("y", TaskState::Running).await.unwrap();

    f.client.reconcile(vec![]).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let s = f
            .wait(5 * S, |e| match e {
                Ev::Update(s) if s.reason == "REASON_RECONCILIATION" => Some(s.clone()),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(s.state, TaskState::Running);
        assert!(
            s.uuid.is_empty(),
            "reconciliation answers need no acknowledgement"
        );
        seen.push(s.task_id.0);
    }
    seen.sort();
    assert_eq!(seen, vec!["x", "y"]);

    f.client
        .reconcile(vec![("x".into(), None), ("nope".into(), None)])
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let s = f
            .wait(5 * S, |e| match e {
                Ev::Update(s) if s.reason == "REASON_RECONCILIATION" => Some(s.clone()),
                _ => None,
            })
            .await
            .unwrap();
        got.push((s.task_id.0, s.state));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("nope".to_string(), TaskState::Unknown),
            ("x".to_string(), TaskState::Running)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_loses_its_tasks_and_offers_then_comes_back() {
    let c = Cluster::start(test_config()).await.unwrap();
    let a1 = c.agent("a1", "cpus:4;mem:1024", &[]).await.unwrap();
    let a2 = c.agent("a2", "cpus:4;mem:1024", &[]).await.unwrap();
    let mut aware = Fw::start(fw_config(&c, "aware")).await.unwrap();
    let mut plain_cfg = fw_config(&c, "plain");
    plain_cfg.partition_aware = false;
    let mut plain = Fw::start(plain_cfg).await.unwrap();

    // Each framework launches one task on a1.
    for (f, id) in [(&mut aware, "pa"), (&mut plain, "np")] {
        loop {
            let offers = f.offers().await.unwrap();
            let others: Vec<_> = offers
                .iter()
                .filter(|o| o.agent_id != a1.id)
                .map(|o| o.id.clone())
                .collect();
            f.client
                .decline(&others, Some(Duration::from_millis(200)))
                .await
                .unwrap();
            if let Some(o) = offer_on(&offers, &a1.id) {
                f.client
                    .accept(
                        std::slice::from_ref(&o.id),
                        vec![task(id, "cpus:1;mem:64", "serve")],
                        Some(Duration::ZERO),
                    )
                    .await
                    .unwrap();
                break;
            }
        }
        f.update(id, TaskState::Running).await.unwrap();
        if id == "np" {
            // The plain framework wants nothing more: the rest goes to `aware`.
            f.client.suppress().await.unwrap();
        }
        // Give back whatever else we hold so the other framework gets a1.
        let held: Vec<_> = f
            .drain(Duration::from_millis(300))
            .await
            .into_iter()
            .flat_map(|e| match e {
                Ev::Offers(o) => o.into_iter().map(|o| o.id).collect(),
                _ => vec![],
            })
            .collect();
        let _ = f.client.decline(&held, Some(Duration::from_secs(1))).await;
    }
    // Hold an offer for a1 so we can see it rescinded.
    let held = loop {
        let offers = aware.offers().await.unwrap();
        if let Some(o) = offer_on(&offers, &a1.id) {
            break o.id.clone();
        }
        let ids: Vec<_> = offers.iter().map(|o| o.id.clone()).collect();
        aware
            .client
            .decline(&ids, Some(Duration::from_millis(100)))
            .await
            .unwrap();
    };

    let t0 = std::time::Instant::now();
    a1.handle.control(agora_agent::Control::Partition);
    aware
        .wait(5 * S, |e| {
            matches!(e, Ev::Rescinded(o) if *o == held).then_some(())
        })
        .await
        .expect("the silent agent's offer is rescinded");
    let u = aware.update("pa", TaskState::Unreachable).await.unwrap();
    assert_eq!(u.reason, "REASON_AGENT_UNREACHABLE");
    plain.update("np", TaskState::Lost).await.unwrap();
    let detected = t0.elapsed();
    assert!(
        detected < Duration::from_secs(5),
        "unreachable after {detected:?}"
    );
    let st = c.state().await.unwrap();
    let a1v = st.agents.iter().find(|a| a.id == a1.id.0).unwrap();
    assert_eq!(a1v.state, agora_core::lifecycle::AgentState::Unreachable);
    // a2 is unaffected.
    assert!(
        st.agents
            .iter()
            .any(|a| a.id == a2.id.0 && a.state == agora_core::lifecycle::AgentState::Active)
    );

    // It returns: the partition-aware task is RUNNING again; the LOST one is
    // killed on the agent (the framework already replaced it).
    a1.handle.control(agora_agent::Control::Heal);
    let back = aware.update("pa", TaskState::Running).await.unwrap();
    assert_eq!(back.reason, "REASON_AGENT_REREGISTERED");
    let mut waited = Duration::ZERO;
    while a1.runtime.live_tasks() != 1 {
        assert!(
            waited < 5 * S,
            "the LOST task should be killed on return; live {}",
            a1.runtime.live_tasks()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let st = c.state().await.unwrap();
    let a1v = st.agents.iter().find(|a| a.id == a1.id.0).unwrap();
    assert_eq!(a1v.state, agora_core::lifecycle::AgentState::Active);
    assert_eq!(a1v.task_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_failover_within_and_after_the_timeout() {
    let c = Cluster::start(test_config()).await.unwrap();
    let a = c.agent("a1", "cpus:4;mem:1024", &[]).await.unwrap();
    let mut cfg = fw_config(&c, "failover");
    cfg.failover_timeout = Duration::from_millis(1500);
    let mut f = Fw::start(cfg.clone()).await.unwrap();
    let o = f.offers().await.unwrap();
    f.client
        .launch(&o[0], vec![task("keep", "cpus:1;mem:64", "serve")])
        .await
        .unwrap();
    f.update("keep", TaskState::Running).await.unwrap();
    let id = f.id.clone();
    f.disconnect().await;

    // Back within the timeout with the same id: the task is still ours.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cfg.framework_id = Some(id.clone());
    let mut f = Fw::start(cfg.clone()).await.unwrap();
    assert_eq!(f.id, id);
    let s = f
        .wait(5 * S, |e| match e {
            Ev::Update(s) if s.task_id.as_str() == "keep" => Some(s.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(s.state, TaskState::Running);
    assert_eq!(a.runtime.live_tasks(), 1);

    // Gone past the timeout: its tasks are killed and resources freed.
    f.disconnect().await;
    let mut waited = Duration::ZERO;
    while a.runtime.live_tasks() != 0 {
        assert!(
            waited < 6 * S,
            "tasks of a timed-out framework must be killed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    let st = c.state().await.unwrap();
    assert!(st.frameworks.iter().all(|f| f.id != id.0));
    let fv = st
        .completed_frameworks
        .iter()
        .find(|f| f.id == id.0)
        .unwrap();
    assert_eq!(fv.state, agora_core::lifecycle::FrameworkState::Completed);
    assert_eq!(st.resources.used.cpus, 0.0);
    // Resubscribing with a torn-down id is refused.
    let r = agora_sdk::Driver::new(cfg, NoOp).run().await;
    assert!(matches!(r, Err(agora_sdk::SdkError::TornDown(_))), "{r:?}");
}

struct NoOp;
impl agora_sdk::Scheduler for NoOp {
    async fn offers(&mut self, _c: &agora_sdk::Client, _o: Vec<Offer>) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_filters_are_respected() {
    let c = Cluster::start(test_config()).await.unwrap();
    c.agent("a1", "cpus:4;mem:1024", &[]).await.unwrap();
    let mut f = Fw::start(fw_config(&c, "decliner")).await.unwrap();
    let o = f.offers().await.unwrap();
    let t0 = std::time::Instant::now();
    f.client
        .decline(&[o[0].id.clone()], Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    let next = f.offers().await.unwrap();
    let gap = t0.elapsed();
    assert_eq!(next[0].agent_id, o[0].agent_id);
    assert!(
        gap >= Duration::from_millis(1400),
        "re-offered after {gap:?}, filter was 1.5 s"
    );
    assert!(
        gap < Duration::from_secs(4),
        "re-offered only after {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppress_stops_offers_and_revive_restarts_them() {
    let c = Cluster::start(test_config()).await.unwrap();
    c.agent("a1", "cpus:4;mem:1024", &[]).await.unwrap();
    let mut f = Fw::start(fw_config(&c, "quiet")).await.unwrap();
    let o = f.offers().await.unwrap();
    f.client.suppress().await.unwrap();
    f.client
        .decline(&[o[0].id.clone()], Some(Duration::ZERO))
        .await
        .unwrap();
    let evs = f.drain(Duration::from_millis(1200)).await;
    assert!(
        !evs.iter().any(|e| matches!(e, Ev::Offers(_))),
        "offers while suppressed: {evs:?}"
    );
    let st = c.state().await.unwrap();
    assert!(st.frameworks[0].suppressed);
    let t0 = std::time::Instant::now();
    f.client.revive().await.unwrap();
    f.offers().await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "revive should bring offers at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_readmits_its_agents_with_their_tasks() {
    let mut c = Cluster::start(test_config()).await.unwrap();
    let a1 = c
        .agent("a1", "cpus:4;mem:1024", &[("zone", "a")])
        .await
        .unwrap();
    let a2 = c.agent("a2", "cpus:4;mem:1024", &[]).await.unwrap();
    let mut f = Fw::start(fw_config(&c, "survivor")).await.unwrap();
    let offers = offers_for(&mut f, 2).await;
    for (i, o) in offers.iter().enumerate() {
        f.client
            .launch(o, vec![task(&format!("t{i}"), "cpus:1;mem:100", "serve")])
            .await
            .unwrap();
    }
    f.update("t0", TaskState::Running).await.unwrap();
    f.update("t1", TaskState::Running).await.unwrap();
    let before = c.state().await.unwrap();

    c.restart().await.unwrap();

    // Agents re-register with their ids and tasks; the framework resubscribes.
    let mut waited = Duration::ZERO;
    let st = loop {
        if let Ok(st) = c.state().await
            && st.master_id != before.master_id
            && st
                .agents
                .iter()
                .filter(|a| a.state == agora_core::lifecycle::AgentState::Active)
                .count()
                == 2
            && st.frameworks.iter().any(|fw| {
                fw.id == f.id.0 && fw.state == agora_core::lifecycle::FrameworkState::Connected
            })
        {
            break st;
        }
        assert!(
            waited < 10 * S,
            "cluster did not recover after master restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    };
    let ids: Vec<&str> = st.agents.iter().map(|a| a.id.as_str()).collect();
    assert!(
        ids.contains(&a1.id.as_str()) && ids.contains(&a2.id.as_str()),
        "{ids:?}"
    );
    let zone = st
        .agents
        .iter()
        .find(|a| a.id == a1.id.0)
        .unwrap()
        .attributes
        .get("zone")
        .cloned();
    assert_eq!(zone.as_deref(), Some("a"));
    let fw = st.frameworks.iter().find(|fw| fw.id == f.id.0).unwrap();
    let mut tasks: Vec<(String, TaskState)> =
        fw.tasks.iter().map(|t| (t.id.clone(), t.state)).collect();
    tasks.sort();
    assert_eq!(
        tasks,
        vec![
            ("t0".into(), TaskState::Running),
            ("t1".into(), TaskState::Running)
        ]
    );
    assert_eq!(st.resources.used.cpus, 2.0);
    assert_eq!(
        a1.runtime.live_tasks() + a2.runtime.live_tasks(),
        2,
        "no duplicate launches"
    );
}

/// An agent's internal address reaches frameworks in its offers and the
/// operator in `/state`; an agent that comes back under the same id (from
/// its checkpoint) with another address is offered with the new one. An
/// agent that sends none is offered without (frameworks use its hostname).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_carry_the_agents_internal_address_and_follow_a_restart() {
    use agora_agent::{AgentConfig, Connector, Control};
    let c = Cluster::start(test_config()).await.unwrap();
    let mut f = Fw::start(fw_config(&c, "addresses")).await.unwrap();
    let work = std::env::temp_dir().join(format!("agora-addr-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work).unwrap();
    let cfg = |ip: &str| AgentConfig {
        hostname: "node-1".into(),
        resources: agora_core::Resources::parse("cpus:1;mem:128").unwrap(),
        address: Some(ip.parse().unwrap()),
        work_dir: Some(work.clone()),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ..AgentConfig::default()
    };
    let (h, _rt, join) = agora_agent::spawn_hollow(cfg("10.0.0.7"), Connector::Address(c.url()), S);
    let id = tokio::time::timeout(10 * S, h.registered()).await.unwrap();
    let o = offers_for(&mut f, 1).await;
    assert_eq!(o[0].agent_id, id);
    assert_eq!(o[0].hostname, "node-1");
    assert_eq!(o[0].address, "10.0.0.7".parse().ok());
    let st = c.state().await.unwrap();
    assert_eq!(st.agents[0].address.as_deref(), Some("10.0.0.7"));

    // Restarted with another address: same id, offers with the new one.
    h.control(Control::Stop);
    let _ = join.await;
    let (h2, _rt2, _join2) =
        agora_agent::spawn_hollow(cfg("10.0.0.8"), Connector::Address(c.url()), S);
    assert_eq!(
        tokio::time::timeout(10 * S, h2.registered()).await.unwrap(),
        id
    );
    let want: Option<std::net::IpAddr> = "10.0.0.8".parse().ok();
    f.wait(10 * S, |e| match e {
        Ev::Offers(o) => o
            .iter()
            .find(|o| o.agent_id == id && o.address == want)
            .cloned(),
        _ => None,
    })
    .await
    .expect("no offer with the new address");
    let st = c.state().await.unwrap();
    assert_eq!(st.agents[0].address.as_deref(), Some("10.0.0.8"));

    // An agent that sends no address.
    let plain = c.agent("plain", "cpus:1;mem:128", &[]).await.unwrap();
    let o = f
        .wait(10 * S, |e| match e {
            Ev::Offers(o) => o.iter().find(|o| o.agent_id == plain.id).cloned(),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(o.address, None);
    let _ = std::fs::remove_dir_all(&work);
}
