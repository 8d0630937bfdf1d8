//! Issue 9: the endpoint stream over HTTP (SSE: snapshot, updates, `since`,
//! acknowledgements), the discovery API with its index, and the 422s of
//! service ports and virtual hosts — in process on loopback, no master
//! (apps have no instances, but every app port has its set).

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::Api;

async fn api() -> Api {
    common::api((10_000, 10_010)).await
}

/// (status, lowercase head, body as JSON, or a string) of one request.
async fn send(a: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, String, Value) {
    let b = body.map(|b| b.to_string());
    let (code, head, text) = common::send(&a.addr, method, path, b.as_deref()).await;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, head, v)
}

/// An open endpoint stream: reads events (name, JSON data) as they come.
struct Stream {
    s: tokio::net::TcpStream,
    /// Bytes read and not de-chunked yet (the head first).
    raw: Vec<u8>,
    head: bool,
    /// The de-chunked body not parsed into events yet.
    body: String,
}

impl Stream {
    async fn open(a: &Api, query: &str) -> Stream {
        let mut s = tokio::net::TcpStream::connect(&a.addr).await.unwrap();
        let req = format!("GET /v1/endpoints/watch{query} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        Stream {
            s,
            raw: Vec::new(),
            head: false,
            body: String::new(),
        }
    }

    fn dechunk(&mut self) {
        let find = |b: &[u8]| b.windows(2).position(|w| w == b"\r\n");
        if !self.head {
            let Some(i) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.raw[..i]).to_string();
            assert!(head.contains(" 200 "), "{head}");
            assert!(
                head.to_ascii_lowercase().contains("text/event-stream"),
                "{head}"
            );
            self.raw.drain(..i + 4);
            self.head = true;
        }
        while let Some(i) = find(&self.raw) {
            let n =
                usize::from_str_radix(String::from_utf8_lossy(&self.raw[..i]).trim(), 16).unwrap();
            if self.raw.len() < i + 2 + n + 2 {
                return;
            }
            self.body
                .push_str(&String::from_utf8_lossy(&self.raw[i + 2..i + 2 + n]));
            self.raw.drain(..i + 2 + n + 2);
        }
    }

    /// The next event (comments skipped).
    async fn next(&mut self) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.dechunk();
            while let Some(end) = self.body.find("\n\n") {
                let block: String = self.body.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(d).unwrap());
                    }
                }
                if let (Some(n), Some(d)) = (name, data) {
                    return (n, d);
                }
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout_at(deadline.into(), self.s.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no event within 10 s; have {:?} raw {:?}",
                        self.body,
                        String::from_utf8_lossy(&self.raw)
                    )
                })
                .unwrap();
            assert!(n > 0, "the stream ended");
            self.raw.extend_from_slice(&chunk[..n]);
        }
    }
}

fn web(id: &str, vhost: &str) -> Value {
    json!({"id": id, "cmd": "serve", "cpus": 0.1, "mem": 16, "portDefinitions": [{"port": 0, "name": "http",
        "labels": {"expose": "public", "vhost": vhost}}]})
}

#[tokio::test]
async fn the_endpoint_stream_sends_a_snapshot_then_updates_and_resumes_with_since() {
    let a = api().await;
    let (code, _, app) = send(
        &a,
        "POST",
        "/v2/apps",
        Some(web("/demo/web", "web.example.com")),
    )
    .await;
    assert_eq!(code, 201, "{app}");
    // Marathon's shape: `port` is the assigned service port, and a port
    // definition carries Marathon's keys only.
    let (_, _, shown) = send(&a, "GET", "/v2/apps/demo/web", None).await;
    let (_, _, list) = send(&a, "GET", "/v2/apps", None).await;
    for app in [&app, &shown["app"], &list["apps"][0]] {
        assert_eq!(app["portDefinitions"][0]["port"], 10_000, "{app}");
        assert_eq!(app["requirePorts"], false, "{app}");
        for d in app["portDefinitions"].as_array().unwrap() {
            for k in d.as_object().unwrap().keys() {
                assert!(
                    ["port", "name", "protocol", "labels"].contains(&k.as_str()),
                    "not a Marathon portDefinitions key: {k:?} in {app}"
                );
            }
        }
    }

    let mut st = Stream::open(&a, "?router=r1").await;
    let (kind, snap) = st.next().await;
    assert_eq!(kind, "snapshot");
    let v0 = snap["version"].as_u64().unwrap();
    let set = &snap["sets"][0];
    assert_eq!(set["key"], json!({"app_id": "/demo/web", "port_index": 0}));
    assert_eq!(set["meta"]["service_port"], 10_000);
    assert_eq!(set["meta"]["public"], true);
    assert_eq!(set["meta"]["vhosts"], json!(["web.example.com"]));
    assert_eq!(set["endpoints"], json!([]));

    // Another app: one update, the next version.
    let (code, _, _) = send(
        &a,
        "POST",
        "/v2/apps",
        Some(web("/demo/api", "api.example.com")),
    )
    .await;
    assert_eq!(code, 201);
    let (kind, up) = st.next().await;
    assert_eq!(kind, "update");
    assert_eq!(up["version"].as_u64(), Some(v0 + 1));
    assert_eq!(up["changes"][0]["op"], "put");
    assert_eq!(up["changes"][0]["set"]["key"]["app_id"], "/demo/api");
    assert_eq!(up["changes"][0]["set"]["meta"]["service_port"], 10_001);

    // Acks: recorded for r1 (open stream), ignored otherwise; 204 both.
    let ack = json!({"router": "r1", "applied": v0 + 1, "drained": v0 + 1});
    let (code, _, _) = send(&a, "POST", "/v1/endpoints/acks", Some(ack)).await;
    assert_eq!(code, 204);
    let (code, _, _) = send(
        &a,
        "POST",
        "/v1/endpoints/acks",
        Some(json!({"router": "nobody", "drained": 1})),
    )
    .await;
    assert_eq!(code, 204);
    let (code, _, _) = send(
        &a,
        "POST",
        "/v1/endpoints/acks",
        Some(json!({"router": "r1", "drained": "x"})),
    )
    .await;
    assert_eq!(code, 422);
    // Beyond int64 (the documented type of a version): refused, not 204.
    let (code, _, _) = send(
        &a,
        "POST",
        "/v1/endpoints/acks",
        Some(json!({"router": "r1", "drained": 9_223_372_036_854_775_808u64})),
    )
    .await;
    assert_eq!(code, 422);

    // Resuming: the missed updates only, then what follows.
    let mut again = Stream::open(&a, &format!("?since={v0}")).await;
    let (kind, up) = again.next().await;
    assert_eq!(
        (kind.as_str(), up["version"].as_u64()),
        ("update", Some(v0 + 1))
    );
    let (code, _, _) = send(&a, "DELETE", "/v2/apps/demo/api", None).await;
    assert_eq!(code, 200);
    let (kind, up) = again.next().await;
    assert_eq!(
        (kind.as_str(), up["version"].as_u64()),
        ("update", Some(v0 + 2))
    );
    assert_eq!(up["changes"][0]["op"], "remove");
    let (_, up) = st.next().await;
    assert_eq!(up["version"].as_u64(), Some(v0 + 2));
    // A version from another run of the framework: a snapshot.
    let mut old = Stream::open(&a, "?since=3").await;
    let (kind, snap) = old.next().await;
    assert_eq!(
        (kind.as_str(), snap["version"].as_u64()),
        ("snapshot", Some(v0 + 2))
    );
    let (code, _, _) = send(&a, "GET", "/v1/endpoints/watch?since=x", None).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn conflicting_service_ports_and_vhosts_are_refused_naming_both_apps() {
    let a = api().await;
    let (code, _, _) = send(
        &a,
        "POST",
        "/v2/apps",
        Some(web("/shop/web", "shop.example.com")),
    )
    .await;
    assert_eq!(code, 201);
    let mut taken = web("/shop/other", "other.example.com");
    taken["portDefinitions"][0]["port"] = json!(10_000);
    let (code, _, v) = send(&a, "POST", "/v2/apps", Some(taken.clone())).await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["details"][0]["path"], "/portDefinitions/0/port");
    assert!(
        v["details"][0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("/shop/web"),
        "{v}"
    );
    let (code, _, v) = send(
        &a,
        "POST",
        "/v2/apps",
        Some(web("/shop/copy", "shop.example.com")),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    let msg = v["details"][0]["errors"][0].as_str().unwrap();
    assert!(
        msg.contains("/shop/web") && msg.contains("/shop/copy"),
        "{v}"
    );
    assert_eq!(v["details"][0]["path"], "/portDefinitions/0/labels/vhost");
    let (code, _, v) = send(&a, "GET", "/v2/apps/shop/copy", None).await;
    assert_eq!(code, 404, "nothing stored: {v}");
}

#[tokio::test]
async fn the_discovery_api_lists_services_and_long_polls_on_the_index() {
    let a = api().await;
    send(
        &a,
        "POST",
        "/v2/apps",
        Some(web("/demo/web", "web.example.com")),
    )
    .await;
    let (code, head, v) = send(&a, "GET", "/v1/services", None).await;
    assert_eq!(code, 200);
    let s = &v["services"][0];
    assert_eq!(s["id"], "/demo/web");
    assert_eq!(s["dnsName"], "web.demo.agora");
    assert_eq!(s["ports"][0]["name"], "http");
    assert_eq!(s["ports"][0]["servicePort"], 10_000);
    assert_eq!(s["ports"][0]["expose"], "public");
    let index: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("x-agora-index: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (code, _, v) = send(&a, "GET", "/v1/services/demo/web", None).await;
    assert_eq!(code, 200);
    assert_eq!(v["instances"], json!([]));
    let (code, _, _) = send(&a, "GET", "/v1/services/nope", None).await;
    assert_eq!(code, 404);
    // Below the current version: at once. At it: until the wait passes...
    let t = Instant::now();
    send(
        &a,
        "GET",
        &format!("/v1/services?index={}", index - 1),
        None,
    )
    .await;
    assert!(t.elapsed() < Duration::from_millis(500));
    let t = Instant::now();
    send(
        &a,
        "GET",
        &format!("/v1/services/demo/web?index={index}&wait=300ms"),
        None,
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    // ... or until the version moves.
    let addr = a.addr.clone();
    let poll = tokio::spawn(async move {
        let t = Instant::now();
        let r = common::send(
            &addr,
            "GET",
            &format!("/v1/services?index={index}&wait=20s"),
            None,
        )
        .await;
        let r = (
            r.0,
            r.1,
            serde_json::from_str::<Value>(&r.2).unwrap_or(Value::String(r.2)),
        );
        (t.elapsed(), r)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(
        &a,
        "POST",
        "/v2/apps",
        Some(web("/demo/api", "api.example.com")),
    )
    .await;
    let (took, (code, _, v)) = poll.await.unwrap();
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(v["services"].as_array().unwrap().len(), 2);
    let (code, _, _) = send(&a, "GET", "/v1/services?wait=1h", None).await;
    assert_eq!(code, 400);
}

/// Streams never end by themselves: stopping the framework ends them, so
/// a graceful shutdown does not wait forever for connected routers.
#[tokio::test]
async fn stopping_the_framework_ends_the_open_streams() {
    let a = api().await;
    let mut st = Stream::open(&a, "?router=r1").await;
    assert_eq!(st.next().await.0, "snapshot");
    let mut events = tokio::net::TcpStream::connect(&a.addr).await.unwrap();
    events
        .write_all(b"GET /v2/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.stop();
    for s in [&mut st.s, &mut events] {
        let mut buf = [0u8; 4096];
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "a stream still open 5 s after the stop");
    }
}
