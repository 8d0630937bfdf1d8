//! Load measurement, holding for ports scaled to zero, load reports and the
//! admin listener, on real sockets (`src/load/`, `src/admin.rs`). Time
//! bounds are generous: the numbers asserted are counts, not timings.

mod proxy_util;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::endpoints::EndpointState::Serving;
use agora_core::endpoints::{EndpointKey, LoadReport, PortMeta};
use agora_router::feed::FeedConfig;
use agora_router::load::LoadConfig;
use agora_router::load::report::{ReportConfig, run as report};
use agora_router::routes::RoutesConfig;
use agora_router::tcp::{TcpConfig, TcpRouter};
use proxy_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn key(app: &str) -> EndpointKey {
    EndpointKey {
        app_id: app.into(),
        port_index: 0,
    }
}

/// A public HTTP port that may be scaled to zero.
fn zero_port() -> PortMeta {
    PortMeta {
        scale_to_zero: true,
        ..port(true, &[], None)
    }
}

/// A 10 s window (the figures below assume it; the default is shorter).
fn ten_second_window() -> RoutesConfig {
    RoutesConfig {
        load: LoadConfig {
            window: Duration::from_secs(10),
            ..LoadConfig::default()
        },
        ..RoutesConfig::default()
    }
}

fn config(hold_max: usize, hold_timeout: Duration) -> RoutesConfig {
    RoutesConfig {
        load: LoadConfig {
            hold_max,
            hold_timeout,
            ..LoadConfig::default()
        },
        ..RoutesConfig::default()
    }
}

/// Waits until the router holds `n` requests for `app`.
async fn held(s: &Stack, app: &str, n: u64) {
    let router = s.router.clone();
    let k = key(app);
    eventually(&format!("{n} held for {app}"), move || {
        router.port_load(&k).is_some_and(|p| p.held() == n)
    })
    .await;
}

#[tokio::test]
async fn requests_in_flight_and_latency_of_a_known_pattern() {
    let b = backend("a", Mode::Slow(Duration::from_millis(100))).await;
    let mut s = Stack::with_config(ten_second_window());
    let edge = s.edge().await;
    s.publish(
        "/web",
        vec![set(
            "/web",
            port(true, &[], None),
            vec![ep("a", b.port, Serving)],
        )],
    )
    .await;
    // Three at once: in flight together while the backend sleeps.
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { get(edge, "web.agora", "/").await.status }))
        .collect();
    let port = s.router.port_load(&key("/web")).unwrap();
    let p = port.clone();
    eventually("3 in flight", move || {
        p.in_flight(agora_router::load::Kind::Edge) == 3
    })
    .await;
    let r = s.router.load_report("r1");
    assert_eq!(r.sets.len(), 1);
    assert_eq!(r.sets[0].in_flight, 3);
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    // Then seven more, one after the other.
    for _ in 0..7 {
        assert_eq!(get(edge, "web.agora", "/").await.status, 200);
    }
    s.idle().await;
    let p = port.clone();
    eventually("10 completed", move || {
        p.total(agora_router::load::Kind::Edge) == 10
    })
    .await;
    let r = s.router.load_report("r1");
    assert_eq!((r.router.as_str(), r.window_ms), ("r1", 10_000));
    let l = &r.sets[0];
    assert_eq!(l.key, key("/web"));
    assert_eq!((l.requests, l.in_flight, l.held), (10, 0, 0));
    assert!(
        (l.rps - 1.0).abs() < 1e-9,
        "10 requests in a 10 s window: {}",
        l.rps
    );
    let (p50, p95) = (l.latency_p50_ms.unwrap(), l.latency_p95_ms.unwrap());
    // The backend sleeps 100 ms (a loaded machine may add some).
    assert!((90.0..5_000.0).contains(&p50), "p50 {p50} ms");
    assert!(p95 >= p50, "p95 {p95} ms below p50 {p50} ms");
}

#[tokio::test]
async fn a_held_request_is_forwarded_once_an_endpoint_serves() {
    let b = backend("woke", Mode::Echo).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish("/web", vec![set("/web", zero_port(), vec![])])
        .await;
    let call = tokio::spawn(async move { get(edge, "web.agora", "/").await });
    held(&s, "/web", 1).await;
    assert_eq!(s.router.load_report("r").sets[0].held, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!call.is_finished(), "answered while no instance serves");
    s.publish(
        "/web",
        vec![set("/web", zero_port(), vec![ep("w", b.port, Serving)])],
    )
    .await;
    let a = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the held request was not forwarded")
        .unwrap();
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "woke"));
    held(&s, "/web", 0).await;
    let m = s.router.metrics_text();
    assert!(
        m.contains("agora_router_cold_start_seconds_count{app=\"/web\",port=\"0\"} 1"),
        "{m}"
    );
    // Without scale_to_zero, no endpoint is an answer at once.
    s.publish("/web", vec![set("/web", port(true, &[], None), vec![])])
        .await;
    let a = tokio::time::timeout(Duration::from_secs(10), get(edge, "web.agora", "/"))
        .await
        .expect("a port not scaled to zero held a request");
    assert_eq!(a.status.as_u16(), 502);
}

#[tokio::test]
async fn every_held_request_is_forwarded() {
    let b = backend("w", Mode::Echo).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish("/web", vec![set("/web", zero_port(), vec![])])
        .await;
    let mut calls = Vec::new();
    for i in 0..5u64 {
        calls.push(tokio::spawn(async move {
            get(edge, "web.agora", &format!("/{i}"))
                .await
                .status
                .as_u16()
        }));
        held(&s, "/web", i + 1).await;
    }
    s.publish(
        "/web",
        vec![set("/web", zero_port(), vec![ep("w", b.port, Serving)])],
    )
    .await;
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn beyond_the_bound_or_the_timeout_a_held_request_is_503_with_retry_after() {
    let mut s = Stack::with_config(config(1, Duration::from_millis(300)));
    let edge = s.edge().await;
    s.publish("/web", vec![set("/web", zero_port(), vec![])])
        .await;
    let first = tokio::spawn(async move { get(edge, "web.agora", "/").await });
    held(&s, "/web", 1).await;
    // The bound (1) is reached: at once.
    let a = tokio::time::timeout(Duration::from_secs(5), get(edge, "web.agora", "/"))
        .await
        .expect("a request beyond the bound was held");
    assert_eq!(a.status.as_u16(), 503);
    assert_eq!(a.headers["retry-after"], "1");
    // The first one times out after 300 ms.
    let a = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the hold did not time out")
        .unwrap();
    assert_eq!(a.status.as_u16(), 503);
    assert_eq!(a.headers["retry-after"], "1");
    held(&s, "/web", 0).await;
}

#[tokio::test]
async fn a_request_held_for_an_app_that_goes_away_is_404_at_once() {
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish("/web", vec![set("/web", zero_port(), vec![])])
        .await;
    let call = tokio::spawn(async move { get(edge, "web.agora", "/").await });
    held(&s, "/web", 1).await;
    s.publish("/web", vec![]).await;
    let a = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("still held after the app went away")
        .unwrap();
    assert_eq!(a.status.as_u16(), 404);
}

/// A port that stops being `scale_to_zero` while it has no serving
/// endpoint (its policy deleted): the requests held for it are answered at
/// once (503, as any request to a port without an endpoint), not after
/// the hold timeout.
#[tokio::test]
async fn a_request_held_for_a_port_no_longer_scaled_to_zero_is_answered_at_once() {
    let mut s = Stack::with_config(config(10, Duration::from_secs(120)));
    let edge = s.edge().await;
    s.publish("/web", vec![set("/web", zero_port(), vec![])])
        .await;
    let call = tokio::spawn(async move { get(edge, "web.agora", "/").await });
    held(&s, "/web", 1).await;
    s.publish("/web", vec![set("/web", port(true, &[], None), vec![])])
        .await;
    let a = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("still held after the port stopped being scaled to zero")
        .unwrap();
    assert!(a.status.is_server_error(), "{}", a.status);
    held(&s, "/web", 0).await;
}

#[tokio::test]
async fn a_tcp_connection_is_held_then_forwarded() {
    let a = echo("a").await;
    let sp = dead_port().await;
    let l4 = PortMeta {
        service_port: Some(sp.into()),
        scale_to_zero: true,
        ..port(false, &[], None)
    };
    let mut s = Stack::new();
    let t = TcpRouter::new(s.router.clone(), TcpConfig::default());
    let run = tokio::spawn(t.clone().run());
    s.publish("/db", vec![set("/db", l4.clone(), vec![])]).await;
    let mut bound = t.bound();
    tokio::time::timeout(Duration::from_secs(5), bound.wait_for(|b| b.contains(&sp)))
        .await
        .expect("listener")
        .unwrap();
    let mut c = TcpStream::connect(("127.0.0.1", sp)).await.unwrap();
    // Bytes sent while held wait in the socket.
    c.write_all(b"early").await.unwrap();
    held(&s, "/db", 1).await;
    assert_eq!(a.conns.load(Ordering::SeqCst), 0);
    s.publish("/db", vec![set("/db", l4, vec![ep("a", a.port, Serving)])])
        .await;
    let mut got = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut got))
        .await
        .expect("the held connection was not forwarded")
        .unwrap();
    assert_eq!(&got, b"aearly");
    assert_eq!(a.conns.load(Ordering::SeqCst), 1);
    held(&s, "/db", 0).await;
    let p = s.router.port_load(&key("/db")).unwrap();
    assert_eq!(p.in_flight(agora_router::load::Kind::L4), 1);
    drop(c);
    let p2 = p.clone();
    eventually("the connection completed", move || {
        p2.total(agora_router::load::Kind::L4) == 1
    })
    .await;
    run.abort();
}

/// A fake services API taking load reports; answers `status`.
struct FakeApi {
    addr: SocketAddr,
    reports: Arc<Mutex<Vec<LoadReport>>>,
    status: Arc<AtomicU16>,
}

async fn fake_api(status: u16) -> FakeApi {
    use axum::extract::State;
    type St = (Arc<Mutex<Vec<LoadReport>>>, Arc<AtomicU16>);
    async fn load(
        State((reports, status)): State<St>,
        axum::Json(r): axum::Json<LoadReport>,
    ) -> axum::http::StatusCode {
        reports.lock().unwrap().push(r);
        axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
    }
    let reports = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(AtomicU16::new(status));
    let app = axum::Router::new()
        .route("/v1/endpoints/load", axum::routing::post(load))
        .with_state((reports.clone(), status.clone()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    FakeApi {
        addr,
        reports,
        status,
    }
}

fn reporter(s: &Stack, api: &FakeApi, interval: Duration) -> JoinHandle<()> {
    let feed = FeedConfig::new(&api.addr.to_string(), "router-1").unwrap();
    tokio::spawn(report(
        s.router.clone(),
        feed,
        ReportConfig {
            interval,
            ..ReportConfig::default()
        },
    ))
}

#[tokio::test]
async fn load_reports_are_posted_every_interval_with_the_measurements() {
    let b = backend("a", Mode::Echo).await;
    let api = fake_api(204).await;
    let mut s = Stack::with_config(ten_second_window());
    let edge = s.edge().await;
    s.publish(
        "/web",
        vec![set(
            "/web",
            port(true, &[], None),
            vec![ep("a", b.port, Serving)],
        )],
    )
    .await;
    s.publish("/idle", vec![set("/idle", port(true, &[], None), vec![])])
        .await;
    for _ in 0..4 {
        assert_eq!(get(edge, "web.agora", "/").await.status, 200);
    }
    s.idle().await;
    let task = reporter(&s, &api, Duration::from_millis(100));
    let reports = api.reports.clone();
    eventually("a report with the 4 requests", move || {
        reports.lock().unwrap().iter().any(|r| {
            r.sets
                .iter()
                .any(|l| l.key == key("/web") && l.requests == 4)
        })
    })
    .await;
    let r = api
        .reports
        .lock()
        .unwrap()
        .iter()
        .rfind(|r| r.sets.iter().any(|l| l.requests == 4))
        .cloned()
        .unwrap();
    assert_eq!((r.router.as_str(), r.window_ms), ("router-1", 10_000));
    let by: HashMap<&str, _> = r.sets.iter().map(|l| (l.key.app_id.as_str(), l)).collect();
    let web = by["/web"];
    assert!((web.rps - 0.4).abs() < 1e-9, "rps {}", web.rps);
    assert!(web.latency_p50_ms.is_some() && web.latency_p95_ms.is_some());
    assert_eq!((web.in_flight, web.held), (0, 0));
    // An idle port is reported too (zero is a measurement).
    let idle = by["/idle"];
    assert_eq!(
        (idle.requests, idle.rps, idle.latency_p50_ms),
        (0, 0.0, None)
    );
    // More than one report, about every 100 ms.
    let reports = api.reports.clone();
    eventually("a few reports", move || reports.lock().unwrap().len() >= 3).await;
    task.abort();
}

#[tokio::test]
async fn a_load_report_goes_out_at_once_when_a_request_is_held() {
    let api = fake_api(204).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish("/web", vec![set("/web", zero_port(), vec![])])
        .await;
    // The interval is an hour: only a hold makes a report now.
    let task = reporter(&s, &api, Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(api.reports.lock().unwrap().is_empty());
    let call = tokio::spawn(async move { get(edge, "web.agora", "/").await });
    let reports = api.reports.clone();
    eventually("a report with held = 1", move || {
        reports
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.sets.iter().any(|l| l.key == key("/web") && l.held == 1))
    })
    .await;
    call.abort();
    task.abort();
}

#[tokio::test]
async fn a_404_stops_load_reports_for_a_while() {
    let api = fake_api(404).await;
    let s = Stack::new();
    let task = reporter(&s, &api, Duration::from_millis(20));
    let reports = api.reports.clone();
    eventually("one report", move || reports.lock().unwrap().len() == 1).await;
    // Paused, even once the API would take them.
    api.status.store(204, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api.reports.lock().unwrap().len(),
        1,
        "reports went on after a 404"
    );
    // Other failures do not stop them.
    let api2 = fake_api(500).await;
    let task2 = reporter(&s, &api2, Duration::from_millis(20));
    let reports = api2.reports.clone();
    eventually("reports go on after 500s", move || {
        reports.lock().unwrap().len() >= 3
    })
    .await;
    task.abort();
    task2.abort();
}

/// A sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus text: `# TYPE` of each family and every sample;
/// panics on a malformed line.
fn parse_metrics(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "type {kind}"
            );
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",") {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "label name {k}"
                    );
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name, labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name}"
        );
        samples.push((name.to_string(), labels, value));
    }
    (types, samples)
}

#[tokio::test]
async fn the_admin_listener_serves_health_and_metrics_that_parse() {
    let b = backend("a", Mode::Echo).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    let internal = s.internal().await;
    s.publish(
        "/web",
        vec![set(
            "/web",
            port(true, &[], None),
            vec![ep("a", b.port, Serving)],
        )],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get(edge, "web.agora", "/").await.status, 200);
    }
    assert_eq!(get(internal, "web.agora", "/").await.status, 200);
    s.idle().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = l.local_addr().unwrap();
    let task = tokio::spawn(agora_router::admin::serve(l, s.router.clone()));
    assert_eq!(get(admin, "x", "/health").await.status, 200);
    assert_eq!(get(admin, "x", "/nope").await.status, 404);
    let m = get(admin, "x", "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let (types, samples) = parse_metrics(&m.body);
    for (name, kind) in [
        ("agora_router_requests_total", "counter"),
        ("agora_router_requests_in_flight", "gauge"),
        ("agora_router_request_duration_seconds", "histogram"),
        ("agora_router_held_requests", "gauge"),
        ("agora_router_cold_start_seconds", "histogram"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    let find = |name: &str, kind: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.get("router_kind").map(String::as_str) == Some(kind))
            .map(|(_, l, v)| (l.clone(), *v))
    };
    let (labels, edge_total) = find("agora_router_requests_total", "edge").unwrap();
    assert_eq!(edge_total, 3.0);
    assert_eq!(labels["app"], "/web");
    assert_eq!(labels["port"], "0");
    assert_eq!(
        find("agora_router_requests_total", "internal").unwrap().1,
        1.0
    );
    assert_eq!(
        find("agora_router_requests_in_flight", "edge").unwrap().1,
        0.0
    );
    // The histogram: cumulative buckets, +Inf = _count = 3.
    let buckets: Vec<(String, f64)> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "agora_router_request_duration_seconds_bucket" && l["router_kind"] == "edge"
        })
        .map(|(_, l, v)| (l["le"].clone(), *v))
        .collect();
    assert!(buckets.len() > 2);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap(), &("+Inf".to_string(), 3.0));
    assert_eq!(
        find("agora_router_request_duration_seconds_count", "edge")
            .unwrap()
            .1,
        3.0
    );
    assert!(
        find("agora_router_request_duration_seconds_sum", "edge")
            .unwrap()
            .1
            > 0.0
    );
    let held: Vec<_> = samples
        .iter()
        .filter(|(n, _, _)| n == "agora_router_held_requests")
        .collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].2, 0.0);
    task.abort();
}
