//! Issue 9: service ports, endpoint publication and draining.

use super::*;
use crate::app::parse_app;
use crate::endpoints::{Drained, FORGET_DEPARTED, Hub, START_WINDOW};
use agora_core::endpoints::{Change, EndpointState, Publisher};
use agora_core::{AgentId, OfferId, Resources, TaskId};
use agora_sdk::Offer;
use serde_json::json;
use std::time::{Duration, Instant};

fn offer(id: &str, host: &str) -> Offer {
    Offer {
        id: OfferId::new(format!("o-{id}")),
        agent_id: AgentId::new(format!("a-{host}")),
        hostname: host.into(),
        address: None,
        resources: Resources::parse("cpus:8;mem:4096;ports:[31000-31099]").unwrap(),
        attributes: vec![],
        role: "*".into(),
    }
}

fn status(t: &str, s: TaskState, healthy: Option<bool>) -> TaskStatus {
    TaskStatus {
        task_id: TaskId::new(t),
        agent_id: AgentId::new("a"),
        state: s,
        message: String::new(),
        reason: String::new(),
        exit_code: None,
        healthy,
        ready: None,
        uuid: vec![],
    }
}

fn kills(actions: &[Action]) -> Vec<String> {
    let mut k: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Kill { task_id, .. } => Some(task_id.clone()),
            _ => None,
        })
        .collect();
    k.sort();
    k
}

fn launches(actions: &[Action]) -> usize {
    actions
        .iter()
        .map(|a| match a {
            Action::Launch { tasks, .. } => tasks.len(),
            _ => 0,
        })
        .sum()
}

/// Puts an app through the same checks as the API.
fn put(s: &mut Services, def: serde_json::Value) -> Result<(), Vec<String>> {
    let mut a = parse_app(&def).unwrap();
    s.claim_ports(&mut a)
        .map_err(|e| e.into_iter().flat_map(|e| e.errors).collect::<Vec<_>>())?;
    s.put_app(a, false);
    Ok(())
}

fn sps(s: &Services, id: &str) -> Vec<u32> {
    s.app(id)
        .unwrap()
        .app
        .ports()
        .iter()
        .map(|p| p.service_port)
        .collect()
}

#[test]
fn service_ports_are_assigned_once_unique_and_a_taken_one_names_its_holder() {
    let mut s = Services::new();
    s.set_service_ports(10_000, 10_002);
    put(
        &mut s,
        json!({"id": "/a", "cmd": "x", "portDefinitions": [{"port": 0}, {"port": 0}]}),
    )
    .unwrap();
    assert_eq!(sps(&s, "/a"), vec![10_000, 10_001]);
    let e = put(
        &mut s,
        json!({"id": "/b", "cmd": "x", "portDefinitions": [{"port": 10_001}]}),
    )
    .unwrap_err();
    assert!(e[0].contains("10001") && e[0].contains("/a"), "{e:?}");
    put(
        &mut s,
        json!({"id": "/b", "cmd": "x", "portDefinitions": [{"port": 0}]}),
    )
    .unwrap();
    assert_eq!(sps(&s, "/b"), vec![10_002]);
    let e = put(
        &mut s,
        json!({"id": "/c", "cmd": "x", "portDefinitions": [{"port": 0}]}),
    )
    .unwrap_err();
    assert!(e[0].contains("no free service port"), "{e:?}");
    // A new version of /a keeps its ports; its own explicit one is free to it.
    put(
        &mut s,
        json!({"id": "/a", "cmd": "y", "portDefinitions": [{"port": 0}, {"port": 0}]}),
    )
    .unwrap();
    assert_eq!(sps(&s, "/a"), vec![10_000, 10_001]);
    put(
        &mut s,
        json!({"id": "/a", "cmd": "z", "portDefinitions": [{"port": 10_001}, {"port": 0}]}),
    )
    .unwrap();
    assert_eq!(sps(&s, "/a"), vec![10_001, 10_000]);
    let e = put(
        &mut s,
        json!({"id": "/d", "cmd": "x", "portDefinitions": [{"port": 30_000}, {"port": 30_000}]}),
    )
    .unwrap_err();
    assert!(e[0].contains("twice"), "{e:?}");
    // Explicit ports outside the range are fine when free.
    put(
        &mut s,
        json!({"id": "/d", "cmd": "x", "portDefinitions": [{"port": 30_000}]}),
    )
    .unwrap();
}

#[test]
fn two_apps_claiming_the_same_vhost_and_path_are_refused_naming_both() {
    let mut s = Services::new();
    let web = |id: &str, vhost: &str, path: &str| {
        json!({"id": id, "cmd": "x", "portDefinitions": [{"port": 0,
            "labels": {"expose": "public", "vhost": vhost, "path": path}}]})
    };
    put(&mut s, web("/shop/web", "shop.example.com", "/")).unwrap();
    let e = put(
        &mut s,
        web("/shop/other", "www.example.com,Shop.example.com", "/"),
    )
    .unwrap_err();
    assert!(
        e[0].contains("/shop/web") && e[0].contains("/shop/other"),
        "{e:?}"
    );
    put(&mut s, web("/shop/api", "shop.example.com", "/api")).unwrap();
    // The app itself may keep its claim in a new version.
    put(&mut s, web("/shop/api", "shop.example.com", "/api")).unwrap();
}

/// Sets hold running instances that pass their checks (serving), with the
/// agent's host and the host port of each port; publishing again what did
/// not change makes no version, and only apps that changed are looked at.
#[test]
fn published_sets_list_instances_that_pass_their_checks() {
    let mut s = Services::new();
    put(&mut s, json!({"id": "/demo/web", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16,
        "portDefinitions": [{"port": 0, "name": "http", "labels": {"expose": "public", "vhost": "web.example.com"}},
            {"port": 0}],
        "healthChecks": [{"protocol": "MESOS_TCP", "portIndex": 0}]})).unwrap();
    let mut p = Publisher::default();
    let u = s.publish(&mut p);
    assert_eq!(u.len(), 1);
    assert_eq!(p.app("/demo/web").len(), 2, "a set per port, even empty");
    assert!(p.app("/demo/web").iter().all(|s| s.endpoints.is_empty()));
    s.offers(vec![offer("1", "h1")]);
    assert!(s.publish(&mut p).is_empty(), "staging: nothing to list");
    let ids: Vec<String> = s.instances().keys().cloned().collect();
    for t in &ids {
        s.update(&status(t, TaskState::Running, None));
    }
    assert!(s.publish(&mut p).is_empty(), "running but not healthy yet");
    s.update(&status(&ids[0], TaskState::Running, Some(true)));
    let u = s.publish(&mut p);
    assert_eq!(u.len(), 1);
    let Change::Put { set } = &u[0].changes[0] else {
        panic!("{u:?}")
    };
    let inst = s.instance(&ids[0]).unwrap();
    assert_eq!(set.meta.name.as_deref(), Some("http"));
    assert!(set.meta.public);
    assert_eq!(set.meta.vhosts, vec!["web.example.com".to_string()]);
    assert_eq!(set.meta.service_port, Some(10_000));
    assert_eq!(set.endpoints.len(), 1);
    assert_eq!(set.endpoints[0].host, "h1");
    assert_eq!(set.endpoints[0].port, inst.ports[0]);
    assert_eq!(set.endpoints[0].state, EndpointState::Serving);
    let Change::Put { set } = &u[0].changes[1] else {
        panic!("{u:?}")
    };
    assert_eq!(set.endpoints[0].port, inst.ports[1]);
    assert!(s.published.is_empty());
    // A tick that changes nothing publishes nothing.
    s.tick();
    assert!(s.publish(&mut p).is_empty());
    let v = p.version();
    // Deleting the app removes its sets.
    s.delete_app("/demo/web");
    let u = s.publish(&mut p);
    assert_eq!(p.version(), v + 1);
    assert!(
        u[0].changes
            .iter()
            .all(|c| matches!(c, Change::Remove { .. }))
    );
}

/// An app with `n` running instances (no checks) and one port.
/// An endpoint is reached at the agent's internal address (the offer's
/// `address`), the hostname only for agents that send none; the task is told
/// the same address in `HOST`. The address is the one the instance was
/// launched with: its ports stay bound there, so a later offer from the same
/// agent with another address moves only new instances (and a restart of
/// the framework keeps it).
#[test]
fn endpoints_use_the_agents_internal_address_from_the_launch() {
    let mut s = Services::new();
    put(
        &mut s,
        json!({"id": "/w", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
        "portDefinitions": [{"port": 0}]}),
    )
    .unwrap();
    let host_env = |actions: &[Action]| -> Vec<String> {
        actions
            .iter()
            .flat_map(|a| match a {
                Action::Launch { tasks, .. } => tasks.clone(),
                _ => vec![],
            })
            .flat_map(|t| t.command.unwrap_or_default().env)
            .filter(|e| e.name == "HOST")
            .map(|e| e.value)
            .collect()
    };
    let hosts = |s: &mut Services, p: &mut Publisher| -> Vec<String> {
        s.publish(p);
        let mut h: Vec<String> = p.app("/w")[0]
            .endpoints
            .iter()
            .map(|e| e.host.clone())
            .collect();
        h.sort();
        h
    };
    let mut first = offer("1", "node-1");
    first.address = Some([10, 0, 0, 7].into());
    assert_eq!(host_env(&s.offers(vec![first])), ["10.0.0.7"]);
    let ids: Vec<String> = s.instances().keys().cloned().collect();
    s.update(&status(&ids[0], TaskState::Running, None));
    let mut p = Publisher::default();
    assert_eq!(hosts(&mut s, &mut p), ["10.0.0.7"]);
    // The agent comes back with another address: the running instance is
    // still where its ports were bound; a new one is at the new address.
    let mut a = s.app("/w").unwrap().app.clone();
    a.instances = 2;
    s.put_app(a, false);
    let mut again = offer("2", "node-1");
    again.address = Some([10, 0, 0, 8].into());
    assert_eq!(host_env(&s.offers(vec![again])), ["10.0.0.8"]);
    for t in s.instances().keys().cloned().collect::<Vec<_>>() {
        s.update(&status(&t, TaskState::Running, None));
    }
    assert_eq!(hosts(&mut s, &mut p), ["10.0.0.7", "10.0.0.8"]);
    // Stored and restored with the instance.
    let apps: Vec<AppState> = s.apps().values().cloned().collect();
    let insts: Vec<Instance> = s
        .instances()
        .values()
        .map(|x| serde_json::from_str(&serde_json::to_string(x).unwrap()).unwrap())
        .collect();
    let mut back = Services::restore(apps, insts);
    let mut p = Publisher::default();
    assert_eq!(hosts(&mut back, &mut p), ["10.0.0.7", "10.0.0.8"]);
    // An agent that sends no address: its hostname.
    let mut a = back.app("/w").unwrap().app.clone();
    a.instances = 3;
    back.put_app(a, false);
    assert_eq!(
        host_env(&back.offers(vec![offer("3", "node-2")])),
        ["node-2"]
    );
    for t in back.instances().keys().cloned().collect::<Vec<_>>() {
        back.update(&status(&t, TaskState::Running, None));
    }
    assert_eq!(hosts(&mut back, &mut p), ["10.0.0.7", "10.0.0.8", "node-2"]);
}

fn running_app(n: u32, extra: serde_json::Value) -> (Services, Vec<String>) {
    let mut s = Services::new();
    let mut def = json!({"id": "/w", "cmd": "x", "instances": n, "cpus": 0.1, "mem": 16,
        "portDefinitions": [{"port": 0}]});
    for (k, v) in extra.as_object().unwrap() {
        def[k] = v.clone();
    }
    put(&mut s, def).unwrap();
    s.offers(vec![offer("1", "h1")]);
    let ids: Vec<String> = s.instances().keys().cloned().collect();
    for t in &ids {
        s.update(&status(t, TaskState::Running, None));
    }
    (s, ids)
}

fn scale(s: &mut Services, n: u32) -> Vec<Action> {
    let mut a = s.app("/w").unwrap().app.clone();
    a.instances = n;
    s.put_app(a, false);
    s.converge()
}

#[test]
fn a_serving_instance_drains_until_the_routers_acknowledge() {
    let (mut s, _) = running_app(2, json!({}));
    let mut p = Publisher::default();
    s.publish(&mut p);
    let acts = scale(&mut s, 1);
    assert!(kills(&acts).is_empty(), "killed without draining: {acts:?}");
    let t = s.draining().next().unwrap().clone();
    assert!(s.instance(&t).unwrap().killing);
    // Not released before its draining is published.
    assert!(s.release_drains(now_s(), Drained::Nobody).is_empty());
    s.publish(&mut p);
    let set = &p.app("/w")[0];
    let e = set.endpoints.iter().find(|e| e.task_id == t).unwrap();
    assert_eq!(e.state, EndpointState::Draining);
    let v = p.version();
    // A participant that has not drained that version holds the kill.
    assert!(s.release_drains(now_s(), Drained::Upto(v - 1)).is_empty());
    assert_eq!(
        kills(&s.release_drains(now_s(), Drained::Upto(v))),
        vec![t.clone()]
    );
    assert_eq!(s.draining().count(), 0);
    // Its end removes it from the set.
    s.update(&status(&t, TaskState::Killed, None));
    s.publish(&mut p);
    assert_eq!(p.app("/w")[0].endpoints.len(), 1);
}

#[test]
fn a_drain_ends_at_drain_seconds_or_at_once_without_participants() {
    let (mut s, _) = running_app(3, json!({"labels": {"drainSeconds": "2"}}));
    let mut p = Publisher::default();
    scale(&mut s, 2);
    s.publish(&mut p);
    let now = now_s();
    assert!(s.release_drains(now, Drained::Upto(0)).is_empty());
    let deadline = s.next_drain_deadline().unwrap();
    assert!((deadline - now - 2.0).abs() < 1.0, "{deadline} vs {now}");
    assert_eq!(
        kills(&s.release_drains(deadline, Drained::Upto(0))).len(),
        1
    );
    // No participant connected: killed once published.
    scale(&mut s, 1);
    assert!(s.release_drains(now_s(), Drained::Nobody).is_empty());
    s.publish(&mut p);
    assert_eq!(kills(&s.release_drains(now_s(), Drained::Nobody)).len(), 1);
}

#[test]
fn instances_that_do_not_serve_are_killed_at_once() {
    // drainSeconds 0.
    let (mut s, _) = running_app(2, json!({"labels": {"drainSeconds": "0"}}));
    assert_eq!(kills(&scale(&mut s, 1)).len(), 1);
    // No ports: nothing routes to it.
    let mut s = Services::new();
    put(
        &mut s,
        json!({"id": "/w", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16}),
    )
    .unwrap();
    s.offers(vec![offer("1", "h1")]);
    let ids: Vec<String> = s.instances().keys().cloned().collect();
    for t in &ids {
        s.update(&status(t, TaskState::Running, None));
    }
    assert_eq!(kills(&scale(&mut s, 1)).len(), 1);
    // Staging, or not healthy yet.
    let (mut s, _) = running_app(3, json!({"healthChecks": [{"protocol": "MESOS_TCP"}]}));
    // The oldest is healthy; youngest first, the two others go.
    let oldest = s
        .instances()
        .values()
        .min_by_key(|i| i.seq)
        .unwrap()
        .task_id
        .clone();
    s.update(&status(&oldest, TaskState::Running, Some(true)));
    let acts = scale(&mut s, 1);
    assert_eq!(kills(&acts).len(), 2, "the unhealthy ones: {acts:?}");
    // The task kill API drains a serving one; asked again, kills it now.
    let (mut s, ids) = running_app(2, json!({}));
    let (_, acts) = s.kill_tasks("/w", &ids[..1], false);
    assert!(kills(&acts).is_empty());
    let (_, acts) = s.kill_tasks("/w", &ids[..1], false);
    assert_eq!(kills(&acts), vec![ids[0].clone()]);
    assert_eq!(s.draining().count(), 0);
}

/// A draining instance is on its way out: not serving capacity, but it
/// still counts against maximumOverCapacity, so a rolling step launches no
/// more than the strategy allows while old instances drain.
#[test]
fn draining_instances_count_against_over_capacity() {
    let (mut s, _) = running_app(
        2,
        json!({"upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}}),
    );
    let mut a = s.app("/w").unwrap().app.clone();
    a.env.insert("V".into(), "2".into());
    s.put_app(a, false);
    s.converge();
    // At most 2 + 1 instances: one new one.
    let acts = s.offers(vec![offer("2", "h2")]);
    assert_eq!(launches(&acts), 1);
    let new: Vec<String> = s
        .instances()
        .values()
        .filter(|i| i.state == TaskState::Staging)
        .map(|i| i.task_id.clone())
        .collect();
    s.update(&status(&new[0], TaskState::Running, None));
    // The new one is ready: old ones go — draining, not killed yet.
    assert!(s.draining().count() >= 1);
    let out_of_service = s.instances().values().filter(|i| i.killing).count();
    let acts = s.offers(vec![offer("3", "h3")]);
    let total = s
        .instances()
        .values()
        .filter(|i| !i.state.is_terminal())
        .count();
    assert!(
        total <= 3,
        "{total} instances with {out_of_service} draining: beyond maximumOverCapacity ({acts:?})"
    );
    s.check_indexes().unwrap();
}

/// The draining mark is stored: a restart mid-drain still kills the
/// instance (after publishing it as draining), and the periodic kill
/// resend does not send it early. Scenario A: after the restart the routers
/// are not known yet (they reconnect with back-off and meanwhile route by
/// their old view), so the drain does not end at the first publication:
/// only at its deadline, or once the start window is over and the
/// participants that connected have drained it.
#[test]
fn a_restart_mid_drain_does_not_lose_the_kill() {
    let (mut s, _) = running_app(2, json!({"labels": {"drainSeconds": "60"}}));
    scale(&mut s, 1);
    let t = s.draining().next().unwrap().clone();
    let round = |x: &Instance| -> Instance {
        serde_json::from_str(&serde_json::to_string(x).unwrap()).unwrap()
    };
    let apps: Vec<AppState> = s.apps().values().cloned().collect();
    let insts: Vec<Instance> = s.instances().values().map(round).collect();
    let mut back = Services::restore(apps, insts);
    assert_eq!(
        back.draining().cloned().collect::<Vec<_>>(),
        vec![t.clone()]
    );
    assert!(
        kills(&back.tick()).is_empty(),
        "sent before the drain is over"
    );
    let hub = Hub::new(1_000, START_WINDOW);
    let start = Instant::now();
    assert!(back.release_drains(now_s(), hub.drained()).is_empty());
    hub.publish(|p| back.publish(p));
    let snap = hub.snapshot();
    let e = snap.sets[0].endpoints.iter().find(|e| e.task_id == t);
    assert_eq!(e.map(|e| e.state), Some(EndpointState::Draining));
    // No router has reconnected yet: not released.
    assert_eq!(hub.drained(), Drained::Unknown);
    assert!(
        back.release_drains(now_s(), hub.drained()).is_empty(),
        "killed while the routers may still route to it"
    );
    // One router is back and drained it: others may still be on their way.
    let _r1 = hub.join("r1");
    assert!(hub.ack("r1", Some(snap.version), Some(snap.version)));
    assert!(back.release_drains(now_s(), hub.drained()).is_empty());
    assert!(hub.next_change().is_some_and(|c| c > start));
    // The window is over: the participants' acks decide.
    let later = start + START_WINDOW + Duration::from_secs(1);
    assert_eq!(hub.drained_at(later), Drained::Upto(snap.version - 1_000));
    assert_eq!(
        kills(&back.release_drains(now_s(), hub.drained_at(later))),
        vec![t]
    );
    back.check_indexes().unwrap();
}

/// Scenario A without any router: the drain ends at its deadline even
/// inside the start window.
#[test]
fn after_a_restart_a_drain_still_ends_at_its_deadline() {
    let (mut s, _) = running_app(2, json!({"labels": {"drainSeconds": "2"}}));
    scale(&mut s, 1);
    let hub = Hub::new(0, START_WINDOW);
    hub.publish(|p| s.publish(p));
    assert!(s.release_drains(now_s(), hub.drained()).is_empty());
    let deadline = s.next_drain_deadline().unwrap();
    assert_eq!(kills(&s.release_drains(deadline, hub.drained())).len(), 1);
}

/// Scenario B: a router whose stream drops (or that is cut off for lagging)
/// keeps routing by its last view: it stays in the wait set, its acks after
/// reconnecting count; one that never comes back delays the kill only until
/// the deadline, and is forgotten after FORGET_DEPARTED.
#[test]
fn a_router_whose_stream_dropped_still_holds_the_drain() {
    let (mut s, _) = running_app(3, json!({"labels": {"drainSeconds": "60"}}));
    let hub = Hub::new(0, Duration::ZERO);
    let r1 = hub.join("r1");
    let r2 = hub.join("r2");
    hub.publish(|p| s.publish(p));
    scale(&mut s, 2);
    let v = hub.publish(|p| s.publish(p));
    let t = s.draining().next().unwrap().clone();
    assert!(hub.ack("r1", Some(v), Some(v)));
    // r2 has not drained it; its stream drops.
    drop(r2);
    assert_eq!(hub.drained(), Drained::Upto(0));
    assert!(
        s.release_drains(now_s(), hub.drained()).is_empty(),
        "killed while the disconnected router may still send it requests"
    );
    // It reconnects (same id) and drains: released at once.
    let r2 = hub.join("r2");
    assert!(hub.ack("r2", Some(v), Some(v)));
    assert_eq!(kills(&s.release_drains(now_s(), hub.drained())), vec![t]);

    // Another drain; r2 goes away for good.
    scale(&mut s, 1);
    let v = hub.publish(|p| s.publish(p));
    assert!(hub.ack("r1", Some(v), Some(v)));
    drop(r2);
    assert!(s.release_drains(now_s(), hub.drained()).is_empty());
    // Held until its deadline.
    let deadline = s.next_drain_deadline().unwrap();
    assert_eq!(kills(&s.release_drains(deadline, hub.drained())).len(), 1);
    // Forgotten after the bound; r1 alone is left.
    let then = Instant::now() + FORGET_DEPARTED + Duration::from_secs(1);
    assert!(hub.next_change().is_some_and(|c| c < then));
    assert_eq!(hub.drained_at(then), Drained::Upto(v));
    assert_eq!(hub.participants().len(), 1);
    drop(r1);
}

/// The fast path: every participant connected and acknowledged, past the
/// start window: released at once, well before the deadline.
#[test]
fn connected_participants_that_drained_release_at_once() {
    let (mut s, _) = running_app(2, json!({"labels": {"drainSeconds": "600"}}));
    let hub = Hub::new(0, Duration::ZERO);
    let _r1 = hub.join("r1");
    scale(&mut s, 1);
    let v = hub.publish(|p| s.publish(p));
    assert!(s.release_drains(now_s(), hub.drained()).is_empty());
    assert!(hub.ack("r1", Some(v), Some(v)));
    assert_eq!(kills(&s.release_drains(now_s(), hub.drained())).len(), 1);
}

/// Host networking as in Marathon: `port` is the service port and the host
/// port is any free one from the offer, unless `requirePorts` makes it
/// exactly `port` (assigned first when 0); such a port not offered is not
/// placed.
#[test]
fn require_ports_places_on_exactly_the_service_port_else_any() {
    let mut s = Services::new();
    s.set_service_ports(31_090, 31_099);
    let host_ports = |s: &Services, id: &str| -> Vec<u32> {
        s.instances()
            .values()
            .filter(|i| i.app_id == id)
            .flat_map(|i| i.ports.clone())
            .collect()
    };
    put(
        &mut s,
        json!({"id": "/any", "cmd": "x", "portDefinitions": [{"port": 31_050}]}),
    )
    .unwrap();
    assert_eq!(launches(&s.offers(vec![offer("1", "h1")])), 1);
    assert_eq!(sps(&s, "/any"), [31_050]);
    assert_eq!(host_ports(&s, "/any"), [31_000], "any free port, not 31050");

    put(
        &mut s,
        json!({"id": "/fixed", "cmd": "x", "requirePorts": true,
        "portDefinitions": [{"port": 31_060, "name": "http"}, {"port": 0}]}),
    )
    .unwrap();
    let acts = s.offers(vec![offer("2", "h2")]);
    assert_eq!(launches(&acts), 1);
    assert_eq!(sps(&s, "/fixed"), [31_060, 31_090]);
    assert_eq!(host_ports(&s, "/fixed"), [31_060, 31_090]);
    let env: Vec<(String, String)> = acts
        .iter()
        .flat_map(|a| match a {
            Action::Launch { tasks, .. } => tasks.clone(),
            _ => vec![],
        })
        .flat_map(|t| t.command.unwrap().env)
        .map(|e| (e.name, e.value))
        .collect();
    assert!(env.contains(&("PORT0".into(), "31060".into())), "{env:?}");
    assert!(
        env.contains(&("PORT_HTTP".into(), "31060".into())),
        "{env:?}"
    );
    assert!(env.contains(&("PORT1".into(), "31090".into())), "{env:?}");

    // A required port the agents do not offer: nothing is placed.
    put(
        &mut s,
        json!({"id": "/out", "cmd": "x", "requirePorts": true,
        "portDefinitions": [{"port": 40_000}]}),
    )
    .unwrap();
    assert_eq!(launches(&s.offers(vec![offer("3", "h3")])), 0);
    assert!(host_ports(&s, "/out").is_empty());
    let waiting = s.app("/out").unwrap().waiting.clone().unwrap_or_default();
    assert!(waiting.contains("port"), "{waiting}");
}
