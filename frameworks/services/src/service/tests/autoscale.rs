//! Issue 11: the autoscaling loop on tokio's paused clock, fed scripted
//! usage samples and load reports: it calls the core's decision and applies
//! it as a scale (stored, then launched), tells it on the event stream,
//! and wakes an app at zero as soon as a router holds a request for it.

use super::*;
use agora_core::autoscale::Policy;
use agora_core::endpoints::{EndpointKey, LoadReport, SetLoad};
use agora_core::protocol::TaskUsage;

struct Harness {
    tx: mpsc::Sender<Msg<Recorder>>,
    link: Recorder,
    policies: Arc<Mutex<BTreeMap<String, crate::autoscale::StoredPolicy>>>,
    events: tokio::sync::broadcast::Receiver<serde_json::Value>,
    hub: Arc<Hub>,
    join: tokio::task::JoinHandle<()>,
}

fn port_offer(id: &str) -> Offer {
    let mut o = offer(id);
    o.resources = Resources::parse("cpus:4;mem:1024;ports:[31000-31100]").unwrap();
    o
}

/// App `/a` (0.1 cpus, 16 MiB, one port) with `n` running instances.
fn app_running(n: u32) -> Services {
    let mut s = Services::new();
    let app = crate::app::parse_app(&serde_json::json!({"id": "/a", "cmd": "x", "instances": n,
        "cpus": 0.1, "mem": 16, "portDefinitions": [{"port": 0}]}))
    .unwrap();
    s.put_app(app, false);
    if n > 0 {
        s.offers(vec![port_offer("o1")]);
    }
    let tasks: Vec<String> = s.instances().keys().cloned().collect();
    for t in &tasks {
        s.update(&running(t, 1));
    }
    s
}

async fn start(s: Services) -> Harness {
    let store = FlakyStore::default();
    let policies = store.policies.clone();
    let (events_tx, events) = tokio::sync::broadcast::channel(1024);
    let hub = Hub::new(0, Duration::ZERO);
    let actor = Actor::new(s, store, Some("fw".into()), events_tx, hub.clone());
    let (tx, rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    std::mem::forget(stop_tx);
    let join = tokio::spawn(actor.run(rx, stop_rx));
    let link = Recorder::default();
    tx.send(Msg::Subscribed(link.clone(), FrameworkId::new("fw")))
        .await
        .ok()
        .unwrap();
    Harness {
        tx,
        link,
        policies,
        events,
        hub,
        join,
    }
}

fn policy(v: serde_json::Value) -> Policy {
    serde_json::from_value(v).unwrap()
}

async fn put_policy(h: &Harness, p: Policy) -> Result<crate::autoscale::AutoscalerView, ApiError> {
    ask(&h.tx, |reply| Request::PutPolicy {
        app_id: "/a".into(),
        policy: Box::new(p),
        reply,
    })
    .await
}

async fn instances(h: &Harness) -> u32 {
    let v = ask(&h.tx, |reply| Request::View { reply }).await;
    v.apps
        .iter()
        .find(|a| a.app.id == "/a")
        .unwrap()
        .app
        .instances
}

async fn status(h: &Harness) -> crate::autoscale::AutoscalerView {
    let mut v = ask(&h.tx, |reply| Request::Policies {
        app_id: Some("/a".into()),
        reply,
    })
    .await;
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn load(rps: f64, held: u64) -> LoadReport {
    LoadReport {
        router: "r1".into(),
        window_ms: 10_000,
        sets: vec![SetLoad {
            key: EndpointKey {
                app_id: "/a".into(),
                port_index: 0,
            },
            requests: (rps * 10.0) as u64,
            rps,
            in_flight: 0,
            latency_p50_ms: None,
            latency_p95_ms: (rps > 0.0).then_some(20.0),
            held,
        }],
    }
}

async fn report(h: &Harness, r: LoadReport) {
    h.tx.send(Msg::Api(Request::Load {
        report: Box::new(r),
    }))
    .await
    .ok()
    .unwrap();
}

fn decisions(h: &mut Harness) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Ok(e) = h.events.try_recv() {
        if e["eventType"] == "autoscale_decision_event" {
            out.push(e);
        }
    }
    out
}

/// A load step (60 rps on 2 instances, target 10 per instance) is decided
/// and applied within one evaluation: 2 → 6 (the default scale-up limit,
/// +4 per 15 s, allows it), the new instances are launched from the next
/// offer, the decision is an event with its reason, and while they start
/// (not ready) the count is not raised again.
#[tokio::test(start_paused = true)]
async fn a_load_step_is_applied_as_a_scale_within_one_evaluation() {
    let mut h = start(app_running(2)).await;
    put_policy(
        &h,
        policy(
            serde_json::json!({"min": 1, "max": 10, "targets": [{"metric": "rps", "value": 10}]}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(h.policies.lock().unwrap().len(), 1, "the policy is stored");
    report(&h, load(60.0, 0)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(instances(&h).await, 6);
    let st = status(&h).await;
    assert_eq!(st.status.metrics[0].value, Some(30.0), "{st:?}");
    assert_eq!(st.status.desired, Some(6));
    let ev = decisions(&mut h);
    let up: Vec<_> = ev.iter().filter(|e| e["applied"] == true).collect();
    assert_eq!(up.len(), 1, "{ev:?}");
    assert_eq!(up[0]["appId"], "/a");
    assert_eq!(
        (up[0]["current"].as_u64(), up[0]["desired"].as_u64()),
        (Some(2), Some(6))
    );
    assert_eq!(up[0]["direction"], "up");
    assert!(
        up[0]["reason"].as_str().unwrap().contains("rps"),
        "{}",
        up[0]["reason"]
    );

    // The new instances launch from the next offer (the scale's path).
    h.tx.send(Msg::Offers(vec![port_offer("o2")]))
        .await
        .ok()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.link.launched.lock().unwrap().len(), 4);
    // The same load while they start: not raised again.
    for _ in 0..5 {
        report(&h, load(60.0, 0)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(instances(&h).await, 6);
    h.join.abort();
}

/// CPU and memory come from the agents' usage samples: Δcpu_seconds ÷ Δt
/// over the app's cpus, the working set over its mem, averaged over the
/// serving instances; 80 % against a 50 % target on 2 → 4.
#[tokio::test(start_paused = true)]
async fn cpu_and_memory_come_from_usage_samples() {
    let s = app_running(2);
    let tasks: Vec<String> = s.instances().keys().cloned().collect();
    let h = start(s).await;
    put_policy(
        &h,
        policy(serde_json::json!({"min": 1, "max": 10, "targets": [
            {"metric": "cpu", "value": 50}, {"metric": "memory", "value": 100}]})),
    )
    .await
    .unwrap();
    let sample = |t: &str, cpu: f64, ts: f64| TaskUsage {
        framework_id: FrameworkId::new("fw"),
        task_id: t.into(),
        cpu_seconds: cpu,
        mem_rss_bytes: 12 << 20,
        mem_working_set_bytes: 8 << 20,
        timestamp: ts,
    };
    let first: Vec<TaskUsage> = tasks.iter().map(|t| sample(t, 1.0, 1000.0)).collect();
    let second: Vec<TaskUsage> = tasks.iter().map(|t| sample(t, 1.08, 1001.0)).collect();
    h.tx.send(Msg::Usage(first)).await.ok().unwrap();
    h.tx.send(Msg::Usage(second)).await.ok().unwrap();
    let st = status(&h).await;
    let cpu = st.status.metrics[0].value.expect("a cpu value");
    assert!((cpu - 80.0).abs() < 1e-6, "{st:?}");
    assert_eq!(st.status.metrics[1].value, Some(50.0), "{st:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(instances(&h).await, 4);
    // Samples stop: after 2 s they are stale, so nothing is decided from
    // them (missing metrics never scale down).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = status(&h).await;
    assert_eq!(st.status.metrics[0].value, None, "{st:?}");
    assert_eq!(instances(&h).await, 4);
    h.join.abort();
}

/// `min: 0`: the app's endpoint sets say `scale_to_zero`; a router holding
/// a request for it at zero instances gets it woken at once (no wait for
/// the next tick), and the cold start (wake → first instance serving) is
/// in its status.
#[tokio::test(start_paused = true)]
async fn a_held_request_wakes_an_app_at_zero_at_once() {
    let mut h = start(app_running(0)).await;
    put_policy(
        &h,
        policy(
            serde_json::json!({"min": 0, "max": 5, "idleAfterSeconds": 300,
            "targets": [{"metric": "rps", "value": 10}]}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(instances(&h).await, 0);
    let snap = h.hub.snapshot();
    assert!(snap.sets[0].meta.scale_to_zero, "{snap:?}");
    report(&h, load(0.0, 1)).await;
    // Answered right after the report, in the same instant: no tick in
    // between.
    assert_eq!(instances(&h).await, 1);
    let ev = decisions(&mut h);
    assert!(
        ev.iter()
            .any(|e| e["applied"] == true && e["detail"]["cause"]["kind"] == "woken"),
        "{ev:?}"
    );
    assert!(status(&h).await.status.waking);
    tokio::time::sleep(Duration::from_millis(700)).await;
    h.tx.send(Msg::Offers(vec![port_offer("o2")]))
        .await
        .ok()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let launched = h.link.launched.lock().unwrap().clone();
    assert_eq!(launched.len(), 1);
    h.tx.send(Msg::Update(running(&launched[0], 7)))
        .await
        .ok()
        .unwrap();
    let st = status(&h).await;
    assert!(!st.status.waking, "{st:?}");
    let cold = st.status.cold_start_seconds.expect("a cold start");
    assert!((0.7..1.0).contains(&cold), "{cold}");
    let m = ask(&h.tx, |reply| Request::Metrics { reply }).await;
    assert!(
        m.contains("agora_services_autoscaler_cold_start_seconds{app=\"/a\"}"),
        "{m}"
    );
    // Turning the policy off: the sets no longer say scale_to_zero.
    ask(&h.tx, |reply| Request::DeletePolicy {
        app_id: "/a".into(),
        reply,
    })
    .await
    .unwrap();
    assert!(h.policies.lock().unwrap().is_empty());
    let _ = instances(&h).await;
    assert!(!h.hub.snapshot().sets[0].meta.scale_to_zero);
    h.join.abort();
}

/// A manual scale of an autoscaled app is refused (409: change the policy
/// or force); forced, it applies and suspends the policy (stored, and no
/// longer acting) until the policy is put again; deleting the app deletes
/// its policy.
#[tokio::test(start_paused = true)]
async fn a_forced_manual_scale_suspends_the_policy_until_it_is_put_again() {
    let h = start(app_running(2)).await;
    let p = policy(
        serde_json::json!({"min": 1, "max": 10, "targets": [{"metric": "rps", "value": 10}]}),
    );
    put_policy(&h, p.clone()).await.unwrap();
    let scale = |n: u32, force: bool| {
        ask(&h.tx, move |reply| Request::Scale {
            id: "/a".into(),
            instances: n,
            force,
            reply,
        })
    };
    let r = scale(5, false).await;
    assert!(matches!(r, Err(ApiError::Autoscaled { .. })), "{r:?}");
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("agora app autoscale") && msg.contains("force"),
        "{msg}"
    );
    assert_eq!(instances(&h).await, 2);
    // The same count is no scale: allowed.
    scale(2, false).await.unwrap();
    scale(5, true).await.unwrap();
    assert_eq!(instances(&h).await, 5);
    let st = status(&h).await;
    assert!(st.status.suspended, "{st:?}");
    assert!(st.status.suspended_reason.unwrap().contains("forced"));
    assert!(
        h.policies.lock().unwrap()["/a"].suspended.is_some(),
        "stored suspended"
    );
    // Suspended: the load asks for 3 but nothing changes.
    for _ in 0..3 {
        report(&h, load(30.0, 0)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(instances(&h).await, 5);
    // Put again: it acts (the count is back within what the load needs).
    put_policy(&h, p).await.unwrap();
    assert!(h.policies.lock().unwrap()["/a"].suspended.is_none());
    assert!(!status(&h).await.status.suspended);
    ask(&h.tx, |reply| Request::DeleteApp {
        id: "/a".into(),
        reply,
    })
    .await
    .unwrap();
    assert!(
        h.policies.lock().unwrap().is_empty(),
        "the policy went with the app"
    );
    let all = ask(&h.tx, |reply| Request::Policies {
        app_id: None,
        reply,
    })
    .await;
    assert!(all.is_empty());
    h.join.abort();
}

/// A policy for an app that does not exist is refused naming `appId`, and
/// one that cannot be stored is not in effect.
#[tokio::test(start_paused = true)]
async fn a_policy_needs_its_app_and_is_stored_before_it_acts() {
    let h = start(app_running(1)).await;
    let p = policy(
        serde_json::json!({"min": 1, "max": 10, "targets": [{"metric": "rps", "value": 10}]}),
    );
    let r = ask(&h.tx, |reply| Request::PutPolicy {
        app_id: "/nope".into(),
        policy: Box::new(p.clone()),
        reply,
    })
    .await;
    match r {
        Err(ApiError::Invalid(d)) => assert_eq!(d[0].path, "appId"),
        other => panic!("{other:?}"),
    }
    h.join.abort();
}

/// A decision held back (here a load drop within the 300 s scale-down
/// window) changes nothing and is an event at most once per 10 s, with
/// `applied: false` and the limit in its reason.
#[tokio::test(start_paused = true)]
async fn held_back_decisions_are_events_at_most_every_ten_seconds() {
    let mut h = start(app_running(4)).await;
    put_policy(
        &h,
        policy(
            serde_json::json!({"min": 1, "max": 10, "targets": [{"metric": "rps", "value": 10}]}),
        ),
    )
    .await
    .unwrap();
    let _ = decisions(&mut h);
    for _ in 0..25 {
        report(&h, load(10.0, 0)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(instances(&h).await, 4, "held by the scale-down window");
    let ev = decisions(&mut h);
    assert!((2..=3).contains(&ev.len()), "{ev:?}");
    for e in &ev {
        assert_eq!(e["applied"], false, "{e}");
        assert_eq!(
            (e["current"].as_u64(), e["desired"].as_u64()),
            (Some(4), Some(4))
        );
        assert!(
            e["reason"].as_str().unwrap().contains("window"),
            "{}",
            e["reason"]
        );
    }
    h.join.abort();
}

/// Putting a policy again with `min: 0` and a short `idleAfterSeconds` on
/// an app that has been idle for longer (found by `agora bench autoscale`:
/// the framework's actor panicked on it): the framework keeps running and
/// the app goes to zero at the next evaluation.
#[tokio::test(start_paused = true)]
async fn a_policy_put_again_on_an_idle_app_scales_it_to_zero() {
    let h = start(app_running(1)).await;
    put_policy(
        &h,
        policy(
            serde_json::json!({"min": 1, "max": 5, "targets": [{"metric": "rps", "value": 10}]}),
        ),
    )
    .await
    .unwrap();
    report(&h, load(5.0, 0)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The router goes on reporting: no request for a minute.
    for _ in 0..60 {
        report(&h, load(0.0, 0)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    put_policy(
        &h,
        policy(
            serde_json::json!({"min": 0, "max": 5, "idleAfterSeconds": 5,
            "targets": [{"metric": "rps", "value": 10}]}),
        ),
    )
    .await
    .unwrap();
    report(&h, load(0.0, 0)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    report(&h, load(0.0, 0)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(instances(&h).await, 0);
    assert!(!h.join.is_finished(), "the actor stopped");
    h.join.abort();
}

/// Idleness is only seen in load reports: an app that no router reports on
/// (their reports fail — a revoked token, the services API unreachable —
/// so it may well be serving) is not scaled to zero, however long; once
/// reports naming it arrive, its idle clock starts from there.
#[tokio::test(start_paused = true)]
async fn an_app_no_router_reports_on_is_not_idle() {
    let h = start(app_running(1)).await;
    put_policy(
        &h,
        policy(
            serde_json::json!({"min": 0, "max": 5, "idleAfterSeconds": 5,
            "targets": [{"metric": "rps", "value": 10}]}),
        ),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(instances(&h).await, 1, "scaled to zero without any report");
    // Reports stop after a while: not idle either.
    report(&h, load(5.0, 0)).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        instances(&h).await,
        1,
        "scaled to zero once reports stopped"
    );
    // The router reports no request: idle 5 s later (not at once: the
    // time without reports did not count).
    for _ in 0..3 {
        report(&h, load(0.0, 0)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        instances(&h).await,
        1,
        "the unreported time counted as idle"
    );
    for _ in 0..4 {
        report(&h, load(0.0, 0)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(instances(&h).await, 0);
    h.join.abort();
}

/// An agent whose wall clock steps back (NTP, a restored VM): its samples
/// are older than the last one, yet they are the task's usage now. They
/// start the task's samples afresh instead of being dropped until the
/// clock catches up (which left CPU and memory missing for as long as the
/// jump).
#[tokio::test(start_paused = true)]
async fn samples_after_an_agent_clock_jump_back_still_count() {
    let s = app_running(1);
    let task: String = s.instances().keys().next().unwrap().clone();
    let h = start(s).await;
    put_policy(
        &h,
        policy(serde_json::json!({"min": 1, "max": 1, "targets": [
            {"metric": "cpu", "value": 50}]})),
    )
    .await
    .unwrap();
    let sample = |cpu: f64, ts: f64| {
        vec![TaskUsage {
            framework_id: FrameworkId::new("fw"),
            task_id: task.as_str().into(),
            cpu_seconds: cpu,
            mem_rss_bytes: 12 << 20,
            mem_working_set_bytes: 8 << 20,
            timestamp: ts,
        }]
    };
    h.tx.send(Msg::Usage(sample(1.0, 1000.0)))
        .await
        .ok()
        .unwrap();
    h.tx.send(Msg::Usage(sample(1.08, 1001.0)))
        .await
        .ok()
        .unwrap();
    let cpu = status(&h).await.status.metrics[0].value;
    assert!(cpu.is_some_and(|c| (c - 80.0).abs() < 1e-6), "{cpu:?}");
    // The agent's clock goes back an hour.
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.tx.send(Msg::Usage(sample(1.16, 1002.0 - 3600.0)))
        .await
        .ok()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.tx.send(Msg::Usage(sample(1.22, 1003.0 - 3600.0)))
        .await
        .ok()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.tx.send(Msg::Usage(sample(1.26, 1004.0 - 3600.0)))
        .await
        .ok()
        .unwrap();
    // The samples after the jump count (0.04 s of CPU in 1 s on 0.1 cpus).
    let cpu = status(&h).await.status.metrics[0].value;
    assert!(cpu.is_some_and(|c| (c - 40.0).abs() < 1e-6), "{cpu:?}");
    // The same sample again is nothing new.
    h.tx.send(Msg::Usage(sample(1.26, 1004.0 - 3600.0)))
        .await
        .ok()
        .unwrap();
    let cpu = status(&h).await.status.metrics[0].value;
    assert!(cpu.is_some_and(|c| (c - 40.0).abs() < 1e-6), "{cpu:?}");
    h.join.abort();
}

/// A forced scale suspends a `min: 0` policy: nothing will wake the app,
/// so its endpoint sets no longer say `scale_to_zero` (routers answer at
/// once instead of holding requests for the hold timeout); put again, they
/// do.
#[tokio::test(start_paused = true)]
async fn a_suspended_policy_does_not_have_requests_held() {
    let h = start(app_running(1)).await;
    let p = policy(
        serde_json::json!({"min": 0, "max": 5, "idleAfterSeconds": 300,
        "targets": [{"metric": "rps", "value": 10}]}),
    );
    put_policy(&h, p.clone()).await.unwrap();
    let _ = instances(&h).await;
    assert!(h.hub.snapshot().sets[0].meta.scale_to_zero);
    ask(&h.tx, |reply| Request::Scale {
        id: "/a".into(),
        instances: 0,
        force: true,
        reply,
    })
    .await
    .unwrap();
    assert!(status(&h).await.status.suspended);
    let _ = instances(&h).await;
    assert!(
        !h.hub.snapshot().sets[0].meta.scale_to_zero,
        "requests held for a suspended policy's app"
    );
    put_policy(&h, p).await.unwrap();
    let _ = instances(&h).await;
    assert!(h.hub.snapshot().sets[0].meta.scale_to_zero);
    h.join.abort();
}

/// The same after a restart: a policy stored suspended does not have the
/// app's requests held.
#[tokio::test(start_paused = true)]
async fn a_policy_restored_suspended_does_not_have_requests_held() {
    let row = crate::autoscale::StoredPolicy {
        policy: policy(
            serde_json::json!({"min": 0, "max": 5, "idleAfterSeconds": 300,
            "targets": [{"metric": "rps", "value": 10}]}),
        ),
        suspended: Some("a manual scale was forced".into()),
    };
    let (events_tx, _events) = tokio::sync::broadcast::channel(16);
    let hub = Hub::new(0, Duration::ZERO);
    let mut actor = Actor::new(
        app_running(0),
        FlakyStore::default(),
        Some("fw".into()),
        events_tx,
        hub.clone(),
    );
    actor.restore_policies(vec![("/a".into(), row)]);
    let (tx, rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let join = tokio::spawn(actor.run(rx, stop_rx));
    let _ = ask(&tx, |reply| Request::View { reply }).await;
    assert!(
        !hub.snapshot().sets[0].meta.scale_to_zero,
        "requests held for a suspended policy's app"
    );
    drop(stop_tx);
    join.abort();
}

/// A forced change that fails (its service port is another app's) leaves
/// the policy acting as before, its app's requests held.
#[tokio::test(start_paused = true)]
async fn a_forced_change_that_fails_keeps_requests_held() {
    let mut s = app_running(1);
    let b = crate::app::parse_app(&serde_json::json!({"id": "/b", "cmd": "x",
        "instances": 0, "portDefinitions": [{"port": 10555}]}))
    .unwrap();
    s.put_app(b, false);
    let h = start(s).await;
    put_policy(
        &h,
        policy(
            serde_json::json!({"min": 0, "max": 5, "idleAfterSeconds": 300,
            "targets": [{"metric": "rps", "value": 10}]}),
        ),
    )
    .await
    .unwrap();
    let a = crate::app::parse_app(&serde_json::json!({"id": "/a", "cmd": "x",
        "instances": 3, "cpus": 0.1, "mem": 16, "portDefinitions": [{"port": 10555}]}))
    .unwrap();
    let r = ask(&h.tx, |reply| Request::PutApp {
        app: Box::new(a),
        create: false,
        force_restart: false,
        force: true,
        reply,
    })
    .await;
    assert!(matches!(r, Err(ApiError::Invalid(_))), "{r:?}");
    assert!(!status(&h).await.status.suspended);
    let _ = instances(&h).await;
    let snap = h.hub.snapshot();
    let set = snap.sets.iter().find(|s| s.key.app_id == "/a").unwrap();
    assert!(set.meta.scale_to_zero, "{set:?}");
    h.join.abort();
}

/// Killing an autoscaled app's tasks with `scale=true` is refused (409):
/// the autoscaler decides the count. A kill without `scale` is allowed.
#[tokio::test(start_paused = true)]
async fn kill_and_scale_of_an_autoscaled_app_is_refused() {
    let h = start(app_running(2)).await;
    put_policy(
        &h,
        policy(
            serde_json::json!({"min": 1, "max": 5, "targets": [{"metric": "rps", "value": 10}]}),
        ),
    )
    .await
    .unwrap();
    let kill = |scale: bool| {
        ask(&h.tx, move |reply| Request::KillTasks {
            app_id: "/a".into(),
            task: None,
            host: None,
            scale,
            reply,
        })
    };
    let r = kill(true).await;
    assert!(matches!(r, Err(ApiError::AutoscaledKill { .. })), "{r:?}");
    assert!(
        r.unwrap_err().to_string().contains("without scale"),
        "the message says what to do"
    );
    assert_eq!(instances(&h).await, 2);
    kill(false).await.unwrap();
    assert_eq!(instances(&h).await, 2);
    h.join.abort();
}

/// `min: 0` on an app without ports is refused naming `/min`: nothing
/// could ever wake it (a router holds requests for a port).
#[tokio::test(start_paused = true)]
async fn min_zero_needs_a_port_to_be_woken_by() {
    let mut s = Services::new();
    let app = crate::app::parse_app(
        &serde_json::json!({"id": "/a", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16}),
    )
    .unwrap();
    s.put_app(app, false);
    let h = start(s).await;
    let r = put_policy(
        &h,
        policy(
            serde_json::json!({"min": 0, "max": 5, "idleAfterSeconds": 60,
            "targets": [{"metric": "cpu", "value": 50}]}),
        ),
    )
    .await;
    match r {
        Err(ApiError::Invalid(f)) => assert_eq!(f[0].path, "/min", "{f:?}"),
        other => panic!("{other:?}"),
    }
    put_policy(
        &h,
        policy(
            serde_json::json!({"min": 1, "max": 5, "targets": [{"metric": "cpu", "value": 50}]}),
        ),
    )
    .await
    .unwrap();
    h.join.abort();
}
