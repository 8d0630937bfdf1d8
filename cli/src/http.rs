//! The CLI's HTTP client: hyper-util's client, used for every call to the
//! daemons' HTTP APIs (master `/state`, agent logs, the services REST API).
//! One module, so TLS (a later issue) is added in one place.

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take (a streamed body excepted).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut c = HttpConnector::new();
    c.set_connect_timeout(Some(CONNECT_TIMEOUT));
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(c)
}

/// `addr` (`host:port` or `http://host:port`) and `path` as a URL.
fn url(addr: &str, path: &str) -> Result<hyper::Uri> {
    let base = addr.trim_end_matches('/');
    if base.starts_with("https://") {
        bail!("{base}: https is not supported yet; use http://");
    }
    let base = base.strip_prefix("http://").unwrap_or(base);
    format!("http://{base}{path}")
        .parse()
        .with_context(|| format!("http://{base}{path} is not a valid URL"))
}

async fn send_head(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&str>,
) -> Result<hyper::Response<hyper::body::Incoming>> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(url(addr, path)?)
        .header(hyper::header::ACCEPT, "application/json");
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .with_context(|| format!("{method} is not an HTTP method"))?;
    match tokio::time::timeout(REQUEST_TIMEOUT, client().request(req)).await {
        Ok(r) => r.with_context(|| format!("cannot reach {addr}")),
        Err(_) => bail!("{method} {path}: no answer from {addr} within {REQUEST_TIMEOUT:?}"),
    }
}

/// `METHOD http://{addr}{path}` with an optional JSON body; returns (status, body).
pub async fn http_send(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let resp = send_head(method, addr, path, body).await?;
    let status = resp.status().as_u16();
    let bytes = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
        .await
        .with_context(|| format!("reading the answer of {method} {path} timed out"))?
        .with_context(|| format!("reading the answer of {method} {path}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// `METHOD http://{addr}{path}` with a raw (`application/octet-stream`)
/// body, e.g. a secret's value; returns (status, body). The caller's copy
/// of `body` is moved in, not duplicated.
pub async fn http_send_raw(
    method: &str,
    addr: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, String)> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url(addr, path)?)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("{method} is not an HTTP method"))?;
    let resp = match tokio::time::timeout(REQUEST_TIMEOUT, client().request(req)).await {
        Ok(r) => r.with_context(|| format!("cannot reach {addr}"))?,
        Err(_) => bail!("{method} {path}: no answer from {addr} within {REQUEST_TIMEOUT:?}"),
    };
    let status = resp.status().as_u16();
    let bytes = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
        .await
        .with_context(|| format!("reading the answer of {method} {path} timed out"))?
        .with_context(|| format!("reading the answer of {method} {path}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// `METHOD http://{addr}{path}` with an empty body; returns the body (2xx only).
pub async fn http_request(method: &str, addr: &str, path: &str) -> Result<String> {
    let (status, body) = http_send(method, addr, path, None).await?;
    if !(200..300).contains(&status) {
        bail!("{method} {path} answered {status}: {}", body.trim());
    }
    Ok(body)
}

/// GET `http://{addr}{path}` and return the body (status must be 2xx).
pub async fn http_get(addr: &str, path: &str) -> Result<String> {
    http_request("GET", addr, path).await
}

/// Streams the body of `GET http://{addr}{path}` into `out` as it arrives
/// (for `--follow`). Fails unless the status is 2xx.
pub async fn http_stream(addr: &str, path: &str, out: &mut impl std::io::Write) -> Result<()> {
    let resp = send_head("GET", addr, path, None).await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    if !(200..300).contains(&status) {
        let text = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        bail!("GET {path} answered {status}: {}", text.trim());
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("reading GET {path} from {addr}"))?;
        if let Some(data) = frame.data_ref() {
            out.write_all(data)?;
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-route server on loopback: `/chunked` streams three chunks with
    /// pauses, `/json` echoes the request's method and body, `/missing` is 404.
    async fn server() -> String {
        use axum::routing::{any, get};
        let app = axum::Router::new()
            .route(
                "/chunked",
                get(|| async {
                    let chunks =
                        futures::stream::iter(["one ", "two ", "three"]).then(|c| async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, std::io::Error>(c)
                        });
                    axum::body::Body::from_stream(chunks)
                }),
            )
            .route(
                "/json",
                any(|m: axum::http::Method, body: String| async move {
                    format!("{{\"method\":\"{m}\",\"body\":{body:?}}}")
                }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    use futures::StreamExt;

    #[tokio::test]
    async fn requests_bodies_statuses_and_streams() {
        let addr = server().await;
        let (code, body) = http_send("PUT", &addr, "/json", Some("{\"a\":1}"))
            .await
            .unwrap();
        assert_eq!(code, 200);
        assert_eq!(body, "{\"method\":\"PUT\",\"body\":\"{\\\"a\\\":1}\"}");
        let with_scheme = format!("http://{addr}/");
        assert!(
            http_get(&with_scheme, "/json")
                .await
                .unwrap()
                .contains("GET")
        );
        let e = http_get(&addr, "/missing").await.unwrap_err();
        assert!(e.to_string().contains("answered 404"), "{e}");
        let mut out = Vec::new();
        http_stream(&addr, "/chunked", &mut out).await.unwrap();
        assert_eq!(out, b"one two three");
        let mut out = Vec::new();
        let e = http_stream(&addr, "/missing", &mut out).await.unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");
    }

    #[tokio::test]
    async fn unreachable_daemons_are_named() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let e = http_get(&closed, "/state").await.unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("cannot reach {closed}")),
            "{e:#}"
        );
        let e = http_get("https://example.invalid", "/").await.unwrap_err();
        assert!(e.to_string().contains("https is not supported"), "{e}");
    }
}
