use super::*;
use serde_json::json;

#[test]
fn defaults_are_marathons() {
    let a = parse_app(&json!({"id": "web", "cmd": "serve"})).unwrap();
    assert_eq!(a.id, "/web");
    assert_eq!((a.instances, a.cpus, a.mem, a.disk), (1, 1.0, 128.0, 0.0));
    assert_eq!(
        (
            a.backoff_seconds,
            a.backoff_factor,
            a.max_launch_delay_seconds
        ),
        (1.0, 1.15, 300.0)
    );
    assert_eq!(
        a.upgrade_strategy,
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0
        }
    );
    assert_eq!(a.kill_selection, KillSelection::YoungestFirst);
    assert_eq!(a.network, NetworkMode::Host);
}

#[test]
fn every_problem_is_listed() {
    let errs = parse_app(&json!({
        "instances": -1,
        "cpus": "two",
        "healthChecks": [{"protocol": "GOPHER"}],
        "constraints": [["hostname", "SOMETIMES"]],
        "readinessChecks": [{"path": "/a"}, {"path": "/b"}],
        "colour": "blue"
    }))
    .unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "/id",
        "/instances",
        "/cpus",
        "/healthChecks/0/protocol",
        "/constraints/0",
        "/readinessChecks",
        "/colour",
        "/cmd",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    let msg = |p: &str| errs.iter().find(|e| e.path == p).unwrap().errors.join(" ");
    assert!(msg("/healthChecks/0/protocol").contains("GOPHER"));
    assert!(msg("/constraints/0").contains("SOMETIMES"));
    assert!(msg("/readinessChecks").contains("at most one"));
}

#[test]
fn full_definition_round_trips() {
    let def = json!({
        "id": "/shop/web",
        "container": {"type": "DOCKER", "docker": {"image": "agora-workload:latest"},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]},
        "networks": [{"mode": "container/bridge"}],
        "instances": 3, "cpus": 0.25, "mem": 64,
        "env": {"GREETING": "hi"},
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 5, "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 2}],
        "readinessChecks": [{"name": "ready", "protocol": "HTTP", "path": "/", "portName": "http"}],
        "constraints": [["hostname", "UNIQUE"], ["zone", "MAX_PER", "2"]],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}
    });
    let a = parse_app(&def).unwrap();
    assert_eq!(a.network, NetworkMode::Bridge);
    assert_eq!(a.host_ports_needed(), 1);
    assert_eq!(
        a.constraints[1],
        Constraint {
            field: "zone".into(),
            operator: Operator::MaxPer,
            value: Some("2".into())
        }
    );
    let again = parse_app(&a.to_marathon()).unwrap();
    assert_eq!(again, a);
    let stored: App = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
    assert_eq!(stored, a);
}

#[test]
fn ids_are_checked() {
    assert_eq!(normalize_id("a/b/").unwrap(), "/a/b");
    assert!(normalize_id("/").is_err());
    assert!(normalize_id("/Shop").is_err());
    assert!(normalize_id("/a//b").is_err());
    assert!(normalize_id("/a/-b").is_err());
}

#[test]
fn config_change_versus_scale() {
    let a = parse_app(&json!({"id": "web", "cmd": "serve", "instances": 2})).unwrap();
    let mut b = a.clone();
    b.instances = 5;
    assert!(a.same_config(&b));
    b.env.insert("X".into(), "1".into());
    assert!(!a.same_config(&b));
}
