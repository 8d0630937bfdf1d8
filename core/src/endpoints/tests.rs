use proptest::prelude::*;

use super::*;

fn ep(task: &str, port: u32, state: EndpointState) -> Endpoint {
    Endpoint {
        task_id: task.to_string(),
        host: "10.0.0.1".to_string(),
        port,
        state,
    }
}

fn set(app: &str, idx: u32, eps: Vec<Endpoint>) -> EndpointSet {
    EndpointSet::new(
        EndpointKey {
            app_id: app.to_string(),
            port_index: idx,
        },
        PortMeta {
            name: Some("http".into()),
            protocol: "tcp".into(),
            ..PortMeta::default()
        },
        eps,
    )
}

/// (state, health checked, healthy, readiness checked, ready, draining, listed as)
type Row = (
    TaskState,
    bool,
    Option<bool>,
    bool,
    Option<bool>,
    bool,
    Option<EndpointState>,
);

#[test]
fn which_instances_serve_literal_table() {
    use EndpointState::{Draining as D, Serving as S};
    use TaskState::{Killing, Running, Staging, Starting};
    // (state, health checked, healthy, readiness checked, ready, draining) => listed as
    let rows: &[Row] = &[
        (Running, false, None, false, None, false, Some(S)),
        (Running, true, None, false, None, false, None),
        (Running, true, Some(false), false, None, false, None),
        (Running, true, Some(true), false, None, false, Some(S)),
        (Running, false, None, true, None, false, None),
        (Running, false, None, true, Some(false), false, None),
        (Running, false, None, true, Some(true), false, Some(S)),
        (Running, true, Some(true), true, Some(false), false, None),
        (Running, true, Some(false), true, Some(true), false, None),
        (Running, true, Some(true), true, Some(true), false, Some(S)),
        // Health results of apps without checks are ignored.
        (
            Running,
            false,
            Some(false),
            false,
            Some(false),
            false,
            Some(S),
        ),
        // Draining: listed while it runs, whatever its checks say.
        (Running, true, Some(true), false, None, true, Some(D)),
        (Running, true, Some(false), false, None, true, Some(D)),
        (Running, false, None, false, None, true, Some(D)),
        // Not running: never listed.
        (Staging, false, None, false, None, false, None),
        (Starting, false, None, false, None, false, None),
        (Killing, false, None, false, None, false, None),
        (Killing, true, Some(true), false, None, true, None),
        (TaskState::Finished, false, None, false, None, false, None),
        (
            TaskState::Unreachable,
            true,
            Some(true),
            false,
            None,
            false,
            None,
        ),
    ];
    for &(state, hc, healthy, rc, ready, draining, want) in rows {
        let f = InstanceFacts {
            state,
            health_checked: hc,
            healthy,
            readiness_checked: rc,
            ready,
            draining,
        };
        assert_eq!(endpoint_state(&f), want, "{f:?}");
    }
}

#[test]
fn publishing_the_same_sets_makes_no_version() {
    let mut p = Publisher::default();
    let a = set("/a", 0, vec![ep("t1", 31000, EndpointState::Serving)]);
    assert_eq!(
        p.publish_app("/a", vec![a.clone()]).map(|u| u.version),
        Some(1)
    );
    assert!(p.publish_app("/a", vec![a]).is_none());
    let b = set(
        "/a",
        0,
        vec![
            ep("t1", 31000, EndpointState::Serving),
            ep("t2", 31001, EndpointState::Serving),
        ],
    );
    assert_eq!(p.publish_app("/a", vec![b]).map(|u| u.version), Some(2));
    // Endpoint order does not matter.
    let reordered = EndpointSet {
        endpoints: vec![
            ep("t2", 31001, EndpointState::Serving),
            ep("t1", 31000, EndpointState::Serving),
        ],
        ..set("/a", 0, vec![])
    };
    assert!(p.publish_app("/a", vec![reordered]).is_none());
    assert_eq!(p.version(), 2);
}

#[test]
fn a_publication_changes_only_its_app() {
    let mut p = Publisher::default();
    p.publish_app("/a", vec![set("/a", 0, vec![]), set("/a", 1, vec![])]);
    p.publish_app("/ab", vec![set("/ab", 0, vec![])]);
    // Sets of another app handed to publish_app are ignored.
    let u = p
        .publish_app(
            "/a",
            vec![
                set("/a", 1, vec![ep("t", 1, EndpointState::Draining)]),
                set("/ab", 0, vec![ep("x", 2, EndpointState::Serving)]),
            ],
        )
        .cloned()
        .unwrap();
    assert_eq!(u.version, 3);
    assert_eq!(
        u.changes,
        vec![
            Change::Remove {
                key: EndpointKey {
                    app_id: "/a".into(),
                    port_index: 0
                }
            },
            Change::Put {
                set: set("/a", 1, vec![ep("t", 1, EndpointState::Draining)])
            },
        ]
    );
    assert_eq!(p.app("/ab"), vec![&set("/ab", 0, vec![])]);
    assert_eq!(p.remove_app("/a").map(|u| u.changes.len()), Some(1));
    assert!(p.app("/a").is_empty());
    assert!(p.remove_app("/a").is_none());
}

#[test]
fn since_answers_only_what_it_still_keeps() {
    let mut p = Publisher::new(3);
    assert_eq!(p.since(0), Some(vec![]));
    for i in 0..5u32 {
        p.publish_app(
            "/a",
            vec![set("/a", 0, vec![ep("t", i, EndpointState::Serving)])],
        );
    }
    assert_eq!(p.version(), 5);
    // Kept: 3, 4, 5.
    assert_eq!(
        p.since(2)
            .unwrap()
            .iter()
            .map(|u| u.version)
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(p.since(4).unwrap().len(), 1);
    assert_eq!(p.since(5), Some(vec![]));
    assert_eq!(p.since(1), None, "update 2 is no longer kept");
    assert_eq!(
        p.since(6),
        None,
        "a version from the future (another publisher)"
    );
}

#[test]
fn a_view_refuses_a_gap_and_ignores_repeats() {
    let mut p = Publisher::default();
    let mut v = View::from_snapshot(p.snapshot());
    let u1 = p
        .publish_app("/a", vec![set("/a", 0, vec![])])
        .cloned()
        .unwrap();
    let u2 = p.remove_app("/a").cloned().unwrap();
    let before = v.clone();
    assert_eq!(v.apply(&u2), Err(Gap { have: 0, got: 2 }));
    assert_eq!(v, before, "a refused update changes nothing");
    v.apply(&u1).unwrap();
    v.apply(&u1).unwrap();
    assert_eq!(v.version(), 1);
    assert!(v.get(&u1_key()).is_some());
    v.apply(&u2).unwrap();
    assert!(v.get(&u1_key()).is_none());
    assert_eq!(v, View::from_snapshot(p.snapshot()));
}

fn u1_key() -> EndpointKey {
    EndpointKey {
        app_id: "/a".into(),
        port_index: 0,
    }
}

#[test]
fn dns_names_literal_table() {
    let rows = [
        ("/demo/web", "agora", Some("web.demo.agora")),
        ("/demo/web", "agora.", Some("web.demo.agora")),
        (
            "/web",
            "cluster.example.com",
            Some("web.cluster.example.com"),
        ),
        ("/a/b/c", "agora", Some("c.b.a.agora")),
        // A dot in a segment would make /a.b and /b/a the same name.
        ("/a.b", "agora", None),
        ("/x/-y", "agora", None),
        ("/x/y-", "agora", None),
        ("/Web", "agora", None),
        ("/demo/web", "", None),
    ];
    for (id, domain, want) in rows {
        assert_eq!(dns_name(id, domain).as_deref(), want, "{id} in {domain}");
    }
    let long = format!("/{}", "a".repeat(64));
    assert_eq!(dns_name(&long, "agora"), None, "label over 63 bytes");
    let deep = format!("/{}", vec!["a".repeat(60); 5].join("/"));
    assert_eq!(dns_name(&deep, "agora"), None, "name over 253 bytes");
}

#[test]
fn srv_names() {
    let named = PortMeta {
        name: Some("http".into()),
        protocol: "tcp".into(),
        ..PortMeta::default()
    };
    assert_eq!(
        srv_name("web.demo.agora", &named, 0),
        "_http._tcp.web.demo.agora"
    );
    let unnamed = PortMeta {
        protocol: "udp".into(),
        ..PortMeta::default()
    };
    assert_eq!(
        srv_name("web.demo.agora", &unnamed, 2),
        "_2._udp.web.demo.agora"
    );
    assert_eq!(
        srv_name("w.agora", &PortMeta::default(), 1),
        "_1._tcp.w.agora"
    );
}

/// A publication: an app (of three) and its sets, each set's endpoints drawn
/// from a few tasks.
fn publication() -> impl Strategy<Value = (String, Vec<EndpointSet>)> {
    let app = prop::sample::select(vec!["/a", "/a/b", "/b"]);
    let eps = prop::collection::vec((0u8..4, 0u32..3, any::<bool>()), 0..4);
    let sets = prop::collection::vec((0u32..3, eps), 0..3);
    (app, sets).prop_map(|(app, sets)| {
        let sets = sets
            .into_iter()
            .map(|(idx, eps)| {
                let mut seen = std::collections::BTreeSet::new();
                let eps = eps
                    .into_iter()
                    .filter(|(t, _, _)| seen.insert(*t))
                    .map(|(t, port, serving)| {
                        let state = if serving {
                            EndpointState::Serving
                        } else {
                            EndpointState::Draining
                        };
                        ep(&format!("t{t}"), 31000 + port, state)
                    })
                    .collect();
                set(app, idx, eps)
            })
            .collect();
        (app.to_string(), sets)
    })
}

proptest! {
    /// Following every update, or starting from any snapshot and catching up
    /// with `since`, ends with exactly the publisher's sets; versions grow by
    /// one per effective publication.
    #[test]
    fn subscribers_converge_on_the_publisher(
        pubs in prop::collection::vec(publication(), 0..40),
        cap in 1usize..8,
        join_at in 0usize..40,
    ) {
        let mut p = Publisher::new(cap);
        let mut follower = View::from_snapshot(p.snapshot());
        let mut late: Option<View> = None;
        for (i, (app, sets)) in pubs.into_iter().enumerate() {
            if i == join_at {
                late = Some(View::from_snapshot(p.snapshot()));
            }
            let before = p.version();
            match p.publish_app(&app, sets).cloned() {
                Some(u) => {
                    prop_assert_eq!(u.version, before + 1);
                    follower.apply(&u).unwrap();
                }
                None => prop_assert_eq!(p.version(), before),
            }
            prop_assert_eq!(&follower, &View::from_snapshot(p.snapshot()));
        }
        if let Some(mut late) = late {
            match p.since(late.version()) {
                Some(us) => {
                    for u in &us {
                        late.apply(u).unwrap();
                    }
                    prop_assert_eq!(late, View::from_snapshot(p.snapshot()));
                }
                // Only when the history no longer reaches back that far.
                None => prop_assert!(p.version() - late.version() > cap as u64),
            }
        }
    }
}
