//! The endpoint feed: follows the services framework's endpoint stream
//! (`GET /v1/endpoints/watch`, `docs/discovery.md`) and publishes the
//! current [`View`] to the DNS server and the proxies; posts their
//! acknowledgements back (`POST /v1/endpoints/acks`).
//!
//! - One task reads the stream: a `snapshot` event replaces the view, each
//!   `update` event is applied in order. The events of one received chunk
//!   are applied together and published once, as a new `Arc<View>` on a
//!   [`watch`] channel (readers never wait for the feed, nor it for them).
//! - When the stream ends or fails (refused, bad status, malformed event,
//!   no byte for [`FeedConfig::idle_timeout`]) it reconnects after a back-off
//!   (doubling from `backoff_min` to `backoff_max`, reset once a connection
//!   delivered an event) with `since=` the view's version, so the framework
//!   sends only what was missed. An update that skips a version (a [`Gap`])
//!   drops the connection and reconnects at once without `since`: a fresh
//!   snapshot. Meanwhile the last good view stays published.
//! - Acks are coalesced: [`Feed::ack`] only records the latest value; one
//!   task posts it, retries with back-off on failure (logged), and posts it
//!   again after every reconnection (the framework ignores acks from a
//!   router whose stream is closed, so one sent while disconnected is lost).
//! - With [`FeedConfig::token`] both the stream and the acks carry
//!   `Authorization: Bearer` (a services API with tokens required answers
//!   401 without one: joining the drains and acking them need a token). A
//!   401 or 403 is logged as an error saying what to do (at most once a
//!   minute while it lasts) and retried with the back-off.
//!
//! [`Gap`]: agora_core::endpoints::Gap

pub mod sse;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_core::endpoints::{Snapshot, Update, View};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where and how to follow the endpoint stream.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// The services framework's base URL, `http://host:port` or
    /// `https://host:port`.
    pub services: String,
    /// The CA to verify an `https://` services API with (the cluster CA).
    pub tls: Option<Arc<agora_tls::ClientConfig>>,
    /// This router's id (`router=` on the stream, `router` in acks).
    pub router_id: String,
    /// The bearer token sent on the stream and the acks (a services API
    /// with tokens required refuses both without one).
    pub token: Option<BearerToken>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// No byte (event or `: ping`, sent every 15 s) for this long: the
    /// connection is taken as dead and replaced.
    pub idle_timeout: Duration,
    /// The largest event accepted (a snapshot of every set).
    pub max_event: usize,
}

impl FeedConfig {
    /// Defaults for `services` (`host:port` or `http://host:port`).
    pub fn new(services: &str, router_id: &str) -> Result<FeedConfig, FeedError> {
        Ok(FeedConfig {
            services: base_url(services)?,
            tls: None,
            router_id: router_id.to_string(),
            token: None,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(45),
            max_event: 64 << 20,
        })
    }
}

/// A bearer token for the services API, kept as the header it is sent as.
/// Never shown: its `Debug` is redacted and errors never include it.
#[derive(Clone)]
pub struct BearerToken(http::HeaderValue);

impl BearerToken {
    /// A token as the master issued it (surrounding whitespace trimmed).
    pub fn new(token: &str) -> Result<BearerToken, FeedError> {
        let t = token.trim();
        if t.is_empty() {
            return Err(FeedError::BadToken("it is empty"));
        }
        let mut v = http::HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
            FeedError::BadToken("it holds characters a header cannot carry (a token the master issued is printable ASCII)")
        })?;
        v.set_sensitive(true);
        Ok(BearerToken(v))
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// What can go wrong with the stream or an ack; every one of them ends in
/// a retry, never in a panic.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("services URL {0:?} is not http://host:port or https://host:port")]
    BadUrl(String),
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    /// 401 or 403: retrying alone will not help.
    #[error("{url} refused this router ({status}): {what}")]
    Refused {
        url: String,
        status: u16,
        /// What was wrong and what to do.
        what: String,
    },
    #[error("the services API token is unusable: {0}")]
    BadToken(&'static str),
    #[error("endpoint stream broke: {0}")]
    Body(#[from] hyper::Error),
    #[error("endpoint stream: {0}")]
    Sse(#[from] sse::SseError),
    #[error("endpoint stream: bad {event} event: {source}")]
    Json {
        event: String,
        source: serde_json::Error,
    },
    #[error("endpoint stream silent for {0:?}")]
    Idle(Duration),
    #[error("endpoint stream closed by the server")]
    Closed,
    #[error("endpoint stream: update before any snapshot")]
    NoSnapshot,
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
}

/// `host:port` or `http(s)://host:port[/]` → `http(s)://host:port`.
pub fn base_url(s: &str) -> Result<String, FeedError> {
    let s = s.trim().trim_end_matches('/');
    let (scheme, rest) = match s.split_once("://") {
        Some(("http", rest)) => ("http", rest),
        Some(("https", rest)) => ("https", rest),
        Some(_) => return Err(FeedError::BadUrl(s.to_string())),
        None => ("http", s),
    };
    if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
        return Err(FeedError::BadUrl(s.to_string()));
    }
    let url = format!("{scheme}://{rest}");
    url.parse::<http::Uri>()
        .map_err(|_| FeedError::BadUrl(s.to_string()))?;
    Ok(url)
}

/// The error for a 401 or 403 answer (`body`: the API's answer, shortened).
fn refused(cfg: &FeedConfig, url: String, status: u16, body: &[u8]) -> FeedError {
    let said: String = String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(400)
        .collect();
    // The API's JSON errors are `{"message": ...}`.
    let said = serde_json::from_str::<serde_json::Value>(&said)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or(said);
    let what = match (status, &cfg.token) {
        (401, None) => format!(
            "the services API requires a bearer token to join the drains and ack them: give the router a token with --token-file FILE (a token the master issued, e.g. `agora token create --principal router`) ({said})"
        ),
        (401, Some(_)) => format!(
            "the token was refused (unknown, expired or revoked?): give the router a valid token with --token-file FILE ({said})"
        ),
        _ => format!(
            "{said} (this router's id is {:?}; its token comes from --token-file)",
            cfg.router_id
        ),
    };
    FeedError::Refused { url, status, what }
}

/// Logs refusals (401/403) as errors, at most once a minute while they
/// last (at debug in between); other failures are the caller's to log.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(60);

    /// `true` when the error was a refusal (and was logged or throttled).
    fn log(&mut self, e: &FeedError, what: &str, retry_in: Duration) -> bool {
        if !matches!(e, FeedError::Refused { .. }) {
            self.last = None;
            return false;
        }
        if self.last.is_none_or(|l| l.elapsed() >= Self::EVERY) {
            self.last = Some(Instant::now());
            tracing::error!(error = %e, ?retry_in, "{what} refused by the services API (retrying)");
        } else {
            tracing::debug!(error = %e, ?retry_in, "{what} still refused");
        }
        true
    }
}

/// An error and its sources, `a: b: c` (hyper's errors say little alone).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// One acknowledgement (see `docs/discovery.md`, drain protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub applied: u64,
    pub drained: u64,
}

/// A running feed; its tasks stop when it is dropped.
pub struct Feed {
    views: watch::Receiver<Arc<View>>,
    acks: FeedAcks,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Feed {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

type HttpClient = Client<agora_tls::Connector, Full<Bytes>>;

impl Feed {
    /// Starts following the stream (call inside a tokio runtime).
    pub fn start(cfg: FeedConfig) -> Feed {
        let (views_tx, views) = watch::channel(Arc::new(View::default()));
        let (acks, acks_rx) = watch::channel(None);
        let (conn_tx, conn_rx) = watch::channel(0u64);
        // TCP_NODELAY is set by the connector.
        let connector =
            agora_tls::Connector::http1(cfg.tls.clone()).connect_timeout(cfg.connect_timeout);
        let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
        let cfg = Arc::new(cfg);
        let stream = tokio::spawn(follow(cfg.clone(), client.clone(), views_tx, conn_tx));
        let poster = tokio::spawn(post_acks(cfg, client, acks_rx, conn_rx));
        Feed {
            views,
            acks: FeedAcks(Arc::new(acks)),
            tasks: [stream, poster],
        }
    }

    /// The current view and its changes. Until the first snapshot arrives
    /// the value is an empty view that must not be served from: the
    /// receiver reports a change (`changed()`) only once the feed holds a
    /// real view, so `loop { rx.changed().await?; … rx.borrow_and_update() }`
    /// starts with a real one.
    pub fn views(&self) -> watch::Receiver<Arc<View>> {
        // The feed's own receiver is never marked seen: its clones report a
        // change exactly when some view has been published.
        self.views.clone()
    }

    /// Records the latest acknowledgement; it is posted soon (only the
    /// latest one when several come quickly), retried until it gets
    /// through, and posted again after every reconnection.
    pub fn ack(&self, applied: u64, drained: u64) {
        self.acks.0.send_replace(Some(Ack { applied, drained }));
    }

    /// The same acknowledgements as a [`crate::routes::Acks`] for
    /// [`crate::routes::Router::follow`], which reports `applied` and
    /// `drained` separately; each call changes its half of the latest ack.
    pub fn acks(&self) -> Arc<dyn crate::routes::Acks> {
        Arc::new(self.acks.clone())
    }
}

/// The feed's ack slot, shared with the routers (see [`Feed::acks`]).
#[derive(Clone)]
struct FeedAcks(Arc<watch::Sender<Option<Ack>>>);

impl FeedAcks {
    fn set(&self, f: impl FnOnce(&mut Ack)) {
        self.0.send_modify(|a| {
            f(a.get_or_insert(Ack {
                applied: 0,
                drained: 0,
            }))
        });
    }
}

impl crate::routes::Acks for FeedAcks {
    fn applied(&self, v: u64) {
        self.set(|a| a.applied = v);
    }

    fn drained(&self, v: u64) {
        self.set(|a| a.drained = v);
    }
}

/// How one connection to the stream ended.
enum End {
    /// An update skipped a version: take a snapshot.
    Gap(agora_core::endpoints::Gap),
    Failed(FeedError),
}

/// What the stream task keeps across connections.
struct State {
    view: Option<View>,
    /// Reconnect without `since` (no view yet, or a gap was seen).
    want_snapshot: bool,
    /// The current connection applied an event (resets the back-off).
    delivered: bool,
    /// The current connection applied an update.
    updated: bool,
}

async fn follow(
    cfg: Arc<FeedConfig>,
    client: HttpClient,
    tx: watch::Sender<Arc<View>>,
    conn: watch::Sender<u64>,
) {
    let mut st = State {
        view: None,
        want_snapshot: true,
        delivered: false,
        updated: false,
    };
    let mut backoff = cfg.backoff_min;
    let mut last_was_gap = false;
    // Connections in a row that failed without delivering an event.
    let mut failing: u32 = 0;
    let mut refusals = RefusalLog::default();
    loop {
        st.delivered = false;
        st.updated = false;
        let end = stream_once(&cfg, &client, &mut st, &tx, &conn).await;
        if st.delivered {
            backoff = cfg.backoff_min;
            failing = 0;
        }
        let failed = matches!(end, End::Failed(_));
        let after_gap = last_was_gap;
        last_was_gap = matches!(end, End::Gap(_));
        match end {
            // At once, unless the snapshot taken for the last gap was
            // followed by a gap again without a good update in between:
            // then it waits like any failure (no tight loop).
            End::Gap(gap) if !after_gap || st.updated => {
                tracing::warn!(%gap, "endpoint stream: reconnecting for a snapshot");
                continue;
            }
            End::Gap(gap) => {
                tracing::warn!(%gap, retry_in = ?backoff, "endpoint stream: gap again");
            }
            End::Failed(e) if refusals.log(&e, "endpoint stream", backoff) => {}
            // The first failure of a streak is a warning; while it keeps
            // failing (a framework not up yet, or without the stream) the
            // retries log at debug.
            End::Failed(e) if failing == 0 => {
                tracing::warn!(error = %e, retry_in = ?backoff,
                    "endpoint stream lost (retrying; further failures log at debug)");
            }
            End::Failed(e) => {
                tracing::debug!(error = %e, retry_in = ?backoff, failures = failing + 1,
                    "endpoint stream still unavailable");
            }
        }
        if failed {
            failing = failing.saturating_add(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

fn watch_url(cfg: &FeedConfig, since: Option<u64>) -> String {
    let mut url = format!(
        "{}/v1/endpoints/watch?router={}",
        cfg.services,
        query_escape(&cfg.router_id)
    );
    if let Some(v) = since {
        url.push_str(&format!("&since={v}"));
    }
    url
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn stream_once(
    cfg: &FeedConfig,
    client: &HttpClient,
    st: &mut State,
    tx: &watch::Sender<Arc<View>>,
    conn: &watch::Sender<u64>,
) -> End {
    let since = match &st.view {
        Some(v) if !st.want_snapshot => Some(v.version()),
        _ => None,
    };
    let url = watch_url(cfg, since);
    let mut req = http::Request::get(&url).header(http::header::ACCEPT, "text/event-stream");
    if let Some(t) = &cfg.token {
        req = req.header(http::header::AUTHORIZATION, t.0.clone());
    }
    let req = match req.body(Full::default()) {
        Ok(r) => r,
        Err(e) => return End::Failed(e.into()),
    };
    let resp = match tokio::time::timeout(cfg.idle_timeout, client.request(req)).await {
        Err(_) => return End::Failed(FeedError::Idle(cfg.idle_timeout)),
        Ok(Err(e)) => {
            let reason = chain(&e);
            return End::Failed(FeedError::Connect { url, reason });
        }
        Ok(Ok(r)) => r,
    };
    if resp.status() != http::StatusCode::OK {
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403) {
            let limit = cfg.connect_timeout * 2;
            let body = match tokio::time::timeout(limit, resp.into_body().collect()).await {
                Ok(Ok(b)) => b.to_bytes(),
                _ => Bytes::new(),
            };
            return End::Failed(refused(cfg, url, status, &body));
        }
        return End::Failed(FeedError::Status { url, status });
    }
    tracing::info!(%url, "endpoint stream connected");
    conn.send_modify(|n| *n += 1);
    let mut body = resp.into_body();
    let mut parser = sse::Parser::new(cfg.max_event);
    let mut events = Vec::new();
    loop {
        let frame = match tokio::time::timeout(cfg.idle_timeout, body.frame()).await {
            Err(_) => return End::Failed(FeedError::Idle(cfg.idle_timeout)),
            Ok(None) => return End::Failed(FeedError::Closed),
            Ok(Some(Err(e))) => return End::Failed(e.into()),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let parsed = parser.push(&data, &mut events);
        let mut changed = false;
        let mut stop = None;
        for ev in events.drain(..) {
            match apply(st, &ev) {
                Ok(c) => changed |= c,
                Err(end) => {
                    stop = Some(end);
                    break;
                }
            }
        }
        if changed && let Some(v) = &st.view {
            st.delivered = true;
            tx.send_replace(Arc::new(v.clone()));
        }
        if let Some(end) = stop {
            return end;
        }
        if let Err(e) = parsed {
            return End::Failed(e.into());
        }
    }
}

/// Applies one event; `Ok(true)` when the view changed.
fn apply(st: &mut State, ev: &sse::Event) -> Result<bool, End> {
    let json = |source| {
        End::Failed(FeedError::Json {
            event: ev.name.clone(),
            source,
        })
    };
    match ev.name.as_str() {
        "snapshot" => {
            let s: Snapshot = serde_json::from_str(&ev.data).map_err(json)?;
            let fresh = View::from_snapshot(s);
            st.want_snapshot = false;
            if st.view.as_ref() == Some(&fresh) {
                return Ok(false);
            }
            tracing::debug!(version = fresh.version(), "endpoint snapshot");
            st.view = Some(fresh);
            Ok(true)
        }
        "update" => {
            let u: Update = serde_json::from_str(&ev.data).map_err(json)?;
            let Some(view) = st.view.as_mut().filter(|_| !st.want_snapshot) else {
                return Err(End::Failed(FeedError::NoSnapshot));
            };
            let before = view.version();
            view.apply(&u).map_err(|gap| {
                st.want_snapshot = true;
                End::Gap(gap)
            })?;
            let changed = view.version() != before;
            st.updated |= changed;
            Ok(changed)
        }
        _ => Ok(false),
    }
}

async fn post_acks(
    cfg: Arc<FeedConfig>,
    client: HttpClient,
    mut acks: watch::Receiver<Option<Ack>>,
    mut conn: watch::Receiver<u64>,
) {
    let mut backoff = cfg.backoff_min;
    let mut refusals = RefusalLog::default();
    loop {
        tokio::select! {
            r = acks.changed() => if r.is_err() { return },
            r = conn.changed() => if r.is_err() { return },
        }
        conn.borrow_and_update();
        // Always the latest value: acks recorded during a retry replace the
        // one that failed.
        loop {
            let latest = *acks.borrow_and_update();
            let Some(ack) = latest else { break };
            match post_ack(&cfg, &client, ack).await {
                Ok(()) => {
                    backoff = cfg.backoff_min;
                    refusals.last = None;
                    break;
                }
                Err(e) if refusals.log(&e, "endpoint ack", backoff) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.backoff_max);
                }
                Err(e) => {
                    tracing::warn!(error = %e, applied = ack.applied, drained = ack.drained,
                        retry_in = ?backoff, "endpoint ack not delivered");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.backoff_max);
                }
            }
        }
    }
}

async fn post_ack(cfg: &FeedConfig, client: &HttpClient, ack: Ack) -> Result<(), FeedError> {
    let url = format!("{}/v1/endpoints/acks", cfg.services);
    let body = serde_json::json!({
        "router": cfg.router_id,
        "applied": ack.applied,
        "drained": ack.drained,
    });
    let mut req = http::Request::post(&url).header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = &cfg.token {
        req = req.header(http::header::AUTHORIZATION, t.0.clone());
    }
    let req = req.body(Full::new(Bytes::from(body.to_string())))?;
    let limit = cfg.connect_timeout * 2;
    let resp = match tokio::time::timeout(limit, client.request(req)).await {
        Err(_) => return Err(FeedError::Idle(limit)),
        Ok(Err(e)) => {
            let reason = chain(&e);
            return Err(FeedError::Connect { url, reason });
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    // Read the (small) body so that the connection can be reused.
    let body = match tokio::time::timeout(limit, resp.into_body().collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => Bytes::new(),
    };
    if matches!(status.as_u16(), 401 | 403) {
        return Err(refused(cfg, url, status.as_u16(), &body));
    }
    if !status.is_success() {
        return Err(FeedError::Status {
            url,
            status: status.as_u16(),
        });
    }
    Ok(())
}

/// An HTTP client for the services API like the feed's (its TLS config and
/// connect timeout), for the load reports ([`crate::load::report`]), which
/// keep their own connection so that they never wait behind the stream.
pub fn api_client(cfg: &FeedConfig) -> Client<agora_tls::Connector, Full<Bytes>> {
    let connector =
        agora_tls::Connector::http1(cfg.tls.clone()).connect_timeout(cfg.connect_timeout);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Adds the feed's credentials to a request to the services API (the load
/// reports call it for every post).
///
/// TOKEN: the one place to plug the router's bearer token in: once
/// `FeedConfig` carries the token the stream and the acks send
/// (`--token-file`), add `Authorization: Bearer <token>` here.
pub fn authorize(cfg: &FeedConfig, req: http::request::Builder) -> http::request::Builder {
    let _ = cfg;
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_urls() {
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://svc:8080/").unwrap(), "http://svc:8080");
        assert_eq!(base_url("https://svc:8080/").unwrap(), "https://svc:8080");
        assert!(base_url("ftp://svc:8080").is_err());
        assert!(base_url("http://svc:8080/v1").is_err());
        assert!(base_url("").is_err());
    }

    #[test]
    fn refusals_say_what_to_do_and_never_show_the_token() {
        let mut cfg = FeedConfig::new("h:1", "r1").unwrap();
        let e = refused(&cfg, "u".into(), 401, b"no bearer token\n").to_string();
        assert!(
            e.contains("401") && e.contains("--token-file") && e.contains("no bearer token"),
            "{e}"
        );
        cfg.token = Some(BearerToken::new("s3cret").unwrap());
        let e = refused(&cfg, "u".into(), 401, b"revoked").to_string();
        assert!(
            e.contains("token was refused") && !e.contains("s3cret"),
            "{e}"
        );
        let e = refused(
            &cfg,
            "u".into(),
            403,
            br#"{"message": "router id \"r1\" is bound"}"#,
        )
        .to_string();
        assert!(
            e.contains(r#"router id "r1" is bound"#) && e.contains("--token-file"),
            "{e}"
        );
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }

    #[test]
    fn router_ids_are_escaped_in_the_query() {
        let cfg = FeedConfig::new("h:1", "box 1&x=é").unwrap();
        assert_eq!(
            watch_url(&cfg, Some(7)),
            "http://h:1/v1/endpoints/watch?router=box%201%26x%3D%C3%A9&since=7"
        );
        assert_eq!(
            watch_url(&cfg, None),
            "http://h:1/v1/endpoints/watch?router=box%201%26x%3D%C3%A9"
        );
    }
}
