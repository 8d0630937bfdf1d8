//! `agora router` end to end (the real binary): against a tiny endpoint
//! stream served by the test (the services framework's side is tested in
//! its own crate), it serves DNS, the edge and internal L7 proxies and an
//! L4 servicePort listener on ephemeral ports, acknowledges the view, and
//! stops on SIGTERM and on Ctrl-C (SIGINT).

use agora_core::endpoints::{
    Endpoint, EndpointKey, EndpointSet, EndpointState, PortMeta, Publisher,
};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::{BIN, RouterProc, start_router};

/// A backend answering 200 with its name.
async fn backend(name: &'static str) -> u16 {
    let app = axum::Router::new().fallback(move || async move { name });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

type Acks = Arc<Mutex<Vec<serde_json::Value>>>;

#[derive(Clone)]
struct Stream {
    snapshot: Arc<String>,
    acks: Acks,
}

/// The endpoint stream: one snapshot, then pings; acks recorded.
async fn endpoint_stream(snapshot: String) -> (SocketAddr, Acks) {
    async fn watch(State(s): State<Stream>) -> Response {
        let first = Bytes::from(format!("event: snapshot\ndata: {}\n\n", s.snapshot));
        let body = futures::stream::unfold(Some(first), |first| async move {
            match first {
                Some(b) => Some((Ok::<_, Infallible>(b), None)),
                None => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Some((Ok(Bytes::from_static(b": ping\n\n")), None))
                }
            }
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(body))
            .unwrap()
    }
    async fn ack(
        State(s): State<Stream>,
        axum::Json(v): axum::Json<serde_json::Value>,
    ) -> axum::http::StatusCode {
        s.acks.lock().unwrap().push(v);
        axum::http::StatusCode::NO_CONTENT
    }
    let acks = Acks::default();
    let app = axum::Router::new()
        .route("/v1/endpoints/watch", axum::routing::get(watch))
        .route("/v1/endpoints/acks", axum::routing::post(ack))
        .with_state(Stream {
            snapshot: Arc::new(snapshot),
            acks: acks.clone(),
        });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, acks)
}

fn set(app: &str, public: bool, service_port: u16, backend: u16) -> EndpointSet {
    EndpointSet::new(
        EndpointKey {
            app_id: app.into(),
            port_index: 0,
        },
        PortMeta {
            name: Some("http".into()),
            protocol: "tcp".into(),
            service_port: Some(u32::from(service_port)),
            public,
            ..PortMeta::default()
        },
        vec![Endpoint {
            task_id: format!("{app}-1"),
            host: "127.0.0.1".into(),
            port: u32::from(backend),
            state: EndpointState::Serving,
        }],
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; returns (status, body).
async fn get(addr: &str, host: &str) -> Option<(u16, String)> {
    get_path(addr, host, "/").await
}

async fn get_path(addr: &str, host: &str, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// Retries `get` until it answers `status` (the feed needs a moment).
async fn eventually(addr: &str, host: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(addr, host).await;
        if let Some((s, body)) = &got
            && *s == status
        {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{addr} Host {host}: wanted {status}, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A DNS query for `name` type A over UDP; returns (rcode, answer count,
/// the last 4 bytes of the message).
async fn dns_a(server: &str, name: &str) -> (u8, u16, [u8; 4]) {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&q, server).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf))
        .await
        .expect("no DNS answer")
        .unwrap();
    assert!(n >= 16, "short DNS answer");
    let mut last = [0u8; 4];
    last.copy_from_slice(&buf[n - 4..n]);
    (buf[3] & 0x0f, u16::from_be_bytes([buf[6], buf[7]]), last)
}

fn signal_and_wait(p: &mut RouterProc, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.0.id() as i32), sig).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            assert!(st.success(), "the router exited with {st} on {sig}");
            return;
        }
        assert!(Instant::now() < deadline, "the router ignored {sig}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_serves_dns_edge_internal_and_l4_from_the_stream_and_stops_on_sigterm() {
    let (web, db) = (backend("web").await, backend("db").await);
    let (web_sp, db_sp) = (free_port(), free_port());
    let mut p = Publisher::default();
    p.publish_app("/demo/web", vec![set("/demo/web", true, web_sp, web)]);
    p.publish_app("/demo/db", vec![set("/demo/db", false, db_sp, db)]);
    let version = p.version();
    let (services, acks) = endpoint_stream(serde_json::to_string(&p.snapshot()).unwrap()).await;
    let services = format!("http://{services}");
    let (mut proc, addrs) = start_router(
        &[
            "--services",
            &services,
            "--router-id",
            "test-router",
            "--dns-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
            "--internal-address",
            "127.0.0.1",
        ],
        &["dns", "edge", "internal", "admin"],
    );
    let (edge, internal, dns) = (&addrs["edge"], &addrs["internal"], &addrs["dns"]);
    let admin = addrs["admin"].trim_end_matches("/metrics");

    // Edge: the public app by its DNS name; the internal app is 404 there.
    assert_eq!(eventually(edge, "web.demo.agora", 200).await, "web");
    assert_eq!(get(edge, "db.demo.agora").await.unwrap().0, 404);
    // Internal L7: every app by name.
    assert_eq!(eventually(internal, "db.demo.agora", 200).await, "db");
    assert_eq!(eventually(internal, "web.demo.agora", 200).await, "web");
    // L4: the servicePort on the internal address.
    assert_eq!(
        eventually(&format!("127.0.0.1:{db_sp}"), "anything", 200).await,
        "db"
    );
    // DNS from the same view.
    let (rcode, answers, ip) = dns_a(dns, "web.demo.agora").await;
    assert_eq!((rcode, answers, ip), (0, 1, [127, 0, 0, 1]));
    assert_eq!(dns_a(dns, "nope.demo.agora").await.0, 3, "NXDOMAIN");
    // The proxies acknowledged the version they route by, and drained it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = acks.lock().unwrap().iter().any(|a| {
            a["router"] == "test-router" && a["applied"] == version && a["drained"] == version
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ack of v{version}: {:?}",
            acks.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The admin listener: /health, and /metrics counts what went through
    // (the in-test stream has no load reports: a 404 the router shrugs off).
    assert_eq!(get_path(admin, "x", "/health").await.unwrap().0, 200);
    let (status, metrics) = get_path(admin, "x", "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for series in [
        r#"agora_router_requests_total{app="/demo/web",port="0",router_kind="edge"} "#,
        r#"agora_router_requests_total{app="/demo/db",port="0",router_kind="internal"} "#,
        r#"agora_router_requests_total{app="/demo/db",port="0",router_kind="l4"} "#,
        r#"agora_router_held_requests{app="/demo/web",port="0"} 0"#,
    ] {
        assert!(metrics.contains(series), "no {series} in {metrics}");
    }

    signal_and_wait(&mut proc, nix::sys::signal::Signal::SIGTERM);
    assert!(
        get(edge, "web.demo.agora").await.is_none(),
        "the edge still answers after the router stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_without_a_stream_keeps_serving_and_stops_on_ctrl_c() {
    // Nothing listens there: the feed retries; DNS and the edge still serve
    // (nothing known yet) and Ctrl-C stops the daemon.
    let services = format!("http://127.0.0.1:{}", free_port());
    let (mut proc, addrs) = start_router(
        &[
            "--services",
            &services,
            "--dns-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
        ],
        &["dns", "edge"],
    );
    assert_eq!(get(&addrs["edge"], "web.demo.agora").await.unwrap().0, 404);
    assert!(!addrs.contains_key("internal") && !addrs.contains_key("l4"));
    signal_and_wait(&mut proc, nix::sys::signal::Signal::SIGINT);
}

#[test]
fn router_refuses_a_wildcard_internal_address() {
    for args in [
        ["--internal-address", "0.0.0.0"],
        ["--internal-listen", "0.0.0.0:0"],
    ] {
        let out = Command::new(BIN)
            .arg("router")
            .args(["--dns-listen", "off"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[0]), "{args:?}: {err}");
    }
}

#[test]
fn router_refuses_a_wildcard_dns_listen() {
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let mut child = Command::new(BIN)
            .arg("router")
            .args(["--dns-listen", addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Refused at start: it must exit, not serve.
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("--dns-listen {addr} accepted: the router is serving");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "--dns-listen {addr} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--dns-listen") && err.contains("internal IP"),
            "{addr}: {err}"
        );
    }
}
