//! Load reports: the router posts a [`LoadReport`] to the services
//! framework (`POST /v1/endpoints/load`, the same base URL, TLS and
//! credentials as its endpoint stream) every [`ReportConfig::interval`], and
//! at once when it starts holding a request (the framework wakes an app at
//! zero on `held > 0`).
//!
//! Best effort, on a task of its own: routing never waits for it. A failed
//! post is logged (the first of a streak at warn, then at most once a
//! minute) and the next report goes out at the next tick. A 404 (a services
//! framework without load reports) is logged once and reports stop for
//! [`ReportConfig::pause_on_404`].

use std::sync::Arc;
use std::time::Duration;

use agora_core::endpoints::LoadReport;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use tokio::time::Instant;

use crate::feed::{FeedConfig, FeedError, api_client, authorize};
use crate::routes::Router;

/// The path reports are posted to.
pub const LOAD_PATH: &str = "/v1/endpoints/load";

/// How often and how patiently reports are posted.
#[derive(Clone, Debug)]
pub struct ReportConfig {
    pub interval: Duration,
    /// One post's time limit.
    pub timeout: Duration,
    /// Reports stop this long after a 404.
    pub pause_on_404: Duration,
    /// Failures after the first of a streak are logged at most this often.
    pub log_every: Duration,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            pause_on_404: Duration::from_secs(300),
            log_every: Duration::from_secs(60),
        }
    }
}

/// What became of one post.
#[derive(Debug)]
enum Posted {
    Ok,
    /// The framework has no such endpoint (older than load reports).
    NotFound,
    Failed(FeedError),
}

/// Posts `router`'s load reports to the services API of `feed` until the
/// task is dropped.
pub async fn run(router: Arc<Router>, feed: FeedConfig, cfg: ReportConfig) {
    let client = api_client(&feed);
    let wake = router.load_wake();
    let url = format!("{}{LOAD_PATH}", feed.services);
    let mut next = Instant::now() + cfg.interval;
    let mut paused_until: Option<Instant> = None;
    let mut told_404 = false;
    let mut failing: u64 = 0;
    let mut last_logged: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = wake.notified() => {}
        }
        let now = Instant::now();
        if now >= next {
            next = now + cfg.interval;
        }
        if let Some(p) = paused_until {
            if now < p {
                continue;
            }
            paused_until = None;
        }
        let report = router.load_report(&feed.router_id);
        match post(&client, &feed, &url, &report, cfg.timeout).await {
            Posted::Ok => {
                if failing > 0 {
                    tracing::info!(%url, failed = failing, "load reports delivered again");
                }
                failing = 0;
                last_logged = None;
            }
            Posted::NotFound => {
                paused_until = Some(Instant::now() + cfg.pause_on_404);
                if !told_404 {
                    told_404 = true;
                    tracing::warn!(%url, pause = ?cfg.pause_on_404,
                        "the services API has no load reports (404: an older services framework?); \
                         autoscaling from router metrics and waking apps scaled to zero need a newer one; \
                         reports stop for a while and are tried again");
                } else {
                    tracing::debug!(%url, "load reports still answered 404");
                }
            }
            Posted::Failed(e) => {
                failing += 1;
                let due = last_logged.is_none_or(|t| t.elapsed() >= cfg.log_every);
                if due {
                    last_logged = Some(Instant::now());
                    let hint = match &e {
                        FeedError::Status {
                            status: 401 | 403, ..
                        } => {
                            "the services API wants a token the router may use: give the router one (--token-file)"
                        }
                        _ => "is the services framework up and reachable at --services?",
                    };
                    tracing::warn!(error = %e, failed = failing, hint,
                        "load report not delivered (retrying every interval; further failures log once a minute)");
                } else {
                    tracing::debug!(error = %e, failed = failing, "load report not delivered");
                }
            }
        }
    }
}

async fn post(
    client: &Client<agora_tls::Connector, Full<Bytes>>,
    feed: &FeedConfig,
    url: &str,
    report: &LoadReport,
    timeout: Duration,
) -> Posted {
    let body = match serde_json::to_vec(report) {
        Ok(b) => b,
        Err(e) => {
            return Posted::Failed(FeedError::Json {
                event: "load report".into(),
                source: e,
            });
        }
    };
    let req = authorize(
        feed,
        http::Request::post(url).header(http::header::CONTENT_TYPE, "application/json"),
    )
    .body(Full::new(Bytes::from(body)));
    let req = match req {
        Ok(r) => r,
        Err(e) => return Posted::Failed(e.into()),
    };
    let resp = match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => {
            return Posted::Failed(FeedError::Connect {
                url: url.to_string(),
                reason: format!("no answer within {timeout:?}"),
            });
        }
        Ok(Err(e)) => {
            return Posted::Failed(FeedError::Connect {
                url: url.to_string(),
                reason: chain(&e),
            });
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    // Read the (small) body so that the connection can be reused.
    let _ = tokio::time::timeout(timeout, resp.into_body().collect()).await;
    if status == http::StatusCode::NOT_FOUND {
        return Posted::NotFound;
    }
    if !status.is_success() {
        return Posted::Failed(FeedError::Status {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    Posted::Ok
}

/// An error and its sources, `a: b: c`.
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
