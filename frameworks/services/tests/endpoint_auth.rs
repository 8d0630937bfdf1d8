//! Drain participation needs a token (issue 10 review finding): with tokens
//! required on the services API, `POST /v1/endpoints/acks` and
//! `GET /v1/endpoints/watch?router=` are 401 without a valid token, a plain
//! watch (discovery data) stays open, and a participant is bound to the
//! principal whose stream joined it: an ack for it from another principal
//! is 403, one from the joining principal counts. In process, with a
//! stand-in master answering `/v1/auth/whoami`.

use agora_services::api::{ApiState, router};
use agora_services::api_auth::{ApiAuth, require_token};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `Bearer router-token` is principal `router`, `Bearer dev-token` is
/// `dev`; anything else is 401 (as the master answers).
async fn fake_master() -> String {
    use axum::http::{StatusCode, header};
    let app = axum::Router::new().route(
        "/v1/auth/whoami",
        axum::routing::get(|h: axum::http::HeaderMap| async move {
            let who = match h.get(header::AUTHORIZATION).map(|v| v.as_bytes()) {
                Some(b"Bearer router-token") => "router",
                Some(b"Bearer dev-token") => "dev",
                _ => return (StatusCode::UNAUTHORIZED, "unauthenticated\n".to_string()),
            };
            (
                StatusCode::OK,
                json!({"principal": who, "admin": false, "auth_enabled": true}).to_string(),
            )
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

struct Api {
    addr: String,
    handle: agora_services::service::Handle,
    dir: std::path::PathBuf,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The framework's API with tokens required, wired as `serve` wires it
/// (the router, then the token middleware), keeping the handle for its
/// hub.
async fn api() -> Api {
    api_with(Vec::new()).await
}

/// [`api`] with `--drain-principals`.
async fn api_with(drain_principals: Vec<String>) -> Api {
    let master = fake_master().await;
    let dir =
        std::env::temp_dir().join(format!("agora-svc-auth-{}", uuid::Uuid::new_v4().simple()));
    let cfg = agora_services::ServicesConfig {
        // The driver's gRPC fails against the stand-in: it retries.
        master: master.clone(),
        data_dir: dir.clone(),
        name: "services-test".into(),
        role: "*".into(),
        failover_timeout: Duration::from_secs(60),
        service_ports: (10_000, 10_010),
        master_tls: None,
        master_token: None,
        api_tokens: true,
        drain_principals: drain_principals.clone(),
    };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let (handle, _join) = agora_services::start(cfg, rx).unwrap();
    let app = router(ApiState {
        handle: handle.clone(),
        master: master.clone(),
        role: "*".into(),
    })
    .layer(axum::middleware::from_fn_with_state(
        ApiAuth::new(&master, None).with_drain_principals(drain_principals),
        require_token,
    ));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await });
    Api {
        addr,
        handle,
        dir,
        _stop: stop,
    }
}

fn request(method: &str, path: &str, token: Option<&str>, body: &str, close: bool) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}{conn}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// (status, body) of a request that ends.
async fn send(a: &Api, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(&a.addr).await.unwrap();
    s.write_all(request(method, path, token, body, true).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        rest.to_string(),
    )
}

async fn ack(a: &Api, token: Option<&str>, v: u64) -> (u16, String) {
    let body = json!({"router": "r1", "applied": v, "drained": v}).to_string();
    send(a, "POST", "/v1/endpoints/acks", token, &body).await
}

/// Opens the endpoint stream: (status, the open connection and the
/// snapshot's version when 200).
async fn watch(
    a: &Api,
    query: &str,
    token: Option<&str>,
) -> (u16, Option<(tokio::net::TcpStream, u64)>) {
    let mut s = tokio::net::TcpStream::connect(&a.addr).await.unwrap();
    let path = format!("/v1/endpoints/watch{query}");
    s.write_all(request("GET", &path, token, "", false).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let code: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
            if code != 200 {
                return (code, None);
            }
            // The snapshot event: `data: {"version":V,...}` on one line.
            if let Some(line) = rest
                .lines()
                .find(|l| l.starts_with("data: ") && rest.contains("event: snapshot"))
            {
                let v: Value = serde_json::from_str(&line["data: ".len()..]).unwrap();
                return (200, Some((s, v["version"].as_u64().unwrap())));
            }
        }
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no snapshot within 10 s: {text:?}"))
            .unwrap();
        assert!(n > 0, "the stream ended: {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn acks_and_drain_participation_need_a_token_and_the_joining_principal() {
    let a = api().await;
    // Something published, so that a version above the base can be acked.
    let app = json!({"id": "/demo/web", "cmd": "serve", "cpus": 0.1, "mem": 16,
        "portDefinitions": [{"port": 0, "name": "http"}]});
    let (code, body) = send(&a, "POST", "/v2/apps", Some("dev-token"), &app.to_string()).await;
    assert_eq!(code, 201, "{body}");

    // Discovery data stays open: a plain watch and /v1/services.
    let (code, open) = watch(&a, "", None).await;
    assert_eq!(code, 200);
    let (_, v) = open.unwrap();
    let (code, _) = watch(&a, "?since=1", None).await;
    assert_eq!(code, 200, "a watch without router= is open");
    assert_eq!(send(&a, "GET", "/v1/services", None, "").await.0, 200);

    // Joining the drains and acking need a (valid) token.
    for q in [
        "?router=r1",
        "?since=1&router=r1",
        "?%72outer=r1",
        "?router=",
    ] {
        let (code, _) = watch(&a, q, None).await;
        assert_eq!(code, 401, "watch{q} without a token");
    }
    assert_eq!(watch(&a, "?router=r1", Some("forged")).await.0, 401);
    let (code, body) = ack(&a, None, v).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("no bearer token"), "{body}");
    assert_eq!(ack(&a, Some("forged"), v).await.0, 401);
    let hub = a.handle.hub();
    assert!(hub.participants().is_empty(), "{:?}", hub.participants());

    // r1 joins as principal `router`.
    let (code, joined) = watch(&a, "?router=r1", Some("router-token")).await;
    assert_eq!(code, 200);
    let (_stream, v) = joined.unwrap();
    let base = hub.participants()[0].2;
    assert!(v > base, "a version above the base: {v} {base}");

    // Another principal can neither ack for r1 nor join as r1.
    let (code, body) = ack(&a, Some("dev-token"), v).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("\\\"r1\\\"") && body.contains("--router-id"),
        "says why and what to do: {body}"
    );
    assert!(!body.contains("dev-token"), "{body}");
    assert_eq!(hub.participants(), vec![("r1".to_string(), base, base)]);
    assert_eq!(watch(&a, "?router=r1", Some("dev-token")).await.0, 403);

    // The joining principal's ack counts.
    let (code, body) = ack(&a, Some("router-token"), v).await;
    assert_eq!(code, 204, "{body}");
    assert_eq!(hub.participants(), vec![("r1".to_string(), v, v)]);
}

/// With `--drain-principals router`, another principal's valid token can
/// neither join the drains nor ack, even for an id no router holds yet
/// (after a restart every id is free): it cannot claim a router's id and
/// ack drains the router never made. Plain watches stay open; the listed
/// principal joins and acks.
#[tokio::test]
async fn only_drain_principals_join_and_ack() {
    let a = api_with(vec!["router".into()]).await;
    let app = json!({"id": "/demo/web", "cmd": "serve", "cpus": 0.1, "mem": 16,
        "portDefinitions": [{"port": 0, "name": "http"}]});
    let (code, body) = send(&a, "POST", "/v2/apps", Some("dev-token"), &app.to_string()).await;
    assert_eq!(code, 201, "other requests are not affected: {body}");
    let (code, open) = watch(&a, "", None).await;
    assert_eq!(code, 200, "a plain watch stays open");
    let (_, v) = open.unwrap();
    let hub = a.handle.hub();

    // r1 is free: dev still may not claim it, nor ack for it.
    let (code, _) = watch(&a, "?router=r1", Some("dev-token")).await;
    assert_eq!(code, 403);
    let (code, body) = ack(&a, Some("dev-token"), v).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("principal dev") && body.contains("--drain-principals"),
        "says why and what to do: {body}"
    );
    assert!(!body.contains("dev-token"), "{body}");
    assert!(hub.participants().is_empty(), "{:?}", hub.participants());

    // The router's principal joins and acks.
    let (code, joined) = watch(&a, "?router=r1", Some("router-token")).await;
    assert_eq!(code, 200);
    let (_stream, v) = joined.unwrap();
    assert_eq!(ack(&a, Some("router-token"), v).await.0, 204);
    assert_eq!(hub.participants(), vec![("r1".to_string(), v, v)]);
}
