use super::*;
use agora_core::protocol::Accept;
use agora_core::task::ALL_TASK_STATES;

#[test]
fn task_states_roundtrip() {
    for s in ALL_TASK_STATES {
        let wire: pb::TaskState = s.into();
        assert_eq!(task_state("s", wire as i32).unwrap(), s);
    }
    assert!(task_state("s", 0).is_err());
    assert!(task_state("s", 999).unwrap_err().message.contains("999"));
}

#[test]
fn resources_roundtrip_and_reject_bad_values() {
    let r = Resources::parse("cpus:1.5;mem:100;disk:3;ports:[10-20,30-30]").unwrap();
    let wire = pb::Resources::from(&r);
    assert_eq!(resources("r", Some(&wire)).unwrap(), r);
    let bad = pb::Resources {
        cpus: f64::NAN,
        ..Default::default()
    };
    assert_eq!(
        resources("offer", Some(&bad)).unwrap_err().field,
        "offer.cpus"
    );
    let bad = pb::Resources {
        ports: vec![pb::Range { begin: 9, end: 1 }],
        ..Default::default()
    };
    assert_eq!(resources("t", Some(&bad)).unwrap_err().field, "t.ports");
}

#[test]
fn durations_from_the_network_are_checked() {
    let max = Duration::from_secs(10);
    assert_eq!(
        duration("d", 1.5, max).unwrap(),
        Duration::from_millis(1500)
    );
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 11.0] {
        let e = duration("x.interval_seconds", bad, max).unwrap_err();
        assert_eq!(e.field, "x.interval_seconds", "{bad}");
    }
}

#[test]
fn health_checks_with_bad_numbers_are_refused_naming_the_field() {
    let good = pb::HealthCheck {
        protocol: pb::health_check::Protocol::Http as i32,
        port: 8080,
        interval_seconds: 10.0,
        timeout_seconds: 2.0,
        grace_period_seconds: 30.0,
        max_consecutive_failures: 3,
        ok_statuses: vec![200, 204],
        ..Default::default()
    };
    let h = health_check("c", good.clone()).unwrap();
    assert_eq!(pb::HealthCheck::from(&h), good);
    let cases: Vec<(&str, pb::HealthCheck)> = vec![
        (
            "c.interval_seconds",
            pb::HealthCheck {
                interval_seconds: f64::NAN,
                ..good.clone()
            },
        ),
        (
            "c.timeout_seconds",
            pb::HealthCheck {
                timeout_seconds: f64::INFINITY,
                ..good.clone()
            },
        ),
        (
            "c.grace_period_seconds",
            pb::HealthCheck {
                grace_period_seconds: -3.0,
                ..good.clone()
            },
        ),
        (
            "c.port",
            pb::HealthCheck {
                port: 70_000,
                ..good.clone()
            },
        ),
        (
            "c.ok_statuses",
            pb::HealthCheck {
                ok_statuses: vec![42],
                ..good.clone()
            },
        ),
        (
            "c.protocol",
            pb::HealthCheck {
                protocol: 9,
                ..good.clone()
            },
        ),
    ];
    for (field, h) in cases {
        assert_eq!(health_check("c", h).unwrap_err().field, field);
    }
}

#[test]
fn an_accept_with_a_bad_task_names_it() {
    let t = |id: &str, grace: f64| pb::TaskInfo {
        task_id: id.into(),
        kill_grace_seconds: grace,
        ..Default::default()
    };
    let req = |tasks| pb::AcceptRequest {
        framework_id: "f".into(),
        offer_ids: vec!["o1".into()],
        operations: vec![pb::Operation {
            operation: Some(pb::operation::Operation::Launch(pb::Launch { tasks })),
        }],
        filters: None,
    };
    let ok = Accept::try_from(req(vec![t("a", 1.0)])).unwrap();
    assert_eq!(ok.tasks[0].kill_grace, Duration::from_secs(1));
    let e = Accept::try_from(req(vec![t("a", 1.0), t("b", f64::NAN)])).unwrap_err();
    assert_eq!(e.field, "operations[0].launch.tasks[1].kill_grace_seconds");
    let e = Accept::try_from(req(vec![t("..", 1.0)])).unwrap_err();
    assert_eq!(e.field, "operations[0].launch.tasks[0].task_id");
}

#[test]
fn task_info_and_status_roundtrip() {
    let mut labels = std::collections::HashMap::new();
    labels.insert("k".to_string(), "v".to_string());
    let wire = pb::TaskInfo {
        task_id: "t1".into(),
        name: "web".into(),
        agent_id: "a1".into(),
        resources: Some((&Resources::new(0.5, 64, 0).unwrap()).into()),
        command: Some(pb::CommandInfo {
            value: "run".into(),
            args: vec!["-x".into()],
            env: vec![pb::EnvVar {
                name: "A".into(),
                value: "1".into(),
            }],
            shell: true,
        }),
        container: Some(pb::ContainerInfo {
            image: "img".into(),
            network: "bridge".into(),
            port_mappings: vec![pb::PortMapping {
                host_port: 31000,
                container_port: 80,
                protocol: "tcp".into(),
                name: "http".into(),
            }],
        }),
        labels,
        kill_grace_seconds: 3.0,
        health_checks: vec![],
        readiness_checks: vec![],
        secrets: vec![
            pb::SecretUse {
                target: Some(pb::secret_use::Target::Env("DB_PASSWORD".into())),
                path: "/prod/db/password".into(),
                version: 3,
            },
            pb::SecretUse {
                target: Some(pb::secret_use::Target::File("/run/secrets/db".into())),
                path: "/prod/db/password".into(),
                version: 0,
            },
        ],
    };
    let t = task_info("t", wire.clone()).unwrap();
    assert_eq!(t.secrets.len(), 2);
    assert_eq!(pb::TaskInfo::from(&t), wire);
    let st = pb::TaskStatus {
        task_id: "t1".into(),
        state: pb::TaskState::TaskRunning as i32,
        agent_id: "a1".into(),
        uuid: vec![1],
        timestamp: 12.5,
        healthy: true,
        has_health: true,
        exit_code: 0,
        has_exit_code: true,
        source: pb::TaskSource::SourceAgent as i32,
        ..Default::default()
    };
    let d = task_status("s", st.clone()).unwrap();
    assert_eq!(d.healthy, Some(true));
    assert_eq!(d.exit_code, Some(0));
    assert_eq!(d.ready, None);
    assert_eq!(pb::TaskStatus::from(&d), st);
}

#[test]
fn env_with_bad_names_is_refused_and_values_never_echoed() {
    let c = pb::CommandInfo {
        env: vec![pb::EnvVar {
            name: "A".into(),
            value: "sec\0ret".into(),
        }],
        ..Default::default()
    };
    let e = command("cmd", c).unwrap_err();
    assert_eq!(e.field, "cmd.env.A");
    assert!(!e.to_string().contains("sec"));
    let c = pb::CommandInfo {
        env: vec![pb::EnvVar {
            name: "A=B".into(),
            value: "x".into(),
        }],
        ..Default::default()
    };
    assert_eq!(command("cmd", c).unwrap_err().field, "cmd.env");
}

#[test]
fn agent_and_offer_addresses_are_ip_literals_never_wildcards() {
    let agent = |address: &str| pb::AgentInfo {
        hostname: "h".into(),
        address: address.into(),
        ..Default::default()
    };
    // None from an agent that sends no address; an IP literal otherwise.
    assert_eq!(agent_info("agent", agent("")).unwrap().address, None);
    let a = agent_info("agent", agent("10.0.0.7")).unwrap();
    assert_eq!(a.address, Some([10, 0, 0, 7].into()));
    assert_eq!(pb::AgentInfo::from(a).address, "10.0.0.7");
    let v6 = agent_info("agent", agent("fd00::7")).unwrap();
    assert_eq!(v6.address, "fd00::7".parse().ok());
    for (bad, why) in [
        ("0.0.0.0", "wildcard"),
        ("::", "wildcard"),
        ("node-1.internal", "not an IP address"),
        ("10.0.0.7:80", "not an IP address"),
    ] {
        let e = agent_info("agent", agent(bad)).unwrap_err();
        assert_eq!(e.field, "agent.address", "{bad}");
        assert!(e.message.contains(why), "{bad}: {e}");
    }
    // Offers carry it both ways and are checked the same way.
    let offer = |address: &str| pb::Offer {
        offer_id: "O1".into(),
        framework_id: "F1".into(),
        agent_id: "S1".into(),
        hostname: "h".into(),
        address: address.into(),
        ..Default::default()
    };
    let o = offer_info("offer", offer("127.0.0.1")).unwrap();
    assert_eq!(o.address, Some([127, 0, 0, 1].into()));
    assert_eq!(pb::Offer::from(o).address, "127.0.0.1");
    assert_eq!(offer_info("offer", offer("")).unwrap().address, None);
    assert_eq!(
        offer_info("offer", offer("0.0.0.0")).unwrap_err().field,
        "offer.address"
    );
}

#[test]
fn bad_secret_references_are_refused_naming_the_field() {
    let base = |u: pb::SecretUse| pb::TaskInfo {
        task_id: "t1".into(),
        resources: Some((&Resources::new(0.5, 64, 0).unwrap()).into()),
        secrets: vec![u],
        ..Default::default()
    };
    let env = |name: &str, path: &str| pb::SecretUse {
        target: Some(pb::secret_use::Target::Env(name.into())),
        path: path.into(),
        version: 0,
    };
    let file = |f: &str| pb::SecretUse {
        target: Some(pb::secret_use::Target::File(f.into())),
        path: "/a".into(),
        version: 0,
    };
    let cases = [
        (env("X", "/a/../b"), "t.secrets[0].path"),
        (env("X", ""), "t.secrets[0].path"),
        (env("1X", "/a"), "t.secrets[0].env"),
        (env("X=Y", "/a"), "t.secrets[0].env"),
        (env("HOST", "/a"), "t.secrets[0].env"),
        (env("AGORA_TASK_ID", "/a"), "t.secrets[0].env"),
        (file("/run/../etc/passwd"), "t.secrets[0].file"),
        (file(""), "t.secrets[0].file"),
        (file("/run/x\n"), "t.secrets[0].file"),
        (
            pb::SecretUse {
                target: None,
                path: "/a".into(),
                version: 0,
            },
            "t.secrets[0].target",
        ),
    ];
    for (u, field) in cases {
        let e = task_info("t", base(u.clone())).unwrap_err();
        assert_eq!(e.field, field, "{u:?}");
    }
    let mut many = base(env("X", "/a"));
    many.secrets = vec![env("X", "/a"); MAX_TASK_SECRETS + 1];
    assert_eq!(task_info("t", many).unwrap_err().field, "t.secrets");
}
