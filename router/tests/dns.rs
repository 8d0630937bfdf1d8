//! The DNS server over the wire, with raw DNS messages (UDP and TCP) and with
//! `dig` (bind9-dnsutils; `.ci/run` installs it).

mod dns_support;

use std::sync::Arc;

use dns_support::*;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{RData, RecordType};

fn demo() -> agora_core::endpoints::View {
    view(vec![
        set(
            "/demo/web",
            0,
            Some("http"),
            vec![
                serving("web.1", "10.0.0.1", 31001),
                serving("web.2", "10.0.0.2", 31002),
                draining("web.3", "10.0.0.3", 31003),
            ],
        ),
        set(
            "/demo/web",
            1,
            None,
            vec![
                serving("web.1", "10.0.0.1", 32001),
                serving("web.2", "10.0.0.2", 32002),
            ],
        ),
        // Known, but nothing serves (its only instance is draining).
        set(
            "/demo/idle",
            0,
            None,
            vec![draining("idle.1", "10.0.0.9", 1)],
        ),
        set(
            "/v6/db",
            0,
            Some("pg"),
            vec![serving("db.1", "fd00::5", 5432)],
        ),
    ])
}

#[tokio::test]
async fn a_records_are_the_serving_instances_over_udp_and_tcp() {
    let dns = start(Some(demo())).await;
    ready(&dns).await;
    for tcp in [false, true] {
        let m = ask_with(&dns, "web.demo.agora.", RecordType::A, tcp, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative, "authoritative answer");
        // The draining 10.0.0.3 is not served.
        assert_eq!(addrs(&m), ["10.0.0.1", "10.0.0.2"], "tcp={tcp}");
        assert!(m.answers.iter().all(|r| r.ttl == 1));
    }
    // Case does not matter.
    let m = ask(&dns, "WEB.Demo.AGORA.", RecordType::A).await;
    assert_eq!(addrs(&m), ["10.0.0.1", "10.0.0.2"]);
    // IPv6 hosts answer AAAA, and no A.
    let m = ask(&dns, "db.v6.agora.", RecordType::AAAA).await;
    assert_eq!(addrs(&m), ["fd00::5"]);
    let m = ask(&dns, "db.v6.agora.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[tokio::test]
async fn srv_records_carry_host_ports_and_resolvable_targets() {
    let dns = start(Some(demo())).await;
    ready(&dns).await;
    let m = ask(&dns, "_http._tcp.web.demo.agora.", RecordType::SRV).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let got = srvs(&m);
    assert_eq!(got.iter().map(|s| s.0).collect::<Vec<_>>(), [31001, 31002]);
    // Each target is the instance's own name, with its address in the
    // additional section and on its own.
    for (port, target) in &got {
        assert!(target.ends_with(".web.demo.agora."), "{target}");
        let want = if *port == 31001 {
            "10.0.0.1"
        } else {
            "10.0.0.2"
        };
        let extra: Vec<String> = m
            .additionals
            .iter()
            .filter(|r| r.name.to_ascii() == *target)
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(extra, [want], "additional for {target}");
        let a = ask(&dns, target, RecordType::A).await;
        assert_eq!(addrs(&a), [want]);
    }
    // An unnamed port answers by its index.
    let m = ask(&dns, "_1._tcp.web.demo.agora.", RecordType::SRV).await;
    assert_eq!(
        srvs(&m).iter().map(|s| s.0).collect::<Vec<_>>(),
        [32001, 32002]
    );
    // A port name the app does not have.
    let m = ask(&dns, "_grpc._tcp.web.demo.agora.", RecordType::SRV).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn unknown_names_nxdomain_known_but_empty_noerror_outside_refused() {
    let dns = start(Some(demo())).await;
    ready(&dns).await;
    let soa_in_authority = |m: &hickory_server::proto::op::Message| {
        m.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    };
    let m = ask(&dns, "nope.demo.agora.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(soa_in_authority(&m), "negative answers carry the SOA");
    // A known app with no serving instance: an empty answer, never SERVFAIL.
    for t in [RecordType::A, RecordType::AAAA] {
        let m = ask(&dns, "idle.demo.agora.", t).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert!(soa_in_authority(&m));
    }
    let m = ask(&dns, "_0._tcp.idle.demo.agora.", RecordType::SRV).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // A name above an app exists (empty non-terminal).
    let m = ask(&dns, "demo.agora.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // The apex has the SOA.
    let m = ask(&dns, "agora.", RecordType::SOA).await;
    assert_eq!(m.answers.len(), 1);
    // Outside the zone.
    let m = ask(&dns, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.authoritative);
    let m = ask(&dns, "notagora.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn servfail_until_the_first_view_then_answers() {
    let dns = start(None).await;
    let m = ask(&dns, "web.demo.agora.", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::ServFail,
        "no view yet: the server does not know"
    );
    let m = ask(&dns, "example.com.", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "outside the zone is known without a view"
    );
    dns.views.send_replace(Arc::new(demo()));
    until(&dns, "web.demo.agora.", RecordType::A, |m| {
        addrs(m) == ["10.0.0.1", "10.0.0.2"]
    })
    .await;
}

#[tokio::test]
async fn a_view_change_changes_the_answer() {
    let mut p = agora_core::endpoints::Publisher::default();
    let v1 = publish(
        &mut p,
        vec![set(
            "/demo/web",
            0,
            None,
            vec![serving("w1", "10.0.0.1", 1)],
        )],
    );
    let dns = start(Some(v1)).await;
    until(&dns, "web.demo.agora.", RecordType::A, |m| {
        addrs(m) == ["10.0.0.1"]
    })
    .await;
    // w1 drains, w2 serves.
    let v2 = publish(
        &mut p,
        vec![set(
            "/demo/web",
            0,
            None,
            vec![draining("w1", "10.0.0.1", 1), serving("w2", "10.0.0.2", 2)],
        )],
    );
    dns.views.send_replace(Arc::new(v2));
    until(&dns, "web.demo.agora.", RecordType::A, |m| {
        addrs(m) == ["10.0.0.2"]
    })
    .await;
    // The app is deleted: its name is gone.
    p.remove_app("/demo/web");
    dns.views
        .send_replace(Arc::new(agora_core::endpoints::View::from_snapshot(
            p.snapshot(),
        )));
    until(&dns, "web.demo.agora.", RecordType::A, |m| {
        m.metadata.response_code == ResponseCode::NXDomain
    })
    .await;
}

#[tokio::test]
async fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let eps = (0..100)
        .map(|i| serving(&format!("big.{i}"), &format!("10.1.0.{i}"), 20000 + i))
        .collect();
    let dns = start(Some(view(vec![set("/big", 0, None, eps)]))).await;
    ready(&dns).await;
    let udp = ask_with(&dns, "big.agora.", RecordType::A, false, false).await;
    assert_eq!(udp.metadata.response_code, ResponseCode::NoError);
    assert!(udp.metadata.truncation, "100 A records exceed 512 bytes");
    let tcp = ask_with(&dns, "big.agora.", RecordType::A, true, false).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(addrs(&tcp).len(), 100);
}

#[tokio::test]
async fn host_names_are_resolved_and_unresolvable_ones_skipped() {
    let dns = start(Some(view(vec![set(
        "/named",
        0,
        None,
        vec![
            serving("n1", "localhost", 7000),
            serving("n2", "no-such-host.invalid", 7001),
            serving("n3", "10.0.0.7", 7002),
        ],
    )])))
    .await;
    let m = until(&dns, "named.agora.", RecordType::A, |m| {
        addrs(m).contains(&"127.0.0.1".to_string())
    })
    .await;
    assert_eq!(addrs(&m), ["10.0.0.7", "127.0.0.1"]);
    let m = ask(&dns, "_0._tcp.named.agora.", RecordType::SRV).await;
    let ports: Vec<u16> = srvs(&m).iter().map(|s| s.0).collect();
    assert_eq!(ports, [7000, 7002], "the unresolvable host is skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_a_srv_nxdomain_and_empty_answers() {
    let dns = start(Some(demo())).await;
    ready(&dns).await;
    let a = tokio::task::block_in_place(|| dig(&dns, &["+short", "web.demo.agora", "A"]));
    let mut a: Vec<&str> = a.lines().collect();
    a.sort();
    assert_eq!(a, ["10.0.0.1", "10.0.0.2"]);

    let srv =
        tokio::task::block_in_place(|| dig(&dns, &["+short", "_http._tcp.web.demo.agora", "SRV"]));
    let mut srv: Vec<String> = srv
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    srv.sort();
    assert_eq!(srv, ["0 1 31001", "0 1 31002"]);

    let nx = tokio::task::block_in_place(|| dig(&dns, &["nope.demo.agora", "A"]));
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("flags: qr aa"), "authoritative: {nx}");

    let empty = tokio::task::block_in_place(|| dig(&dns, &["idle.demo.agora", "A"]));
    assert!(empty.contains("status: NOERROR"), "{empty}");
    assert!(empty.contains("ANSWER: 0"), "{empty}");

    let tcp = tokio::task::block_in_place(|| dig(&dns, &["+tcp", "+short", "web.demo.agora"]));
    let mut tcp: Vec<&str> = tcp.lines().collect();
    tcp.sort();
    assert_eq!(tcp, ["10.0.0.1", "10.0.0.2"], "over TCP");

    let refused = tokio::task::block_in_place(|| dig(&dns, &["example.com", "A"]));
    assert!(refused.contains("status: REFUSED"), "{refused}");
}
