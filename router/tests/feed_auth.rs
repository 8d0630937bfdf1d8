//! The feed's bearer token (issue 10 review finding): with
//! `FeedConfig::token` the endpoint stream and the acks carry
//! `Authorization: Bearer`; against an API that requires it, a feed without
//! it is refused (401), keeps retrying with back-off and serves no view;
//! the token never shows in `Debug`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_core::endpoints::Publisher;
use agora_router::feed::{BearerToken, Feed, FeedConfig, FeedError};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

const TOKEN: &str = "agora_0123456789ab_s3cretpart";

/// A services API with tokens required: `Bearer TOKEN` or 401.
#[derive(Clone, Default)]
struct Api {
    /// The Authorization header of every stream request (None: absent).
    streams: Arc<Mutex<Vec<Option<String>>>>,
    /// The Authorization header of every ack accepted or refused.
    acks: Arc<Mutex<Vec<Option<String>>>>,
}

fn authorization(h: &HeaderMap) -> Option<String> {
    h.get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_string())
}

fn allowed(h: &HeaderMap) -> bool {
    authorization(h).as_deref() == Some(&format!("Bearer {TOKEN}"))
}

fn refuse() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "no bearer token: send `Authorization: Bearer <token>`\n",
    )
        .into_response()
}

async fn watch(State(api): State<Api>, h: HeaderMap) -> Response {
    api.streams.lock().unwrap().push(authorization(&h));
    if !allowed(&h) {
        return refuse();
    }
    let snap = Publisher::default().snapshot();
    let first = Bytes::from(format!(
        "event: snapshot\ndata: {}\n\n",
        serde_json::to_string(&snap).unwrap()
    ));
    // The snapshot, then the stream stays open.
    let body = futures::stream::once(async move { Ok::<_, Infallible>(first) })
        .chain(futures::stream::pending());
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

async fn ack(State(api): State<Api>, h: HeaderMap) -> Response {
    api.acks.lock().unwrap().push(authorization(&h));
    if !allowed(&h) {
        return refuse();
    }
    StatusCode::NO_CONTENT.into_response()
}

use futures::StreamExt;

async fn serve(api: &Api) -> SocketAddr {
    let app = axum::Router::new()
        .route("/v1/endpoints/watch", axum::routing::get(watch))
        .route("/v1/endpoints/acks", axum::routing::post(ack))
        .with_state(api.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

fn config(addr: SocketAddr, token: Option<&str>) -> FeedConfig {
    let mut cfg = FeedConfig::new(&addr.to_string(), "r1").unwrap();
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(50);
    cfg.token = token.map(|t| BearerToken::new(t).unwrap());
    cfg
}

async fn until_true(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not after 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_token_is_sent_on_the_stream_and_on_acks() {
    let api = Api::default();
    let addr = serve(&api).await;
    let cfg = config(addr, Some(&format!("  {TOKEN}\n")));
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("s3cret"), "the token in Debug: {shown}");
    let feed = Feed::start(cfg);
    let mut views = feed.views();
    tokio::time::timeout(Duration::from_secs(5), views.changed())
        .await
        .expect("a view through the token-checking API")
        .unwrap();
    feed.ack(1, 1);
    until_true("an ack", || !api.acks.lock().unwrap().is_empty()).await;
    let want = Some(format!("Bearer {TOKEN}"));
    assert_eq!(*api.acks.lock().unwrap(), vec![want.clone()]);
    assert_eq!(*api.streams.lock().unwrap(), vec![want]);
}

#[tokio::test]
async fn without_a_token_the_feed_is_refused_and_keeps_retrying() {
    let api = Api::default();
    let addr = serve(&api).await;
    let feed = Feed::start(config(addr, None));
    let views = feed.views();
    until_true("refused streams retried", || {
        api.streams.lock().unwrap().len() >= 3
    })
    .await;
    assert!(api.streams.lock().unwrap().iter().all(Option::is_none));
    assert!(
        !views.has_changed().unwrap(),
        "no view from a refused stream"
    );
}

#[test]
fn bad_tokens_are_refused_without_echoing_them() {
    assert!(matches!(
        BearerToken::new("  \n"),
        Err(FeedError::BadToken(_))
    ));
    let e = BearerToken::new("s3cret\u{7f}x").unwrap_err().to_string();
    assert!(!e.contains("s3cret"), "{e}");
    let t = BearerToken::new(TOKEN).unwrap();
    assert_eq!(format!("{t:?}"), "BearerToken(<redacted>)");
}
