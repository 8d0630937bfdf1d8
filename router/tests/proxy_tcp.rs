//! The L4 router on real sockets: one listener per servicePort.

mod proxy_util;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_core::endpoints::EndpointState::{Draining, Serving};
use agora_core::endpoints::PortMeta;
use agora_router::tcp::{TcpConfig, TcpRouter};
use proxy_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

fn l4_port(service_port: u16) -> PortMeta {
    PortMeta {
        service_port: Some(service_port.into()),
        ..port(false, &[], None)
    }
}

async fn start(s: &Stack) -> (Arc<TcpRouter>, JoinHandle<()>) {
    let t = TcpRouter::new(s.router.clone(), TcpConfig::default());
    let run = tokio::spawn(t.clone().run());
    (t, run)
}

async fn wait_bound(t: &TcpRouter, port: u16, want: bool) {
    let mut rx = t.bound();
    tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|b| b.contains(&port) == want),
    )
    .await
    .expect("listener change")
    .unwrap();
}

async fn hello(c: &mut TcpStream, name: &str) {
    let mut got = vec![0u8; name.len()];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, name.as_bytes());
}

async fn roundtrip(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, msg);
}

#[tokio::test]
async fn service_ports_follow_views_without_touching_open_connections() {
    let a = echo("a").await;
    let dead = dead_port().await;
    let sp = dead_port().await;
    let mut s = Stack::new();
    let (t, run) = start(&s).await;
    s.publish(
        "/db",
        vec![set(
            "/db",
            l4_port(sp),
            vec![ep("dead", dead, Serving), ep("a", a.port, Serving)],
        )],
    )
    .await;
    wait_bound(&t, sp, true).await;
    // A refused connect moves on to the other instance.
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut c = TcpStream::connect(("127.0.0.1", sp)).await.unwrap();
        hello(&mut c, "a").await;
        roundtrip(&mut c, b"ping").await;
        conns.push(c);
    }
    assert_eq!(a.conns.load(Ordering::SeqCst), 5);
    // The app goes away: the listener closes, open connections stay.
    s.publish("/db", vec![]).await;
    wait_bound(&t, sp, false).await;
    assert!(TcpStream::connect(("127.0.0.1", sp)).await.is_err());
    for c in &mut conns {
        roundtrip(c, b"still here").await;
    }
    run.abort();
}

#[tokio::test]
async fn an_open_connection_to_a_draining_endpoint_holds_the_drain_ack() {
    let old = echo("old").await;
    let new = echo("new").await;
    let sp = dead_port().await;
    let mut s = Stack::new();
    let (t, run) = start(&s).await;
    s.publish(
        "/db",
        vec![set("/db", l4_port(sp), vec![ep("old", old.port, Serving)])],
    )
    .await;
    wait_bound(&t, sp, true).await;
    let mut c = TcpStream::connect(("127.0.0.1", sp)).await.unwrap();
    hello(&mut c, "old").await;
    let v2 = s
        .publish(
            "/db",
            vec![set(
                "/db",
                l4_port(sp),
                vec![ep("old", old.port, Draining), ep("new", new.port, Serving)],
            )],
        )
        .await;
    let acks = s.acks.clone();
    eventually("applied v2", || acks.has("applied", v2)).await;
    let mut c2 = TcpStream::connect(("127.0.0.1", sp)).await.unwrap();
    hello(&mut c2, "new").await;
    roundtrip(&mut c, b"old one still works").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!acks.has("drained", v2));
    drop(c);
    eventually("drained v2", || acks.has("drained", v2)).await;
    run.abort();
}
