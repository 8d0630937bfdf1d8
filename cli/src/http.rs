//! The CLI's HTTP client: hyper-util's client, used for every call to the
//! daemons' HTTP APIs (master `/state`, agent logs, the services REST API).
//! `https://` addresses are verified with the CA of `--ca-cert` /
//! `AGORA_CA_CERT` (the cluster's `ca.crt`).

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take (a streamed body excepted).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

static CA_CERT: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The `--ca-cert` flag (main sets it once; `AGORA_CA_CERT` is its env).
pub fn set_ca_cert(path: Option<PathBuf>) {
    let _ = CA_CERT.set(path);
}

/// The bearer token and the `host:port`s it is sent to: the master and
/// the services API (which checks it with the master), never agents.
static BEARER: std::sync::OnceLock<(Vec<String>, agora_master::auth::tokens::Token)> =
    std::sync::OnceLock::new();

/// Sends `Authorization: Bearer <token>` on every request to `to`.
pub fn set_token_for(to: &[String], token: agora_master::auth::tokens::Token) -> Result<()> {
    let mut authorities = Vec::new();
    for addr in to {
        if let Some(a) = url(addr, "/")?.authority() {
            authorities.push(a.to_string());
        }
    }
    let _ = BEARER.set((authorities, token));
    Ok(())
}

/// The `Authorization` header for a request to `uri`: only to the master.
fn bearer_for(uri: &hyper::Uri) -> Result<Option<hyper::header::HeaderValue>> {
    let Some((to, token)) = BEARER.get() else {
        return Ok(None);
    };
    if uri
        .authority()
        .is_none_or(|a| !to.iter().any(|t| t == a.as_str()))
    {
        return Ok(None);
    }
    let text = zeroize::Zeroizing::new(format!("Bearer {}", token.expose()));
    let mut v = hyper::header::HeaderValue::from_str(&text)
        .context("the token holds characters a header cannot carry; check the token file")?;
    v.set_sensitive(true);
    Ok(Some(v))
}

/// The TLS config for https addresses, if a CA is configured.
fn tls() -> Result<Option<Arc<agora_tls::ClientConfig>>> {
    let path = CA_CERT.get().cloned().flatten().or_else(|| {
        std::env::var_os("AGORA_CA_CERT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    match path {
        None => Ok(None),
        Some(p) => agora_tls::client_config(&p, None)
            .map(|c| Some(Arc::new(c)))
            .with_context(|| format!("--ca-cert {}", p.display())),
    }
}

type HttpClient = Client<agora_tls::Connector, Full<Bytes>>;

fn client(tls: Option<Arc<agora_tls::ClientConfig>>) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .build(agora_tls::Connector::http1(tls).connect_timeout(CONNECT_TIMEOUT))
}

/// `addr` (`host:port`, `http://host:port` or `https://host:port`) and
/// `path` as a URL.
fn url(addr: &str, path: &str) -> Result<hyper::Uri> {
    let base = addr.trim_end_matches('/');
    let (scheme, base) = match base.strip_prefix("https://") {
        Some(b) => ("https", b),
        None => ("http", base.strip_prefix("http://").unwrap_or(base)),
    };
    format!("{scheme}://{base}{path}")
        .parse()
        .with_context(|| format!("{scheme}://{base}{path} is not a valid URL"))
}

/// The URL, refusing an https one without a CA to verify it with.
fn checked_url(
    addr: &str,
    path: &str,
    tls: &Option<Arc<agora_tls::ClientConfig>>,
) -> Result<hyper::Uri> {
    let uri = url(addr, path)?;
    if uri.scheme_str() == Some("https") && tls.is_none() {
        bail!(
            "{addr} is https: give the CA certificate to verify it with --ca-cert FILE or \
             AGORA_CA_CERT (the cluster's ca.crt, see `agora ca --help`)"
        );
    }
    Ok(uri)
}

async fn send_head(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&str>,
) -> Result<hyper::Response<hyper::body::Incoming>> {
    send_head_with(tls()?, method, addr, path, body).await
}

async fn send_head_with(
    tls: Option<Arc<agora_tls::ClientConfig>>,
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&str>,
) -> Result<hyper::Response<hyper::body::Incoming>> {
    let uri = checked_url(addr, path, &tls)?;
    let mut req = hyper::Request::builder()
        .method(method)
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(v) = bearer_for(&uri)? {
        req = req.header(hyper::header::AUTHORIZATION, v);
    }
    req = req.uri(uri);
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .with_context(|| format!("{method} is not an HTTP method"))?;
    let connect = tokio::time::timeout(REQUEST_TIMEOUT, client(tls).request(req));
    match connect.await {
        Ok(r) => r
            .map_err(|e| anyhow::anyhow!(chain(&e)))
            .with_context(|| format!("cannot reach {addr}")),
        Err(_) => bail!("{method} {path}: no answer from {addr} within {REQUEST_TIMEOUT:?}"),
    }
}

/// An error and its sources in one line (hyper's hide the TLS cause).
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
    let tls = tls()?;
    let uri = checked_url(addr, path, &tls)?;
    let mut req = hyper::Request::builder()
        .method(method)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream");
    if let Some(v) = bearer_for(&uri)? {
        req = req.header(hyper::header::AUTHORIZATION, v);
    }
    let req = req
        .uri(uri)
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("{method} is not an HTTP method"))?;
    let resp = match tokio::time::timeout(REQUEST_TIMEOUT, client(tls).request(req)).await {
        Ok(r) => r
            .map_err(|e| anyhow::anyhow!(chain(&e)))
            .with_context(|| format!("cannot reach {addr}"))?,
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
        let e = send_head_with(None, "GET", "https://example.invalid", "/", None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--ca-cert"), "{e}");
    }

    /// An https daemon: verified with the cluster CA, refused with another.
    #[tokio::test]
    async fn https_with_the_cluster_ca() {
        use agora_tls::ca::{Ca, Kind};
        let dir = std::env::temp_dir().join(format!("agora-cli-https-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::generate(1).unwrap();
        let srv = ca.issue(Kind::Server, "api", &[], 1).unwrap();
        let (c, k, cap) = (dir.join("s.crt"), dir.join("s.key"), dir.join("ca.crt"));
        std::fs::write(&c, &srv.cert_pem).unwrap();
        std::fs::write(&k, &srv.key_pem).unwrap();
        std::fs::write(&cap, ca.cert_pem()).unwrap();
        let other = dir.join("other.crt");
        std::fs::write(&other, Ca::generate(1).unwrap().cert_pem()).unwrap();
        let tls = agora_tls::ServerTls::load(agora_tls::ServerTlsFiles {
            cert: c,
            key: k,
            client_ca: None,
            crl: None,
        })
        .unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let app = axum::Router::new().route("/state", axum::routing::get(|| async { "{}" }));
        tokio::spawn(
            async move { axum::serve(agora_tls::TlsListener::new(l, Some(tls)), app).await },
        );
        let ours = Some(Arc::new(agora_tls::client_config(&cap, None).unwrap()));
        let addr = format!("https://127.0.0.1:{port}");
        let r = send_head_with(ours, "GET", &addr, "/state", None)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let theirs = Some(Arc::new(agora_tls::client_config(&other, None).unwrap()));
        let e = send_head_with(theirs, "GET", &addr, "/state", None)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("certificate"), "{e:#}");
        std::fs::remove_dir_all(dir).ok();
    }
}
