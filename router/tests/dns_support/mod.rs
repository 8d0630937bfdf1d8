//! Shared by the DNS tests: views, a DNS server on loopback, raw queries.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_core::endpoints::{
    Endpoint, EndpointKey, EndpointSet, EndpointState, PortMeta, Publisher, View,
};
use agora_router::dns::{DnsConfig, serve};
use hickory_server::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

pub fn ep(task: &str, host: &str, port: u32, state: EndpointState) -> Endpoint {
    Endpoint {
        task_id: task.into(),
        host: host.into(),
        port,
        state,
    }
}

pub fn serving(task: &str, host: &str, port: u32) -> Endpoint {
    ep(task, host, port, EndpointState::Serving)
}

pub fn draining(task: &str, host: &str, port: u32) -> Endpoint {
    ep(task, host, port, EndpointState::Draining)
}

pub fn set(app: &str, index: u32, name: Option<&str>, eps: Vec<Endpoint>) -> EndpointSet {
    EndpointSet::new(
        EndpointKey {
            app_id: app.into(),
            port_index: index,
        },
        PortMeta {
            name: name.map(str::to_string),
            protocol: "tcp".into(),
            ..PortMeta::default()
        },
        eps,
    )
}

/// Publishes `sets` (grouped by app) and returns the publisher's view.
pub fn publish(p: &mut Publisher, sets: Vec<EndpointSet>) -> View {
    let mut apps: Vec<String> = sets.iter().map(|s| s.key.app_id.clone()).collect();
    apps.dedup();
    for app in apps {
        let of_app = sets
            .iter()
            .filter(|s| s.key.app_id == app)
            .cloned()
            .collect();
        p.publish_app(&app, of_app);
    }
    View::from_snapshot(p.snapshot())
}

pub fn view(sets: Vec<EndpointSet>) -> View {
    publish(&mut Publisher::default(), sets)
}

pub struct Dns {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub views: watch::Sender<Arc<View>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}

/// A DNS server for zone `agora.` with TTL 1 s, fed by the returned
/// sender; with `first`, that view is published at once.
pub async fn start(first: Option<View>) -> Dns {
    let (tx, rx) = watch::channel(Arc::new(View::default()));
    start_with(tx, rx, first).await
}

pub async fn start_with(
    tx: watch::Sender<Arc<View>>,
    rx: watch::Receiver<Arc<View>>,
    first: Option<View>,
) -> Dns {
    let cfg = DnsConfig::new("agora", Duration::from_secs(1)).unwrap();
    start_cfg(cfg, tx, rx, first).await
}

/// The same with a configuration of the test's own (upstreams).
pub async fn start_cfg(
    cfg: DnsConfig,
    tx: watch::Sender<Arc<View>>,
    rx: watch::Receiver<Arc<View>>,
    first: Option<View>,
) -> Dns {
    let (udp, tcp) = same_port().await;
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(udp, tcp, cfg, rx, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    if let Some(v) = first {
        tx.send_replace(Arc::new(v));
    }
    Dns {
        udp: udp_addr,
        tcp: tcp_addr,
        views: tx,
        stop: Some(stop),
        task,
    }
}

/// A UDP socket and a TCP listener on one loopback port (as a DNS server
/// has), so that `dig +tcp` reaches the same server.
pub async fn same_port() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// One query over UDP (`tcp` false) or TCP; `edns` advertises a 4 KiB buffer.
pub async fn ask_with(dns: &Dns, name: &str, t: RecordType, tcp: bool, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
    }
    let bytes = m.to_vec().unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), async {
        if tcp {
            let mut s = tokio::net::TcpStream::connect(dns.tcp).await.unwrap();
            s.write_all(&(bytes.len() as u16).to_be_bytes())
                .await
                .unwrap();
            s.write_all(&bytes).await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut buf).await.unwrap();
            buf
        } else {
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s.send_to(&bytes, dns.udp).await.unwrap();
            let mut buf = vec![0u8; 65535];
            let (n, _) = s.recv_from(&mut buf).await.unwrap();
            buf.truncate(n);
            buf
        }
    })
    .await
    .expect("no DNS answer within 5 s");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, m.metadata.id);
    reply
}

pub async fn ask(dns: &Dns, name: &str, t: RecordType) -> Message {
    ask_with(dns, name, t, false, true).await
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

/// The answer's addresses (A and AAAA), sorted, as text.
pub fn addrs(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// The answer's SRV records as (port, target), sorted.
pub fn srvs(m: &Message) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Asks until `ok` holds (at most 5 s); returns the last answer.
pub async fn until(dns: &Dns, name: &str, t: RecordType, ok: impl Fn(&Message) -> bool) -> Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = ask(dns, name, t).await;
        if ok(&m) {
            return m;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{name} {t}: still {:?} {:?} after 5 s",
                m.metadata.response_code, m.answers
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the server answers from a view (no more SERVFAIL).
pub async fn ready(dns: &Dns) {
    until(dns, "agora.", RecordType::SOA, |m| {
        m.metadata.response_code != ResponseCode::ServFail
    })
    .await;
}

/// `dig @127.0.0.1 -p <port> ARGS` against `dns` (UDP unless ARGS say
/// `+tcp`); its standard output.
pub fn dig(dns: &Dns, args: &[&str]) -> String {
    let port = dns.udp.port().to_string();
    let out = std::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port, "+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is missing: install bind9-dnsutils (.ci/run does)");
    assert!(out.status.success(), "dig {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}
