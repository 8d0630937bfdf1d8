use super::*;
use crate::app::parse_app;
use agora_core::{AgentId, OfferId, Resources, TaskId};
use agora_sdk::Offer;
use serde_json::json;

fn offer(id: &str, host: &str, res: &str) -> Offer {
    Offer {
        id: OfferId::new(format!("o-{id}")),
        agent_id: AgentId::new(format!("a-{host}")),
        hostname: host.into(),
        address: None,
        resources: Resources::parse(res).unwrap(),
        attributes: vec![(
            "zone".into(),
            if host.ends_with('1') {
                "a".into()
            } else {
                "b".into()
            },
        )],
        role: "*".into(),
    }
}

fn status(t: &str, s: TaskState) -> TaskStatus {
    TaskStatus {
        task_id: TaskId::new(t),
        agent_id: AgentId::new("a"),
        state: s,
        message: String::new(),
        reason: String::new(),
        exit_code: None,
        healthy: None,
        ready: None,
        uuid: vec![],
    }
}

fn launched(actions: &[Action]) -> Vec<pb::TaskInfo> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::Launch { tasks, .. } => tasks.clone(),
            _ => vec![],
        })
        .collect()
}

fn app(v: serde_json::Value) -> App {
    parse_app(&v).unwrap()
}

fn run_all(s: &mut Services) {
    let ids: Vec<String> = s.instances.keys().cloned().collect();
    for id in ids {
        s.update(&status(&id, TaskState::Running));
    }
}

#[test]
fn deploys_scales_and_kills_youngest_first() {
    let mut s = Services::new();
    s.put_app(
        app(json!({"id": "web", "cmd": "serve", "instances": 3, "cpus": 1, "mem": 64})),
        false,
    );
    let acts = s.offers(vec![offer("1", "h1", "cpus:8;mem:4096")]);
    let t = launched(&acts);
    assert_eq!(t.len(), 3);
    let env: Vec<&str> = t[0]
        .command
        .as_ref()
        .unwrap()
        .env
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(env.contains(&"AGORA_APP_ID") && env.contains(&"HOST"));
    assert!(acts.contains(&Action::Suppress));
    run_all(&mut s);

    let mut a = s.apps["/web"].app.clone();
    a.instances = 6;
    assert!(
        s.put_app(a.clone(), false).is_none(),
        "a scale is not a deployment"
    );
    let acts = s.converge();
    assert!(acts.contains(&Action::Revive));
    let t = launched(&s.offers(vec![offer("2", "h1", "cpus:5;mem:4096")]));
    assert_eq!(t.len(), 3);
    run_all(&mut s);
    assert_eq!(s.live("/web").count(), 6);

    a.instances = 2;
    s.put_app(a, false);
    let killed = kills(&s.converge());
    assert_eq!(killed.len(), 4);
    let mut by_age: Vec<&Instance> = s.instances.values().collect();
    by_age.sort_by_key(|i| i.seq);
    let youngest: Vec<String> = by_age[2..].iter().map(|i| i.task_id.clone()).collect();
    let mut k = killed.clone();
    k.sort();
    let mut y = youngest;
    y.sort();
    assert_eq!(k, y, "the four youngest go");
    for t in killed {
        s.update(&status(&t, TaskState::Killed));
    }
    assert_eq!(s.live("/web").count(), 2);
}

#[test]
fn unique_hostname_places_one_per_host_and_says_why() {
    let mut s = Services::new();
    s.put_app(app(json!({"id": "u", "cmd": "x", "instances": 3, "cpus": 0.1, "mem": 16, "constraints": [["hostname", "UNIQUE"]]})), false);
    let t = launched(&s.offers(vec![
        offer("1", "h1", "cpus:4;mem:1024"),
        offer("2", "h2", "cpus:4;mem:1024"),
    ]));
    assert_eq!(t.len(), 2);
    let w = s.apps["/u"].waiting.clone().unwrap();
    assert!(
        w.contains("constraint hostname:UNIQUE: 2 of 3 placed, no further agent matches"),
        "{w}"
    );
    // Another offer from a used host is declined.
    let acts = s.offers(vec![offer("3", "h1", "cpus:4;mem:1024")]);
    assert!(launched(&acts).is_empty());
    assert!(matches!(acts[0], Action::Decline { .. }));
}

#[test]
fn an_app_too_big_for_any_agent_waits_with_a_reason() {
    let mut s = Services::new();
    s.put_app(app(json!({"id": "big", "cmd": "x", "cpus": 100})), false);
    assert!(launched(&s.offers(vec![offer("1", "h1", "cpus:4;mem:1024")])).is_empty());
    let w = s.apps["/big"].waiting.clone().unwrap();
    assert!(
        w.contains("no offer has enough resources") && w.contains("cpus 100"),
        "{w}"
    );
}

#[test]
fn crash_loops_back_off_by_the_factor_up_to_the_cap() {
    let mut s = Services::new();
    s.put_app(app(json!({"id": "crash", "cmd": "exit 1", "backoffSeconds": 1, "backoffFactor": 2, "maxLaunchDelaySeconds": 5})), false);
    let mut delays = Vec::new();
    for round in 0..5 {
        // Force the delay window open to simulate time passing.
        if let Some(st) = s.apps.get_mut("/crash") {
            st.next_launch_at = 0.0;
        }
        let t = launched(&s.offers(vec![offer(&round.to_string(), "h1", "cpus:4;mem:1024")]));
        assert_eq!(t.len(), 1);
        s.update(&status(&t[0].task_id, TaskState::Failed));
        delays.push(s.apps["/crash"].delay);
    }
    assert_eq!(delays, vec![1.0, 2.0, 4.0, 5.0, 5.0]);
    // While delayed, offers are declined and the reason is shown.
    let acts = s.offers(vec![offer("x", "h1", "cpus:4;mem:1024")]);
    assert!(launched(&acts).is_empty());
    assert!(
        s.apps["/crash"]
            .waiting
            .as_deref()
            .unwrap_or("")
            .contains("backoff")
    );
}

fn kills(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Kill { task_id, .. } => Some(task_id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_kill_that_does_not_end_the_task_is_sent_again() {
    let mut s = Services::new();
    s.put_app(
        app(json!({"id": "web", "cmd": "serve", "instances": 2, "cpus": 1, "mem": 64})),
        false,
    );
    s.offers(vec![offer("1", "h1", "cpus:8;mem:4096")]);
    run_all(&mut s);
    let mut a = s.apps["/web"].app.clone();
    a.instances = 1;
    s.put_app(a, false);
    let killed = kills(&s.converge());
    assert_eq!(killed.len(), 1);
    let sent = s.instances[&killed[0]].kill_sent_at.unwrap();

    // Within the retry period: nothing more.
    assert!(kills(&s.tick_at(sent + KILL_RETRY_SECONDS - 1.0)).is_empty());
    // Past it, the task still running: the kill goes again, once.
    let now = sent + KILL_RETRY_SECONDS;
    assert_eq!(kills(&s.tick_at(now)), killed);
    assert!(kills(&s.tick_at(now + 1.0)).is_empty());
    // Once it ends, no more kills.
    s.update(&status(&killed[0], TaskState::Killed));
    assert!(kills(&s.tick_at(now + 2.0 * KILL_RETRY_SECONDS)).is_empty());
    assert_eq!(s.live("/web").count(), 1);

    // After a restart (kill time not stored) a pending kill goes at once.
    let mut a = s.apps["/web"].app.clone();
    a.instances = 0;
    s.put_app(a, false);
    let killed = kills(&s.converge());
    s.instances.get_mut(&killed[0]).unwrap().kill_sent_at = None;
    assert_eq!(kills(&s.tick_at(now)), killed);
}

#[test]
fn unreachable_instances_are_replaced_and_the_surplus_killed_on_return() {
    let mut s = Services::new();
    s.put_app(
        app(json!({"id": "r", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16})),
        false,
    );
    launched(&s.offers(vec![offer("1", "h1", "cpus:4;mem:1024")]));
    run_all(&mut s);
    let first = s.instances.keys().next().unwrap().clone();
    s.update(&status(&first, TaskState::Unreachable));
    assert_eq!(s.live("/r").count(), 1);
    let replacement = launched(&s.offers(vec![offer("2", "h2", "cpus:4;mem:1024")]));
    assert_eq!(replacement.len(), 1);
    s.update(&status(&replacement[0].task_id, TaskState::Running));
    // The unreachable one comes back: one too many, one is killed.
    let acts = s.update(&status(&first, TaskState::Running));
    let kills = acts
        .iter()
        .filter(|a| matches!(a, Action::Kill { .. }))
        .count();
    assert_eq!(kills, 1);
    assert_eq!(s.live("/r").count(), 2);
}

#[test]
fn a_config_change_rolls_within_the_strategy() {
    let mut s = Services::new();
    s.put_app(
        app(
            json!({"id": "roll", "cmd": "x", "instances": 4, "cpus": 0.1, "mem": 16,
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}}),
        ),
        false,
    );
    launched(&s.offers(vec![offer("1", "h1", "cpus:8;mem:4096")]));
    run_all(&mut s);
    let mut a = s.apps["/roll"].app.clone();
    a.env.insert("V".into(), "2".into());
    let d = s.put_app(a, false).expect("a deployment");
    assert_eq!(d.previous.env.get("V"), None);
    // Kills are acknowledged (the task ends) as they are asked for.
    fn settle(s: &mut Services, mut acts: Vec<Action>) {
        while let Some(a) = acts.pop() {
            if let Action::Kill { task_id, .. } = a {
                acts.extend(s.update(&status(&task_id, TaskState::Killed)));
            }
        }
    }
    // Never more than 4 instances in existence, never fewer than 2 running.
    for round in 0..20 {
        let acts = s.converge();
        settle(&mut s, acts);
        let existing = s.instances_of("/roll").count();
        let running = s
            .live("/roll")
            .filter(|i| i.state == TaskState::Running)
            .count();
        assert!(existing <= 4, "round {round}: {existing} instances");
        assert!(running >= 2, "round {round}: {running} running");
        let acts = s.offers(vec![offer(&format!("r{round}"), "h1", "cpus:8;mem:4096")]);
        assert!(
            s.instances_of("/roll").count() <= 4,
            "round {round}: over capacity after launches"
        );
        settle(&mut s, acts);
        let ids: Vec<String> = s
            .instances
            .values()
            .filter(|i| i.state != TaskState::Running)
            .map(|i| i.task_id.clone())
            .collect();
        for id in ids {
            let acts = s.update(&status(&id, TaskState::Running));
            settle(&mut s, acts);
        }
        if s.apps["/roll"].deployment.is_none() {
            break;
        }
    }
    assert!(s.apps["/roll"].deployment.is_none(), "deployment finished");
    let v = s.apps["/roll"].app.version.clone();
    assert_eq!(s.live("/roll").filter(|i| i.version == v).count(), 4);
    assert_eq!(s.live("/roll").count(), 4);
}

#[test]
fn the_kill_grace_period_reaches_the_task() {
    let mut s = Services::new();
    s.put_app(
        app(
            json!({"id": "g", "cmd": "x", "cpus": 0.1, "mem": 16, "taskKillGracePeriodSeconds": 42}),
        ),
        false,
    );
    let t = launched(&s.offers(vec![offer("1", "h1", "cpus:4;mem:1024")]));
    assert_eq!(t[0].kill_grace_seconds, 42.0);
}

/// The scheduler's work carries its ids: a status update in a span with the
/// task and app ids, a deployment's steps in a span with the app and
/// deployment ids, offers in a span of their own.
#[test]
fn status_updates_and_deployment_steps_run_in_spans_with_their_ids() {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || out.clone())
        .finish();
    let mut s = Services::new();
    let (task, deployment) = tracing::subscriber::with_default(sub, || {
        s.put_app(
            app(json!({"id": "web", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16})),
            false,
        );
        s.offers(vec![offer("1", "h1", "cpus:4;mem:1024")]);
        let task = s.instances.keys().next().unwrap().clone();
        s.update(&status(&task, TaskState::Running));
        let mut a = s.apps["/web"].app.clone();
        a.env.insert("V".into(), "2".into());
        let d = s.put_app(a, false).unwrap();
        s.offers(vec![offer("2", "h1", "cpus:4;mem:1024")]);
        (task, d.id)
    });
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    for want in [
        format!("status_update{{task_id={task} state=TASK_RUNNING app_id=/web}}"),
        format!("deployment{{app_id=/web deployment_id={deployment}}}"),
        "offers{offers=1}".to_string(),
        "deployment step".to_string(),
    ] {
        assert!(logs.contains(&want), "{want} not in:\n{logs}");
    }
}

/// One round of a cluster that does what it is asked: converge, an offer,
/// starting instances run, killed ones end.
fn drive(s: &mut Services, round: usize) {
    s.converge();
    s.offers(vec![offer(&format!("d{round}"), "h1", "cpus:64;mem:65536")]);
    let ids: Vec<(String, bool)> = s
        .instances
        .values()
        .filter(|i| i.killing || i.state == TaskState::Staging)
        .map(|i| (i.task_id.clone(), i.killing))
        .collect();
    for (id, killing) in ids {
        let state = if killing {
            TaskState::Killed
        } else {
            TaskState::Running
        };
        if s.instances.get(&id).is_some_and(|i| i.state != state) {
            s.update(&status(&id, state));
        }
    }
}

fn with_env(s: &Services, id: &str, v: &str) -> App {
    let mut a = s.apps[id].app.clone();
    a.env.insert("V".into(), v.into());
    a
}

/// Issue 8, item 4: an old-version instance back from UNREACHABLE after
/// its deployment ended is surplus and is killed (not a current one), so
/// `tasksRunning` comes back to `instances`.
#[test]
fn an_old_version_instance_back_after_its_deployment_is_killed() {
    let mut s = Services::new();
    s.put_app(
        app(json!({"id": "o", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16})),
        false,
    );
    drive(&mut s, 0);
    let away = s.instances.keys().next().unwrap().clone();
    s.update(&status(&away, TaskState::Unreachable));
    s.put_app(with_env(&s, "/o", "2"), false)
        .expect("a deployment");
    for round in 1..20 {
        drive(&mut s, round);
    }
    assert!(s.apps["/o"].deployment.is_none());
    let v = s.apps["/o"].app.version.clone();
    assert_eq!(s.live("/o").filter(|i| i.version == v).count(), 2);
    assert_eq!(s.instances[&away].state, TaskState::Unreachable);
    // It comes back, running the old version: it is the one killed.
    let acts = s.update(&status(&away, TaskState::Running));
    assert_eq!(kills(&acts), vec![away.clone()]);
    s.update(&status(&away, TaskState::Killed));
    assert_eq!(s.live("/o").count(), 2);
    assert!(s.live("/o").all(|i| i.version == v));
}

/// Issue 8, item 4 (and review): a deployment stopped where it was
/// (`DELETE /v2/deployments/{id}?force=true`) leaves old-version instances.
/// Those beyond `instances` are surplus and killed, old first; those within
/// it keep serving (Marathon leaves the mix after a forced stop: the
/// operator often stopped it because the new version is bad, and replacing
/// them would be an ungated rollout of it). One that ends is replaced by
/// the current version.
#[test]
fn old_version_instances_left_by_a_stopped_deployment_stay_within_the_count() {
    let mut s = Services::new();
    s.put_app(
        app(
            json!({"id": "f", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16,
            "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5}}),
        ),
        false,
    );
    drive(&mut s, 0);
    let v1 = s.apps["/f"].app.version.clone();
    s.put_app(with_env(&s, "/f", "2"), false)
        .expect("a deployment");
    // One new instance runs (the over-capacity budget), then it stops.
    s.offers(vec![offer("1", "h1", "cpus:64;mem:65536")]);
    assert_eq!(s.instances.len(), 3);
    s.stop_deployment("/f");
    for round in 1..10 {
        drive(&mut s, round);
    }
    let v = s.apps["/f"].app.version.clone();
    let versions = |s: &Services| {
        let mut vs: Vec<String> = s.live("/f").map(|i| i.version.clone()).collect();
        vs.sort();
        vs
    };
    let mut want = vec![v1.clone(), v.clone()];
    want.sort();
    assert_eq!(versions(&s), want, "{:?}", s.instances);
    assert_eq!(s.instances.len(), 2, "one old instance (the surplus) went");
    // Nothing more happens while both run.
    for round in 10..15 {
        drive(&mut s, round);
    }
    assert_eq!(versions(&s), want);
    // The old one ends: its replacement runs the current version.
    let old = s
        .live("/f")
        .find(|i| i.version == v1)
        .unwrap()
        .task_id
        .clone();
    s.update(&status(&old, TaskState::Failed));
    // (No launch back-off in this test.)
    s.apps.get_mut("/f").unwrap().next_launch_at = 0.0;
    for round in 15..20 {
        drive(&mut s, round);
    }
    assert_eq!(versions(&s), vec![v.clone(), v]);
}

/// Issue 8, item 5: rolling back goes back to the previous version itself:
/// instances still running it stay (they are current again), only the
/// ones the deployment started are replaced, and a scale made during the
/// deployment is kept.
#[test]
fn a_rollback_keeps_instances_of_the_previous_version_and_the_count() {
    let mut s = Services::new();
    s.put_app(
        app(
            json!({"id": "b", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16,
            "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5}}),
        ),
        false,
    );
    drive(&mut s, 0);
    let v1 = s.apps["/b"].app.version.clone();
    s.put_app(with_env(&s, "/b", "2"), false)
        .expect("a deployment");
    // One new instance runs, one old one is replaced by it.
    drive(&mut s, 1);
    drive(&mut s, 2);
    let old: Vec<String> = s
        .live("/b")
        .filter(|i| i.version == v1)
        .map(|i| i.task_id.clone())
        .collect();
    assert_eq!(old.len(), 1, "{:?}", s.instances);
    // Scaled during the deployment.
    let mut a = s.apps["/b"].app.clone();
    a.instances = 3;
    s.put_app(a, false);

    let d = s.roll_back("/b").expect("a rollback deployment");
    assert_eq!(d.version, v1);
    assert_eq!(s.apps["/b"].app.version, v1);
    assert_eq!(s.apps["/b"].app.instances, 3);
    assert_eq!(s.apps["/b"].app.env.get("V"), None);
    assert!(kills(&s.converge()).iter().all(|k| !old.contains(k)));
    for round in 3..20 {
        drive(&mut s, round);
    }
    assert!(s.apps["/b"].deployment.is_none());
    assert_eq!(s.live("/b").count(), 3);
    assert!(s.live("/b").all(|i| i.version == v1));
    assert!(s.instances.contains_key(&old[0]), "{} was replaced", old[0]);
    assert!(s.roll_back("/b").is_none(), "nothing left to roll back");
}

/// Issue 8, item 2: Marathon's task kill. A killed task is replaced; with
/// `scale`, `instances` is lowered instead, by the live tasks killed.
#[test]
fn killed_tasks_are_replaced_unless_scaled() {
    let mut s = Services::new();
    s.put_app(
        app(json!({"id": "k", "cmd": "x", "instances": 3, "cpus": 0.1, "mem": 16})),
        false,
    );
    drive(&mut s, 0);
    let ids: Vec<String> = s.instances.keys().cloned().collect();
    let (killed, acts) = s.kill_tasks("/k", &ids[..1], false);
    assert_eq!(killed.len(), 1);
    assert_eq!(kills(&acts), vec![ids[0].clone()]);
    assert_eq!(s.apps["/k"].app.instances, 3);
    drive(&mut s, 1);
    assert_eq!(s.live("/k").count(), 3, "replaced");
    assert!(!s.instances.contains_key(&ids[0]));

    // Scaled: not replaced. A task of another app, or unknown, is not
    // touched.
    let (killed, acts) = s.kill_tasks("/k", &[ids[1].clone(), "nope".into()], true);
    assert_eq!((killed.len(), kills(&acts)), (1, vec![ids[1].clone()]));
    assert_eq!(s.apps["/k"].app.instances, 2);
    for round in 2..5 {
        drive(&mut s, round);
    }
    assert_eq!(s.live("/k").count(), 2);
    assert_eq!(s.instances.len(), 2);
}

/// The master un-suppresses a framework when it subscribes (Mesos v1), so
/// after SUBSCRIBED a framework that needs nothing says SUPPRESS again;
/// otherwise it would be offered every agent forever and decline them.
#[test]
fn after_subscribing_a_framework_that_needs_nothing_suppresses_again() {
    let mut s = Services::new();
    s.put_app(
        app(json!({"id": "web", "cmd": "serve", "instances": 1, "cpus": 1, "mem": 64})),
        false,
    );
    s.offers(vec![offer("1", "h1", "cpus:8;mem:4096")]);
    run_all(&mut s);
    assert!(
        !s.converge().contains(&Action::Suppress),
        "already suppressed"
    );
    // The connection drops and the framework subscribes again.
    s.reset_offer_state();
    assert!(s.converge().contains(&Action::Suppress));
    assert!(!s.converge().contains(&Action::Suppress), "said once");
    // One that needs offers needs no REVIVE after subscribing.
    let mut a = s.apps["/web"].app.clone();
    a.instances = 2;
    s.put_app(a, false);
    s.reset_offer_state();
    let acts = s.converge();
    assert!(!acts.contains(&Action::Revive) && !acts.contains(&Action::Suppress));
}

/// Review: a REVIVE that failed (a transient error on the call while the
/// subscription stays up) is sent again by the next converge; before, the
/// framework believed itself revived and waited for offers forever.
#[test]
fn a_failed_revive_or_suppress_is_sent_again() {
    let mut s = Services::new();
    s.put_app(
        app(json!({"id": "web", "cmd": "serve", "instances": 1, "cpus": 1, "mem": 64})),
        false,
    );
    s.offers(vec![offer("1", "h1", "cpus:8;mem:4096")]);
    run_all(&mut s);
    let mut a = s.apps["/web"].app.clone();
    a.instances = 2;
    s.put_app(a, false);
    assert!(s.converge().contains(&Action::Revive));
    s.offer_call_failed(&Action::Revive);
    assert!(s.converge().contains(&Action::Revive), "sent again");
    assert!(
        !s.converge().contains(&Action::Revive),
        "once it went through"
    );
    let t = launched(&s.offers(vec![offer("2", "h1", "cpus:8;mem:4096")]));
    assert_eq!(t.len(), 1);
    run_all(&mut s);
    assert!(s.converge().contains(&Action::Suppress) || s.suppressed);
    s.offer_call_failed(&Action::Suppress);
    assert!(s.converge().contains(&Action::Suppress), "sent again");
}

// ------------------------------------------------------ reserved resources

/// `offer` with its resources reserved for `role` (`*`: unreserved).
fn offer_of_role(id: &str, host: &str, res: &str, role: &str) -> Offer {
    Offer {
        role: role.into(),
        ..offer(id, host, res)
    }
}

/// (offer id, number of tasks) of every launch.
fn launches(actions: &[Action]) -> Vec<(String, usize)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Launch { offer, tasks } => Some((offer.0.clone(), tasks.len())),
            _ => None,
        })
        .collect()
}

fn declined(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::Decline { offers, .. } => offers.iter().map(|o| o.0.clone()).collect(),
            _ => vec![],
        })
        .collect()
}

#[test]
fn public_apps_launch_only_on_public_offers() {
    let mut s = Services::new();
    s.set_role("public");
    s.put_app(
        app(
            json!({"id": "edge", "cmd": "x", "instances": 2, "cpus": 1, "mem": 16,
            "acceptedResourceRoles": ["public"]}),
        ),
        false,
    );
    let acts = s.offers(vec![offer_of_role("1", "h1", "cpus:4;mem:1024", "*")]);
    assert!(launches(&acts).is_empty(), "{acts:?}");
    assert_eq!(declined(&acts), vec!["o-1"]);
    let w = s.apps["/edge"].waiting.clone().unwrap();
    assert!(
        w.contains("no offer of an accepted role") && w.contains("\"public\""),
        "{w}"
    );
    let acts = s.offers(vec![offer_of_role("2", "p1", "cpus:4;mem:1024", "public")]);
    assert_eq!(launches(&acts), vec![("o-2".to_string(), 2)]);
}

#[test]
fn default_apps_never_launch_on_reserved_offers() {
    let mut s = Services::new();
    s.set_role("public");
    s.put_app(
        app(json!({"id": "web", "cmd": "x", "instances": 2, "cpus": 1, "mem": 16})),
        false,
    );
    let acts = s.offers(vec![offer_of_role("1", "p1", "cpus:4;mem:1024", "public")]);
    assert!(launches(&acts).is_empty(), "{acts:?}");
    assert_eq!(declined(&acts), vec!["o-1"]);
    let acts = s.offers(vec![offer_of_role("2", "h1", "cpus:4;mem:1024", "*")]);
    assert_eq!(launches(&acts), vec![("o-2".to_string(), 2)]);
}

#[test]
fn apps_accepting_both_roles_use_both_kinds_of_offers() {
    let mut s = Services::new();
    s.set_role("public");
    s.put_app(
        app(
            json!({"id": "any", "cmd": "x", "instances": 2, "cpus": 1, "mem": 16,
            "acceptedResourceRoles": ["*", "public"]}),
        ),
        false,
    );
    // Each offer fits one instance: both are used.
    let acts = s.offers(vec![
        offer_of_role("1", "p1", "cpus:1;mem:1024", "public"),
        offer_of_role("2", "h1", "cpus:1;mem:1024", "*"),
    ]);
    assert_eq!(
        launches(&acts),
        vec![("o-1".to_string(), 1), ("o-2".to_string(), 1)]
    );
}

#[test]
fn roles_the_framework_is_never_offered_are_refused_saying_how_to_fix_it() {
    let public = app(json!({"id": "p", "cmd": "x", "acceptedResourceRoles": ["public"]}));
    let both = app(json!({"id": "b", "cmd": "x", "acceptedResourceRoles": ["*", "public"]}));
    let other = app(json!({"id": "o", "cmd": "x", "acceptedResourceRoles": ["*", "batch"]}));
    let default = app(json!({"id": "d", "cmd": "x"}));

    // Role `*` (the default): only unreserved resources are possible.
    let s = Services::new();
    assert_eq!(s.role(), "*");
    assert!(s.check_roles(&default).is_ok());
    for a in [&public, &both] {
        let e = s.check_roles(a).unwrap_err();
        assert_eq!(e[0].path, "/acceptedResourceRoles");
        let m = &e[0].errors[0];
        assert!(
            m.contains("\"public\"") && m.contains("--role public"),
            "{m}"
        );
        assert!(m.contains("possible roles are [\"*\"]"), "{m}");
    }
    // Role `public`: `*` and `public`.
    let mut s = Services::new();
    s.set_role("public");
    for a in [&public, &both, &default] {
        assert!(s.check_roles(a).is_ok(), "{:?}", a.accepted_resource_roles);
    }
    let e = s.check_roles(&other).unwrap_err();
    let m = &e[0].errors[0];
    assert!(
        m.contains("\"batch\"") && m.contains("\"*\" and \"public\"") && m.contains("--role batch"),
        "{m}"
    );
}

/// Issue 10: tasks carry references at the versions pinned for the app
/// version (never 0 once pinned, never a value); a new pin is a new
/// version replacing the instances.
#[test]
fn tasks_carry_secret_references_at_the_pinned_versions() {
    let mut s = Services::new();
    let mut a = app(
        json!({"id": "db", "cmd": "serve", "instances": 1, "cpus": 1, "mem": 64,
        "secrets": {"pw": {"source": "/prod/db/password"}, "tls": {"source": "prod/tls"}},
        "env": {"DB_PASSWORD": {"secret": "pw"}, "PLAIN": "p"},
        "container": {"type": "MESOS", "volumes": [{"containerPath": "secrets/tls", "secret": "tls"}]}}),
    );
    a.secret_versions.insert("/prod/db/password".into(), 3);
    a.secret_versions.insert("/prod/tls".into(), 1);
    s.put_app(a, false);
    let t = launched(&s.offers(vec![offer("1", "h1", "cpus:8;mem:4096")]));
    assert_eq!(t.len(), 1);
    let uses = &t[0].secrets;
    assert_eq!(uses.len(), 2, "{uses:?}");
    assert!(uses.contains(&pb::SecretUse {
        target: Some(pb::secret_use::Target::Env("DB_PASSWORD".into())),
        path: "/prod/db/password".into(),
        version: 3,
    }));
    assert!(uses.contains(&pb::SecretUse {
        target: Some(pb::secret_use::Target::File("secrets/tls".into())),
        path: "/prod/tls".into(),
        version: 1,
    }));
    // The reference is not an env variable of the task.
    let env = &t[0].command.as_ref().unwrap().env;
    assert!(env.iter().all(|e| e.name != "DB_PASSWORD"), "{env:?}");
    // What the master and agent accept.
    agora_proto::convert::task_info("task", t[0].clone()).unwrap();
    run_all(&mut s);

    // A rollout pins a new version: a deployment replacing the instance.
    let mut next = s.apps["/db"].app.clone();
    next.secret_versions.insert("/prod/db/password".into(), 4);
    assert!(
        s.put_app(next, false).is_some(),
        "a new pin is a new version"
    );
    let t = launched(&s.offers(vec![offer("2", "h1", "cpus:8;mem:4096")]));
    assert_eq!(t.len(), 1);
    assert!(
        t[0].secrets
            .iter()
            .any(|u| u.path == "/prod/db/password" && u.version == 4),
        "{:?}",
        t[0].secrets
    );
}

/// Marathon's `lastTaskFailure`: the last failed instance and why (a
/// secret that cannot be resolved, a crash); a kill is not a failure.
#[test]
fn a_failed_instance_is_the_apps_last_task_failure() {
    let mut s = Services::new();
    s.put_app(
        app(json!({"id": "f", "cmd": "serve", "instances": 1, "cpus": 1, "mem": 64})),
        false,
    );
    let t = launched(&s.offers(vec![offer("1", "h1", "cpus:8;mem:4096")]));
    let mut st = status(&t[0].task_id, TaskState::Failed);
    st.message = "secret /prod/db: not found: no such secret".into();
    s.update(&st);
    let f = s.apps["/f"].last_task_failure.clone().expect("recorded");
    assert_eq!(f.task_id, t[0].task_id);
    assert_eq!(f.state, TaskState::Failed);
    assert!(f.message.contains("/prod/db"), "{f:?}");
    assert_eq!(f.host, "h1");
    assert_eq!(f.version, s.apps["/f"].app.version);
}
