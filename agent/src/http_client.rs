//! The agent's HTTP client, for health and readiness probes: hyper-util's
//! client over plain TCP (TLS, when it comes, plugs in here as a connector).
//! A probe uses a fresh connection (no pooling, as Mesos' checker does), and
//! needs only the response head: the body is never read.

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// `GET http://{host}:{port}{path}`; the answer's status code, or what went
/// wrong. `timeout` covers connecting, sending and the response head.
pub async fn get_status(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<u16, String> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let uri: hyper::Uri = format!("http://{host}:{port}{path}")
        .parse()
        .map_err(|e| format!("{path:?} is not a valid request path: {e}"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err("timed out".into()),
    }
}

/// The client error with its causes ("client error (Connect): tcp connect
/// error: Connection refused").
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
