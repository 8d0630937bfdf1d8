//! The L7 proxy on real sockets with in-test backends.

mod proxy_util;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agora_core::endpoints::EndpointState::{Draining, Serving};
use agora_router::proxy::ProxyConfig;
use agora_router::routes::TIMEOUT_LABEL;
use proxy_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn routes_by_host_and_path_and_sets_forwarding_headers() {
    let web = backend("web", Mode::Echo).await;
    let api = backend("api", Mode::Echo).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish(
        "/shop/web",
        vec![set(
            "/shop/web",
            port(true, &["shop.example.com"], None),
            vec![ep("w1", web.port, Serving)],
        )],
    )
    .await;
    s.publish(
        "/shop/api",
        vec![set(
            "/shop/api",
            port(true, &["shop.example.com"], Some("/api")),
            vec![ep("a1", api.port, Serving)],
        )],
    )
    .await;

    let a = get(edge, "Shop.Example.com:8000", "/api/items?q=1").await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "api"));
    assert_eq!(a.headers["x-seen-path"], "/api/items?q=1");
    assert_eq!(
        a.headers["x-seen-host"], "Shop.Example.com:8000",
        "Host preserved"
    );
    assert_eq!(a.headers["x-seen-xfh"], "Shop.Example.com:8000");
    assert_eq!(a.headers["x-seen-xff"], "127.0.0.1");
    assert_eq!(a.headers["x-seen-proto"], "http");
    assert!(
        !a.headers.contains_key("x-hop-leaked"),
        "Connection-named header dropped"
    );

    let w = get(edge, "shop.example.com", "/apis").await;
    assert_eq!((w.status.as_u16(), w.body.as_str()), (200, "web"));
    let w = get(edge, "web.shop.agora", "/").await;
    assert_eq!(
        (w.status.as_u16(), w.body.as_str()),
        (200, "web"),
        "by DNS name"
    );
    let n = get(edge, "other.example.com", "/").await;
    assert_eq!(n.status.as_u16(), 404);
    let mut c = TcpStream::connect(edge).await.unwrap();
    c.write_all(b"CONNECT web.shop.agora:80 HTTP/1.1\r\nHost: web.shop.agora:80\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 405");

    // HTTP/2 from the client, HTTP/1.1 to the backend.
    let h2 = get_h2(edge, "shop.example.com", "/api/x").await;
    assert_eq!((h2.status.as_u16(), h2.body.as_str()), (200, "api"));
    assert_eq!(h2.headers["x-seen-host"], "shop.example.com");
}

#[tokio::test]
async fn an_internal_app_is_404_at_the_edge_and_served_inside() {
    let db = backend("db", Mode::Echo).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    let inside = s.internal().await;
    s.publish(
        "/data/db",
        vec![set(
            "/data/db",
            port(false, &["db.example.com"], None),
            vec![ep("d1", db.port, Serving)],
        )],
    )
    .await;
    assert_eq!(get(edge, "db.example.com", "/").await.status.as_u16(), 404);
    assert_eq!(get(edge, "db.data.agora", "/").await.status.as_u16(), 404);
    let a = get(inside, "db.data.agora", "/x").await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "db"));
    assert_eq!(db.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_dead_backend_port_is_skipped_without_a_client_error() {
    let live = backend("live", Mode::Echo).await;
    let dead = dead_port().await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish(
        "/web",
        vec![set(
            "/web",
            port(true, &[], None),
            vec![ep("dead", dead, Serving), ep("live", live.port, Serving)],
        )],
    )
    .await;
    // The dead one has no latency yet, so it wins ties until ejected: the
    // first requests all meet the refused connection and move on.
    for _ in 0..20 {
        let a = get(edge, "web.agora", "/").await;
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "live"));
    }
    assert_eq!(live.requests.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_request_sent_to_a_hanging_backend_times_out_and_is_not_resent() {
    let h1 = hang(false).await;
    let h2 = hang(false).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    let mut meta = port(true, &[], None);
    meta.labels.insert(TIMEOUT_LABEL.into(), "0.3".into());
    s.publish(
        "/slow",
        vec![set(
            "/slow",
            meta,
            vec![ep("h1", h1.port, Serving), ep("h2", h2.port, Serving)],
        )],
    )
    .await;
    let t = Instant::now();
    let a = get(edge, "slow.agora", "/").await;
    assert_eq!(a.status.as_u16(), 504);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = h1.requests.load(Ordering::SeqCst) + h2.requests.load(Ordering::SeqCst);
    assert_eq!(sent, 1, "sent once, never resent");
    s.idle().await;
}

#[tokio::test]
async fn a_backend_failing_after_the_request_was_sent_is_502_and_not_resent() {
    let c1 = hang(true).await;
    let c2 = hang(true).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish(
        "/flaky",
        vec![set(
            "/flaky",
            port(true, &[], None),
            vec![ep("c1", c1.port, Serving), ep("c2", c2.port, Serving)],
        )],
    )
    .await;
    let a = get(edge, "flaky.agora", "/").await;
    assert_eq!(a.status.as_u16(), 502);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = c1.requests.load(Ordering::SeqCst) + c2.requests.load(Ordering::SeqCst);
    assert_eq!(sent, 1, "sent once, never resent");
    s.idle().await;
}

#[tokio::test]
async fn overload_answers_503_with_retry_after() {
    let slow = backend("slow", Mode::Slow(Duration::from_millis(400))).await;
    let mut s = Stack::new();
    let edge = s
        .proxy(ProxyConfig {
            max_in_flight: 1,
            ..ProxyConfig::default()
        })
        .await;
    s.publish(
        "/slow",
        vec![set(
            "/slow",
            port(true, &[], None),
            vec![ep("s1", slow.port, Serving)],
        )],
    )
    .await;
    let first = tokio::spawn(get(edge, "slow.agora", "/"));
    let reqs = slow.requests.clone();
    eventually("first request at the backend", || {
        reqs.load(Ordering::SeqCst) == 1
    })
    .await;
    let second = get(edge, "slow.agora", "/").await;
    assert_eq!(second.status.as_u16(), 503);
    assert_eq!(second.headers["retry-after"], "1");
    assert_eq!(first.await.unwrap().status.as_u16(), 200);
    // Capacity is back once the first ended.
    assert_eq!(get(edge, "slow.agora", "/").await.status.as_u16(), 200);
}

#[tokio::test]
async fn backend_connections_are_kept_alive_and_reused() {
    let web = backend("web", Mode::Echo).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish(
        "/web",
        vec![set(
            "/web",
            port(true, &[], None),
            vec![ep("w", web.port, Serving)],
        )],
    )
    .await;
    for _ in 0..20 {
        // A new client connection each time; the backend sees one.
        assert_eq!(get(edge, "web.agora", "/").await.body, "web");
    }
    let mut c = Client::connect(edge).await;
    for _ in 0..20 {
        assert_eq!(c.get("web.agora", "/").await.body, "web");
    }
    assert_eq!(web.requests.load(Ordering::SeqCst), 40);
    assert_eq!(web.conns.load(Ordering::SeqCst), 1);
    s.idle().await;
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_not_an_error() {
    let web = backend("web", Mode::IdleClose).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish(
        "/web",
        vec![set(
            "/web",
            port(true, &[], None),
            vec![ep("w", web.port, Serving)],
        )],
    )
    .await;
    for _ in 0..5 {
        assert_eq!(get(edge, "web.agora", "/").await.status.as_u16(), 200);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert_eq!(web.requests.load(Ordering::SeqCst), 5);
    assert!(
        web.conns.load(Ordering::SeqCst) >= 2,
        "the backend closed idle connections"
    );
}

#[tokio::test]
async fn no_endpoint_is_502() {
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish("/empty", vec![set("/empty", port(true, &[], None), vec![])])
        .await;
    assert_eq!(get(edge, "empty.agora", "/").await.status.as_u16(), 502);
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let ws = backend("ws", Mode::Upgrade).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish(
        "/ws",
        vec![set(
            "/ws",
            port(true, &[], None),
            vec![ep("ws1", ws.port, Serving)],
        )],
    )
    .await;
    let mut c = TcpStream::connect(edge).await.unwrap();
    c.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.agora\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(c.read(&mut b).await.unwrap(), 1, "head so far: {head:?}");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"second frame"] {
        c.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg);
    }
}

#[tokio::test]
async fn new_views_apply_without_dropping_client_connections() {
    let a = backend("a", Mode::Echo).await;
    let b = backend("b", Mode::Echo).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    s.publish(
        "/web",
        vec![set(
            "/web",
            port(true, &[], None),
            vec![ep("a", a.port, Serving)],
        )],
    )
    .await;
    let mut c = Client::connect(edge).await;
    assert_eq!(c.get("web.agora", "/").await.body, "a");
    s.publish(
        "/web",
        vec![set(
            "/web",
            port(true, &[], None),
            vec![ep("b", b.port, Serving)],
        )],
    )
    .await;
    // Same client connection, new routes.
    assert_eq!(c.get("web.agora", "/").await.body, "b");
    assert_eq!(c.get("web.agora", "/").await.body, "b");
}

#[tokio::test]
async fn a_draining_endpoint_finishes_its_request_before_drained_is_acked() {
    let old = backend("old", Mode::Slow(Duration::from_millis(500))).await;
    let new = backend("new", Mode::Echo).await;
    let mut s = Stack::new();
    let edge = s.edge().await;
    let v1 = s
        .publish(
            "/web",
            vec![set(
                "/web",
                port(true, &[], None),
                vec![ep("old", old.port, Serving)],
            )],
        )
        .await;
    let acks = s.acks.clone();
    eventually("drained v1", || acks.has("drained", v1)).await;
    let slow = tokio::spawn(get(edge, "web.agora", "/"));
    let reqs = old.requests.clone();
    eventually("request at the old instance", || {
        reqs.load(Ordering::SeqCst) == 1
    })
    .await;

    let v2 = s
        .publish(
            "/web",
            vec![set(
                "/web",
                port(true, &[], None),
                vec![ep("old", old.port, Draining), ep("new", new.port, Serving)],
            )],
        )
        .await;
    eventually("applied v2", || acks.has("applied", v2)).await;
    // New requests go to the new instance only.
    for _ in 0..5 {
        assert_eq!(get(edge, "web.agora", "/").await.body, "new");
    }
    assert!(
        !acks.has("drained", v2),
        "a request is still in flight to the old one"
    );
    let a = slow.await.unwrap();
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "old"));
    eventually("drained v2", || acks.has("drained", v2)).await;
    assert_eq!(old.requests.load(Ordering::SeqCst), 1);
}
