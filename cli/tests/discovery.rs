//! Discovery end to end: a master, a Docker agent (host name `127.0.0.1`),
//! `agora services` as a process, and a router's feed (a drain participant
//! whose acknowledgements the test gives) with the DNS server on a loopback
//! port. Deploy → A and SRV answers (our client and `dig`); scale down → the
//! instance leaves DNS while its container still runs and is killed only
//! after the router acknowledged the drain; zero serving instances → NOERROR
//! with an empty answer; an unknown name → NXDOMAIN.

mod common;

use agora_core::endpoints::{EndpointKey, EndpointState, View};
use agora_router::feed::{Feed, FeedConfig};
use agora_tests::{Cluster, test_config};
use common::*;
use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use serde_json::json;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// The running tasks of `id` as (task id, first host port).
async fn running(s: &ServicesProc, id: &str) -> Vec<(String, u16)> {
    let (_, a) = s.req("GET", &format!("/v1/apps{id}"), None).await;
    let mut v: Vec<(String, u16)> = a["app"]["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .map(|t| {
            let port = t["ports"][0].as_u64().unwrap_or(0) as u16;
            (t["id"].as_str().unwrap_or("").to_string(), port)
        })
        .collect();
    v.sort();
    v
}

/// A UDP socket and a TCP listener on one loopback port (for `dig +tcp`).
async fn same_port() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// One query over UDP.
async fn ask(dns: SocketAddr, name: &str, t: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&m.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
        .await
        .expect("no DNS answer within 5 s")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn srv_ports(m: &Message) -> Vec<u16> {
    let mut v: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Asks until `ok` holds (at most `LONG`), polling every 20 ms.
async fn until(
    dns: SocketAddr,
    name: &str,
    t: RecordType,
    ok: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let m = ask(dns, name, t).await;
        if ok(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} {t}: still {:?} {:?}",
            m.metadata.response_code,
            m.answers
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn dig(dns: SocketAddr, args: &[&str]) -> Option<String> {
    let out = Command::new("dig")
        .args([
            &format!("@{}", dns.ip()),
            "-p",
            &dns.port().to_string(),
            "+short",
        ])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn web_set(v: &View) -> Vec<(String, u16, EndpointState)> {
    let key = EndpointKey {
        app_id: "/demo/web".into(),
        port_index: 0,
    };
    v.get(&key)
        .map(|s| {
            s.endpoints
                .iter()
                .map(|e| (e.task_id.clone(), e.port as u16, e.state))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the workload on `port` still answers, with its task id.
async fn answers(port: u16, task: &str) -> bool {
    get(&format!("127.0.0.1:{port}"), "/")
        .await
        .is_some_and(|b| b.contains(task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_follow_the_instances_and_a_drained_instance_leaves_before_it_stops() {
    require_docker();
    let c = Cluster::start(test_config()).await.unwrap();
    let (lo, hi) = port_block();
    let agent = AgentProc::start(
        &c.addr.to_string(),
        &format!("cpus:4;mem:2048;ports:[{lo}-{hi}]"),
        &["--hostname", "127.0.0.1"],
    )
    .unwrap();
    let s = ServicesProc::start(&c.addr.to_string());
    eventually(LONG, async || get(&s.addr, "/ping").await)
        .await
        .unwrap();
    let feed = Feed::start(FeedConfig::new(&s.addr, "e2e-router").unwrap());
    let (udp, tcp) = same_port().await;
    let dns = udp.local_addr().unwrap();
    let cfg = agora_router::dns::DnsConfig::new("agora", Duration::from_secs(1)).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agora_router::dns::serve(
        udp,
        tcp,
        cfg,
        feed.views(),
        async {
            let _ = stopped.await;
        },
    ));

    // Deploy: 2 instances, a named port; drains wait up to 60 s for the router.
    let web = json!({
        "id": "/demo/web", "instances": 2, "cpus": 0.1, "mem": 32,
        "labels": {"drainSeconds": "60"},
        "container": {"type": "DOCKER", "docker": {"image": "agora-workload:latest"},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]},
        "networks": [{"mode": "container/bridge"}]
    });
    let (code, body) = s.req("POST", "/v2/apps", Some(web)).await;
    assert_eq!(code, 201, "{body}");
    let tasks = eventually(LONG, async || {
        let t = running(&s, "/demo/web").await;
        (t.len() == 2).then_some(t)
    })
    .await
    .unwrap();
    let mut ports: Vec<u16> = tasks.iter().map(|t| t.1).collect();
    ports.sort();
    let a = until(dns, "web.demo.agora.", RecordType::A, |m| {
        !addrs(m).is_empty()
    })
    .await;
    assert_eq!(addrs(&a), ["127.0.0.1"], "one address for both instances");
    assert!(a.metadata.authoritative);
    until(dns, "_http._tcp.web.demo.agora.", RecordType::SRV, |m| {
        srv_ports(m) == ports
    })
    .await;
    // The same through dig (UDP and TCP).
    let short = dig(dns, &["web.demo.agora"]).expect("dig is installed");
    assert_eq!(short.trim(), "127.0.0.1", "dig: {short}");
    let srv = dig(dns, &["+tcp", "_http._tcp.web.demo.agora", "SRV"]).unwrap();
    for p in &ports {
        assert!(srv.contains(&format!(" {p} ")), "dig SRV lacks {p}: {srv}");
    }
    // An unknown name in the zone: NXDOMAIN.
    let nx = ask(dns, "nope.demo.agora.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

    // Scale down to 1: one instance drains. It leaves DNS while it still runs.
    let (code, body) = s
        .req("PUT", "/v2/apps/demo/web", Some(json!({"instances": 1})))
        .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    let mut views = feed.views();
    let (victim, vport, version) = loop {
        let v = views.borrow_and_update().clone();
        if let Some(d) = web_set(&v)
            .into_iter()
            .find(|e| e.2 == EndpointState::Draining)
        {
            break (d.0, d.1, v.version());
        }
        tokio::time::timeout(LONG, views.changed())
            .await
            .expect("no instance drained")
            .unwrap();
    };
    let kept: Vec<u16> = ports.iter().copied().filter(|p| *p != vport).collect();
    until(dns, "_http._tcp.web.demo.agora.", RecordType::SRV, |m| {
        srv_ports(m) == kept
    })
    .await;
    assert!(
        answers(vport, &victim).await,
        "{victim} stopped before it left DNS"
    );
    // Nothing acknowledged the drain: the kill waits (drainSeconds is 60).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        answers(vport, &victim).await,
        "{victim} was killed before the router acknowledged the drain"
    );
    assert_eq!(agent.containers(false).len(), 2);
    // The router acknowledges: the kill follows.
    feed.ack(version, version);
    eventually(LONG, async || {
        (!answers(vport, &victim).await).then_some(())
    })
    .await
    .expect("the drained instance was not killed after the ack");
    eventually(LONG, async || {
        (agent.containers(false).len() == 1).then_some(())
    })
    .await
    .expect("the drained container did not stop");

    // Zero serving instances: NOERROR, empty answer (never SERVFAIL).
    let acker = {
        let mut views = feed.views();
        let feed_acks = feed.acks();
        tokio::spawn(async move {
            while views.changed().await.is_ok() {
                let v = views.borrow_and_update().version();
                feed_acks.applied(v);
                feed_acks.drained(v);
            }
        })
    };
    let (code, body) = s
        .req("PUT", "/v2/apps/demo/web", Some(json!({"instances": 0})))
        .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    for (name, t) in [
        ("web.demo.agora.", RecordType::A),
        ("_http._tcp.web.demo.agora.", RecordType::SRV),
    ] {
        let m = until(dns, name, t, |m| m.answers.is_empty()).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
    }
    let short = dig(dns, &["web.demo.agora"]).unwrap();
    assert_eq!(short.trim(), "", "dig: {short}");
    acker.abort();
    let _ = stop.send(());
    let _ = server.await;
}
