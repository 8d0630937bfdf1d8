//! Forwarding of names outside the zone (`--dns-upstream`), against an
//! in-process fake upstream serving `example.test.` on UDP and TCP: the
//! upstream's answer is passed on (UDP and TCP clients, `dig` too), a
//! truncated UDP answer is asked again over TCP, messages that do not
//! answer the query are ignored, a dead upstream is SERVFAIL within the
//! timeout, names in the zone are never forwarded, and forwards in flight
//! are bounded.

mod dns_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::endpoints::View;
use agora_router::dns::DnsConfig;
use dns_support::*;
use hickory_server::proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// Addresses of `big.example.test` (too many for a 512-byte answer, and
/// for the 1232 bytes the server answers over UDP at most).
const BIG: u8 = 100;

/// A resolver for `example.test.` on one loopback port (UDP and TCP):
/// - `www` A 192.0.2.1;
/// - `big`: over UDP a truncated empty answer (TC), over TCP `BIG` A records;
/// - any other name: NXDOMAIN with the SOA.
///
/// Over UDP, every answer is preceded by two decoys: the same answer with
/// another id, and one with the right id but another question.
struct Upstream {
    addr: SocketAddr,
    udp: Arc<AtomicUsize>,
    tcp: Arc<AtomicUsize>,
    /// Every question name it received.
    asked: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn a(name: &Name, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), 300, RData::A(A(ip)))
}

fn answer(q: &Message, tcp: bool) -> Message {
    let query = q.queries[0].clone();
    let name = query.name().clone();
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(query);
    let label = name.to_ascii().to_ascii_lowercase();
    match label.as_str() {
        "www.example.test." => {
            m.add_answer(a(&name, Ipv4Addr::new(192, 0, 2, 1)));
        }
        "big.example.test." if !tcp => {
            m.metadata.truncation = true;
        }
        "big.example.test." => {
            for i in 1..=BIG {
                m.add_answer(a(&name, Ipv4Addr::new(192, 0, 2, i)));
            }
        }
        _ => {
            m.metadata.response_code = ResponseCode::NXDomain;
            let origin = Name::from_ascii("example.test.").unwrap();
            m.add_authority(Record::from_rdata(
                origin.clone(),
                60,
                RData::SOA(SOA::new(origin.clone(), origin, 1, 60, 10, 3600, 60)),
            ));
        }
    }
    m
}

impl Upstream {
    async fn start() -> Upstream {
        let (udp, tcp) = same_port().await;
        let addr = udp.local_addr().unwrap();
        let (n_udp, n_tcp) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        {
            let (n, asked) = (n_udp.clone(), asked.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65535];
                loop {
                    let (len, from) = udp.recv_from(&mut buf).await.unwrap();
                    let q = Message::from_vec(&buf[..len]).unwrap();
                    n.fetch_add(1, Ordering::SeqCst);
                    asked.lock().unwrap().push(q.queries[0].name().to_ascii());
                    let good = answer(&q, false);
                    let mut other_id = good.clone();
                    other_id.metadata.id = good.metadata.id.wrapping_add(1);
                    let mut other_q = good.clone();
                    other_q.queries = vec![Query::query(
                        Name::from_ascii("decoy.example.test.").unwrap(),
                        RecordType::A,
                    )];
                    other_q.answers.clear();
                    for m in [other_id, other_q, good] {
                        udp.send_to(&m.to_vec().unwrap(), from).await.unwrap();
                    }
                }
            }));
        }
        {
            let (n, asked) = (n_tcp.clone(), asked.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let (mut s, _) = tcp.accept().await.unwrap();
                    let (n, asked) = (n.clone(), asked.clone());
                    tokio::spawn(async move {
                        let mut len = [0u8; 2];
                        if s.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                        s.read_exact(&mut buf).await.unwrap();
                        let q = Message::from_vec(&buf).unwrap();
                        n.fetch_add(1, Ordering::SeqCst);
                        asked.lock().unwrap().push(q.queries[0].name().to_ascii());
                        let out = answer(&q, true).to_vec().unwrap();
                        s.write_all(&(out.len() as u16).to_be_bytes())
                            .await
                            .unwrap();
                        s.write_all(&out).await.unwrap();
                    });
                }
            }));
        }
        Upstream {
            addr,
            udp: n_udp,
            tcp: n_tcp,
            asked,
            tasks,
        }
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.udp.load(Ordering::SeqCst),
            self.tcp.load(Ordering::SeqCst),
        )
    }
}

/// A DNS server for `agora.` (the demo view unless `first` is `None`)
/// forwarding to `upstreams`.
async fn server(upstreams: Vec<SocketAddr>, timeout: Duration, first: Option<View>) -> Dns {
    let cfg = DnsConfig::new("agora", Duration::from_secs(1))
        .unwrap()
        .with_upstreams(upstreams, timeout);
    let (tx, rx) = watch::channel(Arc::new(View::default()));
    start_cfg(cfg, tx, rx, first).await
}

fn demo() -> View {
    view(vec![set(
        "/demo/web",
        0,
        Some("http"),
        vec![serving("web.1", "10.0.0.1", 31001)],
    )])
}

/// A loopback UDP port with nothing listening (ICMP port unreachable).
fn closed_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

#[tokio::test]
async fn answers_from_the_upstream_are_passed_on_with_the_clients_id() {
    let up = Upstream::start().await;
    let dns = server(vec![up.addr], Duration::from_secs(2), Some(demo())).await;
    ready(&dns).await;
    for tcp in [false, true] {
        let before = up.counts();
        // ask_with checks that the answer carries the client's id.
        let m = ask_with(&dns, "www.example.test.", RecordType::A, tcp, true).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "tcp={tcp}");
        assert_eq!(
            addrs(&m),
            ["192.0.2.1"],
            "tcp={tcp}: the decoys are ignored"
        );
        assert!(m.metadata.recursion_available, "the upstream's RA");
        assert!(!m.metadata.authoritative, "not our zone");
        let after = up.counts();
        if tcp {
            assert_eq!(after, (before.0, before.1 + 1), "a TCP client: over TCP");
        } else {
            assert_eq!(after, (before.0 + 1, before.1), "a UDP client: over UDP");
        }
    }
    // The upstream's negative answer, with its authority section.
    let m = ask(&dns, "nope.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        m.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA && r.name.to_ascii() == "example.test."),
        "the upstream's SOA: {:?}",
        m.authorities
    );
    // The zone still answers from the view.
    let m = ask(&dns, "web.demo.agora.", RecordType::A).await;
    assert_eq!(addrs(&m), ["10.0.0.1"]);
    assert!(m.metadata.authoritative);
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let up = Upstream::start().await;
    let dns = server(vec![up.addr], Duration::from_secs(2), Some(demo())).await;
    ready(&dns).await;
    // The client claims 4096 bytes over UDP: it gets at most 1232 (no
    // amplification by a spoofed query), truncated, and the whole answer
    // over TCP.
    let m = ask_with(&dns, "big.example.test.", RecordType::A, false, true).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.truncation, "TC above 1232 bytes over UDP");
    assert!(
        m.to_vec().unwrap().len() <= 1232,
        "{} bytes",
        m.to_vec().unwrap().len()
    );
    assert_eq!(up.counts(), (1, 1), "UDP first, then TCP");
    let m = ask_with(&dns, "big.example.test.", RecordType::A, true, true).await;
    assert_eq!(
        m.answers.len(),
        usize::from(BIG),
        "the whole answer over TCP"
    );
    assert!(!m.metadata.truncation);
    // A client without EDNS (512 bytes) gets it truncated, and whole over TCP.
    let m = ask_with(&dns, "big.example.test.", RecordType::A, false, false).await;
    assert!(m.metadata.truncation, "TC for a 512-byte client");
    let m = ask_with(&dns, "big.example.test.", RecordType::A, true, false).await;
    assert_eq!(m.answers.len(), usize::from(BIG));
}

#[tokio::test]
async fn a_dead_upstream_is_servfail_within_the_timeout() {
    // Silent: a socket that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let timeout = Duration::from_millis(400);
    let dns = server(vec![silent.local_addr().unwrap()], timeout, Some(demo())).await;
    ready(&dns).await;
    let t = Instant::now();
    let m = ask(&dns, "www.example.test.", RecordType::A).await;
    let took = t.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        took >= timeout - Duration::from_millis(50) && took < timeout + Duration::from_secs(1),
        "SERVFAIL after the timeout, took {took:?}"
    );
    // Unreachable (nothing on the port): SERVFAIL without waiting it out.
    let dns = server(vec![closed_port()], Duration::from_secs(2), Some(demo())).await;
    ready(&dns).await;
    let t = Instant::now();
    let m = ask(&dns, "www.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // Over TCP too (connection refused).
    let m = ask_with(&dns, "www.example.test.", RecordType::A, true, true).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn the_next_upstream_answers_when_the_first_is_dead() {
    let up = Upstream::start().await;
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for first in [closed_port(), silent.local_addr().unwrap()] {
        let dns = server(vec![first, up.addr], Duration::from_secs(1), Some(demo())).await;
        ready(&dns).await;
        let t = Instant::now();
        let m = ask(&dns, "www.example.test.", RecordType::A).await;
        assert_eq!(addrs(&m), ["192.0.2.1"], "first upstream {first}");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}

#[tokio::test]
async fn names_in_the_zone_are_never_forwarded() {
    let up = Upstream::start().await;
    // Before the first view: SERVFAIL (the zone does not know yet), not forwarded.
    let (tx, rx) = watch::channel(Arc::new(View::default()));
    let cfg = DnsConfig::new("agora", Duration::from_secs(1))
        .unwrap()
        .with_upstreams(vec![up.addr], Duration::from_secs(2));
    let dns = start_cfg(cfg, tx, rx, None).await;
    let m = ask(&dns, "web.demo.agora.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    dns.views.send_replace(Arc::new(demo()));
    ready(&dns).await;
    for name in ["nope.demo.agora.", "NOPE.Agora.", "a.b.c.agora."] {
        for tcp in [false, true] {
            let m = ask_with(&dns, name, RecordType::A, tcp, true).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert!(m.metadata.authoritative, "{name}");
        }
    }
    let m = ask(&dns, "web.demo.agora.", RecordType::A).await;
    assert_eq!(addrs(&m), ["10.0.0.1"]);
    // A zone transfer of another zone is refused, not forwarded.
    let m = ask_with(&dns, "example.test.", RecordType::AXFR, true, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(up.counts(), (0, 0), "asked: {:?}", up.asked.lock().unwrap());
    // And a name outside is forwarded by the same server.
    let m = ask(&dns, "www.example.test.", RecordType::A).await;
    assert_eq!(addrs(&m), ["192.0.2.1"]);
    assert_eq!(up.counts(), (1, 0));
}

#[tokio::test]
async fn without_an_upstream_other_names_are_refused() {
    let dns = server(Vec::new(), Duration::from_secs(2), Some(demo())).await;
    ready(&dns).await;
    for tcp in [false, true] {
        let m = ask_with(&dns, "www.example.test.", RecordType::A, tcp, true).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }
}

#[tokio::test]
async fn forwards_in_flight_are_bounded() {
    use agora_router::dns::forward::MAX_FORWARDS;
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns = server(
        vec![silent.local_addr().unwrap()],
        Duration::from_secs(3),
        Some(demo()),
    )
    .await;
    ready(&dns).await;
    // MAX_FORWARDS wait for the silent upstream; the extra ones are
    // answered SERVFAIL at once.
    let extra = 20;
    let mut socks = Vec::new();
    for i in 0..MAX_FORWARDS + extra {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut m = Message::query();
        m.metadata.id = i as u16;
        m.add_query(Query::query(
            Name::from_ascii(format!("n{i}.example.test.")).unwrap(),
            RecordType::A,
        ));
        s.send_to(&m.to_vec().unwrap(), dns.udp).await.unwrap();
        socks.push(s);
    }
    let t = Instant::now();
    let mut fast = 0;
    for s in &socks {
        let mut buf = vec![0u8; 512];
        let left = Duration::from_millis(1500).saturating_sub(t.elapsed());
        if let Ok(Ok(n)) = tokio::time::timeout(left, s.recv(&mut buf)).await {
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
            fast += 1;
        }
    }
    assert_eq!(
        fast, extra,
        "only the queries above the bound are answered before the 3 s timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_forwarded_answers() {
    let up = Upstream::start().await;
    let dns = server(vec![up.addr], Duration::from_secs(2), Some(demo())).await;
    ready(&dns).await;
    let www = tokio::task::block_in_place(|| dig(&dns, &["+short", "www.example.test", "A"]));
    assert_eq!(www.trim(), "192.0.2.1");
    let tcp = tokio::task::block_in_place(|| dig(&dns, &["+tcp", "+short", "www.example.test"]));
    assert_eq!(tcp.trim(), "192.0.2.1");
    let big = tokio::task::block_in_place(|| dig(&dns, &["+short", "big.example.test"]));
    assert_eq!(big.lines().count(), usize::from(BIG), "{big}");
    let nx = tokio::task::block_in_place(|| dig(&dns, &["nope.example.test", "A"]));
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    let local = tokio::task::block_in_place(|| dig(&dns, &["+short", "web.demo.agora"]));
    assert_eq!(local.trim(), "10.0.0.1");
    let (udp, tcp) = up.counts();
    assert!(udp >= 3 && tcp >= 2, "udp {udp}, tcp {tcp}");
    assert!(
        !up.asked
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.to_ascii_lowercase().ends_with("agora.")),
        "nothing in the zone was forwarded"
    );
}
