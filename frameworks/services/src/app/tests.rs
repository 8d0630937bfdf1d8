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
    assert_eq!(a.accepted_resource_roles, vec!["*".to_string()]);
    assert_eq!(a.to_marathon()["acceptedResourceRoles"], json!(["*"]));
}

#[test]
fn accepted_resource_roles_are_parsed_and_round_trip() {
    let a = parse_app(&with(json!({"acceptedResourceRoles": ["public"]}))).unwrap();
    assert_eq!(a.accepted_resource_roles, vec!["public".to_string()]);
    // A set, as in Marathon: sorted, duplicates dropped.
    let a = parse_app(&with(
        json!({"acceptedResourceRoles": ["public", "*", "public"]}),
    ))
    .unwrap();
    assert_eq!(
        a.accepted_resource_roles,
        vec!["*".to_string(), "public".into()]
    );
    assert_eq!(
        a.to_marathon()["acceptedResourceRoles"],
        json!(["*", "public"])
    );
    assert_eq!(parse_app(&a.to_marathon()).unwrap(), a);
    let stored: App = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
    assert_eq!(stored, a);
    // null: the default, like absent.
    let a = parse_app(&with(json!({"acceptedResourceRoles": null}))).unwrap();
    assert_eq!(a.accepted_resource_roles, vec!["*".to_string()]);
    // A changed set is a new version (a rolling deployment), not a scale.
    let b = parse_app(&with(json!({"acceptedResourceRoles": ["*", "public"]}))).unwrap();
    assert!(!a.same_config(&b));
}

#[test]
fn bad_accepted_resource_roles_are_422s_naming_the_field() {
    for (patch, path, says) in [
        (
            json!({"acceptedResourceRoles": []}),
            "/acceptedResourceRoles",
            "must not be empty",
        ),
        (
            json!({"acceptedResourceRoles": "public"}),
            "/acceptedResourceRoles",
            "must be an array",
        ),
        (
            json!({"acceptedResourceRoles": [7]}),
            "/acceptedResourceRoles/0",
            "must be a string",
        ),
        (
            json!({"acceptedResourceRoles": ["*", ""]}),
            "/acceptedResourceRoles/1",
            "must not be empty",
        ),
        (
            json!({"acceptedResourceRoles": ["a b"]}),
            "/acceptedResourceRoles/0",
            "contains ' '",
        ),
        (
            json!({"acceptedResourceRoles": [".."]}),
            "/acceptedResourceRoles/0",
            "only dots",
        ),
    ] {
        let errs = parse_app(&with(patch.clone())).unwrap_err();
        let e = errs
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{patch}: {path} not in {errs:?}"));
        assert!(e.errors.iter().any(|m| m.contains(says)), "{patch}: {e:?}");
    }
}

/// Apps stored before `acceptedResourceRoles` existed load with `["*"]`.
#[test]
fn stored_apps_without_accepted_resource_roles_load_unreserved_only() {
    let a = parse_app(&with(json!({}))).unwrap();
    let mut row = serde_json::to_value(&a).unwrap();
    row.as_object_mut()
        .unwrap()
        .remove("acceptedResourceRoles")
        .unwrap();
    let old: App = serde_json::from_value(row).unwrap();
    assert_eq!(old.accepted_resource_roles, vec!["*".to_string()]);
    assert_eq!(old, a);
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

/// The paths of the problems `def` has (it must be refused).
fn refused(def: serde_json::Value) -> Vec<String> {
    match parse_app(&def) {
        Ok(a) => panic!("accepted {def}: {a:?}"),
        Err(errs) => errs.into_iter().map(|e| e.path).collect(),
    }
}

/// `patch` merged into a valid bridge app with one named port.
fn with(patch: serde_json::Value) -> serde_json::Value {
    let mut def = json!({
        "id": "/v", "cmd": "serve",
        "container": {"type": "DOCKER", "docker": {"image": "agora-workload:latest"},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]},
        "networks": [{"mode": "container/bridge"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "portIndex": 0}],
        "readinessChecks": [{"portName": "http"}],
    });
    merge(&mut def, patch);
    def
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (serde_json::Value::Array(a), serde_json::Value::Array(b)) if a.len() == b.len() => {
            for (x, y) in a.iter_mut().zip(b) {
                merge(x, y);
            }
        }
        (a, b) => *a = b,
    }
}

/// Issue 7, point 7: every number of a definition is checked — negative,
/// out of range, huge (1e300) or of the wrong kind — and refused naming the
/// field, by family.
#[test]
fn every_number_is_range_checked_naming_the_field() {
    assert!(
        parse_app(&with(json!({}))).is_ok(),
        "the base definition is valid"
    );
    let cases: Vec<(serde_json::Value, &str)> = vec![
        // resources and counts
        (json!({"instances": -1}), "/instances"),
        (json!({"instances": 1.5}), "/instances"),
        (json!({"instances": 1e300}), "/instances"),
        (json!({"instances": 10001}), "/instances"),
        (json!({"instances": "3"}), "/instances"),
        (json!({"cpus": 0}), "/cpus"),
        (json!({"cpus": -1}), "/cpus"),
        (json!({"cpus": 1e300}), "/cpus"),
        (json!({"mem": 0}), "/mem"),
        (json!({"mem": 1e300}), "/mem"),
        (json!({"disk": -1}), "/disk"),
        (json!({"disk": 1e300}), "/disk"),
        // launch backoff and kills
        (json!({"backoffSeconds": -1}), "/backoffSeconds"),
        (json!({"backoffSeconds": 1e300}), "/backoffSeconds"),
        (json!({"backoffFactor": 0.5}), "/backoffFactor"),
        (json!({"backoffFactor": 1e300}), "/backoffFactor"),
        (
            json!({"maxLaunchDelaySeconds": -1}),
            "/maxLaunchDelaySeconds",
        ),
        (
            json!({"maxLaunchDelaySeconds": 1e300}),
            "/maxLaunchDelaySeconds",
        ),
        (
            json!({"taskKillGracePeriodSeconds": -1}),
            "/taskKillGracePeriodSeconds",
        ),
        (
            json!({"taskKillGracePeriodSeconds": 1e300}),
            "/taskKillGracePeriodSeconds",
        ),
        // health checks
        (
            json!({"healthChecks": [{"gracePeriodSeconds": -1}]}),
            "/healthChecks/0/gracePeriodSeconds",
        ),
        (
            json!({"healthChecks": [{"gracePeriodSeconds": 1e300}]}),
            "/healthChecks/0/gracePeriodSeconds",
        ),
        (
            json!({"healthChecks": [{"intervalSeconds": 0}]}),
            "/healthChecks/0/intervalSeconds",
        ),
        (
            json!({"healthChecks": [{"intervalSeconds": -5}]}),
            "/healthChecks/0/intervalSeconds",
        ),
        (
            json!({"healthChecks": [{"intervalSeconds": 1e300}]}),
            "/healthChecks/0/intervalSeconds",
        ),
        (
            json!({"healthChecks": [{"timeoutSeconds": 0}]}),
            "/healthChecks/0/timeoutSeconds",
        ),
        (
            json!({"healthChecks": [{"timeoutSeconds": 1e300}]}),
            "/healthChecks/0/timeoutSeconds",
        ),
        (
            json!({"healthChecks": [{"maxConsecutiveFailures": -1}]}),
            "/healthChecks/0/maxConsecutiveFailures",
        ),
        (
            json!({"healthChecks": [{"maxConsecutiveFailures": 1.5}]}),
            "/healthChecks/0/maxConsecutiveFailures",
        ),
        (
            json!({"healthChecks": [{"maxConsecutiveFailures": 1e300}]}),
            "/healthChecks/0/maxConsecutiveFailures",
        ),
        (
            json!({"healthChecks": [{"portIndex": -1}]}),
            "/healthChecks/0/portIndex",
        ),
        (
            json!({"healthChecks": [{"portIndex": 1e300}]}),
            "/healthChecks/0/portIndex",
        ),
        (
            json!({"healthChecks": [{"portIndex": 1}]}),
            "/healthChecks/0/portIndex",
        ),
        // readiness checks
        (
            json!({"readinessChecks": [{"intervalSeconds": 0}]}),
            "/readinessChecks/0/intervalSeconds",
        ),
        (
            json!({"readinessChecks": [{"intervalSeconds": 1e300}]}),
            "/readinessChecks/0/intervalSeconds",
        ),
        (
            json!({"readinessChecks": [{"timeoutSeconds": -1}]}),
            "/readinessChecks/0/timeoutSeconds",
        ),
        (
            json!({"readinessChecks": [{"timeoutSeconds": 1e300}]}),
            "/readinessChecks/0/timeoutSeconds",
        ),
        (
            json!({"readinessChecks": [{"httpStatusCodesForReady": [99]}]}),
            "/readinessChecks/0/httpStatusCodesForReady/0",
        ),
        (
            json!({"readinessChecks": [{"httpStatusCodesForReady": [1e300]}]}),
            "/readinessChecks/0/httpStatusCodesForReady/0",
        ),
        // ports
        (
            json!({"container": {"portMappings": [{"containerPort": -1}]}}),
            "/container/portMappings/0/containerPort",
        ),
        (
            json!({"container": {"portMappings": [{"containerPort": 70000}]}}),
            "/container/portMappings/0/containerPort",
        ),
        (
            json!({"container": {"portMappings": [{"hostPort": 1e300}]}}),
            "/container/portMappings/0/hostPort",
        ),
        // upgrade strategy capacities
        (
            json!({"upgradeStrategy": {"minimumHealthCapacity": -0.1}}),
            "/upgradeStrategy/minimumHealthCapacity",
        ),
        (
            json!({"upgradeStrategy": {"minimumHealthCapacity": 1e300}}),
            "/upgradeStrategy/minimumHealthCapacity",
        ),
        (
            json!({"upgradeStrategy": {"maximumOverCapacity": 1.1}}),
            "/upgradeStrategy/maximumOverCapacity",
        ),
        (
            json!({"upgradeStrategy": {"maximumOverCapacity": "all"}}),
            "/upgradeStrategy/maximumOverCapacity",
        ),
    ];
    for (patch, path) in cases {
        let paths = refused(with(patch.clone()));
        assert!(
            paths.iter().any(|p| p == path),
            "{patch}: {path} not in {paths:?}"
        );
    }
    // Host networking: portDefinitions and the legacy ports.
    for (def, path) in [
        (
            json!({"id": "/h", "cmd": "x", "portDefinitions": [{"port": 65536}]}),
            "/portDefinitions/0/port",
        ),
        (
            json!({"id": "/h", "cmd": "x", "portDefinitions": [{"port": -1}]}),
            "/portDefinitions/0/port",
        ),
        (
            json!({"id": "/h", "cmd": "x", "ports": [1e300]}),
            "/ports/0",
        ),
    ] {
        let paths = refused(def.clone());
        assert!(
            paths.iter().any(|p| p == path),
            "{def}: {path} not in {paths:?}"
        );
    }
    // The message says what was wrong.
    let errs = parse_app(&with(json!({"healthChecks": [{"intervalSeconds": 1e300}]}))).unwrap_err();
    let msg = errs
        .iter()
        .find(|e| e.path == "/healthChecks/0/intervalSeconds")
        .unwrap();
    assert!(msg.errors[0].contains("at most 86400"), "{msg:?}");
}

/// Whatever numbers arrive in any numeric field, validation answers (no
/// panic), and what it accepts is finite and in range.
#[test]
fn extreme_numbers_never_panic() {
    use proptest::prelude::*;
    let numbers = prop_oneof![
        Just(f64::MAX),
        Just(f64::MIN),
        Just(-0.0),
        Just(1e300),
        Just(-1e300),
        Just(u64::MAX as f64),
        Just(i64::MIN as f64),
        -1e6f64..1e6,
    ];
    let fields = prop_oneof![
        Just("/instances"),
        Just("/cpus"),
        Just("/mem"),
        Just("/disk"),
        Just("/backoffSeconds"),
        Just("/backoffFactor"),
        Just("/maxLaunchDelaySeconds"),
        Just("/taskKillGracePeriodSeconds"),
        Just("/healthChecks/0/gracePeriodSeconds"),
        Just("/healthChecks/0/intervalSeconds"),
        Just("/healthChecks/0/timeoutSeconds"),
        Just("/healthChecks/0/maxConsecutiveFailures"),
        Just("/healthChecks/0/portIndex"),
        Just("/readinessChecks/0/intervalSeconds"),
        Just("/readinessChecks/0/timeoutSeconds"),
        Just("/container/portMappings/0/containerPort"),
        Just("/container/portMappings/0/hostPort"),
        Just("/upgradeStrategy/minimumHealthCapacity"),
        Just("/upgradeStrategy/maximumOverCapacity"),
    ];
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&(fields, numbers), |(field, x)| {
            let mut def = with(json!({"upgradeStrategy": {"minimumHealthCapacity": 0.5}}));
            let Some(n) = serde_json::Number::from_f64(x) else {
                return Ok(());
            };
            let (parent, key) = field.rsplit_once('/').unwrap();
            def.pointer_mut(parent)
                .and_then(|p| p.as_object_mut())
                .unwrap_or_else(|| panic!("{field}"))
                .insert(key.to_string(), serde_json::Value::Number(n));
            if let Ok(a) = parse_app(&def) {
                let nums = [
                    a.cpus,
                    a.mem,
                    a.disk,
                    a.backoff_seconds,
                    a.backoff_factor,
                    a.max_launch_delay_seconds,
                    a.task_kill_grace_period_seconds,
                    a.health_checks[0].grace_period_seconds,
                    a.health_checks[0].interval_seconds,
                    a.health_checks[0].timeout_seconds,
                    a.readiness_checks[0].interval_seconds,
                    a.readiness_checks[0].timeout_seconds,
                ];
                prop_assert!(
                    nums.iter().all(|x| x.is_finite() && *x >= 0.0 && *x <= 1e9),
                    "{field} = {x}: {nums:?}"
                );
            }
            Ok(())
        })
        .unwrap();
}

/// Issue 7, point 11: a field Agora accepts is honoured; one it does not
/// implement is refused naming it (or accepted only when it asks for
/// nothing, e.g. an empty list).
#[test]
fn every_accepted_field_is_honoured_or_refused() {
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"container": {"volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "RW"}]}}),
            "/container/volumes/0",
        ),
        (
            json!({"container": {"portMappings": [{"servicePort": 70000}]}}),
            "/container/portMappings/0/servicePort",
        ),
        (
            json!({"container": {"portMappings": [{"labels": {"expose": "world"}}]}}),
            "/container/portMappings/0/labels/expose",
        ),
        (
            json!({"container": {"docker": {"forcePullImage": true}}}),
            "/container/docker/forcePullImage",
        ),
        (
            json!({"container": {"docker": {"privileged": true}}}),
            "/container/docker/privileged",
        ),
        (
            json!({"container": {"docker": {"parameters": [{"key": "cap-add", "value": "ALL"}]}}}),
            "/container/docker/parameters",
        ),
        (
            json!({"container": {"docker": {"network": "BRIDGE"}}}),
            "/container/docker/network",
        ),
        (
            json!({"container": {"docker": {"colour": "blue"}}}),
            "/container/docker/colour",
        ),
        (json!({"container": {"size": 3}}), "/container/size"),
        (
            json!({"networks": [{"mode": "container/bridge", "name": "dcos"}]}),
            "/networks/0/name",
        ),
        (
            json!({"networks": [{"mode": "container/bridge"}, {"mode": "host"}]}),
            "/networks",
        ),
        (
            json!({"portDefinitions": [{"port": 0}]}),
            "/portDefinitions",
        ),
        (
            json!({"secrets": {"pw": {"source": "db/../password"}}}),
            "/secrets/pw/source",
        ),
        (json!({"env": {"PW": {"secret": "pw"}}}), "/env/PW"),
        (
            json!({"secrets": {"pw": {"source": "/db/pw"}}, "env": {"HOST": {"secret": "pw"}}}),
            "/env/HOST",
        ),
        (
            json!({"secrets": {"pw": {"source": "/db/pw"}}, "env": {"AGORA_X": {"secret": "pw"}}}),
            "/env/AGORA_X",
        ),
        (json!({"user": "nobody"}), "/user"),
        (
            json!({"fetch": [{"uri": "https://example.invalid/x.tgz"}]}),
            "/fetch",
        ),
        (json!({"uris": ["https://example.invalid/x.tgz"]}), "/uris"),
        (
            json!({"unreachableStrategy": {"inactiveAfterSeconds": 60, "expungeAfterSeconds": 120}}),
            "/unreachableStrategy",
        ),
        (json!({"dependencies": ["/db"]}), "/dependencies"),
        (json!({"gpus": 1}), "/gpus"),
        (json!({"requirePorts": true}), "/requirePorts"),
        (
            json!({"healthChecks": [{"port": 8080}]}),
            "/healthChecks/0/port",
        ),
        (
            json!({"healthChecks": [{"delaySeconds": 15}]}),
            "/healthChecks/0/delaySeconds",
        ),
        (
            json!({"healthChecks": [{"ipProtocol": "IPv6"}]}),
            "/healthChecks/0/ipProtocol",
        ),
        (
            json!({"healthChecks": [{"command": {"value": "true", "shell": false}}]}),
            "/healthChecks/0/command",
        ),
        (
            json!({"healthChecks": [{"colour": "blue"}]}),
            "/healthChecks/0/colour",
        ),
        (
            json!({"readinessChecks": [{"preserveLastResponse": true}]}),
            "/readinessChecks/0/preserveLastResponse",
        ),
        (
            json!({"readinessChecks": [{"protocol": "HTTPS"}]}),
            "/readinessChecks/0/protocol",
        ),
        (
            json!({"upgradeStrategy": {"minimumHealthCapacity": 0.5, "speed": "fast"}}),
            "/upgradeStrategy/speed",
        ),
        (json!({"colour": "blue"}), "/colour"),
        (json!({"waiting": "x"}), "/waiting"),
    ];
    for (patch, path) in cases {
        let paths = refused(with(patch.clone()));
        assert!(
            paths.iter().any(|p| p == path),
            "{patch}: {path} not in {paths:?}"
        );
    }
    // Host networking refuses port mappings (they would be dropped).
    let paths = refused(json!({"id": "/h", "container": {"docker": {"image": "i"},
        "portMappings": [{"containerPort": 80}]}, "networks": [{"mode": "host"}]}));
    assert!(
        paths.contains(&"/container/portMappings".to_string()),
        "{paths:?}"
    );

    // Values that ask for nothing are accepted.
    let a = parse_app(&with(
        json!({"container": {"volumes": [], "docker": {"forcePullImage": false,
        "privileged": false, "parameters": []}}, "secrets": {}, "fetch": [], "dependencies": [],
        "gpus": 0, "healthChecks": [{"delaySeconds": 0}]}),
    ))
    .unwrap();
    assert_eq!(a.port_mappings.len(), 1);
    // Honoured: the kill grace period, the legacy ports, read-only fields
    // of an app read back (ignored).
    let a = parse_app(&with(json!({"taskKillGracePeriodSeconds": 30}))).unwrap();
    assert_eq!(a.task_kill_grace_period_seconds, 30.0);
    assert_eq!(a.to_marathon()["taskKillGracePeriodSeconds"], json!(30.0));
    let h = parse_app(&json!({"id": "/h", "cmd": "x", "ports": [0, 8080]})).unwrap();
    assert_eq!(
        h.port_definitions
            .iter()
            .map(|p| p.port)
            .collect::<Vec<_>>(),
        vec![0, 8080]
    );
    // portDefinitions: Marathon's keys only; `port` is the service port,
    // and requirePorts (host networking only) makes it the host port too.
    let host = |patch: serde_json::Value| {
        let mut d =
            json!({"id": "/h", "cmd": "x", "portDefinitions": [{"port": 8080, "name": "http"}]});
        merge(&mut d, patch);
        d
    };
    let paths = refused(host(
        json!({"portDefinitions": [{"port": 0, "servicePort": 10_000}]}),
    ));
    assert_eq!(paths, ["/portDefinitions/0/servicePort"]);
    assert_eq!(
        refused(host(json!({"requirePorts": "yes"}))),
        ["/requirePorts"]
    );
    let h = parse_app(&host(json!({}))).unwrap();
    assert!(!h.require_ports);
    assert_eq!(h.host_port_requests(), [Some(0)]);
    assert_eq!(h.ports()[0].service_port, 8080);
    let h = parse_app(&host(json!({"requirePorts": true}))).unwrap();
    assert_eq!(h.host_port_requests(), [Some(8080)]);
    let shown = h.to_marathon();
    assert_eq!(shown["requirePorts"], true);
    assert_eq!(
        shown["portDefinitions"],
        json!([{"port": 8080, "name": "http", "protocol": "tcp"}])
    );
    assert_eq!(parse_app(&shown).unwrap(), h, "read back and sent again");
    let mut back = a.to_marathon();
    back["tasksRunning"] = json!(3);
    back["deployments"] = json!([{"id": "d"}]);
    back["versionInfo"] = json!({"lastConfigChangeAt": "x"});
    assert_eq!(parse_app(&back).unwrap(), a);
}

/// Issue 9: per-port labels the routers read are validated, 422 naming the
/// field; others pass through; `servicePort` and labels are kept and shown.
#[test]
fn port_labels_and_drain_seconds_are_validated() {
    let bridge = |labels: serde_json::Value| {
        json!({"id": "/w", "container": {"docker": {"image": "i"},
            "portMappings": [{"containerPort": 80, "servicePort": 10080, "labels": labels}]}})
    };
    let host = |labels: serde_json::Value| json!({"id": "/h", "cmd": "x", "portDefinitions": [{"port": 0, "labels": labels}]});
    let bad = [
        (json!({"expose": "everyone"}), "labels/expose"),
        (json!({"vhost": "shop.example.com,"}), "labels/vhost"),
        (json!({"vhost": "bad_host.example.com"}), "labels/vhost"),
        (json!({"vhost": "-x.example.com"}), "labels/vhost"),
        (json!({"path": "api"}), "labels/path"),
        (json!({"path": "/api/../admin"}), "labels/path"),
        (json!({"path": "/a b"}), "labels/path"),
        (json!({"expose": 1}), "labels/expose"),
        (json!({"timeout": "0"}), "labels/timeout"),
        (json!({"timeout": "soon"}), "labels/timeout"),
        (json!({"timeout": "NaN"}), "labels/timeout"),
        (json!({"timeout": "86401"}), "labels/timeout"),
    ];
    for (labels, field) in bad {
        let paths = refused(bridge(labels.clone()));
        let want = format!("/container/portMappings/0/{field}");
        assert!(paths.contains(&want), "{labels}: {want} not in {paths:?}");
        let paths = refused(host(labels.clone()));
        let want = format!("/portDefinitions/0/{field}");
        assert!(paths.contains(&want), "{labels}: {want} not in {paths:?}");
    }
    let ok = json!({"expose": "public", "vhost": "shop.example.com, www.shop.example.com",
        "path": "/api", "timeout": "2.5", "HAPROXY_GROUP": "external"});
    let a = parse_app(&bridge(ok.clone())).unwrap();
    assert_eq!(a.port_mappings[0].service_port, 10080);
    assert_eq!(a.port_mappings[0].labels["expose"], "public");
    let shown = a.to_marathon();
    assert_eq!(shown["container"]["portMappings"][0]["servicePort"], 10080);
    assert_eq!(shown["container"]["portMappings"][0]["labels"], ok);
    assert_eq!(parse_app(&shown).unwrap(), a, "read back and sent again");
    let h = parse_app(&host(ok.clone())).unwrap();
    assert_eq!(h.port_definitions[0].labels["path"], "/api");

    for (v, good) in [
        ("0", true),
        ("2.5", true),
        ("3600", true),
        ("-1", false),
        ("NaN", false),
        ("soon", false),
        ("3601", false),
    ] {
        let def = json!({"id": "/d", "cmd": "x", "labels": {"drainSeconds": v}});
        match parse_app(&def) {
            Ok(a) => {
                assert!(good, "drainSeconds {v} accepted");
                assert_eq!(a.drain_seconds(), v.parse::<f64>().unwrap());
            }
            Err(e) => {
                assert!(!good, "drainSeconds {v} refused: {e:?}");
                assert!(e.iter().any(|e| e.path == "/labels/drainSeconds"), "{e:?}");
            }
        }
    }
    let a = parse_app(&json!({"id": "/d", "cmd": "x"})).unwrap();
    assert_eq!(a.drain_seconds(), 5.0);
}

/// The README's demo deploys these files: they must stay valid app
/// definitions.
#[test]
fn the_examples_parse() {
    for (name, text) in [
        ("web.json", include_str!("../../../../examples/web.json")),
        (
            "client.json",
            include_str!("../../../../examples/client.json"),
        ),
    ] {
        let v: serde_json::Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Err(e) = parse_app(&v) {
            panic!("examples/{name} is refused: {e:?}");
        }
    }
}

/// Issue 10: secrets in Marathon's format: `secrets` by name, env values
/// that reference them, secret volumes; the view shows references only.
#[test]
fn secrets_are_accepted_as_references_and_shown_as_given() {
    let a = parse_app(&with(json!({
        "secrets": {"db": {"source": "prod/db/password"}, "tls": {"source": "/prod/tls/key"}},
        "env": {"DB_PASSWORD": {"secret": "db"}, "MODE": "prod"},
        "container": {"type": "DOCKER", "docker": {"image": "agora-workload:latest"},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}],
            "volumes": [{"containerPath": "/run/secrets/tls", "secret": "tls"}]},
    })))
    .unwrap();
    // `source` without a leading slash is the same path.
    assert_eq!(a.secrets["db"], "/prod/db/password");
    assert_eq!(a.env_secrets["DB_PASSWORD"], "db");
    assert_eq!(a.env["MODE"], "prod");
    assert!(!a.env.contains_key("DB_PASSWORD"));
    assert_eq!(a.secret_volumes[0].container_path, "/run/secrets/tls");
    assert_eq!(a.secret_paths(), ["/prod/db/password", "/prod/tls/key"]);
    let v = a.to_marathon();
    assert_eq!(v["env"]["DB_PASSWORD"], json!({"secret": "db"}));
    assert_eq!(v["env"]["MODE"], json!("prod"));
    assert_eq!(v["secrets"]["db"], json!({"source": "/prod/db/password"}));
    assert_eq!(
        v["container"]["volumes"],
        json!([{"containerPath": "/run/secrets/tls", "secret": "tls"}])
    );
    // Read back and sent again: the same app.
    let again = parse_app(&v).unwrap();
    assert!(again.same_config(&a), "{v}");
    // Pins are Agora-internal: never in the Marathon JSON.
    let mut pinned = a.clone();
    pinned.secret_versions.insert("/prod/db/password".into(), 7);
    assert_eq!(pinned.to_marathon(), v);
    assert!(!pinned.same_config(&a));
    assert!(pinned.same_definition(&a));

    // A command app without a container image: files relative to the sandbox.
    let c = parse_app(&json!({"id": "/c", "cmd": "cat secrets/tls",
        "secrets": {"tls": {"source": "/prod/tls/key"}},
        "container": {"type": "MESOS", "volumes": [{"containerPath": "secrets/tls", "secret": "tls"}]}}))
    .unwrap();
    assert_eq!(c.secret_volumes[0].container_path, "secrets/tls");
    assert_eq!(c.to_marathon()["container"]["type"], json!("MESOS"));
    assert_eq!(parse_app(&c.to_marathon()).unwrap(), c);
}

#[test]
fn secret_mistakes_are_422s_naming_the_field() {
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            json!({"env": {"PW": {"secret": "nope"}}, "secrets": {"db": {"source": "/a"}}}),
            "/env/PW",
            "\"nope\"",
        ),
        (
            json!({"env": {"PW": {"secret": "pw"}}}),
            "/env/PW",
            "defines no secrets",
        ),
        (
            json!({"env": {"PW": {"secret": 3}}}),
            "/env/PW",
            "secret reference",
        ),
        (
            json!({"env": {"PW": {"secret": "db", "extra": 1}}, "secrets": {"db": {"source": "/a"}}}),
            "/env/PW",
            "secret reference",
        ),
        (
            json!({"secrets": {"db": {"source": "/a//b"}}}),
            "/secrets/db/source",
            "empty segment",
        ),
        (
            json!({"secrets": {"db": {}}}),
            "/secrets/db/source",
            "is required",
        ),
        (
            json!({"secrets": {"db": {"source": "/a", "value": "x"}}}),
            "/secrets/db/value",
            "unknown field",
        ),
        (
            json!({"secrets": {"bad name": {"source": "/a"}}}),
            "/secrets/bad name",
            "name",
        ),
        (json!({"secrets": ["x"]}), "/secrets", "must be an object"),
        (
            json!({"secrets": {"db": {"source": "/a"}}, "container": {"type": "DOCKER",
                "docker": {"image": "i"}, "volumes": [{"containerPath": "run/db", "secret": "db"}]}}),
            "/container/volumes/0/containerPath",
            "absolute",
        ),
        (
            json!({"secrets": {"db": {"source": "/a"}}, "container": {"type": "DOCKER",
                "docker": {"image": "i"}, "volumes": [{"containerPath": "/run/../etc/db", "secret": "db"}]}}),
            "/container/volumes/0/containerPath",
            "..",
        ),
        (
            json!({"secrets": {"db": {"source": "/a"}}, "container": {"type": "DOCKER",
                "docker": {"image": "i"}, "volumes": [{"containerPath": "/run/db", "secret": "other"}]}}),
            "/container/volumes/0/secret",
            "\"other\"",
        ),
        (
            json!({"secrets": {"db": {"source": "/a"}}, "container": {"type": "DOCKER",
                "docker": {"image": "i"}, "volumes": [{"containerPath": "/run/db", "secret": "db"},
                {"containerPath": "/run/db", "secret": "db"}]}}),
            "/container/volumes/1/containerPath",
            "another",
        ),
        (
            json!({"secrets": {"db": {"source": "/a"}}, "container": {"type": "DOCKER",
                "docker": {"image": "i"}, "volumes": [{"secret": "db"}]}}),
            "/container/volumes/0/containerPath",
            "is required",
        ),
    ];
    for (patch, path, says) in cases {
        let mut def = json!({"id": "/s", "cmd": "x"});
        merge(&mut def, patch.clone());
        let errs = parse_app(&def).expect_err(&patch.to_string());
        let e = errs
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{patch}: {path} not in {errs:?}"));
        assert!(
            e.errors.iter().any(|m| m.contains(says)),
            "{patch}: {path}: {:?} does not say {says:?}",
            e.errors
        );
    }
    // A command app without a container image: absolute paths are refused.
    let errs = parse_app(&json!({"id": "/c", "cmd": "x",
        "secrets": {"db": {"source": "/a"}},
        "container": {"type": "MESOS", "volumes": [{"containerPath": "/etc/db", "secret": "db"}]}}))
    .unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.path == "/container/volumes/0/containerPath"
                && e.errors[0].contains("relative")),
        "{errs:?}"
    );
}
