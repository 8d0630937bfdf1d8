use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;

use agora_core::endpoints::{Endpoint, EndpointSet, PortMeta, Publisher, Snapshot};

use super::*;
use crate::balance::InFlight;

fn ep(task: &str, port: u32, state: EndpointState) -> Endpoint {
    Endpoint {
        task_id: task.into(),
        host: "127.0.0.1".into(),
        port,
        state,
    }
}

fn meta(public: bool, vhosts: &[&str], path: Option<&str>, sp: Option<u32>) -> PortMeta {
    PortMeta {
        name: Some("http".into()),
        protocol: "tcp".into(),
        service_port: sp,
        public,
        vhosts: vhosts.iter().map(|s| s.to_string()).collect(),
        path: path.map(str::to_string),
        labels: BTreeMap::new(),
        scale_to_zero: false,
    }
}

fn set(app: &str, idx: u32, meta: PortMeta, eps: Vec<Endpoint>) -> EndpointSet {
    EndpointSet::new(
        EndpointKey {
            app_id: app.into(),
            port_index: idx,
        },
        meta,
        eps,
    )
}

fn view(p: &Publisher) -> View {
    View::from_snapshot(p.snapshot())
}

fn shop(p: &mut Publisher) {
    use EndpointState::Serving as S;
    p.publish_app(
        "/shop/web",
        vec![set(
            "/shop/web",
            0,
            meta(true, &["Shop.Example.com"], None, Some(10001)),
            vec![ep("w1", 9001, S), ep("w2", 9002, EndpointState::Draining)],
        )],
    );
    p.publish_app(
        "/shop/api",
        vec![
            set(
                "/shop/api",
                0,
                meta(true, &["shop.example.com"], Some("/api"), Some(10002)),
                vec![ep("a1", 9003, S)],
            ),
            set(
                "/shop/api",
                1,
                meta(false, &[], None, Some(10003)),
                vec![ep("a1", 9004, S)],
            ),
        ],
    );
    p.publish_app(
        "/db",
        vec![set(
            "/db",
            0,
            meta(false, &["db.example.com"], None, Some(10004)),
            vec![ep("d1", 9005, S)],
        )],
    );
}

fn app(r: Option<&Arc<Route>>) -> Option<(String, u32)> {
    r.map(|r| (r.key.app_id.clone(), r.key.port_index))
}

#[test]
fn edge_table_serves_public_ports_by_host_and_longest_path() {
    let mut p = Publisher::default();
    shop(&mut p);
    let router = Router::new(RoutesConfig::default());
    router.apply(&view(&p));
    let r = router.routes();
    let e = &r.edge;
    let web = Some(("/shop/web".to_string(), 0));
    let api = Some(("/shop/api".to_string(), 0));
    assert_eq!(app(e.lookup("shop.example.com", "/")), web);
    assert_eq!(app(e.lookup("shop.example.com", "/apix")), web);
    assert_eq!(app(e.lookup("shop.example.com", "/api")), api);
    assert_eq!(app(e.lookup("shop.example.com", "/api/v1/x")), api);
    assert_eq!(app(e.lookup("web.shop.agora", "/anything")), web);
    assert_eq!(app(e.lookup("api.shop.agora", "/api/x")), api);
    // Public port with a path: only that path by DNS name too.
    assert_eq!(app(e.lookup("api.shop.agora", "/")), None);
    // Internal apps are not at the edge, by vhost or by name.
    assert_eq!(app(e.lookup("db.example.com", "/")), None);
    assert_eq!(app(e.lookup("db.agora", "/")), None);
    assert_eq!(app(e.lookup("nowhere.example.com", "/")), None);
}

#[test]
fn internal_tables_serve_every_app_by_name_and_service_port() {
    let mut p = Publisher::default();
    shop(&mut p);
    let router = Router::new(RoutesConfig::default());
    router.apply(&view(&p));
    let r = router.routes();
    let i = &r.internal;
    assert_eq!(
        app(i.lookup("db.agora", "/x")),
        Some(("/db".to_string(), 0))
    );
    assert_eq!(
        app(i.lookup("api.shop.agora", "/")),
        Some(("/shop/api".to_string(), 0)),
        "the app's first port"
    );
    assert_eq!(
        app(i.lookup("db.example.com", "/")),
        None,
        "vhosts are edge only"
    );
    let mut ports: Vec<(u16, String, u32)> =
        r.l4.iter()
            .map(|(p, r)| (*p, r.key.app_id.clone(), r.key.port_index))
            .collect();
    ports.sort();
    assert_eq!(
        ports,
        vec![
            (10001, "/shop/web".into(), 0),
            (10002, "/shop/api".into(), 0),
            (10003, "/shop/api".into(), 1),
            (10004, "/db".into(), 0),
        ]
    );
}

#[test]
fn draining_endpoints_are_never_chosen() {
    let mut p = Publisher::default();
    shop(&mut p);
    let router = Router::new(RoutesConfig::default());
    router.apply(&view(&p));
    let r = router.routes();
    let web = r.edge.lookup("shop.example.com", "/").unwrap();
    assert_eq!(web.balancer.backends().len(), 1);
    for _ in 0..100 {
        let g = web.balancer.pick(&[]).unwrap();
        assert_eq!(&*g.backend().id().task_id, "w1");
    }
}

#[test]
fn route_timeout_comes_from_the_port_label() {
    let mut p = Publisher::default();
    let mut m = meta(true, &["t.example.com"], None, None);
    m.labels.insert(TIMEOUT_LABEL.into(), "2.5".into());
    let mut bad = meta(true, &["u.example.com"], None, None);
    bad.labels.insert(TIMEOUT_LABEL.into(), "soon".into());
    p.publish_app(
        "/t",
        vec![set("/t", 0, m, vec![]), set("/t", 1, bad, vec![])],
    );
    let router = Router::new(RoutesConfig::default());
    router.apply(&view(&p));
    let r = router.routes();
    let t = r.edge.lookup("t.example.com", "/").unwrap();
    assert_eq!(t.timeout, Duration::from_millis(2500));
    let u = r.edge.lookup("u.example.com", "/").unwrap();
    assert_eq!(u.timeout, RoutesConfig::default().request_timeout);
}

#[test]
fn backends_keep_their_state_across_views_and_retire_when_gone() {
    use EndpointState::Serving as S;
    let mut p = Publisher::default();
    let m = meta(true, &["x.example.com"], None, None);
    p.publish_app(
        "/x",
        vec![set("/x", 0, m.clone(), vec![ep("1", 1, S), ep("2", 2, S)])],
    );
    let router = Router::new(RoutesConfig::default());
    router.apply(&view(&p));
    let first = router.routes();
    let b1 = first
        .edge
        .lookup("x.example.com", "/")
        .unwrap()
        .balancer
        .backends()[0]
        .clone();
    let held = InFlight::begin(&b1).unwrap();
    // Another port changes: task 1 is still the same backend.
    p.publish_app(
        "/x",
        vec![set("/x", 0, m.clone(), vec![ep("1", 1, S), ep("3", 3, S)])],
    );
    router.apply(&view(&p));
    let second = router.routes();
    let again = second
        .edge
        .lookup("x.example.com", "/")
        .unwrap()
        .balancer
        .backends()[0]
        .clone();
    assert!(Arc::ptr_eq(&b1, &again));
    assert!(router.drained(), "task 2 had nothing in flight");
    // Task 1 drains: retired, and the router is not drained until the
    // request in flight ends.
    p.publish_app(
        "/x",
        vec![set(
            "/x",
            0,
            m,
            vec![ep("1", 1, EndpointState::Draining), ep("3", 3, S)],
        )],
    );
    router.apply(&view(&p));
    assert!(b1.is_retired());
    assert!(!router.drained());
    drop(held);
    assert!(router.drained());
    // The stale table refuses it: a request that raced the swap re-picks.
    let stale = first.edge.lookup("x.example.com", "/").unwrap();
    for _ in 0..20 {
        if let Some(g) = stale.balancer.pick(&[]) {
            assert!(!Arc::ptr_eq(g.backend(), &b1));
        }
    }
}

#[derive(Default)]
struct Recorded(StdMutex<Vec<(&'static str, u64)>>);

impl Acks for Recorded {
    fn applied(&self, v: u64) {
        self.0.lock().unwrap().push(("applied", v));
    }
    fn drained(&self, v: u64) {
        self.0.lock().unwrap().push(("drained", v));
    }
}

#[tokio::test]
async fn follow_acks_applied_at_once_and_drained_when_requests_end() {
    use EndpointState::Serving as S;
    let mut p = Publisher::default();
    let m = meta(true, &["x.example.com"], None, None);
    p.publish_app(
        "/x",
        vec![set("/x", 0, m.clone(), vec![ep("1", 1, S), ep("2", 2, S)])],
    );
    let (tx, rx) = watch::channel(Arc::new(view(&p)));
    let router = Router::new(RoutesConfig::default());
    let acks = Arc::new(Recorded::default());
    let task = tokio::spawn(router.clone().follow(rx, acks.clone()));
    let wait_for = |want: Vec<(&'static str, u64)>| {
        let acks = acks.clone();
        async move {
            for _ in 0..200 {
                if *acks.0.lock().unwrap() == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("acks {:?}, want {want:?}", acks.0.lock().unwrap());
        }
    };
    wait_for(vec![("applied", 1), ("drained", 1)]).await;
    let routes = router.routes();
    let b1 = routes
        .edge
        .lookup("x.example.com", "/")
        .unwrap()
        .balancer
        .backends()[0]
        .clone();
    let held = InFlight::begin(&b1).unwrap();
    p.publish_app("/x", vec![set("/x", 0, m, vec![ep("2", 2, S)])]);
    tx.send_replace(Arc::new(view(&p)));
    wait_for(vec![("applied", 1), ("drained", 1), ("applied", 2)]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        acks.0.lock().unwrap().len(),
        3,
        "not drained while in flight"
    );
    drop(held);
    wait_for(vec![
        ("applied", 1),
        ("drained", 1),
        ("applied", 2),
        ("drained", 2),
    ])
    .await;
    drop(tx);
    task.await.unwrap();
}

#[test]
fn snapshot_of_nothing_routes_nothing() {
    let router = Router::new(RoutesConfig::default());
    router.apply(&View::from_snapshot(Snapshot::default()));
    let r = router.routes();
    assert!(r.edge.lookup("web.demo.agora", "/").is_none());
    assert!(r.l4.is_empty());
}

#[test]
fn a_virtual_host_cannot_take_over_another_apps_dns_name() {
    use EndpointState::Serving as S;
    let mut p = Publisher::default();
    // `/a/evil` sorts before `/demo/web`: first-claim order would hand it
    // web.demo.agora.
    p.publish_app(
        "/a/evil",
        vec![set(
            "/a/evil",
            0,
            meta(true, &["Web.Demo.Agora.", "evil.example.com"], None, None),
            vec![ep("e1", 9001, S)],
        )],
    );
    p.publish_app(
        "/demo/web",
        vec![set(
            "/demo/web",
            0,
            meta(true, &["web.demo.agora"], None, None),
            vec![ep("w1", 9002, S)],
        )],
    );
    let router = Router::new(RoutesConfig::default());
    router.apply(&view(&p));
    let r = router.routes();
    assert_eq!(
        app(r.edge.lookup("web.demo.agora", "/")),
        Some(("/demo/web".into(), 0))
    );
    assert_eq!(
        app(r.edge.lookup("evil.example.com", "/")),
        Some(("/a/evil".into(), 0))
    );
    assert_eq!(
        app(r.edge.lookup("evil.a.agora", "/")),
        Some(("/a/evil".into(), 0))
    );

    // The owner's name is kept even when the owner is internal: the
    // public app still does not get it at the edge.
    p.publish_app(
        "/demo/web",
        vec![set(
            "/demo/web",
            0,
            meta(false, &[], None, None),
            vec![ep("w1", 9002, S)],
        )],
    );
    router.apply(&view(&p));
    let r = router.routes();
    assert_eq!(app(r.edge.lookup("web.demo.agora", "/")), None);
    assert_eq!(
        app(r.internal.lookup("web.demo.agora", "/")),
        Some(("/demo/web".into(), 0))
    );
}

/// Lets the spawned follower run (paused clock: no time passes).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn acked(a: &Recorded) -> Vec<(&'static str, u64)> {
    a.0.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn a_dns_router_acks_drained_one_ttl_after_applying() {
    use EndpointState::Serving as S;
    let mut p = Publisher::default();
    let m = meta(false, &[], None, None);
    p.publish_app(
        "/x",
        vec![set("/x", 0, m.clone(), vec![ep("1", 1, S), ep("2", 2, S)])],
    );
    let (tx, rx) = watch::channel(Arc::new(view(&p)));
    let router = Router::new(RoutesConfig {
        dns_ttl: Some(Duration::from_secs(1)),
        ..RoutesConfig::default()
    });
    let acks = Arc::new(Recorded::default());
    let task = tokio::spawn(router.clone().follow(rx, acks.clone()));
    settle().await;
    assert_eq!(
        acked(&acks),
        vec![("applied", 1)],
        "nothing in flight, but DNS answers may be"
    );
    tokio::time::advance(Duration::from_millis(999)).await;
    settle().await;
    assert_eq!(acked(&acks), vec![("applied", 1)]);
    tokio::time::advance(Duration::from_millis(2)).await;
    settle().await;
    assert_eq!(acked(&acks), vec![("applied", 1), ("drained", 1)]);

    // Version 2 retires an instance nobody has a request to: still one TTL.
    p.publish_app("/x", vec![set("/x", 0, m, vec![ep("2", 2, S)])]);
    tx.send_replace(Arc::new(view(&p)));
    settle().await;
    tokio::time::advance(Duration::from_millis(500)).await;
    settle().await;
    assert_eq!(acked(&acks).last(), Some(&("applied", 2)));
    tokio::time::advance(Duration::from_millis(501)).await;
    settle().await;
    assert_eq!(acked(&acks).last(), Some(&("drained", 2)));
    drop(tx);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_long_connection_holds_back_only_the_versions_from_the_one_that_retired_it() {
    use EndpointState::Serving as S;
    let mut p = Publisher::default();
    let m = meta(false, &[], None, Some(10001));
    p.publish_app(
        "/x",
        vec![set("/x", 0, m.clone(), vec![ep("1", 1, S), ep("2", 2, S)])],
    );
    let (tx, rx) = watch::channel(Arc::new(view(&p)));
    let router = Router::new(RoutesConfig::default());
    let acks = Arc::new(Recorded::default());
    let task = tokio::spawn(router.clone().follow(rx, acks.clone()));
    settle().await;
    assert_eq!(acked(&acks), vec![("applied", 1), ("drained", 1)]);
    let backend = |port: u16| {
        router.routes().l4[&10001]
            .balancer
            .backends()
            .iter()
            .find(|b| b.id().port == port)
            .unwrap()
            .clone()
    };
    let (b1, b2) = (backend(1), backend(2));
    let short = InFlight::begin(&b1).unwrap();
    let long = InFlight::begin(&b2).unwrap();
    // Version 2 retires endpoint 1 (a short request on it), version 3
    // endpoint 2 (a long L4 connection on it).
    p.publish_app(
        "/x",
        vec![set("/x", 0, m.clone(), vec![ep("2", 2, S), ep("3", 3, S)])],
    );
    tx.send_replace(Arc::new(view(&p)));
    settle().await;
    p.publish_app("/x", vec![set("/x", 0, m.clone(), vec![ep("3", 3, S)])]);
    tx.send_replace(Arc::new(view(&p)));
    settle().await;
    assert_eq!(acked(&acks).last(), Some(&("applied", 3)));
    drop(short);
    settle().await;
    assert_eq!(
        acked(&acks).last(),
        Some(&("drained", 2)),
        "version 2's retirements are idle; only version 3 waits"
    );
    drop(long);
    settle().await;
    assert_eq!(acked(&acks).last(), Some(&("drained", 3)));
    drop(tx);
    task.await.unwrap();
}
